//! Every store query, on both backends.

use bytes::Bytes;
use vaka_gateway::model::{
    Content, DeviceKind, Event, EventKind, Metric, Observation, StatusField, StatusReport,
    StatusValue,
};
use vaka_gateway::{Channel, DeviceId, Message, RejectCode, UnixMillis};

use super::testing::TestStore;
use super::*;
use crate::alerts::{AlertBook, AlertState};
use crate::engine::rules::{Decision, Finding, RuleId};

const T0: UnixMillis = UnixMillis(1_796_000_000_000);

fn message(device: &str, content: Content) -> Message {
    Message {
        device: DeviceId::parse(device).expect("id"),
        channel: match content {
            Content::Observations(_) => Channel::Obs,
            Content::Events(_) => Channel::Evt,
            Content::Status(_) => Channel::Status,
        },
        received_at: T0,
        reference: format!("{}:{}", T0.0, device),
        content,
        payload: Bytes::from_static(b"[]"),
    }
}

fn weight(t: i64, kg: f64) -> Observation {
    Observation {
        time: UnixMillis(T0.0 + t),
        metric: Metric::Weight,
        value: kg,
    }
}

async fn enrolled(store: &Store) {
    let p = NewPatient {
        patient_id: "p1".into(),
        display_name: "Testa Testsson".into(),
        timezone: "Europe/Stockholm".into(),
        program: Some("heart_failure".into()),
    };
    store.create_patient(&p, T0).await.expect("patient");
    store
        .register_device("scale-1", DeviceKind::Scale, T0)
        .await
        .expect("device");
    store
        .bind_device("scale-1", "p1", None, T0)
        .await
        .expect("bind");
}

#[tokio::test]
async fn migrations_are_idempotent_and_pick_the_right_layout() {
    for t in TestStore::both().await {
        t.store
            .migrate()
            .await
            .expect("a second migrate is a no-op");
        let layout = t.store.observations_layout().await.expect("layout");
        let failed_jobs = t.store.failed_timescale_jobs().await.expect("job stats");
        assert_eq!(failed_jobs.is_some(), layout == "hypertable");
        match &t.store {
            Store::Sqlite(_) => assert_eq!(layout, "table"),
            Store::Postgres(pool) => {
                // The Timescale path runs wherever the extension can be used.
                let (timescale,): (bool,) = sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
                        AND current_setting('shared_preload_libraries', true) LIKE '%timescaledb%'",
                )
                .fetch_one(pool)
                .await
                .expect("query");
                if timescale {
                    assert_eq!(layout, "hypertable");
                    let (jobs,): (i64,) = sqlx::query_as(
                        "SELECT count(*) FROM timescaledb_information.jobs
                         WHERE hypertable_name IN ('observations', 'observations_daily')",
                    )
                    .fetch_one(pool)
                    .await
                    .expect("jobs");
                    assert!(jobs >= 3, "compression, retention and aggregate policies");
                } else {
                    assert_eq!(layout, "partitioned");
                    let (brin,): (i64,) = sqlx::query_as(
                        "SELECT count(*) FROM pg_indexes WHERE tablename = 'observations' AND indexdef LIKE '%USING brin%'",
                    )
                    .fetch_one(pool)
                    .await
                    .expect("indexes");
                    assert_eq!(brin, 1);
                    let (parts,): (i64,) = sqlx::query_as(
                        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent
                         WHERE c.relname = 'observations'",
                    )
                    .fetch_one(pool)
                    .await
                    .expect("partitions");
                    assert!(
                        parts >= 17,
                        "13 months back, 3 ahead and a default: {parts}"
                    );
                }
            }
        }
    }
}

