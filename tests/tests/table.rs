//! Reviewed snapshots of the dispatch table under fixed capability reports.

use skillgen_runtime::dispatch::{outcome, plan, table};
use skillgen_runtime::{Capabilities, MapEnv, Skill, SkillState, Target, TargetSpec, Task};

#[derive(Debug, Skill)]
#[skill(model_type = "llama", family = decoder, tasks(base_model("LlamaModel"), causal_lm("LlamaForCausalLM")), max("LlamaForCausalLM"), native(causal_lm = decoder))]
pub struct Llama {
    state: SkillState,
}

#[derive(Debug, Skill)]
#[skill(model_type = "bert", family = encoder, tasks(base_model("BertModel"), masked_lm("BertForMaskedLM")), native(base_model = encoder, masked_lm = encoder))]
pub struct Bert {
    state: SkillState,
}

#[test]
fn tables_under_fixed_reports() {
    let mut out = String::new();
    for caps in [
        Capabilities::fixed_cpu_only(),
        Capabilities::fixed_with_max(&["LlamaForCausalLM"]),
        Capabilities::fixed_with_max(&["google/gemma-3-1b-it"]),
    ] {
        out.push_str(&format!("## {:?}\n", caps.source));
        for info in [Llama::INFO, Bert::INFO] {
            out.push_str(&table(info, &caps, skills::backends()).to_string());
            // The same decisions in full text.
            for (name, spec, env) in [
                ("auto", TargetSpec::Auto, MapEnv::empty()),
                ("cpu", TargetSpec::Exact(Target::Cpu), MapEnv::empty()),
                (
                    "USE_MOJO_MAX_TARGET=1",
                    TargetSpec::Default,
                    MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]),
                ),
                (
                    "SKILLGEN_TARGET=mojo_max SKILLGEN_STRICT=1",
                    TargetSpec::Default,
                    MapEnv::from_pairs(&[
                        ("SKILLGEN_TARGET", "mojo_max"),
                        ("SKILLGEN_STRICT", "1"),
                    ]),
                ),
            ] {
                let r = plan(
                    info,
                    Task::BaseModel,
                    &spec,
                    &env,
                    &caps,
                    false,
                    skills::backends(),
                );
                out.push_str(&format!("  text {name}: {}\n", outcome(&r)));
            }
        }
    }
    insta::assert_snapshot!(out);
}
