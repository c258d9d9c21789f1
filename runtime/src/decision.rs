//! The dispatch decision as data: what was asked ([`Work`]), how the target was resolved
//! ([`Resolved`], [`TargetSource`]), which targets were skipped and why ([`Skip`],
//! [`SkipReason`]), and the record every response carries ([`Dispatch`]). The algorithms that
//! produce them live in [`crate::dispatch`].

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use skillgen_vocab::{Backend as BackendKind, Capability, Task};

use crate::env::vars;
use crate::target::{Target, TargetSpec};

/// Why a target was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The cargo feature for this target was not enabled when building skillgen-runtime.
    NotCompiledIn {
        /// The feature (`cuda`, `metal`).
        feature: &'static str,
    },
    /// No backend serving this target was compiled in (the `skills` crate's `candle` / `max`
    /// features), or the skill was loaded with a backend set without it.
    BackendNotCompiledIn {
        /// The backend that would serve the target.
        backend: BackendKind,
    },
    /// The registry says skillgen refuses to run this model type on this backend: it would
    /// compute numbers that differ from the reference.
    Refused {
        /// The backend.
        backend: BackendKind,
        /// Why (from `models.yaml`'s `refused:`).
        reason: &'static str,
    },
    /// The device does not exist on this machine.
    NoDevice {
        /// `CUDA` or `Metal`.
        kind: &'static str,
        /// The device asked for.
        ordinal: u32,
        /// How many devices there are.
        found: u32,
        /// How they were counted.
        detail: String,
    },
    /// No MAX server answered and none can be started.
    MaxUnreachable {
        /// What was tried.
        detail: String,
    },
    /// The registry names no MAX architecture for this model type.
    MaxNoArchitecture {
        /// The model type.
        model_type: &'static str,
    },
    /// A MAX server answered but does not serve this model.
    MaxNotServed {
        /// `MAX_SERVE_URL`.
        url: String,
        /// The model ids it serves.
        served: Vec<String>,
        /// The model type.
        model_type: &'static str,
    },
    /// The backend does not implement this task.
    TaskNotImplemented {
        /// The backend.
        backend: BackendKind,
    },
    /// The model type has a MAX architecture, but MAX does not serve this task for it (MAX
    /// serves embeddings for `bert`/`mpnet` encoders and text generation for decoders).
    MaxTaskUnsupported {
        /// The registry's MAX architectures for the model type.
        architectures: &'static [&'static str],
        /// The task asked for.
        task: Task,
        /// What MAX serves for these architectures, in words.
        serves: &'static str,
    },
    /// MAX was chosen but failed at run time (server start, crash, timeout, HTTP error,
    /// unrecoverable pooling); recorded when the dispatcher fell back to the next target.
    MaxFailed {
        /// The error.
        detail: String,
    },
}

