//! skillgen: generates the typed `skills` crate from the model registry (`models.yaml`).
//!
//! The pipeline is **parse → validate everything → render → write**:
//!
//! 1. [`load`] parses the registry with saphyr (every node keeps its position, see
//!    [`yaml`] for why saphyr) into a typed [`Registry`], checking shapes, keys and
//!    vocabulary values, then runs every semantic rule ([`validate`]). All problems are
//!    collected and reported together as [`Error::Registry`], sorted by position.
//! 2. [`render()`] builds a typed view model ([`view`]) and renders the Tera templates
//!    (`templates/`), parses every file with `syn`, and formats it with `prettyplease`.
//! 3. [`generate`] compares the rendered tree with `OUT/src` and, if anything differs, swaps in
//!    the new tree atomically ([`tree`]). [`check`] only compares.
//!
//! Nothing is written under OUT unless loading, validation and rendering all succeeded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod diag;
pub mod idents;
pub mod registry;
pub mod render;
pub mod tree;
pub mod validate;
pub mod view;
pub mod yaml;

pub use diag::Diagnostic;
pub use registry::{FamilySource, Model, Registry, Spanned, TaskClasses};

/// The command that regenerates the skills crate.
pub const GENERATE_COMMAND: &str = "cargo run -p skillgen -- generate";

/// Where the registry, the templates and the output crate are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The registry (`models.yaml`).
    pub registry: PathBuf,
    /// The template directory (`templates/`).
    pub templates: PathBuf,
    /// The output crate (`generated/`); the generator owns its `src/` only.
    pub out: PathBuf,
}

impl Config {
    /// `models.yaml`, `templates/` and `generated/` under `root`.
    pub fn in_root(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Self {
            registry: root.join("models.yaml"),
            templates: root.join("templates"),
            out: root.join("generated"),
        }
    }

    /// The workspace this generator was built in (`CARGO_MANIFEST_DIR/..`), unless the current
    /// directory contains a `models.yaml`, in which case the current directory.
    pub fn workspace_default() -> Self {
        if let Ok(cwd) = std::env::current_dir()
            && cwd.join("models.yaml").is_file()
        {
            return Self::in_root(cwd);
        }
        Self::in_root(workspace_root())
    }
}

/// The workspace root this crate was compiled in.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry has problems (syntax, shape or validation); all of them are listed.
    #[error("{}", RegistryReport { file, diagnostics })]
    Registry {
        /// The registry file as shown in diagnostics.
        file: String,
        /// Every problem, sorted by position.
        diagnostics: Vec<Diagnostic>,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A template failed to load or render.
    #[error("template `{template}`{}: {message}", for_model(model_type))]
    Template {
        /// The template (or template directory).
        template: String,
        /// The skill being rendered, if any.
        model_type: Option<String>,
        /// Tera's message.
        message: String,
    },
    /// A template produced something that is not valid Rust: a bug in the template.
    #[error(
        "internal error: template `{template}`{} produced invalid Rust: {message}\n--- rendered text ---\n{source_text}",
        for_model(model_type)
    )]
    InvalidOutput {
        /// The template.
        template: String,
        /// The skill being rendered, if any.
        model_type: Option<String>,
        /// syn's message.
        message: String,
        /// What the template rendered.
        source_text: String,
    },
}

fn for_model(model_type: &Option<String>) -> String {
    model_type
        .as_deref()
        .map(|m| format!(" (model type `{m}`)"))
        .unwrap_or_default()
}

struct RegistryReport<'a> {
    file: &'a str,
    diagnostics: &'a [Diagnostic],
}

impl fmt::Display for RegistryReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        diag::write_report(f, self.file, self.diagnostics)
    }
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The registry diagnostics (empty for other kinds of error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Error::Registry { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

/// How to show `path` in diagnostics: relative to the current directory when below it.
fn display_name(path: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = path.strip_prefix(&cwd)
    {
        return rel.display().to_string();
    }
    path.display().to_string()
}

/// Loads and validates the registry.
pub fn load(config: &Config) -> Result<Registry, Error> {
    let bytes = std::fs::read(&config.registry).map_err(|e| Error::io(&config.registry, e))?;
    let file = display_name(&config.registry);
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        Error::Registry {
            diagnostics: vec![Diagnostic {
                file: file.clone(),
                line,
                column,
                index: None,
                model_type: None,
                field: None,
                message: format!(
                    "the registry is not valid UTF-8 (invalid byte 0x{:02x})",
                    e.as_bytes()[valid.len()]
                ),
            }],
            file: file.clone(),
        }
    })?;
    Registry::parse_str(&text, &file)
}

