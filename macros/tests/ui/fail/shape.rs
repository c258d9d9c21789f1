use skillgen_runtime::{Skill, SkillState};

#[derive(Skill)]
#[skill(model_type = "a", family = encoder, tasks(masked_lm))]
enum NotAStruct {
    A,
}

#[derive(Skill)]
#[skill(model_type = "b", family = encoder, tasks(masked_lm))]
struct Tuple(SkillState);

#[derive(Skill)]
#[skill(model_type = "c", family = encoder, tasks(masked_lm))]
struct TwoFields {
    state: SkillState,
    other: u32,
}

#[derive(Skill)]
#[skill(model_type = "d", family = encoder, tasks(masked_lm), state)]
struct BadFieldAttr {
    #[skill(state, weights)]
    state: SkillState,
}

fn main() {}
