//! One parametric T5-like encoder-decoder (t5, mt5, umt5): RMS-style `T5LayerNorm`s before
//! every sub-block, bias-free projections, no attention scaling, a relative position bias
//! (bidirectional buckets in the encoder, causal in the decoder) held by the first layer and
//! shared (t5, mt5) or held by every layer (umt5), a ReLU/GELU or gated FFN, and a tied or
//! separate LM head (tied output scaled by `d_model^-0.5` as each type's transformers code
//! does: t5's `scale_decoder_outputs`, umt5 when tied, never for mt5).
//!
//! Every tensor is taken by name and shape; one nobody takes is refused.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::Linear;

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::weights::Weights;

/// The model types [`translate`] knows.
pub const MODEL_TYPES: &[&str] = &["mt5", "switch_transformers", "t5", "umt5"];

/// A T5-like model, as [`translate`] reads it from `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) vocab: usize,
    pub(crate) d: usize,
    pub(crate) d_kv: usize,
    pub(crate) d_ff: usize,
    pub(crate) heads: usize,
    pub(crate) enc_layers: usize,
    pub(crate) dec_layers: usize,
    pub(crate) buckets: usize,
    pub(crate) max_distance: usize,
    pub(crate) eps: f64,
    pub(crate) gated: bool,
    pub(crate) act: Act,
    pub(crate) tied: bool,
    pub(crate) scale_outputs: bool,
    /// umt5: every layer has its own relative position bias.
    pub(crate) bias_per_layer: bool,
    /// Switch Transformers: the MLPs (`mlp.` rather than `DenseReluDense.`) of every
    /// `sparse_step`-th layer are top-1 mixtures of experts.
    pub(crate) switch: Option<Switch>,
}

/// Switch Transformers' sparse layers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Switch {
    pub(crate) experts: usize,
    /// Tokens an expert takes per sequence (per forward pass), in order; later ones skip the
    /// MLP (their branch is zero).
    pub(crate) capacity: usize,
    pub(crate) router_bias: bool,
    /// Layer `i` is sparse when `i % step == 1` or `step == 1` (encoder, decoder).
    pub(crate) steps: (usize, usize),
}

impl Switch {
    fn sparse(step: usize, i: usize) -> bool {
        step == 1 || i % step == 1
    }
}

/// `config.json` of `model_type` → [`Spec`], field by field.
pub(crate) fn translate(model_type: &str, f: &Fields<'_>) -> Result<Spec, SkillError> {
    if !MODEL_TYPES.contains(&model_type) {
        return Err(f.err(
            "model_type",
            format!("`{model_type}` is not a T5-like type the T5 model implements"),
        ));
    }
    let ff = f.str_opt("feed_forward_proj")?.unwrap_or("relu");
    let (gated, base) = match ff.strip_prefix("gated-") {
        Some(b) => (true, b),
        None => (false, ff),
    };
    if !matches!(base, "relu" | "gelu" | "gelu_new" | "silu") {
        return Err(f.err(
            "feed_forward_proj",
            format!("`{ff}` is not supported (relu, gelu, gated-gelu, gated-silu)"),
        ));
    }
    // transformers: `gated-gelu` means the tanh approximation (`gelu_new`).
    let act_name = match f.str_opt("dense_act_fn")? {
        Some(a) => a,
        None if base == "gelu" && gated => "gelu_new",
        None => base,
    };
    let act = match Act::from_hf(act_name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu)) => a,
        _ => {
            return Err(f.err(
                "dense_act_fn",
                format!("`{act_name}` is not supported (relu, gelu, gelu_new, silu)"),
            ));
        }
    };
    let tied = f.bool_or("tie_word_embeddings", true)?;
    let scale_outputs = match model_type {
        "t5" => f.bool_or("scale_decoder_outputs", tied)?,
        "umt5" | "switch_transformers" => tied,
        _ => false,
    };
    let enc_layers = f.positive("num_layers")?;
    let dec_layers = f.positive_opt("num_decoder_layers")?.unwrap_or(enc_layers);
    let switch = if model_type == "switch_transformers" {
        if gated {
            return Err(f.err("feed_forward_proj", "gated experts are not implemented"));
        }
        // `*_sparse_step` as saved, else as transformers' config computes it:
        // `num_layers // num_sparse_*_layers` (no sparse layer when that is 0).
        let step = |n: usize, field: &str, saved: &str| -> Result<usize, SkillError> {
            if let Some(s) = f.positive_opt(saved)? {
                return Ok(s);
            }
            Ok(match f.usize_opt(field)?.unwrap_or(3) {
                0 => usize::MAX,
                k => (n / k).max(1),
            })
        };
        Some(Switch {
            experts: f.positive("num_experts")?,
            capacity: f.positive("expert_capacity")?,
            router_bias: f.bool_or("router_bias", false)?,
            steps: (
                step(
                    enc_layers,
                    "num_sparse_encoder_layers",
                    "encoder_sparse_step",
                )?,
                step(
                    dec_layers,
                    "num_sparse_decoder_layers",
                    "decoder_sparse_step",
                )?,
            ),
        })
    } else {
        None
    };
    Ok(Spec {
        vocab: f.positive("vocab_size")?,
        d: f.positive("d_model")?,
        d_kv: f.positive("d_kv")?,
        d_ff: f.positive("d_ff")?,
        heads: f.positive("num_heads")?,
        enc_layers,
        dec_layers,
        buckets: f.positive("relative_attention_num_buckets")?,
        max_distance: f
            .usize_opt("relative_attention_max_distance")?
            .unwrap_or(128),
        eps: f.f64("layer_norm_epsilon")?,
        gated,
        act,
        tied,
        scale_outputs,
        bias_per_layer: model_type == "umt5",
        switch,
    })
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("T5 {context}: {e}"),
    }
}

