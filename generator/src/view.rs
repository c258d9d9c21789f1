//! The view model handed to the templates.
//!
//! Everything a template prints is precomputed here: identifiers, escaped Rust string literals
//! (fields ending in `_lit`/`_lits`, built with [`rust_str`]), documentation lines (already
//! literals), and sorted collections. Templates never see raw YAML values in a position where
//! they become code, and no `HashMap` is ever iterated into output.

use std::collections::BTreeMap;

use serde::Serialize;
use skillgen_vocab::{Backend, Capability, Family, Support, max_job};

use crate::idents::rust_str;
use crate::registry::{Model, Registry};
use crate::support::{Facts, describe};

/// The whole generated crate.
#[derive(Debug, Clone, Serialize)]
pub struct CrateView {
    /// Number of skills.
    pub skill_count: usize,
    /// Number of families with at least one skill.
    pub family_count: usize,
    /// Crate documentation lines (Rust string literals).
    pub docs: Vec<String>,
    /// Families with at least one skill, in vocabulary order.
    pub families: Vec<FamilyView>,
    /// Every skill, sorted by model type.
    pub skills: Vec<SkillView>,
}

/// One family module (`src/<family>/mod.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct FamilyView {
    /// Canonical spelling, e.g. `encoder-decoder`.
    pub name: String,
    /// Identifier spelling, e.g. `encoder_decoder`.
    pub ident: String,
    /// Module name in the generated crate.
    pub module: String,
    /// The template that renders this family's skills.
    pub template: String,
    /// Module documentation lines after the prose (Rust string literals).
    pub docs: Vec<String>,
    /// The family's skills, sorted by module name.
    pub skills: Vec<SkillRef>,
    /// The `family_prose` block rendered from the family template (template text, `//!`
    /// lines; filled in by the renderer).
    pub prose: String,
}

/// A skill as listed in its family module.
#[derive(Debug, Clone, Serialize)]
pub struct SkillRef {
    /// The model type.
    pub model_type: String,
    /// The module identifier.
    pub module: String,
    /// The struct identifier.
    pub struct_name: String,
}

/// One skill module (`src/<family>/<module>.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct SkillView {
    /// The model type (validated charset; for display inside backticks).
    pub model_type: String,
    /// The model type as a Rust string literal.
    pub model_type_lit: String,
    /// Module identifier.
    pub module: String,
    /// Struct identifier.
    pub struct_name: String,
    /// Path of the generated file, relative to the output directory.
    pub path: String,
    /// `crate::<family>::<module>::<Struct>::INFO`.
    pub info_path: String,
    /// Family, canonical spelling.
    pub family: String,
    /// Family, identifier spelling (as written in `#[skill(family = ...)]`).
    pub family_ident: String,
    /// The family's module.
    pub family_module: String,
    /// Modality identifiers, sorted.
    pub modality_idents: Vec<String>,
    /// `config_class` as a literal.
    pub config_class_lit: String,
    /// `hf_module` as a literal.
    pub hf_module_lit: String,
    /// Tasks, sorted.
    pub tasks: Vec<TaskView>,
    /// `candle` as a literal.
    pub candle_lit: Option<String>,
    /// `max` names as literals.
    pub max_lits: Vec<String>,
    /// `native:` entries, sorted by task (`native(task = implementation, ...)`).
    pub native: Vec<NativeView>,
    /// `refused:` entries, sorted by backend (`refused(backend = "reason", ...)`).
    pub refused: Vec<RefusedView>,
    /// `sub_config_of` model types as literals, sorted.
    pub sub_config_of_lits: Vec<String>,
    /// Deprecated in transformers.
    pub deprecated: bool,
    /// The first module doc line (literal).
    pub summary_doc: String,
    /// Module doc lines after the family prose (literals).
    pub module_docs: Vec<String>,
    /// Struct doc lines (literals).
    pub struct_docs: Vec<String>,
}

