//! `config.json` → [`Spec`] and [`Names`], field by field, per model type.
//!
//! Each model type starts from the layout it shares (Llama, GPT-2, GPT-NeoX, GPT-J, Falcon,
//! BLOOM, OPT, MPT) and turns on the switches its transformers implementation has. A config
//! value with no switch (a rope type, a layer type, an option that changes the computation)
//! is a [`SkillError::ConfigField`] naming the field; a model type with no translation is
//! refused by [`translate`].

use serde_json::Value;
use skillgen_runtime::SkillError;

use super::config::{DecoderFields, Fields};
use super::spec::{
    Absolute, Act, AttnGate, FusedExperts, FusedQkv, HeadTransform, LayerSpec, Mla, Mlp, Moe,
    Names, NormKind, QkNorm, Rope, Routing, SeqPool, Spec, Yarn,
};

type R<T> = Result<T, SkillError>;

/// The model types [`translate`] knows.
pub const MODEL_TYPES: &[&str] = &[
    "gemma4_text",
    "recurrent_gemma",
    "doge",
    "rwkv",
    "falcon_h1",
    "modernbert-decoder",
    "minimax_m3_vl_text",
    "gemma4_unified_text",
    "mimo_v2_flash",
    "diffllama",
    "lfm2_moe",
    "lfm2",
    "nemotron_h",
    "granitemoehybrid",
    "bamba",
    "jamba",
    "mamba2",
    "falcon_mamba",
    "mamba",
    "llama4_text",
    "glm_moe_dsa",
    "deepseek_v32",
    "gpt_neox_japanese",
    "beam",
    "apertus",
    "axk1",
    "dbrx",
    "cohere2_moe",
    "laguna",
    "afmoe",
    "kolibri1",
    "flint",
    "granitemoe_swa",
    "bitnet",
    "exaone_moe",
    "ernie4_5_moe",
    "hy_v3",
    "mellum",
    "minimax_m2",
    "hunyuan_v1_moe",
    "aria_text",
    "cohere_compass_text",
    "nanochat",
    "granite_swa",
    "ctrl",
    "xglm",
    "persimmon",
    "openai-gpt",
    "granitemoeshared",
    "ministral3",
    "biogpt",
    "bert-generation",
    "trocr",
    "gpt_neo",
    "hyperclovax",
    "jais2",
    "nemotron",
    "phimoe",
    "flex_olmo",
    "glm4_moe_lite",
    "youtu",
    "solar_open",
    "dots1",
    "glm4_moe",
    "iquestcoder",
    "arcee",
    "bloom",
    "codegen",
    "cohere",
    "cohere2",
    "cwm",
    "deepseek_v2",
    "deepseek_v3",
    "ernie4_5",
    "esmc",
    "eurobert",
    "exaone4",
    "falcon",
    "gemma",
    "gemma2",
    "gemma3_text",
    "glm",
    "glm4",
    "gpt2",
    "gpt_bigcode",
    "gpt_neox",
    "gpt_oss",
    "gptj",
    "granite",
    "granitemoe",
    "helium",
    "hunyuan_v1_dense",
    "internlm3",
    "llama",
    "minicpm3",
    "ministral",
    "mistral",
    "mixtral",
    "mpt",
    "nemotron",
    "olmo",
    "olmo2",
    "olmo3",
    "olmoe",
    "openai_privacy_filter",
    "opt",
    "phi",
    "phi3",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "seed_oss",
    "smollm3",
    "stablelm",
    "starcoder2",
    "ultrabert",
    "vaultgemma",
];

/// Translate `config.json` (read into `f`) of `model_type`.
pub(super) fn translate(model_type: &str, f: &Fields<'_>) -> R<(Spec, Names)> {
    match model_type {
        "gpt2" | "gpt_bigcode" => gpt2(model_type, f),
        "gpt_neo" => gpt_neo(f),
        "modernbert-decoder" => modernbert_decoder(f),
        "mamba" | "falcon_mamba" => mamba(model_type, f),
        "mamba2" => mamba2(f),
        "recurrent_gemma" => recurrent_gemma(f),
        "rwkv" => rwkv(f),
        "falcon_h1" => falcon_h1(f),
        "lfm2" | "lfm2_moe" => lfm2(model_type, f),
        "nemotron_h" => nemotron_h(f),
        "bamba" | "granitemoehybrid" => mamba2_hybrid(model_type, f),
        "jamba" => jamba(f),
        "dbrx" => dbrx(f),
        "openai-gpt" => openai_gpt(f),
        "persimmon" => persimmon(f),
        "xglm" => xglm(f),
        "ctrl" => ctrl(f),
        "biogpt" => biogpt(f),
        "bert-generation" => bert_generation(f),
        "trocr" => trocr(f),
        "gpt_neox" | "gpt_neox_japanese" => gpt_neox(model_type, f),
        "gptj" | "codegen" => gptj(model_type, f),
        "falcon" => falcon(f),
        "bloom" => bloom(f),
        "opt" => opt(f),
        "mpt" => mpt(f),
        "phi" => phi(f),
        t if MODEL_TYPES.contains(&t) => llama_like(t, f),
        other => Err(SkillError::Backend {
            backend: skillgen_runtime::BackendKind::Candle,
            detail: format!("model type `{other}` has no translation for the candle decoder"),
        }),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

/// A positive float field, or `default` when absent or null.
fn float_or(f: &Fields<'_>, field: &str, default: f64) -> R<f64> {
    Ok(f.f64_opt(field)?.unwrap_or(default))
}

/// `rope_parameters` of one layer kind: `rope_parameters[kind]` when it is keyed by layer
/// type (Gemma 3), else the shared parameters.
fn rope_params<'a>(
    f: &'a Fields<'_>,
    kind: Option<&str>,
) -> R<Option<&'a serde_json::Map<String, Value>>> {
    let Some(p) = f.get("rope_parameters") else {
        return Ok(None);
    };
    let Some(obj) = p.as_object() else {
        return Err(f.err("rope_parameters", format!("expected an object, found {p}")));
    };
    if let Some(kind) = kind
        && let Some(Value::Object(sub)) = obj.get(kind)
    {
        return Ok(Some(sub));
    }
    if obj.values().any(Value::is_object) {
        return Err(f.err(
            "rope_parameters",
            format!(
                "keyed by layer type, but has no entry for `{}`",
                kind.unwrap_or("the layer")
            ),
        ));
    }
    Ok(Some(obj))
}

/// The rotary embedding of layer kind `kind` over `head_dim` dims (times
/// `partial_rotary_factor`, or `rotary_dims` when given).
fn rope(
    f: &Fields<'_>,
    kind: Option<&str>,
    head_dim: usize,
    interleaved: bool,
    rotary_dims: Option<usize>,
) -> R<Rope> {
    let p = rope_params(f, kind)?;
    let field = |k: &str| -> Option<&Value> {
        p.and_then(|m| m.get(k))
            .filter(|v| !v.is_null())
            .or_else(|| f.get(k))
    };
    let pf = |k: &str| -> String {
        match (p.is_some(), kind) {
            (true, Some(kd)) if f.get("rope_parameters").and_then(|v| v.get(kd)).is_some() => {
                format!("rope_parameters.{kd}.{k}")
            }
            (true, _) => format!("rope_parameters.{k}"),
            _ => k.to_owned(),
        }
    };
    let theta = match field("rope_theta") {
        Some(v) => num(v).filter(|x| *x > 0.0).ok_or_else(|| {
            f.err(
                &pf("rope_theta"),
                format!("expected a positive number, found {v}"),
            )
        })?,
        None => {
            return Err(f.err(
                &pf("rope_theta"),
                "missing (required; no default is assumed)",
            ));
        }
    };
    let dims = match rotary_dims {
        Some(d) => d,
        None => match field("partial_rotary_factor") {
            None => head_dim,
            Some(v) => {
                let x = num(v).filter(|x| *x > 0.0 && *x <= 1.0).ok_or_else(|| {
                    f.err(
                        &pf("partial_rotary_factor"),
                        format!("expected a number in (0, 1], found {v}"),
                    )
                })?;
                (head_dim as f64 * x) as usize
            }
        },
    };
    if dims == 0 || dims % 2 != 0 || dims > head_dim {
        return Err(f.err(
            &pf("partial_rotary_factor"),
            format!("gives {dims} rotary dims of head_dim {head_dim} (need an even number ≥ 2)"),
        ));
    }
    let rope_type = match field("rope_type").or_else(|| field("type")) {
        None => "default".to_owned(),
        Some(v) => v
            .as_str()
            .ok_or_else(|| f.err(&pf("rope_type"), format!("expected a string, found {v}")))?
            .to_owned(),
    };
    let need = |k: &str| -> R<f64> {
        field(k).and_then(num).ok_or_else(|| {
            f.err(
                &pf(k),
                format!("missing or not a number (required by rope type `{rope_type}`)"),
            )
        })
    };
    let opt = |k: &str| field(k).and_then(num);
    let mut yarn = None;
    let mut proportional = None;
    let mut dims = dims;
    let (llama3, linear) = match rope_type.as_str() {
        "default" => (None, None),
        "proportional" => {
            // Gemma 4: the whole head rotates as pairs (i, i + d/2); only the first
            // ⌊factor · d / 2⌋ frequencies are non-zero, with exponents over the whole head.
            let factor = opt("partial_rotary_factor").unwrap_or(1.0);
            proportional = Some((factor * head_dim as f64 / 2.0).floor() as usize);
            dims = head_dim;
            (None, None)
        }
        "yarn" => {
            let orig = need("original_max_position_embeddings")?;
            let factor = match opt("factor") {
                Some(x) => x,
                None => f.positive("max_position_embeddings")? as f64 / orig,
            };
            let mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention_factor = match opt("attention_factor") {
                Some(a) => a,
                None => match (
                    opt("mscale").filter(|x| *x != 0.0),
                    opt("mscale_all_dim").filter(|x| *x != 0.0),
                ) {
                    (Some(m), Some(a)) => mscale(factor, m) / mscale(factor, a),
                    _ => mscale(factor, 1.0),
                },
            };
            let truncate = match f.get("rope_parameters").and_then(|p| p.get("truncate")) {
                Some(Value::Bool(b)) => *b,
                _ => true,
            };
            yarn = Some(Yarn {
                factor,
                beta_fast: opt("beta_fast").filter(|x| *x != 0.0).unwrap_or(32.0),
                beta_slow: opt("beta_slow").filter(|x| *x != 0.0).unwrap_or(1.0),
                original_max_positions: orig,
                truncate,
                attention_factor,
            });
            (None, None)
        }
        "llama3" => (
            Some((
                need("factor")?,
                need("low_freq_factor")?,
                need("high_freq_factor")?,
                need("original_max_position_embeddings")?,
            )),
            None,
        ),
        "linear" => (None, Some(need("factor")?)),
        other => {
            return Err(f.err(
                &pf("rope_type"),
                format!("rope type `{other}` is not implemented by the decoder (default, llama3, linear, yarn, proportional)"),
            ));
        }
    };
    Ok(Rope {
        theta,
        dims,
        interleaved,
        llama3,
        linear,
        yarn,
        inverse: false,
        proportional,
    })
}

/// The first of `fields` present in the config.
fn first_positive(f: &Fields<'_>, fields: &[&str]) -> R<usize> {
    for k in fields {
        if let Some(v) = f.positive_opt(k)? {
            return Ok(v);
        }
    }
    Err(f.err(fields[0], "missing (required)"))
}

/// Per-layer attention windows: `layer_types` (+ `sliding_window`) when present; else the
/// window on every layer when `window_everywhere` and `sliding_window` is set.
fn windows(f: &Fields<'_>, layers: usize, window_everywhere: bool) -> R<Vec<Option<usize>>> {
    if let Some(types) = layer_types(f, layers)? {
        let mut out = Vec::with_capacity(layers);
        for (i, t) in types.iter().enumerate() {
            out.push(match t.as_str() {
                // DSA layers: full causal attention narrowed by the indexer (see `Mla::indexer`).
                "full_attention" | "indexed_attention" => None,
                // Chunked layers: masked by `LayerSpec::chunk` (see `chunks`), no window.
                "chunked_attention" => None,
                "sliding_attention" => Some(f.positive("sliding_window").map_err(|_| {
                    f.err(
                        "sliding_window",
                        format!("layer {i} is a sliding_attention layer, but the window is missing or not positive"),
                    )
                })?),
                other => {
                    return Err(f.err(
                        &format!("layer_types[{i}]"),
                        format!("layer type `{other}` is not implemented by the decoder (full_attention, sliding_attention)"),
                    ));
                }
            });
        }
        return Ok(out);
    }
    let w = if window_everywhere {
        f.positive_opt("sliding_window")?
    } else {
        if f.bool_or("use_sliding_window", false)? {
            return Err(f.err(
                "use_sliding_window",
                "`true` without `layer_types` is not implemented for this model type",
            ));
        }
        None
    };
    Ok(vec![w; layers])
}

/// Per-layer attention chunks: `attention_chunk_size` on `chunked_attention` layers.
fn chunks(f: &Fields<'_>, layers: usize) -> R<Vec<Option<usize>>> {
    let Some(types) = layer_types(f, layers)? else {
        return Ok(vec![None; layers]);
    };
    types
        .iter()
        .map(|t| match t.as_str() {
            "chunked_attention" => f.positive("attention_chunk_size").map(Some),
            _ => Ok(None),
        })
        .collect()
}

fn layer_types(f: &Fields<'_>, layers: usize) -> R<Option<Vec<String>>> {
    let Some(v) = f.get("layer_types") else {
        return Ok(None);
    };
    let Some(a) = v.as_array() else {
        return Err(f.err("layer_types", format!("expected a list, found {v}")));
    };
    if a.len() != layers {
        return Err(f.err(
            "layer_types",
            format!("has {} entries for {layers} layers", a.len()),
        ));
    }
    a.iter()
        .map(|x| {
            x.as_str()
                .map(str::to_owned)
                .ok_or_else(|| f.err("layer_types", format!("expected strings, found {x}")))
        })
        .collect::<R<Vec<_>>>()
        .map(Some)
}

fn act_field(f: &Fields<'_>, fields: &[&str]) -> R<Act> {
    for k in fields {
        if let Some(a) = f.activation(k)? {
            return Ok(a);
        }
    }
    Err(f.err(fields[0], "missing (required)"))
}

fn rms(eps: f64) -> NormKind {
    NormKind::Rms {
        eps,
        plus_one: false,
    }
}

/// Refuse a boolean option the decoder does not implement.
fn refuse_true(f: &Fields<'_>, field: &str, why: &str) -> R<()> {
    f.require_false(field, why)
}

/// Which layers are MoE (Qwen-MoE / DeepSeek / generic schedules).
fn moe_layers(f: &Fields<'_>, layers: usize, experts: usize) -> R<Vec<bool>> {
    if experts == 0 {
        return Ok(vec![false; layers]);
    }
    if let Some(v) = f.get("mlp_layer_types") {
        let a = v
            .as_array()
            .ok_or_else(|| f.err("mlp_layer_types", format!("expected a list, found {v}")))?;
        return a
            .iter()
            .map(|x| match x.as_str() {
                Some("sparse") => Ok(true),
                Some("dense") => Ok(false),
                _ => Err(f.err("mlp_layer_types", format!("unknown entry {x}"))),
            })
            .collect();
    }
    let only: Vec<usize> = match f.get("mlp_only_layers") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().map(|n| n as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| f.err("mlp_only_layers", "expected a list of layer indices"))?,
        _ => Vec::new(),
    };
    if let Some(Value::Array(list)) = f.get("moe_layers") {
        // Llama 4: the listed layers are MoE.
        let list: Vec<usize> = list
            .iter()
            .map(|x| x.as_u64().map(|n| n as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| f.err("moe_layers", "expected a list of layer indices"))?;
        return Ok((0..layers).map(|i| list.contains(&i)).collect());
    }
    if let Some(start) = f.usize_opt("moe_layer_start_index")? {
        // ERNIE 4.5: MoE iff `(i + 1) % interval == 0 and start <= i <= end`.
        let end = f.usize_opt("moe_layer_end_index")?.unwrap_or(layers - 1);
        let interval = f.positive_opt("moe_layer_interval")?.unwrap_or(1);
        return Ok((0..layers)
            .map(|i| (i + 1) % interval == 0 && start <= i && i <= end)
            .collect());
    }
    if let Some(dense) = f.usize_opt("num_dense_layers")? {
        // AFMoE: the first `num_dense_layers` layers are dense.
        return Ok((0..layers).map(|i| i >= dense).collect());
    }
    let step = f.positive_opt("decoder_sparse_step")?.unwrap_or(1);
    let first_dense = f.usize_opt("first_k_dense_replace")?.unwrap_or(0);
    let freq = f.positive_opt("moe_layer_freq")?.unwrap_or(1);
    Ok((0..layers)
        .map(|i| !only.contains(&i) && (i + 1) % step == 0 && i >= first_dense && i % freq == 0)
        .collect())
}

