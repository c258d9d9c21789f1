//! Native CTC speech recognition (see [`crate`]): the parametric wav2vec2-like encoder
//! ([`model`]) with greedy CTC decoding as transformers' `Wav2Vec2CTCTokenizer` does it.
//!
//! [`CtcRecognizer::load`] reads `config.json` (field by field), the `*ForCTC` weights,
//! `preprocessor_config.json` (`Wav2Vec2FeatureExtractor`: 16 kHz mono, `do_normalize`: zero
//! mean and unit variance per input, `(x − mean)/√(var + 1e-7)`), and the CTC vocabulary
//! (`vocab.json`, `tokenizer_config.json`: pad = blank token, word delimiter, lower-casing).
//! Decoding: the argmax of every frame, repeats merged, blanks dropped, the word delimiter
//! replaced by a space, the result trimmed.

use std::path::Path;
use std::sync::Arc;

use candle_core::{D, Device, Tensor};
use skillgen_checkpoint::{Fields, config_json, read_json};
use skillgen_runtime::request::{Call, Output, TranscribeRequest, Transcription};
use skillgen_runtime::{Capability, Model, SkillError, Target, Task};

use crate::weights::Weights;

pub(crate) mod model;

use model::CtcModel;
pub use model::MODEL_TYPES;

crate::architecture_struct!(
    Ctc,
    "The `ctc` implementation: the wav2vec2-like CTC speech encoder."
);

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::Transcribe(req) => recognizer(state, target)?
            .transcribe(&req)
            .map(Output::Transcribe),
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

fn recognizer(state: &Model, target: Target) -> Result<Arc<CtcRecognizer>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(&format!("candle/{model_type}/ctc/{target}"), || {
        CtcRecognizer::load(state.dir(), model_type, &crate::device(target)?)
    })
}

/// The CTC vocabulary and its decoding rules.
#[derive(Debug)]
struct CtcVocab {
    tokens: Vec<String>,
    blank: String,
    delimiter: String,
    lower: bool,
}

impl CtcVocab {
    fn read(dir: &Path, vocab_size: usize) -> Result<Self, SkillError> {
        let path = dir.join("vocab.json");
        if !path.is_file() {
            return Err(SkillError::ModelFileMissing {
                path,
                what: "the CTC vocabulary (vocab.json), needed to turn frames into text",
            });
        }
        let map = read_json(&path)?;
        let mut tokens = vec![String::new(); vocab_size];
        for (tok, id) in &map {
            let id = id
                .as_u64()
                .map(|i| i as usize)
                .filter(|i| *i < vocab_size)
                .ok_or_else(|| SkillError::ConfigInvalid {
                    path: path.clone(),
                    detail: format!("`{tok}` has id {id}, not one of the model's {vocab_size}"),
                })?;
            tokens[id] = tok.clone();
        }
        let cfg_path = dir.join("tokenizer_config.json");
        let (mut blank, mut delimiter, mut lower) = ("<pad>".to_owned(), "|".to_owned(), false);
        if cfg_path.is_file() {
            let cfg = read_json(&cfg_path)?;
            let f = Fields {
                path: &cfg_path,
                map: &cfg,
            };
            if let Some(p) = f.str_opt("pad_token")? {
                blank = p.to_owned();
            }
            if let Some(d) = f.str_opt("word_delimiter_token")? {
                delimiter = d.to_owned();
            }
            lower = f.bool_or("do_lower_case", false)?;
            if f.bool_or("clean_up_tokenization_spaces", false)? {
                return Err(f.err(
                    "clean_up_tokenization_spaces",
                    "`true` is not implemented for CTC decoding",
                ));
            }
        }
        Ok(Self {
            tokens,
            blank,
            delimiter,
            lower,
        })
    }

    /// Greedy CTC decoding of per-frame ids.
    fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let mut last: Option<u32> = None;
        for &id in ids {
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            let tok = self.tokens.get(id as usize).map_or("", String::as_str);
            if tok == self.blank {
                continue;
            }
            if tok == self.delimiter {
                out.push(' ');
            } else {
                out.push_str(tok);
            }
        }
        let text = out.trim().to_owned();
        if self.lower {
            text.to_lowercase()
        } else {
            text
        }
    }
}

/// A loaded CTC recognizer.
pub struct CtcRecognizer {
    model: CtcModel,
    normalize: bool,
    vocab: CtcVocab,
    device: Device,
}

