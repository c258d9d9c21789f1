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
