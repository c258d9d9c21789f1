//! What runs: the support status of every (model type, task) on every backend, as decided by
//! [`skillgen_vocab::support`] — the same function the runtime's dispatch asks. This module only
//! gathers an entry's facts for it and presents its answers (module docs, `SUPPORT.md`,
//! `list --json`); it never decides a status itself.

use std::collections::BTreeMap;

use serde::Serialize;
use skillgen_vocab::{Backend, Family, NativeImpl, RunFacts, Support, Task, support};

use crate::registry::{Model, Registry};

/// The status codes of [`Support::code`], in the order tables show them.
pub const STATUS_CODES: &[&str] = &["verified", "delegated", "refused", "not_implemented"];

/// The facts of one entry in the shape [`RunFacts`] borrows.
#[derive(Debug, Clone)]
pub struct Facts<'m> {
    family: Family,
    native: Vec<(Task, NativeImpl)>,
    refused: Vec<(Backend, &'m str)>,
    max: Vec<&'m str>,
}

/// The status of one task of an entry on every backend ([`Backend::ALL`] order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSupport<'a> {
    /// The task.
    pub task: Task,
    /// `(backend, status)` for every backend, in [`Backend::ALL`] order.
    pub statuses: Vec<(Backend, Support<'a>)>,
}

impl TaskSupport<'_> {
    /// The status on `backend`.
    pub fn on(&self, backend: Backend) -> Support<'_> {
        self.statuses
            .iter()
            .find(|(b, _)| *b == backend)
            .map_or(Support::NotImplemented, |(_, s)| *s)
    }

    /// Whether some backend has a status other than `not_implemented` (the rows tables list).
    pub fn is_listed(&self) -> bool {
        self.statuses
            .iter()
            .any(|(_, s)| !matches!(s, Support::NotImplemented))
    }

    /// Whether some backend runs it.
    pub fn runs(&self) -> bool {
        self.statuses.iter().any(|(_, s)| s.runs())
    }
}

impl<'m> Facts<'m> {
    /// The facts of `model`.
    pub fn of(model: &'m Model) -> Self {
        Self {
            family: model.family.value,
            native: model
                .native
                .iter()
                .map(|n| (n.task.value, n.implementation.value))
                .collect(),
            refused: model
                .refused
                .iter()
                .map(|r| (r.backend.value, r.reason.value.as_str()))
                .collect(),
            max: model.max.iter().map(|a| a.value.as_str()).collect(),
        }
    }

    /// The facts as [`skillgen_vocab::support`] takes them.
    pub fn run_facts(&self) -> RunFacts<'_> {
        RunFacts {
            family: self.family,
            native: &self.native,
            refused: &self.refused,
            max: &self.max,
        }
    }

    /// The status of `task` on `backend`.
    pub fn support(&self, task: Task, backend: Backend) -> Support<'_> {
        support(&self.run_facts(), task, backend)
    }

    /// The status of each of `tasks` on every backend.
    pub fn tasks(&self, tasks: &[Task]) -> Vec<TaskSupport<'_>> {
        tasks
            .iter()
            .map(|&task| TaskSupport {
                task,
                statuses: Backend::ALL
                    .iter()
                    .map(|&b| (b, self.support(task, b)))
                    .collect(),
            })
            .collect()
    }

    /// The MAX architectures the registry names for the entry.
    pub fn max_architectures(&self) -> &[&'m str] {
        &self.max
    }
}

/// Escapes Markdown syntax in free text (a refusal reason) so that it renders literally in
/// rustdoc and in `SUPPORT.md` tables: every character that could open markup, an HTML tag,
/// an entity or a table cell is backslash-escaped (CommonMark allows it before any ASCII
/// punctuation).
pub fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '~' | '|'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A status in Markdown, e.g. ``**verified** (`decoder`)``,
/// ``**delegated** (architecture `llama3`)``, `**refused**: reason`, `not implemented`.
pub fn describe(status: &Support<'_>) -> String {
    match status {
        Support::Verified(i) => format!("**{}** (`{i}`)", status.code()),
        Support::Delegated { architecture, .. } => {
            format!("**{}** (architecture `{architecture}`)", status.code())
        }
        Support::Refused(why) => format!("**{}**: {}", status.code(), md_escape(why)),
        Support::NotImplemented => "not implemented".to_owned(),
    }
}

/// A status in plain text (CLI): `verified (decoder)`, `delegated (architecture llama3)`,
/// `refused: reason`, `not implemented`.
pub fn describe_plain(status: &Support<'_>) -> String {
    match status {
        Support::Verified(i) => format!("{} ({i})", status.code()),
        Support::Delegated { architecture, .. } => {
            format!("{} (architecture {architecture})", status.code())
        }
        Support::Refused(why) => format!("{}: {why}", status.code()),
        Support::NotImplemented => "not implemented".to_owned(),
    }
}

/// A status as JSON: `{"status": "verified", "implementation": "decoder"}`,
/// `{"status": "delegated", "architecture": "llama3"}`, `{"status": "refused", "reason": ...}`,
/// `{"status": "not_implemented"}`.
pub fn status_json(status: &Support<'_>) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("status".into(), status.code().into());
    match status {
        Support::Verified(i) => {
            obj.insert("implementation".into(), i.as_str().into());
        }
        Support::Delegated { architecture, .. } => {
            obj.insert("architecture".into(), (*architecture).into());
        }
        Support::Refused(why) => {
            obj.insert("reason".into(), (*why).into());
        }
        Support::NotImplemented => {}
    }
    serde_json::Value::Object(obj)
}