/// Llama-layout decoders: `model.layers.{i}.self_attn.*`, `mlp.*`, RMSNorm unless noted.
fn llama_like(t: &str, f: &Fields<'_>) -> R<(Spec, Names)> {
    let mut n = Names::llama();
    let hidden = f.positive("hidden_size")?;
    let layers = f.positive("num_hidden_layers")?;
    let (heads, kv_heads, head_dim) = f.heads(hidden)?;
    let vocab = f.positive("vocab_size")?;
    let max_positions = f.positive("max_position_embeddings")?;
    let eps_field = [
        "rms_norm_eps",
        "layer_norm_eps",
        "norm_epsilon",
        "layer_norm_epsilon",
        "norm_eps",
    ];
    // OLMo's parameter-free LayerNorm has a fixed epsilon and no field.
    let eps = match eps_field.iter().find_map(|k| f.get(k).and_then(num)) {
        Some(e) => e,
        // OLMo's parameter-free LayerNorm and ESM C's `nn.LayerNorm`s: torch's default.
        None if matches!(t, "olmo" | "esmc") => 1e-5,
        None => return Err(f.err("rms_norm_eps", "missing (required)")),
    };
    let act = if t == "openai_privacy_filter" {
        // No field: every FFN is the clamped-SwiGLU experts, which do not read it.
        Act::Silu
    } else {
        act_field(f, &["hidden_act", "hidden_activation"])?
    };
    let tie_default = matches!(
        t,
        "gemma"
            | "gemma2"
            | "gemma3_text"
            | "vaultgemma"
            | "cohere"
            | "cohere2"
            | "gemma4_unified_text"
    );
    let tie = f.bool_or("tie_word_embeddings", tie_default)?;
    let attn_bias = f.bool_or("attention_bias", false)?;
    let mlp_bias = f.bool_or("mlp_bias", false)?;
    let interleaved = t == "llama4_text"
        || matches!(
            t,
            "openai_privacy_filter"
                | "helium"
                | "cohere"
                | "cohere2"
                | "glm"
                | "glm4"
                | "ernie4_5"
                | "ernie4_5_moe"
                | "cohere2_moe"
        );
    // transformers applies `sliding_window` (when set) to every layer of these types.
    let window_everywhere = matches!(
        t,
        "mistral"
            | "mixtral"
            | "phi3"
            | "starcoder2"
            | "qwen3_moe"
            | "phimoe"
            | "ministral3"
            | "doge"
            | "openai_privacy_filter"
    );
    let mut wins = windows(f, layers, window_everywhere)?;
    if matches!(t, "openai_privacy_filter" | "ultrabert" | "eurobert") {
        // transformers' bidirectional window admits keys with |q − k| ≤ sliding_window: a
        // window of sliding_window + 1 either side.
        for w in wins.iter_mut().flatten() {
            *w += 1;
        }
    }
    let chunks = chunks(f, layers)?;
    let mut spec = Spec {
        vocab,
        hidden,
        heads,
        kv_heads,
        head_dim,
        max_positions,
        layers: Vec::new(),
        ropes: Vec::new(),
        absolute: None,
        norm: rms(eps),
        parallel: false,
        post_norm: false,
        qk_norm: None,
        qk_norm_after_rope: false,
        mla: None,
        qkv_bias: attn_bias,
        o_bias: attn_bias,
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        attn_softcap: None,
        attn_temperature: None,
        clip_qkv: None,
        sinks: false,
        attn_gate: None,
        differential: false,
        sliding_doubles_kv: false,
        v_scale: None,
        v_norm: false,
        doge: false,
        layer_scalar: false,
        ple: None,
        first_layer_no_attn_norm: false,
        lm_transform: None,
        score_transform: None,
        final_norm_kind: None,
        bidirectional: false,
        seq_pool: SeqPool::Last,
        sub_norms: false,
        nope_query_scale: None,
        qk_norm_rope_layers_only: false,
        depth_scaled_residual: false,
        mamba: None,
        mamba2: None,
        short_conv: None,
        rglru: None,
        ffn: true,
        mlp: Mlp {
            gated: true,
            act,
            intermediate: f.positive_opt("intermediate_size")?.unwrap_or(4 * hidden),
            bias: mlp_bias,
        },
        moe: None,
        embed_scale: None,
        embed_norm: false,
        residual_scale: None,
        final_norm: true,
        logits_scale: None,
        final_softcap: None,
        tie,
        head_bias: false,
    };
    // Rope per layer kind (Gemma 3 keys rope_parameters by layer type).
    let per_type = f
        .get("rope_parameters")
        .and_then(Value::as_object)
        .is_some_and(|o| o.values().any(Value::is_object));
    let mut rope_on: Vec<bool> = vec![true; layers];
    // Per-layer head sizes / KV heads (Gemma 4's `per_layer_config`).
    let mut layer_hd: Vec<Option<usize>> = vec![None; layers];
    let mut layer_kv: Vec<Option<usize>> = vec![None; layers];
    let mut layer_rope = vec![Some(0usize); layers];
    let mut mla = None;
    match t {
        "gemma4_unified_text" | "gemma4_text" => {
            if t == "gemma4_text" {
                refuse_true(
                    f,
                    "enable_moe_block",
                    "Gemma 4's MoE block is not implemented",
                )?;
                if let Some(p) = f.positive_opt("hidden_size_per_layer_input")? {
                    spec.ple = Some((p, f.positive("vocab_size_per_layer_input")?));
                }
            }
            spec.norm = rms(eps);
            spec.embed_scale = Some((hidden as f32).sqrt() as f64);
            n.attn_out = Some("post_attention_layernorm".into());
            n.ffn_in = Some("pre_feedforward_layernorm".into());
            n.ffn_out = Some("post_feedforward_layernorm".into());
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: true,
            });
            spec.v_norm = true;
            spec.attn_scale = 1.0;
            spec.layer_scalar = true;
            spec.final_softcap = f.f64_opt("final_logit_softcapping")?;
            if f.usize_opt("num_kv_shared_layers")?.unwrap_or(0) > 0 {
                return Err(f.err(
                    "num_kv_shared_layers",
                    "layers that reuse another layer's keys and values are not implemented",
                ));
            }
            refuse_true(
                f,
                "attention_k_eq_v",
                "keys reused as values are not implemented",
            )?;
            refuse_true(
                f,
                "use_double_wide_mlp",
                "double-wide MLPs are not implemented",
            )?;
            if let Some(Value::Object(per)) = f.get("per_layer_config") {
                for (k, v) in per {
                    let i: usize = k.parse().ok().filter(|i| *i < layers).ok_or_else(|| {
                        f.err("per_layer_config", format!("`{k}` is not a layer index"))
                    })?;
                    let Some(o) = v.as_object() else {
                        return Err(
                            f.err("per_layer_config", format!("entry `{k}` is not an object"))
                        );
                    };
                    for key in o.keys() {
                        if !matches!(key.as_str(), "head_dim" | "num_key_value_heads") {
                            return Err(f.err(
                                &format!("per_layer_config.{k}.{key}"),
                                "not implemented (head_dim, num_key_value_heads)",
                            ));
                        }
                    }
                    layer_hd[i] = o
                        .get("head_dim")
                        .and_then(Value::as_u64)
                        .map(|x| x as usize);
                    layer_kv[i] = o
                        .get("num_key_value_heads")
                        .and_then(Value::as_u64)
                        .map(|x| x as usize);
                }
            }
        }
        "minimax_m3_vl_text" => {
            spec.norm = NormKind::Rms {
                eps,
                plus_one: true,
            };
            spec.qk_norm = Some(QkNorm {
                kind: spec.norm,
                per_head: true,
            });
            if let Some(Value::Array(kinds)) = f.get("layer_types")
                && kinds.iter().any(|k| k.as_str() != Some("full_attention"))
            {
                return Err(f.err(
                    "layer_types",
                    "sparse-indexer layers (minimax_m3_sparse) are not implemented",
                ));
            }
            if let Some(w) = f.positive_opt("dense_intermediate_size")? {
                spec.mlp.intermediate = w;
            }
            n.shared = "mlp.shared_experts".into();
            n.shared_fused = Some((
                "mlp.shared_experts.gate_up_proj".into(),
                "mlp.shared_experts.down_proj".into(),
            ));
            n.fused_experts = Some(FusedExperts {
                gate_up: "mlp.experts.gate_up_proj".into(),
                down: "mlp.experts.down_proj".into(),
                transposed: false,
                interleaved: false,
                biases: None,
            });
        }
        "doge" => {
            if f.bool_or("is_moe", false)? {
                return Err(f.err(
                    "is_moe",
                    "Doge's product-key mixture of experts is not implemented",
                ));
            }
            spec.doge = true;
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: true,
            });
            // Past `keep_window_size` keys the dynamic mask keeps a top-k subset, which is not
            // implemented: the context stops there.
            if let Some(k) = f.positive_opt("keep_window_size")? {
                spec.max_positions = spec.max_positions.min(k);
            }
        }
        "mimo_v2_flash" => {
            if f.positive_opt("v_head_dim")?.is_some_and(|v| v != head_dim) {
                return Err(f.err(
                    "v_head_dim",
                    "a value head size other than head_dim is not implemented",
                ));
            }
            spec.sliding_doubles_kv = true;
            spec.sinks = true;
            n.sinks = "self_attn.attention_sink_bias".into();
            spec.v_scale = f.f64_opt("attention_value_scale")?;
        }
        "diffllama" => {
            if !heads.is_multiple_of(2) || !kv_heads.is_multiple_of(2) {
                return Err(f.err(
                    "num_attention_heads",
                    "differential attention needs even head counts",
                ));
            }
            spec.differential = true;
        }
        "llama" | "mistral" | "helium" | "cwm" | "ministral" | "internlm3" | "iquestcoder" => {
            refuse_true(f, "use_bidirectional_attention", "a causal LM")?;
        }
        "ultrabert" => {
            // Llama blocks, bidirectional, full and sliding layers; the MLM head reads through
            // `head.linear1` → GELU(tanh) → `head.linear2` → GELU(tanh) into `cls` (the
            // checkpoint name of `head.decoder`).
            spec.bidirectional = true;
            spec.seq_pool = match f.str_opt("classifier_pooling")?.unwrap_or("cls") {
                "cls" => SeqPool::First,
                // A linear classifier: the mean of its logits is its logits of the mean.
                "mean" => SeqPool::MeanLogits,
                other => {
                    return Err(f.err(
                        "classifier_pooling",
                        format!("`{other}` is not implemented (cls, mean)"),
                    ));
                }
            };
            spec.lm_transform = Some(HeadTransform::TwoLayer {
                act: Act::GeluTanh,
                width: f.positive("prediction_head_size")?,
            });
            n.head = "cls".into();
            n.lm_transform = Some("head".into());
            n.score = "classifier".into();
        }
        "esmc" => {
            // Pre-LN blocks of biased LayerNorms (the final one without a bias), LayerNorm q/k
            // norms over the whole projection, branches scaled by 1/√(layers/36);
            // bidirectional. MLM: `lm_head.dense` → GELU → `lm_head.layer_norm` →
            // `lm_head.decoder`; classifier: `<s>` → `classifier.dense` → tanh → `out_proj`.
            spec.bidirectional = true;
            spec.norm = NormKind::Layer { eps, bias: true };
            spec.final_norm_kind = Some(NormKind::Layer { eps, bias: false });
            spec.qk_norm = Some(QkNorm {
                kind: NormKind::Layer { eps, bias: false },
                per_head: false,
            });
            spec.residual_scale = Some(1.0 / (layers as f64 / 36.0).sqrt());
            spec.lm_transform = Some(HeadTransform::Dense {
                act: Act::Gelu,
                bias: true,
                norm: Some("layer_norm"),
            });
            spec.head_bias = true;
            spec.score_transform = Some(HeadTransform::Dense {
                act: Act::Tanh,
                bias: true,
                norm: None,
            });
            spec.seq_pool = SeqPool::First;
            n.head = "lm_head.decoder".into();
            n.lm_transform = Some("lm_head".into());
            n.score = "classifier.out_proj".into();
            n.score_transform = Some("classifier".into());
        }
        "eurobert" => {
            // Llama blocks with bidirectional attention; `lm_head` has a bias with the MLP's,
            // the sequence classifier reads through `dense` + GELU.
            spec.bidirectional = true;
            spec.head_bias = spec.mlp.bias;
            spec.seq_pool = match f.str_opt("classifier_pooling")?.unwrap_or("late") {
                "bos" => SeqPool::First,
                "late" => SeqPool::MeanLogits,
                other => {
                    return Err(f.err(
                        "classifier_pooling",
                        format!("`{other}` is not implemented (bos, late)"),
                    ));
                }
            };
            spec.score_transform = Some(HeadTransform::Dense {
                act: Act::Gelu,
                bias: true,
                norm: None,
            });
            n.score = "classifier".into();
            n.score_transform = Some(String::new());
        }
        "qwen2" => {
            spec.qkv_bias = true;
            spec.o_bias = false;
        }
        "qwen3" => {
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: true,
            });
        }
        "seed_oss" => {
            spec.o_bias = f.bool_or("attention_out_bias", false)?;
        }
        "ernie4_5" => {
            let b = f.bool_or("use_bias", false)?;
            spec.qkv_bias = b;
            spec.o_bias = b;
            spec.mlp.bias = b;
        }
        "gemma" | "gemma2" | "gemma3_text" | "vaultgemma" => {
            spec.norm = NormKind::Rms {
                eps,
                plus_one: true,
            };
            spec.embed_scale = Some((hidden as f32).sqrt() as f64);
            if t != "gemma" {
                n.attn_out = Some("post_attention_layernorm".into());
                n.ffn_in = Some("pre_feedforward_layernorm".into());
                n.ffn_out = Some("post_feedforward_layernorm".into());
                if t == "vaultgemma" {
                    n.attn_out = None;
                    n.ffn_out = None;
                }
                let q = f
                    .positive_opt("query_pre_attn_scalar")?
                    .ok_or_else(|| f.err("query_pre_attn_scalar", "missing (required)"))?;
                spec.attn_scale = 1.0 / (q as f64).sqrt();
                spec.attn_softcap = f.f64_opt("attn_logit_softcapping")?;
                spec.final_softcap = f.f64_opt("final_logit_softcapping")?;
            }
            if t == "gemma3_text" {
                spec.qk_norm = Some(QkNorm {
                    kind: NormKind::Rms {
                        eps,
                        plus_one: true,
                    },
                    per_head: true,
                });
            }
        }
        "olmo" => {
            spec.norm = NormKind::LayerNoAffine { eps: 1e-5 };
            spec.clip_qkv = f.f64_opt("clip_qkv")?;
        }
        "olmo2" | "olmo3" | "exaone4" => {
            n.attn_in = None;
            n.ffn_in = None;
            n.attn_out = Some("post_attention_layernorm".into());
            n.ffn_out = Some("post_feedforward_layernorm".into());
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: t == "exaone4",
            });
            if t == "exaone4" {
                // RoPE only on sliding layers when the model has them (NoPE global layers).
                if wins.iter().any(Option::is_some) {
                    rope_on = wins.iter().map(Option::is_some).collect();
                }
            }
        }
        "olmoe" => {
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: false,
            });
            spec.clip_qkv = f.f64_opt("clip_qkv")?;
        }
        "smollm3" => {
            if let Some(Value::Array(a)) = f.get("no_rope_layers") {
                if a.len() != layers {
                    return Err(f.err(
                        "no_rope_layers",
                        format!("has {} entries for {layers} layers", a.len()),
                    ));
                }
                rope_on = a.iter().map(|v| v.as_u64() != Some(0)).collect();
            }
        }
        "stablelm" => {
            spec.norm = NormKind::Layer { eps, bias: true };
            spec.qkv_bias = f.bool_or("use_qkv_bias", false)?;
            spec.o_bias = false;
            refuse_true(
                f,
                "qk_layernorm",
                "StableLM's per-head q/k LayerNorm modules are not implemented",
            )?;
            if f.bool_or("use_parallel_residual", false)? {
                spec.parallel = true;
                n.ffn_in = None;
            }
        }
        "starcoder2" => {
            spec.norm = NormKind::Layer { eps, bias: true };
            let b = f.bool_or("use_bias", true)?;
            spec.qkv_bias = b;
            spec.o_bias = b;
            spec.mlp.gated = false;
            spec.mlp.bias = b;
            n.up = "mlp.c_fc".into();
            n.down = "mlp.c_proj".into();
        }
        "phi3" => {
            n.qkv = Some(("self_attn.qkv_proj".into(), FusedQkv::Rows));
            n.gate_up = Some("mlp.gate_up_proj".into());
        }
        "granite" | "granitemoe" | "granite_swa" | "granitemoe_swa" => {
            spec.sinks = matches!(t, "granite_swa" | "granitemoe_swa");
            if let Some(Value::Array(thetas)) = f.get("layer_rope_theta") {
                let base = rope(f, None, head_dim, false, None)?.theta;
                if thetas.iter().any(|x| num(x) != Some(base)) {
                    return Err(f.err(
                        "layer_rope_theta",
                        "per-layer rope bases that differ from rope_theta are not implemented",
                    ));
                }
            }
            spec.embed_scale = f.f64_opt("embedding_multiplier")?;
            spec.residual_scale = f.f64_opt("residual_multiplier")?;
            if let Some(m) = f.f64_opt("attention_multiplier")? {
                spec.attn_scale = m;
            }
            if let Some(s) = f.f64_opt("logits_scaling")? {
                spec.logits_scale = Some(1.0 / s);
            }
        }
        "cohere" | "cohere2" | "cohere_compass_text" | "cohere2_moe" => {
            if let Some(w) = f.positive_opt("prefix_dense_intermediate_size")? {
                spec.mlp.intermediate = w;
            }
            n.shared = "mlp.shared_experts".into();
            spec.norm = NormKind::Layer { eps, bias: false };
            spec.parallel = true;
            n.ffn_in = None;
            spec.logits_scale = f.f64_opt("logit_scale")?;
            if f.bool_or("use_qk_norm", false)? {
                spec.qk_norm = Some(QkNorm {
                    kind: NormKind::Layer { eps, bias: false },
                    per_head: true,
                });
            }
            if matches!(t, "cohere2" | "cohere_compass_text" | "cohere2_moe")
                && wins.iter().any(Option::is_some)
            {
                rope_on = wins.iter().map(Option::is_some).collect();
            }
        }
        "glm" | "glm4" => {
            n.gate_up = Some("mlp.gate_up_proj".into());
            spec.o_bias = false;
            if t == "glm4" {
                n.attn_out = Some("post_self_attn_layernorm".into());
                n.ffn_out = Some("post_mlp_layernorm".into());
            }
        }
        "hunyuan_v1_dense" => {
            n.q_norm = "self_attn.query_layernorm".into();
            n.k_norm = "self_attn.key_layernorm".into();
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: true,
            });
            spec.qk_norm_after_rope = true;
        }
        "arcee" => {
            spec.mlp.gated = false;
        }
        "nanochat" => {
            spec.norm = NormKind::RmsNoAffine { eps };
            spec.embed_norm = true;
            spec.mlp.gated = false;
            n.up = "mlp.fc1".into();
            n.down = "mlp.fc2".into();
            n.embed_norm = "model.norm".into();
            spec.qk_norm = Some(QkNorm {
                kind: NormKind::RmsNoAffine { eps },
                per_head: true,
            });
            spec.qk_norm_after_rope = true;
            spec.final_softcap = f.f64_opt("final_logit_softcapping")?;
        }
        "ministral3" => {
            if let Some(p) = rope_params(f, None)?
                && let Some(beta) = p.get("llama_4_scaling_beta").and_then(num)
            {
                let orig = p
                    .get("original_max_position_embeddings")
                    .and_then(num)
                    .ok_or_else(|| {
                        f.err(
                            "rope_parameters.original_max_position_embeddings",
                            "missing (required with llama_4_scaling_beta)",
                        )
                    })?;
                spec.attn_temperature = Some((beta, orig));
            }
        }
        "glm4_moe" | "dots1" | "solar_open" => {
            n.shared = "mlp.shared_experts".into();
            if f.bool_or("use_qk_norm", t == "dots1")? {
                spec.qk_norm = Some(QkNorm {
                    kind: rms(eps),
                    per_head: true,
                });
            }
        }
        "youtu" | "glm4_moe_lite" | "deepseek_v32" | "glm_moe_dsa" => {
            n.shared = "mlp.shared_experts".into();
        }
        "flex_olmo" => {
            n.attn_in = None;
            n.ffn_in = None;
            n.attn_out = Some("post_attention_layernorm".into());
            n.ffn_out = Some("post_feedforward_layernorm".into());
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: false,
            });
        }
        "phimoe" => {
            spec.norm = NormKind::Layer { eps, bias: true };
            spec.head_bias = f.bool_or("lm_head_bias", false)?;
            n.router = "block_sparse_moe.gate".into();
            n.expert = "block_sparse_moe.experts.{}".into();
            n.ex_gate = "w1".into();
            n.ex_up = "w3".into();
            n.ex_down = "w2".into();
        }
        "nemotron" => {
            spec.norm = NormKind::Layer1P { eps };
            spec.mlp.gated = false;
        }
        "jais2" => {
            spec.norm = NormKind::Layer { eps, bias: true };
            spec.mlp.gated = false;
        }
        "hyperclovax" => {
            spec.embed_scale = f.f64_opt("embedding_multiplier")?;
            spec.residual_scale = f.f64_opt("residual_multiplier")?;
            if let Some(m) = f.f64_opt("attention_multiplier")? {
                spec.attn_scale = m;
            }
            if let Some(s) = f.f64_opt("logits_scaling")? {
                spec.logits_scale = Some(1.0 / s);
            }
            if f.bool_or("use_post_norm", false)? {
                n.attn_out = Some("post_norm1".into());
                n.ffn_out = Some("post_norm2".into());
            }
        }
        "llama4_text" => {
            if let Some(Value::Array(a)) = f.get("no_rope_layers") {
                if a.len() != layers {
                    return Err(f.err(
                        "no_rope_layers",
                        format!("has {} entries for {layers} layers", a.len()),
                    ));
                }
                rope_on = a.iter().map(|v| v.as_u64() != Some(0)).collect();
            }
            if f.bool_or("use_qk_norm", false)? {
                spec.qk_norm = Some(QkNorm {
                    kind: NormKind::RmsNoAffine { eps },
                    per_head: true,
                });
                spec.qk_norm_after_rope = true;
                spec.qk_norm_rope_layers_only = true;
            }
            if f.bool_or("attn_temperature_tuning", false)? {
                spec.nope_query_scale = Some(super::spec::NopeScale::Llama4 {
                    floor_scale: f.f64("floor_scale")?,
                    attn_scale: f.f64("attn_scale")?,
                });
            }
            spec.mlp.intermediate = f.positive("intermediate_size_mlp")?;
            n.gate = "feed_forward.gate_proj".into();
            n.up = "feed_forward.up_proj".into();
            n.down = "feed_forward.down_proj".into();
            n.router = "feed_forward.router".into();
            n.shared = "feed_forward.shared_expert".into();
            n.fused_experts = Some(FusedExperts {
                gate_up: "feed_forward.experts.gate_up_proj".into(),
                down: "feed_forward.experts.down_proj".into(),
                transposed: true,
                interleaved: false,
                biases: None,
            });
        }
        "beam" => {
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: true,
            });
            n.attn_out = Some("post_attention_layernorm".into());
            n.ffn_in = Some("pre_feedforward_layernorm".into());
            n.ffn_out = Some("post_feedforward_layernorm".into());
            spec.attn_gate = Some(AttnGate::SigmoidHeadBias);
            spec.nope_query_scale = Some(super::spec::NopeScale::Beam);
            spec.depth_scaled_residual = true;
            spec.final_softcap = f.f64_opt("final_logit_softcapping")?;
        }
        "aria_text" => {
            n.router = "mlp.router".into();
            n.shared = "mlp.shared_experts".into();
            n.fused_experts = Some(FusedExperts {
                gate_up: "mlp.experts.fc1.weight".into(),
                down: "mlp.experts.fc2.weight".into(),
                transposed: true,
                interleaved: false,
                biases: None,
            });
        }
        "hunyuan_v1_moe" => {
            n.q_norm = "self_attn.query_layernorm".into();
            n.k_norm = "self_attn.key_layernorm".into();
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: true,
            });
            spec.qk_norm_after_rope = true;
            n.router = "mlp.gate.wg".into();
            n.shared = "mlp.shared_mlp".into();
        }
        "minimax_m2" => {
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: false,
            });
            n.router = "block_sparse_moe.gate".into();
            n.e_bias = "block_sparse_moe.e_score_correction_bias".into();
            n.expert = "block_sparse_moe.experts.{}".into();
            n.ex_gate = "w1".into();
            n.ex_up = "w3".into();
            n.ex_down = "w2".into();
        }
        "mellum" | "hy_v3" | "exaone_moe" | "flint" | "kolibri1" | "afmoe" | "laguna" | "axk1" => {
            if t != "axk1" {
                spec.qk_norm = Some(QkNorm {
                    kind: rms(eps),
                    per_head: true,
                });
            }
            n.shared = "mlp.shared_experts".into();
            match t {
                "hy_v3" => {
                    n.router = "mlp.router.gate".into();
                    n.e_bias = "mlp.expert_bias".into();
                    n.shared = "mlp.shared_mlp".into();
                }
                "exaone_moe" => n.e_bias = "mlp.e_score_correction_bias".into(),
                "flint" => {
                    spec.sinks = true;
                    n.sinks = "self_attn.softmax_offset".into();
                    n.shared = "mlp.shared_expert".into();
                }
                "kolibri1" => {
                    n.e_bias = "moe.router.expert_bias".into();
                    n.attn_out = Some("post_attn_norm".into());
                    n.ffn_out = Some("post_ffn_norm".into());
                }
                "afmoe" => {
                    n.router = "mlp.router.gate".into();
                    n.e_bias = "mlp.expert_bias".into();
                    n.attn_out = Some("post_attention_layernorm".into());
                    n.ffn_in = Some("pre_mlp_layernorm".into());
                    n.ffn_out = Some("post_mlp_layernorm".into());
                    spec.attn_gate = Some(AttnGate::Sigmoid);
                    if f.bool_or("mup_enabled", false)? {
                        spec.embed_scale = Some((hidden as f64).sqrt());
                    }
                }
                "laguna" => {
                    n.e_bias = "mlp.experts.e_score_correction_bias".into();
                    n.shared = "mlp.shared_expert".into();
                    n.attn_gate = "self_attn.g_proj".into();
                    match f.get("gating") {
                        Some(Value::Bool(false)) | None => {}
                        Some(Value::Bool(true)) => spec.attn_gate = Some(AttnGate::SoftplusPerHead),
                        Some(v) => {
                            return Err(f.err(
                                "gating",
                                format!("{v} is not implemented (true: one gate per head)"),
                            ));
                        }
                    }
                    if let Some(Value::Array(a)) = f.get("num_attention_heads_per_layer")
                        && a.iter().any(|x| x.as_u64() != Some(heads as u64))
                    {
                        return Err(f.err(
                            "num_attention_heads_per_layer",
                            "a head count that differs between layers is not implemented",
                        ));
                    }
                    if f.f64_opt("moe_router_logit_softcapping")?
                        .is_some_and(|c| c > 0.0)
                    {
                        return Err(f.err(
                            "moe_router_logit_softcapping",
                            "router softcapping is not implemented",
                        ));
                    }
                }
                _ => {}
            }
            // RoPE only on sliding layers when the model has them (NoPE global layers).
            if matches!(t, "exaone_moe" | "flint" | "kolibri1" | "afmoe")
                && wins.iter().any(Option::is_some)
            {
                rope_on = wins.iter().map(Option::is_some).collect();
            }
        }
        "ernie4_5_moe" => {
            let b = f.bool_or("use_bias", false)?;
            spec.qkv_bias = b;
            spec.o_bias = b;
            spec.mlp.bias = b;
            n.e_bias = "mlp.moe_statics.e_score_correction_bias".into();
            n.shared = "mlp.shared_experts".into();
        }
        "bitnet" => {
            spec.sub_norms = true;
        }
        "apertus" => {
            spec.mlp.gated = false;
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: true,
            });
            n.attn_in = Some("attention_layernorm".into());
            n.ffn_in = Some("feedforward_layernorm".into());
        }
        "mixtral" => {
            n.router = "block_sparse_moe.gate".into();
            n.expert = "block_sparse_moe.experts.{}".into();
            n.ex_gate = "w1".into();
            n.ex_up = "w3".into();
            n.ex_down = "w2".into();
        }
        "qwen2_moe" => {
            spec.qkv_bias = f.bool_or("qkv_bias", true)?;
            spec.o_bias = false;
        }
        "qwen3_moe" => {
            spec.qk_norm = Some(QkNorm {
                kind: rms(eps),
                per_head: true,
            });
        }
        "gpt_oss" | "openai_privacy_filter" => {
            spec.sinks = true;
            n.router = "mlp.router".into();
            n.fused_experts = Some(FusedExperts {
                gate_up: "mlp.experts.gate_up_proj".into(),
                down: "mlp.experts.down_proj".into(),
                transposed: true,
                // The privacy filter keeps gate and up as halves, gpt-oss interleaves them.
                interleaved: t == "gpt_oss",
                biases: Some((
                    "mlp.experts.gate_up_proj_bias".into(),
                    "mlp.experts.down_proj_bias".into(),
                )),
            });
        }
        "deepseek_v2" | "deepseek_v3" | "minicpm3" => {
            let m = mla_of(f, eps)?;
            spec.attn_scale = 1.0 / ((m.qk_nope + m.qk_rope) as f64).sqrt();
            spec.kv_heads = heads;
            spec.head_dim = m.qk_nope + m.qk_rope;
            mla = Some(m);
            if t == "minicpm3" {
                spec.embed_scale = f.f64_opt("scale_emb")?;
                if let Some(d) = f.f64_opt("scale_depth")? {
                    spec.residual_scale = Some(d / (layers as f64).sqrt());
                }
                if let Some(b) = f.f64_opt("dim_model_base")? {
                    spec.logits_scale = Some(b / hidden as f64);
                }
            }
        }
        _ => {}
    }
    if matches!(
        t,
        "youtu" | "glm4_moe_lite" | "axk1" | "deepseek_v32" | "glm_moe_dsa"
    ) {
        let m = mla_of(f, eps)?;
        spec.attn_scale = 1.0 / ((m.qk_nope + m.qk_rope) as f64).sqrt();
        spec.kv_heads = heads;
        spec.head_dim = m.qk_nope + m.qk_rope;
        let mut m = m;
        if matches!(t, "deepseek_v32" | "glm_moe_dsa") {
            if let Some(Value::Array(kinds)) = f.get("indexer_types")
                && kinds.iter().any(|k| k.as_str() != Some("full"))
            {
                return Err(f.err(
                    "indexer_types",
                    "layers that reuse another layer's selection (`shared`) are not implemented",
                ));
            }
            m.indexer = Some(super::spec::Indexer {
                heads: f.positive("index_n_heads")?,
                dim: f.positive("index_head_dim")?,
                topk: f.positive("index_topk")?,
                interleaved: t == "glm_moe_dsa",
            });
        }
        mla = Some(m);
    }
    if t == "granitemoe_swa" {
        n.router = "block_sparse_moe.router".into();
        n.fused_experts = Some(FusedExperts {
            gate_up: "block_sparse_moe.experts.gate_up_proj".into(),
            down: "block_sparse_moe.experts.down_proj".into(),
            transposed: false,
            interleaved: false,
            biases: None,
        });
        n.shared_fused = Some((
            "shared_mlp.input_linear".into(),
            "shared_mlp.output_linear".into(),
        ));
    }
    if matches!(t, "granitemoe" | "granitemoeshared") {
        spec.embed_scale = f.f64_opt("embedding_multiplier")?;
        spec.residual_scale = f.f64_opt("residual_multiplier")?;
        if let Some(m) = f.f64_opt("attention_multiplier")? {
            spec.attn_scale = m;
        }
        if let Some(s) = f.f64_opt("logits_scaling")? {
            spec.logits_scale = Some(1.0 / s);
        }
        if t == "granitemoeshared" {
            n.shared_fused = Some((
                "shared_mlp.input_linear".into(),
                "shared_mlp.output_linear".into(),
            ));
        }
    }
    if matches!(t, "granitemoe" | "granitemoeshared") {
        n.router = "block_sparse_moe.router.layer".into();
        n.fused_experts = Some(FusedExperts {
            gate_up: "block_sparse_moe.input_linear.weight".into(),
            down: "block_sparse_moe.output_linear.weight".into(),
            transposed: false,
            interleaved: false,
            biases: None,
        });
    }
    // Rope tables: one per distinct layer kind.
    let rope_dims_for = |mla: &Option<Mla>| mla.map(|m| m.qk_rope);
    let rope_head_dim = rope_dims_for(&mla).unwrap_or(head_dim);
    let rope_interleaved =
        interleaved || mla.is_some() && t != "minicpm3" && f.bool_or("rope_interleave", true)?;
    if per_type {
        let types = layer_types(f, layers)?.ok_or_else(|| {
            f.err(
                "layer_types",
                "missing, but rope_parameters is keyed by layer type",
            )
        })?;
        let mut kinds: Vec<String> = Vec::new();
        let params = f.get("rope_parameters").and_then(Value::as_object);
        for (i, k) in types.iter().enumerate() {
            // `rope_parameters[kind]: null`: that layer kind has no rotary embedding (NoPE).
            if params.is_some_and(|p| p.get(k.as_str()).is_some_and(Value::is_null)) {
                layer_rope[i] = None;
                continue;
            }
            let idx = match kinds.iter().position(|x| x == k) {
                Some(j) => j,
                None => {
                    kinds.push(k.clone());
                    let hd_k = layer_hd[i].unwrap_or(rope_head_dim);
                    spec.ropes
                        .push(rope(f, Some(k), hd_k, rope_interleaved, None)?);
                    kinds.len() - 1
                }
            };
            layer_rope[i] = Some(idx);
        }
    } else {
        spec.ropes
            .push(rope(f, None, rope_head_dim, rope_interleaved, None)?);
    }
    if t == "nanochat" {
        for r in &mut spec.ropes {
            r.inverse = true;
        }
    }
    // MoE.
    let experts = [
        "num_experts",
        "num_local_experts",
        "n_routed_experts",
        "moe_num_experts",
    ]
    .iter()
    .find_map(|k| f.get(k).and_then(Value::as_u64))
    .unwrap_or(0) as usize;
    let is_moe_type = matches!(
        t,
        "mixtral"
            | "qwen2_moe"
            | "qwen3_moe"
            | "olmoe"
            | "granitemoe"
            | "gpt_oss"
            | "openai_privacy_filter"
            | "deepseek_v2"
            | "deepseek_v3"
            | "granitemoeshared"
            | "aria_text"
            | "llama4_text"
            | "beam"
            | "hunyuan_v1_moe"
            | "minimax_m2"
            | "mellum"
            | "hy_v3"
            | "ernie4_5_moe"
            | "exaone_moe"
            | "granitemoe_swa"
            | "flint"
            | "kolibri1"
            | "afmoe"
            | "laguna"
            | "cohere2_moe"
            | "axk1"
            | "deepseek_v32"
            | "mimo_v2_flash"
            | "minimax_m3_vl_text"
            | "glm_moe_dsa"
            | "glm4_moe"
            | "glm4_moe_lite"
            | "dots1"
            | "solar_open"
            | "flex_olmo"
            | "phimoe"
    );
    let moe_flags = if is_moe_type {
        moe_layers(f, layers, experts)?
    } else {
        vec![false; layers]
    };
    if moe_flags.iter().any(|x| *x) {
        let top_k = first_positive(
            f,
            &[
                "num_experts_per_tok",
                "top_k",
                "experts_per_token",
                "moe_topk",
                "moe_k",
            ],
        )?;
        let intermediate = match f.positive_opt("moe_intermediate_size")? {
            Some(x) => x,
            None => f.positive("intermediate_size")?,
        };
        let mut moe = Moe {
            experts,
            top_k,
            intermediate,
            routing: Routing::SoftmaxTopK,
            norm_topk: f.bool_or("norm_topk_prob", false)?,
            scale: 1.0,
            router_bias: false,
            expert_bias: false,
            swiglu_limit: None,
            shared: None,
            shared_gate: false,
            act,
            e_bias: false,
            shared_average: false,
            out_norm: false,
            weight_input: false,
            plain_experts: false,
            norm_eps: None,
            shared_clamped: false,
        };
        match t {
            "mixtral" => moe.norm_topk = true,
            "qwen2_moe" => {
                moe.shared = f.positive_opt("shared_expert_intermediate_size")?;
                moe.shared_gate = moe.shared.is_some();
            }
            "gpt_oss" | "openai_privacy_filter" => {
                moe.routing = Routing::TopKSoftmax;
                moe.router_bias = true;
                moe.expert_bias = true;
                moe.swiglu_limit = Some(float_or(f, "swiglu_limit", 7.0)?);
                let alpha = float_or(f, "swiglu_alpha", 1.702)?;
                if alpha != 1.702 {
                    return Err(f.err(
                        "swiglu_alpha",
                        format!("{alpha} is not implemented (the clamped SwiGLU uses 1.702)"),
                    ));
                }
            }
            "granitemoe" | "granitemoeshared" => {
                moe.routing = Routing::TopKSoftmax;
                moe.shared = f.positive_opt("shared_intermediate_size")?;
            }
            "aria_text" => {
                moe.routing = Routing::TopKSoftmax;
                moe.shared = f
                    .positive_opt("moe_num_shared_experts")?
                    .map(|k| k * intermediate);
                moe.act = Act::Silu;
            }
            "minimax_m3_vl_text" => {
                moe.routing = Routing::SigmoidGrouped {
                    groups: 1,
                    topk_groups: 1,
                };
                moe.e_bias = true;
                moe.norm_topk = true;
                moe.norm_eps = Some(0.0);
                moe.scale = float_or(f, "routed_scaling_factor", 1.0)?;
                moe.shared = f.positive_opt("shared_intermediate_size")?;
                moe.swiglu_limit = Some(float_or(f, "swiglu_limit", 7.0)?);
                moe.shared_clamped = true;
                if float_or(f, "swiglu_alpha", 1.702)? != 1.702 {
                    return Err(f.err("swiglu_alpha", "only 1.702 is implemented"));
                }
            }
            "llama4_text" => {
                moe.routing = Routing::TopKSigmoid;
                moe.weight_input = true;
                moe.shared = Some(intermediate);
            }
            "hunyuan_v1_moe" => {
                moe.norm_topk = true;
                moe.shared = Some(intermediate);
            }
            "minimax_m2" => {
                moe.routing = Routing::SigmoidGrouped {
                    groups: 1,
                    topk_groups: 1,
                };
                moe.e_bias = true;
                moe.norm_topk = true;
            }
            "hy_v3" | "afmoe" => {
                moe.routing = Routing::SigmoidGrouped {
                    groups: 1,
                    topk_groups: 1,
                };
                moe.e_bias = true;
                moe.norm_topk = true;
                moe.scale = if t == "hy_v3" {
                    float_or(f, "router_scaling_factor", 1.0)?
                } else {
                    float_or(f, "route_scale", 1.0)?
                };
                moe.shared = f
                    .positive_opt("num_shared_experts")?
                    .map(|k| k * intermediate);
            }
            "exaone_moe" | "axk1" | "beam" => {
                moe.routing = Routing::SigmoidGrouped {
                    groups: f.positive_opt("n_group")?.unwrap_or(1),
                    topk_groups: f.positive_opt("topk_group")?.unwrap_or(1),
                };
                moe.e_bias = true;
                moe.scale = float_or(f, "routed_scaling_factor", 1.0)?;
                moe.shared = f
                    .positive_opt(if t == "axk1" {
                        "n_shared_experts"
                    } else {
                        "num_shared_experts"
                    })?
                    .map(|k| k * intermediate);
                moe.out_norm = t == "axk1";
                if t == "beam" {
                    moe.norm_topk = f.bool_or("norm_topk_prob", true)?;
                    moe.shared = None;
                }
            }
            "flint" => {
                moe.routing = Routing::SigmoidGrouped {
                    groups: 1,
                    topk_groups: 1,
                };
                moe.shared = f.positive_opt("shared_expert_intermediate_size")?;
            }
            "kolibri1" => {
                moe.routing = Routing::SigmoidLogitBias;
                moe.e_bias = true;
                moe.shared = f.positive_opt("shared_expert_intermediate_size")?;
            }
            "laguna" => {
                moe.routing = Routing::SigmoidGrouped {
                    groups: 1,
                    topk_groups: 1,
                };
                moe.e_bias = true;
                moe.norm_topk = true;
                moe.scale = float_or(f, "moe_routed_scaling_factor", 1.0)?;
                moe.shared = f.positive_opt("shared_expert_intermediate_size")?;
            }
            "ernie4_5_moe" => {
                moe.routing = Routing::SoftmaxBiased;
                moe.e_bias = true;
                moe.norm_topk = true;
                moe.shared = f
                    .positive_opt("moe_num_shared_experts")?
                    .map(|k| k * intermediate);
            }
            "cohere2_moe" => {
                match f.str_opt("expert_selection_fn")?.unwrap_or("softmax") {
                    "softmax" => moe.routing = Routing::TopKSoftmax,
                    other => {
                        return Err(f.err(
                            "expert_selection_fn",
                            format!("`{other}` is not implemented (softmax)"),
                        ));
                    }
                }
                moe.shared = f
                    .positive_opt("num_shared_experts")?
                    .map(|k| k * intermediate);
                moe.shared_average = match f.str_opt("shared_expert_combination_strategy")? {
                    None | Some("sum") => false,
                    Some("average") => true,
                    Some(other) => {
                        return Err(f.err(
                            "shared_expert_combination_strategy",
                            format!("`{other}` is not implemented (sum, average)"),
                        ));
                    }
                };
            }
            "granitemoe_swa" => {
                moe.routing = Routing::TopKSoftmax;
                moe.shared = f.positive_opt("shared_intermediate_size")?;
            }
            "phimoe" => {
                if top_k != 2 {
                    return Err(f.err(
                        "num_experts_per_tok",
                        "sparsemixer routing is implemented for top-2 only",
                    ));
                }
                moe.routing = Routing::SparseMixer {
                    jitter_eps: float_or(f, "router_jitter_noise", 0.01)?,
                };
            }
            "glm4_moe" | "glm4_moe_lite" | "dots1" | "solar_open" | "deepseek_v32"
            | "glm_moe_dsa" | "mimo_v2_flash" => {
                moe.scale = float_or(f, "routed_scaling_factor", 1.0)?;
                moe.shared = f
                    .positive_opt("n_shared_experts")?
                    .map(|k| k * intermediate);
                let groups = f.positive_opt("n_group")?.unwrap_or(1);
                let topk_groups = f.positive_opt("topk_group")?.unwrap_or(1);
                moe.routing = Routing::SigmoidGrouped {
                    groups,
                    topk_groups,
                };
                moe.e_bias = true;
            }
            "deepseek_v2" | "deepseek_v3" => {
                moe.scale = float_or(f, "routed_scaling_factor", 1.0)?;
                moe.shared = f
                    .positive_opt("n_shared_experts")?
                    .map(|k| k * intermediate);
                n.shared = "mlp.shared_experts".into();
                let groups = f.positive_opt("n_group")?.unwrap_or(1);
                let topk_groups = f.positive_opt("topk_group")?.unwrap_or(1);
                if t == "deepseek_v3" {
                    moe.routing = Routing::SigmoidGrouped {
                        groups,
                        topk_groups,
                    };
                    moe.e_bias = true;
                } else {
                    match f.str_opt("topk_method")?.unwrap_or("greedy") {
                        "greedy" => {}
                        "group_limited_greedy" => {
                            moe.routing = Routing::SoftmaxGroupedMax {
                                groups,
                                topk_groups,
                            };
                        }
                        other => {
                            return Err(f.err(
                                "topk_method",
                                format!(
                                    "`{other}` is not implemented (greedy, group_limited_greedy)"
                                ),
                            ));
                        }
                    }
                }
                if !experts.is_multiple_of(groups) {
                    return Err(f.err(
                        "n_group",
                        format!("{groups} does not divide {experts} experts"),
                    ));
                }
            }
            _ => {}
        }
        if let Routing::SigmoidGrouped {
            groups,
            topk_groups,
        }
        | Routing::SoftmaxGroupedMax {
            groups,
            topk_groups,
        } = moe.routing
            && (!experts.is_multiple_of(groups) || topk_groups > groups)
        {
            return Err(f.err(
                "n_group",
                format!("{groups} groups (keeping {topk_groups}) do not fit {experts} experts"),
            ));
        }
        spec.moe = Some(moe);
    }
    spec.mla = mla;
    spec.layers = (0..layers)
        .map(|i| LayerSpec {
            window: wins[i],
            rope: if rope_on[i] { layer_rope[i] } else { None },
            moe: moe_flags[i],
            chunk: chunks[i],
            mamba: false,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: layer_hd[i],
            kv_heads: layer_kv[i],
        })
        .collect();
    if t == "openai_privacy_filter" {
        // gpt-oss blocks with bidirectional (windowed) attention: an encoder.
        spec.bidirectional = true;
    }
    match f.get("use_bidirectional_attention") {
        // Gemma 4: bidirectional among image tokens only; text is causal.
        Some(Value::String(v)) if v == "vision" && t.starts_with("gemma4") => {}
        _ => refuse_true(
            f,
            "use_bidirectional_attention",
            "bidirectional attention is not a causal LM",
        )?,
    }
    Ok((spec, n))
}

