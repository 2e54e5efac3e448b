// backoffice.js: the back office pages' script. It asks the card through
// VouchCard (vouchcard.js and the Vouch extension), and the server through
// its JSON API. It never sees a PIN: the extension's own window asks for it.
// The server checks everything again; what this script checks is only to
// tell the clinician sooner.
"use strict";

(() => {
  const msgs = JSON.parse(document.getElementById("vouch-messages").textContent || "{}");
  const t = (id) => msgs[id] || id;
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const lang = document.documentElement.lang || "en";

  // api posts JSON to the back office; a refusal throws an Error with the
  // server's message (already in the page's language) and code.
  async function api(path, data) {
    let r;
    try {
      r = await fetch(path, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(data || {}),
      });
    } catch (e) {
      throw Object.assign(new Error(t("page.offline")), { code: "offline" });
    }
    let j = {};
    try { j = await r.json(); } catch (e) { /* an empty or non-JSON answer */ }
    if (r.status === 401 && path !== "/api/signin") {
      location.assign("/signin");
    }
    if (r.status === 423) showLock();
    if (!r.ok) throw Object.assign(new Error(j.message || t("page.error")), { code: j.error, status: r.status });
    return j;
  }

  // agentProblem is the card agent's or extension's error, in words.
  function agentProblem(resp) {
    let m = t("agent." + resp.error);
    if (m === "agent." + resp.error) m = t("agent.card-error");
    if (resp.error === "pin-wrong" && resp.triesLeft === 1) m += " " + t("agent.tries-left-one");
    if (resp.error === "pin-wrong" && resp.triesLeft > 1) m += " " + t("agent.tries-left-few");
    return m;
  }

  function say(text) { const s = $("status"); if (s) s.textContent = text || ""; }
  function problem(text) {
    const p = $("problem");
    if (!p) return;
    p.textContent = text || "";
    p.hidden = !text;
  }

  // --- cards ---------------------------------------------------------

  let cards = null; // null until the extension listed them
  let refreshing = null;
  const cardListeners = [];
  // signing: the card agent is busy with a signature (the clinician types
  // the PIN in its window) and may not answer a list in time; a list asked
  // then — or asked just before and still waiting behind the signature —
  // would time out as "extension missing", which is false, and lock the
  // page or blank the card list. Such a failed list is not taken.
  let signing = 0;
  let signs = 0;
  async function sign(f) {
    signing++;
    signs++;
    try { return await f(); } finally { signing--; }
  }

  async function refreshCards() {
    if (signing > 0) return;
    if (refreshing) return refreshing;
    refreshing = (async () => {
      const before = signs;
      const r = await VouchCard.cards();
      if (r.type === "error" && (signing > 0 || signs !== before)) return;
      if (r.type === "error") {
        const had = cards !== null;
        cards = null;
        cardListeners.forEach((f) => f(r, had));
      } else {
        cards = (r.cards || []).filter((c) => c.state === "ready");
        cardListeners.forEach((f) => f(null));
      }
    })().finally(() => { refreshing = null; });
    return refreshing;
  }

  // Cards come and go: the extension tells, with a new list after every
  // change (VouchCard.watch); an extension without watch is asked every
  // second instead.
  function watchCards() {
    if (typeof VouchCard.watch !== "function") {
      setInterval(refreshCards, 1000);
      refreshCards();
      return;
    }
    let heard = 0;
    // A watch that goes quiet without a word (it should not) is not
    // trusted for long: the page then asks itself.
    setInterval(() => { if (Date.now() - heard > 10000) refreshCards(); }, 5000);
    VouchCard.watch((ev) => {
      heard = Date.now();
      if (ev.type === "cards") {
        cards = (ev.cards || []).filter((c) => c.state === "ready");
        cardListeners.forEach((f) => f(null));
      } else if (ev.type === "error" && ev.error !== "origin-refused") {
        // The extension lost the agent or its worker for a moment (it
        // reconnects by itself): ask once more before saying so.
        setTimeout(refreshCards, 1500);
      } else if (ev.type === "error") {
        cards = null;
        cardListeners.forEach((f) => f(ev, false));
      }
    });
  }

  // mine is the signed-in card holder's card, if it is in a reader. The
  // locked page does not say whose card that is: there it is the one card
  // in the readers (the server refuses any other).
  function mine() {
    if (!cards) return undefined;
    if (!body.dataset.uzi) return cards.length === 1 ? cards[0] : undefined;
    return cards.find((c) => c.uzi === body.dataset.uzi && c.type === body.dataset.cardType);
  }

  // --- heartbeat -----------------------------------------------------

  // While the watch sees the signed-in card, the page tells the server so
  // (every 30 s, and when the card is first seen); a session whose page
  // goes silent (tab closed, extension or agent gone) is locked by the
  // server within 2 minutes.
  let beating = false;
  function heartbeat() {
    if (locked || !mine()) return;
    api("/api/heartbeat").catch(() => {});
  }
  function startHeartbeat() {
    setInterval(heartbeat, 30000);
    cardListeners.push(() => {
      if (!beating && mine()) {
        beating = true;
        heartbeat();
      }
    });
  }

  // --- sign in -------------------------------------------------------

  function signInPage() {
    const list = $("cards");
    const button = $("signin");
    let chosen = null;
    let busy = false;
    const blocked = new Set();

    function draw(err) {
      list.textContent = "";
      if (err) {
        const p = document.createElement("p");
        p.className = "problem";
        p.textContent = agentProblem(err);
        list.append(p);
        button.disabled = true;
        return;
      }
      if (cards.length === 0) {
        const p = document.createElement("p");
        p.className = "status";
        p.textContent = t("page.cards.none");
        list.append(p);
      }
      if (!cards.some((c) => c.token === chosen)) chosen = cards.length === 1 ? cards[0].token : null;
      for (const c of cards) {
        const label = document.createElement("label");
        label.className = "card";
        const input = document.createElement("input");
        input.type = "radio";
        input.name = "card";
        input.value = c.token;
        input.checked = c.token === chosen;
        input.addEventListener("change", () => { chosen = c.token; button.disabled = busy || blocked.has(chosen); });
        const name = document.createElement("strong");
        name.textContent = c.holder;
        const detail = document.createElement("span");
        detail.textContent = t("page.cards.type-" + c.type) + " · " + c.reader;
        label.append(input, name, detail);
        list.append(label);
      }
      button.disabled = busy || !chosen || blocked.has(chosen);
    }
    cardListeners.push(draw);

    button.addEventListener("click", async () => {
      const card = cards && cards.find((c) => c.token === chosen);
      if (!card || busy) return;
      busy = true;
      button.disabled = true;
      problem("");
      try {
        say(t("page.signin.asking"));
        const ch = await api("/api/challenge", { purpose: "sign-in" });
        say(t("page.signin.pin"));
        const r = await sign(() => VouchCard.signLogin(card.token, ch.challenge));
        if (r.type === "error") {
          if (r.error === "pin-blocked") blocked.add(card.token);
          say("");
          problem(agentProblem(r));
          return;
        }
        say(t("page.signin.checking"));
        const res = await api("/api/signin", {
          challenge: ch.challenge, authCert: r.certificate || card.authCert,
          signCert: card.signCert, signature: r.signature,
        });
        say(t("page.signin.done"));
        location.assign(res.redirect);
      } catch (e) {
        say("");
        problem(e.message);
      } finally {
        busy = false;
        button.disabled = !chosen || blocked.has(chosen);
      }
    });
    watchCards();
  }

  // --- lock ----------------------------------------------------------

  let locked = false;
  let focusBeforeLock = null;
  // The page behind the lock is inert while it shows: Tab stays in the
  // dialog (unlock, sign out), nothing hidden behind it takes the focus
  // or a click, and a screen reader reads the dialog alone.
  function behindLock(inert) {
    document.querySelectorAll("body > header, body > main").forEach((el) => { el.inert = inert; });
  }
  function showLock() {
    const l = $("lock");
    if (!l) return;
    const was = locked;
    locked = true;
    l.hidden = false;
    $("unlock").disabled = !mine();
    if (was) return;
    focusBeforeLock = document.activeElement;
    behindLock(true);
    ($("unlock").disabled ? l.querySelector(".panel") : $("unlock")).focus();
  }
  // focusUnlock: the card is back (or the PIN was wrong): unlock takes the
  // focus unless the person has moved it elsewhere in the dialog.
  function focusUnlock() {
    const l = $("lock"), a = document.activeElement;
    if (locked && !$("unlock").disabled && (!l.contains(a) || a === l.querySelector(".panel"))) $("unlock").focus();
  }
  function hideLock() {
    const l = $("lock");
    locked = false;
    l.hidden = true;
    behindLock(false);
    const back = focusBeforeLock;
    focusBeforeLock = null;
    if (back && back !== document.body && document.contains(back)) back.focus();
  }

  function lockWatch() {
    const l = $("lock");
    if (!l) return;
    if (body.dataset.locked === "true") showLock();
    cardListeners.push((err, had) => {
      if (err) {
        // The readers cannot be seen any more (the agent stopped): what
        // is in them is unknown, so the page locks. Without any word from
        // the start it cannot (the server still asks the card to sign
        // every vouch).
        if (had && !locked) {
          showLock();
          api("/api/lock").catch(() => {});
        }
        return;
      }
      const m = mine();
      if (!m && !locked) {
        showLock();
        api("/api/lock").catch(() => {});
      }
      $("unlock").disabled = !m;
      if (m) focusUnlock();
      let text = m ? t("page.lock.card-back") : t("page.lock.text");
      if (!m && !body.dataset.uzi && cards && cards.length > 1) text = t("page.lock.one-card");
      $("lock-text").textContent = text;
    });
    $("unlock").addEventListener("click", async () => {
      const m = mine();
      if (!m) return;
      $("unlock").disabled = true;
      $("lock-status").textContent = t("page.signin.pin");
      try {
        const ch = await api("/api/challenge", { purpose: "unlock" });
        const r = await sign(() => VouchCard.signLogin(m.token, ch.challenge));
        if (r.type === "error") {
          $("lock-status").textContent = agentProblem(r);
          return;
        }
        await api("/api/unlock", { challenge: ch.challenge, authCert: r.certificate || m.authCert, signature: r.signature });
        if (body.dataset.page === "locked") {
          // The server showed nothing of the session while locked: now it does.
          location.reload();
          return;
        }
        beating = false;
        hideLock();
        $("lock-status").textContent = "";
      } catch (e) {
        $("lock-status").textContent = e.message;
      } finally {
        $("unlock").disabled = !mine();
        focusUnlock();
      }
    });
  }

  // --- vouch ---------------------------------------------------------

  function vouchPage() {
    const form = $("vouch-form");
    const button = $("vouch");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (locked) return;
      problem("");
      let card = mine();
      if (!card) {
        await refreshCards(); // the first list may still be on its way
        card = mine();
      }
      if (!card) {
        problem(t("page.vouch.no-card"));
        return;
      }
      button.disabled = true;
      try {
        say(t("page.vouch.checking"));
        const p = await api("/api/vouch/prepare", {
          code: $("code").value, consent: $("consent").checked, onset: isoDate($("onset").value),
        });
        say(t("page.vouch.pin"));
        const r = await sign(() => VouchCard.signStatement(card.token, p.statement));
        if (r.type === "error") {
          say("");
          problem(agentProblem(r));
          return;
        }
        say(t("page.vouch.storing"));
        const done = await api("/api/vouch/sign", { signature: r.signature });
        say("");
        $("done-code").textContent = done.code;
        $("done-at").textContent = new Date(done.vouchedAt).toLocaleString(lang);
        $("done-until").textContent = new Date(done.validUntil).toLocaleString(lang);
        $("vouch-form-section").hidden = true;
        $("done").hidden = false;
        $("again").focus();
      } catch (e) {
        say("");
        problem(e.message);
      } finally {
        button.disabled = false;
      }
    });
    // The code is checked as it is typed (the same check character as
    // internal/phonecode): a typing error shows at once, not after a round
    // trip; the server checks again.
    const codeInput = $("code");
    const codeShow = () => {
      const id = codeProblem(codeInput.value);
      const p = $("code-problem");
      p.textContent = id ? t(id) : "";
      p.hidden = !id;
      codeInput.setAttribute("aria-invalid", id ? "true" : "false");
    };
    codeInput.addEventListener("input", codeShow);
    $("again").addEventListener("click", () => {
      form.reset();
      codeShow();
      $("done").hidden = true;
      $("vouch-form-section").hidden = false;
      $("code").focus();
    });
    scanner();
  }

  // scanner reads the phone's QR code with the camera where the browser
  // can (BarcodeDetector); handheld scanners type into the field instead.
  function scanner() {
    if (!("BarcodeDetector" in window)) return;
    const scan = $("scan");
    const video = $("camera");
    scan.hidden = false;
    scan.addEventListener("click", async () => {
      let stream;
      try {
        stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
      } catch (e) {
        problem(t("page.vouch.no-camera"));
        return;
      }
      const detector = new BarcodeDetector({ formats: ["qr_code"] });
      video.srcObject = stream;
      video.hidden = false;
      await video.play();
      const stop = () => { stream.getTracks().forEach((tr) => tr.stop()); video.hidden = true; };
      const started = Date.now();
      const look = async () => {
        const found = (await detector.detect(video).catch(() => [])).find((b) => b.rawValue.startsWith("vouch:"));
        if (found) {
          $("code").value = found.rawValue;
          stop();
          $("consent").focus();
        } else if (Date.now() - started < 60000) {
          setTimeout(look, 200);
        } else {
          stop();
        }
      };
      look();
    });
  }

  // --- codes and dates -----------------------------------------------

  // The phone code as internal/phonecode reads it: 16 symbols of a
  // Crockford-like base 32 alphabet, and a check character over the 10
  // bytes they encode, modulo 37.
  const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  const CHECK_SYMBOLS = ALPHABET + "*~$=U";

  function codeSymbols(v) {
    v = v.trim();
    if (v.startsWith("vouch:")) v = v.slice(6);
    let out = "";
    for (let ch of v) {
      if (ch === "-" || ch === " ") continue;
      if (ch >= "a" && ch <= "z") ch = ch.toUpperCase();
      if (ch === "O") ch = "0";
      if (ch === "I" || ch === "L") ch = "1";
      out += ch;
    }
    return out;
  }

  // codeProblem is the message id of what is wrong with a typed code, or
  // "" while it is right so far (or empty).
  function codeProblem(v) {
    const s = codeSymbols(v);
    if (s.length > 17 || v.length > 64) return "vouch.code-length";
    for (let i = 0; i < Math.min(s.length, 16); i++) {
      if (!ALPHABET.includes(s[i])) return "vouch.code-character";
    }
    if (s.length < 17) return "";
    const chk = CHECK_SYMBOLS.indexOf(s[16]);
    if (chk < 0) return "vouch.code-character";
    let acc = 0, bits = 0, r = 0;
    for (const ch of s.slice(0, 16)) {
      acc = (acc << 5) | ALPHABET.indexOf(ch);
      bits += 5;
      if (bits >= 8) {
        bits -= 8;
        r = (r * 256 + ((acc >> bits) & 255)) % 37;
        acc &= (1 << bits) - 1;
      }
    }
    return chk === r ? "" : "vouch.code-check";
  }

  // isoDate reads a date typed as the page's language writes it (YYYY-MM-DD
  // or DD-MM-YYYY, with -, / or .) as YYYY-MM-DD, which the server takes;
  // anything else goes as typed, and the server says what is wrong.
  function isoDate(v) {
    v = v.trim();
    const pad = (x) => x.padStart(2, "0");
    let m = /^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$/.exec(v);
    if (m) return m[1] + "-" + pad(m[2]) + "-" + pad(m[3]);
    m = /^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$/.exec(v);
    if (m) return m[3] + "-" + pad(m[2]) + "-" + pad(m[1]);
    return v;
  }

  // For tests of the page: the same checks the page makes.
  window.VouchPage = Object.freeze({ codeProblem, isoDate });

  // --- every page ----------------------------------------------------

  // Sign out: from the header, and from the lock dialog (the header is
  // inert behind it).
  for (const out of [$("signout"), $("lock-signout")]) {
    if (!out) continue;
    out.addEventListener("click", async () => {
      await api("/api/signout").catch(() => {});
      location.assign("/signin");
    });
  }
  switch (body.dataset.page) {
    case "signin":
      signInPage();
      break;
    case "vouch":
      lockWatch();
      startHeartbeat();
      vouchPage();
      watchCards();
      break;
    case "locked":
      lockWatch();
      watchCards();
      break;
    default:
      // Every other page of a session (activity, roles, audit trail,
      // statistics, settings…) locks when the card leaves and tells the
      // server it still sees the card, as the vouch page does: without the
      // heartbeat the server would lock an admin reading a page for longer
      // than VOUCH_SESSION_HEARTBEAT.
      if (body.dataset.uzi) {
        lockWatch();
        startHeartbeat();
        watchCards();
      }
  }
})();
