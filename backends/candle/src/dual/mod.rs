//! Native zero-shot image classification (see [`crate`]): CLIP and SigLIP dual encoders
//! ([`model`]) for `image_text_similarity`; their image towers alone for `embed_image`
//! ([`ImageTower`]) and CLIP's text tower alone for `embed` ([`TextTowerModel`]).
//!
//! Images go through the model's `preprocessor_config.json` (see [`crate::vit`]); texts
//! through `tokenizer.json`, truncated to the text tower's positions — and, for SigLIP,
//! padded to them with `pad_token_id`, as transformers' zero-shot pipeline does (SigLIP pools
//! the last position). Scores: softmax over the texts (CLIP), a sigmoid per pair (SigLIP).
//! SigLIP 2 images go through its NaFlex processor: each keeps its aspect ratio as a grid of
//! patch rows (no padding: the masked padding of transformers' batch changes nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use skillgen_checkpoint::{Fields, config_json, load_tokenizer};
use skillgen_runtime::request::{Call, ImageTextRequest, Output, Similarity};
use skillgen_runtime::{Capability, Model, SkillError, Target, Task};

use crate::e;
use crate::encoder::setup::HeadModel;
use crate::vit::preprocess::Preprocess;
use crate::weights::Weights;

pub(crate) mod model;
mod text;
mod tower;

pub use model::MODEL_TYPES;
use model::{DualModel, Kind};
pub use text::TextTowerModel;
pub use tower::ImageTower;

crate::architecture_struct!(
    Dual,
    "The `dual` implementation: CLIP and SigLIP dual encoders."
);

/// Preprocessed images, as the image tower takes them.
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// `[b, 3, s, s]` pixel values (CLIP, SigLIP).
    Square {
        /// The values, row-major.
        values: &'a [f32],
        /// `[b, 3, s, s]`.
        shape: [usize; 4],
    },
    /// NaFlex patch rows (SigLIP 2): image `i` is `grids[i] = (h, w)` patches, `h·w` rows of
    /// `patch·patch·3` values, the images concatenated.
    Patches {
        /// The rows of every image, concatenated.
        values: &'a [f32],
        /// Each image's patch grid.
        grids: &'a [(usize, usize)],
    },
}

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::ImageTextSimilarity(req) => encoder(state, target)?
            .similarity(&req)
            .map(Output::ImageTextSimilarity),
        Call::EmbedImage(req) => cached_tower(state, target)?
            .embed(&req)
            .map(Output::EmbedImage),
        Call::Embed(req) => text_tower(state, target)?
            .embed(&req.input, req.normalize, req.batch_size)
            .map(Output::Embed),
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

fn encoder(state: &Model, target: Target) -> Result<Arc<DualEncoder>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(&format!("candle/{model_type}/dual/{target}"), || {
        DualEncoder::load(state.dir(), model_type, &crate::device(target)?)
    })
}

fn cached_tower(state: &Model, target: Target) -> Result<Arc<ImageTower>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(&format!("candle/{model_type}/image-tower/{target}"), || {
        ImageTower::load(state.dir(), model_type, &crate::device(target)?)
    })
}

fn text_tower(state: &Model, target: Target) -> Result<Arc<TextTowerModel>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(&format!("candle/{model_type}/text-tower/{target}"), || {
        TextTowerModel::load(state.dir(), model_type, &crate::device(target)?)
    })
}

/// A loaded dual encoder with its preprocessing.
pub struct DualEncoder {
    model: DualModel,
    pre: Preprocess,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
    device: Device,
}

impl std::fmt::Debug for DualEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualEncoder")
            .field("spec", self.model.spec())
            .finish_non_exhaustive()
    }
}

