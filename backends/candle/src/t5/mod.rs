//! Native seq2seq (see [`crate`]): the T5 encoder on candle
//! (`candle_transformers::models::t5::T5EncoderModel`) for `embed` (the text-encoding task).
//!
//! - `config.json` is translated field by field (typed errors name the field);
//!   `feed_forward_proj` must be `relu`, `gelu`, `gated-gelu` or `gated-silu`.
//! - Every encoder tensor is checked by name, dtype and shape; the token embedding is
//!   `shared.weight` (transformers v5 does not save the tied `encoder.embed_tokens.weight`).
//! - candle's T5 encoder takes no attention mask, so each input runs on its own, unpadded
//!   (T5's relative position bias does not depend on padding, so this equals transformers'
//!   masked batch at the real positions). Pooling: the sentence-transformers config if present,
//!   else mean.
//! - `generate` (seq-to-seq-causal-lm): greedy decoding only (temperature 0; sampling is a
//!   typed error) with our own decoder ([`decoder`]): candle 0.11.1's T5 decoder does not match
//!   transformers v5 (it scales tied decoder output by √d_model where v5's
//!   `scale_decoder_outputs` uses 1/√d_model, and its relative-position buckets only handle the
//!   bidirectional encoder case). Full forward per step (no KV cache). Needs `tokenizer.json`.

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::t5;
use serde_json::{Map, Value};
use skillgen_runtime::{Capability, Task};

use crate::e;
use skillgen_checkpoint::{
    Fields, TensorCheck, config_json, load_tokenizer, sentence_transformers_head, weights_bytes,
};
use skillgen_runtime::Model;
use skillgen_runtime::request::{
    Call, Embeddings, FinishReason, GenerateRequest, Generation, Output, Pooling, Prompt, TextBatch,
};
use skillgen_runtime::{SkillError, Target};

crate::architecture_struct!(T5, "The `t5` implementation.");

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::Embed(req) => {
            let model = state.cached(&format!("candle/t5/encoder/{target}"), || {
                T5Encoder::load(state.dir(), &crate::device(target)?)
            })?;
            model.embed(&req.input, req.normalize).map(Output::Embed)
        }
        Call::Generate(req) => {
            let model = state.cached(&format!("candle/t5/seq2seq/{target}"), || {
                T5Generator::load(state.dir(), &crate::device(target)?)
            })?;
            model.generate(&req).map(Output::Generate)
        }
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

fn t5_config(path: &Path, map: &Map<String, Value>) -> Result<t5::Config, SkillError> {
    let f = Fields { path, map };
    let ff = f.str_opt("feed_forward_proj")?.unwrap_or("relu");
    if !matches!(ff, "relu" | "gelu" | "gated-gelu" | "gated-silu") {
        return Err(f.err(
            "feed_forward_proj",
            format!("`{ff}` is not supported (relu, gelu, gated-gelu, gated-silu)"),
        ));
    }
    let buckets = f.positive("relative_attention_num_buckets")?;
    let c = serde_json::json!({
        "vocab_size": f.positive("vocab_size")?,
        "d_model": f.positive("d_model")?,
        "d_kv": f.positive("d_kv")?,
        "d_ff": f.positive("d_ff")?,
        "num_layers": f.positive("num_layers")?,
        "num_decoder_layers": f.usize_opt("num_decoder_layers")?,
        "num_heads": f.positive("num_heads")?,
        "relative_attention_num_buckets": buckets,
        "relative_attention_max_distance":
            f.usize_opt("relative_attention_max_distance")?.unwrap_or(128),
        "dropout_rate": 0.0,
        "layer_norm_epsilon": f.f64("layer_norm_epsilon")?,
        "initializer_factor": 1.0,
        "feed_forward_proj": ff,
        "tie_word_embeddings": true,
        "is_decoder": false,
        "is_encoder_decoder": true,
        "use_cache": false,
        "pad_token_id": f.usize_opt("pad_token_id")?.unwrap_or(0),
        "eos_token_id": f.usize_opt("eos_token_id")?.unwrap_or(1),
        "decoder_start_token_id": f.usize_opt("decoder_start_token_id")?,
    });
    serde_json::from_value(c).map_err(|err| f.err("(translated)", err.to_string()))
}

