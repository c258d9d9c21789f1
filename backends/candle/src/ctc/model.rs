//! One parametric wav2vec2-like CTC speech encoder: a convolutional feature encoder (group
//! norm on the first layer, or layer norm on every layer), a feature projection, a
//! weight-normalised convolutional position embedding, post-LN or pre-LN ("stable layer
//! norm") transformer blocks, and the CTC head. Types: wav2vec2, hubert, unispeech,
//! unispeech-sat, WavLM (a relative position bias from the first layer, gated per layer
//! and head by the layer's input) and data2vec-audio (a stack of plain position
//! convolutions, each with a parameter-free LayerNorm) and SEW (the sequence squeezed by
//! `squeeze_factor` before the blocks — average pooling plus a strided position convolution —
//! and upsampled after them). Every tensor is taken by name and shape; one nobody takes is refused.

use candle_core::{DType, Module, Tensor};
use candle_nn::{GroupNorm, LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::attention::{SelfAttention, relative_bucket};
use crate::weights::{Weights, layer_norm};

/// The model types [`translate`] knows.
pub const MODEL_TYPES: &[&str] = &[
    "data2vec-audio",
    "hubert",
    "sew",
    "unispeech",
    "unispeech-sat",
    "wav2vec2",
    "wavlm",
];

/// How the feature encoder's convolutions are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeatNorm {
    /// GroupNorm (one group per channel) after the first convolution only.
    Group,
    /// LayerNorm over channels after every convolution.
    Layer,
}

/// A wav2vec2-like encoder, as [`translate`] reads it from `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) prefix: &'static str,
    /// (channels, kernel, stride) per convolution.
    pub(crate) conv: Vec<(usize, usize, usize)>,
    pub(crate) conv_bias: bool,
    pub(crate) feat_norm: FeatNorm,
    pub(crate) feat_act: Act,
    pub(crate) feat_proj_ln: bool,
    pub(crate) hidden: usize,
    pub(crate) layers: usize,
    pub(crate) heads: usize,
    pub(crate) inter: usize,
    pub(crate) act: Act,
    pub(crate) eps: f64,
    pub(crate) stable: bool,
    pub(crate) pos_kernel: usize,
    pub(crate) pos_groups: usize,
    pub(crate) vocab: usize,
    /// WavLM's relative position buckets and maximum distance.
    pub(crate) rel_pos: Option<(usize, usize)>,
    /// data2vec-audio: this many plain position convolutions instead of one
    /// weight-normalised one.
    pub(crate) pos_stack: Option<usize>,
    /// SEW's squeeze factor.
    pub(crate) squeeze: Option<usize>,
}

fn activation(f: &Fields<'_>, field: &str) -> Result<Act, SkillError> {
    let name = f.str_opt(field)?.unwrap_or("gelu");
    match Act::from_hf(name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu)) => Ok(a),
        _ => Err(f.err(
            field,
            format!("`{name}` is not implemented (gelu, gelu_new, relu, silu)"),
        )),
    }
}

