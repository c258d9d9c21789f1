//! CLIP-style dual encoders: a ViT image tower and a text tower with the same pre-LN block
//! (`layer_norm1`, `self_attn`, `layer_norm2`, `mlp.fc1/fc2`), projected into one space.
//!
//! - CLIP (clip, metaclip_2, clipseg): image `[CLS]` + positions, `pre_layrnorm`, the
//!   `[CLS]` state through `post_layernorm` and `visual_projection`; causal text tower pooled at
//!   the first `eos_token_id` (the legacy `eos_token_id == 2` configs: at the highest id),
//!   `text_projection`; logits `exp(logit_scale)·cos`, softmax over texts.
//! - SigLIP (siglip): no `[CLS]`, a patch bias, `post_layernorm` on every token and an
//!   attention-pooling head (`probe`); bidirectional text tower pooled at the last position,
//!   `head`; logits `exp(logit_scale)·cos + logit_bias`, a sigmoid per pair.
//! - SigLIP 2 (siglip2): SigLIP with NaFlex patch embeddings — each image keeps its aspect
//!   ratio as an `h × w` grid of patch rows (a linear patch embedding), and the square table of
//!   learned positions is resized to `h × w` (bilinear, antialiased, as `F.interpolate`).
//! - Chinese-CLIP and AltCLIP: CLIP's image tower with a BERT-like text tower (the
//!   [`crate::encoder::bertlike`] body: BERT, XLM-R) pooled at `[CLS]` (AltCLIP after its
//!   `pre_LN` and `transformation`), then `text_projection`; CLIP's logits.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::attention::SelfAttention;
use crate::weights::{Weights, layer_norm as norm, linear};

/// The model types [`translate`] knows.
pub const MODEL_TYPES: &[&str] = &[
    "altclip",
    "chinese_clip",
    "clip",
    "clipseg",
    "metaclip_2",
    "siglip",
    "siglip2",
];

/// CLIP or SigLIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Clip,
    Siglip,
    /// CLIP with a BERT text tower.
    ChineseClip,
    /// CLIP with an XLM-R text tower, `pre_LN` and `transformation`.
    AltClip,
}

/// One tower's sizes.
#[derive(Debug, Clone)]
pub(crate) struct Tower {
    pub(crate) hidden: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) inter: usize,
    pub(crate) act: Act,
    pub(crate) eps: f64,
}

/// An image tower, as [`translate_vision`] reads it from its `config.json` section.
#[derive(Debug, Clone)]
pub(crate) struct VisionSpec {
    pub(crate) kind: Kind,
    pub(crate) tower: Tower,
    pub(crate) image: usize,
    pub(crate) patch: usize,
    /// SigLIP 2: the side of the square position table (`num_patches` = side²); images come as
    /// patch rows of any `h × w` grid.
    pub(crate) naflex: Option<usize>,
}

/// A dual encoder, as [`translate`] reads it from `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) kind: Kind,
    pub(crate) text: Tower,
    pub(crate) vision: VisionSpec,
    pub(crate) vocab: usize,
    pub(crate) max_pos: usize,
    pub(crate) eos: u32,
    pub(crate) pad: u32,
    /// CLIP's projection width.
    pub(crate) proj: usize,
    /// The BERT-like text tower (Chinese-CLIP, AltCLIP).
    pub(crate) bert_text: Option<crate::encoder::bertlike::Spec>,
    /// AltCLIP's `project_dim`.
    pub(crate) project_dim: usize,
}

