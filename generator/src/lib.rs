//! skillgen: generates the typed `skills` crate from the model registry (`models.yaml`).
//!
//! The pipeline is **parse → validate everything → render → write**:
//!
//! 1. [`load`] parses the registry with saphyr (every node keeps its position, see
//!    [`yaml`] for why saphyr) into a typed [`Registry`], checking shapes, keys and
//!    vocabulary values, then runs every semantic rule ([`validate`]). All problems are
//!    collected and reported together as [`Error::Registry`], sorted by position.
//! 2. [`render()`] builds a typed view model ([`view`]) and renders the Tera templates
//!    (`templates/`), parses every file with `syn`, and formats it with `prettyplease`
//!    ([`mod@format`]), on all cores.
//! 3. [`generate`] compares the rendered tree with `OUT/src` and, if anything differs, swaps in
//!    the new tree atomically ([`tree`]). [`check`] only compares.
//! 4. The same run renders `SUPPORT.md` ([`support`]: what runs, per model type, task and
//!    backend) and replaces it atomically when its bytes change.
//! 5. Last, [`generate`] records a [`digest`] of its inputs and outputs in
//!    `OUT/.skillgen-digest`. The next run (or [`check`]) that finds the same inputs and an
//!    output still matching the digest file for file skips steps 1–4 (`--force` does not).
//!
//! Nothing is written unless loading, validation and rendering all succeeded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod diag;
pub mod digest;
pub mod format;
pub mod idents;
mod par;
pub mod registry;
pub mod render;
pub mod support;
pub mod tree;
pub mod validate;
pub mod view;
pub mod yaml;

pub use diag::Diagnostic;
pub use registry::{
    FamilySource, Model, NativeEntry, RefusedEntry, Registry, Spanned, TaskClasses,
};

/// The command that regenerates the skills crate.
pub const GENERATE_COMMAND: &str = "cargo run -p skillgen -- generate";

/// The support table's default file name.
pub const SUPPORT_FILE: &str = "SUPPORT.md";

/// Where the registry, the templates and the output crate are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The registry (`models.yaml`).
    pub registry: PathBuf,
    /// The template directory (`templates/`).
    pub templates: PathBuf,
    /// The output crate (`generated/`); the generator owns its `src/` only.
    pub out: PathBuf,
    /// The support table (`SUPPORT.md`), by default next to the output crate
    /// ([`Config::default_support`]).
    pub support: PathBuf,
}

impl Config {
    /// `models.yaml`, `templates/` and `generated/` under `root`.
    pub fn in_root(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Self {
            registry: root.join("models.yaml"),
            templates: root.join("templates"),
            out: root.join("generated"),
            support: root.join(SUPPORT_FILE),
        }
    }

