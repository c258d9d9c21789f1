//! Native encoders (see [`crate`]): the BERT-like family and its kin (ModernBERT, DeBERTa,
//! rotary encoders, XLM, FNet, SqueezeBERT), DPR's encoders, `distilbert` on candle.
//!
//! - `embed` (text-encoding / base-model task): last hidden state, pooled as the
//!   sentence-transformers config says (default mean), optionally normalised. BERT keeps its
//!   dedicated embedder ([`bert::BertEmbedder`]); the others use [`TextEncoder`].
//! - `fill_mask` (masked-lm task): the transformers MLM head with the decoder tied to the word
//!   embeddings; needs `tokenizer.json` (mask token and token texts).
//! - `classify`, `classify_tokens`, `answer_question` (sequence classification, token
//!   classification, extractive QA): the parametric BERT-like encoder ([`bertlike`]) with the
//!   type's head; the answers come from the shared [`crate::heads::TaskHeads`].

use skillgen_runtime::Task;

use std::sync::Arc;

use crate::encoder::bertlike::{BertLike, EncoderHead};
use crate::encoder::deberta::Deberta;
use crate::encoder::fnet::FNet;
use crate::encoder::modernbert::ModernBert;
use crate::encoder::rope::RopeEncoder;
use crate::encoder::setup::HeadModel;
use crate::encoder::squeezebert::SqueezeBert;
use crate::encoder::xlm::Xlm;
use crate::heads::TaskHeads;
use skillgen_runtime::Model;
use skillgen_runtime::request::{Call, Output};
use skillgen_runtime::{SkillError, Target};

pub mod bert;
mod bert_parts;
pub mod bertlike;
pub mod deberta;
mod distilbert;
pub mod dpr;
pub mod fnet;
mod fused;
pub mod modernbert;
mod ops;
pub mod rope;
pub(crate) mod setup;
pub mod squeezebert;
pub(crate) mod text;
pub mod xlm;

pub use text::{EncoderKind, TextEncoder};

crate::architecture_struct!(
    Encoders,
    "The `encoder` implementation: `bert`, `distilbert` and `xlm-roberta`."
);

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    let model_type = state.info().model_type;
    let encoder = || {
        state.cached(&format!("candle/{model_type}/encoder/{target}"), || {
            TextEncoder::load(state.dir(), model_type, &crate::device(target)?)
        })
    };
    match call {
        Call::Embed(req) if model_type == "dpr" => state
            .cached(&format!("candle/dpr/encoder/{target}"), || {
                dpr::Dpr::load(state.dir(), &crate::device(target)?)
            })?
            .embed(&req.input, req.normalize, req.batch_size)
            .map(Output::Embed),
        Call::Embed(req) if bertlike(model_type) => with_head(state, target, EncoderHead::Base)?
            .embed(&req.input, req.normalize, req.batch_size)
            .map(Output::Embed),
        Call::Embed(req) => encoder()?
            .embed(&req.input, req.normalize, req.batch_size)
            .map(Output::Embed),
        Call::FillMask(req) if bertlike(model_type) => crate::heads::fill_mask(
            &*with_head(state, target, EncoderHead::Mlm)?,
            &req.input,
            req.top_k,
        )
        .map(Output::FillMask),
        Call::FillMask(req) => encoder()?
            .fill_mask(&req.input, req.top_k)
            .map(Output::FillMask),
        Call::Classify(req) => with_head(state, target, EncoderHead::Sequence)?
            .classify(&req)
            .map(Output::Classify),
        Call::ClassifyTokens(req) => with_head(state, target, EncoderHead::Tokens)?
            .classify_tokens(&req)
            .map(Output::ClassifyTokens),
        Call::AnswerQuestion(req) => with_head(state, target, EncoderHead::Qa)?
            .answer_question(&req)
            .map(Output::AnswerQuestion),
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

/// Whether `model_type` runs on the task-head encoders (`distilbert` keeps its
/// candle-transformers model for now).
pub fn bertlike(model_type: &str) -> bool {
    bertlike::MODEL_TYPES.contains(&model_type)
        || rope::MODEL_TYPES.contains(&model_type)
        || matches!(
            model_type,
            "modernbert" | "deberta" | "deberta-v2" | "fnet" | "squeezebert"
        )
        || xlm::MODEL_TYPES.contains(&model_type)
}

/// The cached BERT-like encoder of `state` on `target` with `head` (loaded on first use).
pub(crate) fn with_head(
    state: &Model,
    target: Target,
    head: EncoderHead,
) -> Result<Arc<TextModel>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(
        &format!("candle/{model_type}/text-encoder/{head:?}/{target}"),
        || {
            let device = crate::device(target)?;
            Ok(if model_type == "modernbert" {
                TextModel::Modern(Box::new(ModernBert::load(state.dir(), &device, head)?))
            } else if model_type == "squeezebert" {
                TextModel::Squeeze(Box::new(SqueezeBert::load(state.dir(), &device, head)?))
            } else if model_type == "fnet" {
                TextModel::FNet(Box::new(FNet::load(state.dir(), &device, head)?))
            } else if matches!(model_type, "deberta" | "deberta-v2") {
                TextModel::Deberta(Box::new(Deberta::load(state.dir(), &device, head)?))
            } else if xlm::MODEL_TYPES.contains(&model_type) {
                TextModel::Xlm(Box::new(Xlm::load(model_type, state.dir(), &device, head)?))
            } else if rope::MODEL_TYPES.contains(&model_type) {
                TextModel::Rope(Box::new(RopeEncoder::load(
                    model_type,
                    state.dir(),
                    &device,
                    head,
                )?))
            } else {
                TextModel::Bert(Box::new(BertLike::load(
                    model_type,
                    state.dir(),
                    &device,
                    head,
                )?))
            })
        },
    )
}

