//! Block dot products: one weight row against one activation row (scalar), or a tile of `R`
//! activation rows × `C` weight rows (AVX2), each weight block unpacked once per tile and each
//! activation block loaded once per tile. Every output follows the arithmetic fixed in
//! [`super`] whatever the tile, so the scalar and the AVX2 results are the same bits.

use super::activation::Q8Rows;
use super::{Kind, QK, QMatrix, f16};

/// `((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7))`: llama.cpp's `hsum_float_8`.
#[inline(always)]
pub(crate) fn hsum(v: [f32; 8]) -> f32 {
    ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
}

/// One output: weight row `row` of `w` against activation row `arow` of `a`, in portable Rust.
pub(crate) fn scalar(w: &QMatrix, row: usize, a: &Q8Rows, arow: usize) -> f32 {
    let nb = w.nb();
    let qb = w.kind.qs_bytes();

    let wd = &w.d[row * nb..(row + 1) * nb];
    let aq = &a.qs[arow * a.k..(arow + 1) * a.k];
    let ad = &a.d[arow * a.stride..arow * a.stride + nb];
    let asum = &a.s[arow * a.stride..arow * a.stride + nb];
    let mut acc = [0f32; 8];
    let mut sm = [0f32; 8];
    for g in (0..nb).step_by(8) {
        let cnt = (nb - g).min(8);
        let mut dd = [0f32; 8];
        for (j, dd) in dd.iter_mut().enumerate() {
            let (dw, da) = if j < cnt {
                (f16::to_f32(wd[g + j]), ad[g + j])
            } else {
                (0.0, 0.0)
            };
            *dd = da * dw;
        }
        if w.kind == Kind::Q4_1 {
            let wm = &w.m[row * nb..(row + 1) * nb];
            for (j, sm) in sm.iter_mut().enumerate() {
                let (mw, sa) = if j < cnt {
                    (f16::to_f32(wm[g + j]), asum[g + j])
                } else {
                    (0.0, 0.0)
                };
                *sm = mw.mul_add(sa, *sm);
            }
        }
        for (j, &dd) in dd.iter().enumerate().take(cnt) {
            let b = g + j;
            let at = w.block_at(row, b);
            let q = &w.qs[at * qb..(at + 1) * qb];
            let y = &aq[b * QK..(b + 1) * QK];
            let mut x = [0i32; QK];
            for (i, x) in x.iter_mut().enumerate() {
                *x = match w.kind {
                    Kind::Q4_1 if i < QK / 2 => i32::from(q[i] & 0x0f),
                    Kind::Q4_1 => i32::from(q[i - QK / 2] >> 4),
                    Kind::Q8_0 => i32::from(q[i] as i8),
                    Kind::Q5_0 => super::q5_0(q, i),
                };
            }
            for ((acc, x), y) in acc.iter_mut().zip(x.chunks_exact(4)).zip(y.chunks_exact(4)) {
                let p: i32 = x.iter().zip(y).map(|(x, y)| x * i32::from(*y)).sum();
                *acc = dd.mul_add(p as f32, *acc);
            }
        }
    }
    let mut lanes = [0f32; 8];
    for ((v, a), s) in lanes.iter_mut().zip(acc).zip(sm) {
        *v = a + s;
    }
    hsum(lanes)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod v3 {
    use core::arch::x86_64::{__m128i, __m256, __m256i};

    use pulp::bytemuck::cast;
    use pulp::x86::V3;

    use super::super::activation::Q8Rows;
    use super::super::{Kind, QK, QMatrix};

    // No closures in this module, `core::array::from_fn` and `map` included: a closure that
    // is not inlined runs without the target features, and every intrinsic in it is a call.

    /// Blocks per segment of a row: the scale products of a segment are computed first (eight
    /// at a time), then its blocks run without group boundaries.
    pub(crate) const SEG: usize = 32;

    /// Scratch for a tile's scale products: `R · C ≤ 8` rows of a segment.
    pub(crate) type Scratch = [[f32; SEG]; 8];

    /// The outputs of activation rows `ar` × weight rows `row0..row0 + 4` (a whole group of
    /// [`GROUP`](super::super::GROUP) rows, interleaved in `w.qs`): `out[r][c]`.
    ///
    /// The accumulators of a tile (`R · C` vectors) stay in registers: the block loop holds
    /// them, the unpacked weights of the block (`C`, when `R > 1`), one activation block and
    /// constants; the scale products of a segment are computed before its blocks and read
    /// back from `scratch` by broadcast; the eight-lane sums of the tile end in one vector
    /// ([`hsum8`]).
    #[inline(always)]
    pub(crate) fn tile4<const R: usize>(
        simd: V3,
        w: &QMatrix,
        row0: usize,
        a: &Q8Rows,
        ar: [usize; R],
        scratch: &mut Scratch,
    ) -> [[f32; 4]; R] {
        let wr = [row0, row0 + 1, row0 + 2, row0 + 3];
        let acc = match w.kind {
            Kind::Q4_1 => acc::<R, 4, [u8; 16], _>(simd, w, group(w, row0), wr, a, ar, scratch),
            Kind::Q8_0 => acc::<R, 4, [u8; 32], _>(simd, w, group(w, row0), wr, a, ar, scratch),
            Kind::Q5_0 => acc::<R, 4, [u8; 20], _>(simd, w, group(w, row0), wr, a, ar, scratch),
        };
        sums(simd, acc)
    }

    /// The outputs of activation rows `ar` × weight rows `row0 + half · 2..+ 2` (half of a
    /// whole group).
    #[inline(always)]
    pub(crate) fn tile2<const R: usize>(
        simd: V3,
        w: &QMatrix,
        row0: usize,
        half: usize,
        a: &Q8Rows,
        ar: [usize; R],
        scratch: &mut Scratch,
    ) -> [[f32; 2]; R] {
        let wr = [row0 + 2 * half, row0 + 2 * half + 1];
        let acc = match w.kind {
            Kind::Q4_1 => {
                let g = Half(group::<16>(w, row0).0, 2 * half);
                acc::<R, 2, [u8; 16], _>(simd, w, g, wr, a, ar, scratch)
            }
            Kind::Q8_0 => {
                let g = Half(group::<32>(w, row0).0, 2 * half);
                acc::<R, 2, [u8; 32], _>(simd, w, g, wr, a, ar, scratch)
            }
            Kind::Q5_0 => {
                let g = Half(group::<20>(w, row0).0, 2 * half);
                acc::<R, 2, [u8; 20], _>(simd, w, g, wr, a, ar, scratch)
            }
        };
        sums(simd, acc)
    }

    /// The outputs of activation rows `ar` × weight row `row`, one after the last whole group.
    #[inline(always)]
    pub(crate) fn tile1<const R: usize>(
        simd: V3,
        w: &QMatrix,
        row: usize,
        a: &Q8Rows,
        ar: [usize; R],
        scratch: &mut Scratch,
    ) -> [[f32; 1]; R] {
        let acc = match w.kind {
            Kind::Q4_1 => acc::<R, 1, [u8; 16], _>(simd, w, single(w, row), [row], a, ar, scratch),
            Kind::Q8_0 => acc::<R, 1, [u8; 32], _>(simd, w, single(w, row), [row], a, ar, scratch),
            Kind::Q5_0 => acc::<R, 1, [u8; 20], _>(simd, w, single(w, row), [row], a, ar, scratch),
        };
        sums(simd, acc)
    }

    /// A whole group's interleaved blocks.
    #[inline(always)]
    fn group<const N: usize>(w: &QMatrix, row0: usize) -> Group<'_, [u8; N]> {
        let nb = w.nb();
        let (qs, _) = w.qs.as_chunks::<N>();
        let at = w.block_at(row0, 0);
        Group(qs[at..at + super::super::GROUP * nb].as_chunks::<4>().0)
    }

    /// A row after the last whole group (its blocks are consecutive).
    #[inline(always)]
    fn single<const N: usize>(w: &QMatrix, row: usize) -> Single<'_, [u8; N]> {
        assert!(row >= w.grouped_rows(), "row {row} is in a group");
        let (qs, _) = w.qs.as_chunks::<N>();
        let at = w.block_at(row, 0);
        Single(&qs[at..at + w.nb()])
    }

    /// The weight quants of a tile's `C` rows.
    trait Cols<Q, const C: usize>: Copy {
        /// Blocks `seg..seg + len` of the rows.
        fn seg(self, seg: usize, len: usize) -> Self;
        /// Block `j` of row `c`.
        fn at(self, c: usize, j: usize) -> Q;
    }

    /// Four rows' blocks interleaved: `[block][row]`.
    #[derive(Clone, Copy)]
    struct Group<'a, Q>(&'a [[Q; 4]]);

    impl<Q: Copy> Cols<Q, 4> for Group<'_, Q> {
        #[inline(always)]
        fn seg(self, seg: usize, len: usize) -> Self {
            Group(&self.0[seg..seg + len])
        }
        #[inline(always)]
        fn at(self, c: usize, j: usize) -> Q {
            self.0[j][c]
        }
    }

    /// Two rows of a group's interleaved blocks, from row `.1`.
    #[derive(Clone, Copy)]
    struct Half<'a, Q>(&'a [[Q; 4]], usize);

    impl<Q: Copy> Cols<Q, 2> for Half<'_, Q> {
        #[inline(always)]
        fn seg(self, seg: usize, len: usize) -> Self {
            Half(&self.0[seg..seg + len], self.1)
        }
        #[inline(always)]
        fn at(self, c: usize, j: usize) -> Q {
            self.0[j][self.1 + c]
        }
    }

    /// One row's blocks.
    #[derive(Clone, Copy)]
    struct Single<'a, Q>(&'a [Q]);

    impl<Q: Copy> Cols<Q, 1> for Single<'_, Q> {
        #[inline(always)]
        fn seg(self, seg: usize, len: usize) -> Self {
            Single(&self.0[seg..seg + len])
        }
        #[inline(always)]
        fn at(self, _c: usize, j: usize) -> Q {
            self.0[j]
        }
    }

    /// The lane accumulators (`acc + sm`) of a tile.
    #[inline(always)]
    fn acc<const R: usize, const C: usize, Q: Quants, W: Cols<Q, C>>(
        simd: V3,
        w: &QMatrix,
        cols: W,
        wr: [usize; C],
        a: &Q8Rows,
        ar: [usize; R],
        scratch: &mut Scratch,
    ) -> [[__m256; C]; R] {
        if !Q::Q4 || w.kind != Kind::Q4_1 {
            return blocks::<R, C, Q, false, W>(simd, w, cols, wr, a, ar, scratch);
        }
        if R == 1 {
            return blocks::<R, C, Q, true, W>(simd, w, cols, wr, a, ar, scratch);
        }
        // Several activation rows: the sum term in its own pass, so that its accumulators
        // do not take registers from the block loop's.
        let acc = blocks::<R, C, Q, false, W>(simd, w, cols, wr, a, ar, scratch);
        let sm = sum_term::<R, C>(simd, w, wr, a, ar);
        let mut out = acc;
        for r in 0..R {
            for c in 0..C {
                out[r][c] = simd.avx._mm256_add_ps(acc[r][c], sm[r][c]);
            }
        }
        out
    }

    /// The tile's outputs: `hsum` of each accumulator.
    #[inline(always)]
    fn sums<const R: usize, const C: usize>(simd: V3, acc: [[__m256; C]; R]) -> [[f32; C]; R] {
        let mut v = [simd.avx._mm256_setzero_ps(); 8];
        for r in 0..R {
            for c in 0..C {
                v[r * C + c] = acc[r][c];
            }
        }
        let sums = hsum8(simd, v);
        let mut out = [[0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                out[r][c] = sums[r * C + c];
            }
        }
        out
    }

    /// `Q4_1`'s `sm[j] += m_w · s_a` (groups of eight blocks), per output.
    #[inline(always)]
    fn sum_term<const R: usize, const C: usize>(
        simd: V3,
        w: &QMatrix,
        wr: [usize; C],
        a: &Q8Rows,
        ar: [usize; R],
    ) -> [[__m256; C]; R] {
        let (avx, fma) = (simd.avx, simd.fma);
        let nb = w.nb();
        let groups = nb.div_ceil(8);
        let mut wm: [&[[u16; 8]]; C] = [&[]; C];
        for c in 0..C {
            wm[c] = w.m[wr[c] * nb..wr[c] * nb + 8 * groups].as_chunks::<8>().0;
        }
        let mut sa: [&[[f32; 8]]; R] = [&[]; R];
        for r in 0..R {
            sa[r] = a.s[ar[r] * a.stride..ar[r] * a.stride + 8 * groups]
                .as_chunks::<8>()
                .0;
        }
        let mut sm = [[avx._mm256_setzero_ps(); C]; R];
        for gi in 0..groups {
            for r in 0..R {
                for c in 0..C {
                    let mw = scales(simd, w.normal, wm[c][gi]);
                    sm[r][c] = fma._mm256_fmadd_ps(mw, cast(sa[r][gi]), sm[r][c]);
                }
            }
        }
        sm
    }

    /// Eight f16 scales as f32: [`f16x8_normal`] when all are normal f16, else [`f16x8`].
    #[inline(always)]
    fn scales(simd: V3, normal: bool, h: [u16; 8]) -> __m256 {
        if normal {
            f16x8_normal(simd, h)
        } else {
            f16x8(simd, h)
        }
    }

    /// Eight normal f16 (bits; not zero, subnormal, infinite or NaN) as f32, exactly: the
    /// exponent rebiased, the mantissa widened, the sign kept.
    #[inline(always)]
    pub(crate) fn f16x8_normal(simd: V3, h: [u16; 8]) -> __m256 {
        let (avx, avx2) = (simd.avx, simd.avx2);
        // Sign-extended: bit 31 is the sign.
        let t = avx2._mm256_cvtepi16_epi32(cast(h));
        let mag = avx2._mm256_and_si256(t, avx._mm256_set1_epi32(0x7fff));
        let sign = avx2._mm256_and_si256(t, avx._mm256_set1_epi32(i32::MIN));
        let bits = avx2._mm256_add_epi32(
            avx2._mm256_slli_epi32::<13>(mag),
            avx._mm256_set1_epi32((127 - 15) << 23),
        );
        avx._mm256_castsi256_ps(avx2._mm256_or_si256(bits, sign))
    }

    /// Eight f16 (bits) as f32, bit for bit as [`super::super::f16::to_f32`]: no subnormal operand reaches a
    /// float unit except in the one subtraction that renormalises (exact).
    #[inline(always)]
    pub(crate) fn f16x8(simd: V3, h: [u16; 8]) -> __m256 {
        let (avx, avx2) = (simd.avx, simd.avx2);
        let h: __m128i = cast(h);
        let h = avx2._mm256_cvtepu16_epi32(h);
        let sign =
            avx2._mm256_slli_epi32::<16>(avx2._mm256_and_si256(h, avx._mm256_set1_epi32(0x8000)));
        let o =
            avx2._mm256_slli_epi32::<13>(avx2._mm256_and_si256(h, avx._mm256_set1_epi32(0x7fff)));
        let e = avx2._mm256_and_si256(o, avx._mm256_set1_epi32(0x0f80_0000));
        let o = avx2._mm256_add_epi32(o, avx._mm256_set1_epi32((127 - 15) << 23));
        // Infinity, NaN: exponent all ones.
        let inf = avx2._mm256_cmpeq_epi32(e, avx._mm256_set1_epi32(0x0f80_0000));
        let o = avx2._mm256_add_epi32(
            o,
            avx2._mm256_and_si256(inf, avx._mm256_set1_epi32((128 - 16) << 23)),
        );
        // Zero, subnormal: renormalise by subtracting 2^-14.
        let zero = avx2._mm256_cmpeq_epi32(e, avx._mm256_setzero_si256());
        let sub = avx._mm256_sub_ps(
            avx._mm256_castsi256_ps(avx2._mm256_add_epi32(o, avx._mm256_set1_epi32(1 << 23))),
            avx._mm256_castsi256_ps(avx._mm256_set1_epi32(113 << 23)),
        );
        let f = avx._mm256_blendv_ps(
            avx._mm256_castsi256_ps(o),
            sub,
            avx._mm256_castsi256_ps(zero),
        );
        avx._mm256_or_ps(f, avx._mm256_castsi256_ps(sign))
    }

    /// `hsum` ([`super::hsum`]: `((v0+v4)+(v2+v6)) + ((v1+v5)+(v3+v7))`) of eight vectors at
    /// once, the same additions in the same order.
    #[inline(always)]
    fn hsum8(simd: V3, v: [__m256; 8]) -> [f32; 8] {
        let avx = simd.avx;
        // q = (v0+v4, v1+v5, v2+v6, v3+v7), two vectors per register.
        let mut q = [avx._mm256_setzero_ps(); 4];
        for (i, q) in q.iter_mut().enumerate() {
            let (x, y) = (v[2 * i], v[2 * i + 1]);
            let lo = avx._mm256_permute2f128_ps::<0x20>(x, y);
            let hi = avx._mm256_permute2f128_ps::<0x31>(x, y);
            *q = avx._mm256_add_ps(lo, hi);
        }
        // t = q0 + q2, u = q1 + q3.
        let mut tu = [avx._mm256_setzero_ps(); 2];
        for (i, tu) in tu.iter_mut().enumerate() {
            let (x, y) = (q[2 * i], q[2 * i + 1]);
            let e = avx._mm256_shuffle_ps::<0b01_00_01_00>(x, y);
            let f = avx._mm256_shuffle_ps::<0b11_10_11_10>(x, y);
            *tu = avx._mm256_add_ps(e, f);
        }
        // t + u: lanes [v0 v2 v4 v6 | v1 v3 v5 v7], then in order.
        let t = avx._mm256_shuffle_ps::<0b10_00_10_00>(tu[0], tu[1]);
        let u = avx._mm256_shuffle_ps::<0b11_01_11_01>(tu[0], tu[1]);
        let r = avx._mm256_add_ps(t, u);
        let r = simd
            .avx2
            ._mm256_permutevar8x32_ps(r, avx._mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        cast(r)
    }

    /// A weight block's quants: `Q4_1`'s 16 bytes of nibbles, `Q8_0`'s 32 signed bytes,
    /// `Q5_0`'s 4 bytes of fifth bits and 16 of nibbles.
    pub(crate) trait Quants: Copy + 'static {
        /// `Q4_1` (unsigned 4-bit values) rather than `Q8_0` (signed bytes).
        const Q4: bool;
        /// The 32 weights as bytes for `_mm256_maddubs_epi16`: `Q4_1`'s nibbles unpacked
        /// (values 0..15, low nibbles first); `Q8_0`'s quants as they are.
        fn unpack(self, simd: V3) -> __m256i;
    }

    impl Quants for [u8; 16] {
        const Q4: bool = true;
        #[inline(always)]
        fn unpack(self, simd: V3) -> __m256i {
            let (avx, avx2, sse2) = (simd.avx, simd.avx2, simd.sse2);
            let q: __m128i = cast(self);
            let hi = sse2._mm_srli_epi16::<4>(q);
            avx2._mm256_and_si256(avx._mm256_set_m128i(hi, q), avx._mm256_set1_epi8(0x0f))
        }
    }

    impl Quants for [u8; 32] {
        const Q4: bool = false;
        #[inline(always)]
        fn unpack(self, _simd: V3) -> __m256i {
            cast(self)
        }
    }

    impl Quants for [u8; 20] {
        const Q4: bool = false;
        /// `q − 16` as signed bytes: the nibbles, with `0xF0` or'ed in where the fifth bit is
        /// clear (llama.cpp's `bytes_from_bits_32` and `_mm256_andnot_si256`).
        #[inline(always)]
        fn unpack(self, simd: V3) -> __m256i {
            let (avx, avx2) = (simd.avx, simd.avx2);
            let [h0, h1, h2, h3, nibbles @ ..] = self;
            let x = nibbles.unpack(simd);
            let qh = i32::from_le_bytes([h0, h1, h2, h3]);
            // Byte i of `bytes` is byte i / 8 of qh; or'ed with every bit but bit i % 8 set,
            // it is all ones exactly when bit i is set.
            let shuf = avx._mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
            );
            let bytes = avx2._mm256_shuffle_epi8(avx._mm256_set1_epi32(qh), shuf);
            let mask = avx._mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
            let set = avx2._mm256_cmpeq_epi8(
                avx2._mm256_or_si256(bytes, mask),
                avx._mm256_set1_epi64x(-1),
            );
            let high = avx2._mm256_andnot_si256(set, avx._mm256_set1_epi8(0xF0_u8 as i8));
            avx2._mm256_or_si256(x, high)
        }
    }

    /// The eight lane sums `p[l] = Σ_{i=4l..4l+3} x_i y_i` of one block as f32.
    #[inline(always)]
    fn lanes<Q: Quants>(simd: V3, x: __m256i, y: __m256i) -> __m256 {
        let (avx, avx2) = (simd.avx, simd.avx2);
        let ones = avx._mm256_set1_epi16(1);
        let p = if Q::Q4 {
            // x unsigned 0..15, y signed: pairs of products fit i16.
            avx2._mm256_maddubs_epi16(x, y)
        } else {
            // |x| · (y with x's sign): |x| ≤ 128, |y| ≤ 127, pairs fit i16.
            avx2._mm256_maddubs_epi16(avx2._mm256_sign_epi8(x, x), avx2._mm256_sign_epi8(y, x))
        };
        avx._mm256_cvtepi32_ps(avx2._mm256_madd_epi16(p, ones))
    }

    /// `acc[l] += (d_w · d_a) · p[l]` over every block (`cols`: the weight rows' quants), plus, with `SUM`, `Q4_1`'s `sm[j] += m_w · s_a` (groups of eight
    /// blocks): `acc + sm` per output.
    #[inline(always)]
    fn blocks<const R: usize, const C: usize, Q: Quants, const SUM: bool, W: Cols<Q, C>>(
        simd: V3,
        w: &QMatrix,
        cols: W,
        wr: [usize; C],
        a: &Q8Rows,
        ar: [usize; R],
        scratch: &mut Scratch,
    ) -> [[__m256; C]; R] {
        let (avx, fma) = (simd.avx, simd.fma);
        let zero = avx._mm256_setzero_ps();
        let nb = w.nb();
        let (aq, _) = a.qs.as_chunks::<QK>();
        let mut acc = [[zero; C]; R];
        let mut sm = [[zero; C]; R];
        let mut seg = 0;
        while seg < nb {
            let len = (nb - seg).min(SEG);
            let groups = len.div_ceil(8);
            // The segment's scales, eight per group (the arrays are padded: a group past the
            // end of a row reads the next row's scales or the padding, finite values that meet
            // the activations' zero padding).
            let mut wd: [&[[u16; 8]]; C] = [&[]; C];
            let mut wm: [&[[u16; 8]]; C] = [&[]; C];
            for c in 0..C {
                let at = wr[c] * nb + seg;
                wd[c] = w.d[at..at + 8 * groups].as_chunks::<8>().0;
                if SUM {
                    wm[c] = w.m[at..at + 8 * groups].as_chunks::<8>().0;
                }
            }
            let mut ad: [&[[f32; 8]]; R] = [&[]; R];
            let mut sa: [&[[f32; 8]]; R] = [&[]; R];
            for r in 0..R {
                let at = ar[r] * a.stride + seg;
                ad[r] = a.d[at..at + 8 * groups].as_chunks::<8>().0;
                if SUM {
                    sa[r] = a.s[at..at + 8 * groups].as_chunks::<8>().0;
                }
            }
            for gi in 0..groups {
                let mut dw = [zero; C];
                let mut mw = [zero; C];
                for c in 0..C {
                    dw[c] = scales(simd, w.normal, wd[c][gi]);
                    if SUM {
                        mw[c] = scales(simd, w.normal, wm[c][gi]);
                    }
                }
                for r in 0..R {
                    let da: __m256 = cast(ad[r][gi]);
                    let s: __m256 = if SUM { cast(sa[r][gi]) } else { zero };
                    for c in 0..C {
                        let p: [f32; 8] = cast(avx._mm256_mul_ps(da, dw[c]));
                        scratch[r * C + c][gi * 8..gi * 8 + 8].copy_from_slice(&p);
                        if SUM {
                            sm[r][c] = fma._mm256_fmadd_ps(mw[c], s, sm[r][c]);
                        }
                    }
                }
            }
            // The segment's blocks: slices of exactly `len`, so the loop checks no bounds.
            let wg = cols.seg(seg, len);
            let mut ag: [&[[i8; QK]]; R] = [&[]; R];
            for r in 0..R {
                ag[r] = &aq[ar[r] * nb + seg..ar[r] * nb + seg + len];
            }
            let dd: &Scratch = scratch;
            for j in 0..len {
                if R == 1 {
                    let y: __m256i = cast(ag[0][j]);
                    for c in 0..C {
                        let p = lanes::<Q>(simd, wg.at(c, j).unpack(simd), y);
                        let s = avx._mm256_set1_ps(dd[c][j]);
                        acc[0][c] = fma._mm256_fmadd_ps(s, p, acc[0][c]);
                    }
                } else {
                    let mut x = [avx._mm256_setzero_si256(); C];
                    for (c, x) in x.iter_mut().enumerate() {
                        *x = wg.at(c, j).unpack(simd);
                    }
                    for r in 0..R {
                        let y: __m256i = cast(ag[r][j]);
                        for c in 0..C {
                            let p = lanes::<Q>(simd, x[c], y);
                            let s = avx._mm256_set1_ps(dd[r * C + c][j]);
                            acc[r][c] = fma._mm256_fmadd_ps(s, p, acc[r][c]);
                        }
                    }
                }
            }
            seg += len;
        }
        if SUM {
            for r in 0..R {
                for c in 0..C {
                    acc[r][c] = avx._mm256_add_ps(acc[r][c], sm[r][c]);
                }
            }
        }
        acc
    }
}
