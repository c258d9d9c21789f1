//! Target resolution, the fallback chain, and the dispatch decision.
//!
//! Resolution order: an explicit [`TargetSpec::Exact`] / [`TargetSpec::Auto`]; then
//! `SKILLGEN_TARGET`; then `USE_MOJO_MAX_TARGET`; else auto. The chain is
//! `mojo_max → cuda → metal → cpu`: an exact target is tried first and the chain continues after
//! its position; auto walks the whole chain. Every skipped target is recorded with a typed
//! [`SkipReason`]. In strict mode (`SKILLGEN_STRICT` or the builder option) a skip of the resolved
//! exact target is an error; strict has no effect on auto, which asks for the best available.
//!
//! [`plan`] and [`table`] are pure: environment and capabilities are arguments.

use std::fmt;

use serde::Serialize;
use skillgen_vocab::{Capability, Task};

use crate::SkillError;
use crate::backend::{Backend, Backends, CheckInput, Failure};
use crate::caps::Capabilities;
pub use crate::decision::{Dispatch, Resolved, Skip, SkipReason, TargetSource, Work};
use crate::env::{self, EnvSource, MapEnv, vars};
use crate::info::SkillInfo;
use crate::target::{SPEC_ALLOWED, Target, TargetSpec};

/// Resolve `spec` against the environment. Fails on invalid `SKILLGEN_TARGET` /
/// `USE_MOJO_MAX_TARGET` values, naming the variable and the allowed values.
pub fn resolve(spec: &TargetSpec, env: &dyn EnvSource) -> Result<Resolved, SkillError> {
    match *spec {
        TargetSpec::Exact(t) => {
            return Ok(Resolved {
                target: Some(t),
                source: TargetSource::Explicit,
            });
        }
        TargetSpec::Auto => {
            return Ok(Resolved {
                target: None,
                source: TargetSource::Explicit,
            });
        }
        TargetSpec::Default => {}
    }
    if let Some(raw) = env
        .var_ref(vars::SKILLGEN_TARGET)
        .filter(|v| !v.trim().is_empty())
    {
        let spec: TargetSpec =
            raw.trim()
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| SkillError::InvalidEnv {
                    var: vars::SKILLGEN_TARGET,
                    value: raw.clone().into_owned(),
                    allowed: SPEC_ALLOWED,
                })?;
        return Ok(Resolved {
            target: match spec {
                TargetSpec::Exact(t) => Some(t),
                _ => None,
            },
            source: TargetSource::SkillgenTarget,
        });
    }
    if flag(env, vars::USE_MOJO_MAX_TARGET)? == Some(true) {
        return Ok(Resolved {
            target: Some(Target::MojoMax),
            source: TargetSource::UseMojoMaxTarget,
        });
    }
    Ok(Resolved {
        target: None,
        source: TargetSource::Default,
    })
}

/// Parse a boolean flag variable: `Ok(None)` when unset.
fn flag(env: &dyn EnvSource, name: &'static str) -> Result<Option<bool>, SkillError> {
    let Some(raw) = env.var_ref(name) else {
        return Ok(None);
    };
    let value = raw.trim();
    let is = |s: &str| value.eq_ignore_ascii_case(s);
    if is("1") || is("true") || is("yes") {
        Ok(Some(true))
    } else if is("0") || is("false") || is("no") || value.is_empty() {
        Ok(Some(false))
    } else {
        Err(SkillError::InvalidEnv {
            var: name,
            value: raw.into_owned(),
            allowed: env::BOOL_ALLOWED,
        })
    }
}

/// Whether `SKILLGEN_STRICT` asks for strict mode (an invalid value is an error).
pub fn env_strict(env: &dyn EnvSource) -> Result<bool, SkillError> {
    Ok(flag(env, vars::SKILLGEN_STRICT)?.unwrap_or(false))
}

