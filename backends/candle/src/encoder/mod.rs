//! Native encoders (see [`crate`]): `bert`, `distilbert` and `xlm-roberta` on candle.
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
use crate::heads::TaskHeads;
use skillgen_runtime::Model;
use skillgen_runtime::request::{Call, Output};
use skillgen_runtime::{SkillError, Target};

pub mod bert;
pub mod bertlike;
mod distilbert;
pub(crate) mod text;

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
        Call::Embed(req) if bertlike(model_type) => with_head(state, target, EncoderHead::Base)?
            .embed(&req.input, req.normalize)
            .map(Output::Embed),
        Call::Embed(req) => encoder()?
            .embed(&req.input, req.normalize)
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

/// Whether `model_type` runs on the BERT-like encoder (`distilbert` keeps its
/// candle-transformers model for now).
fn bertlike(model_type: &str) -> bool {
    bertlike::MODEL_TYPES.contains(&model_type)
}

/// The cached BERT-like encoder of `state` on `target` with `head` (loaded on first use).
pub(crate) fn with_head(
    state: &Model,
    target: Target,
    head: EncoderHead,
) -> Result<Arc<BertLike>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(
        &format!("candle/{model_type}/bertlike/{head:?}/{target}"),
        || BertLike::load(model_type, state.dir(), &crate::device(target)?, head),
    )
}
