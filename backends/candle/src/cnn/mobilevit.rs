//! MobileViT (v1): a stride-2 stem, two MobileNet-V2 stages of inverted residuals, then three
//! MobileViT blocks — an inverted-residual downsampling, a k×k and a 1×1 convolution, a
//! transformer run over the pixels that share a position inside their `patch`×`patch` patch
//! (so each sequence crosses patches), a LayerNorm, the folding back, a 1×1 projection and a
//! k×k fusion with the block's input — a 1×1 expansion, the spatial mean and the classifier.
//! A grid that the patch size does not divide is resized bilinearly up to a multiple and back,
//! as transformers does; dilated variants (`output_stride` below 32) are refused. Every
//! tensor is taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::{ConvBn, Pad};
use super::mobilenet::make_divisible;
use super::model::{ce, list};
use crate::activation::{Act, act};
use crate::weights::{Weights, layer_norm, linear};

/// torch's `nn.BatchNorm2d` default, which MobileViT keeps.
const BN_EPS: f64 = 1e-5;

/// An inverted residual: expand 1×1, depthwise 3×3 (`stride`), linear reduce 1×1.
#[derive(Debug)]
pub(super) struct Inverted {
    expand: ConvBn,
    depthwise: ConvBn,
    reduce: ConvBn,
    residual: bool,
}

