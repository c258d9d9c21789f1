//! MiniLM embeddings: MAX (`mojo_max`, through the skill) vs candle (CPU), at batch 1 and 32 on
//! the same texts, and the client's overhead over a raw HTTP request with the same body.
//!
//! ```text
//! cargo bench -p skillgen-max --bench max            # prints a table; ~1 min warm
//! SKILLGEN_BENCH_ITERS=50 cargo bench -p skillgen-max --bench max
//! ```
//!
//! Needs MAX (`SKILLGEN_MAX_BIN`, `max` on PATH or `~/.cache/skillgen/venv-max/bin/max`) and
//! all-MiniLM-L6-v2 (`SKILLGEN_MINILM_DIR`); without them it prints `SKIPPED:` and exits 0.
//! Rows (median of N timed calls after warm-up, wall clock):
//! - `candle cpu`: the skill on `Target::Cpu` (tokenise + forward + pool);
//! - `max skill`: the skill with `USE_MOJO_MAX_TARGET=1` (tokenise locally + HTTP + correction);
//! - `max client`: `MaxClient::embeddings_ids` with the same token ids (HTTP + JSON parse);
//! - `raw http`: one `ureq` POST of the same JSON body, body read as a string (no parse).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use skillgen_max::{MaxClient, find_max_executable, started_server};
use skillgen_runtime::env::{EnvSource, ProcessEnv};
use skillgen_runtime::request::{Call, EmbedRequest, Output};
use skillgen_runtime::{Backends, MapEnv, Skill, SkillState, Target, TargetSpec};

/// MAX and candle (what `skills` builds with both features): the skill compares the two.
fn backends() -> &'static Backends {
    static SET: OnceLock<Backends> = OnceLock::new();
    SET.get_or_init(|| {
        Backends::new(vec![
            Box::new(skillgen_max::MaxBackend),
            Box::new(skillgen_candle::CandleBackend),
        ])
    })
}

#[derive(Debug, Skill)]
#[skill(
    model_type = "bert",
    family = encoder,
    modalities(text),
    tasks(base_model("BertModel"), text_encoding("BertModel")),
    candle = "bert",
    max("bert"),
    native(base_model = encoder, text_encoding = encoder),
    backends = backends
)]
pub struct Bert {
    state: SkillState,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(iters: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    f();
    median(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn texts() -> Vec<String> {
    let base = [
        "A man is eating food.",
        "The quick brown fox jumps over the lazy dog.",
        "Rust is a systems programming language focused on safety, speed and concurrency.",
        "Ünïcödé façade — naïve café, 日本語のテキスト, emoji!",
        "Embeddings map sentences to vectors so that similar meanings are close together.",
        "It rained all day, so the match was moved to the indoor stadium on Sunday afternoon.",
        "hi",
        "Modular MAX serves models over an OpenAI-compatible HTTP API.",
    ];
    (0..32)
        .map(|i| format!("{} ({i})", base[i % base.len()]))
        .collect()
}

fn main() {
    let exe = match find_max_executable(&ProcessEnv) {
        Ok(p) => p,
        Err(e) => {
            println!("SKIPPED: bench max: {e}");
            return;
        }
    };
    let dir = ProcessEnv
        .var("SKILLGEN_MINILM_DIR")
        .map(PathBuf::from)
        .filter(|d| d.join("model.safetensors").is_file());
    let Some(dir) = dir else {
        println!("SKIPPED: bench max: set SKILLGEN_MINILM_DIR to all-MiniLM-L6-v2");
        return;
    };
    let iters: usize = ProcessEnv
        .var("SKILLGEN_BENCH_ITERS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut env = MapEnv::from_pairs(&[
        ("USE_MOJO_MAX_TARGET", "1"),
        ("SKILLGEN_MAX_BIN", exe.to_str().unwrap_or_default()),
    ]);
    for var in ["HOME", "SKILLGEN_MAX_CACHE"] {
        if let Some(v) = ProcessEnv.var(var) {
            env = env.with(var, &v);
        }
    }
    let caps = backends().probe(&env);
    let cpu_env = MapEnv::empty();
    let max_skill = Bert::load(&dir, TargetSpec::Default).expect("load");
    let cpu_skill = Bert::load(&dir, Target::Cpu).expect("load");
    let all = texts();

    let t = Instant::now();
    let embed = |state: &SkillState, env: &MapEnv, batch: &[String]| {
        let req = EmbedRequest::from(batch.to_vec());
        let (out, d) = state.run_with(Call::Embed(req), env, &caps).expect("embed");
        (out, d)
    };
    let (_, d) = embed(max_skill.state(), &env, &all[..1]);
    assert_eq!(d.used, Target::MojoMax, "{d:?}");
    println!("max server start (first call): {:.1?}", t.elapsed());
    let (url, model) = started_server(max_skill.state(), false, |s| {
        (s.url().to_owned(), s.model_id().to_owned())
    })
    .expect("server");
    let client = MaxClient::new(&url);
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let endpoint = format!("{url}/v1/embeddings");

    println!(
        "{:<6} {:>12} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "batch", "candle cpu", "max skill", "max client", "raw http", "candle text/s", "max text/s"
    );
    for n in [1usize, 32] {
        let batch = &all[..n];
        let Output::Embed(first) = embed(cpu_skill.state(), &cpu_env, batch).0 else {
            panic!("not embeddings")
        };
        let ids = first.token_ids;
        let body = serde_json::json!({ "model": model, "input": ids });
        let candle = time(iters, || {
            embed(cpu_skill.state(), &cpu_env, batch);
        });
        let max = time(iters, || {
            embed(max_skill.state(), &env, batch);
        });
        let cl = time(iters, || {
            client.embeddings_ids(&model, &ids).expect("client");
        });
        let raw = time(iters, || {
            agent
                .post(&endpoint)
                .send_json(&body)
                .expect("raw post")
                .into_body()
                .read_to_string()
                .expect("raw body");
        });
        let per_s = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "{n:<6} {:>12.2?} {:>12.2?} {:>12.2?} {:>12.2?} {:>14.1} {:>14.1}",
            candle,
            max,
            cl,
            raw,
            per_s(candle),
            per_s(max)
        );
    }
    println!("(median of {iters}; {} threads)", caps.cpu.threads);
}
