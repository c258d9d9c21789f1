//! Native vision (see [`crate`]): ViT image classification on candle
//! (`candle_transformers::models::vit`).
//!
//! [`VitClassifier::load`] translates `config.json` field by field (typed errors name the field),
//! checks every tensor of the `ViTForImageClassification` checkpoint (`vit.` backbone,
//! `classifier.` head) by name, dtype and shape, and reads `preprocessor_config.json` when
//! present (ViTImageProcessor: resize to `size`, rescale, normalise). Without it the
//! ViTImageProcessor defaults apply: resize to `image_size`² (bilinear), × 1/255, mean = std =
//! 0.5. Images are decoded with the `image` crate (PNG and JPEG).
//!
//! Resizing uses the `image` crate's filters (Triangle for bilinear, CatmullRom for bicubic),
//! which do not reproduce PIL's antialiased resampling bit for bit; parity is checked on the
//! model input (`pixel_values` → logits, [`VitClassifier::logits`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::vit;
use serde_json::{Map, Value};
use skillgen_runtime::{Capability, Task};

use crate::e;
use skillgen_checkpoint::{Fields, TensorCheck, config_json, read_json, weights_bytes};
use skillgen_runtime::Model;
use skillgen_runtime::request::{Call, ImageClassification, ImageInput, Label, Output};
use skillgen_runtime::{SkillError, Target};

crate::architecture_struct!(Vit, "The `vit` implementation.");

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::ClassifyImage(req) => {
            let model = state.cached(&format!("candle/vit/{target}"), || {
                VitClassifier::load(state.dir(), &crate::device(target)?)
            })?;
            model
                .classify(&req.image, req.top_k)
                .map(Output::ClassifyImage)
        }
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

/// Resampling filter of the preprocessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resample {
    Nearest,
    Bilinear,
    Bicubic,
}

/// ViTImageProcessor settings.
#[derive(Debug, Clone, PartialEq)]
struct Preprocess {
    resize: Option<(u32, u32)>,
    resample: Resample,
    rescale: Option<f32>,
    normalize: Option<([f32; 3], [f32; 3])>,
}

fn three(f: &Fields<'_>, field: &str, default: f32) -> Result<[f32; 3], SkillError> {
    match f.get(field) {
        None => Ok([default; 3]),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN) as f32;
            Ok([x; 3])
        }
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, v) in out.iter_mut().zip(a) {
                *o = v
                    .as_f64()
                    .ok_or_else(|| f.err(field, format!("expected numbers, found {v}")))?
                    as f32;
            }
            Ok(out)
        }
        Some(v) => Err(f.err(field, format!("expected 3 numbers, found {v}"))),
    }
}

fn bool_or(f: &Fields<'_>, field: &str, default: bool) -> Result<bool, SkillError> {
    match f.get(field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(f.err(field, format!("expected a boolean, found {v}"))),
    }
}

impl Preprocess {
    fn read(dir: &Path, image_size: usize) -> Result<Self, SkillError> {
        let path = dir.join("preprocessor_config.json");
        let side = u32::try_from(image_size).unwrap_or(u32::MAX);
        if !path.is_file() {
            return Ok(Self {
                resize: Some((side, side)),
                resample: Resample::Bilinear,
                rescale: Some(1.0 / 255.0),
                normalize: Some(([0.5; 3], [0.5; 3])),
            });
        }
        let map = read_json(&path)?;
        let f = Fields {
            path: &path,
            map: &map,
        };
        let resize = if bool_or(&f, "do_resize", true)? {
            let (h, w) = match f.get("size") {
                None => (side, side),
                Some(Value::Number(n)) => {
                    let s = n
                        .as_u64()
                        .and_then(|s| u32::try_from(s).ok())
                        .ok_or_else(|| f.err("size", "expected a positive integer"))?;
                    (s, s)
                }
                Some(Value::Object(o)) => {
                    let g = |k: &str| {
                        o.get(k)
                            .and_then(Value::as_u64)
                            .and_then(|s| u32::try_from(s).ok())
                    };
                    match (g("height"), g("width")) {
                        (Some(h), Some(w)) => (h, w),
                        _ => {
                            return Err(f.err(
                                "size",
                                "only {height, width} sizes are supported (ViTImageProcessor)",
                            ));
                        }
                    }
                }
                Some(v) => return Err(f.err("size", format!("unsupported value {v}"))),
            };
            if h == 0 || w == 0 {
                return Err(f.err("size", "must be positive"));
            }
            Some((h, w))
        } else {
            None
        };
        let resample = match f.usize_opt("resample")? {
            None | Some(2) => Resample::Bilinear,
            Some(0) => Resample::Nearest,
            Some(3) => Resample::Bicubic,
            Some(other) => {
                return Err(f.err(
                    "resample",
                    format!("PIL filter {other} is not supported (0, 2, 3)"),
                ));
            }
        };
        let rescale = if bool_or(&f, "do_rescale", true)? {
            Some(match f.get("rescale_factor") {
                None => 1.0 / 255.0,
                Some(_) => f.f64("rescale_factor")? as f32,
            })
        } else {
            None
        };
        let normalize = if bool_or(&f, "do_normalize", true)? {
            Some((three(&f, "image_mean", 0.5)?, three(&f, "image_std", 0.5)?))
        } else {
            None
        };
        if let Some((_, std)) = normalize
            && std.iter().any(|s| *s == 0.0 || !s.is_finite())
        {
            return Err(f.err("image_std", "must be finite and non-zero"));
        }
        Ok(Self {
            resize,
            resample,
            rescale,
            normalize,
        })
    }
}

