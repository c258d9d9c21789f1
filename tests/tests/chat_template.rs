//! Chat templates render byte-identically to transformers' `apply_chat_template` (the
//! references: `fixtures/chat/make_reference.py`): SmolLM2-135M-Instruct's template as its GGUF
//! carries it, and Gemma-, ChatML- and JSON-shaped templates, over conversations with a system
//! prompt, several turns, Unicode, quotes and backslashes, untrimmed whitespace, with and
//! without the generation prompt. An empty conversation is refused, as transformers refuses it.

use std::collections::BTreeMap;
use std::path::Path;

use skillgen_checkpoint::chat::{ChatTemplate, Message};
use skillgen_test_support::{read_json, repo};

#[test]
fn chat_templates_render_as_transformers_does() {
    let reference = read_json(&repo().join("fixtures/chat/reference.json"));
    let tokens: BTreeMap<String, String> =
        serde_json::from_value(reference["tokens"].clone()).unwrap();
    let mut checked = 0;
    for t in reference["templates"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let template = ChatTemplate::new(
            t["template"].as_str().unwrap(),
            Path::new(name),
            tokens.clone(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in t["cases"].as_array().unwrap() {
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message {
                    role: m["role"].as_str().unwrap().to_owned(),
                    content: m["content"].as_str().unwrap().to_owned(),
                })
                .collect();
            let prompt = case["add_generation_prompt"].as_bool().unwrap();
            let got = template.render(&messages, prompt);
            match case["rendered"].as_str() {
                Some(want) => {
                    let got = got.unwrap_or_else(|e| panic!("{name} {messages:?}: {e}"));
                    assert_eq!(got, want, "{name} {messages:?} generation prompt {prompt}");
                }
                None => assert!(got.is_err(), "{name} {messages:?}: {got:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 48);
}
