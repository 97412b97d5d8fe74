//! NEWS2, the National Early Warning Score 2 (Royal College of Physicians,
//! 2017), from the vital signs a patient measures at home (ARCHITECTURE §4:
//! "computed when the vitals are present and shown as a score").
//!
//! NEWS2 adds points for seven parameters: respiration rate, SpO2, air or
//! supplemental oxygen, systolic blood pressure, pulse, level of
//! consciousness and temperature. Home devices measure four of them (SpO2,
//! systolic pressure, pulse, temperature); the others are never known here.
//! So the score is almost always **partial**, and says so: which parameters
//! it has, with their points, and which are missing. A partial score is a
//! lower bound of the full one (a missing parameter can only add points),
//! so the risk it shows is "at least".
//!
//! Each parameter is the latest reading within [`WINDOW_MS`]; the score is
//! as old as its oldest reading. SpO2 is scored on Scale 1, or on Scale 2
//! (for hypercapnic respiratory failure, target 88–92 %) when the patient's
//! plan has its SpO2 threshold set below 92 %, which is how a physician
//! marks that target here. Without a record of supplemental oxygen, Scale 2
//! is scored as on air.

use serde::Serialize;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::Metric;

use crate::plans::Plan;
use crate::store::{DbTime, PatientObservation};

/// How old a reading may be and still count.
pub const WINDOW_MS: i64 = 24 * UnixMillis::HOUR;

/// The SpO2 threshold below which the plan means a target of 88–92 %.
const SCALE_2_BELOW_PCT: f64 = 92.0;

/// The parameters no home device here reports.
const NEVER_MEASURED: [&str; 3] = ["respiration_rate", "oxygen", "consciousness"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Spo2Scale {
    /// The usual scale.
    Scale1,
    /// Hypercapnic respiratory failure, target 88–92 %.
    Scale2,
}

/// The clinical risk that a NEWS2 score calls for (RCP 2017, chart 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// 0–4.
    Low,
    /// A single parameter scoring 3 (an urgent ward-based response).
    LowMedium,
    /// 5–6.
    Medium,
    /// 7 or more.
    High,
}

/// One parameter's reading and points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameter {
    /// `spo2`, `sys`, `hr` or `temp`.
    pub name: &'static str,
    pub value: f64,
    pub at: DbTime,
    pub points: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct News2 {
    /// The sum of the points of the parameters known.
    pub score: u8,
    /// At least this risk (exactly, when nothing is missing).
    pub risk: Risk,
    pub scale: Spo2Scale,
    pub parameters: Vec<Parameter>,
    /// Parameters without a reading in the window.
    pub missing: Vec<&'static str>,
    /// When the oldest reading it uses was taken.
    pub as_of: DbTime,
}

/// A parameter's chart: a reading (on a scale, for SpO2) to its points.
type Chart = fn(f64, Spo2Scale) -> u8;

/// The scale for a plan's SpO2 threshold.
pub fn scale_for(spo2_low_pct: f64) -> Spo2Scale {
    if spo2_low_pct < SCALE_2_BELOW_PCT {
        Spo2Scale::Scale2
    } else {
        Spo2Scale::Scale1
    }
}

/// The scale a patient's plan calls for (Scale 1 without a plan).
pub fn scale_of_plan(plan: Option<&Plan>) -> Spo2Scale {
    plan.map_or(Spo2Scale::Scale1, |p| scale_for(p.thresholds.spo2_low_pct))
}

