//! BERT sentence embeddings with candle-transformers on the CPU (the `embed` capability).
//!
//! [`BertEmbedder::load`] reads a Hugging Face model directory:
//! - `config.json`: the fields candle's [`bert::Config`] needs, translated one by one (a missing
//!   or unsupported value is a [`SkillError::ConfigField`] naming the field; transformers v5
//!   omits `position_embedding_type`, which then means `absolute`);
//! - `model.safetensors`: every tensor of the base model is checked by name, dtype and shape
//!   before candle sees it; the tensors may carry a `bert.` prefix (a `BertForMaskedLM` /
//!   `BertFor…` checkpoint) or not (a `BertModel` checkpoint such as all-MiniLM-L6-v2);
//!   extra tensors (MLM head, `embeddings.position_ids`) are ignored;
//! - `tokenizer.json` (optional; needed for text input): truncation is reset to the model's
//!   maximum sequence length (`sentence_bert_config.json` `max_seq_length`, else
//!   `max_position_embeddings`) and any padding in the file is removed: batches are padded
//!   here, to the longest input, with an attention mask;
//! - sentence-transformers' `modules.json` and pooling config (`1_Pooling/config.json`):
//!   mean or CLS pooling, and L2 normalisation when a `Normalize` module is listed. Without
//!   them: mean pooling, no normalisation.
//!
//! The skill's state loads the embedder lazily, on the first `embed` call, and caches it (see
//! [`crate::Model`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert;
use serde_json::{Map, Value};

use skillgen_checkpoint::{
    Fields, load_tokenizer, read_json, sentence_max_len, sentence_transformers_head,
};
use skillgen_runtime::SkillError;
use skillgen_runtime::request::{Embeddings, Pooling, TextBatch};

use crate::e;

/// Translate `config.json` into candle's [`bert::Config`], field by field.
pub(crate) fn bert_config(
    path: &Path,
    map: &Map<String, Value>,
) -> Result<bert::Config, SkillError> {
    let f = Fields { path, map };
    let hidden_act = match f.str_opt("hidden_act")? {
        Some("gelu") => bert::HiddenAct::Gelu,
        Some("gelu_new" | "gelu_pytorch_tanh" | "gelu_fast") => bert::HiddenAct::GeluApproximate,
        Some("relu") => bert::HiddenAct::Relu,
        Some(other) => {
            return Err(f.err(
                "hidden_act",
                format!("`{other}` is not supported by candle's BERT (gelu, gelu_new, relu)"),
            ));
        }
        None => return Err(f.err("hidden_act", "missing (required)")),
    };
    match f.str_opt("position_embedding_type")? {
        None | Some("absolute") => {}
        Some(other) => {
            return Err(f.err(
                "position_embedding_type",
                format!("`{other}` is not supported by candle's BERT (only `absolute`)"),
            ));
        }
    }
    if f.bool_or_false("is_decoder")? {
        return Err(f.err("is_decoder", "a decoder BERT cannot be used for embeddings"));
    }
    let hidden_size = f.positive("hidden_size")?;
    let num_attention_heads = f.positive("num_attention_heads")?;
    if hidden_size % num_attention_heads != 0 {
        return Err(f.err(
            "num_attention_heads",
            format!("{num_attention_heads} does not divide hidden_size {hidden_size}"),
        ));
    }
    Ok(bert::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_attention_heads,
        intermediate_size: f.positive("intermediate_size")?,
        hidden_act,
        hidden_dropout_prob: 0.0,
        max_position_embeddings: f.positive("max_position_embeddings")?,
        type_vocab_size: f.positive("type_vocab_size")?,
        initializer_range: 0.0,
        layer_norm_eps: f.f64("layer_norm_eps")?,
        // Only the id used for padding here; candle's embedding has no padding index.
        pad_token_id: f.usize_opt("pad_token_id")?.unwrap_or(0),
        position_embedding_type: bert::PositionEmbeddingType::Absolute,
        use_cache: false,
        classifier_dropout: None,
        model_type: Some("bert".to_owned()),
    })
}

