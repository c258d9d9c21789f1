//! Native sequence-to-sequence generation (see [`crate`]): the parametric BART-like
//! encoder-decoder ([`model`]: bart, mbart, marian, pegasus, m2m_100, blenderbot,
//! blenderbot-small, plbart, mvp) with greedy decoding, as transformers' `generate()` does it:
//! the decoder starts with `decoder_start_token_id` (else `bos_token_id`), the first token is
//! `forced_bos_token_id` and the last allowed one `forced_eos_token_id` when the generation
//! config names them, and an `eos_token_id` ends the output. Beam search and the n-gram rules
//! some generation configs ask for are not applied: a request is greedy (temperature 0), and
//! sampling is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use skillgen_checkpoint::{Fields, config_json, read_json};
use skillgen_runtime::request::{Call, FinishReason, GenerateRequest, Generation, Output, Prompt};
use skillgen_runtime::{Capability, Model, SkillError, Target, Task};

use crate::heads::TaskHeads;
use crate::weights::Weights;

pub(crate) mod model;

pub use model::MODEL_TYPES;
use model::Seq2seqModel;

crate::architecture_struct!(
    Seq2seq,
    "The `seq2seq` implementation: the BART-like encoder-decoder."
);

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::Generate(req) => generator(state, target)?
            .generate(&req)
            .map(Output::Generate),
        Call::Classify(req) => classifier(state, target, false)?
            .classify(&req)
            .map(Output::Classify),
        Call::AnswerQuestion(req) => classifier(state, target, true)?
            .answer_question(&req)
            .map(Output::AnswerQuestion),
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

fn generator(state: &Model, target: Target) -> Result<Arc<Seq2seqGenerator>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(&format!("candle/{model_type}/seq2seq/{target}"), || {
        Seq2seqGenerator::load(state.dir(), model_type, &crate::device(target)?)
    })
}

/// A loaded encoder-decoder with its generation settings.
pub struct Seq2seqGenerator {
    model: Seq2seqModel,
    start: u32,
    eos: Vec<u32>,
    forced_bos: Option<u32>,
    forced_eos: Option<u32>,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
}

impl std::fmt::Debug for Seq2seqGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seq2seqGenerator")
            .field("spec", self.model.spec())
            .field("start", &self.start)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

