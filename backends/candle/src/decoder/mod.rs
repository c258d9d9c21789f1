//! Native decoders (see [`crate`]): causal text generation with candle-transformers for
//! `llama`, `qwen2`, `mistral`, `phi3`, `gemma` and `gpt_bigcode` (task `causal-lm`, the
//! `generate` capability).
//!
//! Loading ([`Decoder::load`]) reads a Hugging Face model directory:
//! - `config.json`, translated field by field into candle's config of the model type
//!   ([`config`]): `rope_theta` from `rope_parameters` (transformers v5) or the top level,
//!   never candle's default; `sliding_window: null`; explicit `head_dim`; gpt_bigcode's config
//!   built from `n_embd`/`n_layer`/...; unsupported values (rope scaling other than llama3,
//!   biases candle lacks, ...) are [`SkillError::ConfigField`] errors;
//! - `model.safetensors` or the shards of `model.safetensors.index.json`, every tensor checked
//!   against what candle asks for ([`weights`]); a tied `lm_head.weight` absent from the files
//!   is served by the embedding matrix;
//! - `generation_config.json` (else `config.json`) `eos_token_id`, an id or a list;
//! - `tokenizer.json`, optional: needed only for text prompts, text output and stop strings.
//!
//! The weights are loaded once per skill state and target and cached
//! ([`Model::cached`]); every request gets its own model state (a clone of the loaded
//! model, whose tensors are shared, with an empty KV cache), so concurrent requests never share
//! a KV cache. Generation is a [`TokenStream`] (an iterator of [`GeneratedToken`]s);
//! `generate` collects it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::{
    bigcode, gemma, gemma2, helium, llama, mistral, mixtral, olmo, olmo2, phi, phi3, qwen2,
    qwen2_moe, qwen3, qwen3_moe, stable_lm, starcoder2,
};
use skillgen_runtime::{Capability, Task};

use skillgen_runtime::BackendKind;
use skillgen_runtime::Model;
use skillgen_runtime::request::{Call, FinishReason, GenerateRequest, Output, Prompt};
use skillgen_runtime::stream::{SourceStep, TokenSource, TokenStream};
use skillgen_runtime::{SkillError, Target};

mod config;
mod weights;

use config::Fields;
use weights::Weights;

/// The `decoder` implementation: every causal LM the config-driven decoder loads.
#[derive(Debug, Clone, Copy)]
pub struct Decoders;

impl crate::Architecture for Decoders {
    fn run(
        &self,
        state: &Model,
        target: Target,
        task: Task,
        call: Call,
    ) -> Result<Output, SkillError> {
        run(state, target, task, call)
    }

    fn stream(
        &self,
        state: &Model,
        target: Target,
        _task: Task,
        request: GenerateRequest,
    ) -> Result<TokenStream, SkillError> {
        stream(state, target, request)
    }
}

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::Generate(req) => stream(state, target, req)?
            .collect_generation()
            .map(Output::Generate),
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

/// The cached decoder of `state` on `target` (loaded on first use).
pub(crate) fn decoder(state: &Model, target: Target) -> Result<Arc<Decoder>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(&format!("candle/{model_type}/{target}"), || {
        Decoder::load(model_type, state.dir(), &crate::device(target)?)
    })
}

/// The last-position logits of one forward pass over `ids` with the decoder of `state` on
/// `target` (loads and caches it). For the parity tests.
pub fn decoder_prefill_logits(
    state: &skillgen_runtime::SkillState,
    target: Target,
    ids: &[u32],
) -> Result<Vec<f32>, SkillError> {
    decoder(state.model(), target)?.prefill_logits(ids)
}

/// The logits at every position of `ids`, fed one token at a time through the KV cache of the
/// decoder of `state` on `target`. For the parity tests.
pub fn decoder_incremental_logits(
    state: &skillgen_runtime::SkillState,
    target: Target,
    ids: &[u32],
) -> Result<Vec<Vec<f32>>, SkillError> {
    decoder(state.model(), target)?.incremental_logits(ids)
}

