//! Attention of one new position (decoding) on the CPU, f32: every query head against the
//! cached keys and values of its key/value head, in two passes per head (the scores, their
//! softmax, then the weighted sum of the values), the dot products and the sums over the values
//! in AVX2 + FMA ([`pulp::x86::V3`], detected at run time) or portable Rust, the heads split
//! across candle's CPU thread pool.
//!
//! What it replaces, candle's `cpu_flash` decode kernel, computes the same quantity with an
//! online softmax (a rescale whenever the running maximum grows), a non-inlined dot product per
//! key and a scalar loop over the values; at a few hundred cached positions it took a fifth of
//! SmolLM2-135M's decoding time. The results differ from it by float rounding (the order of
//! the sums, `exp` of the final rather than the running maximum).

use std::sync::atomic::{AtomicU32, Ordering};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};

use crate::{Isa, f32_data};

/// [`decode`] as a candle op: queries `[1, heads, d]`, keys `[t, kv_heads, d]`, values
/// `[t, kv_heads, dv]` (f32, contiguous) → `[1, heads · dv]`.
#[derive(Debug, Clone, Copy)]
pub struct DecodeAttention {
    pub scale: f32,
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "skillgen-decode-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, qd) = f32_data(self.name(), "queries", s1, l1)?;
        let (k, kd) = f32_data(self.name(), "keys", s2, l2)?;
        let (v, vd) = f32_data(self.name(), "values", s3, l3)?;
        let (&[1, heads, d], &[t, kv_heads, dk], &[tv, kvv, dv]) =
            (qd.as_slice(), kd.as_slice(), vd.as_slice())
        else {
            candle_core::bail!("{}: shapes {qd:?}, {kd:?}, {vd:?}", self.name());
        };
        if dk != d || tv != t || kvv != kv_heads || kv_heads == 0 || !heads.is_multiple_of(kv_heads)
        {
            candle_core::bail!("{}: shapes {qd:?}, {kd:?}, {vd:?}", self.name());
        }
        let out = decode(q, k, v, heads, kv_heads, d, dv, self.scale);
        Ok((CpuStorage::F32(out), Shape::from((1, heads * dv))))
    }
}

/// Below this many multiply-adds (`heads · positions · head_dim`), one thread does it all.
const SERIAL: usize = 1 << 15;

/// `softmax(scale · q kᵀ) v` for one position: `q` `[heads, d]`, `k` `[t, kv_heads, d]`, `v`
/// `[t, kv_heads, dv]` (row-major, contiguous); query head `i` reads key/value head
/// `i / (heads / kv_heads)`. Returns `[heads, dv]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    d: usize,
    dv: usize,
    scale: f32,
) -> Vec<f32> {
    let t = k.len() / (kv_heads * d);
    assert_eq!(q.len(), heads * d, "queries");
    assert_eq!(k.len(), t * kv_heads * d, "keys");
    assert_eq!(v.len(), t * kv_heads * dv, "values");
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "{heads} heads, {kv_heads} kv heads"
    );
    let out: Vec<AtomicU32> = (0..heads * dv).map(|_| AtomicU32::new(0)).collect();
    let isa = Isa::detect();
    let run = |range: std::ops::Range<usize>| {
        let mut scores = vec![0f32; t];
        let mut acc = vec![0f32; dv];
        for i in range {
            let g = i / (heads / kv_heads);
            head(
                isa,
                &q[i * d..(i + 1) * d],
                Kv {
                    data: k,
                    stride: kv_heads * d,
                    at: g * d,
                    len: d,
                },
                Kv {
                    data: v,
                    stride: kv_heads * dv,
                    at: g * dv,
                    len: dv,
                },
                scale,
                &mut scores,
                &mut acc,
            );
            for (o, a) in out[i * dv..(i + 1) * dv].iter().zip(&acc) {
                o.store(a.to_bits(), Ordering::Relaxed);
            }
        }
    };
    if heads * t * d < SERIAL || candle_core::utils::barrier_pool().n_workers() == 0 {
        run(0..heads);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(heads, run);
    }
    out.into_iter()
        .map(|a| f32::from_bits(a.into_inner()))
        .collect()
}

/// One head's rows in a `[t, kv_heads, len]` cache: row `j` is `data[j * stride + at..][..len]`.
#[derive(Clone, Copy)]
struct Kv<'a> {
    data: &'a [f32],
    stride: usize,
    at: usize,
    len: usize,
}

