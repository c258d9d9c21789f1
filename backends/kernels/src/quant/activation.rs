//! Activations quantized to 8 bits, blocks of 32 values: llama.cpp's `Q8_0` / `Q8_1` side of
//! its quantized dot products, computed as its AVX2 `quantize_row_q8_1` does (this is what it
//! runs on x86):
//!
//! - `amax` = the largest `|x|` of the block, `d = amax / 127`, `id = 127 / amax` (0 when
//!   `amax` is 0);
//! - `q = round(x · id)`, ties to even (`_mm256_round_ps(_MM_ROUND_NEAREST)`), in `[-127, 127]`;
//! - the block scale is `d` rounded to f16 (`y.d = FP32_TO_FP16(d)`), and, for `Q8_1`,
//!   `s = f16(d · Σq)` with the unrounded `d`.
//!
//! (candle's `BlockQ8_1::from_float` follows llama.cpp's portable reference instead:
//! `id = 1 / d`, rounding half away from zero, `s = f16(Σq) · f16(d)` in f16. The quants agree
//! except where `x · id` falls within an ulp of a half-integer.)
//!
//! The scalar and the AVX2 code give the same bits (the same f32 operations, exact integer
//! sums; the block maximum does not depend on its order).

use super::{Isa, QK, f16};

/// Quantized activation rows: `rows × k` values (`k` a multiple of [`QK`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Q8Rows {
    pub(crate) rows: usize,
    pub(crate) k: usize,
    /// Blocks per row of `d` and `s`: `k / 32` rounded up to a multiple of 8, the blocks
    /// after `k / 32` zero (so that the kernels always load eight scales).
    pub(crate) stride: usize,
    /// The quants, row-major.
    pub(crate) qs: Vec<i8>,
    /// Per block (rows of [`Self::stride`]): the scale `d`, rounded to f16 (kept as f32).
    pub(crate) d: Vec<f32>,
    /// Per block (rows of [`Self::stride`]): `f16(d · Σq)`, the `Q8_1` sum term (as f32).
    pub(crate) s: Vec<f32>,
}

impl Q8Rows {
    /// Blocks per row.
    #[cfg(test)]
    pub(crate) fn nb(&self) -> usize {
        self.k / QK
    }

    /// Quantize `x` (`rows × k`, row-major; `k` a multiple of [`QK`]).
    pub(crate) fn quantize(x: &[f32], k: usize, isa: Isa) -> Self {
        assert!(
            k.is_multiple_of(QK) && k > 0,
            "row length {k} is not a multiple of {QK}"
        );
        assert!(
            x.len().is_multiple_of(k),
            "{} values are not rows of {k}",
            x.len()
        );
        let rows = x.len() / k;
        let nb = k / QK;
        let stride = nb.next_multiple_of(8);
        let mut out = Self {
            rows,
            k,
            stride,
            qs: vec![0; x.len()],
            d: vec![0.0; rows * stride],
            s: vec![0.0; rows * stride],
        };
        match isa {
            Isa::Scalar => fill(&mut out, x, Scalar),
            #[cfg(target_arch = "x86_64")]
            Isa::V3(simd) => {
                struct Run<'a> {
                    simd: pulp::x86::V3,
                    out: &'a mut Q8Rows,
                    x: &'a [f32],
                }
                impl pulp::NullaryFnOnce for Run<'_> {
                    type Output = ();
                    #[inline(always)]
                    fn call(self) {
                        fill(self.out, self.x, v3::Block(self.simd));
                    }
                }
                simd.vectorize(Run {
                    simd,
                    out: &mut out,
                    x,
                });
            }
        }
        out
    }
}

/// How one block is quantized: (unrounded `d`, `Σq`). (A trait, not a closure: see `dot::v3`.)
trait Quantize: Copy {
    fn block(self, x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32);
}

#[derive(Clone, Copy)]
struct Scalar;

impl Quantize for Scalar {
    #[inline(always)]
    fn block(self, x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
        block_scalar(x, q)
    }
}

/// Quantize every block of `x` into `out`.
#[inline(always)]
fn fill(out: &mut Q8Rows, x: &[f32], how: impl Quantize) {
    let nb = out.k / QK;
    let (xs, _) = x.as_chunks::<QK>();
    let (qs, _) = out.qs.as_chunks_mut::<QK>();
    for r in 0..out.rows {
        let d = &mut out.d[r * out.stride..r * out.stride + nb];
        let s = &mut out.s[r * out.stride..r * out.stride + nb];
        let x = &xs[r * nb..(r + 1) * nb];
        let q = &mut qs[r * nb..(r + 1) * nb];
        for (((x, q), d), s) in x.iter().zip(q).zip(d).zip(s) {
            let (raw, sum) = how.block(x, q);
            (*d, *s) = scales(raw, sum);
        }
    }
}

/// The stored scales of a block from its unrounded `d` and the sum of its quants.
#[inline(always)]
fn scales(d: f32, sum: i32) -> (f32, f32) {
    (f16::round(d), f16::round(d * sum as f32))
}