impl std::fmt::Debug for CtcRecognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtcRecognizer")
            .field("spec", self.model.spec())
            .field("normalize", &self.normalize)
            .finish_non_exhaustive()
    }
}

impl CtcRecognizer {
    /// Load the `*ForCTC` checkpoint of `model_type` in `dir` on `device`.
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = model::translate(model_type, &f)?;
        let vocab = CtcVocab::read(dir, spec.vocab)?;
        let mut normalize = true;
        let pre = dir.join("preprocessor_config.json");
        if pre.is_file() {
            let m = read_json(&pre)?;
            let p = Fields {
                path: &pre,
                map: &m,
            };
            normalize = p.bool_or("do_normalize", true)?;
            if let Some(rate) = p.usize_opt("sampling_rate")?
                && rate != 16_000
            {
                return Err(p.err("sampling_rate", format!("{rate}: only 16000 is supported")));
            }
            if let Some(n) = p.usize_opt("feature_size")?
                && n != 1
            {
                return Err(p.err("feature_size", format!("{n}: only raw mono audio (1)")));
            }
        }
        let mut w = Weights::read(dir, device)?;
        let model = CtcModel::load(spec, &mut w)?;
        Ok(Self {
            model,
            normalize,
            vocab,
            device: device.clone(),
        })
    }

    /// What the feature extractor gives for `pcm`: zero mean, unit variance when
    /// `do_normalize`.
    pub fn input_values(&self, pcm: &[f32]) -> Vec<f32> {
        if !self.normalize {
            return pcm.to_vec();
        }
        let n = pcm.len() as f32;
        let mean = pcm.iter().sum::<f32>() / n;
        let var = pcm.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n;
        let scale = (var + 1e-7).sqrt();
        pcm.iter().map(|x| (x - mean) / scale).collect()
    }

    /// CTC logits `[frames][vocab]` of `values` (already through the feature extractor).
    pub fn logits(&self, values: &[f32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.check_len(values.len())?;
        let t = Tensor::new(values, &self.device).map_err(crate::e("input values"))?;
        self.model
            .logits(&t)?
            .to_vec2()
            .map_err(crate::e("reading logits"))
    }

    fn check_len(&self, samples: usize) -> Result<(), SkillError> {
        if self.model.frames(samples) == 0 {
            return Err(SkillError::InvalidRequest {
                capability: Capability::Transcribe,
                detail: format!(
                    "{samples} samples are too short for the feature encoder (no frame)"
                ),
            });
        }
        Ok(())
    }

    /// `transcribe`: feature extractor, encoder, greedy CTC decoding.
    pub fn transcribe(&self, req: &TranscribeRequest) -> Result<Transcription, SkillError> {
        if req.pcm_16khz.iter().any(|x| !x.is_finite()) {
            return Err(SkillError::InvalidRequest {
                capability: Capability::Transcribe,
                detail: "the audio has non-finite samples".into(),
            });
        }
        self.check_len(req.pcm_16khz.len())?;
        let values = self.input_values(&req.pcm_16khz);
        let t = Tensor::new(values.as_slice(), &self.device).map_err(crate::e("input values"))?;
        let ids = self
            .model
            .logits(&t)?
            .argmax(D::Minus1)
            .and_then(|i| i.to_vec1::<u32>())
            .map_err(crate::e("argmax"))?;
        Ok(Transcription {
            text: self.vocab.decode(&ids),
        })
    }
}

/// The cached recognizer of `state` on `target`. For the conformance tests.
pub fn ctc_recognizer(
    state: &skillgen_runtime::SkillState,
    target: Target,
) -> Result<Arc<CtcRecognizer>, SkillError> {
    recognizer(state.model(), target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_decoding_merges_repeats_drops_blanks_and_splits_words() {
        let vocab = CtcVocab {
            tokens: ["<pad>", "|", "a", "b"].map(str::to_owned).to_vec(),
            blank: "<pad>".into(),
            delimiter: "|".into(),
            lower: false,
        };
        // a a <pad> a | b b | -> "aa b"
        assert_eq!(vocab.decode(&[2, 2, 0, 2, 1, 3, 3, 1]), "aa b");
        assert_eq!(vocab.decode(&[0, 0]), "");
    }
}
