//! One parametric ViT-like image encoder (patch convolution → tokens + absolute positions →
//! pre-LN blocks → final LayerNorm) with per-type switches and tensor-name maps, and the
//! image-classification heads of its types.
//!
//! Switches: a `[CLS]` token or none (I-JEPA: mean pooling), DeiT's distillation token,
//! DINOv2's layer scale, SwiGLU MLP and register tokens, BEiT's relative position bias (per
//! layer or shared), layer scale, key without bias and optional absolute positions, and the
//! pooling the classifier reads (`[CLS]`, mean of all tokens, `[CLS]` ⊕ mean of the patch
//! tokens, or BEiT's LayerNorm of the patch-token mean). Every tensor is taken
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
    "beit",
    "data2vec-vision",
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
    /// BEiT: ViT names, `lambda_{1,2}` layer scale, no key bias, relative position bias.
    Beit,
}

/// BEiT's relative position bias tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelPos {
    None,
    /// One table per layer (`attention.attention.relative_position_bias`).
    PerLayer,
    /// One table for all layers (`encoder.relative_position_bias`).
    Shared,
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
    /// `pooler.layernorm` of the mean of the patch tokens (BEiT `use_mean_pooling`).
    PatchMeanNorm,
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
    /// Absolute position embeddings.
    pub(crate) abs_pos: bool,
    pub(crate) rel_pos: RelPos,
    /// BEiT's `lambda_{1,2}` (`layer_scale_init_value > 0`); DINOv2 always has its own.
    pub(crate) layer_scale: bool,
    /// The final `layernorm` (BEiT with mean pooling has none).
    pub(crate) final_norm: bool,
    pub(crate) mask_token: bool,
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
        "beit" => ("beit", Layout::Beit, true, false, Pool::Cls),
        "data2vec-vision" => ("data2vec_vision", Layout::Beit, true, false, Pool::Cls),
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
        Layout::Vit | Layout::Beit => f.positive("intermediate_size")?,
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
    let beit = layout == Layout::Beit;
    let mean_pooling = beit && f.bool_or("use_mean_pooling", true)?;
    let pool = if mean_pooling {
        Pool::PatchMeanNorm
    } else {
        pool
    };
    let rel_pos = match (
        beit && f.bool_or("use_relative_position_bias", false)?,
        beit && f.bool_or("use_shared_relative_position_bias", false)?,
    ) {
        (false, false) => RelPos::None,
        (true, false) => RelPos::PerLayer,
        (false, true) => RelPos::Shared,
        (true, true) => {
            return Err(f.err(
                "use_shared_relative_position_bias",
                "both a shared and per-layer relative position bias is not implemented",
            ));
        }
    };
    let layer_scale = beit && f.f64("layer_scale_init_value")? > 0.0;
    let abs_pos = !beit || f.bool_or("use_absolute_position_embeddings", false)?;
    let mask_token = match layout {
        Layout::Dinov2 => f.bool_or("use_mask_token", true)?,
        Layout::Beit => f.bool_or("use_mask_token", false)?,
        Layout::Vit => false,
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
        abs_pos,
        rel_pos,
        layer_scale,
        final_norm: !mean_pooling,
        mask_token,
    })
}

/// BEiT's relative position index of a `wh`×`ww` patch grid plus `[CLS]`
/// (`(wh·ww + 1)²` entries into a table of `(2wh−1)(2ww−1) + 3` rows; transformers'
/// `generate_relative_position_index`).
pub(crate) fn beit_relative_index(wh: usize, ww: usize) -> Vec<u32> {
    let area = wh * ww;
    let distances = (2 * wh - 1) * (2 * ww - 1) + 3;
    let n = area + 1;
    let mut idx = vec![0u32; n * n];
    for i in 0..area {
        for j in 0..area {
            let dy = (i / ww) + wh - 1 - (j / ww);
            let dx = (i % ww) + ww - 1 - (j % ww);
            idx[(i + 1) * n + j + 1] = (dy * (2 * ww - 1) + dx) as u32;
        }
    }
    // [CLS] to token
    idx[..n].fill((distances - 3) as u32);
    for i in 0..n {
        idx[i * n] = (distances - 2) as u32; // token to [CLS]
    }
    idx[0] = (distances - 1) as u32; // [CLS] to [CLS]
    idx
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
    /// BEiT's per-layer relative position bias table.
    rel_table: Option<Tensor>,
}