/// A batch of new records takes the fast path (a plain `INSERT` of arrays
/// on PostgreSQL, multi-row inserts on SQLite): every value and time comes
/// back exactly.
#[tokio::test]
async fn new_records_come_back_exactly() {
    for t in TestStore::both().await {
        let s = &t.store;
        enrolled(s).await;
        let values = [80.123456789, 0.1 + 0.2, 1e-7, 349.99999999999994];
        let m = message(
            "scale-1",
            Content::Observations(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| weight(i as i64 * 1001 + 7, *v))
                    .collect(),
            ),
        );
        let batch = IngestBatch {
            filed: vec![FiledMessage {
                message: &m,
                patient_id: "p1",
            }],
            ..Default::default()
        };
        let out = s
            .ingest(&batch, &mut vaka_gateway::Turn::alone())
            .await
            .expect("ingest");
        assert_eq!(out.new, vec![vec![true; 4]], "{}", s.backend());
        let mut rows = s
            .observations(&ObservationQuery {
                patient_id: "p1",
                metric: Some(Metric::Weight),
                from: None,
                to: None,
                limit: 10,
            })
            .await
            .expect("query");
        rows.reverse();
        let back: Vec<(i64, f64)> = rows.iter().map(|r| (r.time.millis(), r.value)).collect();
        let sent: Vec<(i64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (T0.0 + i as i64 * 1001 + 7, *v))
            .collect();
        assert_eq!(back, sent, "{}", s.backend());
    }
}

#[tokio::test]
async fn ingest_stores_each_record_once_and_says_which_were_new() {
    for t in TestStore::both().await {
        let s = &t.store;
        enrolled(s).await;
        let a = message(
            "scale-1",
            Content::Observations(vec![weight(0, 80.0), weight(1000, 80.1)]),
        );
        let dup = message(
            "scale-1",
            Content::Observations(vec![weight(1000, 80.1), weight(2000, 80.2)]),
        );
        let batch = IngestBatch {
            filed: vec![
                FiledMessage {
                    message: &a,
                    patient_id: "p1",
                },
                FiledMessage {
                    message: &dup,
                    patient_id: "p1",
                },
            ],
            quarantined: vec![],
            ..Default::default()
        };
        let out = s
            .ingest(&batch, &mut vaka_gateway::Turn::alone())
            .await
            .expect("ingest");
        // The second message's first record repeats the first message's second.
        assert_eq!(
            out.new,
            vec![vec![true, true], vec![false, true]],
            "{}",
            s.backend()
        );
        // A redelivery of the whole batch stores nothing.
        let again = s
            .ingest(&batch, &mut vaka_gateway::Turn::alone())
            .await
            .expect("ingest");
        assert_eq!(again.new, vec![vec![false, false], vec![false, false]]);
        assert_eq!(s.count_observations("p1").await.expect("count"), 3);

        let rows = s
            .observations(&ObservationQuery {
                patient_id: "p1",
                metric: Some(Metric::Weight),
                from: Some(UnixMillis(T0.0 + 500)),
                to: None,
                limit: 10,
            })
            .await
            .expect("query");
        let values: Vec<f64> = rows.iter().map(|r| r.value).collect();
        assert_eq!(values, vec![80.2, 80.1], "newest first, from is inclusive");
        assert_eq!(rows[0].unit, "kg");
    }
}