/// Start generating `req` with the cached decoder of `state` on `target`.
pub(crate) fn stream(
    state: &Model,
    target: Target,
    req: GenerateRequest,
) -> Result<TokenStream, SkillError> {
    decoder(state, target)?.stream(req)
}

fn candle_err(context: &str) -> impl Fn(candle_core::Error) -> SkillError + '_ {
    move |e| SkillError::Backend {
        backend: BackendKind::Candle,
        detail: format!("{context}: {e}"),
    }
}

fn invalid_request(detail: impl Into<String>) -> SkillError {
    SkillError::InvalidRequest {
        capability: Capability::Generate,
        detail: detail.into(),
    }
}

/// A loaded model, ready to be cloned into a per-request session.
#[derive(Clone)]
enum Proto {
    /// The model and an empty KV cache to clone.
    Llama(llama::Llama, Box<llama::Cache>),
    Qwen2(qwen2::ModelForCausalLM),
    Mistral(mistral::Model),
    Phi3(phi3::Model),
    Gemma(gemma::Model),
    Qwen3(qwen3::ModelForCausalLM),
    Olmo2(olmo2::Model),
    Starcoder2(starcoder2::Model),
    Gemma2(gemma2::Model),
    Olmo(olmo::Model),
    Phi(phi::Model),
    Mixtral(mixtral::Model),
    Qwen2Moe(qwen2_moe::Model),
    Qwen3Moe(qwen3_moe::ModelForCausalLM),
    Helium(helium::Model),
    SmolLm3(candle_transformers::models::smol::smollm3::ModelForCausalLM),
    /// candle's stable_lm `Model` is not `Clone`: rebuilt per request from the shared tensors.
    StableLm(Box<stable_lm::Config>),
    /// candle's `GPTBigCode` is not `Clone`: rebuilt per request from the shared tensors.
    BigCode(config::BigCode),
}

// A stream may move to another thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<TokenStream>();
};

/// A decoder model loaded from a model directory on one candle device.
pub struct Decoder {
    model_type: String,
    proto: Proto,
    weights: Weights,
    dtype: DType,
    device: Device,
    vocab_size: usize,
    max_positions: usize,
    eos: Vec<u32>,
    tokenizer: Option<Arc<tokenizers::Tokenizer>>,
    tokenizer_path: PathBuf,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("model_type", &self.model_type)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .field("vocab_size", &self.vocab_size)
            .field("max_positions", &self.max_positions)
            .field("eos", &self.eos)
            .field("tokenizer", &self.tokenizer.is_some())
            .finish()
    }
}

/// The dtype to run in: f32 on the CPU; the file's half type on accelerators.
fn pick_dtype(weights: &Weights, embed: &str, device: &Device) -> DType {
    if device.is_cpu() {
        return DType::F32;
    }
    match weights.file_dtype(embed) {
        Some(safetensors::Dtype::BF16) => DType::BF16,
        Some(safetensors::Dtype::F16) => DType::F16,
        _ => DType::F32,
    }
}