fn encoder_tensors(c: &t5::Config) -> Vec<(String, Vec<usize>)> {
    let (d, inner) = (c.d_model, c.num_heads * c.d_kv);
    let mut t = vec![
        ("shared.weight".to_owned(), vec![c.vocab_size, d]),
        ("encoder.final_layer_norm.weight".to_owned(), vec![d]),
        (
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".to_owned(),
            vec![c.relative_attention_num_buckets, c.num_heads],
        ),
    ];
    for l in 0..c.num_layers {
        let p = format!("encoder.block.{l}.layer");
        for n in ["q", "k", "v"] {
            t.push((format!("{p}.0.SelfAttention.{n}.weight"), vec![inner, d]));
        }
        t.push((format!("{p}.0.SelfAttention.o.weight"), vec![d, inner]));
        t.push((format!("{p}.0.layer_norm.weight"), vec![d]));
        t.push((format!("{p}.1.layer_norm.weight"), vec![d]));
        if c.feed_forward_proj.gated {
            t.push((format!("{p}.1.DenseReluDense.wi_0.weight"), vec![c.d_ff, d]));
            t.push((format!("{p}.1.DenseReluDense.wi_1.weight"), vec![c.d_ff, d]));
        } else {
            t.push((format!("{p}.1.DenseReluDense.wi.weight"), vec![c.d_ff, d]));
        }
        t.push((format!("{p}.1.DenseReluDense.wo.weight"), vec![d, c.d_ff]));
    }
    t
}

/// A loaded T5 encoder on one candle device (candle's model is `&mut` to run, hence the lock).
pub struct T5Encoder {
    model: Mutex<t5::T5EncoderModel>,
    config: t5::Config,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: std::path::PathBuf,
    pooling: Pooling,
    normalize: bool,
    device: Device,
}

impl std::fmt::Debug for T5Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Encoder")
            .field("d_model", &self.config.d_model)
            .field("layers", &self.config.num_layers)
            .field("device", &self.device)
            .finish()
    }
}

