//! A walk over every operation of the served OpenAPI document, as an
//! intruder would try them: without credentials, with forged ones, as a
//! nurse (and a physician) of another care unit, and as an administrator's
//! browser tricked into a request without the CSRF token. Every refusal
//! must be a refusal (never 2xx, never 5xx), and every refusal to show a
//! patient must be in the audit log.
//!
//! The walk is driven by the document the server serves, so a route added
//! to it is walked at once; `cases` must say what a caller of another unit
//! gets from it, and the test fails until it does.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vaka_gateway::senml::PackBuilder;

use crate::support::*;

const PASSWORD: &str = "ett långt lösenord för testet";

/// The operations that need no login: liveness, readiness, metrics (no
/// patient data), the document itself, and the login.
const PUBLIC: [(&str, &str); 5] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/auth/login"),
];

/// One operation of the document.
#[derive(Debug, Clone)]
struct Op {
    method: String,
    template: String,
    public: bool,
}

impl Op {
    fn name(&self) -> String {
        format!("{} {}", self.method.to_uppercase(), self.template)
    }

    fn http_method(&self) -> Result<Method> {
        Method::from_bytes(self.method.to_uppercase().as_bytes()).context("method")
    }

    fn changes_something(&self) -> bool {
        self.method != "get"
    }
}

/// The operations of the served document.
fn operations(doc: &Value) -> Result<Vec<Op>> {
    let paths = doc["paths"]
        .as_object()
        .ok_or_else(|| anyhow!("no paths"))?;
    let mut ops = Vec::new();
    for (template, item) in paths {
        let item = item.as_object().ok_or_else(|| anyhow!("{template}"))?;
        for (method, op) in item {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let public = op["security"].as_array().is_some_and(Vec::is_empty);
            ops.push(Op {
                method: method.clone(),
                template: template.clone(),
                public,
            });
        }
    }
    Ok(ops)
}

/// The ids a request of the walk names.
#[derive(Debug, Clone)]
struct Target {
    patient: String,
    alert: i64,
    device: String,
    staff: String,
    unit: String,
}

/// `template` with its parameters filled from `t`. `{id}` is named by the
/// segment before it (`/patients/{id}`, `/alerts/{id}`, …).
fn fill(template: &str, t: &Target) -> Result<String> {
    let mut out = Vec::new();
    let segments: Vec<&str> = template.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
            out.push((*seg).to_owned());
            continue;
        };
        let before = if i > 0 { segments[i - 1] } else { "" };
        let value = match (name, before) {
            ("id", "patients") | ("patient", _) => t.patient.clone(),
            ("id", "alerts") => t.alert.to_string(),
            ("id", "devices") | ("device", _) => t.device.clone(),
            ("id", "staff") => t.staff.clone(),
            ("unit", _) => t.unit.clone(),
            _ => bail!("{template}: the walk does not know the parameter {{{name}}}"),
        };
        out.push(value);
    }
    Ok(out.join("/"))
}

