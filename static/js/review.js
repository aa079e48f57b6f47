// Review queue keyboard: j/k move, x select, a approve, r reject.
(function () {
  "use strict";
  var current = 0;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll(".review-row")); }
  function focus(i) {
    var all = rows();
    if (!all.length) return;
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach(function (r, n) { r.classList.toggle("current", n === current); });
    all[current].focus();
  }
  function decide(decision) {
    var form = document.getElementById("review-form");
    if (!form) return;
    var checked = form.querySelectorAll("input[name=ids]:checked");
    if (!checked.length) {
      var row = rows()[current];
      if (!row) return;
      row.querySelector("input[name=ids]").checked = true;
    }
    var button = form.querySelector("button[value=" + decision + "]");
    if (button) button.click();
  }
  document.addEventListener("keydown", function (e) {
    if (e.target.matches("input[type=text], textarea, select")) return;
    if (e.key === "j") focus(current + 1);
    else if (e.key === "k") focus(current - 1);
    else if (e.key === "x") { var r = rows()[current]; if (r) { var c = r.querySelector("input[name=ids]"); c.checked = !c.checked; } }
    else if (e.key === "a") decide("approve");
    else if (e.key === "r") decide("reject");
  });
  document.addEventListener("click", function (e) {
    if (e.target.id === "review-select-all") {
      document.querySelectorAll("#review-form input[name=ids]").forEach(function (c) { c.checked = true; });
    }
  });
  document.addEventListener("htmx:afterSwap", function () { focus(current); });
})();
