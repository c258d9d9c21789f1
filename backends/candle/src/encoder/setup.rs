//! What every task-head encoder (BERT-like, ModernBERT, DeBERTa, rotary, XLM) sets up the same
//! way around its body — the capability its head answers, the `id2label` labels, softmax or
//! sigmoid scores from `problem_type`, sentence-transformers pooling and truncation for
//! `embed`, the tokenizer — and the [`TaskHeads`] answers over its head's outputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Tensor;
use skillgen_checkpoint::{Fields, sentence_max_len, sentence_transformers_head};
use skillgen_runtime::request::{Embeddings, Pooling, TextBatch};
use skillgen_runtime::{Capability, SkillError};

use crate::encoder::bertlike::EncoderHead;
use crate::heads::TaskHeads;

/// The head-independent parts of a loaded encoder.
#[derive(Debug)]
pub(crate) struct HeadSetup {
    pub(crate) capability: Capability,
    pub(crate) labels: Vec<String>,
    /// Scores are independent sigmoids (`multi_label_classification`, or one label).
    pub(crate) sigmoid: bool,
    /// `embed`'s pooling and normalisation (sentence-transformers' files; mean, none).
    pub(crate) pooling: Pooling,
    pub(crate) normalize: bool,
    pub(crate) tokenizer: Option<Arc<tokenizers::Tokenizer>>,
    pub(crate) tokenizer_path: PathBuf,
}

/// The capability `head` answers.
pub(crate) fn capability(head: EncoderHead) -> Capability {
    match head {
        EncoderHead::Base => Capability::Embed,
        EncoderHead::Sequence => Capability::Classify,
        EncoderHead::Tokens => Capability::ClassifyTokens,
        EncoderHead::Qa => Capability::AnswerQuestion,
        EncoderHead::Mlm => Capability::FillMask,
    }
}

/// The `id2label` labels of a classifier head (none for the others).
pub(crate) fn labels(f: &Fields<'_>, head: EncoderHead) -> Result<Vec<String>, SkillError> {
    match head {
        EncoderHead::Sequence | EncoderHead::Tokens => f.labels(),
        _ => Ok(Vec::new()),
    }
}

impl HeadSetup {
    /// One unpadded input's ids against the model: not empty, every id below `vocab`, at most
    /// `max_tokens` tokens (`limit` says where that limit comes from).
    pub(crate) fn check_ids(
        &self,
        ids: &[u32],
        vocab: usize,
        max_tokens: usize,
        limit: &dyn std::fmt::Display,
    ) -> Result<(), SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: self.capability,
            detail,
        };
        if ids.is_empty() {
            return Err(invalid("an input has no tokens".into()));
        }
        if let Some((i, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= vocab)
        {
            return Err(invalid(format!(
                "token {i} has token id {id}, outside the vocabulary (size {vocab})"
            )));
        }
        if ids.len() > max_tokens {
            return Err(invalid(format!(
                "an input has {} tokens; the model takes at most {max_tokens} ({limit})",
                ids.len()
            )));
        }
        Ok(())
    }

    /// Finish loading `dir` for `head` with its `labels`: `max_len` is the most tokens an
    /// `embed` input keeps (sentence-transformers' `max_seq_length` caps it further; task heads
    /// refuse over-long inputs instead of truncating).
    pub(crate) fn finish(
        dir: &Path,
        f: &Fields<'_>,
        head: EncoderHead,
        labels: Vec<String>,
        max_len: usize,
    ) -> Result<Self, SkillError> {
        Self::finish_parsed(
            dir,
            f,
            head,
            labels,
            max_len,
            skillgen_checkpoint::parse_tokenizer(dir)?,
        )
    }

    /// [`HeadSetup::finish`] with the tokenizer already parsed
    /// ([`skillgen_checkpoint::parse_tokenizer`], e.g. beside reading the weights).
    pub(crate) fn finish_parsed(
        dir: &Path,
        f: &Fields<'_>,
        head: EncoderHead,
        labels: Vec<String>,
        max_len: usize,
        (tokenizer, tokenizer_path): (Option<tokenizers::Tokenizer>, PathBuf),
    ) -> Result<Self, SkillError> {
        let n = labels.len();
        let sigmoid = match f.str_opt("problem_type")? {
            Some("multi_label_classification") => true,
            Some("regression") if n > 0 => {
                return Err(f.err(
                    "problem_type",
                    "`regression` heads are not classifiers (scores would be raw values)",
                ));
            }
            _ => n == 1,
        };
        let capability = capability(head);
        let (pooling, normalize, truncate) = if capability == Capability::Embed {
            let (pooling, normalize) = sentence_transformers_head(dir)?;
            let max_len = sentence_max_len(dir)?.map_or(max_len, |m| m.min(max_len));
            (pooling, normalize, Some(max_len))
        } else {
            (Pooling::Mean, false, None)
        };
        let tokenizer = tokenizer
            .map(|t| skillgen_checkpoint::configure_tokenizer(t, &tokenizer_path, truncate))
            .transpose()?;
        Ok(Self {
            capability,
            labels,
            sigmoid,
            pooling,
            normalize,
            tokenizer: tokenizer.map(Arc::new),
            tokenizer_path,
        })
    }
}

/// An encoder with a [`HeadSetup`] and per-token head outputs (one row for a sequence head).
pub(crate) trait HeadModel {
    fn setup(&self) -> &HeadSetup;
    /// The head's outputs for one unpadded input.
    fn outputs(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError>;
    /// The width of `embed`'s vectors.
    fn width(&self) -> usize;
    /// What `embed` pools for one unpadded input: the last hidden state `[n, width]`, or with
    /// [`Pooling::Pooler`] the model's own pooled output `[1, width]`.
    fn embed_rows(&self, ids: &[u32]) -> Result<Tensor, SkillError>;

    /// [`HeadModel::embed_rows`] of several inputs run together (a model that can pads and
    /// masks them; by default each runs alone).
    fn embed_rows_batch(&self, rows: &[&[u32]]) -> Result<Vec<Tensor>, SkillError> {
        rows.iter().map(|ids| self.embed_rows(ids)).collect()
    }

    /// `embed`: tokenise (text input; truncated as sentence-transformers does), run the inputs
    /// in length-sorted chunks of `batch_size`, pool as the setup says (sentence-transformers'
    /// files, default mean), optionally L2-normalise.
    fn embed(
        &self,
        input: &TextBatch,
        normalize: Option<bool>,
        batch_size: usize,
    ) -> Result<Embeddings, SkillError>
    where
        Self: Sized,
    {
        let s = self.setup();
        let how = (s.pooling, normalize.unwrap_or(s.normalize), self.width());
        crate::heads::embed_batched(self, input, how, batch_size, |rows| {
            self.embed_rows_batch(rows)
        })
    }
}

impl<T: HeadModel> TaskHeads for T {
    fn tokenizer_for(&self, why: &'static str) -> Result<&tokenizers::Tokenizer, SkillError> {
        let s = self.setup();
        s.tokenizer
            .as_deref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: s.tokenizer_path.clone(),
                what: why,
            })
    }

    fn tokenizer_file(&self) -> &Path {
        &self.setup().tokenizer_path
    }

    fn labels(&self) -> &[String] {
        &self.setup().labels
    }

    fn sigmoid(&self) -> bool {
        self.setup().sigmoid
    }

    fn sequence_logits(&self, ids: &[u32]) -> Result<Vec<f32>, SkillError> {
        Ok(self.outputs(ids)?.pop().unwrap_or_default())
    }

    fn token_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.outputs(ids)
    }
}
