// Training create page: choosing a preset fills in the settings it defines; editing a field afterwards
// switches the preset back to "Custom" so the form never claims values it does not hold. The duration
// estimate below the form follows every change through htmx (hx-trigger on #run-estimate).
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

    initDefaults(select);
  }

  // Defaults that follow the choices above them: the base model's native size and suggested preset, and a
  // sample prompt from the first chosen album's captions. A value the user typed is never overwritten: a
  // field is only refilled while it still holds what was filled in for the previous choice.
  function initDefaults(presetSelect) {
    var data = document.getElementById("training-defaults");
    var form = presetSelect.form;
    var model = form.elements.namedItem("base_model");
    var resolution = form.elements.namedItem("resolution");
    var prompt = form.elements.namedItem("sample_prompt");
    if (!data) return;
    var defaults;
    try {
      defaults = JSON.parse(data.textContent);
    } catch (e) {
      return;
    }
    var models = defaults.models || {};
    var prompts = defaults.prompts || {};

    if (model && resolution) {
      var previous = models[model.value];
      model.addEventListener("change", function () {
        var next = models[model.value];
        if (!next) return;
        if (resolution.value === "" || (previous && String(previous.size) === resolution.value)) {
          resolution.value = next.size;
        }
        // The family's precision and memory defaults (SDXL and Flux: bf16 with gradient checkpointing),
        // unless the user changed them from what the previous model suggested.
        var precision = form.elements.namedItem("mixed_precision");
        if (precision && previous && precision.value === previous.mixed_precision) {
          precision.value = next.mixed_precision;
        }
        var checkpointing = form.elements.namedItem("gradient_checkpointing");
        if (checkpointing && previous && checkpointing.checked === previous.gradient_checkpointing) {
          checkpointing.checked = next.gradient_checkpointing;
        }
        if (previous && presetSelect.value === previous.preset && next.preset !== previous.preset) {
          presetSelect.value = next.preset;
          // Fill the preset's values the way choosing it by hand does.
          presetSelect.dispatchEvent(new Event("change", { bubbles: true }));
        }
        previous = next;
      });
    }

    if (prompt) {
      var filled = prompt.value;
      form.addEventListener("change", function (event) {
        if (event.target.name !== "albums") return;
        var first = form.querySelector('input[name="albums"]:checked');
        var suggestion = first ? prompts[first.value] : "";
        if (suggestion === undefined || (prompt.value !== "" && prompt.value !== filled)) return;
        prompt.value = suggestion;
        filled = suggestion;
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
