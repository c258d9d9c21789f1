//! Native image classification with convolutional networks (see [`crate`]): ResNet, RegNet
//! and ConvNeXt ([`model`]; DINOv3's ConvNeXt as a base model for `embed_image`), PoolFormer ([`poolformer`]), MobileNet V1/V2 ([`mobilenet`]),
//! EfficientNet ([`efficientnet`]), MobileViT ([`mobilevit`]: convolutions with transformer
//! blocks over unfolded patches; V2 [`mobilevit2`] with separable attention), TextNet ([`textnet`]), BiT ([`bit`]), SwiftFormer
//! ([`swiftformer`]: convolutions with additive attention), HGNet V2 ([`hgnet`]), with the same image preprocessing as the ViT-like encoder
//! ([`crate::vit`]: `preprocessor_config.json` with `{height, width}` sizes; other size
//! schemes are a typed error).

use std::path::Path;

use candle_core::{Device, Tensor};
use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::request::{
    Call, EmbedImageRequest, ImageClassification, ImageEmbeddings, ImageInput, Output,
};
use skillgen_runtime::{Capability, Model, SkillError, Target, Task};

use crate::e;
use crate::vit::preprocess::Preprocess;
use crate::weights::Weights;

mod bit;
pub(crate) mod conv;
mod efficientnet;
mod hgnet;
mod mobilenet;
mod mobilevit;
mod mobilevit2;
pub(crate) mod model;
mod poolformer;
mod swiftformer;
mod textnet;

use model::CnnModel;

/// The model types the `cnn` implementation knows.
pub const MODEL_TYPES: &[&str] = &[
    "bit",
    "convnext",
    "convnextv2",
    "dinov3_convnext",
    "efficientnet",
    "hgnet_v2",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilevit",
    "mobilevitv2",
    "poolformer",
    "regnet",
    "resnet",
    "swiftformer",
    "textnet",
];

crate::architecture_struct!(
    Cnn,
    "The `cnn` implementation: ResNet, RegNet, ConvNeXt (V2, DINOv3's), PoolFormer, MobileNet V1/V2, EfficientNet, MobileViT (V2), TextNet, BiT, SwiftFormer and HGNet V2."
);

/// A loaded convolutional classifier: pixels `[b, channels, h, w]` → logits `[b, labels]`.
pub(crate) trait Network: std::fmt::Debug + Send + Sync {
    /// The input channels.
    fn channels(&self) -> usize;
    /// The preprocessing size when the preprocessor names none (`image_size`, else 224).
    fn image_size(&self) -> usize;
    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError>;
}

/// Read `config.json` (in `f`) of `model_type` and take its `*ForImageClassification`
/// weights with `labels` classes.
fn load_network(
    model_type: &str,
    f: &Fields<'_>,
    w: &mut Weights,
    labels: usize,
) -> Result<Box<dyn Network>, SkillError> {
    Ok(match model_type {
        "poolformer" => Box::new(poolformer::PoolFormer::load(f, w, labels)?),
        "efficientnet" => Box::new(efficientnet::EfficientNet::load(f, w, labels)?),
        "mobilenet_v1" => Box::new(mobilenet::MobileNet::load(f, w, labels, false)?),
        "mobilenet_v2" => Box::new(mobilenet::MobileNet::load(f, w, labels, true)?),
        "mobilevit" => Box::new(mobilevit::MobileVit::load(f, w, labels)?),
        "mobilevitv2" => Box::new(mobilevit2::MobileVit2::load(f, w, labels)?),
        "textnet" => Box::new(textnet::TextNet::load(f, w, labels)?),
        "bit" => Box::new(bit::Bit::load(f, w, labels)?),
        "swiftformer" => Box::new(swiftformer::SwiftFormer::load(f, w, labels)?),
        "hgnet_v2" => Box::new(hgnet::HgNet::load(f, w, labels)?),
        t if crate::swin::MODEL_TYPES.contains(&t) => {
            Box::new(crate::swin::model::Swin::load(t, f, w, labels)?)
        }
        "cvt" => Box::new(crate::pvt::cvt::Cvt::load(f, w, labels)?),
        "levit" => Box::new(crate::pvt::levit::Levit::load(f, w, labels)?),
        "focalnet" => Box::new(crate::pvt::focalnet::FocalNet::load(f, w, labels)?),
        t if crate::pvt::MODEL_TYPES.contains(&t) => {
            Box::new(crate::pvt::model::Pvt::load(t, f, w, labels)?)
        }
        _ => Box::new(CnnModel::load(model::translate(model_type, f)?, w, labels)?),
    })
}

