//! The quantized products against candle (`QTensor` dequantization + f32 matmul, and
//! `QMatMul` itself), and the scalar path against AVX2, on odd shapes.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use super::activation::Q8Rows;
use super::{Isa, Kind, QK, QMatrix, f16, matmul::matmul};

/// Deterministic values: mixed magnitudes and signs, some exact zeros.
pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let u = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            if i % 41 == 0 {
                0.0
            } else {
                u * (0.2 + (i % 5) as f32)
            }
        })
        .collect()
}

fn qtensor(kind: Kind, rows: usize, cols: usize, seed: u32) -> QTensor {
    let w = Tensor::from_vec(values(rows * cols, seed), (rows, cols), &Device::Cpu).unwrap();
    let dtype = match kind {
        Kind::Q4_1 => GgmlDType::Q4_1,
        Kind::Q8_0 => GgmlDType::Q8_0,
        Kind::Q5_0 => GgmlDType::Q5_0,
    };
    QTensor::quantize(&w, dtype).unwrap()
}

/// (m, n, k): one and several activation rows (tiles and their tails), weight rows not a
/// multiple of the tiles, rows of 1, 3, 9, 18 and 48 blocks (groups of 8 and their tails).
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 32),
    (1, 7, 96),
    (1, 13, 288),
    (1, 64, 576),
    (2, 3, 288),
    (5, 9, 576),
    (4, 2, 32),
    (9, 17, 1536),
    (13, 5, 96),
];

const KINDS: [Kind; 3] = [Kind::Q4_1, Kind::Q8_0, Kind::Q5_0];

/// Our blocks are candle's: the dequantized weights are candle's bit for bit, and the GGUF
/// bytes come back unchanged.
#[test]
fn blocks_round_trip_and_dequantize_as_candle() {
    for kind in KINDS {
        let q = qtensor(kind, 7, 96, 3);
        let m = QMatrix::from_qtensor(&q).unwrap();
        let want = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = m.dequantize();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{kind:?}"
        );
        assert_eq!(m.to_qtensor().unwrap().data().unwrap(), q.data().unwrap());
    }
}

/// Within the error of quantizing the activations of the exact product of the dequantized
/// weights (candle's `QTensor::dequantize` + an f64 matmul): per output,
/// `Σ_b (0.6 · d_b · Σ_{i∈b} |w_i| + 2⁻¹⁰ · |m_b| · Σ_{i∈b} |x_i|) + 1e-5 · Σ |w_i x_i|`
/// (half a quantization step per value, the f16 rounding of the scales, float sums).
#[test]
fn products_are_within_activation_quantization_error_of_f32() {
    for kind in KINDS {
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            let q = qtensor(kind, n, k, 10 + i as u32);
            let w = QMatrix::from_qtensor(&q).unwrap();
            let wf = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let x = values(m * k, 100 + i as u32);
            let a = Q8Rows::quantize(&x, k, Isa::Scalar);
            let y = matmul(&w, &x, Isa::detect());
            let mut worst = 0f64;
            for r in 0..m {
                for c in 0..n {
                    let (xr, wc) = (&x[r * k..(r + 1) * k], &wf[c * k..(c + 1) * k]);
                    let exact: f64 = xr
                        .iter()
                        .zip(wc)
                        .map(|(a, b)| f64::from(*a) * f64::from(*b))
                        .sum();
                    let mut tol = 0f64;
                    for b in 0..k / QK {
                        let s = b * QK..(b + 1) * QK;
                        let d = f64::from(a.d[r * a.stride + b]);
                        let sw: f64 = wc[s.clone()].iter().map(|v| f64::from(v.abs())).sum();
                        let sx: f64 = xr[s].iter().map(|v| f64::from(v.abs())).sum();
                        let mb = match kind {
                            Kind::Q4_1 => f64::from(f16::to_f32(w.m[c * (k / QK) + b])).abs(),
                            Kind::Q8_0 | Kind::Q5_0 => 0.0,
                        };
                        tol += 0.6 * d * sw + mb * sx / 1024.0;
                    }
                    let mag: f64 = xr
                        .iter()
                        .zip(wc)
                        .map(|(a, b)| f64::from((a * b).abs()))
                        .sum();
                    tol += 1e-5 * mag;
                    let err = (f64::from(y[r * n + c]) - exact).abs();
                    assert!(
                        err <= tol,
                        "{kind:?} {m}x{n}x{k} [{r},{c}]: |{} - {exact}| > {tol}",
                        y[r * n + c]
                    );
                    worst = worst.max(err / tol);
                }
            }
            eprintln!("{kind:?} {m}x{n}x{k}: worst error {worst:.3} of the bound");
        }
    }
}