fn usize_list(f: &Fields<'_>, field: &str) -> Result<Vec<usize>, SkillError> {
    match f.get(field) {
        Some(serde_json::Value::Array(a)) if !a.is_empty() => a
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
    let prefix = match model_type {
        "wav2vec2" => "wav2vec2",
        "hubert" => "hubert",
        "unispeech" => "unispeech",
        "unispeech-sat" => "unispeech_sat",
        "wavlm" => "wavlm",
        "data2vec-audio" => "data2vec_audio",
        "sew" => "sew",
        other => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not a wav2vec2-like type the CTC model implements"),
            ));
        }
    };
    let dims = usize_list(f, "conv_dim")?;
    let kernels = usize_list(f, "conv_kernel")?;
    let strides = usize_list(f, "conv_stride")?;
    if dims.len() != kernels.len() || dims.len() != strides.len() {
        return Err(f.err(
            "conv_dim",
            format!(
                "conv_dim, conv_kernel and conv_stride have {}, {} and {} entries",
                dims.len(),
                kernels.len(),
                strides.len()
            ),
        ));
    }
    let data2vec = model_type == "data2vec-audio";
    let feat_norm =
        match f
            .str_opt("feat_extract_norm")?
            .unwrap_or(if data2vec { "layer" } else { "group" })
        {
            "group" => FeatNorm::Group,
            "layer" => FeatNorm::Layer,
            other => {
                return Err(f.err(
                    "feat_extract_norm",
                    format!("`{other}` is not implemented (group, layer)"),
                ));
            }
        };
    if f.bool_or("add_adapter", false)? {
        return Err(f.err("add_adapter", "the adapter layers are not implemented"));
    }
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    if !hidden.is_multiple_of(heads) {
        return Err(f.err(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden}"),
        ));
    }
    let pos_groups = f.positive("num_conv_pos_embedding_groups")?;
    if !hidden.is_multiple_of(pos_groups) {
        return Err(f.err(
            "num_conv_pos_embedding_groups",
            format!("{pos_groups} does not divide hidden_size {hidden}"),
        ));
    }
    Ok(Spec {
        prefix,
        conv: dims
            .into_iter()
            .zip(kernels)
            .zip(strides)
            .map(|((d, k), s)| (d, k, s))
            .collect(),
        conv_bias: f.bool_or("conv_bias", false)?,
        feat_norm,
        feat_act: activation(f, "feat_extract_activation")?,
        // HuBERT makes the projection's LayerNorm optional; the others always have it.
        feat_proj_ln: model_type != "hubert" || f.bool_or("feat_proj_layer_norm", true)?,
        hidden,
        layers: f.positive("num_hidden_layers")?,
        heads,
        inter: f.positive("intermediate_size")?,
        act: activation(f, "hidden_act")?,
        eps: f.f64("layer_norm_eps")?,
        stable: f.bool_or("do_stable_layer_norm", false)?,
        pos_kernel: if data2vec {
            f.positive("conv_pos_kernel_size")?
        } else {
            f.positive("num_conv_pos_embeddings")?
        },
        pos_groups,
        vocab: f.positive("vocab_size")?,
        squeeze: if model_type == "sew" {
            Some(f.positive("squeeze_factor")?)
        } else {
            None
        },
        pos_stack: if data2vec {
            Some(f.positive("num_conv_pos_embeddings")?)
        } else {
            None
        },
        rel_pos: if model_type == "wavlm" {
            Some((
                f.positive("num_buckets")?,
                f.positive("max_bucket_distance")?,
            ))
        } else {
            None
        },
    })
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("CTC {context}: {e}"),
    }
}

/// A linear layer with a bias (every projection of this implementation has one).
fn linear(w: &mut Weights, name: &str, out: usize, inp: usize) -> Result<Linear, SkillError> {
    crate::weights::linear(w, name, out, inp, true)
}

#[derive(Debug)]
enum ConvNorm {
    None,
    Group(GroupNorm),
    Layer(LayerNorm),
}

#[derive(Debug)]
struct ConvLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    norm: ConvNorm,
}

#[derive(Debug)]
struct Block {
    attn: SelfAttention,
    attn_ln: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_ln: LayerNorm,
    /// WavLM's gate of the relative position bias: `gru_rel_pos_linear` and
    /// `gru_rel_pos_const` (`[1, heads, 1, 1]`).
    gate: Option<(Linear, Tensor)>,
}

impl Block {
    /// WavLM: `bias` (`[1, heads, n, n]`) scaled per head and query by the gate computed
    /// from the attention's input `x` (`[1, n, hidden]`).
    fn gated(&self, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let Some((lin, konst)) = &self.gate else {
            return Ok(bias.clone());
        };
        let (b, n, h) = x.dims3()?;
        let heads = self.attn.heads;
        let g = x
            .reshape((b, n, heads, h / heads))?
            .permute((0, 2, 1, 3))?
            .contiguous()?;
        let proj = lin.forward(&g)?.reshape((b, heads, n, 2, 4))?.sum(4)?;
        let sig = candle_nn::ops::sigmoid(&proj)?;
        let (a, c) = (sig.narrow(3, 0, 1)?, sig.narrow(3, 1, 1)?);
        let gate = ((a * (c.broadcast_mul(konst)? - 1.0)?)? + 2.0)?;
        bias.broadcast_mul(&gate)
    }
}

/// The weight-normalised position convolution's weight: `g · v / ‖v‖`, the norm over every
/// dimension but the kernel's (PyTorch `weight_norm(dim=2)`).
fn weight_norm(g: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let norm = v.sqr()?.sum_keepdim(0)?.sum_keepdim(1)?.sqrt()?;
    v.broadcast_mul(&g.broadcast_div(&norm)?)
}

