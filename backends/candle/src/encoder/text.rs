//! BERT-like text encoders on candle: `bert`, `distilbert` and `xlm-roberta` backbones (last
//! hidden state), their masked-LM heads (fill-mask), pooling (embed).
//!
//! candle 0.11.1's own MLM heads are not used: its BERT head reads `cls.predictions.decoder.*`,
//! which transformers v5 does not save (the decoder is tied to the word embeddings and the bias
//! lives in `cls.predictions.bias`), and its XLM-RoBERTa head drops `lm_head.bias`. The head
//! here is the transformers one: dense → activation → layer norm → `x @ Wᵀ + b` with `W` the
//! (tied) word embeddings unless an untied decoder weight is stored.

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Activation, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::{bert, xlm_roberta};

use super::distilbert;
use serde_json::{Map, Value, json};
use skillgen_runtime::Capability;

use crate::e;
use crate::encoder::bert::bert_config;
use crate::encoder::bert::check_weights;
use skillgen_checkpoint::{
    Fields, TensorCheck, config_json, load_tokenizer, sentence_max_len, sentence_transformers_head,
    weights_bytes,
};
use skillgen_runtime::SkillError;
use skillgen_runtime::request::{Embeddings, FillMaskOutput, MaskPrediction, Pooling, TextBatch};

/// The encoder architectures this module runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// `bert`.
    Bert,
    /// `distilbert`.
    DistilBert,
    /// `xlm-roberta`.
    XlmRoberta,
}

impl EncoderKind {
    /// The kind for a Hugging Face `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "bert" => Some(Self::Bert),
            "distilbert" => Some(Self::DistilBert),
            "xlm-roberta" => Some(Self::XlmRoberta),
            _ => None,
        }
    }

    /// The tensor prefix of the base model inside a `*ForMaskedLM` checkpoint.
    fn base_prefix(self) -> &'static str {
        match self {
            Self::Bert => "bert.",
            Self::DistilBert => "distilbert.",
            Self::XlmRoberta => "roberta.",
        }
    }
}

enum Backbone {
    Bert(bert::BertModel),
    DistilBert(distilbert::DistilBert),
    XlmRoberta(xlm_roberta::XLMRobertaModel),
}

/// A masked-LM head (transformers layout, tied decoder weight allowed).
struct MlmHead {
    dense: Linear,
    act: Activation,
    norm: LayerNorm,
    decoder: Linear,
}

impl MlmHead {
    fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.dense.forward(hidden)?;
        let x = self.act.forward(&x)?;
        let x = self.norm.forward(&x)?;
        self.decoder.forward(&x)
    }
}

/// The dimensions every architecture shares, translated from `config.json`.
#[derive(Debug, Clone, Copy)]
struct Dims {
    vocab: usize,
    hidden: usize,
    layers: usize,
    intermediate: usize,
    max_positions: usize,
    type_vocab: usize,
    pad_id: u32,
    layer_norm_eps: f64,
}

/// `hidden_act` / `activation` as a candle activation (exact-erf `gelu` as in transformers).
fn activation(f: &Fields<'_>, field: &str) -> Result<Activation, SkillError> {
    match f.str_opt(field)? {
        Some("gelu") => Ok(Activation::Gelu),
        Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") => Ok(Activation::NewGelu),
        Some("relu") => Ok(Activation::Relu),
        Some("silu" | "swish") => Ok(Activation::Silu),
        Some(other) => Err(f.err(
            field,
            format!("`{other}` is not supported (gelu, gelu_new, relu, silu)"),
        )),
        None => Err(f.err(field, "missing (required)")),
    }
}

fn heads_divide(f: &Fields<'_>, hidden: usize, heads_field: &str) -> Result<usize, SkillError> {
    let heads = f.positive(heads_field)?;
    if !hidden.is_multiple_of(heads) {
        return Err(f.err(
            heads_field,
            format!("{heads} does not divide the hidden size {hidden}"),
        ));
    }
    Ok(heads)
}

