//! Bidirectional multi-head self-attention, shared by the encoders (text and vision): no mask,
//! an optional additive bias (relative positions).

use candle_core::{Module, Tensor};
use candle_nn::Linear;

/// The four projections of one attention layer.
#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) heads: usize,
}

impl SelfAttention {
    /// `o(softmax(q kᵀ / √d + bias) v)` over `x` `[batch, n, hidden]`; `bias` broadcasts to
    /// `[batch, heads, n, n]`.
    pub(crate) fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let q = self.q.forward(x)?;
        let inner = q.dim(2)?;
        let d = inner / self.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(q)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let mut scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, inner))?;
        self.o.forward(&ctx)
    }
}
