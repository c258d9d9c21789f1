//! The hand-written runtime of skillgen's generated skills: targets, capability detection,
//! dispatch with recorded fallbacks, and the backends.
//!
//! A generated skill is a struct with `#[derive(Skill)]` (re-exported here; the derive and the
//! trait share the name, like serde). The derive emits its [`SkillInfo`], the [`Skill`] and
//! [`MojoMaxTarget`] impls, `load`, and one typed method per capability, each delegating to this
//! crate.
//!
//! # Honesty
//! One native path runs real inference: `embed` for model type `bert` on the CPU, with
//! candle-transformers ([`candle_bert`]). Every other request ends in a typed error carrying the
//! dispatch trace: candle reports "task not implemented by the candle backend", and a MAX
//! server serving the model yields "the MAX client is not implemented in this build". MAX
//! capability detection (`MAX_SERVE_URL` answering `GET /v1/models`, a `max` executable) is real.

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
