/* Copy buttons: <button data-copy-target="ID"> copies the value (or text) of the element with
   that id, and reports the result in the next .copy-status element of the same parent. */
(function () {
  "use strict";

  function report(button, text) {
    var status = button.parentNode && button.parentNode.querySelector(".copy-status");
    if (status) status.textContent = text;
  }

  function fallbackCopy(el) {
    // Without the async clipboard (plain http on a remote host): select, then execCommand.
    if (el.select) el.select();
    try {
      return document.execCommand("copy");
    } catch (e) {
      return false;
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy-target]");
    if (!button) return;
    var el = document.getElementById(button.getAttribute("data-copy-target"));
    if (!el) return;
    var text = "value" in el ? el.value : el.textContent;
    var failed = function () {
      report(button, fallbackCopy(el) ? "Copied." : "Press Ctrl+C (⌘C) to copy the selected key.");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { report(button, "Copied."); }, failed);
    } else {
      failed();
    }
  });
})();