pub(crate) fn tower(f: &Fields<'_>) -> Result<Tower, SkillError> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    if !hidden.is_multiple_of(heads) {
        return Err(f.err(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden}"),
        ));
    }
    let name = f.str_opt("hidden_act")?.unwrap_or("quick_gelu");
    let act = match Act::from_hf(name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu | Act::QuickGelu)) => a,
        _ => {
            return Err(f.err(
                "hidden_act",
                format!(
                    "`{name}` is not implemented (quick_gelu, gelu, gelu_pytorch_tanh, relu, silu)"
                ),
            ));
        }
    };
    Ok(Tower {
        hidden,
        layers: f.positive("num_hidden_layers")?,
        heads,
        inter: f.positive("intermediate_size")?,
        act,
        eps: f.f64("layer_norm_eps")?,
    })
}

fn sub<'a>(
    f: &Fields<'a>,
    field: &str,
) -> Result<&'a serde_json::Map<String, serde_json::Value>, SkillError> {
    match f.map.get(field) {
        Some(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(f.err(field, "missing (the tower's configuration)")),
    }
}

/// `config.json` of `model_type` → [`Spec`], field by field (`text_config`, `vision_config`).
pub(crate) fn translate(model_type: &str, f: &Fields<'_>) -> Result<Spec, SkillError> {
    let kind = match model_type {
        "clip" | "clipseg" | "metaclip_2" => Kind::Clip,
        "siglip" | "siglip2" => Kind::Siglip,
        "chinese_clip" => Kind::ChineseClip,
        "altclip" => Kind::AltClip,
        other => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not a dual encoder the candle backend implements"),
            ));
        }
    };
    let tm = sub(f, "text_config")?;
    let vm = sub(f, "vision_config")?;
    let t = Fields {
        path: f.path,
        map: tm,
    };
    let v = Fields {
        path: f.path,
        map: vm,
    };
    let id = |field: &str| -> Result<u32, SkillError> {
        t.usize_opt(field)?
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| t.err(field, "missing (text_config)"))
    };
    let bert_text = match kind {
        Kind::ChineseClip => Some(crate::encoder::bertlike::translate("bert", &t)?),
        Kind::AltClip => Some(crate::encoder::bertlike::translate("xlm-roberta", &t)?),
        _ => None,
    };
    let text = match &bert_text {
        Some(b) => Tower {
            hidden: b.hidden,
            layers: b.layers,
            heads: b.heads,
            inter: b.inter,
            act: b.act,
            eps: b.eps,
        },
        None => tower(&t)?,
    };
    let vision = translate_vision(kind, model_type == "siglip2", &v)?;
    if kind == Kind::Siglip && text.hidden != vision.tower.hidden {
        return Err(v.err(
            "hidden_size",
            "SigLIP's towers must have the same width (the text head projects to it)",
        ));
    }
    let project_dim = if kind == Kind::AltClip {
        t.positive("project_dim")?
    } else {
        0
    };
    Ok(Spec {
        kind,
        vocab: t.positive("vocab_size")?,
        max_pos: match &bert_text {
            Some(b) => match b.pos_offset {
                Some(p) => b.max_pos.saturating_sub(p as usize + 1),
                None => b.max_pos,
            },
            None => t.positive("max_position_embeddings")?,
        },
        eos: if bert_text.is_some() {
            0
        } else {
            id("eos_token_id")?
        },
        pad: if kind == Kind::Siglip {
            id("pad_token_id")?
        } else {
            0
        },
        proj: match kind {
            Kind::Siglip => t.positive_opt("projection_size")?.unwrap_or(text.hidden),
            _ => f.positive("projection_dim")?,
        },
        text,
        vision,
        bert_text,
        project_dim,
    })
}