/// distilbert: translate `config.json` (fields `dim`, `n_layers`, `n_heads`, `hidden_dim`,
/// `activation`, ...).
fn distilbert_config(
    path: &Path,
    map: &Map<String, Value>,
) -> Result<(distilbert::Config, Dims, Activation), SkillError> {
    let f = Fields { path, map };
    let act = activation(&f, "activation")?;
    let dim = f.positive("dim")?;
    let heads = heads_divide(&f, dim, "n_heads")?;
    let dims = Dims {
        vocab: f.positive("vocab_size")?,
        hidden: dim,
        layers: f.positive("n_layers")?,
        intermediate: f.positive("hidden_dim")?,
        max_positions: f.positive("max_position_embeddings")?,
        type_vocab: 1,
        pad_id: u32::try_from(f.usize_opt("pad_token_id")?.unwrap_or(0))
            .map_err(|_| f.err("pad_token_id", "does not fit in u32"))?,
        layer_norm_eps: 1e-12,
    };
    let config = distilbert::Config {
        vocab: dims.vocab,
        dim,
        layers: dims.layers,
        heads,
        hidden_dim: dims.intermediate,
        max_positions: dims.max_positions,
        act,
    };
    Ok((config, dims, act))
}

/// xlm-roberta: translate `config.json` (v5 omits `position_embedding_type`: absolute).
fn xlm_roberta_config(
    path: &Path,
    map: &Map<String, Value>,
) -> Result<(xlm_roberta::Config, Dims, Activation), SkillError> {
    let f = Fields { path, map };
    let act = activation(&f, "hidden_act")?;
    match f.str_opt("position_embedding_type")? {
        None | Some("absolute") => {}
        Some(other) => {
            return Err(f.err(
                "position_embedding_type",
                format!("`{other}` is not supported by candle's XLM-RoBERTa (only `absolute`)"),
            ));
        }
    }
    if f.bool_or_false("is_decoder")? {
        return Err(f.err("is_decoder", "a decoder XLM-RoBERTa is not an encoder"));
    }
    let hidden = f.positive("hidden_size")?;
    let heads = heads_divide(&f, hidden, "num_attention_heads")?;
    let pad = f.usize("pad_token_id")?;
    let dims = Dims {
        vocab: f.positive("vocab_size")?,
        hidden,
        layers: f.positive("num_hidden_layers")?,
        intermediate: f.positive("intermediate_size")?,
        max_positions: f.positive("max_position_embeddings")?,
        type_vocab: f.positive("type_vocab_size")?,
        pad_id: u32::try_from(pad).map_err(|_| f.err("pad_token_id", "does not fit in u32"))?,
        layer_norm_eps: f.f64("layer_norm_eps")?,
    };
    if pad + 1 >= dims.max_positions {
        return Err(f.err(
            "pad_token_id",
            format!(
                "{pad}: RoBERTa positions start at pad_token_id + 1, which leaves no position \
                 below max_position_embeddings {}",
                dims.max_positions
            ),
        ));
    }
    let act_name = match act {
        Activation::Gelu => "gelu",
        Activation::NewGelu => "gelu_new",
        Activation::Relu => "relu",
        _ => "silu",
    };
    let c = json!({
        "hidden_size": hidden, "layer_norm_eps": dims.layer_norm_eps,
        "attention_probs_dropout_prob": 0.0, "hidden_dropout_prob": 0.0,
        "num_attention_heads": heads, "position_embedding_type": "absolute",
        "intermediate_size": dims.intermediate, "hidden_act": act_name,
        "num_hidden_layers": dims.layers, "vocab_size": dims.vocab,
        "max_position_embeddings": dims.max_positions, "type_vocab_size": dims.type_vocab,
        "pad_token_id": dims.pad_id,
    });
    let config = serde_json::from_value(c).map_err(|err| f.err("(translated)", err.to_string()))?;
    Ok((config, dims, act))
}

fn lin(t: &mut Vec<(String, Vec<usize>)>, name: String, out: usize, inp: usize) {
    t.push((format!("{name}.weight"), vec![out, inp]));
    t.push((format!("{name}.bias"), vec![out]));
}

fn norm(t: &mut Vec<(String, Vec<usize>)>, name: String, h: usize) {
    t.push((format!("{name}.weight"), vec![h]));
    t.push((format!("{name}.bias"), vec![h]));
}

