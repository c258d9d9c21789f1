//! The candle backend: runs what [`crate::native`] implements.

use skillgen_vocab::Task;

use super::{Backend, BackendKind, CheckInput, device};
use crate::dispatch::SkipReason;
use crate::request::{Call, Output};
use crate::skill::SkillState;
use crate::{SkillError, Target};

/// The candle backend (CPU, CUDA, Metal). Implements what [`candle_implements`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct CandleBackend;

impl Backend for CandleBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Candle
    }

    fn check(&self, input: &CheckInput<'_>) -> Result<(), SkipReason> {
        match input.target {
            Target::Cpu => {}
            Target::Cuda(n) => device(&input.caps.cuda, "CUDA", "cuda", n)?,
            Target::Metal(n) => device(&input.caps.metal, "Metal", "metal", n)?,
            Target::MojoMax => {
                return Err(SkipReason::TaskNotImplemented {
                    backend: BackendKind::Candle,
                });
            }
        }
        if candle_implements(input.info.model_type, input.task, input.target) {
            Ok(())
        } else {
            Err(SkipReason::TaskNotImplemented {
                backend: BackendKind::Candle,
            })
        }
    }

    fn run(
        &self,
        state: &SkillState,
        target: Target,
        task: Task,
        call: Call,
    ) -> Result<Output, SkillError> {
        crate::native::run(state, target, task, call)
    }
}

/// Whether the candle backend runs `task` of `model_type` on `target` in this build (device
/// availability aside: [`Backend::check`] also checks that). See [`crate::native`].
pub fn candle_implements(model_type: &str, task: Task, target: Target) -> bool {
    crate::native::implements(model_type, task, target)
}