impl T5Encoder {
    /// Load the T5 encoder of the checkpoint in `dir` on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let config = t5_config(&config_path, &map)?;
        let (weights_path, bytes) = weights_bytes(dir)?;
        TensorCheck::new(&weights_path, &bytes)?.require_all(&encoder_tensors(&config))?;
        let load_err = |err: candle_core::Error| SkillError::WeightsInvalid {
            path: weights_path.clone(),
            detail: err.to_string(),
        };
        let vb =
            VarBuilder::from_slice_safetensors(&bytes, DType::F32, device).map_err(load_err)?;
        let model = t5::T5EncoderModel::load(vb, &config).map_err(load_err)?;
        let (pooling, normalize) = sentence_transformers_head(dir)?;
        // T5 has relative positions: no hard length limit; truncate text at 512 like T5's
        // tokenizer default.
        let (tokenizer, tokenizer_path) = load_tokenizer(dir, Some(512))?;
        Ok(Self {
            model: Mutex::new(model),
            config,
            tokenizer,
            tokenizer_path,
            pooling,
            normalize,
            device: device.clone(),
        })
    }

    /// The encoder output `[1, len, d_model]` for one unpadded input.
    pub fn encode(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::Embed,
            detail,
        };
        if ids.is_empty() {
            return Err(invalid("an input has no token ids".to_owned()));
        }
        if let Some(&id) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(invalid(format!(
                "token id {id} is outside the vocabulary (vocab_size {})",
                self.config.vocab_size
            )));
        }
        let t = Tensor::new(ids, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(e("input ids"))?;
        let mut m = self.model.lock().map_err(|_| SkillError::Backend {
            backend: skillgen_runtime::BackendKind::Candle,
            detail: "the T5 model lock is poisoned (an earlier call panicked)".to_owned(),
        })?;
        m.forward(&t).map_err(e("T5 encoder"))
    }

    /// `embed`: tokenise (text input), encode each input, pool, optionally normalise.
    pub fn embed(
        &self,
        input: &TextBatch,
        normalize: Option<bool>,
    ) -> Result<Embeddings, SkillError> {
        let ids = match input {
            TextBatch::Texts(texts) => {
                let tok = self
                    .tokenizer
                    .as_ref()
                    .ok_or_else(|| SkillError::ModelFileMissing {
                        path: self.tokenizer_path.clone(),
                        what: "the tokenizer, needed for text input",
                    })?;
                tok.encode_batch(texts.clone(), true)
                    .map_err(|err| SkillError::Tokenizer {
                        path: self.tokenizer_path.clone(),
                        detail: err.to_string(),
                    })?
                    .iter()
                    .map(|e| e.get_ids().to_vec())
                    .collect()
            }
            TextBatch::TokenIds(ids) => ids.clone(),
        };
        let normalized = normalize.unwrap_or(self.normalize);
        let mut vectors = Vec::with_capacity(ids.len());
        for row in &ids {
            let h = self.encode(row)?;
            let v = match self.pooling {
                Pooling::Mean => h.mean(1),
                Pooling::Cls => h.narrow(1, 0, 1).and_then(|t| t.squeeze(1)),
            }
            .and_then(|v| v.squeeze(0))
            .map_err(e("pooling"))?;
            let v = if normalized {
                (|| {
                    let n = v.sqr()?.sum_all()?.sqrt()?.maximum(1e-12)?;
                    v.broadcast_div(&n)
                })()
                .map_err(e("normalisation"))?
            } else {
                v
            };
            vectors.push(v.to_vec1::<f32>().map_err(e("output"))?);
        }
        Ok(Embeddings {
            dim: self.config.d_model,
            vectors,
            pooling: self.pooling,
            normalized,
            token_ids: ids,
        })
    }
}

/// Parity entry point: the T5 encoder output (flat, shape `[1, len, d_model]`) for one unpadded
/// input on the CPU.
#[doc(hidden)]
pub fn t5_encoder_output(dir: &Path, ids: &[u32]) -> Result<(Vec<f32>, Vec<usize>), SkillError> {
    let model = T5Encoder::load(dir, &Device::Cpu)?;
    crate::encoder::text::flat(&model.encode(ids)?)
}

mod decoder;

/// The decoder settings of a T5 `config.json` (v5: `scale_decoder_outputs`; older configs scale
/// when `tie_word_embeddings`, the default).
fn decoder_config(
    path: &Path,
    map: &Map<String, Value>,
    c: &t5::Config,
) -> Result<decoder::Config, SkillError> {
    let f = Fields { path, map };
    let flag = |field: &str, default: bool| match f.get(field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(f.err(field, format!("expected a boolean, found {v}"))),
    };
    let tied = flag("tie_word_embeddings", true)?;
    let scale_outputs = flag("scale_decoder_outputs", tied)?;
    if !tied {
        return Err(f.err(
            "tie_word_embeddings",
            "false (a separate lm_head) is not supported yet",
        ));
    }
    let ff = f.str_opt("feed_forward_proj")?.unwrap_or("relu");
    let gated = ff.starts_with("gated-");
    let act_name = match f.str_opt("dense_act_fn")? {
        Some(a) => a,
        None => ff.trim_start_matches("gated-"),
    };
    let act = match act_name {
        "relu" => candle_nn::Activation::Relu,
        "gelu" => candle_nn::Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => candle_nn::Activation::NewGelu,
        "silu" | "swish" => candle_nn::Activation::Silu,
        other => {
            return Err(f.err(
                "dense_act_fn",
                format!("`{other}` is not supported (relu, gelu, gelu_new, silu)"),
            ));
        }
    };
    Ok(decoder::Config {
        vocab: c.vocab_size,
        d_model: c.d_model,
        d_kv: c.d_kv,
        d_ff: c.d_ff,
        heads: c.num_heads,
        layers: c.num_decoder_layers.unwrap_or(c.num_layers),
        buckets: c.relative_attention_num_buckets,
        max_distance: c.relative_attention_max_distance,
        eps: c.layer_norm_epsilon,
        gated,
        act,
        scale_outputs,
    })
}