#[tokio::test]
async fn events_status_and_quarantine() {
    for t in TestStore::both().await {
        let s = &t.store;
        enrolled(s).await;
        let ev = message(
            "scale-1",
            Content::Events(vec![
                Event {
                    time: T0,
                    kind: EventKind::DoseTaken,
                    text: Some("morning".into()),
                },
                Event {
                    time: T0,
                    kind: EventKind::DoseTaken,
                    text: Some("evening".into()),
                },
            ]),
        );
        let st = message(
            "scale-1",
            Content::Status(vec![
                StatusReport {
                    time: T0,
                    field: StatusField::Batt,
                    value: StatusValue::Number(55.0),
                },
                StatusReport {
                    time: T0,
                    field: StatusField::Conn,
                    value: StatusValue::Text("online".into()),
                },
            ]),
        );
        let ghost = message("ghost-1", Content::Observations(vec![weight(0, 70.0)]));
        let batch = IngestBatch {
            filed: vec![
                FiledMessage {
                    message: &ev,
                    patient_id: "p1",
                },
                FiledMessage {
                    message: &st,
                    patient_id: "p1",
                },
            ],
            quarantined: vec![QuarantinedMessage {
                message: &ghost,
                topic: "vaka/v1/d/ghost-1/obs".into(),
                reason: RejectCode::UnknownDevice,
            }],
            ..Default::default()
        };
        let out = s
            .ingest(&batch, &mut vaka_gateway::Turn::alone())
            .await
            .expect("ingest");
        // Same time, different dose ids: two events.
        assert_eq!(out.new, vec![vec![true, true], vec![true, true]]);
        s.ingest(&batch, &mut vaka_gateway::Turn::alone())
            .await
            .expect("a redelivery");
        let events = s
            .events_between(UnixMillis(0), UnixMillis(i64::from(i32::MAX) * 1000))
            .await
            .expect("events");
        assert_eq!(events.len(), 2);
        let q = s.quarantine(10).await.expect("quarantine");
        assert_eq!(q.len(), 1, "quarantined once");
        assert_eq!(
            (q[0].reason.as_str(), q[0].device_id.as_str()),
            ("unknown_device", "ghost-1")
        );
        let d = s.device("scale-1").await.expect("device").expect("exists");
        assert_eq!(d.battery_pct, Some(55.0));
        assert_eq!(d.connection.as_deref(), Some("online"));
        assert_eq!(d.last_seen_at, Some(DbTime(T0)));
        assert_eq!(d.patient_id.as_deref(), Some("p1"));
    }
}

#[tokio::test]
async fn bindings_cover_time_ranges() {
    for t in TestStore::both().await {
        let s = &t.store;
        enrolled(s).await;
        let p2 = NewPatient {
            patient_id: "p2".into(),
            display_name: "Andra Andersson".into(),
            timezone: "Europe/Stockholm".into(),
            program: None,
        };
        s.create_patient(&p2, T0).await.expect("p2");
        assert!(matches!(
            s.create_patient(&p2, T0).await,
            Err(StoreError::Conflict(_))
        ));
        // The first binding covers the device's past; a rebinding starts now.
        let later = UnixMillis(T0.0 + 1000);
        let b = s
            .bind_device("scale-1", "p2", None, later)
            .await
            .expect("rebind");
        assert_eq!(b.valid_from, DbTime(later));
        let rows = s.registry(&["scale-1", "nobody"]).await.expect("registry");
        let mut ranges: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.patient_id.clone().unwrap_or_default(),
                    r.valid_from.map(|t| t.millis()),
                    r.valid_to.map(|t| t.millis()),
                )
            })
            .collect();
        ranges.sort();
        assert_eq!(
            ranges,
            vec![
                ("p1".into(), Some(0), Some(later.0)),
                ("p2".into(), Some(later.0), None)
            ]
        );
        assert!(matches!(
            s.bind_device("nope", "p1", None, T0).await,
            Err(StoreError::NotFound("device"))
        ));
        assert!(matches!(
            s.bind_device("scale-1", "nope", None, T0).await,
            Err(StoreError::NotFound("patient"))
        ));
        assert!(
            s.unbind_device("scale-1", UnixMillis(T0.0 + 2000))
                .await
                .expect("unbind")
        );
        assert!(
            !s.unbind_device("scale-1", UnixMillis(T0.0 + 3000))
                .await
                .expect("unbind")
        );
    }
}

fn fall_at(t: i64) -> Decision {
    Decision::Raise(Finding {
        rule: RuleId::Fall,
        patient_id: Some("p1".into()),
        device_id: None,
        measurement: None,
        confirmed: None,
        plan_version: 0,
        explanation: "Fall".into(),
        threshold: "fall".into(),
        evidence: vec![],
        first_reading_at: UnixMillis(t),
        last_reading_at: UnixMillis(t),
    })
}

