//! LeViT: four stride-2 conv + batch-norm layers (Hardswish between), then stages of residual
//! attention (keys, queries and values from one batch-normed linear; a learned bias per head
//! and |Δrow|, |Δcol| offset) and residual Hardswish MLPs, joined by attention that subsamples
//! its queries; every linear carries a batch norm (folded at load). The classifier (a batch
//! norm and a linear; with a teacher, the mean of it and its distillation twin) reads the
//! token mean. The offsets follow the configured resolution (`image_size / patch_size`), so
//! other input sizes are refused. Every tensor is taken by name and shape.

use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;
use serde_json::Value;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::cnn::conv::{ConvBn, Pad};
use crate::cnn::model::{ce, list};
use crate::weights::Weights;

/// torch's `nn.BatchNorm*d` default.
const EPS: f64 = 1e-5;

fn hardswish(x: &Tensor) -> candle_core::Result<Tensor> {
    x * ((x + 3.0)?.clamp(0f32, 6f32)? / 6.0)?
}

/// `{p}.linear` (no bias) with `{p}.batch_norm` folded in: one linear with a bias.
fn linear_bn(w: &mut Weights, p: &str, out: usize, inp: usize) -> Result<Linear, SkillError> {
    let weight = w.take(&format!("{p}.linear.weight"), &[out, inp])?;
    let n = format!("{p}.batch_norm");
    let gamma = w.take(&format!("{n}.weight"), &[out])?;
    let beta = w.take(&format!("{n}.bias"), &[out])?;
    let mean = w.take(&format!("{n}.running_mean"), &[out])?;
    let var = w.take(&format!("{n}.running_var"), &[out])?;
    let run = || -> candle_core::Result<Linear> {
        let scale = gamma.div(&(var + EPS)?.sqrt()?)?;
        let shift = (beta - mean.mul(&scale)?)?;
        Ok(Linear::new(
            weight.broadcast_mul(&scale.unsqueeze(1)?)?,
            Some(shift),
        ))
    };
    run().map_err(ce("batch norm"))
}

/// The classifier: `{p}.batch_norm` over the inputs, then `{p}.linear` (with a bias), folded
/// into one linear.
fn bn_linear(w: &mut Weights, p: &str, out: usize, inp: usize) -> Result<Linear, SkillError> {
    let n = format!("{p}.batch_norm");
    let gamma = w.take(&format!("{n}.weight"), &[inp])?;
    let beta = w.take(&format!("{n}.bias"), &[inp])?;
    let mean = w.take(&format!("{n}.running_mean"), &[inp])?;
    let var = w.take(&format!("{n}.running_var"), &[inp])?;
    let weight = w.take(&format!("{p}.linear.weight"), &[out, inp])?;
    let bias = w.take(&format!("{p}.linear.bias"), &[out])?;
    let run = || -> candle_core::Result<Linear> {
        let scale = gamma.div(&(var + EPS)?.sqrt()?)?;
        let shift = (beta - mean.mul(&scale)?)?;
        // W·(x·scale + shift) + b = (W·diag(scale))·x + (W·shift + b)
        let folded_b = (weight.matmul(&shift.unsqueeze(1)?)?.squeeze(1)? + bias)?;
        Ok(Linear::new(
            weight.broadcast_mul(&scale.unsqueeze(0)?)?,
            Some(folded_b),
        ))
    };
    run().map_err(ce("classifier batch norm"))
}

/// The bias index of each (query, key) pair: offsets numbered in first-seen order, as
/// transformers builds `attention_bias_idxs` (`stride` 1: plain attention).
fn bias_index(res_in: usize, res_out: usize, stride: usize) -> (Vec<u32>, usize) {
    let mut seen: Vec<(usize, usize)> = Vec::new();
    let mut idx = Vec::with_capacity(res_out * res_out * res_in * res_in);
    for q in 0..res_out * res_out {
        let (qr, qc) = ((q / res_out) * stride, (q % res_out) * stride);
        for k in 0..res_in * res_in {
            let off = (qr.abs_diff(k / res_in), qc.abs_diff(k % res_in));
            let i = match seen.iter().position(|o| *o == off) {
                Some(i) => i,
                None => {
                    seen.push(off);
                    seen.len() - 1
                }
            };
            idx.push(i as u32);
        }
    }
    (idx, seen.len())
}

#[derive(Debug)]
struct Attn {
    heads: usize,
    key_dim: usize,
    ratio: usize,
    /// Queries, keys and values in one (plain attention), or keys/values and queries apart
    /// (subsampling).
    qkv: Linear,
    q: Option<Linear>,
    proj: Linear,
    /// `[heads, queries, keys]`.
    bias: Tensor,
    /// Subsampling: (input resolution, stride).
    subsample: Option<(usize, usize)>,
}

#[derive(Debug)]
enum Block {
    /// Residual attention or MLP (`up`, `down`), or the subsampling attention (no residual).
    Attn(Attn),
    Mlp(Linear, Linear),
    Subsample(Attn),
}

/// A loaded LeViT classifier.
#[derive(Debug)]
pub(crate) struct Levit {
    channels: usize,
    image: usize,
    stem: Vec<ConvBn>,
    blocks: Vec<Block>,
    heads: Vec<Linear>,
}

