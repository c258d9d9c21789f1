//! The `Skill` trait, its state, the `MojoMaxTarget` mixin, and run-time typed `DynSkill`.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use skillgen_vocab::{Capability, Task};

use crate::backend::{Backend, Backends, Failure, RunContext};
use crate::caps::Capabilities;
use crate::dispatch::{self, Dispatch, Resolved, Work};
use crate::env::{EnvSource, ProcessEnv};
use crate::info::SkillInfo;
use crate::model::{Model, ModelConfig, read_config};
use crate::quantize::Quantization;
use crate::request::{Call, ChatRequest, GenerateRequest, Output, Response};
use crate::stream::TokenStream;
use crate::{SkillError, TargetSpec};

/// A typed binding of one Hugging Face model type. Implement it with `#[derive(Skill)]`.
pub trait Skill {
    /// The static description of the model type.
    const INFO: &'static SkillInfo;
    /// The backends this skill dispatches over (`#[skill(backends = path)]`; without it, none).
    fn backends() -> &'static Backends
    where
        Self: Sized;
    /// The loaded state.
    fn state(&self) -> &SkillState;
    /// Wrap a loaded state.
    fn from_state(state: SkillState) -> Self
    where
        Self: Sized;
}

/// A loaded skill: its info, backends, model directory, config, requested target and
/// strictness.
///
/// `load` only reads `config.json`. The weights are loaded lazily by the backend that first
/// runs a request (e.g. candle's BERT on the first `embed` on the CPU) and cached here; clones
/// of a state share that cache, and concurrent first calls load once (the load is behind a
/// mutex). A failed load is not cached: the next call tries again and reports the error again.
#[derive(Debug, Clone)]
pub struct SkillState {
    model: Model,
    backends: &'static Backends,
    spec: TargetSpec,
    strict: bool,
}

impl SkillState {
    /// Check that `dir` exists and has a `config.json` whose `model_type` is `info.model_type`.
    /// Requests dispatch over `backends`.
    pub fn load(
        info: &'static SkillInfo,
        backends: &'static Backends,
        dir: impl AsRef<Path>,
        spec: impl Into<TargetSpec>,
    ) -> Result<Self, SkillError> {
        let dir = dir.as_ref();
        let config = read_config(dir)?;
        Self::from_config(info, backends, dir, config, spec.into())
    }

    pub(crate) fn from_config(
        info: &'static SkillInfo,
        backends: &'static Backends,
        dir: &Path,
        config: ModelConfig,
        spec: TargetSpec,
    ) -> Result<Self, SkillError> {
        if config.model_type != info.model_type {
            return Err(SkillError::ModelTypeMismatch {
                path: config.path,
                skill: info.struct_name,
                expected: info.model_type,
                found: config.model_type,
            });
        }
        let _span = tracing::debug_span!("load", model_type = info.model_type).entered();
        tracing::debug!(dir = %dir.display(), backends = ?backends, "skill state loaded");
        Ok(Self {
            model: Model::new(info, dir, config),
            backends,
            spec,
            strict: false,
        })
    }

    /// Builder: forbid falling back from an exact target (like `SKILLGEN_STRICT=1`).
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Builder: quantize the float checkpoint's matrices to `q` when a backend loads it (the
    /// candle backend's config-driven decoder does; an implementation or backend that cannot
    /// refuses with a typed error or a recorded fallback, never running the float model in its
    /// place). `None` loads the weights as stored.
    pub fn quantize(mut self, q: Option<Quantization>) -> Self {
        self.model = self.model.with_quantization(q);
        self
    }

    /// Builder: change the requested target.
    pub fn with_target(mut self, spec: impl Into<TargetSpec>) -> Self {
        self.spec = spec.into();
        self
    }

