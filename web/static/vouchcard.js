// vouchcard.js: the back office page's side of the Vouch card extension.
// A page asks through its own window; the extension's content script
// answers there, and posts the readers' events there while the page
// watches them. Only an answer the content script posted to this window
// from this origin is taken: a message from another frame or window, which
// anyone can send, is ignored (web-eid.js accepted forged replies from any
// iframe: web-eid/web-eid.js#84).
"use strict";

const VouchCard = (() => {
  const waiting = new Map(); // id → resolve
  let next = 0;

  const watchers = new Set(); // {callback}, one per watch call
  let lastList = null; // the newest {type: "cards"} or error, for a late watcher
  let missingTimer = null;

  window.addEventListener("message", (event) => {
    if (event.source !== window || event.origin !== window.location.origin) return;
    const m = event.data;
    if (!m || typeof m !== "object") return;
    if (m.vouchCard === "event") {
      onEvent(m);
      return;
    }
    if (m.vouchCard !== "response" || !waiting.has(m.id)) return;
    const resolve = waiting.get(m.id);
    waiting.delete(m.id);
    resolve(m);
  });

  function onEvent(m) {
    if (watchers.size === 0 || typeof m.type !== "string") return;
    clearTimeout(missingTimer);
    if (m.type === "watching") return; // the content script is there; the list follows
    const ev = { type: m.type };
    if (Array.isArray(m.cards)) ev.cards = m.cards;
    if (typeof m.error === "string") ev.error = m.error;
    if (ev.type !== "changed") lastList = ev;
    emit(ev);
  }

  function emit(ev) {
    for (const w of [...watchers]) call(w, ev);
  }

  function call(w, ev) {
    try {
      w.callback(ev);
    } catch (e) {
      setTimeout(() => { throw e; }); // reported, and the other watchers still called
    }
  }

  // watch calls callback with every change of the readers: first and after
  // every change {type: "cards", cards: [...]}, as cards() lists them;
  // {type: "changed"} the moment a card went in or out (the new list
  // follows); {type: "error", error} when the extension or the agent
  // cannot tell (origin-refused: this page is not the back office, and
  // gets nothing more; agent-missing, extension-unavailable,
  // extension-missing: what is in the readers is unknown until the next
  // list). It returns a function that stops the calls.
  function watch(callback) {
    if (typeof callback !== "function") throw new TypeError("VouchCard.watch: callback is not a function");
    const w = { callback };
    watchers.add(w);
    if (watchers.size === 1) {
      lastList = null;
      window.postMessage({ vouchCard: "watch" }, window.location.origin);
      missingTimer = setTimeout(() => {
        const ev = { type: "error", error: "extension-missing" };
        lastList = ev;
        emit(ev);
      }, 5000);
    } else if (lastList) {
      const ev = lastList;
      setTimeout(() => { if (watchers.has(w)) call(w, ev); });
    }
    return () => {
      if (!watchers.delete(w) || watchers.size > 0) return;
      clearTimeout(missingTimer);
      lastList = null;
      window.postMessage({ vouchCard: "unwatch" }, window.location.origin);
    };
  }

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
    // watch follows the readers (see above); it returns the unwatch function.
    watch,
  };
})();
