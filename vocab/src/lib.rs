//! The closed vocabularies shared by the skillgen generator, the `#[derive(Skill)]` macro and
//! the runtime: model [`Family`], Hugging Face [`Task`], input [`Modality`], and the typed
//! [`Capability`] methods a skill exposes.
//!
//! Every value has one canonical spelling (`as_str`, kebab-case, as written in `models.yaml`)
//! and one Rust identifier spelling (`ident`, snake_case, as written in `#[skill(...)]`).
//! Parsing accepts exactly those spellings; [`did_you_mean`] suggests the closest one for a typo.
//!
//! This crate has no dependencies so that the generator and the proc-macro can use it without
//! pulling in the runtime.

use std::fmt;

mod support;
pub use support::{
    Backend, MAX_EMBEDDING_ARCHITECTURES, MAX_OTHER_EMBEDDING_ARCHITECTURES, MaxJob, NativeImpl,
    RunFacts, Support, max_job, support,
};

/// A value was not one of the allowed spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// What kind of value was expected (`family`, `task`, ...).
    pub kind: &'static str,
    /// The rejected input.
    pub input: String,
    /// The closest allowed spelling, if one is close enough to be a plausible typo.
    pub suggestion: Option<&'static str>,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.kind, self.input)?;
        if let Some(s) = self.suggestion {
            write!(f, " (did you mean `{s}`?)")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownValue {}

macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $kind:literal, $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $str:literal / $ident:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The canonical spelling used in `models.yaml` and in messages.
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $str, )+ }
            }

            /// The snake_case spelling used as a Rust identifier in `#[skill(...)]`.
            pub const fn ident(self) -> &'static str {
                match self { $( $name::$variant => $ident, )+ }
            }

            /// The Rust variant name, e.g. for emitting `Family::EncoderDecoder`.
            pub const fn variant_name(self) -> &'static str {
                match self { $( $name::$variant => stringify!($variant), )+ }
            }

            /// Parse the canonical (kebab-case) spelling.
            pub fn parse(input: &str) -> Result<Self, UnknownValue> {
                match input {
                    $( $str => Ok($name::$variant), )+
                    _ => Err(UnknownValue {
                        kind: $kind,
                        input: input.to_owned(),
                        suggestion: did_you_mean(input, Self::ALL.iter().map(|v| v.as_str())),
                    }),
                }
            }

            /// Parse the identifier (snake_case) spelling.
            pub fn from_ident(input: &str) -> Result<Self, UnknownValue> {
                match input {
                    $( $ident => Ok($name::$variant), )+
                    _ => Err(UnknownValue {
                        kind: $kind,
                        input: input.to_owned(),
                        suggestion: did_you_mean(input, Self::ALL.iter().map(|v| v.ident())),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}
pub(crate) use vocabulary;

vocabulary! {
    /// The architecture family of a model type. Decides which task categories it may list.
    "family", Family {
        Encoder = "encoder" / "encoder",
        Decoder = "decoder" / "decoder",
        EncoderDecoder = "encoder-decoder" / "encoder_decoder",
        Vision = "vision" / "vision",
        VisionText = "vision-text" / "vision_text",
        Speech = "speech" / "speech",
        Audio = "audio" / "audio",
        Multimodal = "multimodal" / "multimodal",
        Video = "video" / "video",
        TimeSeries = "time-series" / "time_series",
        Diffusion = "diffusion" / "diffusion",
        ReinforcementLearning = "reinforcement-learning" / "reinforcement_learning",
        Graph = "graph" / "graph",
        Retrieval = "retrieval" / "retrieval",
    }
}

vocabulary! {
    /// A kind of input a model consumes.
    "modality", Modality {
        Text = "text" / "text",
        Image = "image" / "image",
        Audio = "audio" / "audio",
        Video = "video" / "video",
        TimeSeries = "time-series" / "time_series",
        Graph = "graph" / "graph",
        Trajectory = "trajectory" / "trajectory",
    }
}

vocabulary! {
    /// A group of tasks that need the same kind of model.
    "task category", TaskCategory {
        Generic = "generic" / "generic",
        Text = "text" / "text",
        Image = "image" / "image",
        Video = "video" / "video",
        Audio = "audio" / "audio",
        VisionLanguage = "vision-language" / "vision_language",
        TimeSeries = "time-series" / "time_series",
    }
}

vocabulary! {
    /// A transformers auto-class mapping: `MODEL` is `base-model`; `MODEL_FOR_X_Y` is `x-y`.
    "task", Task {
        BaseModel = "base-model" / "base_model",
        AudioClassification = "audio-classification" / "audio_classification",
        AudioFrameClassification = "audio-frame-classification" / "audio_frame_classification",
        AudioXvector = "audio-xvector" / "audio_xvector",
        Backbone = "backbone" / "backbone",
        CausalImageModeling = "causal-image-modeling" / "causal_image_modeling",
        CausalLm = "causal-lm" / "causal_lm",
        Ctc = "ctc" / "ctc",
        Decision = "decision" / "decision",
        DepthEstimation = "depth-estimation" / "depth_estimation",
        DocumentQuestionAnswering = "document-question-answering" / "document_question_answering",
        Image = "image" / "image",
        ImageClassification = "image-classification" / "image_classification",
        ImageMatting = "image-matting" / "image_matting",
        ImageSegmentation = "image-segmentation" / "image_segmentation",
        ImageTextToText = "image-text-to-text" / "image_text_to_text",
        ImageToImage = "image-to-image" / "image_to_image",
        InstanceSegmentation = "instance-segmentation" / "instance_segmentation",
        KeypointDetection = "keypoint-detection" / "keypoint_detection",
        KeypointMatching = "keypoint-matching" / "keypoint_matching",
        MaskedImageModeling = "masked-image-modeling" / "masked_image_modeling",
        MaskedLm = "masked-lm" / "masked_lm",
        MaskGeneration = "mask-generation" / "mask_generation",
        MultimodalLm = "multimodal-lm" / "multimodal_lm",
        MultipleChoice = "multiple-choice" / "multiple_choice",
        NextSentencePrediction = "next-sentence-prediction" / "next_sentence_prediction",
        NormalEstimation = "normal-estimation" / "normal_estimation",
        ObjectDetection = "object-detection" / "object_detection",
        PointmapEstimation = "pointmap-estimation" / "pointmap_estimation",
        PoseEstimation = "pose-estimation" / "pose_estimation",
        Pretraining = "pretraining" / "pretraining",
        QuestionAnswering = "question-answering" / "question_answering",
        Retrieval = "retrieval" / "retrieval",
        Rnnt = "rnnt" / "rnnt",
        SemanticSegmentation = "semantic-segmentation" / "semantic_segmentation",
        SequenceClassification = "sequence-classification" / "sequence_classification",
        SeqToSeqCausalLm = "seq-to-seq-causal-lm" / "seq_to_seq_causal_lm",
        SpeechSeq2Seq = "speech-seq-2-seq" / "speech_seq_2_seq",
        TableQuestionAnswering = "table-question-answering" / "table_question_answering",
        TableRecognition = "table-recognition" / "table_recognition",
        Tdt = "tdt" / "tdt",
        TextEncoding = "text-encoding" / "text_encoding",
        TextRecognition = "text-recognition" / "text_recognition",
        TextToSpectrogram = "text-to-spectrogram" / "text_to_spectrogram",
        TextToWaveform = "text-to-waveform" / "text_to_waveform",
        TimeSeriesClassification = "time-series-classification" / "time_series_classification",
        TimeSeriesPrediction = "time-series-prediction" / "time_series_prediction",
        TimeSeriesRegression = "time-series-regression" / "time_series_regression",
        TokenClassification = "token-classification" / "token_classification",
        UniversalSegmentation = "universal-segmentation" / "universal_segmentation",
        VideoClassification = "video-classification" / "video_classification",
        VisualQuestionAnswering = "visual-question-answering" / "visual_question_answering",
        ZeroShotImageClassification = "zero-shot-image-classification" / "zero_shot_image_classification",
        ZeroShotObjectDetection = "zero-shot-object-detection" / "zero_shot_object_detection",
    }
}

vocabulary! {
    /// A typed method a skill exposes, chosen from its family and tasks.
    "capability", Capability {
        /// `embed`: sentence/feature embeddings.
        Embed = "embed" / "embed",
        /// `fill_mask`: predict a masked token.
        FillMask = "fill-mask" / "fill_mask",
        /// `classify`: sequence classification.
        Classify = "classify" / "classify",
        /// `generate`: causal or sequence-to-sequence text generation.
        Generate = "generate" / "generate",
        /// `transcribe`: speech to text from 16 kHz PCM.
        Transcribe = "transcribe" / "transcribe",
        /// `classify_image`: image classification.
        ClassifyImage = "classify-image" / "classify_image",
        /// `image_text_similarity`: CLIP-style image/text matching.
        ImageTextSimilarity = "image-text-similarity" / "image_text_similarity",
        /// `classify_tokens`: token classification (one label per token).
        ClassifyTokens = "classify-tokens" / "classify_tokens",
        /// `answer_question`: extractive question answering (a span of the context).
        AnswerQuestion = "answer-question" / "answer_question",
        /// `embed_image`: one feature vector per image (the vision model's pooled output).
        EmbedImage = "embed-image" / "embed_image",
        /// `chat`: the reply to a conversation, rendered by the model's chat template.
        Chat = "chat" / "chat",
    }
}

impl Task {
    /// The category that decides which families may list this task.
    pub const fn category(self) -> TaskCategory {
        use Task::*;
        match self {
            BaseModel | Pretraining | Backbone | Retrieval => TaskCategory::Generic,
            CausalLm
            | MaskedLm
            | MultipleChoice
            | NextSentencePrediction
            | QuestionAnswering
            | SequenceClassification
            | SeqToSeqCausalLm
            | TableQuestionAnswering
            | TextEncoding
            | TokenClassification
            // In transformers 5.23 MODEL_FOR_DECISION is `JevForDecision`: a head on a language
            // model that scores label tokens from text, not a trajectory model.
            | Decision => TaskCategory::Text,
            Image
            | ImageClassification
            | CausalImageModeling
            | DepthEstimation
            | ImageMatting
            | ImageSegmentation
            | ImageToImage
            | InstanceSegmentation
            | KeypointDetection
            | KeypointMatching
            | MaskedImageModeling
            | MaskGeneration
            | NormalEstimation
            | ObjectDetection
            | PointmapEstimation
            | PoseEstimation
            | SemanticSegmentation
            | TableRecognition
            | UniversalSegmentation
            | TextRecognition => TaskCategory::Image,
            VideoClassification => TaskCategory::Video,
            AudioClassification
            | AudioFrameClassification
            | AudioXvector
            | Ctc
            | Rnnt
            | Tdt
            | SpeechSeq2Seq
            | TextToSpectrogram
            | TextToWaveform => TaskCategory::Audio,
            ImageTextToText
            | MultimodalLm
            | VisualQuestionAnswering
            | DocumentQuestionAnswering
            | ZeroShotImageClassification
            | ZeroShotObjectDetection => TaskCategory::VisionLanguage,
            TimeSeriesClassification | TimeSeriesPrediction | TimeSeriesRegression => {
                TaskCategory::TimeSeries
            }
        }
    }

    /// The transformers auto-mapping constant this task comes from, e.g. `MODEL_FOR_MASKED_LM`.
    pub fn hf_mapping(self) -> String {
        match self {
            Task::BaseModel => "MODEL".to_owned(),
            t => format!("MODEL_FOR_{}", t.ident().to_ascii_uppercase()),
        }
    }
}

impl Family {
    /// The task categories a model of this family may list.
    pub const fn accepted_categories(self) -> &'static [TaskCategory] {
        use TaskCategory as C;
        match self {
            Family::Encoder | Family::Decoder | Family::EncoderDecoder | Family::Retrieval => {
                &[C::Generic, C::Text]
            }
            Family::Vision => &[C::Generic, C::Image, C::Video],
            Family::VisionText => &[C::Generic, C::Text, C::Image, C::VisionLanguage],
            Family::Speech | Family::Audio => &[C::Generic, C::Text, C::Audio],
            Family::Multimodal => &[
                C::Generic,
                C::Text,
                C::Image,
                C::Video,
                C::Audio,
                C::VisionLanguage,
            ],
            Family::Video => &[C::Generic, C::Image, C::Video, C::VisionLanguage],
            Family::TimeSeries => &[C::Generic, C::TimeSeries],
            Family::Diffusion => &[C::Generic, C::Image],
            Family::ReinforcementLearning | Family::Graph => &[C::Generic],
        }
    }

    /// Whether a model of this family may list `task`.
    pub fn accepts(self, task: Task) -> bool {
        self.accepted_categories().contains(&task.category())
    }

    /// The module the generated crate groups this family's skills under.
    pub const fn module(self) -> &'static str {
        self.ident()
    }
}

/// The capability table, written once: for each [`Capability`], its variant, method name,
/// request type, output type and one-line doc. `for_each_capability!(callback)` expands to
/// `callback! { Variant method(Request) -> Output: "doc"; ... }`. The derive macro, the
/// runtime's `Call`/`Output` enums, its capability functions and `DynSkill`'s methods are all
/// generated from it (the derive through [`Capability::signature`]).
#[macro_export]
macro_rules! for_each_capability {
    ($callback:ident) => {
        $callback! {
            Embed embed(EmbedRequest) -> Embeddings: "One embedding vector per input.";
            FillMask fill_mask(FillMaskRequest) -> FillMaskOutput: "Predict the masked tokens.";
            Classify classify(ClassifyRequest) -> Classifications: "Classify each input sequence.";
            Generate generate(GenerateRequest) -> Generation: "Generate text from a prompt.";
            Transcribe transcribe(TranscribeRequest) -> Transcription: "Transcribe 16 kHz mono PCM.";
            ClassifyImage classify_image(ClassifyImageRequest) -> ImageClassification: "Classify an image.";
            ImageTextSimilarity image_text_similarity(ImageTextRequest) -> Similarity: "Score images against texts.";
            ClassifyTokens classify_tokens(ClassifyTokensRequest) -> TokenClassifications: "Label each token of each input.";
            AnswerQuestion answer_question(QuestionRequest) -> Answer: "Find the answer span in a context.";
            EmbedImage embed_image(EmbedImageRequest) -> ImageEmbeddings: "One feature vector per image.";
            Chat chat(ChatRequest) -> ChatReply: "The assistant's reply to a conversation (the model's chat template).";
        }
    };
}

/// The typed signature of a capability's method (see [`for_each_capability!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// The method name, e.g. `embed`.
    pub method: &'static str,
    /// The request type in the runtime's `request` module, e.g. `EmbedRequest`.
    pub request: &'static str,
    /// The output type, e.g. `Embeddings`.
    pub output: &'static str,
    /// One line of documentation.
    pub doc: &'static str,
}