/// DeepSeek latent attention from `q_lora_rank`, `kv_lora_rank` and the head dims.
fn mla_of(f: &Fields<'_>, eps: f64) -> R<Mla> {
    Ok(Mla {
        q_lora_rank: f.positive_opt("q_lora_rank")?,
        kv_lora_rank: f.positive("kv_lora_rank")?,
        qk_nope: f.positive("qk_nope_head_dim")?,
        qk_rope: f.positive("qk_rope_head_dim")?,
        v_head: f.positive("v_head_dim")?,
        eps,
        indexer: None,
    })
}

/// A spec with GPT-style defaults: LayerNorm with biases, plain MLP, learned positions.
fn gpt_base(
    vocab: usize,
    hidden: usize,
    heads: usize,
    max_positions: usize,
    eps: f64,
    act: Act,
    inner: usize,
) -> Spec {
    let head_dim = hidden / heads;
    Spec {
        vocab,
        hidden,
        heads,
        kv_heads: heads,
        head_dim,
        max_positions,
        layers: Vec::new(),
        ropes: Vec::new(),
        absolute: Some(Absolute::Learned { offset: 0 }),
        norm: NormKind::Layer { eps, bias: true },
        parallel: false,
        post_norm: false,
        qk_norm: None,
        qk_norm_after_rope: false,
        mla: None,
        qkv_bias: true,
        o_bias: true,
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        attn_softcap: None,
        attn_temperature: None,
        clip_qkv: None,
        sinks: false,
        attn_gate: None,
        differential: false,
        sliding_doubles_kv: false,
        v_scale: None,
        v_norm: false,
        doge: false,
        layer_scalar: false,
        ple: None,
        first_layer_no_attn_norm: false,
        lm_transform: None,
        score_transform: None,
        final_norm_kind: None,
        bidirectional: false,
        seq_pool: SeqPool::Last,
        sub_norms: false,
        nope_query_scale: None,
        qk_norm_rope_layers_only: false,
        depth_scaled_residual: false,
        mamba: None,
        mamba2: None,
        short_conv: None,
        rglru: None,
        ffn: true,
        mlp: Mlp {
            gated: false,
            act,
            intermediate: inner,
            bias: true,
        },
        moe: None,
        embed_scale: None,
        embed_norm: false,
        residual_scale: None,
        final_norm: true,
        logits_scale: None,
        final_softcap: None,
        tie: true,
        head_bias: false,
    }
}