    /// The skill's static description.
    pub fn info(&self) -> &'static SkillInfo {
        self.model.info()
    }

    /// The backends requests dispatch over.
    pub fn backends(&self) -> &'static Backends {
        self.backends
    }

    /// The cached capability report of this state's backend set.
    pub fn capabilities(&self) -> &'static Capabilities {
        self.backends.capabilities()
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        self.model.dir()
    }

    /// What `config.json` said.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The requested target.
    pub fn spec(&self) -> TargetSpec {
        self.spec
    }

    /// Whether the builder option asked for strict mode (`SKILLGEN_STRICT` may also).
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// The value cached under `key`, loading it with `load` on first use (see
    /// [`Model::cached`]).
    pub fn cached<T: Any + Send + Sync>(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<T, SkillError>,
    ) -> Result<Arc<T>, SkillError> {
        self.model.cached(key, load)
    }

    /// Validate `call`, plan it and execute it: `run` is given the backend of each target
    /// dispatch tries (see [`dispatch::execute`]).
    fn dispatch_call<T>(
        &self,
        call: &Call,
        env: &dyn EnvSource,
        caps: &Capabilities,
        mut run: impl FnMut(&dyn Backend, &RunContext<'_>) -> Result<T, Failure>,
    ) -> Result<(T, Dispatch), SkillError> {
        let capability = call.capability();
        call.validate()
            .map_err(|detail| SkillError::InvalidRequest { capability, detail })?;
        let info = self.model.info();
        let names = self.model_names();
        let plan = dispatch::plan_for_model(
            info,
            capability.into(),
            &self.spec,
            env,
            caps,
            self.strict,
            &names,
            self.backends,
        )?;
        let task = plan.task;
        dispatch::execute(
            info,
            self.backends,
            &names,
            plan,
            env,
            caps,
            |backend, target| {
                let cx = RunContext {
                    model: &self.model,
                    target,
                    task,
                    env,
                    caps,
                };
                run(backend, &cx)
            },
        )
    }

    /// Validate, plan and run `call` under `env` and `caps` (the `*_with` form of the
    /// capability methods: tests pass a [`crate::MapEnv`] and a fixed report).
    pub fn run_with(
        &self,
        call: Call,
        env: &dyn EnvSource,
        caps: &Capabilities,
    ) -> Result<(Output, Dispatch), SkillError> {
        self.dispatch_call(&call, env, caps, |backend, cx| match &call {
            // Chat is generate over a conversation, composed here once: backends see a
            // generate call whose prompt is the conversation.
            Call::Chat(chat) => {
                match backend.run(cx, Call::Generate(chat.as_generate().clone()))? {
                    Output::Generate(g) => Ok(Output::Chat(g.into())),
                    _ => Err(Failure::Final(SkillError::Backend {
                        backend: backend.kind(),
                        detail: "returned the wrong output kind for `generate` (as `chat`)"
                            .to_owned(),
                    })),
                }
            }
            _ => backend.run(cx, call.clone()),
        })
    }

    /// Streaming `generate` under `env` and `caps`: validate, plan, and start a
    /// [`TokenStream`] on the chosen target (a backend that fails to start moves the call on,
    /// like [`SkillState::run_with`]).
    pub fn generate_stream_with(
        &self,
        request: GenerateRequest,
        env: &dyn EnvSource,
        caps: &Capabilities,
    ) -> Result<TokenStream, SkillError> {
        self.stream_call(Call::Generate(request), env, caps)
    }

    /// Streaming `generate`: the tokens one by one, as an iterator (see [`TokenStream`]).
    /// The stream owns its state (e.g. candle's KV cache), so several streams of one skill may
    /// run concurrently (also on other threads).
    pub fn generate_stream(
        &self,
        request: impl Into<GenerateRequest>,
    ) -> Result<TokenStream, SkillError> {
        self.generate_stream_with(request.into(), &ProcessEnv, self.capabilities())
    }

    /// Streaming `chat` under `env` and `caps` (see [`SkillState::generate_stream_with`]).
    pub fn chat_stream_with(
        &self,
        request: ChatRequest,
        env: &dyn EnvSource,
        caps: &Capabilities,
    ) -> Result<TokenStream, SkillError> {
        self.stream_call(Call::Chat(request), env, caps)
    }

    /// Streaming `chat`: the reply's tokens one by one (see [`TokenStream`]); their texts
    /// concatenate to the [`crate::request::ChatReply`]'s message.
    pub fn chat_stream(&self, request: impl Into<ChatRequest>) -> Result<TokenStream, SkillError> {
        self.chat_stream_with(request.into(), &ProcessEnv, self.capabilities())
    }

    /// Validate and plan `call` (`generate` or `chat`) as its capability, then start the
    /// generation it asks for on the chosen target.
    fn stream_call(
        &self,
        call: Call,
        env: &dyn EnvSource,
        caps: &Capabilities,
    ) -> Result<TokenStream, SkillError> {
        let request = match &call {
            Call::Generate(r) => r.clone(),
            Call::Chat(r) => r.as_generate().clone(),
            other => {
                return Err(SkillError::Internal {
                    detail: format!("`{}` does not stream", other.capability()),
                });
            }
        };
        let (stream, dispatch) = self.dispatch_call(&call, env, caps, |backend, cx| {
            backend.stream(cx, request.clone())
        })?;
        Ok(stream.with_dispatch(dispatch))
    }

    /// Names a MAX server's model id may match for this model.
    pub fn model_names(&self) -> Vec<&str> {
        self.model.model_names()
    }

    /// The loaded model: what backends see.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The dispatch decision for `work` under `env` and `caps`.
    pub fn plan_with(
        &self,
        work: impl Into<Work>,
        env: &dyn EnvSource,
        caps: &Capabilities,
    ) -> Result<Dispatch, SkillError> {
        dispatch::plan_for_model(
            self.model.info(),
            work.into(),
            &self.spec,
            env,
            caps,
            self.strict,
            &self.model_names(),
            self.backends,
        )
    }

    /// The dispatch decision for `work` with the process environment and the cached detection.
    pub fn plan(&self, work: impl Into<Work>) -> Result<Dispatch, SkillError> {
        self.plan_with(work, &ProcessEnv, self.capabilities())
    }
}

