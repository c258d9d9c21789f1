//! Convolutional image classifiers: ResNet (basic or bottleneck layers, eval-mode batch norm
//! with the saved running statistics), ConvNeXt (depthwise 7×7 convolutions, channel
//! LayerNorms, layer scale) and ConvNeXt V2 (global response normalisation instead of the
//! layer scale), and RegNet X/Y (grouped 3×3 convolutions; Y adds squeeze-and-excitation). Every tensor is taken by name and shape; one nobody takes is
//! refused (the `num_batches_tracked` counters carry no weights).

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde_json::Value;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::ConvBn;
use crate::activation::{Act, act};
use crate::weights::{Weights, layer_norm, linear};

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Resnet {
        bottleneck: bool,
        in_bottleneck: bool,
        first_stride: usize,
    },
    /// RegNet: `y` adds squeeze-and-excitation; 3×3 convolutions in groups of `groups_width`.
    Regnet {
        y: bool,
        first_stride: usize,
        groups_width: usize,
    },
    ConvNext {
        patch: usize,
        layer_scale: bool,
        /// ConvNeXt V2's global response normalisation after the activation.
        grn: bool,
        /// DINOv3's ConvNeXt: the stem as stage 0's downsampling, its own module names, every
        /// LayerNorm at `layer_norm_eps`, a base model (no classifier).
        dinov3: bool,
    },
}

/// A CNN, as [`translate`] reads it from `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) kind: Kind,
    pub(crate) prefix: &'static str,
    pub(crate) channels: usize,
    pub(crate) embedding: usize,
    pub(crate) hidden: Vec<usize>,
    pub(crate) depths: Vec<usize>,
    pub(crate) act: Act,
    pub(crate) eps: f64,
    /// The preprocessing size (`image_size`, else 224).
    pub(crate) image: usize,
}

pub(crate) fn list(f: &Fields<'_>, field: &str) -> Result<Vec<usize>, SkillError> {
    match f.get(field) {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .filter(|n| *n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| f.err(field, format!("expected positive integers, found {v}")))
            })
            .collect(),
        _ => Err(f.err(field, "expected a non-empty list of positive integers")),
    }
}

/// `config.json` of `model_type` → [`Spec`], field by field.
pub(crate) fn translate(model_type: &str, f: &Fields<'_>) -> Result<Spec, SkillError> {
    let hidden = list(f, "hidden_sizes")?;
    let depths = list(f, "depths")?;
    if hidden.len() != depths.len() {
        return Err(f.err(
            "depths",
            format!("{} stages for {} hidden sizes", depths.len(), hidden.len()),
        ));
    }
    let act_name = f.str_opt("hidden_act")?.unwrap_or("relu");
    let act = match Act::from_hf(act_name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu)) => a,
        _ => {
            return Err(f.err(
                "hidden_act",
                format!("`{act_name}` is not implemented (relu, gelu, gelu_new, silu)"),
            ));
        }
    };
    let (kind, prefix, embedding, eps) = match model_type {
        "resnet" => {
            let bottleneck = match f.str_opt("layer_type")?.unwrap_or("bottleneck") {
                "bottleneck" => true,
                "basic" => false,
                other => {
                    return Err(f.err(
                        "layer_type",
                        format!("`{other}` is not implemented (basic, bottleneck)"),
                    ));
                }
            };
            if bottleneck && hidden.iter().any(|h| h % 4 != 0) {
                return Err(f.err("hidden_sizes", "bottleneck widths must be multiples of 4"));
            }
            (
                Kind::Resnet {
                    bottleneck,
                    in_bottleneck: f.bool_or("downsample_in_bottleneck", false)?,
                    first_stride: if f.bool_or("downsample_in_first_stage", false)? {
                        2
                    } else {
                        1
                    },
                },
                "resnet",
                f.positive("embedding_size")?,
                1e-5,
            )
        }
        "regnet" => (
            Kind::Regnet {
                y: match f.str_opt("layer_type")?.unwrap_or("y") {
                    "y" => true,
                    "x" => false,
                    other => {
                        return Err(
                            f.err("layer_type", format!("`{other}` is not implemented (x, y)"))
                        );
                    }
                },
                first_stride: if f.bool_or("downsample_in_first_stage", true)? {
                    2
                } else {
                    1
                },
                groups_width: f.positive("groups_width")?,
            },
            "regnet",
            f.positive("embedding_size")?,
            1e-5,
        ),
        "convnext" => (
            Kind::ConvNext {
                patch: f.positive("patch_size")?,
                layer_scale: f.f64("layer_scale_init_value")? > 0.0,
                grn: false,
                dinov3: false,
            },
            "convnext",
            hidden[0],
            f.f64("layer_norm_eps")?,
        ),
        "convnextv2" => (
            Kind::ConvNext {
                patch: f.positive("patch_size")?,
                layer_scale: false,
                grn: true,
                dinov3: false,
            },
            "convnextv2",
            hidden[0],
            f.f64("layer_norm_eps")?,
        ),
        // transformers 5 saves DINOv3ConvNextModel's encoder unprefixed (`stages.*`); the
        // loader also takes `model.stages.*`.
        "dinov3_convnext" => (
            Kind::ConvNext {
                patch: 4,
                layer_scale: true,
                grn: false,
                dinov3: true,
            },
            "",
            hidden[0],
            f.f64("layer_norm_eps")?,
        ),
        other => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not a CNN the candle backend implements"),
            ));
        }
    };
    Ok(Spec {
        kind,
        prefix,
        channels: f.usize_opt("num_channels")?.unwrap_or(3),
        embedding,
        hidden,
        depths,
        act,
        eps,
        image: f.usize_opt("image_size")?.unwrap_or(224),
    })
}

