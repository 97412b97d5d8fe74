//! What one CTG session costs the engine per sample: a real hour (CTU-UHB
//! record 1028, 14 400 FHR + 14 400 toco samples at 4 Hz) replayed in 10 s
//! packs as the simulator sends them, with `advance_to` and `status()` after
//! every pack as the engine does, then the summary.
//!
//! Budget: 1 000 concurrent sessions at 4 Hz are 4 000 samples/s; under 5 %
//! of a core means under 12.5 µs per sample (fhr + toco).
//!
//! `cargo bench -p vaka-hub --bench ctg`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vaka_gateway::UnixMillis;
use vaka_hub::engine::ctg::CtgSession;

const T0: UnixMillis = UnixMillis(1_796_000_000_000);

/// `(fhr, toco)` per 4 Hz slot of record 1028; FHR `None` where the monitor
/// lost the signal or read outside 50–240 (the gateway drops those).
fn record_1028() -> Vec<(Option<f64>, f64)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../device-sim/data/ctu-uhb/1028.csv"
    );
    let text = std::fs::read_to_string(path).expect("CTU-UHB record 1028");
    text.lines()
        .skip(1)
        .map(|line| {
            let mut f = line.split(',').skip(1);
            let fhr = f.next().and_then(|v| v.parse::<f64>().ok());
            let uc: f64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (fhr.filter(|v| (50.0..=240.0).contains(v)), uc.min(100.0))
        })
        .collect()
}

fn replay(samples: &[(Option<f64>, f64)]) -> CtgSession {
    let mut s = CtgSession::new(T0);
    for (p, pack) in samples.chunks(40).enumerate() {
        let first = p as i64 * 40;
        for (i, &(fhr, toco)) in pack.iter().enumerate() {
            let t = UnixMillis(T0.0 + (first + i as i64) * 250);
            if let Some(v) = fhr {
                s.push_fhr(t, v);
            }
            s.push_toco(t, toco);
        }
        s.advance_to(UnixMillis(T0.0 + (first + pack.len() as i64 - 1) * 250));
        black_box(s.status());
    }
    s
}

fn ctg(c: &mut Criterion) {
    let samples = record_1028();
    let mut group = c.benchmark_group("ctg");
    group.throughput(Throughput::Elements(samples.len() as u64));
    group.bench_function("session_1h_per_slot", |b| {
        b.iter(|| {
            let s = replay(black_box(&samples));
            black_box(s.summary())
        })
    });
    group.finish();

    let session = replay(&samples);
    c.bench_function("ctg/status", |b| b.iter(|| black_box(&session).status()));
    c.bench_function("ctg/summary", |b| b.iter(|| black_box(&session).summary()));
}

criterion_group!(benches, ctg);
criterion_main!(benches);