/// Every base-model tensor with its expected shape.
fn expected_tensors(c: &bert::Config) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut t = vec![
        (
            "embeddings.word_embeddings.weight".to_owned(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".to_owned(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_owned(),
            vec![c.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".to_owned(), vec![h]),
        ("embeddings.LayerNorm.bias".to_owned(), vec![h]),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let mut lin = |name: &str, out: usize, inp: usize| {
            t.push((format!("{p}.{name}.weight"), vec![out, inp]));
            t.push((format!("{p}.{name}.bias"), vec![out]));
        };
        lin("attention.self.query", h, h);
        lin("attention.self.key", h, h);
        lin("attention.self.value", h, h);
        lin("attention.output.dense", h, h);
        lin("intermediate.dense", i, h);
        lin("output.dense", h, i);
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            t.push((format!("{p}.{ln}.weight"), vec![h]));
            t.push((format!("{p}.{ln}.bias"), vec![h]));
        }
    }
    t
}

/// Check the safetensors file and pick the tensor prefix (`bert.` or none).
pub(crate) fn check_weights(
    path: &Path,
    bytes: &[u8],
    c: &bert::Config,
) -> Result<&'static str, SkillError> {
    let st =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| SkillError::WeightsInvalid {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let first = "embeddings.word_embeddings.weight";
    let prefix = if st.tensor(&format!("bert.{first}")).is_ok() {
        "bert."
    } else if st.tensor(first).is_ok() {
        ""
    } else {
        return Err(SkillError::TensorMissing {
            path: path.to_path_buf(),
            tensor: format!("{first}` (or `bert.{first}"),
        });
    };
    for (name, shape) in expected_tensors(c) {
        let name = format!("{prefix}{name}");
        let view = st.tensor(&name).map_err(|_| SkillError::TensorMissing {
            path: path.to_path_buf(),
            tensor: name.clone(),
        })?;
        use safetensors::Dtype;
        if !matches!(
            view.dtype(),
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ) {
            return Err(SkillError::TensorInvalid {
                path: path.to_path_buf(),
                tensor: name,
                detail: format!("has dtype {:?}, expected a float dtype", view.dtype()),
            });
        }
        if view.shape() != shape.as_slice() {
            return Err(SkillError::TensorInvalid {
                path: path.to_path_buf(),
                tensor: name,
                detail: format!(
                    "has shape {:?}, config.json implies {shape:?}",
                    view.shape()
                ),
            });
        }
    }
    Ok(prefix)
}

/// A loaded BERT sentence-embedding model on one candle device.
pub struct BertEmbedder {
    model: bert::BertModel,
    config: bert::Config,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
    max_len: usize,
    pooling: Pooling,
    normalize: bool,
    device: Device,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("hidden_size", &self.config.hidden_size)
            .field("layers", &self.config.num_hidden_layers)
            .field("tokenizer", &self.tokenizer.is_some())
            .field("max_len", &self.max_len)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("device", &self.device)
            .finish()
    }
}

