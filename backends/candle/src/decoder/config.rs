//! `config.json` / `generation_config.json` → candle configs, field by field (never a candle
//! default: transformers v5 moved `rope_theta` into `rope_parameters`, and candle's llama would
//! silently use 10000 without it).

use std::path::{Path, PathBuf};

use candle_nn::Activation;
use candle_transformers::models::{bigcode, gemma, llama, mistral, phi3, qwen2};
use serde_json::Value;

use skillgen_runtime::SkillError;

pub(super) use skillgen_checkpoint::{Fields, read_json};

/// Decoder-specific accessors on the shared config reader.
pub(super) trait DecoderFields {
    fn token_ids(&self, field: &str) -> Result<Vec<u32>, SkillError>;
    fn activation(&self, field: &str) -> Result<Option<Activation>, SkillError>;
    fn rope(&self, key: &str) -> Result<Option<&Value>, SkillError>;
    fn rope_theta(&self) -> Result<f64, SkillError>;
    fn rope_type(&self) -> Result<String, SkillError>;
    fn require_default_rope(&self, model: &str) -> Result<(), SkillError>;
    fn rope_f32(&self, key: &str) -> Result<f32, SkillError>;
    fn heads(&self, hidden: usize) -> Result<(usize, usize, usize), SkillError>;
    fn require_plain_head_dim(
        &self,
        hidden: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<(), SkillError>;
    fn require_false(&self, field: &str, why: &str) -> Result<(), SkillError>;
}

impl DecoderFields for Fields<'_> {
    /// Token ids: an integer, a list of integers, or null/absent (empty).
    fn token_ids(&self, field: &str) -> Result<Vec<u32>, SkillError> {
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    self.err(
                        field,
                        format!("expected a token id or a list of token ids, found {v}"),
                    )
                })
        };
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }

    /// The activation named by `field` (transformers spelling).
    fn activation(&self, field: &str) -> Result<Option<Activation>, SkillError> {
        let Some(name) = self.str_opt(field)? else {
            return Ok(None);
        };
        serde_json::from_value::<Activation>(Value::String(name.to_owned()))
            .map(Some)
            .map_err(|_| {
                self.err(
                    field,
                    format!("activation `{name}` is not supported by candle"),
                )
            })
    }

    /// `rope_parameters.<key>` (transformers v5) or the top-level `<key>` (v4).
    fn rope(&self, key: &str) -> Result<Option<&Value>, SkillError> {
        if let Some(p) = self.get("rope_parameters") {
            let Some(obj) = p.as_object() else {
                return Err(self.err("rope_parameters", format!("expected an object, found {p}")));
            };
            if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                return Ok(Some(v));
            }
        }
        Ok(self.get(key))
    }

    /// The rope base frequency, required: `rope_parameters.rope_theta` or `rope_theta`.
    fn rope_theta(&self) -> Result<f64, SkillError> {
        let field = if self.get("rope_parameters").is_some() {
            "rope_parameters.rope_theta"
        } else {
            "rope_theta"
        };
        match self.rope("rope_theta")? {
            None => Err(self.err(field, "missing (required; candle's default is not used)")),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(self.err(field, format!("expected a positive number, found {v}"))),
            },
        }
    }

    /// The rope type (`default` when absent); `rope_scaling` (v4) is consulted too.
    fn rope_type(&self) -> Result<String, SkillError> {
        let from = |v: &Value, field: &str| match v.as_str() {
            Some(s) => Ok(s.to_owned()),
            None => Err(self.err(field, format!("expected a string, found {v}"))),
        };
        if let Some(v) = self.rope("rope_type")? {
            return from(v, "rope_parameters.rope_type");
        }
        if let Some(s) = self.get("rope_scaling") {
            let Some(obj) = s.as_object() else {
                return Err(self.err("rope_scaling", format!("expected an object, found {s}")));
            };
            if let Some(v) = obj.get("rope_type").or_else(|| obj.get("type")) {
                return from(v, "rope_scaling.rope_type");
            }
        }
        Ok("default".to_owned())
    }

    /// Only plain rope is supported (no scaling): anything else is a typed error.
    fn require_default_rope(&self, model: &str) -> Result<(), SkillError> {
        match self.rope_type()?.as_str() {
            "default" => Ok(()),
            other => Err(self.err(
                "rope_parameters.rope_type",
                format!("rope type `{other}` is not supported for {model} (only `default`)"),
            )),
        }
    }

    fn rope_f32(&self, key: &str) -> Result<f32, SkillError> {
        let field = format!("rope_parameters.{key}");
        match self.rope(key)? {
            None => Err(self.err(&field, "missing (required for llama3 rope)")),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(|x| x as f32)
                .ok_or_else(|| self.err(&field, format!("expected a number, found {v}"))),
        }
    }

    /// `num_attention_heads`, `num_key_value_heads` (default: heads) and `head_dim` (default:
    /// hidden / heads), checked for consistency.
    fn heads(&self, hidden: usize) -> Result<(usize, usize, usize), SkillError> {
        let heads = self.positive("num_attention_heads")?;
        let kv = self.positive_opt("num_key_value_heads")?.unwrap_or(heads);
        if heads % kv != 0 {
            return Err(self.err(
                "num_key_value_heads",
                format!("{kv} does not divide num_attention_heads {heads}"),
            ));
        }
        let head_dim = match self.positive_opt("head_dim")? {
            Some(d) => d,
            None if hidden.is_multiple_of(heads) => hidden / heads,
            None => {
                return Err(self.err(
                    "num_attention_heads",
                    format!("{heads} does not divide hidden_size {hidden}"),
                ));
            }
        };
        Ok((heads, kv, head_dim))
    }

    /// candle's model computes `head_dim = hidden / heads`: a different `head_dim` is refused.
    fn require_plain_head_dim(
        &self,
        hidden: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<(), SkillError> {
        if !hidden.is_multiple_of(heads) || hidden / heads != head_dim {
            return Err(self.err(
                "head_dim",
                format!(
                    "{head_dim} ≠ hidden_size / num_attention_heads ({hidden} / {heads}); candle's implementation of this model type requires equality"
                ),
            ));
        }
        Ok(())
    }

    fn require_false(&self, field: &str, why: &str) -> Result<(), SkillError> {
        if self.bool_or(field, false)? {
            return Err(self.err(field, format!("`true` is not supported: {why}")));
        }
        Ok(())
    }
}

