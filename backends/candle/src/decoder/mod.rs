//! Native decoders (see [`crate`]): causal text generation (task `causal-lm`, the
//! `generate` capability) with one config-driven decoder ([`model`]) for every model type
//! [`translate`] knows. The same blocks with bidirectional attention ([`spec::Spec::bidirectional`]:
//! EuroBERT, the OpenAI privacy filter) are encoders: their [`HeadKind::Base`] and
//! [`HeadKind::Mlm`] bodies answer `embed` and `fill_mask`, and they never generate.
//!
//! Loading ([`Decoder::load`]) reads a Hugging Face model directory:
//! - `config.json`, translated field by field into a [`spec::Spec`] ([`translate`]):
//!   `rope_theta` from `rope_parameters` (transformers v5) or the top level, never a default;
//!   unsupported values (rope types, layer types, options without a switch) are
//!   [`SkillError::ConfigField`] errors;
//! - `model.safetensors` or the shards of `model.safetensors.index.json`, every tensor taken
//!   by name and shape, and every tensor in the files used ([`weights`]);
//! - `generation_config.json` (else `config.json`) `eos_token_id`, an id or a list;
//! - `tokenizer.json`, optional: needed only for text prompts, text output and stop strings.
//!
//! The weights are loaded once per skill state and target and cached
//! ([`Model::cached`]); every request gets its own KV cache, so concurrent requests never
//! share one. Generation is a [`TokenStream`] (an iterator of [`GeneratedToken`]s);
//! `generate` collects it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use skillgen_runtime::{Capability, Task};

use skillgen_runtime::BackendKind;
use skillgen_runtime::Model;
use skillgen_runtime::request::{Call, FinishReason, GenerateRequest, Output, Pooling, Prompt};
use skillgen_runtime::stream::{SourceStep, TokenSource, TokenStream};
use skillgen_runtime::{SkillError, Target};

mod config;
pub(crate) mod model;
pub(crate) mod spec;
pub mod translate;

use crate::heads::TaskHeads;
use crate::weights::Weights;
use config::{DecoderFields, Fields};
use spec::SeqPool;

/// The `decoder` implementation: every causal LM the config-driven decoder loads.
#[derive(Debug, Clone, Copy)]
pub struct Decoders;

impl crate::Architecture for Decoders {
    fn run(
        &self,
        state: &Model,
        target: Target,
        task: Task,
        call: Call,
    ) -> Result<Output, SkillError> {
        run(state, target, task, call)
    }

    fn stream(
        &self,
        state: &Model,
        target: Target,
        _task: Task,
        request: GenerateRequest,
    ) -> Result<TokenStream, SkillError> {
        stream(state, target, request)
    }
}

/// Run `call`.
fn run(state: &Model, target: Target, task: Task, call: Call) -> Result<Output, SkillError> {
    match call {
        Call::Generate(req) => stream(state, target, req)?
            .collect_generation()
            .map(Output::Generate),
        Call::Classify(req) => classifier(state, target)?
            .classify(&req)
            .map(Output::Classify),
        Call::ClassifyTokens(req) => with_head(state, target, HeadKind::Tokens)?
            .classify_tokens(&req)
            .map(Output::ClassifyTokens),
        Call::AnswerQuestion(req) => with_head(state, target, HeadKind::Qa)?
            .answer_question(&req)
            .map(Output::AnswerQuestion),
        Call::Embed(req) => {
            let d = with_head(state, target, HeadKind::Base)?;
            let how = (
                d.pooling,
                req.normalize.unwrap_or(d.normalize),
                d.model.hidden(),
            );
            crate::heads::embed(&*d, &req.input, how, |ids| d.hidden_states(ids)).map(Output::Embed)
        }
        Call::FillMask(req) => crate::heads::fill_mask(
            &*with_head(state, target, HeadKind::Mlm)?,
            &req.input,
            req.top_k,
        )
        .map(Output::FillMask),
        _ => Err(crate::not_implemented(state, target, task)),
    }
}

