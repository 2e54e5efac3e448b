// Vouch card extension: service worker. It stands between the page and
// the card agent (native messaging host nl.vouch.cardagent):
//   - its content script runs only in pages of the back-office origins the
//     agent was installed for (registered here, from the agent's own
//     configuration); every other page has nothing of the extension to
//     talk to, and gets no answer at all;
//   - a message or port of any other origin (a content script the
//     browser put elsewhere) is refused here, before any native port, at
//     once and with the answer a page gets when there is no agent: it
//     learns nothing of the agent, the readers or the back office;
//   - the origin it passes on is the browser's (sender.origin), never the
//     page's word;
//   - before a signature it asks the agent to describe what will be
//     signed, and shows that — the agent's reading, not the page's — in
//     the extension's own window, and signs only after the person
//     confirmed there: with the PIN typed there, or, on a reader with a
//     PIN pad, with a click (the PIN is then typed on the reader); the
//     page never sees the PIN;
//   - the page can ask for nothing but a card list and a signature over a
//     Vouch login challenge or authorization statement (the agent checks);
//   - a tab gets a bounded number of requests (RATE_BURST, then RATE_PER_S
//     a second);
//   - a page may watch the readers: its tab gets the agent's card events,
//     but only while the agent accepts the tab's origin (see "Watching the
//     readers" below).
"use strict";

const HOST = "nl.vouch.cardagent";
const OWN_ORIGIN = new URL(chrome.runtime.getURL("/")).origin;
const PIN_PAGE = chrome.runtime.getURL("pin.html");
const SCRIPT_ID = "vouch-content";

// What a page gets when the agent cannot be reached, and what a page of
// an origin that is not the back office gets, whatever the agent and the
// readers are doing.
const noAgent = () => ({ type: "error", error: "agent-missing" });

// ---- Which pages may ask ----
//
// The agent knows the back-office origins (cardagent install -origin).
// At each start the worker asks it ({type: "origins"}: the agent reads its
// configuration and touches no card) and registers the content script for
// exactly those origins, port included. Registered scripts outlive the
// worker and the browser session; they are what the worker reads the
// origins back from at its next start, so that the check below never
// waits for the agent. An agent that cannot be asked changes nothing.

// allowed: Promise of the Set of origins whose pages may ask.
let allowed = null;
let configuring = null;

function allowedOrigins() {
  if (!allowed) {
    allowed = chrome.scripting.getRegisteredContentScripts({ ids: [SCRIPT_ID] }).then(
      (scripts) => new Set(scripts.flatMap((s) => (s.matches || []).map(originOfPattern)).filter((o) => o !== null)),
      () => new Set(),
    );
  }
  return allowed;
}

// An origin as a browser writes it: https, or http on this machine (tests
// and demos), as the agent accepts them.
function validOrigin(o) {
  if (typeof o !== "string") return false;
  let u;
  try {
    u = new URL(o);
  } catch (e) {
    return false;
  }
  return u.origin === o && (u.protocol === "https:" ||
    (u.protocol === "http:" && (u.hostname === "127.0.0.1" || u.hostname === "localhost")));
}

// patternOf is the match pattern of exactly one origin: with its port
// written out, since a pattern without one matches every port of the host.
function patternOf(origin) {
  const u = new URL(origin);
  return `${u.protocol}//${u.hostname}:${u.port || (u.protocol === "https:" ? "443" : "80")}/*`;
}

function originOfPattern(p) {
  try {
    const o = new URL(p.replace(/\*$/, "")).origin;
    return validOrigin(o) ? o : null;
  } catch (e) {
    return null;
  }
}

// configure asks the agent for its origins and registers the content
// script for them (once per worker start); it resolves with the set.
function configure() {
  if (!configuring) configuring = configureOnce();
  return configuring;
}

async function configureOnce() {
  let resp;
  try {
    resp = await chrome.runtime.sendNativeMessage(HOST, { type: "origins" });
  } catch (e) {
    return allowedOrigins(); // no agent: what was registered stays
  }
  if (!resp || resp.type !== "origins" || !Array.isArray(resp.origins)) return allowedOrigins();
  const origins = [...new Set(resp.origins.filter(validOrigin))].sort();
  const matches = origins.map(patternOf);
  const have = await chrome.scripting.getRegisteredContentScripts({ ids: [SCRIPT_ID] }).catch(() => []);
  const same = have.length === 1 && JSON.stringify([...(have[0].matches || [])].sort()) === JSON.stringify([...matches].sort());
  if (!same) {
    if (have.length > 0) await chrome.scripting.unregisterContentScripts({ ids: [SCRIPT_ID] });
    if (matches.length > 0) {
      await chrome.scripting.registerContentScripts([{
        id: SCRIPT_ID,
        js: ["content.js"],
        matches,
        runAt: "document_start",
        allFrames: false,
        persistAcrossSessions: true,
      }]);
    }
  }
  const set = new Set(origins);
  allowed = Promise.resolve(set);
  return set;
}