fn decoder_tensors(c: &decoder::Config) -> Vec<(String, Vec<usize>)> {
    let (d, inner) = (c.d_model, c.heads * c.d_kv);
    let mut t = vec![
        ("decoder.final_layer_norm.weight".to_owned(), vec![d]),
        (
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight".to_owned(),
            vec![c.buckets, c.heads],
        ),
    ];
    for l in 0..c.layers {
        let p = format!("decoder.block.{l}.layer");
        for a in ["0.SelfAttention", "1.EncDecAttention"] {
            for n in ["q", "k", "v"] {
                t.push((format!("{p}.{a}.{n}.weight"), vec![inner, d]));
            }
            t.push((format!("{p}.{a}.o.weight"), vec![d, inner]));
        }
        for n in 0..3 {
            t.push((format!("{p}.{n}.layer_norm.weight"), vec![d]));
        }
        let wis: &[&str] = if c.gated { &["wi_0", "wi_1"] } else { &["wi"] };
        for wi in wis {
            t.push((format!("{p}.2.DenseReluDense.{wi}.weight"), vec![c.d_ff, d]));
        }
        t.push((format!("{p}.2.DenseReluDense.wo.weight"), vec![d, c.d_ff]));
    }
    t
}

/// Parity entry point: T5 decoder logits (flat, shape `[1, len, vocab]`) on the CPU for one
/// unpadded input and teacher-forced `decoder_ids`, with our own decoder (candle's encoder).
#[doc(hidden)]
pub fn t5_decoder_logits(
    dir: &Path,
    ids: &[u32],
    decoder_ids: &[u32],
) -> Result<(Vec<f32>, Vec<usize>), SkillError> {
    let encoder = T5Encoder::load(dir, &Device::Cpu)?;
    let (config_path, map) = config_json(dir)?;
    let dc = decoder_config(&config_path, &map, &encoder.config)?;
    if decoder_ids.is_empty()
        || decoder_ids
            .iter()
            .any(|&i| i as usize >= encoder.config.vocab_size)
    {
        return Err(SkillError::InvalidRequest {
            capability: Capability::Generate,
            detail: "decoder ids must be non-empty and inside the vocabulary".to_owned(),
        });
    }
    let (weights_path, bytes) = weights_bytes(dir)?;
    TensorCheck::new(&weights_path, &bytes)?.require_all(&decoder_tensors(&dc))?;
    let load_err = |err: candle_core::Error| SkillError::WeightsInvalid {
        path: weights_path.clone(),
        detail: err.to_string(),
    };
    let vb =
        VarBuilder::from_slice_safetensors(&bytes, DType::F32, &Device::Cpu).map_err(load_err)?;
    let dec = decoder::T5Decoder::load(&vb, dc).map_err(load_err)?;
    let enc = encoder.encode(ids)?;
    let t = Tensor::new(decoder_ids, &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .map_err(e("decoder ids"))?;
    let logits = dec.logits(&t, &enc).map_err(e("T5 decoder"))?;
    crate::encoder::text::flat(&logits)
}

/// T5 greedy generation: candle's encoder and our decoder.
pub struct T5Generator {
    encoder: T5Encoder,
    decoder: decoder::T5Decoder,
    start: u32,
    eos: u32,
}

impl std::fmt::Debug for T5Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Generator")
            .field("encoder", &self.encoder)
            .finish()
    }
}

