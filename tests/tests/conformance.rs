//! The conformance matrix: every fixture under `fixtures/conformance/<model_type>/` (built by
//! `fixtures/factory/make_fixture.py` from transformers 5.23 itself: a tiny seeded model of
//! the type's own config class, its real tensor names and reference outputs) runs through the
//! candle decoder on `cpu`:
//! - the logits of every position of both prompts (one forward pass) match transformers';
//! - 8 greedy tokens per prompt, fed through the KV cache, equal transformers'
//!   `generate(do_sample=False)` exactly;
//! - for the types the registry marks as running, the same tokens come out of the generated
//!   skill (`skills::registry::load_dir`, dispatch, `generate`).
//!
//! The result *is* the support table: the set of types whose fixture passes must equal the
//! set `models.yaml` marks `native: causal-lm: decoder` (which `SUPPORT.md` is generated
//! from). A type that starts passing, or stops, fails this test until the registry says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skillgen_candle::parity::{
    EncoderHead, decoder_all_logits, decoder_classify_logits, decoder_greedy, encoder_head_logits,
};
use skillgen_runtime::request::{
    Aggregation, Call, ClassifyRequest, ClassifyTokensRequest, EmbedImageRequest, EmbedRequest,
    FillMaskRequest, FinishReason, GenerateRequest, Output, Pooling, Prompt, QuestionRequest,
    TextBatch,
};
use skillgen_runtime::{
    BackendKind, Capabilities, DynSkill, MapEnv, SkillState, Support, Target, TargetSpec, Task,
};
use skillgen_test_support::{repo, tolerance};

/// `fixtures/conformance`.
fn root() -> PathBuf {
    repo().join("fixtures/conformance")
}

/// The tensors of `reference.safetensors`, as f32 (floats) or i64 (ints) with their shapes.
struct Reference {
    input_ids: Vec<Vec<u32>>,
    /// `[prompt][position][vocab]`.
    logits: Vec<Vec<Vec<f32>>>,
    greedy: Vec<Vec<u32>>,
}

fn ints(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<i64>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
    let v = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn rows(shape: &[usize], v: &[i64]) -> Vec<Vec<u32>> {
    v.chunks(shape[1])
        .map(|r| r.iter().map(|&x| u32::try_from(x).unwrap()).collect())
        .collect()
}

fn reference(dir: &Path) -> Reference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (s, ids) = ints(&st, "input_ids");
    let input_ids = rows(&s, &ids);
    let (s, g) = ints(&st, "greedy");
    let greedy = rows(&s, &g);
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let shape = t.shape().to_vec();
    let flat: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let (seq, vocab) = (shape[1], shape[2]);
    let logits = flat
        .chunks(seq * vocab)
        .map(|p| p.chunks(vocab).map(<[f32]>::to_vec).collect())
        .collect();
    Reference {
        input_ids,
        logits,
        greedy,
    }
}

/// `|Δ| ≤ atol + rtol·|reference|` (false for NaN).
fn within(d: f32, reference: f32, atol: f32, rtol: f32) -> bool {
    d <= atol + rtol * reference.abs()
}

/// Every model type directory (any task).
fn type_dirs() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(root()).unwrap() {
        let dir = e.unwrap().path();
        if dir.is_dir() {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, dir);
        }
    }
    out
}

/// Every causal-LM fixture: model type → directory.
fn causal_fixtures() -> BTreeMap<String, PathBuf> {
    type_dirs()
        .into_iter()
        .filter(|(_, d)| d.join("reference.safetensors").is_file())
        .collect()
}

/// Run one fixture through the decoder; `Err` says why it does not conform.
fn conforms(model_type: &str, dir: &Path) -> Result<f32, String> {
    let info = skills::registry::by_model_type(model_type)
        .ok_or_else(|| format!("`{model_type}` is not in the registry"))?;
    let state = SkillState::load(info, skills::backends(), dir, TargetSpec::Default)
        .map_err(|e| format!("load: {e}"))?;
    let r = reference(dir);
    let (atol, rtol) = tolerance("decoders");
    let mut worst = 0f32;
    for (b, prompt) in r.input_ids.iter().enumerate() {
        let got = decoder_all_logits(&state, Target::Cpu, prompt).map_err(|e| e.to_string())?;
        for (p, (g, want)) in got.iter().zip(&r.logits[b]).enumerate() {
            for (x, y) in g.iter().zip(want) {
                let d = (x - y).abs();
                worst = worst.max(d);
                if !within(d, *y, atol, rtol) {
                    return Err(format!(
                        "logits differ at prompt {b} position {p}: {x} vs {y} (|Δ| {d})"
                    ));
                }
            }
        }
        let n = r.greedy[b].len();
        let g = decoder_greedy(&state, Target::Cpu, prompt, n).map_err(|e| e.to_string())?;
        if g != r.greedy[b] {
            return Err(format!(
                "greedy tokens of prompt {b}: {g:?} vs transformers {:?}",
                r.greedy[b]
            ));
        }
    }
    Ok(worst)
}

/// Whether `model_type`'s head fixtures run through the BERT-like encoder (else the decoder).
fn is_encoder(model_type: &str) -> bool {
    skillgen_candle::parity::is_head_encoder(model_type)
}

/// The types `models.yaml` marks as running `task` on candle.
fn marked_for(task: Task) -> Vec<String> {
    skills::registry::all()
        .iter()
        .filter(|i| matches!(i.support(task, BackendKind::Candle), Support::Verified(_)))
        .map(|i| i.model_type.to_owned())
        .collect()
}

/// Whether `t` is of the vision family (its `base-model` is `embed_image`, not `embed`).
fn is_vision(t: &str) -> bool {
    skills::registry::by_model_type(t).is_some_and(|i| i.family == skillgen_runtime::Family::Vision)
}

/// A text model verified by its own pooled output (`<type>/text-embed/`), not its hidden
/// states.
fn is_pooled_text(t: &str) -> bool {
    root().join(t).join("text-embed").is_dir()
}

/// Which fixtures of one kind pass and which fail (with why), as the conformance tests record
/// them; the passing set must equal the registry's marks.
#[derive(Default)]
struct Tally {
    pass: Vec<String>,
    fail: BTreeMap<String, String>,
}

impl Tally {
    /// Record `t`'s outcome on its `kind` fixture: the largest difference, or why it fails.
    fn record(&mut self, t: &str, kind: &str, outcome: Result<f32, String>) {
        match outcome {
            Ok(w) => {
                eprintln!("pass {t:<24} {kind} max |Δ| {w:.2e}");
                self.pass.push(t.to_owned());
            }
            Err(why) => {
                eprintln!("FAIL {t:<24} {kind} {why}");
                self.fail.insert(t.to_owned(), why);
            }
        }
    }

    fn summary(&self, kind: &str) {
        eprintln!(
            "{} {kind} fixtures pass, {} do not",
            self.pass.len(),
            self.fail.len()
        );
    }

