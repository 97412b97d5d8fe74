//! Home CTG: real recordings replayed as live sessions.
//!
//! Synthetic FHR lacks what makes CTG hard (signal loss in bursts, held
//! values, maternal pick-up, artefacts), so the fetal monitor replays real
//! intrapartum recordings of the CTU-UHB database (ODC-BY 1.0; attribution in
//! `data/ctu-uhb/README.md`, which travels with the files). They are embedded
//! in the binary so that `vaka-sim` works anywhere.
//!
//! A session sends one pack per 10 s of signal: 40 `fhr` samples at 4 Hz, 40
//! `toco`, one `sigq`. The monitor sends what it has when the 10 s are over,
//! so a pack is due at the time just after its last sample and never holds a
//! time in the future.

use std::sync::LazyLock;

use vaka_gateway::UnixMillis;
use vaka_gateway::model::Metric;
use vaka_gateway::senml::PackBuilder;

use crate::devices::Message;
use vaka_gateway::topics::Channel;

/// Samples per second.
pub const HZ: u32 = 4;
/// Samples per pack (10 s).
pub const PACK_SAMPLES: usize = 40;
/// Milliseconds between samples.
const SAMPLE_MS: i64 = 1000 / HZ as i64;

/// One 4 Hz sample. `fhr` is `None` where the monitor had no signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub fhr: Option<f64>,
    /// Uterine activity in the monitor's relative units (0–127.5).
    pub uc: f64,
}

impl Sample {
    /// The FHR to send: present and inside the contract's 50–240 bpm. The
    /// gateway would drop anything else as an artefact; a monitor worth the
    /// name does not send it at all, and counts it as signal loss.
    pub fn valid_fhr(&self) -> Option<f64> {
        self.fhr.filter(|&v| Metric::Fhr.in_range(v))
    }

    /// Uterine activity as `toco` in %: the transducer's full scale is a bit
    /// above 100, which a percentage cannot be.
    pub fn toco(&self) -> f64 {
        self.uc.clamp(0.0, 100.0)
    }
}

/// A recording of the CTU-UHB database.
#[derive(Debug)]
pub struct Recording {
    /// The database's record number, e.g. `"1028"`.
    pub id: &'static str,
    pub samples: Vec<Sample>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CtgError {
    #[error("recording {id}, line {line}: {reason}")]
    Parse {
        id: String,
        line: usize,
        reason: String,
    },
}

/// The recordings carried (see `data/ctu-uhb/SUBSET.md` for why these).
const EMBEDDED: [(&str, &str); 4] = [
    ("1028", include_str!("../data/ctu-uhb/1028.csv")),
    ("1071", include_str!("../data/ctu-uhb/1071.csv")),
    ("1291", include_str!("../data/ctu-uhb/1291.csv")),
    ("1307", include_str!("../data/ctu-uhb/1307.csv")),
];

static RECORDINGS: LazyLock<Vec<Recording>> = LazyLock::new(|| {
    EMBEDDED
        .iter()
        .map(|&(id, text)| {
            parse(id, text).expect("BUG: an embedded recording does not parse (see ctg tests)")
        })
        .collect()
});

/// The embedded recordings, parsed once.
pub fn recordings() -> &'static [Recording] {
    &RECORDINGS
}

/// Parses `t_s,fhr_bpm,uc` lines (README of the data set): an empty
/// `fhr_bpm` is signal loss; samples must come at 4 Hz from 0.
pub fn parse(id: &'static str, text: &str) -> Result<Recording, CtgError> {
    let err = |line: usize, reason: String| CtgError::Parse {
        id: id.to_owned(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, "t_s,fhr_bpm,uc")) => {}
        other => {
            return Err(err(
                1,
                format!("unexpected header {:?}", other.map(|l| l.1)),
            ));
        }
    }
    let mut samples = Vec::with_capacity(14_400);
    for (i, line) in lines {
        let n = i + 1;
        let mut cols = line.split(',');
        let (Some(t), Some(fhr), Some(uc), None) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            return Err(err(n, "expected three columns".into()));
        };
        let num = |s: &str, what: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| err(n, format!("{what} {s:?} is not a number")))
        };
        let expected = samples.len() as f64 / f64::from(HZ);
        if num(t, "t_s")? != expected {
            return Err(err(n, format!("t_s {t} where {expected} was expected")));
        }
        let fhr = if fhr.is_empty() {
            None
        } else {
            Some(num(fhr, "fhr_bpm")?)
        };
        samples.push(Sample {
            fhr,
            uc: num(uc, "uc")?,
        });
    }
    if samples.len() < PACK_SAMPLES {
        return Err(err(0, format!("only {} samples", samples.len())));
    }
    Ok(Recording { id, samples })
}

/// One replay: `len` samples of recording `recording` from sample `offset`,
/// starting at `start` (whole seconds, so 4 Hz offsets stay exact in f64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub start: UnixMillis,
    pub recording: usize,
    pub offset: usize,
    /// A multiple of [`PACK_SAMPLES`].
    pub len: usize,
}

