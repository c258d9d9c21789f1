//! The core alone: a skill derived without `backends = ...` dispatches over no backend, and
//! every target says so (this test builds neither candle nor an HTTP client).

use skillgen_runtime::dispatch::SkipReason;
use skillgen_runtime::{
    BackendKind, Backends, Capabilities, Capability, MapEnv, Skill, SkillError, SkillState, Target,
};

#[derive(Debug, Skill)]
#[skill(model_type = "llama", family = decoder, tasks(causal_lm("LlamaForCausalLM")), max("llama3"), native(causal_lm = decoder))]
pub struct Llama {
    state: SkillState,
}

#[test]
fn without_backends_every_target_is_not_compiled_in() {
    assert!(Llama::backends().kinds().is_empty());
    assert!(std::ptr::eq(Llama::backends(), Backends::none()));
    let dir = std::env::temp_dir().join(format!("skillgen-nobackends-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let skill = Llama::load(&dir, Target::Cpu).unwrap();
    let caps = Capabilities::fixed_cpu_only();
    let err = skill
        .state()
        .plan_with(Capability::Generate, &MapEnv::empty(), &caps)
        .unwrap_err();
    let SkillError::NoBackend { tried, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(tried.len(), 1, "{err}");
    assert_eq!(tried[0].target, Target::Cpu);
    assert_eq!(
        tried[0].reason,
        SkipReason::BackendNotCompiledIn {
            backend: BackendKind::Candle
        }
    );
    assert!(
        err.to_string().contains(
            "the candle backend is not compiled in (build `skills` with the `candle` feature)"
        ),
        "{err}"
    );
    // A call fails the same way, before touching the (absent) weights.
    let err = skill.generate("hi").unwrap_err();
    assert!(matches!(err, SkillError::NoBackend { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
