//! One parametric ViT-like image encoder (patch convolution → tokens + absolute positions →
//! pre-LN blocks → final LayerNorm) with per-type switches and tensor-name maps, and the
//! image-classification heads of its types.
//!
//! Switches: a `[CLS]` token or none (I-JEPA: mean pooling), DeiT's distillation token,
//! DINOv2's layer scale, SwiGLU MLP and register tokens, and the pooling the classifier reads
//! (`[CLS]`, mean of all tokens, or `[CLS]` ⊕ mean of the patch tokens). Every tensor is taken
//! by name and shape; one nobody takes is refused ([`Weights::finish`]).

use candle_core::{DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::attention::SelfAttention;
use crate::weights::Weights;

/// The model types [`translate`] knows.
pub const MODEL_TYPES: &[&str] = &[
    "deit",
    "dinov2",
    "dinov2_with_registers",
    "ijepa",
    "vit",
    "vit_msn",
];

/// Which block layout and names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// ViT: `layernorm_before`, `intermediate.dense`, `output.dense`, `layernorm_after`.
    Vit,
    /// DINOv2: `norm1`, `mlp.{fc1,fc2}` or SwiGLU `mlp.{gate,up,down}_proj`, `norm2`,
    /// `layer_scale{1,2}.lambda1`.
    Dinov2,
}

/// What the classifier reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    /// The first token.
    Cls,
    /// The mean of every token.
    Mean,
    /// `[CLS]` concatenated with the mean of the patch tokens (DINOv2).
    ClsAndPatchMean,
}

/// A ViT-like encoder, as [`translate`] reads it from `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) prefix: &'static str,
    pub(crate) layout: Layout,
    pub(crate) hidden: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) inter: usize,
    pub(crate) act: Act,
    pub(crate) eps: f64,
    pub(crate) image: usize,
    pub(crate) patch: usize,
    pub(crate) channels: usize,
    pub(crate) qkv_bias: bool,
    pub(crate) cls: bool,
    pub(crate) distill: bool,
    pub(crate) registers: usize,
    pub(crate) swiglu: bool,
    pub(crate) pool: Pool,
}

impl Spec {
    /// Patches per image.
    pub(crate) fn patches(&self) -> usize {
        (self.image / self.patch).pow(2)
    }
}

/// `config.json` of `model_type` → [`Spec`], field by field.
pub(crate) fn translate(model_type: &str, f: &Fields<'_>) -> Result<Spec, SkillError> {
    let (prefix, layout, cls, distill, pool) = match model_type {
        "vit" | "vit_msn" => ("vit", Layout::Vit, true, false, Pool::Cls),
        "deit" => ("deit", Layout::Vit, true, true, Pool::Cls),
        "ijepa" => ("ijepa", Layout::Vit, false, false, Pool::Mean),
        "dinov2" => ("dinov2", Layout::Dinov2, true, false, Pool::ClsAndPatchMean),
        "dinov2_with_registers" => (
            "dinov2_with_registers",
            Layout::Dinov2,
            true,
            false,
            Pool::ClsAndPatchMean,
        ),
        other => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not a ViT-like type the vision encoder implements"),
            ));
        }
    };
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    if !hidden.is_multiple_of(heads) {
        return Err(f.err(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden}"),
        ));
    }
    let image = f.positive("image_size")?;
    let patch = f.positive("patch_size")?;
    if !image.is_multiple_of(patch) {
        return Err(f.err(
            "patch_size",
            format!("{patch} does not divide image_size {image}"),
        ));
    }
    let act_name = f
        .str_opt("hidden_act")?
        .ok_or_else(|| f.err("hidden_act", "missing (required)"))?;
    let act = match Act::from_hf(act_name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu)) => a,
        _ => {
            return Err(f.err(
                "hidden_act",
                format!("`{act_name}` is not implemented (gelu, gelu_new, relu, silu)"),
            ));
        }
    };
    let swiglu = layout == Layout::Dinov2 && f.bool_or("use_swiglu_ffn", false)?;
    let inter = match layout {
        Layout::Vit => f.positive("intermediate_size")?,
        Layout::Dinov2 => {
            let ratio = f.f64("mlp_ratio")?;
            if !(ratio.is_finite() && ratio > 0.0) {
                return Err(f.err("mlp_ratio", "must be positive"));
            }
            let h = (hidden as f64 * ratio) as usize;
            // transformers: two thirds of the MLP width, rounded up to a multiple of 8.
            if swiglu {
                (h * 2 / 3).div_ceil(8) * 8
            } else {
                h
            }
        }
    };
    if layout == Layout::Dinov2 && !f.bool_or("apply_layernorm", true)? {
        return Err(f.err("apply_layernorm", "`false` is not implemented"));
    }
    let registers = if model_type == "dinov2_with_registers" {
        f.usize_opt("num_register_tokens")?.unwrap_or(0)
    } else {
        0
    };
    Ok(Spec {
        prefix,
        layout,
        hidden,
        layers: f.positive("num_hidden_layers")?,
        heads,
        inter,
        act,
        eps: f.f64("layer_norm_eps")?,
        image,
        patch,
        channels: f.usize_opt("num_channels")?.unwrap_or(3),
        qkv_bias: f.bool_or("qkv_bias", true)?,
        cls,
        distill,
        registers,
        swiglu,
        pool,
    })
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("vision encoder {context}: {e}"),
    }
}