#[tokio::test]
async fn alert_changes_round_trip_and_the_latest_is_found() {
    for t in TestStore::both().await {
        let s = &t.store;
        enrolled(s).await;
        let mut book = AlertBook::default();
        let opened = book.apply(&fall_at(100), T0).expect("opened");
        let id = s.save_alert_change(&opened).await.expect("insert");
        book.set_id(&opened.alert, id);
        let updated = book.apply(&fall_at(200), T0).expect("updated");
        assert_eq!(s.save_alert_change(&updated).await.expect("update"), id);
        let resolved = book
            .resolve(id, "nurse", "called_patient", Some("ok"), T0)
            .expect("resolve");
        s.save_alert_change(&resolved).await.expect("update");
        let next = book.apply(&fall_at(300), T0).expect("a new alert");
        let id2 = s.save_alert_change(&next).await.expect("insert");
        assert_ne!(id, id2);

        let stored = s.alert(id).await.expect("read").expect("exists");
        assert_eq!(stored, resolved.alert, "{}", s.backend());
        let latest = s.latest_alerts().await.expect("latest");
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].alert_id, Some(id2));
        let history = s.alert_history(id).await.expect("history");
        let actions: Vec<_> = history.iter().map(|h| h.action.as_str()).collect();
        assert_eq!(actions, ["opened", "updated", "resolved"]);
        let active = s
            .alerts(&AlertQuery {
                active_only: true,
                patient_id: Some("p1"),
                limit: 10,
            })
            .await
            .expect("alerts");
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].state, AlertState::Open);

        // The store itself refuses a second active alert of the same key.
        let mut twin = next.clone();
        twin.alert.alert_id = None;
        assert!(matches!(
            s.save_alert_change(&twin).await,
            Err(StoreError::Conflict(_))
        ));
    }
}

/// The engine stores what one batch of readings changed in one
/// transaction: an alert opened and then updated (before it had an id), a
/// second alert of the same patient and rule after the first was resolved.
#[tokio::test]
async fn a_batch_of_alert_changes_is_stored_in_order() {
    for t in TestStore::both().await {
        let s = &t.store;
        enrolled(s).await;
        let mut book = AlertBook::default();
        let opened = book.apply(&fall_at(100), T0).expect("opened");
        let updated = book.apply(&fall_at(200), T0).expect("updated");
        assert_eq!(updated.alert.alert_id, None, "not stored yet");
        let ids = s
            .save_alert_changes(&[opened.clone(), updated.clone()])
            .await
            .expect("stored");
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1], "the update is of the alert just opened");
        book.set_id(&updated.alert, ids[0]);
        let stored = s.alert(ids[0]).await.expect("read").expect("exists");
        assert_eq!(stored.count, 2, "{}", s.backend());
        let history = s.alert_history(ids[0]).await.expect("history");
        let actions: Vec<_> = history.iter().map(|h| h.action.as_str()).collect();
        assert_eq!(actions, ["opened", "updated"]);

        // Resolved, and a new fall opens a new alert, in one batch.
        let resolved = book
            .resolve(ids[0], "nurse", "called_patient", None, T0)
            .expect("resolve");
        let next = book.apply(&fall_at(300), T0).expect("a new alert");
        let again = book.apply(&fall_at(400), T0).expect("updated");
        let ids2 = s
            .save_alert_changes(&[resolved, next, again])
            .await
            .expect("stored");
        assert_eq!(ids2[0], ids[0]);
        assert_ne!(ids2[1], ids[0]);
        assert_eq!(ids2[2], ids2[1]);
        let first = s.alert(ids[0]).await.expect("read").expect("exists");
        assert_eq!(first.state, AlertState::Resolved);
        assert_eq!(first.count, 2);
        let second = s.alert(ids2[1]).await.expect("read").expect("exists");
        assert_eq!((second.state, second.count), (AlertState::Open, 2));
    }
}

