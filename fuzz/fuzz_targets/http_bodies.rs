//! The JSON request bodies of the hub API, through the real router: a
//! SQLite store (in memory) and the real engine task behind it, as in the
//! API's own tests. The first input byte picks the route (and the alert),
//! the rest is the body. The oracle: the API answers every body with a
//! success or a 4xx carrying its JSON error, never a 5xx and never a panic.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Content, Event, EventKind};
use vaka_hub::engine::clock::SystemClock;
use vaka_hub::engine::task::{EngineDeps, EngineMsg, EngineTask, Ingested};
use vaka_hub::http::{AppState, router};
use vaka_hub::metrics::Metrics;
use vaka_hub::store::Store;

const TOKEN: &str = "fuzzing-token-of-some-length";

struct Fuzz {
    rt: tokio::runtime::Runtime,
    state: AppState,
    /// Keeps the broker flag's sender alive.
    _broker: tokio::sync::watch::Sender<bool>,
}

fn setup() -> Fuzz {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (state, broker) = rt.block_on(async {
        let store = Store::connect("sqlite::memory:").await.expect("sqlite");
        store.migrate().await.expect("migrate");
        let (engine_tx, engine_rx) = tokio::sync::mpsc::channel(16);
        let live = vaka_hub::live::Live::default();
        let metrics = Metrics::default();
        let (broker_tx, broker) = tokio::sync::watch::channel(true);
        let task = EngineTask::start(
            EngineDeps {
                store: store.clone(),
                clock: Arc::new(SystemClock),
                live: live.clone(),
                gateway: None,
                metrics: metrics.clone(),
                policy: Default::default(),
            },
            engine_rx,
        )
        .await
        .expect("engine");
        tokio::spawn(task.run(tokio_util::sync::CancellationToken::new()));
        let state = AppState {
            store,
            api_token: TOKEN.into(),
            engine: engine_tx,
            live,
            broker,
            registry: Arc::new(metrics.registry()),
            clock: Arc::new(SystemClock),
            login: Default::default(),
        };
        // Something to act on: a patient, a device, a high alert (a fall,
        // alert 1) and a medium one (a dispenser fault, alert 2).
        for (method, path, body) in [
            ("POST", "/api/v1/patients", r#"{"id":"p1","name":"Fuzz Fuzzsson"}"#),
            ("POST", "/api/v1/devices", r#"{"id":"dev-1","kind":"dispenser"}"#),
        ] {
            call(&state, method, path, body.as_bytes().to_vec()).await;
        }
        let now = UnixMillis::now();
        let event = |kind| Ingested {
            patient_id: "p1".into(),
            device_id: "dev-1".into(),
            arrived: now,
            content: Content::Events(vec![Event {
                time: now,
                kind,
                text: None,
            }]),
        };
        state
            .engine
            .send(EngineMsg::Ingested(vec![
                event(EventKind::Fall),
                event(EventKind::DispenserFault),
            ]))
            .await
            .expect("engine running");
        (state, broker_tx)
    });
    Fuzz {
        rt,
        state,
        _broker: broker,
    }
}

async fn call(state: &AppState, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (status, bytes.to_vec())
}

static FUZZ: OnceLock<Fuzz> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let fuzz = FUZZ.get_or_init(setup);
    let alert = 1 + (selector >> 4) % 3; // 3 does not exist
    let (method, path) = match selector % 7 {
        0 => ("POST", "/api/v1/patients".to_owned()),
        1 => ("POST", "/api/v1/devices".to_owned()),
        2 => ("PUT", "/api/v1/devices/dev-1/binding".to_owned()),
        3 => ("PUT", "/api/v1/patients/p1/plan".to_owned()),
        4 => ("POST", format!("/api/v1/alerts/{alert}/acknowledge")),
        5 => ("POST", format!("/api/v1/alerts/{alert}/resolve")),
        _ => ("POST", format!("/api/v1/alerts/{alert}/snooze")),
    };
    let (status, response) = fuzz
        .rt
        .block_on(call(&fuzz.state, method, &path, body.to_vec()));
    assert!(
        status < 500,
        "{method} {path} answered {status}: {}",
        String::from_utf8_lossy(&response)
    );
    if status >= 400 {
        let v: serde_json::Value =
            serde_json::from_slice(&response).expect("an error body is JSON");
        assert!(v["error"].is_string() && v["detail"].is_string(), "{v}");
    }
});