impl Block {
    fn load(b: &mut Body<'_>, s: &Spec, l: usize) -> Result<Self, SkillError> {
        let p = format!("encoder.layer.{l}");
        let (h, i) = (s.hidden, s.inter);
        let a = format!("{p}.attention");
        let key_bias = s.qkv_bias && s.layout != Layout::Beit;
        let attn = SelfAttention {
            q: b.linear(&format!("{a}.attention.query"), h, h, s.qkv_bias)?,
            k: b.linear(&format!("{a}.attention.key"), h, h, key_bias)?,
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
                rel_table: None,
            },
            Layout::Beit => Self {
                norm1: b.norm(&format!("{p}.layernorm_before"), h, s.eps)?,
                attn,
                scale1: if s.layer_scale {
                    Some(b.take(&format!("{p}.lambda_1"), &[h])?)
                } else {
                    None
                },
                norm2: b.norm(&format!("{p}.layernorm_after"), h, s.eps)?,
                mlp: Mlp::Plain(
                    b.linear(&format!("{p}.intermediate.dense"), i, h, true)?,
                    b.linear(&format!("{p}.output.dense"), h, i, true)?,
                ),
                scale2: if s.layer_scale {
                    Some(b.take(&format!("{p}.lambda_2"), &[h])?)
                } else {
                    None
                },
                rel_table: if s.rel_pos == RelPos::PerLayer {
                    Some(b.take(
                        &format!(
                            "{a}.attention.relative_position_bias.relative_position_bias_table"
                        ),
                        &[rel_rows(s), s.heads],
                    )?)
                } else {
                    None
                },
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
                rel_table: None,
            },
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        a: Act,
        shared_bias: Option<&Tensor>,
        index: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let scaled = |t: Tensor, s: &Option<Tensor>| match s {
            Some(s) => t.broadcast_mul(s),
            None => Ok(t),
        };
        let own = match &self.rel_table {
            Some(t) => Some(relative_bias(t, index)?),
            None => None,
        };
        let bias = own.as_ref().or(shared_bias);
        let y = scaled(
            self.attn.forward(&self.norm1.forward(x)?, bias)?,
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

/// Rows of a BEiT relative position bias table.
fn rel_rows(s: &Spec) -> usize {
    let w = s.image / s.patch;
    (2 * w - 1) * (2 * w - 1) + 3
}

/// `[1, heads, n, n]` from a `[rows, heads]` table and the flat `(n·n)` index.
fn relative_bias(table: &Tensor, index: &Tensor) -> candle_core::Result<Tensor> {
    let heads = table.dim(1)?;
    let n = (index.dim(0)? as f64).sqrt() as usize;
    table
        .index_select(index, 0)?
        .reshape((n, n, heads))?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()
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
    pos: Option<Tensor>,
    blocks: Vec<Block>,
    /// The final LayerNorm, or BEiT's pooler LayerNorm (mean pooling).
    norm: LayerNorm,
    shared_table: Option<Tensor>,
    rel_index: Tensor,
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
        let pos = if spec.abs_pos {
            Some(b.take(&format!("{e}.position_embeddings"), &[1, n_pos, h])?)
        } else {
            None
        };
        if spec.mask_token {
            // The masked-image-modeling token: not used for classification.
            let name = b.name(&format!("{e}.mask_token"));
            b.w.leave(|n| n == name);
        }
        let shared_table = if spec.rel_pos == RelPos::Shared {
            Some(b.take(
                "encoder.relative_position_bias.relative_position_bias_table",
                &[rel_rows(&spec), spec.heads],
            )?)
        } else {
            None
        };
        let side = spec.image / spec.patch;
        let rel_index = Tensor::new(beit_relative_index(side, side).as_slice(), b.w.device())
            .map_err(ce("relative position index"))?;
        let blocks = (0..spec.layers)
            .map(|l| Block::load(&mut b, &spec, l))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = if spec.final_norm {
            b.norm("layernorm", h, spec.eps)?
        } else {
            b.norm("pooler.layernorm", h, spec.eps)?
        };
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
            shared_table,
            rel_index,
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
            let mut x = Tensor::cat(&parts, 1)?;
            if let Some(pos) = &self.pos {
                x = x.broadcast_add(pos)?;
            }
            if let Some(r) = &self.registers {
                // After the positions: [CLS], registers, patches.
                let n = x.dim(1)?;
                let r = r.expand((b, self.spec.registers, self.spec.hidden))?;
                x = Tensor::cat(&[&x.narrow(1, 0, 1)?, &r, &x.narrow(1, 1, n - 1)?], 1)?;
            }
            let mut x = x.contiguous()?;
            let shared = match &self.shared_table {
                Some(t) => Some(relative_bias(t, &self.rel_index)?),
                None => None,
            };
            for block in &self.blocks {
                x = block.forward(&x, self.spec.act, shared.as_ref(), &self.rel_index)?;
            }
            if self.spec.final_norm {
                x = self.norm.forward(&x)?;
            }
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
                Pool::PatchMeanNorm => {
                    let n = x.dim(1)?;
                    self.norm.forward(&x.narrow(1, 1, n - 1)?.mean(1)?)?
                }
            };
            self.classifier.forward(&pooled)
        };
        run().map_err(ce("forward"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beit_index_matches_transformers() {
        // transformers: BeitRelativePositionBias.generate_relative_position_index((2, 2))
        let want = [
            [11, 9, 9, 9, 9],
            [10, 4, 3, 1, 0],
            [10, 5, 4, 2, 1],
            [10, 7, 6, 4, 3],
            [10, 8, 7, 5, 4],
        ];
        let got = beit_relative_index(2, 2);
        let want: Vec<u32> = want.iter().flatten().copied().collect();
        assert_eq!(got, want);
    }
}
