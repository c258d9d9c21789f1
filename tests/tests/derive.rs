//! The derive against the real runtime and the backends of `skills`: a generated-style skill and
//! a hand-written custom one.

use std::path::PathBuf;

use skillgen_runtime::{
    Capabilities, Capability, Family, MapEnv, Modality, MojoMaxTarget, Registry, Skill, SkillError,
    SkillInfo, SkillState, Target, TargetSpec, Task,
};

#[derive(Debug, skillgen_runtime::Skill)]
#[skill(
    model_type = "bert",
    family = encoder,
    modalities(text),
    config_class = "BertConfig",
    hf_module = "bert",
    tasks(base_model("BertModel"), causal_lm("BertLMHeadModel"), masked_lm("BertForMaskedLM")),
    candle = "bert",
    max("bert"),
    sub_config_of("clip"),
    deprecated,
    backends = skills::backends,
)]
pub struct Bert {
    state: ::skillgen_runtime::SkillState,
}

#[derive(Debug, Skill)]
#[skill(model_type = "clip", family = vision_text, tasks(base_model, zero_shot_image_classification("CLIPModel")), backends = skills::backends)]
pub struct Clip {
    state: SkillState,
}

/// A user's own skill: extra fields are filled with `Default` by `from_state`.
#[derive(Debug, Skill)]
#[skill(model_type = "my-llama", family = decoder, tasks(causal_lm), max("LlamaForCausalLM"), backends = skills::backends)]
pub struct MyLlama<T: Default + std::fmt::Debug> {
    #[skill(state)]
    inner: SkillState,
    extra: T,
    calls: u32,
}

static SKILLS: &[&SkillInfo] = &[Bert::INFO, Clip::INFO, MyLlama::<u8>::INFO];
static REGISTRY: Registry = Registry::new(SKILLS);

