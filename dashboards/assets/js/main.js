// Boot and routing. Who is logged in comes from GET /auth/me (the session
// cookie is HttpOnly, so the page cannot read it); without a session the
// login form is shown. Views live behind the hash: #/board (default),
// #/patient/ID, #/admin/TAB, #/handover, #/audit. The websocket runs while
// someone is logged in, and the header shows clearly when it is down.

import { h, mount, formData, announce } from "./dom.js";
import { api, setCsrf, onUnauthorized, ApiError } from "./api.js";
import { live } from "./ws.js";
import { t, lang, setLang, time } from "./i18n.js";
import { errorText } from "./alerts.js";
import * as board from "./board.js";
import * as patient from "./patient.js";
import * as admin from "./admin.js";
import * as audit from "./audit.js";
import * as handover from "./handover.js";

const ROUTES = { board, patient, admin, audit, handover };
const view = document.getElementById("view");
let me = null;
let cleanup = null;
let conn = "connecting";
let offlineSince = null;

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const name = ROUTES[parts[0]] ? parts[0] : "board";
  return { name, params: parts.slice(1) };
}

function show() {
  cleanup?.();
  cleanup = null;
  document.querySelectorAll("dialog[open]").forEach((d) => d.close());
  if (!me) return showLogin();
  const { name, params } = route();
  drawNav(name);
  document.title = `vaka – ${t(`nav.${name === "patient" ? "board" : name}`)}`;
  cleanup = ROUTES[name].render(view, { me, live, params }) ?? null;
  view.focus({ preventScroll: true });
}

function drawNav(current) {
  const nav = document.getElementById("nav");
  nav.hidden = false;
  nav.setAttribute("aria-label", t("nav.label"));
  const items = [["board", "#/board"], ["handover", "#/handover"]];
  if (me.role === "admin") items.push(["admin", "#/admin/patients"], ["audit", "#/audit"]);
  mount(nav, h("ul", {}, items.map(([k, href]) => h("li", {},
    h("a", { href, "aria-current": current === k || (current === "patient" && k === "board") ? "page" : null }, t(`nav.${k}`))))));
}

function drawHeader() {
  document.getElementById("skip-link").textContent = t("app.skip");
  const langButton = document.getElementById("lang");
  langButton.textContent = t("lang.switch");
  langButton.setAttribute("aria-label", t("lang.switch.label"));
  langButton.lang = lang() === "sv" ? "en" : "sv";
  const who = document.getElementById("who");
  const logout = document.getElementById("logout");
  who.textContent = me ? `${me.name} (${t(`role.${me.role}`)})` : "";
  logout.hidden = !me;
  logout.textContent = t("logout");
  if (!me) document.getElementById("nav").hidden = true;
  drawConnection();
}

function drawConnection() {
  const el = document.getElementById("connection");
  const banner = document.getElementById("offline-banner");
  if (!me) { el.hidden = true; banner.hidden = true; return; }
  el.hidden = false;
  const state = conn;
  el.dataset.state = state;
  el.textContent = state === "online" ? `✓ ${t("conn.online")}` : state === "offline" ? `✗ ${t("conn.offline")}` : t("conn.connecting");
  banner.hidden = state !== "offline";
  if (state === "offline") banner.textContent = `✗ ${t("conn.banner", { time: time(new Date(offlineSince).toISOString()) })}`;
  document.body.classList.toggle("is-offline", state === "offline");
}

// "connecting" until the first snapshot, then "online" or "offline".
live.onStatus((online) => {
  if (online) {
    if (conn === "offline") announce(t("conn.back"));
    conn = "online";
  } else {
    conn = "offline";
    offlineSince = Date.now();
    announce(`${t("conn.offline")}`);
    // The websocket cannot tell us why it closed; if the session expired,
    // go to the login instead of retrying for ever.
    api("/auth/me").catch((e) => { if (e instanceof ApiError && e.status === 401) signedOut(); });
  }
  drawConnection();
});

function showLogin(message) {
  drawHeader();
  const error = h("p", { class: "form-error", role: "alert", hidden: !message }, message ?? "");
  const form = h("form", { class: "login card", id: "login-form" },
    h("h1", {}, t("login.title")),
    h("label", { class: "field" }, h("span", {}, t("login.username")),
      h("input", { name: "username", id: "username", autocomplete: "username", required: true, autofocus: true })),
    h("label", { class: "field" }, h("span", {}, t("login.password")),
      h("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: true })),
    error,
    h("button", { type: "submit", class: "primary", id: "login-submit" }, t("login.submit")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = formData(form);
    error.hidden = true;
    try {
      const r = await api("/auth/login", { method: "POST", body: { username: v.username, password: v.password } });
      signedIn(r);
    } catch (e) {
      error.textContent = e instanceof ApiError && e.status === 401 ? t("login.bad")
        : e instanceof ApiError && e.status === 423 ? t("login.locked") : errorText(e);
      error.hidden = false;
      form.password.value = "";
      form.password.focus();
    }
  });
  mount(view, form);
  form.username.focus();
}

function signedIn(r) {
  me = r.staff;
  setCsrf(r.csrf_token);
  drawHeader();
  live.start();
  show();
}

function signedOut(message) {
  me = null;
  setCsrf(null);
  live.stop();
  conn = "connecting";
  cleanup?.();
  cleanup = null;
  showLogin(message);
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("/auth/logout", { method: "POST" }); } catch { /* gone anyway */ }
  signedOut();
});

document.getElementById("lang").addEventListener("click", () => {
  setLang(lang() === "sv" ? "en" : "sv");
  drawHeader();
  show();
});

onUnauthorized(() => signedOut());
window.addEventListener("hashchange", show);

(async () => {
  drawHeader();
  try {
    signedIn(await api("/auth/me"));
  } catch (e) {
    showLogin(e instanceof ApiError && e.status === 401 ? null : errorText(e));
  }
})();
