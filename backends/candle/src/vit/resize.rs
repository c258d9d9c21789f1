//! Antialiased bilinear resizing as PyTorch's `F.interpolate(mode="bilinear",
//! align_corners=False, antialias=True)` computes it (PIL's separable triangle filter, widened
//! by the scale when shrinking), as matrices over flattened grids.

/// The `out × input` weights of resizing one axis of length `input` to `out`.
fn axis_weights(input: usize, out: usize) -> Vec<f64> {
    let scale = input as f64 / out as f64;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut m = vec![0f64; out * input];
    for i in 0..out {
        let center = scale * (i as f64 + 0.5);
        // `int()` truncation, as the kernel; then clamped to the axis.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).clamp(0, input as i64) as usize;
        let row = &mut m[i * input..(i + 1) * input];
        let mut total = 0.0;
        for (j, slot) in row.iter_mut().enumerate().take(hi).skip(lo) {
            let x = ((j as f64 - center + 0.5) * inv).abs();
            *slot = if x < 1.0 { 1.0 - x } else { 0.0 };
            total += *slot;
        }
        if total > 0.0 {
            row.iter_mut().for_each(|w| *w /= total);
        }
    }
    m
}

/// The `(h·w) × (in_h·in_w)` matrix that resizes a row-major `in_h × in_w` grid to `h × w`.
pub(crate) fn antialiased_bilinear(in_h: usize, in_w: usize, h: usize, w: usize) -> Vec<f32> {
    let (mh, mw) = (axis_weights(in_h, h), axis_weights(in_w, w));
    let mut out = Vec::with_capacity(h * w * in_h * in_w);
    for i in 0..h {
        for j in 0..w {
            for a in 0..in_h {
                for b in 0..in_w {
                    out.push((mh[i * in_h + a] * mw[j * in_w + b]) as f32);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity() {
        let m = antialiased_bilinear(3, 2, 3, 2);
        for r in 0..6 {
            for c in 0..6 {
                assert_eq!(m[r * 6 + c], f32::from(u8::from(r == c)));
            }
        }
    }

    #[test]
    fn rows_sum_to_one_and_match_torch() {
        // torch 2.15: F.interpolate(torch.arange(5.).view(1, 1, 1, 5), size=(1, n),
        // mode="bilinear", align_corners=False, antialias=True) for n = 2, 3, 8.
        let resized = |n: usize| -> Vec<f64> {
            let w = axis_weights(5, n);
            (0..n)
                .map(|i| (0..5).map(|j| w[i * 5 + j] * j as f64).sum())
                .collect()
        };
        let close = |got: Vec<f64>, want: &[f64]| {
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-4),
                "{got:?} vs {want:?}"
            );
        };
        close(resized(2), &[1.0, 3.0]);
        close(resized(3), &[0.4286, 2.0, 3.5714]);
        close(
            resized(8),
            &[0.0, 0.4375, 1.0625, 1.6875, 2.3125, 2.9375, 3.5625, 4.0],
        );
        for r in antialiased_bilinear(5, 4, 3, 7).chunks(20) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