/// T5's bucket of a relative position (`memory − query`): transformers'
/// `_relative_position_bucket`, bidirectional or causal, in f32 as torch computes it.
pub(crate) fn t5_bucket(
    relative: i64,
    bidirectional: bool,
    buckets: usize,
    max_distance: usize,
) -> u32 {
    let (mut nb, mut ret) = (buckets as i64, 0i64);
    let n = if bidirectional {
        nb /= 2;
        if relative > 0 {
            ret += nb;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = nb / 2;
    if n < max_exact {
        ret += n;
    } else {
        let log =
            (n as f32 / max_exact as f32).ln() / (max_distance as f32 / max_exact as f32).ln();
        let large = max_exact + (log * (nb - max_exact) as f32) as i64;
        ret += large.min(nb - 1);
    }
    ret as u32
}

/// `T5LayerNorm`: `x / √(mean(x²) + ε) · w`, no mean, no bias.
#[derive(Debug)]
struct RmsNorm {
    w: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.w)
    }
}

fn lin(w: &mut Weights, name: &str, out: usize, inp: usize) -> Result<Linear, SkillError> {
    Ok(Linear::new(
        w.take(&format!("{name}.weight"), &[out, inp])?,
        None,
    ))
}

#[derive(Debug)]
struct Attn {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    /// `[buckets, heads]`, in the layers that hold one.
    bias: Option<Tensor>,
}

impl Attn {
    fn load(w: &mut Weights, p: &str, s: &Spec, bias: bool) -> Result<Self, SkillError> {
        let inner = s.heads * s.d_kv;
        Ok(Self {
            q: lin(w, &format!("{p}.q"), inner, s.d)?,
            k: lin(w, &format!("{p}.k"), inner, s.d)?,
            v: lin(w, &format!("{p}.v"), inner, s.d)?,
            o: lin(w, &format!("{p}.o"), s.d, inner)?,
            heads: s.heads,
            bias: if bias {
                Some(w.take(
                    &format!("{p}.relative_attention_bias.weight"),
                    &[s.buckets, s.heads],
                )?)
            } else {
                None
            },
        })
    }

    fn split(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, inner) = t.dims3()?;
        t.reshape((b, n, self.heads, inner / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn kv(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split(&self.k.forward(x)?)?,
            self.split(&self.v.forward(x)?)?,
        ))
    }