/// One task of a skill.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Canonical spelling, e.g. `masked-lm`.
    pub name: String,
    /// Identifier spelling, e.g. `masked_lm`.
    pub ident: String,
    /// The transformers auto mapping, e.g. `MODEL_FOR_MASKED_LM`.
    pub hf_mapping: String,
    /// Class names as literals, in registry order.
    pub class_lits: Vec<String>,
}

/// One `native:` entry: identifiers only.
#[derive(Debug, Clone, Serialize)]
pub struct NativeView {
    /// The task's identifier spelling, e.g. `causal_lm`.
    pub task_ident: String,
    /// The implementation's identifier spelling, e.g. `decoder`.
    pub implementation_ident: String,
}

/// One `refused:` entry.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedView {
    /// The backend's canonical spelling, an identifier (`candle`, `max`).
    pub backend: String,
    /// The reason as a Rust string literal.
    pub reason_lit: String,
}

/// A documentation line as a literal: `"text"` → `" text"` (the space `///` would add).
fn doc(line: &str) -> String {
    if line.is_empty() {
        rust_str("")
    } else {
        rust_str(&format!(" {line}"))
    }
}

/// A rustdoc link to `target` showing `` `label` ``, without an explicit target when the label
/// already resolves to it (`rustdoc::redundant_explicit_links`).
fn link(label: &str, target: &str) -> String {
    if label == target {
        format!("[`{label}`]")
    } else {
        format!("[`{label}`]({target})")
    }
}

fn code_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the view. Family prose is filled in later by the renderer.
pub fn build(registry: &Registry) -> CrateView {
    let sorted = registry.sorted();
    let skills: Vec<SkillView> = crate::par::parallel_map(&sorted, |m| skill_view(m));

    let mut by_family: BTreeMap<Family, Vec<&Model>> = BTreeMap::new();
    for m in &sorted {
        by_family.entry(m.family.value).or_default().push(m);
    }
    let families: Vec<FamilyView> = by_family
        .iter()
        .map(|(&f, models)| family_view(f, models))
        .collect();

    let mut docs = vec![
        doc("Typed skills for every Hugging Face model type in the skillgen registry."),
        doc(""),
        doc(&format!(
            "{} skills in {} families. Each skill module is reachable as `skills::<module>` and \
             `skills::<family>::<module>`; [`registry`] looks skills up by model type or class.",
            skills.len(),
            families.len()
        )),
        doc(""),
        doc("| Family | Skills |"),
        doc("|---|---:|"),
    ];
    for f in &families {
        docs.push(doc(&format!(
            "| {} | {} |",
            link(&f.name, &f.module),
            f.skills.len()
        )));
    }
    let sources = registry.sources_map();
    if !sources.is_empty() {
        docs.push(doc(""));
        docs.push(doc("Generated from:"));
        docs.push(doc(""));
        for (name, version) in sources {
            docs.push(doc(&format!("- {name} {version}")));
        }
    }

    CrateView {
        skill_count: skills.len(),
        family_count: families.len(),
        docs,
        families,
        skills,
    }
}

/// The template that renders skills of `family`.
pub fn family_template(family: Family) -> String {
    format!("families/{}.rs.tera", family.as_str())
}

fn family_view(family: Family, models: &[&Model]) -> FamilyView {
    let mut skills: Vec<SkillRef> = models
        .iter()
        .map(|m| SkillRef {
            model_type: m.model_type.value.clone(),
            module: m.module.clone(),
            struct_name: m.struct_name.clone(),
        })
        .collect();
    skills.sort_by(|a, b| a.module.cmp(&b.module));
    let mut docs = vec![
        doc("| Model type | Skill | Config class |"),
        doc("|---|---|---|"),
    ];
    let by_type: BTreeMap<&str, &&Model> =
        models.iter().map(|m| (m.model_type.as_str(), m)).collect();
    for (mt, m) in by_type {
        docs.push(doc(&format!(
            "| {} | {} | `{}` |",
            link(mt, &m.module),
            link(&m.struct_name, &format!("{}::{}", m.module, m.struct_name)),
            m.config_class.value
        )));
    }
    FamilyView {
        name: family.as_str().to_owned(),
        ident: family.ident().to_owned(),
        module: family.module().to_owned(),
        template: family_template(family),
        docs,
        skills,
        prose: String::new(),
    }
}