/// Run `call` (also the `swin` and `pvt` implementations': the same classifier over their
/// networks).
pub(crate) fn run(
    state: &Model,
    target: Target,
    task: Task,
    call: Call,
) -> Result<Output, SkillError> {
    match call {
        Call::ClassifyImage(req) => {
            let model_type = state.info().model_type;
            let model = state.cached(&format!("candle/{model_type}/cnn/{target}"), || {
                CnnClassifier::load(state.dir(), model_type, &crate::device(target)?)
            })?;
            model
                .classify(&req.image, req.top_k)
                .map(Output::ClassifyImage)
        }
        Call::EmbedImage(req) if EMBED_TYPES.contains(&state.info().model_type) => {
            let model_type = state.info().model_type;
            let model = state.cached(
                &format!("candle/{model_type}/cnn-features/{target}"),
                || CnnFeatures::load(state.dir(), model_type, &crate::device(target)?),
            )?;
            model.embed(&req).map(Output::EmbedImage)
        }
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

/// The base models whose pooled features (`embed_image`) the `cnn` implementation gives.
pub const EMBED_TYPES: &[&str] = &["dinov3_convnext"];

/// The preprocessing side of a CNN: the preprocessor's square size, else `image_size`.
fn square_side(
    pre: &Preprocess,
    image_size: usize,
    capability: Capability,
) -> Result<usize, SkillError> {
    match pre.resize {
        Some((h, w)) if h == w => Ok(h as usize),
        Some((h, w)) => Err(SkillError::InvalidRequest {
            capability,
            detail: format!("non-square preprocessing sizes ({h}x{w}) are not implemented"),
        }),
        None => Ok(image_size),
    }
}

/// A loaded CNN base model with its preprocessing: `embed_image` gives its pooled features.
#[derive(Debug)]
pub struct CnnFeatures {
    model: CnnModel,
    pre: Preprocess,
    device: Device,
}

impl CnnFeatures {
    /// Load the base-model checkpoint of `model_type` (one of [`EMBED_TYPES`]) in `dir`.
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        if !EMBED_TYPES.contains(&model_type) {
            return Err(f.err(
                "model_type",
                format!("`{model_type}` is not a CNN base model the candle backend implements"),
            ));
        }
        let spec = model::translate(model_type, &f)?;
        if spec.channels != 3 {
            return Err(f.err("num_channels", "only RGB (3) is implemented"));
        }
        let mut w = Weights::read(dir, device)?;
        let model = CnnModel::load(spec, &mut w, 0)?;
        let pre = Preprocess::read(dir, model.spec().image)?;
        Ok(Self {
            model,
            pre,
            device: device.clone(),
        })
    }

    /// `embed_image`: the pooled features of each image.
    pub fn embed(&self, req: &EmbedImageRequest) -> Result<ImageEmbeddings, SkillError> {
        let s = square_side(&self.pre, self.model.spec().image, Capability::EmbedImage)?;
        let pooling = "final layernorm of the mean over the last feature map";
        crate::heads::embed_images(req, pooling, |images| {
            let mut values = Vec::with_capacity(images.len() * 3 * s * s);
            for image in images {
                values.extend(self.pre.pixels(image, s)?);
            }
            let x = Tensor::from_vec(values, (images.len(), 3, s, s), &self.device)
                .map_err(e("pixel values"))?;
            self.model.pooled(&x)
        })
    }
}

/// A loaded image classifier over a [`Network`] (the CNNs here, Swin and PVT).
pub struct CnnClassifier {
    model: Box<dyn Network>,
    labels: Vec<String>,
    pre: Preprocess,
    device: Device,
}

impl std::fmt::Debug for CnnClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CnnClassifier")
            .field("model", &self.model)
            .field("labels", &self.labels.len())
            .finish_non_exhaustive()
    }
}

impl CnnClassifier {
    /// Load the `*ForImageClassification` checkpoint of `model_type` in `dir` on `device`.
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let labels = f.labels()?;
        let mut w = Weights::read(dir, device)?;
        let model = load_network(model_type, &f, &mut w, labels.len())?;
        let pre = Preprocess::read(dir, model.image_size())?;
        Ok(Self {
            model,
            labels,
            pre,
            device: device.clone(),
        })
    }

    /// Logits `[batch, labels]` of `pixel_values` (`shape` `[b, channels, h, w]`, flat).
    pub fn logits(&self, pixel_values: &[f32], shape: [usize; 4]) -> Result<Tensor, SkillError> {
        let [b, c, h, w] = shape;
        if b == 0 || c != self.model.channels() || pixel_values.len() != b * c * h * w {
            return Err(SkillError::InvalidRequest {
                capability: Capability::ClassifyImage,
                detail: format!(
                    "pixel_values of {} values and shape {shape:?}; the model takes [batch ≥ 1, {}, h, w]",
                    pixel_values.len(),
                    self.model.channels()
                ),
            });
        }
        let x = Tensor::from_slice(pixel_values, (b, c, h, w), &self.device)
            .map_err(e("pixel values"))?;
        self.model.logits(&x)
    }

    /// `classify_image`: decode, preprocess, run, softmax; the `top_k` best labels (0 = all).
    pub fn classify(
        &self,
        image: &ImageInput,
        top_k: usize,
    ) -> Result<ImageClassification, SkillError> {
        // A CNN takes any size: the preprocessor's, else `image_size` (224).
        let s = square_side(
            &self.pre,
            self.model.image_size(),
            Capability::ClassifyImage,
        )?;
        let pixels = self.pre.pixels(image, s)?;
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
pub fn cnn_logits(
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
    let model = CnnClassifier::load(dir, &model_type, &Device::Cpu)?;
    crate::encoder::text::flat(&model.logits(pixel_values, shape)?)
}
