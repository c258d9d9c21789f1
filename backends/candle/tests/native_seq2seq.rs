//! candle T5 encoder against the PyTorch reference in `fixtures/native/t5/reference.json`
//! (encoder_last_hidden_state, tolerance from `fixtures/native/manifest.json`), `embed`
//! through dispatch, typed errors. The fixture's `decoder_logits` are not checked: candle
//! 0.11.1's T5 decoder is known to mismatch (see `backends/candle/src/t5/mod.rs`).

use std::path::PathBuf;

use serde_json::Value;
use skillgen_candle::parity::{T5Encoder, t5_encoder_output};
use skillgen_runtime::request::{Call, EmbedRequest, Output, TextBatch};
use skillgen_runtime::{Capabilities, MapEnv, Skill, SkillError, SkillState, Target, TargetSpec};
use skillgen_test_support::{native_fixture, read_json, tolerance};

#[derive(Debug, Skill)]
#[skill(
    model_type = "t5",
    family = encoder_decoder,
    modalities(text),
    tasks(
        base_model("T5Model"),
        seq_to_seq_causal_lm("T5ForConditionalGeneration"),
        text_encoding("T5EncoderModel")
    ),
    candle = "t5",
    native(text_encoding = t5, seq_to_seq_causal_lm = t5),
    backends = skillgen_candle::backends
)]
pub struct T5 {
    state: SkillState,
}

fn dir() -> PathBuf {
    native_fixture("t5")
}

struct Ref {
    rows: Vec<Vec<u32>>,
    hidden: Vec<f32>,
    len: usize,
    d: usize,
}

fn reference() -> Ref {
    let r = read_json(&dir().join("reference.json"));
    let ids: Vec<u32> = serde_json::from_value(r["inputs"]["input_ids"]["data"].clone()).unwrap();
    let mask: Vec<u32> =
        serde_json::from_value(r["inputs"]["attention_mask"]["data"].clone()).unwrap();
    let shape: Vec<usize> =
        serde_json::from_value(r["outputs"]["encoder_last_hidden_state"]["shape"].clone()).unwrap();
    let hidden: Vec<f32> =
        serde_json::from_value(r["outputs"]["encoder_last_hidden_state"]["data"].clone()).unwrap();
    let len = shape[1];
    // The real tokens of each row (the fixture right-pads row 1).
    let rows = ids
        .chunks(len)
        .zip(mask.chunks(len))
        .map(|(i, m)| {
            i.iter()
                .zip(m)
                .filter(|&(_, &m)| m == 1)
                .map(|(&i, _)| i)
                .collect()
        })
        .collect();
    Ref {
        rows,
        hidden,
        len,
        d: shape[2],
    }
}

#[test]
fn t5_encoder_matches_pytorch() {
    let r = reference();
    let (atol, rtol) = tolerance("default");
    assert_eq!(r.rows[1].len(), 5, "row 1 is padded in the fixture");
    let mut max_err = 0f32;
    for (b, row) in r.rows.iter().enumerate() {
        let (got, shape) = t5_encoder_output(&dir(), row).unwrap();
        assert_eq!(shape, [1, row.len(), r.d]);
        let want = &r.hidden[b * r.len * r.d..(b * r.len + row.len()) * r.d];
        for (g, w) in got.iter().zip(want) {
            let err = (g - w).abs();
            assert!(err <= atol + rtol * w.abs(), "row {b}: |{g} - {w}| = {err}");
            max_err = max_err.max(err);
        }
    }
    eprintln!("t5 encoder: max |candle - torch| = {max_err:e}");
}

#[test]
fn t5_embed_is_mean_of_reference_states() {
    let r = reference();
    let (atol, rtol) = tolerance("default");
    let state = SkillState::load(
        T5::INFO,
        T5::backends(),
        dir(),
        TargetSpec::Exact(Target::Cpu),
    )
    .unwrap();
    let (out, d) = state
        .run_with(
            Call::Embed(EmbedRequest::from(TextBatch::TokenIds(r.rows.clone()))),
            &MapEnv::empty(),
            &Capabilities::fixed_cpu_only(),
        )
        .unwrap();
    assert_eq!(d.used, Target::Cpu);
    let Output::Embed(e) = out else {
        panic!("wrong output")
    };
    for (b, row) in r.rows.iter().enumerate() {
        for k in 0..r.d {
            let want = (0..row.len())
                .map(|p| r.hidden[(b * r.len + p) * r.d + k])
                .sum::<f32>()
                / row.len() as f32;
            let got = e.vectors[b][k];
            assert!(
                (got - want).abs() <= atol + rtol * want.abs(),
                "row {b} dim {k}"
            );
        }
    }
}

