//! candle inference on the CPU, for comparison with PyTorch (`scripts/bench_pytorch.py`, run by
//! `scripts/bench.sh` on the same texts with the same thread count):
//! - all-MiniLM-L6-v2 embeddings (`SKILLGEN_MINILM_DIR`) at batch 1 and 32: load (skill
//!   construction + lazy model load + first call), latency p50/p95/p99, throughput;
//! - greedy generation with the tiny seeded llama fixture (`fixtures/native/llama`): tokens/s.
//!   The model is tiny (32 hidden, 2 layers), so this measures per-token overhead, not math.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench -p skillgen-candle --bench inference
//! SKILLGEN_BENCH_ITERS=100 SKILLGEN_BENCH_JSON=out.json cargo bench -p skillgen-candle --bench inference
//! ```
//!
//! With `SKILLGEN_BENCH_CORPUS=<file>` (and `SKILLGEN_MINILM_DIR`) it runs the corpus case
//! instead: every line of the file embedded in one call, whole process, load included.
//!
//! candle's CPU kernels use `RAYON_NUM_THREADS` threads (all cores when unset). Peak RSS is the
//! process's `VmHWM` at the end (both models loaded). Without `SKILLGEN_MINILM_DIR` the MiniLM
//! part prints `SKIPPED:`; the llama part always runs. With `SKILLGEN_BENCH_JSON` the results
//! are also written there as JSON.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skillgen_runtime::env::{EnvSource, ProcessEnv};
use skillgen_runtime::request::{Call, EmbedRequest, GenerateRequest, Output, Prompt};
use skillgen_runtime::{Capabilities, MapEnv, Skill, SkillState, Target};

#[derive(Debug, Skill)]
#[skill(
    model_type = "bert",
    family = encoder,
    modalities(text),
    tasks(base_model("BertModel"), text_encoding("BertModel")),
    candle = "bert",
    native(base_model = encoder, text_encoding = encoder),
    backends = skillgen_candle::backends
)]
pub struct Bert {
    state: SkillState,
}

#[derive(Debug, Skill)]
#[skill(
    model_type = "llama",
    family = decoder,
    modalities(text),
    tasks(causal_lm("LlamaForCausalLM")),
    candle = "llama",
    native(causal_lm = decoder),
    backends = skillgen_candle::backends
)]
pub struct Llama {
    state: SkillState,
}

/// The texts, shared with `scripts/bench_pytorch.py` (keep both lists identical).
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50/p95/p99/mean in milliseconds (nearest-rank percentiles).
fn stats(mut v: Vec<Duration>) -> Value {
    v.sort();
    let pct = |p: f64| {
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        ms(v[rank.clamp(1, v.len()) - 1])
    };
    let mean = v.iter().map(|d| d.as_secs_f64()).sum::<f64>() / v.len() as f64;
    json!({
        "n": v.len(),
        "p50_ms": pct(50.0),
        "p95_ms": pct(95.0),
        "p99_ms": pct(99.0),
        "mean_ms": mean * 1e3,
    })
}

