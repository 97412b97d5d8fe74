//! The rules engine alone (no I/O): observations evaluated per second for a
//! mixed population of 10 000 patients, every rule of their programs on.
//!
//! `cargo bench -p vaka-hub --bench engine`

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Content, Event, EventKind, Metric, Observation};
use vaka_hub::alerts::AlertBook;
use vaka_hub::engine::Engine;
use vaka_hub::plans::Plan;

const PATIENTS: usize = 10_000;
const DAYS: i64 = 14;
const START: i64 = 1_793_512_800_000; // 2026-11-01 07:00 Stockholm

struct Msg {
    patient: String,
    device: String,
    arrived: UnixMillis,
    content: Content,
}

/// A mixed population: heart failure (scale, cuff, oximeter), hypertension
/// (cuff twice a day), elderly at home (dispenser doses). Deterministic
/// pseudo-random values around normal; about 1 % of readings are alarming
/// (and then raise alerts, with their texts), as in real home monitoring.
fn population() -> (Vec<(String, Plan)>, Vec<Msg>, usize) {
    let programs = [
        "heart_failure",
        "hypertension",
        "elderly_at_home",
        "heart_failure",
    ];
    let mut patients = Vec::with_capacity(PATIENTS);
    let mut msgs = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 1000) as f64 / 1000.0
    };
    let mut observations = 0;
    for p in 0..PATIENTS {
        let program = programs[p % programs.len()];
        let id = format!("p-{p:05}");
        patients.push((id.clone(), Plan::template(Some(program))));
        for day in 0..DAYS {
            let t = UnixMillis(START + day * UnixMillis::DAY + (p as i64 % 600) * 1000);
            let obs = |list: &[(Metric, f64)], t: UnixMillis| {
                Content::Observations(
                    list.iter()
                        .map(|&(metric, value)| Observation {
                            time: t,
                            metric,
                            value,
                        })
                        .collect(),
                )
            };
            let mut push = |device: String, content: Content, t: UnixMillis| {
                if let Content::Observations(o) = &content {
                    observations += o.len();
                }
                msgs.push(Msg {
                    patient: id.clone(),
                    device,
                    arrived: t,
                    content,
                });
            };
            match program {
                "heart_failure" => {
                    push(
                        format!("scale-{p}"),
                        obs(&[(Metric::Weight, 80.0 + rnd() * 1.5)], t),
                        t,
                    );
                    let sys = if rnd() < 0.01 {
                        185.0
                    } else {
                        115.0 + rnd() * 40.0
                    };
                    let hr = if rnd() < 0.01 {
                        130.0
                    } else {
                        55.0 + rnd() * 40.0
                    };
                    let bp = [
                        (Metric::Sys, sys.round()),
                        (Metric::Dia, 80.0),
                        (Metric::Map, 95.0),
                        (Metric::Hr, hr.round()),
                    ];
                    push(
                        format!("bp-{p}"),
                        obs(&bp, t.plus_millis(60_000)),
                        t.plus_millis(60_000),
                    );
                    let spo2 = if rnd() < 0.01 {
                        89.0
                    } else {
                        93.0 + (rnd() * 6.0).round()
                    };
                    push(
                        format!("ox-{p}"),
                        obs(
                            &[(Metric::Spo2, spo2), (Metric::Hr, 70.0)],
                            t.plus_millis(120_000),
                        ),
                        t.plus_millis(120_000),
                    );
                }
                "hypertension" => {
                    for half in [0, 12] {
                        let t = t.plus_millis(half * UnixMillis::HOUR);
                        let bp = [
                            (Metric::Sys, (118.0 + rnd() * 24.0).round()),
                            (Metric::Dia, 80.0),
                            (Metric::Hr, 70.0),
                        ];
                        push(format!("bp-{p}"), obs(&bp, t), t);
                    }
                }
                _ => {
                    let dose = |kind, t: UnixMillis| {
                        Content::Events(vec![Event {
                            time: t,
                            kind,
                            text: Some(format!("d-{day}")),
                        }])
                    };
                    push(format!("disp-{p}"), dose(EventKind::DoseDue, t), t);
                    push(
                        format!("disp-{p}"),
                        dose(EventKind::DoseTaken, t.plus_millis(600_000)),
                        t.plus_millis(600_000),
                    );
                }
            }
        }
    }
    msgs.sort_by_key(|m| m.arrived);
    (patients, msgs, observations)
}

