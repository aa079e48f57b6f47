// Drag-and-drop multi-file upload: one request per file, with per-file progress and errors.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;
  var input = document.getElementById("id_files");
  var zone = document.getElementById("dropzone");
  var list = document.getElementById("upload-list");
  var maxBytes = parseInt(form.dataset.maxBytes, 10);
  var token = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"];

  function row(file) {
    var li = document.createElement("li");
    var name = document.createElement("span");
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100; bar.value = 0;
    var status = document.createElement("span");
    status.className = "status";
    status.textContent = "waiting";
    li.append(name, bar, status);
    list.appendChild(li);
    return { li: li, bar: bar, status: status };
  }

  function finish(ui, ok, text, url) {
    ui.li.className = ok ? "ok" : "failed";
    ui.status.textContent = "";
    if (ok && url) {
      var a = document.createElement("a");
      a.href = url; a.textContent = text;
      ui.status.appendChild(a);
    } else {
      var s = document.createElement("span");
      s.className = ok ? "" : "error";
      s.textContent = text;
      ui.status.appendChild(s);
    }
    ui.bar.value = 100;
  }

  function send(file, ui) {
    return new Promise(function (resolve) {
      if (file.size > maxBytes) {
        finish(ui, false, "too large (limit " + Math.round(maxBytes / 1048576) + " MB)");
        return resolve();
      }
      var data = new FormData();
      data.append("file", file);
      data.append("album", document.getElementById("id_album").value);
      if (document.getElementById("id_stack") && document.getElementById("id_stack").checked) data.append("stack", "on");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.uploadUrl);
      xhr.setRequestHeader("X-CSRFToken", token);
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) ui.bar.value = Math.round(100 * e.loaded / e.total);
        ui.status.textContent = "uploading";
      });
      xhr.addEventListener("load", function () {
        var body = {};
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = { ok: false, error: "server error " + xhr.status }; }
        if (body.ok) finish(ui, true, body.duplicate ? "already in your gallery" : "uploaded", body.url);
        else finish(ui, false, body.error || ("failed (" + xhr.status + ")"));
        resolve();
      });
      xhr.addEventListener("error", function () { finish(ui, false, "network error"); resolve(); });
      xhr.send(data);
    });
  }

  function uploadAll(files) {
    var queue = Array.prototype.map.call(files, function (f) { return { file: f, ui: row(f) }; });
    // Two at a time: fast, without flooding a small server.
    var next = 0;
    function worker() {
      if (next >= queue.length) return Promise.resolve();
      var item = queue[next++];
      return send(item.file, item.ui).then(worker);
    }
    return Promise.all([worker(), worker()]);
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (input.files.length) uploadAll(input.files).then(function () { input.value = ""; });
  });
  input.addEventListener("change", function () { if (input.files.length) uploadAll(input.files).then(function () { input.value = ""; }); });
  ["dragenter", "dragover"].forEach(function (t) { zone.addEventListener(t, function (e) { e.preventDefault(); zone.classList.add("over"); }); });
  ["dragleave", "drop"].forEach(function (t) { zone.addEventListener(t, function (e) { e.preventDefault(); zone.classList.remove("over"); }); });
  zone.addEventListener("drop", function (e) { if (e.dataTransfer.files.length) uploadAll(e.dataTransfer.files); });
})();
