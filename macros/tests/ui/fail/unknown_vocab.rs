use skillgen_runtime::{Skill, SkillState};

#[derive(Skill)]
#[skill(model_type = "bert", family = encodr, modalities(txt, image), tasks(maskd_lm("BertForMaskedLM"), base_model))]
struct Bert {
    state: SkillState,
}

fn main() {}
