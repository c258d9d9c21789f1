//! One parametric BERT-like encoder: the BERT block (self-attention, feed-forward, LayerNorm)
//! with per-type switches and tensor-name maps, and the task heads people put on it.
//!
//! [`translate`] turns a type's `config.json` into a [`Spec`]; a type it does not know, or a
//! config value without a switch, is a typed error. The switches:
//! - `pos_offset`: RoBERTa-style position ids (`padding_idx + 1 + index` of non-padding
//!   tokens, transformers' `create_position_ids_from_input_ids`);
//! - `emb_proj`: embeddings of `embedding_size`, projected to the hidden size (ELECTRA's
//!   `embeddings_project`, ALBERT's `embedding_hidden_mapping_in`);
//! - pre-LayerNorm blocks with a final LayerNorm, each with its own names: XLM-RoBERTa-XL
//!   ([`Layout::XlmRobertaXl`]), RoBERTa-PreLayerNorm ([`Layout::RobertaPreLn`]),
//!   Megatron-BERT ([`Layout::Megatron`]);
//! - [`Layout::Mpnet`]: MPNet's names and its relative-position bucket bias, shared by all
//!   layers;
//! - [`Layout::Albert`]: ALBERT's shared layer groups (`num_hidden_groups`);
//! - BigBird's `block_sparse` attention is full attention for inputs of at most
//!   `(5 + 2·num_random_blocks)·block_size` tokens (transformers switches to it there); longer
//!   inputs are refused;
//! - I-BERT with `quant_mode: false` is RoBERTa (its integer-only parameters are unused).
//!
//! Every tensor of the checkpoint is taken by name and shape, and one nobody takes is refused
//! ([`Weights::finish`]), except the parts a task does not compute by design (the pooler and
//! MLM head when embedding).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::attention::{Rope, relative_bucket};
use crate::encoder::fused::{Attention, Batch, Layer};
use crate::encoder::setup::{self, HeadModel, HeadSetup};
use crate::rows::Rows;
use crate::weights::{Weights, layer_norm};

/// The word-embedding table's name, after the model's prefix.
const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// Where the LayerNorms sit and how tensors are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// BERT: post-LN blocks, `attention.self.{query,key,value}`.
    Bert,
    /// Pre-LN: `attention.self_attn_layer_norm`, `LayerNorm` before the FFN, final
    /// `encoder.LayerNorm`, no embedding LayerNorm.
    XlmRobertaXl,
    /// Pre-LN: `attention.LayerNorm`, `intermediate.LayerNorm`, final `LayerNorm` after the
    /// encoder; the embeddings keep theirs.
    RobertaPreLn,
    /// Pre-LN: `attention.ln`, `ln`, final `encoder.ln`, no embedding LayerNorm.
    Megatron,
    /// MPNet: `attention.attn.{q,k,v,o}`, relative-position buckets.
    Mpnet,
    /// ALBERT: `albert_layer_groups.G.albert_layers.0.*`, shared across layers.
    Albert,
    /// ESM: pre-LN (`attention.LayerNorm`, `LayerNorm`), final `encoder.emb_layer_norm_after`.
    Esm,
}

impl Layout {
    fn pre_ln(self) -> bool {
        matches!(
            self,
            Self::XlmRobertaXl | Self::RobertaPreLn | Self::Megatron | Self::Esm
        )
    }

    fn embedding_ln(self) -> bool {
        !matches!(self, Self::XlmRobertaXl | Self::Megatron | Self::Esm)
    }

    /// The final LayerNorm (pre-LN layouts), under the prefix.
    fn final_ln(self) -> Option<&'static str> {
        match self {
            Self::XlmRobertaXl => Some("encoder.LayerNorm"),
            Self::RobertaPreLn => Some("LayerNorm"),
            Self::Megatron => Some("encoder.ln"),
            Self::Esm => Some("encoder.emb_layer_norm_after"),
            _ => None,
        }
    }

    /// q, k, v, o, the attention LayerNorm, FFN in, FFN out, the FFN LayerNorm.
    fn block_names(self) -> [&'static str; 8] {
        let bert_attn = [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ];
        let [q, k, v, o] = bert_attn;
        match self {
            Self::Bert => [
                q,
                k,
                v,
                o,
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ],
            Self::XlmRobertaXl => [
                q,
                k,
                v,
                o,
                "attention.self_attn_layer_norm",
                "intermediate.dense",
                "output.dense",
                "LayerNorm",
            ],
            Self::RobertaPreLn => [
                q,
                k,
                v,
                o,
                "attention.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "intermediate.LayerNorm",
            ],
            Self::Megatron => [
                q,
                k,
                v,
                o,
                "attention.ln",
                "intermediate.dense",
                "output.dense",
                "ln",
            ],
            Self::Esm => [
                q,
                k,
                v,
                o,
                "attention.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "LayerNorm",
            ],
            Self::Mpnet => [
                "attention.attn.q",
                "attention.attn.k",
                "attention.attn.v",
                "attention.attn.o",
                "attention.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ],
            Self::Albert => [
                "attention.query",
                "attention.key",
                "attention.value",
                "attention.dense",
                "attention.LayerNorm",
                "ffn",
                "ffn_output",
                "full_layer_layer_norm",
            ],
        }
    }
}

/// How the sequence classifier reads the first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqHead {
    /// `tanh(pooler(h[0]))` then `classifier` (BERT, ALBERT); the pooler's name under the
    /// prefix.
    Pooler(&'static str),
    /// `out_proj(act(classifier.dense(h[0])))` (RoBERTa: tanh, ELECTRA: gelu).
    DenseOut(Act),
}

/// The masked-LM head: `decoder(LayerNorm(act(dense(h))))`, the decoder tied to the word
/// embeddings unless the checkpoint has its own weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MlmNames {
    pub(crate) dense: &'static str,
    pub(crate) norm: &'static str,
    pub(crate) bias: &'static str,
    pub(crate) decoder: &'static str,
    /// `None`: `hidden_act`.
    pub(crate) act: Option<Act>,
    /// The dense layer maps to the embedding width (ELECTRA, ALBERT), else the hidden size.
    pub(crate) to_embedding: bool,
    /// ... or to the width this config field names (RemBERT: `output_embedding_size`).
    pub(crate) width_field: Option<&'static str>,
}

