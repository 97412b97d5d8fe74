//! `vaka replay`: the rules over a patient's stored history, with the
//! current plan or a proposed one, so a physician can see what a new
//! threshold would have done over the last 90 days before applying it.
//!
//! The replay is the live engine run on a clock that follows the data: each
//! stored message "arrives" at its own time, deadlines fall due as that
//! clock passes them, and the run ends at `to`. The engine is deterministic,
//! so the same readings and plan give the same alerts as live (the property
//! tests in `engine::tests` check exactly that). Sixteen days before `from`
//! are replayed too, to fill the windows, but alerts are reported only from
//! `from` on. Nothing is written and no command is sent.

use std::sync::Arc;

use vaka_gateway::UnixMillis;

use crate::alerts::{Alert, AlertBook};
use crate::engine::Engine;
use crate::engine::rules::Decision;
use crate::engine::task::replay_messages;
use crate::plans::{Plan, PlanError};
use crate::store::{Store, StoreError};

/// Days replayed before `from` to fill the windows (the longest window).
const WARM_UP_MS: i64 = 16 * UnixMillis::DAY;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no patient {0:?}")]
    NoPatient(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct ReplayReport {
    pub plan: Plan,
    pub messages: usize,
    /// Every alert the rules would have raised from `from` on, as it stood
    /// at `to` (resolved ones too: withdrawn and cleared by the system).
    pub alerts: Vec<Alert>,
}

/// Replays `patient_id` over `[from, to)` under the current plan, with
/// `plan_patch` (a JSON merge patch, or a whole plan) applied when given.
pub async fn replay(
    store: &Store,
    patient_id: &str,
    from: UnixMillis,
    to: UnixMillis,
    plan_patch: Option<&serde_json::Value>,
) -> Result<ReplayReport, ReplayError> {
    let patient = store
        .patient(patient_id)
        .await?
        .ok_or_else(|| ReplayError::NoPatient(patient_id.to_owned()))?;
    let current = match store.current_plan(patient_id).await? {
        Some(p) => p,
        None => Plan::template(patient.program.as_deref()),
    };
    let plan = match plan_patch {
        Some(patch) => current.patched(patch)?,
        None => current,
    };
    let start = UnixMillis(from.0 - WARM_UP_MS);
    let (obs, events, status) = store.patient_history(patient_id, start, to).await?;
    let messages = replay_messages(obs, events, status);
    let tz = patient
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Europe::Stockholm);

    let mut engine = Engine::new();
    let mut book = AlertBook::default();
    let mut raised: Vec<Alert> = Vec::new();
    let mut next_id = 1;
    let mut run =
        |out: Vec<Decision>, now: UnixMillis, book: &mut AlertBook, raised: &mut Vec<Alert>| {
            for d in out {
                if let Some(change) = book.apply(&d, now) {
                    let mut alert = change.alert;
                    if alert.alert_id.is_none() {
                        book.set_id(&alert, next_id);
                        alert.alert_id = Some(next_id);
                        next_id += 1;
                    }
                    match raised.iter_mut().find(|a| a.alert_id == alert.alert_id) {
                        Some(slot) => *slot = alert,
                        None => raised.push(alert),
                    }
                }
            }
        };
    let mut out = Vec::new();
    engine.add_patient(
        patient_id,
        tz,
        Arc::new(plan.clone()),
        start,
        &book,
        &mut out,
    );
    run(std::mem::take(&mut out), start, &mut book, &mut raised);
    for m in &messages {
        engine.replay(
            patient_id,
            &m.device_id,
            &m.content,
            m.arrived,
            &book,
            &mut out,
        );
        run(std::mem::take(&mut out), m.arrived, &mut book, &mut raised);
    }
    engine.tick(to, &book, &mut out);
    run(out, to, &mut book, &mut raised);
    raised.retain(|a| a.first_reading_at >= from);
    Ok(ReplayReport {
        plan,
        messages: messages.len(),
        alerts: raised,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vaka_gateway::model::{Content, DeviceKind, Metric, Observation};
    use vaka_gateway::{Channel, DeviceId, Message};

    use super::*;
    use crate::engine::rules::RuleId;
    use crate::store::testing::TestStore;
    use crate::store::{FiledMessage, IngestBatch, NewPatient};

    const DAY: i64 = UnixMillis::DAY;

    async fn patient_with_weights(store: &Store, start: UnixMillis, kgs: &[f64]) {
        let p = NewPatient {
            patient_id: "p1".into(),
            display_name: "Testa Testsson".into(),
            timezone: "Europe/Stockholm".into(),
            program: Some("heart_failure".into()),
        };
        store.create_patient(&p, start).await.expect("patient");
        store
            .register_device("scale-1", DeviceKind::Scale, start)
            .await
            .expect("device");
        store
            .bind_device("scale-1", "p1", None, start)
            .await
            .expect("bind");
        let messages: Vec<Message> = kgs
            .iter()
            .enumerate()
            .map(|(i, kg)| {
                let time = UnixMillis(start.0 + i as i64 * DAY);
                Message {
                    device: DeviceId::parse("scale-1").expect("id"),
                    channel: Channel::Obs,
                    received_at: time,
                    reference: format!("{i}"),
                    content: Content::Observations(vec![Observation {
                        time,
                        metric: Metric::Weight,
                        value: *kg,
                    }]),
                    payload: Bytes::new(),
                }
            })
            .collect();
        let batch = IngestBatch {
            filed: messages
                .iter()
                .map(|m| FiledMessage {
                    message: m,
                    patient_id: "p1",
                })
                .collect(),
            quarantined: vec![],
            ..Default::default()
        };
        store
            .ingest(&batch, &mut vaka_gateway::Turn::alone())
            .await
            .expect("ingest");
    }

    #[tokio::test]
    async fn a_proposed_threshold_shows_what_it_would_have_done() {
        let t = TestStore::sqlite().await;
        // 07:00 Stockholm on 2026-11-01, then one weighing a day.
        let start = UnixMillis(1_793_512_800_000);
        patient_with_weights(&t.store, start, &[78.0, 78.4, 79.2, 80.3, 80.5, 80.6]).await;
        let to = UnixMillis(start.0 + 10 * DAY);

        let now = replay(&t.store, "p1", start, to, None)
            .await
            .expect("replay");
        assert_eq!(now.messages, 6);
        let rules: Vec<RuleId> = now.alerts.iter().map(|a| a.rule).collect();
        // The gain (78,0 → 80,3 on day 3, updated by 78,4 → 80,5 on day 4),
        // and, the weighings having stopped after day 5 (and the plan's
        // daily blood pressure never having come), missing data.
        assert_eq!(
            rules,
            [RuleId::WeightGain3d, RuleId::MissingMeasurement],
            "{:#?}",
            now.alerts
        );
        assert_eq!(
            now.alerts[0].explanation,
            "Vikt +2,1 kg på 3 dygn (78,4 → 80,5 kg). Gräns: +2,0 kg/3 dygn."
        );
        assert_eq!(now.alerts[0].count, 2);

        let patch = serde_json::json!({"thresholds": {"weight_gain_3d_kg": 2.5}});
        let proposed = replay(&t.store, "p1", start, to, Some(&patch))
            .await
            .expect("replay");
        let rules: Vec<RuleId> = proposed.alerts.iter().map(|a| a.rule).collect();
        assert_eq!(
            rules,
            [RuleId::MissingMeasurement],
            "{:#?}",
            proposed.alerts
        );

        // Deterministic: the same data and plan, the same alerts.
        let again = replay(&t.store, "p1", start, to, None)
            .await
            .expect("replay");
        assert_eq!(again.alerts, now.alerts);
        // Nothing was written.
        assert!(t.store.latest_alerts().await.expect("alerts").is_empty());
        assert!(matches!(
            replay(&t.store, "nobody", start, to, None).await,
            Err(ReplayError::NoPatient(_))
        ));
    }
}
