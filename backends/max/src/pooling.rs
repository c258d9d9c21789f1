//! Undo MAX 26.7's BERT embedding quirk: `/v1/embeddings` returns the sum of the token vectors.

use serde::Serialize;

use crate::MaxError;
use skillgen_runtime::request::Pooling;

/// A model's sentence-transformers head: how token vectors become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SentenceHead {
    /// The pooling.
    pub pooling: Pooling,
    /// Whether a `Normalize` module follows.
    pub normalize: bool,
}

/// What was done to the vectors MAX returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// The vectors were token sums (norm far from 1 although the head normalises); they were
    /// L2-normalised, which equals mean pooling followed by normalisation.
    L2NormalizedTokenSums,
}

impl std::fmt::Display for Correction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Correction::L2NormalizedTokenSums => {
                "MAX returned token-summed vectors; L2-normalised them (= mean pooling + normalize)"
            }
        })
    }
}

/// Embeddings from MAX, corrected to the model's head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaxEmbeddings {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// The vector dimension.
    pub dim: usize,
    /// The head the vectors now follow.
    pub head: SentenceHead,
    /// The correction applied, or `None` when MAX's vectors already matched the head.
    pub correction: Option<Correction>,
    /// The served model id.
    pub model: String,
}

/// How far from 1 a norm may be and still count as normalised.
const UNIT_TOLERANCE: f64 = 1e-3;

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Whether `raw` looks like MAX's token sums rather than unit vectors: some vector's norm is
/// not 1 (within 1e-3). An empty batch is not.
pub fn looks_token_summed(raw: &[Vec<f32>]) -> bool {
    raw.iter().any(|v| (norm(v) - 1.0).abs() > UNIT_TOLERANCE)
}

/// Turn MAX's token-summed BERT vectors into the model's embeddings.
///
/// `raw[i]` is `Σ_t h_t` over the tokens of input `i`. With `Mean` pooling and `normalize`,
/// the answer is `raw[i] / ‖raw[i]‖` (the token count cancels; a zero vector stays zero, like
/// `torch.nn.functional.normalize`). Every other head needs what MAX does not return (the token
/// count for an un-normalised mean, the first token's vector for CLS) and is a
/// [`MaxError::PoolingUnrecoverable`]. Non-finite values are a [`MaxError::BadResponse`].
pub fn correct_bert_embeddings(
    raw: &[Vec<f32>],
    pooling: Pooling,
    normalize: bool,
) -> Result<Vec<Vec<f32>>, MaxError> {
    match (pooling, normalize) {
        (Pooling::Mean, true) => {}
        (Pooling::Mean, false) => {
            return Err(MaxError::PoolingUnrecoverable {
                pooling,
                normalize,
                detail: "an un-normalised mean needs each input's token count, and MAX reports \
                         usage as 0 tokens"
                    .to_owned(),
            });
        }
        (Pooling::Cls, _) => {
            return Err(MaxError::PoolingUnrecoverable {
                pooling,
                normalize,
                detail: "the [CLS] token's vector is lost in the sum over all tokens".to_owned(),
            });
        }
        (Pooling::Pooler, _) => {
            return Err(MaxError::PoolingUnrecoverable {
                pooling,
                normalize,
                detail: "the model's own pooled output is lost in the sum over all tokens"
                    .to_owned(),
            });
        }
    }
    raw.iter()
        .enumerate()
        .map(|(i, v)| {
            if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                return Err(MaxError::BadResponse {
                    url: String::new(),
                    detail: format!("embedding {i} has a non-finite value at {j}: {}", v[j]),
                });
            }
            let n = norm(v).max(1e-12);
            Ok(v.iter().map(|&x| (f64::from(x) / n) as f32).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three token vectors of dimension 4 for two inputs (3 and 2 tokens).
    fn tokens() -> Vec<Vec<Vec<f32>>> {
        vec![
            vec![
                vec![0.5, -1.0, 2.0, 0.25],
                vec![1.5, 0.0, -0.5, 1.0],
                vec![-0.25, 2.0, 1.0, 0.5],
            ],
            vec![vec![3.0, 1.0, 0.0, -2.0], vec![1.0, -1.0, 2.0, 0.0]],
        ]
    }

    fn sum(toks: &[Vec<f32>]) -> Vec<f32> {
        let mut s = vec![0.0f32; toks[0].len()];
        for t in toks {
            for (a, b) in s.iter_mut().zip(t) {
                *a += b;
            }
        }
        s
    }

    fn mean_normalized(toks: &[Vec<f32>]) -> Vec<f32> {
        let n = toks.len() as f32;
        let mean: Vec<f32> = sum(toks).iter().map(|x| x / n).collect();
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        mean.iter().map(|x| x / norm).collect()
    }

    #[test]
    fn normalising_sums_equals_normalised_mean() {
        let toks = tokens();
        let raw: Vec<Vec<f32>> = toks.iter().map(|t| sum(t)).collect();
        assert!(looks_token_summed(&raw));
        let got = correct_bert_embeddings(&raw, Pooling::Mean, true).unwrap();
        for (g, t) in got.iter().zip(&toks) {
            let want = mean_normalized(t);
            for (a, b) in g.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "{g:?} vs {want:?}");
            }
            assert!((norm(g) - 1.0).abs() < 1e-6);
        }
        assert!(!looks_token_summed(&got), "corrected vectors are unit");
    }

    #[test]
    fn zero_vector_stays_zero_and_empty_batch_is_fine() {
        let got = correct_bert_embeddings(&[vec![0.0; 3]], Pooling::Mean, true).unwrap();
        assert_eq!(got, vec![vec![0.0; 3]]);
        assert!(
            correct_bert_embeddings(&[], Pooling::Mean, true)
                .unwrap()
                .is_empty()
        );
        assert!(!looks_token_summed(&[]));
    }

    #[test]
    fn cls_and_unnormalised_mean_are_unrecoverable() {
        let raw: Vec<Vec<f32>> = tokens().iter().map(|t| sum(t)).collect();
        for (p, n) in [(Pooling::Cls, true), (Pooling::Cls, false)] {
            let e = correct_bert_embeddings(&raw, p, n).unwrap_err();
            assert!(matches!(e, MaxError::PoolingUnrecoverable { .. }), "{e}");
            assert!(e.to_string().contains("[CLS]"), "{e}");
        }
        let e = correct_bert_embeddings(&raw, Pooling::Mean, false).unwrap_err();
        assert!(e.to_string().contains("token count"), "{e}");
    }

    #[test]
    fn non_finite_is_bad_response() {
        let e = correct_bert_embeddings(&[vec![1.0, f32::NAN]], Pooling::Mean, true).unwrap_err();
        assert!(matches!(e, MaxError::BadResponse { .. }), "{e}");
    }
}
