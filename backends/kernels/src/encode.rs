//! Bidirectional self-attention of a right-padded batch of whole inputs (encoders), straight
//! from the fused projection: `qkv` `[b, n, 3·h]` (queries, keys, values side by side, each
//! `heads × d`) → the context `[b, n, h]` in the layout the output projection reads. No head
//! transposes, no `[b, heads, n, n]` score tensor or mask: each (input, head) pair is one task
//! that reads only its input's own `len` positions (so padding keys get no weight, exactly),
//! computes each query's scores, their softmax and the weighted sum of the values in one go;
//! an optional additive bias `[heads, n, n]` (MPNet's relative positions) joins the scores.
//! Padding query rows are 0.

use crate::Isa;
use crate::lanes::{Lanes, LanesFn, exp_neg, hmax, hsum, with_lanes};

/// The attention's shape: heads and the scale of the scores.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub scale: f32,
}

/// One (input, head): rows `q`, `k`, `v` at `qkv[(row·n + i)·3h + part·h + head·d..][..d]`.
struct Task<'a> {
    qkv: &'a [f32],
    bias: Option<&'a [f32]>,
    n: usize,
    h: usize,
    d: usize,
    len: usize,
    row: usize,
    head: usize,
    scale: f32,
}

impl Task<'_> {
    #[inline(always)]
    fn at(&self, i: usize, part: usize) -> &[f32] {
        let s = (self.row * self.len + i) * 3 * self.h + part * self.h + self.head * self.d;
        &self.qkv[s..s + self.d]
    }
}

#[inline(always)]
fn dot<L: Lanes>(l: L, a: &[f32], b: &[f32]) -> f32 {
    let (a8, at) = a.as_chunks::<8>();
    let (b8, bt) = b.as_chunks::<8>();
    let mut acc = l.splat(0.0);
    for (a, b) in a8.iter().zip(b8) {
        acc = l.fma(l.load(a), l.load(b), acc);
    }
    let mut lanes = [0.0; 8];
    l.store(acc, &mut lanes);
    at.iter()
        .zip(bt)
        .fold(hsum(lanes), |s, (a, b)| a.mul_add(*b, s))
}

/// The task's context rows `[len, d]` into `out`; `scores` (`len`) as scratch.
#[inline(always)]
fn head<L: Lanes>(l: L, t: &Task<'_>, scores: &mut [f32], out: &mut [f32]) {
    let (n, d, len) = (t.n, t.d, t.len);
    for i in 0..len {
        let q = t.at(i, 0);
        for (j, s) in scores.iter_mut().enumerate() {
            *s = dot(l, q, t.at(j, 1)) * t.scale;
        }
        if let Some(b) = t.bias {
            let b = &b[(t.head * n + i) * n..][..len];
            for (s, b) in scores.iter_mut().zip(b) {
                *s += b;
            }
        }
        let (s8, st) = scores.as_chunks_mut::<8>();
        let mut mv = l.splat(f32::NEG_INFINITY);
        for s in s8.iter() {
            mv = l.max(l.load(s), mv);
        }
        let mut lanes = [0.0; 8];
        l.store(mv, &mut lanes);
        let max = st.iter().fold(hmax(lanes), |m, &s| m.max(s));
        let m = l.splat(max);
        let mut acc = l.splat(0.0);
        for s in s8.iter_mut() {
            let e = exp_neg(l, l.sub(l.load(s), m));
            acc = l.add(acc, e);
            l.store(e, s);
        }
        l.store(acc, &mut lanes);
        let mut sum = hsum(lanes);
        for s in st.iter_mut() {
            // The same operations on a padded vector (the same bits on every ISA).
            let mut v = [0.0; 8];
            v[0] = *s - max;
            let mut e = [0.0; 8];
            l.store(exp_neg(l, l.load(&v)), &mut e);
            *s = e[0];
            sum += e[0];
        }
        let inv = 1.0 / sum;
        let o = &mut out[i * d..(i + 1) * d];
        let (o8, ot) = o.as_chunks_mut::<8>();
        for (c, o) in o8.iter_mut().enumerate() {
            let mut a = l.splat(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let v: &[f32; 8] = t.at(j, 2)[c * 8..c * 8 + 8].try_into().unwrap_or(&[0.0; 8]);
                a = l.fma(l.splat(p), l.load(v), a);
            }
            l.store(l.mul(a, l.splat(inv)), o);
        }
        let base = o8.len() * 8;
        for (c, o) in ot.iter_mut().enumerate() {
            let acc = scores
                .iter()
                .enumerate()
                .fold(0.0f32, |a, (j, &p)| p.mul_add(t.at(j, 2)[base + c], a));
            *o = acc * inv;
        }
    }
}

