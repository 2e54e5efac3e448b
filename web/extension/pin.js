// Vouch card extension: the PIN window. It shows what the card agent read
// from the message to be signed — never what the page claims — and sends
// the PIN to the service worker only. On a reader with a PIN pad it shows
// the same and asks for a click instead: the reader then asks for the
// PIN. Nothing is signed before the person confirmed here. No other page
// can script this one.
"use strict";

const msg = (k) => chrome.i18n.getMessage(k) || k;

document.querySelectorAll("[data-msg]").forEach((el) => { el.textContent = msg(el.dataset.msg); });

let pinPad = false;

chrome.runtime.sendMessage({ want: "display" }).then((resp) => {
  const d = resp && resp.display;
  if (!d) { window.close(); return; }
  pinPad = resp.pinPad === true;
  document.getElementById("origin").textContent = d.origin;
  document.getElementById("holder").textContent = d.holder || "";
  const vouching = d.action === "statement";
  document.getElementById("action").textContent = msg(vouching ? "actionStatement" : "actionLogin");
  document.querySelectorAll(".statement").forEach((el) => el.classList.toggle("hidden", !vouching));
  if (vouching) {
    document.getElementById("code").textContent = d.code;
    document.getElementById("valid").textContent = new Date(d.validUntil).toLocaleString(chrome.i18n.getUILanguage());
    if (d.onset) document.getElementById("onset").textContent = d.onset;
    else document.querySelectorAll(".onset").forEach((el) => el.classList.add("hidden"));
  }
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