/// Peak resident set size of this process, in MiB (`VmHWM` from /proc/self/status).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn env_usize(name: &str, default: usize) -> usize {
    ProcessEnv
        .var(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn embed(state: &SkillState, caps: &Capabilities, batch: &[String]) -> usize {
    let req = EmbedRequest::from(batch.to_vec());
    let (out, d) = state
        .run_with(Call::Embed(req), &MapEnv::empty(), caps)
        .expect("embed");
    assert_eq!(d.used, Target::Cpu);
    match out {
        Output::Embed(e) => e.vectors.len(),
        other => panic!("expected embeddings, got {other:?}"),
    }
}

fn minilm(dir: &Path, iters: usize, caps: &Capabilities) -> Value {
    let all = texts();
    let t = Instant::now();
    let skill = Bert::load(dir, Target::Cpu).expect("load MiniLM");
    assert_eq!(embed(skill.state(), caps, &all[..1]), 1);
    let load = t.elapsed();
    println!("minilm load (construct + first embed): {:.1} ms", ms(load));
    let mut batches = serde_json::Map::new();
    for n in [1usize, 32] {
        let n_iters = if n == 1 { iters } else { (iters / 4).max(10) };
        // Warm-up: every text once at this batch size.
        for i in 0..(32 / n).max(3) {
            let start = (i * n) % 32;
            embed(skill.state(), caps, &all[start..start + n]);
        }
        let mut times = Vec::with_capacity(n_iters);
        for i in 0..n_iters {
            let start = (i * n) % 32;
            let batch = &all[start..start + n];
            let t = Instant::now();
            let got = embed(skill.state(), caps, batch);
            times.push(t.elapsed());
            assert_eq!(got, n);
        }
        let total: f64 = times.iter().map(Duration::as_secs_f64).sum();
        let mut s = stats(times);
        s["texts_per_s"] = json!((n * n_iters) as f64 / total);
        println!(
            "minilm batch {n:>2}: p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  {:.1} texts/s  (n={n_iters})",
            s["p50_ms"].as_f64().unwrap_or_default(),
            s["p95_ms"].as_f64().unwrap_or_default(),
            s["p99_ms"].as_f64().unwrap_or_default(),
            s["texts_per_s"].as_f64().unwrap_or_default(),
        );
        batches.insert(n.to_string(), s);
    }
    json!({ "load_ms": ms(load), "batches": batches })
}

fn llama(iters: usize, caps: &Capabilities) -> Value {
    let dir: PathBuf = skillgen_test_support::native_fixture("llama");
    let reference = skillgen_test_support::read_json(&dir.join("reference.json"));
    let prompt: Vec<u32> =
        serde_json::from_value(reference["text"]["prompt_ids"].clone()).expect("text.prompt_ids");
    let max_tokens = 32;
    let run = |state: &SkillState| {
        let req = GenerateRequest::new(Prompt::TokenIds(prompt.clone())).max_tokens(max_tokens);
        let (out, d) = state
            .run_with(Call::Generate(req), &MapEnv::empty(), caps)
            .expect("generate");
        assert_eq!(d.used, Target::Cpu);
        match out {
            Output::Generate(g) => g.token_ids.len(),
            other => panic!("expected a generation, got {other:?}"),
        }
    };
    let t = Instant::now();
    let skill = Llama::load(&dir, Target::Cpu).expect("load llama fixture");
    run(skill.state());
    let load = t.elapsed();
    run(skill.state());
    let mut times = Vec::with_capacity(iters);
    let mut tokens = 0;
    for _ in 0..iters {
        let t = Instant::now();
        tokens += run(skill.state());
        times.push(t.elapsed());
    }
    let total: f64 = times.iter().map(Duration::as_secs_f64).sum();
    let mut s = stats(times);
    s["tokens_per_s"] = json!(tokens as f64 / total);
    s["new_tokens_per_call"] = json!(tokens as f64 / iters as f64);
    s["prompt_tokens"] = json!(prompt.len());
    s["load_ms"] = json!(ms(load));
    println!(
        "llama fixture: {:.0} tokens/s ({} prompt + {:.0} new tokens per call, p50 {:.2} ms, n={iters})",
        s["tokens_per_s"].as_f64().unwrap_or_default(),
        prompt.len(),
        s["new_tokens_per_call"].as_f64().unwrap_or_default(),
        s["p50_ms"].as_f64().unwrap_or_default(),
    );
    s
}

/// The corpus case: load all-MiniLM-L6-v2 and embed every line of `corpus` through the public
/// `embed` call (chunks of 32, `EmbedRequest`'s default, as sentence-transformers' `encode`),
/// timed from the start of `main` (load included); then exit.
fn corpus(dir: &Path, corpus: &Path, started: Instant) -> Value {
    let text = std::fs::read_to_string(corpus).expect("read SKILLGEN_BENCH_CORPUS");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let caps = Capabilities::fixed_cpu_only();
    let t = Instant::now();
    let skill = Bert::load(dir, Target::Cpu).expect("load MiniLM");
    let got = embed(skill.state(), &caps, &lines);
    assert_eq!(got, lines.len());
    let embed_s = t.elapsed().as_secs_f64();
    let total = started.elapsed().as_secs_f64();
    let rss = peak_rss_mib();
    println!(
        "corpus: {} texts in {:.3} s from main ({:.1} texts/s; load + embed {:.3} s), peak RSS {:.1} MiB",
        lines.len(),
        total,
        lines.len() as f64 / total,
        embed_s,
        rss.unwrap_or_default()
    );
    json!({
        "engine": "candle",
        "texts": lines.len(),
        "seconds_from_main": total,
        "texts_per_s": lines.len() as f64 / total,
        "load_and_embed_s": embed_s,
        "peak_rss_mib": rss,
    })
}

fn main() {
    let started = Instant::now();
    if let (Some(corpus_path), Some(dir)) = (
        ProcessEnv.var("SKILLGEN_BENCH_CORPUS"),
        ProcessEnv.var("SKILLGEN_MINILM_DIR"),
    ) {
        let result = corpus(Path::new(&dir), Path::new(&corpus_path), started);
        if let Some(path) = ProcessEnv.var("SKILLGEN_BENCH_JSON") {
            std::fs::write(&path, format!("{result:#}\n")).expect("write SKILLGEN_BENCH_JSON");
        }
        return;
    }
    let iters = env_usize("SKILLGEN_BENCH_ITERS", 50);
    let caps = Capabilities::fixed_cpu_only();
    let threads = ProcessEnv.var("RAYON_NUM_THREADS");
    println!(
        "candle cpu, RAYON_NUM_THREADS={}",
        threads.as_deref().unwrap_or("(unset: all cores)")
    );
    let dir = ProcessEnv
        .var("SKILLGEN_MINILM_DIR")
        .map(PathBuf::from)
        .filter(|d| d.join("model.safetensors").is_file());
    let minilm = match dir {
        Some(dir) => minilm(&dir, iters, &caps),
        None => {
            println!("SKIPPED: minilm: set SKILLGEN_MINILM_DIR to all-MiniLM-L6-v2");
            Value::Null
        }
    };
    let llama = llama(iters.max(20), &caps);
    let rss = peak_rss_mib();
    println!("peak RSS: {:.1} MiB", rss.unwrap_or_default());
    let result = json!({
        "engine": "candle",
        "threads": threads,
        "minilm": minilm,
        "llama_fixture": llama,
        "peak_rss_mib": rss,
    });
    if let Some(path) = ProcessEnv.var("SKILLGEN_BENCH_JSON") {
        std::fs::write(&path, format!("{result:#}\n")).expect("write SKILLGEN_BENCH_JSON");
        println!("wrote {path}");
    }
}
