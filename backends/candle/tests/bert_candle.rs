//! candle BERT embeddings on the CPU, checked against PyTorch references:
//! - the tiny seeded fixture `fixtures/native/bert/` (BertForMaskedLM, weights under `bert.`);
//! - all-MiniLM-L6-v2 against sentence-transformers (`fixtures/minilm/reference.json`), when
//!   `SKILLGEN_MINILM_DIR` points at the model directory;
//! - typed errors for broken model directories.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use skillgen_candle::parity::bert_last_hidden_state;
use skillgen_runtime::request::{Call, EmbedRequest, Embeddings, Output, Pooling};
use skillgen_runtime::{
    Backends, Capabilities, MapEnv, Skill, SkillError, SkillState, Target, TargetSpec,
};
use skillgen_test_support::{floats, int_rows, native_fixture, read_json};

#[derive(Debug, Skill)]
#[skill(
    model_type = "bert",
    family = encoder,
    modalities(text),
    tasks(
        base_model("BertModel"),
        masked_lm("BertForMaskedLM"),
        sequence_classification("BertForSequenceClassification")
    ),
    candle = "bert",
    max("bert"),
    native(base_model = encoder, masked_lm = encoder),
    backends = skillgen_candle::backends
)]
pub struct Bert {
    state: SkillState,
}

/// Tolerance of the tiny-fixture parity: max |candle - torch| over non-padded positions.
const TINY_ATOL: f32 = 1e-4;

fn tiny_dir() -> PathBuf {
    native_fixture("bert")
}

/// Candle and MAX together (what `skills` builds with both features), for the MAX fallback.
fn candle_and_max() -> &'static Backends {
    static SET: OnceLock<Backends> = OnceLock::new();
    SET.get_or_init(|| {
        Backends::new(vec![
            Box::new(skillgen_max::MaxBackend),
            Box::new(skillgen_candle::CandleBackend),
        ])
    })
}

struct Tiny {
    ids: Vec<Vec<u32>>,
    types: Vec<Vec<u32>>,
    mask: Vec<Vec<u32>>,
    shape: Vec<usize>,
    hidden: Vec<f32>,
}

fn tiny() -> Tiny {
    let r = read_json(&tiny_dir().join("reference.json"));
    let (shape, hidden) = floats(&r["outputs"]["last_hidden_state"]);
    Tiny {
        ids: int_rows(&r["inputs"]["input_ids"]),
        types: int_rows(&r["inputs"]["token_type_ids"]),
        mask: int_rows(&r["inputs"]["attention_mask"]),
        shape,
        hidden,
    }
}

#[test]
fn tiny_fixture_last_hidden_state_matches_pytorch() {
    let t = tiny();
    // The fixture really exercises padding: row 1 ends in two masked positions.
    assert_eq!(t.mask[1][5..], [0, 0]);
    assert!(t.types[0].contains(&1), "token types are exercised");
    let (got, shape) = bert_last_hidden_state(&tiny_dir(), &t.ids, &t.types, &t.mask).unwrap();
    assert_eq!(shape, t.shape);
    assert_eq!(shape, [2, 7, 32]);
    let h = shape[2];
    let mut max_err = 0f32;
    let mut compared = 0;
    for (b, row) in t.mask.iter().enumerate() {
        for (p, &m) in row.iter().enumerate() {
            if m == 0 {
                continue;
            }
            let at = (b * shape[1] + p) * h;
            for (g, r) in got[at..at + h].iter().zip(&t.hidden[at..at + h]) {
                max_err = max_err.max((g - r).abs());
                compared += 1;
            }
        }
    }
    eprintln!("tiny bert: max |candle - torch| = {max_err:e} over {compared} values");
    assert_eq!(compared, 12 * 32);
    assert!(
        max_err <= TINY_ATOL,
        "max abs error {max_err} > {TINY_ATOL}"
    );
}