/// An image tower's section of `config.json` (`vision_config`, or a vision model's own config)
/// → [`VisionSpec`]; `naflex`: SigLIP 2's patch rows.
pub(crate) fn translate_vision(
    kind: Kind,
    naflex: bool,
    v: &Fields<'_>,
) -> Result<VisionSpec, SkillError> {
    let tower = tower(v)?;
    let patch = v.positive("patch_size")?;
    let naflex = if naflex {
        let n = v.positive("num_patches")?;
        let side = n.isqrt();
        if side * side != n {
            return Err(v.err(
                "num_patches",
                format!("{n} is not a square (the position table is side × side)"),
            ));
        }
        Some(side)
    } else {
        None
    };
    let image = match naflex {
        Some(side) => side * patch,
        None => v.positive("image_size")?,
    };
    if !image.is_multiple_of(patch) {
        return Err(v.err(
            "patch_size",
            format!("{patch} does not divide image_size {image}"),
        ));
    }
    if v.usize_opt("num_channels")?.unwrap_or(3) != 3 {
        return Err(v.err("num_channels", "only RGB (3) is implemented"));
    }
    Ok(VisionSpec {
        kind,
        tower,
        image,
        patch,
        naflex,
    })
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("dual encoder {context}: {e}"),
    }
}

#[derive(Debug)]
struct Block {
    ln1: LayerNorm,
    attn: SelfAttention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Debug)]
struct Encoder {
    blocks: Vec<Block>,
    act: Act,
}

impl Encoder {
    /// `layers`: the blocks' name (`encoder.layers`; AltCLIP's image tower: `encoder.layer`).
    fn load(w: &mut Weights, p: &str, layers: &str, t: &Tower) -> Result<Self, SkillError> {
        let h = t.hidden;
        let blocks = (0..t.layers)
            .map(|l| {
                let b = format!("{p}{layers}.{l}");
                let a = format!("{b}.self_attn");
                Ok(Block {
                    ln1: norm(w, &format!("{b}.layer_norm1"), h, t.eps)?,
                    attn: SelfAttention {
                        q: linear(w, &format!("{a}.q_proj"), h, h, true)?,
                        k: linear(w, &format!("{a}.k_proj"), h, h, true)?,
                        v: linear(w, &format!("{a}.v_proj"), h, h, true)?,
                        o: linear(w, &format!("{a}.out_proj"), h, h, true)?,
                        heads: t.heads,
                    },
                    ln2: norm(w, &format!("{b}.layer_norm2"), h, t.eps)?,
                    fc1: linear(w, &format!("{b}.mlp.fc1"), t.inter, h, true)?,
                    fc2: linear(w, &format!("{b}.mlp.fc2"), h, t.inter, true)?,
                })
            })
            .collect::<Result<_, SkillError>>()?;
        Ok(Self { blocks, act: t.act })
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for b in &self.blocks {
            x = (&x + b.attn.forward(&b.ln1.forward(&x)?, mask)?)?;
            let m = b
                .fc2
                .forward(&act(self.act, &b.fc1.forward(&b.ln2.forward(&x)?)?)?)?;
            x = (x + m)?;
        }
        Ok(x)
    }
}

/// SigLIP's attention-pooling head.
#[derive(Debug)]
struct PoolHead {
    probe: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Act,
}

impl PoolHead {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, h) = x.dims3()?;
        let d = h / self.heads;
        let probe = self.probe.expand((b, 1, h))?.contiguous()?;
        let split = |t: Tensor, len: usize| -> candle_core::Result<Tensor> {
            t.reshape((b, len, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(&probe)?, 1)?;
        let k = split(self.k.forward(x)?, n)?;
        let v = split(self.v.forward(x)?, n)?;
        let s = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        let p = candle_nn::ops::softmax_last_dim(&s)?;
        let a = self
            .o
            .forward(&p.matmul(&v)?.transpose(1, 2)?.reshape((b, 1, h))?)?;
        let m = self
            .fc2
            .forward(&act(self.act, &self.fc1.forward(&self.ln.forward(&a)?)?)?)?;
        (a + m)?.squeeze(1)
    }
}

/// The text tower: CLIP's own, or a BERT-like body.
#[derive(Debug)]
enum TextTower {
    Clip(ClipText),
    Bert {
        body: Box<crate::encoder::bertlike::BertBody>,
        pre_ln: Option<LayerNorm>,
        transformation: Option<Linear>,
    },
}

