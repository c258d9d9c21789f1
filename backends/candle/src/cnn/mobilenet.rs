//! MobileNet V1 (a stem, then 13 depthwise 3×3 + pointwise 1×1 pairs) and V2 (inverted
//! residuals: expand 1×1, depthwise 3×3, linear reduce 1×1, residual when the shape keeps),
//! with their width multipliers, TensorFlow "SAME" padding (`tf_padding`), batch norms of
//! `layer_norm_eps` and ReLU6; the classifier reads the spatial mean. Every tensor is taken
//! by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::Linear;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::{ConvBn, Pad};
use super::model::ce;
use crate::activation::{Act, act};
use crate::weights::{Weights, linear};

/// One convolution layer: conv + batch norm, then the activation unless `linear`.
#[derive(Debug)]
struct Layer {
    conv: ConvBn,
    linear: bool,
}

/// V2's inverted residual (or its stem, whose expansion may be the first convolution).
#[derive(Debug)]
struct Inverted {
    convs: Vec<Layer>,
    residual: bool,
}

/// A loaded MobileNet V1 or V2 classifier.
#[derive(Debug)]
pub(crate) struct MobileNet {
    channels: usize,
    image: usize,
    act: Act,
    blocks: Vec<Inverted>,
    classifier: Linear,
}

/// Shared config fields: (padding, batch-norm ε, activation, width multiplier, min depth).
fn common(f: &Fields<'_>) -> Result<(Pad, f64, Act, f64, usize), SkillError> {
    let pad = if f.bool_or("tf_padding", true)? {
        Pad::TfSame
    } else {
        Pad::Symmetric
    };
    let act_name = f.str_opt("hidden_act")?.unwrap_or("relu6");
    let act = Act::from_hf(act_name)
        .filter(|a| *a != Act::XieLu)
        .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
    let dm = f.f64("depth_multiplier")?;
    if dm <= 0.0 {
        return Err(f.err("depth_multiplier", format!("{dm}: must be positive")));
    }
    Ok((
        pad,
        f.f64("layer_norm_eps")?,
        act,
        dm,
        f.positive("min_depth")?,
    ))
}

/// transformers' `make_divisible`.
pub(crate) fn make_divisible(value: usize, divisor: usize, min_value: usize) -> usize {
    let v = value as f64;
    let mut new = min_value.max(((v + divisor as f64 / 2.0) as usize) / divisor * divisor);
    if (new as f64) < 0.9 * v {
        new += divisor;
    }
    new
}