/// A valid body for an operation: a refusal must come from who asks, not
/// from what she sent.
fn body_for(op: &Op, w: &World) -> Option<Value> {
    let body = match (op.method.as_str(), op.template.as_str()) {
        ("post", "/api/v1/auth/login") => json!({"username": "nobody", "password": "not this"}),
        ("post", "/api/v1/patients") => {
            json!({"name": "Mallory Intrång", "units": [w.unit_a]})
        }
        ("post", "/api/v1/patients/{id}/calls") => {
            json!({"outcome": "reached", "note": "walk", "alert_id": w.alert_b})
        }
        ("put", "/api/v1/patients/{id}/plan") => json!({
            "changes": {"thresholds": {"spo2_low_pct": 88}},
            "reason": "walk",
        }),
        ("post", "/api/v1/alerts/{id}/acknowledge") => json!({}),
        ("post", "/api/v1/alerts/{id}/resolve") => json!({"outcome": "no_action", "note": "walk"}),
        ("post", "/api/v1/alerts/{id}/snooze") => json!({"minutes": 30, "reason": "walk"}),
        ("post", "/api/v1/devices") => json!({"id": "walk-dev", "kind": "scale"}),
        // Bind the other unit's device to one's own patient: her data
        // would flow to me.
        ("put", "/api/v1/devices/{id}/binding") => json!({"patient_id": w.patient_a}),
        ("post", "/api/v1/quarantine/{device}/discard") => json!({"reason": "walk"}),
        ("post", "/api/v1/care-units") => {
            json!({"id": "walk-unit", "name": "Walk", "kind": "region"})
        }
        ("post", "/api/v1/staff") => json!({
            "username": "walk-admin", "name": "Walk", "role": "admin",
            "password": PASSWORD, "units": [w.unit_b],
        }),
        // Join the other unit, and become an administrator.
        ("put", "/api/v1/staff/{id}") => json!({"units": [w.unit_a, w.unit_b], "role": "admin"}),
        _ => return None,
    };
    Some(body)
}

/// What a member of another unit must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 404, as for an unknown id, and `access.denied` in the audit log.
    Hidden,
    /// 404 without an audit entry: nothing of the patient is touched (her
    /// own list has no such entry).
    Absent,
    /// 403: a role she does not have.
    Forbidden,
    /// 2xx with her own data only: nothing of the other unit in the body.
    OwnOnly,
}

/// One request of the walk.
struct Case {
    op: Op,
    path: String,
    body: Option<Value>,
    expect: Expect,
}

/// Everything the walk set up.
struct World {
    hub: Hub,
    unit_a: String,
    unit_b: String,
    patient_a: String,
    patient_b: String,
    device_b: String,
    alert_b: i64,
    nurse_a: String,
    nurse_b: String,
    nurse_m: String,
    physician_a: String,
    admin: String,
}

