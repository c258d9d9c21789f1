//! Typed requests and responses, one pair per capability.

use std::path::PathBuf;

use serde::Serialize;
use skillgen_vocab::Capability;

use crate::decision::Dispatch;

/// A capability's output together with the dispatch decision that produced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Response<T> {
    /// The output.
    pub output: T,
    /// Where it ran and what was skipped.
    pub dispatch: Dispatch,
}

/// Text inputs: strings to tokenize, or token ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextBatch {
    /// Raw texts.
    Texts(Vec<String>),
    /// Pre-tokenized inputs.
    TokenIds(Vec<Vec<u32>>),
}

impl TextBatch {
    /// Number of inputs.
    pub fn len(&self) -> usize {
        match self {
            TextBatch::Texts(t) => t.len(),
            TextBatch::TokenIds(t) => t.len(),
        }
    }

    /// Whether there are no inputs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            _ if self.is_empty() => Err("no inputs".to_owned()),
            TextBatch::TokenIds(ids) => match ids.iter().position(Vec::is_empty) {
                Some(i) => Err(format!("input {i} has no token ids")),
                None => Ok(()),
            },
            TextBatch::Texts(_) => Ok(()),
        }
    }
}

impl From<&str> for TextBatch {
    fn from(s: &str) -> Self {
        TextBatch::Texts(vec![s.to_owned()])
    }
}
impl From<String> for TextBatch {
    fn from(s: String) -> Self {
        TextBatch::Texts(vec![s])
    }
}
impl From<&[&str]> for TextBatch {
    fn from(s: &[&str]) -> Self {
        TextBatch::Texts(s.iter().map(|s| (*s).to_owned()).collect())
    }
}
impl<const N: usize> From<&[&str; N]> for TextBatch {
    fn from(s: &[&str; N]) -> Self {
        Self::from(&s[..])
    }
}
impl From<Vec<String>> for TextBatch {
    fn from(s: Vec<String>) -> Self {
        TextBatch::Texts(s)
    }
}
impl From<Vec<Vec<u32>>> for TextBatch {
    fn from(ids: Vec<Vec<u32>>) -> Self {
        TextBatch::TokenIds(ids)
    }
}

macro_rules! text_request_from {
    ($req:ident { $($field:ident : $default:expr),* }) => {
        impl<T: Into<TextBatch>> From<T> for $req {
            fn from(t: T) -> Self {
                $req { input: t.into(), $($field: $default),* }
            }
        }
    };
}

/// `embed`: one vector per input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbedRequest {
    /// The inputs.
    pub input: TextBatch,
    /// L2-normalize the vectors: `None` follows the model (a sentence-transformers `Normalize`
    /// module in `modules.json`), `Some(_)` overrides it.
    pub normalize: Option<bool>,
    /// How many inputs run through the model together: the inputs are sorted by length and
    /// run in chunks of this many (padded to the longest of the chunk), then put back in
    /// order, as sentence-transformers' `encode(batch_size=...)` does. Memory is bounded by
    /// the chunk, not by the number of inputs; each vector is the one the input alone would
    /// get (padding is masked). Default [`EmbedRequest::DEFAULT_BATCH_SIZE`].
    pub batch_size: usize,
}
text_request_from!(EmbedRequest {
    normalize: None,
    batch_size: EmbedRequest::DEFAULT_BATCH_SIZE
});

impl EmbedRequest {
    /// sentence-transformers' default.
    pub const DEFAULT_BATCH_SIZE: usize = 32;

    /// Force L2 normalisation on or off.
    pub fn normalize(mut self, on: bool) -> Self {
        self.normalize = Some(on);
        self
    }

    /// Set [`EmbedRequest::batch_size`] (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
}

/// How token vectors were pooled into one vector per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean over the positions whose attention mask is 1.
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// The model's own pooled output (transformers' `pooler_output`): CLIP's text tower at
    /// its end-of-text token, DPR's (projected) `[CLS]` state.
    Pooler,
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Pooler => "pooler",
        })
    }
}

