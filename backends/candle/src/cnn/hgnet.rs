//! HGNet V2: a stem of conv + batch-norm layers with a 2×2 branch and a max-pool branch
//! concatenated, then stages (an optional depthwise downsampling, then HG blocks: a chain of
//! k×k — or light 1×1 + depthwise k×k — convolutions whose outputs are concatenated with the
//! input and squeezed/excited by two 1×1 convolutions, residual after a stage's first block),
//! optional learnable affine (scale, bias) after each activation, and the classifier on the
//! spatial mean. Every tensor is taken by name and shape.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::Linear;
use serde_json::Value;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use super::conv::{ConvBn, Pad};
use super::model::{ce, list};
use crate::activation::{Act, act};
use crate::weights::{Weights, linear};

/// A conv + batch norm, then (when `act`) the activation and the learnable affine block.
#[derive(Debug)]
struct Layer {
    conv: ConvBn,
    act: Option<Act>,
    /// `lab.scale`, `lab.bias` (`[1]` each).
    lab: Option<(Tensor, Tensor)>,
}

impl Layer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.conv.forward(x)?;
        if let Some(a) = self.act {
            h = act(a, &h)?;
        }
        if let Some((s, b)) = &self.lab {
            h = h.broadcast_mul(s)?.broadcast_add(b)?;
        }
        Ok(h)
    }
}

/// One HG block: its chain (each step one layer, or two for light blocks), the squeeze and
/// excitation 1×1 layers.
#[derive(Debug)]
struct HgBlock {
    chain: Vec<Vec<Layer>>,
    squeeze: Layer,
    excite: Layer,
    residual: bool,
}

