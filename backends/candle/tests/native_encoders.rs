//! candle encoders (bert, distilbert, xlm-roberta) against the PyTorch references recorded by
//! `fixtures/make_native_fixtures.py` in `fixtures/native/<type>/reference.json`:
//! last hidden state and masked-LM logits (tied decoder), embed pooling and fill-mask top-k
//! through dispatch, typed errors for broken checkpoints. Tolerances come from
//! `fixtures/native/manifest.json`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use skillgen_candle::parity::{TextEncoder, encoder_outputs};
use skillgen_runtime::request::{Call, EmbedRequest, FillMaskRequest, Output, TextBatch};
use skillgen_runtime::{Capabilities, MapEnv, Skill, SkillError, SkillState, Target, TargetSpec};
use skillgen_test_support::{floats, int_rows, native_fixture, read_json, tolerance};

#[derive(Debug, Skill)]
#[skill(
    model_type = "distilbert",
    family = encoder,
    modalities(text),
    tasks(
        base_model("DistilBertModel"),
        masked_lm("DistilBertForMaskedLM"),
        text_encoding("DistilBertModel")
    ),
    candle = "distilbert",
    native(base_model = encoder, masked_lm = encoder, text_encoding = encoder),
    backends = skillgen_candle::backends
)]
pub struct DistilBert {
    state: SkillState,
}

#[derive(Debug, Skill)]
#[skill(
    model_type = "xlm-roberta",
    family = encoder,
    modalities(text),
    tasks(
        base_model("XLMRobertaModel"),
        masked_lm("XLMRobertaForMaskedLM"),
        text_encoding("XLMRobertaModel")
    ),
    candle = "xlm_roberta",
    native(base_model = encoder, masked_lm = encoder, text_encoding = encoder),
    backends = skillgen_candle::backends
)]
pub struct XlmRoberta {
    state: SkillState,
}

#[derive(Debug, Skill)]
#[skill(
    model_type = "bert",
    family = encoder,
    modalities(text),
    tasks(base_model("BertModel"), masked_lm("BertForMaskedLM")),
    candle = "bert",
    native(base_model = encoder, masked_lm = encoder),
    backends = skillgen_candle::backends
)]
pub struct Bert {
    state: SkillState,
}

struct Fixture {
    dir: PathBuf,
    ids: Vec<Vec<u32>>,
    mask: Vec<Vec<u32>>,
    types: Option<Vec<Vec<u32>>>,
    hidden: (Vec<usize>, Vec<f32>),
    logits: (Vec<usize>, Vec<f32>),
}

fn fixture(model_type: &str) -> Fixture {
    let dir = native_fixture(model_type);
    let r = read_json(&dir.join("reference.json"));
    let i = &r["inputs"];
    Fixture {
        ids: int_rows(&i["input_ids"]),
        mask: int_rows(&i["attention_mask"]),
        types: i.get("token_type_ids").map(int_rows),
        hidden: floats(&r["outputs"]["last_hidden_state"]),
        logits: floats(&r["outputs"]["mlm_logits"]),
        dir,
    }
}

/// Max |got - want| over positions with mask 1; asserts every compared value is within
/// atol + rtol·|want|. Returns (max abs error, values compared).
fn compare_masked(
    what: &str,
    got: &[f32],
    want: &[f32],
    shape: &[usize],
    mask: &[Vec<u32>],
) -> (f32, usize) {
    let (atol, rtol) = tolerance("default");
    assert_eq!(got.len(), want.len(), "{what}: sizes");
    let (len, width) = (shape[1], shape[2]);
    let mut max_err = 0f32;
    let mut n = 0;
    for (b, row) in mask.iter().enumerate() {
        for (p, _) in row.iter().enumerate().filter(|&(_, &m)| m == 1) {
            let at = (b * len + p) * width;
            for (g, w) in got[at..at + width].iter().zip(&want[at..at + width]) {
                let err = (g - w).abs();
                assert!(
                    err <= atol + rtol * w.abs(),
                    "{what}: [{b},{p}] |{g} - {w}| = {err} > {atol} + {rtol}·|ref|"
                );
                max_err = max_err.max(err);
                n += 1;
            }
        }
    }
    eprintln!("{what}: max |candle - torch| = {max_err:e} over {n} values");
    (max_err, n)
}

