//! The typed description of one decoder checkpoint: what the config-driven decoder
//! ([`super::model`]) computes, and where each tensor lives in the files ([`Names`]).
//!
//! A [`Spec`] is produced from `config.json` by [`super::translate`], field by field; every
//! switch here is a behaviour some transformers model type has (see the coverage map in the
//! repository's docs). Anything a config asks for that has no switch here is refused there,
//! never approximated.

pub(crate) use crate::activation::Act;

/// How a block normalises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NormKind {
    /// RMSNorm `x / rms(x) * w`; `plus_one`: Gemma's `* (1 + w)`.
    Rms { eps: f64, plus_one: bool },
    /// LayerNorm with weight, and bias when `bias`.
    Layer { eps: f64, bias: bool },
    /// LayerNorm without parameters (OLMo).
    LayerNoAffine { eps: f64 },
    /// RMSNorm without parameters (NanoChat).
    RmsNoAffine { eps: f64 },
    /// LayerNorm with weight `1 + w` and a bias (Nemotron's `LayerNorm1P`).
    Layer1P { eps: f64 },
}

/// Normalisation of queries and keys.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QkNorm {
    pub kind: NormKind,
    /// Over each head (weight `[head_dim]` or `[heads, head_dim]`) rather than the whole
    /// projection (weight `[heads * head_dim]`).
    pub per_head: bool,
}

/// Rotary position embedding of one layer kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rope {
    pub theta: f64,
    /// Rotated dimensions of each head (the rest pass through).
    pub dims: usize,
    /// Pairs are adjacent (`x[..., ::2]`, GPT-J) rather than split halves (GPT-NeoX).
    pub interleaved: bool,
    /// Llama 3 frequency scaling: (factor, low_freq_factor, high_freq_factor,
    /// original_max_position_embeddings).
    pub llama3: Option<(f64, f64, f64, f64)>,
    /// Linear position scaling factor (`rope_type: linear`).
    pub linear: Option<f64>,
    /// YaRN (`rope_type: yarn`).
    pub yarn: Option<Yarn>,
    /// Rotate by `-θ` (NanoChat's `rotate_half` is `(x2, -x1)`).
    pub inverse: bool,
    /// Gemma 4 "proportional" RoPE: only the first this-many frequencies (exponents over the
    /// whole head) rotate; the rest are zero (pass through).
    pub proportional: Option<usize>,
}

/// YaRN frequency interpolation (transformers' `_compute_yarn_parameters`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Yarn {
    pub factor: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub original_max_positions: f64,
    pub truncate: bool,
    /// cos and sin are multiplied by this.
    pub attention_factor: f64,
}

/// Experts stored as 3-D tensors `[experts, ...]` rather than one module per expert.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FusedExperts {
    /// `[gate; up]` projection and down projection names (relative to the layer).
    pub gate_up: String,
    pub down: String,
    /// Stored `[in, out]` per expert (a plain matmul) rather than `[out, in]`.
    pub transposed: bool,
    /// Gate and up columns alternate (GPT-OSS) rather than being two halves.
    pub interleaved: bool,
    /// Bias names (`[experts, out]`), when the experts have biases.
    pub biases: Option<(String, String)>,
}

/// Absolute positions, when the model has them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Absolute {
    /// A learned table, indexed by position + `offset` (OPT: 2).
    Learned { offset: usize },
    /// ALiBi: per-head linear biases on attention scores.
    Alibi,
    /// Fixed sinusoidal table (XGLM: `[sin | cos]` over `d/2` frequencies, row `padding_idx`
    /// zero, positions offset by 2).
    SinusoidalXglm { padding_idx: Option<usize> },
    /// Fixed sinusoidal table (CTRL: angle rates `1/10000^(2⌊i/2⌋/d)`, `[sin(even) | cos(odd)]`).
    SinusoidalCtrl,
}

