// vouchcard.js: the back office page's side of the Vouch card extension.
// A page asks through its own window; the extension's content script
// answers there. Only an answer the content script posted to this window
// from this origin is taken: a message from another frame or window, which
// anyone can send, is ignored (web-eid.js accepted forged replies from any
// iframe: web-eid/web-eid.js#84).
"use strict";

const VouchCard = (() => {
  const waiting = new Map(); // id → resolve
  let next = 0;

  window.addEventListener("message", (event) => {
    if (event.source !== window || event.origin !== window.location.origin) return;
    const m = event.data;
    if (!m || typeof m !== "object" || m.vouchCard !== "response" || !waiting.has(m.id)) return;
    const resolve = waiting.get(m.id);
    waiting.delete(m.id);
    resolve(m);
  });

  // request asks the extension; it resolves with its answer, or with
  // {type: "error", error: "extension-missing"} when nothing answers.
  function request(fields, timeoutMs) {
    const id = "vc-" + (++next) + "-" + Math.random().toString(36).slice(2);
    return new Promise((resolve) => {
      waiting.set(id, resolve);
      window.postMessage(Object.assign({}, fields, { vouchCard: "request", id }), window.location.origin);
      setTimeout(() => {
        if (waiting.delete(id)) resolve({ type: "error", error: "extension-missing" });
      }, timeoutMs);
    });
  }

  return {
    // cards lists the cards in the readers.
    cards: () => request({ type: "cards" }, 5000),
    // signLogin has the card sign a login challenge (base64).
    signLogin: (token, challenge) => request({ type: "sign", token, kind: "login", challenge }, 5 * 60 * 1000),
    // signStatement has the card sign an authorization statement (base64).
    signStatement: (token, statement) => request({ type: "sign", token, kind: "statement", statement }, 5 * 60 * 1000),
  };
})();
