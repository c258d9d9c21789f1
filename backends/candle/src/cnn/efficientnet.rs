//! EfficientNet: a stride-2 stem, then MBConv blocks (1×1 expansion, depthwise k×k, squeeze-
//! and-excitation, linear 1×1 projection; the residual on every repeat after a stage's first
//! block) scaled by the width and depth coefficients, a 1×1 head convolution, global mean or
//! max pooling and the classifier. Stride-2 depthwise convolutions pad explicitly
//! (`correct_pad`, adjusted unless the block is listed in `depthwise_padding`); the rest pad
//! "same". Every tensor is taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::Linear;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::{ConvBn, Pad};
use super::model::{ce, list};
use crate::activation::{Act, act};
use crate::weights::{Weights, linear};

/// transformers' `round_filters`: `channels · width` to a multiple of the divisor, never
/// below 90 % of it.
fn round_filters(channels: usize, width: f64, divisor: usize) -> usize {
    let c = channels as f64 * width;
    let mut new = divisor.max(((c + divisor as f64 / 2.0) as usize) / divisor * divisor);
    if (new as f64) < 0.9 * c {
        new += divisor;
    }
    new
}

/// A 1×1 convolution with a bias (the squeeze-and-excitation layers).
#[derive(Debug)]
struct Pointwise {
    w: Tensor,
    b: Tensor,
}

impl Pointwise {
    fn load(w: &mut Weights, p: &str, out: usize, inp: usize) -> Result<Self, SkillError> {
        Ok(Self {
            w: w.take(&format!("{p}.weight"), &[out, inp, 1, 1])?,
            b: w.take(&format!("{p}.bias"), &[out])?
                .reshape((1, out, 1, 1))
                .map_err(ce("bias"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.w, 0, 1, 1, 1)?.broadcast_add(&self.b)
    }
}

#[derive(Debug)]
struct Block {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se_reduce: Pointwise,
    se_expand: Pointwise,
    project: ConvBn,
    residual: bool,
}

/// A loaded EfficientNet classifier.
#[derive(Debug)]
pub(crate) struct EfficientNet {
    channels: usize,
    image: usize,
    act: Act,
    stem: ConvBn,
    blocks: Vec<Block>,
    top: ConvBn,
    max_pool: bool,
    classifier: Linear,
}

impl EfficientNet {
    /// Read `config.json` (in `f`) and take the `EfficientNetForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let width = f.f64("width_coefficient")?;
        let depth = f.f64("depth_coefficient")?;
        let divisor = f.positive("depth_divisor")?;
        let eps = f.f64("batch_norm_eps")?;
        let act_name = f.str_opt("hidden_act")?.unwrap_or("swish");
        let act = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let kernels = list(f, "kernel_sizes")?;
        let ins = list(f, "in_channels")?;
        let outs = list(f, "out_channels")?;
        let strides = list(f, "strides")?;
        let repeats = list(f, "num_block_repeats")?;
        let ratios = list(f, "expand_ratios")?;
        let n = ins.len();
        for (field, len) in [
            ("kernel_sizes", kernels.len()),
            ("out_channels", outs.len()),
            ("strides", strides.len()),
            ("num_block_repeats", repeats.len()),
            ("expand_ratios", ratios.len()),
        ] {
            if len != n {
                return Err(f.err(
                    field,
                    format!("{len} entries for {n} stages (`in_channels`)"),
                ));
            }
        }
        if let Some(k) = kernels.iter().find(|k| *k % 2 == 0) {
            return Err(f.err(
                "kernel_sizes",
                format!("even kernels ({k}) are not implemented"),
            ));
        }
        let unadjusted: Vec<usize> = match f.get("depthwise_padding") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_u64().map(|n| n as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| f.err("depthwise_padding", "expected block numbers"))?,
            Some(other) => {
                return Err(f.err(
                    "depthwise_padding",
                    format!("expected a list, found {other}"),
                ));
            }
        };
        let se_ratio = f.f64("squeeze_expansion_ratio")?;
        let max_pool = match f.str_opt("pooling_type")?.unwrap_or("mean") {
            "mean" => false,
            "max" => true,
            other => {
                return Err(f.err(
                    "pooling_type",
                    format!("`{other}` is not implemented (mean, max)"),
                ));
            }
        };
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let p = "efficientnet";
        let stem_out = round_filters(32, width, divisor);
        let stem = ConvBn::load_named(
            w,
            (
                &format!("{p}.embeddings.convolution"),
                &format!("{p}.embeddings.batchnorm"),
            ),
            (stem_out, channels, 3),
            (2, 1),
            Pad::Explicit([0, 1, 0, 1]),
            eps,
        )?;
        let mut blocks = Vec::new();
        let mut out_dim = stem_out;
        for i in 0..n {
            let first_in = round_filters(ins[i], width, divisor);
            out_dim = round_filters(outs[i], width, divisor);
            let k = kernels[i];
            for j in 0..(depth * repeats[i] as f64).ceil() as usize {
                let num = blocks.len();
                let (inp, stride) = if j == 0 {
                    (first_in, strides[i])
                } else {
                    (out_dim, 1)
                };
                let b = format!("{p}.encoder.blocks.{num}");
                let expanded = inp * ratios[i];
                let expand = if ratios[i] != 1 {
                    Some(ConvBn::load_named(
                        w,
                        (
                            &format!("{b}.expansion.expand_conv"),
                            &format!("{b}.expansion.expand_bn"),
                        ),
                        (expanded, inp, 1),
                        (1, 1),
                        Pad::Symmetric,
                        eps,
                    )?)
                } else {
                    None
                };
                let c = k / 2;
                let pad = if stride == 2 {
                    if unadjusted.contains(&num) {
                        Pad::Explicit([c, c, c, c])
                    } else {
                        Pad::Explicit([c - 1, c, c - 1, c])
                    }
                } else {
                    Pad::Symmetric
                };
                let depthwise = ConvBn::load_named(
                    w,
                    (
                        &format!("{b}.depthwise_conv.depthwise_conv"),
                        &format!("{b}.depthwise_conv.depthwise_norm"),
                    ),
                    (expanded, expanded, k),
                    (stride, expanded),
                    pad,
                    eps,
                )?;
                let se = ((inp as f64 * se_ratio) as usize).max(1);
                let s = format!("{b}.squeeze_excite");
                blocks.push(Block {
                    expand,
                    depthwise,
                    se_reduce: Pointwise::load(w, &format!("{s}.reduce"), se, expanded)?,
                    se_expand: Pointwise::load(w, &format!("{s}.expand"), expanded, se)?,
                    project: ConvBn::load_named(
                        w,
                        (
                            &format!("{b}.projection.project_conv"),
                            &format!("{b}.projection.project_bn"),
                        ),
                        (out_dim, expanded, 1),
                        (1, 1),
                        Pad::Symmetric,
                        eps,
                    )?,
                    // transformers: the residual only when stride 1 and not a stage's first block.
                    residual: stride == 1 && j > 0,
                });
            }
        }
        let hidden = f.positive("hidden_dim")?;
        let top_out = round_filters(1280, width, divisor);
        if hidden != top_out {
            return Err(f.err(
                "hidden_dim",
                format!("{hidden}, but the head convolution has {top_out} channels"),
            ));
        }
        let top = ConvBn::load_named(
            w,
            (
                &format!("{p}.encoder.top_conv"),
                &format!("{p}.encoder.top_bn"),
            ),
            (hidden, out_dim, 1),
            (1, 1),
            Pad::Symmetric,
            eps,
        )?;
        let classifier = linear(w, "classifier", labels, hidden, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.positive("image_size")?,
            act,
            stem,
            blocks,
            top,
            max_pool,
            classifier,
        })
    }
}