const BERT_MLM: MlmNames = MlmNames {
    dense: "cls.predictions.transform.dense",
    norm: "cls.predictions.transform.LayerNorm",
    bias: "cls.predictions.bias",
    decoder: "cls.predictions.decoder",
    act: None,
    to_embedding: false,
    width_field: None,
};

const ROBERTA_MLM: MlmNames = MlmNames {
    dense: "lm_head.dense",
    norm: "lm_head.layer_norm",
    bias: "lm_head.bias",
    decoder: "lm_head.decoder",
    act: Some(Act::Gelu),
    to_embedding: false,
    width_field: None,
};

/// The masked-LM head of `model_type`, if implemented.
fn mlm_names(model_type: &str) -> Option<MlmNames> {
    Some(match model_type {
        "bert" | "ernie" | "megatron-bert" | "big_bird" | "roformer" => BERT_MLM,
        "roberta"
        | "camembert"
        | "xlm-roberta"
        | "data2vec-text"
        | "xlm-roberta-xl"
        | "roberta-prelayernorm"
        | "ibert"
        | "mpnet"
        | "esm"
        | "xmod" => ROBERTA_MLM,
        "electra" => MlmNames {
            dense: "generator_predictions.dense",
            norm: "generator_predictions.LayerNorm",
            bias: "generator_lm_head.bias",
            decoder: "generator_lm_head",
            act: Some(Act::Gelu),
            to_embedding: true,
            width_field: None,
        },
        "albert" => MlmNames {
            dense: "predictions.dense",
            norm: "predictions.LayerNorm",
            bias: "predictions.bias",
            decoder: "predictions.decoder",
            act: None,
            to_embedding: true,
            width_field: None,
        },
        "rembert" => MlmNames {
            dense: "cls.predictions.dense",
            norm: "cls.predictions.LayerNorm",
            bias: "cls.predictions.bias",
            decoder: "cls.predictions.decoder",
            act: None,
            to_embedding: false,
            width_field: Some("output_embedding_size"),
        },
        _ => return None,
    })
}

/// Rotary positions of a BERT-like encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rotary {
    /// ESM: computed with this θ, rotating the two halves of each head.
    Theta(f64),
    /// RoFormer: the checkpoint's sinusoidal table (`encoder.embed_positions`: sines, then
    /// cosines), rotating interleaved pairs.
    Table,
}

/// A BERT-like encoder, as [`translate`] reads it from `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The body's tensor prefix (`bert`, `roberta`, ...).
    pub(crate) prefix: &'static str,
    pub(crate) layout: Layout,
    pub(crate) vocab: usize,
    /// The embedding width (`embedding_size`; the hidden size without a projection).
    pub(crate) emb: usize,
    pub(crate) hidden: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) inter: usize,
    pub(crate) act: Act,
    pub(crate) eps: f64,
    pub(crate) max_pos: usize,
    /// Token-type rows (0: no token-type embeddings).
    pub(crate) type_vocab: usize,
    /// RoBERTa-style positions counted from this padding id.
    pub(crate) pos_offset: Option<u32>,
    /// The projection from `emb` to `hidden`, by name (under the prefix).
    pub(crate) emb_proj: Option<&'static str>,
    /// MPNet's relative-position buckets.
    pub(crate) rel_buckets: usize,
    /// ALBERT's layer groups.
    pub(crate) groups: usize,
    pub(crate) seq_head: SeqHead,
    /// The masked-LM head's names, if the encoder implements it for this type.
    pub(crate) mlm: Option<MlmNames>,
    /// BigBird: the longest input its full-attention path takes.
    pub(crate) max_full_tokens: Option<usize>,
    /// I-BERT (float mode): leave the integer-only parameters.
    pub(crate) quant_params: bool,
    /// Rotary positions instead of a position table.
    pub(crate) rotary: Option<Rotary>,
    /// ESM's token dropout: the mask token id whose embeddings are zeroed, the rest scaled.
    pub(crate) token_dropout: Option<u32>,
    /// ESM's optional embedding LayerNorm (`embeddings.layer_norm`).
    pub(crate) esm_emb_ln: bool,
    /// X-MOD's language adapters (the default language's).
    pub(crate) adapter: Option<AdapterSpec>,
}

/// X-MOD's per-language bottleneck adapter after each block's FFN (the default language's:
/// text requests carry no language id).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdapterSpec {
    /// The language key of `adapter_modules`.
    pub(crate) language: String,
    pub(crate) bottleneck: usize,
    /// `ln_before_adapter`: the residual around the adapter is taken after its LayerNorm.
    pub(crate) ln_before: bool,
    /// `adapter_layer_norm`: an own LayerNorm before the adapter.
    pub(crate) own_ln: bool,
    /// `adapter_reuse_layer_norm`: the block's output LayerNorm before the adapter too.
    pub(crate) reuse_ln: bool,
}

/// X-MOD's adapter settings (`default_language` must name one of `languages`).
fn adapter_spec(f: &Fields<'_>, hidden: usize) -> Result<AdapterSpec, SkillError> {
    if f.bool_or("pre_norm", false)? {
        return Err(f.err("pre_norm", "`true` is not implemented (post-LN X-MOD only)"));
    }
    let languages: Vec<&str> = match f.get("languages") {
        Some(serde_json::Value::Array(v)) => v.iter().filter_map(|x| x.as_str()).collect(),
        _ => return Err(f.err("languages", "missing or not a list of language codes")),
    };
    let language = f.str_opt("default_language")?.ok_or_else(|| {
        f.err(
            "default_language",
            "missing: text requests carry no language, so the adapter must come from the \
             default language (transformers' `set_default_language`)",
        )
    })?;
    if !languages.contains(&language) {
        return Err(f.err(
            "default_language",
            format!("`{language}` is not one of `languages` {languages:?}"),
        ));
    }
    let factor = f.positive("adapter_reduction_factor")?;
    Ok(AdapterSpec {
        language: language.to_owned(),
        bottleneck: hidden / factor,
        ln_before: f.bool_or("ln_before_adapter", true)?,
        own_ln: f.bool_or("adapter_layer_norm", false)?,
        reuse_ln: f.bool_or("adapter_reuse_layer_norm", true)?,
    })
}

