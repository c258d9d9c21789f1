//! MobileViT V2: MobileViT's stem and inverted residuals (scaled by `width_multiplier`), then
//! three blocks of a downsampling inverted residual, a depthwise k×k and a 1×1 convolution,
//! linear-complexity separable self-attention over the pixels sharing a position inside their
//! patch (one-group GroupNorms, a 1×1 query/key/value convolution, softmax over the patches,
//! ReLU'd values gated by the context vector, 1×1 FFNs), the folding back and a 1×1
//! projection; the classifier reads the spatial mean. Grids the patch does not divide are
//! refused. Every tensor is taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{GroupNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::ConvBn;
use super::mobilevit::{Inverted, conv, inverted};
use super::model::{ce, list};
use crate::activation::{Act, act};
use crate::weights::{Weights, linear};

/// transformers' `make_divisible` on a float width.
fn make_divisible(value: f64, divisor: usize, min_value: usize) -> usize {
    let mut new = min_value.max(((value + divisor as f64 / 2.0) as usize) / divisor * divisor);
    if (new as f64) < 0.9 * value {
        new += divisor;
    }
    new
}

/// A 1×1 convolution with a bias (no norm).
#[derive(Debug)]
struct Pointwise {
    w: Tensor,
    b: Tensor,
}

impl Pointwise {
    fn load(w: &mut Weights, p: &str, out: usize, inp: usize) -> Result<Self, SkillError> {
        Ok(Self {
            w: w.take(&format!("{p}.convolution.weight"), &[out, inp, 1, 1])?,
            b: w.take(&format!("{p}.convolution.bias"), &[out])?
                .reshape((1, out, 1, 1))
                .map_err(ce("bias"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.w, 0, 1, 1, 1)?.broadcast_add(&self.b)
    }
}

fn group_norm(w: &mut Weights, p: &str, c: usize, eps: f64) -> Result<GroupNorm, SkillError> {
    GroupNorm::new(
        w.take(&format!("{p}.weight"), &[c])?,
        w.take(&format!("{p}.bias"), &[c])?,
        c,
        1,
        eps,
    )
    .map_err(ce("group norm"))
}

#[derive(Debug)]
struct Layer {
    ln_before: GroupNorm,
    qkv: Pointwise,
    out: Pointwise,
    ln_after: GroupNorm,
    ffn1: Pointwise,
    ffn2: Pointwise,
}

#[derive(Debug)]
struct VitBlock {
    down: Inverted,
    conv_kxk: ConvBn,
    conv_1x1: Tensor,
    layers: Vec<Layer>,
    ln: GroupNorm,
    projection: ConvBn,
}

/// A loaded MobileViT V2 classifier.
#[derive(Debug)]
pub(crate) struct MobileVit2 {
    channels: usize,
    image: usize,
    patch: usize,
    act: Act,
    stem: ConvBn,
    mobilenet: Vec<Inverted>,
    vit: Vec<VitBlock>,
    classifier: Linear,
}

impl MobileVit2 {
    /// Read `config.json` (in `f`) and take the `MobileViTV2ForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        if f.positive("output_stride")? != 32 {
            return Err(f.err(
                "output_stride",
                "only 32 is implemented (smaller strides dilate the last blocks)",
            ));
        }
        let wm = f.f64("width_multiplier")?;
        let ratio = f.f64("expand_ratio")?;
        let eps = f.f64("layer_norm_eps")?;
        let k = f.positive("conv_kernel_size")?;
        let ffn_mult = f.positive("ffn_multiplier")?;
        let blocks = list(f, "n_attn_blocks")?;
        let attn_dims = list(f, "base_attn_unit_dims")?;
        if blocks.len() != 3 || attn_dims.len() != 3 {
            return Err(f.err("n_attn_blocks", "three attention stages"));
        }
        let act_name = f.str_opt("hidden_act")?.unwrap_or("swish");
        let a = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let l0 = make_divisible((32.0 * wm).clamp(16.0, 64.0), 8, 16);
        let dims = [
            l0,
            make_divisible(64.0 * wm, 16, 16),
            make_divisible(128.0 * wm, 8, 8),
            make_divisible(256.0 * wm, 8, 8),
            make_divisible(384.0 * wm, 8, 8),
            make_divisible(512.0 * wm, 8, 8),
        ];
        let p = "mobilevitv2";
        let stem = conv(w, &format!("{p}.conv_stem"), (l0, channels, 3), 2, 1)?;
        let e = format!("{p}.encoder.layer");
        let mut mobilenet = vec![inverted(
            w,
            &format!("{e}.0.layer.0"),
            (dims[0], dims[1]),
            1,
            ratio,
        )?];
        for i in 0..2 {
            let inp = if i == 0 { dims[1] } else { dims[2] };
            mobilenet.push(inverted(
                w,
                &format!("{e}.1.layer.{i}"),
                (inp, dims[2]),
                if i == 0 { 2 } else { 1 },
                ratio,
            )?);
        }
        let mut vit = Vec::with_capacity(3);
        for i in 0..3 {
            let b = format!("{e}.{}", i + 2);
            let (inp, out) = (dims[2 + i], dims[3 + i]);
            let d = make_divisible(attn_dims[i] as f64 * wm, 8, 8);
            let ffn = (ffn_mult * d) / 16 * 16;
            let mut layers = Vec::with_capacity(blocks[i]);
            for j in 0..blocks[i] {
                let l = format!("{b}.transformer.layer.{j}");
                layers.push(Layer {
                    ln_before: group_norm(w, &format!("{l}.layernorm_before"), d, eps)?,
                    qkv: Pointwise::load(w, &format!("{l}.attention.qkv_proj"), 1 + 2 * d, d)?,
                    out: Pointwise::load(w, &format!("{l}.attention.out_proj"), d, d)?,
                    ln_after: group_norm(w, &format!("{l}.layernorm_after"), d, eps)?,
                    ffn1: Pointwise::load(w, &format!("{l}.ffn.conv1"), ffn, d)?,
                    ffn2: Pointwise::load(w, &format!("{l}.ffn.conv2"), d, ffn)?,
                });
            }
            vit.push(VitBlock {
                down: inverted(w, &format!("{b}.downsampling_layer"), (inp, out), 2, ratio)?,
                conv_kxk: conv(w, &format!("{b}.conv_kxk"), (out, out, k), 1, out)?,
                conv_1x1: w.take(&format!("{b}.conv_1x1.convolution.weight"), &[d, out, 1, 1])?,
                layers,
                ln: group_norm(w, &format!("{b}.layernorm"), d, eps)?,
                projection: conv(w, &format!("{b}.conv_projection"), (out, d, 1), 1, 1)?,
            });
        }
        let classifier = linear(w, "classifier", labels, dims[5], true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.positive("image_size")?,
            patch: f.positive("patch_size")?,
            act: a,
            stem,
            mobilenet,
            vit,
            classifier,
        })
    }

