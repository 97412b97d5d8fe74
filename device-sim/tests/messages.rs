//! Everything the simulator generates, checked against the gateway's own
//! validation and against the episodes the demo relies on. Pure: no broker.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{NaiveDate, TimeZone, Timelike};
use chrono_tz::Europe::Stockholm;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Content, EventKind, Metric, StatusField};
use vaka_gateway::topics::{Channel, DeviceId};
use vaka_gateway::validate::{Accepted, Limits, validate};
use vaka_sim::{
    Command, DeviceKind, Episode, Message, Program, Roster, Schedule, devices, history, roster,
};

/// Local Stockholm time as [`UnixMillis`].
fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> UnixMillis {
    let t = Stockholm
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("an unambiguous local time");
    UnixMillis(t.timestamp_millis())
}

fn local_date(t: UnixMillis) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(t.0)
        .unwrap()
        .with_timezone(&Stockholm)
        .date_naive()
}

/// Validates `m` as the gateway would on receiving it at `at`.
fn accept(m: &Message, at: UnixMillis) -> Accepted {
    let id = DeviceId::parse(&m.device).expect("a valid device id");
    let verdict = validate(&id, m.channel, m.payload.as_bytes(), at, &Limits::default());
    match verdict.outcome {
        Ok(a) => {
            assert_eq!(a.fhr_artefacts, 0, "out-of-range FHR sent by {}", m.device);
            a
        }
        Err(r) => panic!(
            "{} on {:?} rejected at {at}: {r}\n{}",
            m.device, m.channel, m.payload
        ),
    }
}

/// The record times of an accepted message.
fn times(a: &Accepted) -> Vec<UnixMillis> {
    match &a.content {
        Content::Observations(v) => v.iter().map(|o| o.time).collect(),
        Content::Events(v) => v.iter().map(|e| e.time).collect(),
        Content::Status(v) => v.iter().map(|s| s.time).collect(),
    }
}

fn obs(a: &Accepted, metric: Metric) -> Vec<(UnixMillis, f64)> {
    match &a.content {
        Content::Observations(v) => v
            .iter()
            .filter(|o| o.metric == metric)
            .map(|o| (o.time, o.value))
            .collect(),
        _ => Vec::new(),
    }
}

fn events(a: &Accepted) -> Vec<(UnixMillis, EventKind, Option<String>)> {
    match &a.content {
        Content::Events(v) => v.iter().map(|e| (e.time, e.kind, e.text.clone())).collect(),
        _ => Vec::new(),
    }
}

fn live(r: &Roster, start: UnixMillis, minutes: i64) -> Vec<(UnixMillis, Message)> {
    let end = start.plus_millis(minutes * UnixMillis::MINUTE);
    Schedule::new(r, start)
        .take_while(|(due, _)| *due < end)
        .collect()
}

/// Noon in winter, early morning on the day after the spring DST change, and
/// an evening in summer: the history crosses DST changes in two of them.
fn nows() -> [UnixMillis; 3] {
    [
        local(2026, 12, 1, 12, 0),
        local(2026, 3, 30, 5, 0),
        local(2026, 7, 14, 20, 30),
    ]
}

#[test]
fn every_history_message_passes_validation_when_sent() {
    for seed in [42, 7] {
        let r = roster(seed, 50);
        for now in nows() {
            let from = now.plus_millis(-14 * UnixMillis::DAY);
            let mut total = 0;
            for p in &r.patients {
                let h = history(p, now, 14);
                assert!(!h.is_empty(), "{} has no history", p.id);
                for m in &h {
                    assert!(!m.retain, "history is never retained");
                    assert_eq!(m.device.split('-').nth(1), p.id.split('-').nth(1));
                    let a = accept(m, now);
                    for t in times(&a) {
                        assert!(
                            t >= from && t < now,
                            "{} at {t} outside the history",
                            m.device
                        );
                    }
                }
                total += h.len();
            }
            // 50 patients, ~2 messages a day each at least.
            assert!(total > 50 * 14 * 2, "only {total} messages");
        }
    }
}