fn check_parity(model_type: &str, width: usize) {
    let f = fixture(model_type);
    assert_eq!(f.mask[1][5..], [0, 0], "the fixture exercises padding");
    let ((hidden, hshape), logits) =
        encoder_outputs(&f.dir, model_type, &f.ids, &f.mask, f.types.as_deref()).unwrap();
    assert_eq!(hshape, f.hidden.0);
    let (_, n) = compare_masked(
        &format!("{model_type} last_hidden_state"),
        &hidden,
        &f.hidden.1,
        &hshape,
        &f.mask,
    );
    assert_eq!(n, 12 * width);
    let (logits, lshape) = logits.expect("the fixture is a *ForMaskedLM checkpoint");
    assert_eq!(lshape, f.logits.0);
    let (_, n) = compare_masked(
        &format!("{model_type} mlm_logits"),
        &logits,
        &f.logits.1,
        &lshape,
        &f.mask,
    );
    assert_eq!(n, 12 * 128);
}

#[test]
fn bert_hidden_state_and_mlm_logits_match_pytorch() {
    check_parity("bert", 32);
}

#[test]
fn distilbert_hidden_state_and_mlm_logits_match_pytorch() {
    check_parity("distilbert", 32);
}

#[test]
fn xlm_roberta_hidden_state_and_mlm_logits_match_pytorch() {
    check_parity("xlm-roberta", 32);
}

#[test]
fn distilbert_padding_is_masked() {
    // The padded row's valid positions must depend on the mask: the padded row alone (no
    // padding at all) gives the same hidden state as the padded batch.
    let f = fixture("distilbert");
    let row1: Vec<u32> = f.ids[1][..5].to_vec();
    let ((alone, _), _) =
        encoder_outputs(&f.dir, "distilbert", &[row1], &[vec![1; 5]], None).unwrap();
    let len = f.hidden.0[1];
    let want = &f.hidden.1[len * 32..len * 32 + 5 * 32];
    let err = alone
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err <= 1e-4, "{err}");
}

fn no_max() -> (MapEnv, Capabilities) {
    (MapEnv::empty(), Capabilities::fixed_cpu_only())
}

fn mean_of_reference(f: &Fixture, b: usize) -> Vec<f32> {
    let (len, h) = (f.hidden.0[1], f.hidden.0[2]);
    let n = f.mask[b].iter().filter(|&&m| m == 1).count();
    (0..h)
        .map(|k| {
            (0..n)
                .map(|p| f.hidden.1[(b * len + p) * h + k])
                .sum::<f32>()
                / n as f32
        })
        .collect()
}

fn embed_check<S: Skill>(model_type: &str) {
    let f = fixture(model_type);
    let state = SkillState::load(
        S::INFO,
        S::backends(),
        &f.dir,
        TargetSpec::Exact(Target::Cpu),
    )
    .unwrap();
    let (env, caps) = no_max();
    // Row 1 without its padding; batched with row 0 it is padded here.
    let rows = vec![f.ids[0].clone(), f.ids[1][..5].to_vec()];
    let (out, d) = state
        .run_with(
            Call::Embed(EmbedRequest::from(TextBatch::TokenIds(rows))),
            &env,
            &caps,
        )
        .unwrap();
    assert_eq!(d.used, Target::Cpu);
    let Output::Embed(e) = out else {
        panic!("wrong output")
    };
    let (atol, rtol) = tolerance("default");
    for b in 0..2 {
        let want = mean_of_reference(&f, b);
        for (g, w) in e.vectors[b].iter().zip(&want) {
            assert!(
                (g - w).abs() <= atol + rtol * w.abs(),
                "{model_type} row {b}"
            );
        }
    }
}

#[test]
fn distilbert_embed_is_mean_pooled_reference() {
    embed_check::<DistilBert>("distilbert");
}

