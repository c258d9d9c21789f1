//! Pyramid vision transformers: PVT v2 and SegFormer's Mix Transformer (the same network
//! under two names), and PVT v1. Per stage a strided patch convolution with a LayerNorm,
//! then pre-LN blocks whose attention reads keys and values from a spatially reduced grid
//! (a stride-`sr` convolution and a LayerNorm). v2 / SegFormer: overlapping patches, a
//! depthwise 3×3 convolution inside the MLP, a LayerNorm closing each stage, the classifier
//! on the token mean. v1: learned positions per stage, a `[CLS]` token in the last stage, a
//! final LayerNorm, the classifier on `[CLS]`. Every tensor is taken by name and shape.

use candle_core::{DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::cnn::model::{ce, list};
use crate::weights::{Weights, layer_norm, linear};

/// A convolution with its bias, `[out, in / groups, k, k]`.
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

#[derive(Debug)]
struct Block {
    heads: usize,
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// The spatial reduction of keys and values: its convolution and LayerNorm.
    sr: Option<(Conv, LayerNorm)>,
    ln2: LayerNorm,
    fc1: Linear,
    /// v2 / SegFormer: the MLP's depthwise convolution.
    dw: Option<Conv>,
    fc2: Linear,
}

#[derive(Debug)]
struct Stage {
    embed: Conv,
    embed_ln: LayerNorm,
    /// v1: the stage's positions `[tokens, c]` (its `[CLS]` first when it has one).
    positions: Option<Tensor>,
    /// v1, last stage: the `[CLS]` token `[1, c]`.
    cls: Option<Tensor>,
    blocks: Vec<Block>,
    /// v2 / SegFormer: the stage's closing LayerNorm.
    ln: Option<LayerNorm>,
}

/// A loaded PVT v2 / SegFormer classifier.
#[derive(Debug)]
pub(crate) struct Pvt {
    channels: usize,
    image: usize,
    act: Act,
    stages: Vec<Stage>,
    /// v1: the LayerNorm after the last stage (the classifier then reads `[CLS]`).
    final_ln: Option<LayerNorm>,
    classifier: Linear,
}

/// A `[h·w, c]` token grid as `[1, c, h, w]`.
fn to_grid(x: &Tensor, h: usize, w: usize) -> candle_core::Result<Tensor> {
    let c = x.dim(1)?;
    x.t()?.reshape((1, c, h, w))
}

/// A `[1, c, h, w]` grid as `[h·w, c]` tokens.
fn to_tokens(g: &Tensor) -> candle_core::Result<Tensor> {
    let (_, c, h, w) = g.dims4()?;
    g.reshape((c, h * w))?.t()?.contiguous()
}

/// `image_size`: a size, or a square `[h, w]` (PVT v2 saves a pair); 224 when absent.
fn image_size(f: &Fields<'_>) -> Result<usize, SkillError> {
    match f.get("image_size") {
        None | Some(serde_json::Value::Null) => Ok(224),
        Some(serde_json::Value::Array(a)) => match a.as_slice() {
            [h, w] if h == w && h.as_u64().is_some_and(|n| n > 0) => {
                Ok(h.as_u64().unwrap_or(224) as usize)
            }
            _ => Err(f.err("image_size", "only square sizes are implemented")),
        },
        Some(_) => f.positive("image_size"),
    }
}

impl Pvt {
    /// Read `config.json` (in `f`) of `model_type` and take its `*ForImageClassification`
    /// weights with `labels` classes.
    pub(crate) fn load(
        model_type: &str,
        f: &Fields<'_>,
        w: &mut Weights,
        labels: usize,
    ) -> Result<Self, SkillError> {
        let (segformer, v1) = match model_type {
            "segformer" => (true, false),
            "pvt_v2" => (false, false),
            "pvt" => (false, true),
            other => {
                return Err(f.err(
                    "model_type",
                    format!("`{other}` is not a pyramid vision transformer the candle backend implements"),
                ));
            }
        };
        w.convert(DType::F32)?;
        // SegFormer's LayerNorms keep torch's default ε; PVT v2's read `layer_norm_eps`.
        let eps = if segformer {
            1e-5
        } else {
            f.f64("layer_norm_eps")?
        };
        if model_type == "pvt_v2" && f.bool_or("linear_attention", false)? {
            return Err(f.err(
                "linear_attention",
                "`true` (pooled keys and values) is not implemented",
            ));
        }
        let qkv_bias = segformer || f.bool_or("qkv_bias", true)?;
        let n = f.positive("num_encoder_blocks")?;
        let hidden = list(f, "hidden_sizes")?;
        let depths = list(f, "depths")?;
        let heads = list(f, "num_attention_heads")?;
        let srs = list(
            f,
            if v1 {
                "sequence_reduction_ratios"
            } else {
                "sr_ratios"
            },
        )?;
        let patches = list(f, "patch_sizes")?;
        let strides = list(f, "strides")?;
        let ratios: Vec<f64> = match f.get("mlp_ratios") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| v.as_f64().filter(|r| *r > 0.0))
                .collect::<Option<_>>()
                .ok_or_else(|| f.err("mlp_ratios", "expected positive numbers"))?,
            _ => return Err(f.err("mlp_ratios", "expected a list of positive numbers")),
        };
        for (field, len) in [
            ("hidden_sizes", hidden.len()),
            ("depths", depths.len()),
            ("num_attention_heads", heads.len()),
            ("sr_ratios", srs.len()),
            ("patch_sizes", patches.len()),
            ("strides", strides.len()),
            ("mlp_ratios", ratios.len()),
        ] {
            if len < n {
                return Err(f.err(field, format!("{len} entries for {n} stages")));
            }
        }
        let act_name = f.str_opt("hidden_act")?.unwrap_or("gelu");
        let act = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let p = model_type;
        let image = image_size(f)?;
        let mut stages = Vec::with_capacity(n);
        let mut inp = channels;
        for s in 0..n {
            let c = hidden[s];
            if !c.is_multiple_of(heads[s]) {
                return Err(f.err(
                    "num_attention_heads",
                    format!("{} heads do not divide stage {s}'s width {c}", heads[s]),
                ));
            }
            let (emb, blk, stage_ln) = if segformer || v1 {
                (
                    format!("{p}.encoder.patch_embeddings.{s}"),
                    format!("{p}.encoder.block.{s}"),
                    format!("{p}.encoder.layer_norm.{s}"),
                )
            } else {
                (
                    format!("{p}.encoder.layers.{s}.patch_embedding"),
                    format!("{p}.encoder.layers.{s}.blocks"),
                    format!("{p}.encoder.layers.{s}.layer_norm"),
                )
            };
            let k = patches[s];
            let last = s + 1 == n;
            let (embed, positions, cls) = if v1 {
                // transformers: kernel `strides[s]`, stride `patch_sizes[s]`; stage s > 0 sees an
                // image of `image_size / 2^(s+1)`.
                let side = if s == 0 { image } else { image >> (s + 1) } / k;
                let conv = Conv::load(
                    w,
                    &format!("{emb}.projection"),
                    (c, inp, strides[s]),
                    (k, 0, 1),
                )?;
                let rows = side * side + usize::from(last);
                let pos = w
                    .take(&format!("{emb}.position_embeddings"), &[1, rows, c])?
                    .squeeze(0)
                    .map_err(ce("positions"))?;
                let cls = if last {
                    Some(
                        w.take(&format!("{emb}.cls_token"), &[1, 1, c])?
                            .squeeze(0)
                            .map_err(ce("cls token"))?,
                    )
                } else {
                    None
                };
                if last && srs[s] > 1 {
                    return Err(f.err(
                        "sequence_reduction_ratios",
                        "the last stage (with [CLS]) cannot reduce its keys and values",
                    ));
                }
                (conv, Some(pos), cls)
            } else {
                (
                    Conv::load(
                        w,
                        &format!("{emb}.proj"),
                        (c, inp, k),
                        (strides[s], k / 2, 1),
                    )?,
                    None,
                    None,
                )
            };
            let embed_ln = layer_norm(w, &format!("{emb}.layer_norm"), c, eps)?;
            let mid = (c as f64 * ratios[s]) as usize;
            let mut blocks = Vec::with_capacity(depths[s]);
            for j in 0..depths[s] {
                let b = format!("{blk}.{j}");
                let (a, o, sr_name) = if segformer || v1 {
                    (
                        format!("{b}.attention.self"),
                        format!("{b}.attention.output.dense"),
                        if v1 { "sequence_reduction" } else { "sr" },
                    )
                } else {
                    (
                        format!("{b}.attention"),
                        format!("{b}.attention.proj"),
                        "spatial_reduction",
                    )
                };
                let sr = if srs[s] > 1 {
                    Some((
                        Conv::load(w, &format!("{a}.{sr_name}"), (c, c, srs[s]), (srs[s], 0, 1))?,
                        layer_norm(w, &format!("{a}.layer_norm"), c, eps)?,
                    ))
                } else {
                    None
                };
                blocks.push(Block {
                    heads: heads[s],
                    ln1: layer_norm(w, &format!("{b}.layer_norm_1"), c, eps)?,
                    q: linear(w, &format!("{a}.query"), c, c, qkv_bias)?,
                    k: linear(w, &format!("{a}.key"), c, c, qkv_bias)?,
                    v: linear(w, &format!("{a}.value"), c, c, qkv_bias)?,
                    o: linear(w, &o, c, c, true)?,
                    sr,
                    ln2: layer_norm(w, &format!("{b}.layer_norm_2"), c, eps)?,
                    fc1: linear(w, &format!("{b}.mlp.dense1"), mid, c, true)?,
                    dw: if v1 {
                        None
                    } else {
                        Some(Conv::load(
                            w,
                            &format!("{b}.mlp.dwconv.dwconv"),
                            (mid, mid, 3),
                            (1, 1, mid),
                        )?)
                    },
                    fc2: linear(w, &format!("{b}.mlp.dense2"), c, mid, true)?,
                });
            }
            stages.push(Stage {
                embed,
                embed_ln,
                positions,
                cls,
                blocks,
                ln: if v1 {
                    None
                } else {
                    Some(layer_norm(w, &stage_ln, c, eps)?)
                },
            });
            inp = c;
        }
        let final_ln = if v1 {
            Some(layer_norm(w, &format!("{p}.encoder.layer_norm"), inp, eps)?)
        } else {
            None
        };
        let classifier = linear(w, "classifier", labels, inp, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image,
            act,
            stages,
            final_ln,
            classifier,
        })
    }

    /// One block over `x` `[h·w, c]` on an `h`×`w` grid.
    fn block(&self, b: &Block, x: &Tensor, (h, w): (usize, usize)) -> candle_core::Result<Tensor> {
        let (n, c) = x.dims2()?;
        let hd = c / b.heads;
        let y = b.ln1.forward(x)?;
        let kv = match &b.sr {
            Some((conv, ln)) => ln.forward(&to_tokens(&conv.forward(&to_grid(&y, h, w)?)?)?)?,
            None => y.clone(),
        };
        let m = kv.dim(0)?;
        let split =
            |t: Tensor, len: usize| t.reshape((len, b.heads, hd))?.transpose(0, 1)?.contiguous();
        let q = (split(b.q.forward(&y)?, n)? * (hd as f64).powf(-0.5))?;
        let k = split(b.k.forward(&kv)?, m)?;
        let v = split(b.v.forward(&kv)?, m)?;
        let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let attn = probs.matmul(&v)?.transpose(0, 1)?.reshape((n, c))?;
        let x = (x + b.o.forward(&attn)?)?;
        let mut hmid = b.fc1.forward(&b.ln2.forward(&x)?)?;
        if let Some(dw) = &b.dw {
            hmid = to_tokens(&dw.forward(&to_grid(&hmid, h, w)?)?)?;
        }
        x + b.fc2.forward(&act(self.act, &hmid)?)?
    }

    /// The pooled features of one image `[1, c, H, W]`.
    fn features(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let mut g = pixels.clone();
        let mut x = None;
        for st in &self.stages {
            let e = st.embed.forward(&g)?;
            let (_, _, h, w) = e.dims4()?;
            let mut t = st.embed_ln.forward(&to_tokens(&e)?)?;
            if let Some(cls) = &st.cls {
                t = Tensor::cat(&[cls, &t], 0)?;
            }
            if let Some(pos) = &st.positions {
                if pos.dim(0)? != t.dim(0)? {
                    candle_core::bail!(
                        "the positions cover {} tokens, the image gives {} (use the preprocessor's size)",
                        pos.dim(0)?,
                        t.dim(0)?
                    );
                }
                t = (t + pos)?;
            }
            for b in &st.blocks {
                t = self.block(b, &t, (h, w))?;
            }
            if let Some(ln) = &st.ln {
                t = ln.forward(&t)?;
            }
            if st.cls.is_none() {
                g = to_grid(&t, h, w)?;
            }
            x = Some(t);
        }
        match (x, &self.final_ln) {
            (Some(t), Some(ln)) => ln.forward(&t)?.narrow(0, 0, 1),
            (Some(t), None) => t.mean_keepdim(0),
            (None, _) => candle_core::bail!("no stages"),
        }
    }
}

impl crate::cnn::Network for Pvt {
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
