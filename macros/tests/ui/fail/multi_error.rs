//! Many mistakes in one attribute: each is reported at its own tokens, and uses of the skill's
//! valid parts do not cascade into more errors.
use skillgen_runtime::{Skill, SkillState};

#[derive(Debug, Skill)]
#[skill(
    model_type = "",
    family = decoder,
    modalities(text, text),
    tasks(causal_lm("LlamaForCausalLM", 7), image_classification, sequence_clasification),
    candel = "llama",
    max(LlamaForCausalLM),
    sub_config_of = "x" "y",
)]
pub struct Llama {
    state: SkillState,
}

fn main() {
    let _ = |l: &Llama| l.generate("hello");
    let _ = Llama::INFO;
}
