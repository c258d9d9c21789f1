//! A dual encoder's image tower on its own (`clip_vision_model`, `siglip_vision_model`, ...):
//! `embed_image` gives its pooled output, as transformers' `*VisionModel(...).pooler_output`
//! (CLIP: the post-layernorm class token; SigLIP: the attention-pooling head), without the
//! dual model's projection.

use std::path::Path;

use candle_core::{Device, Tensor};
use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;
use skillgen_runtime::request::{EmbedImageRequest, ImageEmbeddings, ImageInput};

use super::model::{Kind, VisionSpec, VisionTower, translate_vision};
use crate::e;
use crate::vit::preprocess::Preprocess;
use crate::weights::Weights;

/// The image-tower model types: `(model_type, kind, NaFlex patch rows)`.
pub(crate) const TOWERS: &[(&str, Kind, bool)] = &[
    ("chinese_clip_vision_model", Kind::Clip, false),
    ("clip_vision_model", Kind::Clip, false),
    ("siglip2_vision_model", Kind::Siglip, true),
    ("siglip_vision_model", Kind::Siglip, false),
];

/// The preprocessor an image tower needs (`preprocessor_config.json`; NaFlex for SigLIP 2).
pub(crate) fn preprocess(dir: &Path, v: &VisionSpec) -> Result<Preprocess, SkillError> {
    let pre = Preprocess::read(dir, v.image)?;
    if v.naflex.is_some() && pre.naflex.map(|(p, _)| p) != Some(v.patch) {
        return Err(SkillError::ConfigField {
            path: dir.join("preprocessor_config.json"),
            field: "patch_size".into(),
            detail: format!(
                "a NaFlex processor (max_num_patches, patch_size {}) is needed for this \
                 image tower, found {:?}",
                v.patch, pre.naflex
            ),
        });
    }
    Ok(pre)
}

/// `images` through `pre` into `tower`'s pooled outputs `[b, hidden]`.
pub(crate) fn pooled_images(
    tower: &VisionTower,
    pre: &Preprocess,
    device: &Device,
    images: &[ImageInput],
) -> Result<Tensor, SkillError> {
    let v = tower.spec();
    let mut values = Vec::new();
    if v.naflex.is_some() {
        let mut grids = Vec::with_capacity(images.len());
        for image in images {
            let (rows, grid) = pre.patch_rows(image)?;
            values.extend(rows);
            grids.push(grid);
        }
        tower.pooled_patches(&values, &grids)
    } else {
        let side = v.image;
        for image in images {
            values.extend(pre.pixels(image, side)?);
        }
        let px =
            Tensor::from_vec(values, (images.len(), 3, side, side), device).map_err(e("pixels"))?;
        tower.pooled(&px)
    }
}

/// A loaded image tower with its preprocessing.
#[derive(Debug)]
pub struct ImageTower {
    tower: VisionTower,
    pre: Preprocess,
    device: Device,
}

impl ImageTower {
    /// Load the `model_type` checkpoint in `dir` on `device`.
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let Some(&(_, kind, naflex)) = TOWERS.iter().find(|t| t.0 == model_type) else {
            return Err(f.err(
                "model_type",
                format!("`{model_type}` is not an image tower the candle backend implements"),
            ));
        };
        if kind == Kind::Siglip && !f.bool_or("vision_use_head", true)? {
            return Err(f.err(
                "vision_use_head",
                "false: the model has no pooled output (only per-patch states)",
            ));
        }
        let spec = translate_vision(kind, naflex, &f)?;
        let pre = preprocess(dir, &spec)?;
        let mut w = Weights::read(dir, device)?;
        w.convert(candle_core::DType::F32)?;
        // transformers 5 saves a vision model's own tensors unprefixed; older checkpoints
        // (and the towers inside dual models) under `vision_model.`.
        let p = if w.has("vision_model.embeddings.patch_embedding.weight") {
            "vision_model."
        } else {
            ""
        };
        let tower = VisionTower::load(spec, &mut w, p)?;
        w.finish()?;
        Ok(Self {
            tower,
            pre,
            device: device.clone(),
        })
    }

    /// `embed_image`: the pooled output of each image.
    pub fn embed(&self, req: &EmbedImageRequest) -> Result<ImageEmbeddings, SkillError> {
        crate::heads::embed_images(req, self.tower.pooling(), |images| {
            pooled_images(&self.tower, &self.pre, &self.device, images)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(model_type: &str, config: &str) -> SkillError {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        ImageTower::load(dir.path(), model_type, &Device::Cpu).unwrap_err()
    }

    #[test]
    fn a_siglip_tower_without_its_head_is_refused_by_field() {
        let e = load("siglip_vision_model", r#"{"vision_use_head": false}"#);
        assert!(
            matches!(&e, SkillError::ConfigField { field, .. } if field == "vision_use_head"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_tower_type_is_refused() {
        let e = load("aimv2_vision_model", "{}");
        assert!(e.to_string().contains("aimv2_vision_model"), "{e}");
    }

    #[test]
    fn a_grey_tower_is_refused_by_field() {
        let cfg = r#"{"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
            "intermediate_size": 16, "layer_norm_eps": 1e-5, "patch_size": 4,
            "image_size": 8, "num_channels": 1}"#;
        let e = load("clip_vision_model", cfg);
        assert!(
            matches!(&e, SkillError::ConfigField { field, .. } if field == "num_channels"),
            "{e}"
        );
    }
}