impl Decoder {
    /// Load `dir` (a Hugging Face model directory of `model_type`) on `device`; typed errors
    /// name the file, field or tensor at fault.
    pub fn load(model_type: &str, dir: &Path, device: &Device) -> Result<Self, SkillError> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(SkillError::ConfigMissing {
                dir: dir.to_path_buf(),
                path: config_path,
            });
        }
        let map = config::read_json(&config_path)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let mut weights = Weights::read(dir, device)?;
        let embed = if model_type == "gpt_bigcode" {
            "transformer.wte.weight"
        } else {
            "model.embed_tokens.weight"
        };
        let dtype = pick_dtype(&weights, embed, device);
        weights.convert(dtype)?;
        let (proto, vocab_size, max_positions) = match model_type {
            "llama" => {
                // candle's llama ties lm_head itself when the config says so.
                let c = config::llama(&f)?;
                let m = weights.build(dtype, device, |vb| llama::Llama::load(vb, &c))?;
                // An empty cache (rope tables computed once; each request clones it).
                let cache = llama::Cache::new(true, dtype, &c, device)
                    .map_err(candle_err("creating the llama KV cache"))?;
                let (v, p) = (c.vocab_size, c.max_position_embeddings);
                (Proto::Llama(m, Box::new(cache)), v, p)
            }
            "qwen2" => {
                let c = config::qwen2(&f)?;
                // candle uses `lm_head.weight` when present, else the embeddings. When the
                // config ties them, transformers ignores a stored lm_head: do the same.
                if c.tie_word_embeddings && weights.has("lm_head.weight") {
                    return Err(f.err(
                        "tie_word_embeddings",
                        "`true`, but the weights hold a separate lm_head.weight; candle's qwen2 would use it",
                    ));
                }
                // ... and silently ties when it is absent: untied needs the tensor.
                if !c.tie_word_embeddings && !weights.has("lm_head.weight") {
                    return Err(SkillError::TensorMissing {
                        path: weights.path.clone(),
                        tensor: "lm_head.weight".to_owned(),
                    });
                }
                let m = weights.build(dtype, device, |vb| qwen2::ModelForCausalLM::new(&c, vb))?;
                (Proto::Qwen2(m), c.vocab_size, c.max_position_embeddings)
            }
            "mistral" => {
                let c = config::mistral(&f)?;
                if f.map.get("tie_word_embeddings").and_then(|v| v.as_bool()) == Some(true) {
                    weights.tie("lm_head.weight", embed);
                }
                let m = weights.build(dtype, device, |vb| mistral::Model::new(&c, vb))?;
                (Proto::Mistral(m), c.vocab_size, c.max_position_embeddings)
            }
            "phi3" => {
                let c = config::phi3(&f)?;
                let m = weights.build(dtype, device, |vb| phi3::Model::new(&c, vb))?;
                (Proto::Phi3(m), c.vocab_size, c.max_position_embeddings)
            }
            "gemma" => {
                let c = config::gemma(&f)?;
                let m = weights.build(dtype, device, |vb| gemma::Model::new(false, &c, vb))?;
                (Proto::Gemma(m), c.vocab_size, c.max_position_embeddings)
            }
            "qwen3" => {
                let c = config::qwen3(&f)?;
                let m = weights.build(dtype, device, |vb| qwen3::ModelForCausalLM::new(&c, vb))?;
                (Proto::Qwen3(m), c.vocab_size, c.max_position_embeddings)
            }
            "olmo2" => {
                let c = config::olmo2(&f)?;
                let m = weights.build(dtype, device, |vb| olmo2::Model::new(&c, vb))?;
                (Proto::Olmo2(m), c.vocab_size, c.max_position_embeddings)
            }
            "starcoder2" => {
                let c = config::starcoder2(&f)?;
                let m = weights.build(dtype, device, |vb| starcoder2::Model::new(&c, vb))?;
                let fields = (
                    f.positive("vocab_size")?,
                    f.positive("max_position_embeddings")?,
                );
                (Proto::Starcoder2(m), fields.0, fields.1)
            }
            "gemma2" => {
                let (c, context) = config::gemma2(&f)?;
                let m = weights.build(dtype, device, |vb| gemma2::Model::new(false, &c, vb))?;
                (Proto::Gemma2(m), c.vocab_size, context)
            }
            "olmo" => {
                let c = config::olmo(&f)?;
                let m = weights.build(dtype, device, |vb| olmo::Model::new(&c, vb))?;
                (Proto::Olmo(m), c.vocab_size, c.max_position_embeddings)
            }
            "phi" => {
                let c = config::phi(&f)?;
                let m = weights.build(dtype, device, |vb| phi::Model::new(&c, vb))?;
                let fields = (
                    f.positive("vocab_size")?,
                    f.positive("max_position_embeddings")?,
                );
                (Proto::Phi(m), fields.0, fields.1)
            }
            "mixtral" => {
                let (c, v, p) = config::mixtral(&f)?;
                let m = weights.build(dtype, device, |vb| mixtral::Model::new(&c, vb))?;
                (Proto::Mixtral(m), v, p)
            }
            "qwen2_moe" => {
                let c = config::qwen2_moe(&f)?;
                let m = weights.build(dtype, device, |vb| qwen2_moe::Model::new(&c, vb))?;
                (Proto::Qwen2Moe(m), c.vocab_size, c.max_position_embeddings)
            }
            "qwen3_moe" => {
                let c = config::qwen3_moe(&f)?;
                let m =
                    weights.build(dtype, device, |vb| qwen3_moe::ModelForCausalLM::new(&c, vb))?;
                (Proto::Qwen3Moe(m), c.vocab_size, c.max_position_embeddings)
            }
            "helium" => {
                let c = config::helium(&f)?;
                let m = weights.build(dtype, device, |vb| helium::Model::new(&c, vb))?;
                (Proto::Helium(m), c.vocab_size, c.max_position_embeddings)
            }
            "smollm3" => {
                let c = config::smollm3(&f)?;
                let m = weights.build(dtype, device, |vb| {
                    candle_transformers::models::smol::smollm3::ModelForCausalLM::new(&c, vb)
                })?;
                (Proto::SmolLm3(m), c.vocab_size, c.max_position_embeddings)
            }
            "stablelm" => {
                let (c, v, p) = config::stablelm(&f)?;
                weights.build(dtype, device, |vb| stable_lm::Model::new(&c, vb).map(drop))?;
                (Proto::StableLm(Box::new(c)), v, p)
            }
            "gpt_bigcode" => {
                let c = config::gpt_bigcode(&f)?;
                weights.build(dtype, device, |vb| {
                    bigcode::GPTBigCode::load(vb, c.to_candle()).map(drop)
                })?;
                let v = c.to_candle().vocab_size;
                (Proto::BigCode(c), v, c.max_positions())
            }
            other => {
                return Err(SkillError::Backend {
                    backend: BackendKind::Candle,
                    detail: format!("model type `{other}` is not a candle decoder here"),
                });
            }
        };
        let eos = config::eos_ids(dir, &f)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = if tokenizer_path.is_file() {
            let t = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| {
                SkillError::Tokenizer {
                    path: tokenizer_path.clone(),
                    detail: e.to_string(),
                }
            })?;
            Some(Arc::new(t))
        } else {
            None
        };
        Ok(Self {
            model_type: model_type.to_owned(),
            proto,
            weights,
            dtype,
            device: device.clone(),
            vocab_size,
            max_positions,
            eos,
            tokenizer,
            tokenizer_path,
        })
    }

    /// A fresh model state with an empty KV cache.
    fn session(&self) -> Result<Session, SkillError> {
        Ok(match &self.proto {
            Proto::Llama(m, cache) => Session::Llama(m.clone(), cache.clone()),
            Proto::Qwen2(m) => Session::Qwen2(m.clone()),
            Proto::Mistral(m) => Session::Mistral(m.clone()),
            Proto::Phi3(m) => Session::Phi3(m.clone()),
            Proto::Gemma(m) => Session::Gemma(m.clone()),
            Proto::Qwen3(m) => Session::Qwen3(m.clone()),
            Proto::Olmo2(m) => Session::Olmo2(m.clone()),
            Proto::Starcoder2(m) => Session::Starcoder2(m.clone()),
            Proto::Gemma2(m) => Session::Gemma2(m.clone()),
            Proto::Olmo(m) => Session::Olmo(m.clone()),
            Proto::Phi(m) => Session::Phi(m.clone()),
            Proto::Mixtral(m) => Session::Mixtral(m.clone()),
            Proto::Qwen2Moe(m) => Session::Qwen2Moe(m.clone()),
            Proto::Qwen3Moe(m) => Session::Qwen3Moe(m.clone()),
            Proto::Helium(m) => Session::Helium(m.clone()),
            Proto::SmolLm3(m) => Session::SmolLm3(m.clone()),
            Proto::StableLm(c) => Session::StableLm(Box::new(
                stable_lm::Model::new(c, self.weights.var_builder(self.dtype, &self.device))
                    .map_err(candle_err("building stable_lm"))?,
            )),
            Proto::BigCode(c) => Session::BigCode(Box::new(
                bigcode::GPTBigCode::load(
                    self.weights.var_builder(self.dtype, &self.device),
                    c.to_candle(),
                )
                .map_err(candle_err("building gpt_bigcode"))?,
            )),
        })
    }

    fn tokenizer(&self, why: &'static str) -> Result<&tokenizers::Tokenizer, SkillError> {
        self.tokenizer
            .as_deref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: why,
            })
    }

    /// Check token ids against the vocabulary and the context.
    fn check_ids(&self, ids: &[u32]) -> Result<(), SkillError> {
        if ids.is_empty() {
            return Err(invalid_request("the prompt has no tokens"));
        }
        if let Some((i, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= self.vocab_size)
        {
            return Err(invalid_request(format!(
                "prompt token {i} is id {id}, outside the vocabulary (size {})",
                self.vocab_size
            )));
        }
        if ids.len() >= self.max_positions {
            return Err(invalid_request(format!(
                "the prompt has {} tokens; the model's context is {} positions (room for at least one new token is needed)",
                ids.len(),
                self.max_positions
            )));
        }
        Ok(())
    }

    /// The last-position logits after feeding `ids` in one forward pass (a fresh KV cache).
    pub fn prefill_logits(&self, ids: &[u32]) -> Result<Vec<f32>, SkillError> {
        self.check_ids(ids)?;
        let mut s = self.session()?;
        self.forward(&mut s, ids, 0)?
            .to_vec1()
            .map_err(candle_err("reading logits"))
    }

    /// The logits at every position of `ids`, fed one token at a time through the KV cache
    /// (candle's causal LMs return only the last position of a forward pass).
    pub fn incremental_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.check_ids(ids)?;
        let mut s = self.session()?;
        let mut out = Vec::with_capacity(ids.len());
        for (pos, id) in ids.iter().enumerate() {
            out.push(
                self.forward(&mut s, std::slice::from_ref(id), pos)?
                    .to_vec1()
                    .map_err(candle_err("reading logits"))?,
            );
        }
        Ok(out)
    }

    /// One forward pass of `ids` at position `pos`: the last position's logits, f32, `(vocab,)`.
    fn forward(&self, s: &mut Session, ids: &[u32], pos: usize) -> Result<Tensor, SkillError> {
        let input = Tensor::new(ids, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(candle_err("building the input tensor"))?;
        let logits = match s {
            Session::Llama(m, cache) => m.forward(&input, pos, cache),
            Session::Qwen2(m) => m.forward(&input, pos),
            Session::Mistral(m) => m.forward(&input, pos),
            Session::Phi3(m) => m.forward(&input, pos),
            Session::Gemma(m) => m.forward(&input, pos),
            Session::Qwen3(m) => m.forward(&input, pos),
            Session::Olmo2(m) => m.forward(&input, pos),
            Session::Starcoder2(m) => m.forward(&input, pos),
            Session::Gemma2(m) => m.forward(&input, pos),
            Session::Olmo(m) => m.forward(&input, pos),
            // candle's phi tracks the position in its KV cache.
            Session::Phi(m) => m.forward(&input),
            Session::StableLm(m) => m.forward(&input, pos),
            Session::Mixtral(m) => m.forward(&input, pos),
            Session::Qwen2Moe(m) => m.forward(&input, pos),
            Session::Qwen3Moe(m) => m.forward(&input, pos),
            Session::Helium(m) => m.forward(&input, pos),
            Session::SmolLm3(m) => m.forward(&input, pos),
            Session::BigCode(m) => m.forward(&input, pos),
        }
        .map_err(|e| SkillError::Backend {
            backend: BackendKind::Candle,
            detail: format!("{} forward pass: {e}", self.model_type),
        })?;
        logits
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(candle_err("reading logits"))
    }

    /// Start generating: the prompt is checked and tokenized here; tokens come from the
    /// returned iterator.
    pub fn stream(self: Arc<Self>, req: GenerateRequest) -> Result<TokenStream, SkillError> {
        let prompt = match &req.prompt {
            Prompt::TokenIds(ids) => ids.clone(),
            Prompt::Text(text) => {
                let tok =
                    self.tokenizer("the tokenizer (tokenizer.json), needed for a text prompt")?;
                tok.encode(text.as_str(), true)
                    .map_err(|e| SkillError::Tokenizer {
                        path: self.tokenizer_path.clone(),
                        detail: format!("encoding the prompt: {e}"),
                    })?
                    .get_ids()
                    .to_vec()
            }
        };
        self.check_ids(&prompt)?;
        if !req.stop.is_empty() {
            self.tokenizer("the tokenizer (tokenizer.json), needed for stop strings")?;
            if req.stop.iter().any(String::is_empty) {
                return Err(invalid_request("a stop string is empty"));
            }
        }
        let temperature = f64::from(req.temperature);
        let sampling = if req.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            match (req.top_k, req.top_p.map(f64::from)) {
                (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
                (Some(k), None) => Sampling::TopK { k, temperature },
                (None, Some(p)) if p < 1.0 => Sampling::TopP { p, temperature },
                (None, _) => Sampling::All { temperature },
            }
        };
        let seed = req.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        let session = self.session()?;
        let source = DecoderSource {
            sampler: LogitsProcessor::from_sampling(seed, sampling),
            session,
            pending: prompt,
            pos: 0,
            generated: Vec::new(),
            max_tokens: req.max_tokens,
            decoder: self,
        };
        Ok(TokenStream::new(Box::new(source), req.stop))
    }
}

