//! Native T5-like models (see [`crate`]): t5, mt5 and umt5 on one parametric implementation
//! ([`model`]).
//!
//! - `embed` (text-encoding / base-model): the encoder's last hidden state, pooled as the
//!   sentence-transformers config says (default mean), optionally normalised; text is
//!   truncated at 512 tokens (T5's tokenizer default; T5's relative positions have no hard
//!   limit). Each input runs on its own, unpadded (T5's relative position bias does not depend
//!   on padding, so this equals transformers' masked batch at the real positions).
//! - `generate` (seq-to-seq-causal-lm): greedy decoding only (temperature 0; sampling is a
//!   typed error) with a KV cache, starting with `decoder_start_token_id`, stopping at
//!   `eos_token_id`. Needs `tokenizer.json` for text.
//! - `config.json` is translated field by field; `feed_forward_proj` must be `relu`, `gelu`,
//!   `gated-gelu` or `gated-silu`. Every tensor is taken by name and shape; the token
//!   embedding is `shared.weight` (transformers v5 does not save the tied copies).

use std::path::{Path, PathBuf};

use candle_core::{D, Device, Tensor};
use skillgen_checkpoint::{Fields, config_json, load_tokenizer, sentence_transformers_head};
use skillgen_runtime::request::{
    Call, Embeddings, FinishReason, GenerateRequest, Generation, Output, Pooling, Prompt, TextBatch,
};
use skillgen_runtime::{Capability, Model, SkillError, Target, Task};

use crate::e;
use crate::weights::Weights;

pub(crate) mod model;

pub use model::MODEL_TYPES;
use model::{Part, T5Model};

crate::architecture_struct!(T5, "The `t5` implementation: the T5-like encoder-decoder.");

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    let model_type = state.info().model_type;
    match call {
        Call::Embed(req) => {
            let model = state
                .cached(&format!("candle/{model_type}/t5-encoder/{target}"), || {
                    T5Encoder::load_as(state.dir(), model_type, &crate::device(target)?)
                })?;
            model.embed(&req.input, req.normalize).map(Output::Embed)
        }
        Call::Generate(req) => {
            let model = state
                .cached(&format!("candle/{model_type}/t5-seq2seq/{target}"), || {
                    T5Generator::load_as(state.dir(), model_type, &crate::device(target)?)
                })?;
            model.generate(&req).map(Output::Generate)
        }
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

/// `config.json`'s `model_type` (for the loaders that take only a directory).
fn config_model_type(dir: &Path) -> Result<String, SkillError> {
    let (path, map) = config_json(dir)?;
    let f = Fields {
        path: &path,
        map: &map,
    };
    Ok(f.str_opt("model_type")?
        .ok_or_else(|| f.err("model_type", "missing (required)"))?
        .to_owned())
}

fn load_model(
    dir: &Path,
    model_type: &str,
    device: &Device,
    part: Part,
) -> Result<T5Model, SkillError> {
    let (config_path, map) = config_json(dir)?;
    let f = Fields {
        path: &config_path,
        map: &map,
    };
    let spec = model::translate(model_type, &f)?;
    let mut w = Weights::read(dir, device)?;
    T5Model::load(spec, &mut w, part)
}

fn check_ids(model: &T5Model, ids: &[u32], capability: Capability) -> Result<(), SkillError> {
    let invalid = |detail: String| SkillError::InvalidRequest { capability, detail };
    if ids.is_empty() {
        return Err(invalid("an input has no token ids".to_owned()));
    }
    let vocab = model.spec().vocab;
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(invalid(format!(
            "token id {id} is outside the vocabulary (vocab_size {vocab})"
        )));
    }
    Ok(())
}

/// A loaded T5 encoder on one candle device.
pub struct T5Encoder {
    model: T5Model,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
    pooling: Pooling,
    normalize: bool,
}

impl std::fmt::Debug for T5Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Encoder")
            .field("spec", self.model.spec())
            .finish_non_exhaustive()
    }
}