    /// Every type of `marked` passes (`exempt` ones may have no fixture of this kind, e.g. a
    /// type verified by its hand-written parity fixture).
    fn assert_marked_pass(&self, kind: &str, marked: &[String], exempt: impl Fn(&str) -> bool) {
        let unproven: Vec<_> = marked
            .iter()
            .filter(|t| !self.pass.contains(t) && !exempt(t))
            .map(|t| (t, self.fail.get(t).map_or("no fixture", String::as_str)))
            .collect();
        assert!(
            unproven.is_empty(),
            "{kind}: marked in models.yaml but no passing fixture: {unproven:?}"
        );
    }

    /// The passing set equals `marked`, both ways.
    fn assert_equals_marks(&self, kind: &str, marked: &[String], exempt: impl Fn(&str) -> bool) {
        self.assert_marked_pass(kind, marked, exempt);
        let unmarked: Vec<_> = self.pass.iter().filter(|t| !marked.contains(t)).collect();
        assert!(
            unmarked.is_empty(),
            "{kind}: fixtures pass but models.yaml does not mark them: {unmarked:?}"
        );
    }
}

fn marked() -> Vec<String> {
    marked_for(Task::CausalLm)
}

/// A classify fixture (`<type>/classify/`): unpadded inputs and transformers' logits.
struct ClassifyReference {
    inputs: Vec<Vec<u32>>,
    logits: Vec<Vec<f32>>,
}

fn classify_reference(dir: &Path) -> ClassifyReference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (s, ids) = ints(&st, "input_ids");
    let (_, mask) = ints(&st, "attention_mask");
    let inputs = ids
        .chunks(s[1])
        .zip(mask.chunks(s[1]))
        .map(|(r, m)| {
            r.iter()
                .zip(m)
                .filter(|(_, m)| **m == 1)
                .map(|(&x, _)| u32::try_from(x).unwrap())
                .collect()
        })
        .collect();
    let t = st.tensor("logits").unwrap();
    let labels = t.shape()[1];
    let flat: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    ClassifyReference {
        inputs,
        logits: flat.chunks(labels).map(<[f32]>::to_vec).collect(),
    }
}

/// Every sequence-classification fixture: model type → directory.
fn classify_fixtures() -> BTreeMap<String, PathBuf> {
    type_dirs()
        .into_iter()
        .map(|(t, d)| (t, d.join("classify")))
        .filter(|(_, d)| d.join("reference.safetensors").is_file())
        .collect()
}

fn classify_conforms(model_type: &str, dir: &Path) -> Result<f32, String> {
    let info = skills::registry::by_model_type(model_type)
        .ok_or_else(|| format!("`{model_type}` is not in the registry"))?;
    let state = SkillState::load(info, skills::backends(), dir, TargetSpec::Default)
        .map_err(|e| format!("load: {e}"))?;
    let r = classify_reference(dir);
    let got = if is_encoder(model_type) {
        encoder_head_logits(&state, Target::Cpu, EncoderHead::Sequence, &r.inputs)
            .map(|rows| rows.into_iter().flatten().collect())
    } else if skillgen_candle::seq2seq::MODEL_TYPES.contains(&model_type) {
        skillgen_candle::parity::seq2seq_head_logits(&state, Target::Cpu, false, &r.inputs)
            .map(|rows| rows.into_iter().flatten().collect())
    } else {
        decoder_classify_logits(&state, Target::Cpu, &r.inputs)
    }
    .map_err(|e| e.to_string())?;
    let (atol, rtol) = tolerance("decoders");
    let mut worst = 0f32;
    for (b, (g, want)) in got.iter().zip(&r.logits).enumerate() {
        if g.len() != want.len() {
            return Err(format!("input {b}: {} labels vs {}", g.len(), want.len()));
        }
        for (x, y) in g.iter().zip(want) {
            let d = (x - y).abs();
            worst = worst.max(d);
            if !within(d, *y, atol, rtol) {
                return Err(format!("classifier logits of input {b}: {g:?} vs {want:?}"));
            }
        }
    }
    Ok(worst)
}

#[test]
fn classify_fixtures_conform_and_equal_the_support_table() {
    let mut tally = Tally::default();
    for (t, dir) in classify_fixtures() {
        tally.record(&t, "classify", classify_conforms(&t, &dir));
    }
    tally.summary("classify");
    let marked = marked_for(Task::SequenceClassification);
    tally.assert_equals_marks("classify", &marked, |_| false);
}

#[test]
fn marked_types_classify_through_their_generated_skill() {
    let caps = Capabilities::fixed_cpu_only();
    for t in marked_for(Task::SequenceClassification) {
        let dir = root().join(&t).join("classify");
        let r = classify_reference(&dir);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        // The byte-level tokenizer: the fixture's ids are the bytes of ASCII text.
        let texts: Vec<String> = r
            .inputs
            .iter()
            .map(|ids| {
                ids.iter()
                    .map(|&b| char::from(u8::try_from(b).unwrap()))
                    .collect()
            })
            .collect();
        let req = ClassifyRequest {
            input: TextBatch::Texts(texts),
            top_k: 0,
        };
        let (out, d) = skill
            .state()
            .run_with(Call::Classify(req), &MapEnv::empty(), &caps)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(d.used, Target::Cpu, "{t}");
        let Output::Classify(c) = out else {
            panic!("{t}: {out:?}")
        };
        for (labels, logits) in c.labels.iter().zip(&r.logits) {
            // Softmax of transformers' logits, named by id2label, best first.
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = logits.iter().map(|x| (x - m).exp()).collect();
            let sum: f32 = e.iter().sum();
            let names = ["negative", "neutral", "positive"];
            let mut want: Vec<(&str, f32)> = names
                .iter()
                .copied()
                .zip(e.iter().map(|x| x / sum))
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1));
            assert_eq!(labels.len(), 3, "{t}");
            for (got, (name, p)) in labels.iter().zip(&want) {
                assert_eq!(got.label, *name, "{t}");
                assert!((got.score - p).abs() < 1e-4, "{t}: {} vs {p}", got.score);
            }
        }
    }
}

#[test]
fn fixtures_conform_and_equal_the_support_table() {
    let mut tally = Tally::default();
    for (t, dir) in causal_fixtures() {
        tally.record(&t, "causal", conforms(&t, &dir));
    }
    tally.summary("causal");
    let marked = marked();
    tally.assert_equals_marks("causal", &marked, |_| false);
}