/// The model types [`translate`] knows.
pub const MODEL_TYPES: &[&str] = &[
    "albert",
    "bert",
    "big_bird",
    "camembert",
    "data2vec-text",
    "electra",
    "ernie",
    "esm",
    "ibert",
    "megatron-bert",
    "mpnet",
    "rembert",
    "roberta",
    "roberta-prelayernorm",
    "roformer",
    "splinter",
    "xlm-roberta",
    "xlm-roberta-xl",
    "xmod",
];

fn activation(f: &Fields<'_>, field: &str) -> Result<Act, SkillError> {
    let name = f
        .str_opt(field)?
        .ok_or_else(|| f.err(field, "missing (required)"))?;
    match Act::from_hf(name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu)) => Ok(a),
        _ => Err(f.err(
            field,
            format!(
                "activation `{name}` is not implemented by the encoder (gelu, gelu_new, relu, silu)"
            ),
        )),
    }
}

/// `config.json` of `model_type` → [`Spec`], field by field.
pub(crate) fn translate(model_type: &str, f: &Fields<'_>) -> Result<Spec, SkillError> {
    let tanh = SeqHead::DenseOut(Act::Tanh);
    let pooler = SeqHead::Pooler("pooler.dense");
    let (prefix, layout, offset, proj, seq_head) = match model_type {
        "bert" => ("bert", Layout::Bert, false, None, pooler),
        "ernie" => ("ernie", Layout::Bert, false, None, pooler),
        "roformer" => (
            "roformer",
            Layout::Bert,
            false,
            Some("embeddings_project"),
            SeqHead::DenseOut(activation(f, "hidden_act")?),
        ),
        "splinter" => ("splinter", Layout::Bert, false, None, pooler),
        "roberta" | "camembert" | "xlm-roberta" => ("roberta", Layout::Bert, true, None, tanh),
        "ibert" => ("ibert", Layout::Bert, true, None, tanh),
        "data2vec-text" => ("data2vec_text", Layout::Bert, true, None, tanh),
        "xlm-roberta-xl" => ("roberta", Layout::XlmRobertaXl, true, None, tanh),
        "xmod" => ("roberta", Layout::Bert, true, None, tanh),
        "roberta-prelayernorm" => (
            "roberta_prelayernorm",
            Layout::RobertaPreLn,
            true,
            None,
            tanh,
        ),
        "megatron-bert" => ("bert", Layout::Megatron, false, None, pooler),
        "electra" => (
            "electra",
            Layout::Bert,
            false,
            Some("embeddings_project"),
            SeqHead::DenseOut(Act::Gelu),
        ),
        "rembert" => (
            "rembert",
            Layout::Bert,
            false,
            Some("encoder.embedding_hidden_mapping_in"),
            pooler,
        ),
        "big_bird" => (
            "bert",
            Layout::Bert,
            false,
            None,
            SeqHead::DenseOut(activation(f, "hidden_act")?),
        ),
        "mpnet" => ("mpnet", Layout::Mpnet, true, None, tanh),
        "esm" => ("esm", Layout::Esm, true, None, tanh),
        "albert" => (
            "albert",
            Layout::Albert,
            false,
            Some("encoder.embedding_hidden_mapping_in"),
            SeqHead::Pooler("pooler"),
        ),
        other => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not a BERT-like type the encoder implements"),
            ));
        }
    };
    if f.bool_or("is_decoder", false)? {
        return Err(f.err("is_decoder", "a decoder configuration is not an encoder"));
    }
    if f.bool_or("add_cross_attention", false)? {
        return Err(f.err(
            "add_cross_attention",
            "cross-attention layers are not implemented by the encoder",
        ));
    }
    if model_type == "roformer" && f.bool_or("rotary_value", false)? {
        return Err(f.err(
            "rotary_value",
            "rotary positions on the values are not implemented",
        ));
    }
    let rotary = match (f.str_opt("position_embedding_type")?, layout) {
        _ if model_type == "roformer" => Some(Rotary::Table),
        (None | Some("absolute"), _) => None,
        (Some("rotary"), Layout::Esm) => Some(Rotary::Theta(
            match f.get("rope_parameters").and_then(|v| v.get("rope_theta")) {
                Some(t) => t
                    .as_f64()
                    .ok_or_else(|| f.err("rope_parameters", "rope_theta is not a number"))?,
                None => f
                    .get("rope_theta")
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(10_000.0),
            },
        )),
        (Some(other), _) => {
            return Err(f.err(
                "position_embedding_type",
                format!(
                    "`{other}` is not implemented by the encoder for `{model_type}` (only `absolute`; ESM: `rotary`)"
                ),
            ));
        }
    };
    let esm = layout == Layout::Esm;
    let token_dropout = if esm && f.bool_or("token_dropout", false)? {
        Some(
            f.usize_opt("mask_token_id")?
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| f.err("mask_token_id", "missing (token_dropout needs it)"))?,
        )
    } else {
        None
    };
    let esm_emb_ln = esm && f.bool_or("emb_layer_norm_before", false)?;
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    if !hidden.is_multiple_of(heads) {
        return Err(f.err(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden}"),
        ));
    }
    let layers = f.positive("num_hidden_layers")?;
    let emb = match (proj, model_type) {
        (None, _) => hidden,
        (Some(_), "rembert") => f.positive("input_embedding_size")?,
        (Some(_), _) => f.positive("embedding_size")?,
    };
    // ELECTRA and RoFormer project only embeddings narrower than the hidden size.
    let proj = match model_type {
        "electra" | "roformer" if emb == hidden => None,
        _ => proj,
    };
    if model_type == "ernie" && f.bool_or("use_task_id", false)? {
        return Err(f.err(
            "use_task_id",
            "task-type embeddings are not implemented by the encoder",
        ));
    }
    let quant_params = model_type == "ibert";
    if quant_params && f.bool_or("quant_mode", false)? {
        return Err(f.err(
            "quant_mode",
            "I-BERT's integer-only inference is not implemented (only `false`: float RoBERTa)",
        ));
    }
    let max_full_tokens = if model_type == "big_bird" {
        if f.bool_or("rescale_embeddings", false)? {
            return Err(f.err("rescale_embeddings", "`true` is not implemented"));
        }
        if !f.bool_or("use_bias", true)? {
            return Err(f.err("use_bias", "`false` is not implemented"));
        }
        match f.str_opt("attention_type")? {
            Some("original_full") => None,
            Some("block_sparse") | None => {
                let blocks = f.usize_opt("num_random_blocks")?.unwrap_or(3);
                let size = f.usize_opt("block_size")?.unwrap_or(64);
                Some((5 + 2 * blocks) * size)
            }
            Some(other) => {
                return Err(f.err("attention_type", format!("`{other}` is not implemented")));
            }
        }
    } else {
        None
    };
    let (rel_buckets, type_vocab) = if layout == Layout::Mpnet {
        (f.positive("relative_attention_num_buckets")?, 0)
    } else if esm {
        (0, 0)
    } else {
        (0, f.positive("type_vocab_size")?)
    };
    let groups = if layout == Layout::Albert {
        if f.usize_opt("inner_group_num")?.unwrap_or(1) != 1 {
            return Err(f.err(
                "inner_group_num",
                "only 1 (one layer per group) is implemented",
            ));
        }
        let g = f.positive("num_hidden_groups")?;
        if !layers.is_multiple_of(g) {
            return Err(f.err(
                "num_hidden_groups",
                format!("{g} does not divide num_hidden_layers {layers}"),
            ));
        }
        g
    } else {
        1
    };
    // MPNet's embeddings hard-code padding index 1; RoBERTa's use `pad_token_id`.
    let pos_offset = match (offset && rotary.is_none(), layout) {
        (false, _) => None,
        (true, Layout::Mpnet) => Some(1),
        (true, _) => Some(
            f.usize_opt("pad_token_id")?
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| {
                    f.err(
                        "pad_token_id",
                        "missing (positions count from the padding id)",
                    )
                })?,
        ),
    };
    Ok(Spec {
        prefix,
        layout,
        vocab: f.positive("vocab_size")?,
        emb,
        hidden,
        layers,
        heads,
        inter: f.positive("intermediate_size")?,
        // ESM's FFN is always the exact GELU (its config has no `hidden_act`).
        act: if esm && f.str_opt("hidden_act")?.is_none() {
            Act::Gelu
        } else {
            activation(f, "hidden_act")?
        },
        eps: f.f64("layer_norm_eps")?,
        max_pos: f.positive("max_position_embeddings")?,
        type_vocab,
        pos_offset,
        emb_proj: proj,
        rel_buckets,
        groups,
        seq_head,
        mlm: mlm_names(model_type),
        max_full_tokens,
        quant_params,
        rotary,
        token_dropout,
        esm_emb_ln,
        adapter: if model_type == "xmod" {
            Some(adapter_spec(f, hidden)?)
        } else {
            None
        },
    })
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("encoder {context}: {e}"),
    }
}