fn plain_layers(n: usize, rope: Option<usize>) -> Vec<LayerSpec> {
    vec![
        LayerSpec {
            window: None,
            rope,
            moe: false,
            chunk: None,
            mamba: false,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        };
        n
    ]
}

fn divisible(f: &Fields<'_>, field: &str, hidden: usize, heads: usize) -> R<()> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(f.err(
            field,
            format!("{heads} does not divide the hidden size {hidden}"),
        ));
    }
    Ok(())
}

/// GPT-2 and GPT-BigCode: `transformer.h.{i}`, fused `c_attn` (GPT-2: `Conv1D`).
fn gpt2(t: &str, f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("n_embd")?;
    let heads = f.positive("n_head")?;
    divisible(f, "n_head", hidden, heads)?;
    let layers = f.positive("n_layer")?;
    let inner = f.positive_opt("n_inner")?.unwrap_or(4 * hidden);
    let act = act_field(f, &["activation_function"])?;
    let eps = f.f64("layer_norm_epsilon")?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("n_positions")?,
        eps,
        act,
        inner,
    );
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.layers = plain_layers(layers, None);
    refuse_true(
        f,
        "add_cross_attention",
        "cross-attention layers are not part of a causal LM",
    )?;
    if !f.bool_or("scale_attn_weights", true)? {
        spec.attn_scale = 1.0;
    }
    refuse_true(
        f,
        "scale_attn_by_inverse_layer_idx",
        "per-layer attention scaling is not implemented",
    )?;
    let conv = t == "gpt2";
    if t == "gpt_bigcode" && f.bool_or("multi_query", true)? {
        spec.kv_heads = 1;
    }
    let mut n = Names::llama();
    n.embed = "transformer.wte".into();
    n.positions = "transformer.wpe".into();
    n.final_norm = "transformer.ln_f".into();
    n.layer = "transformer.h.{}".into();
    n.qkv = Some((
        "attn.c_attn".into(),
        if conv {
            FusedQkv::Conv1d
        } else {
            FusedQkv::Rows
        },
    ));
    n.o = "attn.c_proj".into();
    n.attn_in = Some("ln_1".into());
    n.ffn_in = Some("ln_2".into());
    n.up = "mlp.c_fc".into();
    n.down = "mlp.c_proj".into();
    n.conv1d = conv;
    Ok((spec, n))
}

