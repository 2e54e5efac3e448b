// audittrail.js: the verification page follows a verification under way.
// It asks the server for the progress every two seconds and shows it; when
// the verification has ended it reloads the page, which shows the result.
// Without it the page works the same, reloaded by hand.
"use strict";

(() => {
  const running = document.getElementById("verify-running");
  if (!running) return;
  const bar = document.getElementById("verify-progress");
  const text = document.getElementById("verify-text");
  async function poll() {
    try {
      const r = await fetch("/audit-verify/status", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(String(r.status));
      const s = await r.json();
      if (!s.running) {
        location.reload();
        return;
      }
      bar.max = Math.max(s.total, 1);
      bar.value = s.checked;
      if (text.textContent !== s.text) text.textContent = s.text;
    } catch (e) {
      // Offline or signed out: the next poll, or a reload, tells.
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
})();