/// The requests a member of staff (`me`, with `role`) of another unit makes
/// against `victim`'s patient, alert, device, colleague and unit. Fails for
/// an operation it does not know: a new route must be classified here.
fn cases(op: &Op, w: &World, me: &str, role: &str, victim: &Target) -> Result<Vec<Case>> {
    use Expect::*;
    let own = Target {
        staff: me.to_owned(),
        ..victim.clone()
    };
    let case = |t: &Target, query: &str, expect: Expect| -> Result<Case> {
        Ok(Case {
            op: op.clone(),
            path: format!("{}{query}", fill(&op.template, t)?),
            body: body_for(op, w),
            expect,
        })
    };
    let admin_only = role != "admin";
    let m = op.method.as_str();
    let out = match (m, op.template.as_str()) {
        _ if op.public => Vec::new(),
        // Ends the session and opens a websocket: walked on their own.
        ("post", "/api/v1/auth/logout") | ("get", "/api/v1/ws") => Vec::new(),
        ("get", "/api/v1/auth/me" | "/api/v1/board" | "/api/v1/care-units") => {
            vec![case(victim, "", OwnOnly)?]
        }
        ("get", "/api/v1/handover") => {
            vec![case(victim, "?since=2020-01-01T00:00:00Z", OwnOnly)?]
        }
        ("get", "/api/v1/patients") => vec![case(victim, "", OwnOnly)?],
        ("get", "/api/v1/alerts") => vec![
            case(victim, "?state=all", OwnOnly)?,
            case(
                victim,
                &format!("?state=all&patient={}", victim.patient),
                Hidden,
            )?,
        ],
        (
            "get",
            "/api/v1/patients/{id}"
            | "/api/v1/patients/{id}/observations"
            | "/api/v1/patients/{id}/devices"
            | "/api/v1/patients/{id}/calls"
            | "/api/v1/patients/{id}/enrolments"
            | "/api/v1/patients/{id}/plan"
            | "/api/v1/patients/{id}/plan/history"
            | "/api/v1/patients/{id}/ctg-sessions"
            | "/api/v1/alerts/{id}",
        )
        | ("post", "/api/v1/patients/{id}/calls" | "/api/v1/alerts/{id}/acknowledge")
        | ("post", "/api/v1/alerts/{id}/resolve" | "/api/v1/alerts/{id}/snooze") => {
            vec![case(victim, "", Hidden)?]
        }
        // Plans are changed by physicians (and administrators).
        ("put", "/api/v1/patients/{id}/plan") => {
            let expect = if role == "nurse" { Forbidden } else { Hidden };
            vec![case(victim, "", expect)?]
        }
        // Her own list: she may not put the other unit's patient on it; and
        // the other nurse's list is not hers.
        ("put", "/api/v1/staff/{id}/assignments/{patient}") => vec![
            case(&own, "", Hidden)?,
            case(victim, "", if admin_only { Forbidden } else { Hidden })?,
        ],
        ("delete", "/api/v1/staff/{id}/assignments/{patient}") => vec![
            case(&own, "", Absent)?,
            case(victim, "", if admin_only { Forbidden } else { Absent })?,
        ],
        ("get", "/api/v1/staff/{id}" | "/api/v1/staff/{id}/assignments") => {
            vec![case(victim, "", Forbidden)?]
        }
        // Administration, for nurses and physicians: refused whatever it names.
        ("put", "/api/v1/staff/{id}") => {
            vec![case(&own, "", Forbidden)?, case(victim, "", Forbidden)?]
        }
        ("put" | "delete", "/api/v1/patients/{id}/enrolments/{unit}") => {
            // Pull the other unit's patient into mine, or take her out of hers.
            let unit = if m == "put" { &w.unit_a } else { &victim.unit };
            let t = Target {
                unit: unit.clone(),
                ..victim.clone()
            };
            vec![case(&t, "", Forbidden)?]
        }
        (
            _,
            "/api/v1/patients"
            | "/api/v1/devices"
            | "/api/v1/devices/{id}"
            | "/api/v1/devices/{id}/binding"
            | "/api/v1/quarantine"
            | "/api/v1/quarantine/{device}/discard"
            | "/api/v1/care-units"
            | "/api/v1/staff",
        ) => vec![case(victim, "", Forbidden)?],
        ("get", "/api/v1/audit") => {
            vec![case(
                victim,
                &format!("?patient={}", victim.patient),
                Forbidden,
            )?]
        }
        _ => bail!(
            "{}: the walk does not know what another unit's staff should get here; add it to `cases`",
            op.name()
        ),
    };
    Ok(out)
}

// ------------------------------------------------------------------ HTTP

/// How a request presents itself.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Nothing,
    Bearer(&'a str),
    QueryToken(&'a str),
    /// A session cookie, with the CSRF header when given.
    Cookie(&'a str, Option<&'a str>),
}

struct Response {
    status: u16,
    body: Value,
    text: String,
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    auth: Auth<'_>,
    body: Option<&Value>,
) -> Result<Response> {
    let mut url = format!("{base}{path}");
    let mut req_auth = None;
    match auth {
        Auth::Nothing => {}
        Auth::Bearer(t) => req_auth = Some(("authorization".to_owned(), format!("Bearer {t}"))),
        Auth::QueryToken(t) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}access_token={t}");
        }
        Auth::Cookie(c, _) => req_auth = Some(("cookie".to_owned(), format!("vaka_session={c}"))),
    }
    let mut req = client.request(method, url);
    if let Some((k, v)) = req_auth {
        req = req.header(k, v);
    }
    if let Auth::Cookie(_, Some(csrf)) = auth {
        req = req.header("x-csrf-token", csrf);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Response { status, body, text })
}

/// A logged-in browser.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    fn auth(&self) -> Auth<'_> {
        Auth::Cookie(&self.cookie, Some(&self.csrf))
    }
}