impl SkipReason {
    /// A stable snake_case name for the variant.
    pub const fn kind(&self) -> &'static str {
        match self {
            SkipReason::NotCompiledIn { .. } => "not_compiled_in",
            SkipReason::BackendNotCompiledIn { .. } => "backend_not_compiled_in",
            SkipReason::Refused { .. } => "refused",
            SkipReason::NoDevice { .. } => "no_device",
            SkipReason::MaxUnreachable { .. } => "max_unreachable",
            SkipReason::MaxNoArchitecture { .. } => "max_no_architecture",
            SkipReason::MaxNotServed { .. } => "max_not_served",
            SkipReason::TaskNotImplemented { .. } => "task_not_implemented",
            SkipReason::MaxTaskUnsupported { .. } => "max_task_unsupported",
            SkipReason::MaxFailed { .. } => "max_failed",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotCompiledIn { feature } => write!(
                f,
                "not compiled in (build `skills` with the `{feature}` feature)"
            ),
            SkipReason::BackendNotCompiledIn { backend } => write!(
                f,
                "the {backend} backend is not compiled in (build `skills` with the `{}` feature)",
                backend.as_str()
            ),
            SkipReason::Refused { backend, reason } => {
                write!(f, "refused on the {backend} backend: {reason}")
            }
            SkipReason::NoDevice {
                kind,
                ordinal,
                found,
                detail,
            } => write!(f, "no {kind} device {ordinal} ({found} found: {detail})"),
            SkipReason::MaxUnreachable { detail } => write!(f, "MAX unreachable ({detail})"),
            SkipReason::MaxNoArchitecture { model_type } => write!(
                f,
                "the registry names no MAX architecture for model type `{model_type}`"
            ),
            SkipReason::MaxNotServed {
                url,
                served,
                model_type,
            } => {
                if served.is_empty() {
                    write!(f, "the MAX server at {url} serves no models")
                } else {
                    write!(
                        f,
                        "the MAX server at {url} serves {}, not model type `{model_type}`",
                        served.join(", ")
                    )
                }
            }
            SkipReason::TaskNotImplemented { backend } => {
                write!(f, "task not implemented by the {backend} backend")
            }
            SkipReason::MaxTaskUnsupported {
                architectures,
                task,
                serves,
            } => write!(
                f,
                "MAX architecture {} serves {serves}, not task `{task}`",
                architectures
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            SkipReason::MaxFailed { detail } => write!(f, "MAX failed at run time: {detail}"),
        }
    }
}

/// A skipped target and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The target.
    pub target: Target,
    /// Why it was skipped.
    pub reason: SkipReason,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} skipped: {}", self.target, self.reason)
    }
}

impl Serialize for Skip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Skip", 3)?;
        st.serialize_field("target", &self.target)?;
        st.serialize_field("reason", self.reason.kind())?;
        st.serialize_field("message", &self.reason.to_string())?;
        st.end()
    }
}

/// What to dispatch: a capability (method) or a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// A typed method, e.g. `embed`.
    Capability(Capability),
    /// A task, e.g. `masked-lm`.
    Task(Task),
}

impl From<Capability> for Work {
    fn from(c: Capability) -> Self {
        Work::Capability(c)
    }
}

impl From<Task> for Work {
    fn from(t: Task) -> Self {
        Work::Task(t)
    }
}

/// Where the resolved target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetSource {
    /// The caller's `TargetSpec::Exact` / `TargetSpec::Auto`.
    Explicit,
    /// `SKILLGEN_TARGET`.
    SkillgenTarget,
    /// `USE_MOJO_MAX_TARGET`.
    UseMojoMaxTarget,
    /// Nothing asked for anything: auto.
    Default,
}

impl fmt::Display for TargetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetSource::Explicit => "explicit",
            TargetSource::SkillgenTarget => vars::SKILLGEN_TARGET,
            TargetSource::UseMojoMaxTarget => vars::USE_MOJO_MAX_TARGET,
            TargetSource::Default => "default",
        })
    }
}

/// The outcome of target resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// The target; `None` is auto.
    #[serde(serialize_with = "ser_opt_target")]
    pub target: Option<Target>,
    /// Where it came from.
    pub source: TargetSource,
}

fn ser_opt_target<S: Serializer>(t: &Option<Target>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(t),
        None => s.serialize_str("auto"),
    }
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            Some(t) => write!(f, "{t} ({})", self.source),
            None => write!(f, "auto ({})", self.source),
        }
    }
}

/// The dispatch decision carried by every response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispatch {
    /// The model type.
    pub model_type: &'static str,
    /// The capability asked for, if the request was a method call.
    #[serde(serialize_with = "crate::ser::opt_capability")]
    pub capability: Option<Capability>,
    /// The task run.
    #[serde(serialize_with = "crate::ser::task")]
    pub task: Task,
    /// What the caller asked for.
    pub requested: TargetSpec,
    /// What that resolved to.
    pub resolved: Resolved,
    /// The target used.
    pub used: Target,
    /// Targets skipped before `used`, with reasons.
    pub fallbacks: Vec<Skip>,
    /// Whether fallback from an exact target was forbidden.
    pub strict: bool,
}
