//! Post-LN encoders with rotary positions and a gated MLP: `nomic_bert` (fused bias-free
//! `Wqkv`, `fc11`/`fc12`/`fc2`) and `gte` (fused `qkv_proj` with bias, `up_gate_proj`), with
//! token-type embeddings and an embedding LayerNorm; heads: the tanh pooler + classifier,
//! per-token classifiers, and each type's masked-LM head. Every tensor is taken by name and
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
use crate::weights::{Weights, layer_norm as norm, linear};

/// The model types this encoder implements.
pub const MODEL_TYPES: &[&str] = &["gte", "nomic_bert"];

/// Names and bias switches of one type.
#[derive(Debug, Clone, Copy)]
struct Names {
    prefix: &'static str,
    emb_ln: &'static str,
    layers: &'static str,
    qkv: &'static str,
    qkv_bias: bool,
    out: &'static str,
    out_bias: bool,
    attn_ln: &'static str,
    /// (up, gate) separately, or one fused `[up; gate]`.
    up_gate: (&'static str, Option<&'static str>),
    down: &'static str,
    down_bias: bool,
    mlp_ln: &'static str,
    /// The MLM head: dense, norm, decoder-bias names; whether it applies `hidden_act` (else
    /// gelu).
    mlm: (&'static str, &'static str, &'static str, bool),
}

const NOMIC: Names = Names {
    prefix: "nomic_bert",
    emb_ln: "emb_ln",
    layers: "encoder.layers",
    qkv: "attn.Wqkv",
    qkv_bias: false,
    out: "attn.out_proj",
    out_bias: false,
    attn_ln: "norm1",
    up_gate: ("mlp.fc11", Some("mlp.fc12")),
    down: "mlp.fc2",
    down_bias: false,
    mlp_ln: "norm2",
    mlm: (
        "cls.predictions.transform.dense",
        "cls.predictions.transform.layer_norm",
        "cls.predictions.bias",
        true,
    ),
};

const GTE: Names = Names {
    prefix: "gte",
    emb_ln: "embeddings.LayerNorm",
    layers: "encoder.layer",
    qkv: "attention.qkv_proj",
    qkv_bias: true,
    out: "attention.o_proj",
    out_bias: true,
    attn_ln: "attn_ln",
    up_gate: ("mlp.up_gate_proj", None),
    down: "mlp.down_proj",
    down_bias: true,
    mlp_ln: "mlp_ln",
    mlm: (
        "lm_head.dense",
        "lm_head.norm",
        "lm_head.decoder.bias",
        false,
    ),
};

/// The configuration, read field by field.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    names: Names,
    vocab: usize,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    layers: usize,
    inter: usize,
    act: Act,
    eps: f64,
    theta: f64,
    type_vocab: usize,
    max_pos: usize,
}

/// `config.json` of `model_type` → [`Spec`].
pub(crate) fn translate(model_type: &str, f: &Fields<'_>) -> Result<Spec, SkillError> {
    let names = match model_type {
        "nomic_bert" => NOMIC,
        "gte" => GTE,
        other => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not a rotary encoder the candle backend implements"),
            ));
        }
    };
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    let head_dim = match f.positive_opt("head_dim")? {
        Some(d) => d,
        None if hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(f.err(
                "num_attention_heads",
                format!("{heads} does not divide hidden_size {hidden}"),
            ));
        }
    };
    if !head_dim.is_multiple_of(2) {
        return Err(f.err("head_dim", "must be even for rotary positions"));
    }
    let theta = match f.get("rope_parameters") {
        Some(Value::Object(rp)) => {
            if let Some(t) = rp.get("rope_type").and_then(Value::as_str)
                && t != "default"
            {
                return Err(f.err(
                    "rope_parameters",
                    format!("rope type `{t}` is not implemented (default)"),
                ));
            }
            rp.get("rope_theta")
                .and_then(Value::as_f64)
                .ok_or_else(|| f.err("rope_parameters", "no rope_theta"))?
        }
        _ => f
            .get("rope_theta")
            .and_then(Value::as_f64)
            .ok_or_else(|| f.err("rope_theta", "missing (never defaulted)"))?,
    };
    let act_name = f.str_opt("hidden_act")?.unwrap_or("gelu");
    let act = match Act::from_hf(act_name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu)) => a,
        _ => {
            return Err(f.err(
                "hidden_act",
                format!("`{act_name}` is not implemented (gelu, gelu_new, relu, silu)"),
            ));
        }
    };
    Ok(Spec {
        names,
        vocab: f.positive("vocab_size")?,
        hidden,
        heads,
        head_dim,
        layers: f.positive("num_hidden_layers")?,
        inter: f.positive("intermediate_size")?,
        act,
        eps: f.f64("layer_norm_eps")?,
        theta,
        type_vocab: f.usize_opt("type_vocab_size")?.unwrap_or(0),
        max_pos: f.positive("max_position_embeddings")?,
    })
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("rotary encoder {context}: {e}"),
    }
}