impl T5Generator {
    /// Load the `T5ForConditionalGeneration` checkpoint in `dir` on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        let encoder = T5Encoder::load(dir, device)?;
        let (config_path, map) = config_json(dir)?;
        let dc = decoder_config(&config_path, &map, &encoder.config)?;
        let (weights_path, bytes) = weights_bytes(dir)?;
        TensorCheck::new(&weights_path, &bytes)?.require_all(&decoder_tensors(&dc))?;
        let load_err = |err: candle_core::Error| SkillError::WeightsInvalid {
            path: weights_path.clone(),
            detail: err.to_string(),
        };
        let vb =
            VarBuilder::from_slice_safetensors(&bytes, DType::F32, device).map_err(load_err)?;
        let decoder = decoder::T5Decoder::load(&vb, dc).map_err(load_err)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let id = |field: &str, default: usize| -> Result<u32, SkillError> {
            let v = f.usize_opt(field)?.unwrap_or(default);
            u32::try_from(v).map_err(|_| f.err(field, "does not fit in u32"))
        };
        Ok(Self {
            start: id("decoder_start_token_id", 0)?,
            eos: id("eos_token_id", 1)?,
            encoder,
            decoder,
        })
    }

    /// Greedy decoding: `decoder_start_token_id` then up to `max_new` argmax tokens, stopping
    /// after `eos_token_id`. Returns the generated ids (without the start token).
    pub fn greedy_ids(&self, ids: &[u32], max_new: usize) -> Result<Vec<u32>, SkillError> {
        let enc = self.encoder.encode(ids)?;
        let dev = &self.encoder.device;
        let mut out = vec![self.start];
        for _ in 0..max_new {
            let t = Tensor::new(out.as_slice(), dev)
                .and_then(|t| t.unsqueeze(0))
                .map_err(e("decoder ids"))?;
            let last = self
                .decoder
                .logits(&t, &enc)
                .and_then(|l| l.narrow(1, out.len() - 1, 1))
                .and_then(|l| l.flatten_all())
                .and_then(|l| l.argmax(0))
                .and_then(|l| l.to_scalar::<u32>())
                .map_err(e("T5 decoder"))?;
            out.push(last);
            if last == self.eos {
                break;
            }
        }
        Ok(out.split_off(1))
    }

    /// `generate` (greedy only).
    pub fn generate(&self, req: &GenerateRequest) -> Result<Generation, SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::Generate,
            detail,
        };
        if req.temperature != 0.0 {
            return Err(invalid(format!(
                "temperature {}: only greedy decoding (temperature 0) is implemented for T5 on candle",
                req.temperature
            )));
        }
        let tok = self
            .encoder
            .tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.encoder.tokenizer_path.clone(),
                what: "the tokenizer, needed to turn generated tokens into text",
            })?;
        let tok_err = |err: tokenizers::Error| SkillError::Tokenizer {
            path: self.encoder.tokenizer_path.clone(),
            detail: err.to_string(),
        };
        let ids = match &req.prompt {
            Prompt::TokenIds(ids) => ids.clone(),
            Prompt::Text(t) => tok
                .encode(t.as_str(), true)
                .map_err(tok_err)?
                .get_ids()
                .to_vec(),
        };
        let mut token_ids = self.greedy_ids(&ids, req.max_tokens)?;
        let mut finish = FinishReason::Length;
        if token_ids.last() == Some(&self.eos) {
            token_ids.pop();
            finish = FinishReason::Eos;
        }
        let mut text = tok.decode(&token_ids, true).map_err(tok_err)?;
        if let Some(at) = req.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(at);
            finish = FinishReason::Stop;
        }
        Ok(Generation {
            text,
            token_ids,
            finish_reason: finish,
        })
    }
}
