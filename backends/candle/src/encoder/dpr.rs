//! DPR's question and context encoders (`dpr`): a BERT body without a pooler
//! (`question_encoder.bert_model.` or `ctx_encoder.bert_model.`), pooled at `[CLS]` and, with
//! `projection_dim > 0`, projected by `encode_proj` — transformers' `pooler_output`, which is
//! what `embed` returns. The reader (`span_predictor.`) is a typed refusal.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;
use skillgen_runtime::request::Pooling;

use crate::encoder::bertlike::{BertBody, EncoderHead, Spec, translate};
use crate::encoder::setup::{HeadModel, HeadSetup};
use crate::weights::{Weights, linear};

/// The encoders' tensor prefixes, question encoder first.
const PREFIXES: [&str; 2] = ["question_encoder.", "ctx_encoder."];

/// A loaded DPR question or context encoder.
#[derive(Debug)]
pub struct Dpr {
    spec: Spec,
    body: BertBody,
    proj: Option<Linear>,
    setup: HeadSetup,
}

impl Dpr {
    /// Load the `dpr` checkpoint in `dir` on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = translate("bert", &f)?;
        let mut w = Weights::read(dir, device)?;
        w.convert(DType::F32)?;
        let word = "bert_model.embeddings.word_embeddings.weight";
        let Some(enc) = PREFIXES.iter().find(|p| w.has(&format!("{p}{word}"))) else {
            let detail = if w.has(&format!("span_predictor.encoder.{word}")) {
                "a DPR reader (span_predictor) is not implemented; the question and context \
                 encoders are"
            } else {
                "neither question_encoder.bert_model.* nor ctx_encoder.bert_model.* tensors"
            };
            return Err(SkillError::TensorInvalid {
                path: dir.to_path_buf(),
                tensor: format!("question_encoder.{word}"),
                detail: detail.into(),
            });
        };
        let body = BertBody::load(&spec, &mut w, &format!("{enc}bert_model."))?;
        let proj = match f.usize_opt("projection_dim")?.unwrap_or(0) {
            0 => None,
            p => Some(linear(
                &mut w,
                &format!("{enc}encode_proj"),
                p,
                spec.hidden,
                true,
            )?),
        };
        w.finish()?;
        let mut setup = HeadSetup::finish(dir, &f, EncoderHead::Base, Vec::new(), spec.max_pos)?;
        setup.pooling = Pooling::Pooler;
        Ok(Self {
            spec,
            body,
            proj,
            setup,
        })
    }

    /// The pooled output `[1, dim]` of one unpadded input.
    fn pooled(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.setup.check_ids(
            ids,
            self.spec.vocab,
            self.spec.max_pos,
            &"max_position_embeddings",
        )?;
        let cls = self
            .body
            .forward(ids)?
            .narrow(0, 0, 1)
            .map_err(crate::e("DPR pooling"))?;
        match &self.proj {
            Some(p) => p.forward(&cls).map_err(crate::e("DPR projection")),
            None => Ok(cls),
        }
    }
}

impl HeadModel for Dpr {
    fn setup(&self) -> &HeadSetup {
        &self.setup
    }

    fn width(&self) -> usize {
        self.proj
            .as_ref()
            .map_or(self.spec.hidden, |p| p.weight().dims()[0])
    }

    fn embed_rows(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.pooled(ids)
    }

    fn outputs(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.pooled(ids)?
            .to_vec2()
            .map_err(crate::e("DPR pooled output"))
    }
}