/// A loaded wav2vec2-like CTC model.
#[derive(Debug)]
pub(crate) struct CtcModel {
    spec: Spec,
    convs: Vec<ConvLayer>,
    proj_ln: Option<LayerNorm>,
    /// The feature projection (SEW: only when the widths differ).
    proj: Option<Linear>,
    /// SEW's upsampling projection (`hidden → hidden·squeeze`).
    upsample: Option<Linear>,
    /// The position convolutions (weight, bias): one (weight-normalised), or data2vec-audio's
    /// stack.
    pos: Vec<(Tensor, Tensor)>,
    enc_ln: LayerNorm,
    blocks: Vec<Block>,
    /// WavLM's relative position embedding (`[buckets, heads]`, first layer).
    rel_embed: Option<Tensor>,
    head: Linear,
}

impl CtcModel {
    /// Take every tensor of the `*ForCTC` checkpoint from `w`.
    pub(crate) fn load(spec: Spec, w: &mut Weights) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let p = spec.prefix;
        let mut convs = Vec::with_capacity(spec.conv.len());
        let mut inp = 1;
        for (i, &(out, k, stride)) in spec.conv.iter().enumerate() {
            let c = format!("{p}.feature_extractor.conv_layers.{i}");
            let weight = w.take(&format!("{c}.conv.weight"), &[out, inp, k])?;
            let bias = if spec.conv_bias {
                Some(w.take(&format!("{c}.conv.bias"), &[out])?)
            } else {
                None
            };
            let norm = match (spec.feat_norm, i) {
                (FeatNorm::Group, 0) => ConvNorm::Group(
                    GroupNorm::new(
                        w.take(&format!("{c}.layer_norm.weight"), &[out])?,
                        w.take(&format!("{c}.layer_norm.bias"), &[out])?,
                        out,
                        out,
                        1e-5,
                    )
                    .map_err(ce("group norm"))?,
                ),
                (FeatNorm::Group, _) => ConvNorm::None,
                (FeatNorm::Layer, _) => {
                    ConvNorm::Layer(layer_norm(w, &format!("{c}.layer_norm"), out, 1e-5)?)
                }
            };
            convs.push(ConvLayer {
                weight,
                bias,
                stride,
                norm,
            });
            inp = out;
        }
        let (h, feat) = (spec.hidden, inp);
        let fp = format!("{p}.feature_projection");
        let (proj_ln, proj, upsample) = match spec.squeeze {
            // SEW: `layer_norm` on the features, a projection only when the widths differ.
            Some(sq) => (
                Some(layer_norm(w, &format!("{p}.layer_norm"), feat, spec.eps)?),
                if feat != h {
                    Some(linear(w, &format!("{p}.feature_projection"), h, feat)?)
                } else {
                    None
                },
                Some(linear(
                    w,
                    &format!("{p}.encoder.upsample.projection"),
                    h * sq,
                    h,
                )?),
            ),
            None => (
                if spec.feat_proj_ln {
                    Some(layer_norm(w, &format!("{fp}.layer_norm"), feat, spec.eps)?)
                } else {
                    None
                },
                Some(linear(w, &format!("{fp}.projection"), h, feat)?),
                None,
            ),
        };
        let shape_v = [h, h / spec.pos_groups, spec.pos_kernel];
        let pos = match spec.pos_stack {
            Some(n) => (0..n)
                .map(|i| {
                    let c = format!("{p}.encoder.pos_conv_embed.layers.{i}.conv");
                    Ok((
                        w.take(&format!("{c}.weight"), &shape_v)?,
                        w.take(&format!("{c}.bias"), &[h])?,
                    ))
                })
                .collect::<Result<Vec<_>, SkillError>>()?,
            None => {
                let pc = format!("{p}.encoder.pos_conv_embed.conv");
                let shape_g = [1, 1, spec.pos_kernel];
                let (g, v) = if w.has(&format!("{pc}.weight_g")) {
                    (
                        w.take(&format!("{pc}.weight_g"), &shape_g)?,
                        w.take(&format!("{pc}.weight_v"), &shape_v)?,
                    )
                } else {
                    (
                        w.take(&format!("{pc}.parametrizations.weight.original0"), &shape_g)?,
                        w.take(&format!("{pc}.parametrizations.weight.original1"), &shape_v)?,
                    )
                };
                vec![(
                    weight_norm(&g, &v).map_err(ce("weight norm"))?,
                    w.take(&format!("{pc}.bias"), &[h])?,
                )]
            }
        };
        let enc_ln = layer_norm(w, &format!("{p}.encoder.layer_norm"), h, spec.eps)?;
        let mut blocks = Vec::with_capacity(spec.layers);
        for l in 0..spec.layers {
            let b = format!("{p}.encoder.layers.{l}");
            blocks.push(Block {
                attn: SelfAttention {
                    q: linear(w, &format!("{b}.attention.q_proj"), h, h)?,
                    k: linear(w, &format!("{b}.attention.k_proj"), h, h)?,
                    v: linear(w, &format!("{b}.attention.v_proj"), h, h)?,
                    o: linear(w, &format!("{b}.attention.out_proj"), h, h)?,
                    heads: spec.heads,
                },
                attn_ln: layer_norm(w, &format!("{b}.layer_norm"), h, spec.eps)?,
                ffn_in: linear(
                    w,
                    &format!("{b}.feed_forward.intermediate_dense"),
                    spec.inter,
                    h,
                )?,
                ffn_out: linear(w, &format!("{b}.feed_forward.output_dense"), h, spec.inter)?,
                ffn_ln: layer_norm(w, &format!("{b}.final_layer_norm"), h, spec.eps)?,
                gate: if spec.rel_pos.is_some() {
                    Some((
                        linear(
                            w,
                            &format!("{b}.attention.gru_rel_pos_linear"),
                            8,
                            h / spec.heads,
                        )?,
                        w.take(
                            &format!("{b}.attention.gru_rel_pos_const"),
                            &[1, spec.heads, 1, 1],
                        )?,
                    ))
                } else {
                    None
                },
            });
        }
        let rel_embed = match spec.rel_pos {
            Some((buckets, _)) => Some(w.take(
                &format!("{p}.encoder.layers.0.attention.rel_attn_embed.weight"),
                &[buckets, spec.heads],
            )?),
            None => None,
        };
        let head = linear(w, "lm_head", spec.vocab, h)?;
        // Pre-training parameters (the SpecAugment mask embedding, quantizer and projections
        // of pre-training checkpoints) are not used for recognition.
        let unused = [
            format!("{p}.masked_spec_embed"),
            "quantizer.".to_owned(),
            "project_q.".to_owned(),
            "project_hid.".to_owned(),
        ];
        w.leave(|n| unused.iter().any(|u| n.starts_with(u.as_str())));
        w.finish()?;
        Ok(Self {
            spec,
            convs,
            proj_ln,
            proj,
            upsample,
            pos,
            enc_ln,
            blocks,
            rel_embed,
            head,
        })
    }

    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Frames the feature encoder yields for `samples` samples (0 when too short).
    pub(crate) fn frames(&self, samples: usize) -> usize {
        self.spec.conv.iter().fold(
            samples,
            |n, &(_, k, s)| {
                if n < k { 0 } else { (n - k) / s + 1 }
            },
        )
    }

    /// CTC logits `[frames, vocab]` of normalised input values (`[samples]`).
    pub(crate) fn logits(&self, values: &Tensor) -> Result<Tensor, SkillError> {
        let s = &self.spec;
        let run = || -> candle_core::Result<Tensor> {
            let mut x = values.reshape((1, 1, values.dim(0)?))?;
            for c in &self.convs {
                x = x.conv1d(&c.weight, 0, c.stride, 1, 1)?;
                if let Some(b) = &c.bias {
                    x = x.broadcast_add(&b.reshape((1, b.dim(0)?, 1))?)?;
                }
                x = match &c.norm {
                    ConvNorm::None => x,
                    ConvNorm::Group(g) => g.forward(&x)?,
                    ConvNorm::Layer(l) => l.forward(&x.transpose(1, 2)?)?.transpose(1, 2)?,
                };
                x = act(s.feat_act, &x)?;
            }
            let mut x = x.transpose(1, 2)?.contiguous()?;
            if let Some(ln) = &self.proj_ln {
                x = ln.forward(&x)?;
            }
            let x = match &self.proj {
                Some(p) => p.forward(&x)?,
                None => x,
            };
            // Position convolution(s) ("same" padding; an even kernel drops the last frame;
            // SEW's is strided by the squeeze factor).
            let pad = s.pos_kernel / 2;
            let frames = x.dim(1)?;
            let stride = s.squeeze.unwrap_or(1);
            let mut pos = x.transpose(1, 2)?.contiguous()?;
            for (weight, bias) in &self.pos {
                pos = pos.conv1d(weight, pad, stride, 1, s.pos_groups)?;
                let keep = if s.pos_kernel.is_multiple_of(2) {
                    pos.dim(2)? - 1
                } else {
                    pos.dim(2)?
                };
                pos = pos
                    .broadcast_add(&bias.reshape((1, s.hidden, 1))?)?
                    .narrow(2, 0, keep)?;
                if s.pos_stack.is_some() {
                    // data2vec-audio: LayerNorm without parameters over the channels.
                    pos = candle_nn::ops::layer_norm(
                        &pos.transpose(1, 2)?.contiguous()?,
                        &Tensor::ones(s.hidden, pos.dtype(), pos.device())?,
                        &Tensor::zeros(s.hidden, pos.dtype(), pos.device())?,
                        1e-5,
                    )?
                    .transpose(1, 2)?;
                }
                pos = act(s.feat_act, &pos)?;
            }
            let pos = pos.transpose(1, 2)?;
            let mut x = match s.squeeze {
                // SEW: average-pool the sequence, add the strided positions, shortest length.
                Some(sq) => {
                    let m = frames / sq;
                    let pooled = x
                        .narrow(1, 0, m * sq)?
                        .reshape((1, m, sq, s.hidden))?
                        .mean(2)?;
                    let len = m.min(pos.dim(1)?);
                    (pooled.narrow(1, 0, len)? + pos.narrow(1, 0, len)?)?
                }
                None => (x + pos)?,
            };
            let n = x.dim(1)?;
            if !s.stable {
                x = self.enc_ln.forward(&x)?;
            }
            let bias = match (&self.rel_embed, s.rel_pos) {
                (Some(table), Some((buckets, max_distance))) => {
                    let idx: Vec<u32> = (0..n as i64)
                        .flat_map(|q| {
                            (0..n as i64)
                                .map(move |k| relative_bucket(k - q, buckets, max_distance) as u32)
                        })
                        .collect();
                    let idx = Tensor::new(idx.as_slice(), x.device())?;
                    Some(
                        table
                            .index_select(&idx, 0)?
                            .reshape((n, n, s.heads))?
                            .permute((2, 0, 1))?
                            .unsqueeze(0)?
                            .contiguous()?,
                    )
                }
                _ => None,
            };
            for b in &self.blocks {
                let ffn = |t: &Tensor| -> candle_core::Result<Tensor> {
                    b.ffn_out.forward(&act(s.act, &b.ffn_in.forward(t)?)?)
                };
                let attend = |t: &Tensor| -> candle_core::Result<Tensor> {
                    match &bias {
                        Some(bias) => b.attn.forward(t, Some(&b.gated(t, bias)?)),
                        None => b.attn.forward(t, None),
                    }
                };
                if s.stable {
                    x = (&x + attend(&b.attn_ln.forward(&x)?)?)?;
                    x = (&x + ffn(&b.ffn_ln.forward(&x)?)?)?;
                } else {
                    x = b.attn_ln.forward(&(&x + attend(&x)?)?)?;
                    x = b.ffn_ln.forward(&(&x + ffn(&x)?)?)?;
                }
            }
            if s.stable {
                x = self.enc_ln.forward(&x)?;
            }
            if let (Some(up), Some(sq)) = (&self.upsample, s.squeeze) {
                // SEW: each squeezed frame becomes `sq` frames, zero-padded to the input length.
                let u = act(s.feat_act, &up.forward(&x)?)?.reshape((1, n * sq, s.hidden))?;
                x = if n * sq < frames {
                    u.pad_with_zeros(1, 0, frames - n * sq)?
                } else {
                    u
                };
            }
            self.head.forward(&x)?.squeeze(0)
        };
        run().map_err(ce("forward"))
    }
}
