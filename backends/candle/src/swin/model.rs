//! Shifted-window vision transformers: Swin and Donut's Swin encoder. Patches (a strided
//! convolution, LayerNorm, optional absolute positions), then stages of blocks that attend
//! within `window`×`window` windows — every other block on a grid cyclically shifted by half a
//! window, with the regions that wrap around masked — with a learned relative position bias
//! per window offset; patch merging (2×2 neighbours concatenated, LayerNorm, linear) between
//! stages; the classifier reads the token mean (after a final LayerNorm for Swin). A window
//! as large as the grid is not shifted, as in transformers; a smaller grid is refused. Every
//! tensor is taken by name and shape.

use candle_core::{DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::cnn::model::{ce, list};
use crate::weights::{Weights, layer_norm, linear};

/// The model types [`Swin::load`] knows.
pub const MODEL_TYPES: &[&str] = &["donut-swin", "swin"];

/// torch's `nn.LayerNorm` default (the patch and merging norms).
const TORCH_EPS: f64 = 1e-5;

#[derive(Debug)]
struct Block {
    heads: usize,
    ln_before: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// `[(2w−1)², heads]`.
    table: Tensor,
    ln_after: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Debug)]
struct Stage {
    blocks: Vec<Block>,
    /// Patch merging: its LayerNorm over `4·dim` and the bias-less reduction to `2·dim`.
    merge: Option<(LayerNorm, Linear)>,
}

/// A loaded Swin classifier.
#[derive(Debug)]
pub(crate) struct Swin {
    channels: usize,
    image: usize,
    patch: usize,
    window: usize,
    act: Act,
    patch_w: Tensor,
    patch_b: Tensor,
    patch_norm: LayerNorm,
    positions: Option<Tensor>,
    stages: Vec<Stage>,
    final_norm: Option<LayerNorm>,
    classifier: Linear,
}

/// The relative position index of a `w`×`w` window: `[w², w²]` row-major into the
/// `(2w−1)²` table (transformers' `relative_position_index`).
pub(crate) fn relative_index(w: usize) -> Vec<u32> {
    let n = w * w;
    let mut out = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            let dh = (i / w) as isize - (j / w) as isize + w as isize - 1;
            let dw = (i % w) as isize - (j % w) as isize + w as isize - 1;
            out.push((dh * (2 * w as isize - 1) + dw) as u32);
        }
    }
    out
}

/// The shifted-window mask of an `h`×`w` grid (already padded to windows): `[windows, w², w²]`,
/// 0 within a region, −100 across regions (transformers' `get_attn_mask`).
fn shift_mask(h: usize, wd: usize, win: usize, shift: usize) -> Vec<f32> {
    let region = |i: usize, n: usize| usize::from(i >= n - win) + usize::from(i >= n - shift);
    let (nh, nw) = (h / win, wd / win);
    let n = win * win;
    let mut out = Vec::with_capacity(nh * nw * n * n);
    for bh in 0..nh {
        for bw in 0..nw {
            let ids: Vec<usize> = (0..n)
                .map(|t| {
                    let (r, c) = (bh * win + t / win, bw * win + t % win);
                    region(r, h) * 3 + region(c, wd)
                })
                .collect();
            for a in &ids {
                for b in &ids {
                    out.push(if a == b { 0.0 } else { -100.0 });
                }
            }
        }
    }
    out
}

