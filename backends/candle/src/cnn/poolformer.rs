//! PoolFormer (MetaFormer with pooling as the token mixer): per stage a strided patch
//! convolution, then blocks of `x + s₁·(avgpool(gn(x)) − gn(x))` and `x + s₂·mlp(gn(x))`
//! (one-group GroupNorms, 1×1-convolution MLPs, optional layer scales); the classifier reads
//! the spatial mean of a final GroupNorm. Every tensor is taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{GroupNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::model::{ce, list};
use crate::activation::{Act, act};
use crate::weights::{Weights, linear};

/// torch's `nn.GroupNorm` default.
const EPS: f64 = 1e-5;

/// A convolution with its bias.
#[derive(Debug)]
struct Conv {
    w: Tensor,
    b: Tensor,
    stride: usize,
    pad: usize,
}

impl Conv {
    fn load(
        w: &mut Weights,
        p: &str,
        (out, inp, k): (usize, usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Self, SkillError> {
        Ok(Self {
            w: w.take(&format!("{p}.weight"), &[out, inp, k, k])?,
            b: w.take(&format!("{p}.bias"), &[out])?
                .reshape((1, out, 1, 1))
                .map_err(ce("bias"))?,
            stride,
            pad,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.conv2d(&self.w, self.pad, self.stride, 1, 1)?
            .broadcast_add(&self.b)
    }
}

fn group_norm(w: &mut Weights, p: &str, c: usize) -> Result<GroupNorm, SkillError> {
    GroupNorm::new(
        w.take(&format!("{p}.weight"), &[c])?,
        w.take(&format!("{p}.bias"), &[c])?,
        c,
        1,
        EPS,
    )
    .map_err(ce("group norm"))
}

#[derive(Debug)]
struct Block {
    before: GroupNorm,
    after: GroupNorm,
    conv1: Conv,
    conv2: Conv,
    /// `layer_scale_1`, `layer_scale_2` as `[1, c, 1, 1]`.
    scales: Option<(Tensor, Tensor)>,
}

/// A loaded PoolFormer classifier.
#[derive(Debug)]
pub(crate) struct PoolFormer {
    channels: usize,
    image: usize,
    pool: usize,
    act: Act,
    stages: Vec<(Conv, Vec<Block>)>,
    norm: GroupNorm,
    classifier: Linear,
}

impl PoolFormer {
    /// Read `config.json` (in `f`) and take the `PoolFormerForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let hidden = list(f, "hidden_sizes")?;
        let depths = list(f, "depths")?;
        let patches = list(f, "patch_sizes")?;
        let strides = list(f, "strides")?;
        let pads: Vec<usize> = match f.get("padding") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64().map(|n| n as usize).ok_or_else(|| {
                        f.err("padding", format!("expected integers ≥ 0, found {v}"))
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(f.err("padding", "expected a list of integers ≥ 0")),
        };
        let n = f.positive("num_encoder_blocks")?;
        for (field, len) in [
            ("hidden_sizes", hidden.len()),
            ("depths", depths.len()),
            ("patch_sizes", patches.len()),
            ("strides", strides.len()),
            ("padding", pads.len()),
        ] {
            if len < n {
                return Err(f.err(
                    field,
                    format!("{len} entries for {n} stages (`num_encoder_blocks`)"),
                ));
            }
        }
        let pool = f.positive("pool_size")?;
        if pool % 2 == 0 {
            return Err(f.err(
                "pool_size",
                format!("{pool}: even pools are not implemented"),
            ));
        }
        let ratio = f.f64("mlp_ratio")?;
        let act_name = f.str_opt("hidden_act")?.unwrap_or("gelu");
        let act = Act::from_hf(act_name)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let layer_scale = f.bool_or("use_layer_scale", true)?;
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let mut stages = Vec::with_capacity(n);
        let mut inp = channels;
        for i in 0..n {
            let c = hidden[i];
            let embed = Conv::load(
                w,
                &format!("poolformer.encoder.patch_embeddings.{i}.projection"),
                (c, inp, patches[i]),
                strides[i],
                pads[i],
            )?;
            // transformers: int(hidden * mlp_ratio).
            let mid = (c as f64 * ratio) as usize;
            let mut blocks = Vec::with_capacity(depths[i]);
            for j in 0..depths[i] {
                let b = format!("poolformer.encoder.block.{i}.{j}");
                let scales = if layer_scale {
                    let s = |w: &mut Weights, k: u8| -> Result<Tensor, SkillError> {
                        w.take(&format!("{b}.layer_scale_{k}"), &[c])?
                            .reshape((1, c, 1, 1))
                            .map_err(ce("layer scale"))
                    };
                    Some((s(w, 1)?, s(w, 2)?))
                } else {
                    None
                };
                blocks.push(Block {
                    before: group_norm(w, &format!("{b}.before_norm"), c)?,
                    after: group_norm(w, &format!("{b}.after_norm"), c)?,
                    conv1: Conv::load(w, &format!("{b}.output.conv1"), (mid, c, 1), 1, 0)?,
                    conv2: Conv::load(w, &format!("{b}.output.conv2"), (c, mid, 1), 1, 0)?,
                    scales,
                });
            }
            stages.push((embed, blocks));
            inp = c;
        }
        let norm = group_norm(w, "norm", inp)?;
        let classifier = linear(w, "classifier", labels, inp, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.usize_opt("image_size")?.unwrap_or(224),
            pool,
            act,
            stages,
            norm,
            classifier,
        })
    }

    /// `AvgPool2d(pool, stride 1, padding pool/2, count_include_pad=False)(x) − x`.
    fn mix(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (k, p) = (self.pool, self.pool / 2);
        let (_, _, h, w) = x.dims4()?;
        let pad = |t: &Tensor| t.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p);
        let sums = (pad(x)?.avg_pool2d_with_stride(k, 1)? * (k * k) as f64)?;
        let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
        let counts = (pad(&ones)?.avg_pool2d_with_stride(k, 1)? * (k * k) as f64)?;
        sums.broadcast_div(&counts)? - x
    }
}

impl super::Network for PoolFormer {
    fn channels(&self) -> usize {
        self.channels
    }

    fn image_size(&self) -> usize {
        self.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let mut x = pixels.clone();
            for (embed, blocks) in &self.stages {
                x = embed.forward(&x)?;
                for b in blocks {
                    let mixed = self.mix(&b.before.forward(&x)?)?;
                    let mixed = match &b.scales {
                        Some((s1, _)) => mixed.broadcast_mul(s1)?,
                        None => mixed,
                    };
                    x = (x + mixed)?;
                    let h = b.conv1.forward(&b.after.forward(&x)?)?;
                    let h = b.conv2.forward(&act(self.act, &h)?)?;
                    let h = match &b.scales {
                        Some((_, s2)) => h.broadcast_mul(s2)?,
                        None => h,
                    };
                    x = (x + h)?;
                }
            }
            let pooled = self.norm.forward(&x)?.mean(D::Minus1)?.mean(D::Minus1)?;
            self.classifier.forward(&pooled)
        };
        run().map_err(ce("forward"))
    }
}
