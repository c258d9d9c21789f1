//! FocalNet: patch embeddings (a patch convolution, or a 7×7/3×3 strided one with
//! `use_conv_embed`) with LayerNorms, then stages of focal-modulation blocks — a linear into
//! query, context and gates, `focal_level` depthwise GELU convolutions of growing kernels whose
//! outputs are gated and summed with a gated global context, a 1×1 modulator multiplying the
//! query, an output linear — and MLPs, pre- or post-norm, with optional layer scales; patch
//! embeddings downsample between stages; the classifier reads the LayerNormed token mean.
//! Every tensor is taken by name and shape.

use candle_core::{DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::cnn::model::{ce, list};
use crate::weights::{Weights, layer_norm, linear};

/// A patch embedding: convolution (with its bias), optional LayerNorm.
#[derive(Debug)]
struct Embed {
    w: Tensor,
    b: Tensor,
    stride: usize,
    pad: usize,
    /// Pad the input up to a multiple of the patch (plain patch embeddings).
    patch: Option<usize>,
    norm: Option<LayerNorm>,
}

impl Embed {
    #[allow(clippy::too_many_arguments)]
    fn load(
        w: &mut Weights,
        p: &str,
        (out, inp): (usize, usize),
        conv_embed: bool,
        stem: bool,
        patch: usize,
        norm: Option<f64>,
    ) -> Result<Self, SkillError> {
        let (k, stride, pad, patch) = match (conv_embed, stem) {
            (true, true) => (7, 4, 2, None),
            (true, false) => (3, 2, 1, None),
            (false, _) => (patch, patch, 0, Some(patch)),
        };
        Ok(Self {
            w: w.take(&format!("{p}.projection.weight"), &[out, inp, k, k])?,
            b: w.take(&format!("{p}.projection.bias"), &[out])?
                .reshape((1, out, 1, 1))
                .map_err(ce("bias"))?,
            stride,
            pad,
            patch,
            norm: match norm {
                Some(eps) => Some(layer_norm(w, &format!("{p}.norm"), out, eps)?),
                None => None,
            },
        })
    }

    /// `[1, c, h, w]` → tokens `[h'·w', out]` and the new grid.
    fn forward(&self, g: &Tensor) -> candle_core::Result<(Tensor, (usize, usize))> {
        let mut g = g.clone();
        if let Some(p) = self.patch {
            let (_, _, h, w) = g.dims4()?;
            g = g
                .pad_with_zeros(3, 0, w.div_ceil(p) * p - w)?
                .pad_with_zeros(2, 0, h.div_ceil(p) * p - h)?;
        }
        let e = g
            .conv2d(&self.w, self.pad, self.stride, 1, 1)?
            .broadcast_add(&self.b)?;
        let (_, c, h, w) = e.dims4()?;
        let t = e.reshape((c, h * w))?.t()?.contiguous()?;
        let t = match &self.norm {
            Some(n) => n.forward(&t)?,
            None => t,
        };
        Ok((t, (h, w)))
    }
}

#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    proj_in: Linear,
    /// Depthwise focal convolutions (no bias), growing kernels.
    focal: Vec<Tensor>,
    /// The 1×1 modulator convolution (weight, bias).
    context: (Tensor, Tensor),
    mod_norm: Option<LayerNorm>,
    proj_out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    gammas: Option<(Tensor, Tensor)>,
}

/// A loaded FocalNet classifier.
#[derive(Debug)]
pub(crate) struct FocalNet {
    channels: usize,
    image: usize,
    act: Act,
    post_norm: bool,
    normalize_modulator: bool,
    stem: Embed,
    stem_norm: LayerNorm,
    stages: Vec<(Vec<Block>, Option<Embed>)>,
    ln: LayerNorm,
    classifier: Linear,
}

