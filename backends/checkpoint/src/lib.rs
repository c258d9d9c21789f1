//! Checkpoint files shared by the backends: `config.json` and other JSON configs read field by
//! field with typed errors, safetensors files checked by tensor name, dtype and shape before a
//! backend sees them, `tokenizer.json` loading, sentence-transformers' pooling files, and chat templates ([`chat`]).
//!
//! No backend code and no tensor library: the candle backend and the MAX backend (which
//! tokenises and pools locally) both read model directories through this crate, so that they
//! agree on what a directory means.

use std::path::{Path, PathBuf};

pub mod chat;

use serde_json::{Map, Value};
use skillgen_runtime::SkillError;
use skillgen_runtime::request::Pooling;

/// A JSON file whose top level is an object, with typed errors naming the file.
pub fn read_json(path: &Path) -> Result<Map<String, Value>, SkillError> {
    let text = std::fs::read_to_string(path).map_err(|e| SkillError::ConfigRead {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(SkillError::ConfigInvalid {
            path: path.to_path_buf(),
            detail: "the top level is not an object".to_owned(),
        }),
        Err(e) => Err(SkillError::ConfigInvalid {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Typed access to the fields of one JSON config file, with errors naming file and field.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its top-level object.
    pub map: &'a Map<String, Value>,
}

impl Fields<'_> {
    pub fn err(&self, field: &str, detail: impl Into<String>) -> SkillError {
        SkillError::ConfigField {
            path: self.path.to_path_buf(),
            field: field.to_owned(),
            detail: detail.into(),
        }
    }

    /// The class labels of a classifier: `id2label` with ids `0..n` (strings), in id order.
    pub fn labels(&self) -> Result<Vec<String>, SkillError> {
        match self.get("id2label") {
            Some(Value::Object(o)) if !o.is_empty() => (0..o.len())
                .map(|i| {
                    o.get(&i.to_string())
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            self.err(
                                "id2label",
                                format!(
                                    "ids must be 0..{} with string labels; `{i}` is not",
                                    o.len()
                                ),
                            )
                        })
                })
                .collect(),
            _ => Err(self.err("id2label", "missing or empty (needed for the classifier)")),
        }
    }

    /// A present, non-null value.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub fn usize_opt(&self, field: &str) -> Result<Option<usize>, SkillError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.err(field, format!("expected a non-negative integer, found {v}"))
                }),
        }
    }

    pub fn usize(&self, field: &str) -> Result<usize, SkillError> {
        self.usize_opt(field)?
            .ok_or_else(|| self.err(field, "missing (required)"))
    }

    /// An optional positive integer (0 is an error).
    pub fn positive_opt(&self, field: &str) -> Result<Option<usize>, SkillError> {
        match self.usize_opt(field)? {
            Some(0) => Err(self.err(field, "must be at least 1")),
            n => Ok(n),
        }
    }

    pub fn positive(&self, field: &str) -> Result<usize, SkillError> {
        self.positive_opt(field)?
            .ok_or_else(|| self.err(field, "missing (required)"))
    }

    /// An optional finite number.
    pub fn f64_opt(&self, field: &str) -> Result<Option<f64>, SkillError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.err(field, format!("expected a finite number, found {v}"))),
            },
        }
    }

    pub fn f64(&self, field: &str) -> Result<f64, SkillError> {
        self.f64_opt(field)?
            .ok_or_else(|| self.err(field, "missing (required)"))
    }

    pub fn str_opt(&self, field: &str) -> Result<Option<&str>, SkillError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(field, format!("expected a string, found {v}"))),
        }
    }

    pub fn bool_or_false(&self, field: &str) -> Result<bool, SkillError> {
        self.bool_or(field, false)
    }

    /// An optional boolean, `default` when absent or null.
    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool, SkillError> {
        match self.get(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(field, format!("expected a boolean, found {v}"))),
        }
    }
}

