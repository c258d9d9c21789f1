//! The typed registry: `models.yaml` after parsing and validation.
//!
//! [`Registry::parse_str`] reads the YAML ([`crate::yaml`]), checks its shape here (types, unknown
//! and missing keys, vocabulary values) and then runs every semantic rule
//! ([`crate::validate`]). All problems are collected; a [`Registry`] only exists when there are
//! none, so everything downstream (view model, templates) can rely on valid data.

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::Serialize;
use skillgen_vocab::{Backend, Family, Modality, NativeImpl, Task, did_you_mean};

use crate::diag::{Ctx, Sink, printable};
use crate::yaml::{Kind, Node};

/// A value with the 1-based position it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl<T> Spanned<T> {
    pub(crate) fn new(value: T, node: &Node) -> Self {
        Self {
            value,
            line: node.line,
            column: node.column,
        }
    }

    /// `(line, column)`.
    pub fn pos(&self) -> (usize, usize) {
        (self.line, self.column)
    }
}

impl<T> Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// How an entry's `family` was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FamilySource {
    /// Derived automatically from the transformers sources.
    Derived,
    /// Set by hand.
    Curated,
}

impl FamilySource {
    /// The spelling used in `models.yaml`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FamilySource::Derived => "derived",
            FamilySource::Curated => "curated",
        }
    }
}

/// The validated registry.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The file name used in diagnostics.
    pub file: String,
    /// The format version (always 1).
    pub version: Spanned<u64>,
    /// Provenance (`name → version`), in file order.
    pub sources: Vec<(Spanned<String>, Spanned<String>)>,
    /// Every entry, in file order.
    pub models: Vec<Model>,
}

/// One validated `models[]` entry, with its derived Rust identifiers.
#[derive(Debug, Clone)]
pub struct Model {
    /// Position in `models`.
    pub index: usize,
    /// 1-based line of the entry.
    pub line: usize,
    /// 1-based column of the entry.
    pub column: usize,
    /// The Hugging Face `model_type`, e.g. `xlm-roberta`.
    pub model_type: Spanned<String>,
    /// The transformers configuration class, e.g. `XLMRobertaConfig`.
    pub config_class: Spanned<String>,
    /// The transformers module, e.g. `xlm_roberta`.
    pub hf_module: Spanned<String>,
    /// The architecture family.
    pub family: Spanned<Family>,
    /// Whether `family` was derived or curated.
    pub family_source: Spanned<FamilySource>,
    /// Input modalities, sorted, without duplicates.
    pub modalities: Vec<Spanned<Modality>>,
    /// Deprecated in transformers.
    pub deprecated: bool,
    /// Model types whose configuration embeds this one, sorted.
    pub sub_config_of: Vec<Spanned<String>>,
    /// Tasks with their classes, sorted by task; classes keep file order (primary first).
    pub tasks: Vec<TaskClasses>,
    /// The candle-transformers module, if candle implements this model type.
    pub candle: Option<Spanned<String>>,
    /// MAX architecture names, in file order.
    pub max: Vec<Spanned<String>>,
    /// `native:`: task → the candle implementation skillgen runs and has verified, sorted by
    /// task; every task is one of `tasks`.
    pub native: Vec<NativeEntry>,
    /// `refused:`: backend → why skillgen refuses to run this model type there (one line),
    /// sorted by backend.
    pub refused: Vec<RefusedEntry>,
    /// Free-form notes (may contain newlines).
    pub notes: Option<Spanned<String>>,
    /// The Rust module identifier, e.g. `xlm_roberta`.
    pub module: String,
    /// The Rust struct identifier, e.g. `XlmRoberta`.
    pub struct_name: String,
}

/// One `tasks:` entry.
#[derive(Debug, Clone)]
pub struct TaskClasses {
    /// The task (the key's position).
    pub task: Spanned<Task>,
    /// Its Hugging Face classes, non-empty, in file order.
    pub classes: Vec<Spanned<String>>,
}