/// `embed` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// The vector dimension.
    pub dim: usize,
    /// The pooling used.
    pub pooling: Pooling,
    /// Whether the vectors were L2-normalised.
    pub normalized: bool,
    /// The token ids the model saw, per input (after tokenisation and truncation).
    pub token_ids: Vec<Vec<u32>>,
}

/// `fill_mask`: predictions for each mask token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FillMaskRequest {
    /// Text containing the model's mask token(s), or token ids.
    pub input: TextBatch,
    /// Predictions per mask.
    pub top_k: usize,
}
text_request_from!(FillMaskRequest { top_k: 5 });

/// One candidate for a masked position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskPrediction {
    /// The token text.
    pub token: String,
    /// The token id.
    pub token_id: u32,
    /// Probability.
    pub score: f32,
}

/// `fill_mask` output: per input, per mask position, the top candidates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FillMaskOutput {
    /// `predictions[input][mask][k]`.
    pub predictions: Vec<Vec<Vec<MaskPrediction>>>,
}

/// `classify`: sequence classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassifyRequest {
    /// The inputs.
    pub input: TextBatch,
    /// Labels per input (0 = all).
    pub top_k: usize,
}
text_request_from!(ClassifyRequest { top_k: 0 });

/// A label with its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    /// The label (from `id2label`).
    pub label: String,
    /// Probability.
    pub score: f32,
}

/// `classify` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classifications {
    /// Labels per input, best first.
    pub labels: Vec<Vec<Label>>,
}

/// `classify_tokens`: token classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassifyTokensRequest {
    /// The inputs.
    pub input: TextBatch,
    /// Whether to group tokens into entities as well (text inputs only).
    pub aggregation: Aggregation,
}
text_request_from!(ClassifyTokensRequest {
    aggregation: Aggregation::None
});

impl ClassifyTokensRequest {
    /// Also group the tokens into entities, as `aggregation`.
    pub fn aggregate(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = aggregation;
        self
    }
}

/// How `classify_tokens` groups tokens into entities (transformers' `aggregation_strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Tokens only.
    #[default]
    None,
    /// transformers' `"simple"`: adjacent tokens with the same tag join one entity unless the
    /// next begins one (`B-`); the entity's score is the mean of its tokens', `O` is dropped.
    Simple,
}

/// One token's label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLabel {
    /// The token id.
    pub token_id: u32,
    /// Byte offsets of the token in the input text (`None` for token-id inputs and special
    /// tokens).
    pub offsets: Option<(usize, usize)>,
    /// The best label (from `id2label`).
    pub label: String,
    /// Its softmax probability.
    pub score: f32,
}

/// `classify_tokens` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenClassifications {
    /// Per input, one entry per token.
    pub tokens: Vec<Vec<TokenLabel>>,
    /// Per input, its entities (with [`Aggregation::Simple`]; `None` without aggregation).
    pub entities: Option<Vec<Vec<Entity>>>,
}

/// A group of adjacent tokens with one tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    /// The tag (the label without its `B-`/`I-` prefix).
    pub label: String,
    /// The mean score of its tokens.
    pub score: f32,
    /// Its tokens, decoded.
    pub word: String,
    /// Byte offsets in the input text: the first token's start, the last token's end.
    pub start: usize,
    pub end: usize,
}

/// transformers' `"simple"` aggregation of one input's `tokens` (special tokens — those
/// without offsets — skipped); `decode` turns a group's token ids into its word.
pub fn simple_entities<E>(
    tokens: &[TokenLabel],
    decode: &dyn Fn(&[u32]) -> Result<String, E>,
) -> Result<Vec<Entity>, E> {
    // transformers' `get_tag`: B-/I- prefixes; anything else continues ("I").
    fn tag(label: &str) -> (bool, &str) {
        match label.split_at_checked(2) {
            Some(("B-", t)) => (true, t),
            Some(("I-", t)) => (false, t),
            _ => (false, label),
        }
    }
    let mut groups: Vec<Vec<&TokenLabel>> = Vec::new();
    for t in tokens.iter().filter(|t| t.offsets.is_some()) {
        let (begins, this) = tag(&t.label);
        match groups.last_mut() {
            Some(g) if !begins && g.last().is_some_and(|p| tag(&p.label).1 == this) => g.push(t),
            _ => groups.push(vec![t]),
        }
    }
    let mut out = Vec::new();
    for g in groups {
        let (Some(first), Some(last)) = (g.first(), g.last()) else {
            continue;
        };
        let label = first
            .label
            .split_once('-')
            .map_or(first.label.as_str(), |(_, rest)| rest);
        let (Some((start, _)), Some((_, end))) = (first.offsets, last.offsets) else {
            continue;
        };
        if label == "O" {
            continue;
        }
        let ids: Vec<u32> = g.iter().map(|t| t.token_id).collect();
        out.push(Entity {
            label: label.to_owned(),
            score: g.iter().map(|t| t.score).sum::<f32>() / g.len() as f32,
            word: decode(&ids)?,
            start,
            end,
        });
    }
    Ok(out)
}