/// NEWS2 from `observations` (any order), using the latest reading of each
/// parameter no older than [`WINDOW_MS`] before `now`; `None` when there is
/// no vital sign at all in the window.
pub fn score(
    observations: &[PatientObservation],
    scale: Spo2Scale,
    now: UnixMillis,
) -> Option<News2> {
    let scored: [(Metric, &'static str, Chart); 4] = [
        (Metric::Spo2, "spo2", spo2_points),
        (Metric::Sys, "sys", |v, _| sys_points(v)),
        (Metric::Hr, "hr", |v, _| pulse_points(v)),
        (Metric::Temp, "temp", |v, _| temperature_points(v)),
    ];
    let mut parameters = Vec::new();
    let mut missing: Vec<&'static str> = NEVER_MEASURED.to_vec();
    for (metric, name, points) in scored {
        let latest = observations
            .iter()
            .filter(|o| o.metric == metric && now.0 - o.time.0 <= WINDOW_MS)
            .max_by_key(|o| o.time);
        match latest {
            Some(o) => parameters.push(Parameter {
                name,
                value: o.value,
                at: DbTime(o.time),
                points: points(o.value, scale),
            }),
            None => missing.push(name),
        }
    }
    let as_of = parameters.iter().map(|p| p.at).min()?;
    let score = parameters.iter().map(|p| p.points).sum();
    let any_three = parameters.iter().any(|p| p.points >= 3);
    Some(News2 {
        score,
        risk: risk(score, any_three),
        scale,
        parameters,
        missing,
        as_of,
    })
}

fn risk(score: u8, any_three: bool) -> Risk {
    match score {
        7.. => Risk::High,
        5..=6 => Risk::Medium,
        _ if any_three => Risk::LowMedium,
        _ => Risk::Low,
    }
}

// The charts of RCP 2017. Readings are whole numbers on the chart; a
// device's decimals are rounded to the nearest first (SpO2, pulse, pressure)
// or to one decimal (temperature).

fn spo2_points(v: f64, scale: Spo2Scale) -> u8 {
    let v = v.round();
    match scale {
        Spo2Scale::Scale1 => match v {
            x if x <= 91.0 => 3,
            x if x <= 93.0 => 2,
            x if x <= 95.0 => 1,
            _ => 0,
        },
        // On air: 88 % and above score nothing.
        Spo2Scale::Scale2 => match v {
            x if x <= 83.0 => 3,
            x if x <= 85.0 => 2,
            x if x <= 87.0 => 1,
            _ => 0,
        },
    }
}

fn sys_points(v: f64) -> u8 {
    match v.round() {
        x if x <= 90.0 => 3,
        x if x <= 100.0 => 2,
        x if x <= 110.0 => 1,
        x if x <= 219.0 => 0,
        _ => 3,
    }
}

fn pulse_points(v: f64) -> u8 {
    match v.round() {
        x if x <= 40.0 => 3,
        x if x <= 50.0 => 1,
        x if x <= 90.0 => 0,
        x if x <= 110.0 => 1,
        x if x <= 130.0 => 2,
        _ => 3,
    }
}

fn temperature_points(v: f64) -> u8 {
    let v = (v * 10.0).round() / 10.0;
    match v {
        x if x <= 35.0 => 3,
        x if x <= 36.0 => 1,
        x if x <= 38.0 => 0,
        x if x <= 39.0 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_796_000_000_000);

    fn obs(metric: Metric, value: f64, minutes_ago: i64) -> PatientObservation {
        PatientObservation {
            time: UnixMillis(NOW.0 - minutes_ago * UnixMillis::MINUTE),
            patient_id: "p1".into(),
            device_id: "d1".into(),
            metric,
            value,
        }
    }

    /// Every band edge of the four charts, on both sides.
    #[test]
    fn the_charts_at_their_edges() {
        use Spo2Scale::*;
        let spo2 = [
            (91.0, 3),
            (92.0, 2),
            (93.0, 2),
            (94.0, 1),
            (95.0, 1),
            (96.0, 0),
        ];
        for (v, p) in spo2 {
            assert_eq!(spo2_points(v, Scale1), p, "SpO2 {v} on scale 1");
        }
        let spo2_2 = [
            (83.0, 3),
            (84.0, 2),
            (85.0, 2),
            (86.0, 1),
            (87.0, 1),
            (88.0, 0),
            (97.0, 0),
        ];
        for (v, p) in spo2_2 {
            assert_eq!(spo2_points(v, Scale2), p, "SpO2 {v} on scale 2");
        }
        let sys = [
            (90.0, 3),
            (91.0, 2),
            (100.0, 2),
            (101.0, 1),
            (110.0, 1),
            (111.0, 0),
            (219.0, 0),
            (220.0, 3),
        ];
        for (v, p) in sys {
            assert_eq!(sys_points(v), p, "systolic {v}");
        }
        let pulse = [
            (40.0, 3),
            (41.0, 1),
            (50.0, 1),
            (51.0, 0),
            (90.0, 0),
            (91.0, 1),
            (110.0, 1),
            (111.0, 2),
            (130.0, 2),
            (131.0, 3),
        ];
        for (v, p) in pulse {
            assert_eq!(pulse_points(v), p, "pulse {v}");
        }
        let temp = [
            (35.0, 3),
            (35.1, 1),
            (36.0, 1),
            (36.1, 0),
            (38.0, 0),
            (38.1, 1),
            (39.0, 1),
            (39.1, 2),
        ];
        for (v, p) in temp {
            assert_eq!(temperature_points(v), p, "temperature {v}");
        }
        // A device's decimals are rounded as a nurse reads the chart.
        assert_eq!(pulse_points(90.4), 0);
        assert_eq!(pulse_points(90.5), 1);
        assert_eq!(temperature_points(36.04), 1);
        assert_eq!(temperature_points(36.05), 0);
    }

    /// A heart-failure patient's morning: SpO2 93 % (2), systolic 104 (1),
    /// pulse 112 (2), temperature 37.2 (0): 5, medium risk, partial.
    #[test]
    fn a_morning_at_home_scores_five() {
        let readings = [
            obs(Metric::Spo2, 93.0, 30),
            obs(Metric::Sys, 104.0, 35),
            obs(Metric::Dia, 66.0, 35),
            obs(Metric::Hr, 112.0, 35),
            obs(Metric::Temp, 37.2, 40),
        ];
        let n = score(&readings, Spo2Scale::Scale1, NOW).expect("vitals present");
        assert_eq!(n.score, 5);
        assert_eq!(n.risk, Risk::Medium);
        assert_eq!(
            n.parameters
                .iter()
                .map(|p| (p.name, p.points))
                .collect::<Vec<_>>(),
            [("spo2", 2), ("sys", 1), ("hr", 2), ("temp", 0)]
        );
        assert_eq!(n.missing, ["respiration_rate", "oxygen", "consciousness"]);
        assert_eq!(n.as_of, DbTime(UnixMillis(NOW.0 - 40 * UnixMillis::MINUTE)));
    }

    /// The latest reading counts; one older than a day does not; a single
    /// 3 makes the risk low-medium though the sum is low.
    #[test]
    fn latest_in_the_window_and_a_single_three() {
        let readings = [
            obs(Metric::Hr, 72.0, 60),
            obs(Metric::Hr, 38.0, 10),
            obs(Metric::Spo2, 85.0, 25 * 60),
        ];
        let n = score(&readings, Spo2Scale::Scale1, NOW).expect("a pulse");
        assert_eq!(n.score, 3);
        assert_eq!(n.risk, Risk::LowMedium);
        assert!(n.missing.contains(&"spo2"), "{n:?}");
        assert!(score(&readings[2..], Spo2Scale::Scale1, NOW).is_none());
    }

    /// COPD with a target of 88–92 %: 88 % is nothing on scale 2, 3 on scale 1.
    #[test]
    fn scale_two_for_a_lowered_spo2_target() {
        assert_eq!(scale_for(88.0), Spo2Scale::Scale2);
        assert_eq!(scale_for(92.0), Spo2Scale::Scale1);
        let readings = [obs(Metric::Spo2, 88.0, 5), obs(Metric::Hr, 131.0, 5)];
        let copd = score(&readings, Spo2Scale::Scale2, NOW).expect("vitals");
        assert_eq!((copd.score, copd.risk), (3, Risk::LowMedium));
        let usual = score(&readings, Spo2Scale::Scale1, NOW).expect("vitals");
        assert_eq!((usual.score, usual.risk), (6, Risk::Medium));
        let worse = [
            obs(Metric::Spo2, 88.0, 5),
            obs(Metric::Hr, 131.0, 5),
            obs(Metric::Sys, 95.0, 5),
        ];
        let n = score(&worse, Spo2Scale::Scale1, NOW).expect("vitals");
        assert_eq!((n.score, n.risk), (8, Risk::High));
    }
}
