//! The hand-written runtime of skillgen's generated skills: targets, capability detection,
//! dispatch with recorded fallbacks, and the backends.
//!
//! A generated skill is a struct with `#[derive(Skill)]` (re-exported here; the derive and the
//! trait share the name, like serde). The derive emits its [`SkillInfo`], the [`Skill`] and
//! [`MojoMaxTarget`] impls, `load`, and one typed method per capability, each delegating to this
//! crate.
//!
//! # Honesty
//! Inference is real or it is a typed error. The candle backend ([`native`]) runs the
//! (model type, task) pairs listed by [`backend::candle_implements`], each checked against
//! PyTorch/transformers references in the repository's `fixtures/`; the MAX backend ([`max`])
//! talks to a real `max serve`. Everything else ends in [`SkillError::NoBackend`] (or a
//! recorded fallback) naming every target tried and why it could not run the request.

pub mod backend;
pub mod candle_bert;
pub mod caps;
pub mod dispatch;
pub mod env;
mod error;
mod info;
pub mod max;
pub mod native;
mod private;
mod registry;
pub mod request;
mod ser;
mod skill;
mod target;

#[doc(hidden)]
pub mod __private {
    pub use crate::private::*;
}

pub use caps::Capabilities;
pub use dispatch::{Dispatch, DispatchTable, Resolved, Skip, SkipReason, TargetSource, Work};
pub use env::{EnvSource, MapEnv, ProcessEnv};
pub use error::SkillError;
pub use info::{SkillInfo, TaskInfo};
pub use registry::Registry;
pub use request::Response;
pub use skill::{DynSkill, ModelConfig, MojoMaxTarget, Skill, SkillState, read_config};
pub use target::{Target, TargetParseError, TargetSpec};

pub use skillgen_macros::Skill;
pub use skillgen_vocab::{Capability, Family, Modality, Task};