/// A per-request model state: the model with its own KV cache.
enum Session {
    Llama(llama::Llama, Box<llama::Cache>),
    Qwen2(qwen2::ModelForCausalLM),
    Mistral(mistral::Model),
    Phi3(phi3::Model),
    Gemma(gemma::Model),
    Qwen3(qwen3::ModelForCausalLM),
    Olmo2(olmo2::Model),
    Starcoder2(starcoder2::Model),
    Gemma2(gemma2::Model),
    Olmo(olmo::Model),
    Phi(phi::Model),
    Mixtral(mixtral::Model),
    Qwen2Moe(qwen2_moe::Model),
    Qwen3Moe(qwen3_moe::ModelForCausalLM),
    Helium(helium::Model),
    SmolLm3(candle_transformers::models::smol::smollm3::ModelForCausalLM),
    StableLm(Box<stable_lm::Model>),
    BigCode(Box<bigcode::GPTBigCode>),
}

/// The decoder's side of a streaming generation (see [`TokenStream`], which cuts stop strings
/// and holds back text): its own KV cache, the sampler and the tokens so far.
struct DecoderSource {
    decoder: Arc<Decoder>,
    session: Session,
    sampler: LogitsProcessor,
    /// Tokens to feed at the next step (the prompt, then the last sampled token).
    pending: Vec<u32>,
    pos: usize,
    generated: Vec<u32>,
    max_tokens: usize,
}