#[tokio::test]
async fn audit_entries_are_kept() {
    for t in TestStore::both().await {
        let s = &t.store;
        let e = AuditEntry {
            at: DbTime(T0),
            actor: "api-token".into(),
            action: "patient.view".into(),
            patient_id: Some("p1".into()),
            detail: None,
            source: Some("127.0.0.1".into()),
        };
        s.audit(&e).await.expect("audit");
        let log = s.audit_log(Some("p1"), 10).await.expect("log");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].action, "patient.view");
        assert!(s.audit_log(Some("p2"), 10).await.expect("log").is_empty());
    }
}

#[tokio::test]
async fn staff_units_sessions_and_scoping() {
    use crate::access::{CareUnit, Role, UnitKind};
    for t in TestStore::both().await {
        let store = &t.store;
        enrolled(store).await;
        for (id, kind) in [
            ("vc", "region"),
            ("hem", "municipality"),
            ("other", "region"),
        ] {
            let unit = CareUnit {
                unit_id: id.into(),
                name: id.into(),
                kind: kind.into(),
            };
            store.create_care_unit(&unit, T0).await.expect("unit");
        }
        let units = ["vc".to_owned()];
        let new = NewStaff {
            staff_id: "s1",
            username: "Anna",
            display_name: "Anna A",
            role: Role::Nurse,
            password_hash: Some("hash".into()),
            units: &units,
        };
        let anna = store.create_staff(&new, T0).await.expect("staff");
        assert_eq!(anna.username, "anna", "user names are lower case");
        assert_eq!(anna.units.len(), 1);
        assert!(matches!(
            store.create_staff(&new, T0).await,
            Err(StoreError::Conflict(_))
        ));
        let bad_unit = ["nowhere".to_owned()];
        assert!(matches!(
            store
                .create_staff(
                    &NewStaff {
                        staff_id: "s2",
                        username: "b",
                        units: &bad_unit,
                        ..new
                    },
                    T0
                )
                .await,
            Err(StoreError::NotFound(_))
        ));

        // Not enrolled anywhere yet: invisible.
        assert!(
            store
                .patient_accesses("s1", None)
                .await
                .expect("access")
                .is_empty()
        );
        store.enrol("p1", "vc", T0).await.expect("enrol");
        store.enrol("p1", "hem", T0).await.expect("enrol");
        store
            .enrol("p1", "vc", T0)
            .await
            .expect("enrolling twice is fine");
        let access = store
            .patient_accesses("s1", Some("p1"))
            .await
            .expect("access");
        let mut through = access["p1"].through.clone();
        let mut enrolled_in = access["p1"].enrolled.clone();
        through.sort();
        enrolled_in.sort();
        assert_eq!(through, [UnitKind::Region]);
        assert_eq!(enrolled_in, [UnitKind::Region, UnitKind::Municipality]);
        assert!(store.unenrol("p1", "vc").await.expect("unenrol"));
        assert!(
            store
                .patient_accesses("s1", None)
                .await
                .expect("access")
                .is_empty()
        );

        // Lockout counting and sessions.
        assert_eq!(store.login_failed("s1", 3, T0).await.expect("count"), 1);
        assert_eq!(store.login_failed("s1", 3, T0).await.expect("count"), 2);
        let c = store.credentials("ANNA").await.expect("q").expect("found");
        assert_eq!((c.failed_logins, c.locked_until), (2, None));
        store
            .login_failed("s1", 3, UnixMillis(T0.0 + 60_000))
            .await
            .expect("count");
        let c = store.credentials("anna").await.expect("q").expect("found");
        assert_eq!(c.locked_until, Some(DbTime(UnixMillis(T0.0 + 60_000))));
        store
            .start_session("s1", "digest", "csrf", T0, UnixMillis(T0.0 + 1000), None)
            .await
            .expect("session");
        let c = store.credentials("anna").await.expect("q").expect("found");
        assert_eq!(
            (c.failed_logins, c.locked_until),
            (0, None),
            "a login forgets"
        );
        assert!(store.session("digest", T0).await.expect("q").is_some());
        assert!(
            store
                .session("digest", UnixMillis(T0.0 + 1000))
                .await
                .expect("q")
                .is_none()
        );
        // Closing the account ends its sessions.
        store
            .update_staff(
                "s1",
                &StaffChange {
                    active: Some(false),
                    ..Default::default()
                },
            )
            .await
            .expect("close");
        assert!(store.session("digest", T0).await.expect("q").is_none());

        // Assignments, calls and the audit search.
        store.assign("s1", "p1", T0).await.expect("assign");
        assert_eq!(store.assignments("s1").await.expect("list"), ["p1"]);
        let call = store
            .add_call(&NewCall {
                patient_id: "p1",
                alert_id: None,
                staff_id: "s1",
                at: T0,
                outcome: "reached",
                note: "mår bra",
            })
            .await
            .expect("call");
        assert_eq!(
            store.calls("p1", Some(T0), 10).await.expect("calls")[0].call_id,
            call.call_id
        );
        for action in ["patient.view", "patient.list", "auth.login_failed"] {
            store
                .audit(&AuditEntry {
                    at: DbTime(T0),
                    actor: "staff:s1".into(),
                    action: action.into(),
                    patient_id: Some("p1".into()),
                    detail: None,
                    source: None,
                })
                .await
                .expect("audit");
        }
        let found = |action: &'static str| {
            let filter = AuditFilter {
                actor: Some("staff:s1"),
                action: Some(action),
                limit: 10,
                ..Default::default()
            };
            async move { store.search_audit(&filter).await.expect("search").len() }
        };
        assert_eq!(found("patient.").await, 2);
        assert_eq!(found("patient.view").await, 1);
        assert_eq!(found("auth.login_failed").await, 1);
        assert_eq!(found("patient").await, 0, "without a dot: one action");
    }
}