/// Attention of one layer kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerSpec {
    /// Keys older than this many positions are masked (sliding-window layers).
    pub window: Option<usize>,
    /// Index into [`Spec::ropes`]; `None`: no rotary embedding in this layer (NoPE).
    pub rope: Option<usize>,
    /// The FFN of this layer is [`Spec::moe`] (else the dense MLP).
    pub moe: bool,
    /// Chunked attention (Llama 4): keys only from the query's own chunk of this many
    /// positions.
    pub chunk: Option<usize>,
    /// The token mixer is a Mamba selective-scan block ([`Spec::mamba`]) instead of attention.
    pub mamba: bool,
    /// The layer has no token mixer, only its FFN: `x + ffn(norm(x))` (Nemotron-H's MLP and
    /// MoE layers).
    pub ffn_only: bool,
    /// The token mixer is LFM2's gated short convolution.
    pub short_conv: bool,
    /// Attention and the Mamba-2 mixer run side by side on the same input and add up
    /// (Falcon-H1).
    pub attn_and_mamba: bool,
    /// The whole layer is an RWKV-4 block (time mixing and channel mixing with token shift).
    pub rwkv: bool,
    /// The token mixer is Griffin's recurrent block (RG-LRU; RecurrentGemma).
    pub rglru: bool,
    /// This layer's head size and KV heads when they differ from the model's (Gemma 4).
    pub head_dim: Option<usize>,
    pub kv_heads: Option<usize>,
}

/// LFM2's short convolution: `out(C · conv(B · x))` with `[B | C | x] = in(h)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ShortConv {
    pub kernel: usize,
    pub bias: bool,
}

/// A Mamba (S6) selective-scan mixer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mamba {
    /// Inner width (`intermediate_size`).
    pub inner: usize,
    /// SSM state size.
    pub state: usize,
    pub conv_kernel: usize,
    /// `time_step_rank`.
    pub dt_rank: usize,
    pub conv_bias: bool,
    /// Biases on `in_proj` / `out_proj`.
    pub proj_bias: bool,
    /// RMS norms on `dt`, `B` and `C` with this epsilon: weightless (Falcon-Mamba) or with
    /// `dt_layernorm` / `b_layernorm` / `c_layernorm` weights (Jamba).
    pub bcdt_norm: Option<(f64, bool)>,
}

/// A Mamba-2 (SSD) mixer: multi-head scalar-decay selective scan with a gated RMSNorm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mamba2 {
    pub heads: usize,
    pub head_dim: usize,
    pub groups: usize,
    pub state: usize,
    pub conv_kernel: usize,
    pub conv_bias: bool,
    pub proj_bias: bool,
    /// The gated RMSNorm's epsilon.
    pub eps: f64,
    /// `time_step_limit`: `dt` is clamped to this range.
    pub dt_min: f64,
    pub dt_max: f64,
    /// The output goes through the gated RMSNorm (`norm.weight`); else only `y · silu(z)`
    /// (Falcon-H1 without `mamba_rms_norm`).
    pub gated_norm: bool,
}

/// The dense MLP.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mlp {
    /// `down(act(gate(x)) * up(x))` rather than `down(act(up(x)))`.
    pub gated: bool,
    pub act: Act,
    pub intermediate: usize,
    pub bias: bool,
}

/// How the router turns logits into expert weights.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Routing {
    /// Softmax over all experts, then top-k (Mixtral, Qwen-MoE, OLMoE, ...).
    SoftmaxTopK,
    /// Top-k of the logits, then softmax over the chosen (GPT-OSS): equal to `SoftmaxTopK`
    /// with renormalisation.
    TopKSoftmax,
    /// DeepSeek-V3: sigmoid scores, `e_score_correction_bias` for the choice only, experts
    /// grouped into `groups`, the best `topk_groups` groups (by the sum of their top-2
    /// scores) kept.
    SigmoidGrouped { groups: usize, topk_groups: usize },
    /// DeepSeek-V2 `group_limited_greedy`: softmax scores, groups ranked by their best score.
    SoftmaxGroupedMax { groups: usize, topk_groups: usize },
    /// PhiMoE `sparsemixer` (evaluation path, top-2): each pick's weight is a softmax over the
    /// logits within a relative `2 * jitter_eps` of it.
    SparseMixer { jitter_eps: f64 },
    /// Llama 4: top-k of the logits, weighed by `sigmoid(logit)`.
    TopKSigmoid,
    /// Kolibri: choose by `logits + bias`, weigh by `sigmoid(logits)`.
    SigmoidLogitBias,
    /// ERNIE 4.5: softmax scores, choose by `scores + bias`, weigh by the scores (renormalised
    /// with the sum clamped at `1e-12`).
    SoftmaxBiased,
}