/// GPT-NeoX: `gpt_neox.layers.{i}`, per-head fused `query_key_value`, partial rotary.
fn gpt_neox(t: &str, f: &Fields<'_>) -> R<(Spec, Names)> {
    if t == "gpt_neox_japanese" {
        return gpt_neox_japanese(f);
    }
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    divisible(f, "num_attention_heads", hidden, heads)?;
    let act = act_field(f, &["hidden_act"])?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        f.f64("layer_norm_eps")?,
        act,
        f.positive("intermediate_size")?,
    );
    spec.absolute = None;
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    let b = f.bool_or("attention_bias", true)?;
    spec.qkv_bias = b;
    spec.o_bias = b;
    spec.parallel = f.bool_or("use_parallel_residual", true)?;
    spec.ropes.push(rope(f, None, spec.head_dim, false, None)?);
    spec.layers = plain_layers(f.positive("num_hidden_layers")?, Some(0));
    let mut n = Names::llama();
    n.embed = "gpt_neox.embed_in".into();
    n.final_norm = "gpt_neox.final_layer_norm".into();
    n.head = "embed_out".into();
    n.layer = "gpt_neox.layers.{}".into();
    n.qkv = Some(("attention.query_key_value".into(), FusedQkv::PerHead));
    n.o = "attention.dense".into();
    n.up = "mlp.dense_h_to_4h".into();
    n.down = "mlp.dense_4h_to_h".into();
    Ok((spec, n))
}

/// GPT-J and CodeGen: parallel blocks, partial interleaved rotary, `lm_head` with bias.
fn gptj(t: &str, f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("n_embd")?;
    let heads = f.positive("n_head")?;
    divisible(f, "n_head", hidden, heads)?;
    let inner = f.positive_opt("n_inner")?.unwrap_or(4 * hidden);
    let act = act_field(f, &["activation_function"])?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("n_positions")?,
        f.f64("layer_norm_epsilon")?,
        act,
        inner,
    );
    spec.absolute = None;
    spec.parallel = true;
    spec.qkv_bias = false;
    spec.o_bias = false;
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    spec.head_bias = true;
    let rot = f.positive_opt("rotary_dim")?;
    spec.ropes.push(rope_fixed(f, spec.head_dim, rot, 10000.0)?);
    spec.layers = plain_layers(f.positive("n_layer")?, Some(0));
    let mut n = Names::llama();
    n.embed = "transformer.wte".into();
    n.final_norm = "transformer.ln_f".into();
    n.layer = "transformer.h.{}".into();
    n.attn_in = Some("ln_1".into());
    n.ffn_in = None;
    n.q = "attn.q_proj".into();
    n.k = "attn.k_proj".into();
    n.v = "attn.v_proj".into();
    n.o = "attn.out_proj".into();
    n.up = "mlp.fc_in".into();
    n.down = "mlp.fc_out".into();
    if t == "codegen" {
        n.qkv = Some(("attn.qkv_proj".into(), FusedQkv::CodeGen));
    }
    Ok((spec, n))
}

/// GPT-J / CodeGen rotary: `rope_parameters.rope_theta` when present, else their fixed base.
fn rope_fixed(f: &Fields<'_>, head_dim: usize, rot: Option<usize>, base: f64) -> R<Rope> {
    if f.get("rope_parameters").is_some() || f.get("rope_theta").is_some() {
        return rope(f, None, head_dim, true, Some(rot.unwrap_or(head_dim)));
    }
    Ok(Rope {
        theta: base,
        dims: rot.unwrap_or(head_dim),
        interleaved: true,
        llama3: None,
        linear: None,
        yarn: None,
        inverse: false,
        proportional: None,
    })
}

/// Falcon: fused `query_key_value` in one of three layouts, parallel blocks, rope or ALiBi.
fn falcon(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    divisible(f, "num_attention_heads", hidden, heads)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        f.f64("layer_norm_epsilon")?,
        act_field(f, &["activation"]).unwrap_or(Act::Gelu),
        f.positive_opt("ffn_hidden_size")?.unwrap_or(4 * hidden),
    );
    spec.absolute = None;
    let bias = f.bool_or("bias", false)?;
    spec.qkv_bias = bias;
    spec.o_bias = bias;
    spec.mlp.bias = bias;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    let new_arch = f.bool_or("new_decoder_architecture", false)?;
    let multi_query = f.bool_or("multi_query", true)?;
    let layout = if new_arch {
        spec.kv_heads = f.positive("num_kv_heads")?;
        FusedQkv::PerGroup
    } else if multi_query {
        spec.kv_heads = 1;
        FusedQkv::Rows
    } else {
        FusedQkv::PerHead
    };
    let layers = f.positive("num_hidden_layers")?;
    if f.bool_or("alibi", false)? {
        spec.absolute = Some(Absolute::Alibi);
        spec.layers = plain_layers(layers, None);
    } else {
        spec.ropes.push(rope(f, None, spec.head_dim, false, None)?);
        spec.layers = plain_layers(layers, Some(0));
    }
    let mut n = Names::llama();
    n.embed = "transformer.word_embeddings".into();
    n.final_norm = "transformer.ln_f".into();
    n.layer = "transformer.h.{}".into();
    n.qkv = Some(("self_attention.query_key_value".into(), layout));
    n.o = "self_attention.dense".into();
    n.up = "mlp.dense_h_to_4h".into();
    n.down = "mlp.dense_4h_to_h".into();
    let parallel = new_arch || f.bool_or("parallel_attn", true)?;
    spec.parallel = parallel;
    if new_arch && f.positive_opt("num_ln_in_parallel_attn")?.unwrap_or(2) == 2 {
        n.attn_in = Some("ln_attn".into());
        n.ffn_in = Some("ln_mlp".into());
    } else if parallel {
        n.ffn_in = None;
    }
    Ok((spec, n))
}

/// BLOOM: ALiBi, LayerNorm after the embeddings, per-head fused `query_key_value`.
fn bloom(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = first_positive(f, &["hidden_size", "n_embed"])?;
    let heads = first_positive(f, &["n_head", "num_attention_heads"])?;
    divisible(f, "n_head", hidden, heads)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        // ALiBi has no position table; the context is bounded by memory only.
        f.positive_opt("seq_length")?.unwrap_or(2048),
        f.f64("layer_norm_epsilon")?,
        Act::GeluTanh,
        4 * hidden,
    );
    refuse_true(
        f,
        "apply_residual_connection_post_layernorm",
        "post-LayerNorm residuals are not implemented",
    )?;
    spec.absolute = Some(Absolute::Alibi);
    spec.embed_norm = true;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.layers = plain_layers(first_positive(f, &["n_layer", "num_hidden_layers"])?, None);
    let mut n = Names::llama();
    n.embed = "transformer.word_embeddings".into();
    n.embed_norm = "transformer.word_embeddings_layernorm".into();
    n.final_norm = "transformer.ln_f".into();
    n.layer = "transformer.h.{}".into();
    n.qkv = Some(("self_attention.query_key_value".into(), FusedQkv::PerHead));
    n.o = "self_attention.dense".into();
    n.up = "mlp.dense_h_to_4h".into();
    n.down = "mlp.dense_4h_to_h".into();
    Ok((spec, n))
}

/// OPT: learned positions offset by 2, pre-LayerNorm (`do_layer_norm_before`).
fn opt(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    divisible(f, "num_attention_heads", hidden, heads)?;
    if !f.bool_or("do_layer_norm_before", true)? {
        return Err(f.err(
            "do_layer_norm_before",
            "`false` (post-LayerNorm OPT) is not implemented",
        ));
    }
    if let Some(p) = f.positive_opt("word_embed_proj_dim")?
        && p != hidden
    {
        return Err(f.err(
            "word_embed_proj_dim",
            "embedding projections (project_in/out) are not implemented",
        ));
    }
    let bias = f.bool_or("enable_bias", true)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        1e-5,
        act_field(f, &["activation_function"])?,
        f.positive("ffn_dim")?,
    );
    if !f.bool_or("layer_norm_elementwise_affine", true)? {
        return Err(f.err(
            "layer_norm_elementwise_affine",
            "`false` is not implemented",
        ));
    }
    spec.absolute = Some(Absolute::Learned { offset: 2 });
    spec.qkv_bias = bias;
    spec.o_bias = bias;
    spec.mlp.bias = bias;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.layers = plain_layers(f.positive("num_hidden_layers")?, None);
    let mut n = Names::llama();
    n.embed = "model.decoder.embed_tokens".into();
    n.positions = "model.decoder.embed_positions".into();
    n.final_norm = "model.decoder.final_layer_norm".into();
    n.layer = "model.decoder.layers.{}".into();
    n.o = "self_attn.out_proj".into();
    n.attn_in = Some("self_attn_layer_norm".into());
    n.ffn_in = Some("final_layer_norm".into());
    n.up = "fc1".into();
    n.down = "fc2".into();
    Ok((spec, n))
}

/// MPT: ALiBi, fused `Wqkv`, bias-less LayerNorm when `no_bias`.
fn mpt(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("d_model")?;
    let heads = f.positive("n_heads")?;
    divisible(f, "n_heads", hidden, heads)?;
    let ratio = f.positive_opt("expansion_ratio")?.unwrap_or(4);
    let no_bias = f.bool_or("no_bias", true)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_seq_len")?,
        f.f64_opt("layer_norm_epsilon")?.unwrap_or(1e-5),
        Act::Gelu,
        ratio * hidden,
    );
    spec.norm = NormKind::Layer {
        eps: f.f64_opt("layer_norm_epsilon")?.unwrap_or(1e-5),
        bias: !no_bias,
    };
    spec.qkv_bias = !no_bias;
    spec.o_bias = !no_bias;
    spec.mlp.bias = !no_bias;
    let attn = f.get("attn_config").and_then(Value::as_object);
    let a = |k: &str| attn.and_then(|m| m.get(k)).filter(|v| !v.is_null());
    if a("alibi").and_then(Value::as_bool) == Some(false) {
        return Err(f.err(
            "attn_config.alibi",
            "`false` (learned positions) is not implemented for mpt",
        ));
    }
    if let Some(v) = a("alibi_bias_max").and_then(Value::as_f64)
        && v != 8.0
    {
        return Err(f.err("attn_config.alibi_bias_max", "only 8 is implemented"));
    }
    if a("qk_ln").and_then(Value::as_bool) == Some(true) {
        return Err(f.err("attn_config.qk_ln", "`true` is not implemented"));
    }
    spec.clip_qkv = a("clip_qkv").and_then(Value::as_f64);
    if let Some(s) = a("softmax_scale").and_then(Value::as_f64) {
        spec.attn_scale = s;
    }
    spec.absolute = Some(Absolute::Alibi);
    spec.tie = true;
    spec.layers = plain_layers(f.positive("n_layers")?, None);
    let mut n = Names::llama();
    n.embed = "transformer.wte".into();
    n.final_norm = "transformer.norm_f".into();
    n.layer = "transformer.blocks.{}".into();
    n.qkv = Some(("attn.Wqkv".into(), FusedQkv::Rows));
    n.o = "attn.out_proj".into();
    n.attn_in = Some("norm_1".into());
    n.ffn_in = Some("norm_2".into());
    n.up = "ffn.up_proj".into();
    n.down = "ffn.down_proj".into();
    Ok((spec, n))
}

/// Phi (1, 1.5, 2): parallel block, partial rotary, biases everywhere, `lm_head` bias.
fn phi(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden)?;
    let eps = f.f64("layer_norm_eps")?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        eps,
        act_field(f, &["hidden_act"])?,
        f.positive("intermediate_size")?,
    );
    spec.kv_heads = kv;
    spec.head_dim = head_dim;
    spec.attn_scale = 1.0 / (head_dim as f64).sqrt();
    spec.absolute = None;
    spec.parallel = true;
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    spec.head_bias = true;
    if f.bool_or("qk_layernorm", false)? {
        spec.qk_norm = Some(QkNorm {
            kind: NormKind::Layer { eps, bias: true },
            per_head: true,
        });
    }
    spec.ropes.push(rope(f, None, head_dim, false, None)?);
    spec.layers = plain_layers(f.positive("num_hidden_layers")?, Some(0));
    let mut n = Names::llama();
    n.final_norm = "model.final_layernorm".into();
    n.o = "self_attn.dense".into();
    n.q_norm = "self_attn.q_layernorm".into();
    n.k_norm = "self_attn.k_layernorm".into();
    n.ffn_in = None;
    n.up = "mlp.fc1".into();
    n.down = "mlp.fc2".into();
    Ok((spec, n))
}

/// GPT-Neo: learned positions, unscaled attention, local (windowed) and global layers.
fn gpt_neo(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_heads")?;
    divisible(f, "num_heads", hidden, heads)?;
    let layers = f.positive("num_layers")?;
    let inner = f.positive_opt("intermediate_size")?.unwrap_or(4 * hidden);
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        f.f64("layer_norm_epsilon")?,
        act_field(f, &["activation_function"])?,
        inner,
    );
    spec.attn_scale = 1.0;
    spec.qkv_bias = false;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    let window = f.positive("window_size")?;
    let kinds = match f.get("attention_layers") {
        Some(Value::Array(a)) if a.len() == layers => a,
        _ => {
            return Err(f.err(
                "attention_layers",
                format!("expected a list of {layers} layer kinds"),
            ));
        }
    };
    spec.layers = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| match k.as_str() {
            Some("global") => Ok(None),
            Some("local") => Ok(Some(window)),
            _ => Err(f.err(
                &format!("attention_layers[{i}]"),
                format!("`{k}` is not global or local"),
            )),
        })
        .map(|w| {
            w.map(|window| LayerSpec {
                window,
                rope: None,
                moe: false,
                chunk: None,
                mamba: false,
                ffn_only: false,
                short_conv: false,
                attn_and_mamba: false,
                rwkv: false,
                rglru: false,
                head_dim: None,
                kv_heads: None,
            })
        })
        .collect::<R<Vec<_>>>()?;
    let mut n = Names::llama();
    n.embed = "transformer.wte".into();
    n.positions = "transformer.wpe".into();
    n.final_norm = "transformer.ln_f".into();
    n.layer = "transformer.h.{}".into();
    n.q = "attn.attention.q_proj".into();
    n.k = "attn.attention.k_proj".into();
    n.v = "attn.attention.v_proj".into();
    n.o = "attn.attention.out_proj".into();
    n.attn_in = Some("ln_1".into());
    n.ffn_in = Some("ln_2".into());
    n.up = "mlp.c_fc".into();
    n.down = "mlp.c_proj".into();
    Ok((spec, n))
}

/// BioGPT: learned positions offset by 2, √hidden embedding scale, pre-LayerNorm.
fn biogpt(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    divisible(f, "num_attention_heads", hidden, heads)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        f.f64("layer_norm_eps")?,
        act_field(f, &["hidden_act"])?,
        f.positive("intermediate_size")?,
    );
    spec.absolute = Some(Absolute::Learned { offset: 2 });
    if f.bool_or("scale_embedding", true)? {
        spec.embed_scale = Some((hidden as f64).sqrt());
    }
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.layers = plain_layers(f.positive("num_hidden_layers")?, None);
    let mut n = Names::llama();
    n.embed = "biogpt.embed_tokens".into();
    n.positions = "biogpt.embed_positions".into();
    n.final_norm = "biogpt.layer_norm".into();
    n.head = "output_projection".into();
    n.layer = "biogpt.layers.{}".into();
    n.o = "self_attn.out_proj".into();
    n.attn_in = Some("self_attn_layer_norm".into());
    n.ffn_in = Some("final_layer_norm".into());
    n.up = "fc1".into();
    n.down = "fc2".into();
    Ok((spec, n))
}

