//! LLM generation speed of the config-driven decoder, for comparison with llama.cpp
//! (`scripts/bench_llama_cpp.py`, run by `scripts/bench.sh --only llm` on the same token ids
//! with the same thread count), and the quantize-your-own table (`--only quantize`).
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p skillgen-candle --example llm_bench -- \
//!     MODEL [--quantize q8_0|q4_k] [--accuracy] \
//!     [--prompt-tokens 128] [--new 64] [--warmup 1] [--json out.json]
//! ```
//!
//! `MODEL` is a GGUF file (quantized as stored) or a Hugging Face directory of a float
//! checkpoint (`config.json` + `model.safetensors`), run in float or, with `--quantize`,
//! quantized when it loads (`Decoder::load_quantized`, what `SkillState::quantize` does).
//!
//! The prompt is the first `--prompt-tokens` ids of [`PROMPT`] under the model's tokenizer
//! (special tokens added as the tokenizer does); generation is greedy through
//! [`Decoder::stream`] (the path `generate` and `generate_stream` take: KV cache, sampler,
//! incremental detokenization), `--new` tokens. An end-of-sequence token before that ends the
//! run with an error (the comparison needs the same number of tokens on both sides).
//!
//! Measured, after `--warmup` unmeasured runs of the same generation in the same process:
//! - load: reading the file, building the model (quantizing, with `--quantize`);
//! - the weights: the model file's size on disk and the bytes its weights take once loaded;
//! - time to first token (TTFT): from the request to the first token (tokenization is not
//!   included: the prompt is given as ids), and prefill tokens/s = prompt tokens / TTFT;
//! - decode tokens/s = (new − 1) / (time of the last token − time of the first), and the
//!   latency of each decode step (p50/p95/p99, nearest rank);
//! - peak RSS: `VmHWM` of this process at the end.
//!
//! `--accuracy` measures no time: it loads `MODEL` in float and as asked (`--quantize`) in one
//! process and compares their next-token logits, teacher-forced over every position of the
//! whole prompt: top-1 agreement, max |Δlogit| over the float model's top-10 ids, and the
//! greedy continuation (`--new` tokens) before the first difference.
//!
//! Threads: candle's kernels (and ours) use `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`,
//! else the physical cores. The JSON goes to stdout and, with `--json`, to that file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use serde_json::{Value, json};
use skillgen_candle::decoder::{Decoder, HeadKind};
use skillgen_runtime::Quantization;
use skillgen_runtime::request::{GenerateRequest, Prompt};