/// A LayerNorm saved as `weight`/`bias`, or with the legacy names `gamma`/`beta` (ESM).
fn any_norm(w: &mut Weights, name: &str, n: usize, eps: f64) -> Result<LayerNorm, SkillError> {
    if w.has(&format!("{name}.weight")) || !w.has(&format!("{name}.gamma")) {
        return layer_norm(w, name, n, eps);
    }
    Ok(LayerNorm::new(
        w.take(&format!("{name}.gamma"), &[n])?,
        w.take(&format!("{name}.beta"), &[n])?,
        eps,
    ))
}

/// A linear layer with a bias (every projection of this implementation has one).
fn linear(w: &mut Weights, name: &str, out: usize, inp: usize) -> Result<Linear, SkillError> {
    crate::weights::linear(w, name, out, inp, true)
}

/// One block's parameters.
#[derive(Debug, Clone)]
struct Block {
    layer: Layer,
    adapter: Option<Adapter>,
}

/// X-MOD's loaded adapter of one block.
#[derive(Debug, Clone)]
struct Adapter {
    dense1: Linear,
    dense2: Linear,
    own_ln: Option<LayerNorm>,
}

impl Block {
    fn load(w: &mut Weights, s: &Spec, p: &str) -> Result<Self, SkillError> {
        let (h, i, eps) = (s.hidden, s.inter, s.eps);
        let [q, k, v, o, ln_attn, ffn_in, ffn_out, ln_ffn] = s.layout.block_names();
        let attn = Attention::new(
            linear(w, &format!("{p}.{q}"), h, h)?,
            linear(w, &format!("{p}.{k}"), h, h)?,
            linear(w, &format!("{p}.{v}"), h, h)?,
            linear(w, &format!("{p}.{o}"), h, h)?,
            s.heads,
        )
        .map_err(ce("fusing the attention projections"))?;
        let layer = Layer::new(
            attn,
            any_norm(w, &format!("{p}.{ln_attn}"), h, eps)?,
            linear(w, &format!("{p}.{ffn_in}"), i, h)?,
            linear(w, &format!("{p}.{ffn_out}"), h, i)?,
            any_norm(w, &format!("{p}.{ln_ffn}"), h, eps)?,
        )
        .map_err(ce("loading a block"))?;
        Ok(Self {
            layer,
            adapter: match &s.adapter {
                Some(a) => {
                    let m = format!("{p}.output.adapter_modules.");
                    let own = format!("{m}{}.", a.language);
                    // Other languages' adapters apply only to inputs in those languages.
                    w.leave(|n| n.starts_with(&m) && !n.starts_with(&own));
                    let b = a.bottleneck;
                    Some(Adapter {
                        dense1: linear(w, &format!("{own}dense1"), b, h)?,
                        dense2: linear(w, &format!("{own}dense2"), h, b)?,
                        own_ln: if a.own_ln {
                            Some(layer_norm(
                                w,
                                &format!("{p}.output.adapter_layer_norm"),
                                h,
                                eps,
                            )?)
                        } else {
                            None
                        },
                    })
                }
                None => None,
            },
        })
    }