/// Quantize one block into `q`: (unrounded `d`, `Σq`).
#[inline(always)]
fn block_scalar(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
        sum += i32::from(*q);
    }
    (d, sum)
}

#[cfg(target_arch = "x86_64")]
mod v3 {
    use core::arch::x86_64::{__m256, __m256i};

    use pulp::bytemuck::cast;
    use pulp::x86::V3;

    use super::{QK, Quantize};

    #[derive(Clone, Copy)]
    pub(super) struct Block(pub(super) V3);

    impl Quantize for Block {
        #[inline(always)]
        fn block(self, x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
            block(self.0, x, q)
        }
    }

    /// [`super::block_scalar`] in AVX2 (llama.cpp's `quantize_row_q8_1` for one block).
    #[inline(always)]
    fn block(simd: V3, x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
        let (avx, avx2) = (simd.avx, simd.avx2);
        // (No closures: see `dot::v3`.)
        let (x8, _) = x.as_chunks::<8>();
        let v: [__m256; 4] = [cast(x8[0]), cast(x8[1]), cast(x8[2]), cast(x8[3])];
        let abs = avx._mm256_castsi256_ps(avx._mm256_set1_epi32(0x7fff_ffff));
        let a0 = avx._mm256_max_ps(avx._mm256_and_ps(v[0], abs), avx._mm256_and_ps(v[1], abs));
        let a1 = avx._mm256_max_ps(avx._mm256_and_ps(v[2], abs), avx._mm256_and_ps(v[3], abs));
        let m = avx._mm256_max_ps(a0, a1);
        let m: [f32; 8] = cast(m);
        let amax = m.iter().fold(0f32, |x, &y| x.max(y));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mul = avx._mm256_set1_ps(id);
        // _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC: ties to even.
        let mut i: [__m256i; 4] = [avx._mm256_setzero_si256(); 4];
        for (i, v) in i.iter_mut().zip(v) {
            *i = avx._mm256_cvtps_epi32(avx._mm256_round_ps::<0x08>(avx._mm256_mul_ps(v, mul)));
        }
        let sum = avx2._mm256_add_epi32(
            avx2._mm256_add_epi32(i[0], i[1]),
            avx2._mm256_add_epi32(i[2], i[3]),
        );
        let sum: [i32; 8] = cast(sum);
        let p0 = avx2._mm256_packs_epi32(i[0], i[1]);
        let p1 = avx2._mm256_packs_epi32(i[2], i[3]);
        let b = avx2._mm256_packs_epi16(p0, p1);
        let b = avx2._mm256_permutevar8x32_epi32(b, avx._mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        *q = cast(b);
        (d, sum.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A deterministic mix of magnitudes, signs, exact zeros and half-integer ties.
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                match i % 37 {
                    0 => 0.0,
                    1 => 127.0,
                    2 => -63.5,
                    _ => u * (1.0 + (i % 7) as f32 * 3.0),
                }
            })
            .collect()
    }

    /// The quants are `round(x · 127 / amax)` within one of `x / d` and in range; an all-zero
    /// block has zero scale and quants.
    #[test]
    fn quants_follow_the_definition() {
        let k = 96;
        let mut x = values(3 * k, 7);
        x[k..k + QK].fill(0.0);
        let q = Q8Rows::quantize(&x, k, Isa::Scalar);
        assert_eq!((q.rows, q.nb()), (3, 3));
        for (i, (xs, qs)) in x.chunks(QK).zip(q.qs.chunks(QK)).enumerate() {
            let b = i / q.nb() * q.stride + i % q.nb();
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let sum: i32 = qs.iter().map(|&v| i32::from(v)).sum();
            if amax == 0.0 {
                assert_eq!((q.d[b], q.s[b]), (0.0, 0.0));
                assert!(qs.iter().all(|&v| v == 0));
                continue;
            }
            assert_eq!(q.d[b], f16::round(amax / 127.0));
            assert_eq!(q.s[b], f16::round(amax / 127.0 * sum as f32));
            for (&v, &qv) in xs.iter().zip(qs) {
                assert!((-127..=127).contains(&qv));
                assert!((v * 127.0 / amax - f32::from(qv)).abs() <= 0.5 + 1e-4);
            }
        }
    }

    /// AVX2 and scalar quantization agree bit for bit; the padding blocks are zero.
    #[test]
    fn simd_and_scalar_agree_bit_for_bit() {
        let Some(isa) = Isa::detect_simd() else {
            eprintln!("no AVX2+FMA here: only the scalar path runs");
            return;
        };
        for (rows, k, seed) in [(1, 32, 1), (3, 96, 2), (5, 576, 3), (2, 1536, 4)] {
            let x = values(rows * k, seed);
            let a = Q8Rows::quantize(&x, k, Isa::Scalar);
            let b = Q8Rows::quantize(&x, k, isa);
            assert_eq!(a.qs, b.qs);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.d), bits(&b.d));
            assert_eq!(bits(&a.s), bits(&b.s));
            for r in 0..rows {
                assert!(
                    a.d[r * a.stride + k / QK..(r + 1) * a.stride]
                        .iter()
                        .all(|&v| v == 0.0)
                );
            }
        }
    }
}
