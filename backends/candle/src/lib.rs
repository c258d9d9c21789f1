//! The candle backend of skillgen: skillgen's own implementations on candle (CPU; CUDA and
//! Metal with the `cuda` / `metal` features), each verified against transformers.
//!
//! One module per architecture, each behind the [`Architecture`] trait:
//!
//! - [`encoder`]: BERT-like text encoders (`bert`, `distilbert`, `xlm-roberta`): embeddings,
//!   fill-mask;
//! - [`decoder`]: the config-driven causal decoder (generation, streaming);
//! - [`t5`]: T5 encoder embeddings and greedy sequence-to-sequence generation;
//! - [`vit`]: ViT image classification;
//! - [`whisper`]: Whisper speech recognition.
//!
//! Which (model type, task) pairs run is not decided here: the registry's `native:` field names
//! a [`NativeImpl`] per task (read through [`SkillInfo::support`](skillgen_runtime::SkillInfo::support)),
//! and [`architecture`] maps every [`NativeImpl`] to its module with an exhaustive match.
//! Checkpoint files are read through `skillgen-checkpoint`.

use candle_core::Device;
use skillgen_runtime::request::{Call, GenerateRequest, Output};
use skillgen_runtime::stream::TokenStream;
use skillgen_runtime::{BackendKind, Model, NativeImpl, SkillError, Target, Task};

mod activation;
mod attention;
mod backend;
pub mod cnn;
pub mod ctc;
pub mod decoder;
pub mod dual;
pub mod encoder;
pub mod gguf;
mod heads;
mod linear;
pub mod pvt;
mod rows;
pub mod seq2seq;
pub mod swin;
pub mod t5;
pub mod vit;
mod weights;
pub mod whisper;

pub use backend::{CandleBackend, backends};

/// One architecture module: runs the calls the registry routes to its [`NativeImpl`].
pub trait Architecture: Sync {
    /// Run `call` (task `task`) of the model in `state` on `target`, loading the model on first
    /// use (cached in the state).
    fn run(
        &self,
        state: &Model,
        target: Target,
        task: Task,
        call: Call,
    ) -> Result<Output, SkillError>;

    /// Start a streaming generation. The default: this architecture does not stream.
    fn stream(
        &self,
        state: &Model,
        target: Target,
        task: Task,
        request: GenerateRequest,
    ) -> Result<TokenStream, SkillError> {
        let _ = request;
        Err(SkillError::Backend {
            backend: BackendKind::Candle,
            detail: format!(
                "streaming generation of model type `{}` (task `{task}`) on {target} is not implemented (streaming runs on the candle backend's `decoder` implementation)",
                state.info().model_type,
            ),
        })
    }
}

/// `architecture_struct!(Name, "doc")` in an architecture module: the unit struct `Name` whose
/// [`Architecture::run`] is the module's `run` function (streaming: the trait's default).
macro_rules! architecture_struct {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl crate::Architecture for $name {
            fn run(
                &self,
                state: &Model,
                target: Target,
                task: Task,
                call: Call,
            ) -> Result<Output, SkillError> {
                run(state, target, task, call)
            }
        }
    };
}
pub(crate) use architecture_struct;

/// The module implementing `implementation`.
pub fn architecture(implementation: NativeImpl) -> &'static dyn Architecture {
    match implementation {
        NativeImpl::Encoder => &encoder::Encoders,
        NativeImpl::Decoder => &decoder::Decoders,
        NativeImpl::T5 => &t5::T5,
        NativeImpl::Vit => &vit::Vit,
        NativeImpl::Seq2seq => &seq2seq::Seq2seq,
        NativeImpl::Ctc => &ctc::Ctc,
        NativeImpl::Dual => &dual::Dual,
        NativeImpl::Cnn => &cnn::Cnn,
        NativeImpl::Swin => &swin::Swin,
        NativeImpl::Pvt => &pvt::Pvt,
        NativeImpl::Whisper => &whisper::Whisper,
    }
}

/// The candle device for `target`.
pub fn device(target: Target) -> Result<Device, SkillError> {
    let err = |detail: String| SkillError::Backend {
        backend: BackendKind::Candle,
        detail,
    };
    match target {
        Target::Cpu => Ok(Device::Cpu),
        Target::Cuda(n) => {
            Device::new_cuda(n as usize).map_err(|e| err(format!("opening cuda:{n}: {e}")))
        }
        Target::Metal(n) => {
            Device::new_metal(n as usize).map_err(|e| err(format!("opening metal:{n}: {e}")))
        }
        Target::MojoMax => Err(err("mojo_max is not a candle device".to_owned())),
    }
}

