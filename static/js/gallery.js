// Gallery: justified layout, date sections that continue across pages, selection (click, shift-click ranges,
// select all loaded) for the bulk actions, and drag-and-drop reordering of album images.
(function () {
  "use strict";
  var ROW_HEIGHT = 220;   // target row height of the justified grid, in CSS pixels
  var SQUARE = 180;       // side of a square tile
  var LAYOUT_KEY = "imagineer.gallery.layout";

  function squareMode() {
    var grid = document.getElementById("grid");
    return !!grid && grid.classList.contains("square");
  }

  // Each tile grows in proportion to its aspect ratio, so a row's tiles share one height; no tile grows past
  // the picture's own width (never upscaled). Inline styles set from script are allowed by the CSP.
  function layoutTile(tile) {
    var w = parseInt(tile.dataset.w, 10), h = parseInt(tile.dataset.h, 10);
    if (!w || !h) return;
    var img = tile.querySelector("img");
    if (squareMode()) {
      var side = Math.min(SQUARE, w, h);
      tile.style.flex = "0 0 " + side + "px";
      tile.style.maxWidth = side + "px";
      if (img) img.style.aspectRatio = "1 / 1";
    } else {
      var ratio = w / h;
      tile.style.flex = ratio + " 1 " + (ratio * Math.min(ROW_HEIGHT, h)) + "px";
      tile.style.maxWidth = w + "px";
      if (img) img.style.aspectRatio = w + " / " + h;
    }
    offerSizes(tile, img, w, h);
  }

  // A tile can be shown wider than the thumbnail (which is at most THUMB px on its long side): offer the preview
  // too, so the browser takes the sharper one when the tile needs it (still never past the picture's own size).
  var THUMB = 300, PREVIEW = 1280;
  function offerSizes(tile, img, w, h) {
    var open = tile.querySelector("a.open");
    if (!img || !open || img.srcset || !/preview\.webp$/.test(open.dataset.preview || "")) return;
    var scale = function (limit) { return Math.max(1, Math.round(w * Math.min(1, limit / Math.max(w, h)))); };
    var thumbW = scale(THUMB), previewW = scale(PREVIEW);
    if (previewW <= thumbW) return;
    img.sizes = Math.ceil(Math.min(w, (w / h) * ROW_HEIGHT * 1.5)) + "px";
    img.srcset = img.getAttribute("src") + " " + thumbW + "w, " + open.dataset.preview + " " + previewW + "w";
  }

  function layout(root) {
    (root || document).querySelectorAll(".jgrid .tile").forEach(layoutTile);
  }

  // A page loaded by infinite scroll may start with the day the previous page ended with: one section.
  function mergeDays() {
    var grid = document.getElementById("grid");
    if (!grid) return;
    var previous = null;
    Array.prototype.slice.call(grid.querySelectorAll("section.day")).forEach(function (section) {
      if (previous && section.dataset.day && previous.dataset.day === section.dataset.day) {
        var target = previous.querySelector(".jgrid");
        Array.prototype.slice.call(section.querySelectorAll(".jgrid > .tile")).forEach(function (t) { target.appendChild(t); });
        section.remove();
      } else {
        previous = section;
      }
    });
  }

  function boxes() {
    return Array.prototype.slice.call(document.querySelectorAll(".tile .select"));
  }
  function refresh() {
    var ids = boxes().filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    var input = document.getElementById("bulk-ids");
    var count = document.getElementById("bulk-count");
    if (input) input.value = ids.join(",");
    if (count) count.textContent = ids.length;
    document.body.classList.toggle("selecting", ids.length > 0);
    boxes().forEach(function (b) { b.closest(".tile").classList.toggle("selected", b.checked); });
  }

  var anchor = null;  // the last box clicked without shift: one end of a shift-click range
  function toggle(box, shift) {
    var all = boxes();
    if (shift && anchor && all.indexOf(anchor) !== -1) {
      var a = all.indexOf(anchor), b = all.indexOf(box);
      var state = anchor.checked;
      all.slice(Math.min(a, b), Math.max(a, b) + 1).forEach(function (x) { x.checked = state; });
    } else {
      anchor = box;
    }
    refresh();
  }

  document.addEventListener("click", function (event) {
    var box = event.target.closest ? event.target.closest(".tile .select") : null;
    if (box) {
      // The browser has already flipped this box; a shift-click copies the anchor's state over the range.
      toggle(box, event.shiftKey);
      return;
    }
    // While something is selected, a click on a tile (or shift-click anywhere on it) selects instead of opening.
    var tile = event.target.closest ? event.target.closest(".jgrid .tile") : null;
    if (tile && (document.body.classList.contains("selecting") || event.shiftKey) && !event.target.closest(".tile-actions")) {
      var tileBox = tile.querySelector(".select");
      if (tileBox) {
        event.preventDefault();
        event.stopPropagation();
        tileBox.checked = event.shiftKey && anchor ? anchor.checked : !tileBox.checked;
        toggle(tileBox, event.shiftKey);
      }
      return;
    }
    if (event.target.id === "select-all") {
      var all = boxes();
      var every = all.length > 0 && all.every(function (b) { return b.checked; });
      all.forEach(function (b) { b.checked = !every; });
      refresh();
    }
    if (event.target.id === "layout-toggle") {
      var grid = document.getElementById("grid");
      if (!grid) return;
      grid.classList.toggle("square");
      event.target.setAttribute("aria-pressed", squareMode() ? "true" : "false");
      try { window.localStorage.setItem(LAYOUT_KEY, squareMode() ? "square" : "justified"); } catch (e) { /* private mode */ }
      layout();
    }
  }, true);
  document.addEventListener("submit", function (event) {
    if (event.target.id === "bulk-form") {
      refresh();
      if (!document.getElementById("bulk-ids").value) {
        event.preventDefault();
        window.alert("Select some images first.");
      }
    }
  });
  document.addEventListener("htmx:afterSwap", function () { mergeDays(); layout(); refresh(); });

  function start() {
    var grid = document.getElementById("grid");
    var toggleButton = document.getElementById("layout-toggle");
    var saved = null;
    try { saved = window.localStorage.getItem(LAYOUT_KEY); } catch (e) { /* private mode */ }
    if (grid && saved === "square") {
      grid.classList.add("square");
      if (toggleButton) toggleButton.setAttribute("aria-pressed", "true");
    }
    mergeDays();
    layout();
    refresh();
    setupReorder();
  }

  // Drag-and-drop reorder inside an album the user can edit.
  function setupReorder() {
    var grid = document.querySelector("#grid.sortable");
    if (!grid) return;
    var dragged = null;
    grid.querySelectorAll(".tile").forEach(function (tile) { tile.draggable = true; });
    grid.addEventListener("dragstart", function (e) { dragged = e.target.closest(".tile"); if (dragged) dragged.classList.add("dragging"); });
    grid.addEventListener("dragover", function (e) {
      e.preventDefault();
      var over = e.target.closest(".tile");
      if (!dragged || !over || over === dragged) return;
      var rect = over.getBoundingClientRect();
      var after = (e.clientX - rect.left) > rect.width / 2;
      over.parentNode.insertBefore(dragged, after ? over.nextSibling : over);
    });
    grid.addEventListener("dragend", function () {
      if (!dragged) return;
      dragged.classList.remove("dragging");
      dragged = null;
      var ids = Array.prototype.map.call(grid.querySelectorAll(".tile"), function (t) { return t.dataset.id; });
      var body = new FormData();
      body.append("ids", ids.join(","));
      var token = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];
      fetch(grid.dataset.reorderUrl, { method: "POST", body: body, headers: { "X-CSRFToken": token, "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); })
        .catch(function () { window.alert("The new order could not be saved; reload and try again."); });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
