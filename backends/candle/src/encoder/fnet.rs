//! FNet (`fnet`): BERT's embeddings (word + position + token type 0, LayerNorm) projected by
//! `embeddings.projection`, then blocks whose token mixing is the real part of a 2-D discrete
//! Fourier transform over positions and features (`Re(F_n X F_d) = C_n X C_d − S_n X S_d`,
//! with `F = C − iS` the DFT matrices; transformers' `fftn(..., dim=(1, 2)).real`, or its
//! TPU-style DFT matmuls: the same numbers), each followed by a post-LN feed-forward. FNet has
//! no attention mask: padding would change every position, so each input runs alone (as
//! transformers' pipelines run it). Heads: BERT's ([`crate::encoder::bert_parts`]). Every
//! tensor is taken by name and shape.

use std::f64::consts::PI;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::encoder::bert_parts::{BertEmbeddings, BertHead, HeadDims};
use crate::encoder::bertlike::EncoderHead;
use crate::encoder::setup::{self, HeadModel, HeadSetup};
use crate::weights::{Weights, layer_norm as norm, linear};

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("FNet {context}: {e}"),
    }
}

#[derive(Debug)]
struct Layer {
    mix_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
}

/// The cosine and sine parts `(C, S)` `[n, n]` of the `n`-point DFT matrix `F = C − iS`.
fn dft(n: usize, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let mut c = Vec::with_capacity(n * n);
    let mut s = Vec::with_capacity(n * n);
    for j in 0..n {
        for k in 0..n {
            // (j·k) mod n keeps the angle small, hence exact in f64.
            let a = 2.0 * PI * ((j * k) % n) as f64 / n as f64;
            c.push(a.cos() as f32);
            s.push(a.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(c, (n, n), device)?,
        Tensor::from_vec(s, (n, n), device)?,
    ))
}

/// A loaded FNet with one head.
pub struct FNet {
    hidden: usize,
    vocab: usize,
    max_pos: usize,
    /// With `use_tpu_fourier_optimizations`, transformers takes exactly this many tokens.
    tpu_len: Option<usize>,
    act: Act,
    emb: BertEmbeddings,
    proj: Linear,
    /// The feature DFT `(C_d, S_d)`.
    dft_d: (Tensor, Tensor),
    layers: Vec<Layer>,
    head: BertHead,
    device: Device,
    setup: HeadSetup,
}

impl std::fmt::Debug for FNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FNet")
            .field("hidden", &self.hidden)
            .field("layers", &self.layers.len())
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl FNet {
    /// Load `dir` (model type `fnet`) with `head` on `device`.
    pub fn load(dir: &Path, device: &Device, head: EncoderHead) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let d = f.positive("hidden_size")?;
        let inter_n = f.positive("intermediate_size")?;
        let layers_n = f.positive("num_hidden_layers")?;
        let vocab = f.positive("vocab_size")?;
        let max_pos = f.positive("max_position_embeddings")?;
        let types = f.positive("type_vocab_size")?;
        let eps = f.f64("layer_norm_eps")?;
        let name = f.str_opt("hidden_act")?.unwrap_or("gelu_new");
        let act_kind = match Act::from_hf(name) {
            Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu | Act::Tanh)) => a,
            _ => {
                return Err(f.err(
                    "hidden_act",
                    format!("`{name}` is not implemented (gelu, gelu_new, relu, silu, tanh)"),
                ));
            }
        };
        let tpu_len = if f.bool_or("use_tpu_fourier_optimizations", false)? && max_pos <= 4096 {
            Some(f.positive("tpu_short_seq_length")?)
        } else {
            None
        };
        let mut w = Weights::read(dir, device)?;
        w.convert(DType::F32)?;
        let p = if w.has("fnet.embeddings.word_embeddings.weight") {
            "fnet."
        } else {
            ""
        };
        let e = format!("{p}embeddings");
        let emb = BertEmbeddings::load(&mut w, &e, (vocab, max_pos, types, d), eps)?;
        let proj = linear(&mut w, &format!("{e}.projection"), d, d, true)?;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let l = format!("{p}encoder.layer.{i}");
            layers.push(Layer {
                mix_ln: norm(&mut w, &format!("{l}.fourier.output.LayerNorm"), d, eps)?,
                inter: linear(&mut w, &format!("{l}.intermediate.dense"), inter_n, d, true)?,
                out: linear(&mut w, &format!("{l}.output.dense"), d, inter_n, true)?,
                out_ln: norm(&mut w, &format!("{l}.output.LayerNorm"), d, eps)?,
            });
        }
        let labels = setup::labels(&f, head)?;
        let dims = HeadDims {
            hidden: d,
            vocab,
            labels: labels.len(),
            eps,
            act: act_kind,
        };
        let head_kind = head;
        let head = BertHead::load(&mut w, p, head, dims, &emb.word)?;
        w.finish()?;
        let dft_d = dft(d, device).map_err(ce("DFT matrices"))?;
        let setup = HeadSetup::finish(dir, &f, head_kind, labels, max_pos)?;
        Ok(Self {
            hidden: d,
            vocab,
            max_pos,
            tpu_len,
            act: act_kind,
            emb,
            proj,
            dft_d,
            layers,
            head,
            device: device.clone(),
            setup,
        })
    }

    /// The last hidden state `[n, hidden]` of one unpadded input.
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Tensor, SkillError> {
        self.setup
            .check_ids(ids, self.vocab, self.max_pos, &"max_position_embeddings")?;
        if let Some(len) = self.tpu_len.filter(|&l| l != ids.len()) {
            return Err(SkillError::InvalidRequest {
                capability: self.setup.capability,
                detail: format!(
                    "with use_tpu_fourier_optimizations the model takes exactly \
                     tpu_short_seq_length = {len} tokens, not {}",
                    ids.len()
                ),
            });
        }
        let n = ids.len();
        let run = || -> candle_core::Result<Tensor> {
            let x = self.emb.forward(ids, &self.device)?;
            let mut x = self.proj.forward(&x)?;
            let (cn, sn) = dft(n, &self.device)?;
            let (cd, sd) = &self.dft_d;
            for l in &self.layers {
                let mixed = (cn.matmul(&x)?.matmul(cd)? - sn.matmul(&x)?.matmul(sd)?)?;
                let y = l.mix_ln.forward(&(&x + mixed)?)?;
                let ff = l.out.forward(&act(self.act, &l.inter.forward(&y)?)?)?;
                x = l.out_ln.forward(&(ff + y)?)?;
            }
            Ok(x)
        };
        run().map_err(ce("forward"))
    }

    /// The head's output for one unpadded input (see [`crate::encoder::bertlike`]).
    pub fn head_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError> {
        let hidden = self.hidden_states(ids)?;
        self.head.forward(hidden).map_err(ce("head"))
    }
}

impl HeadModel for FNet {
    fn setup(&self) -> &HeadSetup {
        &self.setup
    }

    fn width(&self) -> usize {
        self.hidden
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

    /// The DFT's real part of a known signal: a constant row `1` over `n` positions transforms to
    /// `n` at frequency 0 and 0 elsewhere.
    #[test]
    fn the_dft_of_a_constant_is_an_impulse() {
        let n = 5;
        let (c, s) = dft(n, &Device::Cpu).unwrap();
        let ones = Tensor::ones((n, 1), DType::F32, &Device::Cpu).unwrap();
        let re: Vec<f32> = c
            .matmul(&ones)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let im: Vec<f32> = s
            .matmul(&ones)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((re[0] - n as f32).abs() < 1e-5, "{re:?}");
        assert!(
            re[1..].iter().chain(&im).all(|x| x.abs() < 1e-5),
            "{re:?} {im:?}"
        );
    }
}