impl super::Network for EfficientNet {
    fn channels(&self) -> usize {
        self.channels
    }

    fn image_size(&self) -> usize {
        self.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let a = self.act;
        let run = || -> candle_core::Result<Tensor> {
            let mut x = act(a, &self.stem.forward(pixels)?)?;
            for b in &self.blocks {
                let mut h = x.clone();
                if let Some(e) = &b.expand {
                    h = act(a, &e.forward(&h)?)?;
                }
                h = act(a, &b.depthwise.forward(&h)?)?;
                let g = act(
                    a,
                    &b.se_reduce.forward(&h.mean_keepdim(3)?.mean_keepdim(2)?)?,
                )?;
                h = h.broadcast_mul(&candle_nn::ops::sigmoid(&b.se_expand.forward(&g)?)?)?;
                h = b.project.forward(&h)?;
                x = if b.residual { (h + x)? } else { h };
            }
            let x = act(a, &self.top.forward(&x)?)?;
            let pooled = if self.max_pool {
                x.max(D::Minus1)?.max(D::Minus1)?
            } else {
                x.mean(D::Minus1)?.mean(D::Minus1)?
            };
            self.classifier.forward(&pooled)
        };
        run().map_err(ce("forward"))
    }
}

#[cfg(test)]
mod tests {
    use super::round_filters;

    #[test]
    fn round_filters_as_transformers() {
        // EfficientNet-B0 (width 1.0) keeps its widths; B7 (2.0) doubles them.
        assert_eq!(round_filters(32, 1.0, 8), 32);
        assert_eq!(round_filters(1280, 2.0, 8), 2560);
        // 0.1 × 32 = 3.2: the divisor is the floor.
        assert_eq!(round_filters(32, 0.1, 8), 8);
        // 0.25 × 40 = 10 → 8, under 90 % of 10 → 16.
        assert_eq!(round_filters(40, 0.25, 8), 16);
    }
}
