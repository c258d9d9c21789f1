//! What runs where: the backends, the native (candle) implementations a registry entry may
//! name, which tasks a MAX architecture serves, and the support status of a (model type, task)
//! on a backend.
//!
//! These are the rules of the one table of what runs. The registry (`models.yaml`) carries the
//! facts per model type (`native:` task → implementation, `refused:` backend → reason, `max:`
//! architectures); the generator renders `SUPPORT.md` and the skills' `SkillInfo` from them
//! with [`support`], and the runtime's dispatch asks the same function. Nothing else decides.

use std::fmt;

use crate::{Capability, Family, Task, UnknownValue, did_you_mean};

/// A backend: who executes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    /// candle (CPU; CUDA and Metal with cargo features).
    Candle,
    /// Modular MAX, through `max serve`'s OpenAI-compatible HTTP API.
    Max,
}

impl Backend {
    /// Every backend, in dispatch-independent declaration order.
    pub const ALL: &'static [Backend] = &[Backend::Candle, Backend::Max];

    /// The canonical spelling (`models.yaml`, JSON): `candle`, `max`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Candle => "candle",
            Backend::Max => "max",
        }
    }

    /// The Rust variant name.
    pub const fn variant_name(self) -> &'static str {
        match self {
            Backend::Candle => "Candle",
            Backend::Max => "Max",
        }
    }

    /// Parse the canonical spelling.
    pub fn parse(input: &str) -> Result<Self, UnknownValue> {
        match input {
            "candle" => Ok(Backend::Candle),
            "max" => Ok(Backend::Max),
            _ => Err(UnknownValue {
                kind: "backend",
                input: input.to_owned(),
                suggestion: did_you_mean(input, Self::ALL.iter().map(|b| b.as_str())),
            }),
        }
    }
}

/// Messages name the products: `candle`, `MAX`.
impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Candle => "candle",
            Backend::Max => "MAX",
        })
    }
}

crate::vocabulary! {
    /// A native (candle) implementation a registry entry may name for a task. The candle
    /// backend maps every value to one architecture module (an exhaustive match), so a value
    /// without an implementation does not compile.
    "native implementation", NativeImpl {
        /// Text encoders (the parametric BERT-like encoder, and `distilbert`): embeddings,
        /// fill-mask, sequence and token classification, extractive question answering.
        Encoder = "encoder" / "encoder",
        /// The config-driven causal decoder (generation).
        Decoder = "decoder" / "decoder",
        /// T5: encoder embeddings and greedy sequence-to-sequence generation.
        T5 = "t5" / "t5",
        /// Image classification with the parametric ViT-like encoder.
        Vit = "vit" / "vit",
        /// Whisper speech recognition.
        Whisper = "whisper" / "whisper",
        /// BART-like encoder-decoders: greedy sequence-to-sequence generation.
        Seq2seq = "seq2seq" / "seq2seq",
        /// wav2vec2-like CTC speech recognition.
        Ctc = "ctc" / "ctc",
        /// CLIP / SigLIP dual encoders: zero-shot image classification.
        Dual = "dual" / "dual",
        /// Convolutional image classifiers (ResNet, RegNet, ConvNeXt, PoolFormer, MobileNet).
        Cnn = "cnn" / "cnn",
        /// Shifted-window vision transformers (Swin, Donut's Swin): image classification.
        Swin = "swin" / "swin",
        /// Pyramid vision transformers and kin (PVT, PVT v2, SegFormer's encoder, CvT, LeViT,
        /// FocalNet): image classification.
        Pvt = "pvt" / "pvt",
    }
}

/// What MAX runs for a model type and task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxJob {
    /// `/v1/embeddings` (the `embed` capability).
    Embed,
    /// `/v1/completions` (the `generate` capability).
    Generate,
}

/// MAX architectures whose embeddings skillgen turns into the model's sentence embeddings
/// (MAX 26.7 returns token sums for them; the MAX backend corrects them).
pub const MAX_EMBEDDING_ARCHITECTURES: &[&str] = &["bert", "mpnet"];
/// MAX embedding architectures whose pooling skillgen does not reproduce.
pub const MAX_OTHER_EMBEDDING_ARCHITECTURES: &[&str] = &["qwen3_embedding"];

/// What MAX serves for a model type of `family` whose registry entry names the MAX
/// `architectures`, doing `task`; or, when it does not, what those architectures do serve.
pub fn max_job(architectures: &[&str], family: Family, task: Task) -> Result<MaxJob, &'static str> {
    let embedder = architectures
        .iter()
        .any(|a| MAX_EMBEDDING_ARCHITECTURES.contains(a));
    let generator = architectures.iter().any(|a| {
        !MAX_EMBEDDING_ARCHITECTURES.contains(a) && !MAX_OTHER_EMBEDDING_ARCHITECTURES.contains(a)
    });
    if embedder && Capability::Embed.tasks_for(family).contains(&task) {
        return Ok(MaxJob::Embed);
    }
    if generator && task == Task::CausalLm {
        return Ok(MaxJob::Generate);
    }
    Err(match (embedder, generator) {
        (true, true) => "embeddings (base-model, text-encoding) and text generation (causal-lm)",
        (true, false) => "embeddings (base-model, text-encoding)",
        (false, true) => "text generation (causal-lm)",
        (false, false) => "embeddings whose pooling this runtime does not reproduce",
    })
}

