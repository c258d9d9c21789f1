//! Native image classification with pyramid vision transformers (see [`crate`]): PVT, PVT v2
//! and SegFormer's Mix Transformer ([`model`]), run through the CNN family's image classifier
//! ([`crate::cnn::CnnClassifier`]: the same preprocessing and heads over a
//! [`crate::cnn::Network`]).

use skillgen_runtime::request::{Call, Output};
use skillgen_runtime::{Model, SkillError, Target, Task};

pub(crate) mod model;

pub use model::MODEL_TYPES;

crate::architecture_struct!(
    Pvt,
    "The `pvt` implementation: pyramid vision transformers."
);

fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    crate::cnn::run(state, target, task, call)
}