async fn login(client: &reqwest::Client, base: &str, username: &str) -> Result<Session> {
    let res = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await?;
    ensure!(res.status() == 200, "login {username}: {}", res.status());
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("vaka_session="))
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow!("no session cookie"))?
        .to_owned();
    let body: Value = res.json().await?;
    let csrf = body["csrf_token"]
        .as_str()
        .ok_or_else(|| anyhow!("no csrf token"))?
        .to_owned();
    Ok(Session { cookie, csrf })
}

// ----------------------------------------------------------------- set-up

async fn world(db: &TestDb) -> Result<World> {
    let hub = Hub::start(HubConfig::new(db, &mqtt_url())).await?;
    let api = hub.api();
    let id = |p: &str| unique(p);
    let (unit_a, unit_b, unit_m) = (id("vc-a-"), id("vc-b-"), id("hem-m-"));
    for (unit, kind) in [
        (&unit_a, "region"),
        (&unit_b, "region"),
        (&unit_m, "municipality"),
    ] {
        let (s, v) = api
            .call(
                Method::POST,
                "/api/v1/care-units",
                Some(json!({"id": unit, "name": format!("Enhet {unit}"), "kind": kind})),
            )
            .await?;
        ensure!(s == 201, "care unit: {s} {v}");
    }
    let (patient_a, patient_b, patient_m) = (id("pa-"), id("pb-"), id("pm-"));
    for (patient, unit, name) in [
        (&patient_a, &unit_a, "Alma Andersson"),
        (&patient_b, &unit_b, "Berit Bengtsson"),
        (&patient_m, &unit_m, "Märta Månsson"),
    ] {
        let (s, v) = api
            .call(
                Method::POST,
                "/api/v1/patients",
                Some(json!({"id": patient, "name": name, "units": [unit]})),
            )
            .await?;
        ensure!(s == 201, "patient: {s} {v}");
    }
    let (nurse_a, nurse_b, nurse_m, physician_a, admin) = (
        id("nurse-a-"),
        id("nurse-b-"),
        id("nurse-m-"),
        id("doc-a-"),
        id("admin-"),
    );
    for (who, role, unit) in [
        (&nurse_a, "nurse", &unit_a),
        (&nurse_b, "nurse", &unit_b),
        (&nurse_m, "nurse", &unit_m),
        (&physician_a, "physician", &unit_a),
        (&admin, "admin", &unit_a),
    ] {
        let (s, v) = api
            .call(
                Method::POST,
                "/api/v1/staff",
                Some(json!({
                    "username": who, "name": who, "role": role,
                    "password": PASSWORD, "units": [unit],
                })),
            )
            .await?;
        ensure!(s == 201, "staff: {s} {v}");
    }

    // A fall of unit B's patient, through the broker, as in real life.
    let device_b = id("fall-b-");
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/devices",
            Some(json!({"id": device_b, "kind": "fall_sensor"})),
        )
        .await?;
    ensure!(s == 201, "device: {s} {v}");
    let (s, v) = api
        .call(
            Method::PUT,
            &format!("/api/v1/devices/{device_b}/binding"),
            Some(json!({"patient_id": patient_b})),
        )
        .await?;
    ensure!(s == 200, "binding: {s} {v}");
    let mqtt = Mqtt::connect(&mqtt_url(), &[]).await?;
    let now = now_s();
    let fall = PackBuilder::new(&device_b, now - 5.0).flag("fall", now - 5.0);
    mqtt.publish(&hub.topic(&device_b, "evt"), fall.to_json())
        .await?;
    let path = format!("/api/v1/alerts?patient={patient_b}");
    let alert_b = eventually("the fall alert", Duration::from_secs(20), || async {
        let alerts = api.get(&path).await.ok()?;
        alerts
            .as_array()?
            .iter()
            .filter(|a| a["rule"] == "fall")
            .find_map(|a| a["alert_id"].as_i64())
    })
    .await?;
    Ok(World {
        hub,
        unit_a,
        unit_b,
        patient_a,
        patient_b,
        device_b,
        alert_b,
        nurse_a,
        nurse_b,
        nurse_m,
        physician_a,
        admin,
    })
}