impl Swin {
    /// Read `config.json` (in `f`) of `model_type` and take its `*ForImageClassification`
    /// weights with `labels` classes.
    pub(crate) fn load(
        model_type: &str,
        f: &Fields<'_>,
        w: &mut Weights,
        labels: usize,
    ) -> Result<Self, SkillError> {
        let (p, final_norm) = match model_type {
            "swin" => ("swin", true),
            "donut-swin" => ("donut", false),
            other => {
                return Err(f.err(
                    "model_type",
                    format!("`{other}` is not a Swin type the candle backend implements"),
                ));
            }
        };
        w.convert(DType::F32)?;
        let depths = list(f, "depths")?;
        let heads = list(f, "num_heads")?;
        if heads.len() != depths.len() {
            return Err(f.err(
                "num_heads",
                format!(
                    "{} stages of heads for {} depths",
                    heads.len(),
                    depths.len()
                ),
            ));
        }
        let embed = f.positive("embed_dim")?;
        let patch = f.positive("patch_size")?;
        let window = f.positive("window_size")?;
        let ratio = f.f64("mlp_ratio")?;
        let eps = f.f64("layer_norm_eps")?;
        let qkv_bias = f.bool_or("qkv_bias", true)?;
        let act_name = f.str_opt("hidden_act")?.unwrap_or("gelu");
        let act = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let image = f.positive("image_size")?;
        let e = format!("{p}.embeddings");
        let patch_w = w.take(
            &format!("{e}.patch_embeddings.projection.weight"),
            &[embed, channels, patch, patch],
        )?;
        let patch_b = w
            .take(&format!("{e}.patch_embeddings.projection.bias"), &[embed])?
            .reshape((1, embed, 1, 1))
            .map_err(ce("patch bias"))?;
        let patch_norm = layer_norm(w, &format!("{e}.norm"), embed, TORCH_EPS)?;
        let grid = image / patch;
        let positions = if f.bool_or("use_absolute_embeddings", false)? {
            Some(w.take(
                &format!("{e}.position_embeddings"),
                &[1, grid * grid, embed],
            )?)
        } else {
            None
        };
        let mut stages = Vec::with_capacity(depths.len());
        let mut dim = embed;
        for (s, (&depth, &nh)) in depths.iter().zip(&heads).enumerate() {
            if !dim.is_multiple_of(nh) {
                return Err(f.err(
                    "num_heads",
                    format!("{nh} heads do not divide stage {s}'s width {dim}"),
                ));
            }
            let mid = (dim as f64 * ratio) as usize;
            let mut blocks = Vec::with_capacity(depth);
            for b in 0..depth {
                let bp = format!("{p}.encoder.layers.{s}.blocks.{b}");
                let a = format!("{bp}.attention.self");
                let index = format!("{a}.relative_position_index");
                if w.has(&index) {
                    // Donut keeps the index as a buffer: it must be the one computed here.
                    let n = window * window;
                    let saved = w.take_ints(&index, &[n, n])?;
                    if saved
                        .iter()
                        .zip(relative_index(window))
                        .any(|(a, b)| *a != i64::from(b))
                    {
                        return Err(SkillError::TensorInvalid {
                            path: w.path.clone(),
                            tensor: index,
                            detail: "differs from the window's relative position index".into(),
                        });
                    }
                }
                blocks.push(Block {
                    heads: nh,
                    ln_before: layer_norm(w, &format!("{bp}.layernorm_before"), dim, eps)?,
                    q: linear(w, &format!("{a}.query"), dim, dim, qkv_bias)?,
                    k: linear(w, &format!("{a}.key"), dim, dim, qkv_bias)?,
                    v: linear(w, &format!("{a}.value"), dim, dim, qkv_bias)?,
                    o: linear(w, &format!("{bp}.attention.output.dense"), dim, dim, true)?,
                    table: w.take(
                        &format!("{a}.relative_position_bias_table"),
                        &[(2 * window - 1) * (2 * window - 1), nh],
                    )?,
                    ln_after: layer_norm(w, &format!("{bp}.layernorm_after"), dim, eps)?,
                    fc1: linear(w, &format!("{bp}.intermediate.dense"), mid, dim, true)?,
                    fc2: linear(w, &format!("{bp}.output.dense"), dim, mid, true)?,
                });
            }
            let merge = if s + 1 < depths.len() {
                let d = format!("{p}.encoder.layers.{s}.downsample");
                let m = (
                    layer_norm(w, &format!("{d}.norm"), 4 * dim, TORCH_EPS)?,
                    linear(w, &format!("{d}.reduction"), 2 * dim, 4 * dim, false)?,
                );
                dim *= 2;
                Some(m)
            } else {
                None
            };
            stages.push(Stage { blocks, merge });
        }
        let final_norm = if final_norm {
            Some(layer_norm(w, &format!("{p}.layernorm"), dim, eps)?)
        } else {
            None
        };
        let classifier = linear(w, "classifier", labels, dim, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image,
            patch,
            window,
            act,
            patch_w,
            patch_b,
            patch_norm,
            positions,
            stages,
            final_norm,
            classifier,
        })
    }

    /// One block over `x` `[h·w, c]` on an `h`×`w` grid.
    fn block(
        &self,
        b: &Block,
        x: &Tensor,
        (h, wd): (usize, usize),
        shifted: bool,
    ) -> candle_core::Result<Tensor> {
        let dev = x.device();
        let c = x.dim(1)?;
        // transformers: a window as large as the grid does not shift; a grid smaller than the
        // window would need a bias table of another size (transformers fails there too).
        let win = self.window;
        let shift = match h.min(wd).cmp(&win) {
            std::cmp::Ordering::Less => candle_core::bail!(
                "a {h}×{wd} grid is smaller than the {win}×{win} window (use the preprocessor's size)"
            ),
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater if shifted => win / 2,
            std::cmp::Ordering::Greater => 0,
        };
        let hp = h.div_ceil(win) * win;
        let wp = wd.div_ceil(win) * win;
        let mut g = b
            .ln_before
            .forward(x)?
            .reshape((h, wd, c))?
            .pad_with_zeros(0, 0, hp - h)?
            .pad_with_zeros(1, 0, wp - wd)?;
        if shift > 0 {
            g = g.roll(-(shift as i32), 0)?.roll(-(shift as i32), 1)?;
        }
        let (nh, nw, n) = (hp / win, wp / win, win * win);
        let windows = g
            .reshape((nh, win, nw, win, c))?
            .permute((0, 2, 1, 3, 4))?
            .reshape((nh * nw, n, c))?;
        let heads = b.heads;
        let hd = c / heads;
        let split = |t: Tensor| {
            t.reshape((nh * nw, n, heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = (split(b.q.forward(&windows)?)? * (hd as f64).powf(-0.5))?;
        let k = split(b.k.forward(&windows)?)?;
        let v = split(b.v.forward(&windows)?)?;
        let mut scores = q.matmul(&k.transpose(2, 3)?.contiguous()?)?;
        let idx = Tensor::from_vec(relative_index(win), n * n, dev)?;
        let bias = b
            .table
            .index_select(&idx, 0)?
            .reshape((n, n, heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?;
        scores = scores.broadcast_add(&bias)?;
        if shift > 0 {
            let m = Tensor::from_vec(shift_mask(hp, wp, win, shift), (nh * nw, 1, n, n), dev)?;
            scores = scores.broadcast_add(&m)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((nh * nw, n, c))?;
        let out = b.o.forward(&out)?;
        let mut g = out
            .reshape((nh, nw, win, win, c))?
            .permute((0, 2, 1, 3, 4))?
            .reshape((hp, wp, c))?;
        if shift > 0 {
            g = g.roll(shift as i32, 0)?.roll(shift as i32, 1)?;
        }
        let attn = g.narrow(0, 0, h)?.narrow(1, 0, wd)?.reshape((h * wd, c))?;
        let x = (x + attn)?;
        let m = b
            .fc2
            .forward(&act(self.act, &b.fc1.forward(&b.ln_after.forward(&x)?)?)?)?;
        x + m
    }

    /// The pooled features of one image `[1, c, H, W]`.
    fn features(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, ih, iw) = pixels.dims4()?;
        let p = self.patch;
        let px = pixels
            .pad_with_zeros(2, 0, ih.div_ceil(p) * p - ih)?
            .pad_with_zeros(3, 0, iw.div_ceil(p) * p - iw)?;
        let e = px
            .conv2d(&self.patch_w, 0, p, 1, 1)?
            .broadcast_add(&self.patch_b)?;
        let (_, c, mut h, mut wd) = e.dims4()?;
        let mut x = self
            .patch_norm
            .forward(&e.squeeze(0)?.reshape((c, h * wd))?.t()?)?;
        if let Some(pos) = &self.positions {
            if pos.dim(1)? != h * wd {
                candle_core::bail!(
                    "absolute positions for {} patches, the image has {}",
                    pos.dim(1)?,
                    h * wd
                );
            }
            x = x.broadcast_add(&pos.squeeze(0)?)?;
        }
        for st in &self.stages {
            for (i, b) in st.blocks.iter().enumerate() {
                x = self.block(b, &x, (h, wd), i % 2 == 1)?;
            }
            if let Some((norm, red)) = &st.merge {
                let c = x.dim(1)?;
                let g = x
                    .reshape((h, wd, c))?
                    .pad_with_zeros(0, 0, h % 2)?
                    .pad_with_zeros(1, 0, wd % 2)?;
                let (h2, w2) = (h.div_ceil(2), wd.div_ceil(2));
                // [h2, 2, w2, 2, c]: (row parity, column parity) as x0 x1 x2 x3 = (0,0) (1,0)
                // (0,1) (1,1).
                let g = g.reshape((h2, 2, w2, 2, c))?;
                let part = |r: usize, col: usize| -> candle_core::Result<Tensor> {
                    g.narrow(1, r, 1)?.narrow(3, col, 1)?.reshape((h2 * w2, c))
                };
                let cat = Tensor::cat(&[part(0, 0)?, part(1, 0)?, part(0, 1)?, part(1, 1)?], 1)?;
                x = red.forward(&norm.forward(&cat)?)?;
                (h, wd) = (h2, w2);
            }
        }
        let x = match &self.final_norm {
            Some(n) => n.forward(&x)?,
            None => x,
        };
        x.mean_keepdim(0)
    }
}

impl crate::cnn::Network for Swin {
    fn channels(&self) -> usize {
        self.channels
    }

    fn image_size(&self) -> usize {
        self.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let b = pixels.dim(0)?;
            let pooled = (0..b)
                .map(|i| self.features(&pixels.narrow(0, i, 1)?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            self.classifier.forward(&Tensor::cat(&pooled, 0)?)
        };
        run().map_err(ce("forward"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_index_matches_transformers() {
        // transformers' `_create_relative_position_index` for a 2×2 window.
        assert_eq!(
            relative_index(2),
            [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]
        );
    }

    #[test]
    fn shift_mask_separates_wrapped_regions() {
        // 4×4 grid, window 2, shift 1: the last window mixes 4 regions.
        let m = shift_mask(4, 4, 2, 1);
        assert_eq!(m.len(), 4 * 16);
        assert!(m[..16].iter().all(|v| *v == 0.0));
        let last = &m[48..];
        assert_eq!(last.iter().filter(|v| **v == 0.0).count(), 4);
    }
}