    /// X-MOD's adapter on `h` (the FFN output plus its residual), before the output LayerNorm.
    fn adapt(&self, h: Tensor, s: &Spec) -> candle_core::Result<Tensor> {
        let (Some(a), Some(spec)) = (&self.adapter, &s.adapter) else {
            return Ok(h);
        };
        let normed = match (&a.own_ln, spec.reuse_ln) {
            (Some(ln), _) => ln.forward(&h)?,
            (None, true) => self.layer.ln_ffn().forward(&h)?,
            (None, false) => h.clone(),
        };
        let residual = if spec.ln_before { &normed } else { &h };
        a.dense2
            .forward(&act(s.act, &a.dense1.forward(&normed)?)?)?
            + residual
    }

    /// One block over rows `x` (`[Σ len, hidden]` packed or `[b·n, hidden]`, see
    /// [`Batch::packed`]).
    fn forward(&self, x: &Tensor, s: &Spec, bt: &Batch<'_>) -> candle_core::Result<Tensor> {
        if s.layout.pre_ln() {
            return self.layer.forward_pre(x, bt, s.act);
        }
        let adapt = |h: Tensor| self.adapt(h, s);
        let adapt: Option<&dyn Fn(Tensor) -> candle_core::Result<Tensor>> =
            if self.adapter.is_some() {
                Some(&adapt)
            } else {
                None
            };
        self.layer.forward_post(x, bt, s.act, adapt)
    }
}

/// Which head sits on the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderHead {
    /// None: the last hidden state (embeddings).
    Base,
    /// `*ForSequenceClassification`.
    Sequence,
    /// `*ForTokenClassification`.
    Tokens,
    /// `*ForQuestionAnswering`: start and end logits.
    Qa,
    /// `*ForMaskedLM`: vocabulary logits at every position.
    Mlm,
}

#[derive(Debug)]
enum Head {
    Base,
    Sequence {
        pre: Linear,
        pre_act: Act,
        out: Linear,
    },
    PerToken(Linear),
    Mlm {
        dense: Linear,
        act: Act,
        norm: LayerNorm,
        decoder: Linear,
    },
}

/// The encoder body: embeddings, blocks and final norm (no head). The dual encoders reuse it
/// as a text tower (chinese_clip's BERT, altclip's XLM-R).
#[derive(Debug)]
pub(crate) struct BertBody {
    spec: Spec,
    /// Word embeddings; on the CPU in f32, rows read from the checkpoint on demand.
    word: Rows,
    /// The position table (absent with rotary positions).
    pos: Option<Tensor>,
    /// RoFormer's rotary tables `cos`, `sin` `[max_pos, d/2]` from the checkpoint.
    rope_table: Option<(Tensor, Tensor)>,
    token_type: Option<Tensor>,
    emb_ln: Option<LayerNorm>,
    proj: Option<Linear>,
    blocks: Vec<Block>,
    final_ln: Option<LayerNorm>,
    rel_bias: Option<Tensor>,
    device: Device,
}

impl BertBody {
    /// Take the body's tensors under `p` (`""` or `"<prefix>."`) from `w`.
    pub(crate) fn load(spec: &Spec, w: &mut Weights, p: &str) -> Result<Self, SkillError> {
        let e = spec.emb;
        let word = w.take_rows(&format!("{p}{WORD_EMBEDDINGS}"), &[spec.vocab, e])?;
        let rope_table = if spec.rotary == Some(Rotary::Table) {
            let d = spec.hidden / spec.heads;
            if !d.is_multiple_of(2) {
                return Err(SkillError::Backend {
                    backend: skillgen_runtime::BackendKind::Candle,
                    detail: format!("rotary positions need an even head size, not {d}"),
                });
            }
            let table = w.take(
                &format!("{p}encoder.embed_positions.weight"),
                &[spec.max_pos, d],
            )?;
            let half = |i: usize| -> candle_core::Result<Tensor> {
                table.narrow(1, i * d / 2, d / 2)?.contiguous()
            };
            let (sin, cos) = (half(0), half(1));
            Some((
                cos.map_err(ce("rotary table"))?,
                sin.map_err(ce("rotary table"))?,
            ))
        } else {
            None
        };
        let pos = if spec.rotary.is_some() {
            None
        } else {
            Some(w.take(
                &format!("{p}embeddings.position_embeddings.weight"),
                &[spec.max_pos, e],
            )?)
        };
        let token_type = if spec.type_vocab > 0 {
            Some(w.take(
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[spec.type_vocab, e],
            )?)
        } else {
            None
        };
        let emb_ln = if spec.layout.embedding_ln() {
            Some(layer_norm(
                w,
                &format!("{p}embeddings.LayerNorm"),
                e,
                spec.eps,
            )?)
        } else if spec.esm_emb_ln {
            Some(layer_norm(
                w,
                &format!("{p}embeddings.layer_norm"),
                e,
                spec.eps,
            )?)
        } else {
            None
        };
        if spec.layout == Layout::Esm {
            // ESM's contact-prediction head is not part of these tasks.
            let contact = format!("{p}contact_head.");
            w.leave(|n| n.starts_with(&contact));
        }
        let proj = match spec.emb_proj {
            Some(name) => Some(linear(w, &format!("{p}{name}"), spec.hidden, e)?),
            None => None,
        };
        let mut blocks = Vec::with_capacity(spec.layers);
        if spec.layout == Layout::Albert {
            let mut groups = Vec::with_capacity(spec.groups);
            for g in 0..spec.groups {
                let name = format!("{p}encoder.albert_layer_groups.{g}.albert_layers.0");
                groups.push(Block::load(w, spec, &name)?);
            }
            let per = spec.layers / spec.groups;
            for l in 0..spec.layers {
                blocks.push(groups[l / per].clone());
            }
        } else {
            for l in 0..spec.layers {
                blocks.push(Block::load(w, spec, &format!("{p}encoder.layer.{l}"))?);
            }
        }
        let final_ln = match spec.layout.final_ln() {
            Some(name) => Some(layer_norm(w, &format!("{p}{name}"), spec.hidden, spec.eps)?),
            None => None,
        };
        if spec.quant_params {
            w.leave(|name| {
                name.ends_with("_integer")
                    || name.ends_with("scaling_factor")
                    || name.ends_with(".x_min")
                    || name.ends_with(".x_max")
                    || name.ends_with(".shift")
            });
        }
        let rel_bias = if spec.layout == Layout::Mpnet {
            Some(w.take(
                &format!("{p}encoder.relative_attention_bias.weight"),
                &[spec.rel_buckets, spec.heads],
            )?)
        } else {
            None
        };
        Ok(Self {
            spec: spec.clone(),
            word,
            pos,
            rope_table,
            token_type,
            emb_ln,
            proj,
            blocks,
            final_ln,
            rel_bias,
            device: w.device().clone(),
        })
    }

