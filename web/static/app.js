// Civitas web UI: copy buttons and the publish form's upload with a live progress bar,
// plus the node's own view of the upload (Server-Sent Events from /api/uploads/{id}/events).
// Everything here is an enhancement: every page works without JavaScript.
"use strict";

(function () {
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function setUpCopyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      const label = button.textContent;
      button.hidden = false;
      button.addEventListener("click", function () {
        copyText(button.dataset.copy).then(
          function () { button.textContent = "Copied"; button.classList.add("done"); },
          function () { button.textContent = "Copy failed"; }
        ).finally(function () {
          setTimeout(function () { button.textContent = label; button.classList.remove("done"); }, 1600);
        });
      });
    });
  }

  function humanBytes(n) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  }

  // The same metadata the no-JavaScript form sends, as the JSON API's `metadata` part.
  function metadata(fields) {
    const data = {};
    ["name", "type", "base_model", "version", "license", "rating"].forEach(function (key) {
      const value = String(fields.get(key) || "").trim();
      if (value) { data[key] = value; }
    });
    ["description", "version_description"].forEach(function (key) {
      const value = String(fields.get(key) || "");
      if (value) { data[key] = value; }
    });
    ["tags", "trained_words"].forEach(function (key) {
      data[key] = String(fields.get(key) || "").split(",")
        .map(function (s) { return s.trim(); }).filter(Boolean);
    });
    ["allow_no_credit", "allow_derivatives", "allow_different_license"].forEach(function (key) {
      data[key] = fields.has(key);
    });
    data.allow_commercial_use = fields.getAll("allow_commercial_use");
    return data;
  }

  // 32 random hex digits: the id the node files this upload's progress under.
  function newUploadId() {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }

  // Follow the node's stages of one upload; `show` gets each state the node sends. The
  // node waits a few seconds for an upload it has not seen yet, so this may start first.
  function watchUpload(id, show) {
    let heard = false;
    const source = new EventSource("/api/uploads/" + encodeURIComponent(id) + "/events");
    source.addEventListener("message", function (event) {
      let state = null;
      try { state = JSON.parse(event.data); } catch (e) { return; }
      heard = true;
      show(state);
      if (state.stage === "done" || state.stage === "failed") { source.close(); }
    });
    return {
      stop: function () { source.close(); },
      // The request was refused before the node filed it (nothing to hear): stop asking.
      refused: function () { if (!heard) { source.close(); } }
    };
  }

  function serverText(state) {
    const received = humanBytes(state.received || 0);
    if (state.stage === "receiving") {
      return "Server: received " + received + (state.total ? " of " + humanBytes(state.total) : "") + ".";
    }
    if (state.stage === "checking") {
      return "Server: received " + received + " — checking the file and storing it…";
    }
    if (state.stage === "done") {
      return "Server: received " + received + " — checked and stored.";
    }
    return "Server: the upload failed — " + (state.error || "unknown error");
  }

  function enhanceUpload(form) {
    const panel = form.querySelector(".upload-progress");
    const bar = form.querySelector("progress");
    const status = form.querySelector("#upload-status");
    const server = form.querySelector("#upload-server");
    const submit = form.querySelector("button[type=submit]");

    function say(text, isError) {
      status.textContent = text;
      status.classList.toggle("error", Boolean(isError));
    }

    function finished(result) {
      bar.value = 100;
      const url = "/models/" + result.model.id;
      const warnings = result.warnings || [];
      if (warnings.length === 0) {
        say(result.created ? "Published. Opening the model page…" : "Already published. Opening it…");
        setTimeout(function () { window.location.assign(url); }, 700);
        return;
      }
      say("Published, with notes:");
      const list = document.createElement("ul");
      warnings.forEach(function (w) {
        const item = document.createElement("li");
        item.textContent = w;
        list.appendChild(item);
      });
      const link = document.createElement("a");
      link.href = url;
      link.className = "button primary";
      link.textContent = "Open the model page";
      status.after(list, link);
    }

    form.addEventListener("submit", function (event) {
      const file = form.elements.file.files[0];
      if (!file) { return; }
      event.preventDefault();
      const fields = new FormData(form);
      const body = new FormData();
      body.append("metadata", JSON.stringify(metadata(fields)));
      fields.getAll("image").forEach(function (image) {
        if (image.size) { body.append("image", image, image.name); }
      });
      body.append("file", file, file.name);

      const uploadId = newUploadId();
      server.hidden = true;
      const watcher = window.EventSource ? watchUpload(uploadId, function (state) {
        server.hidden = false;
        server.textContent = serverText(state);
        server.classList.toggle("error", state.stage === "failed");
      }) : {stop: function () {}, refused: function () {}};
      const xhr = new XMLHttpRequest();
      const started = performance.now();
      xhr.open("POST", form.dataset.upload + "?upload=" + uploadId);
      xhr.setRequestHeader("X-CSRF-Token", fields.get("csrf_token"));
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        const total = e.lengthComputable ? e.total : file.size;
        const percent = total ? Math.min(100, Math.round((e.loaded / total) * 100)) : 0;
        const seconds = Math.max((performance.now() - started) / 1000, 0.001);
        bar.value = percent;
        bar.textContent = percent + "%";
        say(humanBytes(e.loaded) + " of " + humanBytes(total) + " · " + percent + "% · " +
            humanBytes(e.loaded / seconds) + "/s");
      });
      xhr.upload.addEventListener("load", function () {
        bar.value = 100;
        say("Uploaded " + humanBytes(file.size) + ". The node is checking the file…");
      });
      xhr.addEventListener("load", function () {
        let data = {};
        try { data = JSON.parse(xhr.responseText); } catch (e) { data = {}; }
        if (xhr.status >= 200 && xhr.status < 300) {
          finished(data);
        } else {
          watcher.refused();
          submit.disabled = false;
          say(data.message || ("The node answered " + xhr.status + "."), true);
        }
      });
      xhr.addEventListener("error", function () {
        watcher.stop();
        submit.disabled = false;
        say("The upload failed: check the connection and try again.", true);
      });
      submit.disabled = true;
      panel.hidden = false;
      bar.value = 0;
      say("Starting the upload…");
      xhr.send(body);
    });
  }

  setUpCopyButtons();
  const uploadForm = document.querySelector("form[data-upload]");
  if (uploadForm && window.FormData && window.XMLHttpRequest) {
    enhanceUpload(uploadForm);
  }
})();