/// OpenAI GPT: post-LayerNorm blocks, `Conv1D` projections, learned positions.
fn openai_gpt(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("n_embd")?;
    let heads = f.positive("n_head")?;
    divisible(f, "n_head", hidden, heads)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("n_positions")?,
        f.f64("layer_norm_epsilon")?,
        act_field(f, &["afn"])?,
        4 * hidden,
    );
    spec.post_norm = true;
    spec.final_norm = false;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.layers = plain_layers(f.positive("n_layer")?, None);
    let mut n = Names::llama();
    n.embed = "transformer.tokens_embed".into();
    n.positions = "transformer.positions_embed".into();
    n.layer = "transformer.h.{}".into();
    n.qkv = Some(("attn.c_attn".into(), FusedQkv::Conv1d));
    n.o = "attn.c_proj".into();
    n.attn_in = Some("ln_1".into());
    n.ffn_in = Some("ln_2".into());
    n.up = "mlp.c_fc".into();
    n.down = "mlp.c_proj".into();
    n.conv1d = true;
    Ok((spec, n))
}

/// BERT-generation (`BertGenerationDecoder`): BERT's post-LN blocks under causal attention,
/// learned positions, the embedding LayerNorm, a tied LM head with its own bias.
fn bert_generation(f: &Fields<'_>) -> R<(Spec, Names)> {
    refuse_true(
        f,
        "add_cross_attention",
        "cross-attention layers are not part of a causal LM",
    )?;
    if let Some(t) = f.str_opt("position_embedding_type")?
        && t != "absolute"
    {
        return Err(f.err(
            "position_embedding_type",
            format!("`{t}` is not implemented (absolute)"),
        ));
    }
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    divisible(f, "num_attention_heads", hidden, heads)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        f.f64("layer_norm_eps")?,
        act_field(f, &["hidden_act"])?,
        f.positive("intermediate_size")?,
    );
    spec.post_norm = true;
    spec.final_norm = false;
    spec.embed_norm = true;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.head_bias = true;
    spec.layers = plain_layers(f.positive("num_hidden_layers")?, None);
    let mut n = Names::llama();
    n.embed = "bert.embeddings.word_embeddings".into();
    n.positions = "bert.embeddings.position_embeddings".into();
    n.embed_norm = "bert.embeddings.LayerNorm".into();
    n.layer = "bert.encoder.layer.{}".into();
    n.q = "attention.self.query".into();
    n.k = "attention.self.key".into();
    n.v = "attention.self.value".into();
    n.o = "attention.output.dense".into();
    n.attn_in = Some("attention.output.LayerNorm".into());
    n.ffn_in = Some("output.LayerNorm".into());
    n.up = "intermediate.dense".into();
    n.down = "output.dense".into();
    Ok((spec, n))
}

/// TrOCR's text decoder as a causal LM (`TrOCRForCausalLM`): post-LN blocks, learned positions
/// (offset 2), optional √d embedding scale and embedding LayerNorm, a tied output projection.
/// Its cross-attention runs only over an image encoder's states, which a causal LM does not
/// have: those tensors are left unused, as transformers leaves them.
fn trocr(f: &Fields<'_>) -> R<(Spec, Names)> {
    if !f.bool_or("use_learned_position_embeddings", true)? {
        return Err(f.err(
            "use_learned_position_embeddings",
            "`false` (sinusoidal positions) is not implemented",
        ));
    }
    let hidden = f.positive("d_model")?;
    let heads = f.positive("decoder_attention_heads")?;
    divisible(f, "decoder_attention_heads", hidden, heads)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        1e-5,
        act_field(f, &["activation_function"])?,
        f.positive("decoder_ffn_dim")?,
    );
    spec.absolute = Some(Absolute::Learned { offset: 2 });
    spec.post_norm = true;
    spec.final_norm = false;
    spec.embed_norm = f.bool_or("layernorm_embedding", true)?;
    if f.bool_or("scale_embedding", false)? {
        spec.embed_scale = Some((hidden as f64).sqrt());
    }
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.layers = plain_layers(f.positive("decoder_layers")?, None);
    let mut n = Names::llama();
    n.embed = "model.decoder.embed_tokens".into();
    n.positions = "model.decoder.embed_positions".into();
    n.embed_norm = "model.decoder.layernorm_embedding".into();
    n.layer = "model.decoder.layers.{}".into();
    n.o = "self_attn.out_proj".into();
    n.attn_in = Some("self_attn_layer_norm".into());
    n.ffn_in = Some("final_layer_norm".into());
    n.up = "fc1".into();
    n.down = "fc2".into();
    n.head = "output_projection".into();
    n.unused_by_design = vec![".encoder_attn.".into(), ".encoder_attn_layer_norm.".into()];
    Ok((spec, n))
}

/// Persimmon: per-head fused `query_key_value`, per-head q/k LayerNorm, partial rotary,
/// squared-ReLU MLP, biases everywhere.
fn persimmon(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    divisible(f, "num_attention_heads", hidden, heads)?;
    let eps = f.f64("layer_norm_eps")?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        eps,
        act_field(f, &["hidden_act"])?,
        f.positive("intermediate_size")?,
    );
    spec.absolute = None;
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    if f.bool_or("qk_layernorm", true)? {
        spec.qk_norm = Some(QkNorm {
            kind: NormKind::Layer { eps, bias: true },
            per_head: true,
        });
    }
    spec.ropes.push(rope(f, None, spec.head_dim, false, None)?);
    spec.layers = plain_layers(f.positive("num_hidden_layers")?, Some(0));
    let mut n = Names::llama();
    n.final_norm = "model.final_layernorm".into();
    n.qkv = Some(("self_attn.query_key_value".into(), FusedQkv::PerHead));
    n.o = "self_attn.dense".into();
    n.q_norm = "self_attn.q_layernorm".into();
    n.k_norm = "self_attn.k_layernorm".into();
    n.up = "mlp.dense_h_to_4h".into();
    n.down = "mlp.dense_4h_to_h".into();
    Ok((spec, n))
}

/// XGLM: sinusoidal positions (offset 2), √d embedding scale, pre-LayerNorm.
fn xglm(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("d_model")?;
    let heads = f.positive("attention_heads")?;
    divisible(f, "attention_heads", hidden, heads)?;
    refuse_true(
        f,
        "add_cross_attention",
        "cross-attention layers are not part of a causal LM",
    )?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        1e-5,
        act_field(f, &["activation_function"])?,
        f.positive("ffn_dim")?,
    );
    spec.absolute = Some(Absolute::SinusoidalXglm {
        padding_idx: f.token_ids("pad_token_id")?.first().map(|&p| p as usize),
    });
    if f.bool_or("scale_embedding", true)? {
        spec.embed_scale = Some((hidden as f64).sqrt());
    }
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.layers = plain_layers(f.positive("num_layers")?, None);
    let mut n = Names::llama();
    n.final_norm = "model.layer_norm".into();
    n.o = "self_attn.out_proj".into();
    n.attn_in = Some("self_attn_layer_norm".into());
    n.ffn_in = Some("final_layer_norm".into());
    n.up = "fc1".into();
    n.down = "fc2".into();
    Ok((spec, n))
}

/// CTRL: sinusoidal positions, √d embedding scale, pre-LayerNorm (ε 1e-6 in the blocks),
/// ReLU MLP, `lm_head` with a bias.
fn ctrl(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("n_embd")?;
    let heads = f.positive("n_head")?;
    divisible(f, "n_head", hidden, heads)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("n_positions")?,
        1e-6,
        Act::Relu,
        f.positive("dff")?,
    );
    let final_eps = f.f64("layer_norm_epsilon")?;
    if final_eps != 1e-6 {
        // The blocks use 1e-6 whatever the config says; one epsilon for all norms here.
        return Err(f.err(
            "layer_norm_epsilon",
            "only 1e-6 (the value CTRL's blocks hard-code) is implemented",
        ));
    }
    spec.absolute = Some(Absolute::SinusoidalCtrl);
    spec.embed_scale = Some((hidden as f64).sqrt());
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.head_bias = true;
    spec.layers = plain_layers(f.positive("n_layer")?, None);
    let mut n = Names::llama();
    n.embed = "transformer.w".into();
    n.final_norm = "transformer.layernorm".into();
    n.layer = "transformer.h.{}".into();
    n.q = "multi_head_attention.Wq".into();
    n.k = "multi_head_attention.Wk".into();
    n.v = "multi_head_attention.Wv".into();
    n.o = "multi_head_attention.dense".into();
    n.attn_in = Some("layernorm1".into());
    n.ffn_in = Some("layernorm2".into());
    n.up = "ffn.0".into();
    n.down = "ffn.2".into();
    n.score = "classifier".into();
    Ok((spec, n))
}

/// DBRX: `transformer.blocks.{i}.norm_attn_norm.*`, fused `Wqkv` with `clip_qkv`, bias-less
/// LayerNorm, experts as `[E * F, H]` tensors, router weights normalised by their L1 norm.
fn dbrx(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("d_model")?;
    let heads = f.positive("n_heads")?;
    divisible(f, "n_heads", hidden, heads)?;
    let attn = f.get("attn_config").and_then(Value::as_object);
    let ffn = f.get("ffn_config").and_then(Value::as_object);
    let a = |k: &str| attn.and_then(|m| m.get(k)).filter(|v| !v.is_null());
    let g = |k: &str| ffn.and_then(|m| m.get(k)).filter(|v| !v.is_null());
    let need = |v: Option<&Value>, field: &str| -> R<usize> {
        v.and_then(Value::as_u64)
            .filter(|x| *x > 0)
            .map(|x| x as usize)
            .ok_or_else(|| f.err(field, "missing or not a positive integer"))
    };
    let kv = need(a("kv_n_heads"), "attn_config.kv_n_heads")?;
    let experts = need(g("moe_num_experts"), "ffn_config.moe_num_experts")?;
    let top_k = need(g("moe_top_k"), "ffn_config.moe_top_k")?;
    let width = need(g("ffn_hidden_size"), "ffn_config.ffn_hidden_size")?;
    match g("moe_normalize_expert_weights").and_then(Value::as_f64) {
        Some(1.0) => {}
        other => {
            return Err(f.err(
                "ffn_config.moe_normalize_expert_weights",
                format!("{other:?} is not implemented (1: weights divided by their sum)"),
            ));
        }
    }
    let act = match g("ffn_act_fn")
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
    {
        None | Some("silu") => Act::Silu,
        Some(other) => {
            return Err(f.err(
                "ffn_config.ffn_act_fn",
                format!("`{other}` is not implemented (silu)"),
            ));
        }
    };
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_seq_len")?,
        1e-5,
        act,
        width,
    );
    spec.norm = NormKind::Layer {
        eps: 1e-5,
        bias: false,
    };
    spec.kv_heads = kv;
    spec.absolute = None;
    spec.qkv_bias = false;
    spec.o_bias = false;
    spec.clip_qkv = a("clip_qkv").and_then(Value::as_f64);
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    spec.ropes.push(rope(f, None, spec.head_dim, false, None)?);
    spec.moe = Some(Moe {
        experts,
        top_k,
        intermediate: width,
        routing: Routing::SoftmaxTopK,
        norm_topk: true,
        scale: 1.0,
        router_bias: false,
        expert_bias: false,
        swiglu_limit: None,
        shared: None,
        shared_gate: false,
        act,
        e_bias: false,
        shared_average: false,
        out_norm: false,
        weight_input: false,
        plain_experts: false,
        norm_eps: None,
        shared_clamped: false,
    });
    spec.layers = (0..f.positive("n_layers")?)
        .map(|_| LayerSpec {
            window: None,
            rope: Some(0),
            moe: true,
            chunk: None,
            mamba: false,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    let mut n = Names::llama();
    n.embed = "transformer.wte".into();
    n.final_norm = "transformer.norm_f".into();
    n.layer = "transformer.blocks.{}".into();
    n.qkv = Some(("norm_attn_norm.attn.Wqkv".into(), FusedQkv::Rows));
    n.o = "norm_attn_norm.attn.out_proj".into();
    n.attn_in = Some("norm_attn_norm.norm_1".into());
    n.ffn_in = Some("norm_attn_norm.norm_2".into());
    n.router = "ffn.router.layer".into();
    n.dbrx_experts = Some("ffn.experts.mlp".into());
    Ok((spec, n))
}

/// GPT-NeoX Japanese: per-head fused `query_key_value` and `dense` without biases, a
/// `dense_bias` on the last layer only, sequential blocks, MLP width
/// `hidden * intermediate_multiple_size` without biases.
fn gpt_neox_japanese(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    divisible(f, "num_attention_heads", hidden, heads)?;
    let mult = f.positive_opt("intermediate_multiple_size")?.unwrap_or(4);
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        f.f64("layer_norm_eps")?,
        act_field(f, &["hidden_act"])?,
        hidden * mult,
    );
    spec.absolute = None;
    spec.qkv_bias = false;
    spec.o_bias = false;
    spec.mlp.bias = false;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.ropes.push(rope(f, None, spec.head_dim, false, None)?);
    spec.layers = plain_layers(f.positive("num_hidden_layers")?, Some(0));
    let mut n = Names::llama();
    n.embed = "gpt_neox_japanese.embed_in".into();
    n.final_norm = "gpt_neox_japanese.final_layer_norm".into();
    n.head = "embed_out".into();
    n.layer = "gpt_neox_japanese.layers.{}".into();
    n.qkv = Some(("attention.query_key_value".into(), FusedQkv::PerHead));
    n.o = "attention.dense".into();
    n.up = "mlp.dense_h_to_4h".into();
    n.down = "mlp.dense_4h_to_h".into();
    n.last_o_bias = Some("attention.dense_bias".into());
    Ok((spec, n))
}

