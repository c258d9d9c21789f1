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

/// Why MAX must not run this checkpoint, if it must not.
pub(crate) fn refusal(model: &Model) -> Option<&'static str> {
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