#[test]
fn marked_types_generate_through_their_generated_skill() {
    let caps = Capabilities::fixed_cpu_only();
    for t in marked() {
        let dir = root().join(&t);
        let r = reference(&dir);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        assert_eq!(skill.info().model_type, t);
        for (b, prompt) in r.input_ids.iter().enumerate() {
            let req = GenerateRequest::new(Prompt::TokenIds(prompt.clone())).max_tokens(8);
            let (out, d) = skill
                .state()
                .run_with(Call::Generate(req), &MapEnv::empty(), &caps)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            let Output::Generate(g) = out else {
                panic!("{t}: {out:?}")
            };
            assert_eq!(d.used, Target::Cpu, "{t}");
            // Generation stops at the checkpoint's EOS; the reference ignores it.
            let n = g.token_ids.len();
            assert_eq!(g.token_ids[..], r.greedy[b][..n], "{t} prompt {b}");
            if n < 8 {
                assert_eq!(g.finish_reason, FinishReason::Eos, "{t}");
            }
        }
    }
}

/// A token-classification or QA fixture: unpadded inputs and transformers' per-position
/// outputs (`[input][position][n]`, the real positions only).
struct HeadReference {
    inputs: Vec<Vec<u32>>,
    outputs: Vec<Vec<Vec<f32>>>,
}

fn floats_of(st: &safetensors::SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

/// What a per-position fixture holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `token-classify/`: `logits` [2,7,labels].
    Tokens,
    /// `qa/`: `start_logits`, `end_logits` [2,7].
    Qa,
    /// `base/`: `last_hidden_state` [2,7,hidden].
    Base,
    /// `mlm/`: `logits` [2,7,vocab].
    Mlm,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Tokens, Kind::Qa, Kind::Base, Kind::Mlm];

    fn dir(self) -> &'static str {
        match self {
            Kind::Tokens => "token-classify",
            Kind::Qa => "qa",
            Kind::Base => "base",
            Kind::Mlm => "mlm",
        }
    }

    fn task(self) -> Task {
        match self {
            Kind::Tokens => Task::TokenClassification,
            Kind::Qa => Task::QuestionAnswering,
            Kind::Base => Task::BaseModel,
            Kind::Mlm => Task::MaskedLm,
        }
    }
}

/// A fixture's inputs: each row of `input_ids` up to its attention mask.
fn reference_inputs(dir: &Path) -> Vec<Vec<u32>> {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (s, ids) = ints(&st, "input_ids");
    let (_, mask) = ints(&st, "attention_mask");
    ids.chunks(s[1])
        .zip(mask.chunks(s[1]))
        .map(|(r, m)| {
            let n = m.iter().filter(|x| **x == 1).count();
            r[..n].iter().map(|&x| u32::try_from(x).unwrap()).collect()
        })
        .collect()
}

fn head_reference(dir: &Path, kind: Kind) -> HeadReference {
    let qa = kind == Kind::Qa;
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (s, ids) = ints(&st, "input_ids");
    let (_, mask) = ints(&st, "attention_mask");
    let (rows, seq) = (s[0], s[1]);
    let real: Vec<usize> = mask
        .chunks(seq)
        .map(|m| m.iter().filter(|x| **x == 1).count())
        .collect();
    let inputs = ids
        .chunks(seq)
        .zip(&real)
        .map(|(r, n)| r[..*n].iter().map(|&x| u32::try_from(x).unwrap()).collect())
        .collect();
    let outputs = if qa {
        let (_, start) = floats_of(&st, "start_logits");
        let (_, end) = floats_of(&st, "end_logits");
        (0..rows)
            .map(|b| {
                (0..real[b])
                    .map(|p| vec![start[b * seq + p], end[b * seq + p]])
                    .collect()
            })
            .collect()
    } else {
        let name = if kind == Kind::Base {
            "last_hidden_state"
        } else {
            "logits"
        };
        let (shape, l) = floats_of(&st, name);
        let n = shape[2];
        (0..rows)
            .map(|b| {
                (0..real[b])
                    .map(|p| l[(b * seq + p) * n..(b * seq + p + 1) * n].to_vec())
                    .collect()
            })
            .collect()
    };
    HeadReference { inputs, outputs }
}

fn head_conforms(model_type: &str, dir: &Path, kind: Kind) -> Result<f32, String> {
    use skillgen_candle::decoder::HeadKind;
    let info = skills::registry::by_model_type(model_type)
        .ok_or_else(|| format!("`{model_type}` is not in the registry"))?;
    let state = SkillState::load(info, skills::backends(), dir, TargetSpec::Default)
        .map_err(|e| format!("load: {e}"))?;
    let r = head_reference(dir, kind);
    let got = if is_encoder(model_type) {
        let head = match kind {
            Kind::Tokens => EncoderHead::Tokens,
            Kind::Qa => EncoderHead::Qa,
            Kind::Base => EncoderHead::Base,
            Kind::Mlm => EncoderHead::Mlm,
        };
        encoder_head_logits(&state, Target::Cpu, head, &r.inputs)
    } else if skillgen_candle::seq2seq::MODEL_TYPES.contains(&model_type) {
        match kind {
            Kind::Qa => {
                skillgen_candle::parity::seq2seq_head_logits(&state, Target::Cpu, true, &r.inputs)
            }
            _ => return Err(format!("no seq2seq head for `{}` fixtures", kind.dir())),
        }
    } else {
        let head = match kind {
            Kind::Tokens => HeadKind::Tokens,
            Kind::Qa => HeadKind::Qa,
            Kind::Base => HeadKind::Base,
            Kind::Mlm => HeadKind::Mlm,
        };
        skillgen_candle::parity::decoder_head_logits(&state, Target::Cpu, head, &r.inputs)
    }
    .map_err(|e| e.to_string())?;
    let (atol, rtol) = tolerance("decoders");
    let mut worst = 0f32;
    for (b, (g, want)) in got.iter().zip(&r.outputs).enumerate() {
        for (p, (gr, wr)) in g.iter().zip(want).enumerate() {
            for (x, y) in gr.iter().zip(wr) {
                let d = (x - y).abs();
                worst = worst.max(d);
                if !within(d, *y, atol, rtol) {
                    return Err(format!("input {b} position {p}: {gr:?} vs {wr:?}"));
                }
            }
        }
    }
    Ok(worst)
}

/// Token classification (`<type>/token-classify/`) and extractive QA (`<type>/qa/`): every
/// fixture's per-position logits, and the passing sets equal the registry's marks.
#[test]
fn token_and_qa_fixtures_conform_and_equal_the_support_table() {
    for kind in Kind::ALL {
        let (sub, task) = (kind.dir(), kind.task());
        let mut tally = Tally::default();
        for (t, dir) in type_dirs() {
            let dir = dir.join(sub);
            if !dir.join("reference.safetensors").is_file() {
                continue;
            }
            tally.record(&t, sub, head_conforms(&t, &dir, kind));
        }
        let marked: Vec<String> = marked_for(task)
            .into_iter()
            .filter(|t| kind != Kind::Base || !(is_vision(t) || is_pooled_text(t)))
            .collect();
        // A type marked on the strength of its hand-written parity fixture
        // (`fixtures/native/<type>`, e.g. distilbert) has no factory fixture for this head.
        let native_only = |t: &str| {
            !root().join(t).join(sub).is_dir()
                && skillgen_test_support::native_fixture(t)
                    .join("reference.json")
                    .is_file()
        };
        tally.assert_equals_marks(sub, &marked, |t| native_only(t));
    }
}

