//! `x · Wᵀ` in f32 for a few rows of `x` (one text, a small batch, a decoding step), with `W`
//! as checkpoints store a linear layer's weight: `[out, in]`, row-major.
//!
//! A general matrix product (candle's `gemm`) first packs both operands into its own blocked
//! layout; with a few rows the packing of `W` costs as much as the arithmetic (measured on
//! MiniLM at one text: 40% of the time in packing, 28% in the micro-kernels). Here `W` is read
//! once, in place: each output is a dot product of a row of `x` with a row of `W`, computed
//! two rows of `x` by four rows of `W` at a time (eight eight-lane accumulators), summed in a
//! fixed order. Measured against `gemm` on MiniLM's four layer shapes, 2 threads (the
//! `dense_rows` example): 0.32× its time at 2 rows, 0.45× at 8, 0.74× at 16, 0.94× at 32,
//! 1.14× at 48; at one row `gemm`'s own matrix-vector path is faster (1.5×). Hence
//! [`FEW_ROWS`].

use crate::Isa;
use crate::lanes::{Lanes, LanesFn, hsum, with_lanes};

/// The row counts for which [`matmul_wt`] is faster than a packed general product on the CPU
/// we measured (`cargo run --release -p skillgen-kernels --example dense_rows`).
pub const FEW_ROWS: std::ops::RangeInclusive<usize> = 2..=32;

/// Rows of `x` per block (see [`tile_2x4`]).
const XR: usize = 2;
/// Rows of `W` per block.
const WR: usize = 4;

/// The sum of an accumulator's lanes and the products of the tails `x[body..]`, `w[body..]`.
#[inline(always)]
fn finish<L: Lanes>(l: L, acc: L::V, x: &[f32], w: &[f32], body: usize) -> f32 {
    let mut lanes = [0.0; 8];
    l.store(acc, &mut lanes);
    let mut s = hsum(lanes);
    for (x, w) in x[body..].iter().zip(&w[body..]) {
        s = x.mul_add(*w, s);
    }
    s
}

/// The dot products of two rows of `x` with four rows of `W` (eight accumulators, named: in an
/// array LLVM stores them back to the stack on every step).
#[inline(always)]
fn tile_2x4<L: Lanes>(l: L, x: [&[f32]; 2], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let z = l.splat(0.0);
    let (mut a0, mut a1, mut a2, mut a3, mut b0, mut b1, mut b2, mut b3) = (z, z, z, z, z, z, z, z);
    let [x0, x1] = x.map(|r| r.as_chunks::<8>().0);
    let [w0, w1, w2, w3] = w.map(|r| r.as_chunks::<8>().0);
    let steps = x0.iter().zip(x1).zip(w0).zip(w1).zip(w2).zip(w3);
    for (((((x0, x1), w0), w1), w2), w3) in steps {
        let (x0, x1) = (l.load(x0), l.load(x1));
        let w = l.load(w0);
        a0 = l.fma(x0, w, a0);
        b0 = l.fma(x1, w, b0);
        let w = l.load(w1);
        a1 = l.fma(x0, w, a1);
        b1 = l.fma(x1, w, b1);
        let w = l.load(w2);
        a2 = l.fma(x0, w, a2);
        b2 = l.fma(x1, w, b2);
        let w = l.load(w3);
        a3 = l.fma(x0, w, a3);
        b3 = l.fma(x1, w, b3);
    }
    let body = x0.len() * 8;
    let f = |acc, a: usize, b: usize| finish(l, acc, x[a], w[b], body);
    [
        [f(a0, 0, 0), f(a1, 0, 1), f(a2, 0, 2), f(a3, 0, 3)],
        [f(b0, 1, 0), f(b1, 1, 1), f(b2, 1, 2), f(b3, 1, 3)],
    ]
}

/// The dot products of one row of `x` with four rows of `W`.
#[inline(always)]
fn tile_1x4<L: Lanes>(l: L, x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let z = l.splat(0.0);
    let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
    let x0 = x.as_chunks::<8>().0;
    let [w0, w1, w2, w3] = w.map(|r| r.as_chunks::<8>().0);
    for ((((x0, w0), w1), w2), w3) in x0.iter().zip(w0).zip(w1).zip(w2).zip(w3) {
        let x0 = l.load(x0);
        a0 = l.fma(x0, l.load(w0), a0);
        a1 = l.fma(x0, l.load(w1), a1);
        a2 = l.fma(x0, l.load(w2), a2);
        a3 = l.fma(x0, l.load(w3), a3);
    }
    let body = x0.len() * 8;
    let f = |acc, b: usize| finish(l, acc, x, w[b], body);
    [f(a0, 0), f(a1, 1), f(a2, 2), f(a3, 3)]
}

/// The dot product of one row of `x` with one row of `W`.
#[inline(always)]
fn tile_1x1<L: Lanes>(l: L, x: &[f32], w: &[f32]) -> f32 {
    let mut a = l.splat(0.0);
    let (xc, wc) = (x.as_chunks::<8>().0, w.as_chunks::<8>().0);
    for (x, w) in xc.iter().zip(wc) {
        a = l.fma(l.load(x), l.load(w), a);
    }
    finish(l, a, x, w, xc.len() * 8)
}