/// Mamba and Falcon-Mamba: every layer `x + mixer(RMSNorm(x))` with a selective-scan mixer,
/// no attention and no FFN.
fn mamba(t: &str, f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let inner = match f.positive_opt("intermediate_size")? {
        Some(i) => i,
        None => f.positive_opt("expand")?.unwrap_or(2) * hidden,
    };
    let dt_rank = match f.get("time_step_rank") {
        Some(Value::String(s)) if s == "auto" => hidden.div_ceil(16),
        _ => f.positive("time_step_rank")?,
    };
    match f.str_opt("hidden_act")? {
        None | Some("silu") => {}
        Some(other) => {
            return Err(f.err(
                "hidden_act",
                format!("`{other}` is not implemented for the Mamba mixer (silu)"),
            ));
        }
    }
    let eps = f.f64("layer_norm_epsilon")?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        1,
        // A recurrent state: no position table bounds the context.
        f.positive_opt("max_position_embeddings")?
            .unwrap_or(1 << 20),
        eps,
        Act::Silu,
        inner,
    );
    spec.norm = rms(eps);
    spec.absolute = None;
    spec.ffn = false;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.mamba = Some(super::spec::Mamba {
        inner,
        state: f.positive("state_size")?,
        conv_kernel: f.positive("conv_kernel")?,
        dt_rank,
        conv_bias: f.bool_or("use_conv_bias", true)?,
        proj_bias: f.bool_or("use_bias", false)?,
        bcdt_norm: if t == "falcon_mamba" {
            Some((f.f64_opt("mixer_rms_eps")?.unwrap_or(1e-6), false))
        } else {
            None
        },
    });
    spec.layers = (0..f.positive("num_hidden_layers")?)
        .map(|_| LayerSpec {
            window: None,
            rope: None,
            moe: false,
            chunk: None,
            mamba: true,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    let mut n = Names::llama();
    n.embed = "backbone.embeddings".into();
    n.final_norm = "backbone.norm_f".into();
    n.layer = "backbone.layers.{}".into();
    n.attn_in = Some("norm".into());
    n.ffn_in = None;
    Ok((spec, n))
}

/// A float that JSON may spell as `{"__float__": "Infinity"}` (transformers' encoding).
fn float_or_inf(v: &Value) -> Option<f64> {
    match v {
        Value::Object(o) => match o.get("__float__").and_then(Value::as_str) {
            Some("Infinity") => Some(f64::INFINITY),
            Some("-Infinity") => Some(f64::NEG_INFINITY),
            _ => None,
        },
        v => v.as_f64(),
    }
}

/// Mamba-2: every layer `x + mixer(RMSNorm(x))` with an SSD mixer.
fn mamba2(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_heads")?;
    let head_dim = f.positive("head_dim")?;
    let inner = f.positive_opt("expand")?.unwrap_or(2) * hidden;
    if heads * head_dim != inner {
        return Err(f.err(
            "num_heads",
            format!("{heads} heads × head_dim {head_dim} ≠ expand × hidden_size = {inner}"),
        ));
    }
    let groups = f.positive_opt("n_groups")?.unwrap_or(1);
    if !heads.is_multiple_of(groups) {
        return Err(f.err(
            "n_groups",
            format!("{groups} does not divide {heads} heads"),
        ));
    }
    match f.str_opt("hidden_act")? {
        None | Some("silu") => {}
        Some(other) => {
            return Err(f.err(
                "hidden_act",
                format!("`{other}` is not implemented for the Mamba-2 mixer (silu)"),
            ));
        }
    }
    let (dt_min, dt_max) = match f.get("time_step_limit") {
        None => (0.0, f64::INFINITY),
        Some(Value::Array(a)) if a.len() == 2 => match (float_or_inf(&a[0]), float_or_inf(&a[1])) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => return Err(f.err("time_step_limit", "expected two numbers")),
        },
        Some(v) => return Err(f.err("time_step_limit", format!("expected [min, max], found {v}"))),
    };
    let eps = f.f64("layer_norm_epsilon")?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        1,
        f.positive_opt("max_position_embeddings")?
            .unwrap_or(1 << 20),
        eps,
        Act::Silu,
        inner,
    );
    spec.norm = rms(eps);
    spec.absolute = None;
    spec.ffn = false;
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    spec.mamba2 = Some(super::spec::Mamba2 {
        heads,
        head_dim,
        groups,
        state: f.positive("state_size")?,
        conv_kernel: f.positive("conv_kernel")?,
        conv_bias: f.bool_or("use_conv_bias", true)?,
        proj_bias: f.bool_or("use_bias", false)?,
        eps,
        dt_min,
        dt_max,
        gated_norm: true,
    });
    spec.layers = (0..f.positive("num_hidden_layers")?)
        .map(|_| LayerSpec {
            window: None,
            rope: None,
            moe: false,
            chunk: None,
            mamba: true,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    let mut n = Names::llama();
    n.embed = "backbone.embeddings".into();
    n.final_norm = "backbone.norm_f".into();
    n.layer = "backbone.layers.{}".into();
    n.attn_in = Some("norm".into());
    n.ffn_in = None;
    Ok((spec, n))
}

/// Jamba: Mamba layers (with weighted `dt`/`B`/`C` norms) and attention layers without
/// positions, dense and MoE FFNs, on periodic schedules.
fn jamba(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden)?;
    let eps = f.f64("rms_norm_eps")?;
    let layers = f.positive("num_hidden_layers")?;
    let act = act_field(f, &["hidden_act"])?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        eps,
        act,
        f.positive("intermediate_size")?,
    );
    spec.kv_heads = kv;
    spec.head_dim = head_dim;
    spec.attn_scale = 1.0 / (head_dim as f64).sqrt();
    spec.norm = rms(eps);
    spec.absolute = None;
    spec.qkv_bias = false;
    spec.o_bias = false;
    spec.mlp = Mlp {
        gated: true,
        act,
        intermediate: f.positive("intermediate_size")?,
        bias: false,
    };
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    let dt_rank = match f.get("mamba_dt_rank") {
        Some(Value::String(s)) if s == "auto" => hidden.div_ceil(16),
        _ => f.positive("mamba_dt_rank")?,
    };
    spec.mamba = Some(super::spec::Mamba {
        inner: f.positive_opt("mamba_expand")?.unwrap_or(2) * hidden,
        state: f.positive("mamba_d_state")?,
        conv_kernel: f.positive("mamba_d_conv")?,
        dt_rank,
        conv_bias: f.bool_or("mamba_conv_bias", true)?,
        proj_bias: f.bool_or("mamba_proj_bias", false)?,
        bcdt_norm: Some((eps, true)),
    });
    let period = |k: &str| f.positive_opt(k).map(|v| v.unwrap_or(1));
    let offset = |k: &str| f.usize_opt(k).map(|v| v.unwrap_or(0));
    let (ap, ao) = (period("attn_layer_period")?, offset("attn_layer_offset")?);
    let (ep, eo) = (
        period("expert_layer_period")?,
        offset("expert_layer_offset")?,
    );
    let experts = f.usize_opt("num_experts")?.unwrap_or(0);
    spec.layers = (0..layers)
        .map(|i| LayerSpec {
            window: None,
            rope: None,
            moe: experts > 1 && i % ep == eo,
            chunk: None,
            mamba: i % ap != ao,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    if experts > 1 {
        spec.moe = Some(Moe {
            experts,
            top_k: f.positive("num_experts_per_tok")?,
            intermediate: f.positive("intermediate_size")?,
            routing: Routing::SoftmaxTopK,
            norm_topk: false,
            scale: 1.0,
            router_bias: false,
            expert_bias: false,
            swiglu_limit: None,
            shared: None,
            shared_gate: false,
            act,
            e_bias: false,
            shared_average: false,
            out_norm: false,
            weight_input: false,
            plain_experts: false,
            norm_eps: None,
            shared_clamped: false,
        });
    }
    let mut n = Names::llama();
    n.final_norm = "model.final_layernorm".into();
    n.mixer = "mamba".into();
    n.ffn_in = Some("pre_ff_layernorm".into());
    n.gate = "feed_forward.gate_proj".into();
    n.up = "feed_forward.up_proj".into();
    n.down = "feed_forward.down_proj".into();
    n.router = "feed_forward.router".into();
    n.expert = "feed_forward.experts.{}".into();
    Ok((spec, n))
}

/// The Mamba-2 mixer of a hybrid's `mamba_*` fields.
fn mamba2_mixer(f: &Fields<'_>, hidden: usize, eps: f64) -> R<super::spec::Mamba2> {
    let heads = f.positive("mamba_n_heads")?;
    let head_dim = f.positive("mamba_d_head")?;
    let inner = f.positive_opt("mamba_expand")?.unwrap_or(2) * hidden;
    if heads * head_dim != inner {
        return Err(f.err(
            "mamba_n_heads",
            format!(
                "{heads} heads × mamba_d_head {head_dim} ≠ mamba_expand × hidden_size = {inner}"
            ),
        ));
    }
    let groups = f.positive_opt("mamba_n_groups")?.unwrap_or(1);
    if !heads.is_multiple_of(groups) {
        return Err(f.err(
            "mamba_n_groups",
            format!("{groups} does not divide {heads} heads"),
        ));
    }
    let (dt_min, dt_max) = match f.get("time_step_limit") {
        None => (0.0, f64::INFINITY),
        Some(Value::Array(a)) if a.len() == 2 => match (float_or_inf(&a[0]), float_or_inf(&a[1])) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => return Err(f.err("time_step_limit", "expected two numbers")),
        },
        Some(v) => return Err(f.err("time_step_limit", format!("expected [min, max], found {v}"))),
    };
    Ok(super::spec::Mamba2 {
        heads,
        head_dim,
        groups,
        state: f.positive("mamba_d_state")?,
        conv_kernel: f.positive("mamba_d_conv")?,
        conv_bias: f.bool_or("mamba_conv_bias", true)?,
        proj_bias: f.bool_or("mamba_proj_bias", false)?,
        eps,
        dt_min,
        dt_max,
        gated_norm: true,
    })
}

/// Bamba and GraniteMoE-hybrid: Mamba-2 layers and attention layers, each followed by an FFN
/// (dense for Bamba; GraniteMoE experts plus a shared MLP, with Granite's multipliers, for
/// GraniteMoE-hybrid).
fn mamba2_hybrid(t: &str, f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden)?;
    let eps = f.f64("rms_norm_eps")?;
    let layers = f.positive("num_hidden_layers")?;
    let act = act_field(f, &["hidden_act"])?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        eps,
        act,
        f.positive("intermediate_size")?,
    );
    spec.kv_heads = kv;
    spec.head_dim = head_dim;
    spec.attn_scale = 1.0 / (head_dim as f64).sqrt();
    spec.norm = rms(eps);
    spec.absolute = None;
    let bias = f.bool_or("attention_bias", false)?;
    spec.qkv_bias = bias;
    spec.o_bias = bias;
    spec.mlp = Mlp {
        gated: true,
        act,
        intermediate: f.positive("intermediate_size")?,
        bias: f.bool_or("mlp_bias", false)?,
    };
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    spec.mamba2 = Some(mamba2_mixer(f, hidden, eps)?);
    let attention: Vec<bool> = if t == "bamba" {
        let idx: Vec<usize> = match f.get("attn_layer_indices") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_u64().map(|n| n as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| f.err("attn_layer_indices", "expected a list of layer indices"))?,
            _ => Vec::new(),
        };
        (0..layers).map(|i| idx.contains(&i)).collect()
    } else {
        let types =
            layer_types(f, layers)?.ok_or_else(|| f.err("layer_types", "missing (required)"))?;
        types
            .iter()
            .enumerate()
            .map(|(i, k)| match k.as_str() {
                "full_attention" | "attention" => Ok(true),
                "linear_attention" | "mamba" => Ok(false),
                other => Err(f.err(
                    &format!("layer_types[{i}]"),
                    format!("`{other}` is not implemented"),
                )),
            })
            .collect::<R<Vec<_>>>()?
    };
    let rope = match t {
        "granitemoehybrid" => match f.str_opt("position_embedding_type")? {
            None => false,
            Some("rope") => true,
            Some(other) => {
                return Err(f.err(
                    "position_embedding_type",
                    format!("`{other}` is not implemented (rope or null)"),
                ));
            }
        },
        _ => true,
    };
    if rope {
        spec.ropes
            .push(super::translate::rope(f, None, head_dim, false, None)?);
    }
    let mut n = Names::llama();
    if t == "granitemoehybrid" {
        spec.embed_scale = f.f64_opt("embedding_multiplier")?;
        spec.residual_scale = f.f64_opt("residual_multiplier")?;
        if let Some(m) = f.f64_opt("attention_multiplier")? {
            spec.attn_scale = m;
        }
        if let Some(s) = f.f64_opt("logits_scaling")? {
            spec.logits_scale = Some(1.0 / s);
        }
        let experts = f.positive("num_local_experts")?;
        spec.moe = Some(Moe {
            experts,
            top_k: f.positive("num_experts_per_tok")?,
            intermediate: f.positive("intermediate_size")?,
            routing: Routing::TopKSoftmax,
            norm_topk: false,
            scale: 1.0,
            router_bias: false,
            expert_bias: false,
            swiglu_limit: None,
            shared: f.positive_opt("shared_intermediate_size")?,
            shared_gate: false,
            act,
            e_bias: false,
            shared_average: false,
            out_norm: false,
            weight_input: false,
            plain_experts: false,
            norm_eps: None,
            shared_clamped: false,
        });
        n.router = "block_sparse_moe.router.layer".into();
        n.fused_experts = Some(FusedExperts {
            gate_up: "block_sparse_moe.input_linear.weight".into(),
            down: "block_sparse_moe.output_linear.weight".into(),
            transposed: false,
            interleaved: false,
            biases: None,
        });
        n.shared_fused = Some((
            "shared_mlp.input_linear".into(),
            "shared_mlp.output_linear".into(),
        ));
    } else {
        n.final_norm = "model.final_layernorm".into();
        n.ffn_in = Some("pre_ff_layernorm".into());
        n.gate = "feed_forward.gate_proj".into();
        n.up = "feed_forward.up_proj".into();
        n.down = "feed_forward.down_proj".into();
    }
    let moe = spec.moe.is_some();
    spec.layers = (0..layers)
        .map(|i| LayerSpec {
            window: None,
            rope: if rope && attention[i] { Some(0) } else { None },
            moe,
            chunk: None,
            mamba: !attention[i],
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    n.mixer = "mamba".into();
    Ok((spec, n))
}

/// Nemotron-H: each layer is one of a Mamba-2 mixer, attention (no positions), a squared-ReLU
/// MLP or a MoE of squared-ReLU experts with DeepSeek-V3 routing, as `x + block(RMSNorm(x))`.
fn nemotron_h(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden)?;
    let eps = f.f64("layer_norm_epsilon")?;
    let act = act_field(f, &["mlp_hidden_act"])?;
    let kinds: Vec<String> = match f.get("layers_block_type") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| f.err("layers_block_type", "expected a list of strings"))?,
        _ => return Err(f.err("layers_block_type", "missing (required)")),
    };
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        eps,
        act,
        f.positive("intermediate_size")?,
    );
    spec.kv_heads = kv;
    spec.head_dim = head_dim;
    spec.attn_scale = 1.0 / (head_dim as f64).sqrt();
    spec.norm = rms(eps);
    spec.absolute = None;
    let bias = f.bool_or("attention_bias", false)?;
    spec.qkv_bias = bias;
    spec.o_bias = bias;
    spec.mlp.bias = f.bool_or("mlp_bias", false)?;
    spec.ffn = false;
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    if f.positive_opt("moe_latent_size")?.is_some() {
        return Err(f.err(
            "moe_latent_size",
            "latent MoE projections are not implemented",
        ));
    }
    let m2 = {
        let heads = f.positive("mamba_num_heads")?;
        let head_dim = f.positive("mamba_head_dim")?;
        let groups = f.positive_opt("n_groups")?.unwrap_or(1);
        // Nemotron-H clamps `dt` to `[time_step_min, ∞)` (its `time_step_limit` field is unused).
        let (dt_min, dt_max) = (f.f64("time_step_min")?, f64::INFINITY);
        super::spec::Mamba2 {
            heads,
            head_dim,
            groups,
            state: f.positive("ssm_state_size")?,
            conv_kernel: f.positive("conv_kernel")?,
            conv_bias: f.bool_or("use_conv_bias", true)?,
            proj_bias: f.bool_or("mamba_proj_bias", false)?,
            eps,
            dt_min,
            dt_max,
            gated_norm: true,
        }
    };
    spec.mamba2 = Some(m2);
    if kinds.iter().any(|k| k == "moe") {
        let intermediate = f.positive("moe_intermediate_size")?;
        spec.moe = Some(Moe {
            experts: f.positive("n_routed_experts")?,
            top_k: f.positive("num_experts_per_tok")?,
            intermediate,
            routing: Routing::SigmoidGrouped {
                groups: f.positive_opt("n_group")?.unwrap_or(1),
                topk_groups: f.positive_opt("topk_group")?.unwrap_or(1),
            },
            norm_topk: f.bool_or("norm_topk_prob", true)?,
            scale: float_or(f, "routed_scaling_factor", 1.0)?,
            router_bias: false,
            expert_bias: false,
            swiglu_limit: None,
            shared: f.positive_opt("moe_shared_expert_intermediate_size")?,
            shared_gate: false,
            act,
            e_bias: true,
            shared_average: false,
            out_norm: false,
            weight_input: false,
            plain_experts: true,
            norm_eps: None,
            shared_clamped: false,
        });
    }
    spec.mlp.gated = false;
    spec.layers = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let (mamba, ffn_only, moe) = match k.as_str() {
                "linear_attention" | "mamba" => (true, false, false),
                "full_attention" | "attention" => (false, false, false),
                "mlp" => (false, true, false),
                "moe" => (false, true, true),
                other => {
                    return Err(f.err(
                        &format!("layers_block_type[{i}]"),
                        format!("`{other}` is not implemented"),
                    ));
                }
            };
            Ok(LayerSpec {
                window: None,
                rope: None,
                moe,
                chunk: None,
                mamba,
                ffn_only,
                short_conv: false,
                attn_and_mamba: false,
                rwkv: false,
                rglru: false,
                head_dim: None,
                kv_heads: None,
            })
        })
        .collect::<R<Vec<_>>>()?;
    let mut n = Names::llama();
    n.embed = "backbone.embeddings".into();
    n.final_norm = "backbone.norm_f".into();
    n.layer = "backbone.layers.{}".into();
    n.attn_in = Some("norm".into());
    n.ffn_in = None;
    n.q = "mixer.q_proj".into();
    n.k = "mixer.k_proj".into();
    n.v = "mixer.v_proj".into();
    n.o = "mixer.o_proj".into();
    n.up = "mixer.up_proj".into();
    n.down = "mixer.down_proj".into();
    n.router = "mixer.gate".into();
    n.e_bias = "mixer.gate.e_score_correction_bias".into();
    n.expert = "mixer.experts.{}".into();
    n.shared = "mixer.shared_experts".into();
    Ok((spec, n))
}

