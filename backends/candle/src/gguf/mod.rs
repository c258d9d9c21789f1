//! GGUF files (llama.cpp's format) as the config-driven decoder reads them: the architecture
//! and its metadata become the Hugging Face `config.json` fields the decoder translates
//! (`general.architecture` `llama` → model type `llama`, `gemma3` → `gemma3_text`), the tensor
//! names become transformers' names, the tokenizer comes from the `tokenizer.ggml.*` metadata
//! ([`tokenizer`]), and quantized tensors stay quantized (their matmuls run on candle's quantized
//! kernels, see [`crate::linear`]). What llama.cpp's converter changed is undone exactly as
//! transformers' GGUF loader undoes it: Llama's q/k rows are un-permuted (whole quantized rows
//! move, so no requantization), Gemma's norm weights lose the `+ 1` the converter added.
//! Gemma 3's layer pattern, local RoPE base and attention scale are llama.cpp's
//! (`sliding_window_pattern`, default every sixth layer global; `rope.freq_base_swa`, default
//! 10 000; `1/sqrt(head_dim)`, `1/sqrt(hidden / heads)` for the 62-layer 27B).
//! Anything else is a typed error naming the file and the key: an architecture or an
//! `{arch}.*` metadata key without a translation (a soft-cap, say), RoPE scaling, a tensor no
//! map names. [`write_float_dir`] writes a file as the float Hugging Face directory
//! transformers' GGUF loader would make of it (the parity tests' check of the translation).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use serde_json::{Map, Value as Json, json};
use skillgen_runtime::SkillError;

use crate::weights::Weights;

pub mod tokenizer;

/// A GGUF file read for the decoder.
pub struct GgufModel {
    /// The file read.
    pub file: PathBuf,
    /// The registry model type the architecture maps to.
    pub model_type: &'static str,
    /// `config.json` as transformers' GGUF loader would write it.
    pub config: Map<String, Json>,
    /// Every tensor, under transformers' names (quantized ones kept quantized).
    pub(crate) weights: Weights,
    /// The tokenizer built from the metadata.
    pub tokenizer: tokenizers::Tokenizer,
    /// End-of-sequence ids (`tokenizer.ggml.eos_token_id`, and `eot_token_id` / `eom_token_id`).
    pub eos: Vec<u32>,
    /// `tokenizer.chat_template`, if the file has one.
    pub chat_template: Option<String>,
    /// `bos_token`, `eos_token`, `unk_token`, `pad_token` as texts (for the chat template).
    pub special_tokens: std::collections::BTreeMap<String, String>,
    /// The counts of each tensor type (for reports).
    pub tensor_types: Vec<(String, usize)>,
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufModel")
            .field("model_type", &self.model_type)
            .field("tensor_types", &self.tensor_types)
            .finish_non_exhaustive()
    }
}

use skillgen_runtime::gguf::{ARCHITECTURES as ARCHS, model_type_of};

pub(crate) fn invalid(path: &Path, field: &str, detail: impl Into<String>) -> SkillError {
    SkillError::ConfigField {
        path: path.to_path_buf(),
        field: field.to_owned(),
        detail: detail.into(),
    }
}

/// Typed access to the metadata of one file.
pub(crate) struct Meta<'a> {
    pub(crate) path: &'a Path,
    pub(crate) map: &'a HashMap<String, Value>,
}

