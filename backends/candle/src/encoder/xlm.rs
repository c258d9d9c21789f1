//! XLM and FlauBERT: word + learned (or sinusoidal, stored) position embeddings and a
//! LayerNorm, then post-LN blocks (FlauBERT's `pre_norm` is refused) of `attentions.i`,
//! `layer_norm1.i`, `ffns.i` (GELU or ReLU), `layer_norm2.i` — per-kind module lists rather than
//! per-layer blocks. Heads: `pred_layer.proj` (MLM, tied to the embeddings), the sequence
//! summary on the first token (`sequence_summary.summary`, optional tanh), `classifier`,
//! `qa_outputs`. Language embeddings need a `langs` input that text requests do not carry:
//! they are left unused, as transformers does without `langs`. Causal configurations and
//! adaptive softmax are typed errors. Every tensor is taken by name and shape.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::encoder::bertlike::EncoderHead;
use crate::encoder::setup::{self, HeadModel, HeadSetup};
use crate::weights::{Weights, layer_norm as norm, linear};

/// The model types [`Xlm::load`] knows.
pub const MODEL_TYPES: &[&str] = &["flaubert", "xlm"];

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("XLM {context}: {e}"),
    }
}

#[derive(Debug)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln1: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ln2: LayerNorm,
}

#[derive(Debug)]
enum Head {
    Base,
    /// The summary projection of the first token, then `tanh` when configured.
    Sequence(Linear, bool),
    PerToken(Linear),
    Mlm(Linear),
}

/// A loaded XLM / FlauBERT with one head.
pub struct Xlm {
    dim: usize,
    heads: usize,
    vocab: usize,
    max_pos: usize,
    act: Act,
    word: Tensor,
    pos: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    head: Head,
    device: Device,
    setup: HeadSetup,
}