/// The mixture-of-experts FFN.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Moe {
    pub experts: usize,
    pub top_k: usize,
    pub intermediate: usize,
    pub routing: Routing,
    /// Renormalise the chosen weights to sum to 1.
    pub norm_topk: bool,
    /// Multiply the chosen weights (DeepSeek `routed_scaling_factor`).
    pub scale: f64,
    /// The router has a bias.
    pub router_bias: bool,
    /// Experts' projections have biases (GPT-OSS).
    pub expert_bias: bool,
    /// GPT-OSS clamped SwiGLU: `swiglu_limit`, with `alpha` 1.702 and `(up + 1)`.
    pub swiglu_limit: Option<f64>,
    /// A shared expert MLP of this width.
    pub shared: Option<usize>,
    /// The shared expert's output is gated by `sigmoid(shared_expert_gate(x))` (Qwen-MoE).
    pub shared_gate: bool,
    /// The activation of every expert.
    pub act: Act,
    /// The router has a choice bias (`e_score_correction_bias` or its renamings).
    pub e_bias: bool,
    /// Routed and shared outputs are averaged rather than added (Cohere 2 MoE).
    pub shared_average: bool,
    /// A norm over the MoE output, inside the block (AXK1's `post_mlp_layernorm`).
    pub out_norm: bool,
    /// The routing weight multiplies the expert's input rather than its output (Llama 4).
    pub weight_input: bool,
    /// Experts (and the shared expert) are `down(act(up(x)))` rather than gated.
    pub plain_experts: bool,
    /// Added to the sum when renormalising (LFM2-MoE: 1e-6); `None`: the routing's own rule.
    pub norm_eps: Option<f64>,
    /// The shared expert uses the clamped SwiGLU too (MiniMax-M3).
    pub shared_clamped: bool,
}

/// Position-dependent query scaling on NoPE layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum NopeScale {
    /// Beam: `(1 + (p + 1) / 2048)^0.1`.
    Beam,
    /// Llama 4 temperature tuning: `ln(1 + ⌊(p + 1) / floor_scale⌋) · attn_scale + 1`.
    Llama4 { floor_scale: f64, attn_scale: f64 },
}

/// A gate on the attention output, before `o_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttnGate {
    /// `attn * sigmoid(gate_proj(x))`, elementwise over `heads * head_dim` (AFMoE).
    Sigmoid,
    /// `attn * softplus(g_proj(x))`, one value per head (Laguna).
    SoftplusPerHead,
    /// `attn * sigmoid(gate_proj(x) + gate_bias[head])`, elementwise (Beam).
    SigmoidHeadBias,
}

/// The DeepSeek Sparse Attention indexer: each query attends only to the `topk` keys with the
/// highest index score `Σ_h w_h · relu(q_h · k / √dim)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Indexer {
    pub heads: usize,
    pub dim: usize,
    pub topk: usize,
    /// RoPE on the indexer's q/k pairs is interleaved (GLM-MoE-DSA) rather than half-split.
    pub interleaved: bool,
}

/// DeepSeek multi-head latent attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mla {
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope: usize,
    pub qk_rope: usize,
    pub v_head: usize,
    pub eps: f64,
    pub indexer: Option<Indexer>,
}