fn skill_view(m: &Model) -> SkillView {
    let family = m.family.value;
    let tasks: Vec<TaskView> = m
        .tasks
        .iter()
        .map(|t| TaskView {
            name: t.task.as_str().to_owned(),
            ident: t.task.ident().to_owned(),
            hf_mapping: t.task.hf_mapping(),
            class_lits: t.classes.iter().map(|c| rust_str(c)).collect(),
        })
        .collect();
    let mt = m.model_type.as_str();
    let summary = format!(
        "`{mt}`: Hugging Face `{}` (family `{family}`).",
        m.config_class.value
    );

    let mut d: Vec<String> = Vec::new();
    d.push(format!(
        "- Modalities: {}",
        code_list(m.modalities.iter().map(|x| x.as_str()))
    ));
    d.push(format!(
        "- transformers: `transformers.models.{}`, configuration `{}`",
        m.hf_module.value, m.config_class.value
    ));
    d.push(format!(
        "- Family: `{family}` ({})",
        match m.family_source.value {
            crate::registry::FamilySource::Derived => "derived from the transformers sources",
            crate::registry::FamilySource::Curated => "curated by hand",
        }
    ));
    if m.deprecated {
        d.push("- **Deprecated** in transformers.".to_owned());
    }
    if !m.sub_config_of.is_empty() {
        d.push(format!(
            "- Sub-configuration of {}",
            code_list(m.sub_config_of.iter().map(|s| s.as_str()))
        ));
    }
    d.push(String::new());
    d.push("# Tasks".to_owned());
    d.push(String::new());
    if m.tasks.is_empty() {
        d.push("No transformers auto-class lists this model type.".to_owned());
    } else {
        d.push("| Task | Auto mapping | Classes |".to_owned());
        d.push("|---|---|---|".to_owned());
        for t in &m.tasks {
            d.push(format!(
                "| `{}` | `{}` | {} |",
                t.task.value,
                t.task.hf_mapping(),
                code_list(t.classes.iter().map(|c| c.as_str()))
            ));
        }
    }
    let caps = Capability::all_for(family, &m.task_list());
    d.push(String::new());
    d.push("# Capabilities".to_owned());
    d.push(String::new());
    if caps.is_empty() {
        d.push("None: no task of this model type backs a typed capability.".to_owned());
    } else {
        for (c, t) in caps {
            d.push(format!("- `{}` (from `{t}`)", c.method()));
        }
    }
    d.push(String::new());
    d.push("# Implementations".to_owned());
    d.push(String::new());
    implementation_docs(m, &mut d);
    if let Some(notes) = &m.notes {
        d.push(String::new());
        d.push("# Notes".to_owned());
        d.push(String::new());
        // Free text goes into a `text` code fence longer than any backtick run inside it, so
        // it cannot open a doctest or otherwise escape into rustdoc markup.
        let longest = notes
            .value
            .split(|c| c != '`')
            .map(str::len)
            .max()
            .unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        d.push(format!("{fence}text"));
        for line in notes.value.lines() {
            d.push(line.trim_end().to_owned());
        }
        d.push(fence);
    }

    SkillView {
        model_type: mt.to_owned(),
        model_type_lit: rust_str(mt),
        module: m.module.clone(),
        struct_name: m.struct_name.clone(),
        path: format!("src/{}/{}.rs", family.module(), m.module),
        info_path: format!(
            "crate::{}::{}::{}::INFO",
            family.module(),
            m.module,
            m.struct_name
        ),
        family: family.as_str().to_owned(),
        family_ident: family.ident().to_owned(),
        family_module: family.module().to_owned(),
        modality_idents: m.modalities.iter().map(|x| x.ident().to_owned()).collect(),
        config_class_lit: rust_str(&m.config_class),
        hf_module_lit: rust_str(&m.hf_module),
        tasks,
        candle_lit: m.candle.as_ref().map(|c| rust_str(c)),
        max_lits: m.max.iter().map(|s| rust_str(s)).collect(),
        native: m
            .native
            .iter()
            .map(|n| NativeView {
                task_ident: n.task.ident().to_owned(),
                implementation_ident: n.implementation.ident().to_owned(),
            })
            .collect(),
        refused: m
            .refused
            .iter()
            .map(|r| RefusedView {
                backend: r.backend.as_str().to_owned(),
                reason_lit: rust_str(&r.reason),
            })
            .collect(),
        sub_config_of_lits: m.sub_config_of.iter().map(|s| rust_str(s)).collect(),
        deprecated: m.deprecated,
        summary_doc: doc(&summary),
        module_docs: d.iter().map(|l| doc(l)).collect(),
        struct_docs: vec![doc(&format!("Skill for the `{mt}` model type."))],
    }
}

