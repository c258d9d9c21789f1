//! TextNet (FAST's backbone): a conv + batch-norm stem, then stages of re-parameterisable
//! convolutions — each the sum of a kh×kw, a kh×1 and a 1×kw convolution (each with its batch
//! norm; the thin ones only when the kernel has that extent) and, when the shape keeps, a
//! batch norm of the input — followed by ReLU; the classifier reads the spatial mean. Every
//! tensor is taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::Linear;
use serde_json::Value;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::batch_norm;
use super::model::{ce, list};
use crate::activation::{Act, act};
use crate::weights::{Weights, linear};

/// A convolution (no bias) with its folded batch norm and explicit (top/bottom, left/right)
/// padding.
#[derive(Debug)]
struct Branch {
    w: Tensor,
    stride: usize,
    pad: (usize, usize),
    scale: Tensor,
    shift: Tensor,
}

impl Branch {
    #[allow(clippy::too_many_arguments)]
    fn load(
        w: &mut Weights,
        (conv, bn): (&str, &str),
        (out, inp): (usize, usize),
        (kh, kw): (usize, usize),
        stride: usize,
        pad: (usize, usize),
        eps: f64,
    ) -> Result<Self, SkillError> {
        let weight = w.take(&format!("{conv}.weight"), &[out, inp, kh, kw])?;
        let (scale, shift) = batch_norm(w, bn, out, eps)?;
        Ok(Self {
            w: weight,
            stride,
            pad,
            scale,
            shift,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (ph, pw) = self.pad;
        x.pad_with_zeros(2, ph, ph)?
            .pad_with_zeros(3, pw, pw)?
            .conv2d(&self.w, 0, self.stride, 1, 1)?
            .broadcast_mul(&self.scale)?
            .broadcast_add(&self.shift)
    }
}

/// One re-parameterisable convolution: its branches, and the identity batch norm.
#[derive(Debug)]
struct RepConv {
    branches: Vec<Branch>,
    identity: Option<(Tensor, Tensor)>,
}

/// A loaded TextNet classifier.
#[derive(Debug)]
pub(crate) struct TextNet {
    channels: usize,
    image: usize,
    stem: Branch,
    stem_act: Option<Act>,
    convs: Vec<RepConv>,
    classifier: Linear,
}

/// `[[kh, kw], ...]` per stage, as `conv_layer_kernel_sizes`.
fn kernels(f: &Fields<'_>) -> Result<Vec<Vec<(usize, usize)>>, SkillError> {
    let bad = || {
        f.err(
            "conv_layer_kernel_sizes",
            "expected per stage a list of [kh, kw] pairs",
        )
    };
    let Some(Value::Array(stages)) = f.get("conv_layer_kernel_sizes") else {
        return Err(bad());
    };
    stages
        .iter()
        .map(|st| {
            st.as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|k| match k.as_array().map(Vec::as_slice) {
                    Some([h, w]) => match (h.as_u64(), w.as_u64()) {
                        (Some(h), Some(w)) if h % 2 == 1 && w % 2 == 1 => {
                            Ok((h as usize, w as usize))
                        }
                        _ => Err(bad()),
                    },
                    _ => Err(bad()),
                })
                .collect()
        })
        .collect()
}

impl TextNet {
    /// Read `config.json` (in `f`) and take the `TextNetForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let eps = f.f64("batch_norm_eps")?;
        let ks = kernels(f)?;
        let strides: Vec<Vec<usize>> = match f.get("conv_layer_strides") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|st| {
                    st.as_array()
                        .and_then(|v| v.iter().map(|x| x.as_u64().map(|n| n as usize)).collect())
                })
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    f.err("conv_layer_strides", "expected per stage a list of strides")
                })?,
            _ => return Err(f.err("conv_layer_strides", "expected per stage a list of strides")),
        };
        let hidden = list(f, "hidden_sizes")?;
        if strides.len() != ks.len()
            || hidden.len() != ks.len() + 1
            || strides.iter().zip(&ks).any(|(s, k)| s.len() != k.len())
        {
            return Err(f.err(
                "conv_layer_kernel_sizes",
                "kernels, strides and hidden_sizes (one more) must describe the same stages",
            ));
        }
        let channels = f.positive("stem_num_channels")?;
        let sk = f.positive("stem_kernel_size")?;
        let stem_out = f.positive("stem_out_channels")?;
        let stem = Branch::load(
            w,
            ("textnet.stem.conv", "textnet.stem.batch_norm"),
            (stem_out, channels),
            (sk, sk),
            f.positive("stem_stride")?,
            (sk / 2, sk / 2),
            eps,
        )?;
        let stem_act =
            match f.str_opt("stem_act_func")? {
                None => None,
                Some(name) => Some(Act::from_hf(name).filter(|a| *a != Act::XieLu).ok_or_else(
                    || f.err("stem_act_func", format!("`{name}` is not implemented")),
                )?),
            };
        let mut convs = Vec::new();
        for (s, (kss, sts)) in ks.iter().zip(&strides).enumerate() {
            for (i, (&(kh, kw), &stride)) in kss.iter().zip(sts).enumerate() {
                let inp = if i == 0 { hidden[s] } else { hidden[s + 1] };
                let out = hidden[s + 1];
                let p = format!("textnet.encoder.stages.{s}.stage.{i}");
                let name = |n: &str| format!("{p}.{n}");
                let mut branches = vec![Branch::load(
                    w,
                    (&name("main_conv"), &name("main_batch_norm")),
                    (out, inp),
                    (kh, kw),
                    stride,
                    ((kh - 1) / 2, (kw - 1) / 2),
                    eps,
                )?];
                if kw != 1 {
                    branches.push(Branch::load(
                        w,
                        (&name("vertical_conv"), &name("vertical_batch_norm")),
                        (out, inp),
                        (kh, 1),
                        stride,
                        ((kh - 1) / 2, 0),
                        eps,
                    )?);
                }
                if kh != 1 {
                    branches.push(Branch::load(
                        w,
                        (&name("horizontal_conv"), &name("horizontal_batch_norm")),
                        (out, inp),
                        (1, kw),
                        stride,
                        (0, (kw - 1) / 2),
                        eps,
                    )?);
                }
                let identity = if inp == out && stride == 1 {
                    Some(batch_norm(w, &name("rbr_identity"), inp, eps)?)
                } else {
                    None
                };
                convs.push(RepConv { branches, identity });
            }
        }
        let last = *hidden.last().unwrap_or(&stem_out);
        let classifier = linear(w, "fc", labels, last, true)?;
        w.finish()?;
        let image = match f.get("image_size") {
            Some(Value::Array(a)) => match a.as_slice() {
                [h, w] if h == w => h.as_u64().map_or(224, |n| n as usize),
                _ => return Err(f.err("image_size", "only square sizes are implemented")),
            },
            Some(Value::Number(n)) => n.as_u64().map_or(224, |n| n as usize),
            _ => 224,
        };
        Ok(Self {
            channels,
            image,
            stem,
            stem_act,
            convs,
            classifier,
        })
    }
}

impl super::Network for TextNet {
    fn channels(&self) -> usize {
        self.channels
    }

    fn image_size(&self) -> usize {
        self.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let mut x = self.stem.forward(pixels)?;
            if let Some(a) = self.stem_act {
                x = act(a, &x)?;
            }
            for c in &self.convs {
                let mut y = c.branches[0].forward(&x)?;
                for b in &c.branches[1..] {
                    y = (y + b.forward(&x)?)?;
                }
                if let Some((scale, shift)) = &c.identity {
                    y = (y + x.broadcast_mul(scale)?.broadcast_add(shift)?)?;
                }
                x = y.relu()?;
            }
            self.classifier
                .forward(&x.mean(D::Minus1)?.mean(D::Minus1)?)
        };
        run().map_err(ce("forward"))
    }
}
