//! Static description of a skill, emitted by `#[derive(Skill)]` as a plain const struct literal.

use serde::Serialize;
use skillgen_vocab::{Backend, Capability, Family, Modality, NativeImpl, RunFacts, Support, Task};

/// One task a model type supports, with the transformers classes that implement it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    /// The task.
    #[serde(serialize_with = "crate::ser::task")]
    pub task: Task,
    /// transformers classes for this task (e.g. `BertForMaskedLM`); may be empty.
    pub hf_classes: &'static [&'static str],
}

/// Everything the registry knows about one model type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SkillInfo {
    /// The Hugging Face `model_type` (as in `config.json`).
    pub model_type: &'static str,
    /// The Rust struct implementing the skill.
    pub struct_name: &'static str,
    /// The architecture family.
    #[serde(serialize_with = "crate::ser::family")]
    pub family: Family,
    /// Input modalities.
    #[serde(serialize_with = "crate::ser::modalities")]
    pub modalities: &'static [Modality],
    /// The transformers config class, e.g. `BertConfig`.
    pub config_class: Option<&'static str>,
    /// The `transformers.models.<module>` module.
    pub hf_module: Option<&'static str>,
    /// Supported tasks.
    pub tasks: &'static [TaskInfo],
    /// The candle-transformers module for this model type upstream, if any (informational:
    /// what skillgen runs natively is [`SkillInfo::native`]).
    pub candle: Option<&'static str>,
    /// MAX architecture names serving this model type; empty when MAX has none.
    pub max: &'static [&'static str],
    /// The registry's `native:`: task → skillgen's candle implementation, verified against a
    /// transformers reference.
    #[serde(serialize_with = "crate::ser::native")]
    pub native: &'static [(Task, NativeImpl)],
    /// The registry's `refused:`: backend → why skillgen refuses to run this model type there.
    #[serde(serialize_with = "crate::ser::refused")]
    pub refused: &'static [(Backend, &'static str)],
    /// The model types whose config lists this one as a sub-config (e.g. `clip` for `clip_text_model`).
    pub sub_config_of: &'static [&'static str],
    /// Deprecated in transformers.
    pub deprecated: bool,
}

impl SkillInfo {
    /// Whether the skill lists `task`.
    pub fn has_task(&self, task: Task) -> bool {
        self.tasks.iter().any(|t| t.task == task)
    }

    /// The tasks, in declaration order.
    pub fn task_list(&self) -> Vec<Task> {
        self.tasks.iter().map(|t| t.task).collect()
    }

    /// The transformers classes for `task` (empty if the task is not listed).
    pub fn hf_classes(&self, task: Task) -> &'static [&'static str] {
        self.tasks
            .iter()
            .find(|t| t.task == task)
            .map_or(&[], |t| t.hf_classes)
    }

    /// The task serving `capability`, if the skill has that capability.
    pub fn task_for(&self, capability: Capability) -> Option<Task> {
        capability
            .tasks_for(self.family)
            .iter()
            .copied()
            .find(|&t| self.has_task(t))
    }

    /// Every capability this skill has, with the task serving it, in declaration order.
    pub fn capabilities(&self) -> Vec<(Capability, Task)> {
        Capability::ALL
            .iter()
            .filter_map(|&c| self.task_for(c).map(|t| (c, t)))
            .collect()
    }

    /// The registry facts that decide what runs.
    pub fn run_facts(&self) -> RunFacts<'static> {
        RunFacts {
            family: self.family,
            native: self.native,
            refused: self.refused,
            max: self.max,
        }
    }

    /// The support status of `task` on `backend`: the one table of what runs (see
    /// [`skillgen_vocab::support`]). Dispatch checks it before anything else.
    pub fn support(&self, task: Task, backend: Backend) -> Support<'static> {
        skillgen_vocab::support(&self.run_facts(), task, backend)
    }

    /// Whether the registry names a MAX architecture for this model type.
    pub fn has_max(&self) -> bool {
        !self.max.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: SkillInfo = SkillInfo {
        model_type: "bert",
        struct_name: "Bert",
        family: Family::Encoder,
        modalities: &[Modality::Text],
        config_class: Some("BertConfig"),
        hf_module: Some("bert"),
        tasks: &[
            TaskInfo {
                task: Task::BaseModel,
                hf_classes: &["BertModel"],
            },
            TaskInfo {
                task: Task::MaskedLm,
                hf_classes: &["BertForMaskedLM"],
            },
        ],
        candle: Some("bert"),
        max: &[],
        native: &[(Task::MaskedLm, NativeImpl::Encoder)],
        refused: &[],
        sub_config_of: &[],
        deprecated: false,
    };

    #[test]
    fn helpers_agree_with_vocab() {
        assert!(INFO.has_task(Task::MaskedLm));
        assert!(!INFO.has_task(Task::CausalLm));
        assert_eq!(INFO.hf_classes(Task::MaskedLm), ["BertForMaskedLM"]);
        assert!(INFO.hf_classes(Task::CausalLm).is_empty());
        assert_eq!(
            INFO.capabilities(),
            Capability::all_for(INFO.family, &INFO.task_list())
        );
        assert_eq!(
            INFO.capabilities(),
            [
                (Capability::Embed, Task::BaseModel),
                (Capability::FillMask, Task::MaskedLm)
            ]
        );
        assert!(!INFO.has_max());
        assert_eq!(
            INFO.support(Task::MaskedLm, Backend::Candle),
            Support::Verified(NativeImpl::Encoder)
        );
        assert_eq!(
            INFO.support(Task::BaseModel, Backend::Candle),
            Support::NotImplemented
        );
    }

    #[test]
    fn serializes_with_canonical_spellings() {
        let v = serde_json::to_value(INFO).unwrap();
        assert_eq!(v["family"], "encoder");
        assert_eq!(v["modalities"][0], "text");
        assert_eq!(v["tasks"][1]["task"], "masked-lm");
        assert_eq!(v["config_class"], "BertConfig");
        assert_eq!(v["sub_config_of"], serde_json::json!([]));
        assert_eq!(v["native"], serde_json::json!({"masked-lm": "encoder"}));
    }
}