/// The size of the model's position table / rope cache.
pub(super) fn max_positions(f: &Fields<'_>, field: &str) -> Result<usize, SkillError> {
    f.positive(field)
}

/// Translate for candle's llama.
pub(super) fn llama(f: &Fields<'_>) -> Result<llama::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_false("attention_bias", "candle's llama has no attention biases")?;
    f.require_false("mlp_bias", "candle's llama has no MLP biases")?;
    match f.str_opt("hidden_act")? {
        None | Some("silu") => {}
        Some(other) => {
            return Err(f.err(
                "hidden_act",
                format!("`{other}` is not supported: candle's llama uses silu"),
            ));
        }
    }
    let rope_scaling = match f.rope_type()?.as_str() {
        "default" => None,
        "llama3" => Some(llama::Llama3RopeConfig {
            factor: f.rope_f32("factor")?,
            low_freq_factor: f.rope_f32("low_freq_factor")?,
            high_freq_factor: f.rope_f32("high_freq_factor")?,
            original_max_position_embeddings: f
                .rope("original_max_position_embeddings")?
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    f.err(
                        "rope_parameters.original_max_position_embeddings",
                        "missing or not an integer (required for llama3 rope)",
                    )
                })?,
            rope_type: llama::Llama3RopeType::Llama3,
        }),
        other => {
            return Err(f.err(
                "rope_parameters.rope_type",
                format!("rope type `{other}` is not supported for llama (default, llama3)"),
            ));
        }
    };
    Ok(llama::Config {
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        vocab_size: f.positive("vocab_size")?,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        use_flash_attn: false,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        rope_theta: f.rope_theta()? as f32,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
    })
}