    /// One separable-attention layer over `x` `[1, d, patch area, patches]`.
    fn layer(&self, l: &Layer, x: &Tensor) -> candle_core::Result<Tensor> {
        let d = x.dim(1)?;
        let qkv = l.qkv.forward(&l.ln_before.forward(x)?)?;
        let q = qkv.narrow(1, 0, 1)?;
        let k = qkv.narrow(1, 1, d)?;
        let v = qkv.narrow(1, 1 + d, d)?;
        let scores = candle_nn::ops::softmax_last_dim(&q)?;
        let context = k.broadcast_mul(&scores)?.sum_keepdim(D::Minus1)?;
        let attn = l.out.forward(&v.relu()?.broadcast_mul(&context)?)?;
        let x = (x + attn)?;
        let h = act(self.act, &l.ffn1.forward(&l.ln_after.forward(&x)?)?)?;
        x + l.ffn2.forward(&h)?
    }

    fn vit_block(&self, b: &VitBlock, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = b.down.forward(self.act, x)?;
        let h = act(self.act, &b.conv_kxk.forward(&x)?)?;
        let h = h.conv2d(&b.conv_1x1, 0, 1, 1, 1)?;
        let (_, d, hh, ww) = h.dims4()?;
        let p = self.patch;
        if !hh.is_multiple_of(p) || !ww.is_multiple_of(p) {
            candle_core::bail!(
                "a {hh}×{ww} grid is not a multiple of the {p}×{p} patch (transformers' unfold drops the rest; not implemented)"
            );
        }
        let (nh, nw) = (hh / p, ww / p);
        // F.unfold: [d, patch area (row-major inside the patch), patches (row-major)].
        let mut t = h
            .reshape((d, nh, p, nw, p))?
            .permute((0, 2, 4, 1, 3))?
            .reshape((1, d, p * p, nh * nw))?;
        for l in &b.layers {
            t = self.layer(l, &t)?;
        }
        let t = b.ln.forward(&t)?;
        let folded = t
            .reshape((d, p, p, nh, nw))?
            .permute((0, 3, 1, 4, 2))?
            .reshape((1, d, hh, ww))?;
        b.projection.forward(&folded)
    }
}

impl super::Network for MobileVit2 {
    fn channels(&self) -> usize {
        self.channels
    }

    fn image_size(&self) -> usize {
        self.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let b = pixels.dim(0)?;
            let mut pooled = Vec::with_capacity(b);
            for i in 0..b {
                let mut x = act(self.act, &self.stem.forward(&pixels.narrow(0, i, 1)?)?)?;
                for m in &self.mobilenet {
                    x = m.forward(self.act, &x)?;
                }
                for v in &self.vit {
                    x = self.vit_block(v, &x)?;
                }
                pooled.push(x.mean(D::Minus1)?.mean(D::Minus1)?);
            }
            self.classifier.forward(&Tensor::cat(&pooled, 0)?)
        };
        run().map_err(ce("forward"))
    }
}
