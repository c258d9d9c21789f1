//! The BERT-like block's compute on the CPU, fused: one matrix product for q, k and v, the
//! attention straight from it ([`skillgen_kernels::encode`]: no head transposes, padding keys
//! skipped rather than masked), bias + exact GELU in one pass ([`skillgen_kernels::gelu`]),
//! bias + residual + LayerNorm in one pass ([`skillgen_kernels::norm`]). Activations are the
//! batch's real tokens packed, `[Σ len, hidden]`: a padding position never goes through a
//! matrix product (a batch of 32 ordinary sentences is ~40% padding when padded to its
//! longest). Products with a few rows (one text) are ours ([`RowsTimesWt`]).
//!
//! Rotary positions (ESM, RoFormer) and non-CPU devices take the unfused path, the same
//! arithmetic as candle ops (q, k, v sliced from the fused product).

use std::sync::Arc;

use candle_core::{DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_kernels::norm::AddNorm;

use crate::activation::{Act, act};
use crate::attention::Rope;
use crate::encoder::ops::{AddLn, Attend, BiasGelu, RowsTimesWt};

/// A linear layer as `x · Wᵀ` and a bias kept apart (so the bias joins a fused op).
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    /// `[out, in]`.
    w: Tensor,
    b: Tensor,
}

impl Dense {
    pub(crate) fn new(l: Linear) -> candle_core::Result<Self> {
        let w = l.weight().clone();
        let b = match l.bias() {
            Some(b) => b.clone(),
            None => Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?,
        };
        Ok(Self { w, b })
    }

    /// `[q; k; v]` as one layer.
    pub(crate) fn stack(parts: [Linear; 3]) -> candle_core::Result<Self> {
        let parts = parts.map(Self::new);
        let [q, k, v] = parts;
        let (q, k, v) = (q?, k?, v?);
        Ok(Self {
            w: Tensor::cat(&[&q.w, &k.w, &v.w], 0)?,
            b: Tensor::cat(&[&q.b, &k.b, &v.b], 0)?,
        })
    }

    /// `x · Wᵀ`, no bias; `x` `[rows, in]`: on the CPU in f32 by [`RowsTimesWt`] where it pays,
    /// else candle's product.
    fn product(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (w, f32) = (&self.w, candle_core::DType::F32);
        if x.rank() == 2
            && RowsTimesWt::pays(x.dim(0)?)
            && x.device().is_cpu()
            && x.dtype() == f32
            && w.dtype() == f32
            && w.is_contiguous()
        {
            return x.contiguous()?.apply_op2_no_bwd(w, &RowsTimesWt);
        }
        x.matmul(&w.t()?)
    }

    /// `x · Wᵀ + b`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.product(x)?.broadcast_add(&self.b)
    }

    /// `act(x · Wᵀ + b)`; the exact GELU fused with the bias on the CPU.
    fn forward_act(&self, x: &Tensor, a: Act) -> candle_core::Result<Tensor> {
        let y = self.product(x)?;
        if a == Act::Gelu && y.device().is_cpu() {
            return y.apply_op2_no_bwd(&self.b, &BiasGelu);
        }
        act(a, &y.broadcast_add(&self.b)?)
    }

    fn bias_vec(&self) -> candle_core::Result<Arc<[f32]>> {
        Ok(self
            .b
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?
            .into())
    }
}

/// A LayerNorm with a bias and residual added first (post-LN blocks).
#[derive(Debug, Clone)]
pub(crate) struct AddLayerNorm {
    ln: LayerNorm,
    /// The fused op (the preceding layer's bias, γ, β, ε), on the CPU in f32.
    fused: Option<AddLn>,
}

impl AddLayerNorm {
    /// `ln` after the layer `before` (whose bias it takes over).
    fn new(ln: LayerNorm, before: &Dense) -> candle_core::Result<Self> {
        let fused = if ln.weight().device().is_cpu()
            && ln.weight().dtype() == candle_core::DType::F32
        {
            let vec =
                |t: &Tensor| -> candle_core::Result<Arc<[f32]>> { Ok(t.to_vec1::<f32>()?.into()) };
            let beta = match ln.bias() {
                Some(b) => vec(b)?,
                None => vec![0.0; ln.weight().dim(0)?].into(),
            };
            Some(AddLn(AddNorm {
                bias: Some(before.bias_vec()?),
                gamma: vec(ln.weight())?,
                beta,
                eps: ln.eps() as f32,
            }))
        } else {
            None
        };
        Ok(Self { ln, fused })
    }

    /// `LN(y + bias + residual)`, `y` the preceding layer's product without its bias.
    fn forward(&self, y: &Tensor, bias: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        match &self.fused {
            Some(op) => y
                .contiguous()?
                .apply_op2_no_bwd(&residual.contiguous()?, op),
            None => self.ln.forward(&(y.broadcast_add(bias)? + residual)?),
        }
    }
}

/// Self-attention with fused projections.
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    qkv: Dense,
    pub(crate) o: Dense,
    heads: usize,
}

/// What every block's attention shares in one forward pass.
#[derive(Debug, Clone)]
pub(crate) struct Batch<'a> {
    /// Inputs and their padded length.
    pub(crate) b: usize,
    pub(crate) n: usize,
    pub(crate) lens: Arc<[usize]>,
    /// The fused CPU kernels run, on packed rows: activations are `[Σ len, hidden]`, each
    /// input's real tokens one after the other (no padding row goes through a matrix
    /// product). Otherwise `[b·n, hidden]`, right-padded, and candle ops.
    pub(crate) packed: bool,
    /// MPNet's relative-position bias `[heads, n, n]` (fused path).
    pub(crate) rel: Option<Arc<[f32]>>,
    /// The unfused path's additive bias (relative positions and the padding mask), broadcast
    /// to `[b, heads, n, n]`.
    pub(crate) mask: Option<Tensor>,
    pub(crate) rope: Option<Rope<'a>>,
}