/// The task a [`Work`] runs for `info`, or the typed error when the skill lacks it.
pub fn task_for(info: &SkillInfo, work: Work) -> Result<(Option<Capability>, Task), SkillError> {
    match work {
        Work::Capability(c) => {
            info.task_for(c)
                .map(|t| (Some(c), t))
                .ok_or_else(|| SkillError::CapabilityMissing {
                    model_type: info.model_type,
                    capability: c,
                    available: info.capabilities().into_iter().map(|(c, _)| c).collect(),
                })
        }
        Work::Task(t) if info.has_task(t) => Ok((None, t)),
        Work::Task(t) => Err(SkillError::TaskMissing {
            model_type: info.model_type,
            task: t,
            available: info.task_list(),
        }),
    }
}

/// Decide where `work` runs for `info` over `backends`. Pure: `env` and `caps` are arguments.
/// `strict` is the builder option; `SKILLGEN_STRICT` in `env` also turns strict mode on.
pub fn plan(
    info: &SkillInfo,
    work: impl Into<Work>,
    spec: &TargetSpec,
    env: &dyn EnvSource,
    caps: &Capabilities,
    strict: bool,
    backends: &Backends,
) -> Result<Dispatch, SkillError> {
    plan_for_model(info, work.into(), spec, env, caps, strict, &[], backends)
}

/// [`plan`] for a loaded model whose `model_names` (e.g. `_name_or_path`, directory name,
/// `architectures`) a MAX server's model id may match.
#[allow(clippy::too_many_arguments)]
pub fn plan_for_model(
    info: &SkillInfo,
    work: Work,
    spec: &TargetSpec,
    env: &dyn EnvSource,
    caps: &Capabilities,
    strict: bool,
    model_names: &[&str],
    backends: &Backends,
) -> Result<Dispatch, SkillError> {
    plan_with_check(info, work, spec, env, caps, strict, model_names, &|input| {
        backends.check(input).map(|_| ())
    })
}

