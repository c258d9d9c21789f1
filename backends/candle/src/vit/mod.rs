//! Native vision (see [`crate`]): image classification with one parametric ViT-like encoder
//! ([`model`]: ViT, DeiT, ViT-MSN, I-JEPA, DINOv2, DINOv2 with registers).
//!
//! [`VitClassifier::load`] translates `config.json` field by field (typed errors name the
//! field), takes every tensor of the `*ForImageClassification` checkpoint by name and shape,
//! and reads `preprocessor_config.json` when present ([`preprocess`]: resize to `size`,
//! rescale, normalise). Without it the ViTImageProcessor defaults apply: resize to
//! `image_size`² (bilinear), × 1/255, mean = std = 0.5. Images are decoded with the `image`
//! crate (PNG and JPEG).
//!
//! Resizing uses the `image` crate's filters (Triangle for bilinear, CatmullRom for bicubic),
//! which do not reproduce PIL's antialiased resampling bit for bit; parity is checked on the
//! model input (`pixel_values` → logits, [`VitClassifier::logits`]) and, through the skills,
//! on images already at the model's size.

use std::path::Path;

use candle_core::{Device, Tensor};
use skillgen_runtime::{Capability, Task};

use crate::e;
use crate::weights::Weights;
use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::Model;
use skillgen_runtime::request::{Call, ImageClassification, ImageInput, Output};
use skillgen_runtime::{SkillError, Target};

pub(crate) mod model;
pub(crate) mod preprocess;
pub(crate) mod resize;

pub use model::MODEL_TYPES;
use model::VitModel;
use preprocess::Preprocess;

crate::architecture_struct!(Vit, "The `vit` implementation: the ViT-like image encoder.");

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::ClassifyImage(req) => {
            let model_type = state.info().model_type;
            let model = state.cached(&format!("candle/{model_type}/vit/{target}"), || {
                VitClassifier::load(state.dir(), model_type, &crate::device(target)?)
            })?;
            model
                .classify(&req.image, req.top_k)
                .map(Output::ClassifyImage)
        }
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

/// A loaded ViT-like image classifier on one candle device.
pub struct VitClassifier {
    model: VitModel,
    labels: Vec<String>,
    pre: Preprocess,
    device: Device,
}

impl std::fmt::Debug for VitClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VitClassifier")
            .field("spec", self.model.spec())
            .field("labels", &self.labels.len())
            .field("device", &self.device)
            .finish()
    }
}

impl VitClassifier {
    /// Load the `*ForImageClassification` checkpoint of `model_type` in `dir` on `device`.
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = model::translate(model_type, &f)?;
        let labels = f.labels()?;
        let pre = Preprocess::read(dir, spec.image)?;
        let mut w = Weights::read(dir, device)?;
        let model = VitModel::load(spec, &mut w, labels.len())?;
        Ok(Self {
            model,
            labels,
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
        let spec = self.model.spec();
        let (channels, size) = (spec.channels, spec.image);
        let [b, c, h, w] = shape;
        if b == 0 || c != channels || h != size || w != size {
            return Err(SkillError::InvalidRequest {
                capability: Capability::ClassifyImage,
                detail: format!(
                    "pixel_values has shape {shape:?}, the model takes [batch ≥ 1, {channels}, {size}, {size}]"
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
        self.model.logits(&x)
    }

    /// Decode and preprocess one image into `[channels, size, size]` pixel values.
    pub fn preprocess(&self, image: &ImageInput) -> Result<Vec<f32>, SkillError> {
        let spec = self.model.spec();
        if spec.channels != 3 {
            return Err(SkillError::InvalidRequest {
                capability: Capability::ClassifyImage,
                detail: format!(
                    "the model takes {} channels; only RGB images are supported",
                    spec.channels
                ),
            });
        }
        self.pre.pixels(image, spec.image)
    }

    /// `classify_image`: decode, preprocess, run, softmax; the `top_k` best labels (0 = all).
    pub fn classify(
        &self,
        image: &ImageInput,
        top_k: usize,
    ) -> Result<ImageClassification, SkillError> {
        let pixels = self.preprocess(image)?;
        let s = self.model.spec().image;
        let logits = self
            .logits(&pixels, [1, 3, s, s])?
            .squeeze(0)
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(e("logits"))?;
        Ok(ImageClassification {
            labels: crate::heads::ranked_labels(&self.labels, &logits, false, top_k),
        })
    }
}

/// Parity entry point: the logits (flat, shape) of the classifier in `dir` (its
/// `config.json` `model_type`) for `pixel_values` of `shape` on the CPU.
#[doc(hidden)]
pub fn vit_logits(
    dir: &Path,
    pixel_values: &[f32],
    shape: [usize; 4],
) -> Result<(Vec<f32>, Vec<usize>), SkillError> {
    let (config_path, map) = config_json(dir)?;
    let f = Fields {
        path: &config_path,
        map: &map,
    };
    let model_type = f
        .str_opt("model_type")?
        .ok_or_else(|| f.err("model_type", "missing (required)"))?
        .to_owned();
    let model = VitClassifier::load(dir, &model_type, &Device::Cpu)?;
    crate::encoder::text::flat(&model.logits(pixel_values, shape)?)
}
