//! Our own CPU matrix products over GGUF-quantized weights, in safe Rust: llama.cpp's
//! definitions (the activations quantized to 8 bits per block of 32, integer dot products per
//! block, the scales applied in f32), with AVX2 + FMA kernels chosen at run time
//! ([`pulp::x86::V3`]) and a scalar fallback that gives the same bits.
//!
//! - [`f16`]: exact f16 ↔ f32 conversions (the block scales);
//! - [`activation`]: the activation rows quantized as llama.cpp's AVX2 `quantize_row_q8_1`;
//! - [`dot`]: the block dot products, scalar and AVX2, for tiles of activation rows × weight
//!   rows;
//! - [`matmul`]: `y = x Wᵀ` over the tiles, split across candle's CPU thread pool, as a
//!   candle custom op.
//!
//! Block types: `Q4_1` (× `Q8_1` activations), `Q8_0` and `Q5_0` (× `Q8_0`). Others (the
//! K-quants, ...) stay on candle's `QMatMul`, which has AVX2 kernels for them (see
//! [`QMatrix::from_qtensor`]; `SKILLGEN_QUANT_SKIP=Q5_0,Q8_0` leaves listed types to candle
//! too, for comparisons).
//!
//! **Arithmetic, fixed for every path.** For one output (weight row `w`, activation row `a`)
//! over the blocks `b` in order, with eight f32 lane accumulators `acc` (and `sm` for
//! `Q4_1`), `fma` rounding once (`_mm256_fmadd_ps`; `f32::mul_add` in the scalar code):
//!
//! ```text
//! p[l]   = Σ_{i = 4l..4l+3} wq[b][i] · aq[b][i]         (exact i32, l = 0..7)
//! acc[l] = fma(d_w[b] · d_a[b], f32(p[l]), acc[l])      (the product d_w · d_a rounded first)
//! sm[j]  = fma(m_w[b], s_a[b], sm[j])                   (Q4_1; j = b mod 8)
//! y      = hsum(acc + sm),  hsum(v) = ((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7))
//! ```
//!
//! This is llama.cpp's AVX2 `ggml_vec_dot_q4_1_q8_1` / `_q8_0_q8_0` / `_q5_0_q8_0`: the same
//! lane layout, fused multiply-adds and horizontal sum (llama.cpp adds its `m · s` terms in one
//! scalar sum). The scalar and AVX2 paths agree **bit for bit** (tested; without FMA hardware
//! the scalar `mul_add` is a correctly rounded libm call, slow but exact). Against candle's
//! `QMatMul` (which sums the integer dot of a block first, then scales it) the outputs differ
//! by float summation order and by f16 rounding of `s`.

pub(crate) mod activation;
pub(crate) mod dot;
pub(crate) mod f16;
pub(crate) mod matmul;

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};

pub(crate) use crate::Isa;
pub use matmul::QMatMulOp;

/// Values per block of every type here.
pub(crate) const QK: usize = 32;

/// Zeros after a weight's per-block scales.
pub(crate) const PAD: usize = 7;

/// Weight rows whose quants are interleaved block by block (see [`QMatrix::qs`]).
pub(crate) const GROUP: usize = 4;

/// Weight `i` of a `Q5_0` block's quant bytes (`qh` then `qs`): `q − 16` in `-16..=15`.
#[inline(always)]
pub(crate) fn q5_0(q: &[u8], i: usize) -> i32 {
    let qh = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
    let nibble = if i < QK / 2 {
        q[4 + i] & 0x0f
    } else {
        q[4 + i - QK / 2] >> 4
    };
    i32::from(nibble | (((qh >> i) & 1) as u8) << 4) - 16
}