/// Translate for candle's qwen2.
pub(super) fn qwen2(f: &Fields<'_>) -> Result<qwen2::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("qwen2")?;
    let max_position_embeddings = max_positions(f, "max_position_embeddings")?;
    let num_hidden_layers = f.positive("num_hidden_layers")?;
    // candle applies the window to every layer; transformers only when use_sliding_window.
    let sliding_window = if f.bool_or("use_sliding_window", false)? {
        let w = f.positive("sliding_window")?;
        let from = f
            .usize_opt("max_window_layers")?
            .unwrap_or(num_hidden_layers);
        if w < max_position_embeddings && from < num_hidden_layers {
            return Err(f.err(
                "use_sliding_window",
                "a sliding window on only some layers is not supported by candle's qwen2",
            ));
        }
        w
    } else {
        max_position_embeddings
    };
    Ok(qwen2::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_hidden_layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        max_position_embeddings,
        sliding_window,
        max_window_layers: f
            .usize_opt("max_window_layers")?
            .unwrap_or(num_hidden_layers),
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        rope_theta: f.rope_theta()?,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        use_sliding_window: false,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
    })
}

/// Translate for candle's mistral.
pub(super) fn mistral(f: &Fields<'_>) -> Result<mistral::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_default_rope("mistral")?;
    f.require_false("attention_bias", "candle's mistral has no attention biases")?;
    Ok(mistral::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_attention_heads: heads,
        head_dim: Some(head_dim),
        num_key_value_heads: kv,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        rope_theta: f.rope_theta()?,
        sliding_window: f.positive_opt("sliding_window")?,
        use_flash_attn: false,
    })
}

/// Translate for candle's phi3.
pub(super) fn phi3(f: &Fields<'_>) -> Result<phi3::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("phi3")?;
    let partial_rotary_factor = match f.rope("partial_rotary_factor")? {
        None => None,
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x <= 1.0 => Some(x),
            _ => {
                return Err(f.err(
                    "rope_parameters.partial_rotary_factor",
                    format!("expected a number in (0, 1], found {v}"),
                ));
            }
        },
    };
    Ok(phi3::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        rope_theta: f.rope_theta()?,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        original_max_position_embeddings: f.usize_opt("original_max_position_embeddings")?,
        partial_rotary_factor,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
    })
}

/// Translate for candle's gemma (which always ties `lm_head` to the embeddings).
pub(super) fn gemma(f: &Fields<'_>) -> Result<gemma::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_default_rope("gemma")?;
    if !f.bool_or("tie_word_embeddings", true)? {
        return Err(f.err(
            "tie_word_embeddings",
            "`false` is not supported: candle's gemma always ties lm_head to embed_tokens",
        ));
    }
    // transformers' GemmaMLP uses `hidden_activation`; `hidden_act` is the legacy name.
    let act = match f.activation("hidden_activation")? {
        Some(a) => a,
        None => f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_activation", "missing (required)"))?,
    };
    Ok(gemma::Config {
        attention_bias: f.bool_or("attention_bias", false)?,
        head_dim,
        hidden_act: None,
        hidden_activation: Some(act),
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_attention_heads: heads,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_key_value_heads: kv,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        rope_theta: f.rope_theta()?,
        vocab_size: f.positive("vocab_size")?,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
    })
}

/// The fields of candle's (non-`Clone`, non-serde) bigcode config.
#[derive(Debug, Clone, Copy)]
pub(super) struct BigCode {
    vocab_size: usize,
    n_positions: usize,
    n_layer: usize,
    n_embd: usize,
    eps: f64,
    n_inner: usize,
    n_head: usize,
    multi_query: bool,
}

impl BigCode {
    pub(super) fn to_candle(self) -> bigcode::Config {
        bigcode::Config {
            vocab_size: self.vocab_size,
            max_position_embeddings: self.n_positions,
            num_hidden_layers: self.n_layer,
            hidden_size: self.n_embd,
            layer_norm_epsilon: self.eps,
            n_inner: Some(self.n_inner),
            num_attention_heads: self.n_head,
            multi_query: self.multi_query,
            use_cache: true,
        }
    }