/// Against candle's own `QMatMul` (its `Q8_1` / `Q8_0` activations, its kernels; the shapes
/// rows made an even number of blocks, which candle's `Q4_1` kernel asserts): the quants
/// of the activations are the same here (checked), so the integer dot of every block is; what
/// differs is the order of the f32 sums and, for `Q4_1`, candle's `s` (`f16(Σq) · f16(d)`
/// in f16 where llama.cpp and we round `d · Σq` once). Bound per output:
/// `Σ_b |m_b| · |s_b − s'_b| + 4e-6 · Σ_b |d_w d_a| Σ_i |q_w q_a| + |m_b s_b|`.
#[test]
fn products_match_candles_qmatmul() {
    for kind in KINDS {
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            let k = k.div_ceil(2 * QK) * 2 * QK;
            let q = qtensor(kind, n, k, 20 + i as u32);
            let w = QMatrix::from_qtensor(&q).unwrap();
            let x = values(m * k, 200 + i as u32);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let want = QMatMul::from_qtensor(q)
                .unwrap()
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let a = Q8Rows::quantize(&x, k, Isa::Scalar);
            // candle's activation blocks: d, (s), qs.
            let (adt, bytes) = match kind {
                Kind::Q4_1 => (GgmlDType::Q8_1, 36),
                Kind::Q8_0 | Kind::Q5_0 => (GgmlDType::Q8_0, 34),
            };
            let theirs = QTensor::quantize(&xt, adt)
                .unwrap()
                .data()
                .unwrap()
                .into_owned();
            let mut s_theirs = Vec::new();
            for (b, blk) in theirs.chunks_exact(bytes).enumerate() {
                let h = |at: usize| f16::to_f32(u16::from_le_bytes([blk[at], blk[at + 1]]));
                let at = b / (k / QK) * a.stride + b % (k / QK);
                assert_eq!(h(0), a.d[at], "{kind:?}: block {b} scale");
                let qs = &blk[bytes - QK..];
                assert!(
                    qs.iter()
                        .zip(&a.qs[b * QK..(b + 1) * QK])
                        .all(|(x, y)| *x as i8 == *y),
                    "{kind:?}: block {b} quants"
                );
                s_theirs.push(if kind == Kind::Q4_1 { h(2) } else { 0.0 });
            }
            let y = matmul(&w, &x, Isa::detect());
            let nb = k / QK;
            let mut worst = 0f64;
            for r in 0..m {
                for c in 0..n {
                    let mut tol = 0f64;
                    for b in 0..nb {
                        let (ab, wb, sb) = (r * nb + b, c * nb + b, r * a.stride + b);
                        let qw = &w.qs[wb * kind.qs_bytes()..(wb + 1) * kind.qs_bytes()];
                        let qa = &a.qs[ab * QK..(ab + 1) * QK];
                        let sq: f64 = (0..QK)
                            .map(|i| {
                                let x = match kind {
                                    Kind::Q4_1 if i < 16 => f64::from(qw[i] & 15),
                                    Kind::Q4_1 => f64::from(qw[i - 16] >> 4),
                                    Kind::Q8_0 => f64::from(qw[i] as i8),
                                    Kind::Q5_0 => f64::from(super::q5_0(qw, i)),
                                };
                                (x * f64::from(qa[i])).abs()
                            })
                            .sum();
                        let dd = f64::from(f16::to_f32(w.d[wb]) * a.d[sb]).abs();
                        let (mb, s) = match kind {
                            Kind::Q4_1 => (f64::from(f16::to_f32(w.m[wb])), f64::from(a.s[sb])),
                            Kind::Q8_0 | Kind::Q5_0 => (0.0, 0.0),
                        };
                        tol += mb.abs() * (s - f64::from(s_theirs[ab])).abs();
                        tol += 4e-6 * (dd * sq + (mb * s).abs());
                    }
                    let err = (f64::from(y[r * n + c]) - f64::from(want[r * n + c])).abs();
                    assert!(
                        err <= tol,
                        "{kind:?} {m}x{n}x{k} [{r},{c}]: ours {} candle {} (|Δ| {err} > {tol})",
                        y[r * n + c],
                        want[r * n + c]
                    );
                    worst = worst.max(err / tol.max(f64::MIN_POSITIVE));
                }
            }
            eprintln!("{kind:?} {m}x{n}x{k}: worst |Δ| vs QMatMul {worst:.3} of the bound");
        }
    }
}

