//! Decode speed of the candle decoder on the tiny conformance fixtures: for each model type
//! given, the prompt `[1, 17, 42, ...]` of `N` tokens is fed one token at a time through the
//! KV cache (`decoder_incremental_logits`), `R` times; prints tokens/s (median of the runs).
//!
//! ```sh
//! cargo run --release -p skills --example decode_speed -- fixtures/native llama qwen2 ...
//! ```
//! Tiny models: this measures the per-token overhead of the decoder (attention, cache,
//! dispatch of the ops), not matmul throughput.

use std::path::Path;
use std::time::Instant;

use skillgen_runtime::{SkillState, Target, TargetSpec};

fn main() {
    let mut args = std::env::args().skip(1);
    let root = args
        .next()
        .expect("usage: decode_speed FIXTURE_ROOT TYPE...");
    let (n, runs) = (48usize, 7usize);
    let ids: Vec<u32> = (0..n as u32).map(|i| 1 + (i * 37) % 250).collect();
    for t in args {
        let info = skills::registry::by_model_type(&t).expect("a registry type");
        let dir = Path::new(&root).join(&t);
        let state =
            SkillState::load(info, skills::backends(), &dir, TargetSpec::Default).expect("loads");
        // Warm-up (loads and caches the weights).
        skillgen_candle::parity::decoder_incremental_logits(&state, Target::Cpu, &ids[..4])
            .expect("runs");
        let mut rates: Vec<f64> = (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                skillgen_candle::parity::decoder_incremental_logits(&state, Target::Cpu, &ids)
                    .expect("runs");
                n as f64 / t0.elapsed().as_secs_f64()
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        println!("{t}\t{:.0}", rates[runs / 2]);
    }
}