/// Which head sits on the decoder's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `*ForCausalLM`.
    Lm,
    /// `*ForSequenceClassification`: the last non-padding token.
    Sequence,
    /// `*ForTokenClassification`: every token.
    Tokens,
    /// `*ForQuestionAnswering`: start and end logits of every token.
    Qa,
    /// `*Model`: the last hidden state of every token (encoder bodies: `embed`).
    Base,
    /// `*ForMaskedLM`: the LM head at every token (encoder bodies: `fill_mask`).
    Mlm,
}

/// The cached decoder of `state` on `target` (loaded on first use).
pub(crate) fn decoder(state: &Model, target: Target) -> Result<Arc<Decoder>, SkillError> {
    with_head(state, target, HeadKind::Lm)
}

/// The cached sequence classifier (`*ForSequenceClassification`) of `state` on `target`.
pub(crate) fn classifier(state: &Model, target: Target) -> Result<Arc<Decoder>, SkillError> {
    with_head(state, target, HeadKind::Sequence)
}

/// The cached decoder of `state` on `target` with `head`.
pub(crate) fn with_head(
    state: &Model,
    target: Target,
    head: HeadKind,
) -> Result<Arc<Decoder>, SkillError> {
    let model_type = state.info().model_type;
    let key = match head {
        HeadKind::Lm => format!("candle/{model_type}/{target}"),
        HeadKind::Sequence => format!("candle/{model_type}/{target}/classify"),
        HeadKind::Tokens => format!("candle/{model_type}/{target}/tokens"),
        HeadKind::Qa => format!("candle/{model_type}/{target}/qa"),
        HeadKind::Base => format!("candle/{model_type}/{target}/base"),
        HeadKind::Mlm => format!("candle/{model_type}/{target}/mlm"),
    };
    let quantization = state.quantization();
    let key = match quantization {
        Some(q) => format!("{key}/{q}"),
        None => key,
    };
    state.cached(&key, || {
        let device = crate::device(target)?;
        match skillgen_runtime::gguf_of(state.dir())? {
            Some(file) if quantization.is_some() => Err(SkillError::Backend {
                backend: BackendKind::Candle,
                detail: format!(
                    "{}: a GGUF file is quantized already; load-time quantization is for float checkpoints",
                    file.display()
                ),
            }),
            Some(file) if head == HeadKind::Lm => {
                let (d, _) = Decoder::load_gguf(&file, &device)?;
                if d.model_type != model_type {
                    return Err(SkillError::UnknownModelType {
                        model_type: d.model_type.clone(),
                        path: file,
                        suggestion: None,
                    });
                }
                Ok(d)
            }
            Some(file) => Err(SkillError::Backend {
                backend: BackendKind::Candle,
                detail: format!(
                    "{}: a GGUF file holds a causal LM; the {head:?} head is not in it",
                    file.display()
                ),
            }),
            None => Decoder::load_quantized(model_type, state.dir(), &device, head, quantization),
        }
    })
}

/// The head's logits at every position of each input (`[input][position][n]`) with `head` on
/// the decoder of `state` on `target`. For the conformance tests.
pub fn decoder_head_logits(
    state: &skillgen_runtime::SkillState,
    target: Target,
    head: HeadKind,
    inputs: &[Vec<u32>],
) -> Result<Vec<Vec<Vec<f32>>>, SkillError> {
    let d = with_head(state.model(), target, head)?;
    inputs.iter().map(|ids| d.all_logits(ids)).collect()
}

/// The classifier logits of each input (at its last non-padding token) with the classifier of
/// `state` on `target`. For the conformance tests.
pub fn decoder_classify_logits(
    state: &skillgen_runtime::SkillState,
    target: Target,
    inputs: &[Vec<u32>],
) -> Result<Vec<Vec<f32>>, SkillError> {
    let c = classifier(state.model(), target)?;
    inputs.iter().map(|ids| c.class_logits(ids)).collect()
}

