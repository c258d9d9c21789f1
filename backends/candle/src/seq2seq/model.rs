//! One parametric BART-like encoder-decoder: token embeddings (scaled or not) + positions
//! (learned with an offset, or sinusoidal: Marian's, or M2M-100's counted from the padding
//! id), an optional embedding LayerNorm, post-LN or pre-LN (with final LayerNorms) blocks,
//! a causal self-attention with a KV cache and a cross-attention whose keys and values are
//! computed once per input, and a tied LM head with an optional `final_logits_bias`.
//!
//! [`translate`] reads a type's `config.json` into a [`Spec`]; what it does not implement is a
//! typed error. Every tensor is taken by name and shape, and one nobody takes is refused.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::Fields;
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::weights::Weights;

/// The model types [`translate`] knows.
pub const MODEL_TYPES: &[&str] = &[
    "bart",
    "bigbird_pegasus",
    "led",
    "blenderbot",
    "blenderbot-small",
    "m2m_100",
    "marian",
    "mbart",
    "mvp",
    "pegasus",
    "plbart",
];

/// How positions are embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Positions {
    /// A learned (or saved) table; position `p` reads row `p + offset`.
    Table { offset: usize },
    /// Marian's sinusoids (not saved): `sin` in the first half, `cos` in the second, frequency
    /// `10000^(-2i/d)`.
    MarianSinusoidal,
    /// M2M-100's sinusoids (not saved): frequency `exp(-i·ln(10000)/(d/2 − 1))`, positions
    /// counted from `pad + 1` over non-padding tokens, the padding row zero.
    M2mSinusoidal { pad: u32 },
}

/// A BART-like encoder-decoder, as [`translate`] reads it from `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) vocab: usize,
    pub(crate) d: usize,
    pub(crate) enc_layers: usize,
    pub(crate) dec_layers: usize,
    pub(crate) enc_heads: usize,
    pub(crate) dec_heads: usize,
    pub(crate) enc_ffn: usize,
    pub(crate) dec_ffn: usize,
    pub(crate) act: Act,
    pub(crate) pre_ln: bool,
    pub(crate) emb_ln: bool,
    pub(crate) scale: f64,
    pub(crate) positions: Positions,
    pub(crate) max_pos: usize,
    /// Blenderbot-small's decoder normalises the token embeddings before adding positions.
    pub(crate) dec_ln_before_pos: bool,
    /// Attention projections with biases (BigBird-Pegasus: `use_bias`).
    pub(crate) attn_bias: bool,
    /// BigBird-Pegasus: its final LayerNorms are named `layernorm_embedding`, its encoder
    /// attention `self_attn.self.{query,key,value}` / `self_attn.output`, and inputs longer
    /// than the block-sparse threshold (where it stops being full attention) are refused.
    pub(crate) bigbird: Option<usize>,
    /// The body's tensor prefix (`model`; LED: `led`).
    pub(crate) prefix: &'static str,
    /// The decoder's position table (LED's differs from the encoder's).
    pub(crate) dec_max_pos: usize,
    /// LED: the encoder's Longformer attention is full attention for inputs of at most this
    /// many tokens (half the smallest `attention_window`, plus one); longer ones are refused.
    pub(crate) longformer: Option<usize>,
}