impl std::fmt::Debug for Xlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xlm")
            .field("dim", &self.dim)
            .field("layers", &self.layers.len())
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Xlm {
    /// Load `dir` (`model_type` xlm or flaubert) with `head` on `device`.
    pub fn load(
        model_type: &str,
        dir: &Path,
        device: &Device,
        head: EncoderHead,
    ) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        if !MODEL_TYPES.contains(&model_type) {
            return Err(f.err(
                "model_type",
                format!("`{model_type}` is not XLM or FlauBERT"),
            ));
        }
        if f.bool_or("causal", false)? {
            return Err(f.err("causal", "a causal XLM is not an encoder"));
        }
        if !f.bool_or("is_encoder", true)? {
            return Err(f.err("is_encoder", "`false` (a decoder) is not implemented"));
        }
        if f.bool_or("asm", false)? {
            return Err(f.err("asm", "adaptive softmax heads are not implemented"));
        }
        let dim = f.positive("emb_dim")?;
        let heads = f.positive("n_heads")?;
        if !dim.is_multiple_of(heads) {
            return Err(f.err(
                "n_heads",
                format!("{heads} heads do not divide emb_dim {dim}"),
            ));
        }
        let layers_n = f.positive("n_layers")?;
        let vocab = f.positive("vocab_size")?;
        let max_pos = f.positive("max_position_embeddings")?;
        let eps = f.f64("layer_norm_eps")?;
        let act = if f.bool_or("gelu_activation", true)? {
            Act::Gelu
        } else {
            Act::Relu
        };
        if f.bool_or("pre_norm", false)? {
            // transformers 5.23 itself fails on it (its pre-LN branch indexes the cache).
            return Err(f.err(
                "pre_norm",
                "`true` is not implemented (nothing to verify it against)",
            ));
        }
        let mut w = Weights::read(dir, device)?;
        w.convert(DType::F32)?;
        let p = if w.has("transformer.embeddings.weight") {
            "transformer."
        } else {
            ""
        };
        let word = w.take(&format!("{p}embeddings.weight"), &[vocab, dim])?;
        let pos = w.take(&format!("{p}position_embeddings.weight"), &[max_pos, dim])?;
        // Language embeddings only apply with a `langs` input.
        w.leave(|n| n == format!("{p}lang_embeddings.weight"));
        let emb_ln = norm(&mut w, &format!("{p}layer_norm_emb"), dim, eps)?;
        let hidden = 4 * dim;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let a = format!("{p}attentions.{i}");
            layers.push(Layer {
                q: linear(&mut w, &format!("{a}.q_lin"), dim, dim, true)?,
                k: linear(&mut w, &format!("{a}.k_lin"), dim, dim, true)?,
                v: linear(&mut w, &format!("{a}.v_lin"), dim, dim, true)?,
                o: linear(&mut w, &format!("{a}.out_lin"), dim, dim, true)?,
                ln1: norm(&mut w, &format!("{p}layer_norm1.{i}"), dim, eps)?,
                ffn_in: linear(&mut w, &format!("{p}ffns.{i}.lin1"), hidden, dim, true)?,
                ffn_out: linear(&mut w, &format!("{p}ffns.{i}.lin2"), dim, hidden, true)?,
                ln2: norm(&mut w, &format!("{p}layer_norm2.{i}"), dim, eps)?,
            });
        }
        let head_kind = head;
        let labels = setup::labels(&f, head)?;
        let n = labels.len();
        let head = match head {
            EncoderHead::Base => {
                if !p.is_empty() {
                    w.leave(|name| !name.starts_with(p));
                }
                Head::Base
            }
            EncoderHead::Sequence => {
                if f.str_opt("summary_type")?.unwrap_or("first") != "first"
                    || !f.bool_or("summary_use_proj", true)?
                    || !f.bool_or("summary_proj_to_labels", true)?
                {
                    return Err(f.err(
                        "summary_type",
                        "only the first token projected to the labels is implemented",
                    ));
                }
                let tanh = match f.str_opt("summary_activation")? {
                    None => false,
                    Some("tanh") => true,
                    // transformers: any other string adds no activation.
                    Some(_) => false,
                };
                Head::Sequence(
                    linear(&mut w, "sequence_summary.summary", n, dim, true)?,
                    tanh,
                )
            }
            EncoderHead::Tokens => Head::PerToken(linear(&mut w, "classifier", n, dim, true)?),
            EncoderHead::Qa => Head::PerToken(linear(&mut w, "qa_outputs", 2, dim, true)?),
            EncoderHead::Mlm => {
                let weight = if w.has("pred_layer.proj.weight") {
                    w.take("pred_layer.proj.weight", &[vocab, dim])?
                } else {
                    word.clone()
                };
                let bias = w.take("pred_layer.proj.bias", &[vocab])?;
                Head::Mlm(Linear::new(weight, Some(bias)))
            }
        };
        w.finish()?;
        let setup = HeadSetup::finish(dir, &f, head_kind, labels, max_pos)?;
        Ok(Self {
            dim,
            heads,
            vocab,
            max_pos,
            act,
            word,
            pos,
            emb_ln,
            layers,
            head,
            setup,
            device: device.clone(),
        })
    }

    /// The last hidden state `[n, dim]` of one unpadded input.
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.setup
            .check_ids(ids, self.vocab, self.max_pos, &"max_position_embeddings")?;
        let (n, d, h) = (ids.len(), self.dim, self.heads);
        let hd = d / h;
        let run = || -> candle_core::Result<Tensor> {
            let x = self
                .word
                .index_select(&Tensor::new(ids, &self.device)?, 0)?;
            let mut x = self.emb_ln.forward(&(x + self.pos.narrow(0, 0, n)?)?)?;
            let split = |t: Tensor| t.reshape((n, h, hd))?.transpose(0, 1)?.contiguous();
            for l in &self.layers {
                let attn = |y: &Tensor| -> candle_core::Result<Tensor> {
                    let q = (split(l.q.forward(y)?)? / (hd as f64).sqrt())?;
                    let k = split(l.k.forward(y)?)?;
                    let v = split(l.v.forward(y)?)?;
                    let p = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
                    l.o.forward(&p.matmul(&v)?.transpose(0, 1)?.reshape((n, d))?)
                };
                let ffn = |y: &Tensor| l.ffn_out.forward(&act(self.act, &l.ffn_in.forward(y)?)?);
                x = l.ln1.forward(&(&x + attn(&x)?)?)?;
                x = l.ln2.forward(&(&x + ffn(&x)?)?)?;
            }
            Ok(x)
        };
        run().map_err(ce("forward"))
    }

    /// The head's output for one unpadded input (see [`crate::encoder::bertlike`]).
    pub fn head_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        let hidden = self.hidden_states(ids)?;
        let out = match &self.head {
            Head::Base => Ok(hidden),
            Head::Sequence(summary, tanh) => (|| {
                let s = summary.forward(&hidden.narrow(0, 0, 1)?)?;
                if *tanh { s.tanh() } else { Ok(s) }
            })(),
            Head::PerToken(l) | Head::Mlm(l) => l.forward(&hidden),
        };
        out.and_then(|t| t.to_vec2()).map_err(ce("head"))
    }
}

impl HeadModel for Xlm {
    fn setup(&self) -> &HeadSetup {
        &self.setup
    }

    fn width(&self) -> usize {
        self.dim
    }

    fn embed_rows(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.hidden_states(ids)
    }

    fn outputs(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.head_logits(ids)
    }
}
