// Vouch card extension: service worker. It stands between the page and
// the card agent (native messaging host nl.vouch.cardagent):
//   - the origin it passes on is the browser's (sender.origin), never the
//     page's word;
//   - before a signature it asks the agent to describe what will be
//     signed, and shows that — the agent's reading, not the page's — in
//     the extension's own window, where the PIN is typed; the page never
//     sees the PIN;
//   - the page can ask for nothing but a card list and a signature over a
//     Vouch login challenge or authorization statement (the agent checks).
"use strict";

const HOST = "nl.vouch.cardagent";
const OWN_ORIGIN = new URL(chrome.runtime.getURL("/")).origin;
const PIN_PAGE = chrome.runtime.getURL("pin.html");

// PIN windows waiting for the person: window id → {display, resolve}.
const pending = new Map();

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (sender.id !== chrome.runtime.id) return false;
  if (sender.origin === OWN_ORIGIN) {
    fromPinWindow(msg, sender, sendResponse);
    return true;
  }
  if (!sender.tab || !sender.origin || sender.frameId !== 0) {
    sendResponse({ type: "error", error: "origin-refused" });
    return false;
  }
  handle(msg, sender.origin).then(sendResponse, () => sendResponse({ type: "error", error: "agent-unavailable" }));
  return true; // answered later
});

async function handle(msg, origin) {
  const base = { id: String(msg.id || ""), origin };
  switch (msg.type) {
    case "cards":
      return native({ ...base, type: "cards" });
    case "sign": {
      const req = { ...base, token: msg.token, kind: msg.kind };
      if (typeof msg.challenge === "string") req.challenge = msg.challenge;
      if (typeof msg.statement === "string") req.statement = msg.statement;
      const cards = await native({ ...base, type: "cards" });
      if (cards.type === "error") return cards;
      const card = (cards.cards || []).find((c) => c.token === msg.token);
      if (!card) return { type: "error", error: "no-card" };
      const d = await native({ ...req, type: "describe" });
      if (d.type === "error") return d;
      let pin = "";
      if (!card.pinPad) {
        pin = await askPIN(d.display);
        if (pin === null) return { type: "error", error: "cancelled" };
      }
      return native({ ...req, type: "sign", pin });
    }
  }
  return { type: "error", error: "malformed" };
}

async function native(req) {
  try {
    return await chrome.runtime.sendNativeMessage(HOST, req);
  } catch (e) {
    return { type: "error", error: "agent-missing" };
  }
}

// askPIN opens the extension's own window with what will be signed and
// resolves with the PIN typed there, or null when the person cancels or
// closes it.
async function askPIN(display) {
  const win = await chrome.windows.create({ url: PIN_PAGE, type: "popup", width: 460, height: 560, focused: true });
  return new Promise((resolve) => pending.set(win.id, { display, resolve }));
}

function fromPinWindow(msg, sender, sendResponse) {
  const winId = sender.tab && sender.tab.windowId;
  const p = pending.get(winId);
  if (!p || !sender.url || !sender.url.startsWith(PIN_PAGE)) {
    sendResponse({ error: "no-request" });
    return;
  }
  if (msg.want === "display") {
    sendResponse({ display: p.display });
    return;
  }
  pending.delete(winId);
  p.resolve(typeof msg.pin === "string" && !msg.cancel ? msg.pin : null);
  sendResponse({ ok: true });
  chrome.windows.remove(winId).catch(() => {});
}

chrome.windows.onRemoved.addListener((winId) => {
  const p = pending.get(winId);
  if (p) {
    pending.delete(winId);
    p.resolve(null);
  }
});