impl<'a> Kv<'a> {
    #[inline(always)]
    fn row(&self, j: usize) -> &'a [f32] {
        let s = j * self.stride + self.at;
        &self.data[s..s + self.len]
    }
}

/// One head into `acc` (`dv`), `scores` (`t`) as scratch.
fn head(
    isa: Isa,
    q: &[f32],
    k: Kv<'_>,
    v: Kv<'_>,
    scale: f32,
    scores: &mut [f32],
    acc: &mut [f32],
) {
    match isa {
        Isa::Scalar => head_with(Scalar, q, k, v, scale, scores, acc),
        #[cfg(target_arch = "x86_64")]
        Isa::V3(simd) => {
            struct Run<'a> {
                simd: pulp::x86::V3,
                q: &'a [f32],
                k: Kv<'a>,
                v: Kv<'a>,
                scale: f32,
                scores: &'a mut [f32],
                acc: &'a mut [f32],
            }
            impl pulp::NullaryFnOnce for Run<'_> {
                type Output = ();
                #[inline(always)]
                fn call(self) {
                    let Run {
                        simd,
                        q,
                        k,
                        v,
                        scale,
                        scores,
                        acc,
                    } = self;
                    head_with(v3::Ops(simd), q, k, v, scale, scores, acc);
                }
            }
            simd.vectorize(Run {
                simd,
                q,
                k,
                v,
                scale,
                scores,
                acc,
            });
        }
    }
}