/// The last-position logits of one forward pass over `ids` with the decoder of `state` on
/// `target` (loads and caches it). For the parity tests.
pub fn decoder_prefill_logits(
    state: &skillgen_runtime::SkillState,
    target: Target,
    ids: &[u32],
) -> Result<Vec<f32>, SkillError> {
    decoder(state.model(), target)?.prefill_logits(ids)
}

/// The logits of every position of `ids` from one forward pass with the decoder of `state` on
/// `target`. For the parity and conformance tests.
pub fn decoder_all_logits(
    state: &skillgen_runtime::SkillState,
    target: Target,
    ids: &[u32],
) -> Result<Vec<Vec<f32>>, SkillError> {
    decoder(state.model(), target)?.all_logits(ids)
}

/// The logits at every position of `ids`, fed one token at a time through the KV cache of the
/// decoder of `state` on `target`. For the parity tests.
pub fn decoder_incremental_logits(
    state: &skillgen_runtime::SkillState,
    target: Target,
    ids: &[u32],
) -> Result<Vec<Vec<f32>>, SkillError> {
    decoder(state.model(), target)?.incremental_logits(ids)
}

/// `n` greedy tokens after `prompt` (the prompt in one pass, then one token at a time through
/// the KV cache; EOS does not stop it) with the decoder of `state` on `target`. For the
/// conformance tests.
pub fn decoder_greedy(
    state: &skillgen_runtime::SkillState,
    target: Target,
    prompt: &[u32],
    n: usize,
) -> Result<Vec<u32>, SkillError> {
    decoder(state.model(), target)?.greedy(prompt, n)
}

/// Start generating `req` with the cached decoder of `state` on `target`.
pub(crate) fn stream(
    state: &Model,
    target: Target,
    req: GenerateRequest,
) -> Result<TokenStream, SkillError> {
    decoder(state, target)?.stream(req)
}

fn candle_err(context: &str) -> impl Fn(candle_core::Error) -> SkillError + '_ {
    move |e| SkillError::Backend {
        backend: BackendKind::Candle,
        detail: format!("{context}: {e}"),
    }
}

fn invalid_request(detail: impl Into<String>) -> SkillError {
    SkillError::InvalidRequest {
        capability: Capability::Generate,
        detail: detail.into(),
    }
}

// A stream may move to another thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<TokenStream>();
};

/// A decoder model loaded from a model directory on one candle device.
pub struct Decoder {
    model_type: String,
    model: model::Model,
    dtype: DType,
    device: Device,
    vocab_size: usize,
    max_positions: usize,
    eos: Vec<u32>,
    tokenizer: Option<Arc<tokenizers::Tokenizer>>,
    tokenizer_path: PathBuf,
    /// The bytes of the weights as loaded (quantized matrices as their blocks).
    weight_bytes: usize,
    /// The chat template, if the model has one.
    chat: Option<skillgen_checkpoint::chat::ChatTemplate>,
    /// A classifier's labels (`id2label`), its padding id and whether its scores are sigmoids.
    labels: Vec<String>,
    pad: Option<u32>,
    sigmoid: bool,
    /// `embed`'s pooling and normalisation (sentence-transformers' files; mean, none).
    pooling: Pooling,
    normalize: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("model_type", &self.model_type)
            .field("dtype", &self.dtype)
            .field("device", &self.device)
            .field("vocab_size", &self.vocab_size)
            .field("max_positions", &self.max_positions)
            .field("eos", &self.eos)
            .field("tokenizer", &self.tokenizer.is_some())
            .finish()
    }
}

impl TaskHeads for Decoder {
    fn tokenizer_for(&self, why: &'static str) -> Result<&tokenizers::Tokenizer, SkillError> {
        self.tokenizer(why)
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
        self.class_logits(ids)
    }

    fn token_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.all_logits(ids)
    }
}