// ---------------------------------------------------------------------------------------------
// SUPPORT.md
// ---------------------------------------------------------------------------------------------

/// What `SUPPORT.md.tera` renders.
#[derive(Debug, Clone, Serialize)]
pub struct SupportView {
    /// The registry's file name, e.g. `models.yaml`.
    pub registry: String,
    /// Number of model types.
    pub model_types: usize,
    /// Number of (model type, task) pairs.
    pub pairs: usize,
    /// Pairs that some backend runs.
    pub pairs_running: usize,
    /// Model types with a task that some backend runs.
    pub model_types_running: usize,
    /// The status codes, in column order.
    pub statuses: Vec<&'static str>,
    /// Per backend, in [`Backend::ALL`] order.
    pub backends: Vec<BackendSummary>,
    /// Per family with at least one model type, in vocabulary order.
    pub families: Vec<FamilySupport>,
}

/// One row of the summary table.
#[derive(Debug, Clone, Serialize)]
pub struct BackendSummary {
    /// The backend as products are named (`candle`, `MAX`).
    pub name: String,
    /// The canonical spelling (`candle`, `max`).
    pub key: String,
    /// (model type, task) pairs per status, in [`STATUS_CODES`] order.
    pub counts: Vec<usize>,
    /// Model types with at least one task this backend runs.
    pub model_types_running: usize,
}

/// One family's section.
#[derive(Debug, Clone, Serialize)]
pub struct FamilySupport {
    /// Canonical spelling.
    pub name: String,
    /// Number of model types.
    pub model_types: usize,
    /// Model types where nothing runs (no task runs on any backend).
    pub nothing_runs: usize,
    /// Every (model type, task) with a status other than `not_implemented` on some backend,
    /// sorted by model type then task.
    pub rows: Vec<SupportRow>,
}

/// One `| model type | task | candle | MAX |` row; cells are Markdown.
#[derive(Debug, Clone, Serialize)]
pub struct SupportRow {
    /// The model type.
    pub model_type: String,
    /// The task, canonical spelling.
    pub task: String,
    /// One cell per backend, in [`Backend::ALL`] order.
    pub cells: Vec<String>,
}

/// Builds the `SUPPORT.md` view from the registry.
pub fn support_view(registry: &Registry, registry_name: &str) -> SupportView {
    let mut backends: Vec<BackendSummary> = Backend::ALL
        .iter()
        .map(|b| BackendSummary {
            name: b.to_string(),
            key: b.as_str().to_owned(),
            counts: vec![0; STATUS_CODES.len()],
            model_types_running: 0,
        })
        .collect();
    let mut families: BTreeMap<Family, FamilySupport> = BTreeMap::new();
    let (mut pairs, mut pairs_running, mut model_types_running) = (0, 0, 0);
    let sorted = registry.sorted();
    for m in &sorted {
        let facts = Facts::of(m);
        let tasks = facts.tasks(&m.task_list());
        let family = families
            .entry(m.family.value)
            .or_insert_with(|| FamilySupport {
                name: m.family.as_str().to_owned(),
                model_types: 0,
                nothing_runs: 0,
                rows: Vec::new(),
            });
        family.model_types += 1;
        let mut runs_on = vec![false; Backend::ALL.len()];
        for t in &tasks {
            pairs += 1;
            for (i, (_, s)) in t.statuses.iter().enumerate() {
                let code = STATUS_CODES
                    .iter()
                    .position(|c| *c == s.code())
                    .expect("STATUS_CODES lists every Support::code");
                backends[i].counts[code] += 1;
                runs_on[i] |= s.runs();
            }
            if t.runs() {
                pairs_running += 1;
            }
            if t.is_listed() {
                family.rows.push(SupportRow {
                    model_type: m.model_type.value.clone(),
                    task: t.task.as_str().to_owned(),
                    cells: t.statuses.iter().map(|(_, s)| describe(s)).collect(),
                });
            }
        }
        for (b, runs) in backends.iter_mut().zip(&runs_on) {
            b.model_types_running += usize::from(*runs);
        }
        if tasks.iter().any(TaskSupport::runs) {
            model_types_running += 1;
        } else {
            family.nothing_runs += 1;
        }
    }
    SupportView {
        registry: registry_name.to_owned(),
        model_types: sorted.len(),
        pairs,
        pairs_running,
        model_types_running,
        statuses: STATUS_CODES.to_vec(),
        backends,
        families: families.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_in_reasons_is_inert() {
        assert_eq!(
            md_escape("a | b `c` [d](e) <f> *g* _h_ & \\"),
            "a \\| b \\`c\\` \\[d\\](e) \\<f\\> \\*g\\* \\_h\\_ \\& \\\\"
        );
        assert_eq!(
            md_escape("Granite's 0.11.1 FFN/GELU"),
            "Granite's 0.11.1 FFN/GELU"
        );
    }
}