pub(crate) fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("CNN {context}: {e}"),
    }
}

#[derive(Debug)]
struct ResLayer {
    shortcut: Option<ConvBn>,
    convs: Vec<ConvBn>,
    /// RegNet Y's squeeze-and-excitation after the second convolution: (reduce weight,
    /// bias, expand weight, bias) of two 1×1 convolutions.
    se: Option<(Tensor, Tensor, Tensor, Tensor)>,
}

/// A LayerNorm over the channels of `[b, c, h, w]`.
fn channel_norm(ln: &LayerNorm, x: &Tensor) -> candle_core::Result<Tensor> {
    ln.forward(&x.permute((0, 2, 3, 1))?)?.permute((0, 3, 1, 2))
}

#[derive(Debug)]
struct NextLayer {
    dw_w: Tensor,
    dw_b: Tensor,
    ln: LayerNorm,
    pw1: Linear,
    pw2: Linear,
    scale: Option<Tensor>,
    /// GRN `weight`, `bias` (`[1, 1, 1, 4·dim]`).
    grn: Option<(Tensor, Tensor)>,
}

/// ConvNeXt's downsampling between stages: a channel LayerNorm, then a 2×2 stride-2 conv
/// (weight, bias).
type Downsample = (LayerNorm, Tensor, Tensor);

#[derive(Debug)]
enum Body {
    Resnet {
        stem: ConvBn,
        /// ResNet's 3×3 max pool after the stem (RegNet has none).
        stem_pool: bool,
        stages: Vec<Vec<ResLayer>>,
    },
    ConvNext {
        patch_w: Tensor,
        patch_b: Tensor,
        stem_ln: LayerNorm,
        /// Per stage: the downsampling (LayerNorm, 2×2 conv weight, bias), then its layers.
        stages: Vec<(Option<Downsample>, Vec<NextLayer>)>,
        final_ln: LayerNorm,
    },
}

/// A loaded CNN classifier (a base model without one: DINOv3's ConvNeXt).
#[derive(Debug)]
pub(crate) struct CnnModel {
    spec: Spec,
    body: Body,
    classifier: Option<Linear>,
}

