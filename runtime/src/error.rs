//! The one error type of the runtime. Every variant says what is missing or wrong.

use std::path::PathBuf;

use skillgen_vocab::{Capability, Task};

use crate::decision::Skip;
use skillgen_vocab::Backend as BackendKind;

fn join<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

fn did_you_mean(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

fn or_none<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        join(items, ", ")
    }
}

/// Everything that can go wrong loading or running a skill.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkillError {
    /// The model directory does not exist.
    #[error("model directory {} does not exist", path.display())]
    ModelDirMissing {
        /// The directory.
        path: PathBuf,
    },
    /// The model path is not a directory.
    #[error("model path {} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The directory has no `config.json`.
    #[error("no config.json in model directory {} (expected {})", dir.display(), path.display())]
    ConfigMissing {
        /// The model directory.
        dir: PathBuf,
        /// The expected config path.
        path: PathBuf,
    },
    /// `config.json` could not be read.
    #[error("cannot read {}: {detail}", path.display())]
    ConfigRead {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        detail: String,
    },
    /// `config.json` is not valid JSON or not an object.
    #[error("{} is not a valid JSON object: {detail}", path.display())]
    ConfigInvalid {
        /// The config path.
        path: PathBuf,
        /// The parse error.
        detail: String,
    },
    /// `config.json` has no string `model_type`.
    #[error("{} has no string field `model_type`{}", path.display(), found.as_ref().map(|f| format!(" (found {f})")).unwrap_or_default())]
    ConfigNoModelType {
        /// The config path.
        path: PathBuf,
        /// The JSON found under `model_type`, if any.
        found: Option<String>,
    },
    /// `config.json`'s `model_type` belongs to another skill.
    #[error("{} has model_type `{found}`, but skill {skill} is for model_type `{expected}`", path.display())]
    ModelTypeMismatch {
        /// The config path.
        path: PathBuf,
        /// The skill's struct name.
        skill: &'static str,
        /// The skill's model type.
        expected: &'static str,
        /// The config's model type.
        found: String,
    },
    /// No skill in the registry has this model type.
    #[error("no skill for model_type `{model_type}` (from {}){}", path.display(), did_you_mean(suggestion))]
    UnknownModelType {
        /// The model type.
        model_type: String,
        /// The config path it came from.
        path: PathBuf,
        /// The closest registered model type.
        suggestion: Option<String>,
    },
    /// The skill does not have this capability.
    #[error("model type `{model_type}` has no `{}` capability (it has: {})", capability.method(), or_none(&available.iter().map(|c| c.method()).collect::<Vec<_>>()))]
    CapabilityMissing {
        /// The model type.
        model_type: &'static str,
        /// The capability asked for.
        capability: Capability,
        /// The capabilities it has.
        available: Vec<Capability>,
    },
    /// The skill does not list this task.
    #[error(
        "model type `{model_type}` does not list task `{task}` (it lists: {})",
        or_none(available)
    )]
    TaskMissing {
        /// The model type.
        model_type: &'static str,
        /// The task asked for.
        task: Task,
        /// The tasks it lists.
        available: Vec<Task>,
    },
    /// An environment variable has a value the runtime does not accept.
    #[error("invalid {var}=`{value}`: expected one of {allowed}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The allowed values.
        allowed: &'static str,
    },
    /// A target string did not parse.
    #[error(transparent)]
    InvalidTarget(#[from] crate::target::TargetParseError),
    /// Strict mode: the resolved target cannot run this, and falling back is forbidden.
    #[error(
        "strict mode: model type `{model_type}` task `{task}` cannot run on the requested target: {skip}; falling back is disabled ({why})"
    )]
    Strict {
        /// The model type.
        model_type: &'static str,
        /// The task.
        task: Task,
        /// Why the requested target was skipped.
        skip: Skip,
        /// What made the run strict (`SKILLGEN_STRICT` or the builder option).
        why: &'static str,
    },
    /// No target in the chain can run this.
    #[error(
        "no backend can run model type `{model_type}` task `{task}` (target {requested}): {}",
        join(tried, "; ")
    )]
    NoBackend {
        /// The model type.
        model_type: &'static str,
        /// The task.
        task: Task,
        /// The resolved request (e.g. `auto (default)`, `mojo_max (USE_MOJO_MAX_TARGET)`).
        requested: String,
        /// Every target tried, with why it was skipped.
        tried: Vec<Skip>,
    },
    /// The request is malformed.
    #[error("invalid `{}` request: {detail}", capability.method())]
    InvalidRequest {
        /// The capability.
        capability: Capability,
        /// What is wrong.
        detail: String,
    },
    /// A file the model needs is not in the model directory.
    #[error("model file {} is missing ({what})", path.display())]
    ModelFileMissing {
        /// The expected path.
        path: PathBuf,
        /// What the file is for.
        what: &'static str,
    },
    /// A config file field is missing, has the wrong type, or has an unsupported value.
    #[error("{}: field `{field}`: {detail}", path.display())]
    ConfigField {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A weights file cannot be read or is not valid safetensors (corrupt, truncated).
    #[error("cannot load weights {}: {detail}", path.display())]
    WeightsInvalid {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A tensor the model needs is not in the weights file.
    #[error("weights {} have no tensor `{tensor}`", path.display())]
    TensorMissing {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
    },
    /// A tensor has the wrong shape or dtype.
    #[error("weights {}: tensor `{tensor}` {detail}", path.display())]
    TensorInvalid {
        /// The weights file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        detail: String,
    },
    /// The tokenizer file cannot be loaded or used.
    #[error("tokenizer {}: {detail}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A bug in skillgen: an invariant did not hold.
    #[error("internal error: {detail}")]
    Internal {
        /// What did not hold.
        detail: String,
    },
    /// A backend failed while running.
    #[error("{backend} backend failed: {detail}")]
    Backend {
        /// The backend.
        backend: BackendKind,
        /// What failed.
        detail: String,
    },
}

impl SkillError {
    /// The targets tried before giving up, for [`SkillError::NoBackend`] and [`SkillError::Strict`].
    pub fn tried(&self) -> &[Skip] {
        match self {
            SkillError::NoBackend { tried, .. } => tried,
            SkillError::Strict { skip, .. } => std::slice::from_ref(skip),
            _ => &[],
        }
    }
}
