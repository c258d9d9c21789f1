//! CvT (Convolutional vision Transformer): per stage a strided convolutional token embedding
//! with a LayerNorm, then pre-LN blocks whose queries, keys and values come from depthwise
//! convolutions + batch norms of the token grid (keys and values strided; a `[CLS]` token, in
//! the stages that have one, passes the convolutions untouched) — with transformers' score
//! scale `embed_dim^-0.5` over the whole width — and a GELU MLP; the classifier reads the
//! LayerNormed `[CLS]` (or the token mean without one). Every tensor is taken by name and
//! shape.

use candle_core::{DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde_json::Value;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::cnn::conv::batch_norm;
use crate::cnn::model::{ce, list};
use crate::weights::{Weights, layer_norm, linear};

/// torch's `nn.LayerNorm` default, which CvT keeps.
const EPS: f64 = 1e-5;

/// A depthwise convolution (no bias) with its folded batch norm.
#[derive(Debug)]
struct DwBn {
    w: Tensor,
    stride: usize,
    pad: usize,
    c: usize,
    scale: Tensor,
    shift: Tensor,
}

impl DwBn {
    fn forward(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        g.conv2d(&self.w, self.pad, self.stride, 1, self.c)?
            .broadcast_mul(&self.scale)?
            .broadcast_add(&self.shift)
    }
}

#[derive(Debug)]
struct Layer {
    ln_before: LayerNorm,
    conv_q: DwBn,
    conv_k: DwBn,
    conv_v: DwBn,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln_after: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Debug)]
struct Stage {
    embed_w: Tensor,
    embed_b: Tensor,
    embed_stride: usize,
    embed_pad: usize,
    embed_ln: LayerNorm,
    cls: Option<Tensor>,
    heads: usize,
    layers: Vec<Layer>,
}

/// A loaded CvT classifier.
#[derive(Debug)]
pub(crate) struct Cvt {
    channels: usize,
    image: usize,
    stages: Vec<Stage>,
    ln: LayerNorm,
    classifier: Linear,
}

fn bools(f: &Fields<'_>, field: &str) -> Result<Vec<bool>, SkillError> {
    match f.get(field) {
        Some(Value::Array(a)) => a
            .iter()
            .map(Value::as_bool)
            .collect::<Option<_>>()
            .ok_or_else(|| f.err(field, "expected booleans")),
        _ => Err(f.err(field, "expected a list of booleans")),
    }
}

fn floats(f: &Fields<'_>, field: &str) -> Result<Vec<f64>, SkillError> {
    match f.get(field) {
        Some(Value::Array(a)) => a
            .iter()
            .map(Value::as_f64)
            .collect::<Option<_>>()
            .ok_or_else(|| f.err(field, "expected numbers")),
        _ => Err(f.err(field, "expected a list of numbers")),
    }
}

/// A `[tokens, c]` grid as `[1, c, h, w]`.
fn to_grid(x: &Tensor, h: usize, w: usize) -> candle_core::Result<Tensor> {
    let c = x.dim(1)?;
    x.t()?.reshape((1, c, h, w))
}

/// A `[1, c, h, w]` grid as `[h·w, c]` tokens.
fn to_tokens(g: &Tensor) -> candle_core::Result<Tensor> {
    let (_, c, h, w) = g.dims4()?;
    g.reshape((c, h * w))?.t()?.contiguous()
}

