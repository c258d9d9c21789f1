use skillgen_runtime::{Skill, SkillState};

#[derive(Skill)]
#[skill(model_type = "vit", family = vision, tasks(image_classification, causal_lm))]
struct Vit {
    state: SkillState,
}

fn main() {
    // The fallback expansion keeps the valid capability: no cascading error here.
    let _ = |v: &Vit| v.classify_image(std::path::PathBuf::from("cat.png"));
}