#[derive(Debug)]
struct TransformerLayer {
    ln_before: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln_after: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// A MobileViT block.
#[derive(Debug)]
struct VitBlock {
    down: Inverted,
    conv_kxk: ConvBn,
    /// The 1×1 convolution into the transformer width (no bias, norm or activation).
    conv_1x1: Tensor,
    layers: Vec<TransformerLayer>,
    ln: LayerNorm,
    projection: ConvBn,
    fusion: ConvBn,
}

/// A loaded MobileViT classifier.
#[derive(Debug)]
pub(crate) struct MobileVit {
    channels: usize,
    image: usize,
    patch: usize,
    heads: usize,
    act: Act,
    stem: ConvBn,
    mobilenet: Vec<Inverted>,
    vit: Vec<VitBlock>,
    exp: ConvBn,
    classifier: Linear,
}

impl Inverted {
    pub(super) fn forward(&self, a: Act, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = act(a, &self.expand.forward(x)?)?;
        let h = act(a, &self.depthwise.forward(&h)?)?;
        let h = self.reduce.forward(&h)?;
        if self.residual { x + h } else { Ok(h) }
    }
}

pub(super) fn conv(
    w: &mut Weights,
    p: &str,
    dims: (usize, usize, usize),
    stride: usize,
    groups: usize,
) -> Result<ConvBn, SkillError> {
    ConvBn::load_with(w, p, dims, (stride, groups), Pad::Symmetric, BN_EPS)
}

pub(super) fn inverted(
    w: &mut Weights,
    p: &str,
    (inp, out): (usize, usize),
    stride: usize,
    ratio: f64,
) -> Result<Inverted, SkillError> {
    let x = make_divisible((inp as f64 * ratio).round() as usize, 8, 8);
    Ok(Inverted {
        expand: conv(w, &format!("{p}.expand_1x1"), (x, inp, 1), 1, 1)?,
        depthwise: conv(w, &format!("{p}.conv_3x3"), (x, x, 3), stride, x)?,
        reduce: conv(w, &format!("{p}.reduce_1x1"), (out, x, 1), 1, 1)?,
        residual: stride == 1 && inp == out,
    })
}

/// `F.interpolate(mode="bilinear", align_corners=False)` (no antialiasing) along one axis:
/// the `[out, in]` weights.
fn bilinear(inp: usize, out: usize) -> Vec<f32> {
    let scale = inp as f64 / out as f64;
    let mut m = vec![0f32; out * inp];
    for d in 0..out {
        let src = (scale * (d as f64 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(inp - 1);
        let i1 = if i0 + 1 < inp { i0 + 1 } else { i0 };
        let l = (src - i0 as f64) as f32;
        m[d * inp + i0] += 1.0 - l;
        m[d * inp + i1] += l;
    }
    m
}

/// Resize `x` `[1, c, h, w]` to `size` with [`bilinear`] weights.
fn resize(x: &Tensor, (h, w): (usize, usize)) -> candle_core::Result<Tensor> {
    let (_, c, ih, iw) = x.dims4()?;
    let dev = x.device();
    let rh = Tensor::from_vec(bilinear(ih, h), (h, ih), dev)?;
    let rw = Tensor::from_vec(bilinear(iw, w), (w, iw), dev)?;
    let x = x.squeeze(0)?;
    // [c, ih, iw] · rwᵀ → [c, ih, w]; rh · that → [c, h, w].
    let y = x.broadcast_matmul(&rw.t()?)?;
    let y = rh.broadcast_matmul(&y)?;
    y.reshape((1, c, h, w))
}

impl MobileVit {
    /// Read `config.json` (in `f`) and take the `MobileViTForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        if f.positive("output_stride")? != 32 {
            return Err(f.err(
                "output_stride",
                "only 32 is implemented (smaller strides dilate the last blocks)",
            ));
        }
        let neck = list(f, "neck_hidden_sizes")?;
        let hidden = list(f, "hidden_sizes")?;
        if neck.len() != 7 || hidden.len() != 3 {
            return Err(f.err(
                "neck_hidden_sizes",
                "MobileViT has 7 neck widths and 3 transformer widths",
            ));
        }
        let heads = f.positive("num_attention_heads")?;
        let ratio = f.f64("expand_ratio")?;
        let mlp = f.f64("mlp_ratio")?;
        let k = f.positive("conv_kernel_size")?;
        let eps = f.f64("layer_norm_eps")?;
        let qkv_bias = f.bool_or("qkv_bias", true)?;
        let act_name = f.str_opt("hidden_act")?.unwrap_or("silu");
        let act = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let p = "mobilevit";
        let stem = conv(w, &format!("{p}.conv_stem"), (neck[0], channels, 3), 2, 1)?;
        let e = format!("{p}.encoder.layer");
        let mut mobilenet = vec![inverted(
            w,
            &format!("{e}.0.layer.0"),
            (neck[0], neck[1]),
            1,
            ratio,
        )?];
        for i in 0..3 {
            let inp = if i == 0 { neck[1] } else { neck[2] };
            let stride = if i == 0 { 2 } else { 1 };
            mobilenet.push(inverted(
                w,
                &format!("{e}.1.layer.{i}"),
                (inp, neck[2]),
                stride,
                ratio,
            )?);
        }
        let mut vit = Vec::with_capacity(3);
        for (i, depth) in [2usize, 4, 3].into_iter().enumerate() {
            let b = format!("{e}.{}", i + 2);
            let (inp, out, hd) = (neck[2 + i], neck[3 + i], hidden[i]);
            if !hd.is_multiple_of(heads) {
                return Err(f.err(
                    "num_attention_heads",
                    format!("{heads} heads do not divide the transformer width {hd}"),
                ));
            }
            let mid = (hd as f64 * mlp) as usize;
            let mut layers = Vec::with_capacity(depth);
            for j in 0..depth {
                let l = format!("{b}.transformer.layer.{j}");
                let a = format!("{l}.attention.attention");
                layers.push(TransformerLayer {
                    ln_before: layer_norm(w, &format!("{l}.layernorm_before"), hd, eps)?,
                    q: linear(w, &format!("{a}.query"), hd, hd, qkv_bias)?,
                    k: linear(w, &format!("{a}.key"), hd, hd, qkv_bias)?,
                    v: linear(w, &format!("{a}.value"), hd, hd, qkv_bias)?,
                    o: linear(w, &format!("{l}.attention.output.dense"), hd, hd, true)?,
                    ln_after: layer_norm(w, &format!("{l}.layernorm_after"), hd, eps)?,
                    fc1: linear(w, &format!("{l}.intermediate.dense"), mid, hd, true)?,
                    fc2: linear(w, &format!("{l}.output.dense"), hd, mid, true)?,
                });
            }
            vit.push(VitBlock {
                down: inverted(w, &format!("{b}.downsampling_layer"), (inp, out), 2, ratio)?,
                conv_kxk: conv(w, &format!("{b}.conv_kxk"), (out, out, k), 1, 1)?,
                conv_1x1: w.take(
                    &format!("{b}.conv_1x1.convolution.weight"),
                    &[hd, out, 1, 1],
                )?,
                layers,
                ln: layer_norm(w, &format!("{b}.layernorm"), hd, eps)?,
                projection: conv(w, &format!("{b}.conv_projection"), (out, hd, 1), 1, 1)?,
                fusion: conv(w, &format!("{b}.fusion"), (out, 2 * out, k), 1, 1)?,
            });
        }
        let exp = conv(w, &format!("{p}.conv_1x1_exp"), (neck[6], neck[5], 1), 1, 1)?;
        let classifier = linear(w, "classifier", labels, neck[6], true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.positive("image_size")?,
            patch: f.positive("patch_size")?,
            heads,
            act,
            stem,
            mobilenet,
            vit,
            exp,
            classifier,
        })
    }