impl CnnModel {
    /// Take every tensor of the `*ForImageClassification` checkpoint with `labels` classes.
    pub(crate) fn load(spec: Spec, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let p = spec.prefix;
        let last = *spec.hidden.last().unwrap_or(&spec.embedding);
        let body = match spec.kind {
            Kind::Resnet {
                bottleneck,
                in_bottleneck,
                first_stride,
            } => {
                let stem = ConvBn::load(
                    w,
                    &format!("{p}.embedder.embedder"),
                    (spec.embedding, spec.channels, 7),
                    2,
                )?;
                let mut stages = Vec::new();
                let mut inp = spec.embedding;
                for (s, (&out, &depth)) in spec.hidden.iter().zip(&spec.depths).enumerate() {
                    let mut layers = Vec::new();
                    for l in 0..depth {
                        let (i, stride) = if l == 0 {
                            (inp, if s == 0 { first_stride } else { 2 })
                        } else {
                            (out, 1)
                        };
                        let b = format!("{p}.encoder.stages.{s}.layers.{l}");
                        let shortcut = if i != out || stride != 1 {
                            Some(ConvBn::load(
                                w,
                                &format!("{b}.shortcut"),
                                (out, i, 1),
                                stride,
                            )?)
                        } else {
                            None
                        };
                        let convs = if bottleneck {
                            let r = out / 4;
                            vec![
                                ConvBn::load(
                                    w,
                                    &format!("{b}.layer.0"),
                                    (r, i, 1),
                                    if in_bottleneck { stride } else { 1 },
                                )?,
                                ConvBn::load(
                                    w,
                                    &format!("{b}.layer.1"),
                                    (r, r, 3),
                                    if in_bottleneck { 1 } else { stride },
                                )?,
                                ConvBn::load(w, &format!("{b}.layer.2"), (out, r, 1), 1)?,
                            ]
                        } else {
                            vec![
                                ConvBn::load(w, &format!("{b}.layer.0"), (out, i, 3), stride)?,
                                ConvBn::load(w, &format!("{b}.layer.1"), (out, out, 3), 1)?,
                            ]
                        };
                        layers.push(ResLayer {
                            shortcut,
                            convs,
                            se: None,
                        });
                    }
                    stages.push(layers);
                    inp = out;
                }
                Body::Resnet {
                    stem,
                    stem_pool: true,
                    stages,
                }
            }
            Kind::Regnet {
                y,
                first_stride,
                groups_width,
            } => {
                let stem = ConvBn::load(
                    w,
                    &format!("{p}.embedder.embedder"),
                    (spec.embedding, spec.channels, 3),
                    2,
                )?;
                let mut stages = Vec::new();
                let mut inp = spec.embedding;
                for (s, (&out, &depth)) in spec.hidden.iter().zip(&spec.depths).enumerate() {
                    let mut layers = Vec::new();
                    for l in 0..depth {
                        let (i, stride) = if l == 0 {
                            (inp, if s == 0 { first_stride } else { 2 })
                        } else {
                            (out, 1)
                        };
                        let b = format!("{p}.encoder.stages.{s}.layers.{l}");
                        let shortcut = if i != out || stride != 1 {
                            Some(ConvBn::load(
                                w,
                                &format!("{b}.shortcut"),
                                (out, i, 1),
                                stride,
                            )?)
                        } else {
                            None
                        };
                        let groups = (out / groups_width).max(1);
                        let last = if y { 3 } else { 2 };
                        let convs = vec![
                            ConvBn::load(w, &format!("{b}.layer.0"), (out, i, 1), 1)?,
                            ConvBn::load_grouped(
                                w,
                                &format!("{b}.layer.1"),
                                (out, out, 3),
                                stride,
                                groups,
                            )?,
                            ConvBn::load(w, &format!("{b}.layer.{last}"), (out, out, 1), 1)?,
                        ];
                        let se = if y {
                            // transformers: round(in_channels / 4) reduced channels.
                            let r = ((i as f64) / 4.0).round() as usize;
                            let a = format!("{b}.layer.2.attention");
                            Some((
                                w.take(&format!("{a}.0.weight"), &[r, out, 1, 1])?,
                                w.take(&format!("{a}.0.bias"), &[r])?,
                                w.take(&format!("{a}.2.weight"), &[out, r, 1, 1])?,
                                w.take(&format!("{a}.2.bias"), &[out])?,
                            ))
                        } else {
                            None
                        };
                        layers.push(ResLayer {
                            shortcut,
                            convs,
                            se,
                        });
                    }
                    stages.push(layers);
                    inp = out;
                }
                Body::Resnet {
                    stem,
                    stem_pool: false,
                    stages,
                }
            }
            Kind::ConvNext {
                patch,
                layer_scale,
                grn,
                dinov3,
            } => {
                let h0 = spec.hidden[0];
                // Module names: ConvNeXt's, or DINOv3's (`[model.]stages.*`, the stem as
                // stage 0's `downsample_layers`, LayerNorms at `layer_norm_eps`).
                let (enc, ln_eps, names) = if dinov3 {
                    let enc = if w.has("model.stages.0.downsample_layers.0.weight") {
                        "model."
                    } else {
                        ""
                    };
                    (enc.to_owned(), spec.eps, NextNames::DINOV3)
                } else {
                    (format!("{p}.encoder."), 1e-6, NextNames::CONVNEXT)
                };
                let e = if dinov3 {
                    format!("{enc}stages.0.downsample_layers")
                } else {
                    format!("{p}.embeddings")
                };
                let patch_w = w.take(
                    &format!("{e}.{}.weight", names.stem_conv),
                    &[h0, spec.channels, patch, patch],
                )?;
                let patch_b = w.take(&format!("{e}.{}.bias", names.stem_conv), &[h0])?;
                let stem_ln = layer_norm(w, &format!("{e}.{}", names.stem_norm), h0, ln_eps)?;
                let mut stages = Vec::new();
                let mut inp = h0;
                for (s, (&out, &depth)) in spec.hidden.iter().zip(&spec.depths).enumerate() {
                    let st = format!("{enc}stages.{s}");
                    let stride = if s > 0 { 2 } else { 1 };
                    let down = if inp != out || stride > 1 {
                        let d = format!("{st}.{}", names.downsample);
                        Some((
                            layer_norm(w, &format!("{d}.0"), inp, ln_eps)?,
                            w.take(&format!("{d}.1.weight"), &[out, inp, 2, 2])?,
                            w.take(&format!("{d}.1.bias"), &[out])?,
                        ))
                    } else {
                        None
                    };
                    let mut layers = Vec::new();
                    for l in 0..depth {
                        let b = format!("{st}.layers.{l}");
                        let n = |m: &str| format!("{b}.{m}");
                        layers.push(NextLayer {
                            dw_w: w.take(&n(&format!("{}.weight", names.dw)), &[out, 1, 7, 7])?,
                            dw_b: w.take(&n(&format!("{}.bias", names.dw)), &[out])?,
                            ln: layer_norm(w, &n(names.norm), out, ln_eps)?,
                            pw1: linear(w, &n(names.pw1), 4 * out, out, true)?,
                            pw2: linear(w, &n(names.pw2), out, 4 * out, true)?,
                            scale: if layer_scale {
                                Some(w.take(&n(names.scale), &[out])?)
                            } else {
                                None
                            },
                            grn: if grn {
                                Some((
                                    w.take(&format!("{b}.grn.weight"), &[1, 1, 1, 4 * out])?,
                                    w.take(&format!("{b}.grn.bias"), &[1, 1, 1, 4 * out])?,
                                ))
                            } else {
                                None
                            },
                        });
                    }
                    stages.push((down, layers));
                    inp = out;
                }
                let final_ln = if dinov3 {
                    layer_norm(w, "layer_norm", last, spec.eps)?
                } else {
                    layer_norm(w, &format!("{p}.layernorm"), last, spec.eps)?
                };
                Body::ConvNext {
                    patch_w,
                    patch_b,
                    stem_ln,
                    stages,
                    final_ln,
                }
            }
        };
        let classifier = match spec.kind {
            Kind::Resnet { .. } | Kind::Regnet { .. } => {
                Some(linear(w, "classifier.1", labels, last, true)?)
            }
            Kind::ConvNext { dinov3: true, .. } => None,
            Kind::ConvNext { .. } => Some(linear(w, "classifier", labels, last, true)?),
        };
        w.finish()?;
        Ok(Self {
            spec,
            body,
            classifier,
        })
    }

