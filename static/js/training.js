// Training create page: choosing a preset fills in the settings it defines; editing a field afterwards
// switches the preset back to "Custom" so the form never claims values it does not hold.
(function () {
  "use strict";

  function init() {
    var select = document.getElementById("id_preset");
    var data = document.getElementById("training-presets");
    if (!select || !data) return;
    var presets;
    try {
      presets = JSON.parse(data.textContent);
    } catch (e) {
      return;
    }
    var filling = false;

    function setField(name, value) {
      var field = select.form.elements.namedItem(name);
      if (!field) return;
      if (field.type === "checkbox") field.checked = Boolean(value);
      else field.value = value;
    }

    select.addEventListener("change", function () {
      var values = presets[select.value];
      if (!values) return;
      filling = true;
      Object.keys(values).forEach(function (name) { setField(name, values[name]); });
      var epochs = select.form.elements.namedItem("epochs");
      if (epochs) epochs.value = "";
      filling = false;
    });

    select.form.addEventListener("input", function (event) {
      if (filling || event.target === select) return;
      var values = presets[select.value];
      if (values && Object.prototype.hasOwnProperty.call(values, event.target.name)) select.value = "";
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
