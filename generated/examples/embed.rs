//! Sentence embeddings from the command line.
//!
//! ```sh
//! printf 'hello world\nanother text\n' |
//!   cargo run --release -p skills --example embed -- --model-dir DIR [--target T] [--json]
//! ```
//!
//! Reads one text per stdin line. Plain output: one line per text, space-separated floats, and
//! the dispatch summary on stderr. `--json`: `{"embeddings": [[...]], "pooling": ..., "normalized":
//! ..., "dispatch": {...}}`. Errors go to stderr with exit status 1.
//!
//! Logs (target resolution, dispatch decisions, model loads, a MAX server's start with its
//! elapsed time) go to stderr, filtered by `SKILLGEN_LOG` (e.g. `SKILLGEN_LOG=info` or
//! `SKILLGEN_LOG=skillgen_max=debug`); nothing is logged without it.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use skills::TargetSpec;

const USAGE: &str = "usage: embed --model-dir DIR [--target cpu|cuda[:N]|metal[:N]|mojo_max|auto] [--json] < texts (one per line)";

struct Args {
    model_dir: PathBuf,
    target: TargetSpec,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut model_dir = None;
    let mut target = TargetSpec::Default;
    let mut json = false;
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
        match name.as_str() {
            "--model-dir" => model_dir = Some(PathBuf::from(value("--model-dir")?)),
            "--target" => {
                let v = value("--target")?;
                target = v
                    .trim()
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|e| format!("--target `{v}`: {e}"))?;
            }
            "--json" => json = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(Args {
        model_dir: model_dir.ok_or_else(|| format!("--model-dir is required\n{USAGE}"))?,
        target,
        json,
    })
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let texts: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading stdin: {e}"))?;
    if texts.is_empty() {
        return Err("no input: give one text per stdin line".to_owned());
    }
    let skill =
        skills::registry::load_dir(&args.model_dir, args.target).map_err(|e| e.to_string())?;
    let response = skill.embed(texts).map_err(|e| e.to_string())?;
    let out = &response.output;
    let d = &response.dispatch;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "embeddings": out.vectors,
            "dim": out.dim,
            "pooling": out.pooling,
            "normalized": out.normalized,
            "dispatch": d,
        });
        writeln!(stdout, "{v}").map_err(|e| e.to_string())?;
    } else {
        for v in &out.vectors {
            let line: Vec<String> = v.iter().map(ToString::to_string).collect();
            writeln!(stdout, "{}", line.join(" ")).map_err(|e| e.to_string())?;
        }
        let fallbacks: Vec<String> = d.fallbacks.iter().map(ToString::to_string).collect();
        eprintln!(
            "dispatch: model_type {} task {} used {} (requested {:?}, resolved {}); pooling {}, normalized {}, dim {}{}",
            d.model_type,
            d.task,
            d.used,
            d.requested,
            d.resolved,
            out.pooling,
            out.normalized,
            out.dim,
            if fallbacks.is_empty() {
                String::new()
            } else {
                format!("; fallbacks: {}", fallbacks.join("; "))
            }
        );
    }
    Ok(())
}

/// Log to stderr when `SKILLGEN_LOG` is set (an `EnvFilter` directive, e.g. `info`).
fn init_logging() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SKILLGEN_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init();
    }
}

fn main() -> ExitCode {
    init_logging();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
