//! The fused encoder kernels of [`skillgen_kernels`] as candle CPU ops, their rows split across
//! rayon's pool (the threads candle's matrix products already use, so nothing else spins
//! beside them): bias + exact GELU, bias + residual + LayerNorm, attention from the fused
//! q/k/v projection, and the linear layers' product where ours beats candle's.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

use skillgen_kernels::dense::{FEW_ROWS, matmul_wt};
use skillgen_kernels::encode::{Heads, attend_input};
use skillgen_kernels::gelu::bias_gelu_into;
use skillgen_kernels::norm::{AddNorm, add_norm_into};
use skillgen_kernels::{Isa, f32_data};

/// Below this many values, an elementwise op runs on one thread.
const SERIAL: usize = 1 << 16;

/// `f(offset, input rows, output rows)` over chunks of whole rows of `width` (`offset`: the
/// chunk's first value in `x`), in parallel when large.
fn by_rows(x: &[f32], width: usize, f: impl Fn(usize, &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let rows = x.len() / width.max(1);
    let threads = rayon::current_num_threads();
    if x.len() < SERIAL || threads < 2 || rows < 2 {
        f(0, x, &mut out);
    } else {
        let per = rows.div_ceil(threads * 4).max(1) * width;
        out.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .enumerate()
            .for_each(|(i, (o, x))| f(i * per, x, o));
    }
    out
}

/// `gelu(x + bias)`: `x` `[.., width]`, `bias` `[width]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "skillgen-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = f32_data(self.name(), "input", s1, l1)?;
        let (bias, bd) = f32_data(self.name(), "bias", s2, l2)?;
        if bd.len() != 1 || dims.last() != bd.first() {
            candle_core::bail!("{}: input {dims:?}, bias {bd:?}", self.name());
        }
        let isa = Isa::detect();
        let out = by_rows(x, bias.len(), |_, x, o| bias_gelu_into(isa, x, bias, o));
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// `LN(x + bias + residual) · γ + β` (the parameters in [`AddNorm`]); `x` and the residual
/// `[.., h]`.
#[derive(Debug, Clone)]
pub(crate) struct AddLn(pub(crate) AddNorm);

impl CustomOp2 for AddLn {
    fn name(&self) -> &'static str {
        "skillgen-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = f32_data(self.name(), "input", s1, l1)?;
        let (res, rd) = f32_data(self.name(), "residual", s2, l2)?;
        let h = self.0.gamma.len();
        if dims != rd || dims.last() != Some(&h) {
            candle_core::bail!(
                "{}: input {dims:?}, residual {rd:?}, width {h}",
                self.name()
            );
        }
        let isa = Isa::detect();
        // Rows of x and the residual at the same offsets: split the residual alongside.
        let out = by_rows(x, h, |at, xc, o| {
            add_norm_into(isa, &self.0, xc, &res[at..at + xc.len()], o);
        });
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// Self-attention of a batch whose rows come packed (each input its own `len` rows, one after
/// the other: no padding) from the fused projection: `qkv` `[Σ len, 3·h]` without its bias,
/// the bias `[3·h]` → `[Σ len, h]`.
#[derive(Debug, Clone)]
pub(crate) struct Attend {
    pub(crate) heads: usize,
    pub(crate) scale: f32,
    /// Each input's length.
    pub(crate) lens: Arc<[usize]>,
    /// An additive bias `[heads, n, n]` (MPNet's relative positions; `n` the longest input).
    pub(crate) rel: Option<Arc<[f32]>>,
}

impl CustomOp2 for Attend {
    fn name(&self) -> &'static str {
        "skillgen-encoder-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qkv, dims) = f32_data(self.name(), "qkv", s1, l1)?;
        let (qb, bd) = f32_data(self.name(), "qkv bias", s2, l2)?;
        let total: usize = self.lens.iter().sum();
        let [t, h3] = dims[..] else {
            candle_core::bail!("{}: qkv {dims:?}", self.name());
        };
        if t != total || h3 % 3 != 0 || bd != [h3] {
            candle_core::bail!(
                "{}: qkv {dims:?}, bias {bd:?}, inputs of {:?} tokens",
                self.name(),
                self.lens
            );
        }
        let h = h3 / 3;
        let isa = Isa::detect();
        let heads = Heads {
            heads: self.heads,
            scale: self.scale,
        };
        let mut out = vec![0.0; t * h];
        // Each input's output and qkv rows.
        let mut parts = Vec::with_capacity(self.lens.len());
        let (mut rest, mut at) = (out.as_mut_slice(), 0);
        for &len in self.lens.iter() {
            let (o, tail) = rest.split_at_mut(len * h);
            parts.push((o, &qkv[at * h3..(at + len) * h3], len));
            rest = tail;
            at += len;
        }
        let one = |(o, q, len): (&mut [f32], &[f32], usize)| {
            if len > 0 {
                attend_input(isa, heads, q, Some(qb), len, len, self.rel.as_deref(), o);
            }
        };
        if parts.len() > 1 && rayon::current_num_threads() > 1 {
            // The longest first, so the uneven tasks even out.
            parts.sort_by_key(|p| std::cmp::Reverse(p.2));
            parts.into_par_iter().for_each(one);
        } else {
            parts.into_iter().for_each(one);
        }
        Ok((CpuStorage::F32(out), Shape::from((t, h))))
    }
}

/// `x · Wᵀ` as a candle op: `x` `[m, k]`, `w` `[n, k]` (a linear layer's weight, read in place)
/// → `[m, n]`; [`matmul_wt`] for [`FEW_ROWS`], MKL's `sgemm` (the `mkl` feature) for more.
///
/// The encoders only: the decoders keep candle's product, with which their parity with
/// llama.cpp was measured (through ours, Gemma 3's greedy continuation parts from llama.cpp's
/// after 4 of 8 tokens: summation order alone, the teacher-forced logits stay in bounds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowsTimesWt;

impl RowsTimesWt {
    /// Whether this op is faster than candle's product for `rows` rows.
    pub(crate) fn pays(rows: usize) -> bool {
        FEW_ROWS.contains(&rows) || (cfg!(feature = "mkl") && rows > *FEW_ROWS.end())
    }
}

impl CustomOp2 for RowsTimesWt {
    fn name(&self) -> &'static str {
        "skillgen-rows-times-wt"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, xd) = f32_data(self.name(), "input", s1, l1)?;
        let (w, wd) = f32_data(self.name(), "weight", s2, l2)?;
        let (&[m, k], &[n, wk]) = (xd.as_slice(), wd.as_slice()) else {
            candle_core::bail!("{}: input {xd:?}, weight {wd:?}", self.name());
        };
        if k != wk || k == 0 {
            candle_core::bail!("{}: input {xd:?}, weight {wd:?}", self.name());
        }
        #[cfg(feature = "mkl")]
        if !FEW_ROWS.contains(&m) {
            let Some(out) = skillgen_kernels::mkl::matmul_wt(x, k, w) else {
                candle_core::bail!(
                    "{}: [{m}, {k}] × [{n}, {k}]ᵀ exceeds MKL's sizes",
                    self.name()
                );
            };
            return Ok((CpuStorage::F32(out), Shape::from((m, n))));
        }
        let out = matmul_wt(Isa::detect(), x, k, w);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}
