// Generate page: live weight labels, LoRAs filtered to the chosen model's kind, a "random seed" button.
(function () {
  "use strict";
  function selectedKind() {
    var select = document.getElementById("id_base_model");
    if (!select || select.selectedIndex < 0) return "";
    return select.options[select.selectedIndex].getAttribute("data-kind") || "";
  }
  function filterLoras() {
    var kind = selectedKind();
    var hidden = 0;
    document.querySelectorAll(".lora-option").forEach(function (row) {
      var other = kind && row.getAttribute("data-kind") !== kind;
      row.classList.toggle("hidden", other);
      var box = row.querySelector("input[type=checkbox]");
      if (other && box) box.checked = false;  // a LoRA of another kind would be refused
      if (other) hidden += 1;
    });
    var note = document.querySelector(".lora-kind-note");
    if (note) note.classList.toggle("hidden", hidden === 0);
    syncEnabled();
  }
  function syncEnabled() {
    document.querySelectorAll(".lora-option").forEach(function (row) {
      var box = row.querySelector("input[type=checkbox]");
      row.classList.toggle("disabled", box && !box.checked);
    });
  }
  function showWeight(range) {
    var out = range.parentNode.querySelector("output");
    if (out) out.textContent = Number(range.value).toFixed(2);
  }
  document.addEventListener("input", function (event) {
    var target = event.target;
    if (target.matches(".lora-weight input[type=range]")) {
      showWeight(target);
      // Moving a weight means the LoRA is wanted.
      var box = target.closest(".lora-option").querySelector("input[type=checkbox]");
      if (box && !box.checked) { box.checked = true; syncEnabled(); }
    }
  });
  document.addEventListener("change", function (event) {
    if (event.target.id === "id_base_model") filterLoras();
    if (event.target.matches(".lora-option input[type=checkbox]")) syncEnabled();
  });
  document.addEventListener("click", function (event) {
    if (event.target.id === "random-seed") {
      var seed = document.getElementById("id_seed");
      if (seed) { seed.value = ""; seed.focus(); }
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".lora-weight input[type=range]").forEach(showWeight);
    filterLoras();
  });
})();
