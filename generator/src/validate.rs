//! Semantic rules over the whole registry. Every rule reports a diagnostic; nothing
//! stops at the first problem.
//!
//! Rules (one test each in `tests/validation.rs`):
//! - `model_type`: non-empty, ≤ 64 chars, `[A-Za-z0-9][A-Za-z0-9_.-]*`, no `/`, `\`, `..`,
//!   control characters; unique.
//! - derived module and struct identifiers ([`crate::idents`]) must not collide.
//! - every task is accepted by the entry's family ([`Family::accepts`]).
//! - `sub_config_of` names existing model types.
//! - class names (`config_class`, task classes) are identifier-like.
//! - `hf_module`: `[A-Za-z0-9_.]+`; `candle`: `[a-z0-9_]+`; `max`: `[A-Za-z0-9_]+`.
//! - no control or bidi-override characters in any string (`notes` may contain `\n`).
//! - no duplicates in lists.
//! - `native:` names only tasks the entry lists under `tasks:`; `refused:` reasons are one
//!   non-empty line; a task is not both `native` (candle) and `refused` on candle.

use std::collections::{BTreeMap, HashMap};

use skillgen_vocab::{Backend, Family, did_you_mean};

use crate::diag::{Ctx, Sink, printable};
use crate::idents::{module_ident, struct_ident};
use crate::registry::{Document, Model, Partial, Registry, Spanned};

/// Longest accepted model type.
pub const MAX_MODEL_TYPE_LEN: usize = 64;

/// Unicode bidirectional controls (`text_direction_codepoint_in_*` lints deny them in Rust
/// source, and they can make reviewed text differ from compiled text).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Why `s` contains a forbidden character, if it does.
fn bad_char(s: &str, allow_newline: bool) -> Option<String> {
    s.chars()
        .find(|&c| (c.is_control() && !(allow_newline && c == '\n')) || is_bidi_control(c))
        .map(|c| {
            let kind = if c.is_control() {
                "a control character"
            } else {
                "a bidirectional-override character"
            };
            format!("contains {kind} (`{}`)", c.escape_default())
        })
}

