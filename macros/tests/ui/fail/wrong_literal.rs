use skillgen_runtime::{Skill, SkillState};

#[derive(Skill)]
#[skill(model_type = bert, family = "encoder", tasks(masked_lm(BertForMaskedLM)), candle = 3, max = "bert", deprecated = true)]
struct Bert {
    state: SkillState,
}

fn main() {}
