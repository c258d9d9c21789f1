//! The exact GELU, `x/2 · (1 + erf(x/√2))` (transformers' `gelu`, torch's default), vectorised
//! ([`crate::lanes::erf`], ≤ 2 ulps), fused with the bias add of the linear layer before it:
//! one pass over the FFN's widest activation instead of two (candle: a broadcast add, then a
//! scalar `erf` per value in f64).

use crate::Isa;
use crate::lanes::{Lanes, LanesFn, Scalar, erf, with_lanes};

/// `gelu(v)` per lane.
#[inline(always)]
fn gelu<L: Lanes>(l: L, v: L::V) -> L::V {
    let e = erf(l, l.mul(v, l.splat(std::f32::consts::FRAC_1_SQRT_2)));
    l.mul(l.mul(v, l.splat(0.5)), l.add(l.splat(1.0), e))
}

/// `out[i] = gelu(x[i] + bias[i % width])`.
#[inline(always)]
fn run<L: Lanes>(l: L, x: &[f32], bias: &[f32], out: &mut [f32]) {
    let width = bias.len();
    for (xr, or) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let (x8, xt) = xr.as_chunks::<8>();
        let (b8, bt) = bias.as_chunks::<8>();
        let (o8, ot) = or.as_chunks_mut::<8>();
        for ((x, b), o) in x8.iter().zip(b8).zip(o8) {
            l.store(gelu(l, l.add(l.load(x), l.load(b))), o);
        }
        if !xt.is_empty() {
            // The same operations on a padded vector, portably (the same bits).
            let mut v = [0.0; 8];
            for ((v, x), b) in v.iter_mut().zip(xt).zip(bt) {
                *v = x + b;
            }
            let g = gelu(Scalar, v);
            ot.copy_from_slice(&g[..ot.len()]);
        }
    }
}

/// `out[i] = gelu(x[i] + bias[i % bias.len()])` with `isa` (`x` whole rows of `bias.len()`).
pub fn bias_gelu_into(isa: Isa, x: &[f32], bias: &[f32], out: &mut [f32]) {
    struct Run<'a>(&'a [f32], &'a [f32], &'a mut [f32]);
    impl LanesFn for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn call<L: Lanes>(self, l: L) {
            run(l, self.0, self.1, self.2)
        }
    }
    assert!(
        !bias.is_empty() && x.len().is_multiple_of(bias.len()) && out.len() == x.len(),
        "bias_gelu: {} values, bias {}, out {}",
        x.len(),
        bias.len(),
        out.len()
    );
    with_lanes(isa, Run(x, bias, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_scalar_give_the_same_bits_and_match_f64() {
        let width = 37;
        let x: Vec<f32> = (0..width * 5)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 / 50.0 - 0.3).collect();
        let mut a = vec![0.0; x.len()];
        let mut b = vec![0.0; x.len()];
        bias_gelu_into(Isa::Scalar, &x, &bias, &mut a);
        bias_gelu_into(Isa::detect(), &x, &bias, &mut b);
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "at {i}");
            let v = (x[i] + bias[i % width]) as f64;
            // f64 reference through the f64 erf of the standard candle CPU path.
            let want = candle_core::Tensor::new(&[v], &candle_core::Device::Cpu)
                .and_then(|t| t.gelu_erf())
                .and_then(|t| t.to_vec1::<f64>())
                .unwrap()[0];
            // erf within 2 ulps of 1 (an absolute 1.2e-7, scaled by v/2), plus the roundings.
            assert!(
                ((*a as f64) - want).abs() <= 0.6e-7 * v.abs() + 2.4e-7 * want.abs(),
                "gelu({v}) = {a} vs {want}"
            );
        }
    }
}