/// The marked types answer through their generated skills: `classify_tokens` on texts (the
/// byte-level tokenizer makes the fixture's ids a text) gives transformers' argmax labels, and
/// `answer_question` on (question, context) = (the first 2 bytes, the rest) returns the span
/// that maximises transformers' start + end logits over the context.
#[test]
fn token_and_qa_through_their_generated_skills() {
    let caps = Capabilities::fixed_cpu_only();
    let text = |ids: &[u32]| -> String {
        ids.iter()
            .map(|&b| char::from(u8::try_from(b).unwrap()))
            .collect()
    };
    for t in marked_for(Task::TokenClassification) {
        let dir = root().join(&t).join("token-classify");
        let r = head_reference(&dir, Kind::Tokens);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        let req = ClassifyTokensRequest::from(TextBatch::Texts(
            r.inputs.iter().map(|i| text(i)).collect(),
        ));
        let (out, d) = skill
            .state()
            .run_with(Call::ClassifyTokens(req), &MapEnv::empty(), &caps)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(d.used, Target::Cpu, "{t}");
        let Output::ClassifyTokens(c) = out else {
            panic!("{t}: {out:?}")
        };
        let names = ["O", "B-X", "I-X"];
        for (got, want) in c.tokens.iter().zip(&r.outputs) {
            assert_eq!(got.len(), want.len(), "{t}");
            for (g, w) in got.iter().zip(want) {
                let best = (0..w.len()).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap();
                assert_eq!(g.label, names[best], "{t}");
            }
        }
        assert_eq!(c.entities, None, "{t}: entities only when asked");
        simple_entities_match_the_pipeline(&t, &skill, &dir, &caps);
    }
    for t in marked_for(Task::QuestionAnswering) {
        let dir = root().join(&t).join("qa");
        let r = head_reference(&dir, Kind::Qa);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        let ids = &r.inputs[0];
        let (question, context) = (text(&ids[..2]), text(&ids[2..]));
        let req = QuestionRequest::new(question, context.clone());
        let (out, _) = skill
            .state()
            .run_with(Call::AnswerQuestion(req), &MapEnv::empty(), &caps)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        let Output::AnswerQuestion(a) = out else {
            panic!("{t}: {out:?}")
        };
        // The best (start, end) over the context tokens (positions 2..), spans ≤ 15 tokens.
        let w = &r.outputs[0];
        let mut best = (0, 0, f32::NEG_INFINITY);
        for s in 2..w.len() {
            for e in s..w.len().min(s + 15) {
                if w[s][0] + w[e][1] > best.2 {
                    best = (s, e, w[s][0] + w[e][1]);
                }
            }
        }
        assert_eq!((a.start, a.end), (best.0 - 2, best.1 - 1), "{t}: {a:?}");
        assert_eq!(a.answer, context[best.0 - 2..best.1 - 1], "{t}");
    }
}

/// `classify_tokens` with [`Aggregation::Simple`] gives what transformers'
/// `pipeline("token-classification", aggregation_strategy="simple")` gives on the same texts
/// (`entities.json`, made by `fixtures/factory/token_entities.py`): the same groups, labels,
/// words and offsets, scores within 1e-4.
fn simple_entities_match_the_pipeline(t: &str, skill: &DynSkill, dir: &Path, caps: &Capabilities) {
    struct WantEntity {
        label: String,
        score: f32,
        word: String,
        start: usize,
        end: usize,
    }
    let path = dir.join("entities.json");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let texts: Vec<String> = json["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|v| v.as_str().expect("a text").to_owned())
        .collect();
    let want_entities: Vec<Vec<WantEntity>> = json["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("entities of a text")
                .iter()
                .map(|e| WantEntity {
                    label: e["label"].as_str().expect("label").to_owned(),
                    score: e["score"].as_f64().expect("score") as f32,
                    word: e["word"].as_str().expect("word").to_owned(),
                    start: e["start"].as_u64().expect("start") as usize,
                    end: e["end"].as_u64().expect("end") as usize,
                })
                .collect()
        })
        .collect();
    let req =
        ClassifyTokensRequest::from(TextBatch::Texts(texts.clone())).aggregate(Aggregation::Simple);
    let (out, _) = skill
        .state()
        .run_with(Call::ClassifyTokens(req), &MapEnv::empty(), caps)
        .unwrap_or_else(|e| panic!("{t}: {e}"));
    let Output::ClassifyTokens(c) = out else {
        panic!("{t}: {out:?}")
    };
    let got = c.entities.unwrap_or_else(|| panic!("{t}: no entities"));
    assert_eq!(got.len(), want_entities.len(), "{t}");
    for (text, (g, w)) in texts.iter().zip(got.iter().zip(&want_entities)) {
        assert_eq!(
            g.iter()
                .map(|e| (e.label.clone(), e.word.clone(), e.start, e.end))
                .collect::<Vec<_>>(),
            w.iter()
                .map(|e| (e.label.clone(), e.word.clone(), e.start, e.end))
                .collect::<Vec<_>>(),
            "{t}: entities of {text:?}"
        );
        for (ge, we) in g.iter().zip(w) {
            assert!(
                (ge.score - we.score).abs() <= 1e-4,
                "{t}: {text:?} {:?}: score {} vs transformers {}",
                we.word,
                ge.score,
                we.score
            );
        }
    }
}

