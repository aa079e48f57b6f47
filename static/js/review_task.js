// Review per image: ←/→ previous/next image, ↑/↓ choose a label, y accept, n reject, e edit,
// a / r accept / reject every pending label and go on to the next image.
(function () {
  "use strict";
  var current = -1;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll(".task-label")); }
  function choose(i) {
    var all = rows();
    if (!all.length) return;
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach(function (r, n) { r.classList.toggle("current", n === current); });
    all[current].focus();
  }
  function click(selector, scope) {
    var el = (scope || document).querySelector(selector);
    if (el && !el.disabled) el.click();
  }
  function follow(id) {
    var link = document.getElementById(id);
    if (link) window.location.href = link.href;
  }
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.target.matches("input, textarea, select")) {
      if (e.key === "Escape") { e.target.blur(); }
      return;
    }
    var row = rows()[current];
    switch (e.key) {
      case "ArrowRight": follow("task-next"); break;
      case "ArrowLeft": follow("task-previous"); break;
      case "ArrowDown": choose(current + 1); break;
      case "ArrowUp": choose(current - 1); break;
      case "y": if (row) click(".task-accept", row); break;
      case "n": if (row) click(".task-reject", row); break;
      case "e": if (row) { var input = row.querySelector("input[name=value]"); if (input) { input.focus(); input.select(); } } break;
      case "a": click("#accept-all"); break;
      case "r": click("#reject-all"); break;
      default: return;
    }
    e.preventDefault();
  });
})();