    /// Position ids of `ids` (transformers' rules: sequential, or RoBERTa's count of the
    /// non-padding tokens from `padding_idx + 1`, padding tokens at `padding_idx`).
    fn positions(&self, ids: &[u32]) -> Vec<u32> {
        match self.spec.pos_offset {
            None => (0..ids.len() as u32).collect(),
            Some(pad) => {
                let mut count = 0;
                ids.iter()
                    .map(|&t| {
                        if t == pad {
                            pad
                        } else {
                            count += 1;
                            pad + count
                        }
                    })
                    .collect()
            }
        }
    }

    /// The last hidden state `[n, hidden]` of one unpadded, already checked input.
    pub(crate) fn forward(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.forward_batch(&[ids])?
            .squeeze(0)
            .map_err(ce("forward"))
    }

    /// The last hidden states `[b, n, hidden]` of already checked inputs, right-padded to the
    /// longest (`n`) and masked: row `i`'s first `rows[i].len()` positions are what
    /// [`BertBody::forward`] gives the input alone (padding keys get no attention; padding
    /// positions hold values nobody should read: 0 on the fused CPU path, which runs the real
    /// tokens only). One input is run exactly as alone.
    pub(crate) fn forward_batch(&self, rows: &[&[u32]]) -> Result<Tensor, SkillError> {
        let b = rows.len();
        let n = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let dev = &self.device;
        let lens: Arc<[usize]> = rows.iter().map(|r| r.len()).collect();
        // The fused CPU kernels take the real tokens only, packed (see `Batch::packed`);
        // candle ops take the batch right-padded to `n`.
        let packed = Batch::fusable(self.spec.rotary.is_some(), dev, self.word.dtype());
        let padded = |row: &[u32], fill: u32| -> Vec<u32> {
            let mut v = row.to_vec();
            if !packed {
                v.resize(n, fill);
            }
            v
        };
        let run = || -> candle_core::Result<Tensor> {
            let flat: Vec<u32> = rows.iter().flat_map(|r| padded(r, 0)).collect();
            let mut x = self.word.gather(&flat)?;
            if let Some(mask) = self.spec.token_dropout {
                // ESM: masked tokens zeroed, the rest scaled by (1 − 0.15·0.8) / (1 − masked
                // share of the input).
                let mut keep = Vec::with_capacity(b * n);
                for r in rows {
                    let masked = r.iter().filter(|&&t| t == mask).count() as f32 / r.len() as f32;
                    let scale = (1.0 - 0.15 * 0.8) / (1.0 - masked);
                    keep.extend(
                        padded(r, mask)
                            .iter()
                            .map(|&t| if t == mask { 0.0 } else { scale }),
                    );
                }
                let keep = Tensor::from_vec(keep, (flat.len(), 1), dev)?;
                x = x.broadcast_mul(&keep)?;
            }
            if let Some(table) = &self.pos {
                let pos: Vec<u32> = rows
                    .iter()
                    .flat_map(|r| padded(&self.positions(r), 0))
                    .collect();
                x = (x + table.index_select(&Tensor::new(pos.as_slice(), dev)?, 0)?)?;
            }
            if let Some(tt) = &self.token_type {
                x = x.broadcast_add(&tt.get(0)?)?;
            }
            if let Some(ln) = &self.emb_ln {
                x = ln.forward(&x)?;
            }
            if let Some(p) = &self.proj {
                x = p.forward(&x)?;
            }
            let tables = match (self.spec.rotary, &self.rope_table) {
                (Some(Rotary::Theta(theta)), _) => Some(crate::attention::rope_tables(
                    n,
                    self.spec.hidden / self.spec.heads,
                    theta,
                    dev,
                )?),
                (Some(Rotary::Table), Some((cos, sin))) => {
                    Some((cos.narrow(0, 0, n)?, sin.narrow(0, 0, n)?))
                }
                _ => None,
            };
            let rope = tables.as_ref().map(|(cos, sin)| Rope {
                cos,
                sin,
                interleaved: self.spec.rotary == Some(Rotary::Table),
            });
            let rel = match &self.rel_bias {
                Some(table) => {
                    let buckets: Vec<u32> = (0..n as i64)
                        .flat_map(|q| {
                            (0..n as i64).map(move |k| {
                                relative_bucket(k - q, self.spec.rel_buckets, 128) as u32
                            })
                        })
                        .collect();
                    let bk = Tensor::new(buckets.as_slice(), dev)?;
                    // [n*n, heads] → [heads, n, n]
                    let v = table
                        .index_select(&bk, 0)?
                        .reshape((n, n, self.spec.heads))?;
                    Some(v.permute((2, 0, 1))?.contiguous()?)
                }
                None => None,
            };
            if packed && !Batch::fusable(false, x.device(), x.dtype()) {
                candle_core::bail!("packed rows of {:?} on {:?}", x.dtype(), x.device());
            }
            let mut bt = Batch {
                b,
                n,
                lens: lens.clone(),
                packed,
                rel: None,
                mask: None,
                rope,
            };
            if packed {
                bt.rel = match &rel {
                    Some(r) => Some(r.flatten_all()?.to_vec1::<f32>()?.into()),
                    None => None,
                };
            } else {
                // Padding keys: −∞ before the softmax, so they get exactly no weight.
                let pad_mask = if rows.iter().any(|r| r.len() < n) {
                    let m: Vec<f32> = rows
                        .iter()
                        .flat_map(|r| {
                            (0..n).map(|j| if j < r.len() { 0.0 } else { f32::NEG_INFINITY })
                        })
                        .collect();
                    Some(Tensor::from_vec(m, (b, 1, 1, n), dev)?)
                } else {
                    None
                };
                let rel = rel.map(|r| r.unsqueeze(0)).transpose()?;
                bt.mask = match (rel, pad_mask) {
                    (Some(r), Some(m)) => Some(r.broadcast_add(&m)?),
                    (r, m) => r.or(m),
                };
            }
            for block in &self.blocks {
                x = block.forward(&x, &self.spec, &bt)?;
            }
            let h = x.dim(1)?;
            let mut x = if packed && lens.iter().any(|&l| l < n) {
                // Back to `[b, n, h]`, padding positions 0.
                let mut at = 0;
                let parts = lens
                    .iter()
                    .map(|&len| {
                        let part = x.narrow(0, at, len)?.pad_with_zeros(0, 0, n - len);
                        at += len;
                        part
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::stack(&parts, 0)?
            } else {
                x.reshape((b, n, h))?
            };
            if let Some(ln) = &self.final_ln {
                x = ln.forward(&x)?;
            }
            Ok(x)
        };
        run().map_err(ce("forward"))
    }
}

/// A BERT-like encoder with one head, loaded from a model directory.
pub struct BertLike {
    spec: Spec,
    body: BertBody,
    head: Head,
    /// Labels, scores, `embed` pooling, the tokenizer.
    setup: HeadSetup,
}

impl std::fmt::Debug for BertLike {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertLike")
            .field("spec", &self.spec)
            .field("head", &self.head)
            .field("labels", &self.setup.labels)
            .finish_non_exhaustive()
    }
}

impl BertLike {
    /// Load `dir` (a Hugging Face directory of `model_type`) with `head` on `device`.
    pub fn load(
        model_type: &str,
        dir: &Path,
        device: &Device,
        head: EncoderHead,
    ) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = translate(model_type, &f)?;
        // The tokenizer is parsed on the second core while the weights are read.
        // Word embeddings stay in the file, read row by row (see `crate::rows`).
        let (w, tokenizer) = rayon::join(
            || Weights::read_deferring(dir, device, &|n| n.ends_with(WORD_EMBEDDINGS)),
            || skillgen_checkpoint::parse_tokenizer(dir),
        );
        let (mut w, tokenizer) = (w?, tokenizer?);
        w.convert(DType::F32)?;
        // A bare `*Model` checkpoint has no prefix; a task checkpoint has `<prefix>.`.
        let p = if w.has(&format!("{}.{WORD_EMBEDDINGS}", spec.prefix)) {
            format!("{}.", spec.prefix)
        } else {
            String::new()
        };
        let e = spec.emb;
        let body = BertBody::load(&spec, &mut w, &p)?;
        let word = body.word.clone();
        let h = spec.hidden;
        let labels = setup::labels(&f, head)?;
        let n = labels.len();
        let head_kind = head;
        let head = match head {
            EncoderHead::Base => {
                // A task checkpoint's head is not part of the last hidden state.
                if !p.is_empty() {
                    let body = p.clone();
                    w.leave(|name| !name.starts_with(&body));
                }
                Head::Base
            }
            EncoderHead::Mlm => {
                let names = spec.mlm.ok_or_else(|| {
                    f.err(
                        "model_type",
                        format!(
                            "the masked-LM head of `{model_type}` is not implemented by the encoder"
                        ),
                    )
                })?;
                let width = match names.width_field {
                    Some(field) => f.positive(field)?,
                    None if names.to_embedding => e,
                    None => h,
                };
                let dense = linear(&mut w, names.dense, width, h)?;
                let norm = layer_norm(&mut w, names.norm, width, spec.eps)?;
                let dec_name = format!("{}.weight", names.decoder);
                let weight = if w.has(&dec_name) {
                    w.take(&dec_name, &[spec.vocab, width])?
                } else {
                    word.tensor()
                        .map_err(ce("reading the tied word embeddings"))?
                };
                let dec_bias = format!("{}.bias", names.decoder);
                let bias = if w.has(names.bias) {
                    if w.has(&dec_bias) {
                        // transformers ties `decoder.bias` to the head's bias.
                        w.take(&dec_bias, &[spec.vocab])?;
                    }
                    w.take(names.bias, &[spec.vocab])?
                } else {
                    w.take(&dec_bias, &[spec.vocab])?
                };
                Head::Mlm {
                    dense,
                    act: names.act.unwrap_or(spec.act),
                    norm,
                    decoder: Linear::new(weight, Some(bias)),
                }
            }
            EncoderHead::Sequence => match spec.seq_head {
                SeqHead::Pooler(name) => {
                    let pooler = format!("{p}{name}");
                    Head::Sequence {
                        pre: linear(&mut w, &pooler, h, h)?,
                        pre_act: Act::Tanh,
                        out: linear(&mut w, "classifier", n, h)?,
                    }
                }
                SeqHead::DenseOut(a) => Head::Sequence {
                    pre: linear(&mut w, "classifier.dense", h, h)?,
                    pre_act: a,
                    out: linear(&mut w, "classifier.out_proj", n, h)?,
                },
            },
            EncoderHead::Tokens => Head::PerToken(linear(&mut w, "classifier", n, h)?),
            EncoderHead::Qa => Head::PerToken(linear(&mut w, "qa_outputs", 2, h)?),
        };
        if !matches!(
            (head_kind, spec.seq_head),
            (EncoderHead::Sequence, SeqHead::Pooler(_))
        ) {
            // The pooler is computed only by the pooler classifier.
            let pooler = format!("{p}pooler");
            w.leave(|name| name.starts_with(&pooler));
        }
        w.finish()?;
        // Embeddings truncate at the position table (less the RoBERTa offset), or
        // sentence-transformers' `max_seq_length`.
        let room = match spec.pos_offset {
            Some(p) => spec.max_pos.saturating_sub(p as usize + 1),
            None => spec.max_pos,
        };
        let room = spec.max_full_tokens.map_or(room, |m| m.min(room));
        let setup = HeadSetup::finish_parsed(dir, &f, head_kind, labels, room, tokenizer)?;
        Ok(Self {
            spec,
            body,
            head,
            setup,
        })
    }