impl Batch<'_> {
    /// Whether blocks run the fused CPU kernels (on rows packed), given the body's rotary
    /// positions and the activations' device and dtype.
    pub(crate) fn fusable(rotary: bool, device: &candle_core::Device, dtype: DType) -> bool {
        !rotary && device.is_cpu() && dtype == DType::F32
    }
}

impl Attention {
    pub(crate) fn new(
        q: Linear,
        k: Linear,
        v: Linear,
        o: Linear,
        heads: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            qkv: Dense::stack([q, k, v])?,
            o: Dense::new(o)?,
            heads,
        })
    }

    /// The context before the output projection, in `x`'s rows (see [`Batch::packed`]).
    fn context(&self, x: &Tensor, bt: &Batch<'_>) -> candle_core::Result<Tensor> {
        let (b, n) = (bt.b, bt.n);
        if bt.packed {
            let qkv = self.qkv.product(x)?;
            let h = qkv.dim(1)? / 3;
            let op = Attend {
                heads: self.heads,
                scale: 1.0 / ((h / self.heads) as f32).sqrt(),
                lens: bt.lens.clone(),
                rel: bt.rel.clone(),
            };
            return qkv.apply_op2_no_bwd(&self.qkv.b, &op);
        }
        let qkv = self.qkv.forward(x)?;
        let h = qkv.dim(1)? / 3;
        let part = |i: usize| qkv.narrow(1, i * h, h)?.reshape((b, n, h));
        crate::attention::attend(
            &part(0)?,
            &part(1)?,
            &part(2)?,
            self.heads,
            bt.mask.as_ref(),
            bt.rope,
        )?
        .reshape((b * n, h))
    }

    /// `o(attention(x))`.
    pub(crate) fn forward(&self, x: &Tensor, bt: &Batch<'_>) -> candle_core::Result<Tensor> {
        self.o.forward(&self.context(x, bt)?)
    }
}

/// One block's compute: attention, FFN, their LayerNorms, pre- or post-LN.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) attn: Attention,
    /// Post-LN: after attention; pre-LN: before it.
    ln_attn: AddLayerNorm,
    pub(crate) ffn_in: Dense,
    pub(crate) ffn_out: Dense,
    /// Post-LN: after the FFN; pre-LN: before it.
    pub(crate) ln_ffn: AddLayerNorm,
}

impl Layer {
    pub(crate) fn new(
        attn: Attention,
        ln_attn: LayerNorm,
        ffn_in: Linear,
        ffn_out: Linear,
        ln_ffn: LayerNorm,
    ) -> candle_core::Result<Self> {
        let ffn_out = Dense::new(ffn_out)?;
        Ok(Self {
            ln_attn: AddLayerNorm::new(ln_attn, &attn.o)?,
            ln_ffn: AddLayerNorm::new(ln_ffn, &ffn_out)?,
            attn,
            ffn_in: Dense::new(ffn_in)?,
            ffn_out,
        })
    }

    /// The LayerNorm after the FFN (X-MOD's adapter reuses it).
    pub(crate) fn ln_ffn(&self) -> &LayerNorm {
        &self.ln_ffn.ln
    }

    /// The FFN's product before its output bias: `act(x W₁ᵀ + b₁) W₂ᵀ`.
    fn ffn_product(&self, x: &Tensor, a: Act) -> candle_core::Result<Tensor> {
        self.ffn_out.product(&self.ffn_in.forward_act(x, a)?)
    }

    /// Post-LN: `LN₂(h + FFN(h))` with `h = LN₁(x + attn(x))`; `adapt` (X-MOD) sits on the
    /// FFN output plus residual before `LN₂` (unfused then).
    pub(crate) fn forward_post(
        &self,
        x: &Tensor,
        bt: &Batch<'_>,
        a: Act,
        adapt: Option<&dyn Fn(Tensor) -> candle_core::Result<Tensor>>,
    ) -> candle_core::Result<Tensor> {
        let attn = &self.attn;
        let h = self
            .ln_attn
            .forward(&attn.o.product(&attn.context(x, bt)?)?, &attn.o.b, x)?;
        let f = self.ffn_product(&h, a)?;
        match adapt {
            Some(adapt) => {
                let y = adapt(((f.broadcast_add(&self.ffn_out.b))? + &h)?)?;
                self.ln_ffn.ln.forward(&y)
            }
            None => self.ln_ffn.forward(&f, &self.ffn_out.b, &h),
        }
    }

    /// Pre-LN: `h + FFN(LN₂(h))` with `h = x + attn(LN₁(x))`.
    pub(crate) fn forward_pre(
        &self,
        x: &Tensor,
        bt: &Batch<'_>,
        a: Act,
    ) -> candle_core::Result<Tensor> {
        let h = (x + self.attn.forward(&self.ln_attn.ln.forward(x)?, bt)?)?;
        let f = self
            .ffn_out
            .forward(&self.ffn_in.forward_act(&self.ln_ffn.ln.forward(&h)?, a)?)?;
        &h + f
    }
}
