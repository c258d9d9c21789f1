//! candle Whisper against PyTorch references:
//! - `fixtures/native/whisper/reference.json` (make_native_fixtures.py): encoder output and
//!   teacher-forced decoder logits of the tiny seeded model;
//! - `fixtures/native/whisper_features/reference.json` (make_native_fixtures_more.py):
//!   transformers' WhisperFeatureExtractor mel filterbank and log-mel features, and greedy
//!   decoding of the tiny model;
//! - typed errors for broken checkpoints and bad requests.

use serde_json::Value;
use skillgen_candle::parity::{WhisperModel, whisper_mel, whisper_outputs};
use skillgen_runtime::request::{Call, Output, TranscribeRequest};
use skillgen_runtime::{Capabilities, MapEnv, Skill, SkillError, SkillState, Target, TargetSpec};
use skillgen_test_support::{assert_close, floats, ints, native_fixture, read_json, tolerance};

#[derive(Debug, Skill)]
#[skill(
    model_type = "whisper",
    family = speech,
    modalities(audio, text),
    tasks(
        base_model("WhisperModel"),
        speech_seq_2_seq("WhisperForConditionalGeneration")
    ),
    candle = "whisper",
    native(speech_seq_2_seq = whisper),
    backends = skillgen_candle::backends
)]
pub struct Whisper {
    state: SkillState,
}

/// [`assert_close`], then print the largest error.
fn compare(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    let max_err = assert_close(what, got, want, atol, rtol);
    eprintln!(
        "{what}: max |candle - torch| = {max_err:e} over {} values",
        got.len()
    );
    max_err
}

#[test]
fn whisper_encoder_and_logits_match_pytorch() {
    let (atol, rtol) = tolerance("default");
    let dir = native_fixture("whisper");
    let r = read_json(&dir.join("reference.json"));
    let (_, feats) = floats(&r["inputs"]["input_features"]);
    let (ishape, ids) = ints(&r["inputs"]["decoder_input_ids"]);
    let rows: Vec<Vec<u32>> = ids.chunks(ishape[1]).map(<[u32]>::to_vec).collect();
    let ((enc, eshape), (logits, lshape)) = whisper_outputs(&dir, &feats, &rows).unwrap();
    let (we, want_enc) = floats(&r["outputs"]["encoder_last_hidden_state"]);
    let (wl, want_logits) = floats(&r["outputs"]["logits"]);
    assert_eq!((eshape, lshape), (we, wl));
    compare("whisper encoder", &enc, &want_enc, atol, rtol);
    compare("whisper logits", &logits, &want_logits, atol, rtol);
}

fn features_ref() -> Value {
    read_json(&native_fixture("whisper_features").join("reference.json"))
}

#[test]
fn mel_filters_match_transformers() {
    let r = features_ref();
    let (shape, want) = floats(&r["outputs"]["mel_filters"]);
    assert_eq!(shape, [80, 201]);
    let got = whisper_mel::mel_filters(80);
    compare("mel filters", &got, &want, 1e-6, 1e-5);
    assert!(want.iter().any(|&v| v > 0.01), "non-trivial filters");
}

#[test]
fn log_mel_matches_whisper_feature_extractor() {
    let r = features_ref();
    let (_, pcm) = floats(&r["inputs"]["pcm"]);
    let (shape, want) = floats(&r["outputs"]["input_features_first_frames"]);
    let frames = shape[1];
    let full: Vec<usize> = serde_json::from_value(r["full_features_shape"].clone()).unwrap();
    assert_eq!(full, [80, 3000]);
    let filters = whisper_mel::mel_filters(80);
    let got = whisper_mel::log_mel(&pcm, &filters, 80, 480_000);
    assert_eq!(got.len(), 80 * 3000);
    let first: Vec<f32> = got
        .chunks(3000)
        .flat_map(|row| row[..frames].to_vec())
        .collect();
    let (atol, rtol) = tolerance("default");
    compare("log-mel", &first, &want, atol, rtol);
}