/// The facts of one registry entry that decide what runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFacts<'a> {
    /// The family.
    pub family: Family,
    /// `native:`: task → candle implementation, verified against a reference.
    pub native: &'a [(Task, NativeImpl)],
    /// `refused:`: backend → why skillgen does not run this model type there.
    pub refused: &'a [(Backend, &'a str)],
    /// `max:`: MAX architecture names.
    pub max: &'a [&'a str],
}

/// The support status of one (model type, task) on one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support<'a> {
    /// skillgen's own candle implementation runs it; a test compares it with a transformers
    /// reference.
    Verified(NativeImpl),
    /// MAX's implementation of this architecture runs it, through `max serve`.
    Delegated {
        /// The MAX architecture.
        architecture: &'a str,
        /// What MAX runs.
        job: MaxJob,
    },
    /// skillgen refuses to run it on this backend (it would compute wrong numbers).
    Refused(&'a str),
    /// Nothing runs it on this backend.
    NotImplemented,
}

impl Support<'_> {
    /// The status code: `verified`, `delegated`, `refused`, `not_implemented`.
    pub const fn code(&self) -> &'static str {
        match self {
            Support::Verified(_) => "verified",
            Support::Delegated { .. } => "delegated",
            Support::Refused(_) => "refused",
            Support::NotImplemented => "not_implemented",
        }
    }

    /// Whether the backend runs it.
    pub const fn runs(&self) -> bool {
        matches!(self, Support::Verified(_) | Support::Delegated { .. })
    }
}

/// The status of `task` on `backend` for a model type with these facts.
///
/// candle: a `native:` implementation for the task is verified; otherwise a `refused:` reason,
/// otherwise not implemented. MAX: a `refused:` reason first; otherwise delegated when a MAX
/// architecture serves the task ([`max_job`]); otherwise not implemented.
pub fn support<'a>(facts: &RunFacts<'a>, task: Task, backend: Backend) -> Support<'a> {
    let refused = facts
        .refused
        .iter()
        .find(|(b, _)| *b == backend)
        .map(|(_, why)| *why);
    match backend {
        Backend::Candle => match facts.native.iter().find(|(t, _)| *t == task) {
            Some((_, implementation)) => Support::Verified(*implementation),
            None => refused.map_or(Support::NotImplemented, Support::Refused),
        },
        Backend::Max => {
            if let Some(why) = refused {
                return Support::Refused(why);
            }
            match (max_job(facts.max, facts.family, task), facts.max.first()) {
                (Ok(job), Some(architecture)) => Support::Delegated { architecture, job },
                _ => Support::NotImplemented,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_spellings_round_trip() {
        for b in Backend::ALL {
            assert_eq!(Backend::parse(b.as_str()).unwrap(), *b);
        }
        assert_eq!(Backend::Max.to_string(), "MAX");
        assert_eq!(
            Backend::parse("candel").unwrap_err().suggestion,
            Some("candle")
        );
    }

    #[test]
    fn max_serves_embeddings_and_generation_by_architecture() {
        assert_eq!(
            max_job(&["bert"], Family::Encoder, Task::BaseModel),
            Ok(MaxJob::Embed)
        );
        assert!(max_job(&["bert"], Family::Encoder, Task::MaskedLm).is_err());
        assert_eq!(
            max_job(&["llama3"], Family::Decoder, Task::CausalLm),
            Ok(MaxJob::Generate)
        );
        assert_eq!(
            max_job(&["qwen3_embedding"], Family::Decoder, Task::CausalLm),
            Err("embeddings whose pooling this runtime does not reproduce")
        );
    }

    #[test]
    fn support_status_follows_the_facts() {
        let facts = RunFacts {
            family: Family::Decoder,
            native: &[(Task::CausalLm, NativeImpl::Decoder)],
            refused: &[],
            max: &["llama3"],
        };
        assert_eq!(
            support(&facts, Task::CausalLm, Backend::Candle),
            Support::Verified(NativeImpl::Decoder)
        );
        assert_eq!(
            support(&facts, Task::SequenceClassification, Backend::Candle),
            Support::NotImplemented
        );
        assert_eq!(
            support(&facts, Task::CausalLm, Backend::Max).code(),
            "delegated"
        );
        let refused = RunFacts {
            refused: &[(Backend::Candle, "wrong multipliers")],
            native: &[],
            ..facts
        };
        assert_eq!(
            support(&refused, Task::CausalLm, Backend::Candle),
            Support::Refused("wrong multipliers")
        );
        assert!(support(&refused, Task::CausalLm, Backend::Max).runs());
    }
}
