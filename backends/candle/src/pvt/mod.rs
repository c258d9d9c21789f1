//! Native image classification with pyramid vision transformers (see [`crate`]): PVT, PVT v2
//! and SegFormer's Mix Transformer ([`model`]), CvT ([`cvt`]), LeViT ([`levit`]),
//! FocalNet ([`focalnet`]: focal modulation in place of attention), run through the CNN family's image classifier
//! ([`crate::cnn::CnnClassifier`]: the same preprocessing and heads over a
//! [`crate::cnn::Network`]).

use skillgen_runtime::request::{Call, Output};
use skillgen_runtime::{Model, SkillError, Target, Task};

pub(crate) mod cvt;
pub(crate) mod focalnet;
pub(crate) mod levit;
pub(crate) mod model;

/// The model types the `pvt` implementation knows.
pub const MODEL_TYPES: &[&str] = &["cvt", "focalnet", "levit", "pvt", "pvt_v2", "segformer"];

crate::architecture_struct!(
    Pvt,
    "The `pvt` implementation: pyramid vision transformers."
);

fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    crate::cnn::run(state, target, task, call)
}