fn distilbert_tensors(p: &str, d: &Dims) -> Vec<(String, Vec<usize>)> {
    let h = d.hidden;
    let mut t = vec![
        (
            format!("{p}embeddings.word_embeddings.weight"),
            vec![d.vocab, h],
        ),
        (
            format!("{p}embeddings.position_embeddings.weight"),
            vec![d.max_positions, h],
        ),
    ];
    norm(&mut t, format!("{p}embeddings.LayerNorm"), h);
    for l in 0..d.layers {
        let q = format!("{p}transformer.layer.{l}");
        for n in ["q_lin", "k_lin", "v_lin", "out_lin"] {
            lin(&mut t, format!("{q}.attention.{n}"), h, h);
        }
        lin(&mut t, format!("{q}.ffn.lin1"), d.intermediate, h);
        lin(&mut t, format!("{q}.ffn.lin2"), h, d.intermediate);
        norm(&mut t, format!("{q}.sa_layer_norm"), h);
        norm(&mut t, format!("{q}.output_layer_norm"), h);
    }
    t
}

fn roberta_tensors(p: &str, d: &Dims) -> Vec<(String, Vec<usize>)> {
    let h = d.hidden;
    let mut t = vec![
        (
            format!("{p}embeddings.word_embeddings.weight"),
            vec![d.vocab, h],
        ),
        (
            format!("{p}embeddings.position_embeddings.weight"),
            vec![d.max_positions, h],
        ),
        (
            format!("{p}embeddings.token_type_embeddings.weight"),
            vec![d.type_vocab, h],
        ),
    ];
    norm(&mut t, format!("{p}embeddings.LayerNorm"), h);
    for l in 0..d.layers {
        let q = format!("{p}encoder.layer.{l}");
        for n in ["query", "key", "value"] {
            lin(&mut t, format!("{q}.attention.self.{n}"), h, h);
        }
        lin(&mut t, format!("{q}.attention.output.dense"), h, h);
        lin(&mut t, format!("{q}.intermediate.dense"), d.intermediate, h);
        lin(&mut t, format!("{q}.output.dense"), h, d.intermediate);
        norm(&mut t, format!("{q}.attention.output.LayerNorm"), h);
        norm(&mut t, format!("{q}.output.LayerNorm"), h);
    }
    t
}