fn model_dir(name: &str, config: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("skillgen-rt-derive-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

#[test]
fn info_is_the_attribute() {
    let i = Bert::INFO;
    assert_eq!(i.model_type, "bert");
    assert_eq!(i.struct_name, "Bert");
    assert_eq!(i.family, Family::Encoder);
    assert_eq!(i.modalities, [Modality::Text]);
    assert_eq!(i.config_class, Some("BertConfig"));
    assert_eq!(i.hf_module, Some("bert"));
    assert_eq!(i.tasks.len(), 3);
    assert_eq!(i.hf_classes(Task::CausalLm), ["BertLMHeadModel"]);
    assert_eq!(i.candle, Some("bert"));
    assert_eq!(i.max, ["bert"]);
    assert_eq!(i.sub_config_of, &["clip"]);
    assert!(i.deprecated);
    assert!(std::ptr::eq(Bert::INFO, <Bert as Skill>::INFO));
    // Defaults: vision_text → text + image; no optional keys.
    assert_eq!(Clip::INFO.modalities, [Modality::Text, Modality::Image]);
    assert_eq!(Clip::INFO.config_class, None);
    assert!(Clip::INFO.max.is_empty());
    assert!(!Clip::INFO.deprecated);
    assert!(Clip::INFO.tasks[0].hf_classes.is_empty());
}

#[test]
fn capability_methods_exist_per_family_and_tasks() {
    assert_eq!(
        Bert::INFO.capabilities(),
        [
            (Capability::Embed, Task::BaseModel),
            (Capability::FillMask, Task::MaskedLm),
            (Capability::Generate, Task::CausalLm)
        ]
    );
    let dir = model_dir(
        "bert",
        r#"{"model_type": "bert", "architectures": ["BertForMaskedLM"]}"#,
    );
    let bert = Bert::load(&dir, Target::Cpu).unwrap();
    assert_eq!(bert.target_spec(), TargetSpec::Exact(Target::Cpu));
    // Methods compile (the capability set above); this dummy directory has no weights or
    // tokenizer, so the call ends in a typed error.
    let e = bert
        .fill_mask("Paris is the [MASK] of France.")
        .unwrap_err();
    assert!(
        matches!(
            e,
            SkillError::NoBackend {
                task: Task::MaskedLm,
                ..
            } | SkillError::InvalidEnv { .. }
                | SkillError::ModelFileMissing { .. }
        ),
        "{e}"
    );
    let _ = bert.embed(&["a", "b"]);
    let _ = bert.generate("hi");
    let clip_dir = model_dir("clip", r#"{"model_type": "clip"}"#);
    let clip = Clip::load(&clip_dir, TargetSpec::Auto).unwrap();
    let _ = clip.image_text_similarity((PathBuf::from("cat.png"), &["a cat", "a dog"][..]));
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(clip_dir).unwrap();
}

#[test]
fn custom_skill_with_generics_and_extra_fields() {
    let dir = model_dir(
        "my-llama",
        r#"{"model_type": "my-llama", "_name_or_path": "me/llama-tiny"}"#,
    );
    let s = MyLlama::<String>::load(&dir, TargetSpec::Default).unwrap();
    assert_eq!(s.extra, "");
    assert_eq!(s.calls, 0);
    assert_eq!(
        s.state().config().name_or_path.as_deref(),
        Some("me/llama-tiny")
    );
    // MAX serving the HF repo id of this checkpoint: the model is served, MAX is used.
    let caps = Capabilities::fixed_with_max(&["me/llama-tiny"]);
    let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]);
    let d = s
        .state()
        .plan_with(Capability::Generate, &env, &caps)
        .unwrap();
    assert_eq!(d.used, Target::MojoMax);
    assert!(d.fallbacks.is_empty(), "{:?}", d.fallbacks);
    // Serving another model and no `max` executable: skipped, saying what was served.
    let caps = Capabilities::fixed_with_max(&["me/other"]);
    let e = s
        .state()
        .plan_with(Capability::Generate, &env, &caps)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("mojo_max skipped: the MAX server at http://127.0.0.1:8000 serves me/other"),
        "{msg}"
    );
    assert!(
        msg.contains("cpu skipped: task not implemented by the candle backend"),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn load_errors_are_typed() {
    let dir = model_dir("mismatch", r#"{"model_type": "roberta"}"#);
    match Bert::load(&dir, Target::Cpu).unwrap_err() {
        SkillError::ModelTypeMismatch {
            expected,
            found,
            skill,
            ..
        } => {
            assert_eq!(
                (expected, found.as_str(), skill),
                ("bert", "roberta", "Bert")
            );
        }
        e => panic!("{e}"),
    }
    let missing = dir.join("nope");
    assert!(matches!(
        Bert::load(&missing, Target::Cpu).unwrap_err(),
        SkillError::ModelDirMissing { .. }
    ));
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    assert!(matches!(
        Bert::load(&dir, Target::Cpu).unwrap_err(),
        SkillError::ConfigInvalid { .. }
    ));
    std::fs::write(dir.join("config.json"), r#"{"model_type": 3}"#).unwrap();
    let e = Bert::load(&dir, Target::Cpu).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("has no string field `model_type` (found 3)"),
        "{e}"
    );
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let e = Bert::load(&dir, Target::Cpu).unwrap_err();
    assert!(matches!(e, SkillError::ConfigMissing { .. }), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn registry_lookup_and_load_dir() {
    assert_eq!(REGISTRY.all().len(), 3);
    assert_eq!(REGISTRY.by_model_type("clip").unwrap().struct_name, "Clip");
    assert!(REGISTRY.by_model_type("clap").is_none());
    assert_eq!(
        REGISTRY.by_hf_class("BertForMaskedLM")[0].model_type,
        "bert"
    );
    assert!(REGISTRY.by_hf_class("Nope").is_empty());

    let dir = model_dir("dyn", r#"{"model_type": "clip"}"#);
    let s = REGISTRY
        .load_dir(skills::backends(), &dir, TargetSpec::Auto)
        .unwrap();
    assert_eq!(s.info().model_type, "clip");
    assert!(s.has(Capability::ImageTextSimilarity));
    match s.fill_mask("x [MASK]").unwrap_err() {
        SkillError::CapabilityMissing {
            capability,
            available,
            model_type,
        } => {
            assert_eq!((capability, model_type), (Capability::FillMask, "clip"));
            assert_eq!(available, [Capability::ImageTextSimilarity]);
        }
        e => panic!("{e}"),
    }
    let s = s.downcast::<Bert>().unwrap_err();
    let clip: Clip = s.downcast().unwrap();
    assert_eq!(clip.state().info().struct_name, "Clip");
    std::fs::write(dir.join("config.json"), r#"{"model_type": "berr"}"#).unwrap();
    let e = REGISTRY
        .load_dir(skills::backends(), &dir, TargetSpec::Auto)
        .unwrap_err();
    assert!(
        e.to_string().contains("no skill for model_type `berr`"),
        "{e}"
    );
    assert!(e.to_string().ends_with("(did you mean `bert`?)"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}