/// The weight block types with kernels here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `d: f16, m: f16, qs: [u8; 16]`: `w = d · q + m`, `q` 4 bits (low nibbles are values
    /// 0..15 of the block, high nibbles 16..31).
    Q4_1,
    /// `d: f16, qs: [i8; 32]`: `w = d · q`.
    Q8_0,
    /// `d: f16, qh: [u8; 4], qs: [u8; 16]`: `w = d · (q − 16)`, `q` 5 bits: the nibbles as
    /// `Q4_1`'s, bit `i` of `qh` (little-endian) the fifth bit of value `i`.
    Q5_0,
}

impl Kind {
    /// Quant bytes per block.
    pub(crate) fn qs_bytes(self) -> usize {
        match self {
            Kind::Q4_1 => QK / 2,
            Kind::Q8_0 => QK,
            Kind::Q5_0 => 4 + QK / 2,
        }
    }

    fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(Kind::Q4_1),
            GgmlDType::Q8_0 => Some(Kind::Q8_0),
            GgmlDType::Q5_0 => Some(Kind::Q5_0),
            _ => None,
        }
    }

    /// Bytes of one GGUF block.
    fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_1 => 4 + QK / 2,
            Kind::Q8_0 => 2 + QK,
            Kind::Q5_0 => 2 + 4 + QK / 2,
        }
    }

    #[cfg(test)]
    fn dtype(self) -> GgmlDType {
        match self {
            Kind::Q4_1 => GgmlDType::Q4_1,
            Kind::Q8_0 => GgmlDType::Q8_0,
            Kind::Q5_0 => GgmlDType::Q5_0,
        }
    }
}

/// A quantized weight `[rows, cols]`, its GGUF blocks split into arrays: the quants, the f16
/// scales, the f16 minima. The same bytes as the file's blocks: decoding is bound by memory
/// bandwidth (here ~12 GB/s from DRAM for two cores), so the scales stay f16 and the kernels
/// convert eight at a time (exactly; safe Rust has no F16C here: pulp's x86-64-v3 token does
/// not enable it). Storing them as f32 was 13% more bytes per token and that much slower.
#[derive(Debug, Clone)]
pub struct QMatrix {
    pub(crate) kind: Kind,
    pub rows: usize,
    pub cols: usize,
    /// Quant bytes, [`Kind::qs_bytes`] per block, in the order the kernels read them: the rows
    /// in groups of [`GROUP`], each group's blocks interleaved (block 0 of its four rows,
    /// block 1 of its four rows, ...), then the rows after the last whole group, row by row.
    /// A tile of four rows then reads one sequential stream instead of four short ones, which
    /// the hardware prefetcher follows: decoding reads every weight from memory once per token
    /// (the model does not fit the last-level cache), and row by row the four streams were
    /// ~1.7× slower (SmolLM2's 49152 × 576 `Q8_0` head, one thread).
    pub(crate) qs: Vec<u8>,
    /// The f16 scale of each block, then [`PAD`] zeros (so that the kernels can load eight
    /// scales from any block).
    pub(crate) d: Vec<u16>,
    /// The f16 minimum of each block, then [`PAD`] zeros (`Q4_1`; else empty).
    pub(crate) m: Vec<u16>,
    /// Every scale and minimum is a normal f16 (not zero, subnormal, infinite or NaN): the
    /// kernels then convert them with a shorter sequence (GGUF files' scales are, as a rule).
    pub(crate) normal: bool,
}

impl QMatrix {
    /// Blocks per row.
    pub(crate) fn nb(&self) -> usize {
        self.cols / QK
    }

    /// `q` as our matrix, if its block type has kernels here and it is a CPU matrix (2-D) with
    /// finite scales; `None` leaves it to candle.
    pub fn from_qtensor(q: &QTensor) -> Option<Self> {
        let kind = Kind::of(q.dtype())?;
        // A comparison knob: `SKILLGEN_QUANT_SKIP=Q5_0,Q8_0` leaves those types to candle.
        if std::env::var("SKILLGEN_QUANT_SKIP")
            .is_ok_and(|v| v.split(',').any(|t| t == format!("{kind:?}")))
        {
            return None;
        }
        if !q.device().is_cpu() {
            return None;
        }
        let &[rows, cols] = q.shape().dims() else {
            return None;
        };
        if !cols.is_multiple_of(QK) {
            return None;
        }
        let data = q.data().ok()?;
        Self::from_blocks(kind, rows, cols, &data)
    }

