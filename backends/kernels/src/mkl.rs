//! f32 `x · Wᵀ` by Intel MKL's `cblas_sgemm` (the `mkl` feature), for products with many
//! rows, where a packed, blocked product wins and MKL's is faster than candle's `gemm` on the
//! shapes of a BERT-like encoder (measured, see the README's "Matrix products").
//!
//! MKL's sequential layer: the rows are split over rayon's pool (the threads every other op
//! uses), not over OpenMP threads of MKL's own, which spin beside rayon's on a small machine.
#![allow(unsafe_code)]

use std::ffi::c_int;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

unsafe extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
}

/// `x · Wᵀ`: `x` `[m, k]`, `w` `[n, k]`, the result `[m, n]`, row-major; `None` when the
/// shapes do not fit MKL's 32-bit dimensions (LP64) or are empty.
pub fn matmul_wt(x: &[f32], k: usize, w: &[f32]) -> Option<Vec<f32>> {
    if k == 0 || !x.len().is_multiple_of(k) || !w.len().is_multiple_of(k) {
        return None;
    }
    let (m, n) = (x.len() / k, w.len() / k);
    let dim = |v: usize| c_int::try_from(v).ok().filter(|&v| v > 0);
    let (ni, ki) = (dim(n)?, dim(k)?);
    dim(m)?;
    // The output's length must fit too (MKL indexes it with ldc · m).
    dim(m.checked_mul(n)?)?;
    let mut out = vec![0.0f32; m * n];
    let one = |x: &[f32], out: &mut [f32]| {
        let rows = c_int::try_from(x.len() / k).unwrap_or(0);
        // SAFETY: `x` holds `rows·k` values (row-major, leading dimension `k`), `w` `n·k` (read
        // transposed, leading dimension `k`), `out` `rows·n` (leading dimension `n`), all
        // checked above to fit `c_int`; MKL reads `x` and `w`, writes only `out` within those
        // bounds, and keeps no pointer after returning.
        unsafe {
            cblas_sgemm(
                ROW_MAJOR,
                NO_TRANS,
                TRANS,
                rows,
                ni,
                ki,
                1.0,
                x.as_ptr(),
                ki,
                w.as_ptr(),
                ki,
                0.0,
                out.as_mut_ptr(),
                ni,
            );
        }
    };
    let threads = rayon::current_num_threads();
    if threads < 2 || m < 16 {
        one(x, &mut out);
    } else {
        use rayon::prelude::*;
        let per = m.div_ceil(threads);
        out.par_chunks_mut(per * n)
            .zip(x.par_chunks(per * k))
            .for_each(|(o, x)| one(x, o));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn agrees_with_the_few_row_product() {
        for (m, k, n) in [(1, 8, 1), (40, 384, 1152), (77, 37, 13)] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7) % 13) as f32 / 7.0 - 0.9)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5) % 11) as f32 / 6.0 - 0.8)
                .collect();
            let got = super::matmul_wt(&x, k, &w).unwrap();
            let want = crate::dense::matmul_wt(crate::Isa::Scalar, &x, k, &w);
            for (g, r) in got.iter().zip(&want) {
                assert!((g - r).abs() <= 1e-5 * k as f32, "{m}x{k}x{n}: {g} vs {r}");
            }
        }
        assert!(super::matmul_wt(&[], 0, &[]).is_none());
    }
}