// ------------------------------------------------------------------- walk

/// What the walk works with.
struct Walk<'a> {
    client: reqwest::Client,
    w: &'a World,
    ops: Vec<Op>,
}

/// (c): `me` against `victim`'s ids, whose patient is called one of
/// `victim_names`; returns the number of requests that must have left an
/// `access.denied` entry.
async fn walk_as(
    walk: &Walk<'_>,
    me: &str,
    role: &str,
    victim: &Target,
    victim_names: &[&str],
    failures: &mut Vec<String>,
) -> Result<usize> {
    let (client, w, ops) = (&walk.client, walk.w, &walk.ops);
    let session = login(client, &w.hub.base, me).await?;
    let mut hidden = 0;
    for op in ops {
        for c in cases(op, w, me, role, victim)? {
            let res = send(
                client,
                &w.hub.base,
                c.op.http_method()?,
                &c.path,
                session.auth(),
                c.body.as_ref(),
            )
            .await?;
            let what = format!("{me} ({role}) {} {}", c.op.method.to_uppercase(), c.path);
            let ok = match c.expect {
                Expect::Hidden | Expect::Absent => {
                    res.status == 404 && res.body["error"] == "not_found"
                }
                Expect::Forbidden => res.status == 403 && res.body["error"] == "forbidden",
                Expect::OwnOnly => {
                    (200..300).contains(&res.status)
                        && victim_names.iter().all(|n| !res.text.contains(n))
                        && !res.body.as_array().is_some_and(|alerts| {
                            alerts.iter().any(|a| a["alert_id"] == victim.alert)
                        })
                }
            };
            if !ok {
                failures.push(format!(
                    "{what}: expected {:?}, got {} {}",
                    c.expect, res.status, res.text
                ));
            }
            if c.expect == Expect::Hidden {
                hidden += 1;
            }
        }
    }
    Ok(hidden)
}