    /// `SUPPORT.md` in the directory that holds `out` (the repository root for `generated`).
    pub fn default_support(out: &Path) -> PathBuf {
        match out.components().next_back() {
            Some(std::path::Component::CurDir | std::path::Component::ParentDir) => {
                out.join("..").join(SUPPORT_FILE)
            }
            _ => out
                .parent()
                .map_or_else(|| out.join(SUPPORT_FILE), |p| p.join(SUPPORT_FILE)),
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

/// The registry's name as generated files show it (see [`render`]'s header): its file name.
pub(crate) fn registry_file_name(config: &Config) -> String {
    let shown = display_name(&config.registry);
    Path::new(&shown)
        .file_name()
        .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned())
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
    load_bytes(config, bytes)
}

/// Parses and validates registry bytes read from `config.registry`.
fn load_bytes(config: &Config, bytes: Vec<u8>) -> Result<Registry, Error> {
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

/// Renders `SUPPORT.md` without touching the disk.
pub fn render_support(config: &Config) -> Result<String, Error> {
    let registry = load(config)?;
    render_support_registry(config, &registry)
}

/// Renders `SUPPORT.md` for an already loaded registry.
pub fn render_support_registry(config: &Config, registry: &Registry) -> Result<String, Error> {
    render::Templates::load(&config.templates)?.render_support(registry)
}

/// How [`generate_with`] and [`check_with`] run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Report what would change without writing anything (`generate` only).
    pub dry_run: bool,
    /// Render and compare even when OUT's [`digest`] says nothing changed since the last run.
    pub force: bool,
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
    /// The support table's path.
    pub support: PathBuf,
    /// Whether the support table was written (or, for a dry run, would be).
    pub support_written: bool,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Whether OUT's [`digest`] showed that nothing changed, so nothing was rendered.
    pub from_digest: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (skills, files) = (self.skills, self.files);
        let (written, unchanged, removed) =
            (self.written.len(), self.unchanged, self.removed.len());
        let secs = self.elapsed.as_secs_f64();
        let support = display_name(&self.support);
        if self.dry_run {
            let what = if self.support_written {
                "would write"
            } else {
                "would keep"
            };
            write!(
                f,
                "skillgen: {skills} skills, {files} files: would write {written}, keep {unchanged} unchanged, remove {removed}; {what} {support} (dry run, nothing written) in {secs:.2}s"
            )?;
        } else {
            let what = if self.support_written {
                "written"
            } else {
                "unchanged"
            };
            write!(
                f,
                "skillgen: {skills} skills, {files} files: {written} written, {unchanged} unchanged, {removed} removed; {support} {what} in {secs:.2}s"
            )?;
        }
        if self.from_digest {
            write!(
                f,
                " (inputs and outputs match {}; --force re-renders)",
                digest::FILE
            )?;
        }
        Ok(())
    }
}

/// Regenerates `OUT/src`: renders everything, then writes only if something changed, swapping
/// the whole tree atomically. With `dry_run`, only reports what would change. Skips rendering
/// when OUT's [`digest`] shows that nothing changed (see [`generate_with`]).
pub fn generate(config: &Config, dry_run: bool) -> Result<Summary, Error> {
    generate_with(
        config,
        Options {
            dry_run,
            force: false,
        },
    )
}

/// [`generate`] with [`Options`]. Unless `force`, a run first checks OUT's [`digest`]: if the
/// registry, the templates and the generator are those of the last run and `OUT/src` and the
/// support table are still exactly what it wrote, nothing is rendered or written. Otherwise it
/// renders, writes what differs, and (unless `dry_run`) writes the new digest last.
pub fn generate_with(config: &Config, options: Options) -> Result<Summary, Error> {
    let start = Instant::now();
    let inputs = digest::Inputs::read(config)?;
    if !options.force
        && let Some(key) = inputs.key
        && let Some(fresh) = digest::fresh(config, key)
    {
        if !options.dry_run {
            // Leftovers of a killed run whose inputs were reverted since.
            recover(config)?;
        }
        return Ok(Summary {
            skills: fresh.skills,
            files: fresh.files.len(),
            written: Vec::new(),
            unchanged: fresh.files.len(),
            removed: Vec::new(),
            support: config.support.clone(),
            support_written: false,
            dry_run: options.dry_run,
            from_digest: true,
            elapsed: start.elapsed(),
        });
    }
    let registry = load_bytes(config, inputs.registry)?;
    let templates = render::Templates::from_sources(&config.templates, &inputs.templates?)?;
    let (rendered, support) = std::thread::scope(|s| {
        let support = s.spawn(|| templates.render_support(&registry));
        let rendered = templates.render(&registry);
        (
            rendered,
            support.join().expect("SUPPORT.md thread panicked"),
        )
    });
    let (rendered, support) = (rendered?, support?);
    // Everything is validated and rendered; only now touch OUT.
    if !options.dry_run {
        recover(config)?;
    }
    let disk = tree::read(&config.out)?;
    let diff = tree::diff(&rendered, &disk);
    drop(disk);
    if !options.dry_run && !diff.is_clean() {
        tree::apply(&config.out, &rendered, &diff)?;
    }
    let support_written = if options.dry_run {
        tree::file_state(&config.support, support.as_bytes())?.is_some()
    } else {
        tree::write_file_if_changed(&config.support, support.as_bytes())?
    };
    // Last: the digest describes a complete, durable tree.
    if !options.dry_run
        && let Some(key) = inputs.key
    {
        match digest::encode(key, registry.models.len(), &rendered, &support) {
            Some(text) => {
                digest::write(&config.out, &text)?;
            }
            None => digest::remove(&config.out)?,
        }
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
        support: config.support.clone(),
        support_written,
        dry_run: options.dry_run,
        from_digest: false,
        elapsed: start.elapsed(),
    })
}