/// Many devices bound at once (as `vaka-sim load` registers them): every
/// binding is made, none fails. SQLite used to refuse the overlapping ones
/// with "database is locked": a deferred transaction that had read could
/// not take the write lock after another writer committed.
#[tokio::test]
async fn concurrent_bindings_all_succeed() {
    for t in TestStore::both().await {
        let store = &t.store;
        let n = 24;
        for i in 0..n {
            let p = NewPatient {
                patient_id: format!("p{i}"),
                display_name: format!("Testa Samtidig {i}"),
                timezone: "Europe/Stockholm".into(),
                program: None,
            };
            store.create_patient(&p, T0).await.expect("patient");
            store
                .register_device(&format!("ox-{i}"), DeviceKind::PulseOximeter, T0)
                .await
                .expect("device");
        }
        let binds = (0..n).map(|i| async move {
            store
                .bind_device(&format!("ox-{i}"), &format!("p{i}"), None, T0)
                .await
        });
        let results = futures::future::join_all(binds).await;
        for (i, r) in results.iter().enumerate() {
            assert!(r.is_ok(), "{}: binding {i}: {r:?}", store.backend());
        }
        for i in 0..n {
            let rows = store
                .registry(&[&format!("ox-{i}")])
                .await
                .expect("registry");
            assert_eq!(
                rows.iter()
                    .filter_map(|r| r.patient_id.as_deref())
                    .collect::<Vec<_>>(),
                vec![format!("p{i}").as_str()],
                "{}",
                store.backend()
            );
        }
    }
}