/// The marked base models embed through their generated skills (mean pooling over the
/// reference hidden states: no sentence-transformers config in a fixture), and the marked
/// masked LMs fill masks: a copy of the fixture whose vocabulary names id 99 `[MASK]` gives, at
/// that position, transformers' argmax token with its softmax probability.
#[test]
fn base_and_mlm_through_their_generated_skills() {
    let caps = Capabilities::fixed_cpu_only();
    let text = |ids: &[u32]| -> String {
        ids.iter()
            .map(|&b| char::from(u8::try_from(b).unwrap()))
            .collect()
    };
    let mut embedded = 0;
    for t in marked_for(Task::BaseModel) {
        let dir = root().join(&t).join(Kind::Base.dir());
        if !dir.is_dir() {
            continue;
        }
        let r = head_reference(&dir, Kind::Base);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        // Several inputs of different lengths: one padded, masked batch.
        let req = EmbedRequest::from(TextBatch::Texts(r.inputs.iter().map(|i| text(i)).collect()));
        let (out, d) = skill
            .state()
            .run_with(Call::Embed(req), &MapEnv::empty(), &caps)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(d.used, Target::Cpu, "{t}");
        let Output::Embed(e) = out else {
            panic!("{t}: {out:?}")
        };
        assert_eq!((e.pooling, e.normalized), (Pooling::Mean, false), "{t}");
        for (b, (got, hidden)) in e.vectors.iter().zip(&r.outputs).enumerate() {
            assert_eq!(e.token_ids[b], r.inputs[b], "{t}");
            for (j, g) in got.iter().enumerate() {
                let want = hidden.iter().map(|row| row[j]).sum::<f32>() / hidden.len() as f32;
                assert!(
                    (g - want).abs() < 1e-4,
                    "{t} input {b} dim {j}: {g} vs {want}"
                );
            }
        }
        embedded += 1;
    }
    assert!(embedded >= 10, "only {embedded} base fixtures embedded");

    let mut filled = 0;
    for t in marked_for(Task::MaskedLm) {
        let src = root().join(&t).join(Kind::Mlm.dir());
        if !src.is_dir() {
            continue;
        }
        let r = head_reference(&src, Kind::Mlm);
        let tmp = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
        }
        let tok_path = tmp.path().join("tokenizer.json");
        let mut tok: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
        // Rename vocabulary entry 99 (byte `c`) to `[MASK]`.
        let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
        let key = vocab
            .iter()
            .find(|(_, id)| id.as_u64() == Some(99))
            .map(|(k, _)| k.clone())
            .unwrap();
        vocab.remove(&key);
        vocab.insert("[MASK]".to_owned(), serde_json::json!(99));
        std::fs::write(&tok_path, tok.to_string()).unwrap();
        let skill: DynSkill = skills::registry::load_dir(tmp.path(), TargetSpec::Default).unwrap();
        let ids = r.inputs[0].clone();
        let at = ids
            .iter()
            .position(|&i| i == 99)
            .expect("id 99 in the fixture's input");
        let req = FillMaskRequest {
            input: TextBatch::TokenIds(vec![ids]),
            top_k: 3,
        };
        let (out, _) = skill
            .state()
            .run_with(Call::FillMask(req), &MapEnv::empty(), &caps)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        let Output::FillMask(m) = out else {
            panic!("{t}: {out:?}")
        };
        let logits = &r.outputs[0][at];
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap();
        let mx = logits[best];
        let p = 1.0 / logits.iter().map(|x| (x - mx).exp()).sum::<f32>();
        let top = &m.predictions[0][0];
        assert_eq!(top.len(), 3, "{t}");
        assert_eq!(top[0].token_id as usize, best, "{t}");
        assert!(
            (top[0].score - p).abs() < 1e-4,
            "{t}: {} vs {p}",
            top[0].score
        );
        filled += 1;
    }
    assert!(filled >= 10, "only {filled} mlm fixtures filled");
}

/// An image-classification fixture (`<type>/image-classify/`): pixel values and logits.
struct ImageReference {
    pixels: Vec<f32>,
    shape: [usize; 4],
    logits: Vec<Vec<f32>>,
}

fn image_reference(dir: &Path) -> ImageReference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (s, pixels) = floats_of(&st, "pixel_values");
    let (ls, l) = floats_of(&st, "logits");
    ImageReference {
        pixels,
        shape: [s[0], s[1], s[2], s[3]],
        logits: l.chunks(ls[1]).map(<[f32]>::to_vec).collect(),
    }
}

/// Every image-classification fixture through the ViT-like encoder (pixel values → logits),
/// the passing set equal to the registry's marks, and every marked type through its
/// generated skill: `classify_image` on the fixture's PNGs gives transformers' labels and
/// softmax scores.
#[test]
fn image_fixtures_conform_and_equal_the_support_table() {
    let mut tally = Tally::default();
    for (t, dir) in type_dirs() {
        let dir = dir.join("image-classify");
        if !dir.join("reference.safetensors").is_file() {
            continue;
        }
        let r = image_reference(&dir);
        let got = if skillgen_candle::cnn::MODEL_TYPES.contains(&t.as_str())
            || skillgen_candle::swin::MODEL_TYPES.contains(&t.as_str())
            || skillgen_candle::pvt::MODEL_TYPES.contains(&t.as_str())
        {
            skillgen_candle::parity::cnn_logits(&dir, &r.pixels, r.shape)
        } else {
            skillgen_candle::parity::vit_logits(&dir, &r.pixels, r.shape)
        };
        let (atol, rtol) = tolerance("decoders");
        let outcome = got.map_err(|e| e.to_string()).and_then(|(flat, _)| {
            let mut worst = 0f32;
            for (x, y) in flat.iter().zip(r.logits.iter().flatten()) {
                let d = (x - y).abs();
                worst = worst.max(d);
                if !within(d, *y, atol, rtol) {
                    return Err(format!("logits {flat:?} vs {:?}", r.logits));
                }
            }
            Ok(worst)
        });
        tally.record(&t, "image-classify", outcome);
    }
    let marked = marked_for(Task::ImageClassification);
    let native_only = |t: &str| {
        !root().join(t).join("image-classify").is_dir()
            && skillgen_test_support::native_fixture(t)
                .join("reference.json")
                .is_file()
    };
    tally.assert_equals_marks("image-classify", &marked, |t| native_only(t));

    let caps = Capabilities::fixed_cpu_only();
    for t in &marked {
        let dir = root().join(t).join("image-classify");
        if !dir.is_dir() {
            continue;
        }
        let r = image_reference(&dir);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        for (k, logits) in r.logits.iter().enumerate() {
            let req = skillgen_runtime::request::ClassifyImageRequest {
                image: dir.join(format!("image{k}.png")).into(),
                top_k: 0,
            };
            let (out, d) = skill
                .state()
                .run_with(Call::ClassifyImage(req), &MapEnv::empty(), &caps)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(d.used, Target::Cpu, "{t}");
            let Output::ClassifyImage(c) = out else {
                panic!("{t}: {out:?}")
            };
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = logits.iter().map(|x| (x - m).exp()).sum();
            let names = ["negative", "neutral", "positive"];
            for l in &c.labels {
                let i = names.iter().position(|n| *n == l.label).unwrap();
                let p = (logits[i] - m).exp() / sum;
                assert!(
                    (l.score - p).abs() < 1e-4,
                    "{t} image{k} {}: {} vs {p}",
                    l.label,
                    l.score
                );
            }
        }
    }
}

/// An image tower's fixture (`<type>/image-embed/`): transformers' `pooler_output` of the
/// two PNGs.
fn pooled_reference(dir: &Path) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (s, p) = floats_of(&st, "pooler_output");
    p.chunks(s[1]).map(<[f32]>::to_vec).collect()
}

