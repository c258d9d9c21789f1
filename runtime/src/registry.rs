//! The registry of all generated skills, sorted by model type.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use crate::backend::Backends;
use crate::info::SkillInfo;
use crate::model::read_config;
use crate::skill::{DynSkill, SkillState};
use crate::{SkillError, TargetSpec};

/// All skills of a generated crate. `skills` must be sorted by `model_type` (checked at compile
/// time when the registry is built in a `static`/`const`).
#[derive(Debug)]
pub struct Registry {
    skills: &'static [&'static SkillInfo],
    by_class: OnceLock<HashMap<&'static str, Vec<&'static SkillInfo>>>,
}

const fn str_lt(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

impl Registry {
    /// A registry over `skills`, which must be strictly sorted by `model_type`
    /// (a `static` registry over unsorted skills fails to compile).
    pub const fn new(skills: &'static [&'static SkillInfo]) -> Self {
        let mut i = 1;
        while i < skills.len() {
            assert!(
                str_lt(skills[i - 1].model_type, skills[i].model_type),
                "Registry::new: skills must be strictly sorted by model_type"
            );
            i += 1;
        }
        Self {
            skills,
            by_class: OnceLock::new(),
        }
    }

    /// Every skill, sorted by model type.
    pub fn all(&self) -> &'static [&'static SkillInfo] {
        self.skills
    }

    /// Number of skills.
    pub fn len(&self) -> usize {
        self.skills.len()
    }

    /// Whether there are no skills.
    pub fn is_empty(&self) -> bool {
        self.skills.is_empty()
    }

    /// The skill for a model type (binary search).
    pub fn by_model_type(&self, model_type: &str) -> Option<&'static SkillInfo> {
        self.skills
            .binary_search_by(|s| s.model_type.cmp(model_type))
            .ok()
            .map(|i| self.skills[i])
    }

    /// Every skill listing the transformers class `class` (e.g. `BertForMaskedLM`) for some task.
    pub fn by_hf_class(&self, class: &str) -> Vec<&'static SkillInfo> {
        let index = self.by_class.get_or_init(|| {
            let mut m: HashMap<&'static str, Vec<&'static SkillInfo>> = HashMap::new();
            for &s in self.skills {
                for t in s.tasks {
                    for &c in t.hf_classes {
                        let v = m.entry(c).or_default();
                        if !v.iter().any(|x| std::ptr::eq(*x, s)) {
                            v.push(s);
                        }
                    }
                }
            }
            m
        });
        index.get(class).cloned().unwrap_or_default()
    }

    /// The closest registered model type to `model_type`, for did-you-mean messages.
    pub fn suggest(&self, model_type: &str) -> Option<&'static str> {
        skillgen_vocab::did_you_mean(model_type, self.skills.iter().map(|s| s.model_type))
    }

    /// Load the model in `dir`, choosing the skill from `config.json`'s `model_type`.
    pub fn load_dir(
        &self,
        backends: &'static Backends,
        dir: impl AsRef<Path>,
        spec: impl Into<TargetSpec>,
    ) -> Result<DynSkill, SkillError> {
        let dir = dir.as_ref();
        let config = read_config(dir)?;
        let Some(info) = self.by_model_type(&config.model_type) else {
            return Err(SkillError::UnknownModelType {
                suggestion: self.suggest(&config.model_type).map(str::to_owned),
                model_type: config.model_type,
                path: config.path,
            });
        };
        SkillState::from_config(info, backends, dir, config, spec.into()).map(DynSkill::new)
    }
}