/// Pooling and normalisation from sentence-transformers' files (defaults: mean, none).
pub fn sentence_transformers_head(dir: &Path) -> Result<(Pooling, bool), SkillError> {
    let modules_path = dir.join("modules.json");
    let mut pooling_dir = PathBuf::from("1_Pooling");
    let mut normalize = false;
    if modules_path.is_file() {
        let text = std::fs::read_to_string(&modules_path).map_err(|e| SkillError::ConfigRead {
            path: modules_path.clone(),
            detail: e.to_string(),
        })?;
        let modules: Vec<Value> =
            serde_json::from_str(&text).map_err(|e| SkillError::ConfigInvalid {
                path: modules_path.clone(),
                detail: format!("expected a JSON list of modules: {e}"),
            })?;
        for (i, m) in modules.iter().enumerate() {
            let ty =
                m.get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SkillError::ConfigField {
                        path: modules_path.clone(),
                        field: format!("[{i}].type"),
                        detail: "missing or not a string".to_owned(),
                    })?;
            if ty.ends_with(".Normalize") || ty == "Normalize" {
                normalize = true;
            } else if (ty.ends_with(".Pooling") || ty == "Pooling")
                && let Some(p) = m.get("path").and_then(Value::as_str)
            {
                pooling_dir = PathBuf::from(p);
            }
        }
    }
    let pooling_path = dir.join(pooling_dir).join("config.json");
    if !pooling_path.is_file() {
        return Ok((Pooling::Mean, normalize));
    }
    let map = read_json(&pooling_path)?;
    let f = Fields {
        path: &pooling_path,
        map: &map,
    };
    let mean = f.bool_or_false("pooling_mode_mean_tokens")?;
    let cls = f.bool_or_false("pooling_mode_cls_token")?;
    for other in [
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ] {
        if f.bool_or_false(other)? {
            return Err(f.err(other, "this pooling mode is not supported (mean, cls)"));
        }
    }
    let pooling = match (mean, cls) {
        (true, false) => Pooling::Mean,
        (false, true) => Pooling::Cls,
        (true, true) => {
            return Err(f.err(
                "pooling_mode_cls_token",
                "combined cls + mean pooling is not supported",
            ));
        }
        (false, false) => {
            return Err(f.err("pooling_mode_mean_tokens", "no pooling mode is enabled"));
        }
    };
    Ok((pooling, normalize))
}

/// `max_seq_length` from `sentence_bert_config.json`, if present.
pub fn sentence_max_len(dir: &Path) -> Result<Option<usize>, SkillError> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let map = read_json(&path)?;
    Fields {
        path: &path,
        map: &map,
    }
    .positive_opt("max_seq_length")
}

/// `dir/config.json`, parsed (a missing file is [`SkillError::ConfigMissing`]).
pub fn config_json(dir: &Path) -> Result<(PathBuf, Map<String, Value>), SkillError> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(SkillError::ConfigMissing {
            dir: dir.to_path_buf(),
            path,
        });
    }
    let map = read_json(&path)?;
    Ok((path, map))
}

/// The bytes of `dir/model.safetensors`, parsed once to check that they are a safetensors file.
pub fn weights_bytes(dir: &Path) -> Result<(PathBuf, Vec<u8>), SkillError> {
    let path = dir.join("model.safetensors");
    if !path.is_file() {
        return Err(SkillError::ModelFileMissing {
            path,
            what: "the model weights (safetensors)",
        });
    }
    let bytes = std::fs::read(&path).map_err(|e| SkillError::WeightsInvalid {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    safetensors::SafeTensors::deserialize(&bytes).map_err(|e| SkillError::WeightsInvalid {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    Ok((path, bytes))
}

/// Checks tensors of one safetensors file by name, dtype (float) and shape before candle sees
/// them.
#[derive(Debug)]
pub struct TensorCheck<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its parsed header and data.
    pub st: safetensors::SafeTensors<'a>,
}

impl<'a> TensorCheck<'a> {
    /// Parse `bytes` (the file at `path`).
    pub fn new(path: &'a Path, bytes: &'a [u8]) -> Result<Self, SkillError> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            SkillError::WeightsInvalid {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        })?;
        Ok(Self { path, st })
    }

    /// Whether `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.st.tensor(name).is_ok()
    }

    /// `name` must be present, a float tensor of `shape`.
    pub fn require(&self, name: &str, shape: &[usize]) -> Result<(), SkillError> {
        let view = self
            .st
            .tensor(name)
            .map_err(|_| SkillError::TensorMissing {
                path: self.path.to_path_buf(),
                tensor: name.to_owned(),
            })?;
        use safetensors::Dtype;
        if !matches!(
            view.dtype(),
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ) {
            return Err(SkillError::TensorInvalid {
                path: self.path.to_path_buf(),
                tensor: name.to_owned(),
                detail: format!("has dtype {:?}, expected a float dtype", view.dtype()),
            });
        }
        if view.shape() != shape {
            return Err(SkillError::TensorInvalid {
                path: self.path.to_path_buf(),
                tensor: name.to_owned(),
                detail: format!(
                    "has shape {:?}, config.json implies {shape:?}",
                    view.shape()
                ),
            });
        }
        Ok(())
    }

    /// Check every `(name, shape)`.
    pub fn require_all(&self, tensors: &[(String, Vec<usize>)]) -> Result<(), SkillError> {
        tensors
            .iter()
            .try_for_each(|(name, shape)| self.require(name, shape))
    }
}

