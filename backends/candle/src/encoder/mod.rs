//! Native encoders (see [`crate`]): `bert`, `distilbert` and `xlm-roberta` on candle.
//!
//! - `embed` (text-encoding / base-model task): last hidden state, pooled as the
//!   sentence-transformers config says (default mean), optionally normalised. BERT keeps its
//!   dedicated embedder ([`bert::BertEmbedder`]); the others use [`TextEncoder`].
//! - `fill_mask` (masked-lm task): the transformers MLM head with the decoder tied to the word
//!   embeddings; needs `tokenizer.json` (mask token and token texts).
//! - `classify`: not implemented — candle 0.11.1 has a sequence-classification head only for
//!   XLM-RoBERTa, and no reference fixture checks one yet.

use skillgen_runtime::Task;

use crate::encoder::bert::BertEmbedder;
use skillgen_runtime::Model;
use skillgen_runtime::request::{Call, Output};
use skillgen_runtime::{SkillError, Target};

pub mod bert;
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
        Call::Embed(req) if model_type == "bert" => {
            let model = state.cached(&format!("candle/bert/{target}"), || {
                BertEmbedder::load(state.dir(), &crate::device(target)?)
            })?;
            model.embed(&req.input, req.normalize).map(Output::Embed)
        }
        Call::Embed(req) => encoder()?
            .embed(&req.input, req.normalize)
            .map(Output::Embed),
        Call::FillMask(req) => encoder()?
            .fill_mask(&req.input, req.top_k)
            .map(Output::FillMask),
        _ => Err(crate::not_implemented(state, target, task)),
    }
}