macro_rules! signatures {
    ($($variant:ident $method:ident($req:ident) -> $out:ident: $doc:literal;)*) => {
        impl Capability {
            /// The method, request and output types of this capability.
            pub const fn signature(self) -> Signature {
                match self {$(
                    Capability::$variant => Signature {
                        method: stringify!($method),
                        request: stringify!($req),
                        output: stringify!($out),
                        doc: $doc,
                    },
                )*}
            }
        }
    };
}
for_each_capability!(signatures);

impl Capability {
    /// The method name the skill exposes for this capability.
    pub const fn method(self) -> &'static str {
        self.ident()
    }

    /// The tasks (in preference order) that provide this capability for `family`.
    /// An empty slice means the family cannot have this capability.
    pub const fn tasks_for(self, family: Family) -> &'static [Task] {
        match self {
            Capability::Embed => match family {
                Family::Encoder | Family::Retrieval => &[Task::TextEncoding, Task::BaseModel],
                _ => &[Task::TextEncoding],
            },
            Capability::FillMask => &[Task::MaskedLm],
            Capability::Classify => &[Task::SequenceClassification],
            Capability::Generate => match family {
                Family::EncoderDecoder => &[Task::SeqToSeqCausalLm, Task::CausalLm],
                _ => &[Task::CausalLm, Task::SeqToSeqCausalLm],
            },
            Capability::Transcribe => &[Task::SpeechSeq2Seq, Task::Ctc],
            Capability::ClassifyImage => &[Task::ImageClassification],
            Capability::ImageTextSimilarity => &[Task::ZeroShotImageClassification],
            Capability::ClassifyTokens => &[Task::TokenClassification],
            Capability::AnswerQuestion => &[Task::QuestionAnswering],
            Capability::EmbedImage => match family {
                Family::Vision => &[Task::Image, Task::BaseModel],
                _ => &[],
            },
            // The conversation of a chat model: a decoder's or a multimodal model's causal LM
            // (encoders' and encoder-decoders' LM heads have no chat templates).
            Capability::Chat => match family {
                Family::Decoder | Family::Multimodal => &[Task::CausalLm],
                _ => &[],
            },
        }
    }

    /// The task a skill of `family` listing `tasks` uses for this capability, if it has it.
    pub fn task_in(self, family: Family, tasks: &[Task]) -> Option<Task> {
        self.tasks_for(family)
            .iter()
            .copied()
            .find(|t| tasks.contains(t))
    }

    /// Every capability a skill of `family` listing `tasks` has, in declaration order.
    pub fn all_for(family: Family, tasks: &[Task]) -> Vec<(Capability, Task)> {
        Capability::ALL
            .iter()
            .filter_map(|&c| c.task_in(family, tasks).map(|t| (c, t)))
            .collect()
    }
}