/// The two passes over the cache, scalar or AVX2 (a trait, not closures: a closure that is not
/// inlined would run without the target features).
trait Ops: Copy {
    /// `scores[j] = (q · k_j) · scale`; returns their maximum.
    fn scores(self, q: &[f32], k: Kv<'_>, scale: f32, scores: &mut [f32]) -> f32;
    /// `acc = Σ_j p_j v_j`.
    fn weighted(self, v: Kv<'_>, p: &[f32], acc: &mut [f32]);
}

#[derive(Clone, Copy)]
struct Scalar;

impl Ops for Scalar {
    fn scores(self, q: &[f32], k: Kv<'_>, scale: f32, scores: &mut [f32]) -> f32 {
        let mut max = f32::NEG_INFINITY;
        for (j, s) in scores.iter_mut().enumerate() {
            let dot: f32 = q.iter().zip(k.row(j)).map(|(a, b)| a * b).sum();
            *s = dot * scale;
            max = max.max(*s);
        }
        max
    }

    fn weighted(self, v: Kv<'_>, p: &[f32], acc: &mut [f32]) {
        acc.fill(0.0);
        for (j, &p) in p.iter().enumerate() {
            for (a, x) in acc.iter_mut().zip(v.row(j)) {
                *a = p.mul_add(*x, *a);
            }
        }
    }
}

#[inline(always)]
fn head_with(
    ops: impl Ops,
    q: &[f32],
    k: Kv<'_>,
    v: Kv<'_>,
    scale: f32,
    scores: &mut [f32],
    acc: &mut [f32],
) {
    let max = ops.scores(q, k, scale, scores);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    ops.weighted(v, scores, acc);
    let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    for a in acc.iter_mut() {
        *a *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
mod v3 {
    use core::arch::x86_64::__m256;

    use pulp::bytemuck::cast;
    use pulp::x86::V3;

    use super::Kv;

    /// Columns kept in registers: eight vectors of eight.
    const W: usize = 64;

    #[derive(Clone, Copy)]
    pub(super) struct Ops(pub(super) V3);

    impl super::Ops for Ops {
        /// A 64-wide head keeps the query in registers; others go eight columns at a time.
        #[inline(always)]
        fn scores(self, q: &[f32], k: Kv<'_>, scale: f32, scores: &mut [f32]) -> f32 {
            let (avx, fma) = (self.0.avx, self.0.fma);
            let mut max = f32::NEG_INFINITY;
            if let Ok(q) = <&[f32; W]>::try_from(q) {
                let (q8, _) = q.as_chunks::<8>();
                let mut qv = [avx._mm256_setzero_ps(); W / 8];
                for (v, q) in qv.iter_mut().zip(q8) {
                    *v = cast(*q);
                }
                for (j, s) in scores.iter_mut().enumerate() {
                    let row: &[f32; W] = k.row(j).try_into().unwrap();
                    let (r8, _) = row.as_chunks::<8>();
                    let mut acc = [avx._mm256_setzero_ps(); 2];
                    for (i, (q, r)) in qv.iter().zip(r8).enumerate() {
                        acc[i & 1] = fma._mm256_fmadd_ps(*q, cast(*r), acc[i & 1]);
                    }
                    *s = hsum(cast(avx._mm256_add_ps(acc[0], acc[1]))) * scale;
                    max = max.max(*s);
                }
                return max;
            }
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(self.0, q, k.row(j)) * scale;
                max = max.max(*s);
            }
            max
        }

        /// Sixty-four columns at a time in registers, every position in turn.
        #[inline(always)]
        fn weighted(self, v: Kv<'_>, p: &[f32], acc: &mut [f32]) {
            let (avx, fma) = (self.0.avx, self.0.fma);
            let mut c = 0;
            while c + W <= v.len {
                let mut a = [avx._mm256_setzero_ps(); W / 8];
                for (j, &p) in p.iter().enumerate() {
                    let row: &[f32; W] = v.row(j)[c..c + W].try_into().unwrap();
                    let (r8, _) = row.as_chunks::<8>();
                    let pv = avx._mm256_set1_ps(p);
                    for (a, r) in a.iter_mut().zip(r8) {
                        *a = fma._mm256_fmadd_ps(pv, cast(*r), *a);
                    }
                }
                let (out, _) = acc[c..c + W].as_chunks_mut::<8>();
                for (o, a) in out.iter_mut().zip(a) {
                    *o = cast(a);
                }
                c += W;
            }
            if c < v.len {
                let acc = &mut acc[c..];
                acc.fill(0.0);
                for (j, &p) in p.iter().enumerate() {
                    for (a, x) in acc.iter_mut().zip(&v.row(j)[c..]) {
                        *a = p.mul_add(*x, *a);
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn hsum(s: [f32; 8]) -> f32 {
        ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))
    }

    #[inline(always)]
    fn dot(simd: V3, a: &[f32], b: &[f32]) -> f32 {
        let (avx, fma) = (simd.avx, simd.fma);
        let (a8, at) = a.as_chunks::<8>();
        let (b8, bt) = b.as_chunks::<8>();
        let mut acc = [avx._mm256_setzero_ps(); 2];
        for (i, (x, y)) in a8.iter().zip(b8).enumerate() {
            let (x, y): (__m256, __m256) = (cast(*x), cast(*y));
            acc[i & 1] = fma._mm256_fmadd_ps(x, y, acc[i & 1]);
        }
        let mut sum = hsum(cast(avx._mm256_add_ps(acc[0], acc[1])));
        for (x, y) in at.iter().zip(bt) {
            sum = x.mul_add(*y, sum);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The softmax-weighted sum, against a plain f64 computation, on grouped heads, a head size
    /// with a tail and one with none, one position and many.
    #[test]
    fn decode_attention_matches_a_plain_computation() {
        for &(h, kvh, d, t) in &[
            (9, 3, 64, 1),
            (9, 3, 64, 200),
            (4, 4, 36, 17),
            (8, 2, 128, 300),
            (4, 1, 256, 33),
            (2, 1, 100, 9),
        ] {
            let q = values(h * d, 1);
            let k = values(t * kvh * d, 2);
            let v = values(t * kvh * d, 3);
            let scale = (d as f32).powf(-0.5);
            let got = decode(&q, &k, &v, h, kvh, d, d, scale);
            for i in 0..h {
                let g = i / (h / kvh);
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|x| f64::from(q[i * d + x]) * f64::from(k[(j * kvh + g) * d + x]))
                            .sum::<f64>()
                            * f64::from(scale)
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let p: Vec<f64> = s.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = p.iter().sum();
                for x in 0..d {
                    let want: f64 = (0..t)
                        .map(|j| p[j] * f64::from(v[(j * kvh + g) * d + x]))
                        .sum::<f64>()
                        / z;
                    let err = (f64::from(got[i * d + x]) - want).abs();
                    assert!(err < 1e-5, "h{i} x{x} t{t}: {} vs {want}", got[i * d + x]);
                }
            }
        }
    }
}
