//! Native audio (see [`crate`]): Whisper speech recognition on candle
//! (`candle_transformers::models::whisper`).
//!
//! - [`WhisperModel::load`] translates `config.json` field by field (transformers v5 writes
//!   `suppress_tokens: null`, read as none; candle hard-codes the FFN size as 4 × `d_model`,
//!   GELU activations and unscaled embeddings, so other values are typed config errors) and
//!   checks every tensor (`model.encoder.*`, `model.decoder.*`; `proj_out` is tied to
//!   `embed_tokens`) before candle sees it. The forward pass is [`model`] (exact GELU; candle's
//!   own `whisper::model` uses the tanh approximation and misses parity by 2.8e-4).
//! - Features: [`mel`] computes transformers' `WhisperFeatureExtractor` log-mel (the filterbank
//!   included), 30 s chunks (2 × `max_source_positions` frames).
//! - `transcribe`: greedy decoding per chunk from `<|startoftranscript|>` (+ `<|xx|>` for a
//!   language hint) `<|transcribe|>` `<|notimestamps|>` when the tokenizer has them (else
//!   `decoder_start_token_id`), suppressing `suppress_tokens` / `begin_suppress_tokens`, until
//!   `eos_token_id` or `max_target_positions`. No language detection, no timestamps, no
//!   temperature fallback. Needs `tokenizer.json`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper as wh;
use serde_json::{Map, Value};
use skillgen_runtime::{Capability, Task};

use crate::e;
use skillgen_checkpoint::{Fields, TensorCheck, config_json, read_json, weights_bytes};
use skillgen_runtime::Model;
use skillgen_runtime::request::{Call, Output, Transcription};
use skillgen_runtime::{SkillError, Target};

pub mod mel;
mod model;

use model::WhisperNet;

crate::architecture_struct!(Whisper, "The `whisper` implementation.");

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::Transcribe(req) => {
            let model = state.cached(&format!("candle/whisper/{target}"), || {
                WhisperModel::load(state.dir(), &crate::device(target)?)
            })?;
            model
                .transcribe(&req.pcm_16khz, req.language.as_deref())
                .map(Output::Transcribe)
        }
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

/// Generation settings read from `generation_config.json` / `config.json`.
#[derive(Debug, Clone, Default)]
struct Gen {
    decoder_start: u32,
    eos: Option<u32>,
    suppress: Vec<u32>,
    begin_suppress: Vec<u32>,
}

fn id_list(f: &Fields<'_>, field: &str) -> Result<Option<Vec<u32>>, SkillError> {
    match f.get(field) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| f.err(field, format!("expected token ids, found {v}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(v) => Err(f.err(field, format!("expected a list of token ids, found {v}"))),
    }
}

fn id_opt(f: &Fields<'_>, field: &str) -> Result<Option<u32>, SkillError> {
    match f.get(field) {
        None => Ok(None),
        // transformers allows a list of eos ids; the first ends generation here.
        Some(Value::Array(_)) => Ok(id_list(f, field)?.and_then(|l| l.first().copied())),
        Some(_) => f
            .usize_opt(field)?
            .map(|n| u32::try_from(n).map_err(|_| f.err(field, "does not fit in u32")))
            .transpose(),
    }
}

fn whisper_config(path: &Path, map: &Map<String, Value>) -> Result<(wh::Config, Gen), SkillError> {
    let f = Fields { path, map };
    let d_model = f.positive("d_model")?;
    for heads in ["encoder_attention_heads", "decoder_attention_heads"] {
        let h = f.positive(heads)?;
        if !d_model.is_multiple_of(h) {
            return Err(f.err(heads, format!("{h} does not divide d_model {d_model}")));
        }
    }
    for ffn in ["encoder_ffn_dim", "decoder_ffn_dim"] {
        if let Some(n) = f.usize_opt(ffn)?
            && n != 4 * d_model
        {
            return Err(f.err(
                ffn,
                format!(
                    "{n}: candle's Whisper requires 4 × d_model = {}",
                    4 * d_model
                ),
            ));
        }
    }
    match f.str_opt("activation_function")? {
        None | Some("gelu") => {}
        Some(other) => {
            return Err(f.err(
                "activation_function",
                format!("`{other}`: candle's Whisper supports only gelu"),
            ));
        }
    }
    if f.bool_or_false("scale_embedding")? {
        return Err(f.err(
            "scale_embedding",
            "true is not supported by candle's Whisper (embeddings are not scaled)",
        ));
    }
    let config = wh::Config {
        num_mel_bins: f.positive("num_mel_bins")?,
        max_source_positions: f.positive("max_source_positions")?,
        d_model,
        encoder_attention_heads: f.positive("encoder_attention_heads")?,
        encoder_layers: f.positive("encoder_layers")?,
        vocab_size: f.positive("vocab_size")?,
        max_target_positions: f.positive("max_target_positions")?,
        decoder_attention_heads: f.positive("decoder_attention_heads")?,
        decoder_layers: f.positive("decoder_layers")?,
        // v5 writes null: no suppression.
        suppress_tokens: id_list(&f, "suppress_tokens")?.unwrap_or_default(),
    };
    let gen_cfg = Gen {
        decoder_start: id_opt(&f, "decoder_start_token_id")?
            .ok_or_else(|| f.err("decoder_start_token_id", "missing (required)"))?,
        eos: id_opt(&f, "eos_token_id")?,
        suppress: config.suppress_tokens.clone(),
        begin_suppress: id_list(&f, "begin_suppress_tokens")?.unwrap_or_default(),
    };
    Ok((config, gen_cfg))
}

/// `generation_config.json` overrides (when present).
fn read_generation(dir: &Path, mut g: Gen) -> Result<Gen, SkillError> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(g);
    }
    let map = read_json(&path)?;
    let f = Fields {
        path: &path,
        map: &map,
    };
    if let Some(id) = id_opt(&f, "decoder_start_token_id")? {
        g.decoder_start = id;
    }
    if let Some(id) = id_opt(&f, "eos_token_id")? {
        g.eos = Some(id);
    }
    if let Some(l) = id_list(&f, "suppress_tokens")? {
        g.suppress = l;
    }
    if let Some(l) = id_list(&f, "begin_suppress_tokens")? {
        g.begin_suppress = l;
    }
    Ok(g)
}