/// The candidate closest to `input` by edit distance, if it is close enough to be a typo
/// (distance ≤ max(1, len/3)). Ties go to the earliest candidate.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let d = levenshtein(&input.to_ascii_lowercase(), c);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_table_names_each_method_once() {
        for c in Capability::ALL {
            assert_eq!(c.signature().method, c.method());
        }
    }

    #[test]
    fn spellings_round_trip_and_are_distinct() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            s: fn(T) -> &'static str,
            i: fn(T) -> &'static str,
            p: fn(&str) -> Result<T, UnknownValue>,
            pi: fn(&str) -> Result<T, UnknownValue>,
        ) {
            let mut seen = std::collections::BTreeSet::new();
            for &v in all {
                assert_eq!(p(s(v)).unwrap(), v);
                assert_eq!(pi(i(v)).unwrap(), v);
                assert_eq!(s(v).replace('-', "_"), i(v), "ident is the snake form");
                assert!(seen.insert(s(v)), "duplicate spelling {}", s(v));
            }
        }
        check(
            Family::ALL,
            Family::as_str,
            Family::ident,
            Family::parse,
            Family::from_ident,
        );
        check(
            Task::ALL,
            Task::as_str,
            Task::ident,
            Task::parse,
            Task::from_ident,
        );
        check(
            Modality::ALL,
            Modality::as_str,
            Modality::ident,
            Modality::parse,
            Modality::from_ident,
        );
        check(
            Capability::ALL,
            Capability::as_str,
            Capability::ident,
            Capability::parse,
            Capability::from_ident,
        );
    }

    #[test]
    fn transformers_5_23_has_54_task_mappings() {
        assert_eq!(Task::ALL.len(), 54);
        assert_eq!(Task::BaseModel.hf_mapping(), "MODEL");
        assert_eq!(
            Task::SeqToSeqCausalLm.hf_mapping(),
            "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM"
        );
        assert_eq!(
            Task::SpeechSeq2Seq.hf_mapping(),
            "MODEL_FOR_SPEECH_SEQ_2_SEQ"
        );
    }

    #[test]
    fn typos_get_suggestions_and_nonsense_does_not() {
        let e = Family::parse("encodr").unwrap_err();
        assert_eq!(e.suggestion, Some("encoder"));
        assert_eq!(
            e.to_string(),
            "unknown family `encodr` (did you mean `encoder`?)"
        );
        assert_eq!(
            Task::parse("masked_lm").unwrap_err().suggestion,
            Some("masked-lm")
        );
        assert_eq!(Family::parse("zzzzzzzz").unwrap_err().suggestion, None);
        assert_eq!(
            Task::from_ident("fil_mask").unwrap_err().suggestion,
            None,
            "fil_mask is not a task ident; fill-mask is a capability"
        );
    }

    #[test]
    fn family_task_consistency() {
        assert!(Family::Encoder.accepts(Task::MaskedLm));
        assert!(Family::Encoder.accepts(Task::CausalLm));
        assert!(!Family::Encoder.accepts(Task::ImageClassification));
        assert!(!Family::Vision.accepts(Task::CausalLm));
        assert!(Family::Speech.accepts(Task::SpeechSeq2Seq));
        assert!(!Family::TimeSeries.accepts(Task::MaskedLm));
        for &f in Family::ALL {
            assert!(f.accepts(Task::BaseModel), "{f} must accept base-model");
        }
    }

    #[test]
    fn capabilities_follow_family_and_tasks() {
        let caps = Capability::all_for(
            Family::Encoder,
            &[
                Task::BaseModel,
                Task::MaskedLm,
                Task::SequenceClassification,
            ],
        );
        assert_eq!(
            caps,
            vec![
                (Capability::Embed, Task::BaseModel),
                (Capability::FillMask, Task::MaskedLm),
                (Capability::Classify, Task::SequenceClassification),
            ]
        );
        // Chat is a decoder's (or multimodal model's) causal LM, never an encoder-decoder's.
        assert_eq!(
            Capability::Chat.task_in(Family::Decoder, &[Task::CausalLm]),
            Some(Task::CausalLm)
        );
        for family in [Family::EncoderDecoder, Family::Encoder] {
            assert_eq!(
                Capability::Chat.task_in(family, &[Task::CausalLm, Task::SeqToSeqCausalLm]),
                None
            );
        }
        // A decoder's base model is not an embedding model.
        assert!(Capability::all_for(Family::Decoder, &[Task::BaseModel]).is_empty());
        // Encoder-decoders prefer their seq2seq head.
        assert_eq!(
            Capability::Generate.task_in(
                Family::EncoderDecoder,
                &[Task::CausalLm, Task::SeqToSeqCausalLm]
            ),
            Some(Task::SeqToSeqCausalLm)
        );
    }
}
