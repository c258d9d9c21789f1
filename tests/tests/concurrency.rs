//! One skill shared by 16 threads: every concurrent result equals the serial result, bit for
//! bit, and the model loads once. Uses the tiny PyTorch fixtures in `fixtures/native/` through
//! the generated skills, on the CPU.

use std::path::PathBuf;
use std::sync::Arc;

use skillgen_runtime::Target;
use skillgen_runtime::request::{EmbedRequest, GenerateRequest};
use skills::decoder::llama::Llama;
use skills::encoder::bert::Bert;

const THREADS: usize = 16;

fn fixture(name: &str) -> PathBuf {
    skillgen_test_support::native_fixture(name)
}

/// Distinct token-id inputs, so a mix-up between threads cannot go unnoticed.
fn inputs(n: usize, vocab: u32) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            let i = i as u32;
            (0..(3 + i % 5))
                .map(|j| 1 + (i * 7 + j * 13) % (vocab - 1))
                .collect()
        })
        .collect()
}

#[test]
fn sixteen_threads_share_one_bert_skill() {
    const CALLS: usize = 1_000;
    let skill = Arc::new(Bert::load(fixture("bert"), Target::Cpu).expect("fixture loads"));
    let inputs = Arc::new(inputs(CALLS, 128));
    let embed = |skill: &Bert, ids: &[u32]| {
        let r = skill
            .embed(EmbedRequest::from(vec![ids.to_vec()]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.dispatch.used, Target::Cpu);
        r.output.vectors
    };
    let serial: Vec<_> = inputs.iter().map(|ids| embed(&skill, ids)).collect();
    // Distinct inputs give distinct vectors: the comparison below can tell them apart.
    assert_ne!(serial[0], serial[1]);

    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (skill, inputs) = (Arc::clone(&skill), Arc::clone(&inputs));
            std::thread::spawn(move || {
                // Each thread walks the inputs from a different offset.
                (0..CALLS)
                    .map(|k| {
                        let i = (k + t * 61) % CALLS;
                        (i, embed(&skill, &inputs[i]))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut checked = 0;
    for h in handles {
        for (i, v) in h.join().expect("no thread panicked") {
            assert_eq!(v, serial[i], "input {i} differs from the serial result");
            checked += 1;
        }
    }
    assert_eq!(checked, THREADS * CALLS);
}

#[test]
fn sixteen_threads_share_one_llama_skill() {
    // Generation is heavier: 16 threads × 25 greedy and seeded generations each.
    const CALLS: usize = 25;
    let skill = Arc::new(Llama::load(fixture("llama"), Target::Cpu).expect("fixture loads"));
    let prompts = Arc::new(inputs(CALLS, 256));
    let generate = |skill: &Llama, i: usize, ids: &[u32]| {
        let mut req = GenerateRequest::from(ids.to_vec()).max_tokens(6);
        if i % 2 == 1 {
            req = req.temperature(0.9).top_k(20).seed(i as u64);
        }
        let r = skill.generate(req).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.dispatch.used, Target::Cpu);
        r.output.token_ids
    };
    let serial: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, ids)| generate(&skill, i, ids))
        .collect();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (skill, prompts) = (Arc::clone(&skill), Arc::clone(&prompts));
            std::thread::spawn(move || {
                (0..CALLS)
                    .map(|k| {
                        let i = (k + t * 7) % CALLS;
                        (i, generate(&skill, i, &prompts[i]))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (i, tokens) in h.join().expect("no thread panicked") {
            assert_eq!(
                tokens, serial[i],
                "prompt {i} differs from the serial result"
            );
        }
    }
}