#[test]
fn greedy_decoding_matches_pytorch() {
    let dir = native_fixture("whisper");
    let r = read_json(&dir.join("reference.json"));
    let (fshape, feats) = floats(&r["inputs"]["input_features"]);
    let row0 = &feats[..fshape[1] * fshape[2]];
    let (_, want) = ints(&features_ref()["outputs"]["greedy_token_ids"]);
    let model = WhisperModel::load(&dir, &candle_core::Device::Cpu).unwrap();
    let got = model
        .greedy(row0, &want[..1], want.len() - 1, false)
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn transcribe_without_tokenizer_names_the_file_and_bad_input_is_typed() {
    let dir = native_fixture("whisper");
    let state = SkillState::load(
        Whisper::INFO,
        Whisper::backends(),
        &dir,
        TargetSpec::Exact(Target::Cpu),
    )
    .unwrap();
    let caps = Capabilities::fixed_cpu_only();
    let e = state
        .run_with(
            Call::Transcribe(TranscribeRequest::from(vec![0.1f32; 1600])),
            &MapEnv::empty(),
            &caps,
        )
        .unwrap_err();
    match e {
        SkillError::ModelFileMissing { path, .. } => assert!(path.ends_with("tokenizer.json")),
        e => panic!("{e}"),
    }
    let model = WhisperModel::load(&dir, &candle_core::Device::Cpu).unwrap();
    assert!(matches!(
        model.forward(&[0.0; 10], &[vec![1]]).unwrap_err(),
        SkillError::InvalidRequest { .. }
    ));
    let feats = vec![0.0; 80 * 32];
    assert!(matches!(
        model.forward(&feats, &[vec![1, 500]]).unwrap_err(),
        SkillError::InvalidRequest { .. }
    ));
}

#[test]
fn broken_whisper_checkpoints_are_typed() {
    let src = native_fixture("whisper");
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(name), tmp.path().join(name)).unwrap();
    }
    let load = || WhisperModel::load(tmp.path(), &candle_core::Device::Cpu).unwrap_err();
    let w = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 3]).unwrap();
    assert!(matches!(load(), SkillError::WeightsInvalid { .. }));
    std::fs::write(&w, &bytes).unwrap();
    let cfg = tmp.path().join("config.json");
    let orig: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    for (field, value) in [
        ("encoder_ffn_dim", Value::from(64)),
        ("activation_function", Value::from("relu")),
        ("suppress_tokens", Value::from("x")),
        ("d_model", Value::from(25)),
    ] {
        let mut c = orig.clone();
        c.insert(field.into(), value);
        std::fs::write(&cfg, Value::Object(c).to_string()).unwrap();
        match load() {
            SkillError::ConfigField { field: f, .. } => {
                assert!(f == field || f.ends_with("attention_heads"), "{field}: {f}")
            }
            e => panic!("{field}: {e}"),
        }
    }
    let mut c = orig.clone();
    c.insert("num_mel_bins".into(), 128.into());
    std::fs::write(&cfg, Value::Object(c).to_string()).unwrap();
    match load() {
        SkillError::TensorInvalid { tensor, .. } => {
            assert_eq!(tensor, "model.encoder.conv1.weight")
        }
        e => panic!("{e}"),
    }
}

#[test]
fn transcribe_decodes_the_greedy_tokens_of_the_features() {
    // A word-level tokenizer (`t{id}`) without Whisper's special tokens: the prompt is then
    // decoder_start_token_id alone.
    let src = native_fixture("whisper");
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(src.join(name), tmp.path().join(name)).unwrap();
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
    let pcm: Vec<f32> = (0..3000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    let state = SkillState::load(
        Whisper::INFO,
        Whisper::backends(),
        tmp.path(),
        TargetSpec::Exact(Target::Cpu),
    )
    .unwrap();
    let (out, d) = state
        .run_with(
            Call::Transcribe(TranscribeRequest::from(pcm.clone())),
            &MapEnv::empty(),
            &Capabilities::fixed_cpu_only(),
        )
        .unwrap();
    assert_eq!(d.used, Target::Cpu);
    let Output::Transcribe(t) = out else {
        panic!("wrong output")
    };
    let model = WhisperModel::load(tmp.path(), &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.frames(), 32);
    let ids = model.greedy(&model.features(&pcm), &[1], 32, true).unwrap();
    let want: Vec<String> = ids[1..]
        .iter()
        .filter(|&&i| i != 2)
        .map(|i| format!("t{i}"))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(t.text, want.join(" "));
    // A language hint needs Whisper's special tokens.
    let e = model.transcribe(&pcm, Some("en")).unwrap_err();
    assert!(matches!(e, SkillError::InvalidRequest { .. }), "{e}");
}