// No page can wake a worker whose content script is not where the back
// office now is (the extension loaded before cardagent install, or the
// agent installed again for another origin): the worker asks the agent
// again on an alarm, every minute while no origin is registered, every 5
// minutes after.
const CONFIGURE_ALARM = "vouch-configure";

async function configureAndRetry() {
  const set = await configure();
  const period = set.size === 0 ? 1 : 5;
  const a = await chrome.alarms.get(CONFIGURE_ALARM);
  if (!a || a.periodInMinutes !== period) await chrome.alarms.create(CONFIGURE_ALARM, { periodInMinutes: period });
}

chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name !== CONFIGURE_ALARM) return;
  configuring = null; // ask again, within this worker's life too
  configureAndRetry();
});
chrome.runtime.onInstalled.addListener(() => configureAndRetry());
chrome.runtime.onStartup.addListener(() => configureAndRetry());
configureAndRetry();

// gate: may this sender (a content script's message or port) reach the
// agent? Only the top frame of a tab of a configured origin.
async function gate(sender) {
  const origins = await allowedOrigins();
  return !!sender.tab && sender.frameId === 0 && typeof sender.origin === "string" && origins.has(sender.origin);
}

// ---- Requests per tab ----

const RATE_BURST = 20;
const RATE_PER_S = 2;
const buckets = new Map(); // tab id → {tokens, at}

// takeToken counts one request of a tab; false when the tab is over its
// rate.
function takeToken(tabId) {
  const now = Date.now();
  let b = buckets.get(tabId);
  if (!b) {
    b = { tokens: RATE_BURST, at: now };
    buckets.set(tabId, b);
  }
  b.tokens = Math.min(RATE_BURST, b.tokens + ((now - b.at) / 1000) * RATE_PER_S);
  b.at = now;
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

chrome.tabs.onRemoved.addListener((tabId) => buckets.delete(tabId));

// ---- Requests ----

// PIN windows waiting for the person: window id → {display, pinPad, resolve}.
const pending = new Map();

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (sender.id !== chrome.runtime.id) return false;
  if (sender.origin === OWN_ORIGIN) {
    fromPinWindow(msg, sender, sendResponse);
    return true;
  }
  fromTab(msg, sender).then(sendResponse, () => sendResponse({ type: "error", error: "agent-unavailable" }));
  return true; // answered later
});

async function fromTab(msg, sender) {
  if (!(await gate(sender))) return noAgent();
  if (!takeToken(sender.tab.id)) return { type: "error", error: "rate-limited" };
  return handle(msg || {}, sender.origin);
}

// The languages of _locales: the PIN window speaks the asking page's
// language when it is one of them (pinLanguage), else the browser's.
const LANGUAGES = ["en", "de", "fr", "it", "nl"];

// pinLanguage is the language the PIN window shows, from the page's html
// lang ("nl", "de-CH"): one of LANGUAGES, or "" for the browser's own
// (chrome.i18n, whose default is en).
function pinLanguage(tag) {
  if (typeof tag !== "string") return "";
  const primary = tag.trim().toLowerCase().split(/[-_]/)[0];
  return LANGUAGES.includes(primary) ? primary : "";
}

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
      // Every reader: the window shows what will be signed and waits for
      // the person. With a PIN pad the PIN is typed on the reader once
      // the window was confirmed; the agent gets none from here.
      const pin = await askPIN(d.display, card.pinPad === true, pinLanguage(msg.lang));
      if (pin === null) return { type: "error", error: "cancelled" };
      return native({ ...req, type: "sign", pin });
    }
  }
  return { type: "error", error: "malformed" };
}

async function native(req) {
  try {
    return await chrome.runtime.sendNativeMessage(HOST, req);
  } catch (e) {
    return noAgent();
  }
}

// askPIN opens the extension's own window with what will be signed, in
// lang ("" for the browser's language), and resolves with the PIN typed
// there ("" when the reader has a PIN pad and the person confirmed), or
// null when the person cancels or closes it.
async function askPIN(display, pinPad, lang) {
  const win = await chrome.windows.create({ url: PIN_PAGE, type: "popup", width: 460, height: 560, focused: true });
  return new Promise((resolve) => pending.set(win.id, { display, pinPad, lang, resolve }));
}