/// Mean of the PyTorch hidden states of row `b` over its real tokens.
fn reference_mean(t: &Tiny, b: usize) -> Vec<f32> {
    let (len, h) = (t.shape[1], t.shape[2]);
    let n = t.mask[b].iter().filter(|&&m| m == 1).count();
    (0..h)
        .map(|k| (0..n).map(|p| t.hidden[(b * len + p) * h + k]).sum::<f32>() / n as f32)
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiny_fixture_embed_is_mean_pooled_pytorch_state_alone_and_padded() {
    let t = tiny();
    // Row 1 has token types 0 everywhere, as `embed` uses; its real tokens are the first 5.
    assert!(t.types[1].iter().all(|&x| x == 0));
    let row1: Vec<u32> = t.ids[1][..5].to_vec();
    let expected = reference_mean(&t, 1);
    let skill = Bert::load(tiny_dir(), TargetSpec::Exact(Target::Cpu)).unwrap();
    // No modules.json: mean pooling, no normalisation.
    let alone = skill.embed(vec![row1.clone()]).unwrap();
    assert_eq!(alone.dispatch.used, Target::Cpu);
    assert_eq!(alone.output.pooling, Pooling::Mean);
    assert!(!alone.output.normalized);
    assert_eq!(alone.output.dim, 32);
    assert_eq!(alone.output.token_ids, std::slice::from_ref(&row1));
    let err = max_abs(&alone.output.vectors[0], &expected);
    assert!(err <= TINY_ATOL, "alone: {err}");
    // Padded behind a longer row (7 tokens), the vector must not change.
    let long = vec![5u32, 6, 7, 8, 9, 10, 11];
    let batch = skill.embed(vec![long, row1]).unwrap();
    assert_eq!(batch.output.vectors.len(), 2);
    let err = max_abs(&batch.output.vectors[1], &expected);
    assert!(err <= TINY_ATOL, "padded: {err}");
    // Normalisation on request: unit norm, same direction.
    let n = skill
        .embed(EmbedRequest::from(vec![t.ids[1][..5].to_vec()]).normalize(true))
        .unwrap()
        .output;
    assert!(n.normalized);
    let norm: f32 = expected.iter().map(|x| x * x).sum::<f32>().sqrt();
    let unit: Vec<f32> = expected.iter().map(|x| x / norm).collect();
    assert!(max_abs(&n.vectors[0], &unit) <= TINY_ATOL);
}

#[test]
fn tiny_fixture_token_id_input_is_validated() {
    let skill = Bert::load(tiny_dir(), Target::Cpu).unwrap();
    // vocab_size is 128.
    let e = skill.embed(vec![vec![2u32, 128]]).unwrap_err();
    assert!(
        matches!(&e, SkillError::InvalidRequest { detail, .. } if detail.contains("token id 128")),
        "{e}"
    );
    // max_position_embeddings is 32.
    let e = skill.embed(vec![vec![2u32; 33]]).unwrap_err();
    assert!(e.to_string().contains("max_position_embeddings 32"), "{e}");
    // No tokenizer.json in the fixture: text input names the missing file.
    let e = skill.embed("hello").unwrap_err();
    match &e {
        SkillError::ModelFileMissing { path, .. } => {
            assert!(path.ends_with("tokenizer.json"), "{e}")
        }
        e => panic!("{e}"),
    }
}

#[test]
fn dispatch_records_the_max_fallback_and_strict_refuses() {
    let state = SkillState::load(
        Bert::INFO,
        candle_and_max(),
        tiny_dir(),
        TargetSpec::Default,
    )
    .unwrap();
    let caps = Capabilities::fixed_cpu_only();
    let call = || Call::Embed(vec![vec![2u32, 17, 3]].into());
    let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]);
    let (out, d) = state.run_with(call(), &env, &caps).unwrap();
    assert!(matches!(out, Output::Embed(Embeddings { dim: 32, .. })));
    assert_eq!(d.used, Target::Cpu);
    assert_eq!(d.fallbacks[0].target, Target::MojoMax);
    assert_eq!(d.fallbacks[0].reason.kind(), "max_unreachable");
    assert!(
        d.fallbacks[0].to_string().contains("MAX unreachable"),
        "{}",
        d.fallbacks[0]
    );
    let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1"), ("SKILLGEN_STRICT", "1")]);
    let e = state.run_with(call(), &env, &caps).unwrap_err();
    assert!(matches!(e, SkillError::Strict { .. }), "{e}");
    // The skill's own set (candle only) has no MAX backend: the skip says so.
    let candle_only = SkillState::load(
        Bert::INFO,
        Bert::backends(),
        tiny_dir(),
        TargetSpec::Default,
    )
    .unwrap();
    let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]);
    let (_, d) = candle_only.run_with(call(), &env, &caps).unwrap();
    assert_eq!(d.used, Target::Cpu);
    assert_eq!(d.fallbacks[0].target, Target::MojoMax);
    assert_eq!(d.fallbacks[0].reason.kind(), "backend_not_compiled_in");
    // fill-mask runs on the CPU now; the fixture has no tokenizer (mask token), a typed error.
    let e = state
        .run_with(
            Call::FillMask(vec![vec![2u32, 3]].into()),
            &MapEnv::empty(),
            &caps,
        )
        .unwrap_err();
    match &e {
        SkillError::ModelFileMissing { path, .. } => assert!(path.ends_with("tokenizer.json")),
        e => panic!("{e}"),
    }
    // Other tasks stay typed skips on the CPU.
    let e = state
        .run_with(
            Call::Classify(vec![vec![2u32, 3]].into()),
            &MapEnv::empty(),
            &caps,
        )
        .unwrap_err();
    assert_eq!(
        e.tried().last().unwrap().to_string(),
        "cpu skipped: task not implemented by the candle backend"
    );
}

// ---------------------------------------------------------------- broken model directories

