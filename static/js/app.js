// Imagineer's small client script. No inline scripts anywhere (the CSP forbids them).
(function () {
  "use strict";
  // Confirm destructive buttons that carry data-confirm.
  document.addEventListener("click", function (event) {
    var el = event.target.closest("[data-confirm]");
    if (el && !window.confirm(el.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  // Server errors on htmx requests become a visible message instead of silence.
  document.addEventListener("htmx:responseError", function (event) {
    var box = document.querySelector(".messages") || (function () {
      var ul = document.createElement("ul");
      ul.className = "messages";
      document.querySelector("main").prepend(ul);
      return ul;
    })();
    var li = document.createElement("li");
    li.className = "message error";
    li.textContent = "Request failed (" + event.detail.xhr.status + "). Please try again.";
    box.appendChild(li);
  });
})();
