//! `/api/v1/ws`: a snapshot of the caller's open alerts, then every change
//! she may see as it happens, and live readings.
//!
//! The client is subscribed to the broadcast *before* the snapshot is read,
//! so no change can fall between the two; a change may then arrive twice
//! (in the snapshot and as a delta), which clients resolve by `version`. A
//! client too slow to keep up with the changes gets a fresh snapshot
//! instead of an ever-growing queue; one too slow for the readings misses
//! some (they are a live view; the API has them all).
//!
//! Every frame is checked against the caller's access: her units'
//! patients, and of those only the alerts her units are responsible for.
//! The client may send `{"type":"subscribe","patient_id":…}` for a
//! patient's live CTG trace, and `unsubscribe`. A client that wants only
//! the alerts (an integration, the load test) opens `?readings=false` and
//! is sent no `obs` frames.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::access::{PatientAccess, Role};
use crate::live::Frame;
use crate::store::AlertQuery;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/ws", get(upgrade))
}

/// Largest frame a client may send.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// Most patients one client follows live at once.
const MAX_SUBSCRIPTIONS: usize = 8;
/// A client that does not take a frame within this time is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a client's access is looked up again (enrolments change).
const ACCESS_REFRESH: Duration = Duration::from_secs(60);

/// What a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Subscribe { patient_id: String },
    Unsubscribe { patient_id: String },
    Ping,
}

/// Parses a client's text frame.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, String> {
    if text.len() > MAX_CLIENT_MESSAGE {
        return Err(format!(
            "a message may have at most {MAX_CLIENT_MESSAGE} bytes"
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("not a message this server understands: {e}"))
}

/// A browser's websocket carries the session cookie to any site that opens
/// it, so a cookie session must come from a page of this server: the
/// `Origin` must name the `Host` (cross-site websocket hijacking).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get("host").and_then(|h| h.to_str().ok());
    let origin = headers.get("origin").and_then(|h| h.to_str().ok());
    match (origin, host) {
        // Not a browser (no Origin): nothing to protect against.
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host),
        (Some(_), None) => false,
    }
}

/// What the client asks of the stream when it opens it.
#[derive(Debug, Deserialize)]
struct StreamOptions {
    /// Live readings (`obs` frames) as well as the alerts.
    #[serde(default = "yes")]
    readings: bool,
}

fn yes() -> bool {
    true
}

async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    options: Result<Query<StreamOptions>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // A plain GET (no upgrade) gets the API's JSON error, not plain text.
    let ws = ws.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Query(options) = options.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if caller.staff.is_some() && !same_origin(&headers) {
        let refusal =
            ApiError::Forbidden("the websocket must be opened from this server's own pages".into());
        return Err(state.refusal(&caller, refusal).await);
    }
    state.audit(&caller, "alerts.stream", None, None).await?;
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| Session::new(state, caller).run(socket, options.readings)))
}

/// The next live reading, or never for a client that asked for none.
async fn next_reading(
    readings: &mut Option<broadcast::Receiver<Arc<Frame>>>,
) -> Result<Arc<Frame>, RecvError> {
    match readings {
        Some(readings) => readings.recv().await,
        None => std::future::pending().await,
    }
}

/// One connected client.
struct Session {
    state: AppState,
    caller: Caller,
    /// `None`: sees every patient (the service token).
    access: Option<HashMap<String, PatientAccess>>,
    live: HashSet<String>,
}

impl Session {
    fn new(state: AppState, caller: Caller) -> Session {
        Session {
            state,
            caller,
            access: Some(HashMap::new()),
            live: HashSet::new(),
        }
    }

    async fn refresh_access(&mut self) -> Result<(), ApiError> {
        self.access = self.state.patient_accesses(&self.caller).await?;
        Ok(())
    }

    fn sees(&self, frame: &Frame) -> bool {
        let Some(patient) = frame.patient_id.as_deref() else {
            return self.caller.role() == Role::Admin;
        };
        if frame.waveform && !self.live.contains(patient) {
            return false;
        }
        let Some(access) = &self.access else {
            return true;
        };
        access.get(patient).is_some_and(|a| match frame.rule {
            Some(rule) => a.sees_rule(rule),
            None => a.sees_patient(),
        })
    }