#[test]
fn xlm_roberta_embed_is_mean_pooled_reference() {
    embed_check::<XlmRoberta>("xlm-roberta");
}

/// Copy a fixture and add a whitespace word-level tokenizer whose token `mask_id` is the mask
/// token (`t{id}` for the others), so fill-mask can run on the fixture's own inputs.
fn with_tokenizer(model_type: &str, mask_token: &str, mask_id: u32) -> tempfile::TempDir {
    let f = fixture(model_type);
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(f.dir.join(name), tmp.path().join(name)).unwrap();
    }
    let vocab: serde_json::Map<String, Value> = (0..128u32)
        .map(|i| {
            let t = if i == mask_id {
                mask_token.to_owned()
            } else {
                format!("t{i}")
            };
            (t, Value::from(i))
        })
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"},
    });
    std::fs::write(tmp.path().join("tokenizer.json"), tok.to_string()).unwrap();
    tmp
}

/// Softmax top-k of the reference logits at `[b, p]`.
fn reference_top(f: &Fixture, b: usize, p: usize, k: usize) -> Vec<(u32, f32)> {
    let (len, v) = (f.logits.0[1], f.logits.0[2]);
    let row = &f.logits.1[(b * len + p) * v..(b * len + p + 1) * v];
    let max = row.iter().copied().fold(f32::MIN, f32::max);
    let z: f32 = row.iter().map(|x| (x - max).exp()).sum();
    let mut ids: Vec<usize> = (0..v).collect();
    ids.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    ids.into_iter()
        .take(k)
        .map(|i| (i as u32, (row[i] - max).exp() / z))
        .collect()
}

fn fill_mask_check<S: Skill>(model_type: &str, mask_token: &str) {
    let f = fixture(model_type);
    // Row 1 (token types all 0, as here), without its padding.
    let (b, p) = (1, 2);
    let row: Vec<u32> = f.ids[b][..5].to_vec();
    assert!(f.mask[b][..5].iter().all(|&m| m == 1));
    assert!(
        f.types
            .as_ref()
            .is_none_or(|t| t[b].iter().all(|&x| x == 0))
    );
    let mask_id = row[p];
    assert_eq!(row.iter().filter(|&&i| i == mask_id).count(), 1);
    let tmp = with_tokenizer(model_type, mask_token, mask_id);
    let state = SkillState::load(
        S::INFO,
        S::backends(),
        tmp.path(),
        TargetSpec::Exact(Target::Cpu),
    )
    .unwrap();
    let (env, caps) = no_max();
    let text: Vec<String> = row
        .iter()
        .map(|&i| {
            if i == mask_id {
                mask_token.to_owned()
            } else {
                format!("t{i}")
            }
        })
        .collect();
    let want = reference_top(&f, b, p, 5);
    for input in [
        TextBatch::TokenIds(vec![row.clone()]),
        TextBatch::Texts(vec![text.join(" ")]),
    ] {
        let (out, _) = state
            .run_with(
                Call::FillMask(FillMaskRequest { input, top_k: 5 }),
                &env,
                &caps,
            )
            .unwrap();
        let Output::FillMask(out) = out else {
            panic!("wrong output")
        };
        let got = &out.predictions[0][0];
        assert_eq!(got.len(), 5);
        for (g, (id, score)) in got.iter().zip(&want) {
            assert_eq!(g.token_id, *id, "{model_type}: top-5 ids differ");
            assert!((g.score - score).abs() <= 1e-4, "{model_type}: score");
            assert!(!g.token.is_empty());
        }
    }
    // An input without a mask token is a typed error.
    let e = skill_err(&state, vec![vec![5, 6]]);
    assert!(matches!(e, SkillError::InvalidRequest { .. }), "{e}");
}

fn skill_err(state: &SkillState, ids: Vec<Vec<u32>>) -> SkillError {
    let (env, caps) = no_max();
    state
        .run_with(
            Call::FillMask(FillMaskRequest {
                input: TextBatch::TokenIds(ids),
                top_k: 3,
            }),
            &env,
            &caps,
        )
        .unwrap_err()
}