#[test]
fn broken_t5_inputs_are_typed() {
    let model = T5Encoder::load(&dir(), &candle_core::Device::Cpu).unwrap();
    assert!(matches!(
        model.encode(&[3, 500]).unwrap_err(),
        SkillError::InvalidRequest { .. }
    ));
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(dir().join(name), tmp.path().join(name)).unwrap();
    }
    let w = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..100]).unwrap();
    assert!(matches!(
        T5Encoder::load(tmp.path(), &candle_core::Device::Cpu).unwrap_err(),
        SkillError::WeightsInvalid { .. }
    ));
    std::fs::write(&w, &bytes).unwrap();
    let cfg = tmp.path().join("config.json");
    let mut c: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c.insert("d_kv".into(), 16.into());
    std::fs::write(&cfg, Value::Object(c.clone()).to_string()).unwrap();
    match T5Encoder::load(tmp.path(), &candle_core::Device::Cpu).unwrap_err() {
        SkillError::TensorInvalid { tensor, .. } => {
            assert_eq!(tensor, "encoder.block.0.layer.0.SelfAttention.q.weight")
        }
        e => panic!("{e}"),
    }
    c.insert("d_kv".into(), 8.into());
    c.insert("feed_forward_proj".into(), "swish".into());
    std::fs::write(&cfg, Value::Object(c).to_string()).unwrap();
    match T5Encoder::load(tmp.path(), &candle_core::Device::Cpu).unwrap_err() {
        SkillError::ConfigField { field, .. } => assert_eq!(field, "feed_forward_proj"),
        e => panic!("{e}"),
    }
}

#[test]
fn t5_decoder_logits_match_pytorch_with_our_decoder() {
    let r = read_json(&dir().join("reference.json"));
    let dec: Vec<u32> =
        serde_json::from_value(r["inputs"]["decoder_input_ids"]["data"].clone()).unwrap();
    let shape: Vec<usize> =
        serde_json::from_value(r["outputs"]["decoder_logits"]["shape"].clone()).unwrap();
    let want: Vec<f32> =
        serde_json::from_value(r["outputs"]["decoder_logits"]["data"].clone()).unwrap();
    let (t, v) = (shape[1], shape[2]);
    let rf = reference();
    let (atol, rtol) = tolerance("default");
    let mut max_err = 0f32;
    for (b, row) in rf.rows.iter().enumerate() {
        let ids = &dec[b * t..(b + 1) * t];
        let (got, gshape) = skillgen_candle::parity::t5_decoder_logits(&dir(), row, ids).unwrap();
        assert_eq!(gshape, [1, t, v]);
        for (g, w) in got.iter().zip(&want[b * t * v..(b + 1) * t * v]) {
            let err = (g - w).abs();
            assert!(err <= atol + rtol * w.abs(), "row {b}: |{g} - {w}| = {err}");
            max_err = max_err.max(err);
        }
    }
    eprintln!("t5 decoder logits: max |ours - torch| = {max_err:e}");
}

#[test]
fn t5_greedy_tokens_match_pytorch_and_generate_runs_through_dispatch() {
    use skillgen_candle::parity::T5Generator;
    use skillgen_runtime::request::{FinishReason, GenerateRequest};
    let g = read_json(&native_fixture("t5_greedy").join("reference.json"));
    let ids: Vec<u32> = serde_json::from_value(g["inputs"]["input_ids"]["data"].clone()).unwrap();
    let want: Vec<u32> =
        serde_json::from_value(g["outputs"]["greedy_token_ids"]["data"].clone()).unwrap();
    let model = T5Generator::load(&dir(), &candle_core::Device::Cpu).unwrap();
    let got = model.greedy_ids(&ids, want.len() - 1).unwrap();
    assert_eq!(got, want[1..]);
    // Through dispatch: without a tokenizer a typed error; with a word-level one, text.
    let state = SkillState::load(
        T5::INFO,
        T5::backends(),
        dir(),
        TargetSpec::Exact(Target::Cpu),
    )
    .unwrap();
    let call = || Call::Generate(GenerateRequest::from(ids.clone()).max_tokens(4));
    let caps = Capabilities::fixed_cpu_only();
    match state.run_with(call(), &MapEnv::empty(), &caps).unwrap_err() {
        SkillError::ModelFileMissing { path, .. } => assert!(path.ends_with("tokenizer.json")),
        e => panic!("{e}"),
    }
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(dir().join(name), tmp.path().join(name)).unwrap();
    }
    let vocab: serde_json::Map<String, Value> = (0..128u32)
        .map(|i| (format!("t{i}"), Value::from(i)))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"},
    });
    std::fs::write(tmp.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let state = SkillState::load(
        T5::INFO,
        T5::backends(),
        tmp.path(),
        TargetSpec::Exact(Target::Cpu),
    )
    .unwrap();
    let (out, d) = state.run_with(call(), &MapEnv::empty(), &caps).unwrap();
    assert_eq!(d.used, Target::Cpu);
    let Output::Generate(out) = out else {
        panic!("wrong output")
    };
    assert_eq!(out.token_ids, want[1..5]);
    assert_eq!(out.finish_reason, FinishReason::Length);
    let words: Vec<String> = want[1..5].iter().map(|i| format!("t{i}")).collect();
    assert_eq!(out.text, words.join(" "));
    let e = state
        .run_with(
            Call::Generate(GenerateRequest::from(ids.clone()).temperature(0.7)),
            &MapEnv::empty(),
            &caps,
        )
        .unwrap_err();
    assert!(matches!(e, SkillError::InvalidRequest { .. }), "{e}");
}
