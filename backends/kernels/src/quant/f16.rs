//! IEEE half-precision conversions, exact: GGUF blocks store their scales as f16, and
//! llama.cpp rounds the activations' block scales to f16 (round to nearest, ties to even)
//! before using them.

/// The f16 bits `h` as an f32 (exact; every f16 is an f32; no subnormal operand reaches a
/// float unit).
#[inline(always)]
pub(crate) fn to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let mut o = (h & 0x7fff) << 13;
    let e = o & 0x0f80_0000;
    o += (127 - 15) << 23;
    let f = if e == 0x0f80_0000 {
        // Infinity, NaN: exponent all ones.
        f32::from_bits(o + ((128 - 16) << 23))
    } else if e == 0 {
        // Zero, subnormal: renormalise by subtracting 2^-14.
        f32::from_bits(o + (1 << 23)) - f32::from_bits(113 << 23)
    } else {
        f32::from_bits(o)
    };
    f32::from_bits(f.to_bits() | sign)
}

/// `x` rounded to the nearest f16 (ties to even; overflow to infinity), as f16 bits; what
/// `_cvtss_sh(x, 0)` (llama.cpp's `GGML_FP32_TO_FP16` on x86) gives.
pub(crate) fn from_f32(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = (b >> 16) & 0x8000;
    let exp = b & 0x7f80_0000;
    let man = b & 0x007f_ffff;
    if exp == 0x7f80_0000 {
        let nan = if man == 0 { 0 } else { 0x0200 };
        return (sign | 0x7c00 | nan | (man >> 13)) as u16;
    }
    let half_exp = ((exp >> 23) as i32) - 127 + 15;
    if half_exp >= 0x1f {
        return (sign | 0x7c00) as u16;
    }
    if half_exp <= 0 {
        // A subnormal f16 (or zero).
        if 14 - half_exp > 24 {
            return sign as u16;
        }
        let man = man | 0x0080_0000;
        let mut half_man = man >> (14 - half_exp);
        let round = 1u32 << (13 - half_exp);
        if man & round != 0 && man & (3 * round - 1) != 0 {
            half_man += 1;
        }
        return (sign | half_man) as u16;
    }
    let v = sign | ((half_exp as u32) << 10) | (man >> 13);
    let round = 0x1000;
    // Round up when above half, or exactly half with an odd result (a carry into the
    // exponent is right: it gives the next binade, or infinity).
    if man & round != 0 && man & (3 * round - 1) != 0 {
        (v + 1) as u16
    } else {
        v as u16
    }
}

/// `x` rounded to f16 and back.
#[inline(always)]
pub(crate) fn round(x: f32) -> f32 {
    to_f32(from_f32(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// Every f16 converts to f32 as candle (the `half` crate) converts it; NaNs stay NaNs.
    #[test]
    fn every_f16_converts_as_candle_does() {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        let want = Tensor::from_raw_buffer(&bytes, DType::F16, &[bits.len()], &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .unwrap();
        for (&h, w) in bits.iter().zip(&want) {
            let got = to_f32(h);
            if w.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got.to_bits(), w.to_bits(), "{h:#06x}");
            }
        }
        // The kernels' eight-at-a-time conversion gives the same bits.
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            struct Run<'a>(pulp::x86::V3, &'a [u16], &'a mut Vec<f32>);
            impl pulp::NullaryFnOnce for Run<'_> {
                type Output = ();
                #[inline(always)]
                fn call(self) {
                    let Run(simd, bits, out) = self;
                    for h in bits.as_chunks::<8>().0 {
                        let v: [f32; 8] =
                            pulp::bytemuck::cast(super::super::dot::v3::f16x8(simd, *h));
                        out.extend(v);
                    }
                }
            }
            let mut got = Vec::new();
            simd.vectorize(Run(simd, &bits, &mut got));
            for (&h, g) in bits.iter().zip(&got) {
                assert_eq!(g.to_bits(), to_f32(h).to_bits(), "{h:#06x}");
            }
            // And the short sequence, on every normal f16.
            struct Normal<'a>(pulp::x86::V3, &'a [u16], &'a mut Vec<f32>);
            impl pulp::NullaryFnOnce for Normal<'_> {
                type Output = ();
                #[inline(always)]
                fn call(self) {
                    let Normal(simd, bits, out) = self;
                    for h in bits.as_chunks::<8>().0 {
                        let v = super::super::dot::v3::f16x8_normal(simd, *h);
                        out.extend(pulp::bytemuck::cast::<_, [f32; 8]>(v));
                    }
                }
            }
            let normal: Vec<u16> = bits
                .iter()
                .copied()
                .filter(|h| !matches!(h & 0x7c00, 0 | 0x7c00))
                .collect();
            let mut got = Vec::new();
            simd.vectorize(Normal(simd, &normal, &mut got));
            assert_eq!(got.len(), normal.len());
            for (&h, g) in normal.iter().zip(&got) {
                assert_eq!(g.to_bits(), to_f32(h).to_bits(), "{h:#06x}");
            }
        }
    }

    /// f32 to f16 rounds as candle does, on every f16, the midpoints between neighbours (ties
    /// to even), their neighbours, overflow and subnormals, and a sweep of f32 values.
    #[test]
    fn f32_to_f16_rounds_to_nearest_even_as_candle_does() {
        let mut xs = Vec::new();
        for h in 0..0x7c00u16 {
            let a = to_f32(h);
            let b = to_f32(h + 1);
            let mid = (f64::from(a) + f64::from(b)) / 2.0;
            let mid = mid as f32;
            for x in [
                a,
                mid,
                f32::from_bits(mid.to_bits() + 1),
                f32::from_bits(mid.to_bits().saturating_sub(1)),
            ] {
                xs.push(x);
                xs.push(-x);
            }
        }
        let mut b = 0u32;
        while b < 0x7f80_0000 {
            xs.push(f32::from_bits(b));
            b += 0x1357;
        }
        xs.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            65504.0,
            65519.99,
            65520.0,
            1e-8,
            3e-8,
        ]);
        let want = Tensor::from_vec(xs.clone(), xs.len(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F16))
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .unwrap();
        for (x, w) in xs.iter().zip(&want) {
            assert_eq!(round(*x).to_bits(), w.to_bits(), "{x:e}");
        }
    }
}