/// `config.json` of `model_type` → [`Spec`], field by field.
pub(crate) fn translate(model_type: &str, f: &Fields<'_>) -> Result<Spec, SkillError> {
    // (pre-LN, embedding LayerNorm, positions)
    let pad = || -> Result<u32, SkillError> {
        f.usize_opt("pad_token_id")?
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| f.err("pad_token_id", "missing (positions count from it)"))
    };
    let (pre_ln, emb_ln, positions) = match model_type {
        "bart" | "mvp" | "plbart" => (false, true, Positions::Table { offset: 2 }),
        "mbart" => (true, true, Positions::Table { offset: 2 }),
        "blenderbot-small" => (false, true, Positions::Table { offset: 0 }),
        "blenderbot" => (true, false, Positions::Table { offset: 0 }),
        // Pegasus saves its sinusoidal table; Marian does not.
        "pegasus" => (true, false, Positions::Table { offset: 0 }),
        "marian" => (false, false, Positions::MarianSinusoidal),
        "bigbird_pegasus" => (true, false, Positions::Table { offset: 0 }),
        "led" => (false, true, Positions::Table { offset: 0 }),
        "m2m_100" => (true, false, Positions::M2mSinusoidal { pad: pad()? }),
        other => {
            return Err(f.err(
                "model_type",
                format!("`{other}` is not a BART-like type the seq2seq model implements"),
            ));
        }
    };
    if model_type == "mvp" && f.bool_or("use_prompt", false)? {
        return Err(f.err("use_prompt", "MVP's prompt layers are not implemented"));
    }
    let d = f.positive("d_model")?;
    let heads = |field: &str| -> Result<usize, SkillError> {
        let h = f.positive(field)?;
        if !d.is_multiple_of(h) {
            return Err(f.err(field, format!("{h} does not divide d_model {d}")));
        }
        Ok(h)
    };
    let act_name = f.str_opt("activation_function")?.unwrap_or("gelu");
    let act = match Act::from_hf(act_name) {
        Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu)) => a,
        _ => {
            return Err(f.err(
                "activation_function",
                format!("`{act_name}` is not implemented (gelu, gelu_new, relu, silu, swish)"),
            ));
        }
    };
    if let Some(Positions::M2mSinusoidal { .. } | Positions::MarianSinusoidal) = Some(positions)
        && !d.is_multiple_of(2)
    {
        return Err(f.err(
            "d_model",
            "odd sizes are not implemented for sinusoidal positions",
        ));
    }
    Ok(Spec {
        vocab: f.positive("vocab_size")?,
        d,
        enc_layers: f.positive("encoder_layers")?,
        dec_layers: f.positive("decoder_layers")?,
        enc_heads: heads("encoder_attention_heads")?,
        dec_heads: heads("decoder_attention_heads")?,
        enc_ffn: f.positive("encoder_ffn_dim")?,
        dec_ffn: f.positive("decoder_ffn_dim")?,
        act,
        pre_ln,
        emb_ln,
        scale: if f.bool_or("scale_embedding", false)? {
            (d as f64).sqrt()
        } else {
            1.0
        },
        positions,
        max_pos: if model_type == "led" {
            f.positive("max_encoder_position_embeddings")?
        } else {
            f.positive("max_position_embeddings")?
        },
        prefix: if model_type == "led" { "led" } else { "model" },
        dec_max_pos: if model_type == "led" {
            f.positive("max_decoder_position_embeddings")?
        } else {
            f.positive("max_position_embeddings")?
        },
        longformer: if model_type == "led" {
            let windows: Vec<usize> = match f.get("attention_window") {
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_u64().map(|x| x as usize))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| f.err("attention_window", "expected integers"))?,
                Some(v) => vec![
                    v.as_u64()
                        .ok_or_else(|| f.err("attention_window", "expected an integer"))?
                        as usize,
                ],
                None => return Err(f.err("attention_window", "missing (required)")),
            };
            let w = windows.into_iter().min().unwrap_or(0);
            if w < 2 || !w.is_multiple_of(2) {
                return Err(f.err("attention_window", "must be even and at least 2"));
            }
            Some(w / 2 + 1)
        } else {
            None
        },
        dec_ln_before_pos: model_type == "blenderbot-small",
        attn_bias: model_type != "bigbird_pegasus" || f.bool_or("use_bias", false)?,
        bigbird: if model_type == "bigbird_pegasus" {
            match f.str_opt("attention_type")? {
                Some("original_full") => Some(usize::MAX),
                Some("block_sparse") | None => Some(
                    (5 + 2 * f.usize_opt("num_random_blocks")?.unwrap_or(3))
                        * f.usize_opt("block_size")?.unwrap_or(64),
                ),
                Some(other) => {
                    return Err(f.err("attention_type", format!("`{other}` is not implemented")));
                }
            }
        } else {
            None
        },
    })
}

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("seq2seq {context}: {e}"),
    }
}