/// Token ids of `field`: an id, a list of ids, or null/absent.
fn ids_of(f: &Fields<'_>, field: &str) -> Result<Vec<u32>, SkillError> {
    let one = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| f.err(field, format!("expected a token id, found {v}")))
    };
    match f.get(field) {
        None => Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

impl Seq2seqGenerator {
    /// Load the `*ForConditionalGeneration` checkpoint of `model_type` in `dir` on `device`.
    pub fn load(dir: &Path, model_type: &str, device: &Device) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = model::translate(model_type, &f)?;
        let mut w = Weights::read(dir, device)?;
        let model = Seq2seqModel::load(spec, &mut w)?;
        w.finish()?;
        // generation_config.json first (what generate() reads), then config.json.
        let gen_path = dir.join("generation_config.json");
        let gen_map = if gen_path.is_file() {
            Some(read_json(&gen_path)?)
        } else {
            None
        };
        let gen_fields = gen_map.as_ref().map(|m| Fields {
            path: &gen_path,
            map: m,
        });
        let pick = |field: &str| -> Result<Vec<u32>, SkillError> {
            if let Some(g) = &gen_fields
                && g.get(field).is_some()
            {
                return ids_of(g, field);
            }
            ids_of(&f, field)
        };
        let start = match pick("decoder_start_token_id")?.first() {
            Some(&s) => s,
            None => *pick("bos_token_id")?.first().ok_or_else(|| {
                f.err(
                    "decoder_start_token_id",
                    "missing, and no bos_token_id to start the decoder with",
                )
            })?,
        };
        let vocab = model.spec().vocab;
        let eos = pick("eos_token_id")?;
        let forced_bos = pick("forced_bos_token_id")?.first().copied();
        let forced_eos = pick("forced_eos_token_id")?.first().copied();
        for (what, id) in [
            ("decoder_start_token_id", Some(start)),
            ("forced_bos_token_id", forced_bos),
            ("forced_eos_token_id", forced_eos),
        ] {
            if let Some(id) = id
                && id as usize >= vocab
            {
                return Err(f.err(
                    what,
                    format!("{id} is outside the vocabulary (size {vocab})"),
                ));
            }
        }
        let (tokenizer, tokenizer_path) = skillgen_checkpoint::load_tokenizer(dir, None)?;
        Ok(Self {
            model,
            start,
            eos,
            forced_bos,
            forced_eos,
            tokenizer,
            tokenizer_path,
        })
    }

    fn check_input(&self, ids: &[u32]) -> Result<(), SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::Generate,
            detail,
        };
        if ids.is_empty() {
            return Err(invalid("the input has no tokens".into()));
        }
        let vocab = self.model.spec().vocab;
        if let Some((i, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= vocab)
        {
            return Err(invalid(format!(
                "input token {i} is id {id}, outside the vocabulary (size {vocab})"
            )));
        }
        if ids.len() > self.model.max_len() {
            return Err(invalid(format!(
                "the input has {} tokens; the model takes at most {}",
                ids.len(),
                self.model.max_len()
            )));
        }
        Ok(())
    }

    /// The decoder's logits `[n][vocab]` at every position of `dec_ids` (teacher forcing, one
    /// pass) over the encoding of `ids`.
    pub fn logits(&self, ids: &[u32], dec_ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.check_input(ids)?;
        let enc = self.model.encode(ids)?;
        let mut s = self.model.session(&enc)?;
        self.model
            .step(&mut s, dec_ids)?
            .to_vec2()
            .map_err(|e| SkillError::Backend {
                backend: skillgen_runtime::BackendKind::Candle,
                detail: format!("reading logits: {e}"),
            })
    }

    /// Greedy decoding with the KV cache: the start token, then up to `max_new` tokens.
    /// `stop_at_eos` / `force_eos`: honour `eos_token_id` / `forced_eos_token_id`.
    /// Returns the generated ids (without the start token) and whether an eos ended them.
    pub fn greedy(
        &self,
        ids: &[u32],
        max_new: usize,
        stop_at_eos: bool,
        force_eos: bool,
    ) -> Result<(Vec<u32>, bool), SkillError> {
        self.check_input(ids)?;
        if max_new + 1 > self.model.dec_max_len() {
            return Err(SkillError::InvalidRequest {
                capability: Capability::Generate,
                detail: format!(
                    "max_tokens {max_new}: the decoder's positions cover {} tokens (start token included)",
                    self.model.dec_max_len()
                ),
            });
        }
        let enc = self.model.encode(ids)?;
        let mut s = self.model.session(&enc)?;
        let mut out = Vec::with_capacity(max_new);
        let mut next = self.start;
        for k in 0..max_new {
            let logits = self.model.step(&mut s, &[next])?;
            next = match (k, self.forced_bos, self.forced_eos) {
                (0, Some(b), _) => b,
                (k, _, Some(e)) if force_eos && k + 1 == max_new => e,
                _ => Seq2seqModel::argmax_last(&logits)?,
            };
            out.push(next);
            if stop_at_eos && self.eos.contains(&next) {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// `generate` (greedy only).
    pub fn generate(&self, req: &GenerateRequest) -> Result<Generation, SkillError> {
        if req.temperature != 0.0 {
            return Err(SkillError::InvalidRequest {
                capability: Capability::Generate,
                detail: format!(
                    "temperature {}: only greedy decoding (temperature 0) is implemented for encoder-decoders on candle",
                    req.temperature
                ),
            });
        }
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: "the tokenizer, needed to turn generated tokens into text",
            })?;
        let tok_err = |err: tokenizers::Error| SkillError::Tokenizer {
            path: self.tokenizer_path.clone(),
            detail: err.to_string(),
        };
        let ids = match &req.prompt {
            Prompt::TokenIds(ids) => ids.clone(),
            Prompt::Text(t) => tok
                .encode(t.as_str(), true)
                .map_err(tok_err)?
                .get_ids()
                .to_vec(),
            Prompt::Messages(_) => {
                return Err(SkillError::InvalidRequest {
                    capability: skillgen_runtime::Capability::Generate,
                    detail: "an encoder-decoder has no chat template: give a text prompt".into(),
                });
            }
        };
        let (mut token_ids, eos) = self.greedy(&ids, req.max_tokens, true, true)?;
        let mut finish = FinishReason::Length;
        if eos {
            token_ids.pop();
            finish = FinishReason::Eos;
        }
        let mut text = tok.decode(&token_ids, true).map_err(tok_err)?;
        if let Some(at) = req.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(at);
            finish = FinishReason::Stop;
        }
        Ok(Generation {
            text,
            token_ids,
            finish_reason: finish,
        })
    }
}