/// `answer_question`: extractive question answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuestionRequest {
    /// The question.
    pub question: String,
    /// The text that holds the answer.
    pub context: String,
    /// The longest answer, in tokens.
    pub max_answer_tokens: usize,
}

impl QuestionRequest {
    /// A question about `context` (answers up to 15 tokens, as transformers' pipeline).
    pub fn new(question: impl Into<String>, context: impl Into<String>) -> Self {
        Self {
            question: question.into(),
            context: context.into(),
            max_answer_tokens: 15,
        }
    }
}

/// `answer_question` output: the best span of the context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The answer text (a slice of the context).
    pub answer: String,
    /// Byte offsets of the answer in the context.
    pub start: usize,
    pub end: usize,
    /// `softmax(start)[s] · softmax(end)[e]` over the context tokens.
    pub score: f32,
}

/// The prompt of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Text to tokenize.
    Text(String),
    /// Token ids.
    TokenIds(Vec<u32>),
    /// A conversation, rendered by the model's chat template (with the assistant's turn
    /// opened, as `apply_chat_template(..., add_generation_prompt=True)`), then tokenized
    /// without adding special tokens.
    Messages(Vec<ChatMessage>),
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message of `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// `generate`: text generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Maximum new tokens.
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Top-k sampling.
    pub top_k: Option<usize>,
    /// Nucleus sampling, in (0, 1].
    pub top_p: Option<f32>,
    /// RNG seed.
    pub seed: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
}

impl GenerateRequest {
    /// Greedy, 128 new tokens.
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            max_tokens: 128,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: None,
            stop: Vec::new(),
        }
    }
    /// Set `max_tokens`.
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }
    /// Set `temperature`.
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }
    /// Set `top_k`.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }
    /// Set `top_p`.
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = Some(p);
        self
    }
    /// Set `seed`.
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = Some(s);
        self
    }
    /// Add a stop sequence.
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        self.stop.push(s.into());
        self
    }
}

impl GenerateRequest {
    /// Chat: the reply to `messages` (see [`Prompt::Messages`]), greedy, 128 new tokens.
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        Self::new(Prompt::Messages(messages))
    }
}

impl From<&str> for GenerateRequest {
    fn from(s: &str) -> Self {
        Self::new(Prompt::Text(s.to_owned()))
    }
}
impl From<String> for GenerateRequest {
    fn from(s: String) -> Self {
        Self::new(Prompt::Text(s))
    }
}
impl From<Vec<u32>> for GenerateRequest {
    fn from(ids: Vec<u32>) -> Self {
        Self::new(Prompt::TokenIds(ids))
    }
}

/// `chat`: the assistant's reply to a conversation.
///
/// A generate request whose prompt is a conversation ([`Prompt::Messages`]): the model's chat
/// template renders it with the assistant's turn opened, exactly as transformers'
/// `apply_chat_template(messages, add_generation_prompt=True)`. Limits and sampling are set as
/// for [`GenerateRequest`] (`max_tokens`, `temperature`, ...). Streaming: `chat_stream`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ChatRequest {
    /// Invariant: the prompt is [`Prompt::Messages`].
    request: GenerateRequest,
}

impl ChatRequest {
    /// The reply to `messages`: greedy, 128 new tokens at most.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            request: GenerateRequest::chat(messages),
        }
    }

    /// The conversation.
    pub fn messages(&self) -> &[ChatMessage] {
        match &self.request.prompt {
            Prompt::Messages(m) => m,
            Prompt::Text(_) | Prompt::TokenIds(_) => &[],
        }
    }

    /// The generate request this chat runs as (the conversation as its prompt).
    pub fn as_generate(&self) -> &GenerateRequest {
        &self.request
    }

    /// Apply `options` to the generation settings (`max_tokens`, sampling, stop strings); the
    /// conversation is kept whatever `options` does to the prompt.
    pub fn options(self, options: impl FnOnce(GenerateRequest) -> GenerateRequest) -> Self {
        let prompt = self.request.prompt.clone();
        let mut request = options(self.request);
        request.prompt = prompt;
        Self { request }
    }

    /// Set `max_tokens`.
    pub fn max_tokens(self, n: usize) -> Self {
        self.options(|r| r.max_tokens(n))
    }

    /// Set `temperature` (0 is greedy).
    pub fn temperature(self, t: f32) -> Self {
        self.options(|r| r.temperature(t))
    }

    /// Set `seed`.
    pub fn seed(self, s: u64) -> Self {
        self.options(|r| r.seed(s))
    }
}

impl From<Vec<ChatMessage>> for ChatRequest {
    fn from(messages: Vec<ChatMessage>) -> Self {
        Self::new(messages)
    }
}

impl From<ChatRequest> for GenerateRequest {
    fn from(chat: ChatRequest) -> Self {
        chat.request
    }
}

/// `chat` output: the assistant's message and how it was generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatReply {
    /// The reply, role `assistant` (its content is [`Generation::text`]: the template's end of
    /// turn is the end-of-sequence token, not part of the text).
    pub message: ChatMessage,
    /// The generated token ids.
    pub token_ids: Vec<u32>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

impl From<Generation> for ChatReply {
    fn from(g: Generation) -> Self {
        Self {
            message: ChatMessage::assistant(g.text),
            token_ids: g.token_ids,
            finish_reason: g.finish_reason,
        }
    }
}

impl GenerateRequest {
    /// Reject malformed settings before dispatch.
    pub fn validate(&self) -> Result<(), String> {
        match &self.prompt {
            Prompt::TokenIds(ids) if ids.is_empty() => {
                return Err("empty prompt token ids".to_owned());
            }
            Prompt::Messages(m) if m.is_empty() => {
                return Err("a conversation needs at least one message".to_owned());
            }
            _ => {}
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "temperature must be finite and ≥ 0, got {}",
                self.temperature
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(format!("top_p must be in (0, 1], got {p}"));
        }
        if self.top_k == Some(0) {
            return Err("top_k must be at least 1".to_owned());
        }
        if self.max_tokens == 0 {
            return Err("max_tokens must be at least 1".to_owned());
        }
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            return Err(format!("stop string {i} is empty"));
        }
        Ok(())
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_tokens` reached.
    Length,
    /// End-of-sequence token.
    Eos,
    /// A stop sequence.
    Stop,
}