/// `embed_image` of the fixture's two PNGs against `want`; the largest difference.
fn pooled_conforms(got: &[Vec<f32>], want: &[Vec<f32>]) -> Result<f32, String> {
    let (atol, rtol) = tolerance("decoders");
    if got.len() != want.len() || got.iter().zip(want).any(|(g, w)| g.len() != w.len()) {
        return Err(format!(
            "shape: {} vectors of {:?} vs {} of {:?}",
            got.len(),
            got.first().map(Vec::len),
            want.len(),
            want.first().map(Vec::len)
        ));
    }
    let mut worst = 0f32;
    for (x, y) in got.iter().flatten().zip(want.iter().flatten()) {
        let d = (x - y).abs();
        worst = worst.max(d);
        if !within(d, *y, atol, rtol) {
            return Err(format!("pooled {got:?} vs {want:?}"));
        }
    }
    Ok(worst)
}

/// Every image-embedding fixture (`<type>/image-embed/`: CLIP's, SigLIP's, SigLIP 2's vision
/// models, DINOv3's ConvNeXt) through candle, PNG to pooled output (the preprocessor included);
/// the passing set equals the registry's `base-model` marks of the vision family; and every
/// marked type through its generated skill's `embed_image`.
#[test]
fn image_tower_fixtures_conform_and_equal_the_support_table() {
    let images = |dir: &Path| -> Vec<skillgen_runtime::request::ImageInput> {
        (0..2)
            .map(|k| dir.join(format!("image{k}.png")).into())
            .collect()
    };
    let mut tally = Tally::default();
    for (t, dir) in type_dirs() {
        let dir = dir.join("image-embed");
        if !dir.join("reference.safetensors").is_file() {
            continue;
        }
        let want = pooled_reference(&dir);
        let outcome =
            skillgen_candle::parity::embed_image(&dir, &t, &EmbedImageRequest::new(images(&dir)))
                .map_err(|e| e.to_string())
                .and_then(|e| pooled_conforms(&e.vectors, &want));
        tally.record(&t, "image-embed", outcome);
    }
    let marked: Vec<String> = marked_for(Task::BaseModel)
        .into_iter()
        .filter(|t| is_vision(t))
        .collect();
    tally.assert_equals_marks("image-embed", &marked, |_| false);

    let caps = Capabilities::fixed_cpu_only();
    for t in &marked {
        let dir = root().join(t).join("image-embed");
        let want = pooled_reference(&dir);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        let mut req = EmbedImageRequest::new(images(&dir));
        req.normalize = true;
        let (out, d) = skill
            .state()
            .run_with(Call::EmbedImage(req), &MapEnv::empty(), &caps)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(d.used, Target::Cpu, "{t}");
        let Output::EmbedImage(e) = out else {
            panic!("{t}: {out:?}")
        };
        assert!(e.normalized, "{t}");
        assert_eq!(e.dim, want[0].len(), "{t}");
        let unit: Vec<Vec<f32>> = want
            .iter()
            .map(|v| {
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / n).collect()
            })
            .collect();
        for (g, w) in e.vectors.iter().flatten().zip(unit.iter().flatten()) {
            assert!((g - w).abs() < 1e-4, "{t}: {:?} vs {unit:?}", e.vectors);
        }
    }
}

/// Every pooled-text fixture (`<type>/text-embed/`: CLIP's text tower, DPR's encoders):
/// `embed` of the two texts gives transformers' `pooler_output`, each input alone; the passing
/// set equals the `base-model` marks of the types with such a fixture (and their
/// `text-encoding` marks, the same class); every marked type through its generated skill.
#[test]
fn pooled_text_fixtures_conform_and_equal_the_support_table() {
    let text = |ids: &[u32]| -> String {
        ids.iter()
            .map(|&b| char::from(u8::try_from(b).unwrap()))
            .collect()
    };
    let mut tally = Tally::default();
    for (t, dir) in type_dirs() {
        let dir = dir.join("text-embed");
        if !dir.join("reference.safetensors").is_file() {
            continue;
        }
        let inputs = reference_inputs(&dir);
        let want = pooled_reference(&dir);
        let input = TextBatch::Texts(inputs.iter().map(|i| text(i)).collect());
        let outcome = skillgen_candle::parity::embed_pooled_text(&dir, &t, &input)
            .map_err(|e| e.to_string())
            .and_then(|e| {
                if e.token_ids != inputs || e.pooling != Pooling::Pooler || e.normalized {
                    return Err(format!(
                        "token ids {:?} (want {inputs:?}), pooling {}, normalized {}",
                        e.token_ids, e.pooling, e.normalized
                    ));
                }
                pooled_conforms(&e.vectors, &want)
            });
        tally.record(&t, "text-embed", outcome);
    }
    assert!(
        tally.pass.len() >= 2,
        "only {:?} pass ({:?})",
        tally.pass,
        tally.fail
    );
    let marked: Vec<String> = marked_for(Task::BaseModel)
        .into_iter()
        .filter(|t| is_pooled_text(t))
        .collect();
    tally.assert_equals_marks("text-embed", &marked, |_| false);
    // `text-encoding` is the same class: every type marked for it passes too.
    let encoding: Vec<String> = marked_for(Task::TextEncoding)
        .into_iter()
        .filter(|t| is_pooled_text(t))
        .collect();
    tally.assert_marked_pass("text-embed (text-encoding)", &encoding, |_| false);

    let caps = Capabilities::fixed_cpu_only();
    for t in &tally.pass {
        let dir = root().join(t).join("text-embed");
        let inputs = reference_inputs(&dir);
        let want = pooled_reference(&dir);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        let req = EmbedRequest::from(TextBatch::Texts(inputs.iter().map(|i| text(i)).collect()))
            .normalize(true);
        let (out, d) = skill
            .state()
            .run_with(Call::Embed(req), &MapEnv::empty(), &caps)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(d.used, Target::Cpu, "{t}");
        let Output::Embed(e) = out else {
            panic!("{t}: {out:?}")
        };
        assert_eq!((e.pooling, e.normalized), (Pooling::Pooler, true), "{t}");
        for (g, w) in e.vectors.iter().zip(&want) {
            let n = w.iter().map(|x| x * x).sum::<f32>().sqrt();
            for (x, y) in g.iter().zip(w) {
                assert!((x - y / n).abs() < 1e-4, "{t}: {g:?} vs {w:?}");
            }
        }
    }
}