/// One `native:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeEntry {
    /// The task (the key's position).
    pub task: Spanned<Task>,
    /// The candle implementation (the value's position).
    pub implementation: Spanned<NativeImpl>,
}

/// One `refused:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEntry {
    /// The backend (the key's position).
    pub backend: Spanned<Backend>,
    /// Why skillgen refuses to run the model type there: non-empty, one line.
    pub reason: Spanned<String>,
}

impl Registry {
    /// Parses and validates registry source text. `file` is the name shown in diagnostics.
    pub fn parse_str(source: &str, file: &str) -> Result<Registry, crate::Error> {
        let mut sink = Sink::new(file);
        let parsed = parse_document(source, &mut sink);
        let registry = parsed.and_then(|doc| crate::validate::validate(doc, &mut sink));
        if sink.diagnostics.is_empty()
            && let Some(r) = registry
        {
            return Ok(r);
        }
        if sink.diagnostics.is_empty() {
            // Every path that drops an entry reports why; this is a safety net.
            sink.push(
                &Ctx::default(),
                (1, 1),
                None,
                "internal error: the registry is incomplete but no problem was reported",
            );
        }
        Err(crate::Error::Registry {
            file: file.to_owned(),
            diagnostics: sink.into_sorted(),
        })
    }

    /// The entry for `model_type`.
    pub fn get(&self, model_type: &str) -> Option<&Model> {
        self.models.iter().find(|m| *m.model_type == model_type)
    }

    /// Entries sorted by model type.
    pub fn sorted(&self) -> Vec<&Model> {
        let mut v: Vec<&Model> = self.models.iter().collect();
        v.sort_by(|a, b| a.model_type.value.cmp(&b.model_type.value));
        v
    }

    /// The closest model type to a misspelt one.
    pub fn suggest(&self, model_type: &str) -> Option<&str> {
        did_you_mean(
            model_type,
            self.models.iter().map(|m| m.model_type.as_str()),
        )
    }

