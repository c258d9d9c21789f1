//! Backends: who can run what, and the execution itself.
//!
//! A backend answers two questions. [`Backend::check`]: can it run this model type and task on
//! this target on this machine (a typed [`SkipReason`] when not)? [`Backend::run`]: execute a
//! typed [`Call`], producing the matching [`Output`]. The dispatcher only calls `run` after
//! `check` passed.
//!
//! - [`CandleBackend`]: what [`crate::native`] implements, on the CPU (CUDA/Metal
//!   with the cargo features).
//! - [`MaxBackend`]: Modular MAX over `max serve`'s OpenAI-compatible HTTP API.

use std::fmt;

use serde::Serialize;
use skillgen_vocab::Task;

use crate::caps::{Capabilities, DeviceSupport};
use crate::dispatch::SkipReason;
use crate::info::SkillInfo;
use crate::request::{Call, Output};
use crate::skill::SkillState;
use crate::{SkillError, Target};

/// The two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// candle (CPU, CUDA, Metal).
    Candle,
    /// Modular MAX, over its OpenAI-compatible HTTP API.
    Max,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Candle => "candle",
            BackendKind::Max => "MAX",
        })
    }
}

/// What a backend check needs to know.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// The skill.
    pub info: &'a SkillInfo,
    /// The task to run.
    pub task: Task,
    /// The target to run it on.
    pub target: Target,
    /// This machine.
    pub caps: &'a Capabilities,
    /// Extra names of the loaded model (`_name_or_path`, directory name, `architectures`) that
    /// a MAX server's model id may match, besides the model type and MAX architecture names.
    pub model_names: &'a [&'a str],
    /// Whether `mojo_max` was asked for (explicitly, `SKILLGEN_TARGET` or
    /// `USE_MOJO_MAX_TARGET`). Only then may the MAX backend start a `max serve` process
    /// itself; auto uses MAX only when `MAX_SERVE_URL` already serves the model, so a plain
    /// call never spawns a ~1 GB server as a side effect.
    pub max_requested: bool,
}

/// A backend.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// `Ok` when this backend can run `input.task` of `input.info` on `input.target` here.
    fn check(&self, input: &CheckInput<'_>) -> Result<(), SkipReason>;
    /// Run `call` on `target`. Only called after [`Backend::check`] passed.
    fn run(
        &self,
        state: &SkillState,
        target: Target,
        task: Task,
        call: Call,
    ) -> Result<Output, SkillError>;
}

mod candle;
mod max;

pub use candle::{CandleBackend, candle_implements};
pub use max::{MaxBackend, served_matches};

static CANDLE: CandleBackend = CandleBackend;
static MAX: MaxBackend = MaxBackend;

/// The backend serving `target`.
pub fn backend_for(target: Target) -> &'static dyn Backend {
    match target {
        Target::MojoMax => &MAX,
        _ => &CANDLE,
    }
}

/// `Ok` when the device `n` of a GPU kind is compiled in and present.
pub(crate) fn device(
    support: &DeviceSupport,
    kind: &'static str,
    feature: &'static str,
    n: u32,
) -> Result<(), SkipReason> {
    if !support.compiled_in {
        return Err(SkipReason::NotCompiledIn { feature });
    }
    if n >= support.devices {
        return Err(SkipReason::NoDevice {
            kind,
            ordinal: n,
            found: support.devices,
            detail: support.detail.clone(),
        });
    }
    Ok(())
}