/// The cached generator of `state` on `target`. For the conformance tests.
pub fn seq2seq_generator(
    state: &skillgen_runtime::SkillState,
    target: Target,
) -> Result<Arc<Seq2seqGenerator>, SkillError> {
    generator(state.model(), target)
}

fn classifier(state: &Model, target: Target, qa: bool) -> Result<Arc<Seq2seqHeads>, SkillError> {
    let model_type = state.info().model_type;
    state.cached(
        &format!("candle/{model_type}/seq2seq-heads/{qa}/{target}"),
        || Seq2seqHeads::load(state.dir(), model_type, &crate::device(target)?, qa),
    )
}

#[derive(Debug)]
enum Head {
    /// `out_proj(tanh(dense(h)))` at the last eos token.
    Sequence(candle_nn::Linear, candle_nn::Linear),
    /// `qa_outputs` at every position.
    Qa(candle_nn::Linear),
}

/// An encoder-decoder with a task head: `*ForSequenceClassification` (the decoder's state at
/// the input's last `eos_token_id`, as transformers' BART family) or `*ForQuestionAnswering`.
/// The decoder reads the input shifted right behind `decoder_start_token_id`.
pub struct Seq2seqHeads {
    model: Seq2seqModel,
    head: Head,
    start: u32,
    eos: u32,
    labels: Vec<String>,
    sigmoid: bool,
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
}

