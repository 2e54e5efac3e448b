// Vouch card extension: content script. The service worker registers it
// for the back-office origins the card agent was installed for, and no
// other page: elsewhere nothing answers a page's messages, so a page
// cannot tell that the extension, the agent or a card is there. It relays
// requests the page posts to its own window to the service worker, and
// the answers back. It adds nothing the page could not forge itself: which
// origin asks is decided by the browser (sender.origin in the worker), and
// the worker and the agent each refuse every origin but the back office.
//
// A page may also watch the readers ({vouchCard: "watch"}, and "unwatch"):
// the script then holds a port to the worker, and posts what comes on it
// to the page as {vouchCard: "event", type, cards?, error?}. The worker
// sends events only to a tab whose origin the agent accepted.
"use strict";

(() => {
  const FIELDS = ["id", "type", "token", "kind", "challenge", "statement"];
  const WATCH_PORT = "vouch-watch";
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 30000;

  let watching = false; // the page asked to watch and did not stop
  let port = null;
  let retryMs = 0;
  let retryTimer = null;

  window.addEventListener("message", (event) => {
    // Only the page itself, not another frame or window, and only a
    // request: our own answers come back through this listener too. A
    // message event a script made (new MessageEvent, dispatchEvent) is
    // not a message anyone posted: ignored.
    if (!event.isTrusted || event.source !== window || event.origin !== window.location.origin) return;
    const msg = event.data;
    if (!msg || typeof msg !== "object") return;
    if (msg.vouchCard === "watch") {
      watching = true;
      // Here, and so is the extension: the page need not wait for the
      // first list (a real card may take seconds to read) to know it.
      window.postMessage({ vouchCard: "event", type: "watching" }, window.location.origin);
      connect();
      return;
    }
    if (msg.vouchCard === "unwatch") {
      unwatch();
      return;
    }
    if (msg.vouchCard !== "request" || typeof msg.id !== "string") return;
    const req = {};
    for (const f of FIELDS) {
      if (typeof msg[f] === "string") req[f] = msg[f];
    }
    // The page's language, for the PIN window: read from the page
    // itself (its html lang), not from the message.
    const lang = document.documentElement.lang;
    if (typeof lang === "string" && lang !== "") req.lang = lang;
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

  function connect() {
    if (port || retryTimer !== null || !watching) return;
    let p;
    try {
      p = chrome.runtime.connect({ name: WATCH_PORT });
    } catch (e) {
      // The extension was reloaded or removed under this page: nothing
      // will answer again.
      watching = false;
      toPage({ type: "error", error: "extension-unavailable" });
      return;
    }
    port = p;
    p.onMessage.addListener((m) => {
      if (p !== port) return;
      retryMs = 0;
      toPage(m);
      if (m && m.type === "error" && m.error === "origin-refused") unwatch(); // final
    });
    p.onDisconnect.addListener(() => {
      void chrome.runtime.lastError;
      if (p !== port) return;
      port = null;
      if (!watching) return;
      // The worker was stopped or restarted: the page is told (it cannot
      // know what is in the readers meanwhile) and the port comes back.
      toPage({ type: "error", error: "extension-unavailable" });
      retryMs = Math.min(Math.max(retryMs * 2, RETRY_MIN_MS), RETRY_MAX_MS);
      retryTimer = setTimeout(() => {
        retryTimer = null;
        connect();
      }, retryMs);
    });
  }

  function unwatch() {
    watching = false;
    clearTimeout(retryTimer);
    retryTimer = null;
    retryMs = 0;
    if (port) {
      const p = port;
      port = null;
      p.disconnect();
    }
  }

  // toPage hands one message of the worker to the page, its known fields
  // only.
  function toPage(m) {
    if (!m || typeof m !== "object" || typeof m.type !== "string") return;
    const out = { vouchCard: "event", type: m.type };
    if (Array.isArray(m.cards)) out.cards = m.cards;
    if (typeof m.error === "string") out.error = m.error;
    window.postMessage(out, window.location.origin);
  }
})();