    /// `o(softmax(q kᵀ + bias) v)` (T5 does not scale the scores).
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let q = self.split(&self.q.forward(x)?)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = p.matmul(v)?.transpose(1, 2)?;
        let inner = ctx.dim(2)? * ctx.dim(3)?;
        self.o.forward(&ctx.reshape((b, n, inner))?)
    }

    /// The position bias `[1, heads, n, k]` of queries at `q0..q0+n` over keys `0..k`:
    /// bidirectional buckets in the encoder; causal buckets and mask in the decoder.
    fn position_bias(
        &self,
        table: &Tensor,
        (n, k, q0): (usize, usize, usize),
        decoder: bool,
        s: &Spec,
    ) -> candle_core::Result<Tensor> {
        let (bidirectional, causal) = (!decoder, decoder);
        let idx: Vec<u32> = (0..n)
            .flat_map(|i| {
                (0..k).map(move |j| {
                    t5_bucket(
                        j as i64 - (q0 + i) as i64,
                        bidirectional,
                        s.buckets,
                        s.max_distance,
                    )
                })
            })
            .collect();
        let idx = Tensor::new(idx.as_slice(), table.device())?;
        let mut bias = table
            .index_select(&idx, 0)?
            .reshape((n, k, self.heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .contiguous()?;
        if causal && n > 1 {
            let mask: Vec<f32> = (0..n)
                .flat_map(|i| (0..k).map(move |j| if j > q0 + i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            bias = bias.broadcast_add(&Tensor::from_vec(mask, (1, 1, n, k), table.device())?)?;
        }
        Ok(bias)
    }
}

#[derive(Debug)]
struct Ffn {
    wi: Linear,
    wi_1: Option<Linear>,
    wo: Linear,
}

impl Ffn {
    fn load(w: &mut Weights, p: &str, s: &Spec) -> Result<Self, SkillError> {
        let (wi, wi_1) = if s.gated {
            (
                lin(w, &format!("{p}.wi_0"), s.d_ff, s.d)?,
                Some(lin(w, &format!("{p}.wi_1"), s.d_ff, s.d)?),
            )
        } else {
            (lin(w, &format!("{p}.wi"), s.d_ff, s.d)?, None)
        };
        Ok(Self {
            wi,
            wi_1,
            wo: lin(w, &format!("{p}.wo"), s.d, s.d_ff)?,
        })
    }

    fn forward(&self, x: &Tensor, a: Act) -> candle_core::Result<Tensor> {
        let h = act(a, &self.wi.forward(x)?)?;
        let h = match &self.wi_1 {
            Some(l) => (h * l.forward(x)?)?,
            None => h,
        };
        self.wo.forward(&h)
    }
}

/// Switch Transformers' top-1 mixture: `router` logits, its experts.
#[derive(Debug)]
struct Sparse {
    router: Linear,
    experts: Vec<Ffn>,
    capacity: usize,
}

impl Sparse {
    /// Each token of `x` `[1, n, d]` goes to its most probable expert, scaled by that
    /// probability, while the expert has capacity (counted in order); the rest get zero.
    fn forward(&self, x: &Tensor, a: Act) -> candle_core::Result<Tensor> {
        let x2 = x.squeeze(0)?;
        let probs = candle_nn::ops::softmax_last_dim(&self.router.forward(&x2)?)?;
        let mut taken = vec![0usize; self.experts.len()];
        let mut routed: Vec<(Vec<u32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); self.experts.len()];
        for (t, row) in probs.to_vec2::<f32>()?.iter().enumerate() {
            // torch.argmax: the first maximum.
            let (e, p) =
                row.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, v)| if v > b.1 { (i, v) } else { b },
                    );
            taken[e] += 1;
            if taken[e] <= self.capacity {
                routed[e].0.push(t as u32);
                routed[e].1.push(p);
            }
        }
        let mut out = x2.zeros_like()?;
        for (e, (toks, ps)) in routed.into_iter().enumerate() {
            if toks.is_empty() {
                continue;
            }
            let n = toks.len();
            let idx = Tensor::from_vec(toks, n, x.device())?;
            let y = self.experts[e].forward(&x2.index_select(&idx, 0)?, a)?;
            let y = y.broadcast_mul(&Tensor::from_vec(ps, (n, 1), x.device())?)?;
            out = out.index_add(&idx, &y, 0)?;
        }
        out.unsqueeze(0)
    }
}

/// A layer's feed-forward branch.
#[derive(Debug)]
enum FeedForward {
    Dense(Ffn),
    Sparse(Sparse),
}

impl FeedForward {
    fn forward(&self, x: &Tensor, a: Act) -> candle_core::Result<Tensor> {
        match self {
            FeedForward::Dense(f) => f.forward(x, a),
            FeedForward::Sparse(m) => m.forward(x, a),
        }
    }
}

#[derive(Debug)]
struct Layer {
    attn_ln: RmsNorm,
    attn: Attn,
    cross: Option<(RmsNorm, Attn)>,
    ffn_ln: RmsNorm,
    ffn: FeedForward,
}