/// [`plan_for_model`] with the backend check injected: the fallback chain and strict mode over
/// any support predicate (tests exercise the chain with a check that accepts what no backend
/// implements yet).
#[allow(clippy::too_many_arguments)]
pub fn plan_with_check(
    info: &SkillInfo,
    work: Work,
    spec: &TargetSpec,
    env: &dyn EnvSource,
    caps: &Capabilities,
    strict: bool,
    model_names: &[&str],
    check: &dyn Fn(&CheckInput<'_>) -> Result<(), SkipReason>,
) -> Result<Dispatch, SkillError> {
    let (capability, task) = task_for(info, work)?;
    let resolved = resolve(spec, env)?;
    let env_strict = env_strict(env)?;
    let strict = strict || env_strict;
    let start = resolved.target.unwrap_or(Target::CHAIN[0]);
    let mut fallbacks = Vec::new();
    for target in start.fallbacks_from() {
        let input = CheckInput {
            info,
            task,
            target,
            caps,
            model_names,
            max_requested: resolved.target == Some(Target::MojoMax),
        };
        match check(&input) {
            Ok(()) => {
                tracing::debug!(
                    model_type = info.model_type,
                    task = task.as_str(),
                    resolved = %resolved,
                    used = %target,
                    skipped = fallbacks.len(),
                    "dispatch planned"
                );
                return Ok(Dispatch {
                    model_type: info.model_type,
                    capability,
                    task,
                    requested: *spec,
                    resolved,
                    used: target,
                    fallbacks,
                    strict,
                });
            }
            Err(reason) => {
                tracing::debug!(model_type = info.model_type, %target, reason = %reason, "target skipped");
                let skip = Skip { target, reason };
                if strict && resolved.target.is_some() {
                    return Err(SkillError::Strict {
                        model_type: info.model_type,
                        task,
                        skip,
                        why: if env_strict {
                            "SKILLGEN_STRICT is set"
                        } else {
                            "strict mode was requested"
                        },
                    });
                }
                fallbacks.push(skip);
            }
        }
    }
    Err(SkillError::NoBackend {
        model_type: info.model_type,
        task,
        requested: resolved.to_string(),
        tried: fallbacks,
    })
}

/// The settings a [`DispatchTable`] evaluates, in column order.
pub const TABLE_SETTINGS: [&str; 5] = [
    "auto",
    "cpu",
    "mojo_max",
    "USE_MOJO_MAX_TARGET=1",
    "SKILLGEN_TARGET=mojo_max SKILLGEN_STRICT=1",
];

fn table_setting(i: usize) -> (TargetSpec, MapEnv) {
    match i {
        0 => (TargetSpec::Auto, MapEnv::empty()),
        1 => (TargetSpec::Exact(Target::Cpu), MapEnv::empty()),
        2 => (TargetSpec::Exact(Target::MojoMax), MapEnv::empty()),
        3 => (
            TargetSpec::Default,
            MapEnv::from_pairs(&[(vars::USE_MOJO_MAX_TARGET, "1")]),
        ),
        _ => (
            TargetSpec::Default,
            MapEnv::from_pairs(&[
                (vars::SKILLGEN_TARGET, "mojo_max"),
                (vars::SKILLGEN_STRICT, "1"),
            ]),
        ),
    }
}

/// A compact, task-independent one-line outcome: targets with [`SkipReason::kind`] codes, e.g.
/// `no backend: mojo_max=max_unreachable, cuda:0=not_compiled_in, metal:0=not_compiled_in,
/// cpu=task_not_implemented` or `used cpu after mojo_max=max_no_architecture`.
pub fn outcome_code(result: &Result<Dispatch, SkillError>) -> String {
    let skips = |s: &[Skip]| {
        s.iter()
            .map(|s| format!("{}={}", s.target, s.reason.kind()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match result {
        Ok(d) if d.fallbacks.is_empty() => format!("used {}", d.used),
        Ok(d) => format!("used {} after {}", d.used, skips(&d.fallbacks)),
        Err(SkillError::NoBackend { tried, .. }) => format!("no backend: {}", skips(tried)),
        Err(SkillError::Strict { skip, .. }) => {
            format!("strict: {}", skips(std::slice::from_ref(skip)))
        }
        Err(e) => format!("error: {e}"),
    }
}

/// A task-independent one-line outcome with the full human-readable skip messages.
pub fn outcome(result: &Result<Dispatch, SkillError>) -> String {
    let skips = |s: &[Skip]| {
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    match result {
        Ok(d) if d.fallbacks.is_empty() => format!("used {}", d.used),
        Ok(d) => format!("used {} after {}", d.used, skips(&d.fallbacks)),
        Err(SkillError::NoBackend { tried, .. }) => format!("error: no backend: {}", skips(tried)),
        Err(SkillError::Strict { skip, .. }) => format!("error: strict: {skip}"),
        Err(e) => format!("error: {e}"),
    }
}

/// One row of a [`DispatchTable`]: tasks sharing the same outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRow {
    /// The tasks (canonical spellings).
    pub tasks: Vec<&'static str>,
    /// One outcome per [`TABLE_SETTINGS`] entry.
    pub outcomes: [String; 5],
}

/// For each task of a skill and each of the [`TABLE_SETTINGS`], the dispatch outcome
/// ([`outcome_code`]). Deterministic for a given [`Capabilities`]; tasks with identical
/// outcomes share a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DispatchTable {
    /// The model type.
    pub model_type: &'static str,
    /// The setting names, in outcome order.
    pub settings: [&'static str; 5],
    /// The rows.
    pub rows: Vec<TableRow>,
}

/// Build the [`DispatchTable`] of `info` under `caps`, over `backends`.
pub fn table(info: &SkillInfo, caps: &Capabilities, backends: &Backends) -> DispatchTable {
    let settings: Vec<(TargetSpec, MapEnv)> =
        (0..TABLE_SETTINGS.len()).map(table_setting).collect();
    let mut rows: Vec<TableRow> = Vec::new();
    for t in info.tasks {
        let outcomes: [String; 5] = std::array::from_fn(|i| {
            let (spec, env) = &settings[i];
            outcome_code(&plan(info, t.task, spec, env, caps, false, backends))
        });
        match rows.iter_mut().find(|r| r.outcomes == outcomes) {
            Some(row) => row.tasks.push(t.task.as_str()),
            None => rows.push(TableRow {
                tasks: vec![t.task.as_str()],
                outcomes,
            }),
        }
    }
    DispatchTable {
        model_type: info.model_type,
        settings: TABLE_SETTINGS,
        rows,
    }
}

impl fmt::Display for DispatchTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.model_type)?;
        for row in &self.rows {
            writeln!(f, "  [{}]", row.tasks.join(", "))?;
            for (name, out) in self.settings.iter().zip(&row.outcomes) {
                writeln!(f, "    {name}: {out}")?;
            }
        }
        Ok(())
    }
}

/// Run a call of `info` for a `dispatch` that was planned over `backends`, under `env` and
/// `caps` (`model_names` as in [`plan_for_model`]).
///
/// This is the one place where a run-time failure moves a call on: when the chosen backend
/// answers [`Failure::Retry`], the reason is recorded as a fallback and the next target of the
/// chain whose check passes runs the call (the returned [`Dispatch`] says so). In strict mode
/// with an exact target the failure is a [`SkillError::Strict`] instead. A
/// [`Failure::Final`] is returned as it is.
#[allow(clippy::too_many_arguments)]
pub fn execute<T>(
    info: &SkillInfo,
    backends: &Backends,
    model_names: &[&str],
    dispatch: Dispatch,
    env: &dyn EnvSource,
    caps: &Capabilities,
    mut run: impl FnMut(&dyn Backend, Target) -> Result<T, Failure>,
) -> Result<(T, Dispatch), SkillError> {
    let mut dispatch = dispatch;
    let mut target = dispatch.used;
    let mut backend = match backends.for_target(target) {
        Some(b) => b,
        None => {
            return Err(SkillError::NoBackend {
                model_type: dispatch.model_type,
                task: dispatch.task,
                requested: dispatch.resolved.to_string(),
                tried: dispatch.fallbacks,
            });
        }
    };
    loop {
        let _span = tracing::debug_span!("run", backend = %backend.kind(), %target).entered();
        let reason = match run(backend, target) {
            Ok(out) => {
                dispatch.used = target;
                return Ok((out, dispatch));
            }
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Retry(reason)) => reason,
        };
        tracing::warn!(%target, reason = %reason, "run failed; trying the next target");
        let skip = Skip { target, reason };
        if dispatch.strict && dispatch.resolved.target.is_some() {
            return Err(SkillError::Strict {
                model_type: dispatch.model_type,
                task: dispatch.task,
                skip,
                why: if env_strict(env)? {
                    "SKILLGEN_STRICT is set"
                } else {
                    "strict mode was requested"
                },
            });
        }
        dispatch.fallbacks.push(skip);
        let mut next = None;
        for candidate in target.fallbacks_from().skip(1) {
            let input = CheckInput {
                info,
                task: dispatch.task,
                target: candidate,
                caps,
                model_names,
                max_requested: false,
            };
            match backends.check(&input) {
                Ok(b) => {
                    next = Some((candidate, b));
                    break;
                }
                Err(reason) => {
                    tracing::debug!(target = %candidate, reason = %reason, "skipped");
                    dispatch.fallbacks.push(Skip {
                        target: candidate,
                        reason,
                    });
                }
            }
        }
        match next {
            Some((t, b)) => {
                target = t;
                backend = b;
            }
            None => {
                return Err(SkillError::NoBackend {
                    model_type: dispatch.model_type,
                    task: dispatch.task,
                    requested: dispatch.resolved.to_string(),
                    tried: dispatch.fallbacks,
                });
            }
        }
    }
}
