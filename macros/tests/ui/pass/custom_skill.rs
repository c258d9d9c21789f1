//! A user's own skill for a custom model: only model_type, family and tasks.
use skillgen_runtime::{Capability, Modality, MojoMaxTarget, Skill, SkillState, Target, TargetSpec};

#[derive(Debug, Skill)]
#[skill(model_type = "my-encoder", family = encoder, tasks(text_encoding, sequence_classification))]
struct MyEncoder {
    state: SkillState,
}

fn uses(m: &MyEncoder) {
    let _ = m.embed(&["hello", "world"]);
    let _ = m.classify("great movie");
    let _: TargetSpec = m.target_spec();
    let _ = m.plan(Capability::Embed);
}

fn main() {
    assert_eq!(MyEncoder::INFO.model_type, "my-encoder");
    assert_eq!(MyEncoder::INFO.modalities, [Modality::Text]);
    let _ = MyEncoder::load("/nonexistent", Target::Cpu);
    let _ = uses;
}