#[test]
fn every_live_message_passes_validation_when_due_and_holds_no_future_time() {
    let r = roster(42, 50);
    for start in nows() {
        let mut last = start;
        let mut n = 0;
        for (due, m) in live(&r, start, 30) {
            assert!(due >= last, "schedule out of order");
            last = due;
            let a = accept(&m, due);
            for t in times(&a) {
                assert!(t <= due, "{} sends a record of {t} at {due}", m.device);
                assert!(
                    t >= start,
                    "{} sends a record of {t} before the start",
                    m.device
                );
            }
            n += 1;
        }
        assert!(n > 500, "only {n} live messages in 30 min");
    }
}

#[test]
fn connect_status_last_will_and_answers_pass_validation() {
    let r = roster(42, 20);
    let start = nows()[0];
    let now = start.plus_millis(5_000);
    let remeasure = Command::Remeasure {
        name: "bp".into(),
        reason: "test".into(),
    };
    for (p, d) in r.devices() {
        let status = devices::connect_status(p, &d.id, start, now).expect("a status");
        assert!(status.retain);
        let a = accept(&status, now);
        let Content::Status(fields) = &a.content else {
            panic!("not a status")
        };
        let has = |f| fields.iter().any(|s| s.field == f);
        assert!(has(StatusField::Conn) && has(StatusField::Batt) && has(StatusField::Fw));
        assert_eq!(has(StatusField::Hb), d.kind == DeviceKind::FallSensor);
        assert_eq!(has(StatusField::DosesLeft), d.kind == DeviceKind::Dispenser);

        let will = Message {
            device: d.id.clone(),
            channel: Channel::Status,
            payload: devices::last_will(&d.id),
            retain: true,
        };
        let a = accept(&will, now);
        assert_eq!(times(&a), vec![now], "the will's time is its arrival");

        let answer = devices::answer(p, &d.id, &remeasure, start, now, 1);
        assert_eq!(answer.is_some(), d.kind == DeviceKind::BpCuff, "{}", d.id);
        if let Some(m) = answer {
            let a = accept(&m, now);
            assert_eq!(obs(&a, Metric::Sys).len(), 1);
            assert_eq!(obs(&a, Metric::Hr).len(), 1);
        }
    }
    assert!(devices::connect_status(&r.patients[0], "nope-1", start, now).is_none());
}

/// First reading of each local day, per scale.
fn first_weights(h: &[Message], now: UnixMillis) -> BTreeMap<NaiveDate, f64> {
    let mut first: BTreeMap<NaiveDate, (UnixMillis, f64)> = BTreeMap::new();
    for m in h.iter().filter(|m| m.device.starts_with("scale-")) {
        for (t, kg) in obs(&accept(m, now), Metric::Weight) {
            let e = first.entry(local_date(t)).or_insert((t, kg));
            if t < e.0 {
                *e = (t, kg);
            }
        }
    }
    first.into_iter().map(|(d, (_, kg))| (d, kg)).collect()
}

#[test]
fn fluid_retention_gains_more_than_2_kg_in_3_days_and_nobody_else_does() {
    for seed in [42, 1, 2, 3] {
        let r = roster(seed, 50);
        // After the morning, so today's reading is in the history.
        let now = local(2026, 12, 1, 12, 0);
        let today = local_date(now);
        let mut retaining = 0;
        for p in r
            .patients
            .iter()
            .filter(|p| p.device(DeviceKind::Scale).is_some())
        {
            let h = history(p, now, 14);
            for m in h.iter().filter(|m| m.device.starts_with("scale-")) {
                for (t, _) in obs(&accept(m, now), Metric::Weight) {
                    let lt = chrono::DateTime::from_timestamp_millis(t.0)
                        .unwrap()
                        .with_timezone(&Stockholm);
                    let minutes = lt.hour() * 60 + lt.minute();
                    assert!((390..570).contains(&minutes), "weighed at {lt}");
                }
            }
            let first = first_weights(&h, now);
            let gain = |days: i64| -> Option<f64> {
                let before = today - chrono::Days::new(days as u64);
                Some(((first.get(&today)? - first.get(&before)?) * 10.0).round() / 10.0)
            };
            if p.has(Episode::FluidRetention) {
                let g = gain(3).expect("daily readings in an episode");
                assert!(g > 2.0, "{}: +{g} kg in 3 days", p.id);
                retaining += 1;
            } else {
                for (d, kg) in &first {
                    let d3 = *d - chrono::Days::new(3);
                    if let Some(prev) = first.get(&d3) {
                        let g = ((kg - prev) * 10.0).round() / 10.0;
                        assert!(g <= 1.0, "{} gains {g} kg by {d} without an episode", p.id);
                    }
                }
            }
        }
        assert!(retaining >= 2, "{retaining} patients in fluid retention");
    }
}