/// `generate` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generation {
    /// The generated text (without the prompt).
    pub text: String,
    /// The generated token ids.
    pub token_ids: Vec<u32>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

/// One token of a streaming generation (see [`TokenStream`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedToken {
    /// The token id.
    pub token_id: u32,
    /// The text this token adds. May be empty: without a tokenizer, for an end-of-sequence
    /// token, for part of a multi-byte character, or while it may be the start of a stop string
    /// (held-back text comes with a later token). The texts of a stream concatenate to
    /// [`Generation::text`].
    pub text: String,
    /// Set on the last token: why generation stopped.
    pub finish_reason: Option<FinishReason>,
}

/// `transcribe`: speech to text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranscribeRequest {
    /// Mono PCM at 16 kHz, samples in [-1, 1].
    pub pcm_16khz: Vec<f32>,
    /// Language hint (e.g. `en`).
    pub language: Option<String>,
}

impl From<&[f32]> for TranscribeRequest {
    fn from(pcm: &[f32]) -> Self {
        Self {
            pcm_16khz: pcm.to_vec(),
            language: None,
        }
    }
}
impl From<Vec<f32>> for TranscribeRequest {
    fn from(pcm: Vec<f32>) -> Self {
        Self {
            pcm_16khz: pcm,
            language: None,
        }
    }
}