/// Every `seq2seq/` fixture through the BART-like encoder-decoder: the decoder's logits at
/// every teacher-forced position, and 8 greedy tokens through the KV cache (eos disabled, as
/// the fixture records them); the passing set equals the registry's marks; and each marked
/// type generates through its generated skill (eos and forced eos honoured: the tokens equal
/// transformers' up to where those end the output).
#[test]
fn seq2seq_fixtures_conform_and_equal_the_support_table() {
    use skillgen_candle::parity::seq2seq_generator;
    let mut tally = Tally::default();
    let conforms = |t: &str, dir: &Path| -> Result<f32, String> {
        let info = skills::registry::by_model_type(t)
            .ok_or_else(|| format!("`{t}` is not in the registry"))?;
        let state = SkillState::load(info, skills::backends(), dir, TargetSpec::Default)
            .map_err(|e| format!("load: {e}"))?;
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (s, ids) = ints(&st, "input_ids");
        let inputs = rows(&s, &ids);
        let (s, dec) = ints(&st, "decoder_input_ids");
        let dec = rows(&s, &dec);
        let (s, g) = ints(&st, "greedy");
        let greedy = rows(&s, &g);
        let (ls, l) = floats_of(&st, "logits");
        // BART-like types run on the seq2seq model, T5-like ones on the T5 model.
        let t5 = skillgen_candle::t5::MODEL_TYPES.contains(&t);
        let bart = if t5 {
            None
        } else {
            Some(seq2seq_generator(&state, Target::Cpu).map_err(|e| e.to_string())?)
        };
        let t5g = if t5 {
            Some(skillgen_candle::parity::t5_generator(dir, t).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let (atol, rtol) = tolerance("decoders");
        let mut worst = 0f32;
        for b in 0..inputs.len() {
            let got: Vec<Vec<f32>> = match (&bart, &t5g) {
                (Some(g), _) => g.logits(&inputs[b], &dec[b]).map_err(|e| e.to_string())?,
                _ => {
                    let (flat, shape) =
                        skillgen_candle::parity::t5_decoder_logits(dir, &inputs[b], &dec[b])
                            .map_err(|e| e.to_string())?;
                    flat.chunks(shape[2]).map(<[f32]>::to_vec).collect()
                }
            };
            for (p, row) in got.iter().enumerate() {
                let want = &l[(b * ls[1] + p) * ls[2]..(b * ls[1] + p + 1) * ls[2]];
                for (x, y) in row.iter().zip(want) {
                    let d = (x - y).abs();
                    worst = worst.max(d);
                    if !within(d, *y, atol, rtol) {
                        return Err(format!("input {b} position {p}: {x} vs {y}"));
                    }
                }
            }
            let ids = match (&bart, &t5g) {
                (Some(g), _) => {
                    g.greedy(&inputs[b], greedy[b].len() - 1, false, false)
                        .map_err(|e| e.to_string())?
                        .0
                }
                (_, Some(g)) => g
                    .greedy(&inputs[b], greedy[b].len() - 1, false)
                    .map_err(|e| e.to_string())?,
                _ => unreachable!(),
            };
            if ids != greedy[b][1..] {
                return Err(format!("greedy {ids:?} vs {:?}", &greedy[b][1..]));
            }
        }
        Ok(worst)
    };
    for (t, dir) in type_dirs() {
        let dir = dir.join("seq2seq");
        if !dir.join("reference.safetensors").is_file() {
            continue;
        }
        tally.record(&t, "seq2seq", conforms(&t, &dir));
    }
    let marked: Vec<String> = marked_for(Task::SeqToSeqCausalLm)
        .into_iter()
        .filter(|t| root().join(t).join("seq2seq").is_dir() || !native_only_seq2seq(t))
        .collect();
    tally.assert_equals_marks("seq2seq", &marked, |_| false);

    let caps = Capabilities::fixed_cpu_only();
    for t in &marked {
        let dir = root().join(t).join("seq2seq");
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (s, ids) = ints(&st, "input_ids");
        let inputs = rows(&s, &ids);
        let (s, g) = ints(&st, "greedy");
        let greedy = rows(&s, &g);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let eos = config["eos_token_id"].as_u64().map(|e| e as u32);
        let forced_eos = config["forced_eos_token_id"].as_u64().map(|e| e as u32);
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        for (b, input) in inputs.iter().enumerate() {
            let mut req = GenerateRequest::new(Prompt::TokenIds(input.clone()));
            req.max_tokens = 8;
            let (out, d) = skill
                .state()
                .run_with(Call::Generate(req), &MapEnv::empty(), &caps)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(d.used, Target::Cpu, "{t}");
            let Output::Generate(generated) = out else {
                panic!("{t}: {out:?}")
            };
            // transformers' tokens, cut where eos (or the forced eos at the 8th) ends them.
            let mut want: Vec<u32> = greedy[b][1..].to_vec();
            if let Some(e) = forced_eos {
                want[7] = e;
            }
            let cut = want.iter().position(|x| Some(*x) == eos);
            match cut {
                Some(at) => {
                    assert_eq!(generated.token_ids, want[..at], "{t} input {b}");
                    assert_eq!(generated.finish_reason, FinishReason::Eos, "{t}");
                }
                None => {
                    assert_eq!(generated.token_ids, want, "{t} input {b}");
                    assert_eq!(generated.finish_reason, FinishReason::Length, "{t}");
                }
            }
        }
    }
}

/// T5 keeps its hand-written parity fixture (`fixtures/native/t5`).
fn native_only_seq2seq(t: &str) -> bool {
    skillgen_test_support::native_fixture(t)
        .join("reference.json")
        .is_file()
}

/// Every `ctc/` fixture through the wav2vec2-like CTC encoder: our feature extraction of the
/// PCM equals transformers' `input_values`, the CTC logits match at every frame, the passing
/// set equals the registry's marks, and every marked type transcribes the PCM through its
/// generated skill to transformers' greedy transcription (`Wav2Vec2CTCTokenizer`).
#[test]
fn ctc_fixtures_conform_and_equal_the_support_table() {
    use skillgen_candle::parity::ctc_recognizer;
    let mut tally = Tally::default();
    let load = |dir: &Path| {
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (ps, pcm) = floats_of(&st, "pcm");
        let (_, values) = floats_of(&st, "input_values");
        let (ls, logits) = floats_of(&st, "logits");
        (ps, pcm, values, ls, logits)
    };
    for (t, dir) in type_dirs() {
        let dir = dir.join("ctc");
        if !dir.join("reference.safetensors").is_file() {
            continue;
        }
        let outcome = (|| -> Result<f32, String> {
            let info = skills::registry::by_model_type(&t)
                .ok_or_else(|| format!("`{t}` is not in the registry"))?;
            let state = SkillState::load(info, skills::backends(), &dir, TargetSpec::Default)
                .map_err(|e| format!("load: {e}"))?;
            let r = ctc_recognizer(&state, Target::Cpu).map_err(|e| e.to_string())?;
            let (ps, pcm, values, ls, logits) = load(&dir);
            let (atol, rtol) = tolerance("decoders");
            let mut worst = 0f32;
            for b in 0..ps[0] {
                let ours = r.input_values(&pcm[b * ps[1]..(b + 1) * ps[1]]);
                let theirs = &values[b * ps[1]..(b + 1) * ps[1]];
                let dv = ours
                    .iter()
                    .zip(theirs)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                if dv > 1e-4 {
                    return Err(format!("input values of input {b} differ by {dv}"));
                }
                let got = r.logits(theirs).map_err(|e| e.to_string())?;
                if got.len() != ls[1] {
                    return Err(format!("{} frames vs {}", got.len(), ls[1]));
                }
                for (f, row) in got.iter().enumerate() {
                    let want = &logits[(b * ls[1] + f) * ls[2]..(b * ls[1] + f + 1) * ls[2]];
                    for (x, y) in row.iter().zip(want) {
                        let d = (x - y).abs();
                        worst = worst.max(d);
                        if !within(d, *y, atol, rtol) {
                            return Err(format!("input {b} frame {f}: {x} vs {y}"));
                        }
                    }
                }
            }
            Ok(worst)
        })();
        tally.record(&t, "ctc", outcome);
    }
    let marked = marked_for(Task::Ctc);
    tally.assert_equals_marks("ctc", &marked, |_| false);

    let caps = Capabilities::fixed_cpu_only();
    for t in &marked {
        let dir = root().join(t).join("ctc");
        let (ps, pcm, ..) = load(&dir);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("fixture.json")).unwrap())
                .unwrap();
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        for b in 0..ps[0] {
            let req = skillgen_runtime::request::TranscribeRequest {
                pcm_16khz: pcm[b * ps[1]..(b + 1) * ps[1]].to_vec(),
                language: None,
            };
            let (out, d) = skill
                .state()
                .run_with(Call::Transcribe(req), &MapEnv::empty(), &caps)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            assert_eq!(d.used, Target::Cpu, "{t}");
            let Output::Transcribe(tr) = out else {
                panic!("{t}: {out:?}")
            };
            assert_eq!(
                tr.text,
                info["transcriptions"][b].as_str().unwrap(),
                "{t} input {b}"
            );
        }
    }
}

