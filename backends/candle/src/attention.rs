//! Bidirectional multi-head self-attention, shared by the encoders (text and vision): no mask,
//! an optional additive bias (relative positions).

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;

/// Rotary tables `cos`, `sin` `[n, d/2]` and how they pair a head's features.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rope<'a> {
    pub(crate) cos: &'a Tensor,
    pub(crate) sin: &'a Tensor,
    /// Pairs `(x₀, x₁), (x₂, x₃)…` (RoFormer) instead of the two halves (ESM, Llama).
    pub(crate) interleaved: bool,
}

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
        self.forward_rope(x, bias, None)
    }

    /// [`SelfAttention::forward`] with rotary positions (`cos`, `sin` `[n, d/2]`) on q and k.
    pub(crate) fn forward_rope(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
        rope: Option<Rope<'_>>,
    ) -> candle_core::Result<Tensor> {
        let ctx = attend(
            &self.q.forward(x)?,
            &self.k.forward(x)?,
            &self.v.forward(x)?,
            self.heads,
            bias,
            rope,
        )?;
        self.o.forward(&ctx)
    }
}

/// `softmax(q kᵀ / √d + bias) v` for projected `q`, `k`, `v` `[batch, n, heads · d]`, with
/// rotary positions on q and k if given; `bias` broadcasts to `[batch, heads, n, n]`. Returns
/// the context `[batch, n, heads · d]`.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
    rope: Option<Rope<'_>>,
) -> candle_core::Result<Tensor> {
    let (b, n, inner) = q.dims3()?;
    let d = inner / heads;
    let split = |t: &Tensor| -> candle_core::Result<Tensor> {
        t.reshape((b, n, heads, d))?.transpose(1, 2)?.contiguous()
    };
    let (mut q, mut k, v) = (split(q)?, split(k)?, split(v)?);
    if let Some(r) = rope {
        let apply = if r.interleaved {
            candle_nn::rotary_emb::rope_i
        } else {
            candle_nn::rotary_emb::rope
        };
        q = apply(&q, r.cos, r.sin)?;
        k = apply(&k, r.cos, r.sin)?;
    }
    let mut scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let p = candle_nn::ops::softmax_last_dim(&scores)?;
    p.matmul(&v)?.transpose(1, 2)?.reshape((b, n, inner))
}

/// The bucket of a relative position (`memory − context`) in a bidirectional table of
/// `buckets` rows: half for each direction, exact up to a quarter of the table, then
/// logarithmic up to `max_distance` (T5's scheme, as MPNet (128) and WavLM (800) use it; in
/// f32 as torch computes it).
pub(crate) fn relative_bucket(relative: i64, buckets: usize, max_distance: usize) -> usize {
    let half = (buckets / 2) as i64;
    let mut ret = if relative > 0 { half } else { 0 };
    let n = relative.abs();
    let max_exact = half / 2;
    if n < max_exact {
        ret += n;
    } else {
        let log =
            (n as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln();
        let large = max_exact + (log * (half - max_exact) as f32) as i64;
        ret += large.min(half - 1);
    }
    ret as usize
}

/// `cos`, `sin` `[n, d/2]` of positions `0..n` with base `theta`.
pub(crate) fn rope_tables(
    n: usize,
    d: usize,
    theta: f64,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = d / 2;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for i in 0..half {
            let inv = 1.0 / (theta.powf((2 * i) as f64 / d as f64) as f32);
            let a = p as f32 * inv;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, half), dev)?,
        Tensor::from_vec(sin, (n, half), dev)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpnet_buckets_match_transformers() {
        // torch: MPNetEncoder.relative_position_bucket(arange(-200, 201), 32, 128)
        let cases = [
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-7, 7),
            (8, 24),
            (-8, 8),
            (20, 26),
            (-20, 10),
            (127, 31),
            (-127, 15),
            (200, 31),
        ];
        for (rel, want) in cases {
            assert_eq!(relative_bucket(rel, 32, 128), want, "relative {rel}");
        }
    }

    #[test]
    fn wavlm_buckets_match_transformers() {
        // torch: WavLMAttention(32, 4)._relative_positions_bucket(...) with 320 buckets, 800
        let cases = [
            (0, 0),
            (1, 161),
            (-1, 1),
            (79, 239),
            (-79, 79),
            (80, 240),
            (500, 303),
            (-900, 159),
        ];
        for (rel, want) in cases {
            assert_eq!(relative_bucket(rel, 320, 800), want, "relative {rel}");
        }
    }
}