/// Everything the decoder computes for one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub max_positions: usize,
    pub layers: Vec<LayerSpec>,
    pub ropes: Vec<Rope>,
    pub absolute: Option<Absolute>,
    pub norm: NormKind,
    /// Attention and MLP read the same input and are added together (GPT-J, NeoX, Phi, ...).
    pub parallel: bool,
    /// Post-LayerNorm blocks: `x = norm_attn(x + attn(x)); x = norm_ffn(x + ffn(x))` (the
    /// `attn_in` / `ffn_in` norms applied after the residual add; OpenAI GPT).
    pub post_norm: bool,
    pub qk_norm: Option<QkNorm>,
    /// q/k norms apply after the rotary embedding (HunYuan).
    pub qk_norm_after_rope: bool,
    pub mla: Option<Mla>,
    /// Biases on q, k, v; on the output projection.
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Attention score scale (`head_dim^-0.5` unless the model says otherwise).
    pub attn_scale: f64,
    pub attn_softcap: Option<f64>,
    /// Llama-4-style attention temperature (Ministral 3): queries at position `p` are scaled
    /// by `1 + beta * ln(1 + floor(p / original))`: (beta, original).
    pub attn_temperature: Option<(f64, f64)>,
    /// Clamp q, k and v to ±this (OLMo, MPT `clip_qkv`).
    pub clip_qkv: Option<f64>,
    /// Learned per-head attention sinks (GPT-OSS).
    pub sinks: bool,
    /// MiMo-V2-Flash: sliding-window layers have `kv_heads × 2` KV heads and the sinks; full
    /// layers have neither.
    pub sliding_doubles_kv: bool,
    /// Values are multiplied by this after `v_proj` (MiMo `attention_value_scale`).
    pub v_scale: Option<f64>,
    /// A parameter-free RMSNorm over each value head (Gemma 4).
    pub v_norm: bool,
    /// Doge's dynamic mask: a per-key bias `exp(A · softplus(dt_proj(values)))` on the
    /// attention scores, and learned residual scales `input_residual` /
    /// `post_attention_residual`.
    pub doge: bool,
    /// Each layer's output is multiplied by its `layer_scalar` tensor (Gemma 4).
    pub layer_scalar: bool,
    /// Gemma 4 per-layer embeddings of this width (`hidden_size_per_layer_input`), over a
    /// vocabulary of `vocab_size_per_layer_input`.
    pub ple: Option<(usize, usize)>,
    /// Layer 0 has no pre-attention norm (ModernBERT-decoder).
    pub first_layer_no_attn_norm: bool,
    /// A prediction head before the LM head (ModernBERT-decoder: `lm_head.dense`, GELU,
    /// `lm_head.norm`; UltraBERT's two layers; ESM C's `lm_head.dense`, GELU,
    /// `lm_head.layer_norm`), under [`Names::lm_transform`].
    pub lm_transform: Option<HeadTransform>,
    /// ... and before the sequence classifier (ModernBERT-decoder's `head`; EuroBERT's
    /// `dense` + GELU; ESM C's `classifier.dense` + tanh), under [`Names::score_transform`].
    pub score_transform: Option<HeadTransform>,
    /// The final norm's own kind, when it differs from the blocks' (ESM C: no bias).
    pub final_norm_kind: Option<NormKind>,
    /// Attention sees every position (encoders built from decoder blocks: EuroBERT). Such a
    /// body has no KV cache use and does not generate.
    pub bidirectional: bool,
    /// How a sequence classifier reduces the sequence to one row of logits.
    pub seq_pool: SeqPool,
    /// A gate on the attention output.
    pub attn_gate: Option<AttnGate>,
    /// Differential attention (DiffLlama): `(softmax₁ − λ·softmax₂)·V` over head pairs, with
    /// the λ parameters `self_attn.lambda_{q,k}{1,2}` and a parameter-free RMSNorm.
    pub differential: bool,
    /// BitNet sub-norms: over the attention output before `o_proj`, and over the MLP's
    /// hidden activations before `down_proj`.
    pub sub_norms: bool,
    /// How layers without RoPE scale their queries, if at all.
    pub nope_query_scale: Option<NopeScale>,
    /// q/k norms only on the layers that have RoPE (Llama 4).
    pub qk_norm_rope_layers_only: bool,
    /// Residual adds are depth-scaled: `y / √n + x · √((n - 1) / n)` with `n = 2(i + 1)` for
    /// the attention and `n + 1` for the FFN of layer `i` (Beam).
    pub depth_scaled_residual: bool,
    pub mlp: Mlp,
    pub moe: Option<Moe>,
    /// The Mamba mixer of the layers that have one.
    pub mamba: Option<Mamba>,
    /// ... or a Mamba-2 mixer.
    pub mamba2: Option<Mamba2>,
    /// The short convolution of the layers that have one.
    pub short_conv: Option<ShortConv>,
    /// RecurrentGemma's recurrent block: (LRU width, heads, conv width).
    pub rglru: Option<(usize, usize, usize)>,
    /// Layers have an FFN after the mixer (false for pure Mamba).
    pub ffn: bool,
    /// Multiply the embeddings (Gemma √hidden, Granite `embedding_multiplier`).
    pub embed_scale: Option<f64>,
    /// LayerNorm after the embeddings (BLOOM).
    pub embed_norm: bool,
    /// Multiply each block's branch before the residual add (Granite).
    pub residual_scale: Option<f64>,
    /// The final norm exists.
    pub final_norm: bool,
    /// Multiply the logits (Cohere `logit_scale`; Granite `1 / logits_scaling`).
    pub logits_scale: Option<f64>,
    pub final_softcap: Option<f64>,
    /// The LM head is the embedding matrix.
    pub tie: bool,
    pub head_bias: bool,
}