impl BertEmbedder {
    /// Load `dir` on `device` (typed errors name the file, field or tensor at fault).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(SkillError::ConfigMissing {
                dir: dir.to_path_buf(),
                path: config_path,
            });
        }
        let config = bert_config(&config_path, &read_json(&config_path)?)?;
        let weights_path = dir.join("model.safetensors");
        if !weights_path.is_file() {
            return Err(SkillError::ModelFileMissing {
                path: weights_path,
                what: "the model weights (safetensors)",
            });
        }
        let bytes = std::fs::read(&weights_path).map_err(|e| SkillError::WeightsInvalid {
            path: weights_path.clone(),
            detail: e.to_string(),
        })?;
        let prefix = check_weights(&weights_path, &bytes, &config)?;
        let vb = VarBuilder::from_slice_safetensors(&bytes, DType::F32, device).map_err(|e| {
            SkillError::WeightsInvalid {
                path: weights_path.clone(),
                detail: e.to_string(),
            }
        })?;
        let vb = if prefix.is_empty() { vb } else { vb.pp("bert") };
        let model = bert::BertModel::load(vb, &config).map_err(|e| SkillError::WeightsInvalid {
            path: weights_path.clone(),
            detail: e.to_string(),
        })?;
        let max_len = match sentence_max_len(dir)? {
            Some(n) => n.min(config.max_position_embeddings),
            None => config.max_position_embeddings,
        };
        let (pooling, normalize) = sentence_transformers_head(dir)?;
        let (tokenizer, tokenizer_path) = load_tokenizer(dir, Some(max_len))?;
        Ok(Self {
            model,
            config,
            tokenizer,
            tokenizer_path,
            max_len,
            pooling,
            normalize,
            device: device.clone(),
        })
    }

    /// The pooling this model uses.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether this model normalises by default.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// The maximum number of tokens per input (truncation length for text input).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenise `texts` (with special tokens, truncated to [`Self::max_len`]).
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>, SkillError> {
        let Some(tok) = &self.tokenizer else {
            return Err(SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: "the tokenizer, needed for text input (token-id input works without it)",
            });
        };
        let encodings =
            tok.encode_batch(texts.to_vec(), true)
                .map_err(|e| SkillError::Tokenizer {
                    path: self.tokenizer_path.clone(),
                    detail: e.to_string(),
                })?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    fn check_ids(&self, ids: &[Vec<u32>]) -> Result<(), SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: skillgen_runtime::Capability::Embed,
            detail,
        };
        for (i, row) in ids.iter().enumerate() {
            if row.is_empty() {
                return Err(invalid(format!("input {i} has no token ids")));
            }
            if row.len() > self.config.max_position_embeddings {
                return Err(invalid(format!(
                    "input {i} has {} token ids, more than max_position_embeddings {}",
                    row.len(),
                    self.config.max_position_embeddings
                )));
            }
            if let Some(&id) = row
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(invalid(format!(
                    "input {i} has token id {id}, outside the vocabulary (vocab_size {})",
                    self.config.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// The last hidden state `[batch, max_len, hidden]` for right-padded inputs, and the mask
    /// `[batch, max_len]` (1 = real token). `token_type_ids` default to 0.
    pub fn hidden_states(
        &self,
        ids: &[Vec<u32>],
        token_type_ids: Option<&[Vec<u32>]>,
    ) -> Result<(Tensor, Tensor), SkillError> {
        self.check_ids(ids)?;
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: skillgen_runtime::Capability::Embed,
            detail,
        };
        if let Some(tt) = token_type_ids {
            if tt.len() != ids.len() || tt.iter().zip(ids).any(|(t, i)| t.len() != i.len()) {
                return Err(invalid(
                    "token_type_ids must have the same shape as the token ids".to_owned(),
                ));
            }
            if tt
                .iter()
                .flatten()
                .any(|&t| t as usize >= self.config.type_vocab_size)
            {
                return Err(invalid(format!(
                    "token type id outside type_vocab_size {}",
                    self.config.type_vocab_size
                )));
            }
        }
        let b = ids.len();
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        let pad = self.config.pad_token_id as u32;
        let mut flat_ids = Vec::with_capacity(b * len);
        let mut flat_tt = Vec::with_capacity(b * len);
        let mut flat_mask = Vec::with_capacity(b * len);
        for (r, row) in ids.iter().enumerate() {
            for p in 0..len {
                let real = p < row.len();
                flat_ids.push(if real { row[p] } else { pad });
                flat_tt.push(match token_type_ids {
                    Some(tt) if real => tt[r][p],
                    _ => 0,
                });
                flat_mask.push(u32::from(real));
            }
        }
        let input = Tensor::from_vec(flat_ids, (b, len), &self.device).map_err(e("input ids"))?;
        let tt = Tensor::from_vec(flat_tt, (b, len), &self.device).map_err(e("token types"))?;
        let mask =
            Tensor::from_vec(flat_mask, (b, len), &self.device).map_err(e("attention mask"))?;
        let hidden = self
            .model
            .forward(&input, &tt, Some(&mask))
            .map_err(e("BERT forward"))?;
        Ok((hidden, mask))
    }

    /// Embed a batch: tokenise (text input), run the model, pool, optionally normalise.
    pub fn embed(
        &self,
        input: &TextBatch,
        normalize: Option<bool>,
    ) -> Result<Embeddings, SkillError> {
        let ids = match input {
            TextBatch::Texts(texts) => self.tokenize(texts)?,
            TextBatch::TokenIds(ids) => ids.clone(),
        };
        let (hidden, mask) = self.hidden_states(&ids, None)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)),
            Pooling::Pooler => Err(candle_core::Error::Msg(
                "this model has no pooled output of its own (mean or cls pooling)".into(),
            )),
            Pooling::Mean => (|| {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let sum = hidden.broadcast_mul(&m)?.sum(1)?;
                let count = m.sum(1)?;
                sum.broadcast_div(&count)
            })(),
        }
        .map_err(e("pooling"))?;
        let normalized = normalize.unwrap_or(self.normalize);
        let pooled = if normalized {
            (|| {
                let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
                // Like torch.nn.functional.normalize: divide by max(norm, 1e-12).
                pooled.broadcast_div(&norm.maximum(1e-12)?)
            })()
            .map_err(e("normalisation"))?
        } else {
            pooled
        };
        let vectors = pooled.to_vec2::<f32>().map_err(e("output"))?;
        Ok(Embeddings {
            dim: self.config.hidden_size,
            vectors,
            pooling: self.pooling,
            normalized,
            token_ids: ids,
        })
    }
}

/// The last hidden state of the BERT base model in `dir` on the CPU, flattened row-major
/// `[batch, len, hidden]`, for right-padded `ids` with `attention_mask` (parity tests).
#[doc(hidden)]
pub fn last_hidden_state(
    dir: &Path,
    ids: &[Vec<u32>],
    token_type_ids: &[Vec<u32>],
    attention_mask: &[Vec<u32>],
) -> Result<(Vec<f32>, Vec<usize>), SkillError> {
    let model = BertEmbedder::load(dir, &Device::Cpu)?;
    let b = ids.len();
    let len = ids.first().map_or(0, Vec::len);
    if ids
        .iter()
        .chain(token_type_ids)
        .chain(attention_mask)
        .any(|r| r.len() != len)
        || token_type_ids.len() != b
        || attention_mask.len() != b
    {
        return Err(SkillError::InvalidRequest {
            capability: skillgen_runtime::Capability::Embed,
            detail: "ids, token types and mask must all be [batch, len]".to_owned(),
        });
    }
    model.check_ids(ids)?;
    let flat = |rows: &[Vec<u32>]| rows.iter().flatten().copied().collect::<Vec<u32>>();
    let dev = &model.device;
    let input = Tensor::from_vec(flat(ids), (b, len), dev).map_err(e("input ids"))?;
    let tt = Tensor::from_vec(flat(token_type_ids), (b, len), dev).map_err(e("token types"))?;
    let mask = Tensor::from_vec(flat(attention_mask), (b, len), dev).map_err(e("mask"))?;
    let hidden = model
        .model
        .forward(&input, &tt, Some(&mask))
        .map_err(e("BERT forward"))?;
    let shape = hidden.dims().to_vec();
    let data = hidden
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(e("output"))?;
    Ok((data, shape))
}
