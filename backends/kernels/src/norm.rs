//! LayerNorm fused with what precedes it in a post-LN transformer block: the bias of the
//! linear layer and the residual, `LN(x + bias + residual) · γ + β`, one pass to sum, one for
//! the variance (about the mean, as torch), one to normalise, instead of candle's separate
//! broadcast add, add and LayerNorm.

use std::sync::Arc;

use crate::Isa;
use crate::lanes::{Lanes, LanesFn, hsum, with_lanes};

/// The parameters of one fused LayerNorm: the bias added first (`None`: none), γ, β, ε.
#[derive(Debug, Clone)]
pub struct AddNorm {
    pub bias: Option<Arc<[f32]>>,
    pub gamma: Arc<[f32]>,
    pub beta: Arc<[f32]>,
    pub eps: f32,
}

/// One row: `out = LN(x + bias + residual)`.
#[inline(always)]
fn row<L: Lanes>(l: L, p: &AddNorm, x: &[f32], res: &[f32], out: &mut [f32]) {
    let h = out.len();
    // v = (x + bias) + residual, into out.
    for (i, o) in out.iter_mut().enumerate() {
        let b = p.bias.as_ref().map_or(0.0, |b| b[i]);
        *o = (x[i] + b) + res[i];
    }
    let (v8, vt) = out.as_chunks::<8>();
    let mut acc = l.splat(0.0);
    for v in v8 {
        acc = l.add(acc, l.load(v));
    }
    let mut lanes = [0.0; 8];
    l.store(acc, &mut lanes);
    let mean = (hsum(lanes) + vt.iter().sum::<f32>()) / h as f32;
    let m = l.splat(mean);
    let mut acc = l.splat(0.0);
    for v in v8 {
        let d = l.sub(l.load(v), m);
        acc = l.fma(d, d, acc);
    }
    l.store(acc, &mut lanes);
    let var = (hsum(lanes) + vt.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / h as f32;
    let inv = 1.0 / (var + p.eps).sqrt();
    let iv = l.splat(inv);
    let (o8, ot) = out.as_chunks_mut::<8>();
    let (g8, gt) = p.gamma.as_chunks::<8>();
    let (b8, bt) = p.beta.as_chunks::<8>();
    for ((o, g), b) in o8.iter_mut().zip(g8).zip(b8) {
        let n = l.mul(l.sub(l.load(o), m), iv);
        let r = l.fma(n, l.load(g), l.load(b));
        l.store(r, o);
    }
    for ((o, g), b) in ot.iter_mut().zip(gt).zip(bt) {
        *o = ((*o - mean) * inv).mul_add(*g, *b);
    }
}

/// `out = LN(x + bias + residual) · γ + β` per row of `γ.len()` values, with `isa`.
pub fn add_norm_into(isa: Isa, p: &AddNorm, x: &[f32], res: &[f32], out: &mut [f32]) {
    struct Run<'a>(&'a AddNorm, &'a [f32], &'a [f32], &'a mut [f32]);
    impl LanesFn for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn call<L: Lanes>(self, l: L) {
            let h = self.0.gamma.len();
            for ((x, r), o) in self
                .1
                .chunks_exact(h)
                .zip(self.2.chunks_exact(h))
                .zip(self.3.chunks_exact_mut(h))
            {
                row(l, self.0, x, r, o);
            }
        }
    }
    let h = p.gamma.len();
    assert!(
        h > 0
            && p.beta.len() == h
            && p.bias.as_ref().is_none_or(|b| b.len() == h)
            && x.len().is_multiple_of(h)
            && res.len() == x.len()
            && out.len() == x.len(),
        "add_norm: {} values, residual {}, width {h}",
        x.len(),
        res.len()
    );
    with_lanes(isa, Run(p, x, res, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_scalar_give_the_same_bits_and_match_f64() {
        for h in [8, 37, 384] {
            let rows = 3;
            let f = |i: usize, k: usize| ((i * k) % 997) as f32 / 97.0 - 5.0;
            let x: Vec<f32> = (0..rows * h).map(|i| f(i, 7919)).collect();
            let res: Vec<f32> = (0..rows * h).map(|i| f(i, 104_729)).collect();
            let p = AddNorm {
                bias: Some((0..h).map(|i| f(i, 31) / 10.0).collect()),
                gamma: (0..h).map(|i| 1.0 + f(i, 13) / 10.0).collect(),
                beta: (0..h).map(|i| f(i, 17) / 10.0).collect(),
                eps: 1e-12,
            };
            let mut a = vec![0.0; x.len()];
            let mut b = vec![0.0; x.len()];
            add_norm_into(Isa::Scalar, &p, &x, &res, &mut a);
            add_norm_into(Isa::detect(), &p, &x, &res, &mut b);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "width {h}"
            );
            let bias = p.bias.as_ref().unwrap();
            for r in 0..rows {
                let v: Vec<f64> = (0..h)
                    .map(|i| ((x[r * h + i] + bias[i]) + res[r * h + i]) as f64)
                    .collect();
                let mean = v.iter().sum::<f64>() / h as f64;
                let var = v.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
                for i in 0..h {
                    let want =
                        (v[i] - mean) / (var + 1e-12).sqrt() * p.gamma[i] as f64 + p.beta[i] as f64;
                    let got = a[r * h + i] as f64;
                    assert!(
                        (got - want).abs() < 2e-6,
                        "width {h} row {r} [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