/// The alerts and patients in a websocket snapshot opened with a session.
async fn websocket_snapshot(w: &World, session: &Session) -> Result<String> {
    let url = format!("{}/api/v1/ws", w.hub.base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "cookie",
        format!("vaka_session={}", session.cookie).parse()?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let first = next_frame(&mut ws, Duration::from_secs(10)).await?;
    ensure!(
        first["type"] == "snapshot",
        "expected a snapshot, got {first}"
    );
    close(ws).await;
    Ok(first.to_string())
}

#[tokio::test]
async fn every_operation_refuses_strangers_and_other_units() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let w = world(&db).await?;
    let base = w.hub.base.clone();
    let api = w.hub.api();
    let doc = api.get("/api/v1/openapi.json").await?;
    let walk = Walk {
        client: reqwest::Client::new(),
        w: &w,
        ops: operations(&doc)?,
    };
    let (client, ops) = (&walk.client, &walk.ops);
    ensure!(
        ops.len() > 40,
        "only {} operations in the document",
        ops.len()
    );
    let mut failures: Vec<String> = Vec::new();

    // The document marks exactly the expected operations as public.
    let public: BTreeSet<(String, String)> = ops
        .iter()
        .filter(|o| o.public)
        .map(|o| (o.method.clone(), o.template.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = PUBLIC
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(public, expected, "operations marked `security: []`");

    let b = Target {
        patient: w.patient_b.clone(),
        alert: w.alert_b,
        device: w.device_b.clone(),
        staff: w.nurse_b.clone(),
        unit: w.unit_b.clone(),
    };

    // (a) and (b): no credentials, forged ones: 401 everywhere but the
    // public operations.
    let garbage_cookie = "bm90LWEtc2Vzc2lvbg";
    let forgeries: [(&str, Auth); 4] = [
        ("no credentials", Auth::Nothing),
        ("a garbage cookie", Auth::Cookie(garbage_cookie, Some("x"))),
        (
            "a wrong bearer token",
            Auth::Bearer("not-the-token-of-this-hub"),
        ),
        (
            "a wrong ?access_token",
            Auth::QueryToken("not-the-token-of-this-hub"),
        ),
    ];
    for op in ops {
        let path = fill(&op.template, &b)?;
        let body = body_for(op, &w);
        for (how, auth) in forgeries {
            let res = send(client, &base, op.http_method()?, &path, auth, body.as_ref()).await?;
            let refused = res.status == 401;
            if op.public {
                // Public, but the login still refuses a wrong password.
                let want = if op.method == "get" { 200 } else { 401 };
                if res.status != want {
                    failures.push(format!(
                        "{} with {how}: {} {}",
                        op.name(),
                        res.status,
                        res.text
                    ));
                }
            } else if !refused || res.body["error"] != "unauthorized" {
                failures.push(format!(
                    "{} {path} with {how}: expected 401 unauthorized, got {} {}",
                    op.method.to_uppercase(),
                    res.status,
                    res.text
                ));
            }
        }
    }

    // (c): staff of another unit against unit B's ids (and unit A's, for
    // the municipal nurse).
    let names_b = [w.patient_b.as_str(), "Berit Bengtsson"];
    let hidden_nurse = walk_as(&walk, &w.nurse_a, "nurse", &b, &names_b, &mut failures).await?;
    let hidden_doc = walk_as(
        &walk,
        &w.physician_a,
        "physician",
        &b,
        &names_b,
        &mut failures,
    )
    .await?;
    let a = Target {
        patient: w.patient_a.clone(),
        alert: w.alert_b,
        device: w.device_b.clone(),
        staff: w.nurse_a.clone(),
        unit: w.unit_a.clone(),
    };
    let names_a = [w.patient_a.as_str(), "Alma Andersson"];
    let hidden_m = walk_as(&walk, &w.nurse_m, "nurse", &a, &names_a, &mut failures).await?;
    // Every operation has been walked in (c), or on its own below.
    for op in ops {
        let walked = op.public
            || ["/api/v1/auth/logout", "/api/v1/ws"].contains(&op.template.as_str())
            || !cases(op, &w, &w.nurse_a, "nurse", &b)?.is_empty();
        assert!(walked, "{} is not walked", op.name());
    }

    // The websocket of unit A's nurse carries nothing of unit B.
    let session_a = login(client, &base, &w.nurse_a).await?;
    let snapshot = websocket_snapshot(&w, &session_a).await?;
    if snapshot.contains(&w.patient_b) || snapshot.contains(&format!("\"alert_id\":{}", w.alert_b))
    {
        failures.push(format!(
            "the websocket snapshot of {} shows unit B: {snapshot}",
            w.nurse_a
        ));
    }

    // (d): an administrator's browser, lured into a change without the
    // CSRF token (or with a wrong one): 403 csrf, and nothing changes.
    let admin = login(client, &base, &w.admin).await?;
    for op in ops.iter().filter(|o| o.changes_something() && !o.public) {
        let path = fill(&op.template, &b)?;
        let body = body_for(op, &w);
        for (how, csrf) in [
            ("without X-CSRF-Token", None),
            ("with a wrong one", Some("forged")),
        ] {
            let auth = Auth::Cookie(&admin.cookie, csrf);
            let res = send(client, &base, op.http_method()?, &path, auth, body.as_ref()).await?;
            if res.status != 403 || res.body["error"] != "csrf" {
                failures.push(format!(
                    "{} {path} {how}: expected 403 csrf, got {} {}",
                    op.method.to_uppercase(),
                    res.status,
                    res.text
                ));
            }
        }
    }

    // Nothing the refused requests asked for happened.
    let alert = api.get(&format!("/api/v1/alerts/{}", w.alert_b)).await?;
    assert_eq!(alert["alert"]["state"], "open", "{alert}");
    let units = api
        .get(&format!("/api/v1/patients/{}/enrolments", w.patient_b))
        .await?;
    assert_eq!(units.as_array().map(Vec::len), Some(1), "{units}");
    assert_eq!(units[0]["id"], w.unit_b);
    let calls = api
        .get(&format!("/api/v1/patients/{}/calls", w.patient_b))
        .await?;
    assert_eq!(calls, json!([]));
    let history = api
        .get(&format!("/api/v1/patients/{}/plan/history", w.patient_b))
        .await?;
    // Only the program's template, stored when she was created.
    let versions: Vec<&Value> = history
        .as_array()
        .map(|h| h.iter().collect())
        .unwrap_or_default();
    assert_eq!(versions.len(), 1, "{history}");
    assert_eq!(versions[0]["changed_by"], "system", "{history}");
    let device = api.get(&format!("/api/v1/devices/{}", w.device_b)).await?;
    assert_eq!(device["patient_id"], w.patient_b, "{device}");
    let nurse_a = api.get(&format!("/api/v1/staff/{}", w.nurse_a)).await?;
    assert_eq!(nurse_a["role"], "nurse", "{nurse_a}");
    let staff = api.get("/api/v1/staff").await?;
    assert_eq!(staff.as_array().map(Vec::len), Some(5), "{staff}");
    assert_eq!(
        api.get("/api/v1/care-units")
            .await?
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(
        api.get("/api/v1/patients").await?.as_array().map(Vec::len),
        Some(3)
    );

    // A NUL, which PostgreSQL cannot store, in every path parameter, in
    // queries and in bodies, from the service token (which reaches the
    // database everywhere): bad input, never a 5xx. And the engine, which
    // stores alert changes, still works afterwards (the control below).
    let service = Auth::Bearer(&w.hub.token);
    let nul = Target {
        patient: "x%00y".into(),
        alert: w.alert_b,
        device: "x%00y".into(),
        staff: "x%00y".into(),
        unit: "x%00y".into(),
    };
    for op in ops.iter().filter(|o| !o.public && o.template.contains('}')) {
        if op.template.starts_with("/api/v1/alerts/") {
            continue; // integer ids; their bodies are probed below
        }
        let path = fill(&op.template, &nul)?;
        let res = send(
            client,
            &base,
            op.http_method()?,
            &path,
            service,
            body_for(op, &w).as_ref(),
        )
        .await?;
        if !(400..500).contains(&res.status) {
            failures.push(format!(
                "NUL: {} {path}: {} {}",
                op.method.to_uppercase(),
                res.status,
                res.text
            ));
        }
    }
    let alert_path = |action: &str| format!("/api/v1/alerts/{}/{action}", w.alert_b);
    let probes = [
        (Method::GET, "/api/v1/alerts?patient=x%00y".into(), None),
        (Method::GET, "/api/v1/audit?actor=x%00y".into(), None),
        (Method::GET, "/api/v1/audit?action=x%00y".into(), None),
        (
            Method::POST,
            "/api/v1/patients".into(),
            Some(json!({"name": "Nul\u{0}la"})),
        ),
        (
            Method::POST,
            alert_path("acknowledge"),
            Some(json!({"by": "Nul\u{0}la"})),
        ),
        (
            Method::POST,
            alert_path("resolve"),
            Some(json!({"outcome": "no_action", "note": "a\u{0}b"})),
        ),
        (
            Method::PUT,
            format!("/api/v1/patients/{}/plan", w.patient_b),
            Some(json!({"changes": {}, "reason": "a\u{0}b"})),
        ),
        (
            Method::POST,
            format!("/api/v1/patients/{}/calls", w.patient_b),
            Some(json!({"outcome": "reached", "note": "a\u{0}b"})),
        ),
    ];
    for (method, path, body) in probes {
        let res = send(client, &base, method.clone(), &path, service, body.as_ref()).await?;
        if res.status != 400 {
            failures.push(format!("NUL: {method} {path}: {} {}", res.status, res.text));
        }
    }

    // The walk's requests were real ones: unit B's nurse gets what the
    // others were refused.
    let owner = login(client, &base, &w.nurse_b).await?;
    for op in ops.iter().filter(|o| !o.public && !o.changes_something()) {
        for c in cases(op, &w, &w.nurse_b, "nurse", &b)? {
            if c.expect != Expect::Hidden {
                continue;
            }
            let res = send(client, &base, Method::GET, &c.path, owner.auth(), None).await?;
            if res.status != 200 {
                failures.push(format!(
                    "control: {} GET {}: {} {}",
                    w.nurse_b, c.path, res.status, res.text
                ));
            }
        }
    }
    let call = body_for(
        &Op {
            method: "post".into(),
            template: "/api/v1/patients/{id}/calls".into(),
            public: false,
        },
        &w,
    );
    let path = format!("/api/v1/patients/{}/calls", w.patient_b);
    let res = send(
        client,
        &base,
        Method::POST,
        &path,
        owner.auth(),
        call.as_ref(),
    )
    .await?;
    if res.status != 201 {
        failures.push(format!(
            "control: the owner's call: {} {}",
            res.status, res.text
        ));
    }
    let path = format!("/api/v1/alerts/{}/acknowledge", w.alert_b);
    let res = send(
        client,
        &base,
        Method::POST,
        &path,
        owner.auth(),
        Some(&json!({})),
    )
    .await?;
    // (A wedged engine would answer 503 after the request timeout.)
    if res.status != 200 {
        failures.push(format!(
            "control: the owner acknowledges: {} {}",
            res.status, res.text
        ));
    }

    // (e): every refusal to show a patient is in the audit log.
    // (The municipal nurse asked for unit B's alert too.)
    let (pa, pb) = (w.patient_a.as_str(), w.patient_b.as_str());
    for (who, patients, n) in [
        (&w.nurse_a, HashSet::from([pb]), hidden_nurse),
        (&w.physician_a, HashSet::from([pb]), hidden_doc),
        (&w.nurse_m, HashSet::from([pa, pb]), hidden_m),
    ] {
        let entries = api
            .get(&format!(
                "/api/v1/audit?actor=staff:{who}&action=access.denied&limit=5000"
            ))
            .await?;
        let entries = entries.as_array().cloned().unwrap_or_default();
        let about: HashSet<&str> = entries
            .iter()
            .filter_map(|e| e["patient_id"].as_str())
            .collect();
        if entries.len() != n || about != patients {
            failures.push(format!(
                "audit: {n} access.denied entries of {who} about {patients:?} expected, found {}: {entries:?}",
                entries.len()
            ));
        }
    }

    // Logging out ends the session: the old cookie opens nothing.
    let path = "/api/v1/auth/logout";
    let res = send(client, &base, Method::POST, path, session_a.auth(), None).await?;
    assert_eq!(res.status, 204, "logout: {}", res.text);
    for op in ops.iter().filter(|o| !o.public) {
        let path = fill(&op.template, &b)?;
        let res = send(
            client,
            &base,
            op.http_method()?,
            &path,
            session_a.auth(),
            body_for(op, &w).as_ref(),
        )
        .await?;
        if res.status != 401 {
            failures.push(format!(
                "{} {path} after logout: {} {}",
                op.method.to_uppercase(),
                res.status,
                res.text
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} requests not refused as they should be:\n{}\nlog: {}",
        failures.len(),
        failures.join("\n"),
        w.hub.log_tail()
    );
    Ok(())
}
