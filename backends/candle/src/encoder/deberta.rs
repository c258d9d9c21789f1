//! DeBERTa (v1, v2, v3): a post-LN BERT-layout encoder whose attention adds DeBERTa's disentangled
//! relative terms — content→position (`c2p`) and position→content (`p2c`) — computed from one
//! shared table of relative embeddings (LayerNorm-ed when `norm_rel_ebd` says so) through the
//! layer's own query/key projections (`share_att_key`), with log-bucketed relative positions
//! (`position_buckets`). DeBERTa v1 (`model_type: deberta`) fuses the projections into
//! `in_proj` (per head: query, key, value rows) with separate `q_bias`/`v_bias`, projects the
//! relative table with its own `pos_proj` (c2p) and `pos_q_proj` (p2c), and slices the table
//! to the input's span — the same indices as v2 without buckets. Every tensor is taken by name
//! and shape; what the translation does not implement (a convolution layer, unshared v2
//! position projections, talking heads) is a typed error.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};
use serde_json::Value;

use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::encoder::bertlike::EncoderHead;
use crate::encoder::setup::{self, HeadModel, HeadSetup};
use crate::weights::{Weights, layer_norm as norm, linear};

/// DeBERTa's configuration, read field by field.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// DeBERTa v1 (`model_type: deberta`): fused `in_proj`, own position projections.
    v1: bool,
    vocab: usize,
    emb: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    inter: usize,
    act: Act,
    eps: f64,
    max_pos: usize,
    type_vocab: usize,
    position_biased_input: bool,
    relative: bool,
    c2p: bool,
    p2c: bool,
    buckets: usize,
    max_relative: usize,
    /// Rows of half the relative table.
    span: usize,
    norm_rel: bool,
    pooler_act: Act,
    pooler_hidden: usize,
    legacy_mlm: bool,
}

fn act_of(f: &Fields<'_>, field: &str) -> Result<Act, SkillError> {
    let name = f.str_opt(field)?.unwrap_or("gelu");
    match Act::from_hf(name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu | Act::Tanh)) => Ok(a),
        _ => Err(f.err(
            field,
            format!("`{name}` is not implemented (gelu, gelu_new, relu, silu, tanh)"),
        )),
    }
}

/// `config.json` → [`Spec`].
pub(crate) fn translate(f: &Fields<'_>) -> Result<Spec, SkillError> {
    let v1 = match f.str_opt("model_type")? {
        Some("deberta") => true,
        Some("deberta-v2") | None => false,
        Some(other) => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not DeBERTa (deberta, deberta-v2)"),
            ));
        }
    };
    if v1 && f.bool_or("talking_head", false)? {
        return Err(f.err("talking_head", "talking heads are not implemented"));
    }
    let hidden = f.positive("hidden_size")?;
    let heads = f.positive("num_attention_heads")?;
    if !hidden.is_multiple_of(heads) {
        return Err(f.err(
            "num_attention_heads",
            format!("{heads} does not divide hidden_size {hidden}"),
        ));
    }
    if f.usize_opt("conv_kernel_size")?.unwrap_or(0) > 0 {
        return Err(f.err(
            "conv_kernel_size",
            "the convolution layer is not implemented",
        ));
    }
    let relative = f.bool_or("relative_attention", false)?;
    let kinds: Vec<String> = match f.get("pos_att_type") {
        None => Vec::new(),
        Some(Value::String(s)) => s.split('|').map(|x| x.trim().to_lowercase()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_lowercase).unwrap_or_default())
            .collect(),
        Some(v) => return Err(f.err("pos_att_type", format!("unexpected value {v}"))),
    };
    if let Some(k) = kinds.iter().find(|k| !matches!(k.as_str(), "c2p" | "p2c")) {
        return Err(f.err(
            "pos_att_type",
            format!("`{k}` is not implemented (c2p, p2c)"),
        ));
    }
    let (c2p, p2c) = (
        relative && kinds.iter().any(|k| k == "c2p"),
        relative && kinds.iter().any(|k| k == "p2c"),
    );
    if !v1 && relative && !f.bool_or("share_att_key", false)? && (c2p || p2c) {
        return Err(f.err(
            "share_att_key",
            "`false` (separate position projections) is not implemented",
        ));
    }
    let max_pos = f.positive("max_position_embeddings")?;
    let max_relative = match f.get("max_relative_positions").and_then(Value::as_i64) {
        Some(m) if m >= 1 => m as usize,
        _ => max_pos,
    };
    let buckets = match f.get("position_buckets").and_then(Value::as_i64) {
        Some(b) if b > 0 && !v1 => b as usize,
        _ => 0,
    };
    let norm_rel = f
        .str_opt("norm_rel_ebd")?
        .unwrap_or("none")
        .to_lowercase()
        .split('|')
        .any(|x| x.trim() == "layer_norm");
    Ok(Spec {
        v1,
        vocab: f.positive("vocab_size")?,
        emb: f.positive_opt("embedding_size")?.unwrap_or(hidden),
        hidden,
        layers: f.positive("num_hidden_layers")?,
        heads,
        inter: f.positive("intermediate_size")?,
        act: act_of(f, "hidden_act")?,
        eps: f.f64("layer_norm_eps")?,
        max_pos,
        type_vocab: f.usize_opt("type_vocab_size")?.unwrap_or(0),
        position_biased_input: f.bool_or("position_biased_input", true)?,
        relative,
        c2p,
        p2c,
        buckets,
        max_relative,
        span: if buckets > 0 { buckets } else { max_relative },
        norm_rel: norm_rel && !v1,
        pooler_act: act_of(f, "pooler_hidden_act")?,
        pooler_hidden: f.positive_opt("pooler_hidden_size")?.unwrap_or(hidden),
        legacy_mlm: f.bool_or("legacy", true)?,
    })
}