impl T5Encoder {
    /// Load the encoder of the checkpoint in `dir` (its `config.json` `model_type`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        Self::load_as(dir, &config_model_type(dir)?, device)
    }

    /// Load the encoder of the `model_type` checkpoint in `dir` on `device`.
    pub fn load_as(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let model = load_model(dir, model_type, device, Part::Encoder)?;
        let (pooling, normalize) = sentence_transformers_head(dir)?;
        let (tokenizer, tokenizer_path) = load_tokenizer(dir, Some(512))?;
        Ok(Self {
            model,
            tokenizer,
            tokenizer_path,
            pooling,
            normalize,
        })
    }

    /// The encoder output `[1, len, d_model]` for one unpadded input.
    pub fn encode(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        check_ids(&self.model, ids, Capability::Embed)?;
        self.model.encode(ids)
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
                Pooling::Pooler => Err(candle_core::Error::Msg(
                    "T5 has no pooled output of its own (mean or cls pooling)".into(),
                )),
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
            dim: self.model.spec().d,
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

/// Parity entry point: T5 decoder logits (flat, shape `[1, len, vocab]`) on the CPU for one
/// unpadded input and teacher-forced `decoder_ids`.
#[doc(hidden)]
pub fn t5_decoder_logits(
    dir: &Path,
    ids: &[u32],
    decoder_ids: &[u32],
) -> Result<(Vec<f32>, Vec<usize>), SkillError> {
    let g = T5Generator::load(dir, &Device::Cpu)?;
    check_ids(&g.model, ids, Capability::Generate)?;
    check_ids(&g.model, decoder_ids, Capability::Generate)?;
    let enc = g.model.encode(ids)?;
    let mut s = g.model.session(&enc)?;
    let logits = g.model.step(&mut s, decoder_ids)?;
    let logits = logits.unsqueeze(0).map_err(e("logits"))?;
    crate::encoder::text::flat(&logits)
}

/// T5 greedy generation.
pub struct T5Generator {
    model: T5Model,
    start: u32,
    eos: u32,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
}

impl std::fmt::Debug for T5Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Generator")
            .field("spec", self.model.spec())
            .field("start", &self.start)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl T5Generator {
    /// Load the `*ForConditionalGeneration` checkpoint in `dir` (its `config.json`
    /// `model_type`) on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        Self::load_as(dir, &config_model_type(dir)?, device)
    }

    /// Load the `model_type` checkpoint in `dir` on `device`.
    pub fn load_as(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let model = load_model(dir, model_type, device, Part::Full)?;
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let id = |field: &str, default: usize| -> Result<u32, SkillError> {
            let v = f.usize_opt(field)?.unwrap_or(default);
            u32::try_from(v).map_err(|_| f.err(field, "does not fit in u32"))
        };
        // transformers' `generate()`: `decoder_start_token_id`, else `bos_token_id`, from the
        // generation config, then the model config.
        let gen_path = dir.join("generation_config.json");
        let generation: serde_json::Value = match std::fs::read_to_string(&gen_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                f.err(
                    "generation_config.json",
                    format!("{}: {e}", gen_path.display()),
                )
            })?,
            Err(_) => serde_json::Value::Null,
        };
        let start = ["decoder_start_token_id", "bos_token_id"]
            .iter()
            .find_map(|k| {
                generation
                    .get(k)
                    .and_then(serde_json::Value::as_u64)
                    .or_else(|| f.get(k).and_then(serde_json::Value::as_u64))
            })
            .ok_or_else(|| {
                f.err(
                    "decoder_start_token_id",
                    "missing, and no bos_token_id either",
                )
            })?;
        let start = u32::try_from(start)
            .map_err(|_| f.err("decoder_start_token_id", "does not fit in u32"))?;
        let (tokenizer, tokenizer_path) = load_tokenizer(dir, None)?;
        Ok(Self {
            start,
            eos: id("eos_token_id", 1)?,
            model,
            tokenizer,
            tokenizer_path,
        })
    }

    /// Greedy decoding with the KV cache: `decoder_start_token_id` then up to `max_new`
    /// argmax tokens, stopping after `eos_token_id`. Returns the generated ids (without the
    /// start token).
    pub fn greedy_ids(&self, ids: &[u32], max_new: usize) -> Result<Vec<u32>, SkillError> {
        self.greedy(ids, max_new, true)
    }

    /// Greedy decoding; `stop_at_eos`: end after `eos_token_id`.
    pub fn greedy(
        &self,
        ids: &[u32],
        max_new: usize,
        stop_at_eos: bool,
    ) -> Result<Vec<u32>, SkillError> {
        check_ids(&self.model, ids, Capability::Generate)?;
        let enc = self.model.encode(ids)?;
        let mut s = self.model.session(&enc)?;
        let mut out = Vec::with_capacity(max_new);
        let mut next = self.start;
        for _ in 0..max_new {
            let logits = self.model.step(&mut s, &[next])?;
            let n = logits.dim(0).map_err(e("logits"))?;
            next = logits
                .get(n - 1)
                .and_then(|l| l.argmax(D::Minus1))
                .and_then(|t| t.to_scalar::<u32>())
                .map_err(e("argmax"))?;
            out.push(next);
            if stop_at_eos && next == self.eos {
                break;
            }
        }
        Ok(out)
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
            .tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: "the tokenizer, needed to turn generated tokens into text",
            })?;
        let tok_err = |err: tokenizers::Error| SkillError::Tokenizer {
            path: self.tokenizer_path.clone(),
            detail: err.to_string(),
        };
        let ids = match &req.prompt {
            Prompt::TokenIds(ids) => ids.clone(),
            Prompt::Text(t) => tok
                .encode(t.as_str(), true)
                .map_err(tok_err)?
                .get_ids()
                .to_vec(),
            Prompt::Messages(_) => {
                return Err(SkillError::InvalidRequest {
                    capability: skillgen_runtime::Capability::Generate,
                    detail: "an encoder-decoder has no chat template: give a text prompt".into(),
                });
            }
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

/// Parity entry point: the `model_type` generator of `dir` on the CPU.
#[doc(hidden)]
pub fn t5_generator(dir: &Path, model_type: &str) -> Result<T5Generator, SkillError> {
    T5Generator::load_as(dir, model_type, &Device::Cpu)
}