function fromPinWindow(msg, sender, sendResponse) {
  const winId = sender.tab && sender.tab.windowId;
  const p = pending.get(winId);
  if (!p || !sender.url || !sender.url.startsWith(PIN_PAGE) || !msg || typeof msg !== "object") {
    sendResponse({ error: "no-request" });
    return;
  }
  if (msg.want === "display") {
    sendResponse({ display: p.display, pinPad: p.pinPad, lang: p.lang });
    return;
  }
  let pin = null;
  if (!msg.cancel) {
    if (p.pinPad) pin = msg.confirm === true ? "" : null;
    else if (typeof msg.pin === "string") pin = msg.pin;
  }
  pending.delete(winId);
  p.resolve(pin);
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

// ---- Watching the readers ----
//
// A back-office tab that wants to know at once when a card goes in or out
// (to lock the page when the clinician pulls it) connects a port named
// WATCH_PORT from its content script. While at least one tab watches, the
// worker keeps one long-lived connection to the agent (connectNative): the
// agent then runs as long as the port and sends an event {type: "changed"}
// whenever a reader changes. The event names nothing and no origin, so the
// worker never hands it on as such to just anyone: for every origin that
// watches it asks the agent for the cards again, with that origin (the
// browser's sender.origin), and
//   - an origin the agent accepts gets the fresh list, {type: "cards"};
//     a tab is "accepted" once the agent answered its origin with a list,
//     and only accepted tabs get the bare {type: "changed"} that goes ahead
//     of the list (sent at once: a page may lock before the list is read);
//   - an origin the agent refuses gets {type: "error", error:
//     "origin-refused"}, once, and its tab is dropped: it never learns that
//     a card moved.
// A new agent process (after the port dropped) may have another
// configuration: every tab is "not accepted" again until the new agent
// answered its origin. The port is closed when the last tab stops
// watching; while it is open it also keeps this service worker alive.

const WATCH_PORT = "vouch-watch";
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 30000;
const AGENT_ANSWER_MS = 15000;

// Watching tabs: content-script Port → {origin, accepted}.
const watchers = new Map();
// The agent's long-lived port, null when closed.
let agentPort = null;
let agentSeq = 0;
// Requests sent on agentPort: id → resolve (with the answer, or null).
const agentWaiting = new Map();
let retryMs = 0;
let retryTimer = null;
// Per origin: a card list being asked for, and whether to ask again after
// it (changes that came meanwhile are folded into one more list).
const listing = new Map(); // origin → {again}

chrome.runtime.onConnect.addListener((port) => {
  const sender = port.sender || {};
  if (port.name !== WATCH_PORT || sender.id !== chrome.runtime.id || sender.origin === OWN_ORIGIN) {
    port.disconnect();
    return;
  }
  let open = true;
  port.onDisconnect.addListener(() => {
    open = false;
  });
  gate(sender).then((ok) => {
    if (!open) return;
    if (!ok) {
      refuseWatch(port);
    } else if (!takeToken(sender.tab.id)) {
      post(port, { type: "error", error: "rate-limited" });
      port.disconnect();
    } else {
      watch(port, sender.origin);
    }
  });
});

// refuseWatch answers a port of an origin that is not the back office as
// a port is answered when the agent cannot be started: agent-missing at
// once, and again on the same schedule as the retries, until it closes.
// No native port is opened for it.
function refuseWatch(port) {
  let ms = 0;
  let timer = null;
  port.onDisconnect.addListener(() => clearTimeout(timer));
  const tell = () => {
    try {
      port.postMessage(noAgent());
    } catch (e) {
      return; // gone
    }
    ms = Math.min(Math.max(ms * 2, RETRY_MIN_MS), RETRY_MAX_MS);
    timer = setTimeout(tell, ms);
  };
  tell();
}

function watch(port, origin) {
  watchers.set(port, { origin, accepted: false });
  port.onDisconnect.addListener(() => {
    watchers.delete(port);
    if (watchers.size === 0) closeAgent();
  });
  // The tab sends nothing on the port: it stops watching by closing it
  // (or by going away, which closes it too).
  openAgent();
  if (!agentPort) post(port, noAgent()); // waiting to start it again
  list(origin);
}

function openAgent() {
  if (agentPort || retryTimer !== null || watchers.size === 0) return;
  let port;
  try {
    port = chrome.runtime.connectNative(HOST);
  } catch (e) {
    agentGone(null);
    return;
  }
  agentPort = port;
  port.onMessage.addListener((m) => fromAgent(port, m));
  port.onDisconnect.addListener(() => {
    void chrome.runtime.lastError; // read, so that Chromium does not log it as unchecked
    agentGone(port);
  });
}

function closeAgent() {
  clearTimeout(retryTimer);
  retryTimer = null;
  retryMs = 0;
  if (agentPort) {
    const port = agentPort;
    agentPort = null;
    port.disconnect(); // the agent sees its input end and stops
  }
  for (const resolve of agentWaiting.values()) resolve(null);
  agentWaiting.clear();
}

// agentGone: the agent's port dropped (the agent stopped, or could not be
// started). Every tab is told (the page cannot know the card is in any
// more: it should lock) and the port is opened again, later and later,
// while tabs watch.
function agentGone(port) {
  if (port !== null && port !== agentPort) return; // an old port, already replaced
  agentPort = null;
  for (const resolve of agentWaiting.values()) resolve(null);
  agentWaiting.clear();
  for (const [tab, w] of watchers) {
    w.accepted = false;
    post(tab, noAgent());
  }
  if (watchers.size === 0) return;
  retryMs = Math.min(Math.max(retryMs * 2, RETRY_MIN_MS), RETRY_MAX_MS);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    openAgent();
    for (const origin of new Set([...watchers.values()].map((w) => w.origin))) list(origin);
  }, retryMs);
}