#[derive(Debug)]
struct Layer {
    qkv: Linear,
    out: Linear,
    attn_ln: LayerNorm,
    /// `[up; gate]` rows (fused), or up then gate.
    up: Linear,
    gate: Option<Linear>,
    down: Linear,
    mlp_ln: LayerNorm,
}

#[derive(Debug)]
enum Head {
    Base,
    Sequence(Linear, Linear),
    PerToken(Linear),
    Mlm(Linear, Act, LayerNorm, Linear),
}

/// A loaded rotary encoder with one head.
pub struct RopeEncoder {
    spec: Spec,
    word: Tensor,
    token_type: Option<Tensor>,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    head: Head,
    device: Device,
    setup: HeadSetup,
}

impl std::fmt::Debug for RopeEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RopeEncoder")
            .field("spec", &self.spec)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl RopeEncoder {
    /// Load `dir` (a `model_type` checkpoint) with `head` on `device`.
    pub fn load(
        model_type: &str,
        dir: &Path,
        device: &Device,
        head: EncoderHead,
    ) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let spec = translate(model_type, &f)?;
        let nm = spec.names;
        let mut w = Weights::read(dir, device)?;
        w.convert(DType::F32)?;
        let (h, inner) = (spec.hidden, spec.heads * spec.head_dim);
        let p = if w.has(&format!("{}.embeddings.word_embeddings.weight", nm.prefix)) {
            format!("{}.", nm.prefix)
        } else {
            String::new()
        };
        let word = w.take(
            &format!("{p}embeddings.word_embeddings.weight"),
            &[spec.vocab, h],
        )?;
        let token_type = if spec.type_vocab > 0 {
            Some(w.take(
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[spec.type_vocab, h],
            )?)
        } else {
            None
        };
        let emb_ln = norm(&mut w, &format!("{p}{}", nm.emb_ln), h, spec.eps)?;
        let mut layers = Vec::with_capacity(spec.layers);
        for l in 0..spec.layers {
            let b = format!("{p}{}.{l}", nm.layers);
            let (up, gate) = match nm.up_gate {
                (up, Some(gate)) => (
                    linear(&mut w, &format!("{b}.{up}"), spec.inter, h, false)?,
                    Some(linear(
                        &mut w,
                        &format!("{b}.{gate}"),
                        spec.inter,
                        h,
                        false,
                    )?),
                ),
                (fused, None) => (
                    linear(&mut w, &format!("{b}.{fused}"), 2 * spec.inter, h, false)?,
                    None,
                ),
            };
            layers.push(Layer {
                qkv: linear(
                    &mut w,
                    &format!("{b}.{}", nm.qkv),
                    3 * inner,
                    h,
                    nm.qkv_bias,
                )?,
                out: linear(&mut w, &format!("{b}.{}", nm.out), h, inner, nm.out_bias)?,
                attn_ln: norm(&mut w, &format!("{b}.{}", nm.attn_ln), h, spec.eps)?,
                up,
                gate,
                down: linear(
                    &mut w,
                    &format!("{b}.{}", nm.down),
                    h,
                    spec.inter,
                    nm.down_bias,
                )?,
                mlp_ln: norm(&mut w, &format!("{b}.{}", nm.mlp_ln), h, spec.eps)?,
            });
        }
        let head_kind = head;
        let labels = setup::labels(&f, head)?;
        let n = labels.len();
        let pooler = format!("{p}pooler");
        if !matches!(head, EncoderHead::Sequence) {
            w.leave(|name| name.starts_with(&pooler));
        }
        let head = match head {
            EncoderHead::Base => {
                if !p.is_empty() {
                    w.leave(|name| !name.starts_with(&p));
                }
                Head::Base
            }
            EncoderHead::Sequence => Head::Sequence(
                linear(&mut w, &format!("{pooler}.dense"), h, h, true)?,
                linear(&mut w, "classifier", n, h, true)?,
            ),
            EncoderHead::Tokens => Head::PerToken(linear(&mut w, "classifier", n, h, true)?),
            EncoderHead::Qa => Head::PerToken(linear(&mut w, "qa_outputs", 2, h, true)?),
            EncoderHead::Mlm => {
                let (dense, ln, bias, hidden_act) = nm.mlm;
                Head::Mlm(
                    linear(&mut w, dense, h, h, true)?,
                    if hidden_act { spec.act } else { Act::Gelu },
                    norm(&mut w, ln, h, spec.eps)?,
                    Linear::new(word.clone(), Some(w.take(bias, &[spec.vocab])?)),
                )
            }
        };
        w.finish()?;
        let setup = HeadSetup::finish(dir, &f, head_kind, labels, spec.max_pos)?;
        Ok(Self {
            spec,
            word,
            token_type,
            emb_ln,
            layers,
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
        let (n, heads, d) = (ids.len(), s.heads, s.head_dim);
        let inner = heads * d;
        let dev = &self.device;
        let run = || -> candle_core::Result<Tensor> {
            let (cos, sin) = rope_tables(n, d, s.theta, dev)?;
            let mut x = self.word.index_select(&Tensor::new(ids, dev)?, 0)?;
            if let Some(tt) = &self.token_type {
                x = x.broadcast_add(&tt.get(0)?)?;
            }
            let mut x = self.emb_ln.forward(&x)?.unsqueeze(0)?;
            for l in &self.layers {
                let qkv = l.qkv.forward(&x)?;
                let part = |i: usize| -> candle_core::Result<Tensor> {
                    qkv.narrow(2, i * inner, inner)?
                        .reshape((1, n, heads, d))?
                        .transpose(1, 2)?
                        .contiguous()
                };
                let q = candle_nn::rotary_emb::rope(&part(0)?, &cos, &sin)?;
                let k = candle_nn::rotary_emb::rope(&part(1)?, &cos, &sin)?;
                let v = part(2)?;
                let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
                let p = candle_nn::ops::softmax_last_dim(&scores)?;
                let ctx = p.matmul(&v)?.transpose(1, 2)?.reshape((1, n, inner))?;
                x = l.attn_ln.forward(&(&x + l.out.forward(&ctx)?)?)?;
                let (up, gate) = match &l.gate {
                    Some(g) => (l.up.forward(&x)?, g.forward(&x)?),
                    None => {
                        let ug = l.up.forward(&x)?;
                        (ug.narrow(2, 0, s.inter)?, ug.narrow(2, s.inter, s.inter)?)
                    }
                };
                let m = l.down.forward(&(act(s.act, &gate)? * up)?)?;
                x = l.mlp_ln.forward(&(&x + m)?)?;
            }
            x.squeeze(0)
        };
        run().map_err(ce("forward"))
    }

    /// The head's output for one unpadded input (see [`crate::encoder::bertlike`]).
    pub fn head_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        let hidden = self.hidden_states(ids)?;
        let out = match &self.head {
            Head::Base => Ok(hidden),
            Head::Sequence(pooler, cls) => {
                (|| cls.forward(&pooler.forward(&hidden.narrow(0, 0, 1)?)?.tanh()?))()
            }
            Head::PerToken(l) => l.forward(&hidden),
            Head::Mlm(dense, a, ln, dec) => {
                (|| dec.forward(&ln.forward(&act(*a, &dense.forward(&hidden)?)?)?))()
            }
        };
        out.and_then(|t| t.to_vec2()).map_err(ce("head"))
    }
}

impl HeadModel for RopeEncoder {
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
