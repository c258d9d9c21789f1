//! SqueezeBERT (`squeezebert`): BERT's embeddings and post-LN blocks with every projection a
//! grouped 1×1 convolution (`q_groups`, `k_groups`, `v_groups`, `post_attention_groups`,
//! `intermediate_groups`, `output_groups`). A grouped 1×1 convolution over `[channels, positions]`
//! is a linear map whose matrix is block-diagonal: output channel `o` of group `g` reads the input
//! channels of group `g` only. The blocks are laid out as that full matrix at load, so the body is
//! BERT's computation on `[positions, channels]`. Heads: BERT's
//! ([`crate::encoder::bert_parts`]). Every tensor is taken by name and shape.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear};

use skillgen_checkpoint::{Fields, config_json};
use skillgen_runtime::SkillError;

use crate::activation::{Act, act};
use crate::encoder::bert_parts::{BertEmbeddings, BertHead, HeadDims};
use crate::encoder::bertlike::EncoderHead;
use crate::encoder::setup::{self, HeadModel, HeadSetup};
use crate::weights::{Weights, layer_norm as norm};

fn ce(context: &'static str) -> impl Fn(candle_core::Error) -> SkillError {
    move |e| SkillError::Backend {
        backend: skillgen_runtime::BackendKind::Candle,
        detail: format!("SqueezeBERT {context}: {e}"),
    }
}

/// The block-diagonal `[cout, cin]` matrix of a grouped 1×1 convolution's weight
/// `[cout, cin / groups, 1]` (row-major values `w`).
fn block_diagonal(w: &[f32], cout: usize, cin: usize, groups: usize) -> Vec<f32> {
    let (per_in, per_out) = (cin / groups, cout / groups);
    let mut full = vec![0f32; cout * cin];
    for o in 0..cout {
        let g = o / per_out;
        let row = &w[o * per_in..(o + 1) * per_in];
        full[o * cin + g * per_in..o * cin + (g + 1) * per_in].copy_from_slice(row);
    }
    full
}

/// `name.conv1d`-style grouped 1×1 convolution `name` (`.weight` `[cout, cin/groups, 1]`,
/// `.bias` `[cout]`) as a linear layer; `field` names the config field of `groups`.
fn grouped(
    w: &mut Weights,
    f: &Fields<'_>,
    name: &str,
    (cout, cin): (usize, usize),
    field: &str,
) -> Result<Linear, SkillError> {
    let groups = f.positive(field)?;
    if !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
        return Err(f.err(
            field,
            format!("{groups} groups do not divide {cin} input and {cout} output channels"),
        ));
    }
    let weight = w.take(&format!("{name}.weight"), &[cout, cin / groups, 1])?;
    let bias = w.take(&format!("{name}.bias"), &[cout])?;
    let full = (|| {
        let v: Vec<f32> = weight.flatten_all()?.to_vec1()?;
        Tensor::from_vec(
            block_diagonal(&v, cout, cin, groups),
            (cout, cin),
            weight.device(),
        )
    })()
    .map_err(ce("grouped convolution"))?;
    Ok(Linear::new(full, Some(bias)))
}

#[derive(Debug)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    post: Linear,
    post_ln: LayerNorm,
    inter: Linear,
    out: Linear,
    out_ln: LayerNorm,
}

/// A loaded SqueezeBERT with one head.
pub struct SqueezeBert {
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_pos: usize,
    act: Act,
    emb: BertEmbeddings,
    layers: Vec<Layer>,
    head: BertHead,
    device: Device,
    setup: HeadSetup,
}

