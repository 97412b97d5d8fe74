//! What websocket clients are told as it happens, and what each frame is
//! about, so the websocket can give every client only what it may see.
//!
//! Two channels: `changes` (alerts, CTG sessions) must reach every client
//! (one that falls behind gets a fresh snapshot); `readings` (new values,
//! the 4 Hz CTG trace) are a live view that may drop frames for a slow
//! client without harm, so a burst of readings never pushes an alert out.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast;
use vaka_gateway::model::{Content, Metric};

use crate::alerts::{Alert, rfc3339};
use crate::engine::ctg::CtgStatus;
use crate::engine::rules::RuleId;

/// A JSON text frame, with what it is about.
#[derive(Debug)]
pub struct Frame {
    /// `None`: an alarm from a device bound to nobody (administrators').
    pub patient_id: Option<String>,
    /// For alerts: whose responsibility it is depends on the rule.
    pub rule: Option<RuleId>,
    /// Only for clients that subscribed to this patient's live stream.
    pub waveform: bool,
    pub json: String,
}

#[derive(Debug, Clone)]
pub struct Live {
    pub changes: broadcast::Sender<Arc<Frame>>,
    pub readings: broadcast::Sender<Arc<Frame>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            changes: broadcast::channel(1024).0,
            readings: broadcast::channel(4096).0,
        }
    }
}

impl Frame {
    /// A frame about one patient, for every client that sees her.
    fn about(patient_id: &str, waveform: bool, json: serde_json::Value) -> Arc<Frame> {
        Arc::new(Frame {
            patient_id: Some(patient_id.to_owned()),
            rule: None,
            waveform,
            json: json.to_string(),
        })
    }
}

impl Live {
    pub fn alert(&self, alert: &Alert) {
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(Arc::new(Frame {
            patient_id: alert.patient_id.clone(),
            rule: Some(alert.rule),
            waveform: false,
            json: json!({"type": "alert", "alert": alert}).to_string(),
        }));
    }

    pub fn ctg_session(&self, patient_id: &str, device_id: &str, summary: &serde_json::Value) {
        let _ = self.changes.send(Frame::about(
            patient_id,
            false,
            json!({
                "type": "ctg_session",
                "patient_id": patient_id,
                "device_id": device_id,
                "summary": summary,
            }),
        ));
    }

    /// New readings of a patient (only the new ones of a message). Built
    /// only when someone listens.
    pub fn readings(&self, patient_id: &str, device_id: &str, content: &Content) {
        let Content::Observations(obs) = content else {
            return;
        };
        if obs.is_empty() || self.readings.receiver_count() == 0 {
            return;
        }
        let waveform = obs
            .iter()
            .any(|o| matches!(o.metric, Metric::Fhr | Metric::Toco));
        let records: Vec<_> = obs
            .iter()
            .map(|o| {
                json!({
                    "n": o.metric.as_str(),
                    "u": o.metric.unit(),
                    "v": o.value,
                    "t": rfc3339(o.time),
                })
            })
            .collect();
        let _ = self.readings.send(Frame::about(
            patient_id,
            waveform,
            json!({
                "type": "obs",
                "patient_id": patient_id,
                "device_id": device_id,
                "records": records,
            }),
        ));
    }

    /// The figures of a running CTG session (baseline, STV so far, …), for
    /// the clients watching that patient's trace. Built only when someone
    /// listens.
    pub fn ctg_status(&self, patient_id: &str, device_id: &str, status: &CtgStatus) {
        if self.readings.receiver_count() == 0 {
            return;
        }
        let _ = self.readings.send(Frame::about(
            patient_id,
            true,
            json!({
                "type": "ctg_status",
                "patient_id": patient_id,
                "device_id": device_id,
                "status": status,
            }),
        ));
    }
}