    /// Split GGUF blocks (`rows × cols / 32` of them, row-major).
    fn from_blocks(kind: Kind, rows: usize, cols: usize, data: &[u8]) -> Option<Self> {
        let n = rows * cols / QK;
        if data.len() != n * kind.block_bytes() {
            return None;
        }
        let qb = kind.qs_bytes();
        let mut out = Self {
            kind,
            rows,
            cols,
            qs: Vec::with_capacity(n * qb),
            d: Vec::with_capacity(n),
            m: Vec::with_capacity(if kind == Kind::Q4_1 { n } else { 0 }),
            normal: false,
        };
        let h = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let mut plain = Vec::with_capacity(n * qb);
        for b in data.chunks_exact(kind.block_bytes()) {
            out.d.push(h(b, 0));
            let q = match kind {
                Kind::Q4_1 => {
                    out.m.push(h(b, 2));
                    &b[4..]
                }
                Kind::Q8_0 | Kind::Q5_0 => &b[2..],
            };
            plain.extend_from_slice(q);
        }
        out.qs = repack(&plain, rows, cols / QK, qb);
        // Infinite or NaN scales would make the products meaningless (and differ between
        // kernels): leave such a matrix to candle.
        let finite = |h: &u16| h & 0x7c00 != 0x7c00;
        (out.d.iter().all(finite) && out.m.iter().all(finite)).then(|| out.padded())
    }

    /// The GGUF blocks again, as candle's `QTensor`.
    #[cfg(test)]
    pub fn to_qtensor(&self) -> candle_core::Result<QTensor> {
        let qb = self.kind.qs_bytes();
        let mut bytes = Vec::with_capacity(self.d.len() * self.kind.block_bytes());
        let plain = self.plain_qs();
        for (i, (d, q)) in self.d.iter().zip(plain.chunks_exact(qb)).enumerate() {
            bytes.extend_from_slice(&d.to_le_bytes());
            if self.kind == Kind::Q4_1 {
                bytes.extend_from_slice(&self.m[i].to_le_bytes());
            }
            bytes.extend_from_slice(q);
        }
        let storage = candle_core::quantized::QStorage::from_data(
            std::borrow::Cow::Owned(bytes),
            &candle_core::Device::Cpu,
            self.kind.dtype(),
        )?;
        QTensor::new(storage, (self.rows, self.cols))
    }