/// `out[i][j] = Σₖ x[i][k] · w[j][k]` for the rows `j` of `w` in `out`'s block: `x` `[m, k]`,
/// `w` `[nb, k]`, `outt` `[nb, m]` (transposed: one row per row of `w`).
#[inline(always)]
fn block<L: Lanes>(l: L, x: &[f32], k: usize, w: &[f32], outt: &mut [f32]) {
    let m = x.len() / k;
    let xrow = |i: usize| &x[i * k..][..k];
    let wrow = |j: usize| &w[j * k..][..k];
    for (jb, (wb, ob)) in w.chunks(WR * k).zip(outt.chunks_mut(WR * m)).enumerate() {
        let j0 = jb * WR;
        if wb.len() == WR * k {
            let ws: [&[f32]; WR] = std::array::from_fn(|b| wrow(j0 + b));
            let mut i = 0;
            while i + XR <= m {
                let t = tile_2x4(l, [xrow(i), xrow(i + 1)], ws);
                for (b, col) in ob.chunks_exact_mut(m).enumerate() {
                    col[i] = t[0][b];
                    col[i + 1] = t[1][b];
                }
                i += XR;
            }
            for i in i..m {
                let t = tile_1x4(l, xrow(i), ws);
                for (b, col) in ob.chunks_exact_mut(m).enumerate() {
                    col[i] = t[b];
                }
            }
        } else {
            for (b, col) in ob.chunks_exact_mut(m).enumerate() {
                for (i, o) in col.iter_mut().enumerate() {
                    *o = tile_1x1(l, xrow(i), wrow(j0 + b));
                }
            }
        }
    }
}

/// [`block`] with `isa`.
fn block_with(isa: Isa, x: &[f32], k: usize, w: &[f32], outt: &mut [f32]) {
    struct Run<'a>(&'a [f32], usize, &'a [f32], &'a mut [f32]);
    impl LanesFn for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn call<L: Lanes>(self, l: L) {
            block(l, self.0, self.1, self.2, self.3);
        }
    }
    with_lanes(isa, Run(x, k, w, outt));
}

/// `x · Wᵀ`: `x` `[m, k]`, `w` `[n, k]`, the result `[m, n]`, row-major. The rows of `W` are
/// split over rayon's pool when there are several threads and enough work.
///
/// # Panics
/// If `k` is 0 or the lengths are not multiples of `k`.
pub fn matmul_wt(isa: Isa, x: &[f32], k: usize, w: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    assert!(
        k > 0 && x.len().is_multiple_of(k) && w.len().is_multiple_of(k),
        "matmul_wt: x has {} values, w {}, rows of {k}",
        x.len(),
        w.len()
    );
    let (m, n) = (x.len() / k, w.len() / k);
    let mut outt = vec![0.0f32; n * m];
    let threads = rayon::current_num_threads();
    // Below ~64k multiply-adds a second thread costs more than it saves.
    if threads < 2 || m * n * k < 1 << 16 || n < 2 * WR {
        block_with(isa, x, k, w, &mut outt);
    } else {
        // A few blocks per thread (whole blocks of `WR` rows), so an uneven split evens out.
        let per = n.div_ceil(threads * 2).div_ceil(WR) * WR;
        outt.par_chunks_mut(per * m)
            .zip(w.par_chunks(per * k))
            .for_each(|(o, w)| block_with(isa, x, k, w, o));
    }
    if m == 1 {
        return outt;
    }
    let mut out = vec![0.0f32; m * n];
    for (j, col) in outt.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            out[i * n + j] = *v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::tests::values;

    fn reference(x: &[f32], k: usize, w: &[f32]) -> Vec<f64> {
        let (m, n) = (x.len() / k, w.len() / k);
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                    .sum();
            }
        }
        out
    }

    #[test]
    fn matches_an_f64_product_and_the_lanes_agree_bit_for_bit() {
        // Shapes with remainders everywhere: rows of x and W not multiples of the block, k not
        // a multiple of 8, and enough work to take the threaded path.
        for (m, k, n) in [
            (1, 8, 1),
            (1, 384, 1152),
            (2, 13, 7),
            (3, 64, 9),
            (5, 37, 130),
            (7, 384, 96),
            (24, 100, 33),
            (16, 1536, 40),
        ] {
            let x = values(m * k, m as u32);
            let w = values(n * k, n as u32 + 7);
            let want = reference(&x, k, &w);
            let simd = matmul_wt(Isa::detect(), &x, k, &w);
            let scalar = matmul_wt(Isa::Scalar, &x, k, &w);
            assert_eq!(simd.len(), m * n);
            for (i, ((a, b), r)) in simd.iter().zip(&scalar).zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{m}x{k}x{n} [{i}]: {a} vs {b}");
                // f32 accumulation over k products of magnitude ≤ ~4.4.
                let tol = 5e-6 * k as f64;
                assert!(
                    (*a as f64 - r).abs() <= tol,
                    "{m}x{k}x{n} [{i}]: {a} vs {r}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "rows of 3")]
    fn a_ragged_operand_is_refused() {
        matmul_wt(Isa::Scalar, &[1.0; 4], 3, &[1.0; 3]);
    }
}