    pub(super) fn max_positions(self) -> usize {
        self.n_positions
    }
}

/// Build candle's gpt_bigcode config from the HF names (`n_embd`, `n_layer`, ...).
pub(super) fn gpt_bigcode(f: &Fields<'_>) -> Result<BigCode, SkillError> {
    let n_embd = f.positive("n_embd")?;
    let n_head = f.positive("n_head")?;
    if n_embd % n_head != 0 {
        return Err(f.err(
            "n_head",
            format!("{n_head} does not divide n_embd {n_embd}"),
        ));
    }
    match f.str_opt("activation_function")? {
        None | Some("gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") => {}
        Some(other) => {
            return Err(f.err(
                "activation_function",
                format!(
                    "`{other}` is not supported: candle's gpt_bigcode uses tanh-approximated gelu"
                ),
            ));
        }
    }
    if !f.bool_or("tie_word_embeddings", true)? {
        return Err(f.err(
            "tie_word_embeddings",
            "`false` is not supported: candle's gpt_bigcode always ties lm_head to wte",
        ));
    }
    if !f.bool_or("scale_attn_weights", true)? {
        return Err(f.err("scale_attn_weights", "`false` is not supported by candle"));
    }
    f.require_false(
        "add_cross_attention",
        "candle's gpt_bigcode has no cross-attention",
    )?;
    Ok(BigCode {
        vocab_size: f.positive("vocab_size")?,
        n_positions: max_positions(f, "n_positions")?,
        n_layer: f.positive("n_layer")?,
        n_embd,
        eps: f.f64("layer_norm_epsilon")?,
        n_inner: f.positive_opt("n_inner")?.unwrap_or(4 * n_embd),
        n_head,
        multi_query: f.bool_or("multi_query", true)?,
    })
}

/// End-of-sequence ids: `generation_config.json` when it names them, else `config.json`.
pub(super) fn eos_ids(dir: &Path, config: &Fields<'_>) -> Result<Vec<u32>, SkillError> {
    let path: PathBuf = dir.join("generation_config.json");
    if path.is_file() {
        let map = read_json(&path)?;
        let g = Fields {
            path: &path,
            map: &map,
        };
        if map.contains_key("eos_token_id") {
            return g.token_ids("eos_token_id");
        }
    }
    config.token_ids("eos_token_id")
}

/// Refuse sliding-window layers that candle cannot reproduce (qwen3: not supported at all).
fn require_no_sliding(f: &Fields<'_>, model: &str) -> Result<(), SkillError> {
    if f.bool_or("use_sliding_window", false)? {
        return Err(f.err(
            "use_sliding_window",
            format!("`true` is not supported by candle's {model}"),
        ));
    }
    Ok(())
}

/// Translate for candle's qwen3 (explicit `head_dim`, per-head q/k norms).
pub(super) fn qwen3(
    f: &Fields<'_>,
) -> Result<candle_transformers::models::qwen3::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_default_rope("qwen3")?;
    require_no_sliding(f, "qwen3")?;
    let num_hidden_layers = f.positive("num_hidden_layers")?;
    Ok(candle_transformers::models::qwen3::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_hidden_layers,
        num_attention_heads: heads,
        head_dim,
        attention_bias: f.bool_or("attention_bias", false)?,
        num_key_value_heads: kv,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        sliding_window: None,
        max_window_layers: f
            .usize_opt("max_window_layers")?
            .unwrap_or(num_hidden_layers),
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        rope_theta: f.rope_theta()?,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        use_sliding_window: false,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
    })
}

/// Translate for candle's olmo2.
pub(super) fn olmo2(
    f: &Fields<'_>,
) -> Result<candle_transformers::models::olmo2::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("olmo2")?;
    Ok(candle_transformers::models::olmo2::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        attention_bias: f.bool_or("attention_bias", false)?,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        rope_theta: f.rope_theta()?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        clip_qkv: f.f64_opt("clip_qkv")?,
    })
}