#[tokio::test]
async fn the_consistency_check_finds_alerts_the_data_contradicts() {
    use crate::engine::rules::Evidence;
    let day = UnixMillis::DAY;
    for t in TestStore::both().await {
        let s = &t.store;
        enrolled(s).await;
        let ingest = |obs: Vec<Observation>| {
            let m = message("scale-1", Content::Observations(obs));
            async move {
                let batch = IngestBatch {
                    filed: vec![FiledMessage {
                        message: &m,
                        patient_id: "p1",
                    }],
                    quarantined: vec![],
                    ..Default::default()
                };
                s.ingest(&batch, &mut vaka_gateway::Turn::alone())
                    .await
                    .expect("ingest");
            }
        };
        ingest(vec![weight(0, 80.0), weight(3_600_000, 80.2)]).await;
        // "No weight since T0": the same day's later weight does not
        // contradict it (it moves no deadline).
        let mut book = AlertBook::default();
        let missing = Finding {
            rule: RuleId::MissingMeasurement,
            patient_id: Some("p1".into()),
            device_id: None,
            measurement: Some("weight".into()),
            confirmed: None,
            plan_version: 1,
            explanation: "Ingen vikt".into(),
            threshold: "vikt dagligen".into(),
            evidence: vec![Evidence {
                time: T0,
                device_id: "scale-1".into(),
                name: "weight".into(),
                value: None,
                unit: None,
            }],
            first_reading_at: T0,
            last_reading_at: T0,
        };
        let c = book.apply(&Decision::Raise(missing), T0).expect("opened");
        s.save_alert_change(&c).await.expect("saved");
        assert_eq!(crate::consistency::check(s).await.expect("check"), vec![]);

        // A fall alert naming an event that is not stored.
        let Decision::Raise(mut fall) = fall_at(100) else {
            unreachable!()
        };
        fall.evidence = vec![Evidence {
            time: UnixMillis(100),
            device_id: "scale-1".into(),
            name: "fall".into(),
            value: None,
            unit: None,
        }];
        let c = book.apply(&Decision::Raise(fall), T0).expect("opened");
        s.save_alert_change(&c).await.expect("saved");
        let v = crate::consistency::check(s).await.expect("check");
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, RuleId::Fall);

        // A weight two days later contradicts the missing-measurement alert.
        ingest(vec![weight(2 * day, 80.4)]).await;
        let mut rules: Vec<RuleId> = crate::consistency::check(s)
            .await
            .expect("check")
            .into_iter()
            .map(|v| v.rule)
            .collect();
        rules.sort();
        assert_eq!(
            rules,
            [RuleId::Fall, RuleId::MissingMeasurement],
            "{}",
            s.backend()
        );
    }
}

#[tokio::test]
async fn a_reopened_ctg_session_replaces_its_summary() {
    for t in TestStore::both().await {
        let s = &t.store;
        let start = T0;
        let json = |minutes: i64| serde_json::json!({ "duration_ms": minutes * 60_000 });
        let end = |minutes: i64| UnixMillis(start.0 + minutes * UnixMillis::MINUTE);
        // Closed by the idle timeout after 20 min, then reopened by late
        // data and ended again after 45: one session, the later summary.
        s.save_ctg_session("p1", "ctg-1", start, end(20), &json(20))
            .await
            .expect("save");
        s.save_ctg_session("p1", "ctg-1", start, end(45), &json(45))
            .await
            .expect("save again");
        // A redelivery of the first summary changes nothing.
        s.save_ctg_session("p1", "ctg-1", start, end(20), &json(20))
            .await
            .expect("save old");
        // Another session of the same device is another row.
        s.save_ctg_session("p1", "ctg-1", end(60), end(90), &json(30))
            .await
            .expect("save next");
        let rows = s.ctg_sessions("p1", 10).await.expect("sessions");
        assert_eq!(rows.len(), 2);
        assert_eq!(UnixMillis::from(rows[1].started_at), start);
        assert_eq!(UnixMillis::from(rows[1].ended_at), end(45));
        assert_eq!(rows[1].summary, json(45).to_string());
        // Another patient's summary never lands on this one's row.
        s.save_ctg_session("p2", "ctg-1", start, end(50), &json(50))
            .await
            .expect("save other");
        let rows = s.ctg_sessions("p1", 10).await.expect("sessions");
        assert_eq!(rows[1].summary, json(45).to_string());
    }
}
