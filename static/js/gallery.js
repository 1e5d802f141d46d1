// The run page's sample viewer: selecting a thumbnail in the gallery opens it large in a <dialog>, with
// the prompt and the step, and the arrow keys walk the grid (left and right: later and earlier steps of
// the same prompt; up and down: the other prompts at the same step). Escape and Close return focus to the
// thumbnail. Clicks are caught on the document, so a gallery the live script redraws needs nothing more.
// Without JavaScript, or without <dialog>, each thumbnail is a plain link to its full image.
(function () {
  "use strict";
  var viewer = document.getElementById("sample-viewer");
  if (!viewer || typeof viewer.showModal !== "function") return;

  var image = document.getElementById("sample-viewer-image");
  var title = document.getElementById("sample-viewer-title");
  var prompt = document.getElementById("sample-viewer-prompt");
  var full = document.getElementById("sample-viewer-full");
  var later = document.getElementById("sample-viewer-later");
  var earlier = document.getElementById("sample-viewer-earlier");
  var shown = null; // {step, prompt} of the sample in the viewer
  var opener = null; // the thumbnail to give focus back to

  function link(step, promptIndex) {
    return document.getElementById("sample-" + step + "-" + promptIndex);
  }

  // Neighbours in the gallery as it is now: the same row's next cell with a sample, or the same column's.
  function neighbour(current, rowDelta, columnDelta) {
    var cell = current.closest("td");
    var row = cell.parentElement;
    if (columnDelta) {
      for (var next = cell; (next = columnDelta > 0 ? next.nextElementSibling : next.previousElementSibling); ) {
        var found = next.querySelector("a.sample");
        if (found) return found;
      }
      return null;
    }
    var column = Array.prototype.indexOf.call(row.children, cell);
    for (var other = row; (other = rowDelta > 0 ? other.nextElementSibling : other.previousElementSibling); ) {
      var hit = other.children[column] && other.children[column].querySelector("a.sample");
      if (hit) return hit;
    }
    return null;
  }

  function show(thumbnail) {
    var data = thumbnail.dataset;
    shown = { step: data.step, prompt: data.promptIndex };
    image.src = data.large;
    image.alt = "Step " + data.step + ": " + data.prompt;
    if (data.width && data.height) {
      image.width = data.width;
      image.height = data.height;
    }
    title.textContent = data.step === "0" ? "Before training" : "Step " + data.step;
    prompt.textContent = data.prompt;
    full.href = thumbnail.getAttribute("href");
    later.disabled = !neighbour(thumbnail, 0, -1);
    earlier.disabled = !neighbour(thumbnail, 0, 1);
  }

  function move(rowDelta, columnDelta) {
    var current = shown && link(shown.step, shown.prompt);
    var next = current && neighbour(current, rowDelta, columnDelta);
    if (next) {
      opener = next;
      show(next);
    }
  }

  document.addEventListener("click", function (event) {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    var thumbnail = event.target.closest && event.target.closest("a.sample");
    if (!thumbnail) return;
    event.preventDefault();
    opener = thumbnail;
    show(thumbnail);
    viewer.showModal();
  });

  later.addEventListener("click", function () {
    move(0, -1);
  });
  earlier.addEventListener("click", function () {
    move(0, 1);
  });

  // The browser's own closing gives focus back to the thumbnail the viewer opened from, and the `close`
  // event comes a task later: closing here moves focus to the sample shown as part of closing.
  function closeViewer() {
    viewer.close();
    returnFocus();
  }

  function returnFocus() {
    // The live script may have redrawn the gallery meanwhile: find the thumbnail again by its id.
    var target = opener && (document.getElementById(opener.id) || opener);
    if (target && target.isConnected) target.focus();
  }

  viewer.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      event.preventDefault(); // a cancelled keydown is no close request (HTML: close requests)
      closeViewer();
      return;
    }
    var moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    var delta = moves[event.key];
    if (!delta) return;
    event.preventDefault();
    move(delta[0], delta[1]);
  });

  viewer.querySelector("form[method=dialog]").addEventListener("submit", function (event) {
    event.preventDefault();
    closeViewer();
  });

  // A click on the backdrop (outside the dialog's box) closes it, as Escape does.
  viewer.addEventListener("click", function (event) {
    if (event.target !== viewer) return;
    var box = viewer.getBoundingClientRect();
    var inside = event.clientX >= box.left && event.clientX <= box.right &&
      event.clientY >= box.top && event.clientY <= box.bottom;
    if (!inside) closeViewer();
  });

  // Any other way the dialog closes (a platform's back gesture) gives focus back here, a task later.
  viewer.addEventListener("close", function () {
    returnFocus();
    shown = null;
  });
})();