impl Cvt {
    /// Read `config.json` (in `f`) and take the `CvtForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let dims = list(f, "embed_dim")?;
        let n = dims.len();
        let depth = list(f, "depth")?;
        let heads = list(f, "num_heads")?;
        let patches = list(f, "patch_sizes")?;
        let pstride = list(f, "patch_stride")?;
        let ppad: Vec<usize> = floats(f, "patch_padding")?
            .into_iter()
            .map(|v| v as usize)
            .collect();
        let mlp = floats(f, "mlp_ratio")?;
        let qkv_bias = bools(f, "qkv_bias")?;
        let cls = bools(f, "cls_token")?;
        let kqkv = list(f, "kernel_qkv")?;
        let pad_kv: Vec<usize> = floats(f, "padding_kv")?
            .into_iter()
            .map(|v| v as usize)
            .collect();
        let pad_q: Vec<usize> = floats(f, "padding_q")?
            .into_iter()
            .map(|v| v as usize)
            .collect();
        let stride_kv = list(f, "stride_kv")?;
        let stride_q = list(f, "stride_q")?;
        for (field, len) in [
            ("depth", depth.len()),
            ("num_heads", heads.len()),
            ("patch_sizes", patches.len()),
            ("patch_stride", pstride.len()),
            ("patch_padding", ppad.len()),
            ("mlp_ratio", mlp.len()),
            ("qkv_bias", qkv_bias.len()),
            ("cls_token", cls.len()),
            ("kernel_qkv", kqkv.len()),
            ("padding_kv", pad_kv.len()),
            ("padding_q", pad_q.len()),
            ("stride_kv", stride_kv.len()),
            ("stride_q", stride_q.len()),
        ] {
            if len < n {
                return Err(f.err(field, format!("{len} entries for {n} stages (`embed_dim`)")));
            }
        }
        if let Some(Value::Array(m)) = f.get("qkv_projection_method")
            && m.iter().any(|v| v.as_str() != Some("dw_bn"))
        {
            return Err(f.err("qkv_projection_method", "only `dw_bn` is implemented"));
        }
        if stride_q.iter().any(|s| *s != 1) {
            return Err(f.err("stride_q", "strided queries are not implemented"));
        }
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let mut stages = Vec::with_capacity(n);
        let mut inp = channels;
        for s in 0..n {
            let c = dims[s];
            if !c.is_multiple_of(heads[s]) {
                return Err(f.err("num_heads", format!("{} heads do not divide {c}", heads[s])));
            }
            let p = format!("cvt.encoder.stages.{s}");
            let e = format!("{p}.embedding.convolution_embeddings");
            let k = patches[s];
            let embed_w = w.take(&format!("{e}.projection.weight"), &[c, inp, k, k])?;
            let embed_b = w
                .take(&format!("{e}.projection.bias"), &[c])?
                .reshape((1, c, 1, 1))
                .map_err(ce("bias"))?;
            let embed_ln = layer_norm(w, &format!("{e}.normalization"), c, EPS)?;
            // transformers sizes every stage's `[CLS]` by the last width.
            let cls_t = if cls[s] {
                if c != dims[n - 1] {
                    return Err(f.err(
                        "cls_token",
                        "a [CLS] token only in a stage of the last width",
                    ));
                }
                Some(
                    w.take(&format!("{p}.cls_token"), &[1, 1, c])?
                        .squeeze(0)
                        .map_err(ce("cls token"))?,
                )
            } else {
                None
            };
            let mid = (c as f64 * mlp[s]) as usize;
            let mut layers = Vec::with_capacity(depth[s]);
            for j in 0..depth[s] {
                let l = format!("{p}.layers.{j}");
                let a = format!("{l}.attention.attention");
                let dw = |w: &mut Weights,
                          which: &str,
                          stride: usize,
                          pad: usize|
                 -> Result<DwBn, SkillError> {
                    let cp = format!("{a}.convolution_projection_{which}.convolution_projection");
                    let kk = kqkv[s];
                    let (scale, shift) = batch_norm(w, &format!("{cp}.normalization"), c, EPS)?;
                    Ok(DwBn {
                        w: w.take(&format!("{cp}.convolution.weight"), &[c, 1, kk, kk])?,
                        stride,
                        pad,
                        c,
                        scale,
                        shift,
                    })
                };
                layers.push(Layer {
                    ln_before: layer_norm(w, &format!("{l}.layernorm_before"), c, EPS)?,
                    conv_q: dw(w, "query", stride_q[s], pad_q[s])?,
                    conv_k: dw(w, "key", stride_kv[s], pad_kv[s])?,
                    conv_v: dw(w, "value", stride_kv[s], pad_kv[s])?,
                    q: linear(w, &format!("{a}.projection_query"), c, c, qkv_bias[s])?,
                    k: linear(w, &format!("{a}.projection_key"), c, c, qkv_bias[s])?,
                    v: linear(w, &format!("{a}.projection_value"), c, c, qkv_bias[s])?,
                    o: linear(w, &format!("{l}.attention.output.dense"), c, c, true)?,
                    ln_after: layer_norm(w, &format!("{l}.layernorm_after"), c, EPS)?,
                    fc1: linear(w, &format!("{l}.intermediate.dense"), mid, c, true)?,
                    fc2: linear(w, &format!("{l}.output.dense"), c, mid, true)?,
                });
            }
            stages.push(Stage {
                embed_w,
                embed_b,
                embed_stride: pstride[s],
                embed_pad: ppad[s],
                embed_ln,
                cls: cls_t,
                heads: heads[s],
                layers,
            });
            inp = c;
        }
        let ln = layer_norm(w, "layernorm", inp, EPS)?;
        let classifier = linear(w, "classifier", labels, inp, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.usize_opt("image_size")?.unwrap_or(224),
            stages,
            ln,
            classifier,
        })
    }

    /// One layer over `x` `[(1 +) h·w, c]` (its `[CLS]` first when `cls`).
    fn layer(
        &self,
        st: &Stage,
        l: &Layer,
        x: &Tensor,
        (h, w): (usize, usize),
    ) -> candle_core::Result<Tensor> {
        let c = x.dim(1)?;
        let y = l.ln_before.forward(x)?;
        let (cls, grid) = match st.cls {
            Some(_) => (Some(y.narrow(0, 0, 1)?), y.narrow(0, 1, h * w)?),
            None => (None, y.clone()),
        };
        let g = to_grid(&grid, h, w)?;
        let with_cls = |t: Tensor| -> candle_core::Result<Tensor> {
            match &cls {
                Some(cl) => Tensor::cat(&[cl, &t], 0),
                None => Ok(t),
            }
        };
        let q = with_cls(to_tokens(&l.conv_q.forward(&g)?)?)?;
        let k = with_cls(to_tokens(&l.conv_k.forward(&g)?)?)?;
        let v = with_cls(to_tokens(&l.conv_v.forward(&g)?)?)?;
        let hd = c / st.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            let n = t.dim(0)?;
            t.reshape((n, st.heads, hd))?.transpose(0, 1)?.contiguous()
        };
        // transformers: `embed_dim ** -0.5`, the whole width, not the head's.
        let q = (split(l.q.forward(&q)?)? * (c as f64).powf(-0.5))?;
        let k = split(l.k.forward(&k)?)?;
        let v = split(l.v.forward(&v)?)?;
        let probs = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let n = q.dim(1)?;
        let attn = probs.matmul(&v)?.transpose(0, 1)?.reshape((n, c))?;
        let x = (x + l.o.forward(&attn)?)?;
        let m = l
            .fc2
            .forward(&l.fc1.forward(&l.ln_after.forward(&x)?)?.gelu_erf()?)?;
        x + m
    }

    /// The pooled features of one image `[1, c, H, W]`.
    fn features(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let mut g = pixels.clone();
        let mut cls_out = None;
        let mut last = None;
        for st in &self.stages {
            let e = g
                .conv2d(&st.embed_w, st.embed_pad, st.embed_stride, 1, 1)?
                .broadcast_add(&st.embed_b)?;
            let (_, _, h, w) = e.dims4()?;
            let mut x = st.embed_ln.forward(&to_tokens(&e)?)?;
            if let Some(cls) = &st.cls {
                x = Tensor::cat(&[cls, &x], 0)?;
            }
            for l in &st.layers {
                x = self.layer(st, l, &x, (h, w))?;
            }
            let grid = if st.cls.is_some() {
                cls_out = Some(x.narrow(0, 0, 1)?);
                x.narrow(0, 1, h * w)?
            } else {
                cls_out = None;
                x
            };
            g = to_grid(&grid, h, w)?;
            last = Some(grid);
        }
        match (cls_out, last) {
            (Some(cls), _) => self.ln.forward(&cls),
            (None, Some(t)) => self.ln.forward(&t)?.mean_keepdim(0),
            (None, None) => candle_core::bail!("no stages"),
        }
    }
}

impl crate::cnn::Network for Cvt {
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
