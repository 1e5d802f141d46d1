// A "Copy" button beside a one-time secret: it copies the text of the element named by data-copy. The
// button stays hidden where the clipboard cannot be written (no JavaScript, or not a secure context).
(function () {
  "use strict";
  if (!navigator.clipboard) return;
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(
        function () { button.textContent = "Copied"; },
        function () { button.textContent = "Select and copy it by hand"; }
      );
    });
  });
})();