/// Translate for candle's starcoder2, whose config fields are private: the translated values
/// are written out explicitly and deserialised (no serde default is relied on).
pub(super) fn starcoder2(
    f: &Fields<'_>,
) -> Result<candle_transformers::models::starcoder2::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("starcoder2")?;
    if !f.bool_or("tie_word_embeddings", true)? {
        return Err(f.err(
            "tie_word_embeddings",
            "`false` is not supported: candle's starcoder2 always ties lm_head to embed_tokens",
        ));
    }
    let act = f
        .activation("hidden_act")?
        .ok_or_else(|| f.err("hidden_act", "missing (required)"))?;
    let v = serde_json::json!({
        "vocab_size": f.positive("vocab_size")?,
        "hidden_size": hidden_size,
        "intermediate_size": f.positive("intermediate_size")?,
        "num_hidden_layers": f.positive("num_hidden_layers")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "hidden_act": act,
        "max_position_embeddings": max_positions(f, "max_position_embeddings")?,
        "norm_epsilon": f.f64("norm_epsilon")?,
        "rope_theta": f.rope_theta()?,
        "use_bias": f.bool_or("use_bias", true)?,
        "sliding_window": f.positive_opt("sliding_window")?,
    });
    serde_json::from_value(v).map_err(|e| SkillError::ConfigInvalid {
        path: f.path.to_path_buf(),
        detail: format!("building candle's starcoder2 config: {e}"),
    })
}

/// Translate for candle's gemma2, and the context it can serve: candle applies
/// `sliding_window` to every layer where transformers alternates sliding and full layers, so
/// the two agree only while the sequence fits the window; the context is capped there.
pub(super) fn gemma2(
    f: &Fields<'_>,
) -> Result<(candle_transformers::models::gemma2::Config, usize), SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_default_rope("gemma2")?;
    if !f.bool_or("tie_word_embeddings", true)? {
        return Err(f.err(
            "tie_word_embeddings",
            "`false` is not supported: candle's gemma2 always ties lm_head to embed_tokens",
        ));
    }
    f.require_false(
        "use_bidirectional_attention",
        "candle's gemma2 is causal only",
    )?;
    let act = match f.activation("hidden_activation")? {
        Some(a) => a,
        None => f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_activation", "missing (required)"))?,
    };
    // candle scales attention scores by 1/sqrt(head_dim); transformers by
    // 1/sqrt(query_pre_attn_scalar).
    let query_pre_attn_scalar = f
        .positive_opt("query_pre_attn_scalar")?
        .ok_or_else(|| f.err("query_pre_attn_scalar", "missing (required)"))?;
    if query_pre_attn_scalar != head_dim {
        return Err(f.err(
            "query_pre_attn_scalar",
            format!(
                "{query_pre_attn_scalar} ≠ head_dim {head_dim}: candle's gemma2 scales attention by 1/sqrt(head_dim), so it would compute different logits"
            ),
        ));
    }
    let max_position_embeddings = max_positions(f, "max_position_embeddings")?;
    let sliding_window = f.positive_opt("sliding_window")?;
    let context =
        sliding_window.map_or(max_position_embeddings, |w| w.min(max_position_embeddings));
    Ok((
        candle_transformers::models::gemma2::Config {
            attention_bias: f.bool_or("attention_bias", false)?,
            head_dim,
            hidden_activation: act,
            hidden_size,
            intermediate_size: f.positive("intermediate_size")?,
            num_attention_heads: heads,
            num_hidden_layers: f.positive("num_hidden_layers")?,
            num_key_value_heads: kv,
            rms_norm_eps: f.f64("rms_norm_eps")?,
            rope_theta: f.rope_theta()?,
            vocab_size: f.positive("vocab_size")?,
            final_logit_softcapping: f.f64_opt("final_logit_softcapping")?,
            attn_logit_softcapping: f.f64_opt("attn_logit_softcapping")?,
            query_pre_attn_scalar,
            sliding_window,
            max_position_embeddings,
        },
        context,
    ))
}

