//! The config-driven decoder: one implementation of the causal LMs transformers has, switched
//! by a [`Spec`] and loaded through [`Names`] (candle tensors and ops, our own model code).
//!
//! Shapes: a sequence is `[positions, hidden]` (one request at a time); attention works on
//! `[heads, positions, head_dim]`, with grouped-query heads folded into their KV group so
//! keys and values are never repeated.

use crate::linear::Linear;
use candle_core::{D, DType, Device, Module, Tensor};
use skillgen_kernels::quant::QMatrix;

use skillgen_runtime::SkillError;

use super::spec::{
    Absolute, Act, AttnGate, FusedQkv, HeadTransform, Mla, Moe, Names, NopeScale, NormKind, Rope,
    Routing, Spec,
};
use crate::activation::act;
use crate::weights::Weights;

type R<T> = Result<T, SkillError>;

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("decoder {context}: {e}"),
    }
}

/// A normalisation with its parameters.
#[derive(Debug, Clone)]
struct Norm {
    w: Tensor,
    b: Option<Tensor>,
    eps: f32,
    rms: bool,
}

impl Norm {
    fn load(w: &mut Weights, name: &str, kind: NormKind, dims: &[usize]) -> R<Self> {
        let dev = w.device().clone();
        let dtype = w.dtype();
        Ok(match kind {
            NormKind::Rms { eps, plus_one } => {
                let mut t = w.take(&format!("{name}.weight"), dims)?;
                if plus_one {
                    t = (t + 1.0).map_err(ce("norm weight"))?;
                }
                Self {
                    w: t,
                    b: None,
                    eps: eps as f32,
                    rms: true,
                }
            }
            NormKind::Layer { eps, bias } => Self {
                w: w.take(&format!("{name}.weight"), dims)?,
                b: if bias {
                    Some(w.take(&format!("{name}.bias"), dims)?)
                } else {
                    None
                },
                eps: eps as f32,
                rms: false,
            },
            NormKind::RmsNoAffine { eps } => Self {
                w: Tensor::ones(dims, dtype, &dev).map_err(ce("norm"))?,
                b: None,
                eps: eps as f32,
                rms: true,
            },
            NormKind::Layer1P { eps } => Self {
                w: (w.take(&format!("{name}.weight"), dims)? + 1.0).map_err(ce("norm weight"))?,
                b: Some(w.take(&format!("{name}.bias"), dims)?),
                eps: eps as f32,
                rms: false,
            },
            NormKind::LayerNoAffine { eps } => Self {
                w: Tensor::ones(dims, dtype, &dev).map_err(ce("norm"))?,
                b: None,
                eps: eps as f32,
                rms: false,
            },
        })
    }

    /// Normalise over the last dimension; the weight broadcasts over the leading ones.
    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let f = || -> candle_core::Result<Tensor> {
            let x = x.contiguous()?;
            let last = x.dim(D::Minus1)?;
            if self.w.rank() == 1 && self.w.dim(0)? == last {
                return match (&self.b, self.rms) {
                    (_, true) => candle_nn::ops::rms_norm(&x, &self.w, self.eps),
                    (Some(b), false) => candle_nn::ops::layer_norm(&x, &self.w, b, self.eps),
                    (None, false) => {
                        let zeros = self.w.zeros_like()?;
                        candle_nn::ops::layer_norm(&x, &self.w, &zeros, self.eps)
                    }
                };
            }
            // A `[heads, head_dim]` weight (Cohere's per-head q/k norm): normalise with unit
            // parameters, then scale.
            let ones = Tensor::ones(last, x.dtype(), x.device())?;
            let y = if self.rms {
                candle_nn::ops::rms_norm(&x, &ones, self.eps)?
            } else {
                candle_nn::ops::layer_norm(&x, &ones, &ones.zeros_like()?, self.eps)?
            };
            let y = y.broadcast_mul(&self.w)?;
            match &self.b {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            }
        };
        f().map_err(ce("norm"))
    }
}

/// xIELU with `[alpha_p, alpha_n, beta, eps]` as stored (transformers' python path).
fn xielu(x: &Tensor, p: [f32; 4]) -> candle_core::Result<Tensor> {
    let softplus = |v: f32| (1.0 + v.exp()).ln();
    let (ap, beta, eps) = (softplus(p[0]), p[2], p[3]);
    let an = beta + softplus(p[1]);
    let pos = ((x.sqr()? * ap as f64)? + (x * beta as f64)?)?;
    let neg = ((((x.clamp(f32::NEG_INFINITY, eps)?.exp()? - 1.0)? - x)? * an as f64)?
        + (x * beta as f64)?)?;
    x.gt(0f32)?.where_cond(&pos, &neg)
}

/// Load `[out, in]` (or a `Conv1D` `[in, out]`) weight, quantized when the file holds it so,
/// and optional bias.
fn linear(
    w: &mut Weights,
    name: &str,
    out: usize,
    inp: usize,
    bias: bool,
    conv1d: bool,
) -> R<Linear> {
    let weight = format!("{name}.weight");
    let lin = if conv1d {
        let t = w
            .take(&weight, &[inp, out])?
            .t()
            .and_then(|t| t.contiguous())
            .map_err(ce("transposing a Conv1D weight"))?;
        Linear::new(t, None)
    } else {
        dense_or_quantized(w, &weight, &[out, inp])?
    };
    let b = if bias {
        Some(w.take(&format!("{name}.bias"), &[out])?)
    } else {
        None
    };
    Ok(lin.with_bias(b))
}

/// The weight `name` of `shape` as a layer without bias: quantized when the file holds it so.
fn dense_or_quantized(w: &mut Weights, name: &str, shape: &[usize]) -> R<Linear> {
    match w.take_quant(name, shape)? {
        Some(q) => Linear::quantized(q, None).map_err(ce("a quantized projection")),
        None => Ok(Linear::new(w.take(name, shape)?, None)),
    }
}

/// A classifier head: `names.score`, else `score`, `classifier` or `qa_outputs` (token and QA
/// heads), with its
/// bias when the checkpoint has one.
fn score_head(w: &mut Weights, names: &Names, labels: usize, hd: usize) -> R<Linear> {
    let name = [names.score.as_str(), "score", "classifier", "qa_outputs"]
        .into_iter()
        .find(|n| w.has(&format!("{n}.weight")))
        .unwrap_or(names.score.as_str())
        .to_owned();
    let bias = format!("{name}.bias");
    let b = if w.has(&bias) {
        Some(w.take(&bias, &[labels])?)
    } else {
        None
    };
    Ok(Linear::new(
        w.take(&format!("{name}.weight"), &[labels, hd])?,
        b,
    ))
}

/// The LM head: `names.head` or, tied, the embedding matrix (the same quantized blocks when
/// the embeddings are quantized).
fn lm_head(w: &mut Weights, names: &Names, s: &Spec, embed: &Embedding, hd: usize) -> R<Linear> {
    let head = if s.tie {
        if w.has(&format!("{}.weight", names.head)) {
            // transformers would tie and ignore the stored head: refuse the ambiguity.
            return Err(SkillError::ConfigField {
                path: w.path.with_file_name("config.json"),
                field: "tie_word_embeddings".into(),
                detail: format!(
                    "`true`, but the weights hold a separate {}.weight",
                    names.head
                ),
            });
        }
        match embed {
            Embedding::Quant(m) => Linear::from_matrix(m.clone(), None),
            Embedding::Dense(t) => match w.quantized(&format!("{}.weight", names.embed)) {
                Some(q) => Linear::quantized(q, None).map_err(ce("the tied LM head"))?,
                None => Linear::new(t.clone(), None),
            },
        }
    } else {
        dense_or_quantized(w, &format!("{}.weight", names.head), &[s.vocab, hd])?
    };
    let head_b = if s.head_bias {
        Some(w.take(&format!("{}.bias", names.head), &[s.vocab])?)
    } else {
        None
    };
    Ok(head.with_bias(head_b))
}

fn cat_rows(parts: &[&Tensor]) -> R<Tensor> {
    Tensor::cat(parts, 0).map_err(ce("fusing projections"))
}

/// Rotary tables of one layer kind.
#[derive(Debug, Clone)]
struct RopeTable {
    cos: Tensor,
    sin: Tensor,
    dims: usize,
    interleaved: bool,
}