/// A prediction head before the LM head or classifier (see [`Spec::lm_transform`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum HeadTransform {
    /// `act(dense(x))` (`dense` with a bias when `bias`), then the norm named `norm` (of the
    /// blocks' norm kind) when there is one.
    Dense {
        act: Act,
        bias: bool,
        norm: Option<&'static str>,
    },
    /// `act(linear2(act(linear1(x))))` through `width`, no biases (UltraBERT).
    TwoLayer { act: Act, width: usize },
}

/// How `*ForSequenceClassification` pools (see [`Spec::seq_pool`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeqPool {
    /// The last token that is not padding (causal LMs).
    Last,
    /// The first token (EuroBERT `classifier_pooling: bos`).
    First,
    /// The mean of every token's logits (EuroBERT `late`).
    MeanLogits,
}

/// How a fused q/k/v tensor is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FusedQkv {
    /// `[q; k; v]` rows of a `[out, in]` weight.
    Rows,
    /// GPT-2 `Conv1D`: `[in, out]`, columns `[q | k | v]`.
    Conv1d,
    /// GPT-NeoX / BLOOM / Persimmon: per head `[q_h; k_h; v_h]`.
    PerHead,
    /// Falcon: per KV group `[q_1..q_g; k; v]`.
    PerGroup,
    /// GPT-J / CodeGen `qkv_proj`: 4 (TPU) blocks of `[q; v; k]`.
    CodeGen,
}

/// Where the tensors are: names relative to the layer prefix unless noted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Names {
    /// Absolute names.
    pub embed: String,
    pub positions: String,
    pub embed_norm: String,
    pub final_norm: String,
    pub head: String,
    /// The prefix of layer `i`: `{}` is replaced by `i`.
    pub layer: String,
    pub q: String,
    pub k: String,
    pub v: String,
    /// A fused q/k/v projection, when the checkpoint has one.
    pub qkv: Option<(String, FusedQkv)>,
    pub o: String,
    pub q_norm: String,
    pub k_norm: String,
    /// Norm slots: before attention, after attention, before the FFN, after the FFN; a slot
    /// is applied when named.
    pub attn_in: Option<String>,
    pub attn_out: Option<String>,
    pub ffn_in: Option<String>,
    pub ffn_out: Option<String>,
    pub gate: String,
    pub up: String,
    pub down: String,
    /// A fused `[gate; up]` projection, when the checkpoint has one.
    pub gate_up: Option<String>,
    /// The dense MLP's weights are `Conv1D` (`[in, out]`, GPT-2).
    pub conv1d: bool,
    pub router: String,
    /// Prefix of expert `{}`, and its projections under it.
    pub expert: String,
    pub ex_gate: String,
    pub ex_up: String,
    pub ex_down: String,
    /// Experts as 3-D tensors, when the checkpoint stores them so.
    pub fused_experts: Option<FusedExperts>,
    pub shared: String,
    /// The shared expert as fused `[gate; up]` and down projections (GraniteMoE-shared).
    pub shared_fused: Option<(String, String)>,
    pub shared_gate: String,
    pub sinks: String,
    pub e_bias: String,
    pub attn_gate: String,
    pub attn_sub_norm: String,
    pub ffn_sub_norm: String,
    /// The Mamba mixer's prefix (relative to the layer).
    pub mixer: String,
    /// The MoE output norm (relative to the layer).
    pub moe_out_norm: String,
    /// The sequence classifier's head (`score`, CTRL's and ModernBERT's `classifier`).
    pub score: String,
    /// The prediction head the sequence classifier reads through, when it has one
    /// (ModernBERT-decoder: `head`, with `dense` and `norm`; EuroBERT: the top-level `dense`,
    /// written as the empty prefix).
    pub score_transform: Option<String>,
    /// Tensors (name fragments) the checkpoint holds for a part a causal LM never runs
    /// (TrOCR's cross-attention over image-encoder states): left unused, as transformers does.
    pub unused_by_design: Vec<String>,
    /// The prediction head the LM head reads through, when it has one (ModernBERT-decoder:
    /// `lm_head`, with `dense` and `norm`). An empty prefix means top-level names.
    pub lm_transform: Option<String>,
    /// A bias added after `o_proj` on the last layer only (GPT-NeoX Japanese `dense_bias`).
    pub last_o_bias: Option<String>,
    pub gate_bias: String,
    /// Fused `[E * F, H]` expert tensors (DBRX: `w1`, `v1`, `w2`, the last one `[in, out]`).
    pub dbrx_experts: Option<String>,
}