fn engine_with(patients: &[(String, Plan)]) -> (Engine, AlertBook) {
    let mut engine = Engine::new();
    let book = AlertBook::default();
    let mut out = Vec::new();
    for (id, plan) in patients {
        engine.add_patient(
            id,
            chrono_tz::Europe::Stockholm,
            Arc::new(plan.clone()),
            UnixMillis(START),
            &book,
            &mut out,
        );
    }
    (engine, book)
}

fn bench(c: &mut Criterion) {
    let (patients, msgs, observations) = population();
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(observations as u64));
    group.bench_function("10k_patients_14_days_mixed", |b| {
        b.iter_batched(
            || engine_with(&patients),
            |(mut engine, book)| {
                let mut out = Vec::new();
                for m in &msgs {
                    engine.ingest(
                        &m.patient, &m.device, &m.content, m.arrived, &book, &mut out,
                    );
                    if out.len() > 4096 {
                        out.clear();
                    }
                }
                engine.tick(UnixMillis(START + DAYS * UnixMillis::DAY), &book, &mut out);
                (engine, out.len())
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    eprintln!(
        "population: {} patients, {} messages, {} observations",
        patients.len(),
        msgs.len(),
        observations
    );
}

/// 1 000 pregnant patients in a CTG session at once, each sending a 10 s
/// pack (40 FHR and 40 toco samples) every 10 s: the engine's cost per pack,
/// with the fetal rules evaluated after each. The figure of merit is the
/// share of a core: 1 000 sessions send 100 packs a second.
fn ctg(c: &mut Criterion) {
    const SESSIONS: usize = 1_000;
    const PACKS: i64 = 60; // 10 minutes
    let plan = Plan::template(Some("pregnancy_diabetes"));
    let patients: Vec<(String, Plan)> = (0..SESSIONS)
        .map(|p| (format!("p-{p:04}"), plan.clone()))
        .collect();
    let mut packs = Vec::with_capacity(SESSIONS * PACKS as usize);
    for pack in 0..PACKS {
        for (p, (id, _)) in patients.iter().enumerate() {
            let t0 = START + pack * 10_000;
            let mut obs = Vec::with_capacity(80);
            for k in 0..40 {
                let t = UnixMillis(t0 + k * 250);
                let fhr = 140.0 + ((p as i64 + pack * 40 + k) % 9) as f64 - 4.0;
                obs.push(Observation {
                    time: t,
                    metric: Metric::Fhr,
                    value: fhr,
                });
                obs.push(Observation {
                    time: t,
                    metric: Metric::Toco,
                    value: 10.0,
                });
            }
            packs.push(Msg {
                patient: id.clone(),
                device: format!("ctg-{p}"),
                arrived: UnixMillis(t0 + 10_000),
                content: Content::Observations(obs),
            });
        }
    }
    let mut group = c.benchmark_group("engine_ctg");
    group.sample_size(10);
    group.throughput(Throughput::Elements(packs.len() as u64));
    group.bench_function("1000_sessions_10_min_packs", |b| {
        b.iter_batched(
            || engine_with(&patients),
            |(mut engine, book)| {
                let mut out = Vec::new();
                for m in &packs {
                    engine.ingest(
                        &m.patient, &m.device, &m.content, m.arrived, &book, &mut out,
                    );
                    out.clear();
                }
                engine
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench, ctg);
criterion_main!(benches);
