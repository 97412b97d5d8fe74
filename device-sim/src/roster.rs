//! Who is simulated: patients, their programs, devices and scripted episodes.
//!
//! The roster is a pure function of `(seed, n)`. Programs and episodes follow
//! the patient's position (so every program and device kind is there from
//! three patients on, and the demo's episodes always happen), names and
//! physiology follow a generator derived from the seed and the position (so
//! patient 7 is the same person whether the roster has 10 patients or 500).
//!
//! Names are invented: a first name and a surname drawn independently from
//! lists of common Swedish names. No record of a real person is used.

use chrono_tz::Tz;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Serialize, Serializer};
use vaka_gateway::model::DeviceKind;

use crate::localtime;
use crate::physiology::{
    BpModel, BpProfile, CtgModel, DispenserModel, FallModel, Physiology, ScaleModel,
};
use crate::random::{self, Stream};

/// A care program (ARCHITECTURE §3): decides the devices and default rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    HeartFailure,
    Hypertension,
    PregnancyDiabetes,
    ElderlyAtHome,
}

impl Program {
    pub const ALL: [Program; 4] = [
        Program::HeartFailure,
        Program::Hypertension,
        Program::PregnancyDiabetes,
        Program::ElderlyAtHome,
    ];

    /// The wire name used by the hub's API, e.g. `"heart_failure"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Program::HeartFailure => "heart_failure",
            Program::Hypertension => "hypertension",
            Program::PregnancyDiabetes => "pregnancy_diabetes",
            Program::ElderlyAtHome => "elderly_at_home",
        }
    }

    /// The devices a patient of the program has at home.
    pub fn device_kinds(self) -> &'static [DeviceKind] {
        match self {
            Program::HeartFailure => &[DeviceKind::Scale, DeviceKind::BpCuff],
            Program::Hypertension => &[DeviceKind::BpCuff],
            // Pregnancy with diabetes: home CTG, and BP for pre-eclampsia.
            Program::PregnancyDiabetes => &[DeviceKind::FetalMonitor, DeviceKind::BpCuff],
            Program::ElderlyAtHome => &[DeviceKind::Dispenser, DeviceKind::FallSensor],
        }
    }
}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the simulator makes happen to a patient, deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Episode {
    /// Heart failure: gains 1 kg a day over the last days, so the first
    /// weight today is more than 2 kg above that of 3 days ago.
    FluidRetention,
    /// A BP reading of about 192/124 some 30 s into the run, and a repeat
    /// still above 180 when the hub asks for one.
    HypertensiveCrisis,
    /// A fall some 90 s into the run.
    Fall,
    /// A fall some 150 s into the run, cancelled by the patient 10 s later.
    CancelledFall,
    /// The help button pressed some 2 min into the run.
    HelpButton,
    /// Forgets yesterday's morning dose (and misses more often than most).
    MissedDose,
    /// The fall sensor's battery is below 20 %.
    LowBattery,
    /// Is in a CTG session from the moment the run starts.
    CtgAtStart,
}

/// One simulated device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimDevice {
    /// `[A-Za-z0-9_-]{1,64}`, e.g. `scale-0007`.
    pub id: String,
    #[serde(serialize_with = "kind_name")]
    pub kind: DeviceKind,
}

fn kind_name<S: Serializer>(kind: &DeviceKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

/// One simulated patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimPatient {
    /// e.g. `p-0007`.
    pub id: String,
    /// Invented: a Swedish-sounding first name and surname.
    pub name: String,
    pub program: Program,
    /// IANA zone of the patient's local days, `"Europe/Stockholm"`.
    pub timezone: String,
    pub devices: Vec<SimDevice>,
    /// What will happen to this patient in a run (see [`Episode`]).
    pub episodes: Vec<Episode>,
    #[serde(skip)]
    pub(crate) body: Physiology,
}

impl SimPatient {
    /// The patient's device of `kind`, if any.
    pub fn device(&self, kind: DeviceKind) -> Option<&SimDevice> {
        self.devices.iter().find(|d| d.kind == kind)
    }

    pub fn has(&self, episode: Episode) -> bool {
        self.episodes.contains(&episode)
    }

    pub(crate) fn tz(&self) -> Tz {
        localtime::zone(&self.timezone)
    }
}

/// The simulated population.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Roster {
    pub patients: Vec<SimPatient>,
}

impl Roster {
    /// The patient that owns device `id`, with the device.
    pub fn find_device(&self, id: &str) -> Option<(&SimPatient, &SimDevice)> {
        self.patients
            .iter()
            .find_map(|p| p.devices.iter().find(|d| d.id == id).map(|d| (p, d)))
    }

    /// Every device of every patient.
    pub fn devices(&self) -> impl Iterator<Item = (&SimPatient, &SimDevice)> {
        self.patients
            .iter()
            .flat_map(|p| p.devices.iter().map(move |d| (p, d)))
    }
}

