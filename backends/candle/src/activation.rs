//! Activation functions by their transformers names (`ACT2FN`), shared by every architecture.

use candle_core::Tensor;

/// An activation function, by its transformers name (`ACT2FN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    /// `silu` / `swish`.
    Silu,
    /// `gelu`: exact, through `erf`.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `relu6`: ReLU capped at 6 (MobileNet).
    Relu6,
    /// `tanh` (BERT's pooler, RoBERTa's classifier head).
    Tanh,
    /// `quick_gelu` (CLIP): `x · σ(1.702 x)`.
    QuickGelu,
    /// `relu2`: squared ReLU.
    Relu2,
    /// `xielu` (Apertus): learnable per-layer parameters (`mlp.act_fn.{alpha_p, alpha_n, beta,
    /// eps}`), loaded with the MLP.
    XieLu,
}

impl Act {
    /// The activation transformers names `name`, if the decoder has it.
    pub(crate) fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "silu" | "swish" => Self::Silu,
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "relu" => Self::Relu,
            "relu6" => Self::Relu6,
            "relu2" => Self::Relu2,
            "tanh" => Self::Tanh,
            "quick_gelu" => Self::QuickGelu,
            "xielu" => Self::XieLu,
            _ => return None,
        })
    }
}

/// Apply `a` (parameter-free activations; xIELU needs its parameters and is computed by the
/// decoder's MLP).
pub(crate) fn act(a: Act, x: &Tensor) -> candle_core::Result<Tensor> {
    match a {
        Act::Silu => x.silu(),
        Act::Gelu => x.gelu_erf(),
        Act::GeluTanh => x.gelu(),
        Act::Relu => x.relu(),
        Act::Relu6 => x.clamp(0f32, 6f32),
        Act::Relu2 => x.relu()?.sqr(),
        Act::Tanh => x.tanh(),
        Act::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
        // Needs its parameters: computed by `Dense::forward`.
        Act::XieLu => candle_core::bail!("xielu without its parameters"),
    }
}
