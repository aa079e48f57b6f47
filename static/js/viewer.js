// The viewer: opens any image of a grid over the grid (gallery, album, search, duplicates, similar images).
// Arrow keys walk that grid's order (loading the next page at the end), "0"/the 100% button shows the image at
// its own pixel size (data-full: a full-size re-encode of the original; the preview where a grid has none),
// Esc closes and leaves the page where it was scrolled. The address shows the image's own page while open,
// so it can be copied as a permanent link; Back closes the viewer.
(function () {
  "use strict";
  var overlay = null, img = null, title = null, counter = null, link = null, zoomButton = null;
  var grid = null, index = -1, scrollY = 0, pushed = false;

  function links() {
    return grid ? Array.prototype.slice.call(grid.querySelectorAll("a.open[data-preview]")) : [];
  }

  function build() {
    overlay = document.createElement("div");
    overlay.className = "viewer";
    overlay.id = "viewer";
    overlay.setAttribute("role", "dialog");
    overlay.setAttribute("aria-modal", "true");
    overlay.hidden = true;
    overlay.innerHTML =
      '<div class="viewer-bar"><span class="viewer-title"></span><span class="viewer-count muted"></span>' +
      '<span class="viewer-actions"><button type="button" class="small secondary" data-act="zoom" aria-pressed="false">100%</button>' +
      '<a class="button small secondary viewer-link" href="#">Image page</a>' +
      '<button type="button" class="small secondary" data-act="close" aria-label="Close">✕</button></span></div>' +
      '<button type="button" class="viewer-nav prev" data-act="prev" aria-label="Previous">‹</button>' +
      '<div class="viewer-stage"><img alt=""></div>' +
      '<button type="button" class="viewer-nav next" data-act="next" aria-label="Next">›</button>';
    document.body.appendChild(overlay);
    img = overlay.querySelector(".viewer-stage img");
    title = overlay.querySelector(".viewer-title");
    counter = overlay.querySelector(".viewer-count");
    link = overlay.querySelector(".viewer-link");
    zoomButton = overlay.querySelector('[data-act="zoom"]');
    overlay.addEventListener("click", function (event) {
      var act = event.target.closest("[data-act]");
      if (!act) return;
      event.preventDefault();
      ({ close: close, prev: function () { step(-1); }, next: function () { step(1); }, zoom: zoom })[act.dataset.act]();
    });
  }

  function show(i) {
    var all = links();
    if (i < 0 || i >= all.length) return;
    index = i;
    var a = all[i];
    img.src = a.dataset.preview;
    setZoom(false);
    img.alt = a.dataset.title || "";
    title.textContent = a.dataset.title || "";
    counter.textContent = (i + 1) + " / " + all.length + (a.dataset.size ? " · " + a.dataset.size : "");
    link.href = a.getAttribute("href");
    overlay.dataset.id = a.closest("[data-id]") ? a.closest("[data-id]").dataset.id : "";
    if (pushed) window.history.replaceState({ viewer: true }, "", a.getAttribute("href"));
  }

  function open(a) {
    if (!overlay) build();
    grid = a.closest("[data-viewer-grid]");
    scrollY = window.scrollY;
    overlay.hidden = false;
    document.body.classList.add("viewer-open");
    window.history.pushState({ viewer: true }, "", a.getAttribute("href"));
    pushed = true;
    show(links().indexOf(a));
    overlay.focus();
  }

  function close(fromHistory) {
    if (!overlay || overlay.hidden) return;
    overlay.hidden = true;
    img.removeAttribute("src");
    document.body.classList.remove("viewer-open");
    if (pushed && fromHistory !== true) {
      pushed = false;
      window.history.back();  // drop the image's address again; popstate puts the scroll back once more
    }
    pushed = false;
    window.scrollTo(0, scrollY);
    var all = links();
    if (all[index]) all[index].focus({ preventScroll: true });
  }

  function step(delta) {
    var all = links();
    var next = index + delta;
    if (next >= 0 && next < all.length) { show(next); return; }
    // Past the last loaded image: load the next page of this grid, then move on.
    var more = delta > 0 && grid ? grid.querySelector(".load-more") : null;
    if (more && window.htmx) {
      var count = all.length;
      document.addEventListener("htmx:afterSettle", function once() {
        document.removeEventListener("htmx:afterSettle", once);
        if (links().length > count) show(count);
      });
      window.htmx.trigger(more, "click");
    }
  }

  function setZoom(on) {
    if (!overlay) return;
    overlay.classList.toggle("actual-size", on);
    zoomButton.setAttribute("aria-pressed", on ? "true" : "false");
    // 100% shows the image's own pixels (a full-size re-encode), not the 1280 px preview.
    var a = links()[index];
    if (!a) return;
    var wanted = on && a.dataset.full ? a.dataset.full : a.dataset.preview;
    if (img.getAttribute("src") !== wanted) img.src = wanted;
  }
  function zoom() { setZoom(!overlay.classList.contains("actual-size")); }

  document.addEventListener("click", function (event) {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    var a = event.target.closest ? event.target.closest("[data-viewer-grid] a.open[data-preview]") : null;
    if (!a) return;
    event.preventDefault();
    open(a);
  });
  document.addEventListener("keydown", function (event) {
    if (!overlay || overlay.hidden) return;
    if (event.key === "Escape") { event.preventDefault(); close(); }
    else if (event.key === "ArrowRight") { event.preventDefault(); step(1); }
    else if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
    else if (event.key === "0" || event.key === "z") { event.preventDefault(); zoom(); }
  });
  window.addEventListener("popstate", function () {
    if (overlay && !overlay.hidden) close(true); else if (grid) window.scrollTo(0, scrollY);
  });
})();