/// The program of the patient at each position, repeating every ten: 3 heart
/// failure, 2 hypertension, 2 pregnancy, 3 elderly. The first three cover all
/// five device kinds.
const CYCLE: [Program; 10] = [
    Program::HeartFailure,
    Program::PregnancyDiabetes,
    Program::ElderlyAtHome,
    Program::Hypertension,
    Program::HeartFailure,
    Program::ElderlyAtHome,
    Program::Hypertension,
    Program::HeartFailure,
    Program::PregnancyDiabetes,
    Program::ElderlyAtHome,
];

/// The program of the patient at `index`, and how many patients of that
/// program come before it.
fn program_at(index: usize) -> (Program, usize) {
    let program = CYCLE[index % CYCLE.len()];
    let per_cycle = CYCLE.iter().filter(|&&p| p == program).count();
    let earlier_in_cycle = CYCLE[..index % CYCLE.len()]
        .iter()
        .filter(|&&p| p == program)
        .count();
    (program, index / CYCLE.len() * per_cycle + earlier_in_cycle)
}

/// The scripted episodes, by program and the patient's place in it.
fn episodes_of(program: Program, ordinal: usize) -> Vec<Episode> {
    match (program, ordinal) {
        (Program::HeartFailure, 0 | 1) => vec![Episode::FluidRetention],
        (Program::Hypertension, 0) => vec![Episode::HypertensiveCrisis],
        (Program::PregnancyDiabetes, 0) => vec![Episode::CtgAtStart],
        (Program::ElderlyAtHome, 0) => vec![Episode::Fall],
        (Program::ElderlyAtHome, 1) => vec![Episode::CancelledFall],
        (Program::ElderlyAtHome, 2) => vec![Episode::HelpButton],
        (Program::ElderlyAtHome, 3) => vec![Episode::MissedDose],
        (Program::ElderlyAtHome, 4) => vec![Episode::LowBattery],
        _ => Vec::new(),
    }
}

/// How many pregnant patients start a full CTG session in the first minutes
/// (one per recording carried; the first at once, then every 2 min).
const SCRIPTED_CTG_SESSIONS: usize = 4;

/// Same seed and n → identical roster (ids, names, programs, devices,
/// episodes). Patient `i` depends only on `seed` and `i`, so
/// `roster(s, 10).patients` is a prefix of `roster(s, 50).patients`.
pub fn roster(seed: u64, n: usize) -> Roster {
    Roster {
        patients: (0..n).map(|i| patient(seed, i)).collect(),
    }
}

fn patient(seed: u64, index: usize) -> SimPatient {
    let number = index + 1;
    let (program, ordinal) = program_at(index);
    let episodes = episodes_of(program, ordinal);
    let patient_seed = random::derive(seed, &[index as u64]);
    let mut rng = random::stream(patient_seed, Stream::Patient, 0);
    let name = name(&mut rng, program);

    let devices = program
        .device_kinds()
        .iter()
        .map(|&kind| SimDevice {
            id: format!("{}-{number:04}", device_prefix(kind)),
            kind,
        })
        .collect();

    let has = |e| episodes.contains(&e);
    let kinds = program.device_kinds();
    let body = Physiology {
        seed: patient_seed,
        scale: kinds
            .contains(&DeviceKind::Scale)
            .then(|| ScaleModel::draw(&mut rng, has(Episode::FluidRetention))),
        bp: kinds.contains(&DeviceKind::BpCuff).then(|| {
            let profile = match program {
                Program::Hypertension => BpProfile::Hypertension,
                Program::PregnancyDiabetes => BpProfile::Pregnancy,
                _ => BpProfile::HeartFailure,
            };
            BpModel::draw(&mut rng, profile, has(Episode::HypertensiveCrisis))
        }),
        dispenser: kinds
            .contains(&DeviceKind::Dispenser)
            .then(|| DispenserModel::draw(&mut rng, has(Episode::MissedDose))),
        ctg: kinds.contains(&DeviceKind::FetalMonitor).then(|| {
            let scripted = (ordinal < SCRIPTED_CTG_SESSIONS).then_some(ordinal as u32);
            CtgModel::draw(&mut rng, scripted)
        }),
        fall: kinds
            .contains(&DeviceKind::FallSensor)
            .then(|| FallModel::draw(&mut rng, has(Episode::LowBattery))),
    };

    SimPatient {
        id: format!("p-{number:04}"),
        name,
        program,
        timezone: localtime::DEFAULT_TZ.name().to_owned(),
        devices,
        episodes,
        body,
    }
}

/// The device id prefix of a kind: `scale-0007`, `bp-0007`, `ctg-0012`, …
pub(crate) fn device_prefix(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Scale => "scale",
        DeviceKind::BpCuff => "bp",
        DeviceKind::PulseOximeter => "spo2",
        DeviceKind::Thermometer => "temp",
        DeviceKind::FetalMonitor => "ctg",
        DeviceKind::Dispenser => "disp",
        DeviceKind::FallSensor => "fall",
    }
}