impl std::fmt::Debug for Seq2seqHeads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seq2seqHeads")
            .field("spec", self.model.spec())
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Seq2seqHeads {
    /// Load the `model_type` classifier (`qa`: question answering) in `dir` on `device`.
    pub fn load(
        dir: &Path,
        model_type: &str,
        device: &Device,
        qa: bool,
    ) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = model::translate(model_type, &f)?;
        let d = spec.d;
        let mut w = Weights::read(dir, device)?;
        let model = Seq2seqModel::load(spec, &mut w)?;
        let lin =
            |w: &mut Weights, name: &str, out: usize| -> Result<candle_nn::Linear, SkillError> {
                Ok(candle_nn::Linear::new(
                    w.take(&format!("{name}.weight"), &[out, d])?,
                    Some(w.take(&format!("{name}.bias"), &[out])?),
                ))
            };
        let labels = if qa { Vec::new() } else { f.labels()? };
        let head = if qa {
            Head::Qa(lin(&mut w, "qa_outputs", 2)?)
        } else {
            Head::Sequence(
                lin(&mut w, "classification_head.dense", d)?,
                lin(&mut w, "classification_head.out_proj", labels.len())?,
            )
        };
        w.finish()?;
        let id = |field: &str| -> Result<Option<u32>, SkillError> {
            Ok(ids_of(&f, field)?.first().copied())
        };
        let eos = id("eos_token_id")?.ok_or_else(|| {
            f.err(
                "eos_token_id",
                "missing (the classifier reads the last eos token)",
            )
        })?;
        let start = match id("decoder_start_token_id")? {
            Some(s) => s,
            None => eos,
        };
        let sigmoid = match f.str_opt("problem_type")? {
            Some("multi_label_classification") => true,
            Some("regression") if !labels.is_empty() => {
                return Err(f.err(
                    "problem_type",
                    "`regression` heads are not classifiers (scores would be raw values)",
                ));
            }
            _ => labels.len() == 1,
        };
        let (tokenizer, tokenizer_path) = skillgen_checkpoint::load_tokenizer(dir, None)?;
        Ok(Self {
            model,
            head,
            start,
            eos,
            labels,
            sigmoid,
            tokenizer,
            tokenizer_path,
        })
    }

    /// The decoder's last hidden state `[n, d]` over `ids` (encoder input) and the same ids
    /// shifted right behind the decoder start token.
    fn hidden(&self, ids: &[u32]) -> Result<candle_core::Tensor, SkillError> {
        let vocab = self.model.spec().vocab;
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::Classify,
            detail,
        };
        if ids.is_empty() {
            return Err(invalid("an input has no tokens".into()));
        }
        if let Some(id) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(invalid(format!(
                "token id {id} is outside the vocabulary (size {vocab})"
            )));
        }
        if ids.len() > self.model.max_len() {
            return Err(invalid(format!(
                "an input has {} tokens; the model takes at most {}",
                ids.len(),
                self.model.max_len()
            )));
        }
        let enc = self.model.encode(ids)?;
        let mut s = self.model.session(&enc)?;
        let mut dec = Vec::with_capacity(ids.len());
        dec.push(self.start);
        dec.extend_from_slice(&ids[..ids.len() - 1]);
        self.model.decode(&mut s, &dec)
    }

    /// The head's output for one input: `[1][labels]` (classification) or `[n][2]` (QA).
    pub fn head_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        let h = self.hidden(ids)?;
        let out = match &self.head {
            Head::Sequence(dense, out) => {
                let at = ids.iter().rposition(|&t| t == self.eos).ok_or_else(|| {
                    SkillError::InvalidRequest {
                        capability: Capability::Classify,
                        detail: format!(
                            "the input has no eos token (id {}): the classifier reads the last one",
                            self.eos
                        ),
                    }
                })?;
                (|| {
                    use candle_core::Module;
                    out.forward(&dense.forward(&h.narrow(0, at, 1)?)?.tanh()?)
                })()
            }
            Head::Qa(l) => {
                use candle_core::Module;
                l.forward(&h)
            }
        };
        out.and_then(|t| t.to_vec2()).map_err(crate::e("head"))
    }
}

impl TaskHeads for Seq2seqHeads {
    fn tokenizer_for(&self, why: &'static str) -> Result<&tokenizers::Tokenizer, SkillError> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: why,
            })
    }

    fn tokenizer_file(&self) -> &Path {
        &self.tokenizer_path
    }

    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn sigmoid(&self) -> bool {
        self.sigmoid
    }

    fn sequence_logits(&self, ids: &[u32]) -> Result<Vec<f32>, SkillError> {
        Ok(self.head_logits(ids)?.pop().unwrap_or_default())
    }

    fn token_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.head_logits(ids)
    }
}

/// The head outputs of each input with the classifier (`qa`: QA head) of `state` on
/// `target`. For the conformance tests.
pub fn seq2seq_head_logits(
    state: &skillgen_runtime::SkillState,
    target: Target,
    qa: bool,
    inputs: &[Vec<u32>],
) -> Result<Vec<Vec<Vec<f32>>>, SkillError> {
    let m = classifier(state.model(), target, qa)?;
    inputs.iter().map(|ids| m.head_logits(ids)).collect()
}