/// CLIP's (and SigLIP's) own text tower, up to its pooled output (transformers'
/// `pooler_output`: CLIP's end-of-text token after the final LayerNorm, SigLIP's last position).
#[derive(Debug)]
pub(crate) struct ClipText {
    kind: Kind,
    eos: u32,
    tok: Tensor,
    tpos: Tensor,
    enc: Encoder,
    final_ln: LayerNorm,
}

impl ClipText {
    /// Take the tower's tensors under `p` (`text_model.` or none) from `w`: `kind`'s tower of
    /// sizes `t`, `vocab` tokens, `max_pos` positions, pooling at `eos` (CLIP).
    pub(crate) fn load(
        w: &mut Weights,
        p: &str,
        (kind, t, vocab, max_pos, eos): (Kind, &Tower, usize, usize, u32),
    ) -> Result<Self, SkillError> {
        let te = format!("{p}embeddings");
        let th = t.hidden;
        Ok(Self {
            kind,
            eos,
            tok: w.take(&format!("{te}.token_embedding.weight"), &[vocab, th])?,
            tpos: w.take(&format!("{te}.position_embedding.weight"), &[max_pos, th])?,
            enc: Encoder::load(w, p, "encoder.layers", t)?,
            final_ln: norm(w, &format!("{p}final_layer_norm"), th, t.eps)?,
        })
    }

    /// The pooled output `[1, hidden]` of one unpadded input (ids checked by the caller).
    pub(crate) fn pooled(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        let n = ids.len();
        let dev = self.tok.device();
        let run = || -> candle_core::Result<Tensor> {
            let x = self.tok.index_select(&Tensor::new(ids, dev)?, 0)?;
            let x = (x + self.tpos.narrow(0, 0, n)?)?.unsqueeze(0)?;
            let mask = if self.kind == Kind::Clip && n > 1 {
                let m: Vec<f32> = (0..n)
                    .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
                    .collect();
                Some(Tensor::from_vec(m, (1, 1, n, n), dev)?)
            } else {
                None
            };
            let x = self
                .final_ln
                .forward(&self.enc.forward(&x, mask.as_ref())?)?;
            x.get(0)?
                .get(eos_position(self.kind, self.eos, ids))?
                .unsqueeze(0)
        };
        run().map_err(ce("text tower"))
    }
}

/// Where the text tower pools: SigLIP the last position; CLIP the first `eos` (legacy configs
/// with eos 2: the highest id, as transformers does).
fn eos_position(kind: Kind, eos: u32, ids: &[u32]) -> usize {
    match kind {
        Kind::Siglip => ids.len().saturating_sub(1),
        _ if eos == 2 => ids
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |(i, _)| i),
        _ => ids.iter().position(|&t| t == eos).unwrap_or(0),
    }
}

/// A loaded image tower, up to its pooled output (transformers' `pooler_output`).
#[derive(Debug)]
pub(crate) struct VisionTower {
    spec: VisionSpec,
    patch_w: Tensor,
    patch_b: Option<Tensor>,
    cls: Option<Tensor>,
    vpos: Tensor,
    pre_ln: Option<LayerNorm>,
    venc: Encoder,
    post_ln: LayerNorm,
    vhead: Option<PoolHead>,
}

/// A loaded dual encoder.
#[derive(Debug)]
pub(crate) struct DualModel {
    spec: Spec,
    vision: VisionTower,
    vproj: Option<Linear>,
    // text
    text: TextTower,
    tproj: Linear,
    logit_scale: Tensor,
    logit_bias: Option<Tensor>,
}

