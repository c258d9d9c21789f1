//! Shifted-window vision transformers: Swin and Donut's Swin encoder. Patches (a strided
//! convolution, LayerNorm, optional absolute positions), then stages of blocks that attend
//! within `window`×`window` windows — every other block on a grid cyclically shifted by half a
//! window, with the regions that wrap around masked — with a learned relative position bias
//! per window offset; patch merging (2×2 neighbours concatenated, LayerNorm, linear) between
//! stages; the classifier reads the token mean (after a final LayerNorm for Swin). A window
//! as large as the grid is not shifted, as in transformers; a smaller grid is refused. Every
//! tensor is taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::cnn::model::{ce, list};
use crate::weights::{Weights, layer_norm, linear};

/// The model types [`Swin::load`] knows.
pub const MODEL_TYPES: &[&str] = &["donut-swin", "swin", "swinv2"];

/// torch's `nn.LayerNorm` default (the patch and merging norms).
const TORCH_EPS: f64 = 1e-5;

#[derive(Debug)]
struct Block {
    heads: usize,
    /// Swin V2: this block's window and shift, fixed from the configured image size.
    fixed: Option<(usize, usize)>,
    ln_before: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// The bias per relative offset, `[(2w−1)², heads]`: Swin's learned table, or Swin V2's
    /// `16·σ(cpb_mlp(log-spaced coordinates))` computed at load.
    table: Tensor,
    /// Swin V2's cosine attention: `exp(min(logit_scale, ln 100))` per head, `[1, heads, 1, 1]`.
    logit_scale: Option<Tensor>,
    ln_after: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Debug)]
struct Stage {
    blocks: Vec<Block>,
    /// Patch merging: its LayerNorm (over `4·dim`; Swin V2: over `2·dim`, after the
    /// reduction) and the bias-less reduction to `2·dim`.
    merge: Option<(LayerNorm, Linear)>,
}