    /// The weight as f32 `rows × cols` (as candle's dequantization: `d · q + m`, `d · q`).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        self.dequantize_blocks(0..self.rows * self.nb(), &mut out);
        out
    }

    /// Rows `ids` as f32, `ids.len() × cols` (an embedding lookup).
    pub fn dequantize_rows(&self, ids: &[u32]) -> candle_core::Result<Vec<f32>> {
        let nb = self.nb();
        let mut out = Vec::with_capacity(ids.len() * self.cols);
        for &id in ids {
            let r = id as usize;
            if r >= self.rows {
                candle_core::bail!("row {r} of a [{}, {}] matrix", self.rows, self.cols);
            }
            self.dequantize_blocks(r * nb..(r + 1) * nb, &mut out);
        }
        Ok(out)
    }

    /// Where block `b` of row `row` starts in [`Self::qs`] (in blocks).
    #[inline(always)]
    pub(crate) fn block_at(&self, row: usize, b: usize) -> usize {
        let (nb, grouped) = (self.nb(), self.grouped_rows());
        if row < grouped {
            ((row / GROUP) * nb + b) * GROUP + row % GROUP
        } else {
            grouped * nb + (row - grouped) * nb + b
        }
    }

    /// The rows in whole groups of [`GROUP`].
    #[inline(always)]
    pub(crate) fn grouped_rows(&self) -> usize {
        self.rows - self.rows % GROUP
    }

    /// The quants row-major, as the file holds them.
    fn plain_qs(&self) -> Vec<u8> {
        let (nb, qb) = (self.nb(), self.kind.qs_bytes());
        let mut out = Vec::with_capacity(self.qs.len());
        for r in 0..self.rows {
            for b in 0..nb {
                let i = self.block_at(r, b);
                out.extend_from_slice(&self.qs[i * qb..(i + 1) * qb]);
            }
        }
        out
    }

    /// Blocks `blocks` (indices into the row-major order) as f32.
    fn dequantize_blocks(&self, blocks: std::ops::Range<usize>, out: &mut Vec<f32>) {
        let (nb, qb) = (self.nb(), self.kind.qs_bytes());
        for i in blocks {
            let at = self.block_at(i / nb, i % nb);
            let q = &self.qs[at * qb..(at + 1) * qb];
            let d = f16::to_f32(self.d[i]);
            match self.kind {
                Kind::Q4_1 => {
                    let m = f16::to_f32(self.m[i]);
                    out.extend(q.iter().map(|&v| f32::from(v & 0x0f) * d + m));
                    out.extend(q.iter().map(|&v| f32::from(v >> 4) * d + m));
                }
                Kind::Q8_0 => out.extend(q.iter().map(|&v| f32::from(v as i8) * d)),
                Kind::Q5_0 => out.extend((0..QK).map(|i| q5_0(q, i) as f32 * d)),
            }
        }
    }

    /// With [`PAD`] zeros after the scales (and minima), and [`Self::normal`] set.
    fn padded(mut self) -> Self {
        let n = self.rows * self.nb();
        let normal = |h: &u16| !matches!(h & 0x7c00, 0 | 0x7c00);
        self.normal = self.d[..n].iter().all(normal) && self.m.iter().take(n).all(normal);
        self.d.truncate(n);
        self.d.resize(n + PAD, 0);
        if self.kind == Kind::Q4_1 {
            self.m.truncate(n);
            self.m.resize(n + PAD, 0);
        }
        self
    }

    /// Matrices of one kind and width stacked along their rows.
    pub fn cat_rows(parts: &[&QMatrix]) -> Option<Self> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| p.kind != first.kind || p.cols != first.cols)
        {
            return None;
        }
        let mut out = Self {
            kind: first.kind,
            rows: 0,
            cols: first.cols,
            qs: Vec::new(),
            d: Vec::new(),
            m: Vec::new(),
            normal: false,
        };
        let mut plain = Vec::new();
        for p in parts {
            let n = p.rows * p.nb();
            out.rows += p.rows;
            plain.extend_from_slice(&p.plain_qs());
            out.d.extend_from_slice(&p.d[..n]);
            if p.kind == Kind::Q4_1 {
                out.m.extend_from_slice(&p.m[..n]);
            }
        }
        out.qs = repack(&plain, out.rows, out.nb(), out.kind.qs_bytes());
        Some(out.padded())
    }

    /// Shared, for the layer that holds it.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

/// Row-major quants (`rows × nb` blocks of `qb` bytes) in [`QMatrix::qs`]'s order.
fn repack(plain: &[u8], rows: usize, nb: usize, qb: usize) -> Vec<u8> {
    let grouped = rows - rows % GROUP;
    let mut out = Vec::with_capacity(plain.len());
    for g in (0..grouped).step_by(GROUP) {
        for b in 0..nb {
            for r in g..g + GROUP {
                let i = r * nb + b;
                out.extend_from_slice(&plain[i * qb..(i + 1) * qb]);
            }
        }
    }
    out.extend_from_slice(&plain[grouped * nb * qb..]);
    out
}

#[cfg(test)]
pub(crate) mod tests;