impl Meta<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64, SkillError> {
        let v = self
            .get(key)
            .ok_or_else(|| invalid(self.path, key, "missing from the GGUF metadata"))?;
        v.to_u64()
            .or_else(|_| v.to_u32().map(u64::from))
            .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
            .or_else(|_| v.to_i64().map(|x| x.max(0) as u64))
            .map_err(|_| invalid(self.path, key, "is not an unsigned integer"))
    }

    pub(crate) fn u64_opt(&self, key: &str) -> Result<Option<u64>, SkillError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.u64(key).map(Some)
    }

    pub(crate) fn f64(&self, key: &str) -> Result<f64, SkillError> {
        let v = self
            .get(key)
            .ok_or_else(|| invalid(self.path, key, "missing from the GGUF metadata"))?;
        v.to_f32()
            .map(f64::from)
            .or_else(|_| v.to_f64())
            .map_err(|_| invalid(self.path, key, "is not a float"))
    }

    pub(crate) fn str(&self, key: &str) -> Result<&str, SkillError> {
        self.get(key)
            .ok_or_else(|| invalid(self.path, key, "missing from the GGUF metadata"))?
            .to_string()
            .map(String::as_str)
            .map_err(|_| invalid(self.path, key, "is not a string"))
    }

    pub(crate) fn str_opt(&self, key: &str) -> Result<Option<&str>, SkillError> {
        if self.get(key).is_none() {
            return Ok(None);
        }
        self.str(key).map(Some)
    }

    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, SkillError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .to_bool()
                .map_err(|_| invalid(self.path, key, "is not a boolean")),
        }
    }
}

/// The GGUF file of `path`: the file itself, or the one `.gguf` file of a directory (found
/// as the runtime finds it, see [`skillgen_runtime::gguf_of`]).
pub fn gguf_file(path: &Path) -> Result<PathBuf, SkillError> {
    if !path.exists() {
        return Err(SkillError::ModelDirMissing {
            path: path.to_path_buf(),
        });
    }
    skillgen_runtime::gguf_of(path)?.ok_or_else(|| SkillError::ModelFileMissing {
        path: path.join("*.gguf"),
        what: "a GGUF model file",
    })
}

/// Read the GGUF file at `path` (or the one in a directory) onto `device`, quantized tensors
/// kept quantized.
pub fn read(path: &Path, device: &Device) -> Result<GgufModel, SkillError> {
    let (g, dense, quant) = parse(path, device, false)?;
    let weights = Weights::from_parts(g.file.clone(), dense, quant, device);
    Ok(GgufModel { weights, ..g })
}

/// Write the GGUF file at `path` (or the one in a directory) into `dir` as a float Hugging Face
/// model directory, the way transformers' GGUF loader converts it: every tensor dequantized to
/// f32 under its transformers name (`model.safetensors`), `config.json`, `tokenizer.json`,
/// `generation_config.json` (the end-of-sequence ids) and, when the file has a chat template,
/// `tokenizer_config.json`. The parity tests run it to check the translation apart from the
/// quantized kernels.
pub fn write_float_dir(path: &Path, dir: &Path) -> Result<(), SkillError> {
    let (g, dense, _) = parse(path, &Device::Cpu, true)?;
    let bad = |what: &str, e: &dyn std::fmt::Display| SkillError::WeightsInvalid {
        path: dir.join(what),
        detail: format!("writing: {e}"),
    };
    std::fs::create_dir_all(dir).map_err(|e| bad("", &e))?;
    let json = |name: &str, v: &Json| {
        let text = serde_json::to_string_pretty(v).map_err(|e| bad(name, &e))?;
        std::fs::write(dir.join(name), text).map_err(|e| bad(name, &e))
    };
    json("config.json", &Json::Object(g.config.clone()))?;
    json("generation_config.json", &json!({"eos_token_id": g.eos}))?;
    if let Some(t) = &g.chat_template {
        let mut c = Map::new();
        c.insert("chat_template".into(), json!(t));
        for (k, v) in &g.special_tokens {
            c.insert(k.clone(), json!(v));
        }
        json("tokenizer_config.json", &Json::Object(c))?;
    }
    g.tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| bad("tokenizer.json", &e))?;
    candle_core::safetensors::save(&dense, dir.join("model.safetensors"))
        .map_err(|e| bad("model.safetensors", &e))
}

/// Dense tensors by transformers name.
type Dense = HashMap<String, candle_core::Tensor>;
/// Quantized tensors by transformers name.
type Quant = HashMap<String, Arc<QTensor>>;

