// Vouch card extension: the PIN window. It shows what the card agent read
// from the message to be signed — never what the page claims — and sends
// the PIN to the service worker only. On a reader with a PIN pad it shows
// the same and asks for a click instead: the reader then asks for the
// PIN. Nothing is signed before the person confirmed here. No other page
// can script this one.
"use strict";

// The window speaks the language of the page that asked (resp.lang, one
// of _locales), else the browser's (chrome.i18n, default en); its html
// lang says which (WCAG 3.1.1), from the "lang" message of the texts shown.
const LANGUAGES = ["en", "de", "fr", "it", "nl"];
let texts = null; // _locales/<lang>/messages.json of the asking page's language
const msg = (k) => (texts && texts[k] && texts[k].message) || chrome.i18n.getMessage(k) || k;

function showTexts() {
  document.documentElement.lang = msg("lang");
  document.querySelectorAll("[data-msg]").forEach((el) => { el.textContent = msg(el.dataset.msg); });
}

// useLanguage loads the texts of lang; the browser's stay when it has none.
async function useLanguage(lang) {
  if (!LANGUAGES.includes(lang) || lang === document.documentElement.lang) return;
  try {
    const r = await fetch(chrome.runtime.getURL("_locales/" + lang + "/messages.json"));
    if (r.ok) texts = await r.json();
  } catch (e) {
    texts = null;
  }
  showTexts();
}

showTexts();

let pinPad = false;

chrome.runtime.sendMessage({ want: "display" }).then(async (resp) => {
  const d = resp && resp.display;
  if (!d) { window.close(); return; }
  await useLanguage(resp.lang);
  const lang = document.documentElement.lang;
  pinPad = resp.pinPad === true;
  document.getElementById("origin").textContent = d.origin;
  document.getElementById("holder").textContent = d.holder || "";
  const vouching = d.action === "statement";
  document.getElementById("action").textContent = msg(vouching ? "actionStatement" : "actionLogin");
  document.querySelectorAll(".statement").forEach((el) => el.classList.toggle("hidden", !vouching));
  if (vouching) {
    document.getElementById("code").textContent = d.code;
    document.getElementById("valid").textContent = new Date(d.validUntil).toLocaleString(lang);
    // The onset is a day (YYYY-MM-DD), written as the window's language writes dates.
    if (d.onset) document.getElementById("onset").textContent = /^\d{4}-\d{2}-\d{2}$/.test(d.onset)
      ? new Date(d.onset + "T00:00:00Z").toLocaleDateString(lang, { timeZone: "UTC" }) : d.onset;
    else document.querySelectorAll(".onset").forEach((el) => el.classList.add("hidden"));
  }
  // Shown once whole and in its language: nobody reads (or hears) half a
  // window in the browser's language first.
  document.querySelector("main").hidden = false;
  if (pinPad) {
    document.title = msg("pinPadTitle");
    document.getElementById("title").textContent = msg("pinPadTitle");
    document.querySelectorAll(".pinfield").forEach((el) => el.classList.add("hidden"));
    document.getElementById("pinpad").classList.remove("hidden");
    document.getElementById("sign").textContent = msg("confirm");
    document.getElementById("sign").focus();
  } else {
    document.getElementById("pin").focus();
  }
});

document.getElementById("form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (pinPad) {
    chrome.runtime.sendMessage({ confirm: true });
    return;
  }
  const input = document.getElementById("pin");
  if (!input.value) { document.getElementById("error").textContent = msg("pinEmpty"); return; }
  const pin = input.value;
  input.value = "";
  chrome.runtime.sendMessage({ pin });
});

document.getElementById("cancel").addEventListener("click", () => chrome.runtime.sendMessage({ cancel: true }));
