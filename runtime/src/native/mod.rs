//! Native inference with candle-transformers: which (model type, task) pairs run, and running
//! them. Each area module owns its model types:
//!
//! - `encoders`: BERT-like encoders (embeddings, fill-mask, classification);
//! - `decoders`: causal language models (generation);
//! - `seq2seq`: encoder–decoder text models (T5, Marian);
//! - `vision`: image models (ViT, CLIP, SigLIP);
//! - `audio`: speech models (Whisper).
//!
//! Every area answers `implements(model_type, task)` (a pure table lookup, used by dispatch
//! planning, so it must be cheap) and `run(state, device, task, call)`.

use candle_core::Device;
use skillgen_vocab::Task;

use crate::backend::BackendKind;
use crate::request::{Call, Output};
use crate::skill::SkillState;
use crate::{SkillError, Target};

pub(crate) mod audio;
pub(crate) mod decoders;
pub(crate) mod encoders;
pub(crate) mod seq2seq;
pub(crate) mod vision;

/// Whether candle runs `task` of `model_type` on `target` in this build.
pub fn implements(model_type: &str, task: Task, target: Target) -> bool {
    if target == Target::MojoMax {
        return false;
    }
    encoders::implements(model_type, task)
        || decoders::implements(model_type, task)
        || seq2seq::implements(model_type, task)
        || vision::implements(model_type, task)
        || audio::implements(model_type, task)
}

/// The candle device for `target`.
pub fn device(target: Target) -> Result<Device, SkillError> {
    let err = |detail: String| SkillError::Backend {
        backend: BackendKind::Candle,
        detail,
    };
    match target {
        Target::Cpu => Ok(Device::Cpu),
        Target::Cuda(n) => {
            Device::new_cuda(n as usize).map_err(|e| err(format!("opening cuda:{n}: {e}")))
        }
        Target::Metal(n) => {
            Device::new_metal(n as usize).map_err(|e| err(format!("opening metal:{n}: {e}")))
        }
        Target::MojoMax => Err(err("mojo_max is not a candle device".to_owned())),
    }
}

/// Run `call` (already checked by dispatch) on `target`.
pub fn run(
    state: &SkillState,
    target: Target,
    task: Task,
    call: Call,
) -> Result<Output, SkillError> {
    let model_type = state.info().model_type;
    if encoders::implements(model_type, task) {
        encoders::run(state, target, task, call)
    } else if decoders::implements(model_type, task) {
        decoders::run(state, target, task, call)
    } else if seq2seq::implements(model_type, task) {
        seq2seq::run(state, target, task, call)
    } else if vision::implements(model_type, task) {
        vision::run(state, target, task, call)
    } else if audio::implements(model_type, task) {
        audio::run(state, target, task, call)
    } else {
        Err(not_implemented(state, target, task))
    }
}

/// The error for a (model type, task, target) that the candle backend does not run.
pub(crate) fn not_implemented(state: &SkillState, target: Target, task: Task) -> SkillError {
    SkillError::Backend {
        backend: BackendKind::Candle,
        detail: format!(
            "task `{task}` of model type `{}` on {target} is not implemented by the candle backend",
            state.info().model_type
        ),
    }
}
