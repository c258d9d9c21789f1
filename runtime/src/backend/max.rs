//! The MAX backend: Modular MAX through `max serve` (see [`crate::max`]).

use skillgen_vocab::Task;

use super::{Backend, BackendKind, CheckInput, backend_for};
use crate::caps::{Capabilities, MaxServer};
use crate::dispatch::{Dispatch, Skip, SkipReason};
use crate::env::{EnvSource, ProcessEnv, vars};
use crate::info::SkillInfo;
use crate::request::{Call, Output};
use crate::skill::SkillState;
use crate::{SkillError, Target};

/// The MAX backend: `max serve`'s OpenAI-compatible API (see [`crate::max`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxBackend;

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

    /// MAX can run a call when, in this order: the registry names a MAX architecture for the
    /// model type; MAX serves the task for it ([`crate::max::max_job`]); and either
    /// `MAX_SERVE_URL` serves this model, or — only when `mojo_max` was asked for — a `max`
    /// executable is available to start `max serve` for the model directory on first use.
    fn check(&self, input: &CheckInput<'_>) -> Result<(), SkipReason> {
        let info = input.info;
        if info.max.is_empty() {
            return Err(SkipReason::MaxNoArchitecture {
                model_type: info.model_type,
            });
        }
        crate::max::max_job(info, input.task)?;
        let max = &input.caps.max;
        if crate::max::served_model(input.caps, info, input.model_names).is_some()
            || (input.max_requested && max.executable.path.is_some())
        {
            return Ok(());
        }
        match &max.server {
            MaxServer::Serving { models } => Err(SkipReason::MaxNotServed {
                url: max.serve_url.clone().unwrap_or_default(),
                served: models.clone(),
                model_type: info.model_type,
            }),
            server => Err(SkipReason::MaxUnreachable {
                detail: unreachable_detail(server, max),
            }),
        }
    }

    /// Runs with the process environment and the detected capabilities; the dispatcher uses
    /// [`MaxBackend::run_dispatched`], which also falls back on failure.
    fn run(
        &self,
        state: &SkillState,
        _target: Target,
        task: Task,
        call: Call,
    ) -> Result<Output, SkillError> {
        crate::max::run_call(state, task, call, &ProcessEnv, Capabilities::detected())
    }
}

/// Why MAX is unreachable, in one allocation (auto records this on every plan, so it is on the
/// dispatch hot path).
fn unreachable_detail(server: &MaxServer, max: &crate::caps::MaxInfo) -> String {
    use std::fmt::Write as _;
    let mut d = String::with_capacity(192);
    // Writing into a String cannot fail.
    let _ = match (server, &max.serve_url) {
        (MaxServer::Unreachable { error }, Some(url)) => {
            write!(d, "{}={url} did not answer: {error}", vars::MAX_SERVE_URL)
        }
        (MaxServer::Unreachable { error }, None) => d.write_str(error),
        _ => write!(d, "{} not set", vars::MAX_SERVE_URL),
    };
    let exe = &max.executable;
    let _ = match exe.path.as_ref() {
        Some(path) => write!(
            d,
            " and `max` at {} is only started when mojo_max is asked for (auto never starts a server)",
            path.display()
        ),
        None if exe.detail.starts_with(vars::SKILLGEN_MAX_BIN) => {
            write!(d, " and no `max` executable found ({})", exe.detail)
        }
        None => d.write_str(" and no `max` executable found"),
    };
    d
}

impl MaxBackend {
    /// Run `call` for a `dispatch` that chose `mojo_max`, under `env` and `caps`.
    ///
    /// When MAX fails at run time (server start, crash, timeout, HTTP error, unrecoverable
    /// pooling), the failure is recorded as a [`SkipReason::MaxFailed`] fallback and the next
    /// target of the chain that passes its check runs the call (the returned [`Dispatch`] says
    /// so). In strict mode with an exact target the failure is a [`SkillError::Strict`]
    /// instead. Invalid requests ([`SkillError::InvalidRequest`]) are returned as they are.
    pub fn run_dispatched(
        &self,
        state: &SkillState,
        dispatch: Dispatch,
        call: Call,
        env: &dyn EnvSource,
        caps: &Capabilities,
    ) -> Result<(Output, Dispatch), SkillError> {
        let err = match crate::max::run_call(state, dispatch.task, call.clone(), env, caps) {
            Ok(out) => return Ok((out, dispatch)),
            Err(e @ SkillError::InvalidRequest { .. }) => return Err(e),
            Err(e) => e,
        };
        let detail = match err {
            SkillError::Backend { detail, .. } => detail,
            other => other.to_string(),
        };
        let skip = Skip {
            target: Target::MojoMax,
            reason: SkipReason::MaxFailed { detail },
        };
        if dispatch.strict && dispatch.resolved.target.is_some() {
            return Err(SkillError::Strict {
                model_type: dispatch.model_type,
                task: dispatch.task,
                skip,
                why: if crate::dispatch::env_strict(env)? {
                    "SKILLGEN_STRICT is set"
                } else {
                    "strict mode was requested"
                },
            });
        }
        let mut fallbacks = dispatch.fallbacks.clone();
        fallbacks.push(skip);
        let names = state.model_names();
        for target in Target::MojoMax.fallbacks_from().skip(1) {
            let input = CheckInput {
                info: state.info(),
                task: dispatch.task,
                target,
                caps,
                model_names: &names,
                max_requested: false,
            };
            let backend = backend_for(target);
            match backend.check(&input) {
                Ok(()) => {
                    let out = backend.run(state, target, dispatch.task, call)?;
                    return Ok((
                        out,
                        Dispatch {
                            used: target,
                            fallbacks,
                            ..dispatch
                        },
                    ));
                }
                Err(reason) => fallbacks.push(Skip { target, reason }),
            }
        }
        Err(SkillError::NoBackend {
            model_type: dispatch.model_type,
            task: dispatch.task,
            requested: dispatch.resolved.to_string(),
            tried: fallbacks,
        })
    }
}
