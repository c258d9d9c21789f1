//! Native encoders (see [`crate::native`]): BERT sentence embeddings ([`crate::candle_bert`]).

use skillgen_vocab::Task;

use crate::candle_bert::BertEmbedder;
use crate::request::{Call, Output};
use crate::skill::SkillState;
use crate::{SkillError, Target};

/// Whether this area runs `task` of `model_type`.
pub(crate) fn implements(model_type: &str, task: Task) -> bool {
    model_type == "bert" && matches!(task, Task::BaseModel | Task::TextEncoding)
}

/// Run `call`.
pub(crate) fn run(
    state: &SkillState,
    target: Target,
    task: Task,
    call: Call,
) -> Result<Output, SkillError> {
    match call {
        Call::Embed(req) if implements(state.info().model_type, task) => {
            let model = state.cached(&format!("candle/bert/{target}"), || {
                BertEmbedder::load(state.dir(), &super::device(target)?)
            })?;
            model.embed(&req.input, req.normalize).map(Output::Embed)
        }
        _ => Err(super::not_implemented(state, target, task)),
    }
}
