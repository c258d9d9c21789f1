//! The loaded model as backends see it: the skill's info, the model directory, what
//! `config.json` says, and the cache of what backends loaded from it.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::SkillError;
use crate::info::SkillInfo;
use crate::quantize::Quantization;

/// The fields of `config.json` the runtime reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelConfig {
    /// The config path.
    pub path: PathBuf,
    /// `model_type`.
    pub model_type: String,
    /// `_name_or_path`, if present.
    pub name_or_path: Option<String>,
    /// `architectures`, if present.
    pub architectures: Vec<String>,
}

/// The GGUF file a model path stands for: the path itself (`*.gguf`), or the one `.gguf` file
/// of a directory without `config.json` (several are a typed error naming them); `None` for
/// anything else.
pub fn gguf_of(dir: &Path) -> Result<Option<PathBuf>, SkillError> {
    if crate::gguf::is_gguf(dir) {
        return Ok(Some(dir.to_path_buf()));
    }
    if !dir.is_dir() || dir.join("config.json").is_file() {
        return Ok(None);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| crate::gguf::is_gguf(p))
        .collect();
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(SkillError::ConfigInvalid {
            path: dir.to_path_buf(),
            detail: format!(
                "holds {n} .gguf files and no config.json ({}); name the one to load",
                found
                    .iter()
                    .filter_map(|p| p.file_name()?.to_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// What a GGUF file says of itself: its architecture's registry model type.
fn read_gguf_config(file: PathBuf) -> Result<ModelConfig, SkillError> {
    let arch = crate::gguf::architecture(&file)?;
    let Some(model_type) = crate::gguf::model_type_of(&arch) else {
        return Err(SkillError::ConfigField {
            path: file,
            field: "general.architecture".into(),
            detail: format!(
                "`{arch}` is not a GGUF architecture skillgen runs (known: {})",
                crate::gguf::ARCHITECTURES
                    .iter()
                    .map(|a| a.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    Ok(ModelConfig {
        path: file,
        model_type: model_type.to_owned(),
        name_or_path: None,
        architectures: vec![arch],
    })
}

/// Read `dir/config.json` — or, for a GGUF file (or a directory holding one and no
/// `config.json`), the file's architecture — with typed errors naming the file.
pub fn read_config(dir: &Path) -> Result<ModelConfig, SkillError> {
    if let Some(file) = gguf_of(dir)? {
        return read_gguf_config(file);
    }
    match std::fs::metadata(dir) {
        Err(_) => {
            return Err(SkillError::ModelDirMissing {
                path: dir.to_path_buf(),
            });
        }
        Ok(m) if !m.is_dir() => {
            return Err(SkillError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Ok(_) => {}
    }
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(SkillError::ConfigMissing {
            dir: dir.to_path_buf(),
            path,
        });
    }
    let text = std::fs::read_to_string(&path).map_err(|e| SkillError::ConfigRead {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| SkillError::ConfigInvalid {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    let Some(obj) = value.as_object() else {
        return Err(SkillError::ConfigInvalid {
            path,
            detail: "the top level is not an object".to_owned(),
        });
    };
    let model_type = match obj.get("model_type") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        other => {
            return Err(SkillError::ConfigNoModelType {
                path,
                found: other.map(ToString::to_string),
            });
        }
    };
    Ok(ModelConfig {
        model_type,
        name_or_path: obj
            .get("_name_or_path")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        architectures: obj
            .get("architectures")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        path,
    })
}

type Loaded = Arc<dyn Any + Send + Sync>;

/// Models loaded by the backends, shared by the clones of one [`SkillState`], keyed by what the
/// backend loaded (e.g. `candle/bert/cpu`).
#[derive(Default)]
pub(crate) struct ModelCache {
    slots: Mutex<BTreeMap<String, Arc<Mutex<Option<Loaded>>>>>,
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self
            .slots
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("ModelCache").field("loaded", &keys).finish()
    }
}

/// A model directory loaded for one skill: shared by the clones of a skill state (the cache is
/// behind an `Arc`).
#[derive(Debug, Clone)]
pub struct Model {
    info: &'static SkillInfo,
    dir: PathBuf,
    config: ModelConfig,
    quantization: Option<Quantization>,
    cache: Arc<ModelCache>,
}

impl Model {
    pub(crate) fn new(info: &'static SkillInfo, dir: &Path, config: ModelConfig) -> Self {
        Self {
            info,
            dir: dir.to_path_buf(),
            config,
            quantization: None,
            cache: Arc::default(),
        }
    }

    /// The same model with its weights to be quantized at load (see
    /// [`crate::SkillState::quantize`]).
    pub(crate) fn with_quantization(mut self, q: Option<Quantization>) -> Self {
        self.quantization = q;
        self
    }

    /// The load-time quantization asked for, if any: a backend loading this model quantizes
    /// its matrices so, or refuses.
    pub fn quantization(&self) -> Option<Quantization> {
        self.quantization
    }

    /// The skill's static description.
    pub fn info(&self) -> &'static SkillInfo {
        self.info
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `config.json` said.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The value cached under `key`, loading it with `load` on first use.
    ///
    /// Clones of this state share the cache. Concurrent first calls for one key load once (each
    /// key has its own lock, so loading one model does not block another); a failed load is not
    /// cached. A key must always map to the same type `T`: a mismatch is a typed error.
    ///
    /// Backends cache their loaded models here, under keys they own (e.g. `candle/bert/cpu`).
    pub fn cached<T: Any + Send + Sync>(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<T, SkillError>,
    ) -> Result<Arc<T>, SkillError> {
        let slot = {
            let mut slots = self
                .cache
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(slots.entry(key.to_owned()).or_default())
        };
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let loaded = match slot.as_ref() {
            Some(loaded) => Arc::clone(loaded),
            None => {
                let t0 = std::time::Instant::now();
                let _span = tracing::info_span!("model_load", key).entered();
                let loaded: Loaded = match load() {
                    Ok(v) => Arc::new(v),
                    Err(e) => {
                        tracing::warn!(error = %e, "load failed");
                        return Err(e);
                    }
                };
                tracing::info!(elapsed_ms = t0.elapsed().as_millis() as u64, "loaded");
                *slot = Some(Arc::clone(&loaded));
                loaded
            }
        };
        loaded.downcast::<T>().map_err(|_| SkillError::Internal {
            detail: format!("cache key `{key}` holds another type"),
        })
    }

    /// Names a MAX server's model id may match for this model.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .config
            .architectures
            .iter()
            .map(String::as_str)
            .collect();
        names.extend(self.config.name_or_path.as_deref());
        names.extend(self.dir.file_name().and_then(|n| n.to_str()));
        names
    }
}