/// The "# Implementations" section: what really runs, per task ([`skillgen_vocab::support`]),
/// and the upstream implementations skillgen does not use.
fn implementation_docs(m: &Model, d: &mut Vec<String>) {
    let facts = Facts::of(m);
    let tasks = facts.tasks(&m.task_list());
    // A refusal covers the whole model type on a backend: its reason is said once, below.
    let mut refusals: Vec<(Backend, &str)> = Vec::new();
    for t in tasks.iter().filter(|t| t.is_listed()) {
        let per_backend: Vec<String> = t
            .statuses
            .iter()
            .map(|(b, s)| match s {
                Support::Refused(why) => {
                    if !refusals.iter().any(|(r, _)| r == b) {
                        refusals.push((*b, why));
                    }
                    format!("{b} **{}** (see below)", s.code())
                }
                _ => format!("{b} {}", describe(s)),
            })
            .collect();
        d.push(format!("- `{}`: {}", t.task, per_backend.join("; ")));
    }
    for (b, why) in refusals {
        d.push(String::new());
        d.push(format!(
            "Refused on {b}: {}",
            crate::support::md_escape(why)
        ));
    }
    if !tasks.iter().any(|t| t.runs()) {
        if tasks.iter().any(|t| t.is_listed()) {
            d.push(String::new());
        }
        d.push(
            "Nothing runs this model type yet: every call is a typed error naming each target \
             tried (see SUPPORT.md)."
                .to_owned(),
        );
    }
    let mut upstream = Vec::new();
    let on = |backend: Backend| tasks.iter().map(move |t| t.on(backend));
    if let Some(module) = &m.candle
        && !on(Backend::Candle).any(|s| s.runs())
    {
        let what = if on(Backend::Candle).any(|s| matches!(s, Support::Refused(_))) {
            "skillgen refuses to run it"
        } else {
            "skillgen does not run it"
        };
        upstream.push(format!(
            "- candle-transformers has a `{}` module; {what}.",
            module.value
        ));
    }
    let archs = facts.max_architectures();
    if !archs.is_empty() && !on(Backend::Max).any(|s| s.runs()) {
        let listed = code_list(archs.iter().copied());
        let refused = on(Backend::Max).any(|s| matches!(s, Support::Refused(_)));
        let why = if refused {
            "skillgen refuses to run this model type there".to_owned()
        } else {
            match tasks
                .iter()
                .find_map(|t| max_job(archs, m.family.value, t.task).err())
            {
                Some(serves) => {
                    format!("skillgen does not run this model type there (they serve {serves})")
                }
                None => "skillgen does not run this model type there".to_owned(),
            }
        };
        upstream.push(format!("- MAX has the architecture(s) {listed}; {why}."));
    }
    if !upstream.is_empty() {
        d.push(String::new());
        d.extend(upstream);
    }
}