/// A linear layer with a bias (every projection of this family has one).
fn linear(w: &mut Weights, name: &str, out: usize, inp: usize) -> Result<Linear, SkillError> {
    crate::weights::linear(w, name, out, inp, true)
}

/// A LayerNorm with `nn.LayerNorm`'s default ε (1e-5), as the BART family uses.
fn norm(w: &mut Weights, name: &str, n: usize) -> Result<LayerNorm, SkillError> {
    crate::weights::layer_norm(w, name, n, 1e-5)
}

/// One attention layer's projections.
#[derive(Debug)]
struct Attn {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
}

impl Attn {
    fn load(
        w: &mut Weights,
        p: &str,
        d: usize,
        heads: usize,
        bias: bool,
    ) -> Result<Self, SkillError> {
        let l =
            |w: &mut Weights, n: &str| crate::weights::linear(w, &format!("{p}.{n}"), d, d, bias);
        Ok(Self {
            q: l(w, "q_proj")?,
            k: l(w, "k_proj")?,
            v: l(w, "v_proj")?,
            o: l(w, "out_proj")?,
            heads,
        })
    }

    /// LED's encoder names: `longformer_self_attn.{query,key,value}`, `output` (the global
    /// projections are left: no token is global, as transformers' default).
    fn load_led(w: &mut Weights, p: &str, d: usize, heads: usize) -> Result<Self, SkillError> {
        let l =
            |w: &mut Weights, n: &str| crate::weights::linear(w, &format!("{p}.{n}"), d, d, true);
        let global = format!("{p}.longformer_self_attn.");
        w.leave(|n| n.starts_with(&global) && n.contains("_global."));
        Ok(Self {
            q: l(w, "longformer_self_attn.query")?,
            k: l(w, "longformer_self_attn.key")?,
            v: l(w, "longformer_self_attn.value")?,
            o: l(w, "output")?,
            heads,
        })
    }

    /// BigBird-Pegasus' encoder names: `self.{query,key,value}`, `output`.
    fn load_bigbird(
        w: &mut Weights,
        p: &str,
        d: usize,
        heads: usize,
        bias: bool,
    ) -> Result<Self, SkillError> {
        let l =
            |w: &mut Weights, n: &str| crate::weights::linear(w, &format!("{p}.{n}"), d, d, bias);
        Ok(Self {
            q: l(w, "self.query")?,
            k: l(w, "self.key")?,
            v: l(w, "self.value")?,
            o: l(w, "output")?,
            heads,
        })
    }