    /// The provenance map, sorted by name.
    pub fn sources_map(&self) -> BTreeMap<&str, &str> {
        self.sources
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

impl Model {
    /// The task list without positions.
    pub fn task_list(&self) -> Vec<Task> {
        self.tasks.iter().map(|t| t.task.value).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Shape parsing: YAML nodes → partially filled entries, with every shape problem reported.
// ---------------------------------------------------------------------------------------------

/// Top-level keys of the registry.
pub const TOP_LEVEL_KEYS: &[&str] = &["version", "sources", "models"];

/// Keys of a `models[]` entry.
pub const ENTRY_KEYS: &[&str] = &[
    "model_type",
    "config_class",
    "hf_module",
    "family",
    "family_source",
    "modalities",
    "deprecated",
    "sub_config_of",
    "tasks",
    "candle",
    "max",
    "native",
    "refused",
    "notes",
];

/// The document after shape parsing.
#[derive(Debug)]
pub(crate) struct Document {
    pub file: String,
    pub version: Option<Spanned<u64>>,
    pub sources: Vec<(Spanned<String>, Spanned<String>)>,
    pub models: Vec<Partial>,
}

/// An entry whose required fields may be missing (already reported).
#[derive(Debug, Default)]
pub(crate) struct Partial {
    pub index: usize,
    pub line: usize,
    pub column: usize,
    pub ctx: Ctx,
    pub model_type: Option<Spanned<String>>,
    pub config_class: Option<Spanned<String>>,
    pub hf_module: Option<Spanned<String>>,
    pub family: Option<Spanned<Family>>,
    pub family_source: Option<Spanned<FamilySource>>,
    pub modalities: Option<Vec<Spanned<Modality>>>,
    pub deprecated: bool,
    pub sub_config_of: Vec<Spanned<String>>,
    pub tasks: Vec<TaskClasses>,
    pub candle: Option<Spanned<String>>,
    pub max: Vec<Spanned<String>>,
    pub native: Vec<NativeEntry>,
    pub refused: Vec<RefusedEntry>,
    pub notes: Option<Spanned<String>>,
}

fn parse_document(source: &str, sink: &mut Sink) -> Option<Document> {
    let root = match crate::yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            sink.push(
                &Ctx::default(),
                (1, 1),
                None,
                "the registry is empty: expected a mapping with `version` and `models`",
            );
            return None;
        }
        Err(e) => {
            sink.push(
                &Ctx::default(),
                (e.line, e.column),
                None,
                format!("YAML syntax error: {}", e.message),
            );
            return None;
        }
    };
    let top = Ctx::default();
    let Kind::Map(entries) = &root.kind else {
        sink.push(
            &top,
            root.pos(),
            None,
            format!(
                "expected a mapping with `version` and `models` at the top level, found {}",
                root.describe()
            ),
        );
        return None;
    };
    let mut doc = Document {
        file: sink.file.clone(),
        version: None,
        sources: Vec::new(),
        models: Vec::new(),
    };
    let (mut saw_version, mut saw_models) = (false, false);
    for (key, value) in entries {
        let Some(k) = key_str(key, &top, None, sink) else {
            continue;
        };
        match k {
            "version" => {
                saw_version = true;
                match &value.kind {
                    Kind::Int(1, _) => doc.version = Some(Spanned::new(1, value)),
                    Kind::Int(_, raw) => sink.push(
                        &top,
                        value.pos(),
                        Some("version"),
                        format!(
                            "unsupported registry version `{raw}` (this skillgen reads version 1)"
                        ),
                    ),
                    _ => sink.push(
                        &top,
                        value.pos(),
                        Some("version"),
                        format!("expected the integer 1, found {}", value.describe()),
                    ),
                }
            }
            "sources" => parse_sources(value, &top, sink, &mut doc.sources),
            "models" => {
                saw_models = true;
                let Kind::Seq(items) = &value.kind else {
                    sink.push(
                        &top,
                        value.pos(),
                        Some("models"),
                        format!("expected a list of entries, found {}", value.describe()),
                    );
                    continue;
                };
                for (index, item) in items.iter().enumerate() {
                    if let Some(p) = parse_entry(index, item, sink) {
                        doc.models.push(p);
                    }
                }
            }
            other => unknown_key(other, key, TOP_LEVEL_KEYS, &top, None, sink),
        }
    }
    for (present, name) in [(saw_version, "version"), (saw_models, "models")] {
        if !present {
            sink.push(
                &top,
                root.pos(),
                None,
                format!("missing required top-level key `{name}`"),
            );
        }
    }
    Some(doc)
}

fn parse_sources(
    value: &Node,
    top: &Ctx,
    sink: &mut Sink,
    out: &mut Vec<(Spanned<String>, Spanned<String>)>,
) {
    match &value.kind {
        Kind::Null => {}
        Kind::Map(entries) => {
            for (k, v) in entries {
                let Some(name) = k.scalar_text() else {
                    sink.push(
                        top,
                        k.pos(),
                        Some("sources"),
                        format!("expected a source name, found {}", k.describe()),
                    );
                    continue;
                };
                let field = format!("sources.{}", printable(&name));
                let Some(text) = v.scalar_text() else {
                    sink.push(
                        top,
                        v.pos(),
                        Some(&field),
                        format!("expected a version string, found {}", v.describe()),
                    );
                    continue;
                };
                out.push((Spanned::new(name, k), Spanned::new(text, v)));
            }
        }
        _ => sink.push(
            top,
            value.pos(),
            Some("sources"),
            format!(
                "expected a mapping of source name to version, found {}",
                value.describe()
            ),
        ),
    }
}

fn key_str<'n>(key: &'n Node, ctx: &Ctx, parent: Option<&str>, sink: &mut Sink) -> Option<&'n str> {
    match &key.kind {
        Kind::Str(s) => Some(s),
        _ => {
            sink.push(
                ctx,
                key.pos(),
                parent,
                format!("expected a string key, found {}", key.describe()),
            );
            None
        }
    }
}