/// Every `zero-shot/` fixture through the dual encoder (pixel values and token ids →
/// `logits_per_image`), the passing set equal to the registry's marks, and every marked type
/// through its generated skill: `image_text_similarity` on the PNGs and the texts gives the
/// softmax (CLIP) or sigmoid (SigLIP) of transformers' logits.
#[test]
fn zero_shot_fixtures_conform_and_equal_the_support_table() {
    use skillgen_candle::parity::{Pixels, dual_encoder};
    let load = |dir: &Path| {
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (ps, pixels) = floats_of(&st, "pixel_values");
        let (is, ids) = ints(&st, "input_ids");
        let (ls, logits) = floats_of(&st, "logits_per_image");
        // SigLIP 2 (NaFlex): pixel_values [b, n, p·p·3] with each image's patch grid.
        let grids = st.tensor("spatial_shapes").ok().map(|_| {
            let (_, g) = ints(&st, "spatial_shapes");
            g.chunks(2)
                .map(|c| (c[0] as usize, c[1] as usize))
                .collect::<Vec<_>>()
        });
        (ps, pixels, rows(&is, &ids), ls, logits, grids)
    };
    let mut tally = Tally::default();
    for (t, dir) in type_dirs() {
        let dir = dir.join("zero-shot");
        if !dir.join("reference.safetensors").is_file() {
            continue;
        }
        let outcome = (|| -> Result<f32, String> {
            let info = skills::registry::by_model_type(&t)
                .ok_or_else(|| format!("`{t}` is not in the registry"))?;
            let state = SkillState::load(info, skills::backends(), &dir, TargetSpec::Default)
                .map_err(|e| format!("load: {e}"))?;
            let enc = dual_encoder(&state, Target::Cpu).map_err(|e| e.to_string())?;
            let (ps, pixels, ids, ls, want, grids) = load(&dir);
            let rows_of_grids;
            let px = match &grids {
                Some(grids) => {
                    // The valid rows of each image (transformers pads to the longest).
                    rows_of_grids = grids
                        .iter()
                        .enumerate()
                        .flat_map(|(i, (h, w))| {
                            pixels[i * ps[1] * ps[2]..][..h * w * ps[2]].to_vec()
                        })
                        .collect::<Vec<f32>>();
                    Pixels::Patches {
                        values: &rows_of_grids,
                        grids,
                    }
                }
                None => Pixels::Square {
                    values: &pixels,
                    shape: [ps[0], ps[1], ps[2], ps[3]],
                },
            };
            let got = enc.logits(px, &ids).map_err(|e| e.to_string())?;
            let (atol, rtol) = tolerance("decoders");
            let mut worst = 0f32;
            for (i, row) in got.iter().enumerate() {
                for (j, x) in row.iter().enumerate() {
                    let y = want[i * ls[1] + j];
                    let d = (x - y).abs();
                    worst = worst.max(d);
                    if !within(d, y, atol, rtol) {
                        return Err(format!("image {i} text {j}: {x} vs {y}"));
                    }
                }
            }
            Ok(worst)
        })();
        tally.record(&t, "zero-shot", outcome);
    }
    let marked = marked_for(Task::ZeroShotImageClassification);
    tally.assert_equals_marks("zero-shot", &marked, |_| false);

    let caps = Capabilities::fixed_cpu_only();
    for t in &marked {
        let dir = root().join(t).join("zero-shot");
        let (_, _, ids, ls, want, _) = load(&dir);
        let sigmoid = t.contains("siglip");
        let pad = ids[0].last().copied();
        // The texts are the fixture's ids as bytes (SigLIP: without the padding the skill adds).
        let texts: Vec<String> = ids
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if sigmoid {
                    while r.len() > 1 && r.last().copied() == pad {
                        r.pop();
                    }
                }
                r.iter()
                    .map(|&b| char::from(u8::try_from(b).unwrap()))
                    .collect()
            })
            .collect();
        let images: Vec<skillgen_runtime::request::ImageInput> = (0..2)
            .map(|k| dir.join(format!("image{k}.png")).into())
            .collect();
        let skill: DynSkill = skills::registry::load_dir(&dir, TargetSpec::Default).unwrap();
        let req = skillgen_runtime::request::ImageTextRequest::new(images, texts);
        let (out, d) = skill
            .state()
            .run_with(Call::ImageTextSimilarity(req), &MapEnv::empty(), &caps)
            .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(d.used, Target::Cpu, "{t}");
        let Output::ImageTextSimilarity(sim) = out else {
            panic!("{t}: {out:?}")
        };
        for (i, row) in sim.scores.iter().enumerate() {
            let l = &want[i * ls[1]..(i + 1) * ls[1]];
            let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = l.iter().map(|x| (x - m).exp()).sum();
            for (j, s) in row.iter().enumerate() {
                let p = if sigmoid {
                    1.0 / (1.0 + (-l[j]).exp())
                } else {
                    (l[j] - m).exp() / sum
                };
                assert!((s - p).abs() < 1e-4, "{t} image {i} text {j}: {s} vs {p}");
            }
        }
    }
}