/// DeBERTa's relative position of query `i` to key `j` (`i − j`), log-bucketed when
/// `buckets > 0` (transformers' `make_log_bucket_position`, in f32 as torch computes it).
pub(crate) fn relative_position(i: usize, j: usize, buckets: usize, max_position: usize) -> i64 {
    let rel = i as i64 - j as i64;
    if buckets == 0 {
        return rel;
    }
    let mid = (buckets / 2) as i64;
    let abs = if rel < mid && rel > -mid {
        mid - 1
    } else {
        rel.abs()
    };
    if abs <= mid {
        return rel;
    }
    let log = ((abs as f32 / mid as f32).ln() / (((max_position - 1) as f32) / mid as f32).ln()
        * (mid - 1) as f32)
        .ceil()
        + mid as f32;
    (log as i64) * rel.signum()
}

/// DeBERTa v1's fused `in_proj` (`[3·hidden, hidden]`, per head its query, key and value rows)
/// with `q_bias` and `v_bias` → the query, key and value projections.
fn fused_qkv(
    w: &mut Weights,
    a: &str,
    h: usize,
    heads: usize,
) -> Result<(Linear, Linear, Linear), SkillError> {
    let fused = w.take(&format!("{a}.in_proj.weight"), &[3 * h, h])?;
    let q_bias = w.take(&format!("{a}.q_bias"), &[h])?;
    let v_bias = w.take(&format!("{a}.v_bias"), &[h])?;
    let part = |i: usize| -> candle_core::Result<Tensor> {
        fused
            .reshape((heads, 3, h / heads, h))?
            .narrow(1, i, 1)?
            .reshape((h, h))?
            .contiguous()
    };
    let run = || -> candle_core::Result<(Linear, Linear, Linear)> {
        Ok((
            Linear::new(part(0)?, Some(q_bias.clone())),
            Linear::new(part(1)?, None),
            Linear::new(part(2)?, Some(v_bias.clone())),
        ))
    };
    run().map_err(ce("in_proj"))
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("DeBERTa {context}: {e}"),
    }
}

#[derive(Debug)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_ln: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_ln: LayerNorm,
    /// DeBERTa v1's `pos_proj` (c2p keys of the relative table; v2: `k`).
    pos_k: Option<Linear>,
    /// DeBERTa v1's `pos_q_proj` (p2c queries of the relative table; v2: `q`).
    pos_q: Option<Linear>,
}

#[derive(Debug)]
enum Head {
    Base,
    /// `classifier(act(pooler.dense(h[0])))`.
    Sequence(Linear, Linear),
    PerToken(Linear),
    /// `decoder(LayerNorm(act(dense(h))))`.
    Mlm(Linear, LayerNorm, Linear),
}

/// A loaded DeBERTa-v2 with one head.
pub struct Deberta {
    spec: Spec,
    word: Tensor,
    pos: Option<Tensor>,
    token_type: Option<Tensor>,
    proj: Option<Linear>,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    rel: Option<Tensor>,
    head: Head,
    device: Device,
    setup: HeadSetup,
}