impl std::fmt::Debug for DecoderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderSource")
            .field("decoder", &self.decoder)
            .field("generated", &self.generated)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

impl DecoderSource {
    fn decode(&self, ids: &[u32]) -> Result<String, SkillError> {
        match &self.decoder.tokenizer {
            None => Ok(String::new()),
            Some(t) => t.decode(ids, true).map_err(|e| SkillError::Tokenizer {
                path: self.decoder.tokenizer_path.clone(),
                detail: format!("decoding: {e}"),
            }),
        }
    }
}

impl TokenSource for DecoderSource {
    fn step(&mut self) -> Result<SourceStep, SkillError> {
        let logits = self
            .decoder
            .forward(&mut self.session, &self.pending, self.pos)?;
        self.pos += self.pending.len();
        let id = self
            .sampler
            .sample(&logits)
            .map_err(candle_err("sampling"))?;
        self.generated.push(id);
        self.pending = vec![id];
        let is_eos = self.decoder.eos.contains(&id);
        let finish = if is_eos {
            Some(FinishReason::Eos)
        } else if self.generated.len() >= self.max_tokens || self.pos >= self.decoder.max_positions
        {
            Some(FinishReason::Length)
        } else {
            None
        };
        let text = if is_eos {
            // The EOS token adds no text.
            let n = self.generated.len().saturating_sub(1);
            self.decode(self.generated.get(..n).unwrap_or(&[]))?
        } else {
            self.decode(&self.generated)?
        };
        Ok(SourceStep {
            token_id: id,
            text,
            finish,
        })
    }
}
