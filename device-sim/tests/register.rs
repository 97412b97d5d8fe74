//! Registration against a stand-in for the hub's API that records what it
//! was sent and answers as the contract says (201, 409 for a known id).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};
use vaka_sim::register::{RegisterError, register};
use vaka_sim::roster;

#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    auth: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Hub {
    calls: Mutex<Vec<Call>>,
    known: Mutex<HashSet<String>>,
    require: Option<String>,
}

async fn handle(
    State(hub): State<Arc<Hub>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(token) = &hub.require
        && auth.as_deref() != Some(&format!("Bearer {token}"))
    {
        return StatusCode::UNAUTHORIZED;
    }
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    hub.calls.lock().unwrap().push(Call {
        method: method.clone(),
        path: path.clone(),
        auth,
        body: body.clone(),
    });
    match (method, path.as_str()) {
        (Method::POST, "/api/v1/patients" | "/api/v1/devices") => {
            let id = format!("{path}/{}", body["id"].as_str().unwrap_or(""));
            if hub.known.lock().unwrap().insert(id) {
                StatusCode::CREATED
            } else {
                StatusCode::CONFLICT
            }
        }
        (Method::PUT, p) if p.starts_with("/api/v1/devices/") && p.ends_with("/binding") => {
            StatusCode::OK
        }
        _ => StatusCode::NOT_FOUND,
    }
}

async fn serve(hub: Arc<Hub>) -> String {
    let app = Router::new().fallback(handle).with_state(hub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

#[tokio::test]
async fn registers_patients_devices_and_bindings_and_tolerates_conflicts() {
    let hub = Arc::new(Hub::default());
    let api = serve(hub.clone()).await;
    let r = roster(42, 3);

    let first = register(&r, &api, Some("s3cret")).await.unwrap();
    assert_eq!(first.patients_created, 3);
    assert_eq!(first.devices_created, 6);
    assert_eq!(first.bindings, 6);

    // Again: everything exists already (409), which is fine.
    let again = register(&r, &api, Some("s3cret")).await.unwrap();
    assert_eq!((again.patients_created, again.patients_existing), (0, 3));
    assert_eq!((again.devices_created, again.devices_existing), (0, 6));

    let calls = hub.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2 * (3 + 6 + 6));
    assert!(
        calls
            .iter()
            .all(|c| c.auth.as_deref() == Some("Bearer s3cret"))
    );
    let p = &r.patients[0];
    assert_eq!(calls[0].method, Method::POST);
    assert_eq!(calls[0].path, "/api/v1/patients");
    assert_eq!(
        calls[0].body,
        json!({"id": p.id, "name": p.name, "timezone": "Europe/Stockholm", "program": "heart_failure"})
    );
    assert_eq!(calls[1].path, "/api/v1/devices");
    assert_eq!(calls[1].body, json!({"id": "scale-0001", "kind": "scale"}));
    assert_eq!(calls[2].method, Method::PUT);
    assert_eq!(calls[2].path, "/api/v1/devices/scale-0001/binding");
    assert_eq!(calls[2].body, json!({"patient_id": "p-0001"}));
}

#[tokio::test]
async fn a_wrong_token_or_a_missing_hub_is_a_clear_error() {
    let hub = Arc::new(Hub {
        require: Some("right".into()),
        ..Hub::default()
    });
    let api = serve(hub).await;
    let err = register(&roster(1, 1), &api, Some("wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegisterError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("VAKA_API_TOKEN"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = register(&roster(1, 1), &format!("http://127.0.0.1:{port}"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RegisterError::Unreachable { .. }), "{err}");

    let err = register(&roster(1, 1), "ftp://x", None).await.unwrap_err();
    assert!(matches!(err, RegisterError::Url { .. }), "{err}");
}
