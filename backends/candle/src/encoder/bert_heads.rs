//! BERT's task heads over a body's last hidden state, for the encoders whose checkpoints name
//! them as BERT does (FNet, SqueezeBERT): `pooler.dense` + tanh then `classifier` (sequence
//! classification), `classifier` (tokens), `qa_outputs`, and the MLM head
//! `cls.predictions.{transform, bias}` with the decoder tied to the word embeddings.

use candle_core::{Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::encoder::bertlike::EncoderHead;
use crate::weights::{Weights, layer_norm as norm, linear};

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
