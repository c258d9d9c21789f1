//! A T5 decoder matching transformers v5 (candle 0.11.1's does not, see the module docs):
//! causal relative-position buckets (`bidirectional = false`), position bias only in block 0
//! and shared by the others, cross-attention without position bias, RMS layer norms, no
//! attention scaling, and the v5 `scale_decoder_outputs` factor d_model^-0.5 before the tied
//! `shared` LM head.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Activation, Embedding, Linear, VarBuilder};

/// Decoder dimensions and settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) vocab: usize,
    pub(crate) d_model: usize,
    pub(crate) d_kv: usize,
    pub(crate) d_ff: usize,
    pub(crate) heads: usize,
    pub(crate) layers: usize,
    pub(crate) buckets: usize,
    pub(crate) max_distance: usize,
    pub(crate) eps: f64,
    pub(crate) gated: bool,
    pub(crate) act: Activation,
    pub(crate) scale_outputs: bool,
}

fn lin(vb: VarBuilder<'_>, out: usize, inp: usize) -> Result<Linear> {
    Ok(Linear::new(vb.get((out, inp), "weight")?, None))
}

struct Attn {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

impl Attn {
    fn load(vb: VarBuilder<'_>, c: &Config) -> Result<Self> {
        let inner = c.heads * c.d_kv;
        Ok(Self {
            q: lin(vb.pp("q"), inner, c.d_model)?,
            k: lin(vb.pp("k"), inner, c.d_model)?,
            v: lin(vb.pp("v"), inner, c.d_model)?,
            o: lin(vb.pp("o"), c.d_model, inner)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        kv: &Tensor,
        bias: Option<&Tensor>,
        c: &Config,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let s = kv.dim(1)?;
        let split = |y: Tensor, n: usize| -> Result<Tensor> {
            y.reshape((b, n, c.heads, c.d_kv))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(x)?, t)?;
        let k = split(self.k.forward(kv)?, s)?;
        let v = split(self.v.forward(kv)?, s)?;
        let mut w = q.matmul(&k.transpose(2, 3)?.contiguous()?)?;
        if let Some(bias) = bias {
            w = w.broadcast_add(bias)?;
        }
        let w = candle_nn::ops::softmax(&w, D::Minus1)?;
        let o = w
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, t, c.heads * c.d_kv))?;
        self.o.forward(&o)
    }
}

struct Block {
    self_attn: Attn,
    ln0: Tensor,
    cross: Attn,
    ln1: Tensor,
    wi: Vec<Linear>,
    wo: Linear,
    ln2: Tensor,
}

/// The T5 decoder stack with its tied LM head.
pub(crate) struct T5Decoder {
    shared: Embedding,
    rel_bias: Embedding,
    blocks: Vec<Block>,
    final_ln: Tensor,
    c: Config,
}

/// transformers' `_relative_position_bucket` with `bidirectional = false`.
fn causal_bucket(memory_minus_query: i64, buckets: usize, max_distance: usize) -> u32 {
    let rp = (-memory_minus_query).max(0) as f64;
    let max_exact = (buckets / 2) as f64;
    if rp < max_exact {
        return rp as u32;
    }
    let large = max_exact
        + ((rp / max_exact).ln() / (max_distance as f64 / max_exact).ln()
            * (buckets as f64 - max_exact));
    // transformers truncates toward zero (`.to(torch.long)`) before the min.
    (large as i64).min(buckets as i64 - 1) as u32
}

impl T5Decoder {
    /// Load from the checkpoint root (`shared.weight`, `decoder.*`).
    pub(crate) fn load(vb: &VarBuilder<'_>, c: Config) -> Result<Self> {
        let shared = Embedding::new(vb.get((c.vocab, c.d_model), "shared.weight")?, c.d_model);
        let dec = vb.pp("decoder");
        let rel_bias = Embedding::new(
            dec.get(
                (c.buckets, c.heads),
                "block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            )?,
            c.heads,
        );
        let blocks = (0..c.layers)
            .map(|l| {
                let p = dec.pp(format!("block.{l}.layer"));
                let ff = p.pp("2.DenseReluDense");
                let wi = if c.gated {
                    vec![
                        lin(ff.pp("wi_0"), c.d_ff, c.d_model)?,
                        lin(ff.pp("wi_1"), c.d_ff, c.d_model)?,
                    ]
                } else {
                    vec![lin(ff.pp("wi"), c.d_ff, c.d_model)?]
                };
                Ok(Block {
                    self_attn: Attn::load(p.pp("0.SelfAttention"), &c)?,
                    ln0: p.get(c.d_model, "0.layer_norm.weight")?,
                    cross: Attn::load(p.pp("1.EncDecAttention"), &c)?,
                    ln1: p.get(c.d_model, "1.layer_norm.weight")?,
                    wi,
                    wo: lin(ff.pp("wo"), c.d_model, c.d_ff)?,
                    ln2: p.get(c.d_model, "2.layer_norm.weight")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            shared,
            rel_bias,
            blocks,
            final_ln: dec.get(c.d_model, "final_layer_norm.weight")?,
            c,
        })
    }

    /// Logits `[1, len, vocab]` for decoder `ids` `[1, len]` over one input's unpadded encoder
    /// states `[1, src, d_model]` (teacher forcing, causal).
    pub(crate) fn logits(&self, ids: &Tensor, enc: &Tensor) -> Result<Tensor> {
        let c = &self.c;
        let t = ids.dim(1)?;
        let dev = ids.device();
        let buckets: Vec<u32> = (0..t)
            .flat_map(|q| {
                (0..t).map(move |k| causal_bucket(k as i64 - q as i64, c.buckets, c.max_distance))
            })
            .collect();
        let buckets = Tensor::from_vec(buckets, (t, t), dev)?;
        // (t, t, heads) -> (1, heads, t, t), plus the causal mask.
        let bias = self
            .rel_bias
            .forward(&buckets)?
            .permute((2, 0, 1))?
            .unsqueeze(0)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|q| (0..t).map(move |k| if k > q { f32::MIN } else { 0.0 }))
            .collect();
        let bias = bias.broadcast_add(&Tensor::from_vec(mask, (t, t), dev)?)?;
        let rms = |x: &Tensor, w: &Tensor| candle_nn::ops::rms_norm(x, w, c.eps as f32);
        let mut x = self.shared.forward(ids)?;
        for b in &self.blocks {
            let h = rms(&x, &b.ln0)?;
            x = (&x + b.self_attn.forward(&h, &h, Some(&bias), c)?)?;
            let h = rms(&x, &b.ln1)?;
            x = (&x + b.cross.forward(&h, enc, None, c)?)?;
            let h = rms(&x, &b.ln2)?;
            let f = match b.wi.as_slice() {
                [wi0, wi1] => (c.act.forward(&wi0.forward(&h)?)? * wi1.forward(&h)?)?,
                [wi] => c.act.forward(&wi.forward(&h)?)?,
                _ => candle_core::bail!("T5 feed-forward has no input projection"),
            };
            x = (&x + b.wo.forward(&f)?)?;
        }
        let mut x = rms(&x, &self.final_ln)?;
        if c.scale_outputs {
            x = (x * (c.d_model as f64).powf(-0.5))?;
        }
        x.broadcast_matmul(&self.shared.embeddings().t()?)
    }
}