fn is_ident_like(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why `s` is not a valid model type, if it is not.
pub fn model_type_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("model type must not be empty".to_owned());
    }
    let shown = printable(s);
    if let Some(why) = bad_char(s, false) {
        return Some(format!("model type `{shown}` {why}"));
    }
    if s.contains(['/', '\\']) {
        return Some(format!(
            "model type `{shown}` contains a path separator (`/` or `\\`)"
        ));
    }
    if s.contains("..") {
        return Some(format!("model type `{shown}` contains `..`"));
    }
    let n = s.chars().count();
    if n > MAX_MODEL_TYPE_LEN {
        return Some(format!(
            "model type `{shown}` is {n} characters long (at most {MAX_MODEL_TYPE_LEN} allowed)"
        ));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some(format!(
            "model type `{shown}` must start with an ASCII letter or digit"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Some(format!(
            "model type `{shown}` contains `{c}`: only ASCII letters, digits, `_`, `.` and `-` are allowed"
        ));
    }
    None
}

/// A character-set check and the pattern it enforces (for the message).
type Charset = (fn(&str) -> bool, &'static str);

/// Checks one string field: control characters, then the charset (if any).
fn check_string(
    sink: &mut Sink,
    ctx: &Ctx,
    field: &str,
    value: &Spanned<String>,
    what: &str,
    charset: Option<Charset>,
) {
    if value.is_empty() {
        sink.push(
            ctx,
            value.pos(),
            Some(field),
            format!("{what} must not be empty"),
        );
        return;
    }
    if let Some(why) = bad_char(value, field == "notes") {
        sink.push(
            ctx,
            value.pos(),
            Some(field),
            format!("{what} `{}` {why}", printable(value)),
        );
        return;
    }
    if let Some((ok, pattern)) = charset
        && !ok(value)
    {
        sink.push(
            ctx,
            value.pos(),
            Some(field),
            format!("{what} `{}` must match `{pattern}`", printable(value)),
        );
    }
}

fn check_duplicates(
    sink: &mut Sink,
    ctx: &Ctx,
    field: &str,
    items: &[Spanned<String>],
    what: &str,
) {
    for (i, item) in items.iter().enumerate() {
        if items[..i].iter().any(|x| x.value == item.value) {
            sink.push(
                ctx,
                item.pos(),
                Some(&format!("{field}[{i}]")),
                format!("duplicate {what} `{}`", printable(item)),
            );
        }
    }
}

/// First entry claiming a name: (index, model_type, line, column).
type Claim = (usize, String, usize, usize);

/// Runs every rule, and builds the [`Registry`] if the document is complete.
pub(crate) fn validate(doc: Document, sink: &mut Sink) -> Option<Registry> {
    let mut by_type: BTreeMap<String, Claim> = BTreeMap::new();
    let mut by_module: BTreeMap<String, Claim> = BTreeMap::new();
    let mut by_struct: BTreeMap<String, Claim> = BTreeMap::new();
    let file = doc.file.clone();

    // Pass 1: per-entry rules, uniqueness and identifier collisions (file order, so the
    // second of two conflicting entries is the one reported).
    for p in &doc.models {
        check_entry(p, sink);
        let Some(mt) = &p.model_type else { continue };
        if model_type_problem(mt).is_some() {
            continue;
        }
        let claim: Claim = (p.index, mt.value.clone(), mt.line, mt.column);
        if let Some((i, _, line, col)) = by_type.get(&mt.value) {
            sink.push(
                &p.ctx,
                mt.pos(),
                Some("model_type"),
                format!(
                    "duplicate model type `{}` (first defined in models[{i}] at {file}:{line}:{col})",
                    mt.value
                ),
            );
            continue;
        }
        by_type.insert(mt.value.clone(), claim.clone());
        for (map, ident, what) in [
            (&mut by_module, module_ident(mt), "module name"),
            (&mut by_struct, struct_ident(mt), "struct name"),
        ] {
            if let Some((i, other, line, col)) = map.get(&ident) {
                sink.push(
                    &p.ctx,
                    mt.pos(),
                    Some("model_type"),
                    format!(
                        "model type `{}` collides with model type `{other}` (models[{i}] at {file}:{line}:{col}): both become the Rust {what} `{ident}`; rename one of them",
                        mt.value
                    ),
                );
            } else {
                map.insert(ident, claim.clone());
            }
        }
    }

    // Pass 2: references between entries.
    for p in &doc.models {
        for (i, r) in p.sub_config_of.iter().enumerate() {
            if bad_char(r, false).is_some() || by_type.contains_key(&r.value) {
                continue;
            }
            let mut msg = format!(
                "`sub_config_of` names unknown model type `{}`",
                printable(r)
            );
            if let Some(s) = did_you_mean(r, by_type.keys().map(String::as_str)) {
                msg.push_str(&format!(" (did you mean `{s}`?)"));
            }
            sink.push(&p.ctx, r.pos(), Some(&format!("sub_config_of[{i}]")), msg);
        }
    }
    // Pass 3: `sub_config_of` must not loop (a → b → a); self-references are reported per entry.
    let parents: HashMap<&str, Vec<&str>> = doc
        .models
        .iter()
        .filter_map(|p| {
            let mt = p.model_type.as_ref()?;
            Some((
                mt.value.as_str(),
                p.sub_config_of.iter().map(|r| r.value.as_str()).collect(),
            ))
        })
        .collect();
    for p in &doc.models {
        let Some(mt) = p.model_type.as_ref() else {
            continue;
        };
        for (i, r) in p.sub_config_of.iter().enumerate() {
            if r.value == mt.value {
                continue;
            }
            if let Some(path) = sub_config_path(&parents, &r.value, &mt.value) {
                sink.push(
                    &p.ctx,
                    r.pos(),
                    Some(&format!("sub_config_of[{i}]")),
                    format!(
                        "`sub_config_of` forms a cycle: {} → {}",
                        mt.value,
                        path.join(" → ")
                    ),
                );
            }
        }
    }

    if !sink.diagnostics.is_empty() {
        return None;
    }
    let version = doc.version?;
    let mut models = Vec::with_capacity(doc.models.len());
    for p in doc.models {
        models.push(finish(p)?);
    }
    Some(Registry {
        file: doc.file,
        version,
        sources: doc.sources,
        models,
    })
}

fn check_entry(p: &Partial, sink: &mut Sink) {
    let ctx = &p.ctx;
    if let Some(mt) = &p.model_type
        && let Some(why) = model_type_problem(mt)
    {
        sink.push(ctx, mt.pos(), Some("model_type"), why);
    }
    if let Some(v) = &p.config_class {
        check_string(
            sink,
            ctx,
            "config_class",
            v,
            "config class",
            Some((is_ident_like, "[A-Za-z_][A-Za-z0-9_]*")),
        );
    }
    if let Some(v) = &p.hf_module {
        check_string(
            sink,
            ctx,
            "hf_module",
            v,
            "transformers module",
            Some((
                |s| {
                    s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
                        && !s.starts_with('.')
                        && !s.ends_with('.')
                        && !s.contains("..")
                },
                "[A-Za-z0-9_]+(\\.[A-Za-z0-9_]+)*",
            )),
        );
    }
    if let Some(v) = &p.candle {
        check_string(
            sink,
            ctx,
            "candle",
            v,
            "candle module",
            Some((
                |s| {
                    s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                },
                "[a-z0-9_]+",
            )),
        );
    }
    if let Some(v) = &p.notes {
        check_string(sink, ctx, "notes", v, "notes", None);
    }
    for (i, v) in p.max.iter().enumerate() {
        check_string(
            sink,
            ctx,
            &format!("max[{i}]"),
            v,
            "MAX architecture",
            Some((
                |s| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "[A-Za-z0-9_]+",
            )),
        );
    }
    check_duplicates(sink, ctx, "max", &p.max, "MAX architecture");
    check_support(p, sink);
    for (i, v) in p.sub_config_of.iter().enumerate() {
        if let Some(why) = bad_char(v, false) {
            sink.push(
                ctx,
                v.pos(),
                Some(&format!("sub_config_of[{i}]")),
                format!("model type `{}` {why}", printable(v)),
            );
        }
        if p.model_type.as_ref().is_some_and(|mt| mt.value == v.value) {
            sink.push(
                ctx,
                v.pos(),
                Some(&format!("sub_config_of[{i}]")),
                format!("`{}` cannot be a sub-configuration of itself", printable(v)),
            );
        }
    }
    check_duplicates(sink, ctx, "sub_config_of", &p.sub_config_of, "model type");

    for t in &p.tasks {
        let field = format!("tasks.{}", t.task.value);
        if let Some(f) = &p.family
            && !f.accepts(t.task.value)
        {
            sink.push(
                ctx,
                t.task.pos(),
                Some(&field),
                family_task_message(f.value, t.task.value),
            );
        }
        for (i, c) in t.classes.iter().enumerate() {
            check_string(
                sink,
                ctx,
                &format!("{field}[{i}]"),
                c,
                "class name",
                Some((is_ident_like, "[A-Za-z_][A-Za-z0-9_]*")),
            );
        }
        check_duplicates(sink, ctx, &field, &t.classes, "class");
    }
}

/// `native:` and `refused:`.
fn check_support(p: &Partial, sink: &mut Sink) {
    let ctx = &p.ctx;
    let candle_refusal = p
        .refused
        .iter()
        .find(|r| r.backend.value == Backend::Candle);
    for n in &p.native {
        let task = n.task.value;
        let field = format!("native.{task}");
        if !p.tasks.iter().any(|t| t.task.value == task) {
            let listed = if p.tasks.is_empty() {
                "it lists none".to_owned()
            } else {
                format!(
                    "it lists {}",
                    p.tasks
                        .iter()
                        .map(|t| format!("`{}`", t.task.value))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            sink.push(
                ctx,
                n.task.pos(),
                Some(&field),
                format!(
                    "`native` names task `{task}`, which is not one of this entry's `tasks` ({listed})"
                ),
            );
        }
        if let Some(r) = candle_refusal {
            sink.push(
                ctx,
                n.task.pos(),
                Some(&field),
                format!(
                    "task `{task}` is `native` (verified on candle) but the entry is `refused` on candle (line {}); remove one of them",
                    r.backend.line
                ),
            );
        }
    }
    for r in &p.refused {
        let field = format!("refused.{}", r.backend.value.as_str());
        if r.reason.contains('\n') {
            sink.push(
                ctx,
                r.reason.pos(),
                Some(&field),
                format!(
                    "refusal reason `{}` must be a single line (it is shown in tables and listings)",
                    printable(&r.reason)
                ),
            );
            continue;
        }
        check_string(sink, ctx, &field, &r.reason, "refusal reason", None);
    }
}

/// The chain of `sub_config_of` links from `from` to `to` (both included), if there is one.
fn sub_config_path<'a>(
    parents: &HashMap<&'a str, Vec<&'a str>>,
    from: &'a str,
    to: &str,
) -> Option<Vec<&'a str>> {
    let mut came_from: HashMap<&str, &str> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen: std::collections::HashSet<&str> = [from].into();
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = vec![node];
            let mut cur = node;
            while let Some(prev) = came_from.get(cur) {
                path.push(prev);
                cur = prev;
            }
            path.reverse();
            return Some(path);
        }
        for &next in parents.get(node).into_iter().flatten() {
            if seen.insert(next) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

fn family_task_message(family: Family, task: skillgen_vocab::Task) -> String {
    let accepted = family
        .accepted_categories()
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "task `{task}` (category `{}`) is not allowed for family `{family}`, which accepts task categories {accepted}",
        task.category()
    )
}

/// Builds the final entry; `None` if a required field is missing (already reported).
fn finish(p: Partial) -> Option<Model> {
    let model_type = p.model_type?;
    let module = module_ident(&model_type);
    let struct_name = struct_ident(&model_type);
    let mut sub_config_of = p.sub_config_of;
    sub_config_of.sort_by(|a, b| a.value.cmp(&b.value));
    Some(Model {
        index: p.index,
        line: p.line,
        column: p.column,
        model_type,
        config_class: p.config_class?,
        hf_module: p.hf_module?,
        family: p.family?,
        family_source: p.family_source?,
        modalities: p.modalities?,
        deprecated: p.deprecated,
        sub_config_of,
        tasks: p.tasks,
        candle: p.candle,
        max: p.max,
        native: p.native,
        refused: p.refused,
        notes: p.notes,
        module,
        struct_name,
    })
}