/// Renders the whole `src/` tree (paths relative to `config.out`) without touching the disk.
pub fn render(config: &Config) -> Result<BTreeMap<PathBuf, String>, Error> {
    let registry = load(config)?;
    render_registry(config, &registry)
}

/// Renders an already loaded registry.
pub fn render_registry(
    config: &Config,
    registry: &Registry,
) -> Result<BTreeMap<PathBuf, String>, Error> {
    render::Templates::load(&config.templates)?.render(registry)
}

/// What [`generate`] did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Number of skills in the registry.
    pub skills: usize,
    /// Number of files in the generated tree.
    pub files: usize,
    /// Files written (new or changed), relative to OUT.
    pub written: Vec<PathBuf>,
    /// Files left as they were.
    pub unchanged: usize,
    /// Files deleted, relative to OUT.
    pub removed: Vec<PathBuf>,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (skills, files) = (self.skills, self.files);
        let (written, unchanged, removed) =
            (self.written.len(), self.unchanged, self.removed.len());
        let secs = self.elapsed.as_secs_f64();
        if self.dry_run {
            write!(
                f,
                "skillgen: {skills} skills, {files} files: would write {written}, keep {unchanged} unchanged, remove {removed} (dry run, nothing written) in {secs:.2}s"
            )
        } else {
            write!(
                f,
                "skillgen: {skills} skills, {files} files: {written} written, {unchanged} unchanged, {removed} removed in {secs:.2}s"
            )
        }
    }
}

/// Regenerates `OUT/src`: renders everything, then writes only if something changed, swapping
/// the whole tree atomically. With `dry_run`, only reports what would change.
pub fn generate(config: &Config, dry_run: bool) -> Result<Summary, Error> {
    let start = Instant::now();
    let registry = load(config)?;
    let rendered = render_registry(config, &registry)?;
    // Everything is validated and rendered; only now touch OUT.
    if !dry_run {
        tree::recover(&config.out)?;
    }
    let disk = tree::read(&config.out)?;
    let diff = tree::diff(&rendered, &disk);
    if !dry_run && !diff.is_clean() {
        tree::apply(&config.out, &rendered, &diff)?;
    }
    let mut written = diff.missing.clone();
    written.extend(diff.stale.iter().cloned());
    written.sort();
    Ok(Summary {
        skills: registry.models.len(),
        files: rendered.len(),
        written,
        unchanged: diff.unchanged.len(),
        removed: diff.extra,
        dry_run,
        elapsed: start.elapsed(),
    })
}

/// How `OUT/src` differs from what [`generate`] would write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Files whose contents differ, relative to OUT.
    pub stale: Vec<PathBuf>,
    /// Files that should exist but do not.
    pub missing: Vec<PathBuf>,
    /// Files that exist but should not.
    pub extra: Vec<PathBuf>,
    /// The output directory checked.
    pub out: PathBuf,
    /// Number of files in the rendered tree.
    pub files: usize,
}

impl CheckReport {
    /// Whether `OUT/src` is exactly what `generate` would write.
    pub fn is_fresh(&self) -> bool {
        self.stale.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = self.out.join(tree::SRC_DIR);
        if self.is_fresh() {
            return write!(
                f,
                "skillgen: {} is up to date ({} files)",
                src.display(),
                self.files
            );
        }
        writeln!(
            f,
            "skillgen: {} is out of date: {} stale, {} missing, {} extra",
            src.display(),
            self.stale.len(),
            self.missing.len(),
            self.extra.len()
        )?;
        for (label, paths) in [
            ("stale", &self.stale),
            ("missing", &self.missing),
            ("extra", &self.extra),
        ] {
            for p in paths {
                writeln!(f, "  {label:<8} {}", p.display())?;
            }
        }
        write!(f, "run `{GENERATE_COMMAND}` to update it")
    }
}

/// Compares `OUT/src` with what [`generate`] would write, without writing anything.
pub fn check(config: &Config) -> Result<CheckReport, Error> {
    let rendered = render(config)?;
    let disk = tree::read(&config.out)?;
    let diff = tree::diff(&rendered, &disk);
    Ok(CheckReport {
        stale: diff.stale,
        missing: diff.missing,
        extra: diff.extra,
        out: config.out.clone(),
        files: rendered.len(),
    })
}