/// One of the task-head encoders: the BERT-like one, ModernBERT, DeBERTa-v2, the rotary
/// encoders (nomic_bert, gte), XLM/FlauBERT, FNet or SqueezeBERT.
#[derive(Debug)]
pub enum TextModel {
    Bert(Box<BertLike>),
    Modern(Box<ModernBert>),
    Deberta(Box<Deberta>),
    Rope(Box<RopeEncoder>),
    Xlm(Box<Xlm>),
    FNet(Box<FNet>),
    Squeeze(Box<SqueezeBert>),
}

impl TextModel {
    fn inner(&self) -> &dyn TaskHeads {
        match self {
            Self::Bert(m) => m.as_ref(),
            Self::Modern(m) => m.as_ref(),
            Self::Deberta(m) => m.as_ref(),
            Self::Rope(m) => m.as_ref(),
            Self::Xlm(m) => m.as_ref(),
            Self::FNet(m) => m.as_ref(),
            Self::Squeeze(m) => m.as_ref(),
        }
    }

    /// The head's outputs for one unpadded input.
    pub fn head_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        match self {
            Self::Bert(m) => m.head_logits(ids),
            Self::Modern(m) => m.head_logits(ids),
            Self::Deberta(m) => m.head_logits(ids),
            Self::Rope(m) => m.head_logits(ids),
            Self::Xlm(m) => m.head_logits(ids),
            Self::FNet(m) => m.head_logits(ids),
            Self::Squeeze(m) => m.head_logits(ids),
        }
    }

    /// `embed`.
    pub fn embed(
        &self,
        input: &skillgen_runtime::request::TextBatch,
        normalize: Option<bool>,
        batch_size: usize,
    ) -> Result<skillgen_runtime::request::Embeddings, SkillError> {
        match self {
            Self::Bert(m) => m.embed(input, normalize, batch_size),
            Self::Modern(m) => m.embed(input, normalize, batch_size),
            Self::Deberta(m) => m.embed(input, normalize, batch_size),
            Self::Rope(m) => m.embed(input, normalize, batch_size),
            Self::Xlm(m) => m.embed(input, normalize, batch_size),
            Self::FNet(m) => m.embed(input, normalize, batch_size),
            Self::Squeeze(m) => m.embed(input, normalize, batch_size),
        }
    }
}

impl TaskHeads for TextModel {
    fn tokenizer_for(&self, why: &'static str) -> Result<&tokenizers::Tokenizer, SkillError> {
        self.inner().tokenizer_for(why)
    }

    fn tokenizer_file(&self) -> &std::path::Path {
        self.inner().tokenizer_file()
    }

    fn labels(&self) -> &[String] {
        self.inner().labels()
    }

    fn sigmoid(&self) -> bool {
        self.inner().sigmoid()
    }

    fn sequence_logits(&self, ids: &[u32]) -> Result<Vec<f32>, SkillError> {
        self.inner().sequence_logits(ids)
    }

    fn token_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.inner().token_logits(ids)
    }
}