#[allow(clippy::too_many_arguments)]
fn attention(
    w: &mut Weights,
    p: &str,
    (inp, out): (usize, usize),
    (key_dim, heads, ratio): (usize, usize, usize),
    (res_in, res_out, stride): (usize, usize, usize),
    subsample: bool,
) -> Result<Attn, SkillError> {
    let (idx, n_off) = bias_index(res_in, res_out, stride);
    let table = w.take(&format!("{p}.attention_biases"), &[heads, n_off])?;
    let nq = res_out * res_out;
    let nk = res_in * res_in;
    let bias = Tensor::from_vec(idx, nq * nk, table.device())
        .and_then(|i| table.index_select(&i, 1))
        .and_then(|t| t.reshape((heads, nq, nk)))
        .map_err(ce("attention biases"))?;
    let proj_in = ratio * key_dim * heads;
    Ok(if subsample {
        Attn {
            heads,
            key_dim,
            ratio,
            qkv: linear_bn(
                w,
                &format!("{p}.keys_values"),
                (ratio + 1) * key_dim * heads,
                inp,
            )?,
            q: Some(linear_bn(w, &format!("{p}.queries"), key_dim * heads, inp)?),
            proj: linear_bn(w, &format!("{p}.projection"), out, proj_in)?,
            bias,
            subsample: Some((res_in, stride)),
        }
    } else {
        Attn {
            heads,
            key_dim,
            ratio,
            qkv: linear_bn(
                w,
                &format!("{p}.queries_keys_values"),
                (ratio + 2) * key_dim * heads,
                inp,
            )?,
            q: None,
            proj: linear_bn(w, &format!("{p}.projection"), out, proj_in)?,
            bias,
            subsample: None,
        }
    })
}

impl Attn {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = x.dim(0)?;
        let (h, kd, vd) = (self.heads, self.key_dim, self.ratio * self.key_dim);
        let per = self.qkv.forward(x)?.reshape((n, h, ()))?;
        let (q, k, v) = match (&self.q, self.subsample) {
            (Some(ql), Some((res, stride))) => {
                let k = per.narrow(2, 0, kd)?;
                let v = per.narrow(2, kd, vd)?;
                let keep: Vec<u32> = (0..res)
                    .step_by(stride)
                    .flat_map(|r| (0..res).step_by(stride).map(move |c| (r * res + c) as u32))
                    .collect();
                let m = keep.len();
                let sub = x.index_select(&Tensor::from_vec(keep, m, x.device())?, 0)?;
                (ql.forward(&sub)?.reshape((m, h, kd))?, k, v)
            }
            _ => (
                per.narrow(2, 0, kd)?,
                per.narrow(2, kd, kd)?,
                per.narrow(2, 2 * kd, vd)?,
            ),
        };
        let t = |a: Tensor| a.transpose(0, 1)?.contiguous();
        let (q, k, v) = (t(q)?, t(k)?, t(v)?);
        let scores = ((q.matmul(&k.t()?)? * (kd as f64).powf(-0.5))? + &self.bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let m = q.dim(1)?;
        let out = probs.matmul(&v)?.transpose(0, 1)?.reshape((m, h * vd))?;
        self.proj.forward(&hardswish(&out)?)
    }
}

fn down_ops(f: &Fields<'_>) -> Result<Vec<[usize; 5]>, SkillError> {
    let bad = || {
        f.err("down_ops", "expected [\"Subsample\", key_dim, heads, attention ratio, mlp ratio, stride] per stage join")
    };
    let Some(Value::Array(ops)) = f.get("down_ops") else {
        return Err(bad());
    };
    ops.iter()
        .filter(|op| op.as_array().is_some_and(|a| a.len() == 6))
        .map(|op| {
            let a = op.as_array().ok_or_else(bad)?;
            if a[0].as_str() != Some("Subsample") {
                return Err(bad());
            }
            let mut v = [0usize; 5];
            for (i, x) in a[1..].iter().enumerate() {
                v[i] = x.as_f64().filter(|n| *n >= 0.0).ok_or_else(bad)? as usize;
            }
            Ok(v)
        })
        .collect()
}

