//! ModernBERT: a pre-LN encoder with rotary positions (one θ for global layers, one for
//! local ones), bidirectional sliding-window attention on the local layers
//! (`|i − j| ≤ local_attention / 2`), a fused `Wqkv`, a gated MLP (`Wi` split into input and
//! gate), bias-free LayerNorms and projections (unless configured), and the prediction head
//! (`dense → act → norm`) every task head starts with. Every tensor is taken by name and
//! shape; one nobody takes is refused.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde_json::Value;

use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::attention::rope_tables;
use crate::encoder::bertlike::EncoderHead;
use crate::encoder::setup::{self, HeadModel, HeadSetup};
use crate::weights::{Weights, linear};

/// ModernBERT's configuration, read field by field.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    vocab: usize,
    hidden: usize,
    heads: usize,
    inter: usize,
    act: Act,
    eps: f64,
    norm_bias: bool,
    attn_bias: bool,
    mlp_bias: bool,
    /// Per layer: `Some(half window)` for local layers.
    windows: Vec<Option<usize>>,
    theta_global: f64,
    theta_local: f64,
    max_pos: usize,
    mean_pooling: bool,
    head_act: Act,
    head_bias: bool,
    decoder_bias: bool,
}

fn act_of(f: &Fields<'_>, field: &str, default: &str) -> Result<Act, SkillError> {
    let name = f.str_opt(field)?.unwrap_or(default);
    match Act::from_hf(name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu)) => Ok(a),
        _ => Err(f.err(
            field,
            format!("`{name}` is not implemented (gelu, gelu_new, relu, silu)"),
        )),
    }
}

fn theta(f: &Fields<'_>, kind: &str, legacy: &str, default: f64) -> Result<f64, SkillError> {
    if let Some(Value::Object(rp)) = f.get("rope_parameters")
        && let Some(Value::Object(p)) = rp.get(kind)
    {
        if let Some(t) = p.get("rope_type").and_then(Value::as_str)
            && t != "default"
        {
            return Err(f.err(
                "rope_parameters",
                format!("rope type `{t}` is not implemented for ModernBERT (default)"),
            ));
        }
        return p
            .get("rope_theta")
            .and_then(Value::as_f64)
            .ok_or_else(|| f.err("rope_parameters", format!("`{kind}` has no rope_theta")));
    }
    Ok(f.get(legacy).and_then(Value::as_f64).unwrap_or(default))
}