impl std::fmt::Debug for Deberta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deberta")
            .field("spec", &self.spec)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Deberta {
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
        let (h, e) = (spec.hidden, spec.emb);
        let p = if w.has("deberta.embeddings.word_embeddings.weight") {
            "deberta."
        } else {
            ""
        };
        let word = w.take(
            &format!("{p}embeddings.word_embeddings.weight"),
            &[spec.vocab, e],
        )?;
        let pos = if spec.position_biased_input {
            Some(w.take(
                &format!("{p}embeddings.position_embeddings.weight"),
                &[spec.max_pos, e],
            )?)
        } else {
            None
        };
        let token_type = if spec.type_vocab > 0 {
            Some(w.take(
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[spec.type_vocab, e],
            )?)
        } else {
            None
        };
        let proj = if e != h {
            Some(linear(
                &mut w,
                &format!("{p}embeddings.embed_proj"),
                h,
                e,
                false,
            )?)
        } else {
            None
        };
        let emb_ln = norm(&mut w, &format!("{p}embeddings.LayerNorm"), h, spec.eps)?;
        let mut layers = Vec::with_capacity(spec.layers);
        for l in 0..spec.layers {
            let b = format!("{p}encoder.layer.{l}");
            let a = format!("{b}.attention.self");
            let (q, k, v, pos_k, pos_q) = if spec.v1 {
                let (q, k, v) = fused_qkv(&mut w, &a, h, spec.heads)?;
                let pos_k = if spec.relative && spec.c2p {
                    Some(linear(&mut w, &format!("{a}.pos_proj"), h, h, false)?)
                } else {
                    None
                };
                let pos_q = if spec.relative && spec.p2c {
                    Some(linear(&mut w, &format!("{a}.pos_q_proj"), h, h, true)?)
                } else {
                    None
                };
                (q, k, v, pos_k, pos_q)
            } else {
                (
                    linear(&mut w, &format!("{a}.query_proj"), h, h, true)?,
                    linear(&mut w, &format!("{a}.key_proj"), h, h, true)?,
                    linear(&mut w, &format!("{a}.value_proj"), h, h, true)?,
                    None,
                    None,
                )
            };
            layers.push(Layer {
                q,
                k,
                v,
                pos_k,
                pos_q,
                o: linear(&mut w, &format!("{b}.attention.output.dense"), h, h, true)?,
                attn_ln: norm(
                    &mut w,
                    &format!("{b}.attention.output.LayerNorm"),
                    h,
                    spec.eps,
                )?,
                ffn_in: linear(
                    &mut w,
                    &format!("{b}.intermediate.dense"),
                    spec.inter,
                    h,
                    true,
                )?,
                ffn_out: linear(&mut w, &format!("{b}.output.dense"), h, spec.inter, true)?,
                ffn_ln: norm(&mut w, &format!("{b}.output.LayerNorm"), h, spec.eps)?,
            });
        }
        let rel = if spec.relative {
            let table = w.take(
                &format!("{p}encoder.rel_embeddings.weight"),
                &[2 * spec.span, h],
            )?;
            Some(if spec.norm_rel {
                norm(&mut w, &format!("{p}encoder.LayerNorm"), h, spec.eps)?
                    .forward(&table)
                    .map_err(ce("relative embeddings"))?
            } else {
                table
            })
        } else {
            None
        };
        let head_kind = head;
        let labels = setup::labels(&f, head)?;
        let n = labels.len();
        let head = match head {
            EncoderHead::Base => {
                if !p.is_empty() {
                    w.leave(|name| !name.starts_with(p));
                }
                Head::Base
            }
            EncoderHead::Sequence => Head::Sequence(
                linear(&mut w, "pooler.dense", spec.pooler_hidden, h, true)?,
                linear(&mut w, "classifier", n, spec.pooler_hidden, true)?,
            ),
            EncoderHead::Tokens => Head::PerToken(linear(&mut w, "classifier", n, h, true)?),
            EncoderHead::Qa => Head::PerToken(linear(&mut w, "qa_outputs", 2, h, true)?),
            EncoderHead::Mlm => {
                let (pre, bias_name) = if spec.legacy_mlm {
                    ("cls.predictions.transform", "cls.predictions.bias")
                } else {
                    ("lm_predictions.lm_head", "lm_predictions.lm_head.bias")
                };
                let dense = linear(&mut w, &format!("{pre}.dense"), h, h, true)?;
                let ln = norm(&mut w, &format!("{pre}.LayerNorm"), h, spec.eps)?;
                let dec_w = if w.has("cls.predictions.decoder.weight") {
                    w.take("cls.predictions.decoder.weight", &[spec.vocab, h])?
                } else {
                    word.clone()
                };
                if spec.legacy_mlm && w.has("cls.predictions.decoder.bias") {
                    w.take("cls.predictions.decoder.bias", &[spec.vocab])?;
                }
                let bias = w.take(bias_name, &[spec.vocab])?;
                Head::Mlm(dense, ln, Linear::new(dec_w, Some(bias)))
            }
        };
        w.finish()?;
        let setup = HeadSetup::finish(dir, &f, head_kind, labels, spec.max_pos)?;
        Ok(Self {
            spec,
            word,
            pos,
            token_type,
            proj,
            emb_ln,
            layers,
            rel,
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
        let (n, h, heads) = (ids.len(), s.hidden, s.heads);
        let d = h / heads;
        let dev = &self.device;
        let run = || -> candle_core::Result<Tensor> {
            let mut x = self.word.index_select(&Tensor::new(ids, dev)?, 0)?;
            if let Some(pos) = &self.pos {
                x = (x + pos.narrow(0, 0, n)?)?;
            }
            if let Some(tt) = &self.token_type {
                x = x.broadcast_add(&tt.get(0)?)?;
            }
            if let Some(p) = &self.proj {
                x = p.forward(&x)?;
            }
            let mut x = self.emb_ln.forward(&x)?.unsqueeze(0)?;
            let factor = 1 + usize::from(s.c2p) + usize::from(s.p2c);
            let scale = ((d * factor) as f64).sqrt();
            let span = s.span as i64;
            // Indices into the relative table: c2p[i][j] = clamp(rel(i,j) + span) on the
            // query rows; p2c[x][y] = clamp(-rel(x,y) + span) on the key rows, transposed
            // after the gather (transformers' `disentangled_attention_bias`).
            let clamp = |r: i64| (r + span).clamp(0, 2 * span - 1) as u32;
            let c2p_idx: Vec<u32> = (0..n)
                .flat_map(|i| {
                    (0..n).map(move |j| clamp(relative_position(i, j, s.buckets, s.max_relative)))
                })
                .collect();
            let p2c_idx: Vec<u32> = (0..n)
                .flat_map(|i| {
                    (0..n).map(move |j| clamp(-relative_position(i, j, s.buckets, s.max_relative)))
                })
                .collect();
            let c2p_idx = Tensor::from_vec(c2p_idx, (1, 1, n, n), dev)?
                .broadcast_as((1, heads, n, n))?
                .contiguous()?;
            let p2c_idx = Tensor::from_vec(p2c_idx, (1, 1, n, n), dev)?
                .broadcast_as((1, heads, n, n))?
                .contiguous()?;
            let split = |t: Tensor, len: usize| -> candle_core::Result<Tensor> {
                t.reshape((1, len, heads, d))?.transpose(1, 2)?.contiguous()
            };
            for l in &self.layers {
                let q = split(l.q.forward(&x)?, n)?;
                let k = split(l.k.forward(&x)?, n)?;
                let v = split(l.v.forward(&x)?, n)?;
                let mut scores = (q.matmul(&k.t()?)? / scale)?;
                if let Some(rel) = &self.rel {
                    let rows = rel.dim(0)?;
                    let rel = rel.unsqueeze(0)?;
                    if s.c2p {
                        let pk = split(l.pos_k.as_ref().unwrap_or(&l.k).forward(&rel)?, rows)?;
                        let c2p = q.matmul(&pk.t()?)?.contiguous()?.gather(&c2p_idx, 3)?;
                        scores = (scores + (c2p / scale)?)?;
                    }
                    if s.p2c {
                        let pq = split(l.pos_q.as_ref().unwrap_or(&l.q).forward(&rel)?, rows)?;
                        // [heads, key, table] gathered on the key rows, then read as [query][key].
                        let kp = k.matmul(&pq.t()?)?.contiguous()?;
                        let p2c = kp.gather(&p2c_idx, 3)?.transpose(2, 3)?;
                        scores = (scores + (p2c / scale)?)?;
                    }
                }
                let p = candle_nn::ops::softmax_last_dim(&scores)?;
                let ctx = p.matmul(&v)?.transpose(1, 2)?.reshape((1, n, h))?;
                x = l.attn_ln.forward(&(l.o.forward(&ctx)? + &x)?)?;
                let m = l.ffn_out.forward(&act(s.act, &l.ffn_in.forward(&x)?)?)?;
                x = l.ffn_ln.forward(&(m + &x)?)?;
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
            Head::Sequence(pooler, cls) => (|| {
                cls.forward(&act(
                    self.spec.pooler_act,
                    &pooler.forward(&hidden.narrow(0, 0, 1)?)?,
                )?)
            })(),
            Head::PerToken(l) => l.forward(&hidden),
            Head::Mlm(dense, ln, dec) => {
                (|| dec.forward(&ln.forward(&act(self.spec.act, &dense.forward(&hidden)?)?)?))()
            }
        };
        out.and_then(|t| t.to_vec2()).map_err(ce("head"))
    }
}

impl HeadModel for Deberta {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buckets_match_transformers() {
        // torch: make_log_bucket_position(i - j, 8, 16) for i - j in -10..=10
        let want = [-6, -6, -5, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 5, 6, 6];
        let got: Vec<i64> = (-8i64..=8)
            .map(|r| {
                let (i, j) = if r >= 0 {
                    (r as usize, 0)
                } else {
                    (0, (-r) as usize)
                };
                relative_position(i, j, 8, 16)
            })
            .collect();
        assert_eq!(got, want);
    }
}