/// Which part of the checkpoint to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The encoder (embeddings); a decoder in the files is left unused.
    Encoder,
    /// Encoder, decoder and LM head (generation).
    Full,
}

/// A decoding session: the encoder's keys and values per layer and the self-attention cache.
#[derive(Debug)]
pub(crate) struct Session {
    cross: Vec<(Tensor, Tensor)>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

/// A loaded T5-like model.
#[derive(Debug)]
pub(crate) struct T5Model {
    spec: Spec,
    shared: Tensor,
    enc: Vec<Layer>,
    enc_final: RmsNorm,
    dec: Vec<Layer>,
    dec_final: Option<RmsNorm>,
    lm_head: Option<Tensor>,
    device: Device,
}

fn norm(w: &mut Weights, name: &str, s: &Spec) -> Result<RmsNorm, SkillError> {
    Ok(RmsNorm {
        w: w.take(&format!("{name}.weight"), &[s.d])?,
        eps: s.eps,
    })
}

fn layers(w: &mut Weights, side: &str, s: &Spec, n: usize) -> Result<Vec<Layer>, SkillError> {
    let decoder = side == "decoder";
    (0..n)
        .map(|l| {
            let p = format!("{side}.block.{l}.layer");
            let bias = l == 0 || s.bias_per_layer;
            let ffn_i = if decoder { 2 } else { 1 };
            Ok(Layer {
                attn_ln: norm(w, &format!("{p}.0.layer_norm"), s)?,
                attn: Attn::load(w, &format!("{p}.0.SelfAttention"), s, bias)?,
                cross: if decoder {
                    Some((
                        norm(w, &format!("{p}.1.layer_norm"), s)?,
                        Attn::load(w, &format!("{p}.1.EncDecAttention"), s, false)?,
                    ))
                } else {
                    None
                },
                ffn_ln: norm(w, &format!("{p}.{ffn_i}.layer_norm"), s)?,
                ffn: match s.switch {
                    None => {
                        FeedForward::Dense(Ffn::load(w, &format!("{p}.{ffn_i}.DenseReluDense"), s)?)
                    }
                    Some(sw) => {
                        let m = format!("{p}.{ffn_i}.mlp");
                        let step = if decoder { sw.steps.1 } else { sw.steps.0 };
                        if Switch::sparse(step, l) {
                            let router = Linear::new(
                                w.take(
                                    &format!("{m}.router.classifier.weight"),
                                    &[sw.experts, s.d],
                                )?,
                                if sw.router_bias {
                                    Some(w.take(
                                        &format!("{m}.router.classifier.bias"),
                                        &[sw.experts],
                                    )?)
                                } else {
                                    None
                                },
                            );
                            let experts = (0..sw.experts)
                                .map(|e| Ffn::load(w, &format!("{m}.experts.expert_{e}"), s))
                                .collect::<Result<_, _>>()?;
                            FeedForward::Sparse(Sparse {
                                router,
                                experts,
                                capacity: sw.capacity,
                            })
                        } else {
                            FeedForward::Dense(Ffn::load(w, &m, s)?)
                        }
                    }
                },
            })
        })
        .collect()
}

impl T5Model {
    /// Take the tensors of `part` from `w`.
    pub(crate) fn load(spec: Spec, w: &mut Weights, part: Part) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let device = w.device().clone();
        let shared = w.take("shared.weight", &[spec.vocab, spec.d])?;
        for tied in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"] {
            if w.has(tied) {
                w.take(tied, &[spec.vocab, spec.d])?;
            }
        }
        let enc = layers(w, "encoder", &spec, spec.enc_layers)?;
        let enc_final = norm(w, "encoder.final_layer_norm", &spec)?;
        let (dec, dec_final, lm_head) = match part {
            Part::Encoder => {
                w.leave(|n| n.starts_with("decoder.") || n.starts_with("lm_head."));
                (Vec::new(), None, None)
            }
            Part::Full => {
                let dec = layers(w, "decoder", &spec, spec.dec_layers)?;
                let fin = norm(w, "decoder.final_layer_norm", &spec)?;
                let head = if w.has("lm_head.weight") || !spec.tied {
                    w.take("lm_head.weight", &[spec.vocab, spec.d])?
                } else {
                    shared.clone()
                };
                (dec, Some(fin), Some(head))
            }
        };
        w.finish()?;
        Ok(Self {
            spec,
            shared,
            enc,
            enc_final,
            dec,
            dec_final,
            lm_head,
            device,
        })
    }

    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }

    fn embed(&self, ids: &[u32]) -> candle_core::Result<Tensor> {
        self.shared
            .index_select(&Tensor::new(ids, &self.device)?, 0)?
            .unsqueeze(0)
    }

    /// The encoder output `[1, n, d]` of `ids`.
    pub(crate) fn encode(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let n = ids.len();
            let mut x = self.embed(ids)?;
            let mut shared_bias: Option<Tensor> = None;
            for l in &self.enc {
                let h = l.attn_ln.forward(&x)?;
                let own = match &l.attn.bias {
                    Some(t) => Some(l.attn.position_bias(t, (n, n, 0), false, &self.spec)?),
                    None => None,
                };
                if own.is_some() && !self.spec.bias_per_layer {
                    shared_bias = own.clone();
                }
                let bias = own.as_ref().or(shared_bias.as_ref());
                let (k, v) = l.attn.kv(&h)?;
                x = (&x + l.attn.attend(&h, &k, &v, bias)?)?;
                x = (&x + l.ffn.forward(&l.ffn_ln.forward(&x)?, self.spec.act)?)?;
            }
            self.enc_final.forward(&x)
        };
        run().map_err(ce("encoder"))
    }

    /// A decoding session over the encoder output `enc`.
    pub(crate) fn session(&self, enc: &Tensor) -> Result<Session, SkillError> {
        let cross = self
            .dec
            .iter()
            .filter_map(|l| l.cross.as_ref().map(|(_, a)| a.kv(enc)))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(ce("cross-attention keys"))?;
        Ok(Session {
            cross,
            cache: (0..self.dec.len()).map(|_| None).collect(),
            len: 0,
        })
    }

    /// Feed decoder tokens `ids` after the session's earlier ones; logits `[n, vocab]`.
    pub(crate) fn step(&self, s: &mut Session, ids: &[u32]) -> Result<Tensor, SkillError> {
        let (Some(fin), Some(head)) = (&self.dec_final, &self.lm_head) else {
            return Err(SkillError::Backend {
                backend: skillgen_runtime::BackendKind::Candle,
                detail: "the T5 decoder was not loaded (encoder only)".into(),
            });
        };
        let start = s.len;
        let run = |s: &mut Session| -> candle_core::Result<Tensor> {
            let n = ids.len();
            let total = start + n;
            let mut x = self.embed(ids)?;
            let mut shared_bias: Option<Tensor> = None;
            for (i, l) in self.dec.iter().enumerate() {
                let h = l.attn_ln.forward(&x)?;
                let own = match &l.attn.bias {
                    Some(t) => {
                        Some(
                            l.attn
                                .position_bias(t, (n, total, start), true, &self.spec)?,
                        )
                    }
                    None => None,
                };
                if own.is_some() && !self.spec.bias_per_layer {
                    shared_bias = own.clone();
                }
                let bias = own.as_ref().or(shared_bias.as_ref());
                let (k, v) = l.attn.kv(&h)?;
                let (k, v) = match s.cache[i].take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                x = (&x + l.attn.attend(&h, &k, &v, bias)?)?;
                s.cache[i] = Some((k, v));
                if let Some((ln, cross)) = &l.cross {
                    let (ck, cv) = &s.cross[i];
                    x = (&x + cross.attend(&ln.forward(&x)?, ck, cv, None)?)?;
                }
                x = (&x + l.ffn.forward(&l.ffn_ln.forward(&x)?, self.spec.act)?)?;
            }
            let mut x = fin.forward(&x)?.squeeze(0)?;
            if self.spec.scale_outputs {
                x = (x * (self.spec.d as f64).powf(-0.5))?;
            }
            x.matmul(&head.t()?)
        };
        let out = run(s).map_err(ce("decoder"))?;
        s.len += ids.len();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t5_buckets_match_transformers() {
        // torch: T5Attention._relative_position_bucket(r, bidirectional, 32, 128)
        for (rel, bi, want) in [
            (0, true, 0),
            (3, true, 19),
            (-3, true, 3),
            (20, true, 26),
            (-20, true, 10),
            (-3, false, 3),
            (3, false, 0),
            (-40, false, 23),
            (-200, false, 31),
        ] {
            assert_eq!(t5_bucket(rel, bi, 32, 128), want, "{rel} {bi}");
        }
    }
}
