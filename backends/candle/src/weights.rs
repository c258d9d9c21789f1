//! Reading `model.safetensors` (or the shards of `model.safetensors.index.json`). A model
//! takes each tensor by name and expected shape ([`Weights::take`]: a missing or misshaped
//! tensor is a typed error naming the file and the tensor), and a tensor nobody took is an
//! error too ([`Weights::finish`]): it is a part of the checkpoint the decoder would ignore.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde_json::Value;

use skillgen_runtime::{Quantization, SkillError};

use crate::rows::{FileRows, Rows, read_at};

/// One tensor in the files: where it is, its shape and dtype.
#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    shape: Vec<usize>,
    dtype: safetensors::Dtype,
}

/// The loaded tensors of a model directory; the model takes them one by one, by name and
/// expected shape, and every tensor in the files must be taken.
#[derive(Debug)]
pub(crate) struct Weights {
    tensors: HashMap<String, Tensor>,
    /// f32 matrices left in their file (see [`Weights::read_deferring`]).
    deferred: HashMap<String, FileRows>,
    /// Quantized matrices (GGUF), taken as quantized linear layers or dequantized.
    quant: HashMap<String, Arc<QTensor>>,
    entries: BTreeMap<String, Entry>,
    used: HashSet<String>,
    /// The main weights path (for messages).
    pub(crate) path: PathBuf,
    device: Device,
    dtype: DType,
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
    let map = skillgen_checkpoint::read_json(&index)?;
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

/// The largest safetensors header taken (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Every tensor of one safetensors file, read straight from the file into the tensor's own
/// buffer (little-endian f32, the common case, with no intermediate copy of the file: the
/// header is parsed first, then each tensor's bytes land in its `Vec<f32>`); other dtypes go
/// through candle's safetensors conversion. The header is checked as the format requires: the
/// tensors tile the data section exactly, each with as many bytes as its shape and dtype need.
///
/// The f32 matrices `defer` names on the CPU are not read: they come back as [`FileRows`] over
/// the open file.
fn read_safetensors(
    file: &Path,
    device: &Device,
    defer: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<(String, Entry, Loaded)>, SkillError> {
    use std::io::Read;
    let bad = |detail: String| invalid(file, detail);
    let mut f = std::fs::File::open(file).map_err(|e| bad(e.to_string()))?;
    let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut n8 = [0u8; 8];
    f.read_exact(&mut n8)
        .map_err(|e| bad(format!("reading the header size: {e}")))?;
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER || n + 8 > len {
        return Err(bad(format!(
            "header size {n} does not fit the file ({len} bytes)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("reading the header: {e}")))?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;
    #[derive(serde::Deserialize)]
    struct Info {
        dtype: safetensors::Dtype,
        shape: Vec<usize>,
        data_offsets: (usize, usize),
    }
    let mut infos: Vec<(String, Info)> = Vec::with_capacity(header.len());
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let info: Info = serde_json::from_value(v)
            .map_err(|e| bad(format!("tensor `{name}` in the header: {e}")))?;
        infos.push((name, info));
    }
    infos.sort_by_key(|(_, i)| i.data_offsets);
    let data = (len - 8 - n) as usize;
    let mut at = 0;
    for (name, i) in &infos {
        let (begin, end) = i.data_offsets;
        let need = i
            .shape
            .iter()
            .try_fold(i.dtype.bitsize(), |a, &d| a.checked_mul(d))
            .map(|bits| bits.div_ceil(8));
        if begin != at || end < begin || need != Some(end - begin) {
            return Err(bad(format!(
                "tensor `{name}` ({:?} {:?}) has data offsets {begin}..{end} (expected to start at {at}, {need:?} bytes)",
                i.dtype, i.shape
            )));
        }
        at = end;
    }
    if at != data {
        return Err(bad(format!(
            "the tensors cover {at} of the {data} data bytes"
        )));
    }
    // Each tensor is read at its offset (positioned reads: no shared cursor), the large ones
    // first, over rayon's pool: what a load costs is mostly the kernel filling fresh pages, and
    // that runs on every core.
    use rayon::prelude::*;
    let base = 8 + n;
    let f = Arc::new(f);
    infos.sort_by_key(|(_, i)| std::cmp::Reverse(i.data_offsets.1 - i.data_offsets.0));
    infos
        .into_par_iter()
        .map(|(name, i)| {
            let bytes = i.data_offsets.1 - i.data_offsets.0;
            let at = base + i.data_offsets.0 as u64;
            let read = |e: std::io::Error| bad(format!("reading `{name}`: {e}"));
            let conv = |e: candle_core::Error| bad(format!("tensor `{name}`: {e}"));
            let f32_le = i.dtype == safetensors::Dtype::F32 && cfg!(target_endian = "little");
            let entry = Entry {
                file: file.to_path_buf(),
                shape: i.shape,
                dtype: i.dtype,
            };
            let loaded = if f32_le && entry.shape.len() == 2 && device.is_cpu() && defer(&name) {
                Loaded::Deferred(FileRows {
                    file: f.clone(),
                    path: file.to_path_buf(),
                    at,
                    rows: entry.shape[0],
                    cols: entry.shape[1],
                })
            } else if f32_le {
                let mut v = tensor_buffer(bytes / 4);
                read_at(&f, bytemuck::cast_slice_mut(&mut v), at).map_err(read)?;
                Loaded::Tensor(Tensor::from_vec(v, entry.shape.as_slice(), device).map_err(conv)?)
            } else {
                let mut v = vec![0u8; bytes];
                read_at(&f, &mut v, at).map_err(read)?;
                let view = safetensors::tensor::TensorView::new(i.dtype, entry.shape.clone(), &v)
                    .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
                Loaded::Tensor(candle_core::safetensors::Load::load(&view, device).map_err(conv)?)
            };
            Ok((name, entry, loaded))
        })
        .collect()
}

/// A tensor of a checkpoint: read, or left in the file (see [`read_safetensors`]).
enum Loaded {
    Tensor(Tensor),
    Deferred(FileRows),
}

/// A zeroed buffer of `len` f32 for a tensor about to be read from a file. On Linux a large
/// one is advised to be backed by transparent huge pages: reading a checkpoint into fresh
/// memory is dominated by the kernel's page faults (one per 4 KiB page), and a 2 MiB page
/// takes one fault for 512. Measured on MiniLM (90 MB of f32), load + first call: median 133
/// → 100 ms (8 processes each, `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` as the stand-in).
fn tensor_buffer(len: usize) -> Vec<f32> {
    let mut v = vec![0f32; len];
    #[cfg(target_os = "linux")]
    advise_huge_pages(&mut v);
    v
}

/// `madvise(MADV_HUGEPAGE)` over the whole 2 MiB pages inside `v` (none when it is smaller).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_huge_pages(v: &mut [f32]) {
    const HUGE: usize = 2 << 20;
    let start = v.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(v);
    let lo = start.next_multiple_of(HUGE);
    let hi = end / HUGE * HUGE;
    if hi > lo {
        // SAFETY: `lo..hi` lies inside `v`, which this function borrows exclusively.
        // MADV_HUGEPAGE only advises how the kernel backs those pages: their contents are kept
        // and nothing is unmapped, freed or moved. Its result is ignored on purpose (no THP
        // support, or THP disabled: the buffer is simply backed by small pages).
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
        }
    }
}

/// Buffers transformers saves that carry no weights (recomputed by every implementation).
fn is_buffer(name: &str) -> bool {
    name.ends_with("inv_freq")
        || name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with("position_ids")
        || name.ends_with("num_batches_tracked")
}

impl Weights {
    /// Read and parse the headers and data of the weight files of `dir` onto `device`.
    pub(crate) fn read(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        Self::read_deferring(dir, device, &|_| false)
    }

    /// [`Weights::read`], except the f32 matrices `defer` names (embedding tables), which on the
    /// CPU stay in their file until taken ([`Weights::take_rows`]: rows on demand).
    pub(crate) fn read_deferring(
        dir: &Path,
        device: &Device,
        defer: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Self, SkillError> {
        let (path, files) = weight_files(dir)?;
        let mut tensors = HashMap::new();
        let mut deferred = HashMap::new();
        let mut entries = BTreeMap::new();
        for file in &files {
            for (name, entry, loaded) in read_safetensors(file, device, defer)? {
                entries.insert(name.clone(), entry);
                match loaded {
                    Loaded::Tensor(t) => {
                        tensors.insert(name, t);
                    }
                    Loaded::Deferred(r) => {
                        deferred.insert(name, r);
                    }
                }
            }
        }
        Ok(Self {
            tensors,
            deferred,
            quant: HashMap::new(),
            entries,
            used: HashSet::new(),
            path,
            device: device.clone(),
            dtype: DType::F32,
        })
    }

    /// Tensors read from another format (GGUF): float tensors `dense` and quantized matrices
    /// `quant` of the file `path`, under the names the models take them by.
    pub(crate) fn from_parts(
        path: PathBuf,
        dense: HashMap<String, Tensor>,
        quant: HashMap<String, Arc<QTensor>>,
        device: &Device,
    ) -> Self {
        let mut entries = BTreeMap::new();
        let shapes = dense
            .iter()
            .map(|(n, t)| (n, t.dims()))
            .chain(quant.iter().map(|(n, q)| (n, q.shape().dims())));
        for (name, shape) in shapes {
            let entry = Entry {
                file: path.clone(),
                shape: shape.to_vec(),
                // Logical: quantized tensors are taken dequantized or as quantized layers.
                dtype: safetensors::Dtype::F32,
            };
            entries.insert(name.clone(), entry);
        }
        Self {
            tensors: dense,
            deferred: HashMap::new(),
            quant,
            entries,
            used: HashSet::new(),
            path,
            device: device.clone(),
            dtype: DType::F32,
        }
    }

    /// Quantize the float matrices of the checkpoint to `q` (load-time quantization), as
    /// llama.cpp's quantizer does: every 2-D float `*.weight` whose rows are whole blocks of `q`
    /// becomes `q`; under `Q4_K`, a matrix whose rows are not whole 256-weight super-blocks but
    /// whole 32-weight blocks becomes `Q5_0` (llama.cpp's fallback for `Q4_K`: SmolLM2's
    /// 576-wide matrices, Gemma 3's 640-wide ones); any other stays float. The float copy is
    /// dropped. The decoder then takes the quantized ones as quantized layers, exactly as a
    /// GGUF file's. Returns how many became `q`, how many the fallback, how many stayed float.
    pub(crate) fn quantize(
        &mut self,
        q: Quantization,
    ) -> Result<(usize, usize, usize), SkillError> {
        let (dtype, fallback) = match q {
            Quantization::Q8_0 => (GgmlDType::Q8_0, None),
            Quantization::Q4K => (GgmlDType::Q4K, Some(GgmlDType::Q5_0)),
        };
        let mut names: Vec<String> = self
            .tensors
            .iter()
            .filter(|(n, t)| n.ends_with(".weight") && t.rank() == 2 && t.dtype().is_float())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        let (mut done, mut fell_back, mut kept) = (0, 0, 0);
        for name in names {
            let t = &self.tensors[&name];
            let cols = t.dim(1).unwrap_or(0);
            let whole = |d: GgmlDType| cols > 0 && cols.is_multiple_of(d.block_size());
            let to = if whole(dtype) {
                done += 1;
                dtype
            } else if let Some(f) = fallback.filter(|&f| whole(f)) {
                fell_back += 1;
                f
            } else {
                kept += 1;
                continue;
            };
            let quant = QTensor::quantize(t, to)
                .map_err(|e| invalid(&self.path, format!("quantizing `{name}` to {to:?}: {e}")))?;
            self.tensors.remove(&name);
            self.quant.insert(name, Arc::new(quant));
        }
        Ok((done, fell_back, kept))
    }

    /// The quantized matrix `name` of shape `shape`, if the file holds it quantized (taken).
    pub(crate) fn take_quant(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<Arc<QTensor>>, SkillError> {
        let Some(q) = self.quant.get(name).cloned() else {
            return Ok(None);
        };
        if q.shape().dims() != shape {
            return Err(SkillError::TensorInvalid {
                path: self.path.clone(),
                tensor: name.to_owned(),
                detail: format!(
                    "has shape {:?}, the config implies {shape:?}",
                    q.shape().dims()
                ),
            });
        }
        self.used.insert(name.to_owned());
        Ok(Some(q))
    }

    /// The quantized matrix `name`, if the file holds it quantized (not marked taken: for a
    /// second use of a tensor already taken, such as tied embeddings).
    pub(crate) fn quantized(&self, name: &str) -> Option<Arc<QTensor>> {
        self.quant.get(name).cloned()
    }

    /// The bytes the tensors hold in memory: float ones at their dtype, quantized ones as
    /// their blocks (what load-time quantization saves shows here).
    pub(crate) fn bytes(&self) -> usize {
        let float: usize = self
            .tensors
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        let quant: usize = self.quant.values().map(|q| q.storage_size_in_bytes()).sum();
        float + quant
    }

    /// An embedding table `name` of shape `shape` (as [`Weights::take`] checks it): rows read
    /// from the file on demand when it was deferred ([`Weights::read_deferring`]) and the
    /// model runs in f32, else the tensor.
    pub(crate) fn take_rows(&mut self, name: &str, shape: &[usize]) -> Result<Rows, SkillError> {
        match self.deferred.get(name) {
            Some(rows)
                if self.dtype == DType::F32
                    && self.entries.get(name).is_some_and(|e| e.shape == shape) =>
            {
                let rows = rows.clone();
                self.used.insert(name.to_owned());
                Ok(Rows::File(rows))
            }
            _ => self.take(name, shape).map(Rows::Tensor),
        }
    }

    /// Convert every float tensor to `dtype` (once, so the model does not hold two copies).
    pub(crate) fn convert(&mut self, dtype: DType) -> Result<(), SkillError> {
        for (name, t) in self.tensors.iter_mut() {
            if t.dtype().is_float() && t.dtype() != dtype {
                *t = t.to_dtype(dtype).map_err(|e| {
                    invalid(&self.path, format!("converting `{name}` to {dtype:?}: {e}"))
                })?;
            }
        }
        self.dtype = dtype;
        Ok(())
    }

    /// The device the tensors are on.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the model runs in.
    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether the files hold `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The shape of `name` in the files.
    pub(crate) fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The dtype of `name` in the file, if present.
    pub(crate) fn file_dtype(&self, name: &str) -> Option<safetensors::Dtype> {
        self.entries.get(name).map(|e| e.dtype)
    }

    /// Tensor `name`, which must exist with a float dtype and shape `shape`.
    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, SkillError> {
        let Some(entry) = self.entries.get(name) else {
            return Err(SkillError::TensorMissing {
                path: self.path.clone(),
                tensor: name.to_owned(),
            });
        };
        use safetensors::Dtype;
        if !matches!(
            entry.dtype,
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ) {
            return Err(SkillError::TensorInvalid {
                path: entry.file.clone(),
                tensor: name.to_owned(),
                detail: format!("has dtype {:?}, expected a float dtype", entry.dtype),
            });
        }
        if entry.shape != shape {
            return Err(SkillError::TensorInvalid {
                path: entry.file.clone(),
                tensor: name.to_owned(),
                detail: format!("has shape {:?}, config.json implies {shape:?}", entry.shape),
            });
        }
        let t = match self.quant.get(name) {
            None if self.deferred.contains_key(name) => self.deferred[name]
                .tensor()
                .and_then(|t| t.to_dtype(self.dtype))
                .map_err(|e| invalid(&self.path, format!("reading `{name}`: {e}")))?,
            Some(q) => q
                .dequantize(&self.device)
                .and_then(|t| t.to_dtype(self.dtype))
                .map_err(|e| invalid(&self.path, format!("dequantizing `{name}`: {e}")))?,
            None => self
                .tensors
                .get(name)
                .cloned()
                .ok_or_else(|| SkillError::TensorMissing {
                    path: self.path.clone(),
                    tensor: name.to_owned(),
                })?,
        };
        self.used.insert(name.to_owned());
        Ok(t)
    }

    /// Integer buffer `name` (I64 or I32) of shape `shape`, as values: index tables some
    /// checkpoints persist (Donut's `relative_position_index`), which the caller checks.
    pub(crate) fn take_ints(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<Vec<i64>, SkillError> {
        let Some(entry) = self.entries.get(name) else {
            return Err(SkillError::TensorMissing {
                path: self.path.clone(),
                tensor: name.to_owned(),
            });
        };
        let bad = |detail: String| SkillError::TensorInvalid {
            path: entry.file.clone(),
            tensor: name.to_owned(),
            detail,
        };
        if !matches!(
            entry.dtype,
            safetensors::Dtype::I64 | safetensors::Dtype::I32
        ) {
            return Err(bad(format!(
                "has dtype {:?}, expected integers",
                entry.dtype
            )));
        }
        if entry.shape != shape {
            return Err(bad(format!(
                "has shape {:?}, config.json implies {shape:?}",
                entry.shape
            )));
        }
        let values = self
            .tensors
            .get(name)
            .ok_or_else(|| bad("is not loaded".into()))?
            .to_dtype(DType::I64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<i64>())
            .map_err(|e| bad(e.to_string()))?;
        self.used.insert(name.to_owned());
        Ok(values)
    }

    /// Leave the tensors `unused` selects: parts of the checkpoint the caller's task does not
    /// compute by design (an MLM head or pooler when embedding), so [`Weights::finish`] does
    /// not refuse them.
    pub(crate) fn leave(&mut self, unused: impl Fn(&str) -> bool) {
        let names: Vec<String> = self.entries.keys().filter(|n| unused(n)).cloned().collect();
        self.used.extend(names);
    }

    /// Every tensor in the files was used: one the model did not ask for means the
    /// checkpoint has a part the decoder does not compute, so it is refused rather than run
    /// without it.
    pub(crate) fn finish(&self) -> Result<(), SkillError> {
        if let Some((name, e)) = self
            .entries
            .iter()
            .find(|(n, _)| !self.used.contains(*n) && !is_buffer(n))
        {
            return Err(SkillError::TensorInvalid {
                path: e.file.clone(),
                tensor: name.clone(),
                detail: "is not used by the model: the checkpoint has a part this model type's translation does not compute (refused rather than run without it)".to_owned(),
            });
        }
        Ok(())
    }
}

/// `name.weight` `[out, inp]` and, when `bias`, `name.bias` `[out]`, as a linear layer.
pub(crate) fn linear(
    w: &mut Weights,
    name: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear, SkillError> {
    let weight = w.take(&format!("{name}.weight"), &[out, inp])?;
    let b = if bias {
        Some(w.take(&format!("{name}.bias"), &[out])?)
    } else {
        None
    };
    Ok(Linear::new(weight, b))
}

/// `name.weight` and `name.bias` `[n]` as a LayerNorm with `eps`.
pub(crate) fn layer_norm(
    w: &mut Weights,
    name: &str,
    n: usize,
    eps: f64,
) -> Result<LayerNorm, SkillError> {
    Ok(LayerNorm::new(
        w.take(&format!("{name}.weight"), &[n])?,
        w.take(&format!("{name}.bias"), &[n])?,
        eps,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Float matrices `name → [rows, cols]` as a checkpoint would hold them.
    fn weights(shapes: &[(&str, usize, usize)]) -> Weights {
        let dense = shapes
            .iter()
            .map(|&(n, r, c)| {
                let v: Vec<f32> = (0..r * c).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
                let t = Tensor::from_vec(v, (r, c), &Device::Cpu).unwrap();
                (n.to_owned(), t)
            })
            .collect();
        Weights::from_parts(PathBuf::from("m"), dense, HashMap::new(), &Device::Cpu)
    }

    fn dtype_of(w: &Weights, name: &str) -> Option<GgmlDType> {
        w.quant.get(name).map(|q| q.dtype())
    }

    #[test]
    fn each_matrix_gets_the_block_type_llama_cpp_would_give_it() {
        let shapes = [
            ("a.weight", 4, 512), // whole Q4_K super-blocks
            ("b.weight", 4, 576), // whole 32-blocks only: Q5_0 under Q4_K
            ("c.weight", 4, 40),  // no whole block: float
            ("d.bias", 4, 64),    // not a matrix weight: float
        ];
        let mut w = weights(&shapes);
        assert_eq!(w.quantize(Quantization::Q4K).unwrap(), (1, 1, 1));
        assert_eq!(dtype_of(&w, "a.weight"), Some(GgmlDType::Q4K));
        assert_eq!(dtype_of(&w, "b.weight"), Some(GgmlDType::Q5_0));
        assert_eq!(dtype_of(&w, "c.weight"), None);
        assert!(w.tensors.contains_key("c.weight") && w.tensors.contains_key("d.bias"));

        let mut w = weights(&shapes);
        assert_eq!(w.quantize(Quantization::Q8_0).unwrap(), (2, 0, 1));
        assert_eq!(dtype_of(&w, "a.weight"), Some(GgmlDType::Q8_0));
        assert_eq!(dtype_of(&w, "b.weight"), Some(GgmlDType::Q8_0));

        // Nothing with whole blocks: nothing quantized (the decoder refuses the request).
        let mut w = weights(&[("c.weight", 4, 40)]);
        assert_eq!(w.quantize(Quantization::Q4K).unwrap(), (0, 0, 1));
    }
}