impl Session {
    /// A session of `minutes` (at most the recording) from `offset`.
    pub fn new(start: UnixMillis, recording: usize, offset: usize, minutes: u32) -> Session {
        let rec = &recordings()[recording % recordings().len()];
        let available = rec.samples.len().saturating_sub(offset) / PACK_SAMPLES * PACK_SAMPLES;
        let wanted = minutes as usize * 60 * HZ as usize;
        Session {
            // Up to whole seconds: the sample times are then exact binary
            // fractions, and the session never starts before it was asked to.
            start: UnixMillis((start.0 + 999).div_euclid(1000) * 1000),
            recording: recording % recordings().len(),
            offset: offset.min(rec.samples.len()),
            len: wanted.min(available) / PACK_SAMPLES * PACK_SAMPLES,
        }
    }

    pub fn packs(&self) -> usize {
        self.len / PACK_SAMPLES
    }

    /// The time of sample `k` of the session.
    pub fn sample_time(&self, k: usize) -> UnixMillis {
        self.start.plus_millis(k as i64 * SAMPLE_MS)
    }

    pub fn end(&self) -> UnixMillis {
        self.sample_time(self.len)
    }

    /// When pack `j` is sent: as its 10 s are over.
    pub fn pack_due(&self, j: usize) -> UnixMillis {
        self.sample_time((j + 1) * PACK_SAMPLES)
    }

    /// Pack `j`: `sigq` (the share of the pack's samples with a usable FHR),
    /// then each sample's `fhr` (if usable) and `toco`.
    pub fn pack(&self, device: &str, j: usize) -> Message {
        let rec = &recordings()[self.recording];
        let first = j * PACK_SAMPLES;
        let samples = rec
            .samples
            .iter()
            .skip(self.offset + first)
            .take(PACK_SAMPLES.min(self.len.saturating_sub(first)));
        let samples: Vec<&Sample> = samples.collect();
        let valid = samples.iter().filter(|s| s.valid_fhr().is_some()).count();
        let bt = self.sample_time(first).as_secs_f64();
        let sigq = (100.0 * valid as f64 / PACK_SAMPLES as f64).round();
        let mut b = PackBuilder::new(device, bt).value(
            Metric::Sigq.as_str(),
            Metric::Sigq.unit(),
            sigq,
            bt,
        );
        for (i, s) in samples.iter().enumerate() {
            let t = bt + i as f64 / f64::from(HZ);
            if let Some(fhr) = s.valid_fhr() {
                b = b.value(Metric::Fhr.as_str(), Metric::Fhr.unit(), fhr, t);
            }
            b = b.value(Metric::Toco.as_str(), Metric::Toco.unit(), s.toco(), t);
        }
        Message {
            device: device.to_owned(),
            channel: Channel::Obs,
            payload: b.to_json(),
            retain: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_recordings_parse_whole() {
        let recs = recordings();
        assert_eq!(recs.len(), EMBEDDED.len());
        for r in recs {
            assert_eq!(r.samples.len(), 14_400, "{}", r.id);
        }
        // Counts from the data set's records.csv.
        let loss = |id: &str| {
            let r = recs.iter().find(|r| r.id == id).unwrap();
            r.samples.iter().filter(|s| s.fhr.is_none()).count()
        };
        assert_eq!(loss("1028"), 134);
        let r1307 = recs.iter().find(|r| r.id == "1307").unwrap();
        let out_of_range = r1307
            .samples
            .iter()
            .filter(|s| s.fhr.is_some() && s.valid_fhr().is_none())
            .count();
        assert_eq!(out_of_range, 149);
        let r1071 = recs.iter().find(|r| r.id == "1071").unwrap();
        assert!(r1071.samples.iter().any(|s| s.uc > 100.0));
        assert!(r1071.samples.iter().all(|s| s.toco() <= 100.0));
    }

    #[test]
    fn parse_refuses_broken_text() {
        assert!(parse("x", "t_s,fhr_bpm,uc\n0,120,1\n0.5,120,1\n").is_err());
        assert!(parse("x", "time,fhr\n").is_err());
        assert!(parse("x", "t_s,fhr_bpm,uc\n0,abc,1\n").is_err());
        assert!(parse("x", "t_s,fhr_bpm,uc\n0,120\n").is_err());
        let short: String = std::iter::once("t_s,fhr_bpm,uc".to_owned())
            .chain((0..8).map(|k| format!("{},140,{}", k as f64 / 4.0, k)))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse("x", &short).is_err());
    }

    #[test]
    fn packs_cover_ten_seconds_at_four_hertz() {
        let s = Session::new(UnixMillis(1_796_108_400_123), 2, 0, 60);
        assert_eq!(s.start, UnixMillis(1_796_108_401_000));
        assert_eq!(s.packs(), 360);
        let m = s.pack("ctg-0002", 5);
        let records: Vec<vaka_gateway::senml::Record<'_>> =
            serde_json::from_str(&m.payload).unwrap();
        let offsets: Vec<f64> = records.iter().map(|r| r.t.unwrap_or(0.0)).collect();
        assert!(
            offsets
                .iter()
                .all(|t| (0.0..10.0).contains(t) && (t * 4.0).fract() == 0.0)
        );
        let toco = records
            .iter()
            .filter(|r| r.n.as_deref() == Some("toco"))
            .count();
        assert_eq!(toco, 40);
        assert_eq!(s.pack_due(5), s.sample_time(240));
    }
}
