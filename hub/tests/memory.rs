//! Memory per monitored patient: the engine's state of 10 000 non-CTG
//! patients with full windows (16 days of weights, 32 blood-pressure and
//! oximeter readings, doses, devices), measured with a counting allocator.
//! The budget is 4 KiB per patient.
//!
//! `cargo test -p vaka-hub --test memory -- --nocapture` prints the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Content, Event, EventKind, Metric, Observation};
use vaka_hub::alerts::AlertBook;
use vaka_hub::engine::Engine;
use vaka_hub::plans::Plan;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PATIENTS: usize = 10_000;
const START: i64 = 1_793_512_800_000;

#[test]
fn a_monitored_patient_takes_under_4_kib() {
    // One plan shared by all (plans are Arc'd per patient in the hub).
    let plan = Arc::new(Plan::template(Some("heart_failure")));
    let book = AlertBook::default();
    let mut out = Vec::new();
    let before = LIVE.load(Ordering::Relaxed);
    let mut engine = Engine::new();
    for p in 0..PATIENTS {
        let id = format!("p-{p:05}");
        engine.add_patient(
            &id,
            chrono_tz::Europe::Stockholm,
            plan.clone(),
            UnixMillis(START),
            &book,
            &mut out,
        );
        for day in 0..20i64 {
            let t = UnixMillis(START + day * UnixMillis::DAY);
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
            engine.ingest(
                &id,
                &format!("scale-{p}"),
                &obs(&[(Metric::Weight, 80.0)], t),
                t,
                &book,
                &mut out,
            );
            for half in [0, 12] {
                let t = t.plus_millis(half * UnixMillis::HOUR);
                let bp = [
                    (Metric::Sys, 128.0),
                    (Metric::Dia, 82.0),
                    (Metric::Hr, 66.0),
                ];
                engine.ingest(&id, &format!("bp-{p}"), &obs(&bp, t), t, &book, &mut out);
                let ox = [(Metric::Spo2, 97.0), (Metric::Hr, 66.0)];
                engine.ingest(
                    &id,
                    &format!("ox-{p}"),
                    &obs(&ox, t.plus_millis(60_000)),
                    t,
                    &book,
                    &mut out,
                );
            }
            let due = Content::Events(vec![Event {
                time: t,
                kind: EventKind::DoseDue,
                text: Some(format!("d{day}")),
            }]);
            engine.ingest(&id, &format!("disp-{p}"), &due, t, &book, &mut out);
            // The live engine ticks all the time; passed deadlines go.
            engine.tick(t, &book, &mut out);
        }
        out.clear();
    }
    let after = LIVE.load(Ordering::Relaxed);
    let per_patient = (after - before) / PATIENTS;
    eprintln!(
        "engine memory: {} bytes for {PATIENTS} patients = {per_patient} bytes per patient (budget 4096)",
        after - before
    );
    assert!(per_patient < 4096, "{per_patient} bytes per patient");
    drop(engine);
}