/// A loaded ViT image classifier on one candle device.
pub struct VitClassifier {
    model: vit::Model,
    labels: Vec<String>,
    image_size: usize,
    channels: usize,
    pre: Preprocess,
    device: Device,
}

impl std::fmt::Debug for VitClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VitClassifier")
            .field("labels", &self.labels.len())
            .field("image_size", &self.image_size)
            .field("device", &self.device)
            .finish()
    }
}

fn vit_config(
    path: &Path,
    map: &Map<String, Value>,
) -> Result<(vit::Config, Vec<String>), SkillError> {
    let f = Fields { path, map };
    let hidden_act = match f.str_opt("hidden_act")? {
        Some("gelu") => candle_nn::Activation::Gelu,
        Some("gelu_new" | "gelu_pytorch_tanh") => candle_nn::Activation::NewGelu,
        Some("relu") => candle_nn::Activation::Relu,
        Some(other) => {
            return Err(f.err(
                "hidden_act",
                format!("`{other}` is not supported (gelu, gelu_new, relu)"),
            ));
        }
        None => return Err(f.err("hidden_act", "missing (required)")),
    };
    let hidden_size = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    if !hidden_size.is_multiple_of(heads) {
        return Err(f.err(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden_size}"),
        ));
    }
    let image_size = f.positive("image_size")?;
    let patch_size = f.positive("patch_size")?;
    if !image_size.is_multiple_of(patch_size) {
        return Err(f.err(
            "patch_size",
            format!("{patch_size} does not divide image_size {image_size}"),
        ));
    }
    let qkv_bias = match f.get("qkv_bias") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(f.err("qkv_bias", format!("expected a boolean, found {v}"))),
    };
    let labels = f.labels()?;
    Ok((
        vit::Config {
            hidden_size,
            num_hidden_layers: f.positive("num_hidden_layers")?,
            num_attention_heads: heads,
            intermediate_size: f.positive("intermediate_size")?,
            hidden_act,
            layer_norm_eps: f.f64("layer_norm_eps")?,
            image_size,
            patch_size,
            num_channels: f.usize_opt("num_channels")?.unwrap_or(3),
            qkv_bias,
        },
        labels,
    ))
}

fn vit_tensors(c: &vit::Config, labels: usize) -> Vec<(String, Vec<usize>)> {
    let h = c.hidden_size;
    let n = (c.image_size / c.patch_size).pow(2);
    let p = "vit.embeddings";
    let mut t = vec![
        (format!("{p}.cls_token"), vec![1, 1, h]),
        (format!("{p}.position_embeddings"), vec![1, n + 1, h]),
        (
            format!("{p}.patch_embeddings.projection.weight"),
            vec![h, c.num_channels, c.patch_size, c.patch_size],
        ),
        (format!("{p}.patch_embeddings.projection.bias"), vec![h]),
        ("vit.layernorm.weight".to_owned(), vec![h]),
        ("vit.layernorm.bias".to_owned(), vec![h]),
        ("classifier.weight".to_owned(), vec![labels, h]),
        ("classifier.bias".to_owned(), vec![labels]),
    ];
    for l in 0..c.num_hidden_layers {
        let q = format!("vit.encoder.layer.{l}");
        let mut lin = |name: String, out: usize, inp: usize, bias: bool| {
            t.push((format!("{name}.weight"), vec![out, inp]));
            if bias {
                t.push((format!("{name}.bias"), vec![out]));
            }
        };
        for n in ["query", "key", "value"] {
            lin(format!("{q}.attention.attention.{n}"), h, h, c.qkv_bias);
        }
        lin(format!("{q}.attention.output.dense"), h, h, true);
        lin(
            format!("{q}.intermediate.dense"),
            c.intermediate_size,
            h,
            true,
        );
        lin(format!("{q}.output.dense"), h, c.intermediate_size, true);
        for ln in ["layernorm_before", "layernorm_after"] {
            t.push((format!("{q}.{ln}.weight"), vec![h]));
            t.push((format!("{q}.{ln}.bias"), vec![h]));
        }
    }
    t
}

