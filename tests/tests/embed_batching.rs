//! `embed` runs its inputs in length-sorted, padded and masked chunks (`EmbedRequest::
//! batch_size`, default 32, as sentence-transformers' `encode`): for every encoder fixture with
//! a base model, the vectors of a batch of inputs of very different lengths equal the vectors
//! of each input run alone (`batch_size(1)`), in input order. The parity of the vectors
//! themselves against transformers is the conformance tests' (`base_and_mlm_...`).

use skillgen_runtime::caps::Capabilities;
use skillgen_runtime::env::MapEnv;
use skillgen_runtime::request::{Call, EmbedRequest, Output, TextBatch};
use skillgen_runtime::{Capability, TargetSpec};
use skillgen_test_support::repo;

const TEXTS: [&str; 6] = [
    "a",
    "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun.",
    "hello world",
    "",
    "Padding must never change a vector: each input's vector is the one it gets alone.",
    "x y",
];

#[test]
fn batched_embeddings_equal_one_by_one_for_every_encoder_fixture() {
    let caps = Capabilities::fixed_cpu_only();
    let env = MapEnv::empty();
    let mut checked = Vec::new();
    for e in std::fs::read_dir(repo().join("fixtures/conformance")).unwrap() {
        let dir = e.unwrap().path().join("base");
        if !dir.join("tokenizer.json").is_file() {
            continue;
        }
        let Ok(skill) = skills::registry::load_dir(&dir, TargetSpec::Default) else {
            continue;
        };
        if !skill.has(Capability::Embed) {
            continue;
        }
        let texts: Vec<String> = TEXTS
            .iter()
            .map(|t| t.to_string())
            .filter(|t| !t.is_empty())
            .collect();
        let run = |batch: usize| {
            let req = EmbedRequest::from(TextBatch::Texts(texts.clone())).batch_size(batch);
            match skill.state().run_with(Call::Embed(req), &env, &caps) {
                Ok((Output::Embed(e), _)) => Ok(e),
                Ok((other, _)) => panic!("{other:?}"),
                Err(e) => Err(e),
            }
        };
        // Types whose embed is not native on candle are not this test's business.
        let Ok(alone) = run(1) else { continue };
        let together = run(32).unwrap();
        let pairs = run(2).unwrap();
        let t = skill.info().model_type;
        assert_eq!(alone.token_ids, together.token_ids, "{t}");
        let mut worst = 0f32;
        for other in [&together, &pairs] {
            for (a, b) in alone.vectors.iter().zip(&other.vectors) {
                assert_eq!(a.len(), b.len(), "{t}");
                for (x, y) in a.iter().zip(b) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
        assert!(worst < 1e-4, "{t}: batched vs alone max |Δ| {worst}");
        checked.push(format!("{t} {worst:.1e}"));
    }
    eprintln!("{} types: {}", checked.len(), checked.join(", "));
    assert!(checked.len() >= 20, "{checked:?}");
}
