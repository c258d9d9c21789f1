//! The backend interface and the set of backends a skill dispatches over.
//!
//! The core knows no backend. A backend crate (`skillgen-candle`, `skillgen-max`) implements
//! [`Backend`]; the `skills` crate collects the ones its cargo features enable into a
//! [`Backends`] set, and every skill state carries the set it was loaded with. Dispatch
//! ([`crate::dispatch`]) asks each backend three things, each with a typed answer:
//!
//! - [`Backend::check`]: can it run this model type and task on this target here? `Err` is the
//!   [`SkipReason`] recorded when dispatch moves on.
//! - [`Backend::run`] / [`Backend::stream`]: execute. A [`Failure::Retry`] moves the call to the
//!   next target (or is the strict-mode error); a [`Failure::Final`] goes to the caller as is.
//! - [`Backend::probe`]: fill in its part of the machine's [`Capabilities`].
//!
//! What a backend runs is not decided here: the registry's table (`native:`, `refused:`,
//! `max:`, read through [`SkillInfo::support`]) says so, and a backend's `check` consults it.

use std::fmt;
use std::sync::OnceLock;

use skillgen_vocab::Task;

use crate::caps::Capabilities;
use crate::decision::SkipReason;
use crate::env::EnvSource;
use crate::info::SkillInfo;
use crate::model::Model;
use crate::request::{Call, GenerateRequest, Output};
use crate::stream::TokenStream;
use crate::{SkillError, Target};

/// The backends: `candle` and `MAX` (canonical spellings `candle`, `max`).
pub use skillgen_vocab::Backend as BackendKind;

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

/// Everything a backend's run sees: the loaded skill, where and what to run, and the
/// environment and capability report dispatch planned with.
#[derive(Clone, Copy)]
pub struct RunContext<'a> {
    /// The loaded model.
    pub model: &'a Model,
    /// The target chosen by dispatch.
    pub target: Target,
    /// The task the call runs.
    pub task: Task,
    /// The environment (the process's, or a test's [`crate::MapEnv`]).
    pub env: &'a dyn EnvSource,
    /// The capability report.
    pub caps: &'a Capabilities,
}

impl fmt::Debug for RunContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("model_type", &self.model.info().model_type)
            .field("target", &self.target)
            .field("task", &self.task)
            .finish()
    }
}

/// How a backend's run failed.
#[derive(Debug)]
pub enum Failure {
    /// The error goes to the caller as is: the request is invalid, or the model files are
    /// broken (another target would read the same files).
    Final(SkillError),
    /// This target could not run the call (a server that died, timed out, answered an HTTP
    /// error...). Dispatch records the reason and moves on to the next target, or returns
    /// [`SkillError::Strict`] in strict mode with an exact target.
    Retry(SkipReason),
}

impl From<SkillError> for Failure {
    fn from(e: SkillError) -> Self {
        Failure::Final(e)
    }
}

/// A backend.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Whether this backend runs on `target` at all (candle: `cpu`, `cuda:N`, `metal:N`;
    /// MAX: `mojo_max`).
    fn serves(&self, target: Target) -> bool;

    /// Fill in this backend's part of the capability report (devices it was built for, a MAX
    /// server's model list, ...). Called once per [`Backends`] set, on first use.
    fn probe(&self, env: &dyn EnvSource, caps: &mut Capabilities);

    /// `Ok` when this backend can run `input.task` of `input.info` on `input.target` here.
    fn check(&self, input: &CheckInput<'_>) -> Result<(), SkipReason>;

    /// Run `call` as `cx` says. Only called after [`Backend::check`] passed.
    fn run(&self, cx: &RunContext<'_>, call: Call) -> Result<Output, Failure>;

    /// Start a streaming generation as `cx` says. Only called after [`Backend::check`]
    /// passed. The default: this backend does not stream.
    fn stream(
        &self,
        cx: &RunContext<'_>,
        request: GenerateRequest,
    ) -> Result<TokenStream, Failure> {
        let _ = request;
        Err(Failure::Final(SkillError::Backend {
            backend: self.kind(),
            detail: format!(
                "streaming generation (task `{}`) of model type `{}` on {} is not implemented by the {} backend",
                cx.task,
                cx.model.info().model_type,
                cx.target,
                self.kind()
            ),
        }))
    }
}

/// The backends a skill dispatches over, and the capability report probed with them.
///
/// A set is built once per process (e.g. `skills::backends()`, from the cargo features the
/// `skills` crate was built with) and lives for the rest of it. The capability report is
/// probed on first use and cached in the set.
pub struct Backends {
    list: Vec<Box<dyn Backend>>,
    caps: OnceLock<Capabilities>,
}

impl fmt::Debug for Backends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|b| b.kind()))
            .finish()
    }
}

impl Backends {
    /// A set of backends. A later backend serving the same target as an earlier one is never
    /// asked (the first one wins).
    pub fn new(list: Vec<Box<dyn Backend>>) -> Self {
        Self {
            list,
            caps: OnceLock::new(),
        }
    }

    /// This set and `backend` (asked after the backends already in the set).
    pub fn with(mut self, backend: impl Backend + 'static) -> Self {
        self.list.push(Box::new(backend));
        self
    }

    /// The empty set: every target is skipped as "backend not compiled in".
    pub fn none() -> &'static Backends {
        static NONE: OnceLock<Backends> = OnceLock::new();
        NONE.get_or_init(|| Backends::new(Vec::new()))
    }

    /// The backend serving `target`, if this set has one.
    pub fn for_target(&self, target: Target) -> Option<&dyn Backend> {
        self.list
            .iter()
            .find(|b| b.serves(target))
            .map(|b| b.as_ref())
    }

    /// The kinds of backend in this set.
    pub fn kinds(&self) -> Vec<BackendKind> {
        self.list.iter().map(|b| b.kind()).collect()
    }

    /// This machine's report for this set, probed on first use (process environment) and
    /// cached.
    pub fn capabilities(&self) -> &Capabilities {
        self.caps
            .get_or_init(|| self.probe(&crate::env::ProcessEnv))
    }

    /// Probe now (not cached), reading variables from `env`: the core's part (CPU, GPU device
    /// counts, executables), then each backend's.
    pub fn probe(&self, env: &dyn EnvSource) -> Capabilities {
        let mut caps = Capabilities::probe_core(env);
        for b in &self.list {
            b.probe(env, &mut caps);
        }
        caps
    }

    /// `Ok` when `target` can run `input`'s task here: a backend of this set serves the target
    /// and its check passes.
    pub fn check(&self, input: &CheckInput<'_>) -> Result<&dyn Backend, SkipReason> {
        match self.for_target(input.target) {
            None => Err(SkipReason::BackendNotCompiledIn {
                backend: input.target.backend(),
            }),
            Some(b) => b.check(input).map(|()| b),
        }
    }
}

/// The check every backend starts with: the registry's support table for this model type,
/// task and backend. `Ok` when it runs there; otherwise the skip reason (refused, or not
/// implemented).
pub fn table_check(info: &SkillInfo, task: Task, backend: BackendKind) -> Result<(), SkipReason> {
    match info.support(task, backend) {
        s if s.runs() => Ok(()),
        skillgen_vocab::Support::Refused(reason) => Err(SkipReason::Refused { backend, reason }),
        _ => Err(SkipReason::TaskNotImplemented { backend }),
    }
}