fn whisper_tensors(c: &wh::Config) -> Vec<(String, Vec<usize>)> {
    let d = c.d_model;
    let mut t = vec![
        (
            "model.encoder.conv1.weight".to_owned(),
            vec![d, c.num_mel_bins, 3],
        ),
        ("model.encoder.conv1.bias".to_owned(), vec![d]),
        ("model.encoder.conv2.weight".to_owned(), vec![d, d, 3]),
        ("model.encoder.conv2.bias".to_owned(), vec![d]),
        (
            "model.encoder.embed_positions.weight".to_owned(),
            vec![c.max_source_positions, d],
        ),
        ("model.encoder.layer_norm.weight".to_owned(), vec![d]),
        ("model.encoder.layer_norm.bias".to_owned(), vec![d]),
        (
            "model.decoder.embed_tokens.weight".to_owned(),
            vec![c.vocab_size, d],
        ),
        (
            "model.decoder.embed_positions.weight".to_owned(),
            vec![c.max_target_positions, d],
        ),
        ("model.decoder.layer_norm.weight".to_owned(), vec![d]),
        ("model.decoder.layer_norm.bias".to_owned(), vec![d]),
    ];
    let block = |t: &mut Vec<(String, Vec<usize>)>, p: String, cross: bool| {
        let mut attn = |a: String| {
            for n in ["q_proj", "v_proj", "out_proj"] {
                t.push((format!("{a}.{n}.weight"), vec![d, d]));
                t.push((format!("{a}.{n}.bias"), vec![d]));
            }
            t.push((format!("{a}.k_proj.weight"), vec![d, d]));
        };
        attn(format!("{p}.self_attn"));
        if cross {
            attn(format!("{p}.encoder_attn"));
        }
        let mut lns = vec!["self_attn_layer_norm", "final_layer_norm"];
        if cross {
            lns.push("encoder_attn_layer_norm");
        }
        for ln in lns {
            t.push((format!("{p}.{ln}.weight"), vec![d]));
            t.push((format!("{p}.{ln}.bias"), vec![d]));
        }
        t.push((format!("{p}.fc1.weight"), vec![4 * d, d]));
        t.push((format!("{p}.fc1.bias"), vec![4 * d]));
        t.push((format!("{p}.fc2.weight"), vec![d, 4 * d]));
        t.push((format!("{p}.fc2.bias"), vec![d]));
    };
    for l in 0..c.encoder_layers {
        block(&mut t, format!("model.encoder.layers.{l}"), false);
    }
    for l in 0..c.decoder_layers {
        block(&mut t, format!("model.decoder.layers.{l}"), true);
    }
    t
}

/// A loaded Whisper model on one candle device.
pub struct WhisperModel {
    model: WhisperNet,
    config: wh::Config,
    generation: Gen,
    filters: Vec<f32>,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
    device: Device,
}