impl Names {
    /// The Llama layout: `model.layers.{i}.self_attn.q_proj`, `mlp.gate_proj`, ...
    pub(crate) fn llama() -> Self {
        Self {
            embed: "model.embed_tokens".into(),
            positions: "model.embed_positions".into(),
            embed_norm: "model.embed_layer_norm".into(),
            final_norm: "model.norm".into(),
            head: "lm_head".into(),
            layer: "model.layers.{}".into(),
            q: "self_attn.q_proj".into(),
            k: "self_attn.k_proj".into(),
            v: "self_attn.v_proj".into(),
            qkv: None,
            o: "self_attn.o_proj".into(),
            q_norm: "self_attn.q_norm".into(),
            k_norm: "self_attn.k_norm".into(),
            attn_in: Some("input_layernorm".into()),
            attn_out: None,
            ffn_in: Some("post_attention_layernorm".into()),
            ffn_out: None,
            gate: "mlp.gate_proj".into(),
            up: "mlp.up_proj".into(),
            down: "mlp.down_proj".into(),
            gate_up: None,
            conv1d: false,
            router: "mlp.gate".into(),
            expert: "mlp.experts.{}".into(),
            ex_gate: "gate_proj".into(),
            ex_up: "up_proj".into(),
            ex_down: "down_proj".into(),
            fused_experts: None,
            shared: "mlp.shared_expert".into(),
            shared_fused: None,
            shared_gate: "mlp.shared_expert_gate".into(),
            sinks: "self_attn.sinks".into(),
            e_bias: "mlp.gate.e_score_correction_bias".into(),
            attn_gate: "self_attn.gate_proj".into(),
            attn_sub_norm: "self_attn.attn_sub_norm".into(),
            ffn_sub_norm: "mlp.ffn_sub_norm".into(),
            moe_out_norm: "post_mlp_layernorm".into(),
            mixer: "mixer".into(),
            dbrx_experts: None,
            last_o_bias: None,
            score: "score".into(),
            score_transform: None,
            lm_transform: None,
            unused_by_design: Vec::new(),
            gate_bias: "self_attn.gate_bias".into(),
        }
    }

    /// The same layout with the body under `to` instead of `from` (`model.` →
    /// `transformer.`: some question-answering heads keep the body under another name).
    pub(crate) fn with_body_prefix(&self, from: &str, to: &str) -> Self {
        let re = |s: &String| match s.strip_prefix(from) {
            Some(rest) => format!("{to}{rest}"),
            None => s.clone(),
        };
        Self {
            embed: re(&self.embed),
            positions: re(&self.positions),
            embed_norm: re(&self.embed_norm),
            final_norm: re(&self.final_norm),
            layer: re(&self.layer),
            ..self.clone()
        }
    }

    /// The prefix of layer `i`.
    pub(crate) fn layer(&self, i: usize) -> String {
        self.layer.replace("{}", &i.to_string())
    }
}
