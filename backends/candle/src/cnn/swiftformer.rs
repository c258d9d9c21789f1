//! SwiftFormer: a two-convolution stem, then stages of convolutional encoders (depthwise 3×3,
//! batch norm, 1×1 GELU 1×1, layer scale) closed by one block with efficient additive
//! attention (a local depthwise representation, normalised queries and keys, one global query
//! — transformers' softmax over its single weight makes every token weigh 1 — and a
//! batch-norm 1×1 MLP), with a convolutional downsampling between stages; the classifier
//! averages its `head` and `dist_head` on the batch-normed spatial mean. Every tensor is
//! taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::Linear;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::batch_norm;
use super::model::{ce, list};
use crate::activation::{Act, act};
use crate::weights::{Weights, linear};

/// A convolution with its bias.
#[derive(Debug)]
struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
    pad: usize,
    groups: usize,
}

impl Conv {
    fn load(
        w: &mut Weights,
        p: &str,
        (out, inp, k): (usize, usize, usize),
        (stride, pad, groups): (usize, usize, usize),
    ) -> Result<Self, SkillError> {
        Ok(Self {
            w: w.take(&format!("{p}.weight"), &[out, inp / groups, k, k])?,
            b: w.take(&format!("{p}.bias"), &[out])?
                .reshape((1, out, 1, 1))
                .map_err(ce("bias"))?,
            stride,
            pad,
            groups,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.w, self.pad, self.stride, 1, self.groups)?
            .broadcast_add(&self.b)
    }
}

/// A folded batch norm (scale, shift).
type Bn = (Tensor, Tensor);

fn bn(x: &Tensor, (scale, shift): &Bn) -> candle_core::Result<Tensor> {
    x.broadcast_mul(scale)?.broadcast_add(shift)
}

/// The convolutional encoder (and the attention block's local representation):
/// `x + s · pw2(gelu(pw1(bn(dw(x)))))`.
#[derive(Debug)]
struct ConvEncoder {
    dw: Conv,
    norm: Bn,
    pw1: Conv,
    pw2: Conv,
    scale: Tensor,
}

impl ConvEncoder {
    fn load(
        w: &mut Weights,
        p: &str,
        dim: usize,
        hidden: usize,
        eps: f64,
    ) -> Result<Self, SkillError> {
        Ok(Self {
            dw: Conv::load(
                w,
                &format!("{p}.depth_wise_conv"),
                (dim, dim, 3),
                (1, 1, dim),
            )?,
            norm: batch_norm(w, &format!("{p}.norm"), dim, eps)?,
            pw1: Conv::load(
                w,
                &format!("{p}.point_wise_conv1"),
                (hidden, dim, 1),
                (1, 0, 1),
            )?,
            pw2: Conv::load(
                w,
                &format!("{p}.point_wise_conv2"),
                (dim, hidden, 1),
                (1, 0, 1),
            )?,
            scale: w.take(&format!("{p}.layer_scale"), &[dim, 1, 1])?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = bn(&self.dw.forward(x)?, &self.norm)?;
        let h = self.pw2.forward(&self.pw1.forward(&h)?.gelu_erf()?)?;
        x + h.broadcast_mul(&self.scale)?
    }
}

/// The stage-closing block: local representation, additive attention, MLP.
#[derive(Debug)]
struct AttnBlock {
    local: ConvEncoder,
    q: Linear,
    k: Linear,
    proj: Linear,
    fin: Linear,
    mlp_norm: Bn,
    fc1: Conv,
    fc2: Conv,
    /// `layer_scale_1`, `layer_scale_2` (`[c, 1, 1]`), when `use_layer_scale`.
    scales: Option<(Tensor, Tensor)>,
}

#[derive(Debug)]
enum Block {
    Conv(ConvEncoder),
    Attn(Box<AttnBlock>),
    /// Downsampling between stages: a strided convolution and its batch norm.
    Down(Conv, Bn),
}

/// A loaded SwiftFormer classifier.
#[derive(Debug)]
pub(crate) struct SwiftFormer {
    channels: usize,
    image: usize,
    act: Act,
    stem: [(Conv, Bn); 2],
    blocks: Vec<Block>,
    norm: Bn,
    head: Linear,
    dist_head: Linear,
}

impl SwiftFormer {
    /// Read `config.json` (in `f`) and take the `SwiftFormerForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let eps = f.f64("batch_norm_eps")?;
        let dims = list(f, "embed_dims")?;
        let depths = list(f, "depths")?;
        let downs: Vec<bool> = match f.get("downsamples") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(serde_json::Value::as_bool)
                .collect::<Option<_>>()
                .ok_or_else(|| f.err("downsamples", "expected booleans"))?,
            _ => return Err(f.err("downsamples", "expected a list of booleans")),
        };
        if depths.len() != dims.len() || downs.len() < dims.len() {
            return Err(f.err(
                "depths",
                "one depth and one downsample flag per embedding width",
            ));
        }
        let ratio = f.positive("mlp_ratio")?;
        let act_name = f.str_opt("hidden_act")?.unwrap_or("gelu");
        let act = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let layer_scale = f.bool_or("use_layer_scale", true)?;
        let (dk, ds, dp) = (
            f.positive("down_patch_size")?,
            f.positive("down_stride")?,
            f.usize_opt("down_pad")?.unwrap_or(1),
        );
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let p = "swiftformer";
        let pe = format!("{p}.patch_embed.patch_embedding");
        let half = dims[0] / 2;
        let stem = [
            (
                Conv::load(w, &format!("{pe}.0"), (half, channels, 3), (2, 1, 1))?,
                batch_norm(w, &format!("{pe}.1"), half, eps)?,
            ),
            (
                Conv::load(w, &format!("{pe}.3"), (dims[0], half, 3), (2, 1, 1))?,
                batch_norm(w, &format!("{pe}.4"), dims[0], eps)?,
            ),
        ];
        let mut blocks = Vec::new();
        let mut net = 0;
        for (i, (&dim, &depth)) in dims.iter().zip(&depths).enumerate() {
            let hidden = dim * ratio;
            for j in 0..depth {
                let b = format!("{p}.encoder.network.{net}.blocks.{j}");
                if j + 1 < depth {
                    blocks.push(Block::Conv(ConvEncoder::load(w, &b, dim, hidden, eps)?));
                    continue;
                }
                let a = format!("{b}.attn");
                // `w_g` weighs the tokens through a softmax over one value (each weight is 1):
                // it cannot change the output, and is checked for shape only.
                w.take(&format!("{a}.w_g"), &[dim, 1])?;
                let scales = if layer_scale {
                    Some((
                        w.take(&format!("{b}.layer_scale_1"), &[dim, 1, 1])?,
                        w.take(&format!("{b}.layer_scale_2"), &[dim, 1, 1])?,
                    ))
                } else {
                    None
                };
                blocks.push(Block::Attn(Box::new(AttnBlock {
                    local: ConvEncoder::load(
                        w,
                        &format!("{b}.local_representation"),
                        dim,
                        dim,
                        eps,
                    )?,
                    q: linear(w, &format!("{a}.to_query"), dim, dim, true)?,
                    k: linear(w, &format!("{a}.to_key"), dim, dim, true)?,
                    proj: linear(w, &format!("{a}.proj"), dim, dim, true)?,
                    fin: linear(w, &format!("{a}.final"), dim, dim, true)?,
                    mlp_norm: batch_norm(w, &format!("{b}.linear.norm1"), dim, eps)?,
                    fc1: Conv::load(w, &format!("{b}.linear.fc1"), (hidden, dim, 1), (1, 0, 1))?,
                    fc2: Conv::load(w, &format!("{b}.linear.fc2"), (dim, hidden, 1), (1, 0, 1))?,
                    scales,
                })));
            }
            net += 1;
            if i + 1 < dims.len() && (downs[i] || dims[i] != dims[i + 1]) {
                let d = format!("{p}.encoder.network.{net}");
                blocks.push(Block::Down(
                    Conv::load(w, &format!("{d}.proj"), (dims[i + 1], dim, dk), (ds, dp, 1))?,
                    batch_norm(w, &format!("{d}.norm"), dims[i + 1], eps)?,
                ));
                net += 1;
            }
        }
        let last = *dims.last().unwrap_or(&0);
        let norm = batch_norm(w, "norm", last, eps)?;
        let head = linear(w, "head", labels, last, true)?;
        let dist_head = linear(w, "dist_head", labels, last, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.usize_opt("image_size")?.unwrap_or(224),
            act,
            stem,
            blocks,
            norm,
            head,
            dist_head,
        })
    }

