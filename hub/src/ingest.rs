//! The gateway's [`Sink`]: file each accepted message under the patient its
//! device is bound to (or in quarantine), commit the batch in one
//! transaction, and pass only the records that were new on to the engine.
//!
//! Passing only new records is what makes a redelivered message raise no
//! alert twice: the store's unique keys decide what is new.
//!
//! The registry is read for every batch, so a device revoked with `vaka
//! device revoke` is refused (quarantined as `revoked_device`) from the
//! next batch on, whatever its broker connection still allows.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tracing::error;
use vaka_gateway::model::{Content, EventKind};
use vaka_gateway::{
    Disposition, LimitReport, Message, RejectCode, Rejection, Sink, SinkError, TopicRoot,
    UnixMillis,
};

use crate::engine::task::{EngineMsg, Ingested};
use crate::store::{FiledMessage, IngestBatch, QuarantinedMessage, RegistryRow, Store};

pub struct Ingest {
    pub store: Store,
    pub engine: mpsc::Sender<EngineMsg>,
    pub topic_root: TopicRoot,
}

/// Where one message goes.
enum Filing<'r> {
    Patient(&'r str),
    Quarantine(RejectCode),
}

/// The patient a device was bound to at `t`, or why there is none.
fn file<'r>(
    registry: &'r HashMap<&str, Vec<&RegistryRow>>,
    device: &str,
    t: UnixMillis,
) -> Filing<'r> {
    let Some(rows) = registry.get(device) else {
        return Filing::Quarantine(RejectCode::UnknownDevice);
    };
    if rows.iter().any(|r| r.revoked) {
        return Filing::Quarantine(RejectCode::RevokedDevice);
    }
    rows.iter()
        .find_map(|r| {
            let from = r.valid_from?.0;
            let open_at_t = r.valid_to.is_none_or(|to| t < to.0);
            (from <= t && open_at_t)
                .then_some(r.patient_id.as_deref())
                .flatten()
        })
        .map_or(
            Filing::Quarantine(RejectCode::UnboundDevice),
            Filing::Patient,
        )
}

fn quarantine_detail(code: RejectCode, device: &str) -> String {
    match code {
        RejectCode::UnknownDevice => format!(
            "device {device} is not registered; the message is kept in quarantine for an administrator"
        ),
        RejectCode::RevokedDevice => format!(
            "the credentials of device {device} were revoked; the message is kept in quarantine for an administrator"
        ),
        _ => format!(
            "device {device} is not bound to a patient at the time of the readings; \
             the message is kept in quarantine for an administrator"
        ),
    }
}

/// Only the records of a message that the store newly took.
fn only_new(content: &Content, new: &[bool]) -> Content {
    fn keep<T: Clone>(v: &[T], new: &[bool]) -> Vec<T> {
        v.iter()
            .zip(new)
            .filter(|(_, n)| **n)
            .map(|(x, _)| x.clone())
            .collect()
    }
    match content {
        Content::Observations(v) => Content::Observations(keep(v, new)),
        Content::Events(v) => Content::Events(keep(v, new)),
        Content::Status(v) => Content::Status(keep(v, new)),
    }
}

impl Sink for Ingest {
    async fn commit(&mut self, messages: &[Message]) -> Result<Vec<Disposition>, SinkError> {
        let mut devices: Vec<&str> = messages.iter().map(|m| m.device.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        let rows = self.store.registry(&devices).await?;
        let mut registry: HashMap<&str, Vec<&RegistryRow>> = HashMap::new();
        for r in &rows {
            registry.entry(r.device_id.as_str()).or_default().push(r);
        }

        let mut batch = IngestBatch::default();
        // Per message: Ok(index into batch.filed) or Err(quarantine code).
        let mut filing = Vec::with_capacity(messages.len());
        for m in messages {
            let t = m.content.first_time().unwrap_or(m.received_at);
            match file(&registry, m.device.as_str(), t) {
                Filing::Patient(patient_id) => {
                    filing.push(Ok(batch.filed.len()));
                    batch.filed.push(FiledMessage {
                        message: m,
                        patient_id,
                    });
                }
                Filing::Quarantine(code) => {
                    filing.push(Err(code));
                    batch.quarantined.push(QuarantinedMessage {
                        message: m,
                        topic: self.topic_root.topic(&m.device, m.channel),
                        reason: code,
                    });
                }
            }
        }

        let outcome = self.store.ingest(&batch).await?;

        let mut dispositions = Vec::with_capacity(messages.len());
        let mut to_engine = Vec::new();
        let mut alarms = Vec::new();
        for (m, f) in messages.iter().zip(&filing) {
            match f {
                Ok(i) => {
                    let new = &outcome.new[*i];
                    let fresh = new.iter().filter(|n| **n).count();
                    dispositions.push(Disposition::Stored {
                        new: fresh,
                        duplicates: new.len() - fresh,
                    });
                    if fresh > 0 {
                        to_engine.push(Ingested {
                            patient_id: batch.filed[*i].patient_id.to_owned(),
                            device_id: m.device.as_str().to_owned(),
                            arrived: m.received_at,
                            content: only_new(&m.content, new),
                        });
                    }
                }
                Err(code) => {
                    dispositions.push(Disposition::Quarantined(Rejection::new(
                        *code,
                        quarantine_detail(*code, m.device.as_str()),
                    )));
                    if let Content::Events(events) = &m.content
                        && events.iter().any(|e| e.kind.is_alarm())
                    {
                        alarms.push(EngineMsg::UnboundAlarm {
                            device_id: m.device.as_str().to_owned(),
                            events: events
                                .iter()
                                .filter(|e| {
                                    matches!(e.kind, EventKind::Fall | EventKind::HelpButton)
                                })
                                .cloned()
                                .collect(),
                        });
                    }
                }
            }
        }
        // Waiting here when the engine is busy is the back-pressure.
        if !to_engine.is_empty()
            && self
                .engine
                .send(EngineMsg::Ingested(to_engine))
                .await
                .is_err()
        {
            error!("the engine has stopped; committed readings are evaluated on the next start");
        }
        for alarm in alarms {
            if self.engine.send(alarm).await.is_err() {
                error!("the engine has stopped; an unbound-device alarm was not raised");
            }
        }
        Ok(dispositions)
    }

    async fn report_limits(&mut self, reports: Vec<LimitReport>) {
        if self
            .engine
            .send(EngineMsg::DeviceLimits(reports))
            .await
            .is_err()
        {
            error!("the engine has stopped; a device over its limits was not reported");
        }
    }
}
