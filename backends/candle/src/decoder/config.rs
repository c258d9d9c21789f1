//! Typed readers of decoder config fields (`config.json` / `generation_config.json`): token
//! ids, rope parameters (transformers v5 moved `rope_theta` into `rope_parameters`; never a
//! default), head counts.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::spec::Act;

use skillgen_runtime::SkillError;

pub(super) use skillgen_checkpoint::{Fields, read_json};

/// Decoder-specific accessors on the shared config reader.
pub(super) trait DecoderFields {
    fn token_ids(&self, field: &str) -> Result<Vec<u32>, SkillError>;
    fn activation(&self, field: &str) -> Result<Option<Act>, SkillError>;
    fn heads(&self, hidden: usize) -> Result<(usize, usize, usize), SkillError>;
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
    fn activation(&self, field: &str) -> Result<Option<Act>, SkillError> {
        let Some(name) = self.str_opt(field)? else {
            return Ok(None);
        };
        Act::from_hf(name).map(Some).ok_or_else(|| {
            self.err(
                field,
                format!("activation `{name}` is not implemented by the decoder (silu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu, relu2)"),
            )
        })
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

    fn require_false(&self, field: &str, why: &str) -> Result<(), SkillError> {
        if self.bool_or(field, false)? {
            return Err(self.err(field, format!("`true` is not supported: {why}")));
        }
        Ok(())
    }
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