    fn attn_block(&self, b: &AttnBlock, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = b.local.forward(x)?;
        let (_, c, h, w) = x.dims4()?;
        let t = x.squeeze(0)?.reshape((c, h * w))?.t()?;
        let unit = |v: Tensor| -> candle_core::Result<Tensor> {
            v.broadcast_div(&v.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?)
        };
        let q = unit(b.q.forward(&t)?)?;
        let k = unit(b.k.forward(&t)?)?;
        // transformers: softmax over the last dimension of `[tokens, 1]` weights, i.e. 1 each.
        let global = q.sum_keepdim(0)?;
        let out = b
            .fin
            .forward(&(b.proj.forward(&k.broadcast_mul(&global)?)? + q)?)?;
        let res = out.t()?.reshape((1, c, h, w))?;
        let mlp = |x: &Tensor| -> candle_core::Result<Tensor> {
            let h = b.fc1.forward(&bn(x, &b.mlp_norm)?)?;
            b.fc2.forward(&act(self.act, &h)?)
        };
        match &b.scales {
            Some((s1, s2)) => {
                let x = (x + res.broadcast_mul(s1)?)?;
                let m = mlp(&x)?.broadcast_mul(s2)?;
                x + m
            }
            None => {
                let x = (x + res)?;
                let m = mlp(&x)?;
                x + m
            }
        }
    }
}

impl super::Network for SwiftFormer {
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
                let mut x = pixels.narrow(0, i, 1)?;
                for (conv, norm) in &self.stem {
                    x = bn(&conv.forward(&x)?, norm)?.relu()?;
                }
                for blk in &self.blocks {
                    x = match blk {
                        Block::Conv(c) => c.forward(&x)?,
                        Block::Attn(a) => self.attn_block(a, &x)?,
                        Block::Down(conv, norm) => bn(&conv.forward(&x)?, norm)?,
                    };
                }
                pooled.push(bn(&x, &self.norm)?.mean(D::Minus1)?.mean(D::Minus1)?);
            }
            let x = Tensor::cat(&pooled, 0)?;
            (self.head.forward(&x)? + self.dist_head.forward(&x)?)? / 2.0
        };
        run().map_err(ce("forward"))
    }
}