/// Tensors under the body prefix; a few checkpoints (ViT-MSN) save part of the body without it.
struct Body<'a> {
    w: &'a mut Weights,
    prefix: String,
}

impl Body<'_> {
    fn name(&self, name: &str) -> String {
        let full = format!("{}{name}", self.prefix);
        if self.w.has(&full) || !self.w.has(name) {
            full
        } else {
            name.to_owned()
        }
    }

    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, SkillError> {
        let n = self.name(name);
        self.w.take(&n, shape)
    }

    fn linear(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> Result<Linear, SkillError> {
        let w = self.take(&format!("{name}.weight"), &[out, inp])?;
        let b = if bias {
            Some(self.take(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear::new(w, b))
    }

    fn norm(&mut self, name: &str, n: usize, eps: f64) -> Result<LayerNorm, SkillError> {
        Ok(LayerNorm::new(
            self.take(&format!("{name}.weight"), &[n])?,
            self.take(&format!("{name}.bias"), &[n])?,
            eps,
        ))
    }
}

#[derive(Debug, Clone)]
enum Mlp {
    Plain(Linear, Linear),
    SwiGlu {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: SelfAttention,
    scale1: Option<Tensor>,
    norm2: LayerNorm,
    mlp: Mlp,
    scale2: Option<Tensor>,
}

impl Block {
    fn load(b: &mut Body<'_>, s: &Spec, l: usize) -> Result<Self, SkillError> {
        let p = format!("encoder.layer.{l}");
        let (h, i) = (s.hidden, s.inter);
        let a = format!("{p}.attention");
        let attn = SelfAttention {
            q: b.linear(&format!("{a}.attention.query"), h, h, s.qkv_bias)?,
            k: b.linear(&format!("{a}.attention.key"), h, h, s.qkv_bias)?,
            v: b.linear(&format!("{a}.attention.value"), h, h, s.qkv_bias)?,
            o: b.linear(&format!("{a}.output.dense"), h, h, true)?,
            heads: s.heads,
        };
        Ok(match s.layout {
            Layout::Vit => Self {
                norm1: b.norm(&format!("{p}.layernorm_before"), h, s.eps)?,
                attn,
                scale1: None,
                norm2: b.norm(&format!("{p}.layernorm_after"), h, s.eps)?,
                mlp: Mlp::Plain(
                    b.linear(&format!("{p}.intermediate.dense"), i, h, true)?,
                    b.linear(&format!("{p}.output.dense"), h, i, true)?,
                ),
                scale2: None,
            },
            Layout::Dinov2 => Self {
                norm1: b.norm(&format!("{p}.norm1"), h, s.eps)?,
                attn,
                scale1: Some(b.take(&format!("{p}.layer_scale1.lambda1"), &[h])?),
                norm2: b.norm(&format!("{p}.norm2"), h, s.eps)?,
                mlp: if s.swiglu {
                    Mlp::SwiGlu {
                        gate: b.linear(&format!("{p}.mlp.gate_proj"), i, h, true)?,
                        up: b.linear(&format!("{p}.mlp.up_proj"), i, h, true)?,
                        down: b.linear(&format!("{p}.mlp.down_proj"), h, i, true)?,
                    }
                } else {
                    Mlp::Plain(
                        b.linear(&format!("{p}.mlp.fc1"), i, h, true)?,
                        b.linear(&format!("{p}.mlp.fc2"), h, i, true)?,
                    )
                },
                scale2: Some(b.take(&format!("{p}.layer_scale2.lambda1"), &[h])?),
            },
        })
    }

    fn forward(&self, x: &Tensor, a: Act) -> candle_core::Result<Tensor> {
        let scaled = |t: Tensor, s: &Option<Tensor>| match s {
            Some(s) => t.broadcast_mul(s),
            None => Ok(t),
        };
        let y = scaled(
            self.attn.forward(&self.norm1.forward(x)?, None)?,
            &self.scale1,
        )?;
        let x = (x + y)?;
        let n = self.norm2.forward(&x)?;
        let m = match &self.mlp {
            Mlp::Plain(fc1, fc2) => fc2.forward(&act(a, &fc1.forward(&n)?)?)?,
            Mlp::SwiGlu { gate, up, down } => {
                down.forward(&(gate.forward(&n)?.silu()? * up.forward(&n)?)?)?
            }
        };
        &x + scaled(m, &self.scale2)?
    }
}

/// A ViT-like image classifier.
#[derive(Debug)]
pub(crate) struct VitModel {
    spec: Spec,
    patch_w: Tensor,
    patch_b: Tensor,
    cls: Option<Tensor>,
    distill: Option<Tensor>,
    registers: Option<Tensor>,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    classifier: Linear,
}

impl VitModel {
    /// Take every tensor of `spec`'s `*ForImageClassification` checkpoint with `labels`
    /// classes from `w`.
    pub(crate) fn load(spec: Spec, w: &mut Weights, labels: usize) -> Result<Self, SkillError> {
        let (h, c, p) = (spec.hidden, spec.channels, spec.patch);
        w.convert(DType::F32)?;
        let mut b = Body {
            w,
            prefix: format!("{}.", spec.prefix),
        };
        let e = "embeddings";
        let patch_w = b.take(
            &format!("{e}.patch_embeddings.projection.weight"),
            &[h, c, p, p],
        )?;
        let patch_b = b.take(&format!("{e}.patch_embeddings.projection.bias"), &[h])?;
        let cls = if spec.cls {
            Some(b.take(&format!("{e}.cls_token"), &[1, 1, h])?)
        } else {
            None
        };
        let distill = if spec.distill {
            Some(b.take(&format!("{e}.distillation_token"), &[1, 1, h])?)
        } else {
            None
        };
        let registers = if spec.registers > 0 {
            Some(b.take(&format!("{e}.register_tokens"), &[1, spec.registers, h])?)
        } else {
            None
        };
        let n_pos = spec.patches() + usize::from(spec.cls) + usize::from(spec.distill);
        let pos = b.take(&format!("{e}.position_embeddings"), &[1, n_pos, h])?;
        if spec.layout == Layout::Dinov2 {
            // The masked-image-modeling token: not used for classification.
            let name = b.name(&format!("{e}.mask_token"));
            b.w.leave(|n| n == name);
        }
        let blocks = (0..spec.layers)
            .map(|l| Block::load(&mut b, &spec, l))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = b.norm("layernorm", h, spec.eps)?;
        let width = if spec.pool == Pool::ClsAndPatchMean {
            2 * h
        } else {
            h
        };
        let classifier = {
            let weight = b.w.take("classifier.weight", &[labels, width])?;
            let bias = b.w.take("classifier.bias", &[labels])?;
            Linear::new(weight, Some(bias))
        };
        b.w.finish()?;
        Ok(Self {
            spec,
            patch_w,
            patch_b,
            cls,
            distill,
            registers,
            pos,
            blocks,
            norm,
            classifier,
        })
    }

    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Logits `[batch, labels]` of preprocessed `pixels` `[batch, channels, size, size]`.
    pub(crate) fn logits(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let b = pixels.dim(0)?;
            let x = pixels.conv2d(&self.patch_w, 0, self.spec.patch, 1, 1)?;
            let x = x
                .broadcast_add(&self.patch_b.reshape((1, self.spec.hidden, 1, 1))?)?
                .flatten_from(2)?
                .transpose(1, 2)?;
            let mut parts = Vec::new();
            for t in [&self.cls, &self.distill].into_iter().flatten() {
                parts.push(t.expand((b, 1, self.spec.hidden))?);
            }
            parts.push(x);
            let mut x = Tensor::cat(&parts, 1)?.broadcast_add(&self.pos)?;
            if let Some(r) = &self.registers {
                // After the positions: [CLS], registers, patches.
                let n = x.dim(1)?;
                let r = r.expand((b, self.spec.registers, self.spec.hidden))?;
                x = Tensor::cat(&[&x.narrow(1, 0, 1)?, &r, &x.narrow(1, 1, n - 1)?], 1)?;
            }
            let x = x.contiguous()?;
            let mut x = x;
            for block in &self.blocks {
                x = block.forward(&x, self.spec.act)?;
            }
            let x = self.norm.forward(&x)?;
            let pooled = match self.spec.pool {
                Pool::Cls => x.narrow(1, 0, 1)?.squeeze(1)?,
                Pool::Mean => x.mean(1)?,
                Pool::ClsAndPatchMean => {
                    let skip = 1 + self.spec.registers;
                    let n = x.dim(1)?;
                    let cls = x.narrow(1, 0, 1)?.squeeze(1)?;
                    let mean = x.narrow(1, skip, n - skip)?.mean(1)?;
                    Tensor::cat(&[&cls, &mean], 1)?
                }
            };
            self.classifier.forward(&pooled)
        };
        run().map_err(ce("forward"))
    }
}
