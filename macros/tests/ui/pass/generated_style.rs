//! The exact attribute syntax the generator emits.
#[derive(Debug, ::skillgen_runtime::Skill)]
#[skill(
    model_type = "bert",
    family = encoder,
    modalities(text),
    config_class = "BertConfig",
    hf_module = "bert",
    tasks(base_model("BertModel"), causal_lm("BertLMHeadModel"), masked_lm("BertForMaskedLM")),
    candle = "bert",
    max("bert"),
    sub_config_of("clip"),
    deprecated,
)]
pub struct Bert {
    state: ::skillgen_runtime::SkillState,
}

#[derive(Debug, ::skillgen_runtime::Skill)]
#[skill(model_type = "whisper", family = speech, tasks(base_model, speech_seq_2_seq("WhisperForConditionalGeneration")), max("WhisperForConditionalGeneration", "whisper"))]
pub struct Whisper {
    #[skill(state)]
    state: ::skillgen_runtime::SkillState,
    pub label: String,
}

static SKILLS: &[&::skillgen_runtime::SkillInfo] = &[Bert::INFO, Whisper::INFO];
static REGISTRY: ::skillgen_runtime::Registry = ::skillgen_runtime::Registry::new(SKILLS);

fn main() {
    assert_eq!(REGISTRY.by_model_type("whisper").unwrap().max.len(), 2);
    let f: fn(&Bert, &str) -> _ = |b, s| b.fill_mask(s);
    let g: fn(&Whisper, Vec<f32>) -> _ = |w, pcm| w.transcribe(pcm);
    let _ = (f, g);
}
