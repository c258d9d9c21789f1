//! The task heads' answers, written once for every architecture: `classify` (sequence
//! classification, cross-encoder reranking), `classify_tokens`, `answer_question` and
//! `fill_mask` turn a
//! model's head logits into what users get back (labels named by `id2label`, softmax or
//! sigmoid scores, token offsets, the best answer span). An architecture implements
//! [`TaskHeads`] by giving its logits; the post-processing here is shared, so a decoder and an
//! encoder answer the same request the same way.

use std::path::Path;

use candle_core::Tensor;
use skillgen_runtime::request::{
    Aggregation, Answer, Classifications, ClassifyRequest, ClassifyTokensRequest,
    EmbedImageRequest, Embeddings, FillMaskOutput, ImageEmbeddings, ImageInput, Label,
    MaskPrediction, Pooling, QuestionRequest, TextBatch, TokenClassifications, TokenLabel,
    simple_entities,
};
use skillgen_runtime::{Capability, SkillError};

/// Softmax of `v`.
pub(crate) fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// Labels ranked best first (`top_k`, 0 = all) from classifier `logits`: softmax, or sigmoid
/// for multi-label and single-logit heads (as transformers' text-classification pipeline).
pub(crate) fn ranked_labels(
    labels: &[String],
    logits: &[f32],
    sigmoid: bool,
    top_k: usize,
) -> Vec<Label> {
    let scores: Vec<f32> = if sigmoid {
        logits.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect()
    } else {
        softmax(logits)
    };
    let mut ranked: Vec<Label> = labels
        .iter()
        .zip(scores)
        .map(|(l, score)| Label {
            label: l.clone(),
            score,
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    if top_k > 0 {
        ranked.truncate(top_k);
    }
    ranked
}

/// Token ids and, for text, byte offsets (`None` for special tokens) of one input.
pub(crate) type Encoded = (Vec<u32>, Vec<Option<(usize, usize)>>);

/// A model with task heads: it gives logits, the defaults give the answers.
pub(crate) trait TaskHeads {
    /// The tokenizer, or [`SkillError::ModelFileMissing`] saying `why` it is needed.
    fn tokenizer_for(&self, why: &'static str) -> Result<&tokenizers::Tokenizer, SkillError>;
    /// `tokenizer.json` (for messages).
    fn tokenizer_file(&self) -> &Path;
    /// The classifier's labels (`id2label`, in id order).
    fn labels(&self) -> &[String];
    /// Whether classifier scores are sigmoids (multi-label or single-logit heads).
    fn sigmoid(&self) -> bool;
    /// The sequence classifier's logits for one unpadded input.
    fn sequence_logits(&self, ids: &[u32]) -> Result<Vec<f32>, SkillError>;
    /// The per-token head's logits (`[position][n]`) for one unpadded input (a masked-LM
    /// head: `n` is the vocabulary).
    fn token_logits(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>, SkillError>;

    /// Token ids (and byte offsets, for text) of each input; an input without tokens is an
    /// invalid request.
    fn encode_batch(
        &self,
        input: &TextBatch,
        capability: Capability,
    ) -> Result<Vec<Encoded>, SkillError> {
        let out: Vec<Encoded> = match input {
            TextBatch::TokenIds(ids) => ids
                .iter()
                .map(|i| (i.clone(), vec![None; i.len()]))
                .collect(),
            TextBatch::Texts(texts) => {
                let tok =
                    self.tokenizer_for("the tokenizer (tokenizer.json), needed for text inputs")?;
                texts
                    .iter()
                    .map(|t| {
                        tok.encode(t.as_str(), true)
                            .map(|e| {
                                let offsets = e
                                    .get_offsets()
                                    .iter()
                                    .zip(e.get_special_tokens_mask())
                                    .map(|(o, special)| (*special == 0).then_some(*o))
                                    .collect();
                                (e.get_ids().to_vec(), offsets)
                            })
                            .map_err(|e| SkillError::Tokenizer {
                                path: self.tokenizer_file().to_path_buf(),
                                detail: format!("encoding an input: {e}"),
                            })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        if out.iter().any(|(ids, _)| ids.is_empty()) {
            return Err(SkillError::InvalidRequest {
                capability,
                detail: "an input has no tokens".into(),
            });
        }
        Ok(out)
    }

    /// `classify`: each input's labels, best first.
    fn classify(&self, req: &ClassifyRequest) -> Result<Classifications, SkillError> {
        let mut labels = Vec::new();
        for (ids, _) in self.encode_batch(&req.input, Capability::Classify)? {
            let logits = self.sequence_logits(&ids)?;
            labels.push(ranked_labels(
                self.labels(),
                &logits,
                self.sigmoid(),
                req.top_k,
            ));
        }
        Ok(Classifications { labels })
    }

    /// `classify_tokens`: the best label of every token, with its softmax probability.
    fn classify_tokens(
        &self,
        req: &ClassifyTokensRequest,
    ) -> Result<TokenClassifications, SkillError> {
        let mut tokens = Vec::new();
        for (ids, offsets) in self.encode_batch(&req.input, Capability::ClassifyTokens)? {
            let logits = self.token_logits(&ids)?;
            let row: Vec<TokenLabel> =
                logits
                    .iter()
                    .zip(ids.iter().zip(offsets))
                    .map(|(l, (&id, off))| {
                        let p = softmax(l);
                        let (best, score) = p.iter().copied().enumerate().fold(
                            (0, f32::NEG_INFINITY),
                            |a, (i, x)| {
                                if x > a.1 { (i, x) } else { a }
                            },
                        );
                        TokenLabel {
                            token_id: id,
                            offsets: off,
                            label: self.labels().get(best).cloned().unwrap_or_default(),
                            score,
                        }
                    })
                    .collect();
            tokens.push(row);
        }
        let entities = match req.aggregation {
            Aggregation::None => None,
            Aggregation::Simple => {
                if matches!(req.input, TextBatch::TokenIds(_)) {
                    return Err(SkillError::InvalidRequest {
                        capability: Capability::ClassifyTokens,
                        detail: "entities need text inputs (token ids have no offsets)".into(),
                    });
                }
                let tok = self
                    .tokenizer_for("the tokenizer (tokenizer.json), needed to decode entities")?;
                let decode = |ids: &[u32]| {
                    tok.decode(ids, false).map_err(|e| SkillError::Tokenizer {
                        path: self.tokenizer_file().to_path_buf(),
                        detail: format!("decoding an entity: {e}"),
                    })
                };
                Some(
                    tokens
                        .iter()
                        .map(|row| simple_entities(row, &decode))
                        .collect::<Result<_, _>>()?,
                )
            }
        };
        Ok(TokenClassifications { tokens, entities })
    }

    /// `answer_question`: the context span maximising `start + end` logits (as transformers'
    /// question-answering pipeline; at most `max_answer_tokens` tokens), scored by
    /// `softmax(start)·softmax(end)` over the context tokens.
    fn answer_question(&self, req: &QuestionRequest) -> Result<Answer, SkillError> {
        let tok =
            self.tokenizer_for("the tokenizer (tokenizer.json), needed for question answering")?;
        let enc = tok
            .encode((req.question.as_str(), req.context.as_str()), true)
            .map_err(|e| SkillError::Tokenizer {
                path: self.tokenizer_file().to_path_buf(),
                detail: format!("encoding the question and context: {e}"),
            })?;
        let ids = enc.get_ids().to_vec();
        let context: Vec<usize> = enc
            .get_sequence_ids()
            .iter()
            .enumerate()
            .filter(|(i, s)| **s == Some(1) && enc.get_special_tokens_mask()[*i] == 0)
            .map(|(i, _)| i)
            .collect();
        if context.is_empty() {
            return Err(SkillError::InvalidRequest {
                capability: Capability::AnswerQuestion,
                detail: "the context has no tokens".into(),
            });
        }
        let logits = self.token_logits(&ids)?;
        let start: Vec<f32> = context.iter().map(|&i| logits[i][0]).collect();
        let end: Vec<f32> = context.iter().map(|&i| logits[i][1]).collect();
        let (ps, pe) = (softmax(&start), softmax(&end));
        let mut best = (0, 0, f32::NEG_INFINITY);
        for (a, sa) in start.iter().enumerate() {
            for (b, eb) in end.iter().enumerate().skip(a).take(req.max_answer_tokens) {
                if sa + eb > best.2 {
                    best = (a, b, sa + eb);
                }
            }
        }
        let (a, b, _) = best;
        let offsets = enc.get_offsets();
        let (s0, e0) = (offsets[context[a]].0, offsets[context[b]].1);
        let answer = req.context.get(s0..e0).unwrap_or_default().to_owned();
        Ok(Answer {
            answer,
            start: s0,
            end: e0,
            score: ps[a] * pe[b],
        })
    }
}

/// The `top_k` most likely tokens of `logits` (softmax probabilities), best first, ties by id.
pub(crate) fn top_tokens(
    tok: &tokenizers::Tokenizer,
    logits: &[f32],
    top_k: usize,
) -> Vec<MaskPrediction> {
    let dist = softmax(logits);
    let mut order: Vec<usize> = (0..dist.len()).collect();
    order.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(top_k)
        .map(|id| MaskPrediction {
            token: tok.id_to_token(id as u32).unwrap_or_default(),
            token_id: id as u32,
            score: dist[id],
        })
        .collect()
}

/// `fill_mask` for a model whose [`TaskHeads::token_logits`] are masked-LM logits: the `top_k`
/// candidates at every mask token (`[MASK]` or `<mask>` in the tokenizer).
pub(crate) fn fill_mask<M: TaskHeads + ?Sized>(
    model: &M,
    input: &TextBatch,
    top_k: usize,
) -> Result<FillMaskOutput, SkillError> {
    let invalid = |detail: String| SkillError::InvalidRequest {
        capability: Capability::FillMask,
        detail,
    };
    if top_k == 0 {
        return Err(invalid("top_k must be at least 1".to_owned()));
    }
    let tok = model.tokenizer_for("the tokenizer (tokenizer.json), needed for the mask token")?;
    let mask_id = ["[MASK]", "<mask>"]
        .iter()
        .find_map(|t| tok.token_to_id(t))
        .ok_or_else(|| SkillError::Tokenizer {
            path: model.tokenizer_file().to_path_buf(),
            detail: "has no mask token (`[MASK]` or `<mask>`)".to_owned(),
        })?;
    let inputs = model.encode_batch(input, Capability::FillMask)?;
    if let Some(i) = inputs.iter().position(|(ids, _)| !ids.contains(&mask_id)) {
        return Err(invalid(format!(
            "input {i} has no mask token (id {mask_id})"
        )));
    }
    let mut predictions = Vec::with_capacity(inputs.len());
    for (ids, _) in &inputs {
        let logits = model.token_logits(ids)?;
        predictions.push(
            ids.iter()
                .zip(&logits)
                .filter(|(id, _)| **id == mask_id)
                .map(|(_, l)| top_tokens(tok, l, top_k))
                .collect(),
        );
    }
    Ok(FillMaskOutput { predictions })
}

/// `v / max(‖v‖, 1e-12)` (torch's `F.normalize`).
pub(crate) fn l2_normalized(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / n).collect()
}

/// `embed` for an encoder with task heads: tokenise (text input), run each input
/// (`hidden`: its last hidden state `[n, dim]`, or with [`Pooling::Pooler`] the model's pooled
/// output as one row `[1, dim]`), pool, optionally L2-normalise.
pub(crate) fn embed<M: TaskHeads + ?Sized>(
    model: &M,
    input: &TextBatch,
    how: (Pooling, bool, usize),
    hidden: impl Fn(&[u32]) -> Result<Tensor, SkillError>,
) -> Result<Embeddings, SkillError> {
    embed_batched(model, input, how, 1, |rows| {
        rows.iter().map(|ids| hidden(ids)).collect()
    })
}

/// [`embed`] in batches, as sentence-transformers' `encode(batch_size)`: the inputs sorted by
/// length (longest first; ties keep their order), `batch_size` at a time through `hidden`
/// (each input's rows, as [`embed`]'s `hidden` gives them), the vectors put back in input
/// order. Only one chunk's hidden states are alive at a time.
pub(crate) fn embed_batched<M: TaskHeads + ?Sized>(
    model: &M,
    input: &TextBatch,
    (pooling, normalized, dim): (Pooling, bool, usize),
    batch_size: usize,
    hidden: impl Fn(&[&[u32]]) -> Result<Vec<Tensor>, SkillError>,
) -> Result<Embeddings, SkillError> {
    let ids: Vec<Vec<u32>> = model
        .encode_batch(input, Capability::Embed)?
        .into_iter()
        .map(|(ids, _)| ids)
        .collect();
    let mut vectors = vec![Vec::new(); ids.len()];
    for chunk in length_sorted_chunks(&ids, batch_size) {
        let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        for (&i, h) in chunk.iter().zip(hidden(&rows)?) {
            let pooled = match pooling {
                // `hidden` gives the model's pooled output as its one row.
                Pooling::Cls | Pooling::Pooler => h.get(0),
                Pooling::Mean => h.mean(0),
            }
            .and_then(|v| v.to_vec1::<f32>())
            .map_err(crate::e("pooling"))?;
            vectors[i] = if normalized {
                l2_normalized(pooled)
            } else {
                pooled
            };
        }
    }
    Ok(Embeddings {
        dim,
        vectors,
        pooling,
        normalized,
        token_ids: ids,
    })
}

/// The indices of `ids` sorted by length, longest first (a stable sort: equal lengths keep
/// their order), in chunks of `size` (at least 1).
pub(crate) fn length_sorted_chunks(ids: &[Vec<u32>], size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
    order.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
}

/// `embed_image`: `pooled` (the model's pooled output `[images, dim]` of the request's images),
/// optionally L2-normalised; `pooling` says what the vector is.
pub(crate) fn embed_images(
    req: &EmbedImageRequest,
    pooling: &str,
    pooled: impl FnOnce(&[ImageInput]) -> Result<Tensor, SkillError>,
) -> Result<ImageEmbeddings, SkillError> {
    if req.images.is_empty() {
        return Err(SkillError::InvalidRequest {
            capability: Capability::EmbedImage,
            detail: "no images".into(),
        });
    }
    let rows: Vec<Vec<f32>> = pooled(&req.images)?
        .to_vec2()
        .map_err(crate::e("reading embeddings"))?;
    let dim = rows.first().map_or(0, Vec::len);
    Ok(ImageEmbeddings {
        vectors: if req.normalize {
            rows.into_iter().map(l2_normalized).collect()
        } else {
            rows
        },
        dim,
        pooling: pooling.to_owned(),
        normalized: req.normalize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_length_sorted_stable_and_cover_every_input() {
        let ids = vec![vec![1], vec![1, 2, 3], vec![1, 2], vec![4, 5, 6], vec![]];
        assert_eq!(
            length_sorted_chunks(&ids, 2),
            vec![vec![1, 3], vec![2, 0], vec![4]]
        );
        assert_eq!(length_sorted_chunks(&ids, 0).len(), 5);
        assert!(length_sorted_chunks(&[], 32).is_empty());
    }

    #[test]
    fn ranked_labels_softmax_sorted_and_truncated() {
        let labels = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let r = ranked_labels(&labels, &[0.0, 2.0, 1.0], false, 2);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].label, "b");
        assert_eq!(r[1].label, "c");
        let sum: f32 = softmax(&[0.0, 2.0, 1.0]).iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert!((r[0].score - 0.665_240_9).abs() < 1e-5);
    }

    #[test]
    fn ranked_labels_sigmoid_is_independent_per_label() {
        let labels = ["x".to_owned(), "y".to_owned()];
        let r = ranked_labels(&labels, &[0.0, 0.0], true, 0);
        assert!(r.iter().all(|l| (l.score - 0.5).abs() < 1e-6));
    }
}