/// Map a candle error while doing `context` to a typed backend error.
pub(crate) fn e(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |err| SkillError::Backend {
        backend: BackendKind::Candle,
        detail: format!("{context}: {err}"),
    }
}

/// The error for a call an architecture module does not handle (a registry entry routing a
/// task to the wrong implementation).
pub(crate) fn not_implemented(state: &Model, target: Target, task: Task) -> SkillError {
    SkillError::Backend {
        backend: BackendKind::Candle,
        detail: format!(
            "task `{task}` of model type `{}` on {target} is not implemented by the candle backend",
            state.info().model_type
        ),
    }
}

/// Lower-level entry points for the parity tests and tooling: the model loaders and their raw
/// outputs (hidden states, logits, log-mel features), compared with transformers references.
pub mod parity {
    pub use crate::cnn::{CnnClassifier, cnn_logits};
    pub use crate::ctc::{CtcRecognizer, ctc_recognizer};
    pub use crate::decoder::{
        decoder_all_logits, decoder_classify_logits, decoder_greedy, decoder_head_logits,
        decoder_incremental_logits, decoder_prefill_logits,
    };
    pub use crate::dual::{DualEncoder, ImageTower, Pixels, dual_encoder, image_tower};

    /// `embed_image` of the base-model checkpoint of `model_type` in `dir` on the CPU (an
    /// image tower of the `dual` implementation, or a CNN base model), whether or not the
    /// registry marks the type.
    pub fn embed_image(
        dir: &std::path::Path,
        model_type: &str,
        req: &skillgen_runtime::request::EmbedImageRequest,
    ) -> Result<skillgen_runtime::request::ImageEmbeddings, skillgen_runtime::SkillError> {
        if crate::cnn::EMBED_TYPES.contains(&model_type) {
            crate::cnn::CnnFeatures::load(dir, model_type, &candle_core::Device::Cpu)?.embed(req)
        } else {
            image_tower(dir, model_type)?.embed(req)
        }
    }

    /// `embed` of a text model pooled by the model itself (`clip_text_model`, `dpr`) in `dir` on
    /// the CPU, whether or not the registry marks the type.
    pub fn embed_pooled_text(
        dir: &std::path::Path,
        model_type: &str,
        input: &skillgen_runtime::request::TextBatch,
    ) -> Result<skillgen_runtime::request::Embeddings, skillgen_runtime::SkillError> {
        use crate::encoder::setup::HeadModel;
        let cpu = candle_core::Device::Cpu;
        if model_type == "dpr" {
            crate::encoder::dpr::Dpr::load(dir, &cpu)?.embed(
                input,
                None,
                skillgen_runtime::request::EmbedRequest::DEFAULT_BATCH_SIZE,
            )
        } else {
            crate::dual::TextTowerModel::load(dir, model_type, &cpu)?.embed(
                input,
                None,
                skillgen_runtime::request::EmbedRequest::DEFAULT_BATCH_SIZE,
            )
        }
    }

    /// The GGUF file `path` (or the one in a directory) as a decoder on the CPU, with what the
    /// file says (model type, chat template, tensor types, tokenizer).
    pub fn gguf_decoder(
        path: &std::path::Path,
    ) -> Result<(crate::decoder::Decoder, crate::decoder::GgufInfo), skillgen_runtime::SkillError>
    {
        crate::decoder::Decoder::load_gguf(path, &candle_core::Device::Cpu)
    }
    pub use crate::encoder::bert::last_hidden_state as bert_last_hidden_state;
    pub use crate::encoder::bertlike as is_head_encoder;
    pub use crate::encoder::bertlike::{EncoderHead, encoder_head_logits};
    pub use crate::encoder::text::encoder_outputs;
    pub use crate::encoder::{EncoderKind, TextEncoder};
    pub use crate::seq2seq::{Seq2seqGenerator, seq2seq_generator, seq2seq_head_logits};
    pub use crate::t5::{
        T5Encoder, T5Generator, t5_decoder_logits, t5_encoder_output, t5_generator,
    };
    pub use crate::vit::{VitClassifier, vit_logits};
    pub use crate::whisper::mel as whisper_mel;
    pub use crate::whisper::{WhisperModel, whisper_outputs};
}
