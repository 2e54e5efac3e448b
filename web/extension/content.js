// Vouch card extension: content script. It runs in every https page (and
// http pages on this machine, for tests and demos) and relays requests the
// page posts to its own window to the extension's service worker, and the
// answers back. It adds nothing the page could not forge itself: which
// origin asks is decided by the browser (sender.origin in the worker), and
// the card agent refuses every origin but the configured back office.
"use strict";

(() => {
  const FIELDS = ["id", "type", "token", "kind", "challenge", "statement"];
  window.addEventListener("message", (event) => {
    // Only the page itself, not another frame or window, and only a
    // request: our own answers come back through this listener too.
    if (event.source !== window || event.origin !== window.location.origin) return;
    const msg = event.data;
    if (!msg || typeof msg !== "object" || msg.vouchCard !== "request" || typeof msg.id !== "string") return;
    const req = {};
    for (const f of FIELDS) {
      if (typeof msg[f] === "string") req[f] = msg[f];
    }
    chrome.runtime.sendMessage(req).then(
      (resp) => answer(msg.id, resp),
      () => answer(msg.id, { type: "error", error: "extension-unavailable" }),
    );
  });

  function answer(id, resp) {
    const out = Object.assign({}, resp || { type: "error", error: "extension-unavailable" });
    out.vouchCard = "response";
    out.id = id;
    window.postMessage(out, window.location.origin);
  }
})();
