//! The crate generated from `tests/fixtures/registries/valid/hostile-names.yaml` compiled (it is
//! a workspace member); here we check that hostile-but-valid names became the identifiers and
//! metadata the registry says, and that strings survived escaping unchanged.

use fixture_skills::registry;
use skillgen_runtime::{Family, Task};

#[test]
fn hostile_names_map_to_safe_identifiers() {
    assert_eq!(fixture_skills::type_::Type::INFO.model_type, "type");
    assert_eq!(fixture_skills::self_::SelfModel::INFO.model_type, "self");
    assert_eq!(
        fixture_skills::encoder_::Encoder::INFO.model_type,
        "encoder"
    );
    assert_eq!(
        fixture_skills::llama_v2::LlamaV2::INFO.model_type,
        "llama.v2"
    );
    assert_eq!(
        fixture_skills::m_2d_vision::M2dVision::INFO.model_type,
        "2d-vision"
    );
    assert_eq!(
        fixture_skills::xlm_roberta::XlmRoberta::INFO.model_type,
        "xlm-roberta"
    );
    // Family modules still resolve beside a model type named like one.
    assert_eq!(
        fixture_skills::encoder::encoder_::Encoder::INFO.family,
        Family::Encoder
    );
}

#[test]
fn registry_lookups() {
    let all: Vec<_> = registry::all().iter().map(|i| i.model_type).collect();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(all, sorted, "registry is sorted by model type");
    assert_eq!(all.len(), 8);

    let bert = registry::by_model_type("bert").expect("bert is registered");
    assert!(bert.has_task(Task::MaskedLm));
    assert_eq!(bert.max, &["bert"]);
    assert_eq!(bert.candle, Some("bert"));
    assert!(registry::by_model_type("bertt").is_none());

    let by_class = registry::by_hf_class("XLMRobertaForMaskedLM");
    assert_eq!(
        by_class.iter().map(|i| i.model_type).collect::<Vec<_>>(),
        ["xlm-roberta"]
    );
    assert!(registry::by_hf_class("NoSuchClass").is_empty());

    let sub = registry::by_model_type("type_text_model").unwrap();
    assert_eq!(sub.sub_config_of, &["type"]);
    assert!(registry::by_model_type("self").unwrap().deprecated);
}

#[test]
fn capabilities_follow_the_registry() {
    // `embed`, `fill_mask` and `classify` exist on bert; `generate` on llama.v2;
    // `transcribe` on self; `classify_image` on 2d-vision; `image_text_similarity` on type.
    // Calling them needs a model directory; here we only prove the methods exist with the
    // right argument types inside closures that are never called.
    let _embed = |s: &fixture_skills::bert::Bert| s.embed(&["text"]);
    let _fill = |s: &fixture_skills::bert::Bert| s.fill_mask("a [MASK] b");
    let _generate = |s: &fixture_skills::llama_v2::LlamaV2| s.generate("prompt");
    let caps: Vec<_> = fixture_skills::bert::Bert::INFO
        .capabilities()
        .into_iter()
        .map(|(c, _)| c.method())
        .collect();
    assert_eq!(caps, ["embed", "fill_mask", "classify"]);
}