/// A loaded HGNet V2 classifier.
#[derive(Debug)]
pub(crate) struct HgNet {
    channels: usize,
    image: usize,
    stem1: Layer,
    stem2a: Layer,
    stem2b: Layer,
    stem3: Layer,
    stem4: Layer,
    stages: Vec<(Option<Layer>, Vec<HgBlock>)>,
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

impl HgNet {
    /// Read `config.json` (in `f`) and take the `HGNetV2ForImageClassification` weights.
    pub(crate) fn load(f: &Fields<'_>, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let act_name = f.str_opt("hidden_act")?.unwrap_or("relu");
        let a = Act::from_hf(act_name)
            .filter(|a| *a != Act::XieLu)
            .ok_or_else(|| f.err("hidden_act", format!("`{act_name}` is not implemented")))?;
        let lab = f.bool_or("use_learnable_affine_block", false)?;
        let stem_c = list(f, "stem_channels")?;
        let stem_s = list(f, "stem_strides")
            .map_err(|_| f.err("stem_strides", "only one stride per layer is implemented"))?;
        if stem_c.len() != 3 || stem_s.len() != 5 {
            return Err(f.err("stem_channels", "3 stem widths and 5 stem strides"));
        }
        let ins = list(f, "stage_in_channels")?;
        let mids = list(f, "stage_mid_channels")?;
        let outs = list(f, "stage_out_channels")?;
        let nblocks = list(f, "stage_num_blocks")?;
        let nlayers = list(f, "stage_numb_of_layers")?;
        let kernels = list(f, "stage_kernel_size")?;
        let downs = bools(f, "stage_downsample")?;
        let lights = bools(f, "stage_light_block")?;
        let dstrides = list(f, "stage_downsample_strides").map_err(|_| {
            f.err(
                "stage_downsample_strides",
                "only one stride per stage is implemented",
            )
        })?;
        let n = ins.len();
        if [
            mids.len(),
            outs.len(),
            nblocks.len(),
            nlayers.len(),
            kernels.len(),
            downs.len(),
            lights.len(),
            dstrides.len(),
        ]
        .iter()
        .any(|l| *l != n)
        {
            return Err(f.err(
                "stage_in_channels",
                "every stage_* list must have one entry per stage",
            ));
        }
        // `(k − 1) / 2` on every side: no padding for even kernels.
        let load = |w: &mut Weights,
                    p: &str,
                    (out, inp, k): (usize, usize, usize),
                    (stride, groups): (usize, usize),
                    activation: Option<Act>|
         -> Result<Layer, SkillError> {
            let pad = if k % 2 == 1 {
                Pad::Symmetric
            } else {
                Pad::Explicit([0; 4])
            };
            Ok(Layer {
                conv: ConvBn::load_with(w, p, (out, inp, k), (stride, groups), pad, 1e-5)?,
                act: activation,
                lab: if activation.is_some() && lab {
                    Some((
                        w.take(&format!("{p}.lab.scale"), &[1])?,
                        w.take(&format!("{p}.lab.bias"), &[1])?,
                    ))
                } else {
                    None
                },
            })
        };
        // transformers: only the stem reads `hidden_act`; every other layer is ReLU.
        let relu = Some(Act::Relu);
        let e = "embedder";
        let (c0, c1, c2) = (stem_c[0], stem_c[1], stem_c[2]);
        let stem1 = load(
            w,
            &format!("{e}.stem1"),
            (c1, c0, 3),
            (stem_s[0], 1),
            Some(a),
        )?;
        let stem2a = load(
            w,
            &format!("{e}.stem2a"),
            (c1 / 2, c1, 2),
            (stem_s[1], 1),
            Some(a),
        )?;
        let stem2b = load(
            w,
            &format!("{e}.stem2b"),
            (c1, c1 / 2, 2),
            (stem_s[2], 1),
            Some(a),
        )?;
        let stem3 = load(
            w,
            &format!("{e}.stem3"),
            (c1, 2 * c1, 3),
            (stem_s[3], 1),
            Some(a),
        )?;
        let stem4 = load(
            w,
            &format!("{e}.stem4"),
            (c2, c1, 1),
            (stem_s[4], 1),
            Some(a),
        )?;
        let mut stages = Vec::with_capacity(n);
        for s in 0..n {
            let p = format!("encoder.stages.{s}");
            let down = if downs[s] {
                Some(load(
                    w,
                    &format!("{p}.downsample"),
                    (ins[s], ins[s], 3),
                    (dstrides[s], ins[s]),
                    None,
                )?)
            } else {
                None
            };
            let (mid, out, k) = (mids[s], outs[s], kernels[s]);
            let mut blocks = Vec::with_capacity(nblocks[s]);
            for b in 0..nblocks[s] {
                let bp = format!("{p}.blocks.{b}");
                let inp = if b == 0 { ins[s] } else { out };
                let mut chain = Vec::with_capacity(nlayers[s]);
                for l in 0..nlayers[s] {
                    let i = if l == 0 { inp } else { mid };
                    let lp = format!("{bp}.layers.{l}");
                    chain.push(if lights[s] {
                        vec![
                            load(w, &format!("{lp}.conv1"), (mid, i, 1), (1, 1), None)?,
                            load(w, &format!("{lp}.conv2"), (mid, mid, k), (1, mid), relu)?,
                        ]
                    } else {
                        vec![load(w, &lp, (mid, i, k), (1, 1), relu)?]
                    });
                }
                let total = inp + nlayers[s] * mid;
                blocks.push(HgBlock {
                    chain,
                    squeeze: load(
                        w,
                        &format!("{bp}.aggregation.0"),
                        (out / 2, total, 1),
                        (1, 1),
                        relu,
                    )?,
                    excite: load(
                        w,
                        &format!("{bp}.aggregation.1"),
                        (out, out / 2, 1),
                        (1, 1),
                        relu,
                    )?,
                    residual: b != 0,
                });
            }
            stages.push((down, blocks));
        }
        let last = *outs.last().unwrap_or(&c2);
        let hidden = list(f, "hidden_sizes")?;
        if hidden.last() != Some(&last) {
            return Err(f.err(
                "hidden_sizes",
                "the last size must be the last stage's width",
            ));
        }
        let classifier = linear(w, "fc", labels, last, true)?;
        w.finish()?;
        Ok(Self {
            channels: f.usize_opt("num_channels")?.unwrap_or(3),
            image: f.usize_opt("image_size")?.unwrap_or(224),
            stem1,
            stem2a,
            stem2b,
            stem3,
            stem4,
            stages,
            classifier,
        })
    }
}

impl super::Network for HgNet {
    fn channels(&self) -> usize {
        self.channels
    }

    fn image_size(&self) -> usize {
        self.image
    }

    fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let pad = |t: &Tensor| t.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1);
            let e = pad(&self.stem1.forward(pixels)?)?;
            let b = self.stem2b.forward(&pad(&self.stem2a.forward(&e)?)?)?;
            // 2×2 max pool, stride 1 (ceil mode): the padded map loses its extra row/column.
            let pooled = e.max_pool2d_with_stride(2, 1)?;
            let mut x = self
                .stem4
                .forward(&self.stem3.forward(&Tensor::cat(&[&pooled, &b], 1)?)?)?;
            for (down, blocks) in &self.stages {
                if let Some(d) = down {
                    x = d.forward(&x)?;
                }
                for blk in blocks {
                    let mut outs = vec![x.clone()];
                    let mut h = x.clone();
                    for step in &blk.chain {
                        for l in step {
                            h = l.forward(&h)?;
                        }
                        outs.push(h.clone());
                    }
                    let y = blk
                        .excite
                        .forward(&blk.squeeze.forward(&Tensor::cat(&outs, 1)?)?)?;
                    x = if blk.residual { (y + x)? } else { y };
                }
            }
            self.classifier
                .forward(&x.mean(D::Minus1)?.mean(D::Minus1)?)
        };
        run().map_err(ce("forward"))
    }
}