impl VisionTower {
    /// Take the tower's tensors, named after the prefix `p` (`vision_model.` or none), from `w`.
    pub(crate) fn load(spec: VisionSpec, w: &mut Weights, p: &str) -> Result<Self, SkillError> {
        let vt = &spec.tower;
        let vh = vt.hidden;
        let siglip = spec.kind == Kind::Siglip;
        let ve = format!("{p}embeddings");
        let patches = (spec.image / spec.patch).pow(2);
        let patch_w = if spec.naflex.is_some() {
            w.take(
                &format!("{ve}.patch_embedding.weight"),
                &[vh, 3 * spec.patch * spec.patch],
            )?
        } else {
            w.take(
                &format!("{ve}.patch_embedding.weight"),
                &[vh, 3, spec.patch, spec.patch],
            )?
        };
        let patch_b = if siglip {
            Some(w.take(&format!("{ve}.patch_embedding.bias"), &[vh])?)
        } else {
            None
        };
        let cls = if siglip {
            None
        } else {
            Some(w.take(&format!("{ve}.class_embedding"), &[vh])?)
        };
        let n_pos = patches + usize::from(!siglip);
        let vpos = w.take(&format!("{ve}.position_embedding.weight"), &[n_pos, vh])?;
        let pre_ln = if siglip {
            None
        } else {
            Some(norm(w, &format!("{p}pre_layrnorm"), vh, vt.eps)?)
        };
        let vlayers = if spec.kind == Kind::AltClip {
            "encoder.layer"
        } else {
            "encoder.layers"
        };
        let venc = Encoder::load(w, p, vlayers, vt)?;
        let post_ln = norm(w, &format!("{p}post_layernorm"), vh, vt.eps)?;
        let vhead = if siglip {
            let hp = format!("{p}head");
            let inw = w.take(&format!("{hp}.attention.in_proj_weight"), &[3 * vh, vh])?;
            let inb = w.take(&format!("{hp}.attention.in_proj_bias"), &[3 * vh])?;
            let part = |i: usize| -> candle_core::Result<Linear> {
                Ok(Linear::new(
                    inw.narrow(0, i * vh, vh)?.contiguous()?,
                    Some(inb.narrow(0, i * vh, vh)?.contiguous()?),
                ))
            };
            Some(PoolHead {
                probe: w.take(&format!("{hp}.probe"), &[1, 1, vh])?,
                q: part(0).map_err(ce("head"))?,
                k: part(1).map_err(ce("head"))?,
                v: part(2).map_err(ce("head"))?,
                o: linear(w, &format!("{hp}.attention.out_proj"), vh, vh, true)?,
                heads: vt.heads,
                ln: norm(w, &format!("{hp}.layernorm"), vh, vt.eps)?,
                fc1: linear(w, &format!("{hp}.mlp.fc1"), vt.inter, vh, true)?,
                fc2: linear(w, &format!("{hp}.mlp.fc2"), vh, vt.inter, true)?,
                act: vt.act,
            })
        } else {
            None
        };
        Ok(Self {
            spec,
            patch_w,
            patch_b,
            cls,
            vpos,
            pre_ln,
            venc,
            post_ln,
            vhead,
        })
    }

    pub(crate) fn spec(&self) -> &VisionSpec {
        &self.spec
    }