    /// Logits `[b, labels]` of preprocessed `pixels` `[b, channels, h, w]`.
    pub(crate) fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let pooled = self.pooled(pixels)?;
        match &self.classifier {
            Some(c) => c.forward(&pooled).map_err(ce("classifier")),
            None => Err(SkillError::Backend {
                backend: skillgen_runtime::BackendKind::Candle,
                detail: "this CNN is a base model: it has no classifier".into(),
            }),
        }
    }

    /// The pooled features `[b, last hidden size]` (transformers' `pooler_output`) of
    /// preprocessed `pixels` `[b, channels, h, w]`.
    pub(crate) fn pooled(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let a = self.spec.act;
        let run = || -> candle_core::Result<Tensor> {
            let pooled = match &self.body {
                Body::Resnet {
                    stem,
                    stem_pool,
                    stages,
                } => {
                    let mut x = act(a, &stem.forward(pixels)?)?;
                    if *stem_pool {
                        // 3×3 max pool, stride 2, padding 1: zero padding equals −∞ padding
                        // here because the input is a ReLU output (non-negative).
                        if a != Act::Relu {
                            candle_core::bail!("the stem's max pool assumes a ReLU");
                        }
                        x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
                        x = x.max_pool2d_with_stride(3, 2)?;
                    }
                    for stage in stages {
                        for l in stage {
                            let mut h = x.clone();
                            let n = l.convs.len();
                            for (i, c) in l.convs.iter().enumerate() {
                                h = c.forward(&h)?;
                                if i + 1 < n {
                                    h = act(a, &h)?;
                                }
                                if let (1, Some((w1, b1, w2, b2))) = (i, &l.se) {
                                    let pooled = h.mean_keepdim(3)?.mean_keepdim(2)?;
                                    let r = pooled
                                        .conv2d(w1, 0, 1, 1, 1)?
                                        .broadcast_add(&b1.reshape((1, b1.dim(0)?, 1, 1))?)?
                                        .relu()?;
                                    let g = r
                                        .conv2d(w2, 0, 1, 1, 1)?
                                        .broadcast_add(&b2.reshape((1, b2.dim(0)?, 1, 1))?)?;
                                    h = h.broadcast_mul(&candle_nn::ops::sigmoid(&g)?)?;
                                }
                            }
                            let r = match &l.shortcut {
                                Some(s) => s.forward(&x)?,
                                None => x.clone(),
                            };
                            x = act(a, &(h + r)?)?;
                        }
                    }
                    x.mean(D::Minus1)?.mean(D::Minus1)?
                }
                Body::ConvNext {
                    patch_w,
                    patch_b,
                    stem_ln,
                    stages,
                    final_ln,
                } => {
                    let patch = patch_w.dim(2)?;
                    let x = pixels
                        .conv2d(patch_w, 0, patch, 1, 1)?
                        .broadcast_add(&patch_b.reshape((1, patch_b.dim(0)?, 1, 1))?)?;
                    let mut x = channel_norm(stem_ln, &x)?;
                    for (down, layers) in stages {
                        if let Some((ln, dw, db)) = down {
                            x = channel_norm(ln, &x)?
                                .conv2d(dw, 0, 2, 1, 1)?
                                .broadcast_add(&db.reshape((1, db.dim(0)?, 1, 1))?)?;
                        }
                        for l in layers {
                            let c = l.dw_w.dim(0)?;
                            let h = x
                                .conv2d(&l.dw_w, 3, 1, 1, c)?
                                .broadcast_add(&l.dw_b.reshape((1, c, 1, 1))?)?
                                .permute((0, 2, 3, 1))?;
                            let mut h = act(a, &l.pw1.forward(&l.ln.forward(&h)?)?)?;
                            if let Some((gw, gb)) = &l.grn {
                                // ‖h‖₂ over height and width, normalised by its channel mean.
                                let g = h.sqr()?.sum_keepdim(1)?.sum_keepdim(2)?.sqrt()?;
                                let nx = g.broadcast_div(&(g.mean_keepdim(3)? + 1e-6)?)?;
                                h = ((h.broadcast_mul(&nx)?.broadcast_mul(gw)? + &h)?
                                    .broadcast_add(gb))?;
                            }
                            let h = l.pw2.forward(&h)?;
                            let h = match &l.scale {
                                Some(s) => h.broadcast_mul(s)?,
                                None => h,
                            };
                            x = (x + h.permute((0, 3, 1, 2))?)?;
                        }
                    }
                    final_ln.forward(&x.mean(D::Minus1)?.mean(D::Minus1)?)?
                }
            };
            Ok(pooled)
        };
        run().map_err(ce("forward"))
    }

    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }
}

/// The module names of a ConvNeXt block, stem and downsampling.
struct NextNames {
    stem_conv: &'static str,
    stem_norm: &'static str,
    downsample: &'static str,
    dw: &'static str,
    norm: &'static str,
    pw1: &'static str,
    pw2: &'static str,
    scale: &'static str,
}

impl NextNames {
    const CONVNEXT: Self = Self {
        stem_conv: "patch_embeddings",
        stem_norm: "layernorm",
        downsample: "downsampling_layer",
        dw: "dwconv",
        norm: "layernorm",
        pw1: "pwconv1",
        pw2: "pwconv2",
        scale: "layer_scale_parameter",
    };
    const DINOV3: Self = Self {
        stem_conv: "0",
        stem_norm: "1",
        downsample: "downsample_layers",
        dw: "depthwise_conv",
        norm: "layer_norm",
        pw1: "pointwise_conv1",
        pw2: "pointwise_conv2",
        scale: "gamma",
    };
}

impl super::Network for CnnModel {
    fn channels(&self) -> usize {
        self.spec.channels
    }

    fn image_size(&self) -> usize {
        self.spec.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        CnnModel::logits(self, pixels)
    }
}