impl DualEncoder {
    /// Load the `model_type` checkpoint in `dir` on `device`.
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = model::translate(model_type, &f)?;
        let pre = tower::preprocess(dir, &spec.vision)?;
        let max_pos = spec.max_pos;
        let mut w = Weights::read(dir, device)?;
        let model = DualModel::load(spec, &mut w)?;
        let (tokenizer, tokenizer_path) = load_tokenizer(dir, Some(max_pos))?;
        Ok(Self {
            model,
            pre,
            tokenizer,
            tokenizer_path,
            device: device.clone(),
        })
    }

    /// The token ids the text tower reads for `ids` (SigLIP: padded to its positions).
    pub fn text_ids(&self, mut ids: Vec<u32>) -> Result<Vec<u32>, SkillError> {
        let s = self.model.spec();
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::ImageTextSimilarity,
            detail,
        };
        if ids.is_empty() {
            return Err(invalid("a text has no tokens".into()));
        }
        if ids.len() > s.max_pos {
            return Err(invalid(format!(
                "a text has {} tokens; the text tower takes {}",
                ids.len(),
                s.max_pos
            )));
        }
        if let Some(id) = ids.iter().find(|&&i| i as usize >= s.vocab) {
            return Err(invalid(format!(
                "token id {id} is outside the vocabulary (size {})",
                s.vocab
            )));
        }
        if s.kind == Kind::Siglip {
            ids.resize(s.max_pos, s.pad);
        }
        Ok(ids)
    }

    /// `logits_per_image` `[images][texts]` of preprocessed `pixels` against texts given as
    /// token ids (already through [`DualEncoder::text_ids`]).
    pub fn logits(
        &self,
        pixels: Pixels<'_>,
        texts: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>, SkillError> {
        let spec = &self.model.spec().vision;
        let s = spec.image;
        let images = match (pixels, spec.naflex) {
            (Pixels::Square { values, shape }, None) => {
                if shape[1..] != [3, s, s] || values.len() != shape.iter().product::<usize>() {
                    return Err(SkillError::InvalidRequest {
                        capability: Capability::ImageTextSimilarity,
                        detail: format!(
                            "pixel values of shape {shape:?}; the model takes [b, 3, {s}, {s}]"
                        ),
                    });
                }
                let px = Tensor::from_slice(
                    values,
                    (shape[0], shape[1], shape[2], shape[3]),
                    &self.device,
                )
                .map_err(e("pixels"))?;
                self.model.image_embeds(&px)?
            }
            (Pixels::Patches { values, grids }, Some(_)) => {
                self.model.patch_embeds(values, grids)?
            }
            (_, naflex) => {
                return Err(SkillError::InvalidRequest {
                    capability: Capability::ImageTextSimilarity,
                    detail: if naflex.is_some() {
                        "this image tower takes NaFlex patch rows, not square pixel values".into()
                    } else {
                        "this image tower takes square pixel values, not patch rows".into()
                    },
                });
            }
        };
        let rows = texts
            .iter()
            .map(|t| self.model.text_embed(t))
            .collect::<Result<Vec<_>, _>>()?;
        let texts = Tensor::stack(&rows, 0).map_err(e("text embeddings"))?;
        self.model
            .logits(&images, &texts)?
            .to_vec2()
            .map_err(e("reading logits"))
    }

    /// `image_text_similarity`: every image against every text.
    pub fn similarity(&self, req: &ImageTextRequest) -> Result<Similarity, SkillError> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: "the tokenizer (tokenizer.json), needed for the texts",
            })?;
        let texts = req
            .texts
            .iter()
            .map(|t| {
                tok.encode(t.as_str(), true)
                    .map_err(|err| SkillError::Tokenizer {
                        path: self.tokenizer_path.clone(),
                        detail: err.to_string(),
                    })
                    .and_then(|enc| self.text_ids(enc.get_ids().to_vec()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pooled =
            tower::pooled_images(self.model.vision(), &self.pre, &self.device, &req.images)?;
        let images = self.model.project(pooled)?;
        let rows = texts
            .iter()
            .map(|t| self.model.text_embed(t))
            .collect::<Result<Vec<_>, _>>()?;
        let texts = Tensor::stack(&rows, 0).map_err(e("text embeddings"))?;
        let logits: Vec<Vec<f32>> = self
            .model
            .logits(&images, &texts)?
            .to_vec2()
            .map_err(e("reading logits"))?;
        let scores = logits
            .iter()
            .map(|row| match self.model.spec().kind {
                Kind::Siglip => row.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
                _ => crate::heads::softmax(row),
            })
            .collect();
        Ok(Similarity { scores })
    }
}

/// The cached dual encoder of `state` on `target`. For the conformance tests.
pub fn dual_encoder(
    state: &skillgen_runtime::SkillState,
    target: Target,
) -> Result<Arc<DualEncoder>, SkillError> {
    encoder(state.model(), target)
}

/// The image tower of the `model_type` checkpoint in `dir`, loaded on the CPU. For the
/// conformance tests (which compare the types no registry entry marks yet).
pub fn image_tower(dir: &Path, model_type: &str) -> Result<ImageTower, SkillError> {
    ImageTower::load(dir, model_type, &Device::Cpu)
}
