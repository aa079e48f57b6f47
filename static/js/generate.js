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

// Modes: show the parts of the form a mode uses; pick a source; paint the inpainting mask on a canvas.
// The canvas shows white strokes over the source; on submit it becomes a black/white PNG in the hidden "mask".
(function () {
  "use strict";
  var painting = false;
  var last = null;

  function mode() {
    var checked = document.querySelector("input[name=mode]:checked");
    return checked ? checked.value : "txt2img";
  }
  function showModeParts() {
    var current = mode();
    document.querySelectorAll(".mode-part").forEach(function (part) {
      var modes = (part.getAttribute("data-modes") || "").split(" ");
      part.classList.toggle("hidden", modes.indexOf(current) < 0);
    });
  }
  function canvas() { return document.getElementById("mask-canvas"); }
  function sizeCanvas() {
    var img = document.getElementById("source-preview");
    var c = canvas();
    if (!img || !c || !img.naturalWidth) return;
    if (c.width === img.naturalWidth && c.height === img.naturalHeight) return;
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    restoreMask();
  }
  function restoreMask() {
    // A mask posted back or restored from a job: white areas become painted strokes again.
    var input = document.getElementById("id_mask");
    var c = canvas();
    if (!input || !c || !input.value || !c.width) return;
    var picture = new Image();
    picture.onload = function () {
      var ctx = c.getContext("2d");
      ctx.clearRect(0, 0, c.width, c.height);
      ctx.drawImage(picture, 0, 0, c.width, c.height);
      var data = ctx.getImageData(0, 0, c.width, c.height);
      for (var i = 0; i < data.data.length; i += 4) {
        var white = data.data[i] >= 128;
        data.data[i] = data.data[i + 1] = data.data[i + 2] = 255;
        data.data[i + 3] = white ? 255 : 0;
      }
      ctx.putImageData(data, 0, 0);
    };
    picture.src = input.value;
  }
  function point(event) {
    var c = canvas();
    var box = c.getBoundingClientRect();
    return { x: (event.clientX - box.left) * c.width / box.width, y: (event.clientY - box.top) * c.height / box.height };
  }
  function stroke(to) {
    var c = canvas();
    var ctx = c.getContext("2d");
    var brush = document.getElementById("mask-brush");
    var erase = document.getElementById("mask-erase");
    var scale = c.width / Math.max(1, c.getBoundingClientRect().width);
    ctx.globalCompositeOperation = erase && erase.checked ? "destination-out" : "source-over";
    ctx.strokeStyle = "#fff";
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = (brush ? Number(brush.value) : 24) * scale;
    ctx.beginPath();
    ctx.moveTo((last || to).x, (last || to).y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
    last = to;
  }
  function maskHasPaint() {
    var c = canvas();
    if (!c || !c.width) return false;
    var data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    for (var i = 3; i < data.length; i += 4) if (data[i] > 0) return true;
    return false;
  }
  function exportMask() {
    var input = document.getElementById("id_mask");
    var c = canvas();
    if (!input) return;
    if (mode() !== "inpaint" || !maskHasPaint()) { input.value = ""; return; }
    var out = document.createElement("canvas");
    out.width = c.width;
    out.height = c.height;
    var ctx = out.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(c, 0, 0);
    input.value = out.toDataURL("image/png");
  }
  function chooseSource(button) {
    var field = document.getElementById("id_source_image");
    var img = document.getElementById("source-preview");
    var stage = document.getElementById("mask-stage");
    if (field) field.value = button.getAttribute("data-image");
    document.querySelectorAll(".source-choice").forEach(function (b) { b.classList.toggle("selected", b === button); });
    var input = document.getElementById("id_mask");
    if (input) input.value = "";  // a mask belongs to its source
    var c = canvas();
    if (c) c.getContext("2d").clearRect(0, 0, c.width, c.height);
    if (img) img.src = button.getAttribute("data-preview");
    if (stage) stage.classList.remove("hidden");
  }

  document.addEventListener("change", function (event) {
    if (event.target.name === "mode") showModeParts();
  });
  document.addEventListener("click", function (event) {
    var choice = event.target.closest(".source-choice");
    if (choice) { chooseSource(choice); return; }
    if (event.target.id === "mask-clear") {
      var c = canvas();
      if (c) c.getContext("2d").clearRect(0, 0, c.width, c.height);
      var input = document.getElementById("id_mask");
      if (input) input.value = "";
    }
  });
  document.addEventListener("pointerdown", function (event) {
    if (event.target !== canvas()) return;
    painting = true;
    last = null;
    event.target.setPointerCapture(event.pointerId);
    stroke(point(event));
    event.preventDefault();
  });
  document.addEventListener("pointermove", function (event) {
    if (painting && event.target === canvas()) stroke(point(event));
  });
  document.addEventListener("pointerup", function () { painting = false; last = null; });
  document.addEventListener("submit", function (event) {
    if (event.target.id === "generate-form") exportMask();
  });
  document.addEventListener("DOMContentLoaded", function () {
    showModeParts();
    var img = document.getElementById("source-preview");
    if (img) {
      img.addEventListener("load", sizeCanvas);
      if (img.complete) sizeCanvas();
    }
  });
})();