    /// `[1, n, d]` → `[1, heads, n, d/heads]`.
    fn split(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = t.dims3()?;
        t.reshape((b, n, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x` (split by head).
    fn kv(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split(&self.k.forward(x)?)?,
            self.split(&self.v.forward(x)?)?,
        ))
    }

    /// Attention of queries from `x` over `k`, `v`; `causal_from`: the absolute position of
    /// the first query when a causal mask applies (self-attention over a cache).
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        causal_from: Option<usize>,
    ) -> candle_core::Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let q = self.split(&self.q.forward(x)?)?;
        let mut scores = (q.matmul(&k.t()?)? * (hd as f64).powf(-0.5))?;
        if let Some(start) = causal_from {
            let kn = k.dim(2)?;
            if n > 1 {
                let mask: Vec<f32> = (0..n)
                    .flat_map(|i| {
                        (0..kn).map(move |j| {
                            if j > start + i {
                                f32::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (1, 1, n, kn), x.device())?;
                scores = scores.broadcast_add(&mask)?;
            }
        }
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = p.matmul(v)?.transpose(1, 2)?.reshape((b, n, d))?;
        self.o.forward(&ctx)
    }
}

#[derive(Debug)]
struct Ffn {
    fc1: Linear,
    fc2: Linear,
}

impl Ffn {
    fn forward(&self, x: &Tensor, a: Act) -> candle_core::Result<Tensor> {
        self.fc2.forward(&act(a, &self.fc1.forward(x)?)?)
    }
}

#[derive(Debug)]
struct EncLayer {
    attn: Attn,
    attn_ln: LayerNorm,
    ffn: Ffn,
    ffn_ln: LayerNorm,
}

#[derive(Debug)]
struct DecLayer {
    attn: Attn,
    attn_ln: LayerNorm,
    cross: Attn,
    cross_ln: LayerNorm,
    ffn: Ffn,
    ffn_ln: LayerNorm,
}

/// One residual sub-block, post-LN or pre-LN.
fn residual(
    x: &Tensor,
    ln: &LayerNorm,
    pre_ln: bool,
    f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    if pre_ln {
        x + f(&ln.forward(x)?)?
    } else {
        ln.forward(&(x + f(x)?)?)
    }
}

/// One decoding session: the encoder's keys and values per layer, and the self-attention
/// cache.
#[derive(Debug)]
pub(crate) struct Session {
    cross: Vec<(Tensor, Tensor)>,
    cache: Vec<Option<(Tensor, Tensor)>>,
    /// Decoder tokens fed so far.
    pub(crate) len: usize,
}

/// A loaded BART-like model.
#[derive(Debug)]
pub(crate) struct Seq2seqModel {
    spec: Spec,
    shared: Tensor,
    enc_pos: Option<Tensor>,
    dec_pos: Option<Tensor>,
    enc_emb_ln: Option<LayerNorm>,
    dec_emb_ln: Option<LayerNorm>,
    enc: Vec<EncLayer>,
    dec: Vec<DecLayer>,
    enc_final: Option<LayerNorm>,
    dec_final: Option<LayerNorm>,
    lm_head: Tensor,
    logits_bias: Option<Tensor>,
    device: Device,
}

/// Marian's sinusoidal table (`MarianSinusoidalPositionalEmbedding`).
fn marian_table(n: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let mut out = vec![0f32; n * d];
    for pos in 0..n {
        for i in 0..half {
            let angle = pos as f64 / 10000f64.powf(2.0 * i as f64 / d as f64);
            out[pos * d + i] = angle.sin() as f32;
            out[pos * d + half + i] = angle.cos() as f32;
        }
    }
    out
}

/// M2M-100's sinusoidal table (`M2M100SinusoidalPositionalEmbedding.get_embedding`), in f32
/// as torch computes it.
fn m2m_table(n: usize, d: usize, pad: usize) -> Vec<f32> {
    let half = d / 2;
    let step = (10000f32).ln() / (half as f32 - 1.0);
    let mut out = vec![0f32; n * d];
    for pos in 0..n {
        if pos == pad {
            continue;
        }
        for i in 0..half {
            let angle = pos as f32 * (i as f32 * -step).exp();
            out[pos * d + i] = angle.sin();
            out[pos * d + half + i] = angle.cos();
        }
    }
    out
}

impl Seq2seqModel {
    /// Take the body's tensors (and the LM head's, when present) from `w`; the caller takes
    /// its head's and calls [`Weights::finish`].
    pub(crate) fn load(spec: Spec, w: &mut Weights) -> Result<Self, SkillError> {
        w.convert(DType::F32)?;
        let device = w.device().clone();
        let d = spec.d;
        let pre = spec.prefix;
        let shared = w.take(&format!("{pre}.shared.weight"), &[spec.vocab, d])?;
        // Tied copies some checkpoints save.
        for side in ["encoder", "decoder"] {
            let tied = format!("{pre}.{side}.embed_tokens.weight");
            if w.has(&tied) {
                w.take(&tied, &[spec.vocab, d])?;
            }
        }
        let table = |w: &mut Weights, side: &str| -> Result<Option<Tensor>, SkillError> {
            let name = format!("{pre}.{side}.embed_positions.weight");
            let rows = if side == "decoder" {
                spec.dec_max_pos
            } else {
                spec.max_pos
            };
            match spec.positions {
                Positions::Table { offset } => Ok(Some(w.take(&name, &[rows + offset, d])?)),
                Positions::MarianSinusoidal if w.has(&name) => {
                    Ok(Some(w.take(&name, &[spec.max_pos, d])?))
                }
                Positions::MarianSinusoidal => {
                    Tensor::from_vec(marian_table(spec.max_pos, d), (spec.max_pos, d), &device)
                        .map(Some)
                        .map_err(ce("positions"))
                }
                Positions::M2mSinusoidal { pad } => {
                    let n = spec.max_pos + 2;
                    // Older checkpoints saved the (recomputable) table as `weights`.
                    let saved = format!("{pre}.{side}.embed_positions.weights");
                    w.leave(|t| t == saved);
                    Tensor::from_vec(m2m_table(n, d, pad as usize), (n, d), &device)
                        .map(Some)
                        .map_err(ce("positions"))
                }
            }
        };
        let enc_pos = table(w, "encoder")?;
        let dec_pos = table(w, "decoder")?;
        let emb_ln = |w: &mut Weights, side: &str| -> Result<Option<LayerNorm>, SkillError> {
            if spec.emb_ln {
                Ok(Some(norm(
                    w,
                    &format!("{pre}.{side}.layernorm_embedding"),
                    d,
                )?))
            } else {
                Ok(None)
            }
        };
        let enc_emb_ln = emb_ln(w, "encoder")?;
        let dec_emb_ln = emb_ln(w, "decoder")?;
        let mut enc = Vec::with_capacity(spec.enc_layers);
        for l in 0..spec.enc_layers {
            let p = format!("{pre}.encoder.layers.{l}");
            enc.push(EncLayer {
                attn: if spec.longformer.is_some() {
                    Attn::load_led(w, &format!("{p}.self_attn"), d, spec.enc_heads)?
                } else if spec.bigbird.is_some() {
                    Attn::load_bigbird(
                        w,
                        &format!("{p}.self_attn"),
                        d,
                        spec.enc_heads,
                        spec.attn_bias,
                    )?
                } else {
                    Attn::load(
                        w,
                        &format!("{p}.self_attn"),
                        d,
                        spec.enc_heads,
                        spec.attn_bias,
                    )?
                },
                attn_ln: norm(w, &format!("{p}.self_attn_layer_norm"), d)?,
                ffn: Ffn {
                    fc1: linear(w, &format!("{p}.fc1"), spec.enc_ffn, d)?,
                    fc2: linear(w, &format!("{p}.fc2"), d, spec.enc_ffn)?,
                },
                ffn_ln: norm(w, &format!("{p}.final_layer_norm"), d)?,
            });
        }
        let mut dec = Vec::with_capacity(spec.dec_layers);
        for l in 0..spec.dec_layers {
            let p = format!("{pre}.decoder.layers.{l}");
            dec.push(DecLayer {
                attn: Attn::load(
                    w,
                    &format!("{p}.self_attn"),
                    d,
                    spec.dec_heads,
                    spec.attn_bias,
                )?,
                attn_ln: norm(w, &format!("{p}.self_attn_layer_norm"), d)?,
                cross: Attn::load(
                    w,
                    &format!("{p}.encoder_attn"),
                    d,
                    spec.dec_heads,
                    spec.attn_bias,
                )?,
                cross_ln: norm(w, &format!("{p}.encoder_attn_layer_norm"), d)?,
                ffn: Ffn {
                    fc1: linear(w, &format!("{p}.fc1"), spec.dec_ffn, d)?,
                    fc2: linear(w, &format!("{p}.fc2"), d, spec.dec_ffn)?,
                },
                ffn_ln: norm(w, &format!("{p}.final_layer_norm"), d)?,
            });
        }
        let final_name = if spec.bigbird.is_some() {
            "layernorm_embedding"
        } else {
            "layer_norm"
        };
        let (enc_final, dec_final) = if spec.pre_ln {
            (
                Some(norm(w, &format!("{pre}.encoder.{final_name}"), d)?),
                Some(norm(w, &format!("{pre}.decoder.{final_name}"), d)?),
            )
        } else {
            (None, None)
        };
        let lm_head = if w.has("lm_head.weight") {
            w.take("lm_head.weight", &[spec.vocab, d])?
        } else {
            shared.clone()
        };
        let logits_bias = if w.has("final_logits_bias") {
            Some(w.take("final_logits_bias", &[1, spec.vocab])?)
        } else {
            None
        };
        Ok(Self {
            spec,
            shared,
            enc_pos,
            dec_pos,
            enc_emb_ln,
            dec_emb_ln,
            enc,
            dec,
            enc_final,
            dec_final,
            lm_head,
            logits_bias,
            device,
        })
    }

    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The longest input (and decoder sequence) the position table covers.
    pub(crate) fn max_len(&self) -> usize {
        let room = match self.spec.positions {
            Positions::M2mSinusoidal { pad } => {
                (self.spec.max_pos + 2).saturating_sub(pad as usize + 1)
            }
            _ => self.spec.max_pos,
        };
        let room = self.spec.bigbird.map_or(room, |m| m.min(room));
        self.spec.longformer.map_or(room, |m| m.min(room))
    }

    /// The longest decoder sequence (start token included) the decoder's positions cover.
    pub(crate) fn dec_max_len(&self) -> usize {
        match self.spec.positions {
            Positions::M2mSinusoidal { pad } => {
                (self.spec.dec_max_pos + 2).saturating_sub(pad as usize + 1)
            }
            _ => self.spec.dec_max_pos,
        }
    }

    /// Embeddings of `ids` at absolute positions `start..` (`[1, n, d]`).
    fn embed(
        &self,
        ids: &[u32],
        start: usize,
        pos: &Option<Tensor>,
        ln: &Option<LayerNorm>,
        ln_before_pos: bool,
    ) -> candle_core::Result<Tensor> {
        let dev = &self.device;
        let x = (self.shared.index_select(&Tensor::new(ids, dev)?, 0)? * self.spec.scale)?;
        let rows: Vec<u32> = match self.spec.positions {
            Positions::Table { offset } => (0..ids.len())
                .map(|i| (start + i + offset) as u32)
                .collect(),
            Positions::MarianSinusoidal => (0..ids.len()).map(|i| (start + i) as u32).collect(),
            // Non-padding tokens count from pad + 1 (the decoder's prefix never holds padding
            // here: it starts with the decoder start token).
            Positions::M2mSinusoidal { pad } => ids
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    if t == pad {
                        pad
                    } else {
                        pad + 1 + (start + i) as u32
                    }
                })
                .collect(),
        };
        let p = match pos {
            Some(table) => table.index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?,
            None => candle_core::bail!("no position table"),
        };
        let x = match ln {
            Some(ln) if ln_before_pos => (ln.forward(&x)? + p)?,
            Some(ln) => ln.forward(&(x + p)?)?,
            None => (x + p)?,
        };
        x.unsqueeze(0)
    }

    /// The encoder's output `[1, n, d]` for `ids`.
    pub(crate) fn encode(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        let run = || -> candle_core::Result<Tensor> {
            let mut x = self.embed(ids, 0, &self.enc_pos, &self.enc_emb_ln, false)?;
            for l in &self.enc {
                x = residual(&x, &l.attn_ln, self.spec.pre_ln, |h| {
                    let (k, v) = l.attn.kv(h)?;
                    l.attn.attend(h, &k, &v, None)
                })?;
                x = residual(&x, &l.ffn_ln, self.spec.pre_ln, |h| {
                    l.ffn.forward(h, self.spec.act)
                })?;
            }
            match &self.enc_final {
                Some(ln) => ln.forward(&x),
                None => Ok(x),
            }
        };
        run().map_err(ce("encoder"))
    }

    /// A decoding session over the encoder output `enc`.
    pub(crate) fn session(&self, enc: &Tensor) -> Result<Session, SkillError> {
        let cross = self
            .dec
            .iter()
            .map(|l| l.cross.kv(enc))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(ce("cross-attention keys"))?;
        Ok(Session {
            cross,
            cache: (0..self.dec.len()).map(|_| None).collect(),
            len: 0,
        })
    }

    /// Feed decoder tokens `ids` (after the session's `len` earlier ones); the logits at every
    /// new position `[n, vocab]`.
    pub(crate) fn step(&self, s: &mut Session, ids: &[u32]) -> Result<Tensor, SkillError> {
        let x = self.decode(s, ids)?;
        let run = || -> candle_core::Result<Tensor> {
            let logits = x.matmul(&self.lm_head.t()?)?;
            match &self.logits_bias {
                Some(b) => logits.broadcast_add(b),
                None => Ok(logits),
            }
        };
        run().map_err(ce("LM head"))
    }

    /// Feed decoder tokens `ids` (after the session's `len` earlier ones); the decoder's last
    /// hidden state at every new position `[n, d]`.
    pub(crate) fn decode(&self, s: &mut Session, ids: &[u32]) -> Result<Tensor, SkillError> {
        let start = s.len;
        let run = |s: &mut Session| -> candle_core::Result<Tensor> {
            let mut x = self.embed(
                ids,
                start,
                &self.dec_pos,
                &self.dec_emb_ln,
                self.spec.dec_ln_before_pos,
            )?;
            for (i, l) in self.dec.iter().enumerate() {
                let cache = &mut s.cache[i];
                x = residual(&x, &l.attn_ln, self.spec.pre_ln, |h| {
                    let (k, v) = l.attn.kv(h)?;
                    let (k, v) = match cache.take() {
                        Some((pk, pv)) => {
                            (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?)
                        }
                        None => (k, v),
                    };
                    let out = l.attn.attend(h, &k, &v, Some(start))?;
                    *cache = Some((k, v));
                    Ok(out)
                })?;
                let (ck, cv) = &s.cross[i];
                x = residual(&x, &l.cross_ln, self.spec.pre_ln, |h| {
                    l.cross.attend(h, ck, cv, None)
                })?;
                x = residual(&x, &l.ffn_ln, self.spec.pre_ln, |h| {
                    l.ffn.forward(h, self.spec.act)
                })?;
            }
            if let Some(ln) = &self.dec_final {
                x = ln.forward(&x)?;
            }
            x.squeeze(0)
        };
        let out = run(s).map_err(ce("decoder"))?;
        s.len += ids.len();
        Ok(out)
    }

    /// The argmax of the last row of `logits` `[n, vocab]`.
    pub(crate) fn argmax_last(logits: &Tensor) -> Result<u32, SkillError> {
        let n = logits.dim(0).map_err(ce("logits"))?;
        logits
            .get(n - 1)
            .and_then(|l| l.argmax(D::Minus1))
            .and_then(|t| t.to_scalar::<u32>())
            .map_err(ce("argmax"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoid_tables_follow_transformers() {
        // Marian: row 1 = [sin(1), sin(1/100), cos(1), cos(1/100)] for d = 4.
        let m = marian_table(2, 4);
        let want = [1f64.sin(), 0.01f64.sin(), 1f64.cos(), 0.01f64.cos()];
        for (g, w) in m[4..].iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{m:?}");
        }
        // M2M-100: the padding row is zero; row 2 = [sin(2), sin(2e-4), cos(2), cos(2e-4)].
        let t = m2m_table(3, 4, 1);
        assert!(t[4..8].iter().all(|x| *x == 0.0));
        let want = [2f64.sin(), 2e-4f64.sin(), 2f64.cos(), 2e-4f64.cos()];
        for (g, w) in t[8..].iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-5, "{t:?}");
        }
    }
}
