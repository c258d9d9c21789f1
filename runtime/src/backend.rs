//! Backends: who can run what, and (in later issues) the execution itself.
//!
//! A backend answers two questions. [`Backend::check`]: can it run this model type and task on
//! this target on this machine (a typed [`SkipReason`] when not)? [`Backend::run`]: execute a
//! typed [`Call`], producing the matching [`Output`]. The dispatcher only calls `run` after
//! `check` passed. In this build candle runs BERT embeddings on the CPU ([`candle_implements`])
//! and reports [`SkipReason::TaskNotImplemented`] for every other task; MAX reports
//! [`SkipReason::ClientNotImplemented`] once it found a server serving the model. Adding
//! inference means making `check` pass for the implemented (model type, task) pairs and
//! implementing `run` for them.

use std::fmt;

use serde::Serialize;
use skillgen_vocab::Task;

use crate::caps::{Capabilities, DeviceSupport, MaxServer};
use crate::dispatch::SkipReason;
use crate::env::vars;
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

/// The candle backend (CPU, CUDA, Metal). Implements what [`candle_implements`] lists.
#[derive(Debug, Clone, Copy, Default)]
pub struct CandleBackend;

/// The MAX backend. Capability detection is real; the client is not implemented in this build.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxBackend;

static CANDLE: CandleBackend = CandleBackend;
static MAX: MaxBackend = MaxBackend;

/// The backend serving `target`.
pub fn backend_for(target: Target) -> &'static dyn Backend {
    match target {
        Target::MojoMax => &MAX,
        _ => &CANDLE,
    }
}

fn device(
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

impl Backend for CandleBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Candle
    }

    fn check(&self, input: &CheckInput<'_>) -> Result<(), SkipReason> {
        match input.target {
            Target::Cpu => {}
            Target::Cuda(n) => device(&input.caps.cuda, "CUDA", "cuda", n)?,
            Target::Metal(n) => device(&input.caps.metal, "Metal", "metal", n)?,
            Target::MojoMax => {
                return Err(SkipReason::TaskNotImplemented {
                    backend: BackendKind::Candle,
                });
            }
        }
        if candle_implements(input.info.model_type, input.task, input.target) {
            Ok(())
        } else {
            Err(SkipReason::TaskNotImplemented {
                backend: BackendKind::Candle,
            })
        }
    }

    fn run(
        &self,
        state: &SkillState,
        target: Target,
        task: Task,
        call: Call,
    ) -> Result<Output, SkillError> {
        if candle_implements(state.info().model_type, task, target)
            && let Call::Embed(req) = call
        {
            let model = state.bert_cpu()?;
            return model.embed(&req.input, req.normalize).map(Output::Embed);
        }
        Err(SkillError::Backend {
            backend: BackendKind::Candle,
            detail: format!(
                "task `{task}` of model type `{}` on {target} is not implemented by the candle backend",
                state.info().model_type
            ),
        })
    }
}

/// The (model type, task, target) triples the candle backend runs in this build: BERT
/// sentence embeddings (`base-model` / `text-encoding`, i.e. the `embed` capability) on the CPU.
pub fn candle_implements(model_type: &str, task: Task, target: Target) -> bool {
    model_type == "bert"
        && matches!(task, Task::BaseModel | Task::TextEncoding)
        && target == Target::Cpu
}

/// Whether a served MAX model id names this model.
pub fn served_matches(served: &str, info: &SkillInfo, model_names: &[&str]) -> bool {
    let last = |s: &str| s.rsplit('/').next().unwrap_or(s).to_ascii_lowercase();
    let served_last = last(served);
    std::iter::once(info.model_type)
        .chain(info.max.iter().copied())
        .chain(model_names.iter().copied())
        .any(|name| {
            served.eq_ignore_ascii_case(name) || (!name.is_empty() && served_last == last(name))
        })
}

impl Backend for MaxBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Max
    }

    fn check(&self, input: &CheckInput<'_>) -> Result<(), SkipReason> {
        let info = input.info;
        if info.max.is_empty() {
            return Err(SkipReason::MaxNoArchitecture {
                model_type: info.model_type,
            });
        }
        let max = &input.caps.max;
        match &max.server {
            MaxServer::Serving { models } => {
                if models
                    .iter()
                    .any(|m| served_matches(m, info, input.model_names))
                {
                    Err(SkipReason::ClientNotImplemented)
                } else {
                    Err(SkipReason::MaxNotServed {
                        url: max.serve_url.clone().unwrap_or_default(),
                        served: models.clone(),
                        model_type: info.model_type,
                    })
                }
            }
            server => {
                let url_part = match (server, &max.serve_url) {
                    (MaxServer::Unreachable { error }, Some(url)) => {
                        format!("{}={url} did not answer: {error}", vars::MAX_SERVE_URL)
                    }
                    (MaxServer::Unreachable { error }, None) => error.clone(),
                    _ => format!("{} not set", vars::MAX_SERVE_URL),
                };
                let exe = &max.executable;
                let detail = match &exe.path {
                    Some(p) => format!(
                        "{url_part}; `max` found at {} but this build does not start it",
                        p.display()
                    ),
                    None if exe.detail.starts_with(vars::SKILLGEN_MAX_BIN) => {
                        format!("{url_part} and no `max` executable found ({})", exe.detail)
                    }
                    None => format!("{url_part} and no `max` executable found"),
                };
                Err(SkipReason::MaxUnreachable { detail })
            }
        }
    }

    fn run(
        &self,
        _state: &SkillState,
        _target: Target,
        _task: Task,
        _call: Call,
    ) -> Result<Output, SkillError> {
        Err(SkillError::Backend {
            backend: BackendKind::Max,
            detail: SkipReason::ClientNotImplemented.to_string(),
        })
    }
}
