//! A linear layer whose weight is dense (a float tensor, as safetensors checkpoints give it) or
//! quantized (GGUF blocks). Quantized CPU weights of the block types [`skillgen_kernels::quant`] has
//! kernels for (`Q4_1`, `Q8_0`) are multiplied by ours; any other block type (K-quants, ...) or
//! device by candle's `QMatMul`. The decoder builds every projection through it, so one
//! computation serves all.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{DType, Module, Result, Tensor};

use skillgen_kernels::Isa;
use skillgen_kernels::quant::{QMatMulOp, QMatrix};

/// `y = x Wᵀ + b` with a dense or quantized `W` `[out, in]`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum Weight {
    /// A float weight (no bias inside: the bias is added by [`Linear::forward`]).
    Dense(candle_nn::Linear),
    /// Quantized blocks with our kernels ([`skillgen_kernels::quant`]).
    Own(QMatMulOp),
    /// Quantized blocks and candle's matmul over them.
    Quant(Arc<QTensor>, QMatMul),
}

impl Linear {
    /// A dense layer.
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight: Weight::Dense(candle_nn::Linear::new(weight, None)),
            bias,
        }
    }

    /// A quantized layer over `q` `[out, in]`: our kernels when they cover it, else candle's.
    pub(crate) fn quantized(q: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        if let Some(m) = QMatrix::from_qtensor(&q) {
            return Ok(Self::own(m, bias));
        }
        let mm = QMatMul::from_arc(q.clone())?;
        Ok(Self {
            weight: Weight::Quant(q, mm),
            bias,
        })
    }

    fn own(m: QMatrix, bias: Option<Tensor>) -> Self {
        Self::from_matrix(m.shared(), bias)
    }

    /// A quantized layer over our matrix `m` `[out, in]` (shared, e.g. with the embeddings).
    pub(crate) fn from_matrix(m: Arc<QMatrix>, bias: Option<Tensor>) -> Self {
        Self {
            weight: Weight::Own(QMatMulOp {
                w: m,
                isa: Isa::detect(),
            }),
            bias,
        }
    }

    /// The same layer with `bias` added after the product.
    pub(crate) fn with_bias(mut self, bias: Option<Tensor>) -> Self {
        self.bias = bias;
        self
    }

    /// The weight as a float tensor `[out, in]` (dequantized when quantized).
    pub(crate) fn dense_weight(&self) -> Result<Tensor> {
        match &self.weight {
            Weight::Dense(l) => Ok(l.weight().clone()),
            Weight::Own(op) => Tensor::from_vec(
                op.w.dequantize(),
                (op.w.rows, op.w.cols),
                &candle_core::Device::Cpu,
            ),
            Weight::Quant(q, _) => q.dequantize(&q.device()),
        }
    }

    /// The bias, if any.
    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Whether the weight is quantized.
    #[cfg(test)]
    pub(crate) fn is_quantized(&self) -> bool {
        !matches!(self.weight, Weight::Dense(_))
    }

    /// The weight in candle's quantized form, if the layer is quantized there.
    fn candle_quant(&self) -> Option<&Arc<QTensor>> {
        match &self.weight {
            Weight::Quant(q, _) => Some(q),
            Weight::Dense(_) | Weight::Own(_) => None,
        }
    }

    /// The layers of `parts` stacked along their outputs (`[Σ out, in]`), biases likewise (all
    /// or none). Quantized layers of one block type stay quantized (their rows are whole
    /// blocks, so stacking is concatenating bytes); any other mix is stacked dense.
    pub(crate) fn cat_rows(parts: &[&Linear]) -> Result<Self> {
        let bias = if parts.iter().all(|p| p.bias.is_some()) {
            let b: Vec<&Tensor> = parts.iter().filter_map(|p| p.bias.as_ref()).collect();
            Some(Tensor::cat(&b, 0)?)
        } else {
            None
        };
        let own: Vec<&QMatrix> = parts
            .iter()
            .filter_map(|p| match &p.weight {
                Weight::Own(op) => Some(&*op.w),
                _ => None,
            })
            .collect();
        if own.len() == parts.len()
            && let Some(m) = QMatrix::cat_rows(&own)
        {
            return Ok(Self::own(m, bias));
        }
        let quants: Vec<&Arc<QTensor>> = parts.iter().filter_map(|p| p.candle_quant()).collect();
        if quants.len() == parts.len()
            && let Some(first) = quants.first()
        {
            let (dtype, cols) = (first.dtype(), first.shape().dims()[1]);
            if quants
                .iter()
                .all(|q| q.dtype() == dtype && q.shape().dims()[1] == cols)
            {
                let mut bytes = Vec::new();
                let mut rows = 0;
                for q in &quants {
                    bytes.extend_from_slice(&q.data()?);
                    rows += q.shape().dims()[0];
                }
                let device = first.device();
                let storage = QStorage::from_data(Cow::Owned(bytes), &device, dtype)?;
                let q = QTensor::new(storage, (rows, cols))?;
                return Self::quantized(Arc::new(q), bias);
            }
        }
        let w: Vec<Tensor> = parts
            .iter()
            .map(|p| p.dense_weight())
            .collect::<Result<_>>()?;
        Ok(Self::new(Tensor::cat(&w, 0)?, bias))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Dense(l) => l.forward(x)?,
            Weight::Own(op) if x.device().is_cpu() => {
                let dtype = x.dtype();
                let y = x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(op)?;
                if dtype == DType::F32 {
                    y
                } else {
                    y.to_dtype(dtype)?
                }
            }
            Weight::Own(op) => {
                candle_core::bail!(
                    "a quantized [{}, {}] CPU weight applied to a {:?} tensor",
                    op.w.rows,
                    op.w.cols,
                    x.device()
                )
            }
            Weight::Quant(_, mm) => mm.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, Device};

    fn ramp(rows: usize, cols: usize, k: f32) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| (i as f32 * 0.37 + k).sin())
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    /// Stacking quantized layers keeps them quantized and equals stacking their weights.
    #[test]
    fn stacked_quantized_layers_equal_the_stacked_dequantized_weights() {
        let q = |rows, k| {
            let t = QTensor::quantize(&ramp(rows, 64, k), GgmlDType::Q8_0).unwrap();
            Linear::quantized(Arc::new(t), None).unwrap()
        };
        let (a, b) = (q(3, 0.0), q(5, 1.0));
        let s = Linear::cat_rows(&[&a, &b]).unwrap();
        assert!(s.is_quantized());
        let want = Tensor::cat(&[a.dense_weight().unwrap(), b.dense_weight().unwrap()], 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = s
            .dense_weight()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, want);
    }

    /// A dense layer computes `x Wᵀ + b`.
    #[test]
    fn a_dense_layer_adds_its_bias() {
        let w = Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[10f32, 20.], &Device::Cpu).unwrap();
        let x = Tensor::new(&[[1f32, 1.]], &Device::Cpu).unwrap();
        let y = Linear::new(w, Some(b)).forward(&x).unwrap();
        assert_eq!(
            y.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(),
            [[13., 27.]]
        );
    }
}
