//! [`MaxBackend`]: the [`Backend`] implementation over `max serve` (see [`crate`]).

use std::sync::OnceLock;

use skillgen_runtime::caps::{MaxInfo, MaxServer};
use skillgen_runtime::dispatch::SkipReason;
use skillgen_runtime::env::{EnvSource, vars};
use skillgen_runtime::request::{Call, Output};
use skillgen_runtime::{
    Backend, BackendKind, Backends, Capabilities, CheckInput, Failure, RunContext, SkillError,
    SkillInfo, Support, Target,
};

/// The MAX backend: `max serve`'s OpenAI-compatible API (see [`crate`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MaxBackend;

/// A set with only the MAX backend.
pub fn backends() -> &'static Backends {
    static SET: OnceLock<Backends> = OnceLock::new();
    SET.get_or_init(|| Backends::new(vec![Box::new(MaxBackend)]))
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

    fn serves(&self, target: Target) -> bool {
        target == Target::MojoMax
    }

    /// What the server at `MAX_SERVE_URL` serves (`GET /v1/models`, 2 s timeout).
    fn probe(&self, _env: &dyn EnvSource, caps: &mut Capabilities) {
        if let Some(url) = caps.max.serve_url.clone() {
            caps.max.server = crate::probe::probe_max_server(&url, crate::probe::MAX_PROBE_TIMEOUT);
        }
    }

    /// MAX can run a call when, in this order: the registry does not refuse it; the registry
    /// names a MAX architecture for the model type; MAX serves the task for it
    /// ([`crate::max_job`]); and either `MAX_SERVE_URL` serves this model, or — only when
    /// `mojo_max` was asked for — a `max` executable is available to start `max serve` for
    /// the model directory on first use.
    fn check(&self, input: &CheckInput<'_>) -> Result<(), SkipReason> {
        let info = input.info;
        if let Support::Refused(reason) = info.support(input.task, BackendKind::Max) {
            return Err(SkipReason::Refused {
                backend: BackendKind::Max,
                reason,
            });
        }
        if info.max.is_empty() {
            return Err(SkipReason::MaxNoArchitecture {
                model_type: info.model_type,
            });
        }
        crate::max_job(info, input.task)?;
        let max = &input.caps.max;
        if crate::served_model(input.caps, info, input.model_names).is_some()
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

    /// Runs on the server of `MAX_SERVE_URL` or one started for the skill. A run-time failure
    /// (server start, crash, timeout, HTTP error, unrecoverable pooling) is a
    /// [`Failure::Retry`] with [`SkipReason::MaxFailed`]: dispatch records it and moves on (or
    /// it is the strict-mode error). An invalid request is returned as it is.
    fn run(&self, cx: &RunContext<'_>, call: Call) -> Result<Output, Failure> {
        let _span = tracing::debug_span!("max", model_type = cx.model.info().model_type).entered();
        if let Some(reason) = crate::config_check::refusal(cx.model) {
            return Err(Failure::Retry(SkipReason::Refused {
                backend: BackendKind::Max,
                reason,
            }));
        }
        match crate::run_call(cx.model, cx.task, call, cx.env, cx.caps) {
            Ok(out) => Ok(out),
            Err(e @ SkillError::InvalidRequest { .. }) => Err(Failure::Final(e)),
            Err(e) => Err(Failure::Retry(SkipReason::MaxFailed {
                detail: match e {
                    SkillError::Backend { detail, .. } => detail,
                    other => other.to_string(),
                },
            })),
        }
    }
}

/// Why MAX is unreachable, in one allocation (auto records this on every plan, so it is on the
/// dispatch hot path).
fn unreachable_detail(server: &MaxServer, max: &MaxInfo) -> String {
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