#[test]
fn history_blood_pressure_never_reaches_an_alert_range() {
    for seed in [42, 99] {
        let r = roster(seed, 50);
        let now = nows()[0];
        let mut readings = 0;
        for p in &r.patients {
            for m in history(p, now, 14)
                .iter()
                .filter(|m| m.device.starts_with("bp-"))
            {
                let a = accept(m, now);
                let (sys, dia, map, hr) = (
                    obs(&a, Metric::Sys),
                    obs(&a, Metric::Dia),
                    obs(&a, Metric::Map),
                    obs(&a, Metric::Hr),
                );
                assert_eq!((sys.len(), dia.len(), map.len(), hr.len()), (1, 1, 1, 1));
                assert!(sys[0].0 == dia[0].0 && dia[0].0 == map[0].0 && map[0].0 == hr[0].0);
                let (s, d, h) = (sys[0].1, dia[0].1, hr[0].1);
                assert!(
                    s < 180.0 && d < 110.0,
                    "{}: crisis {s}/{d} in history",
                    p.id
                );
                assert!(s >= 90.0, "{}: hypotension {s}", p.id);
                assert!((40.0..=120.0).contains(&h), "{}: hr {h}", p.id);
                assert!(d < map[0].1 && map[0].1 < s);
                readings += 1;
            }
        }
        assert!(readings > 35 * 14, "{readings} BP readings");
    }
}

#[test]
fn hypertensive_crisis_comes_30_s_into_the_run_and_its_repeat_stays_in_crisis() {
    let r = roster(42, 50);
    let start = nows()[0];
    let crisis: Vec<_> = r
        .patients
        .iter()
        .filter(|p| p.has(Episode::HypertensiveCrisis))
        .collect();
    assert!(!crisis.is_empty());
    let crisis_cuffs: HashSet<_> = crisis
        .iter()
        .map(|p| p.device(DeviceKind::BpCuff).unwrap().id.clone())
        .collect();
    let mut found = 0;
    for (due, m) in live(&r, start, 60) {
        if !m.device.starts_with("bp-") {
            continue;
        }
        let a = accept(&m, due);
        for (t, sys) in obs(&a, Metric::Sys) {
            if sys >= 180.0 {
                assert!(crisis_cuffs.contains(&m.device), "{} in crisis", m.device);
                assert_eq!(t.millis_since(start), 30_000);
                found += 1;
            }
        }
    }
    assert_eq!(found, crisis.len());

    let remeasure = Command::Remeasure {
        name: "bp".into(),
        reason: "sys 192".into(),
    };
    let at = start.plus_millis(95_000);
    for p in &r.patients {
        let Some(cuff) = p.device(DeviceKind::BpCuff) else {
            continue;
        };
        let m = devices::answer(p, &cuff.id, &remeasure, start, at, 1).unwrap();
        let a = accept(&m, at);
        let (t, sys) = obs(&a, Metric::Sys)[0];
        assert_eq!(t, at, "the repeat is taken when it is sent");
        if p.has(Episode::HypertensiveCrisis) {
            assert!(sys >= 180.0, "{}: repeat {sys}", p.id);
        } else {
            assert!(sys < 180.0, "{}: repeat {sys}", p.id);
        }
    }
    // Long after the episode the crisis patient is back to normal.
    let later = start.plus_millis(UnixMillis::HOUR);
    let cuff = crisis[0].device(DeviceKind::BpCuff).unwrap();
    let m = devices::answer(crisis[0], &cuff.id, &remeasure, start, later, 2).unwrap();
    assert!(obs(&accept(&m, later), Metric::Sys)[0].1 < 180.0);
    let remind = Command::Remind { text: "x".into() };
    assert!(devices::answer(crisis[0], &cuff.id, &remind, start, later, 3).is_none());
}