    /// What [`pooled`](Self::pooled) is, in words.
    pub(crate) fn pooling(&self) -> &'static str {
        match self.vhead {
            Some(_) => "attention-pooling head over the post-layernorm tokens",
            None => "post-layernorm class token",
        }
    }

    /// The pooled output `[b, hidden]` of `pixels` `[b, 3, size, size]`.
    pub(crate) fn pooled(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let b = pixels.dim(0)?;
            let h = self.spec.tower.hidden;
            let mut x = pixels.conv2d(&self.patch_w, 0, self.spec.patch, 1, 1)?;
            if let Some(bias) = &self.patch_b {
                x = x.broadcast_add(&bias.reshape((1, h, 1, 1))?)?;
            }
            let mut x = x.flatten_from(2)?.transpose(1, 2)?;
            if let Some(cls) = &self.cls {
                x = Tensor::cat(&[&cls.reshape((1, 1, h))?.expand((b, 1, h))?, &x], 1)?;
            }
            let mut x = x.broadcast_add(&self.vpos.unsqueeze(0)?)?.contiguous()?;
            if let Some(ln) = &self.pre_ln {
                x = ln.forward(&x)?;
            }
            let x = self.venc.forward(&x, None)?;
            match &self.vhead {
                Some(head) => head.forward(&self.post_ln.forward(&x)?),
                None => self.post_ln.forward(&x.narrow(1, 0, 1)?.squeeze(1)?),
            }
        };
        run().map_err(ce("image tower"))
    }

    /// SigLIP 2: the pooled output `[b, hidden]` of images given as patch rows: image `i` is
    /// `grids[i] = (h, w)` patches, `h·w` rows of `patch·patch·3` values (row-major patches,
    /// each `(y, x, channel)`), concatenated in `rows`.
    pub(crate) fn pooled_patches(
        &self,
        rows: &[f32],
        grids: &[(usize, usize)],
    ) -> Result<Tensor, SkillError> {
        let Some(side) = self.spec.naflex else {
            return Err(SkillError::Backend {
                backend: skillgen_runtime::BackendKind::Candle,
                detail: "patch rows are for NaFlex (SigLIP 2) image towers".into(),
            });
        };
        let width = 3 * self.spec.patch * self.spec.patch;
        let dev = self.patch_w.device();
        let mut at = 0;
        let mut out = Vec::with_capacity(grids.len());
        for &(h, w) in grids {
            let n = h * w;
            let Some(chunk) = rows.get(at..at + n * width) else {
                return Err(SkillError::InvalidRequest {
                    capability: skillgen_runtime::Capability::ImageTextSimilarity,
                    detail: format!(
                        "{} patch values for grids {grids:?} of {width} values each",
                        rows.len()
                    ),
                });
            };
            at += n * width;
            let run = || -> candle_core::Result<Tensor> {
                let x = Tensor::from_slice(chunk, (n, width), dev)?;
                let mut x = x.matmul(&self.patch_w.t()?)?;
                if let Some(b) = &self.patch_b {
                    x = x.broadcast_add(b)?;
                }
                let resize = crate::vit::resize::antialiased_bilinear(side, side, h, w);
                let resize = Tensor::from_vec(resize, (n, side * side), dev)?;
                let x = (x + resize.matmul(&self.vpos)?)?.unsqueeze(0)?;
                let x = self.venc.forward(&x, None)?;
                match &self.vhead {
                    Some(head) => head.forward(&self.post_ln.forward(&x)?),
                    None => candle_core::bail!("no image head"),
                }
            };
            out.push(run().map_err(ce("image tower"))?);
        }
        if at != rows.len() {
            return Err(SkillError::InvalidRequest {
                capability: skillgen_runtime::Capability::ImageTextSimilarity,
                detail: format!(
                    "{} patch values for grids {grids:?} of {width} values each",
                    rows.len()
                ),
            });
        }
        Tensor::cat(&out, 0).map_err(ce("image tower"))
    }
}