    /// The most tokens one input may have (the position table, less the RoBERTa offset).
    pub fn max_tokens(&self) -> usize {
        let room = match self.spec.pos_offset {
            Some(p) => self.spec.max_pos.saturating_sub(p as usize + 1),
            None => self.spec.max_pos,
        };
        self.spec.max_full_tokens.map_or(room, |m| m.min(room))
    }

    /// The last hidden state `[n, hidden]` of one unpadded input.
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.check(ids)?;
        self.body.forward(ids)
    }

    /// `ids` fit the vocabulary and the position table.
    fn check(&self, ids: &[u32]) -> Result<(), SkillError> {
        self.setup.check_ids(
            ids,
            self.spec.vocab,
            self.max_tokens(),
            &format_args!("max_position_embeddings {}", self.spec.max_pos),
        )
    }

    /// The head's output for one unpadded input: `[1][labels]` for a sequence head,
    /// `[position][n]` for a per-token head, the hidden states for the base.
    pub fn head_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        let hidden = self.hidden_states(ids)?;
        let out = match &self.head {
            Head::Base => Ok(hidden),
            Head::Sequence { pre, pre_act, out } => (|| {
                let first = hidden.narrow(0, 0, 1)?;
                out.forward(&act(*pre_act, &pre.forward(&first)?)?)
            })(),
            Head::PerToken(l) => l.forward(&hidden),
            Head::Mlm {
                dense,
                act: a,
                norm,
                decoder,
            } => (|| decoder.forward(&norm.forward(&act(*a, &dense.forward(&hidden)?)?)?))(),
        };
        out.and_then(|t| t.to_vec2())
            .map_err(ce("reading head logits"))
    }
}

