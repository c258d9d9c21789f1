//! Native encoders (see [`crate::native`]): `bert`, `distilbert` and `xlm-roberta` on candle.
//!
//! - `embed` (text-encoding / base-model task): last hidden state, pooled as the
//!   sentence-transformers config says (default mean), optionally normalised. BERT keeps its
//!   dedicated embedder ([`crate::candle_bert::BertEmbedder`]); the others use [`TextEncoder`].
//! - `fill_mask` (masked-lm task): the transformers MLM head with the decoder tied to the word
//!   embeddings; needs `tokenizer.json` (mask token and token texts).
//! - `classify`: not implemented — candle 0.11.1 has a sequence-classification head only for
//!   XLM-RoBERTa, and no reference fixture checks one yet.

use skillgen_vocab::Task;

use crate::candle_bert::BertEmbedder;
use crate::request::{Call, Output};
use crate::skill::SkillState;
use crate::{SkillError, Target};

mod distilbert;
pub(crate) mod text;

pub use text::{EncoderKind, TextEncoder};

/// Whether this area runs `task` of `model_type`.
pub(crate) fn implements(model_type: &str, task: Task) -> bool {
    matches!(model_type, "bert" | "distilbert" | "xlm-roberta")
        && matches!(task, Task::BaseModel | Task::TextEncoding | Task::MaskedLm)
}

/// Run `call`.
pub(crate) fn run(
    state: &SkillState,
    target: Target,
    task: Task,
    call: Call,
) -> Result<Output, SkillError> {
    let model_type = state.info().model_type;
    if !implements(model_type, task) {
        return Err(super::not_implemented(state, target, task));
    }
    let encoder = || {
        state.cached(&format!("candle/{model_type}/encoder/{target}"), || {
            TextEncoder::load(state.dir(), model_type, &super::device(target)?)
        })
    };
    match call {
        Call::Embed(req) if model_type == "bert" => {
            let model = state.cached(&format!("candle/bert/{target}"), || {
                BertEmbedder::load(state.dir(), &super::device(target)?)
            })?;
            model.embed(&req.input, req.normalize).map(Output::Embed)
        }
        Call::Embed(req) => encoder()?
            .embed(&req.input, req.normalize)
            .map(Output::Embed),
        Call::FillMask(req) => encoder()?
            .fill_mask(&req.input, req.top_k)
            .map(Output::FillMask),
        _ => Err(super::not_implemented(state, target, task)),
    }
}
