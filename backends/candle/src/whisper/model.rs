//! Whisper forward pass with transformers' exact (erf) GELU, stateless (no KV cache).
//!
//! candle 0.11.1's `whisper::model` applies the tanh-approximate `Tensor::gelu` after both
//! convolutions and in every MLP, where transformers uses the exact erf GELU: on the tiny
//! fixture that moves the encoder output by 2.8e-4, above the 1e-4 parity tolerance. Same
//! tensor names as candle's model (`model.encoder.*`, `model.decoder.*`; logits use the tied
//! `embed_tokens`); the encoder's `embed_positions.weight` is read from the file as in
//! transformers.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, Embedding, LayerNorm, Linear, VarBuilder};

const EPS: f64 = 1e-5;

fn linear(vb: VarBuilder<'_>, d_out: usize, d_in: usize, bias: bool) -> Result<Linear> {
    let w = vb.get((d_out, d_in), "weight")?;
    let b = if bias {
        Some(vb.get(d_out, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

fn norm(vb: VarBuilder<'_>, d: usize) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(d, "weight")?,
        vb.get(d, "bias")?,
        EPS,
    ))
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(vb: VarBuilder<'_>, d: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: linear(vb.pp("q_proj"), d, d, true)?,
            k: linear(vb.pp("k_proj"), d, d, false)?,
            v: linear(vb.pp("v_proj"), d, d, true)?,
            out: linear(vb.pp("out_proj"), d, d, true)?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, kv: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let s = kv.dim(1)?;
        let hd = d / self.heads;
        let split = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(x)? * (hd as f64).powf(-0.5))?, t)?;
        let k = split(self.k.forward(kv)?, s)?;
        let v = split(self.v.forward(kv)?, s)?;
        let mut w = q.matmul(&k.transpose(2, 3)?.contiguous()?)?;
        if let Some(m) = mask {
            w = w.broadcast_add(m)?;
        }
        let w = candle_nn::ops::softmax(&w, D::Minus1)?;
        let o = w.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.out.forward(&o)
    }
}

struct Block {
    attn: Attention,
    attn_ln: LayerNorm,
    cross: Option<(Attention, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    mlp_ln: LayerNorm,
}

impl Block {
    fn load(vb: VarBuilder<'_>, d: usize, heads: usize, cross: bool) -> Result<Self> {
        Ok(Self {
            attn: Attention::load(vb.pp("self_attn"), d, heads)?,
            attn_ln: norm(vb.pp("self_attn_layer_norm"), d)?,
            cross: if cross {
                Some((
                    Attention::load(vb.pp("encoder_attn"), d, heads)?,
                    norm(vb.pp("encoder_attn_layer_norm"), d)?,
                ))
            } else {
                None
            },
            fc1: linear(vb.pp("fc1"), 4 * d, d, true)?,
            fc2: linear(vb.pp("fc2"), d, 4 * d, true)?,
            mlp_ln: norm(vb.pp("final_layer_norm"), d)?,
        })
    }

    fn forward(&self, x: &Tensor, xa: Option<&Tensor>, mask: Option<&Tensor>) -> Result<Tensor> {
        let h = self.attn_ln.forward(x)?;
        let mut x = (x + self.attn.forward(&h, &h, mask)?)?;
        if let (Some((attn, ln)), Some(xa)) = (&self.cross, xa) {
            x = (&x + attn.forward(&ln.forward(&x)?, xa, None)?)?;
        }
        let m = self
            .fc2
            .forward(&self.fc1.forward(&self.mlp_ln.forward(&x)?)?.gelu_erf()?)?;
        x + m
    }
}

/// Dimensions (already validated by the config translation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) mels: usize,
    pub(crate) d: usize,
    pub(crate) enc_heads: usize,
    pub(crate) enc_layers: usize,
    pub(crate) dec_heads: usize,
    pub(crate) dec_layers: usize,
    pub(crate) vocab: usize,
    pub(crate) src_positions: usize,
    pub(crate) tgt_positions: usize,
}

/// The Whisper encoder–decoder.
pub(crate) struct WhisperNet {
    conv1: Conv1d,
    conv2: Conv1d,
    enc_pos: Tensor,
    enc_blocks: Vec<Block>,
    enc_ln: LayerNorm,
    tokens: Embedding,
    dec_pos: Tensor,
    dec_blocks: Vec<Block>,
    dec_ln: LayerNorm,
}

impl WhisperNet {
    /// Load from the root of a `WhisperForConditionalGeneration` checkpoint.
    pub(crate) fn load(vb: &VarBuilder<'_>, c: Dims) -> Result<Self> {
        let enc = vb.pp("model.encoder");
        let dec = vb.pp("model.decoder");
        let conv = |vb: VarBuilder<'_>, cin: usize, stride: usize| -> Result<Conv1d> {
            let cfg = Conv1dConfig {
                padding: 1,
                stride,
                ..Default::default()
            };
            Ok(Conv1d::new(
                vb.get((c.d, cin, 3), "weight")?,
                Some(vb.get(c.d, "bias")?),
                cfg,
            ))
        };
        Ok(Self {
            conv1: conv(enc.pp("conv1"), c.mels, 1)?,
            conv2: conv(enc.pp("conv2"), c.d, 2)?,
            enc_pos: enc.get((c.src_positions, c.d), "embed_positions.weight")?,
            enc_blocks: (0..c.enc_layers)
                .map(|l| Block::load(enc.pp(format!("layers.{l}")), c.d, c.enc_heads, false))
                .collect::<Result<_>>()?,
            enc_ln: norm(enc.pp("layer_norm"), c.d)?,
            tokens: Embedding::new(dec.get((c.vocab, c.d), "embed_tokens.weight")?, c.d),
            dec_pos: dec.get((c.tgt_positions, c.d), "embed_positions.weight")?,
            dec_blocks: (0..c.dec_layers)
                .map(|l| Block::load(dec.pp(format!("layers.{l}")), c.d, c.dec_heads, true))
                .collect::<Result<_>>()?,
            dec_ln: norm(dec.pp("layer_norm"), c.d)?,
        })
    }

    /// Encoder output `[b, frames / 2, d]` for features `[b, mels, frames]`.
    pub(crate) fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(x)?.gelu_erf()?;
        let x = self.conv2.forward(&x)?.gelu_erf()?.transpose(1, 2)?;
        let n = x.dim(1)?;
        let mut x = x.broadcast_add(&self.enc_pos.narrow(0, 0, n)?)?;
        for b in &self.enc_blocks {
            x = b.forward(&x, None, None)?;
        }
        self.enc_ln.forward(&x)
    }

    /// Decoder logits `[b, len, vocab]` for `ids` `[b, len]` (causal, teacher forcing).
    pub(crate) fn decode(&self, ids: &Tensor, enc: &Tensor) -> Result<Tensor> {
        let len = ids.dim(1)?;
        let mut x = self
            .tokens
            .forward(ids)?
            .broadcast_add(&self.dec_pos.narrow(0, 0, len)?)?;
        let mask: Vec<f32> = (0..len)
            .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (len, len), ids.device())?;
        for b in &self.dec_blocks {
            x = b.forward(&x, Some(enc), Some(&mask))?;
        }
        let x = self.dec_ln.forward(&x)?;
        x.broadcast_matmul(&self.tokens.embeddings().t()?)
    }
}
