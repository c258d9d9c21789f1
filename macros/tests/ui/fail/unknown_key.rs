use skillgen_runtime::{Skill, SkillState};

#[derive(Skill)]
#[skill(modl_type = "bert", family = encoder, tasks(masked_lm), frobnicate)]
struct Bert {
    state: SkillState,
}

fn main() {}