/// `transcribe` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transcription {
    /// The text.
    pub text: String,
}

/// An image input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageInput {
    /// An image file.
    Path(PathBuf),
    /// Encoded image bytes (PNG, JPEG, ...).
    Encoded(Vec<u8>),
}

impl From<PathBuf> for ImageInput {
    fn from(p: PathBuf) -> Self {
        ImageInput::Path(p)
    }
}
impl From<&std::path::Path> for ImageInput {
    fn from(p: &std::path::Path) -> Self {
        ImageInput::Path(p.to_path_buf())
    }
}
impl From<Vec<u8>> for ImageInput {
    fn from(b: Vec<u8>) -> Self {
        ImageInput::Encoded(b)
    }
}

impl ImageInput {
    fn validate(&self) -> Result<(), String> {
        match self {
            ImageInput::Encoded(b) if b.is_empty() => Err("empty image bytes".to_owned()),
            _ => Ok(()),
        }
    }
}

/// `classify_image`: image classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassifyImageRequest {
    /// The image.
    pub image: ImageInput,
    /// Labels to return (0 = all).
    pub top_k: usize,
}

impl<T: Into<ImageInput>> From<T> for ClassifyImageRequest {
    fn from(i: T) -> Self {
        Self {
            image: i.into(),
            top_k: 5,
        }
    }
}

/// `classify_image` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageClassification {
    /// Labels, best first.
    pub labels: Vec<Label>,
}

/// `embed_image`: one feature vector per image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbedImageRequest {
    /// The images.
    pub images: Vec<ImageInput>,
    /// L2-normalise each vector.
    pub normalize: bool,
}

impl EmbedImageRequest {
    /// `images`, not normalised.
    pub fn new(images: Vec<ImageInput>) -> Self {
        Self {
            images,
            normalize: false,
        }
    }
}

impl<T: Into<ImageInput>> From<T> for EmbedImageRequest {
    fn from(i: T) -> Self {
        Self::new(vec![i.into()])
    }
}

/// `embed_image` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageEmbeddings {
    /// One vector per image.
    pub vectors: Vec<Vec<f32>>,
    /// The vector dimension.
    pub dim: usize,
    /// What the vector is, e.g. `post-layernorm class token` (transformers' `pooler_output`).
    pub pooling: String,
    /// Whether the vectors were L2-normalised.
    pub normalized: bool,
}

/// `image_text_similarity`: CLIP-style matching of images against texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageTextRequest {
    /// The images.
    pub images: Vec<ImageInput>,
    /// The texts.
    pub texts: Vec<String>,
}

impl ImageTextRequest {
    /// Images × texts.
    pub fn new(images: Vec<ImageInput>, texts: Vec<String>) -> Self {
        Self { images, texts }
    }
}

