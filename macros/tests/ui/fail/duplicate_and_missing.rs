use skillgen_runtime::{Skill, SkillState};

#[derive(Skill)]
#[skill(model_type = "bert", model_type = "roberta", tasks(masked_lm, masked_lm))]
struct Bert {
    state: SkillState,
}

#[derive(Skill)]
struct NoAttribute {
    state: SkillState,
}

fn main() {}