impl MobileNet {
    /// `MobileNetV1ForImageClassification` (`v2`: false) or V2's.
    pub(crate) fn load(
        f: &Fields<'_>,
        w: &mut Weights,
        labels: usize,
        v2: bool,
    ) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let (pad, eps, act, dm, min_depth) = common(f)?;
        let conv = |w: &mut Weights,
                    p: &str,
                    dims: (usize, usize, usize),
                    stride: usize,
                    groups: usize,
                    linear: bool|
         -> Result<Layer, SkillError> {
            Ok(Layer {
                conv: ConvBn::load_with(w, p, dims, (stride, groups), pad, eps)?,
                linear,
            })
        };
        let channels = f.usize_opt("num_channels")?.unwrap_or(3);
        let mut blocks = Vec::new();
        let last = if v2 {
            let p = "mobilenet_v2";
            let by = f.positive("depth_divisible_by")?;
            let adm = |c: usize| make_divisible((c as f64 * dm).round() as usize, by, min_depth);
            let ratio = f.f64("expand_ratio")?;
            if f.positive("output_stride")? != 32 {
                return Err(f.err(
                    "output_stride",
                    "only 32 is implemented (smaller strides dilate the last layers)",
                ));
            }
            let chans: Vec<usize> = [
                16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320,
            ]
            .iter()
            .map(|&c| adm(c))
            .collect();
            let strides = [2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1];
            // The stem: 3×3 stride 2, [expand 1×1], depthwise 3×3, linear reduce.
            let e = adm(32);
            let s = format!("{p}.conv_stem");
            let mut convs = vec![conv(
                w,
                &format!("{s}.first_conv"),
                (e, channels, 3),
                2,
                1,
                false,
            )?];
            if !f.bool_or("first_layer_is_expansion", true)? {
                convs.push(conv(w, &format!("{s}.expand_1x1"), (e, e, 1), 1, 1, false)?);
            }
            convs.push(conv(w, &format!("{s}.conv_3x3"), (e, e, 3), 1, e, false)?);
            convs.push(conv(
                w,
                &format!("{s}.reduce_1x1"),
                (chans[0], e, 1),
                1,
                1,
                true,
            )?);
            blocks.push(Inverted {
                convs,
                residual: false,
            });
            for (i, &stride) in strides.iter().enumerate() {
                let (inp, out) = (chans[i], chans[i + 1]);
                let x = make_divisible((inp as f64 * ratio).round() as usize, by, min_depth);
                let b = format!("{p}.layer.{i}");
                blocks.push(Inverted {
                    convs: vec![
                        conv(w, &format!("{b}.expand_1x1"), (x, inp, 1), 1, 1, false)?,
                        conv(w, &format!("{b}.conv_3x3"), (x, x, 3), stride, x, false)?,
                        conv(w, &format!("{b}.reduce_1x1"), (out, x, 1), 1, 1, true)?,
                    ],
                    residual: stride == 1 && inp == out,
                });
            }
            let out = if f.bool_or("finegrained_output", true)? && dm < 1.0 {
                1280
            } else {
                adm(1280)
            };
            blocks.push(Inverted {
                convs: vec![conv(
                    w,
                    &format!("{p}.conv_1x1"),
                    (out, chans[16], 1),
                    1,
                    1,
                    false,
                )?],
                residual: false,
            });
            out
        } else {
            let p = "mobilenet_v1";
            let width = |d: usize| ((d as f64 * dm) as usize).max(min_depth);
            let mut depth = 32;
            let mut out = width(depth);
            let mut convs = vec![conv(
                w,
                &format!("{p}.conv_stem"),
                (out, channels, 3),
                2,
                1,
                false,
            )?];
            let strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1];
            for (i, &stride) in strides.iter().enumerate() {
                let inp = out;
                if stride == 2 || i == 0 {
                    depth *= 2;
                    out = width(depth);
                }
                let l = format!("{p}.layer");
                convs.push(conv(
                    w,
                    &format!("{l}.{}", 2 * i),
                    (inp, inp, 3),
                    stride,
                    inp,
                    false,
                )?);
                convs.push(conv(
                    w,
                    &format!("{l}.{}", 2 * i + 1),
                    (out, inp, 1),
                    1,
                    1,
                    false,
                )?);
            }
            blocks.push(Inverted {
                convs,
                residual: false,
            });
            out
        };
        let classifier = linear(w, "classifier", labels, last, true)?;
        w.finish()?;
        Ok(Self {
            channels,
            image: f.usize_opt("image_size")?.unwrap_or(224),
            act,
            blocks,
            classifier,
        })
    }
}

impl super::Network for MobileNet {
    fn channels(&self) -> usize {
        self.channels
    }

    fn image_size(&self) -> usize {
        self.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let mut x = pixels.clone();
            for b in &self.blocks {
                let mut h = x.clone();
                for l in &b.convs {
                    h = l.conv.forward(&h)?;
                    if !l.linear {
                        h = act(self.act, &h)?;
                    }
                }
                x = if b.residual { (x + h)? } else { h };
            }
            self.classifier
                .forward(&x.mean(D::Minus1)?.mean(D::Minus1)?)
        };
        run().map_err(ce("forward"))
    }
}

#[cfg(test)]
mod tests {
    use super::make_divisible;

    #[test]
    fn make_divisible_as_transformers() {
        assert_eq!(make_divisible(32, 8, 8), 32);
        assert_eq!(make_divisible(3, 8, 8), 8);
        // round to the nearest multiple, never below 90 % of the value.
        assert_eq!(make_divisible(20, 8, 8), 24);
        assert_eq!(make_divisible(27, 8, 8), 32);
        assert_eq!(make_divisible(100, 8, 8), 104);
    }
}
