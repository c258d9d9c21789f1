//! The core runtime of skillgen's generated skills: skill info, the `Skill` trait, targets,
//! the capability report, resolution, typed requests and responses, errors, the [`Backend`]
//! interface and dispatch with recorded fallbacks.
//!
//! The core runs no model and talks to no server: it depends on neither candle, tokenizers,
//! an image decoder nor an HTTP client. Backends live in their own crates (`skillgen-candle`,
//! `skillgen-max`) and implement [`Backend`]; the `skills` crate turns them on with cargo
//! features and hands its [`Backends`] set to every skill.
//!
//! A generated skill is a struct with `#[derive(Skill)]` (re-exported here; the derive and the
//! trait share the name, like serde). The derive emits its [`SkillInfo`], the [`Skill`] and
//! [`MojoMaxTarget`] impls, `load`, and one typed method per capability, each delegating to this
//! crate.
//!
//! # Honesty
//! Inference is real or it is a typed error. What runs where is one table, carried by the
//! registry and read through [`SkillInfo::support`]: candle runs the (model type, task) pairs
//! whose `native:` implementation is checked against PyTorch/transformers references in the
//! repository's `fixtures/`; MAX runs what its architectures serve, through a real
//! `max serve`. Everything else ends in [`SkillError::NoBackend`] (or a recorded fallback)
//! naming every target tried and why it could not run the request.
//!
//! # Observability
//! The core emits [`tracing`] spans and events (target resolution, each dispatch decision and
//! skip, run-time fallbacks); backends emit their own (model loads, a MAX server's start).
//! The library never prints: install a `tracing` subscriber to see them.

pub mod backend;
pub mod caps;
mod decision;
pub mod dispatch;
pub mod env;
mod error;
pub mod gguf;
mod info;
mod model;
mod private;
mod quantize;
mod registry;
pub mod request;
mod ser;
mod skill;
pub mod stream;
mod target;

#[doc(hidden)]
pub mod __private {
    pub use crate::private::*;
}

pub use backend::{Backend, BackendKind, Backends, CheckInput, Failure, RunContext};
pub use caps::Capabilities;
pub use dispatch::{Dispatch, DispatchTable, Resolved, Skip, SkipReason, TargetSource, Work};
pub use env::{EnvSource, MapEnv, ProcessEnv};
pub use error::SkillError;
pub use info::{SkillInfo, TaskInfo};
pub use model::{Model, ModelConfig, gguf_of, read_config};
pub use quantize::{Quantization, QuantizationParseError};
pub use registry::Registry;
pub use request::Response;
pub use skill::{DynSkill, MojoMaxTarget, Skill, SkillState};
pub use stream::TokenStream;
pub use target::{Target, TargetParseError, TargetSpec};

pub use skillgen_macros::Skill;
pub use skillgen_vocab::{
    Capability, Family, MAX_EMBEDDING_ARCHITECTURES, MaxJob, Modality, NativeImpl, Support, Task,
    max_job,
};