/// Translate for candle's olmo (v1: non-parametric LayerNorm, optional `clip_qkv`).
pub(super) fn olmo(
    f: &Fields<'_>,
) -> Result<candle_transformers::models::olmo::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("olmo")?;
    Ok(candle_transformers::models::olmo::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        attention_bias: f.bool_or("attention_bias", false)?,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        rope_theta: f.rope_theta()?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        clip_qkv: f.f64_opt("clip_qkv")?,
    })
}

/// `partial_rotary_factor` from `rope_parameters` (v5) or the top level, in (0, 1].
fn partial_rotary_factor(f: &Fields<'_>) -> Result<Option<f64>, SkillError> {
    match f.rope("partial_rotary_factor")? {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x <= 1.0 => Ok(Some(x)),
            _ => Err(f.err(
                "rope_parameters.partial_rotary_factor",
                format!("expected a number in (0, 1], found {v}"),
            )),
        },
    }
}

fn deserialize<T: serde::de::DeserializeOwned>(
    f: &Fields<'_>,
    model: &str,
    v: Value,
) -> Result<T, SkillError> {
    serde_json::from_value(v).map_err(|e| SkillError::ConfigInvalid {
        path: f.path.to_path_buf(),
        detail: format!("building candle's {model} config: {e}"),
    })
}

/// Translate for candle's phi (phi-1/1.5/2; private config fields: built through serde).
pub(super) fn phi(f: &Fields<'_>) -> Result<candle_transformers::models::phi::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("phi")?;
    f.require_false(
        "tie_word_embeddings",
        "candle's phi has a separate, biased lm_head",
    )?;
    let v = serde_json::json!({
        "vocab_size": f.positive("vocab_size")?,
        "hidden_size": hidden_size,
        "intermediate_size": f.positive("intermediate_size")?,
        "num_hidden_layers": f.positive("num_hidden_layers")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "hidden_act": f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        "max_position_embeddings": max_positions(f, "max_position_embeddings")?,
        "layer_norm_eps": f.f64("layer_norm_eps")?,
        "tie_word_embeddings": false,
        "rope_theta": f.rope_theta()?,
        "partial_rotary_factor": partial_rotary_factor(f)?.unwrap_or(1.0),
        "qk_layernorm": f.bool_or("qk_layernorm", false)?,
    });
    deserialize(f, "phi", v)
}

/// Translate for candle's stable_lm (private config fields: built through serde).
pub(super) fn stablelm(
    f: &Fields<'_>,
) -> Result<(candle_transformers::models::stable_lm::Config, usize, usize), SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("stablelm")?;
    f.require_false("qk_layernorm", "candle's stable_lm has no q/k layer norms")?;
    f.require_false(
        "use_parallel_residual",
        "candle's stable_lm uses sequential residuals",
    )?;
    f.require_false(
        "tie_word_embeddings",
        "candle's stable_lm always loads a separate lm_head",
    )?;
    let vocab_size = f.positive("vocab_size")?;
    let max_position_embeddings = max_positions(f, "max_position_embeddings")?;
    let v = serde_json::json!({
        "vocab_size": vocab_size,
        "intermediate_size": f.positive("intermediate_size")?,
        "hidden_size": hidden_size,
        "num_hidden_layers": f.positive("num_hidden_layers")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "hidden_act": f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        "partial_rotary_factor": partial_rotary_factor(f)?
            .ok_or_else(|| f.err("rope_parameters.partial_rotary_factor", "missing (required)"))?,
        "rope_theta": f.rope_theta()?,
        "max_position_embeddings": max_position_embeddings,
        "layer_norm_eps": f.f64("layer_norm_eps")?,
        "use_cache": true,
        "use_qkv_bias": f.bool_or("use_qkv_bias", false)?,
        "use_flash_attn": false,
    });
    Ok((
        deserialize(f, "stable_lm", v)?,
        vocab_size,
        max_position_embeddings,
    ))
}

