//! The MAX backend: Modular MAX through `max serve` (see [`crate::max`]).

use skillgen_vocab::Task;

use super::{Backend, BackendKind, CheckInput};
use crate::caps::MaxServer;
use crate::dispatch::SkipReason;
use crate::env::vars;
use crate::info::SkillInfo;
use crate::request::{Call, Output};
use crate::skill::SkillState;
use crate::{SkillError, Target};

/// The MAX backend. Capability detection is real; the client is not wired into dispatch yet.
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
