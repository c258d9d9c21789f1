use skillgen_runtime::{Skill, SkillState};

#[derive(Debug, Skill)]
#[skill(
    model_type = "x",
    family = decoder,
    tasks(causal_lm),
    native(causal_lm = decodr),
    refused(candel = "why", max = 3),
)]
struct X {
    state: SkillState,
}

#[derive(Debug, Skill)]
#[skill(model_type = "y", family = decoder, tasks(causal_lm), backends = "skills::backends")]
struct Y {
    state: SkillState,
}

#[derive(Debug, Skill)]
#[skill(model_type = "z", family = encoder, tasks(base_model), native(masked_lm = encoder))]
struct Z {
    state: SkillState,
}

fn main() {}