// Common Swedish names by generation, combined at random: nobody in
// particular.
const OLDER_WOMEN: &[&str] = &[
    "Inga",
    "Birgitta",
    "Gunnel",
    "Margareta",
    "Kerstin",
    "Ulla",
    "Britt",
    "Siv",
    "Karin",
    "Marianne",
    "Ingrid",
    "Solveig",
    "Barbro",
    "Agneta",
    "Gunilla",
    "Elisabeth",
    "Aina",
    "Majvor",
];
const OLDER_MEN: &[&str] = &[
    "Gunnar", "Sven", "Bengt", "Lennart", "Kjell", "Rolf", "Stig", "Göran", "Åke", "Bertil",
    "Sture", "Ingvar", "Leif", "Evert", "Olle", "Arne", "Tage", "Holger",
];
const MIDDLE: &[&str] = &[
    "Anders", "Mikael", "Johan", "Peter", "Fredrik", "Magnus", "Lars", "Håkan", "Annika", "Helena",
    "Camilla", "Malin", "Susanne", "Eva", "Åsa", "Maria", "Lena", "Jörgen",
];
const YOUNGER_WOMEN: &[&str] = &[
    "Elsa", "Maja", "Alva", "Ebba", "Wilma", "Saga", "Linnea", "Freja", "Klara", "Tove", "Hanna",
    "Sara", "Amanda", "Emma", "Matilda", "Ida", "Johanna", "Frida",
];
const SURNAMES: &[&str] = &[
    "Berglund",
    "Lindqvist",
    "Holmberg",
    "Sjöberg",
    "Lundgren",
    "Nyström",
    "Ekström",
    "Wikström",
    "Forsberg",
    "Hedlund",
    "Sandberg",
    "Åkesson",
    "Blomqvist",
    "Engström",
    "Dahlberg",
    "Lindholm",
    "Strand",
    "Norberg",
    "Sundin",
    "Edlund",
    "Hägglund",
    "Backman",
    "Östlund",
    "Granström",
    "Bergkvist",
    "Löfgren",
    "Viklund",
    "Nordin",
    "Sjögren",
    "Fält",
    "Ågren",
    "Marklund",
];

fn pick<'a>(rng: &mut ChaCha8Rng, names: &[&'a str]) -> &'a str {
    names[rng.random_range(0..names.len())]
}

fn name(rng: &mut ChaCha8Rng, program: Program) -> String {
    let first = match program {
        Program::PregnancyDiabetes => pick(rng, YOUNGER_WOMEN),
        Program::ElderlyAtHome => {
            if rng.random_bool(0.6) {
                pick(rng, OLDER_WOMEN)
            } else {
                pick(rng, OLDER_MEN)
            }
        }
        Program::HeartFailure | Program::Hypertension => match rng.random_range(0..3) {
            0 => pick(rng, OLDER_WOMEN),
            1 => pick(rng, OLDER_MEN),
            _ => pick(rng, MIDDLE),
        },
    };
    format!("{first} {}", pick(rng, SURNAMES))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use vaka_gateway::DeviceId;

    #[test]
    fn ordinals_count_earlier_patients_of_the_program() {
        for program in Program::ALL {
            let ordinals: Vec<usize> = (0..50)
                .map(program_at)
                .filter(|(p, _)| *p == program)
                .map(|(_, o)| o)
                .collect();
            assert_eq!(ordinals, (0..ordinals.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn three_patients_cover_every_device_kind() {
        let r = roster(1, 3);
        let kinds: HashSet<_> = r.devices().map(|(_, d)| d.kind).collect();
        for k in [
            DeviceKind::Scale,
            DeviceKind::BpCuff,
            DeviceKind::FetalMonitor,
            DeviceKind::Dispenser,
            DeviceKind::FallSensor,
        ] {
            assert!(kinds.contains(&k), "{k} missing");
        }
    }

    #[test]
    fn ids_are_unique_and_valid() {
        let r = roster(42, 120);
        let mut seen = HashSet::new();
        for (p, d) in r.devices() {
            assert!(DeviceId::parse(&d.id).is_some(), "{}", d.id);
            assert!(seen.insert(d.id.clone()), "duplicate {}", d.id);
            assert!(d.id.ends_with(&p.id[2..]), "{} of {}", d.id, p.id);
        }
        assert_eq!(r.patients[6].id, "p-0007");
        assert_eq!(
            r.find_device("bp-0007").map(|(p, _)| p.id.as_str()),
            Some("p-0007")
        );
    }

    #[test]
    fn names_are_two_words_from_the_lists() {
        for p in roster(9, 60).patients {
            let (first, last) = p.name.split_once(' ').expect("first and last name");
            assert!(SURNAMES.contains(&last), "{last}");
            let lists = [OLDER_WOMEN, OLDER_MEN, MIDDLE, YOUNGER_WOMEN];
            assert!(lists.iter().any(|l| l.contains(&first)), "{first}");
            if p.program == Program::PregnancyDiabetes {
                assert!(YOUNGER_WOMEN.contains(&first));
            }
        }
    }

    #[test]
    fn serializes_without_private_physiology() {
        let json = serde_json::to_value(roster(42, 2)).unwrap();
        let p = &json["patients"][0];
        assert_eq!(p["program"], "heart_failure");
        assert_eq!(p["devices"][0]["kind"], "scale");
        assert_eq!(p["timezone"], "Europe/Stockholm");
        assert_eq!(p["episodes"][0], "fluid_retention");
        assert!(p.get("body").is_none());
    }
}
