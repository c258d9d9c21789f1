//! The convolution + eval-mode batch norm every CNN family here is built from
//! (`<prefix>.convolution` and `<prefix>.normalization`, the transformers layout), with
//! PyTorch's symmetric padding or TensorFlow's "SAME" padding.

use candle_core::Tensor;
use skillgen_runtime::SkillError;

use super::model::ce;
use crate::weights::Weights;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pad {
    /// `k / 2` on every side (PyTorch `padding=k // 2`).
    Symmetric,
    /// TensorFlow "SAME": pad so that the output is `⌈in / stride⌉`, the odd pixel at the
    /// bottom/right (transformers' `apply_tf_padding`).
    TfSame,
    /// Fixed zeros (left, right, top, bottom), then a "valid" convolution (`nn.ZeroPad2d`).
    Explicit([usize; 4]),
}

/// A convolution (no bias) followed by eval-mode batch norm folded into a per-channel
/// scale and shift.
#[derive(Debug)]
pub(crate) struct ConvBn {
    w: Tensor,
    k: usize,
    stride: usize,
    pad: Pad,
    groups: usize,
    /// Per channel: `scale = γ/√(var + ε)`, `shift = β − mean·scale`.
    scale: Tensor,
    shift: Tensor,
}

impl ConvBn {
    /// ResNet's `ResNetConvLayer` / shortcut: symmetric padding, ε = 1e-5.
    pub(crate) fn load(
        w: &mut Weights,
        p: &str,
        (out, inp, k): (usize, usize, usize),
        stride: usize,
    ) -> Result<Self, SkillError> {
        Self::load_grouped(w, p, (out, inp, k), stride, 1)
    }

    pub(crate) fn load_grouped(
        w: &mut Weights,
        p: &str,
        dims: (usize, usize, usize),
        stride: usize,
        groups: usize,
    ) -> Result<Self, SkillError> {
        Self::load_with(w, p, dims, (stride, groups), Pad::Symmetric, 1e-5)
    }

    /// Any padding and batch-norm ε; `(stride, groups)`.
    pub(crate) fn load_with(
        w: &mut Weights,
        p: &str,
        dims: (usize, usize, usize),
        sg: (usize, usize),
        pad: Pad,
        eps: f64,
    ) -> Result<Self, SkillError> {
        Self::load_named(
            w,
            (&format!("{p}.convolution"), &format!("{p}.normalization")),
            dims,
            sg,
            pad,
            eps,
        )
    }

    /// A convolution and batch norm under their own names (`conv`, `norm`).
    pub(crate) fn load_named(
        w: &mut Weights,
        (conv, n): (&str, &str),
        (out, inp, k): (usize, usize, usize),
        (stride, groups): (usize, usize),
        pad: Pad,
        eps: f64,
    ) -> Result<Self, SkillError> {
        let weight = w.take(&format!("{conv}.weight"), &[out, inp / groups, k, k])?;
        let (scale, shift) = batch_norm(w, n, out, eps)?;
        Ok(Self {
            w: weight,
            k,
            stride,
            pad,
            groups,
            scale,
            shift,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = match self.pad {
            Pad::Symmetric => x.conv2d(&self.w, self.k / 2, self.stride, 1, self.groups)?,
            Pad::TfSame => {
                let (_, _, h, w) = x.dims4()?;
                let (top, bottom) = tf_same(h, self.k, self.stride);
                let (left, right) = tf_same(w, self.k, self.stride);
                x.pad_with_zeros(2, top, bottom)?
                    .pad_with_zeros(3, left, right)?
                    .conv2d(&self.w, 0, self.stride, 1, self.groups)?
            }
            Pad::Explicit([left, right, top, bottom]) => x
                .pad_with_zeros(2, top, bottom)?
                .pad_with_zeros(3, left, right)?
                .conv2d(&self.w, 0, self.stride, 1, self.groups)?,
        };
        y.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)
    }
}

/// Eval-mode batch norm `name` over `c` channels, folded: (`γ/√(var + ε)`, `β − mean·scale`),
/// each `[1, c, 1, 1]`.
pub(crate) fn batch_norm(
    w: &mut Weights,
    n: &str,
    c: usize,
    eps: f64,
) -> Result<(Tensor, Tensor), SkillError> {
    let gamma = w.take(&format!("{n}.weight"), &[c])?;
    let beta = w.take(&format!("{n}.bias"), &[c])?;
    let mean = w.take(&format!("{n}.running_mean"), &[c])?;
    let var = w.take(&format!("{n}.running_var"), &[c])?;
    let run = || -> candle_core::Result<(Tensor, Tensor)> {
        let scale = gamma.div(&(var + eps)?.sqrt()?)?;
        let shift = (beta - mean.mul(&scale)?)?;
        Ok((scale.reshape((1, c, 1, 1))?, shift.reshape((1, c, 1, 1))?))
    };
    run().map_err(ce("batch norm"))
}

/// TensorFlow "SAME" padding of one dimension of `size`: (before, after).
pub(crate) fn tf_same(size: usize, k: usize, stride: usize) -> (usize, usize) {
    let total = if size.is_multiple_of(stride) {
        k.saturating_sub(stride)
    } else {
        k.saturating_sub(size % stride)
    };
    (total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_matches_tensorflow() {
        // 3×3 stride 2 on even input: 1 pixel, at the end.
        assert_eq!(tf_same(32, 3, 2), (0, 1));
        // ... on odd input: 2 pixels, one each side.
        assert_eq!(tf_same(33, 3, 2), (1, 1));
        // Stride 1 keeps the size: k − 1 split, the odd one after.
        assert_eq!(tf_same(7, 3, 1), (1, 1));
        assert_eq!(tf_same(7, 4, 1), (1, 2));
        // 1×1 convolutions never pad.
        assert_eq!(tf_same(8, 1, 2), (0, 0));
    }
}