/// One input's attention: `qkv` its `[n, 3·h]` rows (the first `len` real; `qkv_bias`
/// `[3·h]` is added to them first), `bias` `[heads, bn, bn]` for some `bn ≥ len` (the batch's
/// padded length; its top-left `len × len` is used) → `out` `[n, h]` (rows from `len` on are
/// left as they are).
#[allow(clippy::too_many_arguments)]
pub fn attend_input(
    isa: Isa,
    a: Heads,
    qkv: &[f32],
    qkv_bias: Option<&[f32]>,
    len: usize,
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let h = out.len() / n.max(1);
    assert!(
        a.heads > 0 && h.is_multiple_of(a.heads) && qkv.len() == n * 3 * h && len <= n,
        "encoder attention: {} values for {n} × 3·{h} (length {len})",
        qkv.len()
    );
    // The bias is `[heads, bn, bn]` with `bn` ≥ `len`: the padded length of the batch when the
    // inputs' rows come packed (`n` = `len`).
    let bn = bias.map_or(n, |b| ((b.len() / a.heads) as f64).sqrt().round() as usize);
    if let Some(b) = bias {
        assert!(
            b.len() == a.heads * bn * bn && bn >= len,
            "encoder attention: bias of {} values for {} heads, length {len}",
            b.len(),
            a.heads
        );
    }
    let d = h / a.heads;
    // The real rows with the projection's bias added (in cache from here on).
    let mut rows = qkv[..len * 3 * h].to_vec();
    if let Some(qb) = qkv_bias {
        assert_eq!(qb.len(), 3 * h, "qkv bias");
        for r in rows.chunks_exact_mut(3 * h) {
            for (x, b) in r.iter_mut().zip(qb) {
                *x += b;
            }
        }
    }
    struct Run<'a> {
        a: Heads,
        rows: &'a [f32],
        bias: Option<&'a [f32]>,
        out: &'a mut [f32],
        len: usize,
        n: usize,
        h: usize,
        d: usize,
    }
    impl LanesFn for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn call<L: Lanes>(self, l: L) {
            let mut scores = vec![0.0; self.len];
            let mut ctx = vec![0.0; self.len * self.d];
            for head_i in 0..self.a.heads {
                let t = Task {
                    qkv: self.rows,
                    bias: self.bias,
                    n: self.n,
                    h: self.h,
                    d: self.d,
                    len: self.len,
                    row: 0,
                    head: head_i,
                    scale: self.a.scale,
                };
                head(l, &t, &mut scores, &mut ctx);
                for (i, c) in ctx.chunks_exact(self.d).enumerate() {
                    let at = i * self.h + head_i * self.d;
                    self.out[at..at + self.d].copy_from_slice(c);
                }
            }
        }
    }
    with_lanes(
        isa,
        Run {
            a,
            rows: &rows,
            bias,
            out,
            len,
            n: bn,
            h,
            d,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward f64 computation, input by input.
    fn reference(
        a: &EncoderAttention,
        qkv: &[f32],
        n: usize,
        h: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f64> {
        let d = h / a.heads;
        let mut out = vec![0.0; a.lens.len() * n * h];
        for (r, &len) in a.lens.iter().enumerate() {
            let x =
                |i: usize, part: usize, c: usize| qkv[(r * n + i) * 3 * h + part * h + c] as f64;
            for hd in 0..a.heads {
                for i in 0..len {
                    let s: Vec<f64> = (0..len)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|c| x(i, 0, hd * d + c) * x(j, 1, hd * d + c))
                                .sum();
                            dot * a.scale as f64
                                + bias.map_or(0.0, |b| b[(hd * n + i) * n + j] as f64)
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|s| (s - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d {
                        out[(r * n + i) * h + hd * d + c] =
                            (0..len).map(|j| e[j] / sum * x(j, 2, hd * d + c)).sum();
                    }
                }
            }
        }
        out
    }

    /// Every input of a padded batch through [`attend_input`].
    fn batch(
        isa: Isa,
        a: &EncoderAttention,
        qkv: &[f32],
        n: usize,
        h: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut out = vec![0.0; a.lens.len() * n * h];
        for (r, (o, &len)) in out.chunks_exact_mut(n * h).zip(a.lens.iter()).enumerate() {
            let heads = Heads {
                heads: a.heads,
                scale: a.scale,
            };
            attend_input(
                isa,
                heads,
                &qkv[r * n * 3 * h..(r + 1) * n * 3 * h],
                None,
                len,
                n,
                bias,
                o,
            );
        }
        out
    }

    struct EncoderAttention {
        heads: usize,
        scale: f32,
        lens: Vec<usize>,
    }

    #[test]
    fn matches_f64_and_the_isas_agree() {
        for (heads, h) in [(2, 16), (3, 30), (12, 384)] {
            let n = 11;
            let a = EncoderAttention {
                heads,
                scale: 1.0 / ((h / heads) as f32).sqrt(),
                lens: vec![11, 4, 1, 9],
            };
            let b = a.lens.len();
            let qkv: Vec<f32> = (0..b * n * 3 * h)
                .map(|i| ((i * 7919) % 1009) as f32 / 300.0 - 1.6)
                .collect();
            let bias: Vec<f32> = (0..heads * n * n)
                .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
                .collect();
            for bias in [None, Some(bias.as_slice())] {
                let want = reference(&a, &qkv, n, h, bias);
                let s = batch(Isa::Scalar, &a, &qkv, n, h, bias);
                let v = batch(Isa::detect(), &a, &qkv, n, h, bias);
                assert_eq!(
                    s.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
                for (i, (g, w)) in s.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() < 2e-6,
                        "{heads}×{h} at {i}: {g} vs {w}"
                    );
                }
                // Padding query rows are left alone (0 here).
                assert!(s[(n + 5) * h..(2 * n) * h].iter().all(|&x| x == 0.0));
                // Packed rows (each input only its own `len` rows, the bias still the
                // batch's `[heads, n, n]`) give the same bits.
                for (r, &len) in a.lens.iter().enumerate() {
                    let rows = &qkv[r * n * 3 * h..][..len * 3 * h];
                    let mut out = vec![0.0; len * h];
                    let heads = Heads {
                        heads: a.heads,
                        scale: a.scale,
                    };
                    attend_input(Isa::detect(), heads, rows, None, len, len, bias, &mut out);
                    assert_eq!(out, v[r * n * h..][..len * h], "{heads:?} input {r}");
                }
            }
        }
    }

    #[test]
    fn the_projection_bias_is_added_first() {
        let (n, h, heads) = (5, 16, 2);
        let qkv: Vec<f32> = (0..n * 3 * h)
            .map(|i| ((i * 13) % 29) as f32 / 10.0 - 1.4)
            .collect();
        let qb: Vec<f32> = (0..3 * h).map(|i| i as f32 / 40.0 - 0.5).collect();
        let with: Vec<f32> = qkv
            .chunks(3 * h)
            .flat_map(|r| r.iter().zip(&qb).map(|(x, b)| x + b))
            .collect();
        let a = Heads { heads, scale: 0.25 };
        let mut x = vec![0.0; n * h];
        let mut y = vec![0.0; n * h];
        attend_input(Isa::detect(), a, &qkv, Some(&qb), 4, n, None, &mut x);
        attend_input(Isa::detect(), a, &with, None, 4, n, None, &mut y);
        assert_eq!(x, y);
    }
}
