//! A dual encoder's text tower on its own (`clip_text_model`): `embed` gives its pooled output,
//! as transformers' `CLIPTextModel(...).pooler_output` (the end-of-text token after the final
//! LayerNorm), without the dual model's projection.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;
use skillgen_runtime::request::Pooling;

use super::model::{ClipText, Kind, tower};
use crate::encoder::bertlike::EncoderHead;
use crate::encoder::setup::{HeadModel, HeadSetup};
use crate::weights::Weights;

/// The text-tower model types.
pub(crate) const TEXT_TOWERS: &[&str] = &["clip_text_model"];

/// A loaded text tower with its tokenizer.
#[derive(Debug)]
pub struct TextTowerModel {
    tower: ClipText,
    hidden: usize,
    vocab: usize,
    max_pos: usize,
    setup: HeadSetup,
}

impl TextTowerModel {
    /// Load the `model_type` checkpoint in `dir` on `device`.
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        if !TEXT_TOWERS.contains(&model_type) {
            return Err(f.err(
                "model_type",
                format!("`{model_type}` is not a text tower the candle backend implements"),
            ));
        }
        let t = tower(&f)?;
        let vocab = f.positive("vocab_size")?;
        let max_pos = f.positive("max_position_embeddings")?;
        let eos = f
            .usize_opt("eos_token_id")?
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| f.err("eos_token_id", "missing (the tower pools at it)"))?;
        let mut w = Weights::read(dir, device)?;
        w.convert(DType::F32)?;
        // transformers 5 saves a text model's own tensors unprefixed; older checkpoints under
        // `text_model.`.
        let p = if w.has("text_model.embeddings.token_embedding.weight") {
            "text_model."
        } else {
            ""
        };
        let tower = ClipText::load(&mut w, p, (Kind::Clip, &t, vocab, max_pos, eos))?;
        w.finish()?;
        let mut setup = HeadSetup::finish(dir, &f, EncoderHead::Base, Vec::new(), max_pos)?;
        setup.pooling = Pooling::Pooler;
        Ok(Self {
            tower,
            hidden: t.hidden,
            vocab,
            max_pos,
            setup,
        })
    }

    /// The pooled output `[1, hidden]` of one unpadded input.
    fn pooled(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.setup
            .check_ids(ids, self.vocab, self.max_pos, &"max_position_embeddings")?;
        self.tower.pooled(ids)
    }
}

impl HeadModel for TextTowerModel {
    fn setup(&self) -> &HeadSetup {
        &self.setup
    }

    fn width(&self) -> usize {
        self.hidden
    }

    fn embed_rows(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.pooled(ids)
    }

    fn outputs(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.pooled(ids)?
            .to_vec2()
            .map_err(crate::e("pooled output"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tower_without_eos_is_refused_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = r#"{"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
            "intermediate_size": 16, "layer_norm_eps": 1e-5, "vocab_size": 10,
            "max_position_embeddings": 4}"#;
        std::fs::write(dir.path().join("config.json"), cfg).unwrap();
        let e = TextTowerModel::load(dir.path(), "clip_text_model", &Device::Cpu).unwrap_err();
        assert!(
            matches!(&e, SkillError::ConfigField { field, .. } if field == "eos_token_id"),
            "{e}"
        );
    }
}