impl VitClassifier {
    /// Load the `ViTForImageClassification` checkpoint in `dir` on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let (config, labels) = vit_config(&config_path, &map)?;
        let (weights_path, bytes) = weights_bytes(dir)?;
        TensorCheck::new(&weights_path, &bytes)?
            .require_all(&vit_tensors(&config, labels.len()))?;
        let load_err = |err: candle_core::Error| SkillError::WeightsInvalid {
            path: weights_path.clone(),
            detail: err.to_string(),
        };
        let vb =
            VarBuilder::from_slice_safetensors(&bytes, DType::F32, device).map_err(load_err)?;
        let model = vit::Model::new(&config, labels.len(), vb).map_err(load_err)?;
        let pre = Preprocess::read(dir, config.image_size)?;
        Ok(Self {
            model,
            labels,
            image_size: config.image_size,
            channels: config.num_channels,
            pre,
            device: device.clone(),
        })
    }

    /// The class labels (`id2label`, in id order).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Logits `[batch, labels]` for `pixel_values` `[batch, channels, size, size]` (f32, already
    /// preprocessed), given flat row-major.
    pub fn logits(&self, pixel_values: &[f32], shape: [usize; 4]) -> Result<Tensor, SkillError> {
        let [b, c, h, w] = shape;
        if b == 0 || c != self.channels || h != self.image_size || w != self.image_size {
            return Err(SkillError::InvalidRequest {
                capability: Capability::ClassifyImage,
                detail: format!(
                    "pixel_values has shape {shape:?}, the model takes [batch ≥ 1, {}, {}, {}]",
                    self.channels, self.image_size, self.image_size
                ),
            });
        }
        if pixel_values.len() != b * c * h * w {
            return Err(SkillError::InvalidRequest {
                capability: Capability::ClassifyImage,
                detail: format!(
                    "pixel_values has {} values, shape {shape:?} needs {}",
                    pixel_values.len(),
                    b * c * h * w
                ),
            });
        }
        let x = Tensor::from_slice(pixel_values, (b, c, h, w), &self.device)
            .map_err(e("pixel values"))?;
        self.model.forward(&x).map_err(e("ViT forward"))
    }

    /// Decode and preprocess one image into `[channels, size, size]` pixel values.
    pub fn preprocess(&self, image: &ImageInput) -> Result<Vec<f32>, SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::ClassifyImage,
            detail,
        };
        if self.channels != 3 {
            return Err(invalid(format!(
                "the model takes {} channels; only RGB images are supported",
                self.channels
            )));
        }
        let img = match image {
            ImageInput::Path(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|err| invalid(format!("reading image {}: {err}", p.display())))?;
                image::load_from_memory(&bytes)
                    .map_err(|err| invalid(format!("decoding image {}: {err}", p.display())))?
            }
            ImageInput::Encoded(bytes) => image::load_from_memory(bytes)
                .map_err(|err| invalid(format!("decoding image bytes: {err}")))?,
        };
        let rgb = img.to_rgb8();
        let (h, w) = self.pre.resize.unwrap_or((rgb.height(), rgb.width()));
        let side = self.image_size as u32;
        if (h, w) != (side, side) {
            return Err(invalid(format!(
                "preprocessing yields {h}x{w} images, the model takes {side}x{side}"
            )));
        }
        let rgb = if self.pre.resize.is_some() && (rgb.height(), rgb.width()) != (h, w) {
            let filter = match self.pre.resample {
                Resample::Nearest => image::imageops::FilterType::Nearest,
                Resample::Bilinear => image::imageops::FilterType::Triangle,
                Resample::Bicubic => image::imageops::FilterType::CatmullRom,
            };
            image::imageops::resize(&rgb, w, h, filter)
        } else {
            rgb
        };
        let (hw, wu) = (h as usize, w as usize);
        let mut out = vec![0f32; 3 * hw * wu];
        for (x, y, px) in rgb.enumerate_pixels() {
            for c in 0..3 {
                let mut v = f32::from(px.0[c]);
                if let Some(s) = self.pre.rescale {
                    v *= s;
                }
                if let Some((mean, std)) = self.pre.normalize {
                    v = (v - mean[c]) / std[c];
                }
                if let Some(slot) = out.get_mut((c * hw + y as usize) * wu + x as usize) {
                    *slot = v;
                }
            }
        }
        Ok(out)
    }

    /// `classify_image`: decode, preprocess, run, softmax; the `top_k` best labels (0 = all).
    pub fn classify(
        &self,
        image: &ImageInput,
        top_k: usize,
    ) -> Result<ImageClassification, SkillError> {
        let pixels = self.preprocess(image)?;
        let s = self.image_size;
        let logits = self.logits(&pixels, [1, 3, s, s])?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)
            .and_then(|p| p.squeeze(0))
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(e("softmax"))?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let k = if top_k == 0 {
            order.len()
        } else {
            top_k.min(order.len())
        };
        Ok(ImageClassification {
            labels: order
                .into_iter()
                .take(k)
                .filter_map(|i| {
                    Some(Label {
                        label: self.labels.get(i)?.clone(),
                        score: *probs.get(i)?,
                    })
                })
                .collect(),
        })
    }
}

/// Parity entry point: ViT logits (flat, shape) for `pixel_values` of `shape` on the CPU.
#[doc(hidden)]
pub fn vit_logits(
    dir: &Path,
    pixel_values: &[f32],
    shape: [usize; 4],
) -> Result<(Vec<f32>, Vec<usize>), SkillError> {
    let model = VitClassifier::load(dir, &Device::Cpu)?;
    crate::encoder::text::flat(&model.logits(pixel_values, shape)?)
}