impl FocalNet {
    /// Read `config.json` (in `f`) and take the `FocalNetForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let eps = f.f64("layer_norm_eps")?;
        let depths = list(f, "depths")?;
        let levels = list(f, "focal_levels")?;
        let windows = list(f, "focal_windows")?;
        let n = depths.len();
        if levels.len() < n || windows.len() < n {
            return Err(f.err("focal_levels", "one focal level and window per stage"));
        }
        let embed = f.positive("embed_dim")?;
        let patch = f.positive("patch_size")?;
        let conv_embed = f.bool_or("use_conv_embed", false)?;
        let ratio = f.f64("mlp_ratio")?;
        let layerscale = f.bool_or("use_layerscale", false)?;
        let post_norm = f.bool_or("use_post_layernorm", false)?;
        let mod_ln = f.bool_or("use_post_layernorm_in_modulation", false)?;
        let act_name = f.str_opt("hidden_act")?.unwrap_or("gelu");
        let act = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let p = "focalnet";
        let stem = Embed::load(
            w,
            &format!("{p}.embeddings.patch_embeddings"),
            (embed, channels),
            conv_embed,
            true,
            patch,
            None,
        )?;
        let stem_norm = layer_norm(w, &format!("{p}.embeddings.norm"), embed, eps)?;
        let mut stages = Vec::with_capacity(n);
        let mut dim = embed;
        for s in 0..n {
            let mut blocks = Vec::with_capacity(depths[s]);
            for j in 0..depths[s] {
                let b = format!("{p}.encoder.stages.{s}.layers.{j}");
                let m = format!("{b}.modulation");
                let lv = levels[s];
                let focal = (0..lv)
                    .map(|k| {
                        let ks = 2 * k + windows[s];
                        w.take(&format!("{m}.focal_layers.{k}.0.weight"), &[dim, 1, ks, ks])
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let mid = (dim as f64 * ratio) as usize;
                blocks.push(Block {
                    norm1: layer_norm(w, &format!("{b}.norm1"), dim, eps)?,
                    proj_in: linear(
                        w,
                        &format!("{m}.projection_in"),
                        2 * dim + lv + 1,
                        dim,
                        true,
                    )?,
                    focal,
                    context: (
                        w.take(&format!("{m}.projection_context.weight"), &[dim, dim, 1, 1])?,
                        w.take(&format!("{m}.projection_context.bias"), &[dim])?
                            .reshape((1, dim, 1, 1))
                            .map_err(ce("bias"))?,
                    ),
                    mod_norm: if mod_ln {
                        Some(layer_norm(w, &format!("{m}.layernorm"), dim, eps)?)
                    } else {
                        None
                    },
                    proj_out: linear(w, &format!("{m}.projection_out"), dim, dim, true)?,
                    norm2: layer_norm(w, &format!("{b}.norm2"), dim, eps)?,
                    fc1: linear(w, &format!("{b}.mlp.fc1"), mid, dim, true)?,
                    fc2: linear(w, &format!("{b}.mlp.fc2"), dim, mid, true)?,
                    gammas: if layerscale {
                        Some((
                            w.take(&format!("{b}.gamma_1"), &[dim])?,
                            w.take(&format!("{b}.gamma_2"), &[dim])?,
                        ))
                    } else {
                        None
                    },
                });
            }
            let down = if s + 1 < n {
                let d = Embed::load(
                    w,
                    &format!("{p}.encoder.stages.{s}.downsample"),
                    (2 * dim, dim),
                    conv_embed,
                    false,
                    2,
                    Some(eps),
                )?;
                dim *= 2;
                Some(d)
            } else {
                None
            };
            stages.push((blocks, down));
        }
        let ln = layer_norm(w, &format!("{p}.layernorm"), dim, eps)?;
        let classifier = linear(w, "classifier", labels, dim, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.usize_opt("image_size")?.unwrap_or(224),
            act,
            post_norm,
            normalize_modulator: f.bool_or("normalize_modulator", false)?,
            stem,
            stem_norm,
            stages,
            ln,
            classifier,
        })
    }

    /// The focal modulation of `x` `[h·w, c]` on an `h`×`w` grid.
    fn modulate(
        &self,
        b: &Block,
        x: &Tensor,
        (h, w): (usize, usize),
    ) -> candle_core::Result<Tensor> {
        let c = x.dim(1)?;
        let lv = b.focal.len();
        let grid = b
            .proj_in
            .forward(x)?
            .t()?
            .reshape((1, 2 * c + lv + 1, h, w))?;
        let q = grid.narrow(1, 0, c)?;
        let mut ctx = grid.narrow(1, c, c)?;
        let gates = grid.narrow(1, 2 * c, lv + 1)?;
        let mut all = ctx.zeros_like()?;
        for (l, k) in b.focal.iter().enumerate() {
            let ks = k.dim(2)?;
            ctx = ctx.conv2d(k, ks / 2, 1, 1, c)?.gelu_erf()?;
            all = (all + ctx.broadcast_mul(&gates.narrow(1, l, 1)?)?)?;
        }
        let global = ctx.mean_keepdim(3)?.mean_keepdim(2)?.gelu_erf()?;
        all = (all + global.broadcast_mul(&gates.narrow(1, lv, 1)?)?)?;
        if self.normalize_modulator {
            all = (all / (lv + 1) as f64)?;
        }
        let modulator = all
            .conv2d(&b.context.0, 0, 1, 1, 1)?
            .broadcast_add(&b.context.1)?;
        let out = (q * modulator)?.reshape((c, h * w))?.t()?;
        let out = match &b.mod_norm {
            Some(n) => n.forward(&out)?,
            None => out,
        };
        b.proj_out.forward(&out)
    }

    fn block(&self, b: &Block, x: &Tensor, hw: (usize, usize)) -> candle_core::Result<Tensor> {
        let scale = |t: Tensor, g: Option<&Tensor>| match g {
            Some(g) => t.broadcast_mul(g),
            None => Ok(t),
        };
        let (g1, g2) = match &b.gammas {
            Some((a, c)) => (Some(a), Some(c)),
            None => (None, None),
        };
        let m = if self.post_norm {
            b.norm1.forward(&self.modulate(b, x, hw)?)?
        } else {
            self.modulate(b, &b.norm1.forward(x)?, hw)?
        };
        let x = (x + scale(m, g1)?)?;
        let mlp = |t: &Tensor| b.fc2.forward(&act(self.act, &b.fc1.forward(t)?)?);
        let y = if self.post_norm {
            b.norm2.forward(&mlp(&x)?)?
        } else {
            mlp(&b.norm2.forward(&x)?)?
        };
        x + scale(y, g2)?
    }

    /// The pooled features of one image `[1, c, H, W]`.
    fn features(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (t, mut hw) = self.stem.forward(pixels)?;
        let mut x = self.stem_norm.forward(&t)?;
        for (blocks, down) in &self.stages {
            for b in blocks {
                x = self.block(b, &x, hw)?;
            }
            if let Some(d) = down {
                let c = x.dim(1)?;
                let g = x.t()?.reshape((1, c, hw.0, hw.1))?;
                (x, hw) = d.forward(&g)?;
            }
        }
        self.ln.forward(&x)?.mean_keepdim(0)
    }
}

impl crate::cnn::Network for FocalNet {
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
