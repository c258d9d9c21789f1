//! BERT's embeddings and task heads, for the encoders whose checkpoints name them as BERT does
//! (FNet, SqueezeBERT). Embeddings: word + position + token type 0, then `LayerNorm`. Heads over
//! the body's last hidden state: `pooler.dense` + tanh then `classifier` (sequence
//! classification), `classifier` (tokens), `qa_outputs`, and the MLM head
//! `cls.predictions.{transform, bias}` with the decoder tied to the word embeddings.

use candle_core::{Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::encoder::bertlike::EncoderHead;
use crate::weights::{Weights, layer_norm as norm, linear};

/// BERT's embeddings `{prefix}embeddings.{word_embeddings, position_embeddings,
/// token_type_embeddings, LayerNorm}`.
#[derive(Debug)]
pub(crate) struct BertEmbeddings {
    pub(crate) word: Tensor,
    pos: Tensor,
    token_type: Tensor,
    ln: LayerNorm,
}

impl BertEmbeddings {
    /// Take them from `w` under `e` (`embeddings` or `<prefix>.embeddings`): `(vocab, positions,
    /// token types, width)` rows, LayerNorm at `eps`.
    pub(crate) fn load(
        w: &mut Weights,
        e: &str,
        (vocab, max_pos, types, d): (usize, usize, usize, usize),
        eps: f64,
    ) -> Result<Self, SkillError> {
        Ok(Self {
            word: w.take(&format!("{e}.word_embeddings.weight"), &[vocab, d])?,
            pos: w.take(&format!("{e}.position_embeddings.weight"), &[max_pos, d])?,
            token_type: w.take(&format!("{e}.token_type_embeddings.weight"), &[types, d])?,
            ln: norm(w, &format!("{e}.LayerNorm"), d, eps)?,
        })
    }

    /// `[n, width]` for `ids` (already checked against the vocabulary and positions).
    pub(crate) fn forward(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let x = self.word.index_select(&Tensor::new(ids, device)?, 0)?;
        let x = x
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?
            .add(&self.pos.narrow(0, 0, ids.len())?)?;
        self.ln.forward(&x)
    }
}

/// One loaded head.
#[derive(Debug)]
pub(crate) enum BertHead {
    Base,
    /// `tanh(pooler(h[0]))` then `classifier`.
    Sequence(Linear, Linear),
    PerToken(Linear),
    /// The transform (dense, activation, LayerNorm) and the decoder.
    Mlm(Linear, Act, LayerNorm, Linear),
}

/// The sizes a head needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadDims {
    pub(crate) hidden: usize,
    pub(crate) vocab: usize,
    /// Labels of a classifier head.
    pub(crate) labels: usize,
    pub(crate) eps: f64,
    /// The MLM transform's activation (`hidden_act`).
    pub(crate) act: Act,
}

impl BertHead {
    /// Take `head`'s tensors from `w`: the body is under `p` (`""` or `"<prefix>."`), `word`
    /// the word embeddings (the tied MLM decoder). The pooler is left unused except by the
    /// sequence head; a bare body's file (`p` set) leaves everything outside the body for
    /// `Base`.
    pub(crate) fn load(
        w: &mut Weights,
        p: &str,
        head: EncoderHead,
        dims: HeadDims,
        word: &Tensor,
    ) -> Result<Self, SkillError> {
        let HeadDims {
            hidden: d,
            vocab,
            labels: n,
            eps,
            act,
        } = dims;
        let pooler = format!("{p}pooler.dense");
        let out = match head {
            EncoderHead::Base => {
                if !p.is_empty() {
                    w.leave(|name| !name.starts_with(p));
                }
                Self::Base
            }
            EncoderHead::Sequence => Self::Sequence(
                linear(w, &pooler, d, d, true)?,
                linear(w, "classifier", n, d, true)?,
            ),
            EncoderHead::Tokens => Self::PerToken(linear(w, "classifier", n, d, true)?),
            EncoderHead::Qa => Self::PerToken(linear(w, "qa_outputs", 2, d, true)?),
            EncoderHead::Mlm => {
                let t = "cls.predictions";
                let dense = linear(w, &format!("{t}.transform.dense"), d, d, true)?;
                let ln = norm(w, &format!("{t}.transform.LayerNorm"), d, eps)?;
                let weight = if w.has(&format!("{t}.decoder.weight")) {
                    w.take(&format!("{t}.decoder.weight"), &[vocab, d])?
                } else {
                    word.clone()
                };
                // transformers ties `decoder.bias` to `predictions.bias`.
                if w.has(&format!("{t}.decoder.bias")) {
                    w.take(&format!("{t}.decoder.bias"), &[vocab])?;
                }
                let bias = w.take(&format!("{t}.bias"), &[vocab])?;
                Self::Mlm(dense, act, ln, Linear::new(weight, Some(bias)))
            }
        };
        // The pooler is computed only by the sequence head.
        w.leave(|name| name.starts_with(&pooler));
        Ok(out)
    }

    /// The head's output for one input's last hidden state `[n, hidden]`: `[1][labels]` for a
    /// sequence head, `[position][..]` otherwise.
    pub(crate) fn forward(&self, hidden: Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
        match self {
            Self::Base => Ok(hidden),
            Self::Sequence(pooler, classifier) => {
                classifier.forward(&pooler.forward(&hidden.narrow(0, 0, 1)?)?.tanh()?)
            }
            Self::PerToken(l) => l.forward(&hidden),
            Self::Mlm(dense, a, ln, decoder) => {
                decoder.forward(&ln.forward(&act(*a, &dense.forward(&hidden)?)?)?)
            }
        }?
        .to_vec2()
    }
}