/// The prompt text (English prose; long enough for 128 tokens under any BPE vocabulary).
const PROMPT: &str = "The history of the printing press begins in the fifteenth century, when \
Johannes Gutenberg, a goldsmith from Mainz, combined several existing technologies into a \
practical system for producing books. Movable type made of a durable metal alloy, an oil-based \
ink that adhered to metal, and a screw press adapted from those used to make wine and olive oil \
allowed a small workshop to print hundreds of identical pages in a single day. Before this, \
books were copied by hand, usually by scribes working in monasteries, and a single Bible could \
take a year or more to finish. Within fifty years of Gutenberg's first printed Bible, presses \
had spread to more than two hundred cities across Europe, and millions of volumes were in \
circulation. The consequences were profound. Scholars could compare identical copies of a \
text, errors could be corrected in later editions, and ideas travelled faster than ever \
before. Historians often connect the spread of printing to the Reformation, the Scientific \
Revolution and the rise of literacy among ordinary people. In the centuries that followed, \
printing technology continued to improve, from the steam-powered presses of the industrial \
age to the offset lithography of the twentieth century. Today";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50/p95/p99/mean in milliseconds (nearest-rank percentiles), as the other benches.
fn stats(mut v: Vec<Duration>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
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

const USAGE: &str = "llm_bench MODEL(.gguf|dir) [--quantize q8_0|q4_k] [--accuracy] [--prompt-tokens N] [--new N] [--warmup N] [--json FILE]";

struct Args {
    model: PathBuf,
    quantize: Option<Quantization>,
    accuracy: bool,
    prompt_tokens: usize,
    new: usize,
    warmup: usize,
    json: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        model: PathBuf::new(),
        quantize: None,
        accuracy: false,
        prompt_tokens: 128,
        new: 64,
        warmup: 1,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, name: &str| -> usize {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number"))
    };
    while let Some(x) = it.next() {
        match x.as_str() {
            "--prompt-tokens" => a.prompt_tokens = num(it.next(), "--prompt-tokens"),
            "--new" => a.new = num(it.next(), "--new"),
            "--warmup" => a.warmup = num(it.next(), "--warmup"),
            "--json" => a.json = it.next().map(PathBuf::from),
            "--accuracy" => a.accuracy = true,
            "--quantize" => {
                let v = it.next().expect("--quantize needs q8_0 or q4_k");
                a.quantize = Some(v.parse().unwrap_or_else(|e| panic!("--quantize: {e}")));
            }
            "-h" | "--help" => {
                println!("usage: {USAGE}");
                std::process::exit(0);
            }
            _ if a.model.as_os_str().is_empty() => a.model = PathBuf::from(x),
            other => panic!("unknown argument {other:?}"),
        }
    }
    assert!(!a.model.as_os_str().is_empty(), "usage: {USAGE}");
    assert!(a.new >= 2, "--new must be at least 2");
    a
}

/// One greedy generation: (time to first token, times of every token after the request, ids).
fn generate(d: &Arc<Decoder>, ids: &[u32], new: usize) -> (Duration, Vec<Duration>, Vec<u32>) {
    let req = GenerateRequest::new(Prompt::TokenIds(ids.to_vec())).max_tokens(new);
    let t0 = Instant::now();
    let stream = d.clone().stream(req).expect("stream");
    let mut at = Vec::with_capacity(new);
    let mut out = Vec::with_capacity(new);
    for tok in stream {
        let tok = tok.expect("generation step");
        at.push(t0.elapsed());
        out.push(tok.token_id);
    }
    assert_eq!(
        out.len(),
        new,
        "generation ended after {} tokens (end of sequence?): {out:?}",
        out.len()
    );
    (at[0], at, out)
}

/// The model at `path`: a GGUF file (or a directory holding one and no `config.json`) as
/// stored, else a Hugging Face directory, quantized at load to `q` if given. Also what it is:
/// model type, tensor types (GGUF) and the file's size on disk.
fn load(path: &Path, q: Option<Quantization>) -> (Decoder, Value) {
    let file_bytes = |files: &[PathBuf]| -> u64 {
        files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum()
    };
    if !path.join("config.json").is_file() {
        assert!(
            q.is_none(),
            "--quantize takes a float checkpoint directory, not a GGUF file"
        );
        let (d, info) = Decoder::load_gguf(path, &Device::Cpu).expect("load");
        let file = if path.is_dir() {
            std::fs::read_dir(path)
                .expect("reading the directory")
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "gguf"))
                .expect("a .gguf file")
        } else {
            path.to_path_buf()
        };
        let v = json!({
            "model_type": info.model_type,
            "tensor_types": info.tensor_types,
            "file_bytes": file_bytes(&[file]),
        });
        return (d, v);
    }
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(path.join("config.json")).expect("reading config.json"),
    )
    .expect("config.json is JSON");
    let model_type = config["model_type"]
        .as_str()
        .expect("config.json: model_type");
    let d = Decoder::load_quantized(model_type, path, &Device::Cpu, HeadKind::Lm, q).expect("load");
    let files: Vec<PathBuf> = std::fs::read_dir(path)
        .expect("reading the directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    let v = json!({
        "model_type": model_type,
        "file_bytes": file_bytes(&files),
    });
    (d, v)
}