impl BertLike {}

impl HeadModel for BertLike {
    fn setup(&self) -> &HeadSetup {
        &self.setup
    }

    fn width(&self) -> usize {
        self.spec.hidden
    }

    fn embed_rows(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.hidden_states(ids)
    }

    fn embed_rows_batch(&self, rows: &[&[u32]]) -> Result<Vec<Tensor>, SkillError> {
        for ids in rows {
            self.check(ids)?;
        }
        let hidden = self.body.forward_batch(rows)?;
        rows.iter()
            .enumerate()
            .map(|(i, r)| hidden.get(i).and_then(|h| h.narrow(0, 0, r.len())))
            .collect::<candle_core::Result<_>>()
            .map_err(ce("splitting the batch"))
    }

    fn outputs(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.head_logits(ids)
    }
}

/// The head's outputs (see [`BertLike::head_logits`]) of each input, `head` on the encoder
/// of `state` on `target`. For the conformance tests.
pub fn encoder_head_logits(
    state: &skillgen_runtime::SkillState,
    target: skillgen_runtime::Target,
    head: EncoderHead,
    inputs: &[Vec<u32>],
) -> Result<Vec<Vec<Vec<f32>>>, SkillError> {
    let m = super::with_head(state.model(), target, head)?;
    inputs.iter().map(|ids| m.head_logits(ids)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xmod(extra: &str) -> Result<Spec, SkillError> {
        let text = format!(
            r#"{{"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
            "intermediate_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
            "max_position_embeddings": 16, "vocab_size": 10, "type_vocab_size": 1,
            "pad_token_id": 1, "adapter_reduction_factor": 2, "languages": ["en_XX", "de_DE"]
            {extra}}}"#
        );
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        let path = std::path::PathBuf::from("config.json");
        translate(
            "xmod",
            &Fields {
                path: &path,
                map: &map,
            },
        )
    }

    fn field(r: Result<Spec, SkillError>) -> String {
        match r {
            Err(SkillError::ConfigField { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn xmod_takes_the_default_languages_adapter() {
        let s = xmod(r#", "default_language": "de_DE""#).unwrap();
        let a = s.adapter.unwrap();
        assert_eq!((a.language.as_str(), a.bottleneck), ("de_DE", 4));
        assert!(a.ln_before && a.reuse_ln && !a.own_ln);
    }

    #[test]
    fn xmod_without_a_known_default_language_or_with_pre_norm_is_refused_by_field() {
        assert_eq!(field(xmod("")), "default_language");
        assert_eq!(
            field(xmod(r#", "default_language": "fr_XX""#)),
            "default_language"
        );
        let pre = r#", "default_language": "en_XX", "pre_norm": true"#;
        assert_eq!(field(xmod(pre)), "pre_norm");
    }
}