/// Repairs what an interrupted run left in OUT and next to the support table.
fn recover(config: &Config) -> Result<(), Error> {
    tree::recover(&config.out)?;
    tree::recover_file(&config.support)?;
    tree::recover_file(&digest::path(&config.out))
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
    /// The support table checked.
    pub support: PathBuf,
    /// How the support table differs (`stale` or `missing`), if it does.
    pub support_state: Option<&'static str>,
    /// Whether OUT's [`digest`] showed the tree fresh, so nothing was rendered.
    pub from_digest: bool,
}

impl CheckReport {
    /// Whether `OUT/src` is exactly what `generate` would write.
    pub fn is_fresh(&self) -> bool {
        self.src_is_fresh() && self.support_state.is_none()
    }

    /// Whether `OUT/src` alone is fresh.
    pub fn src_is_fresh(&self) -> bool {
        self.stale.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = self.out.join(tree::SRC_DIR);
        let support = display_name(&self.support);
        if self.is_fresh() {
            write!(
                f,
                "skillgen: {} is up to date ({} files), and so is {support}",
                src.display(),
                self.files
            )?;
            if self.from_digest {
                write!(
                    f,
                    " (inputs and outputs match {}; --force re-renders)",
                    digest::FILE
                )?;
            }
            return Ok(());
        }
        if self.src_is_fresh() {
            writeln!(
                f,
                "skillgen: {} is up to date ({} files)",
                src.display(),
                self.files
            )?;
        } else {
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
        }
        if let Some(state) = self.support_state {
            writeln!(f, "skillgen: {support} is out of date ({state})")?;
        }
        write!(f, "run `{GENERATE_COMMAND}` to update it")
    }
}

/// Compares `OUT/src` with what [`generate`] would write, without writing anything. A digest
/// that matches the inputs and the disk answers without rendering (see [`check_with`]).
pub fn check(config: &Config) -> Result<CheckReport, Error> {
    check_with(config, Options::default())
}

/// [`check`] with [`Options`]: with `force`, always renders and compares (`dry_run` is
/// ignored: a check never writes).
pub fn check_with(config: &Config, options: Options) -> Result<CheckReport, Error> {
    let inputs = digest::Inputs::read(config)?;
    if !options.force
        && let Some(key) = inputs.key
        && let Some(fresh) = digest::fresh(config, key)
    {
        return Ok(CheckReport {
            out: config.out.clone(),
            files: fresh.files.len(),
            support: config.support.clone(),
            from_digest: true,
            ..CheckReport::default()
        });
    }
    let registry = load_bytes(config, inputs.registry)?;
    let templates = render::Templates::from_sources(&config.templates, &inputs.templates?)?;
    let rendered = templates.render(&registry)?;
    let support = templates.render_support(&registry)?;
    let disk = tree::read(&config.out)?;
    let diff = tree::diff(&rendered, &disk);
    Ok(CheckReport {
        stale: diff.stale,
        missing: diff.missing,
        extra: diff.extra,
        out: config.out.clone(),
        files: rendered.len(),
        support: config.support.clone(),
        support_state: tree::file_state(&config.support, support.as_bytes())?,
        from_digest: false,
    })
}
