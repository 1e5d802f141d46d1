// Upload reference photos one request per file, in the order they were chosen (one at a time, so the
// character keeps them in that order), with a progress bar and a message for each. When the batch is done
// the photo grid and the training panel (photo count, Train) are redrawn from the server's page.
// Without JavaScript the same form posts every file at once and the server answers with a page.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) return;

  var input = document.getElementById("upload-input");
  var dropzone = document.getElementById("dropzone");
  var list = document.getElementById("upload-list");
  var summary = document.getElementById("upload-summary");
  var maxBytes = parseInt(form.dataset.maxBytes, 10);
  var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var PARALLEL = 1; // one at a time: the server stores photos in the order they arrive
  var queue = [];
  var running = 0;
  var counts = { added: 0, rejected: 0 };

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    enqueue(input.files);
    input.value = "";
  });
  input.addEventListener("change", function () {
    enqueue(input.files);
    input.value = "";
  });
  ["dragenter", "dragover"].forEach(function (type) {
    dropzone.addEventListener(type, function (event) {
      event.preventDefault();
      dropzone.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    dropzone.addEventListener(type, function (event) {
      event.preventDefault();
      dropzone.classList.remove("dragging");
    });
  });
  dropzone.addEventListener("drop", function (event) {
    enqueue(event.dataTransfer.files);
  });

  function enqueue(files) {
    for (var i = 0; i < files.length; i++) {
      var item = addRow(files[i]);
      if (files[i].size > maxBytes) {
        finish(item, false, "larger than " + Math.round(maxBytes / 1048576) + " MB; export it smaller.");
        continue;
      }
      queue.push(item);
    }
    pump();
  }

  function addRow(file) {
    var row = document.createElement("li");
    row.className = "file-result pending";
    var name = document.createElement("strong");
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + file.name);
    var text = document.createElement("span");
    text.textContent = "waiting";
    row.append(name, " ", bar, " ", text);
    list.appendChild(row);
    return { file: file, row: row, bar: bar, text: text };
  }

  function pump() {
    while (running < PARALLEL && queue.length) {
      running++;
      send(queue.shift());
    }
  }

  function send(item) {
    item.sent = true;
    item.text.textContent = "0 %";
    var body = new FormData();
    body.append(input.name, item.file, item.file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", token);
    xhr.upload.addEventListener("progress", function (event) {
      if (!event.lengthComputable) return;
      item.bar.value = Math.round((event.loaded / event.total) * 100);
      item.text.textContent = item.bar.value < 100 ? item.bar.value + " %" : "checking…";
    });
    xhr.addEventListener("load", function () {
      var data = parse(xhr);
      if (data && data.added && data.added.length) {
        finish(item, true, "added");
      } else if (data && data.rejected && data.rejected.length) {
        var reason = data.rejected[0].message;
        finish(item, false, reason.slice(reason.indexOf(": ") + 2));
      } else if (xhr.status === 403) {
        finish(item, false, "the page is out of date. Reload it and try again.");
      } else if (!data) {
        finish(item, false, "your session has ended or the server failed. Reload the page and log in again.");
      } else {
        finish(item, false, data.message || "the server refused it (HTTP " + xhr.status + ").");
      }
    });
    xhr.addEventListener("error", function () {
      finish(item, false, "the connection failed. Check your network and try again.");
    });
    xhr.send(body);
  }

  function parse(xhr) {
    if ((xhr.getResponseHeader("Content-Type") || "").indexOf("application/json") !== 0) return null;
    try {
      return JSON.parse(xhr.responseText);
    } catch (error) {
      return null;
    }
  }

  function finish(item, ok, message) {
    item.row.className = "file-result " + (ok ? "ok" : "error");
    item.bar.value = ok ? 100 : item.bar.value;
    item.text.textContent = ok ? message : "refused: " + message;
    counts[ok ? "added" : "rejected"]++;
    if (item.sent) running--; // files refused before sending never held a slot
    pump();
    report();
  }

  function report() {
    if (running || queue.length) return;
    summary.hidden = false;
    summary.textContent = counts.added + " added, " + counts.rejected + " refused.";
    if (counts.added) refresh();
  }

  // Replace the grid and the training panel with the server's current ones (same page, same rules).
  function refresh() {
    if (!window.fetch || !window.DOMParser) return;
    fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["images", "training-panel"].forEach(function (id) {
          var current = document.getElementById(id);
          var replacement = fresh.getElementById(id);
          if (current && replacement) current.replaceWith(document.importNode(replacement, true));
        });
      })
      .catch(function () {
        var link = document.createElement("a");
        link.href = window.location.pathname;
        link.textContent = " Reload the page to see them.";
        summary.appendChild(link);
      });
  }
})();