impl<I: Into<ImageInput>> From<(I, &[&str])> for ImageTextRequest {
    fn from((image, texts): (I, &[&str])) -> Self {
        Self {
            images: vec![image.into()],
            texts: texts.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// `image_text_similarity` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Similarity {
    /// `scores[image][text]`, softmax over texts.
    pub scores: Vec<Vec<f32>>,
}

macro_rules! call_and_output {
    ($($variant:ident $method:ident($req:ident) -> $out:ident: $doc:literal;)*) => {
        /// A request of any capability, as handed to a backend.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Call {
            $(
                #[doc = concat!("`", stringify!($method), "`.")]
                $variant($req),
            )*
        }

        /// A backend's output, matching the [`Call`].
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Output {
            $(
                #[doc = concat!("`", stringify!($method), "`.")]
                $variant($out),
            )*
        }

        impl Call {
            /// The capability this call exercises.
            pub fn capability(&self) -> Capability {
                match self {
                    $( Call::$variant(_) => Capability::$variant, )*
                }
            }
        }
    };
}
skillgen_vocab::for_each_capability!(call_and_output);

impl Call {
    /// Reject malformed requests before dispatch.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Call::Embed(r) => {
                if r.batch_size == 0 {
                    return Err("batch_size must be at least 1".to_owned());
                }
                r.input.validate()
            }
            Call::FillMask(r) => {
                r.input.validate()?;
                if r.top_k == 0 {
                    return Err("top_k must be at least 1".to_owned());
                }
                Ok(())
            }
            Call::Classify(r) => r.input.validate(),
            Call::Generate(r) => r.validate(),
            Call::Chat(r) => r.as_generate().validate(),
            Call::Transcribe(r) => {
                if r.pcm_16khz.is_empty() {
                    return Err("no audio samples".to_owned());
                }
                match r.pcm_16khz.iter().position(|s| !s.is_finite()) {
                    Some(i) => Err(format!("sample {i} is not finite")),
                    None => Ok(()),
                }
            }
            Call::ClassifyImage(r) => r.image.validate(),
            Call::EmbedImage(r) => {
                if r.images.is_empty() {
                    return Err("no images".to_owned());
                }
                r.images.iter().try_for_each(ImageInput::validate)
            }
            Call::ClassifyTokens(r) => r.input.validate(),
            Call::AnswerQuestion(r) => {
                if r.question.trim().is_empty() {
                    return Err("the question is empty".to_owned());
                }
                if r.context.trim().is_empty() {
                    return Err("the context is empty".to_owned());
                }
                if r.max_answer_tokens == 0 {
                    return Err("max_answer_tokens must be at least 1".to_owned());
                }
                Ok(())
            }
            Call::ImageTextSimilarity(r) => {
                if r.images.is_empty() {
                    return Err("no images".to_owned());
                }
                if r.texts.is_empty() {
                    return Err("no texts".to_owned());
                }
                r.images.iter().try_for_each(ImageInput::validate)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(id: u32, off: Option<(usize, usize)>, label: &str, score: f32) -> TokenLabel {
        TokenLabel {
            token_id: id,
            offsets: off,
            label: label.into(),
            score,
        }
    }

    fn words(ids: &[u32]) -> Result<String, String> {
        Ok(ids.iter().map(|i| char::from(b'a' + *i as u8)).collect())
    }

    #[test]
    fn simple_entities_group_as_transformers() {
        // [CLS] B-PER I-PER O B-LOC B-LOC I-LOC MISC MISC I-MISC [SEP]
        let toks = [
            tok(9, None, "B-PER", 0.9),
            tok(0, Some((0, 1)), "B-PER", 0.8),
            tok(1, Some((1, 2)), "I-PER", 0.6),
            tok(2, Some((3, 4)), "O", 0.99),
            tok(3, Some((5, 6)), "B-LOC", 0.5),
            tok(4, Some((7, 8)), "B-LOC", 0.7),
            tok(5, Some((8, 9)), "I-LOC", 0.9),
            tok(6, Some((10, 11)), "MISC", 0.2),
            tok(7, Some((11, 12)), "MISC", 0.4),
            tok(8, Some((12, 13)), "I-MISC", 0.6),
            tok(9, None, "O", 1.0),
        ];
        let e = simple_entities(&toks, &words).unwrap();
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.label.as_str(), e.word.as_str(), e.start, e.end))
            .collect();
        assert_eq!(
            got,
            [
                ("PER", "ab", 0, 2),
                ("LOC", "d", 5, 6),
                ("LOC", "ef", 7, 9),
                ("MISC", "ghi", 10, 13),
            ]
        );
        assert!((e[0].score - 0.7).abs() < 1e-6);
        assert!((e[3].score - 0.4).abs() < 1e-6);
    }

    #[test]
    fn simple_entities_edge_cases() {
        let none: Result<_, String> = simple_entities(&[], &words);
        assert_eq!(none.unwrap(), []);
        // Only special tokens and O: nothing.
        let toks = [tok(1, None, "B-X", 0.9), tok(2, Some((0, 1)), "O", 0.9)];
        assert_eq!(simple_entities(&toks, &words).unwrap(), []);
        // A label with no prefix whose own name has a dash keeps it whole as its tag
        // ("I" bi), but the group's label is split at the first dash, as transformers does.
        let toks = [
            tok(0, Some((0, 1)), "X-Y", 0.5),
            tok(1, Some((1, 2)), "X-Y", 0.5),
        ];
        let e = simple_entities(&toks, &words).unwrap();
        assert_eq!(
            (e.len(), e[0].label.as_str(), e[0].word.as_str()),
            (1, "Y", "ab")
        );
        // The decoder's error comes back.
        let fail = |_: &[u32]| -> Result<String, String> { Err("bad id".into()) };
        let toks = [tok(0, Some((0, 1)), "B-X", 0.5)];
        assert_eq!(simple_entities(&toks, &fail).unwrap_err(), "bad id");
    }

    #[test]
    fn conversions() {
        let r: EmbedRequest = (&["a", "b"]).into();
        assert_eq!(r.input, TextBatch::Texts(vec!["a".into(), "b".into()]));
        let r: EmbedRequest = vec![vec![1u32, 2]].into();
        assert_eq!(r.input.len(), 1);
        let g: GenerateRequest = GenerateRequest::from("hi").max_tokens(3).seed(7).stop("\n");
        assert_eq!((g.max_tokens, g.seed, g.stop.len()), (3, Some(7), 1));
        let t: TranscribeRequest = (&[0.0f32, 0.1][..]).into();
        assert_eq!(t.pcm_16khz.len(), 2);
    }

    #[test]
    fn chat_requests_keep_their_conversation() {
        let hi = vec![ChatMessage::system("be brief"), ChatMessage::user("hi")];
        let c = ChatRequest::from(hi.clone())
            .max_tokens(5)
            .temperature(0.5)
            .seed(3)
            // Options cannot replace the conversation.
            .options(|r| GenerateRequest {
                prompt: Prompt::Text("other".into()),
                ..r.stop("</s>")
            });
        assert_eq!(c.messages(), hi.as_slice());
        let g = c.as_generate();
        assert_eq!(
            (g.max_tokens, g.temperature, g.seed, g.stop.as_slice()),
            (5, 0.5, Some(3), ["</s>".to_owned()].as_slice())
        );
        assert_eq!(GenerateRequest::from(c).prompt, Prompt::Messages(hi));
        let reply = ChatReply::from(Generation {
            text: "Hello!".into(),
            token_ids: vec![1, 2],
            finish_reason: FinishReason::Eos,
        });
        assert_eq!(reply.message, ChatMessage::assistant("Hello!"));
        assert_eq!(
            Call::Chat(ChatRequest::new(vec![])).validate().unwrap_err(),
            "a conversation needs at least one message"
        );
        assert!(
            Call::Chat(ChatRequest::new(vec![ChatMessage::user("x")]).max_tokens(0))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn validation_rejects_bad_input() {
        let empty: &[&str] = &[];
        assert_eq!(
            Call::Embed(empty.into()).validate().unwrap_err(),
            "no inputs"
        );
        assert!(Call::Embed("x".into()).validate().is_ok());
        assert!(
            Call::Generate(GenerateRequest::from("x").top_p(1.5))
                .validate()
                .is_err()
        );
        assert!(
            Call::Generate(GenerateRequest::from("x").temperature(f32::NAN))
                .validate()
                .is_err()
        );
        assert!(
            Call::Generate(GenerateRequest::from(Vec::<u32>::new()))
                .validate()
                .is_err()
        );
        assert_eq!(
            Call::Generate(GenerateRequest::from("x").stop("a").stop(""))
                .validate()
                .unwrap_err(),
            "stop string 1 is empty"
        );
        assert_eq!(
            Call::Transcribe(vec![0.0, f32::INFINITY].into())
                .validate()
                .unwrap_err(),
            "sample 1 is not finite"
        );
        assert!(
            Call::ClassifyImage(Vec::<u8>::new().into())
                .validate()
                .is_err()
        );
        assert!(
            Call::ImageTextSimilarity(ImageTextRequest::new(vec![], vec!["a".into()]))
                .validate()
                .is_err()
        );
        assert_eq!(
            Call::EmbedImage(EmbedImageRequest::new(vec![]))
                .validate()
                .unwrap_err(),
            "no images"
        );
        assert!(
            Call::EmbedImage(Vec::<u8>::new().into())
                .validate()
                .is_err()
        );
    }
}