#[test]
fn bert_fill_mask_top_k_matches_reference_softmax() {
    fill_mask_check::<Bert>("bert", "[MASK]");
}

#[test]
fn distilbert_fill_mask_top_k_matches_reference_softmax() {
    fill_mask_check::<DistilBert>("distilbert", "[MASK]");
}

#[test]
fn xlm_roberta_fill_mask_top_k_matches_reference_softmax() {
    fill_mask_check::<XlmRoberta>("xlm-roberta", "<mask>");
}

#[test]
fn fill_mask_without_tokenizer_names_the_file() {
    let f = fixture("distilbert");
    let skill = DistilBert::load(&f.dir, TargetSpec::Exact(Target::Cpu)).unwrap();
    match skill_err(skill.state(), vec![vec![2, 4, 3]]) {
        SkillError::ModelFileMissing { path, .. } => assert!(path.ends_with("tokenizer.json")),
        e => panic!("{e}"),
    }
}

fn copy_fixture(model_type: &str) -> tempfile::TempDir {
    let f = fixture(model_type);
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(f.dir.join(name), tmp.path().join(name)).unwrap();
    }
    tmp
}

fn load_err(dir: &Path, model_type: &str) -> SkillError {
    TextEncoder::load(dir, model_type, &candle_core::Device::Cpu).unwrap_err()
}

#[test]
fn broken_checkpoints_are_typed_errors() {
    for model_type in ["distilbert", "xlm-roberta"] {
        let tmp = copy_fixture(model_type);
        let w = tmp.path().join("model.safetensors");
        let bytes = std::fs::read(&w).unwrap();
        std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
        assert!(
            matches!(
                load_err(tmp.path(), model_type),
                SkillError::WeightsInvalid { .. }
            ),
            "{model_type} truncated"
        );
        std::fs::write(&w, b"not a safetensors file").unwrap();
        assert!(matches!(
            load_err(tmp.path(), model_type),
            SkillError::WeightsInvalid { .. }
        ));
    }
    // A wrong shape in the config names the tensor.
    let tmp = copy_fixture("distilbert");
    let cfg = tmp.path().join("config.json");
    let mut c: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c.insert("hidden_dim".into(), 65.into());
    std::fs::write(&cfg, Value::Object(c.clone()).to_string()).unwrap();
    match load_err(tmp.path(), "distilbert") {
        SkillError::TensorInvalid { tensor, .. } => {
            assert_eq!(tensor, "distilbert.transformer.layer.0.ffn.lin1.weight")
        }
        e => panic!("{e}"),
    }
    c.insert("activation".into(), "tanh".into());
    std::fs::write(&cfg, Value::Object(c).to_string()).unwrap();
    match load_err(tmp.path(), "distilbert") {
        SkillError::ConfigField { field, .. } => assert_eq!(field, "activation"),
        e => panic!("{e}"),
    }
    // xlm-roberta: a missing pad_token_id is named (positions depend on it).
    let tmp = copy_fixture("xlm-roberta");
    let cfg = tmp.path().join("config.json");
    let mut c: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c.remove("pad_token_id");
    std::fs::write(&cfg, Value::Object(c).to_string()).unwrap();
    match load_err(tmp.path(), "xlm-roberta") {
        SkillError::ConfigField { field, .. } => assert_eq!(field, "pad_token_id"),
        e => panic!("{e}"),
    }
    // A missing tensor is named.
    let f = fixture("xlm-roberta");
    let bytes = std::fs::read(f.dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let gone = "roberta.encoder.layer.1.output.dense.bias";
    let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != gone)
        .collect();
    let tmp = copy_fixture("xlm-roberta");
    safetensors::serialize_to_file(kept, None, &tmp.path().join("model.safetensors")).unwrap();
    match load_err(tmp.path(), "xlm-roberta") {
        SkillError::TensorMissing { tensor, .. } => assert_eq!(tensor, gone),
        e => panic!("{e}"),
    }
}