function fromAgent(port, m) {
  if (port !== agentPort || !m || typeof m !== "object") return;
  if (typeof m.id === "string" && m.id !== "") {
    const resolve = agentWaiting.get(m.id);
    if (resolve) {
      agentWaiting.delete(m.id);
      resolve(m);
    }
    return;
  }
  if (m.type !== "changed") return;
  const origins = new Set();
  for (const [tab, w] of watchers) {
    if (!w.accepted) continue; // not (yet) answered by this agent: no event
    post(tab, { type: "changed" });
    origins.add(w.origin);
  }
  for (const origin of origins) list(origin);
}

// agentAsk sends one request on the agent's port; it resolves with the
// answer, or null when the port closed or the agent did not answer.
function agentAsk(req) {
  if (!agentPort) return Promise.resolve(null);
  const id = "watch-" + ++agentSeq;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      if (agentWaiting.delete(id)) resolve(null);
    }, AGENT_ANSWER_MS);
    agentWaiting.set(id, (m) => {
      clearTimeout(timer);
      resolve(m);
    });
    try {
      agentPort.postMessage({ ...req, id });
    } catch (e) {
      agentWaiting.delete(id);
      clearTimeout(timer);
      resolve(null);
    }
  });
}

// list asks the agent for the cards with origin and hands the answer to
// that origin's tabs, and nobody else's.
async function list(origin) {
  const l = listing.get(origin);
  if (l) {
    l.again = true;
    return;
  }
  const state = { again: true };
  listing.set(origin, state);
  try {
    while (state.again) {
      state.again = false;
      const resp = await agentAsk({ type: "cards", origin });
      if (resp) {
        deliver(origin, resp);
      } else if (agentPort && !state.again) {
        // No answer in time (a reader that hangs, an agent still
        // starting): the tabs are told, and their pages ask again.
        deliver(origin, { type: "error", error: "agent-unavailable" });
      }
    }
  } finally {
    listing.delete(origin);
  }
}

function deliver(origin, resp) {
  const refused = resp.type === "error" && resp.error === "origin-refused";
  if (resp.type === "cards") retryMs = 0; // the agent works
  for (const [tab, w] of watchers) {
    if (w.origin !== origin) continue;
    if (refused) {
      // Told once; never an event after it.
      watchers.delete(tab);
      post(tab, { type: "error", error: "origin-refused" });
      tab.disconnect();
    } else if (resp.type === "cards") {
      w.accepted = true;
      post(tab, { type: "cards", cards: Array.isArray(resp.cards) ? resp.cards : [] });
    } else {
      // The cards could not be listed (the agent checked the origin
      // first): what VouchCard.cards() would say too.
      post(tab, { type: "error", error: typeof resp.error === "string" ? resp.error : "card-error" });
    }
  }
  if (watchers.size === 0) closeAgent();
}

function post(tab, msg) {
  try {
    tab.postMessage(msg);
  } catch (e) {
    watchers.delete(tab); // the tab went away
  }
}
