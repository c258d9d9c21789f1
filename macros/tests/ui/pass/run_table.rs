//! The table of what runs, as the generator writes it: `native`, `refused` and `backends`.
use skillgen_runtime::{BackendKind, Backends, NativeImpl, Skill, SkillState, Support, Task};

fn my_backends() -> &'static Backends {
    Backends::none()
}

#[derive(Debug, Skill)]
#[skill(
    model_type = "my-llama",
    family = decoder,
    tasks(causal_lm("MyForCausalLM"), sequence_classification),
    max("llama3"),
    native(causal_lm = decoder),
    refused(max = "MAX computes this variant differently"),
    backends = my_backends,
)]
struct MyLlama {
    state: SkillState,
}

fn main() {
    let info = MyLlama::INFO;
    assert_eq!(
        info.support(Task::CausalLm, BackendKind::Candle),
        Support::Verified(NativeImpl::Decoder)
    );
    assert_eq!(
        info.support(Task::SequenceClassification, BackendKind::Candle),
        Support::NotImplemented
    );
    assert_eq!(
        info.support(Task::CausalLm, BackendKind::Max),
        Support::Refused("MAX computes this variant differently")
    );
    assert!(std::ptr::eq(MyLlama::backends(), Backends::none()));
}
