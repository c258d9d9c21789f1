//! Eight f32 lanes, as AVX2 + FMA registers ([`pulp::x86::V3`]) or as a portable array that
//! performs the same operations in the same order (so both give the same bits), and the
//! vectorised math written once over them: `exp` and the exact `erf` (for GELU), horizontal
//! sums.
//!
//! `erf` is Norbert Juffa's single-precision approximation (two minimax pieces, split at
//! 0.927734375; ≤ 1 ulp with a correctly rounded `exp`), with a Cephes-style `exp` (`n·ln 2`
//! split in two, degree-6 polynomial, `2ⁿ` built in the exponent bits).

/// The operations the kernels need on eight f32 lanes.
pub(crate) trait Lanes: Copy {
    type V: Copy;
    fn splat(self, x: f32) -> Self::V;
    fn load(self, x: &[f32; 8]) -> Self::V;
    fn store(self, v: Self::V, out: &mut [f32; 8]);
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`, one rounding.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Per lane: `a > b ? x : y`.
    fn select_gt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// The sign of `s` on `|a|`.
    fn copysign(self, a: Self::V, s: Self::V) -> Self::V;
    /// Round to the nearest integer, ties to even.
    fn round(self, a: Self::V) -> Self::V;
    /// `2ⁿ` for integral `n` in `[-126, 127]`.
    fn pow2i(self, n: Self::V) -> Self::V;
}

/// Portable lanes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scalar;

fn map2(a: [f32; 8], b: [f32; 8], f: impl Fn(f32, f32) -> f32) -> [f32; 8] {
    std::array::from_fn(|i| f(a[i], b[i]))
}

impl Lanes for Scalar {
    type V = [f32; 8];
    #[inline(always)]
    fn splat(self, x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    fn load(self, x: &[f32; 8]) -> [f32; 8] {
        *x
    }
    #[inline(always)]
    fn store(self, v: [f32; 8], out: &mut [f32; 8]) {
        *out = v;
    }
    #[inline(always)]
    fn add(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        map2(a, b, |a, b| a + b)
    }
    #[inline(always)]
    fn sub(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        map2(a, b, |a, b| a - b)
    }
    #[inline(always)]
    fn mul(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        map2(a, b, |a, b| a * b)
    }
    #[inline(always)]
    fn fma(self, a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
    }
    #[inline(always)]
    fn abs(self, a: [f32; 8]) -> [f32; 8] {
        a.map(f32::abs)
    }
    #[inline(always)]
    fn min(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        // As `vminps`: the second operand when either is NaN.
        map2(a, b, |a, b| if a < b { a } else { b })
    }
    #[inline(always)]
    fn max(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        map2(a, b, |a, b| if a > b { a } else { b })
    }
    #[inline(always)]
    fn select_gt(self, a: [f32; 8], b: [f32; 8], x: [f32; 8], y: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| if a[i] > b[i] { x[i] } else { y[i] })
    }
    #[inline(always)]
    fn copysign(self, a: [f32; 8], s: [f32; 8]) -> [f32; 8] {
        map2(a, s, f32::copysign)
    }
    #[inline(always)]
    fn round(self, a: [f32; 8]) -> [f32; 8] {
        a.map(f32::round_ties_even)
    }
    #[inline(always)]
    fn pow2i(self, n: [f32; 8]) -> [f32; 8] {
        n.map(|n| f32::from_bits(((n as i32 + 127) as u32) << 23))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod v3 {
    use core::arch::x86_64::__m256;

    use pulp::bytemuck::cast;
    use pulp::x86::V3;

    /// AVX2 + FMA lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx(pub(crate) V3);

    impl super::Lanes for Avx {
        type V = __m256;
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            self.0.avx._mm256_set1_ps(x)
        }
        #[inline(always)]
        fn load(self, x: &[f32; 8]) -> __m256 {
            cast(*x)
        }
        #[inline(always)]
        fn store(self, v: __m256, out: &mut [f32; 8]) {
            *out = cast(v);
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            self.0.avx._mm256_add_ps(a, b)
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            self.0.avx._mm256_sub_ps(a, b)
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            self.0.avx._mm256_mul_ps(a, b)
        }
        #[inline(always)]
        fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            self.0.fma._mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        fn abs(self, a: __m256) -> __m256 {
            let avx = self.0.avx;
            avx._mm256_andnot_ps(avx._mm256_set1_ps(-0.0), a)
        }
        #[inline(always)]
        fn min(self, a: __m256, b: __m256) -> __m256 {
            self.0.avx._mm256_min_ps(a, b)
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            self.0.avx._mm256_max_ps(a, b)
        }
        #[inline(always)]
        fn select_gt(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
            let avx = self.0.avx;
            // _CMP_GT_OQ
            let m = avx._mm256_cmp_ps::<0x1e>(a, b);
            avx._mm256_blendv_ps(y, x, m)
        }
        #[inline(always)]
        fn copysign(self, a: __m256, s: __m256) -> __m256 {
            let avx = self.0.avx;
            let sign = avx._mm256_set1_ps(-0.0);
            avx._mm256_or_ps(avx._mm256_andnot_ps(sign, a), avx._mm256_and_ps(sign, s))
        }
        #[inline(always)]
        fn round(self, a: __m256) -> __m256 {
            // _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC
            self.0.avx._mm256_round_ps::<0x08>(a)
        }
        #[inline(always)]
        fn pow2i(self, n: __m256) -> __m256 {
            let (avx, avx2) = (self.0.avx, self.0.avx2);
            let i = avx._mm256_cvtps_epi32(n);
            let e = avx2._mm256_add_epi32(i, avx._mm256_set1_epi32(127));
            avx._mm256_castsi256_ps(avx2._mm256_slli_epi32::<23>(e))
        }
    }
}

/// `eˣ` per lane for `x ≤ 0` (below −87.3 it is clamped there: the result is then
/// `≈ 1.2e-38`, not 0).
#[inline(always)]
pub(crate) fn exp_neg<L: Lanes>(l: L, x: L::V) -> L::V {
    let x = l.max(x, l.splat(-87.3));
    let n = l.round(l.mul(x, l.splat(std::f32::consts::LOG2_E)));
    let r = l.fma(n, l.splat(-0.693_359_4), x);
    let r = l.fma(n, l.splat(2.121_944_4e-4), r);
    let mut p = l.splat(1.987_569_1e-4);
    p = l.fma(p, r, l.splat(1.398_199_9e-3));
    p = l.fma(p, r, l.splat(8.333_452e-3));
    p = l.fma(p, r, l.splat(4.166_579_6e-2));
    p = l.fma(p, r, l.splat(1.666_666_5e-1));
    p = l.fma(p, r, l.splat(0.5));
    let y = l.fma(l.mul(p, r), r, l.add(r, l.splat(1.0)));
    l.mul(y, l.pow2i(n))
}

/// `erf(a)` per lane.
#[inline(always)]
pub(crate) fn erf<L: Lanes>(l: L, a: L::V) -> L::V {
    let t = l.abs(a);
    let s = l.mul(a, a);
    // |a| > 0.927734375: 1 − exp(poly(t)), at most 4 (erf(4) is 1 in f32).
    let tc = l.min(t, l.splat(4.0));
    let sc = l.mul(tc, tc);
    let mut r = l.fma(l.splat(-1.728_534_7e-5), tc, l.splat(3.831_971_3e-4));
    let u = l.fma(l.splat(-3.883_964_4e-3), tc, l.splat(2.425_462_2e-2));
    r = l.fma(r, sc, u);
    r = l.fma(r, tc, l.splat(-1.067_778_8e-1));
    r = l.fma(r, tc, l.splat(-6.348_467e-1));
    r = l.fma(r, tc, l.splat(-1.287_175_1e-1));
    r = l.fma(r, tc, l.sub(l.splat(0.0), tc));
    let big = l.copysign(l.sub(l.splat(1.0), exp_neg(l, r)), a);
    // |a| ≤ 0.927734375: a + a·poly(a²).
    let mut p = l.splat(-5.967_617e-4);
    p = l.fma(p, s, l.splat(4.991_194_2e-3));
    p = l.fma(p, s, l.splat(-2.676_813_5e-2));
    p = l.fma(p, s, l.splat(1.128_199_3e-1));
    p = l.fma(p, s, l.splat(-3.761_253_4e-1));
    p = l.fma(p, s, l.splat(1.283_791_7e-1));
    let small = l.fma(p, a, a);
    l.select_gt(t, l.splat(0.927_734_4), big, small)
}

/// The sum of the eight lanes, in a fixed order.
#[inline(always)]
pub(crate) fn hsum(v: [f32; 8]) -> f32 {
    ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
}

/// The maximum of the eight lanes.
#[inline(always)]
pub(crate) fn hmax(v: [f32; 8]) -> f32 {
    v.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// Runs `f` with the best lanes of `isa` (inside pulp's target-feature context on x86).
#[inline(always)]
pub(crate) fn with_lanes<R>(isa: crate::Isa, f: impl LanesFn<Output = R>) -> R {
    match isa {
        crate::Isa::Scalar => f.call(Scalar),
        #[cfg(target_arch = "x86_64")]
        crate::Isa::V3(simd) => {
            struct Run<F>(pulp::x86::V3, F);
            impl<F: LanesFn> pulp::NullaryFnOnce for Run<F> {
                type Output = F::Output;
                #[inline(always)]
                fn call(self) -> F::Output {
                    self.1.call(v3::Avx(self.0))
                }
            }
            simd.vectorize(Run(simd, f))
        }
    }
}

/// A computation generic over the lanes (a trait, not a closure: the body must be inlined into
/// the target-feature context).
pub(crate) trait LanesFn {
    type Output;
    fn call<L: Lanes>(self, l: L) -> Self::Output;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance in ulps between two finite f32 of the same sign.
    pub(crate) fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    fn erf_of(isa: crate::Isa, x: [f32; 8]) -> [f32; 8] {
        struct E([f32; 8]);
        impl LanesFn for E {
            type Output = [f32; 8];
            fn call<L: Lanes>(self, l: L) -> [f32; 8] {
                let mut out = [0.0; 8];
                l.store(erf(l, l.load(&self.0)), &mut out);
                out
            }
        }
        with_lanes(isa, E(x))
    }

    /// erf in f64 (Abramowitz–Stegun 7.1.26 is too coarse; the series and continued fraction
    /// are exact to f64 here).
    fn erf64(x: f64) -> f64 {
        let t = x.abs();
        let r = if t < 2.5 {
            // Maclaurin series.
            let mut sum = 0.0;
            let mut term = t;
            let mut k = 0.0;
            loop {
                let add = term / (2.0 * k + 1.0);
                sum += add;
                if add.abs() <= 1e-18 * sum.abs() || k > 200.0 {
                    break;
                }
                k += 1.0;
                term *= -t * t / k;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Continued fraction of erfc.
            let mut f = 0.0;
            for k in (1..=60).rev() {
                f = (k as f64 / 2.0) / (t + f);
            }
            1.0 - (-t * t).exp() / std::f64::consts::PI.sqrt() / (t + f)
        };
        r.copysign(x)
    }

    #[test]
    fn erf_is_within_two_ulps_and_the_lanes_agree_bit_for_bit() {
        let simd = crate::Isa::detect();
        let mut worst = 0;
        let mut x = -6.0f32;
        while x < 6.0 {
            let v: [f32; 8] = std::array::from_fn(|i| x + i as f32 * 1.1e-4);
            let a = erf_of(crate::Isa::Scalar, v);
            let b = erf_of(simd, v);
            for i in 0..8 {
                assert_eq!(a[i].to_bits(), b[i].to_bits(), "erf({})", v[i]);
                let want = erf64(v[i] as f64) as f32;
                let u = ulps(a[i], want);
                assert!(u <= 2, "erf({}) = {} vs {want}: {u} ulps", v[i], a[i]);
                worst = worst.max(u);
            }
            x += 8.8e-4;
        }
        // Tiny arguments: erf(x) ≈ 2x/√π.
        for x in [1e-30f32, 1e-10, -3e-5, 0.0] {
            let a = erf_of(simd, [x; 8])[0];
            assert!(ulps(a, erf64(x as f64) as f32) <= 1, "erf({x}) = {a}");
        }
        assert!(worst <= 2);
    }
}
