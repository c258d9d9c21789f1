//! The `Skill` trait, its state, the `MojoMaxTarget` mixin, and run-time typed `DynSkill`.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use skillgen_vocab::{Capability, Task};

use crate::backend::{Backends, RunContext};
use crate::caps::Capabilities;
use crate::dispatch::{self, Dispatch, Resolved, Work};
use crate::env::{EnvSource, ProcessEnv};
use crate::info::SkillInfo;
use crate::request::{Call, GenerateRequest, Output, Response, TokenStream};
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

/// The fields of `config.json` the runtime reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelConfig {
    /// The config path.
    pub path: PathBuf,
    /// `model_type`.
    pub model_type: String,
    /// `_name_or_path`, if present.
    pub name_or_path: Option<String>,
    /// `architectures`, if present.
    pub architectures: Vec<String>,
}

/// Read `dir/config.json`, with typed errors naming the file.
pub fn read_config(dir: &Path) -> Result<ModelConfig, SkillError> {
    match std::fs::metadata(dir) {
        Err(_) => {
            return Err(SkillError::ModelDirMissing {
                path: dir.to_path_buf(),
            });
        }
        Ok(m) if !m.is_dir() => {
            return Err(SkillError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(SkillError::ConfigMissing {
            dir: dir.to_path_buf(),
            path,
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| SkillError::ConfigRead {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| SkillError::ConfigInvalid {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    let Some(obj) = value.as_object() else {
        return Err(SkillError::ConfigInvalid {
            path,
            detail: "the top level is not an object".to_owned(),
        });
    };
    let model_type = match obj.get("model_type") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        other => {
            return Err(SkillError::ConfigNoModelType {
                path,
                found: other.map(ToString::to_string),
            });
        }
    };
    Ok(ModelConfig {
        model_type,
        name_or_path: obj
            .get("_name_or_path")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        architectures: obj
            .get("architectures")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        path,
    })
}

type Loaded = Arc<dyn Any + Send + Sync>;

/// Models loaded by the backends, shared by the clones of one [`SkillState`], keyed by what the
/// backend loaded (e.g. `candle/bert/cpu`).
#[derive(Default)]
pub(crate) struct ModelCache {
    slots: Mutex<BTreeMap<String, Arc<Mutex<Option<Loaded>>>>>,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .slots
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("ModelCache").field("loaded", &keys).finish()
    }
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
    info: &'static SkillInfo,
    backends: &'static Backends,
    dir: PathBuf,
    config: ModelConfig,
    spec: TargetSpec,
    strict: bool,
    cache: Arc<ModelCache>,
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
            info,
            backends,
            dir: dir.to_path_buf(),
            config,
            spec,
            strict: false,
            cache: Arc::default(),
        })
    }

    /// Builder: forbid falling back from an exact target (like `SKILLGEN_STRICT=1`).
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Builder: change the requested target.
    pub fn with_target(mut self, spec: impl Into<TargetSpec>) -> Self {
        self.spec = spec.into();
        self
    }

    /// The skill's static description.
    pub fn info(&self) -> &'static SkillInfo {
        self.info
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
        &self.dir
    }

    /// What `config.json` said.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The requested target.
    pub fn spec(&self) -> TargetSpec {
        self.spec
    }

    /// Whether the builder option asked for strict mode (`SKILLGEN_STRICT` may also).
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// The value cached under `key`, loading it with `load` on first use.
    ///
    /// Clones of this state share the cache. Concurrent first calls for one key load once (each
    /// key has its own lock, so loading one model does not block another); a failed load is not
    /// cached. A key must always map to the same type `T`: a mismatch is a typed error.
    ///
    /// Backends cache their loaded models here, under keys they own (e.g. `candle/bert/cpu`).
    pub fn cached<T: Any + Send + Sync>(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<T, SkillError>,
    ) -> Result<Arc<T>, SkillError> {
        let slot = {
            let mut slots = self
                .cache
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(slots.entry(key.to_owned()).or_default())
        };
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let loaded = match slot.as_ref() {
            Some(loaded) => Arc::clone(loaded),
            None => {
                let t0 = std::time::Instant::now();
                let _span = tracing::info_span!("model_load", key).entered();
                let loaded: Loaded = match load() {
                    Ok(v) => Arc::new(v),
                    Err(e) => {
                        tracing::warn!(error = %e, "load failed");
                        return Err(e);
                    }
                };
                tracing::info!(elapsed_ms = t0.elapsed().as_millis() as u64, "loaded");
                *slot = Some(Arc::clone(&loaded));
                loaded
            }
        };
        loaded.downcast::<T>().map_err(|_| SkillError::Internal {
            detail: format!("cache key `{key}` holds another type"),
        })
    }

    /// Validate, plan and run `call` under `env` and `caps` (the `*_with` form of the
    /// capability methods: tests pass a [`crate::MapEnv`] and a fixed report).
    pub fn run_with(
        &self,
        call: Call,
        env: &dyn EnvSource,
        caps: &Capabilities,
    ) -> Result<(Output, Dispatch), SkillError> {
        let capability = call.capability();
        call.validate()
            .map_err(|detail| SkillError::InvalidRequest { capability, detail })?;
        let plan = self.plan_with(capability, env, caps)?;
        let task = plan.task;
        dispatch::execute(self, plan, env, caps, |backend, target| {
            let cx = RunContext {
                state: self,
                target,
                task,
                env,
                caps,
            };
            backend.run(&cx, call.clone())
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
        let call = Call::Generate(request);
        let capability = call.capability();
        call.validate()
            .map_err(|detail| SkillError::InvalidRequest { capability, detail })?;
        let Call::Generate(request) = call else {
            return Err(SkillError::Internal {
                detail: "not a generate call".to_owned(),
            });
        };
        let plan = self.plan_with(capability, env, caps)?;
        let task = plan.task;
        let (stream, dispatch) = dispatch::execute(self, plan, env, caps, |backend, target| {
            let cx = RunContext {
                state: self,
                target,
                task,
                env,
                caps,
            };
            backend.stream(&cx, request.clone())
        })?;
        Ok(stream.with_dispatch(dispatch))
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

    /// Names a MAX server's model id may match for this model.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .config
            .architectures
            .iter()
            .map(String::as_str)
            .collect();
        names.extend(self.config.name_or_path.as_deref());
        names.extend(self.dir.file_name().and_then(|n| n.to_str()));
        names
    }

    /// The dispatch decision for `work` under `env` and `caps`.
    pub fn plan_with(
        &self,
        work: impl Into<Work>,
        env: &dyn EnvSource,
        caps: &Capabilities,
    ) -> Result<Dispatch, SkillError> {
        dispatch::plan_for_model(
            self.info,
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
    ) -> Result<crate::request::TokenStream, SkillError> {
        self.state.generate_stream(request)
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