fn copy_fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny_dir().join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

fn embed_err(dir: &Path) -> SkillError {
    let skill = Bert::load(dir, Target::Cpu).unwrap();
    skill.embed(vec![vec![2u32, 3]]).unwrap_err()
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut v = read_json(&path);
    f(v.as_object_mut().unwrap());
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn missing_config_is_typed() {
    let tmp = copy_fixture();
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let e = Bert::load(tmp.path(), Target::Cpu).unwrap_err();
    assert!(matches!(e, SkillError::ConfigMissing { .. }), "{e}");
}

#[test]
fn missing_weights_name_the_file() {
    let tmp = copy_fixture();
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    match embed_err(tmp.path()) {
        SkillError::ModelFileMissing { path, .. } => {
            assert_eq!(path, tmp.path().join("model.safetensors"))
        }
        e => panic!("{e}"),
    }
}

#[test]
fn truncated_and_corrupt_weights_are_typed() {
    let tmp = copy_fixture();
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for (what, cut) in [
        ("truncated data", bytes[..bytes.len() - 100].to_vec()),
        ("truncated header", bytes[..20].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"not a safetensors file at all".to_vec()),
    ] {
        std::fs::write(&path, &cut).unwrap();
        match embed_err(tmp.path()) {
            SkillError::WeightsInvalid { path: p, detail } => {
                assert_eq!(p, path, "{what}");
                assert!(!detail.is_empty());
            }
            e => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn missing_tensor_is_named() {
    let tmp = copy_fixture();
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let gone = "bert.encoder.layer.1.output.dense.bias";
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != gone)
        .collect();
    assert_eq!(kept.len() + 1, st.len());
    let out = safetensors::serialize(kept, None).unwrap();
    std::fs::write(&path, out).unwrap();
    match embed_err(tmp.path()) {
        SkillError::TensorMissing { tensor, path: p } => {
            assert_eq!((tensor.as_str(), p), (gone, path))
        }
        e => panic!("{e}"),
    }
}

#[test]
fn config_mismatches_and_bad_fields_are_typed() {
    // A shape that config.json contradicts names the tensor.
    let tmp = copy_fixture();
    edit_config(tmp.path(), |c| {
        c.insert("intermediate_size".into(), 65.into());
    });
    match embed_err(tmp.path()) {
        SkillError::TensorInvalid { tensor, detail, .. } => {
            assert_eq!(tensor, "bert.encoder.layer.0.intermediate.dense.weight");
            assert!(
                detail.contains("[64, 32]") && detail.contains("[65, 32]"),
                "{detail}"
            );
        }
        e => panic!("{e}"),
    }
    for (field, value, needle) in [
        ("hidden_act", Value::from("quick_gelu"), "not implemented"),
        ("layer_norm_eps", Value::Null, "missing"),
        (
            "num_hidden_layers",
            Value::from("two"),
            "non-negative integer",
        ),
        (
            "position_embedding_type",
            Value::from("relative_key"),
            "absolute",
        ),
    ] {
        let tmp = copy_fixture();
        edit_config(tmp.path(), |c| {
            c.insert(field.into(), value);
        });
        match embed_err(tmp.path()) {
            SkillError::ConfigField {
                field: f, detail, ..
            } => {
                assert_eq!(f, field);
                assert!(detail.contains(needle), "{field}: {detail}");
            }
            e => panic!("{field}: {e}"),
        }
    }
    // v5 configs omit position_embedding_type: absolute.
    let tmp = copy_fixture();
    edit_config(tmp.path(), |c| {
        c.remove("position_embedding_type");
    });
    assert!(
        Bert::load(tmp.path(), Target::Cpu)
            .unwrap()
            .embed(vec![vec![2u32, 3]])
            .is_ok()
    );
}

#[test]
fn sentence_transformers_pooling_config_is_read() {
    let tmp = copy_fixture();
    std::fs::write(
        tmp.path().join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("1_Pooling")).unwrap();
    std::fs::write(
        tmp.path().join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    let t = tiny();
    let skill = Bert::load(tmp.path(), Target::Cpu).unwrap();
    let out = skill.embed(vec![t.ids[1][..5].to_vec()]).unwrap().output;
    assert_eq!(out.pooling, Pooling::Cls);
    assert!(out.normalized);
    // CLS = PyTorch's hidden state at position 0 of row 1, L2-normalised.
    let h = t.shape[2];
    let cls = &t.hidden[t.shape[1] * h..t.shape[1] * h + h];
    let norm: f32 = cls.iter().map(|x| x * x).sum::<f32>().sqrt();
    let unit: Vec<f32> = cls.iter().map(|x| x / norm).collect();
    let err = max_abs(&out.vectors[0], &unit);
    assert!(err <= TINY_ATOL, "{err}");
}

// ---------------------------------------------------------------- MiniLM vs sentence-transformers
