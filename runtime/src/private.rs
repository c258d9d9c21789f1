//! Support for code emitted by `#[derive(Skill)]`. Not a public API.

pub use crate::info::{SkillInfo, TaskInfo};
pub use crate::request::*;
pub use crate::skill::{MojoMaxTarget, Skill, SkillState};
pub use crate::{SkillError, TargetSpec};
pub use core::option::Option::{None, Some};
pub use core::result::Result;
pub use skillgen_vocab::{Family, Modality, Task};
pub use std::path::Path;

#[doc(hidden)]
pub use crate::candle_bert::last_hidden_state as bert_last_hidden_state;

use crate::backend::backend_for;
use crate::caps::Capabilities;
use crate::env::{EnvSource, ProcessEnv};

/// `Type::load`: load the state and wrap it.
pub fn load<S: Skill>(dir: &Path, spec: TargetSpec) -> Result<S, SkillError> {
    SkillState::load(S::INFO, dir, spec).map(S::from_state)
}

/// Validate, plan and run `call` under `env` and `caps`.
pub fn run_with(
    state: &SkillState,
    call: Call,
    env: &dyn EnvSource,
    caps: &Capabilities,
) -> Result<(Output, crate::dispatch::Dispatch), SkillError> {
    let capability = call.capability();
    call.validate()
        .map_err(|detail| SkillError::InvalidRequest { capability, detail })?;
    let dispatch = state.plan_with(capability, env, caps)?;
    if dispatch.used == crate::Target::MojoMax {
        // MAX falls back to the next target on a run-time failure, recording why.
        return crate::backend::MaxBackend.run_dispatched(state, dispatch, call, env, caps);
    }
    let output = backend_for(dispatch.used).run(state, dispatch.used, dispatch.task, call)?;
    Ok((output, dispatch))
}

/// Streaming `generate`: validate, plan, and start a [`TokenStream`] on the chosen target.
///
/// Streaming runs on the candle backend; a plan that picks another backend is a typed error.
pub fn generate_stream_with(
    state: &SkillState,
    request: GenerateRequest,
    env: &dyn EnvSource,
    caps: &Capabilities,
) -> Result<TokenStream, SkillError> {
    let call = Call::Generate(request);
    let capability = call.capability();
    call.validate()
        .map_err(|detail| SkillError::InvalidRequest { capability, detail })?;
    let Call::Generate(request) = call else {
        return Err(SkillError::InvalidRequest {
            capability,
            detail: "internal: not a generate call".to_owned(),
        });
    };
    let dispatch = state.plan_with(capability, env, caps)?;
    let backend = dispatch.used.backend();
    if backend != crate::backend::BackendKind::Candle
        || !crate::native::decoders::implements(state.info().model_type, dispatch.task)
    {
        return Err(SkillError::Backend {
            backend,
            detail: format!(
                "streaming generation of model type `{}` on {} is not implemented (streaming runs on the candle backend for: {})",
                state.info().model_type,
                dispatch.used,
                crate::native::decoders::TYPES.join(", ")
            ),
        });
    }
    let used = dispatch.used;
    Ok(crate::native::decoders::stream(state, used, request)?.with_dispatch(dispatch))
}

/// Streaming `generate` with the process environment and the detected capabilities.
pub fn generate_stream(
    state: &SkillState,
    request: GenerateRequest,
) -> Result<TokenStream, SkillError> {
    generate_stream_with(state, request, &ProcessEnv, Capabilities::detected())
}

/// Test support: the last-position logits of one forward pass over `ids` with the candle
/// decoder of `state` on `target` (loads and caches it).
#[doc(hidden)]
pub fn decoder_prefill_logits(
    state: &SkillState,
    target: crate::Target,
    ids: &[u32],
) -> Result<Vec<f32>, SkillError> {
    crate::native::decoders::decoder(state, target)?.prefill_logits(ids)
}

/// Test support: the logits at every position of `ids`, fed one token at a time through the
/// KV cache of the candle decoder of `state` on `target`.
#[doc(hidden)]
pub fn decoder_incremental_logits(
    state: &SkillState,
    target: crate::Target,
    ids: &[u32],
) -> Result<Vec<Vec<f32>>, SkillError> {
    crate::native::decoders::decoder(state, target)?.incremental_logits(ids)
}

macro_rules! capability_fns {
    ($($name:ident($req:ident) -> $out:ident = $variant:ident;)*) => {$(
        #[doc = concat!("The `", stringify!($name), "` capability.")]
        pub fn $name(state: &SkillState, request: $req) -> Result<Response<$out>, SkillError> {
            let (output, dispatch) =
                run_with(state, Call::$variant(request), &ProcessEnv, Capabilities::detected())?;
            match output {
                Output::$variant(output) => Ok(Response { output, dispatch }),
                _ => Err(SkillError::Backend {
                    backend: dispatch.used.backend(),
                    detail: concat!("returned the wrong output kind for `", stringify!($name), "`").to_owned(),
                }),
            }
        }
    )*};
}

capability_fns! {
    embed(EmbedRequest) -> Embeddings = Embed;
    fill_mask(FillMaskRequest) -> FillMaskOutput = FillMask;
    classify(ClassifyRequest) -> Classifications = Classify;
    generate(GenerateRequest) -> Generation = Generate;
    transcribe(TranscribeRequest) -> Transcription = Transcribe;
    classify_image(ClassifyImageRequest) -> ImageClassification = ClassifyImage;
    image_text_similarity(ImageTextRequest) -> Similarity = ImageTextSimilarity;
}
