//! Who may see what: roles, care units and their responsibilities.
//!
//! Pure decisions, no I/O, so they can be tested case by case. The HTTP
//! layer asks the store which of the caller's units a patient is enrolled
//! in, and this module decides what follows from it (ARCHITECTURE §3):
//!
//! - a patient is visible to staff of a unit the patient is enrolled in;
//! - a region unit (vårdcentral, ward) is responsible for clinical care, a
//!   municipal home-care unit for dispensers, falls and safety alarms;
//!   technical alerts concern whoever follows the patient;
//! - clinical safety before tidiness: when no unit of the patient carries a
//!   responsibility (a fall sensor at a patient without home care), the
//!   alert goes to everyone who sees the patient rather than to nobody.

use serde::Serialize;

use crate::engine::rules::RuleId;
use vaka_gateway::protocol_names as wire_enum;

wire_enum! {
    /// What a member of staff may do beyond seeing her units' patients and
    /// acting on their alerts: a physician also changes monitoring plans;
    /// an administrator manages units, staff, patients and devices and
    /// searches the audit log.
    Role {
        Nurse => "nurse",
        Physician => "physician",
        Admin => "admin",
    }
}

wire_enum! {
    /// What kind of organisation a care unit is: a region's vårdcentral or
    /// ward (clinical care), or a municipal home-care unit (dispensers,
    /// falls, safety alarms).
    UnitKind {
        Region => "region",
        Municipality => "municipality",
    }
}

/// Which kind of unit an alert of a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Responsibility {
    Clinical,
    HomeCare,
    /// Device trouble: whoever follows the patient needs to know.
    Shared,
}

impl Responsibility {
    pub fn of(rule: RuleId) -> Responsibility {
        use RuleId::*;
        match rule {
            MissedDose | RefillDue | DispenserFault | Fall | HelpButton => Responsibility::HomeCare,
            DeviceOffline | LowBattery | CtgSignalLoss | DeviceFlooding => Responsibility::Shared,
            _ => Responsibility::Clinical,
        }
    }

    fn carried_by(self, kind: UnitKind) -> bool {
        match self {
            Responsibility::Shared => true,
            Responsibility::Clinical => kind == UnitKind::Region,
            Responsibility::HomeCare => kind == UnitKind::Municipality,
        }
    }
}

/// How a caller relates to one patient: the kinds of the caller's units
/// the patient is enrolled in, and the kinds of all the patient's units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatientAccess {
    /// Kinds of the patient's units that the caller belongs to.
    pub through: Vec<UnitKind>,
    /// Kinds of every unit the patient is enrolled in.
    pub enrolled: Vec<UnitKind>,
}

impl PatientAccess {
    /// Full access, for the service token and administrators.
    pub fn everything() -> PatientAccess {
        PatientAccess {
            through: vec![UnitKind::Region, UnitKind::Municipality],
            enrolled: vec![UnitKind::Region, UnitKind::Municipality],
        }
    }

    /// Whether the caller may see the patient at all.
    pub fn sees_patient(&self) -> bool {
        !self.through.is_empty()
    }

    /// Whether the caller should see alerts of `rule` for this patient.
    pub fn sees_rule(&self, rule: RuleId) -> bool {
        let duty = Responsibility::of(rule);
        if self.through.iter().any(|k| duty.carried_by(*k)) {
            return true;
        }
        // Nobody of the patient's units carries this duty: rather everyone
        // who follows the patient than no one.
        self.sees_patient() && !self.enrolled.iter().any(|k| duty.carried_by(*k))
    }
}

/// A care unit, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CareUnit {
    #[serde(rename = "id")]
    pub unit_id: String,
    pub name: String,
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use RuleId::*;
    use UnitKind::*;

    fn access(through: &[UnitKind], enrolled: &[UnitKind]) -> PatientAccess {
        PatientAccess {
            through: through.to_vec(),
            enrolled: enrolled.to_vec(),
        }
    }

    #[test]
    fn a_patient_outside_the_callers_units_is_invisible() {
        let a = access(&[], &[Region]);
        assert!(!a.sees_patient());
        for rule in [Fall, BpCrisis, LowBattery] {
            assert!(!a.sees_rule(rule), "{rule:?}");
        }
    }

    #[test]
    fn region_and_municipality_split_the_alerts_of_a_shared_patient() {
        let region = access(&[Region], &[Region, Municipality]);
        let home_care = access(&[Municipality], &[Region, Municipality]);
        assert!(region.sees_rule(WeightGain3d) && region.sees_rule(Spo2));
        assert!(!region.sees_rule(MissedDose) && !region.sees_rule(Fall));
        assert!(home_care.sees_rule(MissedDose) && home_care.sees_rule(Fall));
        assert!(home_care.sees_rule(HelpButton) && home_care.sees_rule(DispenserFault));
        assert!(!home_care.sees_rule(WeightGain3d) && !home_care.sees_rule(BpCrisis));
        // A flat battery concerns both.
        assert!(region.sees_rule(LowBattery) && home_care.sees_rule(LowBattery));
    }

    #[test]
    fn a_duty_no_unit_carries_goes_to_everyone_who_sees_the_patient() {
        // A fall sensor at a heart-failure patient without home care: the
        // vårdcentral gets the fall.
        let region_only = access(&[Region], &[Region]);
        assert!(region_only.sees_rule(Fall));
        assert!(region_only.sees_rule(MissedDose));
        // A municipal patient without a region unit: clinical alerts reach
        // the home-care nurse.
        let municipal_only = access(&[Municipality], &[Municipality]);
        assert!(municipal_only.sees_rule(BpCrisis));
    }
}