/// LFM2 and LFM2-MoE: gated short-convolution layers and attention layers (per-head q/k
/// RMSNorm), SwiGLU FFNs (`w1`/`w3`/`w2`, LFM2's width rule) or sigmoid-routed MoE, the final
/// norm named `embedding_norm`.
fn lfm2(t: &str, f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden)?;
    let eps = f.f64("norm_eps")?;
    let layers = f.positive("num_hidden_layers")?;
    let mut width = f.positive("intermediate_size")?;
    if t == "lfm2" && f.bool_or("block_auto_adjust_ff_dim", false)? {
        width = 2 * width / 3;
        if let Some(m) = f.f64_opt("block_ffn_dim_multiplier")? {
            width = (m * width as f64) as usize;
        }
        let multiple = f.positive_opt("block_multiple_of")?.unwrap_or(1);
        width = multiple * width.div_ceil(multiple);
    }
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        eps,
        Act::Silu,
        width,
    );
    spec.kv_heads = kv;
    spec.head_dim = head_dim;
    spec.attn_scale = 1.0 / (head_dim as f64).sqrt();
    spec.norm = rms(eps);
    spec.absolute = None;
    spec.qkv_bias = false;
    spec.o_bias = false;
    spec.mlp = Mlp {
        gated: true,
        act: Act::Silu,
        intermediate: width,
        bias: false,
    };
    spec.qk_norm = Some(QkNorm {
        kind: rms(eps),
        per_head: true,
    });
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    spec.short_conv = Some(super::spec::ShortConv {
        kernel: f.positive("conv_L_cache")?,
        bias: f.bool_or("conv_bias", false)?,
    });
    spec.ropes.push(rope(f, None, head_dim, false, None)?);
    let types =
        layer_types(f, layers)?.ok_or_else(|| f.err("layer_types", "missing (required)"))?;
    let conv: Vec<bool> = types
        .iter()
        .enumerate()
        .map(|(i, k)| match k.as_str() {
            "conv" => Ok(true),
            "full_attention" => Ok(false),
            other => Err(f.err(
                &format!("layer_types[{i}]"),
                format!("`{other}` is not implemented (conv, full_attention)"),
            )),
        })
        .collect::<R<Vec<_>>>()?;
    let mut n = Names::llama();
    let moe_flags = if t == "lfm2_moe" {
        let experts = f.positive("num_experts")?;
        let e_bias = f.bool_or("use_expert_bias", false)?;
        spec.moe = Some(Moe {
            experts,
            top_k: f.positive("num_experts_per_tok")?,
            intermediate: f.positive("moe_intermediate_size")?,
            routing: if e_bias {
                Routing::SigmoidGrouped {
                    groups: 1,
                    topk_groups: 1,
                }
            } else {
                Routing::TopKSigmoid
            },
            norm_topk: f.bool_or("norm_topk_prob", false)?,
            scale: float_or(f, "routed_scaling_factor", 1.0)?,
            router_bias: false,
            expert_bias: false,
            swiglu_limit: None,
            shared: None,
            shared_gate: false,
            act: Act::Silu,
            e_bias,
            shared_average: false,
            out_norm: false,
            weight_input: false,
            plain_experts: false,
            norm_eps: Some(1e-6),
            shared_clamped: false,
        });
        n.router = "feed_forward.gate".into();
        n.e_bias = "feed_forward.expert_bias".into();
        n.expert = "feed_forward.experts.{}".into();
        n.ex_gate = "w1".into();
        n.ex_up = "w3".into();
        n.ex_down = "w2".into();
        let dense = f.usize_opt("num_dense_layers")?.unwrap_or(0);
        (0..layers).map(|i| i >= dense).collect()
    } else {
        vec![false; layers]
    };
    spec.layers = (0..layers)
        .map(|i| LayerSpec {
            window: None,
            rope: if conv[i] { None } else { Some(0) },
            moe: moe_flags[i],
            chunk: None,
            mamba: false,
            ffn_only: false,
            short_conv: conv[i],
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    n.final_norm = "model.embedding_norm".into();
    n.attn_in = Some("operator_norm".into());
    n.ffn_in = Some("ffn_norm".into());
    n.o = "self_attn.out_proj".into();
    n.q_norm = "self_attn.q_layernorm".into();
    n.k_norm = "self_attn.k_layernorm".into();
    n.mixer = "conv".into();
    n.gate = "feed_forward.w1".into();
    n.up = "feed_forward.w3".into();
    n.down = "feed_forward.w2".into();
    Ok((spec, n))
}

/// ModernBERT-decoder: LayerNorm (no bias) after the embeddings, no pre-attention norm on
/// layer 0, GeGLU `Wi`, sliding layers, and a prediction head (`lm_head.dense`, GELU,
/// `lm_head.norm`) before the tied decoder with its bias.
fn modernbert_decoder(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden)?;
    let eps = f.f64("norm_eps")?;
    let layers = f.positive("num_hidden_layers")?;
    let act = act_field(f, &["hidden_activation"])?;
    let norm_bias = f.bool_or("norm_bias", false)?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        eps,
        act,
        f.positive("intermediate_size")?,
    );
    spec.kv_heads = kv;
    spec.head_dim = head_dim;
    spec.attn_scale = 1.0 / (head_dim as f64).sqrt();
    spec.norm = NormKind::Layer {
        eps,
        bias: norm_bias,
    };
    spec.absolute = None;
    let bias = f.bool_or("attention_bias", false)?;
    spec.qkv_bias = bias;
    spec.o_bias = bias;
    spec.mlp = Mlp {
        gated: true,
        act,
        intermediate: f.positive("intermediate_size")?,
        bias: f.bool_or("mlp_bias", false)?,
    };
    spec.embed_norm = true;
    spec.first_layer_no_attn_norm = true;
    let transform = HeadTransform::Dense {
        act: act_field(f, &["classifier_activation"])?,
        bias: false,
        norm: Some("norm"),
    };
    spec.lm_transform = Some(transform);
    spec.score_transform = Some(transform);
    spec.head_bias = f.bool_or("decoder_bias", true)?;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    let wins = windows(f, layers, false)?;
    let types =
        layer_types(f, layers)?.ok_or_else(|| f.err("layer_types", "missing (required)"))?;
    let mut kinds: Vec<String> = Vec::new();
    let mut layer_rope = Vec::with_capacity(layers);
    for k in &types {
        let idx = match kinds.iter().position(|x| x == k) {
            Some(j) => j,
            None => {
                kinds.push(k.clone());
                spec.ropes.push(rope(f, Some(k), head_dim, false, None)?);
                kinds.len() - 1
            }
        };
        layer_rope.push(Some(idx));
    }
    spec.layers = (0..layers)
        .map(|i| LayerSpec {
            window: wins[i],
            rope: layer_rope[i],
            moe: false,
            chunk: None,
            mamba: false,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    let mut n = Names::llama();
    n.embed = "model.embeddings.tok_embeddings".into();
    n.embed_norm = "model.embeddings.norm".into();
    n.final_norm = "model.final_norm".into();
    n.head = "decoder".into();
    n.q = "attn.q_proj".into();
    n.k = "attn.k_proj".into();
    n.v = "attn.v_proj".into();
    n.o = "attn.Wo".into();
    n.attn_in = Some("attn_norm".into());
    n.ffn_in = Some("mlp_norm".into());
    n.gate_up = Some("mlp.Wi".into());
    n.down = "mlp.Wo".into();
    n.score = "classifier".into();
    n.score_transform = Some("head".into());
    n.lm_transform = Some("lm_head".into());
    Ok((spec, n))
}

/// Falcon-H1: every layer runs attention and a Mamba-2 mixer side by side on the normed input
/// (their outputs add), then a SwiGLU MLP. Its µP multipliers are refused unless 1.
fn falcon_h1(f: &Fields<'_>) -> R<(Spec, Names)> {
    for k in [
        "attention_in_multiplier",
        "attention_out_multiplier",
        "key_multiplier",
        "embedding_multiplier",
        "lm_head_multiplier",
        "ssm_in_multiplier",
        "ssm_out_multiplier",
    ] {
        if f.f64_opt(k)?.is_some_and(|m| m != 1.0) {
            return Err(f.err(k, "multipliers other than 1 are not implemented"));
        }
    }
    for k in ["mlp_multipliers", "ssm_multipliers"] {
        if let Some(Value::Array(a)) = f.get(k)
            && a.iter().any(|m| m.as_f64() != Some(1.0))
        {
            return Err(f.err(k, "multipliers other than 1 are not implemented"));
        }
    }
    if f.bool_or("mamba_rms_norm", false)? {
        return Err(f.err(
            "mamba_rms_norm",
            "the normalise-then-gate Mamba norm is not implemented",
        ));
    }
    let hidden = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden)?;
    let eps = f.f64("rms_norm_eps")?;
    let layers = f.positive("num_hidden_layers")?;
    let act = act_field(f, &["hidden_act"])?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive("max_position_embeddings")?,
        eps,
        act,
        f.positive("intermediate_size")?,
    );
    spec.kv_heads = kv;
    spec.head_dim = head_dim;
    spec.attn_scale = 1.0 / (head_dim as f64).sqrt();
    spec.norm = rms(eps);
    spec.absolute = None;
    let bias = f.bool_or("attention_bias", false)?;
    spec.qkv_bias = bias;
    spec.o_bias = bias;
    spec.mlp = Mlp {
        gated: true,
        act,
        intermediate: f.positive("intermediate_size")?,
        bias: f.bool_or("mlp_bias", false)?,
    };
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    let heads_m = f.positive("mamba_n_heads")?;
    let head_dim_m = f.positive("mamba_d_head")?;
    if let Some(d) = f.positive_opt("mamba_d_ssm")?
        && d != heads_m * head_dim_m
    {
        return Err(f.err("mamba_d_ssm", format!("{d} ≠ mamba_n_heads × mamba_d_head")));
    }
    let (dt_min, dt_max) = match f.get("time_step_limit") {
        None => (0.0, f64::INFINITY),
        Some(Value::Array(a)) if a.len() == 2 => match (float_or_inf(&a[0]), float_or_inf(&a[1])) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => return Err(f.err("time_step_limit", "expected two numbers")),
        },
        Some(v) => return Err(f.err("time_step_limit", format!("expected [min, max], found {v}"))),
    };
    spec.mamba2 = Some(super::spec::Mamba2 {
        heads: heads_m,
        head_dim: head_dim_m,
        groups: f.positive_opt("mamba_n_groups")?.unwrap_or(1),
        state: f.positive("mamba_d_state")?,
        conv_kernel: f.positive("mamba_d_conv")?,
        conv_bias: f.bool_or("mamba_conv_bias", true)?,
        proj_bias: f.bool_or("mamba_proj_bias", false)?,
        eps,
        dt_min,
        dt_max,
        gated_norm: false,
    });
    spec.ropes.push(rope(f, None, head_dim, false, None)?);
    spec.layers = (0..layers)
        .map(|_| LayerSpec {
            window: None,
            rope: Some(0),
            moe: false,
            chunk: None,
            mamba: false,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: true,
            rwkv: false,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    let mut n = Names::llama();
    n.final_norm = "model.final_layernorm".into();
    n.mixer = "mamba".into();
    n.ffn_in = Some("pre_ff_layernorm".into());
    n.gate = "feed_forward.gate_proj".into();
    n.up = "feed_forward.up_proj".into();
    n.down = "feed_forward.down_proj".into();
    Ok((spec, n))
}

/// RWKV-4: every layer is a time-mixing (WKV recurrence) plus channel-mixing block with token
/// shift, LayerNorms with bias, `pre_ln` on block 0, head `head`.
fn rwkv(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let layers = f.positive("num_hidden_layers")?;
    if let Some(a) = f.positive_opt("attention_hidden_size")?
        && a != hidden
    {
        return Err(f.err(
            "attention_hidden_size",
            "a size other than hidden_size is not implemented",
        ));
    }
    // In evaluation transformers rescales weights and activations every `rescale_every`
    // layers; that path is not implemented, so deeper models are refused.
    if let Some(r) = f.usize_opt("rescale_every")?
        && r > 0
        && layers > r
    {
        return Err(f.err(
            "rescale_every",
            format!("{layers} layers with rescaling every {r} is not implemented"),
        ));
    }
    let eps = f.f64("layer_norm_epsilon")?;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        1,
        f.positive_opt("context_length")?.unwrap_or(1 << 20),
        eps,
        Act::Relu2,
        f.positive_opt("intermediate_size")?.unwrap_or(4 * hidden),
    );
    spec.absolute = None;
    spec.ffn = false;
    spec.tie = f.bool_or("tie_word_embeddings", false)?;
    spec.layers = (0..layers)
        .map(|_| LayerSpec {
            window: None,
            rope: None,
            moe: false,
            chunk: None,
            mamba: false,
            ffn_only: false,
            short_conv: false,
            attn_and_mamba: false,
            rwkv: true,
            rglru: false,
            head_dim: None,
            kv_heads: None,
        })
        .collect();
    let mut n = Names::llama();
    n.embed = "rwkv.embeddings".into();
    n.final_norm = "rwkv.ln_out".into();
    n.head = "head".into();
    n.layer = "rwkv.blocks.{}".into();
    n.attn_in = None;
    n.ffn_in = None;
    Ok((spec, n))
}

/// `x` rounded to bfloat16 (round to nearest, ties to even), as f64.
fn bf16_round(x: f32) -> f64 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(rounded) as f64
}

/// RecurrentGemma: Griffin's recurrent blocks and local-attention blocks on a `block_types`
/// cycle, Gemma `(1 + w)` norms, a bf16-rounded √hidden embedding scale, logit softcap.
fn recurrent_gemma(f: &Fields<'_>) -> R<(Spec, Names)> {
    let hidden = f.positive("hidden_size")?;
    let (heads, kv, head_dim) = f.heads(hidden)?;
    let eps = f.f64("rms_norm_eps")?;
    let layers = f.positive("num_hidden_layers")?;
    let act = act_field(f, &["hidden_activation"])?;
    let width = f.positive("intermediate_size")? / 2;
    let mut spec = gpt_base(
        f.positive("vocab_size")?,
        hidden,
        heads,
        f.positive_opt("max_position_embeddings")?
            .unwrap_or(1 << 20),
        eps,
        act,
        width,
    );
    spec.kv_heads = kv;
    spec.head_dim = head_dim;
    spec.attn_scale = 1.0 / (head_dim as f64).sqrt();
    spec.norm = NormKind::Rms {
        eps,
        plus_one: true,
    };
    spec.absolute = None;
    spec.qkv_bias = f.bool_or("attention_bias", false)?;
    spec.o_bias = true;
    spec.mlp = Mlp {
        gated: true,
        act,
        intermediate: width,
        bias: true,
    };
    spec.embed_scale = Some(bf16_round((hidden as f32).sqrt()));
    spec.final_softcap = f.f64_opt("logits_soft_cap")?;
    spec.tie = f.bool_or("tie_word_embeddings", true)?;
    let lru = f.positive("lru_width")?;
    if !lru.is_multiple_of(heads) {
        return Err(f.err(
            "lru_width",
            format!("{lru} is not a multiple of {heads} heads"),
        ));
    }
    spec.rglru = Some((lru, heads, f.positive("conv1d_width")?));
    spec.ropes.push(rope(f, None, head_dim, false, None)?);
    let window = f.positive("attention_window_size")?;
    let cycle: Vec<String> = match f.get("block_types") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| f.err("block_types", "expected a list of strings"))?,
        _ => return Err(f.err("block_types", "missing or empty")),
    };
    spec.layers = (0..layers)
        .map(|i| {
            let recurrent = match cycle[i % cycle.len()].as_str() {
                "recurrent" => true,
                "attention" => false,
                other => {
                    return Err(f.err(
                        "block_types",
                        format!("`{other}` is not implemented (recurrent, attention)"),
                    ));
                }
            };
            Ok(LayerSpec {
                window: if recurrent { None } else { Some(window) },
                rope: if recurrent { None } else { Some(0) },
                moe: false,
                chunk: None,
                mamba: false,
                ffn_only: false,
                short_conv: false,
                attn_and_mamba: false,
                rwkv: false,
                rglru: recurrent,
                head_dim: None,
                kv_heads: None,
            })
        })
        .collect::<R<Vec<_>>>()?;
    let mut n = Names::llama();
    n.final_norm = "model.final_norm".into();
    n.attn_in = Some("temporal_pre_norm".into());
    n.ffn_in = Some("channel_pre_norm".into());
    n.q = "temporal_block.q_proj".into();
    n.k = "temporal_block.k_proj".into();
    n.v = "temporal_block.v_proj".into();
    n.o = "temporal_block.o_proj".into();
    n.gate = "mlp_block.gate_proj".into();
    n.up = "mlp_block.up_proj".into();
    n.down = "mlp_block.down_proj".into();
    Ok((spec, n))
}
