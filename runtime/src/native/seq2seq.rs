//! Native seq2seq (see [`crate::native`]). Nothing implemented yet.

use skillgen_vocab::Task;

use crate::request::{Call, Output};
use crate::skill::SkillState;
use crate::{SkillError, Target};

/// Whether this area runs `task` of `model_type`.
pub(crate) fn implements(_model_type: &str, _task: Task) -> bool {
    false
}

/// Run `call`.
pub(crate) fn run(
    state: &SkillState,
    target: Target,
    task: Task,
    _call: Call,
) -> Result<Output, SkillError> {
    Err(super::not_implemented(state, target, task))
}
