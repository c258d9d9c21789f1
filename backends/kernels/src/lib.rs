//! skillgen's own CPU compute kernels for the candle backend, in safe Rust: AVX2 + FMA through
//! [`pulp`] (chosen at run time, [`Isa`]) with portable fallbacks that give the same bits.
//!
//! - [`quant`]: matrix products over GGUF-quantized weights (`Q4_1`, `Q8_0`, `Q5_0`), as
//!   llama.cpp computes them, as a candle op;
//! - [`attend`]: attention of one new position against a key/value cache (decoding);
//! - [`dense`]: f32 `x · Wᵀ` for a few rows, without packing `W`;
//! - `mkl` (the `mkl` feature): f32 `x · Wᵀ` by Intel MKL's `sgemm`, for many rows.
//!
//! A crate of its own so that debug and test builds can optimise it (see the workspace's
//! `[profile.dev.package.skillgen-kernels]`): the parity tests run real models through these
//! loops, which unoptimised are ~30× slower.

pub mod attend;
pub mod dense;
pub mod encode;
pub mod gelu;
mod lanes;
#[cfg(feature = "mkl")]
pub mod mkl;
pub mod norm;
pub mod quant;

/// The instruction set a product runs with.
#[derive(Debug, Clone, Copy)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA (x86-64-v3), detected at run time.
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
}

impl Isa {
    /// The best this CPU has.
    pub fn detect() -> Self {
        Self::detect_simd().unwrap_or(Self::Scalar)
    }

    /// The SIMD instruction set, if this CPU has one we have kernels for.
    pub fn detect_simd() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            return Some(Self::V3(simd));
        }
        None
    }
}

/// The f32 values and dims of a contiguous CPU tensor given to the candle op `op` as `what`;
/// any other storage or layout is an error naming both.
pub fn f32_data<'a>(
    op: &str,
    what: &str,
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
) -> candle_core::Result<(&'a [f32], Vec<usize>)> {
    let candle_core::CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: f32 {what} expected");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: contiguous {what} expected");
    };
    Ok((&v[a..b], l.shape().dims().to_vec()))
}
