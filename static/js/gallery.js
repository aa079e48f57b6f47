// Gallery: bulk selection and drag-and-drop reordering of album images.
(function () {
  "use strict";
  function selected() {
    return Array.prototype.map.call(document.querySelectorAll(".tile .select:checked"), function (el) { return el.value; });
  }
  function refresh() {
    var ids = selected();
    var input = document.getElementById("bulk-ids");
    var count = document.getElementById("bulk-count");
    if (input) input.value = ids.join(",");
    if (count) count.textContent = ids.length;
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches(".tile .select")) refresh();
  });
  document.addEventListener("click", function (event) {
    if (event.target.id === "select-all") {
      var boxes = document.querySelectorAll(".tile .select");
      var all = Array.prototype.every.call(boxes, function (b) { return b.checked; });
      boxes.forEach(function (b) { b.checked = !all; });
      refresh();
    }
  });
  document.addEventListener("submit", function (event) {
    if (event.target.id === "bulk-form") {
      refresh();
      if (!document.getElementById("bulk-ids").value) {
        event.preventDefault();
        window.alert("Select some images first.");
      }
    }
  });
  // Drag-and-drop reorder inside an album the user can edit.
  var grid = document.querySelector(".grid.sortable");
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
    grid.insertBefore(dragged, after ? over.nextSibling : over);
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
})();