/// The dtype to run in: f32 on the CPU; the file's half type on accelerators.
fn pick_dtype(weights: &Weights, embed: &str, device: &Device) -> DType {
    if device.is_cpu() {
        return DType::F32;
    }
    match weights.file_dtype(embed) {
        Some(safetensors::Dtype::BF16) => DType::BF16,
        Some(safetensors::Dtype::F16) => DType::F16,
        _ => DType::F32,
    }
}

/// Where a decoder's tokenizer and end-of-sequence ids come from.
enum Source<'a> {
    /// A Hugging Face model directory (`tokenizer.json`, `generation_config.json`).
    Dir(&'a Path),
    /// A GGUF file's metadata.
    Gguf {
        file: &'a Path,
        tokenizer: Box<tokenizers::Tokenizer>,
        eos: Vec<u32>,
        chat: Option<Box<skillgen_checkpoint::chat::ChatTemplate>>,
    },
}

/// What a GGUF file says beyond the model: its model type, chat template and tensor types.
#[derive(Debug, Clone)]
pub struct GgufInfo {
    /// The registry model type its architecture maps to.
    pub model_type: &'static str,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `(tensor type, count)`, e.g. `("Q4_1", 210)`.
    pub tensor_types: Vec<(String, usize)>,
}

impl Decoder {
    /// Load `dir` (a Hugging Face model directory of `model_type`) on `device`; typed errors
    /// name the file, field or tensor at fault.
    ///
    /// `head`: the causal LM, or one of the task heads over the same body.
    pub fn load(
        model_type: &str,
        dir: &Path,
        device: &Device,
        head: HeadKind,
    ) -> Result<Self, SkillError> {
        Self::load_quantized(model_type, dir, device, head, None)
    }