impl Levit {
    /// Read `config.json` (in `f`) and take the `LevitForImageClassification(WithTeacher)`
    /// weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let hidden = list(f, "hidden_sizes")?;
        let heads = list(f, "num_attention_heads")?;
        let depths = list(f, "depths")?;
        let key_dim = list(f, "key_dim")?;
        let mlp = list(f, "mlp_ratio")?;
        let ratio = list(f, "attention_ratio")?;
        let n = hidden.len();
        if [
            heads.len(),
            depths.len(),
            key_dim.len(),
            mlp.len(),
            ratio.len(),
        ]
        .iter()
        .any(|l| *l != n)
        {
            return Err(f.err(
                "hidden_sizes",
                "one entry per stage in every per-stage list",
            ));
        }
        let downs = down_ops(f)?;
        if downs.len() < n - 1 {
            return Err(f.err("down_ops", "one subsampling between every two stages"));
        }
        let (k, s, pad) = (
            f.positive("kernel_size")?,
            f.positive("stride")?,
            f.usize_opt("padding")?.unwrap_or(1),
        );
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let image = f.positive("image_size")?;
        let patch = f.positive("patch_size")?;
        let e = "levit.patch_embeddings";
        let h0 = hidden[0];
        let widths = [channels, h0 / 8, h0 / 4, h0 / 2, h0];
        let mut stem = Vec::with_capacity(4);
        for i in 0..4 {
            let p = format!("{e}.embedding_layer_{}", i + 1);
            stem.push(ConvBn::load_named(
                w,
                (&format!("{p}.convolution"), &format!("{p}.batch_norm")),
                (widths[i + 1], widths[i], k),
                (s, 1),
                if pad == k / 2 {
                    Pad::Symmetric
                } else {
                    Pad::Explicit([pad; 4])
                },
                EPS,
            )?);
        }
        let mut blocks = Vec::new();
        let mut res = image / patch;
        for st in 0..n {
            let c = hidden[st];
            let mut i = 0;
            let p = |i: usize| format!("levit.encoder.stages.{st}.layers.{i}");
            for _ in 0..depths[st] {
                blocks.push(Block::Attn(attention(
                    w,
                    &format!("{}.module", p(i)),
                    (c, c),
                    (key_dim[st], heads[st], ratio[st]),
                    (res, res, 1),
                    false,
                )?));
                i += 1;
                if mlp[st] > 0 {
                    let m = format!("{}.module", p(i));
                    blocks.push(Block::Mlp(
                        linear_bn(w, &format!("{m}.linear_up"), c * mlp[st], c)?,
                        linear_bn(w, &format!("{m}.linear_down"), c, c * mlp[st])?,
                    ));
                    i += 1;
                }
            }
            if st + 1 < n {
                let [kd, nh, ar, mr, stride] = downs[st];
                let out_res = (res - 1) / stride + 1;
                blocks.push(Block::Subsample(attention(
                    w,
                    &p(i),
                    (c, hidden[st + 1]),
                    (kd, nh, ar),
                    (res, out_res, stride),
                    true,
                )?));
                i += 1;
                res = out_res;
                if mr > 0 {
                    let c2 = hidden[st + 1];
                    let m = format!("{}.module", p(i));
                    blocks.push(Block::Mlp(
                        linear_bn(w, &format!("{m}.linear_up"), c2 * mr, c2)?,
                        linear_bn(w, &format!("{m}.linear_down"), c2, c2 * mr)?,
                    ));
                }
            }
        }
        let last = hidden[n - 1];
        let mut heads_out = vec![bn_linear(w, "classifier", labels, last)?];
        // LevitForImageClassificationWithTeacher: the mean of both heads.
        if w.has("classifier_distill.linear.weight") {
            heads_out.push(bn_linear(w, "classifier_distill", labels, last)?);
        }
        w.finish()?;
        Ok(Self {
            channels,
            image,
            stem,
            blocks,
            heads: heads_out,
        })
    }
}

impl crate::cnn::Network for Levit {
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
                for (j, c) in self.stem.iter().enumerate() {
                    x = c.forward(&x)?;
                    if j + 1 < self.stem.len() {
                        x = hardswish(&x)?;
                    }
                }
                let (_, c, h, w) = x.dims4()?;
                let mut t = x.reshape((c, h * w))?.t()?.contiguous()?;
                for blk in &self.blocks {
                    t = match blk {
                        Block::Attn(a) => {
                            if a.bias.dim(2)? != t.dim(0)? {
                                candle_core::bail!(
                                    "the attention biases cover {} positions, the image gives {} (use the configured image size)",
                                    a.bias.dim(2)?,
                                    t.dim(0)?
                                );
                            }
                            (&t + a.forward(&t)?)?
                        }
                        Block::Mlp(up, down) => {
                            (&t + down.forward(&hardswish(&up.forward(&t)?)?)?)?
                        }
                        Block::Subsample(a) => a.forward(&t)?,
                    };
                }
                pooled.push(t.mean_keepdim(0)?);
            }
            let x = Tensor::cat(&pooled, 0)?;
            let mut logits = self.heads[0].forward(&x)?;
            for h in &self.heads[1..] {
                logits = (logits + h.forward(&x)?)?;
            }
            logits / self.heads.len() as f64
        };
        run().map_err(ce("forward"))
    }
}

#[cfg(test)]
mod tests {
    use super::bias_index;

    #[test]
    fn bias_offsets_numbered_as_transformers() {
        // 2×2 grid: offsets (0,0) (0,1) (1,0) (1,1) in first-seen order.
        let (idx, n) = bias_index(2, 2, 1);
        assert_eq!(n, 4);
        assert_eq!(idx, [0, 1, 2, 3, 1, 0, 3, 2, 2, 3, 0, 1, 3, 2, 1, 0]);
        // Subsampling 3×3 → 2×2 with stride 2: queries at rows/cols 0 and 2.
        let (idx, _) = bias_index(3, 2, 2);
        assert_eq!(idx.len(), 4 * 9);
    }
}
