//! The gateway's [`Sink`]: file each accepted message under the patient its
//! device is bound to (or in quarantine), commit the batch in one
//! transaction, and pass only the records that were new on to the engine.
//!
//! Passing only new records is what makes a redelivered message raise no
//! alert twice: the store's unique keys decide what is new. The gateway may
//! commit several batches at once; it hands each one's new records back to
//! [`Sink::deliver`] in arrival order, so the engine sees them in that order.
//!
//! The registry is read for every batch, so a device revoked with `vaka
//! device revoke` is refused (quarantined as `revoked_device`) from the
//! next batch on, whatever its broker connection still allows.
//!
//! A device's "last contact" (`devices.last_seen_at`) is written at most
//! once a minute per device, unless a status message changes what is shown
//! of the device (battery, connection): updating that row for every batch
//! would make batches that commit at once wait for each other's row locks.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc;
use tracing::error;
use vaka_gateway::model::{Content, EventKind};
use vaka_gateway::{
    Committed, Disposition, LimitReport, Message, RejectCode, Rejection, Sink, SinkError,
    TopicRoot, Turn, UnixMillis,
};

use crate::engine::task::{EngineMsg, Ingested};
use crate::store::{FiledMessage, IngestBatch, QuarantinedMessage, RegistryRow, Store};

/// How stale a device's stored "last contact" may get.
const LAST_SEEN_EVERY_MS: i64 = UnixMillis::MINUTE;

pub struct Ingest {
    store: Store,
    engine: mpsc::Sender<EngineMsg>,
    topic_root: TopicRoot,
    /// Per device, the newest "last contact" written.
    last_seen_written: Mutex<HashMap<String, UnixMillis>>,
}

impl Ingest {
    pub fn new(store: Store, engine: mpsc::Sender<EngineMsg>, topic_root: TopicRoot) -> Ingest {
        Ingest {
            store,
            engine,
            topic_root,
            last_seen_written: Mutex::default(),
        }
    }
}

/// What a committed batch has for the engine.
pub struct ForEngine {
    ingested: Vec<Ingested>,
    /// Falls and help calls from devices bound to nobody.
    alarms: Vec<EngineMsg>,
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
    type Receipt = ForEngine;

    async fn commit(
        &self,
        messages: &[Message],
        turn: &mut Turn,
    ) -> Result<Committed<ForEngine>, SinkError> {
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
        batch.seen_recently = self.seen_recently(&batch.filed);

        let outcome = self.store.ingest(&batch, turn).await?;
        self.note_seen(&batch);

        let mut dispositions = Vec::with_capacity(messages.len());
        let mut ingested = Vec::new();
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
                        ingested.push(Ingested {
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
        Ok(Committed {
            dispositions,
            receipt: ForEngine { ingested, alarms },
        })
    }

    async fn deliver(&self, receipt: ForEngine) {
        // Waiting here when the engine is busy is the back-pressure.
        if !receipt.ingested.is_empty()
            && self
                .engine
                .send(EngineMsg::Ingested(receipt.ingested))
                .await
                .is_err()
        {
            error!("the engine has stopped; committed readings are evaluated on the next start");
        }
        for alarm in receipt.alarms {
            if self.engine.send(alarm).await.is_err() {
                error!("the engine has stopped; an unbound-device alarm was not raised");
            }
        }
    }

    async fn report_limits(&self, reports: Vec<LimitReport>) {
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

impl Ingest {
    /// Devices of `filed` whose "last contact" was written less than
    /// [`LAST_SEEN_EVERY_MS`] before their newest message here.
    fn seen_recently<'m>(&self, filed: &[FiledMessage<'m>]) -> std::collections::HashSet<&'m str> {
        let written = self
            .last_seen_written
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        filed
            .iter()
            .filter(|f| {
                written
                    .get(f.message.device.as_str())
                    .is_some_and(|w| f.message.received_at.0 - w.0 < LAST_SEEN_EVERY_MS)
            })
            .map(|f| f.message.device.as_str())
            .collect()
    }

    /// Remembers the "last contact" a committed batch wrote.
    fn note_seen(&self, batch: &IngestBatch<'_>) {
        let mut written = self
            .last_seen_written
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for f in &batch.filed {
            let device = f.message.device.as_str();
            if batch.seen_recently.contains(device) {
                continue;
            }
            let at = f.message.received_at;
            match written.get_mut(device) {
                Some(w) => *w = (*w).max(at),
                None => {
                    written.insert(device.to_owned(), at);
                }
            }
        }
    }
}