/// A loaded Swin classifier.
#[derive(Debug)]
pub(crate) struct Swin {
    channels: usize,
    image: usize,
    patch: usize,
    window: usize,
    /// Swin V2: residual post-norm blocks, cosine attention, norm after the merge.
    v2: bool,
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

/// Swin V2's bias table of a `win`×`win` window: `16·σ(mlp(coords))` over the log-spaced
/// relative coordinates (normalised by the pretrained window when given, else the window),
/// `[(2w−1)², heads]`, from `{a}.continuous_position_bias_mlp.{0,2}`.
fn cpb_table(
    w: &mut Weights,
    a: &str,
    win: usize,
    pretrained: usize,
    heads: usize,
) -> Result<Tensor, SkillError> {
    let m = format!("{a}.continuous_position_bias_mlp");
    let l0 = linear(w, &format!("{m}.0"), 512, 2, true)?;
    let l2 = linear(w, &format!("{m}.2"), heads, 512, false)?;
    let norm = if pretrained > 0 {
        (pretrained - 1) as f32
    } else if win > 1 {
        (win - 1) as f32
    } else {
        1.0
    };
    let side = 2 * win - 1;
    let mut coords = Vec::with_capacity(side * side * 2);
    let log = |v: f32| {
        let v = v / norm * 8.0;
        v.signum() * (v.abs() + 1.0).log2() / 3.0
    };
    for i in 0..side {
        for j in 0..side {
            coords.push(log(i as f32 - (win as f32 - 1.0)));
            coords.push(log(j as f32 - (win as f32 - 1.0)));
        }
    }
    let run = || -> candle_core::Result<Tensor> {
        let c = Tensor::from_vec(coords, (side * side, 2), w.device())?;
        let t = l2.forward(&l0.forward(&c)?.relu()?)?;
        candle_nn::ops::sigmoid(&t)? * 16.0
    };
    run().map_err(ce("continuous position bias"))
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
            "swinv2" => ("swinv2", true),
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
        let v2 = model_type == "swinv2";
        let pretrained = if v2 {
            match f.get("pretrained_window_sizes") {
                None | Some(serde_json::Value::Null) => vec![0; depths.len()],
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_u64().map(|n| n as usize))
                    .collect::<Option<Vec<_>>>()
                    .filter(|v| v.len() >= depths.len())
                    .ok_or_else(|| {
                        f.err("pretrained_window_sizes", "expected one size per stage")
                    })?,
                Some(other) => {
                    return Err(f.err(
                        "pretrained_window_sizes",
                        format!("expected a list, found {other}"),
                    ));
                }
            }
        } else {
            Vec::new()
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
                // Swin V2 fixes each stage's window from the configured grid (transformers:
                // the window shrinks to a smaller grid, which then does not shift).
                let res = (image / patch) >> s;
                let fixed = v2.then(|| {
                    let win = res.min(window);
                    (
                        win,
                        if res <= win || b % 2 == 0 {
                            0
                        } else {
                            window / 2
                        },
                    )
                });
                let (table, logit_scale) = match fixed {
                    None => (
                        w.take(
                            &format!("{a}.relative_position_bias_table"),
                            &[(2 * window - 1) * (2 * window - 1), nh],
                        )?,
                        None,
                    ),
                    Some((win, _)) => (
                        cpb_table(w, &a, win, pretrained[s], nh)?,
                        Some(
                            w.take(&format!("{a}.logit_scale"), &[nh, 1, 1])?
                                .clamp(f64::NEG_INFINITY, 100f64.ln())
                                .and_then(|t| t.exp())
                                .and_then(|t| t.unsqueeze(0))
                                .map_err(ce("logit scale"))?,
                        ),
                    ),
                };
                blocks.push(Block {
                    heads: nh,
                    fixed,
                    ln_before: layer_norm(w, &format!("{bp}.layernorm_before"), dim, eps)?,
                    q: linear(w, &format!("{a}.query"), dim, dim, qkv_bias)?,
                    k: linear(w, &format!("{a}.key"), dim, dim, qkv_bias && !v2)?,
                    v: linear(w, &format!("{a}.value"), dim, dim, qkv_bias)?,
                    o: linear(w, &format!("{bp}.attention.output.dense"), dim, dim, true)?,
                    table,
                    logit_scale,
                    ln_after: layer_norm(w, &format!("{bp}.layernorm_after"), dim, eps)?,
                    fc1: linear(w, &format!("{bp}.intermediate.dense"), mid, dim, true)?,
                    fc2: linear(w, &format!("{bp}.output.dense"), dim, mid, true)?,
                });
            }
            let merge = if s + 1 < depths.len() {
                let d = format!("{p}.encoder.layers.{s}.downsample");
                let m = (
                    layer_norm(
                        w,
                        &format!("{d}.norm"),
                        if v2 { 2 * dim } else { 4 * dim },
                        TORCH_EPS,
                    )?,
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
            v2,
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
        let (win, shift) = match b.fixed {
            Some(fixed) => fixed,
            None => self.dynamic_window(h, wd, shifted)?,
        };
        let hp = h.div_ceil(win) * win;
        let wp = wd.div_ceil(win) * win;
        let normed = if self.v2 {
            x.clone()
        } else {
            b.ln_before.forward(x)?
        };
        let mut g = normed
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
        let (q, k) = (
            split(b.q.forward(&windows)?)?,
            split(b.k.forward(&windows)?)?,
        );
        let v = split(b.v.forward(&windows)?)?;
        let mut scores = match &b.logit_scale {
            None => (q * (hd as f64).powf(-0.5))?.matmul(&k.transpose(2, 3)?.contiguous()?)?,
            Some(scale) => {
                // F.normalize: x / max(‖x‖, 1e-12).
                let unit = |t: &Tensor| -> candle_core::Result<Tensor> {
                    t.broadcast_div(&t.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?)
                };
                unit(&q)?
                    .matmul(&unit(&k)?.transpose(2, 3)?.contiguous()?)?
                    .broadcast_mul(scale)?
            }
        };
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
        if self.v2 {
            let x = (x + b.ln_before.forward(&attn)?)?;
            let m = b.fc2.forward(&act(self.act, &b.fc1.forward(&x)?)?)?;
            return x + b.ln_after.forward(&m)?;
        }
        let x = (x + attn)?;
        let m = b
            .fc2
            .forward(&act(self.act, &b.fc1.forward(&b.ln_after.forward(&x)?)?)?)?;
        x + m
    }

    /// Swin's window and shift on an `h`×`w` grid: a window as large as the grid does not
    /// shift; a grid smaller than the window would need a bias table of another size
    /// (transformers fails there too).
    fn dynamic_window(
        &self,
        h: usize,
        wd: usize,
        shifted: bool,
    ) -> candle_core::Result<(usize, usize)> {
        let win = self.window;
        let shift = match h.min(wd).cmp(&win) {
            std::cmp::Ordering::Less => candle_core::bail!(
                "a {h}×{wd} grid is smaller than the {win}×{win} window (use the preprocessor's size)"
            ),
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater if shifted => win / 2,
            std::cmp::Ordering::Greater => 0,
        };
        Ok((win, shift))
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
                x = if self.v2 {
                    norm.forward(&red.forward(&cat)?)?
                } else {
                    red.forward(&norm.forward(&cat)?)?
                };
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
