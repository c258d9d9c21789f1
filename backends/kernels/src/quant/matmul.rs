//! `y = x Wᵀ` for a [`QMatrix`] `W` `[n, k]` and f32 activation rows `x` `[m, k]`: the rows of
//! `x` quantized once ([`Q8Rows`]), then the outputs in tiles ([`super::dot`]) split across
//! candle's CPU thread pool (`candle_core::utils::barrier_pool`, `CANDLE_NUM_THREADS` /
//! `RAYON_NUM_THREADS` threads; its workers spin between calls, so the many small products of
//! one decoding step do not pay a wake-up each).
//!
//! Work items are groups of [`GROUP`] weight rows (their quants interleaved: one sequential
//! stream per tile, see [`QMatrix::qs`]):
//! - decode (`m = 1`): tiles of one activation row × one group;
//! - prefill (`m > 1`): a worker takes a run of groups and walks the activation rows in tiles of
//!   [`PREFILL_ROWS`] × one group over that run, so each weight block is unpacked once per tile
//!   and the run's weights stay in cache across tiles.
//!
//! Outputs go through `AtomicU32` (relaxed stores: plain moves) so that workers write disjoint
//! parts of one buffer without `unsafe`.

use std::sync::atomic::{AtomicU32, Ordering};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};

use super::activation::Q8Rows;
use super::{GROUP, Isa, QMatrix, dot};

/// Activation rows per prefill tile (of half a group of weight rows).
pub(crate) const PREFILL_ROWS: usize = 4;
/// Below this many block products, one thread does it all (a fork costs more).
const SERIAL_BLOCKS: usize = 2048;

/// `x` (`m × k`, row-major) times `wᵀ`: `m × n`, row-major.
pub(crate) fn matmul(w: &QMatrix, x: &[f32], isa: Isa) -> Vec<f32> {
    let a = Q8Rows::quantize(x, w.cols, isa);
    let (m, n) = (a.rows, w.rows);
    let out: Vec<AtomicU32> = (0..m * n).map(|_| AtomicU32::new(0)).collect();
    // Work items: groups of weight rows (the last one maybe partial).
    let items = n.div_ceil(GROUP);
    let run = |range: std::ops::Range<usize>| {
        let lo = range.start * GROUP;
        let hi = (range.end * GROUP).min(n);
        compute(w, &a, lo..hi, &out, isa);
    };
    if m * n * w.nb() < SERIAL_BLOCKS || candle_core::utils::barrier_pool().n_workers() == 0 {
        run(0..items);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(items, run);
    }
    out.into_iter()
        .map(|v| f32::from_bits(v.into_inner()))
        .collect()
}

/// Every activation row against weight rows `cols`.
fn compute(w: &QMatrix, a: &Q8Rows, cols: std::ops::Range<usize>, out: &[AtomicU32], isa: Isa) {
    let n = w.rows;
    let put = |r: usize, c: usize, v: f32| out[r * n + c].store(v.to_bits(), Ordering::Relaxed);
    match isa {
        Isa::Scalar => {
            for r in 0..a.rows {
                for c in cols.clone() {
                    put(r, c, dot::scalar(w, c, a, r));
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::V3(simd) => {
            struct Run<'a, P> {
                simd: pulp::x86::V3,
                w: &'a QMatrix,
                a: &'a Q8Rows,
                cols: std::ops::Range<usize>,
                put: P,
            }
            impl<P: Fn(usize, usize, f32)> pulp::NullaryFnOnce for Run<'_, P> {
                type Output = ();
                #[inline(always)]
                fn call(self) {
                    tiles(self.simd, self.w, self.a, self.cols, &self.put);
                }
            }
            simd.vectorize(Run {
                simd,
                w,
                a,
                cols,
                put,
            });
        }
    }
}

/// The tiles of activation rows × weight rows `cols` (whole groups of [`GROUP`] rows, then
/// the rows after the last group), AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tiles(
    simd: pulp::x86::V3,
    w: &QMatrix,
    a: &Q8Rows,
    cols: std::ops::Range<usize>,
    put: &impl Fn(usize, usize, f32),
) {
    use dot::v3::{tile1, tile2, tile4};
    let scratch = &mut [[0f32; dot::v3::SEG]; 8];
    let grouped = w.grouped_rows().min(cols.end);
    let mut r = 0;
    while r < a.rows {
        let rows = (a.rows - r).min(PREFILL_ROWS);
        let mut c = cols.start;
        while c < grouped {
            if rows == PREFILL_ROWS {
                // Prefill: 4 activation rows × each half of the group.
                for half in 0..2 {
                    let ar = [r, r + 1, r + 2, r + 3];
                    let o = tile2::<PREFILL_ROWS>(simd, w, c, half, a, ar, scratch);
                    for (i, o) in o.iter().enumerate() {
                        for (j, v) in o.iter().enumerate() {
                            put(r + i, c + 2 * half + j, *v);
                        }
                    }
                }
            } else {
                // Decode, or the last activation rows: one row × the group.
                for i in 0..rows {
                    let o = tile4::<1>(simd, w, c, a, [r + i], scratch);
                    for (j, v) in o[0].iter().enumerate() {
                        put(r + i, c + j, *v);
                    }
                }
            }
            c += GROUP;
        }
        while c < cols.end {
            for i in 0..rows {
                put(r + i, c, tile1::<1>(simd, w, c, a, [r + i], scratch)[0][0]);
            }
            c += 1;
        }
        r += rows;
    }
}

/// `x Wᵀ` as a candle op on CPU tensors: `x` f32 `[..., k]` → `[..., n]`.
#[derive(Debug, Clone)]
pub struct QMatMulOp {
    pub w: std::sync::Arc<QMatrix>,
    pub isa: Isa,
}

impl CustomOp1 for QMatMulOp {
    fn name(&self) -> &'static str {
        "skillgen-qmatmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = crate::f32_data(self.name(), "activations", storage, layout)?;
        match dims.last() {
            Some(&k) if k == self.w.cols => {}
            _ => candle_core::bail!(
                "{}: activations {dims:?} against a [{}, {}] weight",
                self.name(),
                self.w.rows,
                self.w.cols
            ),
        }
        let y = matmul(&self.w, x, self.isa);
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.w.rows;
        }
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}
