//! [`CandleBackend`]: the [`Backend`] implementation over the architecture modules.

use std::sync::OnceLock;

use skillgen_runtime::backend::table_check;
use skillgen_runtime::caps::DeviceSupport;
use skillgen_runtime::dispatch::SkipReason;
use skillgen_runtime::env::EnvSource;
use skillgen_runtime::request::{Call, GenerateRequest, Output};
use skillgen_runtime::stream::TokenStream;
use skillgen_runtime::{
    Backend, BackendKind, Backends, Capabilities, CheckInput, Failure, Model, RunContext,
    SkillError, Support, Target, Task,
};

/// The candle backend (CPU; CUDA and Metal with the cargo features). Runs what the registry's
/// `native:` table routes to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CandleBackend;

/// A set with only the candle backend (tests, and users who do not want MAX).
pub fn backends() -> &'static Backends {
    static SET: OnceLock<Backends> = OnceLock::new();
    SET.get_or_init(|| Backends::new(vec![Box::new(CandleBackend)]))
}

impl CandleBackend {
    fn architecture(
        state: &Model,
        target: Target,
        task: Task,
    ) -> Result<&'static dyn crate::Architecture, SkillError> {
        match state.info().support(task, BackendKind::Candle) {
            Support::Verified(implementation) => {
                if let Some(q) = state.quantization()
                    && implementation != skillgen_runtime::NativeImpl::Decoder
                {
                    // Refused, not ignored: running the float model would not be what was asked.
                    return Err(SkillError::Backend {
                        backend: BackendKind::Candle,
                        detail: format!(
                            "load-time quantization ({q}) is implemented for the config-driven decoder only; `{}` ({}) runs on candle's `{}` implementation, in float",
                            state.info().model_type,
                            task,
                            implementation.as_str()
                        ),
                    });
                }
                Ok(crate::architecture(implementation))
            }
            _ => Err(crate::not_implemented(state, target, task)),
        }
    }
}

impl Backend for CandleBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Candle
    }

    fn serves(&self, target: Target) -> bool {
        target != Target::MojoMax
    }

    fn probe(&self, _env: &dyn EnvSource, caps: &mut Capabilities) {
        caps.cuda = DeviceSupport::cuda(cfg!(feature = "cuda"));
        caps.metal = DeviceSupport::metal(cfg!(feature = "metal"));
    }

    fn check(&self, input: &CheckInput<'_>) -> Result<(), SkipReason> {
        match input.target {
            Target::Cpu => {}
            Target::Cuda(n) => input.caps.cuda.check("CUDA", "cuda", n)?,
            Target::Metal(n) => input.caps.metal.check("Metal", "metal", n)?,
            Target::MojoMax => {
                return Err(SkipReason::TaskNotImplemented {
                    backend: BackendKind::Candle,
                });
            }
        }
        table_check(input.info, input.task, BackendKind::Candle)
    }

    fn run(&self, cx: &RunContext<'_>, call: Call) -> Result<Output, Failure> {
        let (state, target, task) = (cx.model, cx.target, cx.task);
        let _span =
            tracing::debug_span!("candle", model_type = state.info().model_type, %target).entered();
        Ok(Self::architecture(state, target, task)?.run(state, target, task, call)?)
    }

    fn stream(
        &self,
        cx: &RunContext<'_>,
        request: GenerateRequest,
    ) -> Result<TokenStream, Failure> {
        let (state, target, task) = (cx.model, cx.target, cx.task);
        Ok(Self::architecture(state, target, task)?.stream(state, target, task, request)?)
    }
}
