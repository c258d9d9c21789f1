//! `skillgen`: the command line over the [`skillgen`] library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skillgen::{Config, Error, Model, Registry};
use skillgen_vocab::Capability;

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
    /// With no subcommand: report what `generate` would change without writing.
    #[arg(long)]
    dry_run: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Regenerate OUT/src from the registry (the default).
    Generate {
        /// Report what would change without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Exit with status 1 if OUT/src is not what `generate` would write.
    Check,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let defaults = Config::workspace_default();
    let config = Config {
        registry: cli.registry.unwrap_or(defaults.registry),
        templates: cli.templates.unwrap_or(defaults.templates),
        out: cli.out.unwrap_or(defaults.out),
    };
    let command = cli.command.unwrap_or(Command::Generate {
        dry_run: cli.dry_run,
    });
    match run(&config, command) {
        Ok(code) => code,
        Err(e) => {
            match &e {
                Error::Registry { .. } => eprintln!("{e}"),
                _ => eprintln!("error: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config, command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Generate { dry_run } => {
            let summary = skillgen::generate(config, dry_run)?;
            if dry_run {
                for p in &summary.written {
                    println!("would write  {}", p.display());
                }
                for p in &summary.removed {
                    println!("would remove {}", p.display());
                }
            }
            eprintln!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let report = skillgen::check(config)?;
            if report.is_fresh() {
                eprintln!("{report}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{report}");
                Ok(ExitCode::FAILURE)
            }
        }
        Command::List { json } => {
            let registry = skillgen::load(config)?;
            if json {
                let value = list_json(&registry);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).expect("JSON values always serialize")
                );
            } else {
                for m in registry.sorted() {
                    println!(
                        "{:<32} {:<24} {:<28} {} task(s)",
                        m.model_type.value,
                        m.family.as_str(),
                        format!("{}::{}", m.module, m.struct_name),
                        m.tasks.len()
                    );
                }
                eprintln!("skillgen: {} model types", registry.models.len());
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
                eprintln!("{msg}");
                return Ok(ExitCode::FAILURE);
            };
            show(config, &registry, m);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The relative path of an entry's generated module.
fn module_path(m: &Model) -> String {
    format!("src/{}/{}.rs", m.family.module(), m.module)
}

fn model_json(m: &Model) -> serde_json::Value {
    let tasks: serde_json::Map<String, serde_json::Value> = m
        .tasks
        .iter()
        .map(|t| {
            (
                t.task.as_str().to_owned(),
                t.classes.iter().map(|c| c.value.clone()).collect(),
            )
        })
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

fn show(config: &Config, registry: &Registry, m: &Model) {
    let file = config.out.join(module_path(m));
    println!("model_type:    {}", m.model_type.value);
    println!(
        "defined at:    {}:{}:{} (models[{}])",
        registry.file, m.line, m.column, m.index
    );
    println!("config_class:  {}", m.config_class.value);
    println!("hf_module:     transformers.models.{}", m.hf_module.value);
    println!(
        "family:        {} ({})",
        m.family.value,
        m.family_source.as_str()
    );
    println!(
        "modalities:    {}",
        m.modalities
            .iter()
            .map(|x| x.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if m.deprecated {
        println!("deprecated:    yes");
    }
    if !m.sub_config_of.is_empty() {
        println!(
            "sub_config_of: {}",
            m.sub_config_of
                .iter()
                .map(|s| s.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("tasks:");
    if m.tasks.is_empty() {
        println!("  (none)");
    }
    for t in &m.tasks {
        println!(
            "  {:<28} {:<40} {}",
            t.task.as_str(),
            t.task.hf_mapping(),
            t.classes
                .iter()
                .map(|c| c.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let caps = Capability::all_for(m.family.value, &m.task_list());
    println!(
        "capabilities:  {}",
        if caps.is_empty() {
            "(none)".to_owned()
        } else {
            caps.iter()
                .map(|(c, t)| format!("{} (via {t})", c.method()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "candle:        {}",
        m.candle.as_ref().map_or("(none)", |c| c.value.as_str())
    );
    println!(
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
    );
    if let Some(n) = &m.notes {
        println!(
            "notes:         {}",
            n.value.replace('\n', "\n               ")
        );
    }
    println!(
        "rust:          skills::{}::{} (also skills::{}::{}::{})",
        m.module,
        m.struct_name,
        m.family.module(),
        m.module,
        m.struct_name
    );
    println!("file:          {}", file.display());
}
