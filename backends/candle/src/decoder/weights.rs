//! Reading `model.safetensors` (or the shards of `model.safetensors.index.json`) and checking
//! every tensor candle will ask for — name, float dtype, shape — before candle sees it.
//!
//! What candle asks for is learned by a dry run: the candle model is built once over a
//! recording [`SimpleBackend`] that answers every request with a stride-0 zero tensor (no
//! allocation) and writes down the name and shape. Those requests are then compared with the
//! safetensors headers, so a missing or misshaped tensor is a typed error naming the file and
//! the tensor (candle's llama would otherwise panic on a missing tensor).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use serde_json::Value;

use skillgen_runtime::SkillError;

/// One tensor in the files: where it is, its shape and dtype.
#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    shape: Vec<usize>,
    dtype: safetensors::Dtype,
}

/// The loaded tensors of a model directory, checked against a dry run.
#[derive(Debug)]
pub(super) struct Weights {
    tensors: HashMap<String, Tensor>,
    entries: BTreeMap<String, Entry>,
    /// `lm_head.weight`-style names served by another tensor (tied embeddings).
    aliases: BTreeMap<String, String>,
    /// The main weights path (for messages).
    pub(super) path: PathBuf,
}

fn invalid(path: &Path, detail: impl Into<String>) -> SkillError {
    SkillError::WeightsInvalid {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// The weight files of `dir`: `model.safetensors`, else the shards named by
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>), SkillError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((single.clone(), vec![single]));
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(SkillError::ModelFileMissing {
            path: single,
            what: "the model weights (model.safetensors or model.safetensors.index.json)",
        });
    }
    let map = super::config::read_json(&index)?;
    let Some(Value::Object(wm)) = map.get("weight_map") else {
        return Err(SkillError::ConfigField {
            path: index,
            field: "weight_map".to_owned(),
            detail: "missing or not an object of tensor name → shard file".to_owned(),
        });
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in wm {
        let Some(file) = file.as_str() else {
            return Err(SkillError::ConfigField {
                path: index.clone(),
                field: format!("weight_map.{tensor}"),
                detail: format!("expected a file name, found {file}"),
            });
        };
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(SkillError::ConfigField {
                path: index.clone(),
                field: format!("weight_map.{tensor}"),
                detail: format!("`{file}` is not a file name in the model directory"),
            });
        }
        let p = dir.join(file);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(SkillError::ConfigField {
            path: index,
            field: "weight_map".to_owned(),
            detail: "is empty".to_owned(),
        });
    }
    for f in &files {
        if !f.is_file() {
            return Err(SkillError::ModelFileMissing {
                path: f.clone(),
                what: "a weights shard named by model.safetensors.index.json",
            });
        }
    }
    Ok((index, files))
}

/// Tensor requests: name and shape (`None` for an unchecked get).
type Asked = Arc<Mutex<Vec<(String, Option<Vec<usize>>)>>>;

/// Records what a model constructor asks for; answers with stride-0 zeros.
struct Recorder {
    present: HashSet<String>,
    asked: Asked,
}

impl Recorder {
    fn note(&self, name: &str, shape: Option<Vec<usize>>) {
        if let Ok(mut a) = self.asked.lock() {
            a.push((name.to_owned(), shape));
        }
    }
}

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.note(name, Some(s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.note(name, None);
        Tensor::zeros((), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.present.contains(name)
    }
}

impl Weights {
    /// Read and parse the headers and data of the weight files of `dir` onto `device`.
    pub(super) fn read(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        let (path, files) = weight_files(dir)?;
        let mut tensors = HashMap::new();
        let mut entries = BTreeMap::new();
        for file in &files {
            let bytes = std::fs::read(file).map_err(|e| invalid(file, e.to_string()))?;
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| invalid(file, e.to_string()))?;
            for (name, view) in st.tensors() {
                entries.insert(
                    name.clone(),
                    Entry {
                        file: file.clone(),
                        shape: view.shape().to_vec(),
                        dtype: view.dtype(),
                    },
                );
            }
            let loaded = candle_core::safetensors::load_buffer(&bytes, device)
                .map_err(|e| invalid(file, e.to_string()))?;
            tensors.extend(loaded);
        }
        Ok(Self {
            tensors,
            entries,
            aliases: BTreeMap::new(),
            path,
        })
    }

    /// Convert every float tensor to `dtype` (once, so the model does not hold two copies).
    pub(super) fn convert(&mut self, dtype: DType) -> Result<(), SkillError> {
        for (name, t) in self.tensors.iter_mut() {
            if t.dtype().is_float() && t.dtype() != dtype {
                *t = t.to_dtype(dtype).map_err(|e| {
                    invalid(&self.path, format!("converting `{name}` to {dtype:?}: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// Whether the files hold `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Serve `alias` with tensor `target` (a tied `lm_head.weight`), when `alias` is absent.
    pub(super) fn tie(&mut self, alias: &str, target: &str) {
        if !self.has(alias) {
            self.aliases.insert(alias.to_owned(), target.to_owned());
        }
    }

    /// The dtype of `name` in the file, if present.
    pub(super) fn file_dtype(&self, name: &str) -> Option<safetensors::Dtype> {
        self.entries.get(name).map(|e| e.dtype)
    }

    /// Build a candle model with `build` after checking every tensor it asks for.
    pub(super) fn build<T>(
        &self,
        dtype: DType,
        device: &Device,
        build: impl Fn(VarBuilder<'static>) -> candle_core::Result<T>,
    ) -> Result<T, SkillError> {
        let asked: Asked = Arc::default();
        let mut present: HashSet<String> = self.entries.keys().cloned().collect();
        present.extend(self.aliases.keys().cloned());
        let recorder = Recorder {
            present,
            asked: Arc::clone(&asked),
        };
        let vb = VarBuilder::from_backend(Box::new(recorder), dtype, device.clone());
        // A failure here comes from the config (the recorder never fails on a name or shape).
        build(vb).map_err(|e| invalid(&self.path, format!("building the candle model: {e}")))?;
        let asked = asked.lock().map(|a| a.clone()).unwrap_or_default();
        for (name, shape) in asked {
            let real = self.aliases.get(&name).unwrap_or(&name);
            let Some(entry) = self.entries.get(real) else {
                return Err(SkillError::TensorMissing {
                    path: self.path.clone(),
                    tensor: name,
                });
            };
            use safetensors::Dtype;
            if !matches!(
                entry.dtype,
                Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
            ) {
                return Err(SkillError::TensorInvalid {
                    path: entry.file.clone(),
                    tensor: real.clone(),
                    detail: format!("has dtype {:?}, expected a float dtype", entry.dtype),
                });
            }
            if let Some(shape) = shape
                && shape != entry.shape
            {
                return Err(SkillError::TensorInvalid {
                    path: entry.file.clone(),
                    tensor: real.clone(),
                    detail: format!("has shape {:?}, config.json implies {shape:?}", entry.shape),
                });
            }
        }
        build(self.var_builder(dtype, device))
            .map_err(|e| invalid(&self.path, format!("loading into candle: {e}")))
    }

    /// A var builder over the loaded tensors (aliases included); cheap (tensors are shared).
    pub(super) fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let mut map = self.tensors.clone();
        for (alias, target) in &self.aliases {
            if let Some(t) = self.tensors.get(target) {
                map.insert(alias.clone(), t.clone());
            }
        }
        VarBuilder::from_tensors(map, dtype, device)
    }
}
