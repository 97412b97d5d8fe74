//! Staff logins and care-unit scoping, through the real router and store:
//! who sees which patient, what is refused, and that the audit log has it.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Content, Event, EventKind, Metric, Observation};

use super::router;
use super::tests::{App, app};
use crate::engine::task::{EngineMsg, Ingested};

const PASSWORD: &str = "ett långt lösenord";

/// A logged-in browser: its session cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

/// One request with optional cookie session; returns status, headers, body.
async fn request(
    app: &App,
    method: &str,
    path: &str,
    body: Option<Value>,
    session: Option<&Session>,
    csrf: bool,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(s) = session {
        req = req.header(header::COOKIE, format!("vaka_session={}", s.cookie));
        if csrf {
            req = req.header("x-csrf-token", &s.csrf);
        }
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .expect("request");
    let res = router(app.state.clone())
        .oneshot(req)
        .await
        .expect("response");
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

async fn login(app: &App, username: &str, password: &str) -> Result<Session, (StatusCode, Value)> {
    let (status, headers, body) = request(
        app,
        "POST",
        "/api/v1/auth/login",
        Some(json!({"username": username, "password": password})),
        None,
        false,
    )
    .await;
    if status != StatusCode::OK {
        return Err((status, body));
    }
    let set_cookie = headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
    }
    let cookie = set_cookie
        .strip_prefix("vaka_session=")
        .and_then(|c| c.split(';').next())
        .expect("cookie value")
        .to_owned();
    Ok(Session {
        cookie,
        csrf: body["csrf_token"].as_str().expect("csrf token").to_owned(),
    })
}

/// Two vårdcentraler and a municipal home-care unit; a patient in each
/// vårdcentral, one of them also in home care; a nurse in each unit.
async fn two_units() -> App {
    let app = app().await;
    for (id, kind) in [
        ("vc-a", "region"),
        ("vc-b", "region"),
        ("hem-a", "municipality"),
    ] {
        let (s, b) = app
            .authed(
                "POST",
                "/api/v1/care-units",
                Some(json!({"id": id, "name": format!("Enhet {id}"), "kind": kind})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    for (id, units) in [("pa", vec!["vc-a", "hem-a"]), ("pb", vec!["vc-b"])] {
        let (s, b) = app
            .authed(
                "POST",
                "/api/v1/patients",
                Some(json!({"id": id, "name": format!("Patient {id}"), "units": units})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    for (username, unit) in [
        ("nurse-a", "vc-a"),
        ("nurse-b", "vc-b"),
        ("home-a", "hem-a"),
    ] {
        let (s, b) = app
            .authed(
                "POST",
                "/api/v1/staff",
                Some(json!({
                    "username": username, "name": username, "role": "nurse",
                    "password": PASSWORD, "units": [unit],
                })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    app
}

async fn audit(app: &App, query: &str) -> Vec<Value> {
    let (s, body) = app
        .authed("GET", &format!("/api/v1/audit?{query}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_nurse_of_another_unit_gets_404_and_the_attempt_is_audited() {
    let app = two_units().await;
    let b = login(&app, "nurse-b", PASSWORD).await.expect("login");

    // Her own patient: visible, and the view is audited.
    let (s, _, body) = request(&app, "GET", "/api/v1/patients/pb", None, Some(&b), false).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["id"], "pb");

    // The other unit's patient does not exist for her, whatever she asks.
    for path in [
        "/api/v1/patients/pa",
        "/api/v1/patients/pa/observations",
        "/api/v1/patients/pa/plan",
        "/api/v1/patients/pa/plan/history",
        "/api/v1/patients/pa/ctg-sessions",
        "/api/v1/patients/pa/devices",
        "/api/v1/patients/pa/calls",
        "/api/v1/patients/pa/enrolments",
        "/api/v1/alerts?patient=pa",
    ] {
        let (s, _, body) = request(&app, "GET", path, None, Some(&b), false).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"], "not_found");
    }
    // Not even an unknown id tells her more.
    let (s, _, _) = request(
        &app,
        "GET",
        "/api/v1/patients/nobody",
        None,
        Some(&b),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Nor can she write to the patient.
    let (s, _, _) = request(
        &app,
        "POST",
        "/api/v1/patients/pa/calls",
        Some(json!({"outcome": "reached", "note": "x"})),
        Some(&b),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The list and the board only have her patient.
    let (_, _, list) = request(&app, "GET", "/api/v1/patients", None, Some(&b), false).await;
    let ids: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["pb"]);
    let (_, _, board) = request(&app, "GET", "/api/v1/board", None, Some(&b), false).await;
    assert_eq!(board["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(board["rows"][0]["patient"]["id"], "pb");

    // Every denial and every view is in the audit log, under her name.
    let denied = audit(&app, "actor=staff:nurse-b&patient=pa&action=access.denied").await;
    assert_eq!(denied.len(), 10, "{denied:?}");
    let viewed = audit(&app, "actor=staff:nurse-b&patient=pb").await;
    let actions: Vec<&str> = viewed.iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["patient.view", "patient.list", "board.view"] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    assert!(viewed.iter().all(|e| e["patient_id"] == "pb"));
}

#[tokio::test]
async fn region_and_home_care_see_their_own_alerts_of_a_shared_patient() {
    let app = two_units().await;
    let mut rx = app.state.live.changes.subscribe();
    let now = UnixMillis::now();
    let t = |min: i64| UnixMillis(now.0 - min * 60_000);
    let spo2 = |at: UnixMillis, v: f64| Ingested {
        patient_id: "pa".into(),
        device_id: "ox-1".into(),
        arrived: at,
        content: Content::Observations(vec![Observation {
            time: at,
            metric: Metric::Spo2,
            value: v,
        }]),
    };
    let fall = Ingested {
        patient_id: "pa".into(),
        device_id: "fall-1".into(),
        arrived: t(1),
        content: Content::Events(vec![Event {
            time: t(1),
            kind: EventKind::Fall,
            text: None,
        }]),
    };
    app.state
        .engine
        .send(EngineMsg::Ingested(vec![
            spo2(t(10), 85.0),
            spo2(t(9), 84.0),
            fall,
        ]))
        .await
        .expect("engine");
    let mut rules = Vec::new();
    while rules.len() < 2 {
        let frame = rx.recv().await.expect("an alert");
        let v: Value = serde_json::from_str(&frame.json).expect("json");
        if v["alert"]["state"] == "open" {
            rules.push(v["alert"]["rule"].as_str().unwrap_or_default().to_owned());
        }
    }
    rules.sort();
    assert_eq!(rules, ["fall", "spo2"]);

    let rules_seen = |session| {
        let app = &app;
        async move {
            let (s, _, body) = request(
                app,
                "GET",
                "/api/v1/alerts?patient=pa",
                None,
                Some(session),
                false,
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{body}");
            let mut r: Vec<String> = body
                .as_array()
                .expect("alerts")
                .iter()
                .filter_map(|a| a["rule"].as_str().map(str::to_owned))
                .collect();
            r.sort();
            r
        }
    };
    let region = login(&app, "nurse-a", PASSWORD).await.expect("login");
    let home = login(&app, "home-a", PASSWORD).await.expect("login");
    assert_eq!(rules_seen(&region).await, ["spo2"]);
    assert_eq!(rules_seen(&home).await, ["fall"]);

    // The home-care nurse cannot act on the clinical alert either.
    let (_, _, all) = request(&app, "GET", "/api/v1/alerts", None, Some(&region), false).await;
    let spo2_id = all[0]["alert_id"].as_i64().expect("id");
    let (s, _, _) = request(
        &app,
        "POST",
        &format!("/api/v1/alerts/{spo2_id}/acknowledge"),
        None,
        Some(&home),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The region nurse can, and it is filed under her name, not a name she
    // might type.
    let (s, _, alert) = request(
        &app,
        "POST",
        &format!("/api/v1/alerts/{spo2_id}/acknowledge"),
        Some(json!({"by": "Someone Else"})),
        Some(&region),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{alert}");
    assert_eq!(alert["acknowledged_by"], "nurse-a");
}

#[tokio::test]
async fn logins_lock_after_five_failures_and_say_so() {
    let app = two_units().await;
    for i in 1..=4 {
        let (s, body) = login(&app, "nurse-a", "fel lösenord")
            .await
            .err()
            .expect("refused");
        assert_eq!(s, StatusCode::UNAUTHORIZED, "attempt {i}");
        assert_eq!(body["error"], "bad_credentials");
    }
    let (s, body) = login(&app, "nurse-a", "fel lösenord")
        .await
        .err()
        .expect("refused");
    assert_eq!(s, StatusCode::LOCKED, "{body}");
    assert_eq!(body["error"], "locked");
    // Locked: even the right password is refused now.
    let (s, _) = login(&app, "nurse-a", PASSWORD)
        .await
        .err()
        .expect("locked");
    assert_eq!(s, StatusCode::LOCKED);
    // An unknown user gets the same answer as a wrong password.
    let (s, body) = login(&app, "nobody", PASSWORD)
        .await
        .err()
        .expect("refused");
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("bad_credentials"))
    );
    // The others are unaffected.
    assert!(login(&app, "nurse-b", PASSWORD).await.is_ok());
    // An administrator's new password unlocks.
    let (s, b) = app
        .authed(
            "PUT",
            "/api/v1/staff/nurse-a",
            Some(json!({"password": "ett nytt långt lösenord"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        login(&app, "nurse-a", "ett nytt långt lösenord")
            .await
            .is_ok()
    );
    let failures = audit(&app, "actor=login:nurse-a&action=auth.login_failed").await;
    assert_eq!(failures.len(), 5);
    assert_eq!(
        audit(&app, "actor=login:nurse-a&action=auth.login_locked")
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn changes_need_the_csrf_token_and_logout_ends_the_session() {
    let app = two_units().await;
    let a = login(&app, "nurse-a", PASSWORD).await.expect("login");
    let call = json!({"outcome": "reached", "note": "Mår bra, väger sig i morgon."});
    let (s, _, body) = request(
        &app,
        "POST",
        "/api/v1/patients/pa/calls",
        Some(call.clone()),
        Some(&a),
        false,
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf"))
    );
    let (s, _, body) = request(
        &app,
        "POST",
        "/api/v1/patients/pa/calls",
        Some(call),
        Some(&a),
        true,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["staff"], "nurse-a");

    // A nurse is no administrator, and each refusal is in the audit log
    // under her name, with its reason.
    let (s, _, _) = request(&app, "GET", "/api/v1/staff", None, Some(&a), false).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = request(&app, "GET", "/api/v1/audit", None, Some(&a), false).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = request(&app, "GET", "/api/v1/staff/nurse-b", None, Some(&a), false).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let refused = audit(&app, "actor=staff:nurse-a&action=access.forbidden").await;
    let mut reasons: Vec<&str> = refused
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            "only administrators see other staff",
            "this needs the role admin",
            "this needs the role admin",
        ],
        "{refused:?}"
    );

    let (s, _, me) = request(&app, "GET", "/api/v1/auth/me", None, Some(&a), false).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["staff"]["username"], "nurse-a");
    assert_eq!(me["csrf_token"].as_str(), Some(a.csrf.as_str()));
    let (s, _, _) = request(&app, "POST", "/api/v1/auth/logout", None, Some(&a), true).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = request(&app, "GET", "/api/v1/auth/me", None, Some(&a), false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A made-up cookie is no session either.
    let fake = Session {
        cookie: "0".repeat(64),
        csrf: String::new(),
    };
    let (s, _, _) = request(&app, "GET", "/api/v1/board", None, Some(&fake), false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
