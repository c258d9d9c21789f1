//! `skillgen`: the command line over the [`skillgen`] library.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skillgen::support::{Facts, describe_plain, status_json};
use skillgen::{Config, Error, Model, Options, Registry};
use skillgen_vocab::{Backend, Capability, Support};

/// Generates the typed `skills` crate from the model registry.
#[derive(Debug, Parser)]
#[command(name = "skillgen", version, about, long_about = None)]
struct Cli {
    /// The registry [default: <workspace>/models.yaml]
    #[arg(long, global = true, value_name = "PATH")]
    registry: Option<PathBuf>,
    /// The template directory [default: <workspace>/templates]
    #[arg(long, global = true, value_name = "DIR")]
    templates: Option<PathBuf>,
    /// The output crate; its `src/` is replaced [default: <workspace>/generated]
    #[arg(long, global = true, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The support table [default: SUPPORT.md in the directory that holds OUT]
    #[arg(long, global = true, value_name = "PATH")]
    support: Option<PathBuf>,
    /// With no subcommand: report what `generate` would change without writing.
    #[arg(long)]
    dry_run: bool,
    /// With no subcommand: render even if OUT/.skillgen-digest says nothing changed.
    #[arg(long)]
    force: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Regenerate OUT/src from the registry (the default). Files are written only when their
    /// bytes change; the render itself is skipped when OUT/.skillgen-digest shows that the
    /// registry, the templates, the generator and the output are those of the last run.
    Generate {
        /// Report what would change without writing anything.
        #[arg(long)]
        dry_run: bool,
        /// Render and compare even if the digest says nothing changed (still writes only the
        /// files whose bytes differ).
        #[arg(long)]
        force: bool,
    },
    /// Exit with status 1 if OUT/src is not what `generate` would write.
    Check {
        /// Render and compare even if the digest says the output is fresh.
        #[arg(long)]
        force: bool,
    },
    /// List the registry's model types.
    List {
        /// Print JSON (sources and every entry with its derived names).
        #[arg(long)]
        json: bool,
    },
    /// Show everything about one model type.
    Show {
        /// The model type, e.g. `bert`.
        model_type: String,
    },
}

