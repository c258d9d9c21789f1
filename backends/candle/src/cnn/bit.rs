//! BiT (Big Transfer, ResNet v2): weight-standardised convolutions, group norms, a 7×7 stride-2
//! stem with a 3×3 stride-2 max pool, then bottleneck stages — pre-activation (`norm → conv`,
//! the shortcut taken from the pre-activated input; a final group norm) or post-activation
//! (`conv → norm`, ReLU after the residual add) — and the classifier on the spatial mean.
//! Padding follows `global_padding` (PyTorch's static padding, or TensorFlow "SAME") and
//! `embedding_dynamic_padding`; dilated variants (`output_stride` below 32) are refused. Every
//! tensor is taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{GroupNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::tf_same;
use super::mobilenet::make_divisible;
use super::model::{ce, list};
use crate::activation::{Act, act};
use crate::weights::{Weights, linear};

/// A weight-standardised convolution: each output channel's weights standardised (biased
/// variance, ε = 1e-8) once at load.
#[derive(Debug)]
struct WsConv {
    w: Tensor,
    k: usize,
    stride: usize,
    same: bool,
}

impl WsConv {
    fn load(
        w: &mut Weights,
        name: &str,
        (out, inp, k): (usize, usize, usize),
        stride: usize,
        same: bool,
    ) -> Result<Self, SkillError> {
        let raw = w.take(&format!("{name}.weight"), &[out, inp, k, k])?;
        let run = || -> candle_core::Result<Tensor> {
            let flat = raw.reshape((out, inp * k * k))?;
            let mean = flat.mean_keepdim(1)?;
            let centered = flat.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(1)?;
            centered
                .broadcast_div(&(var + 1e-8)?.sqrt()?)?
                .reshape((out, inp, k, k))
        };
        Ok(Self {
            w: run().map_err(ce("weight standardisation"))?,
            k,
            stride,
            same,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (k, s) = (self.k, self.stride);
        // transformers' `get_padding_value`: "SAME" is static when stride 1 (odd kernels),
        // else dynamic; without it, ((s − 1) + (k − 1)) / 2 on every side.
        if self.same && s > 1 {
            let (_, _, h, w) = x.dims4()?;
            let (t, b) = tf_same(h, k, s);
            let (l, r) = tf_same(w, k, s);
            x.pad_with_zeros(2, t, b)?
                .pad_with_zeros(3, l, r)?
                .conv2d(&self.w, 0, s, 1, 1)
        } else {
            let pad = if self.same {
                (k - 1) / 2
            } else {
                (s - 1 + k - 1) / 2
            };
            x.conv2d(&self.w, pad, s, 1, 1)
        }
    }
}

fn group_norm(
    w: &mut Weights,
    name: &str,
    c: usize,
    groups: usize,
) -> Result<GroupNorm, SkillError> {
    GroupNorm::new(
        w.take(&format!("{name}.weight"), &[c])?,
        w.take(&format!("{name}.bias"), &[c])?,
        c,
        groups,
        1e-5,
    )
    .map_err(ce("group norm"))
}

#[derive(Debug)]
struct Layer {
    /// The shortcut's 1×1 convolution (and, post-activation, its group norm).
    down: Option<(WsConv, Option<GroupNorm>)>,
    convs: [WsConv; 3],
    norms: [GroupNorm; 3],
}

/// A loaded BiT classifier.
#[derive(Debug)]
pub(crate) struct Bit {
    channels: usize,
    image: usize,
    preact: bool,
    act: Act,
    stem: WsConv,
    /// Non-"SAME": zero padding of 1 after the stem convolution (before its norm).
    stem_pad: bool,
    stem_norm: Option<GroupNorm>,
    /// TensorFlow "SAME" padding (zeros) before the stem's max pool.
    pool_same: bool,
    layers: Vec<Layer>,
    final_norm: Option<GroupNorm>,
    classifier: Linear,
}

impl Bit {
    /// Read `config.json` (in `f`) and take the `BitForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let preact = match f.str_opt("layer_type")?.unwrap_or("preactivation") {
            "preactivation" => true,
            "bottleneck" => false,
            other => {
                return Err(f.err(
                    "layer_type",
                    format!("`{other}` is not implemented (preactivation, bottleneck)"),
                ));
            }
        };
        let same = match f.str_opt("global_padding")? {
            None => false,
            Some(p) if p.eq_ignore_ascii_case("same") => true,
            Some(other) => {
                return Err(f.err(
                    "global_padding",
                    format!("`{other}` is not implemented (SAME, null)"),
                ));
            }
        };
        if f.positive("output_stride")? != 32 {
            return Err(f.err(
                "output_stride",
                "only 32 is implemented (smaller strides dilate the last stages)",
            ));
        }
        let act_name = f.str_opt("hidden_act")?.unwrap_or("relu");
        let act = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let groups = f.positive("num_groups")?;
        let width = f.positive("width_factor")?;
        let hidden = list(f, "hidden_sizes")?;
        let depths = list(f, "depths")?;
        if hidden.len() != depths.len() {
            return Err(f.err("depths", "one depth per hidden size"));
        }
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let emb = f.positive("embedding_size")?;
        let p = "bit";
        let stem = WsConv::load(
            w,
            &format!("{p}.embedder.convolution"),
            (emb, channels, 7),
            2,
            same,
        )?;
        let stem_norm = if preact {
            None
        } else {
            Some(group_norm(w, &format!("{p}.embedder.norm"), emb, groups)?)
        };
        let gn = |w: &mut Weights, name: &str, c: usize| -> Result<GroupNorm, SkillError> {
            if !c.is_multiple_of(groups) {
                return Err(f.err(
                    "num_groups",
                    format!("{groups} groups do not divide {c} channels"),
                ));
            }
            group_norm(w, name, c, groups)
        };
        let mut layers = Vec::new();
        let mut inp = emb;
        for (s, (&h, &depth)) in hidden.iter().zip(&depths).enumerate() {
            let out = make_divisible(h * width, 8, 8);
            let mid = make_divisible((out as f64 * 0.25) as usize, 8, 8);
            for l in 0..depth {
                let b = format!("{p}.encoder.stages.{s}.layers.{l}");
                let stride = if l == 0 && s > 0 { 2 } else { 1 };
                let i = if l == 0 { inp } else { out };
                let down = if l == 0 {
                    let conv = WsConv::load(
                        w,
                        &format!("{b}.downsample.conv"),
                        (out, i, 1),
                        stride,
                        same,
                    )?;
                    let norm = if preact {
                        None
                    } else {
                        Some(gn(w, &format!("{b}.downsample.norm"), out)?)
                    };
                    Some((conv, norm))
                } else {
                    None
                };
                let convs = [
                    WsConv::load(w, &format!("{b}.conv1"), (mid, i, 1), 1, same)?,
                    WsConv::load(w, &format!("{b}.conv2"), (mid, mid, 3), stride, same)?,
                    WsConv::load(w, &format!("{b}.conv3"), (out, mid, 1), 1, same)?,
                ];
                // Pre-activation norms read each conv's input; post-activation ones its output.
                let widths = if preact {
                    [i, mid, mid]
                } else {
                    [mid, mid, out]
                };
                let norms = [
                    gn(w, &format!("{b}.norm1"), widths[0])?,
                    gn(w, &format!("{b}.norm2"), widths[1])?,
                    gn(w, &format!("{b}.norm3"), widths[2])?,
                ];
                layers.push(Layer { down, convs, norms });
            }
            inp = out;
        }
        let final_norm = if preact {
            if hidden.last() != Some(&inp) {
                return Err(f.err(
                    "width_factor",
                    "the final norm is sized by hidden_sizes, the last stage by the width factor",
                ));
            }
            Some(gn(w, &format!("{p}.norm"), inp)?)
        } else {
            None
        };
        let classifier = linear(w, "classifier.1", labels, inp, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.usize_opt("image_size")?.unwrap_or(224),
            preact,
            act,
            stem,
            stem_pad: !same,
            stem_norm,
            pool_same: f.bool_or("embedding_dynamic_padding", false)?,
            layers,
            final_norm,
            classifier,
        })
    }

    fn layer(&self, l: &Layer, x: &Tensor) -> candle_core::Result<Tensor> {
        let a = self.act;
        let [c1, c2, c3] = &l.convs;
        let [n1, n2, n3] = &l.norms;
        if self.preact {
            let pre = act(a, &n1.forward(x)?)?;
            let shortcut = match &l.down {
                Some((conv, _)) => conv.forward(&pre)?,
                None => x.clone(),
            };
            let h = c1.forward(&pre)?;
            let h = c2.forward(&act(a, &n2.forward(&h)?)?)?;
            let h = c3.forward(&act(a, &n3.forward(&h)?)?)?;
            h + shortcut
        } else {
            let shortcut = match &l.down {
                Some((conv, Some(norm))) => norm.forward(&conv.forward(x)?)?,
                Some((conv, None)) => conv.forward(x)?,
                None => x.clone(),
            };
            let h = act(a, &n1.forward(&c1.forward(x)?)?)?;
            let h = act(a, &n2.forward(&c2.forward(&h)?)?)?;
            let h = n3.forward(&c3.forward(&h)?)?;
            act(a, &(h + shortcut)?)
        }
    }
}

impl super::Network for Bit {
    fn channels(&self) -> usize {
        self.channels
    }

    fn image_size(&self) -> usize {
        self.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let mut x = self.stem.forward(pixels)?;
            if self.stem_pad {
                x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
            }
            if let Some(n) = &self.stem_norm {
                x = act(self.act, &n.forward(&x)?)?;
            }
            if self.pool_same {
                let (_, _, h, w) = x.dims4()?;
                let (t, b) = tf_same(h, 3, 2);
                let (l, r) = tf_same(w, 3, 2);
                x = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
            }
            x = x.max_pool2d_with_stride(3, 2)?;
            for l in &self.layers {
                x = self.layer(l, &x)?;
            }
            if let Some(n) = &self.final_norm {
                x = act(self.act, &n.forward(&x)?)?;
            }
            self.classifier
                .forward(&x.mean(D::Minus1)?.mean(D::Minus1)?)
        };
        run().map_err(ce("forward"))
    }
}
