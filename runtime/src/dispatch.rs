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

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use skillgen_vocab::{Capability, Task};

use crate::SkillError;
use crate::backend::{BackendKind, CheckInput, backend_for};
use crate::caps::Capabilities;
use crate::env::{self, EnvSource, MapEnv, vars};
use crate::info::SkillInfo;
use crate::target::{SPEC_ALLOWED, Target, TargetSpec};

/// Why a target was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The cargo feature for this target was not enabled when building skillgen-runtime.
    NotCompiledIn {
        /// The feature (`cuda`, `metal`).
        feature: &'static str,
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
                "not compiled in (build skillgen-runtime with the `{feature}` feature)"
            ),
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
    if env::flag(env, vars::USE_MOJO_MAX_TARGET)? == Some(true) {
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

/// Whether `SKILLGEN_STRICT` asks for strict mode (an invalid value is an error).
pub fn env_strict(env: &dyn EnvSource) -> Result<bool, SkillError> {
    Ok(env::flag(env, vars::SKILLGEN_STRICT)?.unwrap_or(false))
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

/// Decide where `work` runs for `info`. Pure: `env` and `caps` are arguments.
/// `strict` is the builder option; `SKILLGEN_STRICT` in `env` also turns strict mode on.
pub fn plan(
    info: &SkillInfo,
    work: impl Into<Work>,
    spec: &TargetSpec,
    env: &dyn EnvSource,
    caps: &Capabilities,
    strict: bool,
) -> Result<Dispatch, SkillError> {
    plan_for_model(info, work.into(), spec, env, caps, strict, &[])
}

/// [`plan`] for a loaded model whose `model_names` (e.g. `_name_or_path`, directory name,
/// `architectures`) a MAX server's model id may match.
pub fn plan_for_model(
    info: &SkillInfo,
    work: Work,
    spec: &TargetSpec,
    env: &dyn EnvSource,
    caps: &Capabilities,
    strict: bool,
    model_names: &[&str],
) -> Result<Dispatch, SkillError> {
    plan_with_check(info, work, spec, env, caps, strict, model_names, &|input| {
        backend_for(input.target).check(input)
    })
}

/// [`plan_for_model`] with the backend check injected (tests exercise the chain with a check
/// that accepts what this build's backends do not implement yet).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_with_check(
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

/// Build the [`DispatchTable`] of `info` under `caps`.
pub fn table(info: &SkillInfo, caps: &Capabilities) -> DispatchTable {
    let settings: Vec<(TargetSpec, MapEnv)> =
        (0..TABLE_SETTINGS.len()).map(table_setting).collect();
    let mut rows: Vec<TableRow> = Vec::new();
    for t in info.tasks {
        let outcomes: [String; 5] = std::array::from_fn(|i| {
            let (spec, env) = &settings[i];
            outcome_code(&plan(info, t.task, spec, env, caps, false))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, CandleBackend, MaxBackend};
    use crate::info::TaskInfo;
    use skillgen_vocab::{Family, Modality};

    /// A decoder whose generation candle does not run (candle ignores Granite's multipliers).
    static GRANITE: SkillInfo = SkillInfo {
        model_type: "granite",
        struct_name: "Granite",
        family: Family::Decoder,
        modalities: &[Modality::Text],
        config_class: Some("GraniteConfig"),
        hf_module: Some("granite"),
        tasks: &[
            TaskInfo {
                task: Task::BaseModel,
                hf_classes: &["GraniteModel"],
            },
            TaskInfo {
                task: Task::CausalLm,
                hf_classes: &["GraniteForCausalLM"],
            },
            TaskInfo {
                task: Task::SequenceClassification,
                hf_classes: &["GraniteForSequenceClassification"],
            },
        ],
        candle: Some("granite"),
        max: &["GraniteForCausalLM"],
        sub_config_of: &[],
        deprecated: false,
    };

    static BERT: SkillInfo = SkillInfo {
        model_type: "bert",
        struct_name: "Bert",
        family: Family::Encoder,
        modalities: &[Modality::Text],
        config_class: None,
        hf_module: None,
        tasks: &[TaskInfo {
            task: Task::MaskedLm,
            hf_classes: &[],
        }],
        candle: Some("bert"),
        max: &[],
        sub_config_of: &[],
        deprecated: false,
    };

    /// The real checks, except that candle is taken to implement every task: exercises the
    /// chain past this build's "task not implemented" (a support predicate, no output).
    fn candle_implements_all(input: &CheckInput<'_>) -> Result<(), SkipReason> {
        match input.target {
            Target::MojoMax => MaxBackend.check(input),
            _ => match CandleBackend.check(input) {
                Err(SkipReason::TaskNotImplemented { .. }) => Ok(()),
                other => other,
            },
        }
    }

    const NO_MAX: &str =
        "mojo_max skipped: MAX unreachable (MAX_SERVE_URL not set and no `max` executable found)";

    fn hyp(
        info: &SkillInfo,
        spec: TargetSpec,
        env: &[(&str, &str)],
        caps: &Capabilities,
        strict: bool,
    ) -> Result<Dispatch, SkillError> {
        plan_with_check(
            info,
            Capability::Generate.into(),
            &spec,
            &MapEnv::from_pairs(env),
            caps,
            strict,
            &[],
            &candle_implements_all,
        )
        .or_else(|e| match e {
            // BERT has no `generate`; use its task.
            SkillError::CapabilityMissing { .. } => plan_with_check(
                info,
                Task::MaskedLm.into(),
                &spec,
                &MapEnv::from_pairs(env),
                caps,
                strict,
                &[],
                &candle_implements_all,
            ),
            e => Err(e),
        })
    }

    fn used_and_skips(r: &Result<Dispatch, SkillError>) -> (Option<Target>, Vec<String>) {
        match r {
            Ok(d) => (
                Some(d.used),
                d.fallbacks.iter().map(ToString::to_string).collect(),
            ),
            Err(e) => (None, e.tried().iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn use_mojo_max_without_max_falls_back_to_cpu() {
        let caps = Capabilities::fixed_cpu_only();
        let r = hyp(
            &GRANITE,
            TargetSpec::Default,
            &[("USE_MOJO_MAX_TARGET", "1")],
            &caps,
            false,
        );
        let d = r.as_ref().unwrap();
        assert_eq!(d.resolved.target, Some(Target::MojoMax));
        assert_eq!(d.resolved.source, TargetSource::UseMojoMaxTarget);
        assert_eq!(d.used, Target::Cpu);
        assert_eq!(d.task, Task::CausalLm);
        assert!(!d.strict);
        assert_eq!(
            used_and_skips(&r).1,
            [
                NO_MAX,
                "cuda:0 skipped: not compiled in (build skillgen-runtime with the `cuda` feature)",
                "metal:0 skipped: not compiled in (build skillgen-runtime with the `metal` feature)",
            ]
        );
        let json = serde_json::to_value(d).unwrap();
        assert_eq!(json["used"], "cpu");
        assert_eq!(json["requested"], "default");
        assert_eq!(json["resolved"]["target"], "mojo_max");
        assert_eq!(json["resolved"]["source"], "use_mojo_max_target");
        assert_eq!(json["fallbacks"][0]["reason"], "max_unreachable");
        assert_eq!(json["capability"], "generate");
    }

    #[test]
    fn strict_turns_the_max_fallback_into_an_error() {
        let caps = Capabilities::fixed_cpu_only();
        for (env, strict, why) in [
            (
                &[("USE_MOJO_MAX_TARGET", "1"), ("SKILLGEN_STRICT", "1")][..],
                false,
                "SKILLGEN_STRICT is set",
            ),
            (
                &[("USE_MOJO_MAX_TARGET", "yes")][..],
                true,
                "strict mode was requested",
            ),
            (
                &[("SKILLGEN_TARGET", "mojo_max"), ("SKILLGEN_STRICT", "true")][..],
                false,
                "SKILLGEN_STRICT is set",
            ),
        ] {
            let e = hyp(&GRANITE, TargetSpec::Default, env, &caps, strict).unwrap_err();
            match &e {
                SkillError::Strict { skip, why: w, .. } => {
                    assert_eq!(skip.to_string(), NO_MAX);
                    assert_eq!(*w, why);
                }
                e => panic!("{env:?}: {e}"),
            }
            assert!(e.to_string().contains("MAX unreachable"), "{e}");
        }
        // Strict does not change auto: auto asks for the best available.
        let d = hyp(
            &GRANITE,
            TargetSpec::Auto,
            &[("SKILLGEN_STRICT", "1")],
            &caps,
            false,
        )
        .unwrap();
        assert_eq!((d.used, d.strict), (Target::Cpu, true));
        // Strict with an exact target that works is fine.
        let d = hyp(&GRANITE, Target::Cpu.into(), &[], &caps, true).unwrap();
        assert_eq!((d.used, d.fallbacks.len()), (Target::Cpu, 0));
    }

    #[test]
    fn fallback_reasons_table() {
        struct Case {
            name: &'static str,
            info: &'static SkillInfo,
            spec: TargetSpec,
            env: &'static [(&'static str, &'static str)],
            caps: Capabilities,
            used: Option<Target>,
            first_skip: &'static str,
        }
        let cpu = Capabilities::fixed_cpu_only;
        let cases = [
            Case {
                name: "no MAX architecture",
                info: &BERT,
                spec: Target::MojoMax.into(),
                env: &[],
                caps: cpu(),
                used: Some(Target::Cpu),
                first_skip: "mojo_max skipped: the registry names no MAX architecture for model type `bert`",
            },
            Case {
                name: "no MAX architecture beats MAX reachability",
                info: &BERT,
                spec: TargetSpec::Default,
                env: &[("USE_MOJO_MAX_TARGET", "true")],
                caps: Capabilities::fixed_with_max(&["bert"]),
                used: Some(Target::Cpu),
                first_skip: "mojo_max skipped: the registry names no MAX architecture for model type `bert`",
            },
            Case {
                name: "MAX up, serving something else",
                info: &GRANITE,
                spec: Target::MojoMax.into(),
                env: &[],
                caps: Capabilities::fixed_with_max(&["google/gemma-3-1b-it"]),
                used: Some(Target::Cpu),
                first_skip: "mojo_max skipped: the MAX server at http://127.0.0.1:8000 serves google/gemma-3-1b-it, not model type `granite`",
            },
            Case {
                name: "MAX up, serving nothing",
                info: &GRANITE,
                spec: Target::MojoMax.into(),
                env: &[],
                caps: Capabilities::fixed_with_max(&[]),
                used: Some(Target::Cpu),
                first_skip: "mojo_max skipped: the MAX server at http://127.0.0.1:8000 serves no models",
            },
            Case {
                name: "MAX serves the architecture",
                info: &GRANITE,
                spec: Target::MojoMax.into(),
                env: &[],
                caps: Capabilities::fixed_with_max(&["GraniteForCausalLM"]),
                used: Some(Target::MojoMax),
                first_skip: "",
            },
            Case {
                name: "MAX URL down, executable found: the backend starts its own server",
                info: &GRANITE,
                spec: Target::MojoMax.into(),
                env: &[],
                caps: cpu()
                    .with_max_unreachable("http://127.0.0.1:9", "connection refused")
                    .with_max_executable("/opt/max/bin/max"),
                used: Some(Target::MojoMax),
                first_skip: "",
            },
            Case {
                name: "MAX serving something else, executable found",
                info: &GRANITE,
                spec: Target::MojoMax.into(),
                env: &[],
                caps: Capabilities::fixed_with_max(&["google/gemma-3-1b-it"])
                    .with_max_executable("/opt/max/bin/max"),
                used: Some(Target::MojoMax),
                first_skip: "",
            },
            Case {
                name: "MAX URL down, no executable",
                info: &GRANITE,
                spec: Target::MojoMax.into(),
                env: &[],
                caps: cpu().with_max_unreachable("http://127.0.0.1:9", "connection refused"),
                used: Some(Target::Cpu),
                first_skip: "mojo_max skipped: MAX unreachable (MAX_SERVE_URL=http://127.0.0.1:9 did not answer: connection refused and no `max` executable found)",
            },
            Case {
                name: "auto picks CUDA when compiled in with a device",
                info: &GRANITE,
                spec: TargetSpec::Auto,
                env: &[],
                caps: cpu().with_cuda(true, 1),
                used: Some(Target::Cuda(0)),
                first_skip: NO_MAX,
            },
            Case {
                name: "missing CUDA ordinal",
                info: &GRANITE,
                spec: Target::Cuda(1).into(),
                env: &[],
                caps: cpu().with_cuda(true, 1),
                used: Some(Target::Cpu),
                first_skip: "cuda:1 skipped: no CUDA device 1 (1 found: fixed report: 1 CUDA device(s))",
            },
            Case {
                name: "metal compiled in, no device",
                info: &GRANITE,
                spec: Target::Metal(0).into(),
                env: &[],
                caps: cpu().with_metal(true, 0),
                used: Some(Target::Cpu),
                first_skip: "metal:0 skipped: no Metal device 0 (0 found: fixed report: 0 Metal device(s))",
            },
            Case {
                name: "explicit beats SKILLGEN_TARGET",
                info: &GRANITE,
                spec: Target::Cpu.into(),
                env: &[("SKILLGEN_TARGET", "mojo_max"), ("SKILLGEN_STRICT", "1")],
                caps: cpu(),
                used: Some(Target::Cpu),
                first_skip: "",
            },
            Case {
                name: "SKILLGEN_TARGET beats USE_MOJO_MAX_TARGET",
                info: &GRANITE,
                spec: TargetSpec::Default,
                env: &[("SKILLGEN_TARGET", "metal:0"), ("USE_MOJO_MAX_TARGET", "1")],
                caps: cpu(),
                used: Some(Target::Cpu),
                first_skip: "metal:0 skipped: not compiled in (build skillgen-runtime with the `metal` feature)",
            },
            Case {
                name: "USE_MOJO_MAX_TARGET=0 is ignored",
                info: &GRANITE,
                spec: TargetSpec::Default,
                env: &[("USE_MOJO_MAX_TARGET", "0")],
                caps: cpu().with_cuda(true, 2),
                used: Some(Target::Cuda(0)),
                first_skip: NO_MAX,
            },
            Case {
                name: "empty USE_MOJO_MAX_TARGET is ignored",
                info: &GRANITE,
                spec: TargetSpec::Default,
                env: &[("USE_MOJO_MAX_TARGET", ""), ("SKILLGEN_TARGET", "")],
                caps: cpu(),
                used: Some(Target::Cpu),
                first_skip: NO_MAX,
            },
        ];
        for c in cases {
            let r = hyp(c.info, c.spec, c.env, &c.caps, false);
            let (used, skips) = used_and_skips(&r);
            assert_eq!(used, c.used, "{}: {r:?}", c.name);
            assert_eq!(
                skips.first().map_or("", String::as_str),
                c.first_skip,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn invalid_env_values_name_the_variable() {
        let caps = Capabilities::fixed_cpu_only();
        for (var, value, allowed) in [
            (
                "SKILLGEN_TARGET",
                "gpu",
                "cpu, cuda, cuda:N, metal, metal:N, mojo_max, auto",
            ),
            (
                "SKILLGEN_TARGET",
                "cuda:x",
                "cpu, cuda, cuda:N, metal, metal:N, mojo_max, auto",
            ),
            ("USE_MOJO_MAX_TARGET", "maybe", crate::env::BOOL_ALLOWED),
            ("SKILLGEN_STRICT", "2", crate::env::BOOL_ALLOWED),
        ] {
            let e = hyp(&GRANITE, TargetSpec::Default, &[(var, value)], &caps, false).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid {var}=`{value}`: expected one of {allowed}")
            );
        }
        // An explicit target does not read SKILLGEN_TARGET, so a bad value there is not consulted…
        assert!(
            hyp(
                &GRANITE,
                Target::Cpu.into(),
                &[("SKILLGEN_TARGET", "gpu")],
                &caps,
                false
            )
            .is_ok()
        );
        // …but SKILLGEN_STRICT is always read.
        assert!(
            hyp(
                &GRANITE,
                Target::Cpu.into(),
                &[("SKILLGEN_STRICT", "sure")],
                &caps,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn resolution_order() {
        let r = |spec: TargetSpec, env: &[(&str, &str)]| {
            resolve(&spec, &MapEnv::from_pairs(env)).unwrap()
        };
        assert_eq!(r(TargetSpec::Default, &[]).to_string(), "auto (default)");
        assert_eq!(
            r(TargetSpec::Auto, &[("SKILLGEN_TARGET", "cpu")]).to_string(),
            "auto (explicit)"
        );
        assert_eq!(
            r(
                TargetSpec::Default,
                &[("SKILLGEN_TARGET", "auto"), ("USE_MOJO_MAX_TARGET", "1")]
            )
            .to_string(),
            "auto (SKILLGEN_TARGET)"
        );
        assert_eq!(
            r(TargetSpec::Default, &[("SKILLGEN_TARGET", " CUDA ")]).to_string(),
            "cuda:0 (SKILLGEN_TARGET)"
        );
        assert_eq!(
            r(TargetSpec::Default, &[("USE_MOJO_MAX_TARGET", "TRUE")]).to_string(),
            "mojo_max (USE_MOJO_MAX_TARGET)"
        );
    }

    #[test]
    fn real_backends_end_in_no_backend_with_the_full_trace() {
        let caps = Capabilities::fixed_cpu_only();
        let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]);
        let e = plan(
            &GRANITE,
            Capability::Generate,
            &TargetSpec::Default,
            &env,
            &caps,
            false,
        )
        .unwrap_err();
        let SkillError::NoBackend {
            tried,
            requested,
            task,
            ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(*task, Task::CausalLm);
        assert_eq!(requested, "mojo_max (USE_MOJO_MAX_TARGET)");
        let kinds: Vec<_> = tried.iter().map(|s| s.reason.kind()).collect();
        assert_eq!(
            kinds,
            [
                "max_unreachable",
                "not_compiled_in",
                "not_compiled_in",
                "task_not_implemented"
            ]
        );
        assert_eq!(
            tried[3].to_string(),
            "cpu skipped: task not implemented by the candle backend"
        );
        assert!(e.to_string().starts_with(
            "no backend can run model type `granite` task `causal-lm` (target mojo_max (USE_MOJO_MAX_TARGET)): mojo_max skipped: MAX unreachable"
        ), "{e}");
    }

    #[test]
    fn missing_capability_or_task_is_typed() {
        let caps = Capabilities::fixed_cpu_only();
        let env = MapEnv::empty();
        let e = plan(
            &BERT,
            Capability::Transcribe,
            &TargetSpec::Auto,
            &env,
            &caps,
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "model type `bert` has no `transcribe` capability (it has: fill_mask)"
        );
        let e = plan(&BERT, Task::Ctc, &TargetSpec::Auto, &env, &caps, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "model type `bert` does not list task `ctc` (it lists: masked-lm)"
        );
    }

    #[test]
    fn table_is_deterministic_and_grouped() {
        let caps = Capabilities::fixed_cpu_only();
        let t = table(&GRANITE, &caps);
        assert_eq!(t, table(&GRANITE, &caps));
        // MAX serves causal-lm only: two rows.
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0].tasks, ["base-model", "sequence-classification"]);
        assert_eq!(t.rows[1].tasks, ["causal-lm"]);
        assert!(
            t.rows[0].outcomes[2].starts_with("no backend: mojo_max=max_task_unsupported"),
            "{t}"
        );
        let [auto, cpu, max, use_max, strict] = &t.rows[1].outcomes;
        assert_eq!(
            auto,
            "no backend: mojo_max=max_unreachable, cuda:0=not_compiled_in, metal:0=not_compiled_in, cpu=task_not_implemented"
        );
        assert_eq!(cpu, "no backend: cpu=task_not_implemented");
        assert_eq!(max, auto);
        assert_eq!(max, use_max);
        assert_eq!(strict, "strict: mojo_max=max_unreachable");
        let served = table(
            &GRANITE,
            &Capabilities::fixed_with_max(&["GraniteForCausalLM"]),
        );
        // MAX serves generation (causal-lm) only; the other tasks say why.
        assert_eq!(served.rows.len(), 2, "{served}");
        let causal = served
            .rows
            .iter()
            .find(|r| r.tasks == ["causal-lm"])
            .unwrap();
        assert_eq!(causal.outcomes[2], "used mojo_max");
        let other = served
            .rows
            .iter()
            .find(|r| r.tasks != ["causal-lm"])
            .unwrap();
        assert!(
            other.outcomes[2].starts_with("no backend: mojo_max=max_task_unsupported"),
            "{served}"
        );
        // The full-text form names the reason for a human.
        let env = MapEnv::from_pairs(&[
            (vars::USE_MOJO_MAX_TARGET, "1"),
            (vars::SKILLGEN_STRICT, "1"),
        ]);
        let r = plan(
            &GRANITE,
            Task::CausalLm,
            &TargetSpec::Default,
            &env,
            &caps,
            false,
        );
        assert_eq!(outcome(&r), format!("error: strict: {NO_MAX}"));
        assert_eq!(outcome_code(&r), "strict: mojo_max=max_unreachable");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(
            json["settings"][4],
            "SKILLGEN_TARGET=mojo_max SKILLGEN_STRICT=1"
        );
        assert!(t.to_string().starts_with(
            "granite\n  [base-model, sequence-classification]\n    auto: no backend: mojo_max=max_task_unsupported"
        ));
    }
}