    /// [`Decoder::load`] with the float checkpoint's matrices quantized to `quantization` at
    /// load (see [`crate::weights`]: every matrix whose rows are whole blocks; the others stay
    /// float), then multiplied by the quantized kernels as a GGUF file's are.
    pub fn load_quantized(
        model_type: &str,
        dir: &Path,
        device: &Device,
        head: HeadKind,
        quantization: Option<skillgen_runtime::Quantization>,
    ) -> Result<Self, SkillError> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(SkillError::ConfigMissing {
                dir: dir.to_path_buf(),
                path: config_path,
            });
        }
        let map = config::read_json(&config_path)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let mut weights = Weights::read(dir, device)?;
        if let Some(q) = quantization {
            let (quantized, fallback, float) = weights.quantize(q)?;
            if quantized + fallback == 0 {
                return Err(SkillError::WeightsInvalid {
                    path: weights.path.clone(),
                    detail: format!(
                        "load-time quantization to {q}: no matrix has rows of whole 32-weight \
                         blocks{}",
                        if q == skillgen_runtime::Quantization::Q4K {
                            " (Q4_K's 256-weight super-blocks, or its Q5_0 fallback)"
                        } else {
                            ""
                        }
                    ),
                });
            }
            tracing::info!(%q, quantized, fallback, float, "matrices quantized at load");
        }
        Self::assemble(model_type, &f, weights, device, head, Source::Dir(dir))
    }

    /// Load the GGUF file `path` (or the one in a directory) on `device` as a causal LM: its
    /// architecture's model type, config, tensors (quantized ones on candle's quantized
    /// kernels) and tokenizer, all from the file (see [`crate::gguf`]).
    pub fn load_gguf(path: &Path, device: &Device) -> Result<(Self, GgufInfo), SkillError> {
        let g = crate::gguf::read(path, device)?;
        let chat = match &g.chat_template {
            Some(t) => Some(Box::new(skillgen_checkpoint::chat::ChatTemplate::new(
                t,
                &g.file,
                g.special_tokens.clone(),
            )?)),
            None => None,
        };
        let f = Fields {
            path: &g.file,
            map: &g.config,
        };
        let source = Source::Gguf {
            file: &g.file,
            tokenizer: Box::new(g.tokenizer),
            eos: g.eos,
            chat,
        };
        let decoder = Self::assemble(g.model_type, &f, g.weights, device, HeadKind::Lm, source)?;
        let info = GgufInfo {
            model_type: g.model_type,
            chat_template: g.chat_template,
            tensor_types: g.tensor_types,
        };
        Ok((decoder, info))
    }

    /// The model of `model_type` from its config `f` and `weights`, with `head`; the
    /// tokenizer and end-of-sequence ids from `source`.
    fn assemble(
        model_type: &str,
        f: &Fields<'_>,
        mut weights: Weights,
        device: &Device,
        head: HeadKind,
        source: Source<'_>,
    ) -> Result<Self, SkillError> {
        let classifier = matches!(head, HeadKind::Sequence | HeadKind::Tokens | HeadKind::Qa);
        let (spec, mut names) = translate::translate(model_type, f)?;
        if matches!(head, HeadKind::Base | HeadKind::Mlm) && !spec.bidirectional {
            return Err(SkillError::Backend {
                backend: BackendKind::Candle,
                detail: format!(
                    "`{model_type}` is a causal LM: its hidden states and LM logits are not an encoder's"
                ),
            });
        }
        if matches!(head, HeadKind::Tokens | HeadKind::Qa) {
            // Per-token heads read the body directly; the transform is the sequence
            // classifier's (ModernBERT-decoder's `head`, EuroBERT's `dense`).
            names.score_transform = None;
        }
        // Task heads that keep the body under another prefix (Llama's question answering:
        // `transformer.`; UltraBERT's classifiers: `ultrabert.`), and bare bodies (an
        // encoder's `*Model`: no prefix).
        if !weights.has(&format!("{}.weight", names.embed)) {
            let own = format!("{model_type}.");
            for (from, to) in [
                ("model.", "transformer."),
                ("transformer.", "model."),
                ("model.", own.as_str()),
                ("model.", ""),
            ] {
                let alt = names.with_body_prefix(from, to);
                if weights.has(&format!("{}.weight", alt.embed)) {
                    names = alt;
                    break;
                }
            }
        }
        if !names.unused_by_design.is_empty() {
            let parts = names.unused_by_design.clone();
            weights.leave(|t| parts.iter().any(|p| t.contains(p.as_str())));
        }
        let dtype = pick_dtype(&weights, &format!("{}.weight", names.embed), device);
        weights.convert(dtype)?;
        let weight_bytes = weights.bytes();
        let head_kind = head;
        let (labels, head) = match head_kind {
            HeadKind::Lm | HeadKind::Mlm => (Vec::new(), model::Head::Lm),
            HeadKind::Base => (Vec::new(), model::Head::Hidden),
            HeadKind::Sequence | HeadKind::Tokens => {
                let labels = f.labels()?;
                let n = labels.len();
                (labels, model::Head::Score { labels: n })
            }
            HeadKind::Qa => (Vec::new(), model::Head::Score { labels: 2 }),
        };
        let sigmoid = match f.str_opt("problem_type")? {
            Some("multi_label_classification") => true,
            Some("single_label_classification") => false,
            Some("regression") if classifier => {
                return Err(f.err(
                    "problem_type",
                    "`regression` heads are not classifiers (scores would be raw values)",
                ));
            }
            _ => labels.len() == 1,
        };
        let pad = f.token_ids("pad_token_id")?.first().copied();
        let model = model::Model::load(spec, &names, &mut weights, head)?;
        let (vocab_size, max_positions) = (model.vocab(), model.max_positions());
        let (eos, pooling, normalize, tokenizer, tokenizer_path, chat) = match source {
            Source::Dir(dir) => {
                let eos = config::eos_ids(dir, f)?;
                // Embeddings follow sentence-transformers: its pooling and normalisation, and
                // truncation at its `max_seq_length` (else the context).
                let (pooling, normalize, truncate) = if head_kind == HeadKind::Base {
                    let (pooling, normalize) =
                        skillgen_checkpoint::sentence_transformers_head(dir)?;
                    let max_len = skillgen_checkpoint::sentence_max_len(dir)?
                        .map_or(max_positions, |m| m.min(max_positions));
                    (pooling, normalize, Some(max_len))
                } else {
                    (Pooling::Mean, false, None)
                };
                let (tokenizer, path) = skillgen_checkpoint::load_tokenizer(dir, truncate)?;
                let chat = if head_kind == HeadKind::Lm {
                    skillgen_checkpoint::chat::ChatTemplate::from_model_dir(dir)?
                } else {
                    None
                };
                (eos, pooling, normalize, tokenizer.map(Arc::new), path, chat)
            }
            Source::Gguf {
                file,
                tokenizer,
                eos,
                chat,
            } => (
                eos,
                Pooling::Mean,
                false,
                Some(Arc::new(*tokenizer)),
                file.to_path_buf(),
                chat.map(|c| *c),
            ),
        };
        Ok(Self {
            model_type: model_type.to_owned(),
            model,
            dtype,
            device: device.clone(),
            vocab_size,
            max_positions,
            eos,
            tokenizer,
            tokenizer_path,
            chat,
            weight_bytes,
            labels,
            pad,
            sigmoid,
            pooling,
            normalize,
        })
    }

    /// The error for a conversation given to a model without a chat template (a base model):
    /// the field that would hold it, in the file it would be in.
    fn no_chat_template(&self) -> SkillError {
        let detail = "absent: the model has no chat template (a base model), so it cannot \
                      take a conversation; give it a text prompt (generate)";
        let gguf = self.tokenizer_path.extension().is_some_and(|e| e == "gguf");
        if gguf {
            SkillError::ConfigField {
                path: self.tokenizer_path.clone(),
                field: "tokenizer.chat_template".into(),
                detail: detail.into(),
            }
        } else {
            let dir = self.tokenizer_path.parent().unwrap_or(Path::new("."));
            SkillError::ConfigField {
                path: dir.join("tokenizer_config.json"),
                field: "chat_template".into(),
                detail: format!("{detail} (no chat_template.jinja either)"),
            }
        }
    }

    /// The bytes the model's weights took when loaded: float tensors at their dtype,
    /// quantized matrices (a GGUF file's, or quantized at load) as their blocks.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The token ids of `prompt`: text tokenized (special tokens added), a conversation
    /// rendered by the chat template (generation prompt on) and tokenized without adding any.
    pub fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>, SkillError> {
        Ok(match prompt {
            Prompt::TokenIds(ids) => ids.clone(),
            Prompt::Messages(messages) => {
                let template = self.chat.as_ref().ok_or_else(|| self.no_chat_template())?;
                let text = template.render(messages, true)?;
                let tok = self.tokenizer("the tokenizer, needed for a conversation")?;
                // As apply_chat_template(tokenize=True): the template writes the special tokens.
                tok.encode(text.as_str(), false)
                    .map_err(|e| SkillError::Tokenizer {
                        path: self.tokenizer_path.clone(),
                        detail: format!("encoding the conversation: {e}"),
                    })?
                    .get_ids()
                    .to_vec()
            }
            Prompt::Text(text) => {
                let tok =
                    self.tokenizer("the tokenizer (tokenizer.json), needed for a text prompt")?;
                tok.encode(text.as_str(), true)
                    .map_err(|e| SkillError::Tokenizer {
                        path: self.tokenizer_path.clone(),
                        detail: format!("encoding the prompt: {e}"),
                    })?
                    .get_ids()
                    .to_vec()
            }
        })
    }

    /// `n` greedy tokens after `prompt`: the prompt in one pass, then one token at a time
    /// through the KV cache; EOS does not stop it.
    pub fn greedy(&self, prompt: &[u32], n: usize) -> Result<Vec<u32>, SkillError> {
        self.check_ids(prompt)?;
        let mut s = self.session()?;
        let (mut pending, mut pos, mut out) = (prompt.to_vec(), 0, Vec::with_capacity(n));
        for _ in 0..n {
            let logits = self.forward(&mut s, &pending, pos)?;
            pos += pending.len();
            let id = logits
                .argmax(0)
                .and_then(|t| t.to_scalar::<u32>())
                .map_err(candle_err("argmax"))?;
            out.push(id);
            pending = vec![id];
        }
        Ok(out)
    }

    /// The final hidden states `[positions, hidden]` of `ids` (a [`HeadKind::Base`] body).
    fn hidden_states(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.check_ids(ids)?;
        let mut s = self.session()?;
        self.model.forward(ids, 0, &mut s, true)
    }

    /// The classifier logits of `ids` at its last non-padding token (transformers'
    /// `*ForSequenceClassification` pooling; inputs run one at a time, unpadded, which is what
    /// a right-padded batch computes under causal attention).
    fn class_logits(&self, ids: &[u32]) -> Result<Vec<f32>, SkillError> {
        self.check_ids(ids)?;
        let mut s = self.session()?;
        let all = self.model.forward(ids, 0, &mut s, true)?;
        let row = match self.model.seq_pool() {
            SeqPool::Last => {
                let at = match self.pad {
                    // The last token that is not padding (position 0 when all are).
                    Some(p) => ids.iter().rposition(|&t| t != p).unwrap_or(0),
                    None => ids.len() - 1,
                };
                all.get(at)
            }
            SeqPool::First => all.get(0),
            SeqPool::MeanLogits => all.mean(0),
        };
        row.and_then(|r| r.to_vec1())
            .map_err(candle_err("reading classifier logits"))
    }

    /// A fresh KV cache.
    fn session(&self) -> Result<Session, SkillError> {
        Ok(model::Cache::default())
    }

    fn tokenizer(&self, why: &'static str) -> Result<&tokenizers::Tokenizer, SkillError> {
        self.tokenizer
            .as_deref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: why,
            })
    }

    /// Check token ids against the vocabulary and the context.
    fn check_ids(&self, ids: &[u32]) -> Result<(), SkillError> {
        if ids.is_empty() {
            return Err(invalid_request("the prompt has no tokens"));
        }
        if let Some((i, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= self.vocab_size)
        {
            return Err(invalid_request(format!(
                "prompt token {i} is id {id}, outside the vocabulary (size {})",
                self.vocab_size
            )));
        }
        if ids.len() >= self.max_positions {
            return Err(invalid_request(format!(
                "the prompt has {} tokens; the model's context is {} positions (room for at least one new token is needed)",
                ids.len(),
                self.max_positions
            )));
        }
        Ok(())
    }

    /// The last-position logits after feeding `ids` in one forward pass (a fresh KV cache).
    pub fn prefill_logits(&self, ids: &[u32]) -> Result<Vec<f32>, SkillError> {
        self.check_ids(ids)?;
        let mut s = self.session()?;
        self.forward(&mut s, ids, 0)?
            .to_vec1()
            .map_err(candle_err("reading logits"))
    }

    /// The logits at every position of `ids`, fed one token at a time through the KV cache
    /// (candle's causal LMs return only the last position of a forward pass).
    pub fn incremental_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.check_ids(ids)?;
        let mut s = self.session()?;
        let mut out = Vec::with_capacity(ids.len());
        for (pos, id) in ids.iter().enumerate() {
            out.push(
                self.forward(&mut s, std::slice::from_ref(id), pos)?
                    .to_vec1()
                    .map_err(candle_err("reading logits"))?,
            );
        }
        Ok(out)
    }

    /// One forward pass of `ids` at position `pos`: the last position's logits, f32, `(vocab,)`.
    fn forward(&self, s: &mut Session, ids: &[u32], pos: usize) -> Result<Tensor, SkillError> {
        self.model
            .forward(ids, pos, s, false)?
            .flatten_all()
            .map_err(candle_err("reading logits"))
    }

    /// The logits of every position of `ids` from one forward pass (a fresh KV cache):
    /// `[positions][vocab]`.
    pub fn all_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.check_ids(ids)?;
        let mut s = self.session()?;
        self.model
            .forward(ids, 0, &mut s, true)?
            .to_vec2()
            .map_err(candle_err("reading logits"))
    }

    /// Start generating: the prompt is checked and tokenized here; tokens come from the
    /// returned iterator.
    pub fn stream(self: Arc<Self>, req: GenerateRequest) -> Result<TokenStream, SkillError> {
        if self.model.bidirectional() {
            return Err(SkillError::Backend {
                backend: BackendKind::Candle,
                detail: format!(
                    "`{}` is an encoder (bidirectional attention): it does not generate",
                    self.model_type
                ),
            });
        }
        let prompt = self.prompt_ids(&req.prompt)?;
        self.check_ids(&prompt)?;
        if !req.stop.is_empty() {
            self.tokenizer("the tokenizer (tokenizer.json), needed for stop strings")?;
            if req.stop.iter().any(String::is_empty) {
                return Err(invalid_request("a stop string is empty"));
            }
        }
        let temperature = f64::from(req.temperature);
        let sampling = if req.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            match (req.top_k, req.top_p.map(f64::from)) {
                (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
                (Some(k), None) => Sampling::TopK { k, temperature },
                (None, Some(p)) if p < 1.0 => Sampling::TopP { p, temperature },
                (None, _) => Sampling::All { temperature },
            }
        };
        let seed = req.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        });
        let session = self.session()?;
        let source = DecoderSource {
            sampler: LogitsProcessor::from_sampling(seed, sampling),
            session,
            pending: prompt,
            pos: 0,
            generated: Vec::new(),
            max_tokens: req.max_tokens,
            decoder: self,
        };
        Ok(TokenStream::new(Box::new(source), req.stop))
    }
}

