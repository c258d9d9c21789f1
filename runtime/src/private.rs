//! Support for code emitted by `#[derive(Skill)]`. Not a public API: only the names the
//! expansion uses.

pub use crate::backend::Backends;
pub use crate::info::{SkillInfo, TaskInfo};
pub use crate::request::*;
pub use crate::skill::{MojoMaxTarget, Skill, SkillState};
pub use crate::stream::TokenStream;
pub use crate::{SkillError, TargetSpec};
pub use core::option::Option::{None, Some};
pub use core::result::Result;
pub use skillgen_vocab::{Backend, Family, Modality, NativeImpl, Task};
pub use std::path::Path;

/// `Type::load`: load the state over the skill's backends and wrap it.
pub fn load<S: Skill>(dir: &Path, spec: TargetSpec) -> Result<S, SkillError> {
    SkillState::load(S::INFO, S::backends(), dir, spec).map(S::from_state)
}