/// The file read: everything but the weights (left empty), and the tensors (`dequantize`:
/// every tensor dense f32).
fn parse(
    path: &Path,
    device: &Device,
    dequantize: bool,
) -> Result<(GgufModel, Dense, Quant), SkillError> {
    let path = gguf_file(path)?;
    let bad = |detail: String| SkillError::WeightsInvalid {
        path: path.clone(),
        detail,
    };
    let mut file = std::fs::File::open(&path).map_err(|e| bad(e.to_string()))?;
    let content = Content::read(&mut file).map_err(|e| bad(format!("not a GGUF file: {e}")))?;
    let meta = Meta {
        path: &path,
        map: &content.metadata,
    };
    let arch = meta.str("general.architecture")?.to_owned();
    let Some(model_type) = model_type_of(&arch) else {
        return Err(invalid(
            &path,
            "general.architecture",
            format!(
                "`{arch}` has no translation to the decoder (known: {})",
                ARCHS.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let tokenizer = tokenizer::from_metadata(&meta)?;
    let vocab = tokenizer::token_count(&meta)?;
    let config = config(&meta, &arch, model_type, vocab, &content)?;
    let heads = config["num_attention_heads"].as_u64().unwrap_or(1) as usize;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(1) as usize;
    let mut dense = HashMap::new();
    let mut quant = HashMap::new();
    let mut types: HashMap<String, usize> = HashMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let hf = hf_name(&arch, name).ok_or_else(|| SkillError::TensorInvalid {
            path: path.clone(),
            tensor: name.clone(),
            detail: format!(
                "no transformers name for this `{arch}` tensor (refused rather than run without it)"
            ),
        })?;
        let q = content
            .tensor(&mut file, name, device)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        *types.entry(format!("{:?}", q.dtype())).or_default() += 1;
        let q = if arch == "llama" && (name.contains(".attn_q.") || name.contains(".attn_k.")) {
            let n = if name.contains(".attn_q.") {
                heads
            } else {
                kv_heads
            };
            unpermute_rows(&q, n).map_err(|e| bad(format!("tensor `{name}`: {e}")))?
        } else {
            q
        };
        let plain = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        if plain || dequantize || q.shape().rank() != 2 {
            let mut t = q
                .dequantize(device)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if arch == "gemma3" && name.ends_with("norm.weight") {
                // llama.cpp stores Gemma's RMSNorm weights as `w + 1`.
                t = (t - 1.0).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            }
            dense.insert(hf, t);
        } else {
            quant.insert(hf, Arc::new(q));
        }
    }
    let weights = Weights::from_parts(path.clone(), HashMap::new(), HashMap::new(), device);
    let mut eos = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(id) = meta.u64_opt(key)?
            && let Ok(id) = u32::try_from(id)
            && !eos.contains(&id)
        {
            eos.push(id);
        }
    }
    // llama.cpp also ends a generation at a token it knows by its text; for Gemma 3 that is
    // `<end_of_turn>` (transformers' generation_config says the same: eos_token_id [1, 106]).
    if arch == "gemma3"
        && let Some(id) = tokenizer.token_to_id("<end_of_turn>")
        && !eos.contains(&id)
    {
        eos.push(id);
    }
    let chat_template = meta.str_opt("tokenizer.chat_template")?.map(str::to_owned);
    let mut special_tokens = std::collections::BTreeMap::new();
    for (name, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = meta.u64_opt(key)?
            && let Some(text) = u32::try_from(id)
                .ok()
                .and_then(|i| tokenizer.id_to_token(i))
        {
            special_tokens.insert(name.to_owned(), text);
        }
    }
    let mut tensor_types: Vec<(String, usize)> = types.into_iter().collect();
    tensor_types.sort();
    let g = GgufModel {
        file: path,
        model_type,
        config,
        weights,
        tokenizer,
        eos,
        chat_template,
        special_tokens,
        tensor_types,
    };
    Ok((g, dense, quant))
}

/// `config.json` fields for the decoder from the metadata of `arch`.
fn config(
    meta: &Meta<'_>,
    arch: &str,
    model_type: &str,
    vocab: usize,
    content: &Content,
) -> Result<Map<String, Json>, SkillError> {
    let k = |key: &str| format!("{arch}.{key}");
    for key in ["rope.scaling.type", "rope.scaling.factor"] {
        if let Some(v) = meta.get(&k(key)) {
            let none = v.to_string().is_ok_and(|s| s == "none");
            if !none {
                return Err(invalid(
                    meta.path,
                    &k(key),
                    "RoPE scaling in a GGUF file is not translated yet",
                ));
            }
        }
    }
    // Every `{arch}.*` key must be one this translation reads: a key it does not know may
    // change the model (a soft-cap, a scaling, another layer pattern), so it is refused.
    let mut known: Vec<&str> = vec![
        "context_length",
        "embedding_length",
        "block_count",
        "feed_forward_length",
        "vocab_size",
        "attention.head_count",
        "attention.head_count_kv",
        "attention.layer_norm_rms_epsilon",
        "attention.key_length",
        "attention.value_length",
        "rope.freq_base",
        "rope.dimension_count",
        "rope.scaling.type",
        "rope.scaling.factor",
    ];
    if arch == "gemma3" {
        known.extend([
            "attention.sliding_window",
            "attention.sliding_window_pattern",
            "rope.freq_base_swa",
        ]);
    }
    let prefix = format!("{arch}.");
    let mut unknown: Vec<&String> = meta
        .map
        .keys()
        .filter(|key| {
            key.strip_prefix(&prefix)
                .is_some_and(|rest| !known.contains(&rest))
        })
        .collect();
    unknown.sort();
    if let Some(key) = unknown.first() {
        return Err(invalid(
            meta.path,
            key,
            format!("has no translation for `{arch}` (refused rather than ignored)"),
        ));
    }
    if let Some(n) = meta.u64_opt(&k("vocab_size"))?
        && n != vocab as u64
    {
        return Err(invalid(
            meta.path,
            &k("vocab_size"),
            format!("{n}, but tokenizer.ggml.tokens has {vocab} tokens"),
        ));
    }
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(invalid(
            meta.path,
            "rope_freqs.weight",
            "per-frequency RoPE factors (Llama 3.1 style) are not translated yet",
        ));
    }
    let hidden = meta.u64(&k("embedding_length"))?;
    let heads = meta.u64(&k("attention.head_count"))?;
    let kv_heads = meta
        .u64_opt(&k("attention.head_count_kv"))?
        .unwrap_or(heads);
    let head_dim = match meta.u64_opt(&k("attention.key_length"))? {
        Some(d) => d,
        None => hidden / heads.max(1),
    };
    if let Some(v) = meta.u64_opt(&k("attention.value_length"))?
        && v != head_dim
    {
        return Err(invalid(
            meta.path,
            &k("attention.value_length"),
            format!("{v} differs from the key length {head_dim}: not implemented"),
        ));
    }
    if let Some(r) = meta.u64_opt(&k("rope.dimension_count"))?
        && r != head_dim
    {
        return Err(invalid(
            meta.path,
            &k("rope.dimension_count"),
            format!("{r} rotary dimensions of {head_dim}: partial RoPE is not translated yet"),
        ));
    }
    let token = |key: &str| -> Result<Json, SkillError> {
        Ok(match meta.u64_opt(key)? {
            Some(id) => json!(id),
            None => Json::Null,
        })
    };
    let tied = !content.tensor_infos.contains_key("output.weight");
    let mut c = json!({
        "model_type": model_type,
        "architectures": [],
        "hidden_size": hidden,
        "intermediate_size": meta.u64(&k("feed_forward_length"))?,
        "num_hidden_layers": meta.u64(&k("block_count"))?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": meta.f64(&k("attention.layer_norm_rms_epsilon"))?,
        "max_position_embeddings": meta.u64(&k("context_length"))?,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "bos_token_id": token("tokenizer.ggml.bos_token_id")?,
        "eos_token_id": token("tokenizer.ggml.eos_token_id")?,
        "pad_token_id": token("tokenizer.ggml.padding_token_id")?,
        "torch_dtype": "float32",
    });
    let m = c.as_object_mut().expect("an object literal");
    let theta = meta.f64(&k("rope.freq_base"))?;
    match arch {
        "llama" => {
            m.insert("hidden_act".into(), json!("silu"));
            m.insert("attention_bias".into(), json!(false));
            m.insert("mlp_bias".into(), json!(false));
            m.insert(
                "rope_parameters".into(),
                json!({"rope_type": "default", "rope_theta": theta}),
            );
        }
        "gemma3" => {
            // llama.cpp's Gemma 3 (`llama_model_gemma3`): with a sliding window, every
            // `sliding_window_pattern`-th layer (default 6) is global and the others slide, at
            // RoPE base `rope.freq_base_swa` (default 10 000); without one it is another graph
            // (all layers global, final logits soft-capped), not translated.
            let window = match meta.u64_opt(&k("attention.sliding_window"))? {
                Some(w) if w > 0 => w,
                _ => {
                    return Err(invalid(
                        meta.path,
                        &k("attention.sliding_window"),
                        "missing or 0: Gemma 3 without sliding layers (llama.cpp's non-SWA graph, \
                         which soft-caps the final logits) is not translated",
                    ));
                }
            };
            let layers = m["num_hidden_layers"].as_u64().unwrap_or(0) as usize;
            let sliding = sliding_layers(meta, &k("attention.sliding_window_pattern"), layers)?;
            let types: Vec<&str> = sliding
                .iter()
                .map(|&s| {
                    if s {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                })
                .collect();
            let local_theta = match meta.get(&k("rope.freq_base_swa")) {
                Some(_) => meta.f64(&k("rope.freq_base_swa"))?,
                None => 10_000.0,
            };
            // The attention scale, as llama.cpp picks it: 1/sqrt(hidden / heads) for the 27B
            // model (the one with 62 layers), 1/sqrt(head_dim) for the others; transformers
            // calls the square `query_pre_attn_scalar`.
            let scalar = if layers == 62 {
                hidden / heads.max(1)
            } else {
                head_dim
            };
            m.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
            m.insert("sliding_window".into(), json!(window));
            m.insert("layer_types".into(), json!(types));
            m.insert("query_pre_attn_scalar".into(), json!(scalar));
            m.insert("attention_bias".into(), json!(false));
            m.insert("final_logit_softcapping".into(), Json::Null);
            m.insert("attn_logit_softcapping".into(), Json::Null);
            m.insert(
                "rope_parameters".into(),
                json!({
                    "full_attention": {"rope_type": "default", "rope_theta": theta},
                    "sliding_attention": {"rope_type": "default", "rope_theta": local_theta},
                }),
            );
        }
        _ => unreachable!("ARCHS lists only translated architectures"),
    }
    Ok(c.as_object().cloned().unwrap_or_default())
}

/// Which of `layers` layers slide, from `key` (llama.cpp's `sliding_window_pattern`): a period
/// `p` (layer `i` slides unless `i % p == p - 1`; every layer for 0; 6 when absent, Gemma 3's)
/// or one boolean a layer.
fn sliding_layers(meta: &Meta<'_>, key: &str, layers: usize) -> Result<Vec<bool>, SkillError> {
    let period = match meta.get(key) {
        None => 6,
        Some(Value::Array(a)) => {
            if a.len() != layers {
                return Err(invalid(
                    meta.path,
                    key,
                    format!("has {} entries for {layers} layers", a.len()),
                ));
            }
            return a
                .iter()
                .map(|v| {
                    v.to_bool()
                        .map_err(|_| invalid(meta.path, key, "holds a non-boolean"))
                })
                .collect();
        }
        Some(_) => meta.u64(key)? as usize,
    };
    Ok((0..layers)
        .map(|i| period == 0 || i % period < period - 1)
        .collect())
}

/// transformers' name of a GGUF tensor of `arch`.
fn hf_name(arch: &str, name: &str) -> Option<String> {
    let top = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_owned());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = part.rsplit_once('.')?;
    let hf = match (arch, module) {
        (_, "attn_q") => "self_attn.q_proj",
        (_, "attn_k") => "self_attn.k_proj",
        (_, "attn_v") => "self_attn.v_proj",
        (_, "attn_output") => "self_attn.o_proj",
        (_, "ffn_gate") => "mlp.gate_proj",
        (_, "ffn_up") => "mlp.up_proj",
        (_, "ffn_down") => "mlp.down_proj",
        (_, "attn_norm") => "input_layernorm",
        ("llama", "ffn_norm") => "post_attention_layernorm",
        ("gemma3", "attn_q_norm") => "self_attn.q_norm",
        ("gemma3", "attn_k_norm") => "self_attn.k_norm",
        ("gemma3", "post_attention_norm") => "post_attention_layernorm",
        ("gemma3", "ffn_norm") => "pre_feedforward_layernorm",
        ("gemma3", "post_ffw_norm") => "post_feedforward_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Undo llama.cpp's q/k row permutation for `heads` heads (transformers'
/// `_reverse_permute_weights`): HF row `h·2d + j·d + i` is GGUF row `h·2d + 2i + j`. Whole rows
/// move, so quantized blocks move unchanged.
fn unpermute_rows(q: &QTensor, heads: usize) -> candle_core::Result<QTensor> {
    let dims = q.shape().dims().to_vec();
    let rows = dims[0];
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        candle_core::bail!("{rows} rows do not split into {heads} heads of rotary pairs");
    }
    let d = rows / heads / 2;
    let order: Vec<usize> = (0..heads)
        .flat_map(|h| (0..2).flat_map(move |j| (0..d).map(move |i| h * 2 * d + 2 * i + j)))
        .collect();
    let data = q.data()?;
    let row_bytes = data.len() / rows;
    let mut out = Vec::with_capacity(data.len());
    for r in order {
        out.extend_from_slice(&data[r * row_bytes..(r + 1) * row_bytes]);
    }
    let storage = candle_core::quantized::QStorage::from_data(
        std::borrow::Cow::Owned(out),
        &q.device(),
        q.dtype(),
    )?;
    QTensor::new(storage, dims)
}

/// A dense tensor's rows permuted as [`unpermute_rows`] does (for tests).
#[cfg(test)]
fn unpermute_dense(t: &candle_core::Tensor, heads: usize) -> candle_core::Tensor {
    let q = QTensor::quantize(t, GgmlDType::F32).unwrap();
    unpermute_rows(&q, heads)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two heads of head size 4 (2 rotary pairs): GGUF rows [0 1 2 3 | 4 5 6 7] hold
    /// HF rows [0 2 1 3 | 4 6 5 7].
    #[test]
    fn q_rows_are_unpermuted_per_head() {
        let t = candle_core::Tensor::arange(0f32, 8., &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap()
            .broadcast_as((8, 32))
            .unwrap()
            .contiguous()
            .unwrap();
        let got: Vec<f32> = unpermute_dense(&t, 2)
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got, [0., 2., 1., 3., 4., 6., 5., 7.]);
    }

    /// Gemma 3 270M's metadata (as its GGUF file has it), plus `extra`.
    fn gemma3_meta(extra: &[(&str, Value)]) -> Content {
        let mut metadata: HashMap<String, Value> = [
            ("gemma3.context_length", Value::U32(32768)),
            ("gemma3.embedding_length", Value::U32(640)),
            ("gemma3.block_count", Value::U32(18)),
            ("gemma3.feed_forward_length", Value::U32(2048)),
            ("gemma3.attention.head_count", Value::U32(4)),
            ("gemma3.attention.head_count_kv", Value::U32(1)),
            ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
            ("gemma3.attention.key_length", Value::U32(256)),
            ("gemma3.attention.value_length", Value::U32(256)),
            ("gemma3.rope.freq_base", Value::F32(1e6)),
            ("gemma3.attention.sliding_window", Value::U32(512)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            metadata.insert((*k).to_owned(), v.clone());
        }
        Content {
            magic: candle_core::quantized::gguf_file::VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    fn gemma3_config(extra: &[(&str, Value)]) -> Result<Map<String, Json>, SkillError> {
        let content = gemma3_meta(extra);
        let meta = Meta {
            path: Path::new("g.gguf"),
            map: &content.metadata,
        };
        config(&meta, "gemma3", "gemma3_text", 262_144, &content)
    }

    /// llama.cpp's Gemma 3 defaults: every sixth layer global, local RoPE base 10 000, the
    /// attention scale from the head size.
    #[test]
    fn gemma3_metadata_becomes_transformers_config() {
        let c = gemma3_config(&[]).unwrap();
        let types: Vec<&str> = c["layer_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let full: Vec<usize> = (0..types.len())
            .filter(|&i| types[i] == "full_attention")
            .collect();
        assert_eq!(full, [5, 11, 17]);
        assert_eq!(types.len(), 18);
        assert_eq!(c["sliding_window"], 512);
        assert_eq!(c["head_dim"], 256);
        assert_eq!(c["query_pre_attn_scalar"], 256);
        assert_eq!(
            c["rope_parameters"]["sliding_attention"]["rope_theta"],
            10_000.0
        );
        assert_eq!(
            c["rope_parameters"]["full_attention"]["rope_theta"],
            1_000_000.0
        );
        assert_eq!(c["tie_word_embeddings"], true);
        // A pattern and a local base in the file are read.
        let c = gemma3_config(&[
            ("gemma3.attention.sliding_window_pattern", Value::U32(3)),
            ("gemma3.rope.freq_base_swa", Value::F32(20_000.0)),
        ])
        .unwrap();
        assert_eq!(c["layer_types"][2], "full_attention");
        assert_eq!(c["layer_types"][3], "sliding_attention");
        assert_eq!(
            c["rope_parameters"]["sliding_attention"]["rope_theta"],
            20_000.0
        );
    }

    #[test]
    fn sliding_window_patterns_are_llama_cpp_s() {
        let map = HashMap::from([
            ("p".to_owned(), Value::U32(0)),
            (
                "a".to_owned(),
                Value::Array(vec![Value::Bool(true), Value::Bool(false)]),
            ),
        ]);
        let meta = Meta {
            path: Path::new("g.gguf"),
            map: &map,
        };
        assert_eq!(sliding_layers(&meta, "p", 3).unwrap(), [true; 3]);
        assert_eq!(sliding_layers(&meta, "a", 2).unwrap(), [true, false]);
        assert!(sliding_layers(&meta, "a", 3).is_err());
        assert_eq!(
            sliding_layers(&meta, "absent", 7).unwrap(),
            [true, true, true, true, true, false, true]
        );
    }

    /// What has no translation is refused, naming the key: a soft-cap (llama.cpp's Gemma 3
    /// graph with a window ignores it, transformers would apply it), no window, RoPE scaling,
    /// a vocabulary size the tokens contradict.
    #[test]
    fn untranslated_gemma3_metadata_is_refused() {
        let field = |extra: &[(&str, Value)]| match gemma3_config(extra).unwrap_err() {
            SkillError::ConfigField { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(&[("gemma3.final_logit_softcapping", Value::F32(30.0))]),
            "gemma3.final_logit_softcapping"
        );
        assert_eq!(
            field(&[("gemma3.attention.sliding_window", Value::U32(0))]),
            "gemma3.attention.sliding_window"
        );
        assert_eq!(
            field(&[("gemma3.rope.scaling.type", Value::String("linear".into()))]),
            "gemma3.rope.scaling.type"
        );
        assert_eq!(
            field(&[("gemma3.vocab_size", Value::U32(1000))]),
            "gemma3.vocab_size"
        );
    }

    #[test]
    fn gguf_names_map_to_transformers_names() {
        assert_eq!(
            hf_name("llama", "blk.3.attn_q.weight").as_deref(),
            Some("model.layers.3.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("gemma3", "blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.pre_feedforward_layernorm.weight")
        );
        assert_eq!(hf_name("llama", "blk.0.attn_q_norm.weight"), None);
        assert_eq!(hf_name("llama", "rope_freqs.weight"), None);
    }
}
