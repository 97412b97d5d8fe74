//! `/api/v1/ws`: a snapshot of the open alerts, then every change as it
//! happens.
//!
//! The client is subscribed to the broadcast *before* the snapshot is read,
//! so no change can fall between the two; a change may then arrive twice
//! (in the snapshot and as a delta), which clients resolve by `version`. A
//! client too slow to keep up lags behind the broadcast buffer; it gets a
//! fresh snapshot instead of an ever-growing queue.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::store::AlertQuery;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/ws", get(upgrade))
}

/// Largest frame a client may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    state.audit(&caller, "alerts.stream", None, None).await?;
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| session(socket, state)))
}

async fn snapshot(state: &AppState) -> Option<Message> {
    let query = AlertQuery {
        active_only: true,
        patient_id: None,
        limit: 10_000,
    };
    match state.store.alerts(&query).await {
        Ok(alerts) => Some(Message::Text(Utf8Bytes::from(
            json!({"type": "snapshot", "alerts": alerts}).to_string(),
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "websocket snapshot failed");
            None
        }
    }
}

async fn session(mut socket: WebSocket, state: AppState) {
    let mut rx = state.broadcast.subscribe();
    let Some(first) = snapshot(&state).await else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    if socket.send(first).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            delta = rx.recv() => {
                let msg = match delta {
                    Ok(frame) => Message::Text(Utf8Bytes::from(frame.as_ref())),
                    Err(RecvError::Lagged(_)) => match snapshot(&state).await {
                        Some(m) => m,
                        None => break,
                    },
                    Err(RecvError::Closed) => break,
                };
                if socket.send(msg).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // Client messages (subscribe, actions) come with the dashboard.
                Some(Ok(_)) => {}
            },
        }
    }
}