impl std::fmt::Debug for WhisperModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperModel")
            .field("d_model", &self.config.d_model)
            .field("num_mel_bins", &self.config.num_mel_bins)
            .field("tokenizer", &self.tokenizer.is_some())
            .field("device", &self.device)
            .finish()
    }
}

fn invalid(detail: String) -> SkillError {
    SkillError::InvalidRequest {
        capability: Capability::Transcribe,
        detail,
    }
}

impl WhisperModel {
    /// Load the `WhisperForConditionalGeneration` checkpoint in `dir` on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let (config, generation) = whisper_config(&config_path, &map)?;
        let generation = read_generation(dir, generation)?;
        let (weights_path, bytes) = weights_bytes(dir)?;
        TensorCheck::new(&weights_path, &bytes)?.require_all(&whisper_tensors(&config))?;
        let load_err = |err: candle_core::Error| SkillError::WeightsInvalid {
            path: weights_path.clone(),
            detail: err.to_string(),
        };
        let vb =
            VarBuilder::from_slice_safetensors(&bytes, DType::F32, device).map_err(load_err)?;
        let dims = model::Dims {
            mels: config.num_mel_bins,
            d: config.d_model,
            enc_heads: config.encoder_attention_heads,
            enc_layers: config.encoder_layers,
            dec_heads: config.decoder_attention_heads,
            dec_layers: config.decoder_layers,
            vocab: config.vocab_size,
            src_positions: config.max_source_positions,
            tgt_positions: config.max_target_positions,
        };
        let model = WhisperNet::load(&vb, dims).map_err(load_err)?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = if tokenizer_path.is_file() {
            Some(
                tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|err| {
                    SkillError::Tokenizer {
                        path: tokenizer_path.clone(),
                        detail: err.to_string(),
                    }
                })?,
            )
        } else {
            None
        };
        Ok(Self {
            filters: mel::mel_filters(config.num_mel_bins),
            model,
            config,
            generation,
            tokenizer,
            tokenizer_path,
            device: device.clone(),
        })
    }

    /// Mel frames per chunk (2 × `max_source_positions`).
    pub fn frames(&self) -> usize {
        2 * self.config.max_source_positions
    }

    /// PCM samples per chunk.
    pub fn chunk_samples(&self) -> usize {
        self.frames() * mel::HOP
    }

    /// Log-mel features `[num_mel_bins, frames]` of one chunk of 16 kHz PCM.
    pub fn features(&self, pcm: &[f32]) -> Vec<f32> {
        mel::log_mel(
            pcm,
            &self.filters,
            self.config.num_mel_bins,
            self.chunk_samples(),
        )
    }

    fn features_tensor(&self, features: &[f32], batch: usize) -> Result<Tensor, SkillError> {
        let (m, n) = (self.config.num_mel_bins, self.frames());
        if batch == 0 || features.len() != batch * m * n {
            return Err(invalid(format!(
                "features have {} values, expected [batch ≥ 1, {m}, {n}]",
                features.len()
            )));
        }
        Tensor::from_slice(features, (batch, m, n), &self.device).map_err(e("features"))
    }

    /// Encoder output `[batch, max_source_positions, d_model]` and teacher-forced decoder logits
    /// `[batch, len, vocab]` for `features` `[batch, mels, frames]` and `decoder_ids`.
    pub fn forward(
        &self,
        features: &[f32],
        decoder_ids: &[Vec<u32>],
    ) -> Result<(Tensor, Tensor), SkillError> {
        let b = decoder_ids.len();
        let len = decoder_ids.first().map_or(0, Vec::len);
        if len == 0 || decoder_ids.iter().any(|r| r.len() != len) {
            return Err(invalid(
                "decoder ids must be a non-empty [batch, len]".to_owned(),
            ));
        }
        if len > self.config.max_target_positions {
            return Err(invalid(format!(
                "{len} decoder ids exceed max_target_positions {}",
                self.config.max_target_positions
            )));
        }
        if decoder_ids
            .iter()
            .flatten()
            .any(|&i| i as usize >= self.config.vocab_size)
        {
            return Err(invalid("decoder id outside the vocabulary".to_owned()));
        }
        let x = self.features_tensor(features, b)?;
        let ids: Vec<u32> = decoder_ids.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(ids, (b, len), &self.device).map_err(e("decoder ids"))?;
        let enc = self.model.encode(&x).map_err(e("Whisper encoder"))?;
        let logits = self
            .model
            .decode(&ids, &enc)
            .map_err(e("Whisper decoder"))?;
        Ok((enc, logits))
    }

    /// Greedy decoding of one chunk's `features` after `prompt`; returns the prompt followed by
    /// the generated ids (ending with `eos_token_id` if it was produced). `suppress` applies
    /// the configured suppressions.
    pub fn greedy(
        &self,
        features: &[f32],
        prompt: &[u32],
        max_new: usize,
        suppress: bool,
    ) -> Result<Vec<u32>, SkillError> {
        if prompt.is_empty() {
            return Err(invalid("empty decoder prompt".to_owned()));
        }
        let x = self.features_tensor(features, 1)?;
        let enc = self.model.encode(&x).map_err(e("Whisper encoder"))?;
        let mut ids = prompt.to_vec();
        let limit = self.config.max_target_positions;
        for step in 0..max_new {
            if ids.len() >= limit {
                break;
            }
            let t = Tensor::new(ids.as_slice(), &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(e("decoder ids"))?;
            let mut logits = self
                .model
                .decode(&t, &enc)
                .and_then(|l| l.i((.., ids.len() - 1..)))
                .and_then(|l| l.flatten_all())
                .and_then(|l| l.to_vec1::<f32>())
                .map_err(e("Whisper logits"))?;
            if suppress {
                let begin: &[u32] = if step == 0 {
                    &self.generation.begin_suppress
                } else {
                    &[]
                };
                for &s in self.generation.suppress.iter().chain(begin) {
                    if let Some(l) = logits.get_mut(s as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            let next = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
                .map(|(i, _)| i as u32)
                .ok_or_else(|| invalid("empty vocabulary".to_owned()))?;
            ids.push(next);
            if Some(next) == self.generation.eos {
                break;
            }
        }
        Ok(ids)
    }

    fn prompt(&self, language: Option<&str>) -> Result<Vec<u32>, SkillError> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: "the tokenizer, needed to turn Whisper's tokens into text",
            })?;
        let Some(sot) = tok.token_to_id(wh::SOT_TOKEN) else {
            if let Some(lang) = language {
                return Err(invalid(format!(
                    "language `{lang}` given, but the tokenizer has no {}",
                    wh::SOT_TOKEN
                )));
            }
            return Ok(vec![self.generation.decoder_start]);
        };
        let mut p = vec![sot];
        if let Some(lang) = language {
            let t = format!("<|{lang}|>");
            p.push(
                tok.token_to_id(&t)
                    .ok_or_else(|| invalid(format!("the tokenizer has no language token `{t}`")))?,
            );
        }
        for t in [wh::TRANSCRIBE_TOKEN, wh::NO_TIMESTAMPS_TOKEN] {
            if let Some(id) = tok.token_to_id(t) {
                p.push(id);
            }
        }
        Ok(p)
    }

    /// `transcribe`: 16 kHz mono PCM in chunks of [`Self::chunk_samples`], greedy decoding,
    /// texts joined.
    pub fn transcribe(
        &self,
        pcm: &[f32],
        language: Option<&str>,
    ) -> Result<Transcription, SkillError> {
        if pcm.is_empty() {
            return Err(invalid("no audio samples".to_owned()));
        }
        if let Some(i) = pcm.iter().position(|s| !s.is_finite()) {
            return Err(invalid(format!("sample {i} is not finite")));
        }
        let prompt = self.prompt(language)?;
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: "the tokenizer",
            })?;
        let mut text = String::new();
        for chunk in pcm.chunks(self.chunk_samples()) {
            let feats = self.features(chunk);
            let ids = self.greedy(&feats, &prompt, self.config.max_target_positions, true)?;
            let new: Vec<u32> = ids
                .get(prompt.len()..)
                .unwrap_or_default()
                .iter()
                .copied()
                .filter(|&i| Some(i) != self.generation.eos)
                .collect();
            let part = tok
                .decode(&new, true)
                .map_err(|err| SkillError::Tokenizer {
                    path: self.tokenizer_path.clone(),
                    detail: err.to_string(),
                })?;
            text.push_str(&part);
        }
        Ok(Transcription {
            text: text.trim().to_owned(),
        })
    }
}

/// Parity entry point: Whisper encoder output and decoder logits (flat, shape) on the CPU.
#[doc(hidden)]
#[allow(clippy::type_complexity)]
pub fn whisper_outputs(
    dir: &Path,
    features: &[f32],
    decoder_ids: &[Vec<u32>],
) -> Result<((Vec<f32>, Vec<usize>), (Vec<f32>, Vec<usize>)), SkillError> {
    let model = WhisperModel::load(dir, &Device::Cpu)?;
    let (enc, logits) = model.forward(features, decoder_ids)?;
    Ok((
        crate::encoder::text::flat(&enc)?,
        crate::encoder::text::flat(&logits)?,
    ))
}