macro_rules! state_methods {
    ($($variant:ident $method:ident($req:ident) -> $out:ident: $doc:literal;)*) => {
        /// One method per capability (from the capability table, [`skillgen_vocab::for_each_capability!`]),
        /// with the process environment and the cached capability report. A skill without the
        /// capability gets [`SkillError::CapabilityMissing`].
        impl SkillState {$(
            #[doc = $doc]
            pub fn $method(
                &self,
                request: impl Into<crate::request::$req>,
            ) -> Result<Response<crate::request::$out>, SkillError> {
                let (output, dispatch) =
                    self.run_with(Call::$variant(request.into()), &ProcessEnv, self.capabilities())?;
                match output {
                    Output::$variant(output) => Ok(Response { output, dispatch }),
                    _ => Err(SkillError::Backend {
                        backend: dispatch.used.backend(),
                        detail: concat!("returned the wrong output kind for `", stringify!($method), "`").to_owned(),
                    }),
                }
            }
        )*}
    };
}
skillgen_vocab::for_each_capability!(state_methods);

/// The Mojo/MAX target mixin, implemented for every skill by `#[derive(Skill)]`.
pub trait MojoMaxTarget: Skill {
    /// The target this skill was loaded with.
    fn target_spec(&self) -> TargetSpec {
        self.state().spec()
    }

    /// The target after consulting `SKILLGEN_TARGET` / `USE_MOJO_MAX_TARGET` (process env).
    fn resolve_target(&self) -> Result<Resolved, SkillError> {
        dispatch::resolve(&self.state().spec(), &ProcessEnv)
    }

    /// Where `capability` would run now (process env, cached capability detection).
    fn plan(&self, capability: Capability) -> Result<Dispatch, SkillError> {
        self.state().plan(capability)
    }

    /// The cached capability report of this machine, for this skill's backends.
    fn capabilities(&self) -> &'static Capabilities {
        self.state().capabilities()
    }
}

/// A skill chosen at run time (from `Registry::load_dir`); capabilities are checked per call.
#[derive(Debug, Clone)]
pub struct DynSkill {
    state: SkillState,
}

impl DynSkill {
    /// Wrap a loaded state.
    pub fn new(state: SkillState) -> Self {
        Self { state }
    }

    /// The skill's static description.
    pub fn info(&self) -> &'static SkillInfo {
        self.state.info()
    }

    /// Builder: see [`SkillState::quantize`].
    pub fn quantize(self, q: Option<Quantization>) -> Self {
        Self {
            state: self.state.quantize(q),
        }
    }

    /// The loaded state.
    pub fn state(&self) -> &SkillState {
        &self.state
    }

    /// Consume into the state (e.g. to build the typed skill with `Skill::from_state`).
    pub fn into_state(self) -> SkillState {
        self.state
    }

    /// The typed skill, if this is a `S`; otherwise `self` back.
    pub fn downcast<S: Skill>(self) -> Result<S, Box<DynSkill>> {
        if self.state.info().model_type == S::INFO.model_type {
            Ok(S::from_state(self.state))
        } else {
            Err(Box::new(self))
        }
    }

    /// Whether this skill has `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        self.info().task_for(capability).is_some()
    }

    /// Whether this skill lists `task`.
    pub fn has_task(&self, task: Task) -> bool {
        self.info().has_task(task)
    }

    /// Where `capability` would run now.
    pub fn plan(&self, capability: Capability) -> Result<Dispatch, SkillError> {
        self.state.plan(capability)
    }

    /// Streaming `generate` (typed error if this model type has no such capability or the
    /// chosen target cannot stream); see [`SkillState::generate_stream`].
    pub fn generate_stream(
        &self,
        request: impl Into<crate::request::GenerateRequest>,
    ) -> Result<TokenStream, SkillError> {
        self.state.generate_stream(request)
    }

    /// Streaming `chat` (typed error if this model type has no such capability or the chosen
    /// target cannot stream); see [`SkillState::chat_stream`].
    pub fn chat_stream(
        &self,
        request: impl Into<crate::request::ChatRequest>,
    ) -> Result<TokenStream, SkillError> {
        self.state.chat_stream(request)
    }
}

macro_rules! dyn_methods {
    ($($variant:ident $method:ident($req:ident) -> $out:ident: $doc:literal;)*) => {
        /// One method per capability (from the capability table); a model type without the
        /// capability gets [`SkillError::CapabilityMissing`].
        impl DynSkill {$(
            #[doc = $doc]
            pub fn $method(
                &self,
                request: impl Into<crate::request::$req>,
            ) -> Result<Response<crate::request::$out>, SkillError> {
                self.state.$method(request)
            }
        )*}
    };
}
skillgen_vocab::for_each_capability!(dyn_methods);