    fn inverted(&self, b: &Inverted, x: &Tensor) -> candle_core::Result<Tensor> {
        b.forward(self.act, x)
    }

    /// One transformer layer over `x` `[sequences, tokens, c]`.
    fn layer(&self, l: &TransformerLayer, x: &Tensor) -> candle_core::Result<Tensor> {
        let (s, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let y = l.ln_before.forward(x)?;
        let split = |t: Tensor| {
            t.reshape((s, n, self.heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = (split(l.q.forward(&y)?)? * (hd as f64).powf(-0.5))?;
        let k = split(l.k.forward(&y)?)?;
        let v = split(l.v.forward(&y)?)?;
        let probs =
            candle_nn::ops::softmax_last_dim(&q.matmul(&k.transpose(2, 3)?.contiguous()?)?)?;
        let attn = probs.matmul(&v)?.transpose(1, 2)?.reshape((s, n, c))?;
        let x = (x + l.o.forward(&attn)?)?;
        let m = l
            .fc2
            .forward(&act(self.act, &l.fc1.forward(&l.ln_after.forward(&x)?)?)?)?;
        x + m
    }

    fn vit_block(&self, b: &VitBlock, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.inverted(&b.down, x)?;
        let h = act(self.act, &b.conv_kxk.forward(&x)?)?;
        let h = h.conv2d(&b.conv_1x1, 0, 1, 1, 1)?;
        let (_, c, oh, ow) = h.dims4()?;
        let p = self.patch;
        // transformers resizes a grid the patch does not divide up to the next multiple
        // (bilinear), and the result back afterwards.
        let (hh, ww) = (oh.div_ceil(p) * p, ow.div_ceil(p) * p);
        let h = if (hh, ww) != (oh, ow) {
            resize(&h, (hh, ww))?
        } else {
            h
        };
        let (nh, nw) = (hh / p, ww / p);
        // [c, nh, p, nw, p] → [p, p, nh, nw, c]: one sequence per position inside the patch.
        let seqs = h
            .squeeze(0)?
            .reshape((c, nh, p, nw, p))?
            .permute((2, 4, 1, 3, 0))?
            .reshape((p * p, nh * nw, c))?;
        let mut t = seqs;
        for l in &b.layers {
            t = self.layer(l, &t)?;
        }
        let t = b.ln.forward(&t)?;
        let mut folded = t
            .reshape((p, p, nh, nw, c))?
            .permute((4, 2, 0, 3, 1))?
            .reshape((1, c, hh, ww))?;
        if (hh, ww) != (oh, ow) {
            folded = resize(&folded, (oh, ow))?;
        }
        let y = act(self.act, &b.projection.forward(&folded)?)?;
        act(self.act, &b.fusion.forward(&Tensor::cat(&[&x, &y], 1)?)?)
    }
}

impl super::Network for MobileVit {
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
                    x = self.inverted(m, &x)?;
                }
                for v in &self.vit {
                    x = self.vit_block(v, &x)?;
                }
                let x = act(self.act, &self.exp.forward(&x)?)?;
                pooled.push(x.mean(D::Minus1)?.mean(D::Minus1)?);
            }
            self.classifier.forward(&Tensor::cat(&pooled, 0)?)
        };
        run().map_err(ce("forward"))
    }
}

#[cfg(test)]
mod tests {
    use super::bilinear;

    #[test]
    fn bilinear_matches_torch() {
        // torch: F.interpolate(x, size=..., mode="bilinear", align_corners=False).
        assert_eq!(bilinear(1, 2), [1.0, 1.0]);
        assert_eq!(bilinear(2, 1), [0.5, 0.5]);
        // 2 → 4: sources -0.25 (clamped 0), 0.25, 0.75, 1.25 (the last pixel repeats).
        assert_eq!(bilinear(2, 4), [1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]);
    }
}