impl DualModel {
    /// Take every tensor of the checkpoint from `w`.
    pub(crate) fn load(spec: Spec, w: &mut Weights) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let tt = &spec.text;
        let th = tt.hidden;
        let siglip = spec.kind == Kind::Siglip;
        let vision = VisionTower::load(spec.vision.clone(), w, "vision_model.")?;
        let vh = spec.vision.tower.hidden;
        let vproj = if siglip {
            None
        } else {
            Some(linear(w, "visual_projection", spec.proj, vh, false)?)
        };
        let text = match &spec.bert_text {
            Some(b) => {
                let alt = spec.kind == Kind::AltClip;
                let p = if alt {
                    "text_model.roberta."
                } else {
                    "text_model."
                };
                let body = Box::new(crate::encoder::bertlike::BertBody::load(b, w, p)?);
                let (pre_ln, transformation) = if alt {
                    (
                        Some(norm(w, "text_model.pre_LN", th, tt.eps)?),
                        Some(linear(
                            w,
                            "text_model.transformation",
                            spec.project_dim,
                            th,
                            true,
                        )?),
                    )
                } else {
                    (None, None)
                };
                TextTower::Bert {
                    body,
                    pre_ln,
                    transformation,
                }
            }
            None => TextTower::Clip(ClipText::load(
                w,
                "text_model.",
                (spec.kind, tt, spec.vocab, spec.max_pos, spec.eos),
            )?),
        };
        let proj_in = if spec.kind == Kind::AltClip {
            spec.project_dim
        } else {
            th
        };
        let tproj = if siglip {
            linear(w, "text_model.head", spec.proj, th, true)?
        } else {
            linear(w, "text_projection", spec.proj, proj_in, false)?
        };
        let logit_scale = if siglip {
            w.take("logit_scale", &[1])?
        } else {
            w.take("logit_scale", &[])?
        };
        let logit_bias = if siglip {
            Some(w.take("logit_bias", &[1])?)
        } else {
            None
        };
        // Position ids buffers some checkpoints save.
        w.finish()?;
        Ok(Self {
            spec,
            vision,
            vproj,
            text,
            tproj,
            logit_scale,
            logit_bias,
        })
    }

    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Image embeddings `[b, proj]` (not normalised) of `pixels` `[b, 3, size, size]`.
    pub(crate) fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor, SkillError> {
        self.project(self.vision.pooled(pixels)?)
    }

    /// SigLIP 2: image embeddings `[b, proj]` of images given as patch rows (see
    /// [`VisionTower::pooled_patches`]).
    pub(crate) fn patch_embeds(
        &self,
        rows: &[f32],
        grids: &[(usize, usize)],
    ) -> Result<Tensor, SkillError> {
        self.project(self.vision.pooled_patches(rows, grids)?)
    }

    /// The image tower.
    pub(crate) fn vision(&self) -> &VisionTower {
        &self.vision
    }

    /// The visual projection (CLIP) of pooled outputs; SigLIP's pooled output is its embedding.
    pub(crate) fn project(&self, pooled: Tensor) -> Result<Tensor, SkillError> {
        match &self.vproj {
            Some(p) => p.forward(&pooled).map_err(ce("visual projection")),
            None => Ok(pooled),
        }
    }

    /// The text embedding `[proj]` (not normalised) of one input.
    pub(crate) fn text_embed(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        let pooled = match &self.text {
            TextTower::Bert {
                body,
                pre_ln,
                transformation,
            } => {
                let h = body.forward(ids)?;
                let run = || -> candle_core::Result<Tensor> {
                    let mut h = h;
                    if let Some(ln) = pre_ln {
                        h = ln.forward(&h)?;
                    }
                    if let Some(t) = transformation {
                        h = t.forward(&h)?;
                    }
                    h.narrow(0, 0, 1)
                };
                run().map_err(ce("text tower"))?
            }
            TextTower::Clip(tower) => tower.pooled(ids)?,
        };
        (|| self.tproj.forward(&pooled)?.squeeze(0))().map_err(ce("text projection"))
    }

    /// `logits_per_image` `[images, texts]` of (unnormalised) embeddings.
    pub(crate) fn logits(&self, images: &Tensor, texts: &Tensor) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let unit = |t: &Tensor| -> candle_core::Result<Tensor> {
                t.broadcast_div(&t.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
            };
            let cos = unit(images)?.matmul(&unit(texts)?.t()?)?;
            let scale = self.logit_scale.flatten_all()?.exp()?;
            let l = cos.broadcast_mul(&scale)?;
            match &self.logit_bias {
                Some(b) => l.broadcast_add(b),
                None => Ok(l),
            }
        };
        run().map_err(ce("logits"))
    }
}