fn unknown_key(
    key: &str,
    node: &Node,
    allowed: &[&'static str],
    ctx: &Ctx,
    parent: Option<&str>,
    sink: &mut Sink,
) {
    let mut msg = format!("unknown key `{}`", printable(key));
    match did_you_mean(key, allowed.iter().copied()) {
        Some(s) => msg.push_str(&format!(" (did you mean `{s}`?)")),
        None => msg.push_str(&format!(
            " (expected one of {})",
            allowed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    let field = match parent {
        Some(p) => format!("{p}.{}", printable(key)),
        None => printable(key),
    };
    sink.push(ctx, node.pos(), Some(&field), msg);
}

fn expect_str(node: &Node, ctx: &Ctx, field: &str, sink: &mut Sink) -> Option<Spanned<String>> {
    match &node.kind {
        Kind::Str(s) => Some(Spanned::new(s.clone(), node)),
        _ => {
            sink.push(
                ctx,
                node.pos(),
                Some(field),
                format!("expected a string, found {}", node.describe()),
            );
            None
        }
    }
}

/// A list of strings; `null` counts as empty.
fn expect_str_list(node: &Node, ctx: &Ctx, field: &str, sink: &mut Sink) -> Vec<Spanned<String>> {
    match &node.kind {
        Kind::Null => Vec::new(),
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| expect_str(n, ctx, &format!("{field}[{i}]"), sink))
            .collect(),
        _ => {
            sink.push(
                ctx,
                node.pos(),
                Some(field),
                format!("expected a list of strings, found {}", node.describe()),
            );
            Vec::new()
        }
    }
}

fn parse_entry(index: usize, item: &Node, sink: &mut Sink) -> Option<Partial> {
    let mut ctx = Ctx {
        index: Some(index),
        model_type: None,
    };
    let Kind::Map(entries) = &item.kind else {
        sink.push(
            &ctx,
            item.pos(),
            None,
            format!(
                "expected a mapping (a model entry), found {}",
                item.describe()
            ),
        );
        return None;
    };
    // Find model_type first so that every other problem in the entry can name it.
    for (k, v) in entries {
        if let (Kind::Str(k), Kind::Str(v)) = (&k.kind, &v.kind)
            && k == "model_type"
        {
            ctx.model_type = Some(v.clone());
        }
    }
    let mut p = Partial {
        index,
        line: item.line,
        column: item.column,
        ..Partial::default()
    };
    let mut family_null: Option<&Node> = None;
    for (key, value) in entries {
        let Some(k) = key_str(key, &ctx, None, sink) else {
            continue;
        };
        match k {
            "model_type" => p.model_type = expect_str(value, &ctx, k, sink),
            "config_class" => p.config_class = expect_str(value, &ctx, k, sink),
            "hf_module" => p.hf_module = expect_str(value, &ctx, k, sink),
            "notes" => p.notes = expect_str(value, &ctx, k, sink),
            "candle" => p.candle = expect_str(value, &ctx, k, sink),
            "family" => match &value.kind {
                Kind::Null => family_null = Some(value),
                Kind::Str(s) if s.is_empty() => family_null = Some(value),
                _ => {
                    if let Some(s) = expect_str(value, &ctx, k, sink) {
                        match Family::parse(&s) {
                            Ok(f) => p.family = Some(Spanned::new(f, value)),
                            Err(e) => sink.push(&ctx, value.pos(), Some(k), e.to_string()),
                        }
                    }
                }
            },
            "family_source" => {
                if let Some(s) = expect_str(value, &ctx, k, sink) {
                    let fs = match s.as_str() {
                        "derived" => Some(FamilySource::Derived),
                        "curated" => Some(FamilySource::Curated),
                        other => {
                            let mut msg = format!("unknown family source `{}`", printable(other));
                            match did_you_mean(other, ["derived", "curated"]) {
                                Some(sug) => msg.push_str(&format!(" (did you mean `{sug}`?)")),
                                None => msg.push_str(" (expected `derived` or `curated`)"),
                            }
                            sink.push(&ctx, value.pos(), Some(k), msg);
                            None
                        }
                    };
                    p.family_source = fs.map(|f| Spanned::new(f, value));
                }
            }
            "deprecated" => match &value.kind {
                Kind::Bool(b) => p.deprecated = *b,
                _ => sink.push(
                    &ctx,
                    value.pos(),
                    Some(k),
                    format!("expected `true` or `false`, found {}", value.describe()),
                ),
            },
            "modalities" => p.modalities = parse_modalities(value, &ctx, sink),
            "sub_config_of" => p.sub_config_of = expect_str_list(value, &ctx, k, sink),
            "max" => p.max = expect_str_list(value, &ctx, k, sink),
            "tasks" => p.tasks = parse_tasks(value, &ctx, sink),
            "native" => p.native = parse_native(value, &ctx, sink),
            "refused" => p.refused = parse_refused(value, &ctx, sink),
            other => unknown_key(other, key, ENTRY_KEYS, &ctx, None, sink),
        }
    }
    let present = |name: &str| {
        entries
            .iter()
            .any(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == name))
    };
    if p.family.is_none() && (family_null.is_some() || !present("family")) {
        let pos = family_null.map_or(item.pos(), Node::pos);
        sink.push(
            &ctx,
            pos,
            Some("family"),
            format!(
                "family not set: resolve by hand by setting `family` to one of {} (and `family_source: curated`)",
                Family::ALL
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    for name in [
        "model_type",
        "config_class",
        "hf_module",
        "family_source",
        "modalities",
    ] {
        if !present(name) {
            sink.push(
                &ctx,
                item.pos(),
                None,
                format!("missing required key `{name}`"),
            );
        }
    }
    p.ctx = ctx;
    Some(p)
}

fn parse_modalities(value: &Node, ctx: &Ctx, sink: &mut Sink) -> Option<Vec<Spanned<Modality>>> {
    let field = "modalities";
    let Kind::Seq(items) = &value.kind else {
        sink.push(
            ctx,
            value.pos(),
            Some(field),
            format!(
                "expected a non-empty list of modalities, found {}",
                value.describe()
            ),
        );
        return None;
    };
    if items.is_empty() {
        sink.push(
            ctx,
            value.pos(),
            Some(field),
            format!(
                "`modalities` must not be empty (use one or more of {})",
                Modality::ALL
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return None;
    }
    let mut out: Vec<Spanned<Modality>> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let Some(s) = expect_str(item, ctx, &f, sink) else {
            ok = false;
            continue;
        };
        match Modality::parse(&s) {
            Ok(m) => {
                if out.iter().any(|x| x.value == m) {
                    sink.push(
                        ctx,
                        item.pos(),
                        Some(&f),
                        format!("duplicate modality `{m}`"),
                    );
                    ok = false;
                } else {
                    out.push(Spanned::new(m, item));
                }
            }
            Err(e) => {
                sink.push(ctx, item.pos(), Some(&f), e.to_string());
                ok = false;
            }
        }
    }
    out.sort_by_key(|m| m.value);
    ok.then_some(out)
}

fn parse_tasks(value: &Node, ctx: &Ctx, sink: &mut Sink) -> Vec<TaskClasses> {
    let entries = match &value.kind {
        Kind::Null => return Vec::new(),
        Kind::Map(entries) => entries,
        _ => {
            sink.push(
                ctx,
                value.pos(),
                Some("tasks"),
                format!(
                    "expected a mapping of task to class names, found {}",
                    value.describe()
                ),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = key_str(k, ctx, Some("tasks"), sink) else {
            continue;
        };
        let field = format!("tasks.{}", printable(name));
        let task = match Task::parse(name) {
            Ok(t) => Some(t),
            Err(e) => {
                sink.push(ctx, k.pos(), Some(&field), e.to_string());
                None
            }
        };
        let classes = match &v.kind {
            Kind::Seq(items) if !items.is_empty() => items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| expect_str(n, ctx, &format!("{field}[{i}]"), sink))
                .collect(),
            Kind::Seq(_) | Kind::Null => {
                sink.push(
                    ctx,
                    v.pos(),
                    Some(&field),
                    format!(
                        "task `{}` lists no classes: give at least one class name or remove the task",
                        printable(name)
                    ),
                );
                Vec::new()
            }
            _ => {
                sink.push(
                    ctx,
                    v.pos(),
                    Some(&field),
                    format!("expected a list of class names, found {}", v.describe()),
                );
                Vec::new()
            }
        };
        if let Some(task) = task
            && !classes.is_empty()
        {
            out.push(TaskClasses {
                task: Spanned::new(task, k),
                classes,
            });
        }
    }
    out.sort_by_key(|t| t.task.value);
    out
}

/// The entries of a `field:` mapping (`null` counts as empty); anything else is reported.
fn expect_map<'n>(
    value: &'n Node,
    ctx: &Ctx,
    field: &str,
    what: &str,
    sink: &mut Sink,
) -> &'n [(Node, Node)] {
    match &value.kind {
        Kind::Null => &[],
        Kind::Map(entries) => entries,
        _ => {
            sink.push(
                ctx,
                value.pos(),
                Some(field),
                format!("expected a mapping of {what}, found {}", value.describe()),
            );
            &[]
        }
    }
}

/// `native:` task → native implementation (both canonical spellings), sorted by task. Whether
/// each task is one of the entry's `tasks` is a semantic rule ([`crate::validate`]).
fn parse_native(value: &Node, ctx: &Ctx, sink: &mut Sink) -> Vec<NativeEntry> {
    let mut out = Vec::new();
    for (k, v) in expect_map(value, ctx, "native", "task to native implementation", sink) {
        let Some(name) = key_str(k, ctx, Some("native"), sink) else {
            continue;
        };
        let field = format!("native.{}", printable(name));
        let task = match Task::parse(name) {
            Ok(t) => Some(t),
            Err(e) => {
                sink.push(ctx, k.pos(), Some(&field), e.to_string());
                None
            }
        };
        let implementation = match &v.kind {
            Kind::Str(s) => match NativeImpl::parse(s) {
                Ok(i) => Some(i),
                Err(e) => {
                    sink.push(ctx, v.pos(), Some(&field), e.to_string());
                    None
                }
            },
            _ => {
                sink.push(
                    ctx,
                    v.pos(),
                    Some(&field),
                    format!(
                        "expected a native implementation ({}), found {}",
                        NativeImpl::ALL
                            .iter()
                            .map(|i| format!("`{i}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        v.describe()
                    ),
                );
                None
            }
        };
        if let (Some(task), Some(implementation)) = (task, implementation) {
            out.push(NativeEntry {
                task: Spanned::new(task, k),
                implementation: Spanned::new(implementation, v),
            });
        }
    }
    out.sort_by_key(|n| n.task.value);
    out
}

/// `refused:` backend → reason, sorted by backend. The reason's text rules (non-empty, one
/// line, no control or bidi characters) are checked in [`crate::validate`].
fn parse_refused(value: &Node, ctx: &Ctx, sink: &mut Sink) -> Vec<RefusedEntry> {
    let mut out = Vec::new();
    for (k, v) in expect_map(value, ctx, "refused", "backend to reason", sink) {
        let Some(name) = key_str(k, ctx, Some("refused"), sink) else {
            continue;
        };
        let field = format!("refused.{}", printable(name));
        let backend = match Backend::parse(name) {
            Ok(b) => Some(b),
            Err(e) => {
                sink.push(ctx, k.pos(), Some(&field), e.to_string());
                None
            }
        };
        let reason = expect_str(v, ctx, &field, sink);
        if let (Some(backend), Some(reason)) = (backend, reason) {
            out.push(RefusedEntry {
                backend: Spanned::new(backend, k),
                reason,
            });
        }
    }
    out.sort_by_key(|r| r.backend.value);
    out
}