#[test]
fn falls_and_the_help_button_are_scripted_in_the_first_minutes() {
    let r = roster(42, 50);
    let start = nows()[0];
    let mut by_device: HashMap<String, Vec<(i64, EventKind)>> = HashMap::new();
    for (due, m) in live(&r, start, 5) {
        if m.channel == Channel::Evt && m.device.starts_with("fall-") {
            for (t, kind, text) in events(&accept(&m, due)) {
                assert_eq!(text, None, "alarm events are vb: true");
                by_device
                    .entry(m.device.clone())
                    .or_default()
                    .push((t.millis_since(start) / 1000, kind));
            }
        }
    }
    let of = |e: Episode| {
        let p = r
            .patients
            .iter()
            .find(|p| p.has(e))
            .expect("episode assigned");
        by_device
            .get(&p.device(DeviceKind::FallSensor).unwrap().id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(of(Episode::Fall), vec![(90, EventKind::Fall)]);
    assert_eq!(of(Episode::HelpButton), vec![(120, EventKind::HelpButton)]);
    assert_eq!(
        of(Episode::CancelledFall),
        vec![(150, EventKind::Fall), (160, EventKind::FallCancelled)]
    );
    assert_eq!(by_device.len(), 3, "no other alarms: {by_device:?}");
}

#[test]
fn fall_sensors_beat_every_hb_seconds() {
    let r = roster(42, 12);
    let start = nows()[0];
    let mut beats: HashMap<String, Vec<i64>> = HashMap::new();
    for (due, m) in live(&r, start, 10) {
        if m.channel == Channel::Status && m.device.starts_with("fall-") {
            assert!(m.retain);
            accept(&m, due);
            beats
                .entry(m.device)
                .or_default()
                .push(due.millis_since(start));
        }
    }
    assert!(!beats.is_empty());
    for (dev, b) in beats {
        let expected: Vec<i64> = (1..=9).map(|k| k * 60_000).collect();
        assert_eq!(b, expected, "{dev}");
    }
}

#[test]
fn missed_doses_are_reported_an_hour_after_they_were_due() {
    let r = roster(42, 50);
    let now = nows()[0];
    let mut missed_by_forgetful = 0;
    let mut refill_low = 0;
    for p in r
        .patients
        .iter()
        .filter(|p| p.program == Program::ElderlyAtHome)
    {
        let mut due: HashMap<String, UnixMillis> = HashMap::new();
        let mut outcome: HashMap<String, Vec<(EventKind, UnixMillis)>> = HashMap::new();
        for m in history(p, now, 14)
            .iter()
            .filter(|m| m.channel == Channel::Evt)
        {
            for (t, kind, text) in events(&accept(m, now)) {
                match kind {
                    EventKind::RefillLow => refill_low += 1,
                    EventKind::DoseDue => {
                        let id = text.expect("a dose id");
                        assert!(due.insert(id, t).is_none(), "dose due twice");
                    }
                    EventKind::DoseTaken | EventKind::DoseMissed => {
                        outcome
                            .entry(text.expect("a dose id"))
                            .or_default()
                            .push((kind, t));
                    }
                    other => panic!("unexpected {other} from a dispenser"),
                }
            }
        }
        assert!(!due.is_empty());
        for (id, t_due) in &due {
            // "2026-12-01-morning": the local date of the dose, and its slot.
            let date = local_date(*t_due).to_string();
            assert!(id.starts_with(&date), "{id} due on {date}");
            match outcome.get(id).map(Vec::as_slice) {
                Some([(EventKind::DoseTaken, t)]) => {
                    assert!(t > t_due && t.millis_since(*t_due) < UnixMillis::HOUR)
                }
                Some([(EventKind::DoseMissed, t)]) => {
                    assert_eq!(t.millis_since(*t_due), UnixMillis::HOUR);
                    if p.has(Episode::MissedDose) {
                        missed_by_forgetful += 1;
                    }
                }
                // Due less than an hour before `now`: not decided yet.
                None => assert!(now.millis_since(*t_due) < UnixMillis::HOUR, "{id}"),
                other => panic!("{id}: {other:?}"),
            }
        }
        // A dose due just before the history starts may be taken just after.
        let from = now.plus_millis(-14 * UnixMillis::DAY);
        for (id, o) in &outcome {
            if !due.contains_key(id) {
                assert!(
                    o.iter()
                        .all(|(_, t)| t.millis_since(from) <= UnixMillis::HOUR),
                    "{id}"
                );
            }
        }
    }
    assert!(missed_by_forgetful >= 1);
    // Late refills are occasional: 15 patients × 2 weeks × 15 %.
    assert!(refill_low <= 15, "{refill_low} refill_low events");
}

#[test]
fn ctg_packs_are_at_most_10_s_of_4_hz_samples() {
    let r = roster(42, 50);
    let start = nows()[0];
    let mut packs = 0;
    let mut lossy = 0;
    let mut sessions = HashMap::new();
    for (due, m) in live(&r, start, 15) {
        if !m.device.starts_with("ctg-") {
            continue;
        }
        let a = accept(&m, due);
        if m.channel == Channel::Evt {
            for (t, kind, _) in events(&a) {
                if kind == EventKind::CtgSessionStart {
                    sessions.insert(m.device.clone(), t);
                }
            }
            continue;
        }
        let session = *sessions
            .get(&m.device)
            .expect("a pack after the session start");
        let fhr = obs(&a, Metric::Fhr);
        let toco = obs(&a, Metric::Toco);
        let sigq = obs(&a, Metric::Sigq);
        assert_eq!(toco.len(), 40);
        assert!(fhr.len() <= 40);
        assert_eq!(sigq.len(), 1);
        assert_eq!(sigq[0].1, (100.0 * fhr.len() as f64 / 40.0).round());
        let first = toco[0].0;
        assert_eq!(sigq[0].0, first);
        assert_eq!(
            first.millis_since(session) % 10_000,
            0,
            "packs follow each other"
        );
        for (t, v) in toco.iter().chain(&fhr) {
            let dt = t.millis_since(first);
            assert!((0..10_000).contains(&dt) && dt % 250 == 0, "offset {dt} ms");
            assert!(*t <= due);
            assert!(v.is_finite());
        }
        for (_, v) in &toco {
            assert!((0.0..=100.0).contains(v), "toco {v}");
        }
        for (_, v) in &fhr {
            assert!((50.0..=240.0).contains(v));
        }
        assert_eq!(due, first.plus_millis(10_000), "sent as its 10 s are over");
        if fhr.len() < 40 {
            lossy += 1;
        }
        packs += 1;
    }
    let at_start = r
        .patients
        .iter()
        .find(|p| p.has(Episode::CtgAtStart))
        .and_then(|p| p.device(DeviceKind::FetalMonitor))
        .unwrap();
    let began = sessions[&at_start.id];
    assert!(began >= start && began.millis_since(start) < 1_000);
    assert!(sessions.len() >= 4, "{} sessions", sessions.len());
    assert!(packs > 200, "{packs} packs");
    assert!(lossy > 0, "real recordings have signal loss");
}

#[test]
fn ctg_session_ends_after_its_last_pack() {
    let r = roster(42, 2);
    let start = nows()[0];
    let ctg: Vec<_> = live(&r, start, 62)
        .into_iter()
        .filter(|(_, m)| m.device.starts_with("ctg-"))
        .collect();
    let (first_due, first) = &ctg[0];
    assert_eq!(first.channel, Channel::Evt);
    assert!(first.payload.contains("ctg_session_start"));
    let end = ctg
        .iter()
        .position(|(_, m)| m.payload.contains("ctg_session_end"))
        .expect("the hour-long session ends");
    assert_eq!(end, 361, "start, 360 packs, end");
    assert_eq!(ctg[end].0.millis_since(*first_due), UnixMillis::HOUR);
}

#[test]
fn same_seed_same_messages_other_seed_other_messages() {
    let start = nows()[0];
    let a = roster(42, 50);
    assert_eq!(a, roster(42, 50));
    assert_ne!(a, roster(43, 50));
    // Adding patients does not change the earlier ones.
    assert_eq!(roster(42, 10).patients[..], a.patients[..10]);

    let h = |r: &Roster| -> Vec<Message> {
        r.patients
            .iter()
            .flat_map(|p| history(p, start, 14))
            .collect()
    };
    assert_eq!(h(&a), h(&roster(42, 50)));
    assert_ne!(h(&a), h(&roster(43, 50)));

    let l = |r: &Roster| live(r, start, 20);
    assert_eq!(l(&a), l(&roster(42, 50)));
    assert_ne!(l(&a), l(&roster(43, 50)));

    // A longer history is the same days, and more of them.
    let p = &a.patients[0];
    let short = history(p, start, 3);
    let long = history(p, start, 7);
    assert!(
        long.ends_with(&short),
        "the last 3 days do not depend on the length"
    );
}
