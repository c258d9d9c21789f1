//! The decoder conformance fixtures through MAX (`mojo_max`, strict: no fallback): for each
//! model type given, `fixtures/conformance/<type>/` is served by `max serve` (started by the
//! runtime, on the CPU, float32) and each prompt's 8 greedy tokens are compared with
//! transformers' (`reference.safetensors`). Prints one line per type: `match`, `DIFFER` with
//! both token lists, or `REFUSED` with MAX's error.
//!
//! ```sh
//! USE_MOJO_MAX_TARGET=1 SKILLGEN_MAX_BIN=~/.cache/skillgen/venv-max/bin/max \
//!   SKILLGEN_MAX_CACHE=~/.cache/skillgen/max-cache \
//!   cargo run --release -p skills --example max_conformance -- fixtures/conformance llama qwen3
//! ```
//! A cold MAX compile takes minutes per model type; this is a one-off check, not a CI test.

use std::path::Path;
use std::time::Instant;

use skillgen_runtime::request::{Call, GenerateRequest, Output, Prompt};
use skillgen_runtime::{ProcessEnv, SkillState, Target, TargetSpec};

/// `input_ids` and `greedy` rows of a reference file (i64 little-endian tensors).
fn reference(dir: &Path) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("header")) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors header");
    let data = &bytes[8 + n..];
    let rows = |name: &str| -> Vec<Vec<u32>> {
        let t = &header[name];
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|x| x.as_u64().expect("dim") as usize)
            .collect();
        let off = t["data_offsets"][0].as_u64().expect("offset") as usize;
        let v: Vec<u32> = data[off..off + 8 * shape[0] * shape[1]]
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("i64")) as u32)
            .collect();
        v.chunks(shape[1]).map(<[u32]>::to_vec).collect()
    };
    (rows("input_ids"), rows("greedy"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let root = args
        .next()
        .expect("usage: max_conformance FIXTURE_ROOT TYPE...");
    let caps = skills::backends().probe(&ProcessEnv);
    for t in args {
        // Only the model's own files: MAX loads every `*.safetensors` it finds (the reference
        // outputs and the classifier would be taken for weights).
        let src = Path::new(&root).join(&t);
        let dir = std::env::temp_dir().join(format!(
            "skillgen-max-conformance-{}-{t}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for f in [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
        ] {
            if src.join(f).is_file() {
                std::fs::copy(src.join(f), dir.join(f)).expect("copy");
            }
        }
        let info = skills::registry::by_model_type(&t).expect("a registry type");
        let start = Instant::now();
        let state = match SkillState::load(
            info,
            skills::backends(),
            &dir,
            TargetSpec::Exact(Target::MojoMax),
        ) {
            Ok(s) => s.strict(true),
            Err(e) => {
                println!("{t}\tREFUSED\t{e}");
                continue;
            }
        };
        let (inputs, greedy) = reference(&src);
        let mut line = String::from("match");
        for (prompt, want) in inputs.iter().zip(&greedy) {
            let req = GenerateRequest::new(Prompt::TokenIds(prompt.clone())).max_tokens(want.len());
            match state.run_with(Call::Generate(req), &ProcessEnv, &caps) {
                Ok((Output::Generate(g), d)) if d.used == Target::MojoMax => {
                    if g.token_ids[..] != want[..g.token_ids.len().min(want.len())]
                        || g.token_ids.is_empty()
                    {
                        line = format!("DIFFER\tMAX {:?} vs transformers {want:?}", g.token_ids);
                        break;
                    }
                }
                Ok((other, d)) => {
                    line = format!("DIFFER\tunexpected {other:?} on {:?}", d.used);
                    break;
                }
                Err(e) => {
                    line = format!("REFUSED\t{e}");
                    break;
                }
            }
        }
        println!("{t}\t{line}\t({:.0?})", start.elapsed());
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