/// Pick the base-model prefix: `{arch}.` (a `*For…` checkpoint) or none.
fn pick_prefix(check: &TensorCheck<'_>, kind: EncoderKind) -> Result<&'static str, SkillError> {
    let first = "embeddings.word_embeddings.weight";
    let p = kind.base_prefix();
    if check.has(&format!("{p}{first}")) {
        Ok(p)
    } else if check.has(first) {
        Ok("")
    } else {
        Err(SkillError::TensorMissing {
            path: check.path.to_path_buf(),
            tensor: format!("{first}` (or `{p}{first}"),
        })
    }
}

/// The MLM head names of each architecture: (dense, norm, bias candidates, untied decoder).
fn mlm_names(kind: EncoderKind) -> (&'static str, &'static str, [&'static str; 2], &'static str) {
    match kind {
        EncoderKind::Bert => (
            "cls.predictions.transform.dense",
            "cls.predictions.transform.LayerNorm",
            ["cls.predictions.bias", "cls.predictions.decoder.bias"],
            "cls.predictions.decoder.weight",
        ),
        EncoderKind::DistilBert => (
            "vocab_transform",
            "vocab_layer_norm",
            ["vocab_projector.bias", "vocab_projector.bias"],
            "vocab_projector.weight",
        ),
        EncoderKind::XlmRoberta => (
            "lm_head.dense",
            "lm_head.layer_norm",
            ["lm_head.bias", "lm_head.decoder.bias"],
            "lm_head.decoder.weight",
        ),
    }
}

/// Load the MLM head if the checkpoint has one (`None` when its dense layer is absent).
fn load_mlm(
    check: &TensorCheck<'_>,
    vb: &VarBuilder<'_>,
    kind: EncoderKind,
    prefix: &str,
    d: &Dims,
    act: Activation,
) -> Result<Option<MlmHead>, SkillError> {
    let (dense, norm_name, biases, untied) = mlm_names(kind);
    if !check.has(&format!("{dense}.weight")) {
        return Ok(None);
    }
    let h = d.hidden;
    let mut t = Vec::new();
    lin(&mut t, dense.to_owned(), h, h);
    norm(&mut t, norm_name.to_owned(), h);
    check.require_all(&t)?;
    let bias = biases
        .iter()
        .find(|b| check.has(b))
        .copied()
        .unwrap_or(biases[0]);
    check.require(bias, &[d.vocab])?;
    let weight = if check.has(untied) {
        untied.to_owned()
    } else {
        format!("{prefix}embeddings.word_embeddings.weight")
    };
    check.require(&weight, &[d.vocab, h])?;
    let path = check.path;
    let w = |r: candle_core::Result<Tensor>| {
        r.map_err(|err| SkillError::WeightsInvalid {
            path: path.to_path_buf(),
            detail: err.to_string(),
        })
    };
    let dense = Linear::new(
        w(vb.get((h, h), &format!("{dense}.weight")))?,
        Some(w(vb.get(h, &format!("{dense}.bias")))?),
    );
    let norm = LayerNorm::new(
        w(vb.get(h, &format!("{norm_name}.weight")))?,
        w(vb.get(h, &format!("{norm_name}.bias")))?,
        d.layer_norm_eps,
    );
    let decoder = Linear::new(
        w(vb.get((d.vocab, h), &weight))?,
        Some(w(vb.get(d.vocab, bias))?),
    );
    // The head activation: BERT/DistilBERT use the model's; RoBERTa's head is always gelu.
    let act = match kind {
        EncoderKind::XlmRoberta => Activation::Gelu,
        _ => act,
    };
    Ok(Some(MlmHead {
        dense,
        act,
        norm,
        decoder,
    }))
}

/// A loaded BERT-like encoder (backbone, optional MLM head, optional tokenizer).
pub struct TextEncoder {
    kind: EncoderKind,
    backbone: Backbone,
    mlm: Option<MlmHead>,
    dims: Dims,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
    weights_path: PathBuf,
    pooling: Pooling,
    normalize: bool,
    device: Device,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("kind", &self.kind)
            .field("hidden", &self.dims.hidden)
            .field("layers", &self.dims.layers)
            .field("mlm_head", &self.mlm.is_some())
            .field("tokenizer", &self.tokenizer.is_some())
            .field("device", &self.device)
            .finish()
    }
}

impl TextEncoder {
    /// Load the `model_type` encoder in `dir` on `device` (typed errors name the file, field or
    /// tensor at fault).
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let kind =
            EncoderKind::from_model_type(model_type).ok_or_else(|| SkillError::ConfigField {
                path: config_path.clone(),
                field: "model_type".to_owned(),
                detail: format!("`{model_type}` is not a bert/distilbert/xlm-roberta encoder"),
            })?;
        let (weights_path, bytes) = weights_bytes(dir)?;
        let check = TensorCheck::new(&weights_path, &bytes)?;
        let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, device).map_err(|err| {
            SkillError::WeightsInvalid {
                path: weights_path.clone(),
                detail: err.to_string(),
            }
        })?;
        let load_err = |err: candle_core::Error| SkillError::WeightsInvalid {
            path: weights_path.clone(),
            detail: err.to_string(),
        };
        let pp = |p: &str| {
            if p.is_empty() {
                vb.clone()
            } else {
                vb.pp(p.trim_end_matches('.'))
            }
        };
        let (backbone, dims, act, prefix) = match kind {
            EncoderKind::Bert => {
                let c = bert_config(&config_path, &map)?;
                let prefix = check_weights(&weights_path, &bytes, &c)?;
                let f = Fields {
                    path: &config_path,
                    map: &map,
                };
                let act = activation(&f, "hidden_act")?;
                let dims = Dims {
                    vocab: c.vocab_size,
                    hidden: c.hidden_size,
                    layers: c.num_hidden_layers,
                    intermediate: c.intermediate_size,
                    max_positions: c.max_position_embeddings,
                    type_vocab: c.type_vocab_size,
                    pad_id: u32::try_from(c.pad_token_id)
                        .map_err(|_| f.err("pad_token_id", "does not fit in u32"))?,
                    layer_norm_eps: c.layer_norm_eps,
                };
                let m = bert::BertModel::load(pp(prefix), &c).map_err(load_err)?;
                (Backbone::Bert(m), dims, act, prefix)
            }
            EncoderKind::DistilBert => {
                let (c, dims, act) = distilbert_config(&config_path, &map)?;
                let prefix = pick_prefix(&check, kind)?;
                check.require_all(&distilbert_tensors(prefix, &dims))?;
                let m = distilbert::DistilBert::load(&pp(prefix), c).map_err(load_err)?;
                (Backbone::DistilBert(m), dims, act, prefix)
            }
            EncoderKind::XlmRoberta => {
                let (c, dims, act) = xlm_roberta_config(&config_path, &map)?;
                let prefix = pick_prefix(&check, kind)?;
                check.require_all(&roberta_tensors(prefix, &dims))?;
                let m = xlm_roberta::XLMRobertaModel::new(&c, pp(prefix)).map_err(load_err)?;
                (Backbone::XlmRoberta(m), dims, act, prefix)
            }
        };
        let mlm = load_mlm(&check, &vb, kind, prefix, &dims, act)?;
        let max_len = match sentence_max_len(dir)? {
            Some(n) => n.min(Self::max_tokens_of(kind, &dims)),
            None => Self::max_tokens_of(kind, &dims),
        };
        let (pooling, normalize) = sentence_transformers_head(dir)?;
        let (tokenizer, tokenizer_path) = load_tokenizer(dir, Some(max_len))?;
        Ok(Self {
            kind,
            backbone,
            mlm,
            dims,
            tokenizer,
            tokenizer_path,
            weights_path,
            pooling,
            normalize,
            device: device.clone(),
        })
    }

    fn max_tokens_of(kind: EncoderKind, d: &Dims) -> usize {
        match kind {
            // Positions run from pad_token_id + 1.
            EncoderKind::XlmRoberta => d.max_positions - d.pad_id as usize - 1,
            _ => d.max_positions,
        }
    }

    /// The architecture.
    pub fn kind(&self) -> EncoderKind {
        self.kind
    }

    /// The hidden size (embedding dimension).
    pub fn dim(&self) -> usize {
        self.dims.hidden
    }

    /// The most token ids one input may have.
    pub fn max_tokens(&self) -> usize {
        Self::max_tokens_of(self.kind, &self.dims)
    }

    /// Whether the checkpoint has a masked-LM head.
    pub fn has_mlm_head(&self) -> bool {
        self.mlm.is_some()
    }

    fn tokenizer(&self) -> Result<&tokenizers::Tokenizer, SkillError> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: "the tokenizer, needed for text input and fill-mask token texts",
            })
    }

    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, SkillError> {
        let tok = self.tokenizer()?;
        let encodings =
            tok.encode_batch(texts.to_vec(), true)
                .map_err(|err| SkillError::Tokenizer {
                    path: self.tokenizer_path.clone(),
                    detail: err.to_string(),
                })?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    fn check_ids(&self, capability: Capability, ids: &[Vec<u32>]) -> Result<(), SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest { capability, detail };
        if ids.is_empty() {
            return Err(invalid("no inputs".to_owned()));
        }
        let max = self.max_tokens();
        for (i, row) in ids.iter().enumerate() {
            if row.is_empty() {
                return Err(invalid(format!("input {i} has no token ids")));
            }
            if row.len() > max {
                return Err(invalid(format!(
                    "input {i} has {} token ids, more than the model's maximum {max}",
                    row.len()
                )));
            }
            if let Some(&id) = row.iter().find(|&&id| id as usize >= self.dims.vocab) {
                return Err(invalid(format!(
                    "input {i} has token id {id}, outside the vocabulary (vocab_size {})",
                    self.dims.vocab
                )));
            }
        }
        Ok(())
    }

    /// Right-pad `ids` (with `pad_token_id`) into `[batch, len]` ids and mask (1 = real).
    fn pad(&self, ids: &[Vec<u32>]) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        let padded = ids
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.resize(len, self.dims.pad_id);
                r
            })
            .collect();
        let mask = ids
            .iter()
            .map(|r| (0..len).map(|p| u32::from(p < r.len())).collect())
            .collect();
        (padded, mask)
    }

    /// The last hidden state `[batch, len, hidden]` for rectangular `ids` / `mask` (1 = real
    /// token) and optional token types (default 0).
    pub fn hidden_states(
        &self,
        capability: Capability,
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
        token_type_ids: Option<&[Vec<u32>]>,
    ) -> Result<Tensor, SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest { capability, detail };
        let b = ids.len();
        let len = ids.first().map_or(0, Vec::len);
        let rect = |rows: &[Vec<u32>]| rows.len() == b && rows.iter().all(|r| r.len() == len);
        if b == 0 || len == 0 || !rect(ids) || !rect(mask) || !token_type_ids.is_none_or(rect) {
            return Err(invalid(
                "ids, mask and token types must all be non-empty [batch, len]".to_owned(),
            ));
        }
        self.check_ids(capability, ids)?;
        if mask.iter().flatten().any(|&m| m > 1) {
            return Err(invalid("the attention mask must be 0 or 1".to_owned()));
        }
        if let Some(tt) = token_type_ids
            && tt
                .iter()
                .flatten()
                .any(|&t| t as usize >= self.dims.type_vocab)
        {
            return Err(invalid(format!(
                "token type id outside type_vocab_size {}",
                self.dims.type_vocab
            )));
        }
        let flat = |rows: &[Vec<u32>]| rows.iter().flatten().copied().collect::<Vec<u32>>();
        let dev = &self.device;
        let input = Tensor::from_vec(flat(ids), (b, len), dev).map_err(e("input ids"))?;
        let tt = match token_type_ids {
            Some(tt) => Tensor::from_vec(flat(tt), (b, len), dev),
            None => Tensor::zeros((b, len), DType::U32, dev),
        }
        .map_err(e("token types"))?;
        let mask_t = Tensor::from_vec(flat(mask), (b, len), dev).map_err(e("attention mask"))?;
        match &self.backbone {
            Backbone::Bert(m) => m
                .forward(&input, &tt, Some(&mask_t))
                .map_err(e("BERT forward")),
            // Our DistilBERT takes the HF mask (candle's own model wants it inverted).
            Backbone::DistilBert(m) => m.forward(&input, &mask_t).map_err(e("DistilBERT forward")),
            Backbone::XlmRoberta(m) => {
                let mask_f = mask_t.to_dtype(DType::F32).map_err(e("attention mask"))?;
                m.forward(&input, &mask_f, &tt, None, None, None)
                    .map_err(e("XLM-RoBERTa forward"))
            }
        }
    }

    /// Masked-LM logits `[batch, len, vocab]` (needs the MLM head).
    pub fn mlm_logits(
        &self,
        ids: &[Vec<u32>],
        mask: &[Vec<u32>],
        token_type_ids: Option<&[Vec<u32>]>,
    ) -> Result<Tensor, SkillError> {
        let head = self.mlm.as_ref().ok_or_else(|| SkillError::TensorMissing {
            path: self.weights_path.clone(),
            tensor: format!("{}.weight` (the masked-LM head", mlm_names(self.kind).0),
        })?;
        let hidden = self.hidden_states(Capability::FillMask, ids, mask, token_type_ids)?;
        head.forward(&hidden).map_err(e("masked-LM head"))
    }

    /// `embed`: tokenise (text input), run in length-sorted chunks of `batch_size` (padded to
    /// the chunk's longest, masked), pool (sentence-transformers config, default mean),
    /// optionally L2-normalise; the vectors in input order.
    pub fn embed(
        &self,
        input: &TextBatch,
        normalize: Option<bool>,
        batch_size: usize,
    ) -> Result<Embeddings, SkillError> {
        let ids = match input {
            TextBatch::Texts(texts) => self.tokenize(texts)?,
            TextBatch::TokenIds(ids) => ids.clone(),
        };
        self.check_ids(Capability::Embed, &ids)?;
        let normalized = normalize.unwrap_or(self.normalize);
        let mut vectors = vec![Vec::new(); ids.len()];
        for chunk in crate::heads::length_sorted_chunks(&ids, batch_size) {
            let rows: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
            for (&i, v) in chunk.iter().zip(self.embed_padded(&rows, normalized)?) {
                vectors[i] = v;
            }
        }
        Ok(Embeddings {
            dim: self.dims.hidden,
            vectors,
            pooling: self.pooling,
            normalized,
            token_ids: ids,
        })
    }

    /// The pooled (and optionally normalised) vectors of `ids`, run as one padded batch.
    fn embed_padded(
        &self,
        ids: &[Vec<u32>],
        normalized: bool,
    ) -> Result<Vec<Vec<f32>>, SkillError> {
        let (padded, mask) = self.pad(ids);
        let hidden = self.hidden_states(Capability::Embed, &padded, &mask, None)?;
        let b = mask.len();
        let len = mask.first().map_or(0, Vec::len);
        let mask_t = Tensor::from_vec(
            mask.iter().flatten().map(|&m| m as f32).collect::<Vec<_>>(),
            (b, len),
            &self.device,
        )
        .map_err(e("mask"))?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)),
            Pooling::Pooler => Err(candle_core::Error::Msg(
                "this model has no pooled output of its own (mean or cls pooling)".into(),
            )),
            Pooling::Mean => (|| {
                let m = mask_t.unsqueeze(2)?;
                let sum = hidden.broadcast_mul(&m)?.sum(1)?;
                sum.broadcast_div(&m.sum(1)?)
            })(),
        }
        .map_err(e("pooling"))?;
        let pooled = if normalized {
            (|| {
                let n = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
                pooled.broadcast_div(&n.maximum(1e-12)?)
            })()
            .map_err(e("normalisation"))?
        } else {
            pooled
        };
        pooled.to_vec2::<f32>().map_err(e("output"))
    }

    /// The mask token id of the tokenizer (`[MASK]` or `<mask>`).
    fn mask_token_id(&self) -> Result<u32, SkillError> {
        let tok = self.tokenizer()?;
        ["[MASK]", "<mask>"]
            .iter()
            .find_map(|t| tok.token_to_id(t))
            .ok_or_else(|| SkillError::Tokenizer {
                path: self.tokenizer_path.clone(),
                detail: "has no mask token (`[MASK]` or `<mask>`)".to_owned(),
            })
    }

    /// `fill_mask`: the `top_k` most likely tokens (softmax probabilities) at every mask token.
    pub fn fill_mask(&self, input: &TextBatch, top_k: usize) -> Result<FillMaskOutput, SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::FillMask,
            detail,
        };
        if top_k == 0 {
            return Err(invalid("top_k must be at least 1".to_owned()));
        }
        let mask_id = self.mask_token_id()?;
        let ids = match input {
            TextBatch::Texts(texts) => self.tokenize(texts)?,
            TextBatch::TokenIds(ids) => ids.clone(),
        };
        self.check_ids(Capability::FillMask, &ids)?;
        if let Some(i) = ids.iter().position(|r| !r.contains(&mask_id)) {
            return Err(invalid(format!(
                "input {i} has no mask token (id {mask_id})"
            )));
        }
        let (padded, mask) = self.pad(&ids);
        let logits = self.mlm_logits(&padded, &mask, None)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)
            .and_then(|p| p.to_vec3::<f32>())
            .map_err(e("softmax"))?;
        let tok = self.tokenizer()?;
        let k = top_k.min(self.dims.vocab);
        let mut predictions = Vec::with_capacity(ids.len());
        for (row, row_probs) in ids.iter().zip(&probs) {
            let mut per_mask = Vec::new();
            for (p, _) in row.iter().enumerate().filter(|&(_, &id)| id == mask_id) {
                let Some(dist) = row_probs.get(p) else {
                    continue;
                };
                let mut order: Vec<usize> = (0..dist.len()).collect();
                order.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]).then(a.cmp(&b)));
                per_mask.push(
                    order
                        .into_iter()
                        .take(k)
                        .map(|id| MaskPrediction {
                            token: tok.id_to_token(id as u32).unwrap_or_default(),
                            token_id: id as u32,
                            score: dist[id],
                        })
                        .collect(),
                );
            }
            predictions.push(per_mask);
        }
        Ok(FillMaskOutput { predictions })
    }
}

/// A flattened tensor and its shape.
pub(crate) fn flat(t: &Tensor) -> Result<(Vec<f32>, Vec<usize>), SkillError> {
    let shape = t.dims().to_vec();
    let data = t
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(e("output"))?;
    Ok((data, shape))
}

/// Parity entry point: the last hidden state and (when the checkpoint has an MLM head) the
/// masked-LM logits of the `model_type` encoder in `dir` on the CPU, flattened row-major, for
/// rectangular `ids`/`mask` (and optional token types).
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn encoder_outputs(
    dir: &Path,
    model_type: &str,
    ids: &[Vec<u32>],
    mask: &[Vec<u32>],
    token_type_ids: Option<&[Vec<u32>]>,
) -> Result<((Vec<f32>, Vec<usize>), Option<(Vec<f32>, Vec<usize>)>), SkillError> {
    let model = TextEncoder::load(dir, model_type, &Device::Cpu)?;
    let hidden = model.hidden_states(Capability::Embed, ids, mask, token_type_ids)?;
    let logits = match &model.mlm {
        Some(head) => Some(flat(&head.forward(&hidden).map_err(e("masked-LM head"))?)?),
        None => None,
    };
    Ok((flat(&hidden)?, logits))
}