/// The AVX2 tiles and the scalar path give the same bits on every shape (every tile kind and
/// tail), single- and multi-threaded.
#[test]
fn simd_and_scalar_products_agree_bit_for_bit() {
    let Some(isa) = Isa::detect_simd() else {
        eprintln!("no AVX2+FMA here: only the scalar path runs");
        return;
    };
    for kind in KINDS {
        for (i, &(m, n, k)) in SHAPES
            .iter()
            .chain(&[(7, 301, 576), (1, 1001, 96)])
            .enumerate()
        {
            let w = QMatrix::from_qtensor(&qtensor(kind, n, k, 30 + i as u32)).unwrap();
            let x = values(m * k, 300 + i as u32);
            let a = matmul(&w, &x, Isa::Scalar);
            let b = matmul(&w, &x, isa);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{kind:?} {m}x{n}x{k}");
            assert!(w.normal, "{kind:?} {m}x{n}x{k}: the fast scale conversion");
            // All-zero rows: zero scales, the exact scale conversion.
            let mut z = values(n * k, 30 + i as u32);
            z[..k].fill(0.0);
            let zt = Tensor::from_vec(z, (n, k), &Device::Cpu).unwrap();
            let dtype = qtensor(kind, 1, QK, 0).dtype();
            let w = QMatrix::from_qtensor(&QTensor::quantize(&zt, dtype).unwrap()).unwrap();
            assert!(!w.normal);
            let a = matmul(&w, &x, Isa::Scalar);
            let b = matmul(&w, &x, isa);
            assert_eq!(bits(&a), bits(&b), "{kind:?} {m}x{n}x{k}, zero scales");
        }
    }
}

/// Types without kernels here, and matrices whose rows are not whole blocks, stay with candle.
#[test]
fn other_block_types_are_left_to_candle() {
    let w = Tensor::from_vec(values(4 * 256, 1), (4, 256), &Device::Cpu).unwrap();
    for dtype in [
        GgmlDType::Q4K,
        GgmlDType::Q6K,
        GgmlDType::Q5_1,
        GgmlDType::Q4_0,
    ] {
        let q = QTensor::quantize(&w, dtype).unwrap();
        assert!(QMatrix::from_qtensor(&q).is_none(), "{dtype:?}");
    }
}

/// Throughput of the products on SmolLM2-135M's shapes (not a check: `--ignored`, release):
/// `cargo test --release -p skillgen-kernels --lib quant::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn throughput() {
    let isa = Isa::detect();
    for kind in KINDS {
        for &(m, n, k) in &[
            (1, 960, 576),
            (1, 3072, 576),
            (1, 576, 1536),
            (1, 49152, 576),
            (128, 3072, 576),
            (128, 576, 1536),
        ] {
            if kind != Kind::Q4_1 && n != 49152 {
                continue;
            }
            // SKILLGEN_QUANT_SHAPE=KIND:MxNxK picks one.
            if let Ok(only) = std::env::var("SKILLGEN_QUANT_SHAPE")
                && only != format!("{kind:?}:{m}x{n}x{k}")
            {
                continue;
            }
            let w = QMatrix::from_qtensor(&qtensor(kind, n, k, 1)).unwrap();
            let x = values(m * k, 2);
            let bytes = (w.qs.len() + 2 * (w.d.len() + w.m.len())) as f64;
            let scale: usize = std::env::var("SKILLGEN_QUANT_ITERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(20);
            let iters = if m == 1 {
                10 * scale
            } else {
                scale.div_ceil(2)
            };
            let _ = matmul(&w, &x, isa);
            let t = std::time::Instant::now();
            for _ in 0..iters {
                std::hint::black_box(matmul(&w, &x, isa));
            }
            let s = t.elapsed().as_secs_f64() / iters as f64;
            let blocks = (m * n * k / QK) as f64;
            eprintln!(
                "{kind:?} {m}x{n}x{k}: {:.1} µs, {:.2} GB/s of weights, {:.2} ns per block product",
                s * 1e6,
                bytes / s / 1e9,
                s * 1e9 / blocks
            );
        }
    }
}