/// `config.json` → [`Spec`].
pub(crate) fn translate(f: &Fields<'_>) -> Result<Spec, SkillError> {
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    if !hidden.is_multiple_of(heads) || !(hidden / heads).is_multiple_of(2) {
        return Err(f.err(
            "num_attention_heads",
            format!("{heads} heads do not split hidden_size {hidden} into even head sizes"),
        ));
    }
    let layers = f.positive("num_hidden_layers")?;
    let half = f.positive("local_attention")? / 2;
    let windows = match f.get("layer_types") {
        Some(Value::Array(kinds)) => {
            if kinds.len() != layers {
                return Err(f.err(
                    "layer_types",
                    format!("{} entries for {layers} layers", kinds.len()),
                ));
            }
            kinds
                .iter()
                .map(|k| match k.as_str() {
                    Some("full_attention") => Ok(None),
                    Some("sliding_attention") => Ok(Some(half)),
                    _ => Err(f.err("layer_types", format!("unknown layer type {k}"))),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        _ => {
            let every = f.positive_opt("global_attn_every_n_layers")?.unwrap_or(3);
            (0..layers)
                .map(|i| if i % every == 0 { None } else { Some(half) })
                .collect()
        }
    };
    let pooling = f.str_opt("classifier_pooling")?.unwrap_or("cls");
    if !matches!(pooling, "cls" | "mean") {
        return Err(f.err(
            "classifier_pooling",
            format!("`{pooling}` is not implemented (cls, mean)"),
        ));
    }
    Ok(Spec {
        vocab: f.positive("vocab_size")?,
        hidden,
        heads,
        inter: f.positive("intermediate_size")?,
        act: act_of(f, "hidden_activation", "gelu")?,
        eps: f.f64("norm_eps")?,
        norm_bias: f.bool_or("norm_bias", false)?,
        attn_bias: f.bool_or("attention_bias", false)?,
        mlp_bias: f.bool_or("mlp_bias", false)?,
        windows,
        theta_global: theta(f, "full_attention", "global_rope_theta", 160_000.0)?,
        theta_local: theta(f, "sliding_attention", "local_rope_theta", 10_000.0)?,
        max_pos: f.positive("max_position_embeddings")?,
        mean_pooling: pooling == "mean",
        head_act: act_of(f, "classifier_activation", "gelu")?,
        head_bias: f.bool_or("classifier_bias", false)?,
        decoder_bias: f.bool_or("decoder_bias", true)?,
    })
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("ModernBERT {context}: {e}"),
    }
}

fn norm(w: &mut Weights, name: &str, s: &Spec) -> Result<LayerNorm, SkillError> {
    let weight = w.take(&format!("{name}.weight"), &[s.hidden])?;
    Ok(if s.norm_bias {
        LayerNorm::new(weight, w.take(&format!("{name}.bias"), &[s.hidden])?, s.eps)
    } else {
        LayerNorm::new_no_bias(weight, s.eps)
    })
}

#[derive(Debug)]
struct Layer {
    attn_norm: Option<LayerNorm>,
    wqkv: Linear,
    wo: Linear,
    mlp_norm: LayerNorm,
    wi: Linear,
    mlp_wo: Linear,
    window: Option<usize>,
}

#[derive(Debug)]
enum Head {
    Base,
    /// `classifier(head(pool(h)))`.
    Sequence(Linear),
    /// `proj(head(h))` at every position (token classification, QA, the MLM decoder).
    PerToken(Linear),
}

/// A loaded ModernBERT with one head.
pub struct ModernBert {
    spec: Spec,
    tok: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    /// The prediction head (`dense`, `norm`), for every task head.
    pred: Option<(Linear, LayerNorm)>,
    head: Head,
    device: Device,
    setup: HeadSetup,
}

impl std::fmt::Debug for ModernBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModernBert")
            .field("spec", &self.spec)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl ModernBert {
    /// Load `dir` with `head` on `device`.
    pub fn load(dir: &Path, device: &Device, head: EncoderHead) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = translate(&f)?;
        let mut w = Weights::read(dir, device)?;
        w.convert(DType::F32)?;
        let h = spec.hidden;
        // A task checkpoint keeps the body under `model.`; a bare `ModernBertModel` does not.
        let p = if w.has("model.embeddings.tok_embeddings.weight") {
            "model."
        } else {
            ""
        };
        let tok = w.take(
            &format!("{p}embeddings.tok_embeddings.weight"),
            &[spec.vocab, h],
        )?;
        let emb_norm = norm(&mut w, &format!("{p}embeddings.norm"), &spec)?;
        let mut layers = Vec::with_capacity(spec.windows.len());
        for (l, window) in spec.windows.iter().enumerate() {
            let b = format!("{p}layers.{l}");
            layers.push(Layer {
                attn_norm: if l == 0 {
                    None
                } else {
                    Some(norm(&mut w, &format!("{b}.attn_norm"), &spec)?)
                },
                wqkv: linear(&mut w, &format!("{b}.attn.Wqkv"), 3 * h, h, spec.attn_bias)?,
                wo: linear(&mut w, &format!("{b}.attn.Wo"), h, h, spec.attn_bias)?,
                mlp_norm: norm(&mut w, &format!("{b}.mlp_norm"), &spec)?,
                wi: linear(
                    &mut w,
                    &format!("{b}.mlp.Wi"),
                    2 * spec.inter,
                    h,
                    spec.mlp_bias,
                )?,
                mlp_wo: linear(&mut w, &format!("{b}.mlp.Wo"), h, spec.inter, spec.mlp_bias)?,
                window: *window,
            });
        }
        let final_norm = norm(&mut w, &format!("{p}final_norm"), &spec)?;
        let head_kind = head;
        let labels = setup::labels(&f, head)?;
        let n = labels.len();
        let pred = if head == EncoderHead::Base {
            if !p.is_empty() {
                w.leave(|name| !name.starts_with(p));
            }
            None
        } else {
            Some((
                linear(&mut w, "head.dense", h, h, spec.head_bias)?,
                norm(&mut w, "head.norm", &spec)?,
            ))
        };
        let head = match head {
            EncoderHead::Base => Head::Base,
            EncoderHead::Sequence => Head::Sequence(linear(&mut w, "classifier", n, h, true)?),
            EncoderHead::Tokens => Head::PerToken(linear(&mut w, "classifier", n, h, true)?),
            // ModernBERT's QA head is named `classifier` too.
            EncoderHead::Qa => Head::PerToken(linear(&mut w, "classifier", 2, h, true)?),
            EncoderHead::Mlm => {
                let weight = if w.has("decoder.weight") {
                    w.take("decoder.weight", &[spec.vocab, h])?
                } else {
                    tok.clone()
                };
                let bias = if spec.decoder_bias {
                    Some(w.take("decoder.bias", &[spec.vocab])?)
                } else {
                    None
                };
                Head::PerToken(Linear::new(weight, bias))
            }
        };
        w.finish()?;
        let setup = HeadSetup::finish(dir, &f, head_kind, labels, spec.max_pos)?;
        Ok(Self {
            spec,
            tok,
            emb_norm,
            layers,
            final_norm,
            pred,
            head,
            device: device.clone(),
            setup,
        })
    }

    /// The last hidden state `[n, hidden]` of one unpadded input.
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.setup.check_ids(
            ids,
            self.spec.vocab,
            self.spec.max_pos,
            &"max_position_embeddings",
        )?;
        let s = &self.spec;
        let (n, h) = (ids.len(), s.hidden);
        let (heads, d) = (s.heads, h / s.heads);
        let dev = &self.device;
        let run = || -> candle_core::Result<Tensor> {
            let global = rope_tables(n, d, s.theta_global, dev)?;
            let local = rope_tables(n, d, s.theta_local, dev)?;
            let mut x = self
                .emb_norm
                .forward(&self.tok.index_select(&Tensor::new(ids, dev)?, 0)?)?
                .unsqueeze(0)?;
            for l in &self.layers {
                let a_in = match &l.attn_norm {
                    Some(nm) => nm.forward(&x)?,
                    None => x.clone(),
                };
                let qkv = l.wqkv.forward(&a_in)?.reshape((1, n, 3, heads, d))?;
                let part = |i: usize| -> candle_core::Result<Tensor> {
                    qkv.narrow(2, i, 1)?
                        .squeeze(2)?
                        .transpose(1, 2)?
                        .contiguous()
                };
                let (cos, sin) = if l.window.is_some() { &local } else { &global };
                let q = candle_nn::rotary_emb::rope(&part(0)?, cos, sin)?;
                let k = candle_nn::rotary_emb::rope(&part(1)?, cos, sin)?;
                let v = part(2)?;
                let mut scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
                if let Some(wnd) = l.window {
                    let mask: Vec<f32> = (0..n)
                        .flat_map(|i| {
                            (0..n).map(move |j| {
                                if i.abs_diff(j) <= wnd {
                                    0.0
                                } else {
                                    f32::NEG_INFINITY
                                }
                            })
                        })
                        .collect();
                    scores = scores.broadcast_add(&Tensor::from_vec(mask, (1, 1, n, n), dev)?)?;
                }
                let p = candle_nn::ops::softmax_last_dim(&scores)?;
                let ctx = p.matmul(&v)?.transpose(1, 2)?.reshape((1, n, h))?;
                x = (&x + l.wo.forward(&ctx)?)?;
                let m_in = l.mlp_norm.forward(&x)?;
                let wi = l.wi.forward(&m_in)?;
                let (inp, gate) = (wi.narrow(2, 0, s.inter)?, wi.narrow(2, s.inter, s.inter)?);
                x = (&x + l.mlp_wo.forward(&(act(s.act, &inp)? * gate)?)?)?;
            }
            self.final_norm.forward(&x)?.squeeze(0)
        };
        run().map_err(ce("forward"))
    }

    /// The head's output for one unpadded input (see [`crate::encoder::bertlike`]).
    pub fn head_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        let hidden = self.hidden_states(ids)?;
        let pred = |t: &Tensor| -> candle_core::Result<Tensor> {
            match &self.pred {
                Some((dense, nm)) => nm.forward(&act(self.spec.head_act, &dense.forward(t)?)?),
                None => Ok(t.clone()),
            }
        };
        let out = match &self.head {
            Head::Base => Ok(hidden),
            Head::Sequence(cls) => (|| {
                let pooled = if self.spec.mean_pooling {
                    hidden.mean_keepdim(0)?
                } else {
                    hidden.narrow(0, 0, 1)?
                };
                cls.forward(&pred(&pooled)?)
            })(),
            Head::PerToken(l) => (|| l.forward(&pred(&hidden)?))(),
        };
        out.and_then(|t| t.to_vec2()).map_err(ce("head"))
    }
}

impl HeadModel for ModernBert {
    fn setup(&self) -> &HeadSetup {
        &self.setup
    }

    fn width(&self) -> usize {
        self.spec.hidden
    }

    fn embed_rows(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.hidden_states(ids)
    }

    fn outputs(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        self.head_logits(ids)
    }
}