/// Why a command failed.
enum Failure {
    /// The generator failed.
    Skillgen(Error),
    /// Writing to stdout failed (a closed pipe is not an error: see [`main`]).
    Stdout(io::Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Skillgen(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Stdout(e)
    }
}

/// A message on stderr; a closed stderr is ignored rather than a panic.
fn note(message: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{message}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let defaults = Config::workspace_default();
    let out = cli.out.unwrap_or(defaults.out);
    let config = Config {
        registry: cli.registry.unwrap_or(defaults.registry),
        templates: cli.templates.unwrap_or(defaults.templates),
        support: cli.support.unwrap_or_else(|| Config::default_support(&out)),
        out,
    };
    let command = cli.command.unwrap_or(Command::Generate {
        dry_run: cli.dry_run,
        force: cli.force,
    });
    // Everything goes through one locked, buffered stdout. A reader that closes the pipe early
    // (`skillgen list --json | head -1`) ends the command quietly, like cargo and rg do.
    let mut stdout = io::BufWriter::new(io::stdout().lock());
    let result = run(&config, command, &mut stdout).and_then(|code| {
        stdout.flush()?;
        Ok(code)
    });
    match result {
        Ok(code) => code,
        Err(Failure::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Stdout(e)) => {
            note(format_args!("error: writing to stdout: {e}"));
            ExitCode::FAILURE
        }
        Err(Failure::Skillgen(e)) => {
            match &e {
                Error::Registry { .. } => note(&e),
                _ => note(format_args!("error: {e}")),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config, command: Command, out: &mut impl Write) -> Result<ExitCode, Failure> {
    match command {
        Command::Generate { dry_run, force } => {
            let summary = skillgen::generate_with(config, Options { dry_run, force })?;
            if dry_run {
                for p in &summary.written {
                    writeln!(out, "would write  {}", p.display())?;
                }
                if summary.support_written {
                    writeln!(out, "would write  {}", summary.support.display())?;
                }
                for p in &summary.removed {
                    writeln!(out, "would remove {}", p.display())?;
                }
                out.flush()?;
            }
            note(&summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { force } => {
            let report = skillgen::check_with(
                config,
                Options {
                    dry_run: false,
                    force,
                },
            )?;
            note(&report);
            Ok(if report.is_fresh() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::List { json } => {
            let registry = skillgen::load(config)?;
            if json {
                let value = list_json(&registry);
                let text =
                    serde_json::to_string_pretty(&value).expect("JSON values always serialize");
                writeln!(out, "{text}")?;
            } else {
                for m in registry.sorted() {
                    writeln!(
                        out,
                        "{:<32} {:<24} {:<28} {:>2} task(s)  {}",
                        m.model_type.value,
                        m.family.as_str(),
                        format!("{}::{}", m.module, m.struct_name),
                        m.tasks.len(),
                        runs_summary(m)
                    )?;
                }
                out.flush()?;
                note(format_args!(
                    "skillgen: {} model types",
                    registry.models.len()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { model_type } => {
            let registry = skillgen::load(config)?;
            let Some(m) = registry.get(&model_type) else {
                let mut msg = format!("error: unknown model type `{model_type}`");
                if let Some(s) = registry.suggest(&model_type) {
                    msg.push_str(&format!(" (did you mean `{s}`?)"));
                }
                note(msg);
                return Ok(ExitCode::FAILURE);
            };
            show(config, &registry, m, out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One phrase for `list`: which tasks run where, and refusals.
/// E.g. `runs: causal-lm (candle verified, MAX delegated)` or `runs nothing; candle refused`.
fn runs_summary(m: &Model) -> String {
    let facts = Facts::of(m);
    let tasks = facts.tasks(&m.task_list());
    let running: Vec<String> = tasks
        .iter()
        .filter(|t| t.runs())
        .map(|t| {
            let on: Vec<String> = t
                .statuses
                .iter()
                .filter(|(_, s)| s.runs())
                .map(|(b, s)| format!("{b} {}", s.code()))
                .collect();
            format!("{} ({})", t.task, on.join(", "))
        })
        .collect();
    let mut text = if running.is_empty() {
        "runs nothing".to_owned()
    } else {
        format!("runs: {}", running.join(", "))
    };
    let refused: Vec<String> = Backend::ALL
        .iter()
        .filter(|&&b| tasks.iter().any(|t| matches!(t.on(b), Support::Refused(_))))
        .map(|b| format!("{b} refused"))
        .collect();
    if !refused.is_empty() {
        text.push_str("; ");
        text.push_str(&refused.join(", "));
    }
    text
}

/// The relative path of an entry's generated module.
fn module_path(m: &Model) -> String {
    format!("src/{}/{}.rs", m.family.module(), m.module)
}

fn model_json(m: &Model) -> serde_json::Value {
    let facts = Facts::of(m);
    let tasks: Vec<serde_json::Value> = m
        .tasks
        .iter()
        .zip(facts.tasks(&m.task_list()))
        .map(|(t, support)| {
            let mut obj = serde_json::Map::new();
            obj.insert("task".into(), t.task.as_str().into());
            obj.insert(
                "classes".into(),
                t.classes.iter().map(|c| c.value.clone()).collect(),
            );
            for (backend, status) in &support.statuses {
                obj.insert(backend.as_str().into(), status_json(status));
            }
            serde_json::Value::Object(obj)
        })
        .collect();
    let native: serde_json::Map<String, serde_json::Value> = m
        .native
        .iter()
        .map(|n| (n.task.as_str().to_owned(), n.implementation.as_str().into()))
        .collect();
    let refused: serde_json::Map<String, serde_json::Value> = m
        .refused
        .iter()
        .map(|r| (r.backend.as_str().to_owned(), r.reason.value.clone().into()))
        .collect();
    let caps: Vec<serde_json::Value> = Capability::all_for(m.family.value, &m.task_list())
        .into_iter()
        .map(|(c, t)| serde_json::json!({ "capability": c.method(), "task": t.as_str() }))
        .collect();
    serde_json::json!({
        "model_type": m.model_type.value,
        "config_class": m.config_class.value,
        "hf_module": m.hf_module.value,
        "family": m.family.as_str(),
        "family_source": m.family_source.as_str(),
        "modalities": m.modalities.iter().map(|x| x.as_str()).collect::<Vec<_>>(),
        "deprecated": m.deprecated,
        "sub_config_of": m.sub_config_of.iter().map(|s| s.value.clone()).collect::<Vec<_>>(),
        "tasks": tasks,
        "candle": m.candle.as_ref().map(|c| c.value.clone()),
        "max": m.max.iter().map(|s| s.value.clone()).collect::<Vec<_>>(),
        "native": native,
        "refused": refused,
        "notes": m.notes.as_ref().map(|n| n.value.clone()),
        "capabilities": caps,
        "module": m.module,
        "struct": m.struct_name,
        "path": format!("skills::{}::{}", m.module, m.struct_name),
        "file": module_path(m),
        "line": m.line,
    })
}

fn list_json(registry: &Registry) -> serde_json::Value {
    serde_json::json!({
        "sources": registry.sources_map(),
        "models": registry.sorted().into_iter().map(model_json).collect::<Vec<_>>(),
    })
}

fn show(config: &Config, registry: &Registry, m: &Model, out: &mut impl Write) -> io::Result<()> {
    let file = config.out.join(module_path(m));
    writeln!(out, "model_type:    {}", m.model_type.value)?;
    writeln!(
        out,
        "defined at:    {}:{}:{} (models[{}])",
        registry.file, m.line, m.column, m.index
    )?;
    writeln!(out, "config_class:  {}", m.config_class.value)?;
    writeln!(
        out,
        "hf_module:     transformers.models.{}",
        m.hf_module.value
    )?;
    writeln!(
        out,
        "family:        {} ({})",
        m.family.value,
        m.family_source.as_str()
    )?;
    writeln!(
        out,
        "modalities:    {}",
        m.modalities
            .iter()
            .map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    if m.deprecated {
        writeln!(out, "deprecated:    yes")?;
    }
    if !m.sub_config_of.is_empty() {
        writeln!(
            out,
            "sub_config_of: {}",
            m.sub_config_of
                .iter()
                .map(|s| s.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    writeln!(out, "tasks:")?;
    if m.tasks.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for t in &m.tasks {
        writeln!(
            out,
            "  {:<28} {:<40} {}",
            t.task.as_str(),
            t.task.hf_mapping(),
            t.classes
                .iter()
                .map(|c| c.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    let facts = Facts::of(m);
    let support = facts.tasks(&m.task_list());
    writeln!(out, "support:")?;
    if support.is_empty() {
        writeln!(out, "  (no tasks)")?;
    }
    for t in &support {
        let cells: Vec<String> = t
            .statuses
            .iter()
            .map(|(b, s)| match s {
                Support::Refused(_) => format!("{b}: {}", s.code()),
                _ => format!("{b}: {}", describe_plain(s)),
            })
            .collect();
        writeln!(out, "  {:<28} {}", t.task.as_str(), cells.join("  |  "))?;
    }
    for r in &m.refused {
        writeln!(out, "  refused on {}: {}", r.backend.value, r.reason.value)?;
    }
    if !support.iter().any(|t| t.runs()) {
        writeln!(
            out,
            "  nothing runs this model type yet: every call is a typed error naming each target tried"
        )?;
    }
    let caps = Capability::all_for(m.family.value, &m.task_list());
    writeln!(
        out,
        "capabilities:  {}",
        if caps.is_empty() {
            "(none)".to_owned()
        } else {
            caps.iter()
                .map(|(c, t)| format!("{} (via {t})", c.method()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )?;
    writeln!(
        out,
        "candle:        {}",
        m.candle.as_ref().map_or("(none)", |c| c.value.as_str())
    )?;
    writeln!(
        out,
        "max:           {}",
        if m.max.is_empty() {
            "(none)".to_owned()
        } else {
            m.max
                .iter()
                .map(|s| s.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    )?;
    if let Some(n) = &m.notes {
        writeln!(
            out,
            "notes:         {}",
            n.value.replace('\n', "\n               ")
        )?;
    }
    writeln!(
        out,
        "rust:          skills::{}::{} (also skills::{}::{}::{})",
        m.module,
        m.struct_name,
        m.family.module(),
        m.module,
        m.struct_name
    )?;
    writeln!(out, "file:          {}", file.display())?;
    Ok(())
}