impl std::fmt::Debug for SqueezeBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqueezeBert")
            .field("hidden", &self.hidden)
            .field("layers", &self.layers.len())
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl SqueezeBert {
    /// Load `dir` (model type `squeezebert`) with `head` on `device`.
    pub fn load(dir: &Path, device: &Device, head: EncoderHead) -> Result<Self, SkillError> {
        let (config_path, map) = config_json(dir)?;
        let f = Fields {
            path: &config_path,
            map: &map,
        };
        let d = f.positive("hidden_size")?;
        let heads = f.positive("num_attention_heads")?;
        if !d.is_multiple_of(heads) {
            return Err(f.err(
                "num_attention_heads",
                format!("{heads} heads do not divide hidden_size {d}"),
            ));
        }
        if f.positive_opt("embedding_size")?.unwrap_or(d) != d {
            return Err(f.err(
                "embedding_size",
                "must equal hidden_size (transformers asserts it too)",
            ));
        }
        let inter_n = f.positive("intermediate_size")?;
        let layers_n = f.positive("num_hidden_layers")?;
        let vocab = f.positive("vocab_size")?;
        let max_pos = f.positive("max_position_embeddings")?;
        let types = f.positive("type_vocab_size")?;
        let eps = f.f64("layer_norm_eps")?;
        let name = f.str_opt("hidden_act")?.unwrap_or("gelu");
        let act_kind = match Act::from_hf(name) {
            Some(a @ (Act::Gelu | Act::GeluTanh | Act::Relu | Act::Silu | Act::Tanh)) => a,
            _ => {
                return Err(f.err(
                    "hidden_act",
                    format!("`{name}` is not implemented (gelu, gelu_new, relu, silu, tanh)"),
                ));
            }
        };
        let mut w = Weights::read(dir, device)?;
        w.convert(DType::F32)?;
        let p = if w.has("transformer.embeddings.word_embeddings.weight") {
            "transformer."
        } else {
            ""
        };
        let e = format!("{p}embeddings");
        let emb = BertEmbeddings::load(&mut w, &e, (vocab, max_pos, types, d), eps)?;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let l = format!("{p}encoder.layers.{i}");
            let a = format!("{l}.attention");
            layers.push(Layer {
                q: grouped(&mut w, &f, &format!("{a}.query"), (d, d), "q_groups")?,
                k: grouped(&mut w, &f, &format!("{a}.key"), (d, d), "k_groups")?,
                v: grouped(&mut w, &f, &format!("{a}.value"), (d, d), "v_groups")?,
                post: grouped(
                    &mut w,
                    &f,
                    &format!("{l}.post_attention.conv1d"),
                    (d, d),
                    "post_attention_groups",
                )?,
                post_ln: norm(&mut w, &format!("{l}.post_attention.layernorm"), d, eps)?,
                inter: grouped(
                    &mut w,
                    &f,
                    &format!("{l}.intermediate.conv1d"),
                    (inter_n, d),
                    "intermediate_groups",
                )?,
                out: grouped(
                    &mut w,
                    &f,
                    &format!("{l}.output.conv1d"),
                    (d, inter_n),
                    "output_groups",
                )?,
                out_ln: norm(&mut w, &format!("{l}.output.layernorm"), d, eps)?,
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
        let setup = HeadSetup::finish(dir, &f, head_kind, labels, max_pos)?;
        Ok(Self {
            hidden: d,
            heads,
            vocab,
            max_pos,
            act: act_kind,
            emb,
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
        let (n, d, h) = (ids.len(), self.hidden, self.heads);
        let hd = d / h;
        let run = || -> candle_core::Result<Tensor> {
            let mut x = self.emb.forward(ids, &self.device)?;
            let split = |t: Tensor| t.reshape((n, h, hd))?.transpose(0, 1)?.contiguous();
            for l in &self.layers {
                let q = split(l.q.forward(&x)?)?;
                let k = split(l.k.forward(&x)?)?;
                let v = split(l.v.forward(&x)?)?;
                let s = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
                let p = candle_nn::ops::softmax_last_dim(&s)?;
                let ctx = p.matmul(&v)?.transpose(0, 1)?.reshape((n, d))?;
                let y = l.post_ln.forward(&(l.post.forward(&ctx)? + &x)?)?;
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

impl HeadModel for SqueezeBert {
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

    /// Two groups of a 4→4 convolution: each output reads its own group's two inputs.
    #[test]
    fn a_grouped_convolution_is_block_diagonal() {
        let w = [1., 2., 3., 4., 5., 6., 7., 8.];
        let full = block_diagonal(&w, 4, 4, 2);
        #[rustfmt::skip]
        let want = [
            1., 2., 0., 0.,
            3., 4., 0., 0.,
            0., 0., 5., 6.,
            0., 0., 7., 8.,
        ];
        assert_eq!(full, want);
    }
}
