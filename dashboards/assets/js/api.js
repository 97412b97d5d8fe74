// The HTTP API (/api/v1): JSON in and out, the session cookie, and the CSRF
// token every mutating request must carry (the hub answers 403 "csrf"
// without it). A 401 means the session is gone: the app shows the login.

let csrf = null;
const listeners = new Set();

/** An error answer of the API: `{code, detail}` and the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

/** `f()` is called when a request finds the session expired. */
export function onUnauthorized(f) {
  listeners.add(f);
}

export function setCsrf(token) {
  csrf = token ?? null;
}

/** Calls the API; resolves to the parsed JSON (or null for 204). */
export async function api(path, { method = "GET", body, query } = {}) {
  let url = `/api/v1${path}`;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") q.set(k, v);
    }
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrf) headers["x-csrf-token"] = csrf;
  let res;
  try {
    res = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", null);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data?.code ?? data?.error, data?.detail);
    if (res.status === 401 && !path.startsWith("/auth/")) listeners.forEach((f) => f(err));
    throw err;
  }
  return data;
}

export const get = (path, query) => api(path, { query });
export const post = (path, body) => api(path, { method: "POST", body });
export const put = (path, body) => api(path, { method: "PUT", body });
export const del = (path) => api(path, { method: "DELETE" });

/**
 * Observations in one shape whatever the hub calls the fields:
 * `{t: ms, n, v, u, device_id}` (the store says time/metric/value/unit).
 */
export function normalizeObs(o) {
  const rawT = o.t ?? o.time;
  let t;
  if (typeof rawT === "number") t = rawT < 1e11 ? rawT * 1000 : rawT;
  else t = Date.parse(rawT);
  return { t, n: o.n ?? o.metric ?? o.name, v: Number(o.v ?? o.value), u: o.u ?? o.unit, device_id: o.device_id };
}

export async function observations(patientId, metric, fromMs, toMs, limit = 5000) {
  const rows = await get(`/patients/${encodeURIComponent(patientId)}/observations`, {
    metric,
    from: new Date(fromMs).toISOString(),
    to: toMs ? new Date(toMs).toISOString() : undefined,
    limit,
  });
  return (rows ?? []).map(normalizeObs).filter((o) => Number.isFinite(o.t) && Number.isFinite(o.v))
    .sort((a, b) => a.t - b.t);
}