    async fn snapshot(&mut self) -> Result<Message, ApiError> {
        self.refresh_access().await?;
        let mut alerts = self
            .state
            .store
            .alerts(&AlertQuery {
                active_only: true,
                patient_id: None,
                limit: 100_000,
            })
            .await?;
        alerts.retain(|a| {
            self.sees(&Frame {
                patient_id: a.patient_id.clone(),
                rule: Some(a.rule),
                waveform: false,
                json: String::new(),
            })
        });
        Ok(text(
            json!({"type": "snapshot", "alerts": alerts}).to_string(),
        ))
    }

    async fn run(mut self, mut socket: WebSocket, with_readings: bool) {
        let mut changes = self.state.live.changes.subscribe();
        // Not subscribed at all without readings: with no one listening,
        // the hub does not even build them.
        let mut readings = with_readings.then(|| self.state.live.readings.subscribe());
        let first = match self.snapshot().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "websocket snapshot failed");
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        };
        if !send(&mut socket, first).await {
            return;
        }
        let mut refresh = tokio::time::interval(ACCESS_REFRESH);
        refresh.tick().await;
        loop {
            let out = tokio::select! {
                change = changes.recv() => match change {
                    Ok(frame) if self.sees(&frame) => Some(text(frame.json.clone())),
                    Ok(_) => None,
                    Err(RecvError::Lagged(_)) => match self.snapshot().await {
                        Ok(m) => Some(m),
                        Err(_) => break,
                    },
                    Err(RecvError::Closed) => break,
                },
                reading = next_reading(&mut readings) => match reading {
                    Ok(frame) if self.sees(&frame) => Some(text(frame.json.clone())),
                    Ok(_) | Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => break,
                },
                _ = refresh.tick() => {
                    if self.refresh_access().await.is_err() {
                        break;
                    }
                    None
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(t))) => Some(self.answer(t.as_str()).await),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    // Pings are answered by the library; binary is ignored.
                    Some(Ok(_)) => None,
                },
            };
            if let Some(msg) = out
                && !send(&mut socket, msg).await
            {
                break;
            }
        }
    }

    /// Carries out a client message and says how it went.
    async fn answer(&mut self, text_frame: &str) -> Message {
        let reply = match parse_client_message(text_frame) {
            Err(detail) => json!({"type": "error", "detail": detail}),
            Ok(ClientMessage::Ping) => json!({"type": "pong"}),
            Ok(ClientMessage::Unsubscribe { patient_id }) => {
                self.live.remove(&patient_id);
                json!({"type": "unsubscribed", "patient_id": patient_id})
            }
            Ok(ClientMessage::Subscribe { patient_id }) => {
                match self.state.patient_access(&self.caller, &patient_id).await {
                    Err(_) => json!({"type": "error", "detail": "patient not found"}),
                    Ok(_)
                        if self.live.len() >= MAX_SUBSCRIPTIONS
                            && !self.live.contains(&patient_id) =>
                    {
                        json!({"type": "error", "detail": format!("at most {MAX_SUBSCRIPTIONS} live patients at once")})
                    }
                    Ok(_) => {
                        let _ = self
                            .state
                            .audit(&self.caller, "ctg.live", Some(&patient_id), None)
                            .await;
                        self.live.insert(patient_id.clone());
                        json!({"type": "subscribed", "patient_id": patient_id})
                    }
                }
            }
        };
        text(reply.to_string())
    }
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// Sends one frame; a client that does not take it in time is dropped
/// rather than let its queue grow.
async fn send(socket: &mut WebSocket, msg: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_or_say_why_not() {
        assert_eq!(
            parse_client_message(r#"{"type":"subscribe","patient_id":"p1"}"#),
            Ok(ClientMessage::Subscribe {
                patient_id: "p1".into()
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        for bad in [
            "",
            "{}",
            "null",
            r#"{"type":"subscribe"}"#,
            r#"{"type":"delete_everything"}"#,
            r#"{"type":"subscribe","patient_id":"p","extra":1}"#,
        ] {
            assert!(parse_client_message(bad).is_err(), "{bad}");
        }
        assert!(parse_client_message(&" ".repeat(MAX_CLIENT_MESSAGE + 1)).is_err());
    }

    #[test]
    fn a_cookie_websocket_must_come_from_this_server() {
        let mut h = HeaderMap::new();
        h.insert("host", "vaka.example:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "https://vaka.example:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