impl RopeTable {
    fn new(r: &Rope, max: usize, dtype: DType, dev: &Device) -> R<Self> {
        let half = r.dims / 2;
        let mut inv: Vec<f64> = (0..half)
            .map(|i| match r.proportional {
                Some(rotated) if i >= rotated => 0.0,
                _ => 1.0 / r.theta.powf((2 * i) as f64 / r.dims as f64),
            })
            .collect();
        let mut attention_factor = 1.0f32;
        if let Some(y) = r.yarn {
            let dim = r.dims as f64;
            let corr = |rot: f64| {
                dim * (y.original_max_positions / (rot * 2.0 * std::f64::consts::PI)).ln()
                    / (2.0 * r.theta.ln())
            };
            let (mut low, mut high) = (corr(y.beta_fast), corr(y.beta_slow));
            if y.truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let mut high = high.min(dim - 1.0);
            if low == high {
                high += 0.001;
            }
            for (i, f) in inv.iter_mut().enumerate() {
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                let extrapolation = 1.0 - ramp;
                let interpolation = *f / y.factor;
                *f = interpolation * (1.0 - extrapolation) + *f * extrapolation;
            }
            attention_factor = y.attention_factor as f32;
        }
        if let Some((factor, low, high, orig)) = r.llama3 {
            let low_wavelen = orig / low;
            let high_wavelen = orig / high;
            for f in &mut inv {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (orig / wavelen - low) / (high - low);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        // Computed like transformers: f32 inverse frequencies times f32 positions.
        let inv: Vec<f32> = inv.iter().map(|&x| x as f32).collect();
        let scale = r.linear.unwrap_or(1.0) as f32;
        let mut cos = Vec::with_capacity(max * half);
        let mut sin = Vec::with_capacity(max * half);
        for p in 0..max {
            let p = p as f32 / scale;
            for f in &inv {
                let a = p * f;
                cos.push(a.cos() * attention_factor);
                let sn = a.sin() * attention_factor;
                sin.push(if r.inverse { -sn } else { sn });
            }
        }
        let t = |v: Vec<f32>| {
            Tensor::from_vec(v, (max, half), dev)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(ce("rope table"))
        };
        Ok(Self {
            cos: t(cos)?,
            sin: t(sin)?,
            dims: r.dims,
            interleaved: r.interleaved,
        })
    }

    /// Rotate `x` `[heads, s, head_dim]` for positions `pos..pos + s`.
    fn apply(&self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        self.apply_as(x, pos, self.interleaved)
    }

    /// [`Self::apply`] with the pair layout given.
    fn apply_as(&self, x: &Tensor, pos: usize, interleaved: bool) -> candle_core::Result<Tensor> {
        let (_, s, d) = x.dims3()?;
        let cos = self.cos.narrow(0, pos, s)?;
        let sin = self.sin.narrow(0, pos, s)?;
        let rot = |t: &Tensor| -> candle_core::Result<Tensor> {
            let t = t.contiguous()?.unsqueeze(0)?;
            let y = if interleaved {
                candle_nn::rotary_emb::rope_i(&t, &cos, &sin)?
            } else {
                candle_nn::rotary_emb::rope(&t, &cos, &sin)?
            };
            y.squeeze(0)
        };
        if self.dims == d {
            return rot(x);
        }
        let a = rot(&x.narrow(D::Minus1, 0, self.dims)?)?;
        let b = x.narrow(D::Minus1, self.dims, d - self.dims)?;
        Tensor::cat(&[&a, &b], D::Minus1)
    }
}

/// How q, k and v are computed.
#[derive(Debug, Clone)]
enum Proj {
    /// One `[q; k; v]` projection.
    Fused(Linear),
    /// DeepSeek latent attention.
    Mla(Box<MlaProj>),
}

#[derive(Debug, Clone)]
struct IndexerWeights {
    spec: super::spec::Indexer,
    wq_b: Linear,
    wk: Linear,
    k_norm: Norm,
    weights_proj: Linear,
}

#[derive(Debug, Clone)]
struct MlaProj {
    indexer: Option<IndexerWeights>,
    spec: Mla,
    q_a: Option<(Linear, Norm)>,
    q_b: Linear,
    kv_a: Linear,
    kv_norm: Norm,
    kv_b: Linear,
}

#[derive(Debug, Clone)]
struct Attention {
    /// KV heads and head size of this layer.
    kvh: usize,
    d: usize,
    proj: Proj,
    o: Linear,
    gate: Option<(Linear, AttnGate)>,
    /// Beam's per-head gate bias `[heads, 1]`.
    gate_bias: Option<Tensor>,
    sub_norm: Option<Norm>,
    /// Added after `o_proj` (GPT-NeoX Japanese, last layer).
    out_bias: Option<Tensor>,
    /// Differential attention: (λ, λ_init) of this layer.
    diff: Option<(f64, f64)>,
    /// Doge's dynamic mask: `dt_proj` and `A` (per KV head).
    dma: Option<(Linear, Tensor)>,
    q_norm: Option<(Norm, bool)>,
    k_norm: Option<Norm>,
    sinks: Option<Tensor>,
}

/// The token mixer of a layer.
#[derive(Debug, Clone)]
enum Mixer {
    Attn(Attention),
    Mamba(Box<MambaMixer>),
    Mamba2(Box<Mamba2Mixer>),
    ShortConv(Box<ShortConvMixer>),
    /// Attention plus a Mamba-2 mixer on the same input (Falcon-H1).
    AttnMamba2(Attention, Box<Mamba2Mixer>),
    /// A whole RWKV-4 block.
    Rwkv(Box<RwkvBlock>),
    /// Griffin's recurrent block.
    Rglru(Box<RglruBlock>),
}

/// RecurrentGemma's recurrent block: `linear_out(RG-LRU(conv(linear_x(h))) · gelu(linear_y(h)))`.
#[derive(Debug, Clone)]
struct RglruBlock {
    width: usize,
    heads: usize,
    kernel: usize,
    linear_x: Linear,
    linear_y: Linear,
    linear_out: Linear,
    /// `[width][kernel]` and `[width]`.
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    /// Per head `[in][out]` gate weights and `[out]` biases.
    in_w: Vec<f32>,
    in_b: Vec<f32>,
    rec_w: Vec<f32>,
    rec_b: Vec<f32>,
    /// `softplus(recurrent_param)`.
    sp: Vec<f32>,
    act: Act,
}

/// An RWKV-4 block: parameters as plain vectors where the recurrence needs them.
#[derive(Debug, Clone)]
struct RwkvBlock {
    pre_ln: Option<Norm>,
    ln1: Norm,
    ln2: Norm,
    key: Linear,
    value: Linear,
    receptance: Linear,
    output: Linear,
    /// `-exp(time_decay)`, `time_first`, and the three time-mix vectors.
    w: Vec<f32>,
    u: Vec<f32>,
    mix_k: Vec<f32>,
    mix_v: Vec<f32>,
    mix_r: Vec<f32>,
    ffn_key: Linear,
    ffn_receptance: Linear,
    ffn_value: Linear,
    ffn_mix_k: Vec<f32>,
    ffn_mix_r: Vec<f32>,
}

/// LFM2's gated short convolution.
#[derive(Debug, Clone)]
struct ShortConvMixer {
    kernel: usize,
    in_proj: Linear,
    /// `[hidden][kernel]`.
    conv_w: Vec<f32>,
    conv_b: Option<Vec<f32>>,
    out_proj: Linear,
}

/// A Mamba-2 mixer.
#[derive(Debug, Clone)]
struct Mamba2Mixer {
    spec: super::spec::Mamba2,
    in_proj: Linear,
    /// `[conv_dim][kernel]`.
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    dt_bias: Vec<f32>,
    /// `-exp(A_log)`, per head.
    a: Vec<f32>,
    d: Vec<f32>,
    norm_w: Vec<f32>,
    out_proj: Linear,
}

/// A Mamba (S6) mixer: parameters as plain vectors for the scan.
#[derive(Debug, Clone)]
struct MambaMixer {
    spec: super::spec::Mamba,
    in_proj: Linear,
    /// `[inner][kernel]`.
    conv_w: Vec<f32>,
    conv_b: Vec<f32>,
    x_proj: Linear,
    dt_proj: Linear,
    /// `-exp(A_log)`, `[inner][state]`.
    a: Vec<f32>,
    d: Vec<f32>,
    out_proj: Linear,
    /// Jamba's `dt` / `B` / `C` norm weights.
    bcdt_w: Option<[Vec<f32>; 3]>,
}

#[derive(Debug, Clone)]
enum Ffn {
    Dense(Dense),
    Moe(Box<MoeFfn>),
}

#[derive(Debug, Clone)]
struct Dense {
    /// `[gate; up]` when gated, else `up`.
    up: Linear,
    down: Linear,
    gated: bool,
    act: Act,
    width: usize,
    /// xIELU parameters `[alpha_p, alpha_n, beta, eps]`.
    xielu: Option<[f32; 4]>,
    /// BitNet's norm over the hidden activations.
    sub_norm: Option<Norm>,
}

impl Dense {
    fn activate(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.xielu {
            Some(p) => xielu(x, p),
            None => act(self.act, x),
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.up.forward(x)?;
        let h = if self.gated {
            let g = h.narrow(D::Minus1, 0, self.width)?;
            let u = h.narrow(D::Minus1, self.width, self.width)?;
            (self.activate(&g)? * u)?
        } else {
            self.activate(&h)?
        };
        let h = match &self.sub_norm {
            Some(n) => n
                .forward(&h)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
            None => h,
        };
        self.down.forward(&h)
    }
}

#[derive(Debug, Clone)]
struct MoeFfn {
    spec: Moe,
    router: Linear,
    e_bias: Option<Vec<f32>>,
    experts: Vec<Dense>,
    shared: Option<Dense>,
    shared_gate: Option<Linear>,
    out_norm: Option<Norm>,
}

/// Gemma 4's per-layer-embedding branch of one layer.
#[derive(Debug, Clone)]
struct PleLayer {
    gate: Linear,
    proj: Linear,
    norm: Norm,
}

/// Gemma 4's per-layer embeddings: a token table and a projection of the embeddings.
#[derive(Debug, Clone)]
struct PleModel {
    width: usize,
    embed: Tensor,
    proj: Linear,
    norm: Norm,
}

#[derive(Debug, Clone)]
struct Layer {
    ple: Option<PleLayer>,
    /// Doge's residual scales (before attention, before the FFN).
    res_scales: Option<(Tensor, Tensor)>,
    index: usize,
    /// Gemma 4's `layer_scalar` `[1]`.
    scalar: Option<Tensor>,
    /// `None` for FFN-only layers.
    mixer: Option<Mixer>,
    /// `None` for pure Mamba blocks.
    ffn: Option<Ffn>,
    attn_in: Option<Norm>,
    attn_out: Option<Norm>,
    ffn_in: Option<Norm>,
    ffn_out: Option<Norm>,
}

/// Keys and values of one layer so far: `[kv_heads, positions, head_dim]`.
#[derive(Debug, Clone, Default)]
pub(super) struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
    /// The fused CPU attention's keys and values, `[positions, kv_heads, head_dim]`, in
    /// buffers that grow by [`KV_CHUNK`] positions: each step writes its positions in place
    /// (concatenating would copy the whole cache every token).
    fused: Option<candle_nn::kv_cache::KvCache>,
    /// A Mamba layer's last `kernel - 1` conv inputs `[(kernel - 1) * inner]` and SSM state
    /// `[inner * state]`.
    ssm: Option<(Vec<f32>, Vec<f32>)>,
    /// The DSA indexer's keys so far, `[positions, dim]`.
    index_k: Option<Tensor>,
}

/// Positions the fused attention's KV buffers grow by.
const KV_CHUNK: usize = 256;

/// A per-request KV cache.
#[derive(Debug, Clone, Default)]
pub(super) struct Cache {
    layers: Vec<LayerCache>,
}

/// What sits on top of the final hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// The language-model head (`lm_head`, or the tied embeddings): next-token logits.
    Lm,
    /// A sequence classifier (`score`, `[labels, hidden]`), as in `*ForSequenceClassification`.
    Score { labels: usize },
    /// No head: the final hidden states (`*Model`'s `last_hidden_state`).
    Hidden,
}

/// A loaded [`HeadTransform`].
#[derive(Debug, Clone)]
enum Transform {
    Dense {
        dense: Linear,
        act: Act,
        norm: Option<Norm>,
    },
    TwoLayer {
        first: Linear,
        second: Linear,
        act: Act,
    },
}

/// The token embeddings: a float table, or quantized blocks (a GGUF file's, of a type
/// [`QMatrix`] covers) whose rows are dequantized as they are looked up (exactly as candle
/// dequantizes them) and which a tied LM head shares: the file's vocabulary × hidden table is
/// never held as f32 (SmolLM2-135M: 113 MiB; Gemma 3 270M: 671 MiB).
#[derive(Debug, Clone)]
enum Embedding {
    Dense(Tensor),
    Quant(std::sync::Arc<QMatrix>),
}

impl Embedding {
    /// The rows of `ids` (`input`: the same ids as a tensor), `[ids, hidden]` in `dtype`.
    fn rows(&self, ids: &[u32], input: &Tensor, dtype: DType) -> candle_core::Result<Tensor> {
        match self {
            Embedding::Dense(t) => t.index_select(input, 0),
            Embedding::Quant(m) => {
                let rows = m.dequantize_rows(ids)?;
                Tensor::from_vec(rows, (ids.len(), m.cols), input.device())?.to_dtype(dtype)
            }
        }
    }
}

/// A loaded decoder.
#[derive(Debug, Clone)]
pub(super) struct Model {
    kind: Head,
    spec: Spec,
    embed: Embedding,
    /// The dtype the model runs in.
    dtype: DType,
    positions: Option<Tensor>,
    embed_norm: Option<Norm>,
    layers: Vec<Layer>,
    final_norm: Option<Norm>,
    /// The head (`None`: [`Head::Hidden`]).
    head: Option<Linear>,
    /// Gemma 4's per-layer embeddings.
    ple: Option<PleModel>,
    /// The prediction head before `head` (ModernBERT-decoder).
    head_transform: Option<Transform>,
    ropes: Vec<RopeTable>,
    /// ALiBi slopes `[heads, 1, 1]`.
    alibi: Option<Tensor>,
    /// Attention runs in candle's fused CPU kernel (f32 on the CPU, causal masks only, no
    /// ALiBi, softcap or sinks); the KV cache is then `[positions, kv_heads, head_dim]`.
    fused_attn: bool,
    device: Device,
}

/// XGLM's sinusoidal table: `n` rows of `[sin | cos]`, row `padding_idx` zero.
fn sinusoidal_xglm(
    n: usize,
    d: usize,
    padding_idx: Option<usize>,
    dtype: DType,
    dev: &Device,
) -> R<Tensor> {
    let half = d / 2;
    let step = (10000f64.ln() / (half as f64 - 1.0)) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut v = vec![0f32; n * d];
    for p in 0..n {
        if Some(p) == padding_idx {
            continue;
        }
        for (i, f) in freqs.iter().enumerate() {
            let a = p as f32 * f;
            v[p * d + i] = a.sin();
            v[p * d + half + i] = a.cos();
        }
    }
    Tensor::from_vec(v, (n, d), dev)
        .and_then(|t| t.to_dtype(dtype))
        .map_err(ce("sinusoidal positions"))
}

/// CTRL's sinusoidal table: angle `p / 10000^(2⌊i/2⌋/d)`; sines of the even columns, then
/// cosines of the odd ones.
fn sinusoidal_ctrl(n: usize, d: usize, dtype: DType, dev: &Device) -> R<Tensor> {
    let mut v = Vec::with_capacity(n * d);
    for p in 0..n {
        let angle = |i: usize| p as f32 * (1.0 / 10000f32.powf((2 * (i / 2)) as f32 / d as f32));
        v.extend((0..d).step_by(2).map(|i| angle(i).sin()));
        v.extend((1..d).step_by(2).map(|i| angle(i).cos()));
    }
    Tensor::from_vec(v, (n, d), dev)
        .and_then(|t| t.to_dtype(dtype))
        .map_err(ce("sinusoidal positions"))
}

/// ALiBi slopes for `n` heads (as BLOOM/MPT/Falcon compute them).
fn alibi_slopes(n: usize) -> Vec<f32> {
    let closest = 1usize << (usize::BITS - 1 - n.leading_zeros());
    let base = 2f64.powf(-(2f64.powf(-((closest as f64).log2() - 3.0))));
    let mut s: Vec<f32> = (1..=closest).map(|i| base.powi(i as i32) as f32).collect();
    if closest != n {
        let extra_base = 2f64.powf(-(2f64.powf(-((2 * closest) as f64).log2() + 3.0)));
        let rest = n - closest;
        s.extend(
            (0..rest)
                .map(|i| extra_base.powi((1 + 2 * i) as i32) as f32)
                .collect::<Vec<_>>(),
        );
    }
    s
}

impl Model {
    /// Build the model of `spec` from `w`, every tensor checked by name and shape.
    pub(super) fn load(spec: Spec, names: &Names, w: &mut Weights, kind: Head) -> R<Self> {
        let dev = w.device().clone();
        let dtype = w.dtype();
        let s = &spec;
        let hd = s.hidden;
        let embed_name = format!("{}.weight", names.embed);
        let embed = match w
            .take_quant(&embed_name, &[s.vocab, hd])?
            .and_then(|q| QMatrix::from_qtensor(&q))
        {
            Some(m) => Embedding::Quant(std::sync::Arc::new(m)),
            None => Embedding::Dense(w.take(&embed_name, &[s.vocab, hd])?),
        };
        let positions = match s.absolute {
            Some(Absolute::Learned { offset }) => Some(w.take(
                &format!("{}.weight", names.positions),
                &[s.max_positions + offset, hd],
            )?),
            Some(Absolute::SinusoidalXglm { padding_idx }) => Some(sinusoidal_xglm(
                s.max_positions + 2,
                hd,
                padding_idx,
                dtype,
                &dev,
            )?),
            Some(Absolute::SinusoidalCtrl) => {
                Some(sinusoidal_ctrl(s.max_positions, hd, dtype, &dev)?)
            }
            _ => None,
        };
        let embed_norm = if s.embed_norm {
            Some(Norm::load(w, &names.embed_norm, s.norm, &[hd])?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(s.layers.len());
        for (i, ls) in s.layers.iter().enumerate() {
            let p = names.layer(i);
            let n = |x: &String| format!("{p}.{x}");
            let mixer = if ls.ffn_only {
                None
            } else if ls.rglru {
                Some(Mixer::Rglru(Box::new(Self::load_rglru(s, w, &p, hd)?)))
            } else if ls.rwkv {
                Some(Mixer::Rwkv(Box::new(Self::load_rwkv(s, w, &p, i, hd)?)))
            } else if ls.short_conv {
                let sc = s.short_conv.ok_or_else(|| SkillError::Backend {
                    backend: skillgen_runtime::BackendKind::Candle,
                    detail: "a short-conv layer without its spec".into(),
                })?;
                Some(Mixer::ShortConv(Box::new(Self::load_short_conv(
                    sc,
                    w,
                    &format!("{p}.{}", names.mixer),
                    hd,
                )?)))
            } else if ls.attn_and_mamba {
                let m = s.mamba2.ok_or_else(|| SkillError::Backend {
                    backend: skillgen_runtime::BackendKind::Candle,
                    detail: "a hybrid layer without a Mamba-2 spec".into(),
                })?;
                let prefix = format!("{p}.{}", names.mixer);
                Some(Mixer::AttnMamba2(
                    Self::load_attention(s, names, w, &p, ls)?,
                    Box::new(Self::load_mamba2(m, w, &prefix, hd)?),
                ))
            } else if ls.mamba {
                let prefix = format!("{p}.{}", names.mixer);
                match (s.mamba, s.mamba2) {
                    (Some(m), _) => Mixer::Mamba(Box::new(Self::load_mamba(m, w, &prefix, hd)?)),
                    (None, Some(m)) => {
                        Mixer::Mamba2(Box::new(Self::load_mamba2(m, w, &prefix, hd)?))
                    }
                    (None, None) => {
                        return Err(SkillError::Backend {
                            backend: skillgen_runtime::BackendKind::Candle,
                            detail: "a Mamba layer without a Mamba spec".into(),
                        });
                    }
                }
                .into()
            } else {
                Some(Mixer::Attn(Self::load_attention(s, names, w, &p, ls)?))
            };
            let ffn = if !s.ffn && !ls.ffn_only {
                None
            } else if ls.moe {
                let moe = s.moe.clone().ok_or_else(|| SkillError::Backend {
                    backend: skillgen_runtime::BackendKind::Candle,
                    detail: "a MoE layer without a MoE spec".into(),
                })?;
                Some(Ffn::Moe(Box::new(Self::load_moe(
                    moe, names, w, &p, hd, s.norm,
                )?)))
            } else {
                let mut d = Self::load_dense(
                    w,
                    names,
                    &p,
                    hd,
                    s.mlp.intermediate,
                    s.mlp.gated,
                    s.mlp.act,
                    s.mlp.bias,
                )?;
                if s.sub_norms {
                    d.sub_norm = Some(Norm::load(
                        w,
                        &n(&names.ffn_sub_norm),
                        s.norm,
                        &[s.mlp.intermediate],
                    )?);
                }
                if s.mlp.act == Act::XieLu {
                    let mut v = [0f32; 4];
                    for (slot, (name, dims)) in v.iter_mut().zip([
                        ("alpha_p", &[1usize][..]),
                        ("alpha_n", &[1][..]),
                        ("beta", &[][..]),
                        ("eps", &[][..]),
                    ]) {
                        *slot = w
                            .take(&format!("{p}.mlp.act_fn.{name}"), dims)?
                            .to_dtype(DType::F32)
                            .and_then(|t| t.flatten_all())
                            .and_then(|t| t.to_vec1::<f32>())
                            .map_err(ce("xielu parameters"))?[0];
                    }
                    d.xielu = Some(v);
                }
                Some(Ffn::Dense(d))
            };
            let ple = match s.ple {
                Some((pw, _)) => Some(PleLayer {
                    gate: linear(
                        w,
                        &format!("{p}.per_layer_input_gate"),
                        pw,
                        hd,
                        false,
                        false,
                    )?,
                    proj: linear(
                        w,
                        &format!("{p}.per_layer_projection"),
                        hd,
                        pw,
                        false,
                        false,
                    )?,
                    norm: Norm::load(w, &format!("{p}.post_per_layer_input_norm"), s.norm, &[hd])?,
                }),
                None => None,
            };
            let res_scales = if s.doge {
                Some((
                    w.take(&format!("{p}.input_residual"), &[hd])?,
                    w.take(&format!("{p}.post_attention_residual"), &[hd])?,
                ))
            } else {
                None
            };
            let scalar = if s.layer_scalar {
                Some(w.take(&format!("{p}.layer_scalar"), &[1])?)
            } else {
                None
            };
            let mut norm = |slot: &Option<String>| -> R<Option<Norm>> {
                match slot {
                    Some(x) => Ok(Some(Norm::load(w, &n(x), s.norm, &[hd])?)),
                    None => Ok(None),
                }
            };
            let attn_in = if s.first_layer_no_attn_norm && i == 0 {
                None
            } else {
                norm(&names.attn_in)?
            };
            layers.push(Layer {
                ple,
                res_scales,
                scalar,
                index: i,
                mixer,
                ffn,
                attn_in,
                attn_out: norm(&names.attn_out)?,
                ffn_in: norm(&names.ffn_in)?,
                ffn_out: norm(&names.ffn_out)?,
            });
        }
        if let (Some(name), Some(last)) = (&names.last_o_bias, layers.last_mut())
            && let Some(Mixer::Attn(a)) = &mut last.mixer
        {
            let full = format!("{}.{name}", names.layer(s.layers.len() - 1));
            a.out_bias = Some(w.take(&full, &[hd])?);
        }
        let final_norm = if s.final_norm {
            Some(Norm::load(
                w,
                &names.final_norm,
                s.final_norm_kind.unwrap_or(s.norm),
                &[hd],
            )?)
        } else {
            None
        };
        let head = match kind {
            Head::Hidden => None,
            Head::Score { labels } => Some(score_head(w, names, labels, hd)?),
            Head::Lm => Some(lm_head(w, names, s, &embed, hd)?),
        };
        let ple = match s.ple {
            Some((pw, pv)) => {
                let n_l = s.layers.len();
                Some(PleModel {
                    width: pw,
                    embed: w.take("model.embed_tokens_per_layer.weight", &[pv, n_l * pw])?,
                    proj: linear(
                        w,
                        "model.per_layer_model_projection",
                        n_l * pw,
                        hd,
                        false,
                        false,
                    )?,
                    norm: Norm::load(w, "model.per_layer_projection_norm", s.norm, &[pw])?,
                })
            }
            None => None,
        };
        let transform_prefix = match kind {
            Head::Lm => names.lm_transform.clone().zip(s.lm_transform),
            Head::Score { .. } => names.score_transform.clone().zip(s.score_transform),
            Head::Hidden => None,
        };
        let head_transform = match transform_prefix {
            Some((pre, t)) => {
                let name = |n: &str| {
                    if pre.is_empty() {
                        n.to_owned()
                    } else {
                        format!("{pre}.{n}")
                    }
                };
                Some(match t {
                    HeadTransform::Dense { act, bias, norm } => Transform::Dense {
                        dense: linear(w, &name("dense"), hd, hd, bias, false)?,
                        act,
                        norm: match norm {
                            Some(n) => Some(Norm::load(w, &name(n), s.norm, &[hd])?),
                            None => None,
                        },
                    },
                    HeadTransform::TwoLayer { act, width } => Transform::TwoLayer {
                        first: linear(w, &name("linear1"), width, hd, false, false)?,
                        second: linear(w, &name("linear2"), hd, width, false, false)?,
                        act,
                    },
                })
            }
            _ => None,
        };
        let ropes = s
            .ropes
            .iter()
            .map(|r| RopeTable::new(r, s.max_positions, dtype, &dev))
            .collect::<R<Vec<_>>>()?;
        let alibi = match s.absolute {
            Some(Absolute::Alibi) => Some(
                Tensor::from_vec(alibi_slopes(s.heads), (s.heads, 1, 1), &dev)
                    .and_then(|t| t.to_dtype(dtype))
                    .map_err(ce("alibi"))?,
            ),
            _ => None,
        };
        w.finish()?;
        if s.bidirectional && s.layers.iter().any(|l| l.chunk.is_some()) {
            return Err(SkillError::Backend {
                backend: skillgen_runtime::BackendKind::Candle,
                detail: "bidirectional attention in chunks is not implemented".into(),
            });
        }
        let fused_attn = dev.is_cpu()
            && dtype == DType::F32
            && !s.bidirectional
            && s.mla.is_none()
            && !s.sinks
            && alibi.is_none()
            && s.attn_softcap.is_none()
            && !s.differential
            && !s.doge
            && s.layers
                .iter()
                .all(|l| l.window.is_none() && l.chunk.is_none());
        Ok(Self {
            ple,
            head_transform,
            fused_attn,
            kind,
            spec,
            embed,
            dtype,
            positions,
            embed_norm,
            layers,
            final_norm,
            head,
            ropes,
            alibi,
            device: dev,
        })
    }

    fn load_mamba(m: super::spec::Mamba, w: &mut Weights, p: &str, hd: usize) -> R<MambaMixer> {
        let c = ce("Mamba parameters");
        let vec = |t: Tensor| -> R<Vec<f32>> {
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(&c)
        };
        let (i, k, n) = (m.inner, m.conv_kernel, m.state);
        let in_proj = linear(w, &format!("{p}.in_proj"), 2 * i, hd, m.proj_bias, false)?;
        let conv_w = vec(w.take(&format!("{p}.conv1d.weight"), &[i, 1, k])?)?;
        let conv_b = if m.conv_bias {
            vec(w.take(&format!("{p}.conv1d.bias"), &[i])?)?
        } else {
            vec![0.0; i]
        };
        let x_proj = linear(
            w,
            &format!("{p}.x_proj"),
            m.dt_rank + 2 * n,
            i,
            false,
            false,
        )?;
        let dt_proj = linear(w, &format!("{p}.dt_proj"), i, m.dt_rank, true, false)?;
        let a = vec(w.take(&format!("{p}.A_log"), &[i, n])?)?
            .into_iter()
            .map(|x| -x.exp())
            .collect();
        let d = vec(w.take(&format!("{p}.D"), &[i])?)?;
        let out_proj = linear(w, &format!("{p}.out_proj"), hd, i, m.proj_bias, false)?;
        let bcdt_w = match m.bcdt_norm {
            Some((_, true)) => Some([
                vec(w.take(&format!("{p}.dt_layernorm.weight"), &[m.dt_rank])?)?,
                vec(w.take(&format!("{p}.b_layernorm.weight"), &[n])?)?,
                vec(w.take(&format!("{p}.c_layernorm.weight"), &[n])?)?,
            ]),
            _ => None,
        };
        Ok(MambaMixer {
            bcdt_w,
            spec: m,
            in_proj,
            conv_w,
            conv_b,
            x_proj,
            dt_proj,
            a,
            d,
            out_proj,
        })
    }

    /// The Mamba mixer over `x` `[s, hidden]` at the cache's state (transformers' slow path:
    /// causal depthwise conv, SiLU, selective scan, `D` skip, SiLU gate).
    fn mamba(&self, m: &MambaMixer, x: &Tensor, cache: &mut LayerCache) -> R<Tensor> {
        let c = ce("Mamba mixer");
        let sp = m.spec;
        let (inner, n, k, r) = (sp.inner, sp.state, sp.conv_kernel, sp.dt_rank);
        let s = x.dim(0).map_err(&c)?;
        let proj: Vec<Vec<f32>> = m
            .in_proj
            .forward(x)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .map_err(&c)?;
        let (mut conv_state, mut state) = cache
            .ssm
            .take()
            .unwrap_or_else(|| (vec![0.0; (k - 1) * inner], vec![0.0; inner * n]));
        // Causal depthwise conv over [previous k - 1 inputs | this step's inputs].
        let mut window: Vec<f32> = conv_state.clone();
        for row in &proj {
            window.extend_from_slice(&row[..inner]);
        }
        let silu = |v: f32| v / (1.0 + (-v).exp());
        let mut xc = vec![0f32; s * inner];
        for t in 0..s {
            for ch in 0..inner {
                let mut acc = m.conv_b[ch];
                for j in 0..k {
                    acc += m.conv_w[ch * k + j] * window[(t + j) * inner + ch];
                }
                xc[t * inner + ch] = silu(acc);
            }
        }
        conv_state.copy_from_slice(&window[s * inner..]);
        let xt = Tensor::from_vec(xc.clone(), (s, inner), &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .map_err(&c)?;
        let mut ssm: Vec<Vec<f32>> = m
            .x_proj
            .forward(&xt)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .map_err(&c)?;
        if let Some((eps, _)) = sp.bcdt_norm {
            let rms = |v: &mut [f32], w: Option<&Vec<f32>>| {
                let ms = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
                let f = 1.0 / (ms + eps as f32).sqrt();
                v.iter_mut().enumerate().for_each(|(i, x)| {
                    *x *= f;
                    if let Some(w) = w {
                        *x *= w[i];
                    }
                });
            };
            let ws = m.bcdt_w.as_ref();
            for row in &mut ssm {
                rms(&mut row[..r], ws.map(|w| &w[0]));
                rms(&mut row[r..r + n], ws.map(|w| &w[1]));
                rms(&mut row[r + n..], ws.map(|w| &w[2]));
            }
        }
        let dt_in: Vec<f32> = ssm.iter().flat_map(|row| row[..r].to_vec()).collect();
        let dt: Vec<Vec<f32>> = Tensor::from_vec(dt_in, (s, r), &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .and_then(|t| m.dt_proj.forward(&t))
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .map_err(&c)?;
        // softplus with torch's threshold 20.
        let softplus = |v: f32| if v > 20.0 { v } else { v.exp().ln_1p() };
        let mut y = vec![0f32; s * inner];
        for t in 0..s {
            let b = &ssm[t][r..r + n];
            let cc = &ssm[t][r + n..r + 2 * n];
            for ch in 0..inner {
                let dtv = softplus(dt[t][ch]);
                let xv = xc[t * inner + ch];
                let mut acc = 0f32;
                for j in 0..n {
                    let st = &mut state[ch * n + j];
                    *st = (m.a[ch * n + j] * dtv).exp() * *st + dtv * b[j] * xv;
                    acc += *st * cc[j];
                }
                let z = proj[t][inner + ch];
                y[t * inner + ch] = (acc + xv * m.d[ch]) * silu(z);
            }
        }
        cache.ssm = Some((conv_state, state));
        Tensor::from_vec(y, (s, inner), &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .and_then(|t| m.out_proj.forward(&t))
            .map_err(&c)
    }

    fn load_rwkv(s: &Spec, w: &mut Weights, p: &str, index: usize, hd: usize) -> R<RwkvBlock> {
        let c = ce("RWKV parameters");
        let vec = |t: Tensor| -> R<Vec<f32>> {
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(&c)
        };
        let i = s.mlp.intermediate;
        let ln = |w: &mut Weights, n: &str| Norm::load(w, &format!("{p}.{n}"), s.norm, &[hd]);
        let pre_ln = if index == 0 {
            Some(ln(w, "pre_ln")?)
        } else {
            None
        };
        let a = format!("{p}.attention");
        let ff = format!("{p}.feed_forward");
        Ok(RwkvBlock {
            pre_ln,
            ln1: ln(w, "ln1")?,
            ln2: ln(w, "ln2")?,
            key: linear(w, &format!("{a}.key"), hd, hd, false, false)?,
            value: linear(w, &format!("{a}.value"), hd, hd, false, false)?,
            receptance: linear(w, &format!("{a}.receptance"), hd, hd, false, false)?,
            output: linear(w, &format!("{a}.output"), hd, hd, false, false)?,
            w: vec(w.take(&format!("{a}.time_decay"), &[hd])?)?
                .into_iter()
                .map(|x| -x.exp())
                .collect(),
            u: vec(w.take(&format!("{a}.time_first"), &[hd])?)?,
            mix_k: vec(w.take(&format!("{a}.time_mix_key"), &[1, 1, hd])?)?,
            mix_v: vec(w.take(&format!("{a}.time_mix_value"), &[1, 1, hd])?)?,
            mix_r: vec(w.take(&format!("{a}.time_mix_receptance"), &[1, 1, hd])?)?,
            ffn_key: linear(w, &format!("{ff}.key"), i, hd, false, false)?,
            ffn_receptance: linear(w, &format!("{ff}.receptance"), hd, hd, false, false)?,
            ffn_value: linear(w, &format!("{ff}.value"), hd, i, false, false)?,
            ffn_mix_k: vec(w.take(&format!("{ff}.time_mix_key"), &[1, 1, hd])?)?,
            ffn_mix_r: vec(w.take(&format!("{ff}.time_mix_receptance"), &[1, 1, hd])?)?,
        })
    }

    /// One RWKV-4 block over `x` `[s, hidden]`: time mixing (WKV recurrence) and channel
    /// mixing, both with token shift; the shift inputs and the WKV state live in the cache.
    fn rwkv(&self, b: &RwkvBlock, x: &Tensor, cache: &mut LayerCache) -> R<Tensor> {
        let c = ce("RWKV block");
        let (s, hd) = x.dims2().map_err(&c)?;
        let to_rows = |t: &Tensor| -> R<Vec<Vec<f32>>> {
            t.to_dtype(DType::F32).and_then(|t| t.to_vec2()).map_err(&c)
        };
        let tensor = |v: Vec<f32>, n: usize| -> R<Tensor> {
            Tensor::from_vec(v, (s, n), &self.device)
                .and_then(|t| t.to_dtype(self.dtype))
                .map_err(&c)
        };
        // Cache: [att shift | ffn shift] and [a | b | p].
        let (mut shifts, mut st) = cache.ssm.take().unwrap_or_else(|| {
            let mut st = vec![0.0; 3 * hd];
            st[2 * hd..].iter_mut().for_each(|p| *p = -1e38);
            (vec![0.0; 2 * hd], st)
        });
        let mut x = x.clone();
        if let Some(n) = &b.pre_ln {
            x = n.forward(&x)?;
        }
        // Mix each row with the previous row (the cached one for the first).
        let mix = |rows: &[Vec<f32>], prev0: &[f32], m: &[f32]| -> Vec<f32> {
            let mut out = Vec::with_capacity(s * hd);
            for t in 0..s {
                let prev = if t == 0 { prev0 } else { &rows[t - 1][..] };
                for ch in 0..hd {
                    out.push(rows[t][ch] * m[ch] + prev[ch] * (1.0 - m[ch]));
                }
            }
            out
        };
        // Time mixing.
        let h = to_rows(&b.ln1.forward(&x)?)?;
        let (att_prev, ffn_prev) = shifts.split_at(hd);
        let (att_prev, ffn_prev) = (att_prev.to_vec(), ffn_prev.to_vec());
        let k = to_rows(
            &b.key
                .forward(&tensor(mix(&h, &att_prev, &b.mix_k), hd)?)
                .map_err(&c)?,
        )?;
        let v = to_rows(
            &b.value
                .forward(&tensor(mix(&h, &att_prev, &b.mix_v), hd)?)
                .map_err(&c)?,
        )?;
        let r = to_rows(
            &b.receptance
                .forward(&tensor(mix(&h, &att_prev, &b.mix_r), hd)?)
                .map_err(&c)?,
        )?;
        let mut wkv = Vec::with_capacity(s * hd);
        for t in 0..s {
            for ch in 0..hd {
                let (a, bb, p) = (st[ch], st[hd + ch], st[2 * hd + ch]);
                let (kt, vt) = (k[t][ch], v[t][ch]);
                let q = p.max(kt + b.u[ch]);
                let (e1, e2) = ((p - q).exp(), (kt + b.u[ch] - q).exp());
                let out = (e1 * a + e2 * vt) / (e1 * bb + e2);
                let q2 = (p + b.w[ch]).max(kt);
                let (e1, e2) = ((p + b.w[ch] - q2).exp(), (kt - q2).exp());
                st[ch] = e1 * a + e2 * vt;
                st[hd + ch] = e1 * bb + e2;
                st[2 * hd + ch] = q2;
                let rr = 1.0 / (1.0 + (-r[t][ch]).exp());
                wkv.push(rr * out);
            }
        }
        let att = b.output.forward(&tensor(wkv, hd)?).map_err(&c)?;
        let x = (x + att).map_err(&c)?;
        // Channel mixing.
        let h2 = to_rows(&b.ln2.forward(&x)?)?;
        let xk = tensor(mix(&h2, &ffn_prev, &b.ffn_mix_k), hd)?;
        let xr = tensor(mix(&h2, &ffn_prev, &b.ffn_mix_r), hd)?;
        let kk = b
            .ffn_key
            .forward(&xk)
            .and_then(|t| t.relu())
            .and_then(|t| t.sqr())
            .map_err(&c)?;
        let ffn = candle_nn::ops::sigmoid(&b.ffn_receptance.forward(&xr).map_err(&c)?)
            .and_then(|g| g * b.ffn_value.forward(&kk)?)
            .map_err(&c)?;
        shifts[..hd].copy_from_slice(&h[s - 1]);
        shifts[hd..].copy_from_slice(&h2[s - 1]);
        cache.ssm = Some((shifts, st));
        (x + ffn).map_err(&c)
    }

    fn load_rglru(s: &Spec, w: &mut Weights, p: &str, hd: usize) -> R<RglruBlock> {
        let c = ce("RG-LRU parameters");
        let (width, heads, kernel) = s.rglru.ok_or_else(|| SkillError::Backend {
            backend: skillgen_runtime::BackendKind::Candle,
            detail: "a recurrent layer without its spec".into(),
        })?;
        let bw = width / heads;
        let vec = |t: Tensor| -> R<Vec<f32>> {
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(&c)
        };
        let t = format!("{p}.temporal_block");
        let r = format!("{t}.rg_lru");
        Ok(RglruBlock {
            width,
            heads,
            kernel,
            linear_x: linear(w, &format!("{t}.linear_x"), width, hd, true, false)?,
            linear_y: linear(w, &format!("{t}.linear_y"), width, hd, true, false)?,
            linear_out: linear(w, &format!("{t}.linear_out"), hd, width, true, false)?,
            conv_w: vec(w.take(&format!("{t}.conv_1d.weight"), &[width, 1, kernel])?)?,
            conv_b: vec(w.take(&format!("{t}.conv_1d.bias"), &[width])?)?,
            in_w: vec(w.take(&format!("{r}.input_gate_weight"), &[heads, bw, bw])?)?,
            in_b: vec(w.take(&format!("{r}.input_gate_bias"), &[heads, bw])?)?,
            rec_w: vec(w.take(&format!("{r}.recurrent_gate_weight"), &[heads, bw, bw])?)?,
            rec_b: vec(w.take(&format!("{r}.recurrent_gate_bias"), &[heads, bw])?)?,
            sp: vec(w.take(&format!("{r}.recurrent_param"), &[width])?)?
                .into_iter()
                .map(|v| if v > 20.0 { v } else { v.exp().ln_1p() })
                .collect(),
            act: s.mlp.act,
        })
    }

    /// Griffin's recurrent block over `h` `[s, hidden]` at positions `pos..`: causal conv on
    /// the x branch, the RG-LRU (reset at position 0), times the GELU y branch.
    fn rglru(&self, b: &RglruBlock, h: &Tensor, pos: usize, cache: &mut LayerCache) -> R<Tensor> {
        let c = ce("RG-LRU block");
        let (s, _) = h.dims2().map_err(&c)?;
        let (wd, k, bw) = (b.width, b.kernel, b.width / b.heads);
        let y = b
            .linear_y
            .forward(h)
            .and_then(|t| act(b.act, &t))
            .map_err(&c)?;
        let xb: Vec<Vec<f32>> = b
            .linear_x
            .forward(h)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .map_err(&c)?;
        let (mut conv_state, mut state) = cache
            .ssm
            .take()
            .unwrap_or_else(|| (vec![0.0; (k - 1) * wd], vec![0.0; wd]));
        let mut window = conv_state.clone();
        for row in &xb {
            window.extend_from_slice(row);
        }
        let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
        let mut out = vec![0f32; s * wd];
        let mut xc = vec![0f32; wd];
        for t in 0..s {
            for (ch, o) in xc.iter_mut().enumerate() {
                let mut acc = b.conv_b[ch];
                for j in 0..k {
                    acc += b.conv_w[ch * k + j] * window[(t + j) * wd + ch];
                }
                *o = acc;
            }
            let reset = pos + t == 0;
            for hh in 0..b.heads {
                for o in 0..bw {
                    let (mut gi, mut gr) = (b.in_b[hh * bw + o], b.rec_b[hh * bw + o]);
                    for i in 0..bw {
                        let xv = xc[hh * bw + i];
                        gi += xv * b.in_w[(hh * bw + i) * bw + o];
                        gr += xv * b.rec_w[(hh * bw + i) * bw + o];
                    }
                    let ch = hh * bw + o;
                    let log_a = -8.0 * sigmoid(gr) * b.sp[ch];
                    let (a, mult) = if reset {
                        (0.0, 1.0)
                    } else {
                        (log_a.exp(), (1.0 - (2.0 * log_a).exp()).sqrt())
                    };
                    state[ch] = a * state[ch] + xc[ch] * sigmoid(gi) * mult;
                    out[t * wd + ch] = state[ch];
                }
            }
        }
        conv_state.copy_from_slice(&window[s * wd..]);
        cache.ssm = Some((conv_state, state));
        let x = Tensor::from_vec(out, (s, wd), &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .map_err(&c)?;
        (x * y).and_then(|t| b.linear_out.forward(&t)).map_err(&c)
    }

    fn load_short_conv(
        sc: super::spec::ShortConv,
        w: &mut Weights,
        p: &str,
        hd: usize,
    ) -> R<ShortConvMixer> {
        let c = ce("short conv parameters");
        let vec = |t: Tensor| -> R<Vec<f32>> {
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(&c)
        };
        Ok(ShortConvMixer {
            kernel: sc.kernel,
            in_proj: linear(w, &format!("{p}.in_proj"), 3 * hd, hd, sc.bias, false)?,
            conv_w: vec(w.take(&format!("{p}.conv.weight"), &[hd, 1, sc.kernel])?)?,
            conv_b: if sc.bias {
                Some(vec(w.take(&format!("{p}.conv.bias"), &[hd])?)?)
            } else {
                None
            },
            out_proj: linear(w, &format!("{p}.out_proj"), hd, hd, sc.bias, false)?,
        })
    }

    /// LFM2's short convolution over `x` `[s, hidden]` with the cached last `kernel - 1`
    /// inputs of the conv.
    fn short_conv(&self, m: &ShortConvMixer, x: &Tensor, cache: &mut LayerCache) -> R<Tensor> {
        let c = ce("short conv");
        let (s, hd) = x.dims2().map_err(&c)?;
        let k = m.kernel;
        let proj: Vec<Vec<f32>> = m
            .in_proj
            .forward(x)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .map_err(&c)?;
        let (mut conv_state, state) = cache
            .ssm
            .take()
            .unwrap_or_else(|| (vec![0.0; (k - 1) * hd], Vec::new()));
        let mut window = conv_state.clone();
        for row in &proj {
            // B · x
            window.extend((0..hd).map(|i| row[i] * row[2 * hd + i]));
        }
        let mut y = vec![0f32; s * hd];
        for t in 0..s {
            for ch in 0..hd {
                let mut acc = m.conv_b.as_ref().map_or(0.0, |b| b[ch]);
                for j in 0..k {
                    acc += m.conv_w[ch * k + j] * window[(t + j) * hd + ch];
                }
                y[t * hd + ch] = proj[t][hd + ch] * acc;
            }
        }
        conv_state.copy_from_slice(&window[s * hd..]);
        cache.ssm = Some((conv_state, state));
        Tensor::from_vec(y, (s, hd), &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .and_then(|t| m.out_proj.forward(&t))
            .map_err(&c)
    }

    fn load_mamba2(m: super::spec::Mamba2, w: &mut Weights, p: &str, hd: usize) -> R<Mamba2Mixer> {
        let c = ce("Mamba-2 parameters");
        let vec = |t: Tensor| -> R<Vec<f32>> {
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(&c)
        };
        let inner = m.heads * m.head_dim;
        let conv_dim = inner + 2 * m.groups * m.state;
        let in_proj = linear(
            w,
            &format!("{p}.in_proj"),
            inner + conv_dim + m.heads,
            hd,
            m.proj_bias,
            false,
        )?;
        let conv_w = vec(w.take(&format!("{p}.conv1d.weight"), &[conv_dim, 1, m.conv_kernel])?)?;
        let conv_b = if m.conv_bias {
            vec(w.take(&format!("{p}.conv1d.bias"), &[conv_dim])?)?
        } else {
            vec![0.0; conv_dim]
        };
        Ok(Mamba2Mixer {
            spec: m,
            in_proj,
            conv_w,
            conv_b,
            dt_bias: vec(w.take(&format!("{p}.dt_bias"), &[m.heads])?)?,
            a: vec(w.take(&format!("{p}.A_log"), &[m.heads])?)?
                .into_iter()
                .map(|x| -x.exp())
                .collect(),
            d: vec(w.take(&format!("{p}.D"), &[m.heads])?)?,
            norm_w: if m.gated_norm {
                vec(w.take(&format!("{p}.norm.weight"), &[inner])?)?
            } else {
                Vec::new()
            },
            out_proj: linear(w, &format!("{p}.out_proj"), hd, inner, m.proj_bias, false)?,
        })
    }

    /// The Mamba-2 mixer (the recurrence transformers' chunked scan computes): causal conv +
    /// SiLU over `[x | B | C]`, per head `h ← exp(dt·A)·h + dt·x⊗B`, `y = C·h + D·x`, then
    /// `RMSNorm_groups(y · silu(z)) · w`.
    fn mamba2(&self, m: &Mamba2Mixer, x: &Tensor, cache: &mut LayerCache) -> R<Tensor> {
        let c = ce("Mamba-2 mixer");
        let sp = m.spec;
        let (nh, p, g, n, k) = (sp.heads, sp.head_dim, sp.groups, sp.state, sp.conv_kernel);
        let inner = nh * p;
        let conv_dim = inner + 2 * g * n;
        let s = x.dim(0).map_err(&c)?;
        let proj: Vec<Vec<f32>> = m
            .in_proj
            .forward(x)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .map_err(&c)?;
        let (mut conv_state, mut state) = cache
            .ssm
            .take()
            .unwrap_or_else(|| (vec![0.0; (k - 1) * conv_dim], vec![0.0; nh * p * n]));
        let mut window: Vec<f32> = conv_state.clone();
        for row in &proj {
            window.extend_from_slice(&row[inner..inner + conv_dim]);
        }
        let silu = |v: f32| v / (1.0 + (-v).exp());
        let softplus = |v: f32| if v > 20.0 { v } else { v.exp().ln_1p() };
        let mut y = vec![0f32; s * inner];
        let mut xbc = vec![0f32; conv_dim];
        for t in 0..s {
            for (ch, out) in xbc.iter_mut().enumerate() {
                let mut acc = m.conv_b[ch];
                for j in 0..k {
                    acc += m.conv_w[ch * k + j] * window[(t + j) * conv_dim + ch];
                }
                *out = silu(acc);
            }
            let (xs, rest) = xbc.split_at(inner);
            let (bs, cs) = rest.split_at(g * n);
            for h in 0..nh {
                let grp = h / (nh / g);
                let b = &bs[grp * n..(grp + 1) * n];
                let cc = &cs[grp * n..(grp + 1) * n];
                let dt = softplus(proj[t][inner + conv_dim + h] + m.dt_bias[h])
                    .clamp(sp.dt_min as f32, sp.dt_max as f32);
                let decay = (dt * m.a[h]).exp();
                for i in 0..p {
                    let xv = xs[h * p + i];
                    let mut acc = 0f32;
                    for j in 0..n {
                        let st = &mut state[(h * p + i) * n + j];
                        *st = decay * *st + dt * xv * b[j];
                        acc += *st * cc[j];
                    }
                    y[t * inner + h * p + i] = acc + m.d[h] * xv;
                }
            }
            // Gated RMSNorm over groups of `inner / g`.
            let row = &mut y[t * inner..(t + 1) * inner];
            for (i, v) in row.iter_mut().enumerate() {
                *v *= silu(proj[t][i]);
            }
            if sp.gated_norm {
                let gs = inner / g;
                for grp in row.chunks_mut(gs) {
                    let ms = grp.iter().map(|x| x * x).sum::<f32>() / gs as f32;
                    let f = 1.0 / (ms + sp.eps as f32).sqrt();
                    grp.iter_mut().for_each(|x| *x *= f);
                }
                for (i, v) in row.iter_mut().enumerate() {
                    *v *= m.norm_w[i];
                }
            }
        }
        conv_state.copy_from_slice(&window[s * conv_dim..]);
        cache.ssm = Some((conv_state, state));
        Tensor::from_vec(y, (s, inner), &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .and_then(|t| m.out_proj.forward(&t))
            .map_err(&c)
    }

    fn load_attention(
        s: &Spec,
        names: &Names,
        w: &mut Weights,
        p: &str,
        ls: &super::spec::LayerSpec,
    ) -> R<Attention> {
        let (hd, h) = (s.hidden, s.heads);
        let d = ls.head_dim.unwrap_or(s.head_dim);
        let sliding = ls.window.is_some();
        let kv = if s.sliding_doubles_kv && sliding {
            2 * s.kv_heads
        } else {
            ls.kv_heads.unwrap_or(s.kv_heads)
        };
        let n = |x: &String| format!("{p}.{x}");
        let (proj, o_in) = if let Some(m) = s.mla {
            let qk = m.qk_nope + m.qk_rope;
            let eps = NormKind::Rms {
                eps: m.eps,
                plus_one: false,
            };
            let (q_a, q_b) = match m.q_lora_rank {
                Some(r) => {
                    let a = linear(
                        w,
                        &format!("{p}.self_attn.q_a_proj"),
                        r,
                        hd,
                        s.qkv_bias,
                        false,
                    )?;
                    let nn = Norm::load(w, &format!("{p}.self_attn.q_a_layernorm"), eps, &[r])?;
                    let b = linear(
                        w,
                        &format!("{p}.self_attn.q_b_proj"),
                        h * qk,
                        r,
                        false,
                        false,
                    )?;
                    (Some((a, nn)), b)
                }
                None => (
                    None,
                    linear(
                        w,
                        &format!("{p}.self_attn.q_proj"),
                        h * qk,
                        hd,
                        false,
                        false,
                    )?,
                ),
            };
            let kv_a = linear(
                w,
                &format!("{p}.self_attn.kv_a_proj_with_mqa"),
                m.kv_lora_rank + m.qk_rope,
                hd,
                s.qkv_bias,
                false,
            )?;
            let kv_norm = Norm::load(
                w,
                &format!("{p}.self_attn.kv_a_layernorm"),
                eps,
                &[m.kv_lora_rank],
            )?;
            let kv_b = linear(
                w,
                &format!("{p}.self_attn.kv_b_proj"),
                h * (m.qk_nope + m.v_head),
                m.kv_lora_rank,
                false,
                false,
            )?;
            let indexer = match m.indexer {
                Some(ix) => {
                    let r = m.q_lora_rank.ok_or_else(|| SkillError::Backend {
                        backend: skillgen_runtime::BackendKind::Candle,
                        detail: "the DSA indexer needs q_lora_rank".into(),
                    })?;
                    let pre = format!("{p}.self_attn.indexer");
                    Some(IndexerWeights {
                        spec: ix,
                        wq_b: linear(
                            w,
                            &format!("{pre}.wq_b"),
                            ix.heads * ix.dim,
                            r,
                            false,
                            false,
                        )?,
                        wk: linear(w, &format!("{pre}.wk"), ix.dim, hd, false, false)?,
                        k_norm: Norm::load(
                            w,
                            &format!("{pre}.k_norm"),
                            NormKind::Layer {
                                eps: 1e-6,
                                bias: true,
                            },
                            &[ix.dim],
                        )?,
                        weights_proj: linear(
                            w,
                            &format!("{pre}.weights_proj"),
                            ix.heads,
                            hd,
                            false,
                            false,
                        )?,
                    })
                }
                None => None,
            };
            (
                Proj::Mla(Box::new(MlaProj {
                    indexer,
                    spec: m,
                    q_a,
                    q_b,
                    kv_a,
                    kv_norm,
                    kv_b,
                })),
                h * m.v_head,
            )
        } else {
            let (qn, kn) = (h * d, kv * d);
            let fused = match &names.qkv {
                Some((name, layout)) => {
                    let lin = linear(
                        w,
                        &n(name),
                        qn + 2 * kn,
                        hd,
                        s.qkv_bias,
                        *layout == FusedQkv::Conv1d,
                    )?;
                    reorder_qkv(lin, *layout, h, kv, d)?
                }
                None => {
                    let q = linear(w, &n(&names.q), qn, hd, s.qkv_bias, false)?;
                    let k = linear(w, &n(&names.k), kn, hd, s.qkv_bias, false)?;
                    let v = linear(w, &n(&names.v), kn, hd, s.qkv_bias, false)?;
                    Linear::cat_rows(&[&q, &k, &v]).map_err(ce("fusing projections"))?
                }
            };
            (Proj::Fused(fused), h * d)
        };
        let o = linear(
            w,
            &n(&names.o),
            hd,
            o_in,
            s.o_bias,
            names.qkv.as_ref().is_some_and(|q| q.1 == FusedQkv::Conv1d),
        )?;
        let (q_norm, k_norm) = match s.qk_norm {
            Some(qk) => {
                // Per head (`[head_dim]`, or Cohere's `[heads, head_dim]`) or over the whole
                // projection (`[heads * head_dim]`): the checkpoint's shape says which.
                let qname = format!("{}.weight", n(&names.q_norm));
                let (per_head, qd, kd): (bool, Vec<usize>, Vec<usize>) = match w.shape(&qname) {
                    Some([a, b]) if *a == h && *b == d => (true, vec![h, d], vec![kv, d]),
                    Some([x]) if *x == h * d && h > 1 => (false, vec![h * d], vec![kv * d]),
                    _ => (true, vec![d], vec![d]),
                };
                (
                    Some((Norm::load(w, &n(&names.q_norm), qk.kind, &qd)?, per_head)),
                    Some(Norm::load(w, &n(&names.k_norm), qk.kind, &kd)?),
                )
            }
            None => (None, None),
        };
        let sinks = if s.sinks && (!s.sliding_doubles_kv || sliding) {
            Some(w.take(&n(&names.sinks), &[h])?)
        } else {
            None
        };
        let gate = match s.attn_gate {
            Some(g) => {
                let out = match g {
                    AttnGate::Sigmoid | AttnGate::SigmoidHeadBias => o_in,
                    AttnGate::SoftplusPerHead => h,
                };
                Some((linear(w, &n(&names.attn_gate), out, hd, false, false)?, g))
            }
            None => None,
        };
        let sub_norm = if s.sub_norms {
            Some(Norm::load(w, &n(&names.attn_sub_norm), s.norm, &[o_in])?)
        } else {
            None
        };
        let gate_bias = if s.attn_gate == Some(AttnGate::SigmoidHeadBias) {
            Some(
                w.take(&n(&names.gate_bias), &[h])?
                    .reshape((h, 1))
                    .map_err(ce("gate bias"))?,
            )
        } else {
            None
        };
        let diff = if s.differential {
            let layer: usize = p
                .rsplit('.')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            let lambda_init = 0.8 - 0.6 * (-0.3 * layer as f64).exp();
            let mut dot = |a: &str, b: &str| -> R<f64> {
                let x = w.take(&n(&format!("self_attn.{a}")), &[d])?;
                let y = w.take(&n(&format!("self_attn.{b}")), &[d])?;
                (x * y)
                    .and_then(|t| t.sum_all())
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_scalar::<f32>())
                    .map(|v| v as f64)
                    .map_err(ce("differential attention λ"))
            };
            let l1 = dot("lambda_q1", "lambda_k1")?.exp();
            let l2 = dot("lambda_q2", "lambda_k2")?.exp();
            Some((l1 - l2 + lambda_init, lambda_init))
        } else {
            None
        };
        let dma = if s.doge {
            Some((
                linear(
                    w,
                    &n(&"self_attn.dt_proj".to_owned()),
                    kv,
                    kv * d,
                    false,
                    false,
                )?,
                w.take(&n(&"self_attn.A".to_owned()), &[kv])?,
            ))
        } else {
            None
        };
        Ok(Attention {
            dma,
            kvh: kv,
            d,
            proj,
            o,
            gate,
            gate_bias,
            out_bias: None,
            diff,
            sub_norm,
            q_norm,
            k_norm,
            sinks,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn load_dense(
        w: &mut Weights,
        names: &Names,
        p: &str,
        hd: usize,
        width: usize,
        gated: bool,
        a: Act,
        bias: bool,
    ) -> R<Dense> {
        let n = |x: &String| format!("{p}.{x}");
        let up = if !gated {
            linear(w, &n(&names.up), width, hd, bias, names.conv1d)?
        } else if let Some(gu) = &names.gate_up {
            linear(w, &n(gu), 2 * width, hd, bias, false)?
        } else {
            let g = linear(w, &n(&names.gate), width, hd, bias, false)?;
            let u = linear(w, &n(&names.up), width, hd, bias, false)?;
            Linear::cat_rows(&[&g, &u]).map_err(ce("fusing projections"))?
        };
        let down = linear(w, &n(&names.down), hd, width, bias, names.conv1d)?;
        Ok(Dense {
            up,
            down,
            gated,
            act: a,
            width,
            xielu: None,
            sub_norm: None,
        })
    }

    fn load_moe(
        spec: Moe,
        names: &Names,
        w: &mut Weights,
        p: &str,
        hd: usize,
        norm: NormKind,
    ) -> R<MoeFfn> {
        let n = |x: &String| format!("{p}.{x}");
        let router = linear(
            w,
            &n(&names.router),
            spec.experts,
            hd,
            spec.router_bias,
            false,
        )?;
        let e_bias = if spec.e_bias {
            // `[experts]`, or ERNIE's `[1, experts]`.
            let name = n(&names.e_bias);
            let dims: Vec<usize> = match w.shape(&name) {
                Some([1, e]) if *e == spec.experts => vec![1, spec.experts],
                _ => vec![spec.experts],
            };
            let t = w.take(&name, &dims)?;
            Some(
                t.to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1())
                    .map_err(ce("e_score_correction_bias"))?,
            )
        } else {
            None
        };
        let mut ex_names = names.clone();
        ex_names.gate = names.ex_gate.clone();
        ex_names.up = names.ex_up.clone();
        ex_names.down = names.ex_down.clone();
        ex_names.gate_up = None;
        ex_names.conv1d = false;
        let mut experts = Vec::with_capacity(spec.experts);
        if let Some(prefix) = &names.dbrx_experts {
            // `w1`, `v1`: `[E * F, H]` (per expert `[out, in]`); `w2`: `[E * F, H]` (per
            // expert `[in, out]`).
            let (e_n, f_n) = (spec.experts, spec.intermediate);
            let c = ce("splitting DBRX experts");
            let get = |w: &mut Weights, k: &str| -> R<Tensor> {
                w.take(&format!("{p}.{prefix}.{k}"), &[e_n * f_n, hd])?
                    .reshape((e_n, f_n, hd))
                    .map_err(&c)
            };
            let (w1, v1, w2) = (get(w, "w1")?, get(w, "v1")?, get(w, "w2")?);
            for e in 0..e_n {
                let g = w1.get(e).map_err(&c)?;
                let u = v1.get(e).map_err(&c)?;
                let d = w2
                    .get(e)
                    .and_then(|t| t.t())
                    .and_then(|t| t.contiguous())
                    .map_err(&c)?;
                experts.push(Dense {
                    up: Linear::new(cat_rows(&[&g, &u])?, None),
                    down: Linear::new(d, None),
                    gated: true,
                    act: spec.act,
                    width: f_n,
                    xielu: None,
                    sub_norm: None,
                });
            }
        }
        if let Some(fe) = &names.fused_experts {
            let (e_n, i_n) = (spec.experts, spec.intermediate);
            let (gu_shape, dn_shape) = if fe.transposed {
                ([e_n, hd, 2 * i_n], [e_n, i_n, hd])
            } else {
                ([e_n, 2 * i_n, hd], [e_n, hd, i_n])
            };
            let gu = w.take(&n(&fe.gate_up), &gu_shape)?;
            let dn = w.take(&n(&fe.down), &dn_shape)?;
            let biases = match &fe.biases {
                Some((a, b)) => Some((w.take(&n(a), &[e_n, 2 * i_n])?, w.take(&n(b), &[e_n, hd])?)),
                None => None,
            };
            let c = ce("splitting fused experts");
            let order: Option<Tensor> = if fe.interleaved {
                let idx: Vec<u32> = (0..i_n as u32)
                    .map(|i| 2 * i)
                    .chain((0..i_n as u32).map(|i| 2 * i + 1))
                    .collect();
                Some(Tensor::from_vec(idx, 2 * i_n, &w.device().clone()).map_err(&c)?)
            } else {
                None
            };
            for e in 0..e_n {
                let mut g = gu.get(e).map_err(&c)?;
                let mut d = dn.get(e).map_err(&c)?;
                if fe.transposed {
                    g = g.t().and_then(|t| t.contiguous()).map_err(&c)?;
                    d = d.t().and_then(|t| t.contiguous()).map_err(&c)?;
                }
                let mut gb = match &biases {
                    Some((a, _)) => Some(a.get(e).map_err(&c)?),
                    None => None,
                };
                if let Some(o) = &order {
                    g = g.index_select(o, 0).map_err(&c)?;
                    gb = match gb {
                        Some(b) => Some(b.index_select(o, 0).map_err(&c)?),
                        None => None,
                    };
                }
                let db = match &biases {
                    Some((_, b)) => Some(b.get(e).map_err(&c)?),
                    None => None,
                };
                experts.push(Dense {
                    up: Linear::new(g, gb),
                    down: Linear::new(d, db),
                    gated: true,
                    act: spec.act,
                    width: i_n,
                    xielu: None,
                    sub_norm: None,
                });
            }
        }
        for e in 0..spec.experts {
            if names.fused_experts.is_some() || names.dbrx_experts.is_some() {
                break;
            }
            let ep = format!("{p}.{}", names.expert.replace("{}", &e.to_string()));
            experts.push(Self::load_dense(
                w,
                &ex_names,
                &ep,
                hd,
                spec.intermediate,
                !spec.plain_experts,
                spec.act,
                spec.expert_bias,
            )?);
        }
        let mut sh_names = ex_names.clone();
        sh_names.gate = "gate_proj".into();
        sh_names.up = "up_proj".into();
        sh_names.down = "down_proj".into();
        let shared = match (spec.shared, &names.shared_fused) {
            (Some(width), Some((gu, dn))) => {
                let mut f = sh_names.clone();
                f.gate_up = Some(gu.clone());
                f.down = dn.clone();
                Some(Self::load_dense(
                    w, &f, p, hd, width, true, spec.act, false,
                )?)
            }
            (Some(width), None) => Some(Self::load_dense(
                w,
                &sh_names,
                &n(&names.shared),
                hd,
                width,
                !spec.plain_experts,
                spec.act,
                false,
            )?),
            (None, _) => None,
        };
        let shared_gate = if spec.shared_gate {
            Some(linear(w, &n(&names.shared_gate), 1, hd, false, false)?)
        } else {
            None
        };
        let out_norm = if spec.out_norm {
            Some(Norm::load(w, &n(&names.moe_out_norm), norm, &[hd])?)
        } else {
            None
        };
        Ok(MoeFfn {
            spec,
            router,
            e_bias,
            experts,
            shared,
            shared_gate,
            out_norm,
        })
    }

    /// The vocabulary size.
    pub(super) fn vocab(&self) -> usize {
        self.spec.vocab
    }

    /// The hidden size.
    pub(super) fn hidden(&self) -> usize {
        self.spec.hidden
    }

    /// Attention sees every position (an encoder body): nothing to generate with.
    pub(super) fn bidirectional(&self) -> bool {
        self.spec.bidirectional
    }

    /// How the sequence classifier pools.
    pub(super) fn seq_pool(&self) -> super::spec::SeqPool {
        self.spec.seq_pool
    }

    /// The context length.
    pub(super) fn max_positions(&self) -> usize {
        self.spec.max_positions
    }

    /// Feed `ids` at positions `pos..` through `cache`: logits `[positions, vocab]` of every
    /// position when `all`, else of the last one only (`[1, vocab]`).
    pub(super) fn forward(
        &self,
        ids: &[u32],
        pos: usize,
        cache: &mut Cache,
        all: bool,
    ) -> R<Tensor> {
        let s = ids.len();
        if cache.layers.len() != self.layers.len() {
            cache.layers = vec![LayerCache::default(); self.layers.len()];
        }
        let input = Tensor::new(ids, &self.device).map_err(ce("input"))?;
        let mut x = self
            .embed
            .rows(ids, &input, self.dtype)
            .map_err(ce("embedding"))?;
        if let Some(m) = self.spec.embed_scale {
            x = (x * m).map_err(ce("embedding scale"))?;
        }
        if let Some(t) = &self.positions {
            let offset = match self.spec.absolute {
                Some(Absolute::Learned { offset }) => offset,
                Some(Absolute::SinusoidalXglm { .. }) => 2,
                _ => 0,
            };
            let p = t.narrow(0, pos + offset, s).map_err(ce("positions"))?;
            x = (x + p).map_err(ce("positions"))?;
        }
        if let Some(n) = &self.embed_norm {
            x = n.forward(&x)?;
        }
        // Gemma 4: (norm(proj(x_emb) / √hidden) + table(ids) · √width) / √2, per layer.
        let ple: Option<Tensor> = match &self.ple {
            Some(pm) => {
                let c = ce("per-layer embeddings");
                let n_l = self.layers.len();
                let tok = pm
                    .embed
                    .index_select(&input, 0)
                    .and_then(|t| t * (pm.width as f32).sqrt() as f64)
                    .and_then(|t| t.reshape((s, n_l, pm.width)))
                    .map_err(&c)?;
                let ctx = pm
                    .proj
                    .forward(&x)
                    .and_then(|t| t * (self.spec.hidden as f64).powf(-0.5))
                    .and_then(|t| t.reshape((s, n_l, pm.width)))
                    .map_err(&c)?;
                let ctx = pm.norm.forward(&ctx)?;
                Some(((ctx + tok).and_then(|t| t * 2f64.powf(-0.5))).map_err(&c)?)
            }
            None => None,
        };
        // One mask per (window, chunk).
        type Key = (Option<usize>, Option<usize>);
        let mut masks: Vec<(Key, Option<Tensor>)> = Vec::new();
        for (layer, (ls, c)) in self
            .layers
            .iter()
            .zip(self.spec.layers.iter().zip(cache.layers.iter_mut()))
        {
            let key = (ls.window, ls.chunk);
            let mask = match masks.iter().find(|(k, _)| *k == key) {
                Some((_, m)) => m.clone(),
                None => {
                    let m = self.mask(s, pos, ls.window, ls.chunk)?;
                    masks.push((key, m.clone()));
                    m
                }
            };
            let rope = ls.rope.and_then(|i| self.ropes.get(i));
            x = self.layer(layer, &x, pos, c, mask.as_ref(), rope)?;
            if let (Some(pl), Some(all)) = (&layer.ple, &ple) {
                let cc = ce("per-layer embeddings");
                let slice = all
                    .narrow(1, layer.index, 1)
                    .and_then(|t| t.squeeze(1))
                    .map_err(&cc)?;
                let g = pl
                    .gate
                    .forward(&x)
                    .and_then(|t| act(self.spec.mlp.act, &t))
                    .and_then(|t| t * slice)
                    .and_then(|t| pl.proj.forward(&t))
                    .map_err(&cc)?;
                x = (x + pl.norm.forward(&g)?).map_err(&cc)?;
            }
            if let Some(t) = &layer.scalar {
                x = x.broadcast_mul(t).map_err(ce("layer scalar"))?;
            }
        }
        if !all && s > 1 {
            x = x.narrow(0, s - 1, 1).map_err(ce("last position"))?;
        }
        if let Some(n) = &self.final_norm {
            x = n.forward(&x)?;
        }
        let Some(head) = &self.head else {
            return x.to_dtype(DType::F32).map_err(ce("hidden states"));
        };
        match &self.head_transform {
            Some(Transform::Dense {
                dense,
                act: a,
                norm,
            }) => {
                let h = dense
                    .forward(&x)
                    .and_then(|h| act(*a, &h))
                    .map_err(ce("prediction head"))?;
                x = match norm {
                    Some(n) => n.forward(&h)?,
                    None => h,
                };
            }
            Some(Transform::TwoLayer {
                first,
                second,
                act: a,
            }) => {
                x = first
                    .forward(&x)
                    .and_then(|h| act(*a, &h))
                    .and_then(|h| second.forward(&h))
                    .and_then(|h| act(*a, &h))
                    .map_err(ce("prediction head"))?;
            }
            None => {}
        }
        let mut logits = head.forward(&x).map_err(ce("head"))?;
        if self.kind != Head::Lm {
            return logits.to_dtype(DType::F32).map_err(ce("logits"));
        }
        if let Some(m) = self.spec.logits_scale {
            logits = (logits * m).map_err(ce("logit scale"))?;
        }
        if let Some(cap) = self.spec.final_softcap {
            logits = ((logits / cap).and_then(|t| t.tanh()).and_then(|t| t * cap))
                .map_err(ce("logit softcap"))?;
        }
        logits.to_dtype(DType::F32).map_err(ce("logits"))
    }

    /// Additive mask `[s, pos + s]` (0 or -inf), or `None` when nothing is masked.
    fn mask(
        &self,
        s: usize,
        pos: usize,
        window: Option<usize>,
        chunk: Option<usize>,
    ) -> R<Option<Tensor>> {
        let t = pos + s;
        let bidi = self.spec.bidirectional;
        if (s == 1 || bidi) && window.is_none_or(|w| t <= w) && chunk.is_none_or(|c| t <= c) {
            return Ok(None);
        }
        let mut m = vec![0f32; s * t];
        for i in 0..s {
            let q = pos + i;
            for j in 0..t {
                if (!bidi && j > q)
                    || window.is_some_and(|w| q.abs_diff(j) >= w)
                    || chunk.is_some_and(|c| j / c != q / c)
                {
                    m[i * t + j] = f32::NEG_INFINITY;
                }
            }
        }
        Tensor::from_vec(m, (s, t), &self.device)
            .and_then(|m| m.to_dtype(self.dtype))
            .map(Some)
            .map_err(ce("mask"))
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        pos: usize,
        cache: &mut LayerCache,
        mask: Option<&Tensor>,
        rope: Option<&RopeTable>,
    ) -> R<Tensor> {
        self.layer_inner(l, x, pos, cache, mask, rope)
    }

    fn layer_inner(
        &self,
        l: &Layer,
        x: &Tensor,
        pos: usize,
        cache: &mut LayerCache,
        mask: Option<&Tensor>,
        rope: Option<&RopeTable>,
    ) -> R<Tensor> {
        let norm = |n: &Option<Norm>, x: &Tensor| -> R<Tensor> {
            match n {
                Some(n) => n.forward(x),
                None => Ok(x.clone()),
            }
        };
        let scale = |t: Tensor| -> R<Tensor> {
            match self.spec.residual_scale {
                Some(m) => (t * m).map_err(ce("residual scale")),
                None => Ok(t),
            }
        };
        let add = |a: &Tensor, b: &Tensor| (a + b).map_err(ce("residual"));
        if let Some(Mixer::Rwkv(b)) = &l.mixer {
            return self.rwkv(b, x, cache);
        }
        let Some(mixer) = &l.mixer else {
            // An FFN-only layer: x + ffn(norm(x)).
            let ffn = l.ffn.as_ref().ok_or_else(|| SkillError::Backend {
                backend: skillgen_runtime::BackendKind::Candle,
                detail: "a layer with neither a mixer nor an FFN".into(),
            })?;
            let h = norm(&l.attn_in, x)?;
            return add(x, &self.ffn(ffn, &h)?);
        };
        let mut mix = |h: &Tensor| -> R<Tensor> {
            match mixer {
                Mixer::Attn(a) => self.attention(a, h, pos, cache, mask, rope),
                Mixer::Mamba(m) => self.mamba(m, h, cache),
                Mixer::Mamba2(m) => self.mamba2(m, h, cache),
                Mixer::ShortConv(m) => self.short_conv(m, h, cache),
                Mixer::AttnMamba2(a, m) => {
                    let y = self.mamba2(m, h, cache)?;
                    let z = self.attention(a, h, pos, cache, mask, rope)?;
                    (y + z).map_err(ce("hybrid mixer"))
                }
                Mixer::Rglru(b) => self.rglru(b, h, pos, cache),
                Mixer::Rwkv(_) => Err(SkillError::Backend {
                    backend: skillgen_runtime::BackendKind::Candle,
                    detail: "an RWKV block used as a mixer".into(),
                }),
            }
        };
        let Some(ffn) = &l.ffn else {
            // A pure Mamba block: x + mixer(norm(x)).
            let h = norm(&l.attn_in, x)?;
            let a = mix(&h)?;
            return add(x, &a);
        };
        if self.spec.parallel {
            let a_in = norm(&l.attn_in, x)?;
            let f_in = match &l.ffn_in {
                Some(n) => n.forward(x)?,
                None => a_in.clone(),
            };
            let a = mix(&a_in)?;
            let f = self.ffn(ffn, &f_in)?;
            return add(&add(x, &a)?, &f);
        }
        if self.spec.post_norm {
            let a = mix(x)?;
            let x = norm(&l.attn_in, &add(x, &a)?)?;
            let f = self.ffn(ffn, &x)?;
            return norm(&l.ffn_in, &add(&x, &f)?);
        }
        // Beam's depth-scaled residual add `y / √n + x · √((n - 1) / n)`.
        let depth = |y: &Tensor, x: &Tensor, n: usize| -> R<Tensor> {
            let n = n as f64;
            ((y / n.sqrt()).and_then(|y| y + (x * ((n - 1.0) / n).sqrt())?)).map_err(ce("residual"))
        };
        let h = norm(&l.attn_in, x)?;
        let a = mix(&h)?;
        let a = scale(norm(&l.attn_out, &a)?)?;
        let n1 = 2 * (l.index + 1);
        let x = if self.spec.depth_scaled_residual {
            depth(&a, x, n1)?
        } else if let Some((r1, _)) = &l.res_scales {
            add(&x.broadcast_mul(r1).map_err(ce("residual"))?, &a)?
        } else {
            add(x, &a)?
        };
        let h = norm(&l.ffn_in, &x)?;
        let f = self.ffn(ffn, &h)?;
        let f = scale(norm(&l.ffn_out, &f)?)?;
        if self.spec.depth_scaled_residual {
            depth(&f, &x, n1 + 1)
        } else if let Some((_, r2)) = &l.res_scales {
            add(&x.broadcast_mul(r2).map_err(ce("residual"))?, &f)
        } else {
            add(&x, &f)
        }
    }

    fn ffn(&self, f: &Ffn, x: &Tensor) -> R<Tensor> {
        match f {
            Ffn::Dense(d) => d.forward(x).map_err(ce("mlp")),
            Ffn::Moe(m) => self.moe(m, x),
        }
    }

    fn attention(
        &self,
        a: &Attention,
        x: &Tensor,
        pos: usize,
        cache: &mut LayerCache,
        mask: Option<&Tensor>,
        rope: Option<&RopeTable>,
    ) -> R<Tensor> {
        let sp = &self.spec;
        let s = x.dim(0).map_err(ce("attention"))?;
        let (h, kvh) = (sp.heads, a.kvh);
        let mut f = || -> R<Tensor> {
            let c = ce("attention");
            let mut index_mask: Option<Tensor> = None;
            let (q, k, v, kvh) = match &a.proj {
                Proj::Fused(lin) => {
                    let d = a.d;
                    let mut qkv = lin.forward(x).map_err(&c)?;
                    if let Some(m) = sp.clip_qkv {
                        qkv = qkv.clamp(-m, m).map_err(&c)?;
                    }
                    let mut q = qkv.narrow(1, 0, h * d).map_err(&c)?;
                    let mut k = qkv.narrow(1, h * d, kvh * d).map_err(&c)?;
                    let mut v = qkv.narrow(1, (h + kvh) * d, kvh * d).map_err(&c)?;
                    if let Some(m) = sp.v_scale {
                        v = (v * m).map_err(&c)?;
                    }
                    if let (Some((qn, false)), Some(kn)) = (&a.q_norm, &a.k_norm) {
                        q = qn.forward(&q)?;
                        k = kn.forward(&k)?;
                    }
                    let mut q = q.reshape((s, h, d)).map_err(&c)?;
                    let mut k = k.reshape((s, kvh, d)).map_err(&c)?;
                    let after = sp.qk_norm_after_rope;
                    if let (Some((qn, true)), Some(kn), false) = (&a.q_norm, &a.k_norm, after) {
                        q = qn.forward(&q)?;
                        k = kn.forward(&k)?;
                    }
                    let heads = |t: Tensor| t.transpose(0, 1).and_then(|t| t.contiguous());
                    let mut q = heads(q).map_err(&c)?;
                    let mut k = heads(k).map_err(&c)?;
                    let mut v = v.reshape((s, kvh, d)).map_err(&c)?;
                    if sp.v_norm {
                        let ones = Tensor::ones(d, v.dtype(), &self.device).map_err(&c)?;
                        let eps = match sp.norm {
                            NormKind::Rms { eps, .. } => eps as f32,
                            _ => 1e-6,
                        };
                        v = candle_nn::ops::rms_norm(&v.contiguous().map_err(&c)?, &ones, eps)
                            .map_err(&c)?;
                    }
                    let v = heads(v).map_err(&c)?;
                    if let Some(r) = rope {
                        q = r.apply(&q, pos).map_err(&c)?;
                        k = r.apply(&k, pos).map_err(&c)?;
                    }
                    let normed = !sp.qk_norm_rope_layers_only || rope.is_some();
                    if let (Some((qn, true)), Some(kn), true, true) =
                        (&a.q_norm, &a.k_norm, after, normed)
                    {
                        q = qn.forward(&q)?;
                        k = kn.forward(&k)?;
                    }
                    if let (Some(how), None) = (sp.nope_query_scale, rope) {
                        let t: Vec<f32> = (pos..pos + s)
                            .map(|p| {
                                let p = p as f64 + 1.0;
                                (match how {
                                    NopeScale::Beam => (0.1 * (p / 2048.0).ln_1p()).exp(),
                                    NopeScale::Llama4 {
                                        floor_scale,
                                        attn_scale,
                                    } => (p / floor_scale).floor().ln_1p() * attn_scale + 1.0,
                                }) as f32
                            })
                            .collect();
                        let t = Tensor::from_vec(t, (1, s, 1), &self.device)
                            .and_then(|t| t.to_dtype(q.dtype()))
                            .map_err(&c)?;
                        q = q.broadcast_mul(&t).map_err(&c)?;
                    }
                    if let Some((beta, orig)) = sp.attn_temperature {
                        let t: Vec<f32> = (pos..pos + s)
                            .map(|p| (1.0 + beta * (1.0 + (p as f64 / orig).floor()).ln()) as f32)
                            .collect();
                        let t = Tensor::from_vec(t, (1, s, 1), &self.device)
                            .and_then(|t| t.to_dtype(q.dtype()))
                            .map_err(&c)?;
                        q = q.broadcast_mul(&t).map_err(&c)?;
                    }
                    (q, k, v, kvh)
                }
                Proj::Mla(m) => {
                    let (q, k, v, q_resid) = self.mla_qkv(m, x, pos, rope)?;
                    if let (Some(ix), Some(r)) = (&m.indexer, &q_resid) {
                        index_mask = Some(self.index_mask(ix, x, r, pos, rope, cache)?);
                    }
                    (q, k, v, h)
                }
            };
            if self.fused_attn {
                // candle's fused CPU kernel: (1, s, heads, d) queries, (1, t, kv_heads, d) keys
                // and values, causal from `pos`.
                let seq = |t: &Tensor| t.transpose(0, 1).and_then(|t| t.contiguous());
                let (k, v) = (seq(&k).map_err(&c)?, seq(&v).map_err(&c)?);
                let (k, v) = cache
                    .fused
                    .get_or_insert_with(|| candle_nn::kv_cache::KvCache::new(0, KV_CHUNK))
                    .append(&k, &v)
                    .map_err(&c)?;
                if s == 1 {
                    // One new position: our decode kernel (`skillgen_kernels::attend`), `[1, h · dv]`.
                    let dv = v.dim(2).map_err(&c)?;
                    let op = skillgen_kernels::attend::DecodeAttention {
                        scale: sp.attn_scale as f32,
                    };
                    let o = seq(&q)
                        .and_then(|q| q.apply_op3_no_bwd(&k, &v, &op))
                        .map_err(&c)?;
                    return self.attn_out(a, x, o, dv);
                }
                let q = seq(&q).and_then(|q| q.unsqueeze(0)).map_err(&c)?;
                let o = candle_nn::attention::flash_attn::<f32>(
                    &q,
                    &k.unsqueeze(0).map_err(&c)?,
                    &v.unsqueeze(0).map_err(&c)?,
                    sp.attn_scale as f32,
                    candle_nn::attention::AttnMask::causal_with_offset(pos),
                    None,
                    None,
                )
                .map_err(&c)?;
                let dv = o.dim(3).map_err(&c)?;
                let o = o
                    .squeeze(0)
                    .and_then(|o| o.transpose(0, 1))
                    .and_then(|o| o.reshape((s, h * dv)))
                    .map_err(&c)?;
                return self.attn_out(a, x, o, dv);
            }
            let (k, v) = match cache.kv.take() {
                Some((pk, pv)) => (
                    Tensor::cat(&[&pk, &k], 1).map_err(&c)?,
                    Tensor::cat(&[&pv, &v], 1).map_err(&c)?,
                ),
                None => (k, v),
            };
            cache.kv = Some((k.clone(), v.clone()));
            let t = k.dim(1).map_err(&c)?;
            let g = h / kvh;
            let dq = q.dim(2).map_err(&c)?;
            // [kv, g * s, d] · [kv, d, t] → [kv, g, s, t]
            let qg = q.reshape((kvh, g * s, dq)).map_err(&c)?;
            let kt = k.transpose(1, 2).map_err(&c)?;
            let mut w = (qg.matmul(&kt).map_err(&c)? * sp.attn_scale).map_err(&c)?;
            if let Some(cap) = sp.attn_softcap {
                w = ((w / cap).and_then(|t| t.tanh()).and_then(|t| t * cap)).map_err(&c)?;
            }
            let mut w = w.reshape((h, s, t)).map_err(&c)?;
            if let Some(sl) = &self.alibi {
                let j = Tensor::arange(0u32, t as u32, &self.device)
                    .and_then(|j| j.to_dtype(w.dtype()))
                    .and_then(|j| j.reshape((1, 1, t)))
                    .map_err(&c)?;
                w = w
                    .broadcast_add(&sl.broadcast_mul(&j).map_err(&c)?)
                    .map_err(&c)?;
            }
            if let Some((dt_proj, a_log)) = &a.dma {
                // bias[j, ·, k] = exp(A · softplus(dt_proj(v_k)))[j / g]
                let dv = v.dim(2).map_err(&c)?;
                let flat = v
                    .transpose(0, 1)
                    .and_then(|t| t.reshape((t_len(&v)?, kvh * dv)))
                    .map_err(&c)?;
                let z = dt_proj.forward(&flat).map_err(&c)?; // [t, kvh]
                let softplus = (z.exp().and_then(|e| e + 1.0).and_then(|e| e.log())).map_err(&c)?;
                let dt = softplus
                    .broadcast_mul(a_log)
                    .and_then(|t| t.exp())
                    .and_then(|t| t.t())
                    .and_then(|t| t.contiguous())
                    .map_err(&c)?; // [kvh, t]
                let idx: Vec<u32> = (0..h).map(|j| (j / g) as u32).collect();
                let idx = Tensor::from_vec(idx, h, &self.device).map_err(&c)?;
                let bias = dt
                    .index_select(&idx, 0)
                    .and_then(|b| b.unsqueeze(1))
                    .map_err(&c)?; // [h, 1, t]
                w = w.broadcast_add(&bias).map_err(&c)?;
            }
            if let Some(m) = mask {
                w = w.broadcast_add(m).map_err(&c)?;
            }
            if let Some(m) = &index_mask {
                w = w.broadcast_add(m).map_err(&c)?;
            }
            let p = match &a.sinks {
                None => candle_nn::ops::softmax_last_dim(&w).map_err(&c)?,
                Some(sinks) => {
                    let col = sinks
                        .reshape((h, 1, 1))
                        .and_then(|t| t.broadcast_as((h, s, 1)))
                        .map_err(&c)?;
                    let all = Tensor::cat(&[&w, &col], 2).map_err(&c)?;
                    let all = all
                        .broadcast_sub(&all.max_keepdim(2).map_err(&c)?)
                        .map_err(&c)?;
                    candle_nn::ops::softmax_last_dim(&all)
                        .and_then(|p| p.narrow(2, 0, t))
                        .map_err(&c)?
                }
            };
            let dv = v.dim(2).map_err(&c)?;
            if let Some((lambda, lambda_init)) = a.diff {
                // Query head j reads kv head j / g; the two value halves are the first and the
                // second half of the kv heads.
                let m = kvh / 2;
                let pick = |off: usize| -> R<Tensor> {
                    let idx: Vec<u32> = (0..h).map(|j| (off + (j / g) % m) as u32).collect();
                    let idx = Tensor::from_vec(idx, h, &self.device).map_err(&c)?;
                    v.index_select(&idx, 0).map_err(&c)
                };
                let p = p.reshape((h, s, t)).map_err(&c)?;
                let o1 = p.matmul(&pick(0)?).map_err(&c)?;
                let o2 = p.matmul(&pick(m)?).map_err(&c)?;
                let full = Tensor::cat(&[&o1, &o2], 2).map_err(&c)?; // [h, s, 2dv]
                let a1 = full.narrow(0, 0, h / 2).map_err(&c)?;
                let a2 = full.narrow(0, h / 2, h / 2).map_err(&c)?;
                let y = (a1 - (a2 * lambda).map_err(&c)?).map_err(&c)?;
                let ones = Tensor::ones(2 * dv, y.dtype(), &self.device).map_err(&c)?;
                let eps = match sp.norm {
                    NormKind::Rms { eps, .. } => eps as f32,
                    _ => 1e-5,
                };
                let y = candle_nn::ops::rms_norm(&y.contiguous().map_err(&c)?, &ones, eps)
                    .and_then(|y| y * (1.0 - lambda_init))
                    .and_then(|y| y.transpose(0, 1))
                    .and_then(|y| y.reshape((s, h * dv)))
                    .map_err(&c)?;
                return self.attn_out(a, x, y, dv);
            }
            let p = p.reshape((kvh, g * s, t)).map_err(&c)?;
            let o = p.matmul(&v).map_err(&c)?; // [kv, g*s, dv]
            let o = o
                .reshape((h, s, dv))
                .and_then(|o| o.transpose(0, 1))
                .and_then(|o| o.reshape((s, h * dv)))
                .map_err(&c)?;
            self.attn_out(a, x, o, dv)
        };
        f()
    }

    /// The attention output `o` `[s, heads * dv]` through the gate, the sub-norm and `o_proj`
    /// (`x` is the attention's input).
    fn attn_out(&self, a: &Attention, x: &Tensor, o: Tensor, dv: usize) -> R<Tensor> {
        let c = ce("attention output");
        let s = o.dim(0).map_err(&c)?;
        let h = self.spec.heads;
        let o = match &a.gate {
            None => o,
            Some((g, AttnGate::Sigmoid)) => {
                let gate = candle_nn::ops::sigmoid(&g.forward(x).map_err(&c)?).map_err(&c)?;
                (o * gate).map_err(&c)?
            }
            Some((g, AttnGate::SigmoidHeadBias)) => {
                let z = g
                    .forward(x)
                    .and_then(|z| z.reshape((s, h, dv)))
                    .map_err(&c)?;
                let z = match &a.gate_bias {
                    Some(b) => z.broadcast_add(b).map_err(&c)?,
                    None => z,
                };
                let gate = candle_nn::ops::sigmoid(&z).map_err(&c)?;
                o.reshape((s, h, dv))
                    .and_then(|o| o * gate)
                    .and_then(|o| o.reshape((s, h * dv)))
                    .map_err(&c)?
            }
            Some((g, AttnGate::SoftplusPerHead)) => {
                // softplus(z) = ln(1 + e^z), one value per head.
                let z = g.forward(x).map_err(&c)?;
                let gate = (z.exp().and_then(|e| e + 1.0).and_then(|e| e.log()))
                    .and_then(|t| t.reshape((s, h, 1)))
                    .map_err(&c)?;
                o.reshape((s, h, dv))
                    .and_then(|o| o.broadcast_mul(&gate))
                    .and_then(|o| o.reshape((s, h * dv)))
                    .map_err(&c)?
            }
        };
        let o = match &a.sub_norm {
            Some(n) => n.forward(&o)?,
            None => o,
        };
        let y = a.o.forward(&o).map_err(&c)?;
        match &a.out_bias {
            Some(b) => y.broadcast_add(b).map_err(&c),
            None => Ok(y),
        }
    }

    /// DeepSeek MLA: q `[h, s, nope + rope]`, k the same, v `[h, s, v_head]`.
    fn mla_qkv(
        &self,
        m: &MlaProj,
        x: &Tensor,
        pos: usize,
        rope: Option<&RopeTable>,
    ) -> R<(Tensor, Tensor, Tensor, Option<Tensor>)> {
        let c = ce("latent attention");
        let sp = m.spec;
        let h = self.spec.heads;
        let s = x.dim(0).map_err(&c)?;
        let qk = sp.qk_nope + sp.qk_rope;
        let q_resid = match &m.q_a {
            Some((a, n)) => Some(n.forward(&a.forward(x).map_err(&c)?)?),
            None => None,
        };
        let q = match &q_resid {
            Some(r) => m.q_b.forward(r),
            None => m.q_b.forward(x),
        }
        .map_err(&c)?;
        let q = q
            .reshape((s, h, qk))
            .and_then(|q| q.transpose(0, 1))
            .map_err(&c)?;
        let q_nope = q.narrow(2, 0, sp.qk_nope).map_err(&c)?;
        let q_pe = q.narrow(2, sp.qk_nope, sp.qk_rope).map_err(&c)?;
        let ckv = m.kv_a.forward(x).map_err(&c)?;
        let compressed = ckv.narrow(1, 0, sp.kv_lora_rank).map_err(&c)?;
        let k_pe = ckv
            .narrow(1, sp.kv_lora_rank, sp.qk_rope)
            .and_then(|t| t.reshape((1, s, sp.qk_rope)))
            .map_err(&c)?;
        let kv = m
            .kv_b
            .forward(&m.kv_norm.forward(&compressed)?)
            .and_then(|t| t.reshape((s, h, sp.qk_nope + sp.v_head)))
            .and_then(|t| t.transpose(0, 1))
            .map_err(&c)?;
        let k_nope = kv.narrow(2, 0, sp.qk_nope).map_err(&c)?;
        let v = kv
            .narrow(2, sp.qk_nope, sp.v_head)
            .and_then(|t| t.contiguous())
            .map_err(&c)?;
        let (q_pe, k_pe) = match rope {
            Some(r) => (
                r.apply(&q_pe, pos).map_err(&c)?,
                r.apply(&k_pe, pos).map_err(&c)?,
            ),
            None => (q_pe, k_pe),
        };
        let k_pe = k_pe.broadcast_as((h, s, sp.qk_rope)).map_err(&c)?;
        let q = Tensor::cat(&[&q_nope, &q_pe], 2)
            .and_then(|t| t.contiguous())
            .map_err(&c)?;
        let k = Tensor::cat(&[&k_nope, &k_pe], 2)
            .and_then(|t| t.contiguous())
            .map_err(&c)?;
        Ok((q, k, v, q_resid))
    }

    /// The DSA indexer's additive mask `[s, t]`: 0 on each query's `topk` keys (by index
    /// score, causal), -inf elsewhere. Appends this step's keys to `cache`.
    #[allow(clippy::too_many_arguments)]
    fn index_mask(
        &self,
        ix: &IndexerWeights,
        x: &Tensor,
        q_resid: &Tensor,
        pos: usize,
        rope: Option<&RopeTable>,
        cache: &mut LayerCache,
    ) -> R<Tensor> {
        let c = ce("sparse attention indexer");
        let sp = ix.spec;
        let s = x.dim(0).map_err(&c)?;
        let rot = self.spec.mla.map_or(0, |m| m.qk_rope);
        // q: [heads, s, dim]; k: [1, s, dim]; RoPE on the first `rot` dims.
        let q = ix
            .wq_b
            .forward(q_resid)
            .and_then(|q| q.reshape((s, sp.heads, sp.dim)))
            .and_then(|q| q.transpose(0, 1))
            .and_then(|q| q.contiguous())
            .map_err(&c)?;
        let k = ix.k_norm.forward(&ix.wk.forward(x).map_err(&c)?)?;
        let k = k.reshape((1, s, sp.dim)).map_err(&c)?;
        let rotate = |t: &Tensor| -> candle_core::Result<Tensor> {
            match rope {
                Some(r) if rot > 0 => {
                    let a = r.apply_as(&t.narrow(2, 0, rot)?, pos, sp.interleaved)?;
                    if rot == sp.dim {
                        Ok(a)
                    } else {
                        Tensor::cat(&[&a, &t.narrow(2, rot, sp.dim - rot)?], 2)
                    }
                }
                _ => Ok(t.clone()),
            }
        };
        let q = rotate(&q).map_err(&c)?;
        let k = rotate(&k).and_then(|k| k.squeeze(0)).map_err(&c)?;
        let k = match cache.index_k.take() {
            Some(prev) => Tensor::cat(&[&prev, &k], 0).map_err(&c)?,
            None => k,
        };
        cache.index_k = Some(k.clone());
        let t = k.dim(0).map_err(&c)?;
        // scores [heads, s, t] = relu(q · kᵀ / √dim); index [s, t] = Σ_h w[s, h] · scores.
        let kt = k.t().and_then(|t| t.unsqueeze(0)).map_err(&c)?;
        let scores = q
            .broadcast_matmul(&kt)
            .and_then(|x| x * (sp.dim as f64).powf(-0.5))
            .and_then(|x| x.relu())
            .map_err(&c)?;
        let wts = ix
            .weights_proj
            .forward(x)
            .and_then(|w| w * (sp.heads as f64).powf(-0.5))
            .and_then(|w| w.t())
            .and_then(|w| w.unsqueeze(2))
            .map_err(&c)?; // [heads, s, 1]
        let index: Vec<Vec<f32>> = scores
            .broadcast_mul(&wts)
            .and_then(|x| x.sum(0))
            .and_then(|x| x.to_dtype(DType::F32))
            .and_then(|x| x.to_vec2())
            .map_err(&c)?;
        let mut mask = vec![f32::NEG_INFINITY; s * t];
        for (i, row) in index.iter().enumerate() {
            let q_pos = pos + i;
            let mut keys: Vec<usize> = (0..t).collect();
            // Causal keys first (the reference adds -inf to the rest), best score first, ties
            // to the lower position.
            let score = |j: usize| {
                if j <= q_pos {
                    row[j]
                } else {
                    f32::NEG_INFINITY
                }
            };
            keys.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
            for &j in keys.iter().take(sp.topk.min(t)) {
                if j <= q_pos {
                    mask[i * t + j] = 0.0;
                }
            }
        }
        Tensor::from_vec(mask, (s, t), &self.device)
            .and_then(|m| m.to_dtype(self.dtype))
            .map_err(&c)
    }

    fn moe(&self, m: &MoeFfn, x: &Tensor) -> R<Tensor> {
        let c = ce("mixture of experts");
        let sp = &m.spec;
        let logits: Vec<Vec<f32>> = m
            .router
            .forward(x)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec2())
            .map_err(&c)?;
        let mut per_expert: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); sp.experts];
        for (tok, l) in logits.iter().enumerate() {
            for (e, wt) in route(sp, l, m.e_bias.as_deref()) {
                per_expert[e].0.push(tok as u32);
                per_expert[e].1.push(wt);
            }
        }
        let mut out = x.zeros_like().map_err(&c)?;
        for (e, (toks, wts)) in per_expert.into_iter().enumerate() {
            if toks.is_empty() {
                continue;
            }
            let n = toks.len();
            let idx = Tensor::from_vec(toks, n, &self.device).map_err(&c)?;
            let xs = x.index_select(&idx, 0).map_err(&c)?;
            let ex = &m.experts[e];
            let wt = Tensor::from_vec(wts, (n, 1), &self.device)
                .and_then(|t| t.to_dtype(xs.dtype()))
                .map_err(&c)?;
            let xs = if sp.weight_input {
                xs.broadcast_mul(&wt).map_err(&c)?
            } else {
                xs
            };
            let y = match sp.swiglu_limit {
                None => ex.forward(&xs),
                Some(limit) => clamped_swiglu(ex, &xs, limit),
            }
            .map_err(&c)?;
            let y = if sp.weight_input {
                y
            } else {
                y.broadcast_mul(&wt).map_err(&c)?
            };
            out = out.index_add(&idx, &y, 0).map_err(&c)?;
        }
        if let Some(sh) = &m.shared {
            let mut y = match sp.swiglu_limit {
                Some(limit) if sp.shared_clamped => clamped_swiglu(sh, x, limit),
                _ => sh.forward(x),
            }
            .map_err(&c)?;
            if let Some(g) = &m.shared_gate {
                let gate = candle_nn::ops::sigmoid(&g.forward(x).map_err(&c)?).map_err(&c)?;
                y = y.broadcast_mul(&gate).map_err(&c)?;
            }
            out = (out + y).map_err(&c)?;
            if sp.shared_average {
                out = (out / 2.0).map_err(&c)?;
            }
        }
        match &m.out_norm {
            Some(n) => n.forward(&out),
            None => Ok(out),
        }
    }
}

/// The number of positions of a `[heads, positions, dim]` tensor.
fn t_len(t: &Tensor) -> candle_core::Result<usize> {
    t.dim(1)
}

/// GPT-OSS experts: interleaved gate/up columns, clamped, `(up + 1) * gate * σ(1.702 gate)`.
fn clamped_swiglu(ex: &Dense, x: &Tensor, limit: f64) -> candle_core::Result<Tensor> {
    let h = ex.up.forward(x)?;
    let g = h.narrow(D::Minus1, 0, ex.width)?;
    let u = h.narrow(D::Minus1, ex.width, ex.width)?;
    let g = g.clamp(f64::NEG_INFINITY, limit)?;
    let u = u.clamp(-limit, limit)?;
    let glu = (&g * candle_nn::ops::sigmoid(&(&g * 1.702)?)?)?;
    let y = ((u + 1.0)? * glu)?;
    ex.down.forward(&y)
}

/// The experts one token goes to, with their weights.
fn route(sp: &Moe, logits: &[f32], e_bias: Option<&[f32]>) -> Vec<(usize, f32)> {
    let n = logits.len();
    let softmax = |v: &[f32]| -> Vec<f32> {
        let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    };
    // Top-k by `key`, ties to the lower index (as torch.topk on CPU).
    let topk = |key: &[f32], k: usize| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..key.len()).collect();
        idx.sort_by(|&a, &b| key[b].total_cmp(&key[a]).then(a.cmp(&b)));
        idx.truncate(k);
        idx
    };
    let (chosen, mut weights): (Vec<usize>, Vec<f32>) = match &sp.routing {
        Routing::SoftmaxTopK => {
            let p = softmax(logits);
            let c = topk(&p, sp.top_k);
            let w = c.iter().map(|&i| p[i]).collect();
            (c, w)
        }
        Routing::TopKSoftmax => {
            let c = topk(logits, sp.top_k);
            let v: Vec<f32> = c.iter().map(|&i| logits[i]).collect();
            (c, softmax(&v))
        }
        Routing::SigmoidGrouped {
            groups,
            topk_groups,
        } => {
            let scores: Vec<f32> = logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect();
            let choice: Vec<f32> = match e_bias {
                Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
                None => scores.clone(),
            };
            let per = n / groups;
            let gscore: Vec<f32> = (0..*groups)
                .map(|g| {
                    let grp = &choice[g * per..(g + 1) * per];
                    topk(grp, 2.min(per)).iter().map(|&i| grp[i]).sum()
                })
                .collect();
            let keep = topk(&gscore, *topk_groups);
            let masked: Vec<f32> = (0..n)
                .map(|i| {
                    if keep.contains(&(i / per)) {
                        choice[i]
                    } else {
                        0.0
                    }
                })
                .collect();
            let c = topk(&masked, sp.top_k);
            let w = c.iter().map(|&i| scores[i]).collect();
            (c, w)
        }
        Routing::SoftmaxGroupedMax {
            groups,
            topk_groups,
        } => {
            let p = softmax(logits);
            let per = n / groups;
            let gscore: Vec<f32> = (0..*groups)
                .map(|g| {
                    p[g * per..(g + 1) * per]
                        .iter()
                        .copied()
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect();
            let keep = topk(&gscore, *topk_groups);
            let masked: Vec<f32> = (0..n)
                .map(|i| if keep.contains(&(i / per)) { p[i] } else { 0.0 })
                .collect();
            let c = topk(&masked, sp.top_k);
            let w = c.iter().map(|&i| p[i]).collect();
            (c, w)
        }
        Routing::TopKSigmoid => {
            let c = topk(logits, sp.top_k);
            let w = c
                .iter()
                .map(|&i| 1.0 / (1.0 + (-logits[i]).exp()))
                .collect();
            (c, w)
        }
        Routing::SigmoidLogitBias => {
            let choice: Vec<f32> = match e_bias {
                Some(b) => logits.iter().zip(b).map(|(l, b)| l + b).collect(),
                None => logits.to_vec(),
            };
            let c = topk(&choice, sp.top_k);
            let w = c
                .iter()
                .map(|&i| 1.0 / (1.0 + (-logits[i]).exp()))
                .collect();
            (c, w)
        }
        Routing::SoftmaxBiased => {
            let p = softmax(logits);
            let choice: Vec<f32> = match e_bias {
                Some(b) => p.iter().zip(b).map(|(p, b)| p + b).collect(),
                None => p.clone(),
            };
            let c = topk(&choice, sp.top_k);
            let w = c.iter().map(|&i| p[i]).collect();
            (c, w)
        }
        Routing::SparseMixer { jitter_eps } => {
            let eps = 2.0 * *jitter_eps as f32;
            let pick =
                |scores: &[f32]| -> (usize, f32) {
                    let (i, m) = scores.iter().copied().enumerate().fold(
                        (0, f32::NEG_INFINITY),
                        |a, (i, x)| if x > a.1 { (i, x) } else { a },
                    );
                    let masked: Vec<f32> = scores
                        .iter()
                        .zip(logits)
                        .map(|(&s, &raw)| {
                            let factor = raw.abs().max(m);
                            if (m - raw) / factor > eps {
                                f32::NEG_INFINITY
                            } else {
                                s
                            }
                        })
                        .collect();
                    (i, softmax(&masked)[i])
                };
            let (i1, w1) = pick(logits);
            let mut second = logits.to_vec();
            second[i1] = f32::NEG_INFINITY;
            let (i2, w2) = pick(&second);
            (vec![i1, i2], vec![w1, w2])
        }
    };
    if sp.norm_topk {
        let s: f32 = weights.iter().sum();
        let s = match (sp.norm_eps, &sp.routing) {
            (Some(e), _) => s + e as f32,
            (None, Routing::SigmoidGrouped { .. }) => s + 1e-20,
            (None, Routing::SoftmaxBiased) => s.max(1e-12),
            (None, _) => s,
        };
        for w in &mut weights {
            *w /= s;
        }
    }
    if sp.scale != 1.0 {
        for w in &mut weights {
            *w *= sp.scale as f32;
        }
    }
    chosen.into_iter().zip(weights).collect()
}

/// Reorder a fused q/k/v projection into `[q; k; v]` rows.
fn reorder_qkv(lin: Linear, layout: FusedQkv, h: usize, kv: usize, d: usize) -> R<Linear> {
    let c = ce("splitting a fused qkv projection");
    if matches!(layout, FusedQkv::Rows | FusedQkv::Conv1d) {
        return Ok(lin);
    }
    let w = lin.dense_weight().map_err(&c)?;
    let b = lin.bias().cloned();
    let rows = |t: &Tensor, idx: &[u32]| -> R<Tensor> {
        let i = Tensor::from_vec(idx.to_vec(), idx.len(), t.device()).map_err(&c)?;
        t.index_select(&i, 0).map_err(&c)
    };
    let order: Option<Vec<u32>> = match layout {
        FusedQkv::Rows | FusedQkv::Conv1d => None,
        FusedQkv::PerHead => {
            // [h, 3, d] → q rows, k rows, v rows.
            let mut o = Vec::with_capacity(3 * h * d);
            for part in 0..3 {
                for head in 0..h {
                    for i in 0..d {
                        o.push(((head * 3 + part) * d + i) as u32);
                    }
                }
            }
            Some(o)
        }
        FusedQkv::PerGroup => {
            // [kv, g + 2, d]: g query heads, then k, then v per group.
            let g = h / kv;
            let mut o = Vec::with_capacity((h + 2 * kv) * d);
            for grp in 0..kv {
                for qh in 0..g {
                    for i in 0..d {
                        o.push(((grp * (g + 2) + qh) * d + i) as u32);
                    }
                }
            }
            for part in [g, g + 1] {
                for grp in 0..kv {
                    for i in 0..d {
                        o.push(((grp * (g + 2) + part) * d + i) as u32);
                    }
                }
            }
            Some(o)
        }
        FusedQkv::CodeGen => {
            // 4 blocks (mp_num), each [q; v; k] of hd/4 rows.
            let mp = 4;
            let hd = h * d;
            let local = hd / mp;
            let mut o = Vec::with_capacity(3 * hd);
            for part in [0, 2, 1] {
                for blk in 0..mp {
                    for i in 0..local {
                        o.push((blk * 3 * local + part * local + i) as u32);
                    }
                }
            }
            Some(o)
        }
    };
    match order {
        None => Ok(Linear::new(w, b)),
        Some(o) => {
            let w = rows(&w, &o)?;
            let b = match b {
                Some(b) => Some(rows(&b, &o)?),
                None => None,
            };
            Ok(Linear::new(w, b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_match_bloom() {
        // BLOOM's build_alibi_tensor for 4 heads: 2^-2, 2^-4, 2^-6, 2^-8.
        assert_eq!(alibi_slopes(4), vec![0.25, 0.0625, 0.015625, 0.00390625]);
        // 6 heads: 4 from base 2^-2, then 2 odd powers of 2^-1.
        let s = alibi_slopes(6);
        assert_eq!(s.len(), 6);
        assert_eq!(&s[4..], &[0.5, 0.125]);
    }

    fn moe(routing: Routing, norm: bool) -> Moe {
        Moe {
            experts: 4,
            top_k: 2,
            intermediate: 1,
            routing,
            norm_topk: norm,
            scale: 1.0,
            router_bias: false,
            expert_bias: false,
            swiglu_limit: None,
            shared: None,
            shared_gate: false,
            act: Act::Silu,
            e_bias: false,
            shared_average: false,
            out_norm: false,
            weight_input: false,
            plain_experts: false,
            norm_eps: None,
            shared_clamped: false,
        }
    }

    #[test]
    fn softmax_topk_renormalises_when_asked() {
        let l = [0.0, 1.0, 2.0, 3.0];
        let r = route(&moe(Routing::SoftmaxTopK, true), &l, None);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 2]);
        assert!((r[0].1 + r[1].1 - 1.0).abs() < 1e-6);
        let r = route(&moe(Routing::SoftmaxTopK, false), &l, None);
        assert!(r[0].1 + r[1].1 < 0.95);
        // Top-k-then-softmax equals softmax-top-k renormalised.
        let a = route(&moe(Routing::TopKSoftmax, false), &l, None);
        assert!((a[0].1 - route(&moe(Routing::SoftmaxTopK, true), &l, None)[0].1).abs() < 1e-6);
    }

    #[test]
    fn grouped_routing_keeps_the_best_groups() {
        // Groups {0,1} and {2,3}; group 2 holds the two best experts.
        let l = [2.0, -5.0, 1.0, 1.5];
        let r = route(
            &moe(
                Routing::SigmoidGrouped {
                    groups: 2,
                    topk_groups: 1,
                },
                true,
            ),
            &l,
            Some(&[0.0; 4]),
        );
        let mut e: Vec<usize> = r.iter().map(|x| x.0).collect();
        e.sort();
        assert_eq!(e, vec![2, 3]);
    }

    #[test]
    fn fused_layouts_reorder_to_q_k_v() {
        let dev = Device::Cpu;
        // h = 2, kv = 2, d = 1; per-head rows [q0, k0, v0, q1, k1, v1].
        let w = Tensor::from_vec(vec![0f32, 1., 2., 3., 4., 5.], (6, 1), &dev).unwrap();
        let l = reorder_qkv(Linear::new(w, None), FusedQkv::PerHead, 2, 2, 1).unwrap();
        let v: Vec<f32> = l
            .dense_weight()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(v, vec![0., 3., 1., 4., 2., 5.]);
        // Falcon groups: h = 2, kv = 1: [q0, q1, k, v].
        let w = Tensor::from_vec(vec![0f32, 1., 2., 3.], (4, 1), &dev).unwrap();
        let l = reorder_qkv(Linear::new(w, None), FusedQkv::PerGroup, 2, 1, 1).unwrap();
        let v: Vec<f32> = l
            .dense_weight()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(v, vec![0., 1., 2., 3.]);
    }
}
