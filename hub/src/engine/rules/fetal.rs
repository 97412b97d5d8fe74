//! Fetal heart rules during a CTG session (being wired to `engine::ctg`).

use super::{Context, Input, Rule, RuleId};
use crate::engine::patient::PatientState;

pub struct FetalBaseline;
pub struct FetalVariability;
pub struct FetalDeceleration;
pub struct CtgSignalLoss;

macro_rules! pending_rule {
    ($t:ident, $id:ident) => {
        impl Rule for $t {
            fn id(&self) -> RuleId {
                RuleId::$id
            }
            fn on_input(
                &self,
                _state: &mut PatientState,
                _input: &Input<'_>,
                _ctx: &mut Context<'_>,
            ) {
            }
        }
    };
}

pending_rule!(FetalBaseline, FetalBaseline);
pending_rule!(FetalVariability, FetalVariability);
pending_rule!(FetalDeceleration, FetalDeceleration);
pending_rule!(CtgSignalLoss, CtgSignalLoss);