/// `--accuracy`: the model as asked against itself in float, teacher-forced over `ids`.
fn accuracy(a: &Args) -> Value {
    let (float, _) = load(&a.model, None);
    let (quant, _) = load(&a.model, a.quantize);
    let ids = float
        .prompt_ids(&Prompt::Text(PROMPT.to_owned()))
        .expect("tokenize");
    let f = float.all_logits(&ids).expect("float logits");
    let q = quant.all_logits(&ids).expect("quantized logits");
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &x)| if x > b.1 { (i, x) } else { b },
            )
            .0
    };
    let (mut top1, mut worst) = (0usize, 0f32);
    for (fr, qr) in f.iter().zip(&q) {
        top1 += usize::from(argmax(fr) == argmax(qr));
        let mut order: Vec<usize> = (0..fr.len()).collect();
        order.sort_by(|&x, &y| fr[y].total_cmp(&fr[x]));
        for &i in &order[..10] {
            worst = worst.max((fr[i] - qr[i]).abs());
        }
    }
    let n = a.prompt_tokens.min(ids.len());
    let gf = float.greedy(&ids[..n], a.new).expect("float greedy");
    let gq = quant.greedy(&ids[..n], a.new).expect("quantized greedy");
    let same = gf.iter().zip(&gq).take_while(|(x, y)| x == y).count();
    json!({
        "engine": "skillgen-candle",
        "model": a.model.display().to_string(),
        "quantization": a.quantize.map(|q| q.to_string()),
        "positions": f.len(),
        "top1_agreement": top1,
        "max_abs_dlogit_top10": worst,
        "greedy_same": same,
        "greedy_total": gf.len(),
    })
}

fn main() {
    let a = args();
    if a.accuracy {
        emit(&a, &accuracy(&a));
        return;
    }
    let t = Instant::now();
    let (d, info) = load(&a.model, a.quantize);
    let load = t.elapsed();
    let weight_bytes = d.weight_bytes();
    let d = Arc::new(d);
    let all = d
        .prompt_ids(&Prompt::Text(PROMPT.to_owned()))
        .expect("tokenize");
    assert!(
        all.len() >= a.prompt_tokens,
        "the prompt has only {} tokens",
        all.len()
    );
    let ids = &all[..a.prompt_tokens];
    let mut warm = Vec::new();
    for _ in 0..a.warmup {
        let (ttft, _, _) = generate(&d, ids, a.new);
        warm.push(ms(ttft));
    }
    let (ttft, at, out) = generate(&d, ids, a.new);
    let steps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let decode_s = (at[at.len() - 1] - at[0]).as_secs_f64();
    let threads = candle_core::utils::get_num_threads();
    let v = json!({
        "engine": "skillgen-candle",
        "model": a.model.display().to_string(),
        "quantization": a.quantize.map(|q| q.to_string()),
        "model_type": info["model_type"],
        "tensor_types": info.get("tensor_types"),
        "file_bytes": info["file_bytes"],
        "weight_bytes": weight_bytes,
        "threads": threads,
        "candle_num_threads": std::env::var("CANDLE_NUM_THREADS").ok(),
        "rayon_num_threads": std::env::var("RAYON_NUM_THREADS").ok(),
        "prompt_tokens": ids.len(),
        "new_tokens": out.len(),
        "warmup_runs": a.warmup,
        "warmup_ttft_ms": warm,
        "load_ms": ms(load),
        "ttft_ms": ms(ttft),
        "prefill_tokens_per_s": ids.len() as f64 / ttft.as_secs_f64(),
        "decode_tokens_per_s": (out.len() - 1) as f64 / decode_s,
        "decode_step": stats(steps),
        "total_ms": ms(at[at.len() - 1]),
        "peak_rss_mib": peak_rss_mib(),
        "prompt_ids": ids,
        "generated_ids": out,
        "loadavg": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_owned()),
    });
    emit(&a, &v);
}

/// Print `v`, and write it to `--json`.
fn emit(a: &Args, v: &Value) {
    let text = serde_json::to_string_pretty(v).expect("json");
    if let Some(p) = &a.json {
        std::fs::write(p, &text).expect("writing the JSON file");
    }
    println!("{text}");
}
