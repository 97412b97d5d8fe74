// The live connection (/api/v1/ws). The server starts every connection
// with a snapshot and then sends deltas; after a lost connection we
// reconnect with backoff and the new snapshot resyncs us. Subscriptions
// (live CTG) are remembered and sent again on every reconnect.

export class Live {
  constructor() {
    this.ws = null;
    this.handlers = new Set();
    this.statusHandlers = new Set();
    this.subscriptions = new Set();
    this.delay = 500;
    this.online = false;
    this.stopped = true;
    this.timer = null;
  }

  /** `f(msg)` for every frame from the server. Returns an unsubscribe. */
  on(f) {
    this.handlers.add(f);
    return () => this.handlers.delete(f);
  }

  /** `f(online: boolean)` when the connection comes or goes. */
  onStatus(f) {
    this.statusHandlers.add(f);
    return () => this.statusHandlers.delete(f);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.online = false;
  }

  connect() {
    if (this.stopped) return;
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/api/v1/ws`);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      for (const id of this.subscriptions) this.send({ type: "subscribe", patient_id: id });
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      // Online once the snapshot is in: only then is the board current.
      if (msg.type === "snapshot") this.setOnline(true);
      for (const f of this.handlers) {
        try { f(msg); } catch (e) { console.error(e); }
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.setOnline(false);
      if (this.stopped) return;
      // Backoff with jitter, so a restarted hub is not hit by every
      // browser of the clinic in the same millisecond.
      const wait = this.delay * (0.75 + Math.random() * 0.5);
      this.delay = Math.min(this.delay * 2, 10000);
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  setOnline(online) {
    if (this.online === online) return;
    this.online = online;
    for (const f of this.statusHandlers) f(online);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  subscribe(patientId) {
    this.subscriptions.add(patientId);
    this.send({ type: "subscribe", patient_id: patientId });
  }

  unsubscribe(patientId) {
    this.subscriptions.delete(patientId);
    this.send({ type: "unsubscribe", patient_id: patientId });
  }
}

export const live = new Live();