/// `dir/tokenizer.json` (if present) with the file's padding removed (batches are padded by the
/// caller, to the longest input) and truncation set to `max_len` (`None`: no truncation).
pub fn load_tokenizer(
    dir: &Path,
    max_len: Option<usize>,
) -> Result<(Option<tokenizers::Tokenizer>, PathBuf), SkillError> {
    let (tok, path) = parse_tokenizer(dir)?;
    let tok = tok
        .map(|t| configure_tokenizer(t, &path, max_len))
        .transpose()?;
    Ok((tok, path))
}

/// `dir/tokenizer.json` parsed as it is (if present), and its path: the costly half of
/// [`load_tokenizer`] (~20 ms for a BERT vocabulary), which a loader can run beside reading
/// the weights.
pub fn parse_tokenizer(dir: &Path) -> Result<(Option<tokenizers::Tokenizer>, PathBuf), SkillError> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok((None, path));
    }
    let tok = tokenizers::Tokenizer::from_file(&path).map_err(|e| SkillError::Tokenizer {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    Ok((Some(tok), path))
}

/// The other half of [`load_tokenizer`]: no padding, truncation at `max_len` (`path`: the
/// file, for errors).
pub fn configure_tokenizer(
    mut tok: tokenizers::Tokenizer,
    path: &Path,
    max_len: Option<usize>,
) -> Result<tokenizers::Tokenizer, SkillError> {
    let tok_err = |detail: String| SkillError::Tokenizer {
        path: path.to_path_buf(),
        detail,
    };
    tok.with_padding(None);
    tok.with_truncation(max_len.map(|max_length| tokenizers::TruncationParams {
        max_length,
        ..Default::default()
    }))
    .map_err(|e| tok_err(e.to_string()))?;
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sentence_transformers_head() {
        let dir = std::env::temp_dir().join(format!("skillgen-ck-head-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.as_path();
        // Nothing: mean pooling, no normalisation (a plain transformers model).
        assert_eq!(
            sentence_transformers_head(d).unwrap(),
            (Pooling::Mean, false)
        );
        // No modules.json but the default pooling directory: its config is read (both the
        // candle and the MAX backend go through this one function).
        std::fs::create_dir(d.join("1_Pooling")).unwrap();
        std::fs::write(
            d.join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token":true,"pooling_mode_mean_tokens":false}"#,
        )
        .unwrap();
        assert_eq!(
            sentence_transformers_head(d).unwrap(),
            (Pooling::Cls, false)
        );
        std::fs::write(
            d.join("modules.json"),
            r#"[{"type":"sentence_transformers.models.Transformer","path":""},
                {"type":"sentence_transformers.models.Pooling","path":"1_Pooling"},
                {"type":"sentence_transformers.models.Normalize","path":"2_Normalize"}]"#,
        )
        .unwrap();
        assert_eq!(sentence_transformers_head(d).unwrap(), (Pooling::Cls, true));
        std::fs::write(
            d.join("1_Pooling/config.json"),
            r#"{"pooling_mode_max_tokens":true}"#,
        )
        .unwrap();
        let e = sentence_transformers_head(d).unwrap_err();
        assert!(
            e.to_string().contains("pooling mode is not supported"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