/// Translate for candle's mixtral (private config fields: built through serde).
pub(super) fn mixtral(
    f: &Fields<'_>,
) -> Result<(candle_transformers::models::mixtral::Config, usize, usize), SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("mixtral")?;
    f.require_false(
        "tie_word_embeddings",
        "candle's mixtral always loads a separate lm_head",
    )?;
    let vocab_size = f.positive("vocab_size")?;
    let max_position_embeddings = max_positions(f, "max_position_embeddings")?;
    let experts = f.positive("num_local_experts")?;
    let per_tok = f.positive("num_experts_per_tok")?;
    if per_tok > experts {
        return Err(f.err(
            "num_experts_per_tok",
            format!("{per_tok} > num_local_experts {experts}"),
        ));
    }
    let v = serde_json::json!({
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": f.positive("intermediate_size")?,
        "num_hidden_layers": f.positive("num_hidden_layers")?,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "hidden_act": f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": f.f64("rms_norm_eps")?,
        "rope_theta": f.rope_theta()?,
        // null: no window; candle wants a number.
        "sliding_window": f.positive_opt("sliding_window")?.unwrap_or(max_position_embeddings),
        "num_experts_per_tok": per_tok,
        "num_local_experts": experts,
        "use_flash_attn": false,
    });
    Ok((
        deserialize(f, "mixtral", v)?,
        vocab_size,
        max_position_embeddings,
    ))
}

/// The MoE fields shared by qwen2_moe and qwen3_moe: (experts, per token, moe size, sparse step).
fn qwen_moe(f: &Fields<'_>) -> Result<(usize, usize, usize, usize), SkillError> {
    // transformers v5 writes `num_local_experts` for qwen3_moe, `num_experts` for qwen2_moe.
    let experts = match f.positive_opt("num_experts")? {
        Some(n) => n,
        None => f.positive("num_local_experts")?,
    };
    let per_tok = f.positive("num_experts_per_tok")?;
    if per_tok > experts {
        return Err(f.err(
            "num_experts_per_tok",
            format!("{per_tok} > the number of experts {experts}"),
        ));
    }
    match f.get("mlp_only_layers") {
        None => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(v) => {
            return Err(f.err(
                "mlp_only_layers",
                format!("{v} is not supported by candle (only decoder_sparse_step)"),
            ));
        }
    }
    Ok((
        experts,
        per_tok,
        f.positive("moe_intermediate_size")?,
        f.positive_opt("decoder_sparse_step")?.unwrap_or(1),
    ))
}

/// Translate for candle's qwen2_moe.
pub(super) fn qwen2_moe(
    f: &Fields<'_>,
) -> Result<candle_transformers::models::qwen2_moe::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("qwen2_moe")?;
    require_no_sliding(f, "qwen2_moe")?;
    f.require_false(
        "tie_word_embeddings",
        "candle's qwen2_moe always loads a separate lm_head",
    )?;
    if !f.bool_or("qkv_bias", true)? {
        return Err(f.err(
            "qkv_bias",
            "`false` is not supported: candle's qwen2_moe always has q/k/v biases",
        ));
    }
    let (num_experts, num_experts_per_tok, moe_intermediate_size, decoder_sparse_step) =
        qwen_moe(f)?;
    let max_position_embeddings = max_positions(f, "max_position_embeddings")?;
    let num_hidden_layers = f.positive("num_hidden_layers")?;
    Ok(candle_transformers::models::qwen2_moe::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_hidden_layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        max_position_embeddings,
        // use_sliding_window is false: no window (v5 may write 0 or null here).
        sliding_window: max_position_embeddings,
        max_window_layers: num_hidden_layers,
        tie_word_embeddings: false,
        rope_theta: f.rope_theta()?,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        use_sliding_window: false,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        decoder_sparse_step,
        moe_intermediate_size,
        shared_expert_intermediate_size: f.positive("shared_expert_intermediate_size")?,
        num_experts_per_tok,
        num_experts,
        norm_topk_prob: f.bool_or("norm_topk_prob", false)?,
    })
}