/// A per-request model state: its own KV cache.
type Session = model::Cache;

/// The decoder's side of a streaming generation (see [`TokenStream`], which cuts stop strings
/// and holds back text): its own KV cache, the sampler and the tokens so far.
struct DecoderSource {
    decoder: Arc<Decoder>,
    session: Session,
    sampler: LogitsProcessor,
    /// Tokens to feed at the next step (the prompt, then the last sampled token).
    pending: Vec<u32>,
    pos: usize,
    generated: Vec<u32>,
    max_tokens: usize,
}

impl std::fmt::Debug for DecoderSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderSource")
            .field("decoder", &self.decoder)
            .field("generated", &self.generated)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

impl DecoderSource {
    fn decode(&self, ids: &[u32]) -> Result<String, SkillError> {
        match &self.decoder.tokenizer {
            None => Ok(String::new()),
            Some(t) => t.decode(ids, true).map_err(|e| SkillError::Tokenizer {
                path: self.decoder.tokenizer_path.clone(),
                detail: format!("decoding: {e}"),
            }),
        }
    }
}

impl TokenSource for DecoderSource {
    fn step(&mut self) -> Result<SourceStep, SkillError> {
        let logits = self
            .decoder
            .forward(&mut self.session, &self.pending, self.pos)?;
        self.pos += self.pending.len();
        let id = self
            .sampler
            .sample(&logits)
            .map_err(candle_err("sampling"))?;
        self.generated.push(id);
        self.pending = vec![id];
        let is_eos = self.decoder.eos.contains(&id);
        let finish = if is_eos {
            Some(FinishReason::Eos)
        } else if self.generated.len() >= self.max_tokens || self.pos >= self.decoder.max_positions
        {
            Some(FinishReason::Length)
        } else {
            None
        };
        let text = if is_eos {
            // The EOS token adds no text.
            let n = self.generated.len().saturating_sub(1);
            self.decode(self.generated.get(..n).unwrap_or(&[]))?
        } else {
            self.decode(&self.generated)?
        };
        Ok(SourceStep {
            token_id: id,
            text,
            finish,
        })
    }
}
