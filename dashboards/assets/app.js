// vaka: live list of open alerts, worst first (the full triage board comes
// with the dashboard issue). Plain ES module, no build step.

const SEVERITY = {
  high: { rank: 0, label: "⚠ Hög" },
  medium: { rank: 1, label: "▲ Medel" },
  low: { rank: 2, label: "● Låg" },
};
const STATE = { open: "Ny", acknowledged: "Kvitterad", snoozed: "Vilande" };

const alerts = new Map(); // alert_id → alert
let token = sessionStorage.getItem("vaka-token");

function tokenFromFragment() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem("vaka-token", token);
    history.replaceState(null, "", location.pathname);
  }
}

function setOnline(online) {
  const el = document.getElementById("connection");
  el.className = online ? "online" : "offline";
  el.textContent = online ? "✓ Live" : "✗ Frånkopplad – försöker igen …";
}

function since(iso) {
  const minutes = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 60000));
  if (minutes < 60) return `${minutes} min sedan`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h sedan`;
  return `${Math.floor(hours / 24)} dygn sedan`;
}

function render() {
  const rows = [...alerts.values()]
    .filter((a) => a.state !== "resolved")
    .sort((a, b) =>
      SEVERITY[a.severity].rank - SEVERITY[b.severity].rank ||
      Date.parse(a.opened_at) - Date.parse(b.opened_at));
  const body = document.querySelector("#alerts tbody");
  body.replaceChildren(...rows.map(row));
  document.getElementById("count").textContent = `(${rows.length})`;
  document.getElementById("empty").hidden = rows.length > 0;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function row(a) {
  const tr = document.createElement("tr");
  const sev = SEVERITY[a.severity];
  tr.append(
    cell(sev.label, `sev sev-${a.severity}`),
    cell(a.patient_id ?? `enhet ${a.device_id}`),
    cell(a.explanation, "explanation"),
    cell(since(a.opened_at)),
    cell(STATE[a.state] ?? a.state),
  );
  const actions = document.createElement("td");
  if (a.state === "open") actions.append(button("Kvittera", () => act(a, "acknowledge", {})));
  actions.append(button("Avsluta", () => {
    const note = prompt("Åtgärd/anteckning (t.ex. ringt patienten):", "");
    if (note !== null) act(a, "resolve", { outcome: "called_patient", note });
  }));
  tr.append(actions);
  return tr;
}

function button(label, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onclick);
  return b;
}

async function act(alert, action, body) {
  const res = await fetch(`/api/v1/alerts/${alert.alert_id}/${action}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  if (!res.ok) alert_error(await res.json().catch(() => ({ detail: res.statusText })));
}

function alert_error(e) {
  window.alert(`Det gick inte: ${e.detail ?? e.error}`);
}

function upsert(a) {
  const old = alerts.get(a.alert_id);
  if (!old || old.version <= a.version) alerts.set(a.alert_id, a);
}

function connect(delay = 500) {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/api/v1/ws?access_token=${encodeURIComponent(token)}`);
  ws.onopen = () => { setOnline(true); delay = 500; };
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "snapshot") {
      alerts.clear();
      msg.alerts.forEach(upsert);
    } else if (msg.type === "alert") {
      upsert(msg.alert);
    }
    render();
  };
  ws.onclose = (ev) => {
    setOnline(false);
    if (ev.code === 1008 || ev.code === 4401) return showLogin();
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay);
  };
}

function showLogin() {
  const form = document.getElementById("login");
  form.hidden = false;
  form.onsubmit = (ev) => {
    ev.preventDefault();
    token = document.getElementById("token").value;
    sessionStorage.setItem("vaka-token", token);
    form.hidden = true;
    connect();
  };
}

tokenFromFragment();
setInterval(render, 30000);
if (token) connect(); else showLogin();