/// Translate for candle's qwen3_moe.
pub(super) fn qwen3_moe(
    f: &Fields<'_>,
) -> Result<candle_transformers::models::qwen3_moe::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_default_rope("qwen3_moe")?;
    require_no_sliding(f, "qwen3_moe")?;
    let (num_experts, num_experts_per_tok, moe_intermediate_size, decoder_sparse_step) =
        qwen_moe(f)?;
    let num_hidden_layers = f.positive("num_hidden_layers")?;
    Ok(candle_transformers::models::qwen3_moe::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_hidden_layers,
        num_attention_heads: heads,
        head_dim,
        attention_bias: f.bool_or("attention_bias", false)?,
        num_key_value_heads: kv,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        sliding_window: None,
        max_window_layers: num_hidden_layers,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        rope_theta: f.rope_theta()?,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        use_sliding_window: false,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        decoder_sparse_step,
        moe_intermediate_size,
        num_experts_per_tok,
        num_experts,
        norm_topk_prob: f.bool_or("norm_topk_prob", false)?,
    })
}

/// Translate for candle's helium.
pub(super) fn helium(
    f: &Fields<'_>,
) -> Result<candle_transformers::models::helium::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_default_rope("helium")?;
    let eos = f.token_ids("eos_token_id")?;
    Ok(candle_transformers::models::helium::Config {
        attention_bias: f.bool_or("attention_bias", false)?,
        // Only informative in candle (generation reads EOS ids separately).
        bos_token_id: f.token_ids("bos_token_id")?.first().copied().unwrap_or(0),
        eos_token_id: eos.first().copied().unwrap_or(0),
        head_dim,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        mlp_bias: f.bool_or("mlp_bias", false)?,
        num_attention_heads: heads,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_key_value_heads: kv,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        rope_theta: f.rope_theta()?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        vocab_size: f.positive("vocab_size")?,
        use_flash_attn: false,
    })
}

/// Translate for candle's smollm3 (NoPE layers from `no_rope_layers`, 1 = rope, 0 = none).
pub(super) fn smollm3(
    f: &Fields<'_>,
) -> Result<candle_transformers::models::smol::smollm3::Config, SkillError> {
    let hidden_size = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden_size)?;
    f.require_plain_head_dim(hidden_size, heads, head_dim)?;
    f.require_default_rope("smollm3")?;
    require_no_sliding(f, "smollm3")?;
    let num_hidden_layers = f.positive("num_hidden_layers")?;
    let (no_rope_layers, no_rope_layer_interval) = match f.get("no_rope_layers") {
        Some(Value::Array(a)) => {
            let list: Option<Vec<usize>> = a
                .iter()
                .map(|v| v.as_u64().filter(|&n| n <= 1).map(|n| n as usize))
                .collect();
            match list {
                Some(l) if l.len() == num_hidden_layers => (Some(l), None),
                _ => {
                    return Err(f.err(
                        "no_rope_layers",
                        format!("expected {num_hidden_layers} entries of 0 or 1"),
                    ));
                }
            }
        }
        Some(v) => return Err(f.err("no_rope_layers", format!("expected a list, found {v}"))),
        None => (None, f.positive_opt("no_rope_layer_interval")?),
    };
    Ok(candle_transformers::models::smol::smollm3::Config {
        vocab_size: f.positive("vocab_size")?,
        hidden_size,
        intermediate_size: f.positive("intermediate_size")?,
        num_hidden_layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        max_position_embeddings: max_positions(f, "max_position_embeddings")?,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        rope_theta: f.rope_theta()?,
        rms_norm_eps: f.f64("rms_norm_eps")?,
        hidden_act: f
            .activation("hidden_act")?
            .ok_or_else(|| f.err("hidden_act", "missing (required)"))?,
        attention_bias: Some(f.bool_or("attention_bias", false)?),
        attention_dropout: None,
        mlp_bias: Some(f.bool_or("mlp_bias", false)?),
        sliding_window: None,
        use_sliding_window: Some(false),
        rope_scaling: None,
        bos_token_id: None,
        eos_token_id: None,
        pad_token_id: None,
        max_window_layers: None,
        no_rope_layers,
        no_rope_layer_interval,
    })
}
