//! Runtime fault table: damaged model directories and bad requests, through the generated
//! skills on the CPU. Every case must end in the expected typed `SkillError` — never a panic
//! (each case runs under `catch_unwind`, so a panic fails the test with the case's name).
//! `cargo test -p skillgen-tests --test faults -- --nocapture` prints the table.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use serde_json::Value;
use skillgen_runtime::request::{EmbedRequest, GenerateRequest, TextBatch};
use skillgen_runtime::{SkillError, Target};
use skills::decoder::llama::Llama;
use skills::encoder::bert::Bert;

fn fixture(name: &str) -> PathBuf {
    skillgen_test_support::native_fixture(name)
}

/// A copy of a fixture directory at `dest`.
fn copy_fixture(name: &str, dest: &Path) -> PathBuf {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
        }
    }
    dest.to_path_buf()
}

/// Rewrite the safetensors header of `dir/model.safetensors` with `edit`, keeping the data.
fn edit_header(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

fn bert_embed(dir: &Path, input: TextBatch) -> Result<(), SkillError> {
    let skill = Bert::load(dir, Target::Cpu)?;
    skill.embed(EmbedRequest::from(input)).map(drop)
}

fn llama_generate(dir: &Path, req: GenerateRequest) -> Result<(), SkillError> {
    let skill = Llama::load(dir, Target::Cpu)?;
    skill.generate(req).map(drop)
}

fn ids() -> TextBatch {
    TextBatch::TokenIds(vec![vec![2, 7, 9, 3]])
}

type Case = (
    &'static str,
    Box<dyn Fn(&Path) -> Result<(), SkillError>>,
    &'static str,
);

fn cases() -> Vec<Case> {
    vec![
        (
            "bert: truncated safetensors",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                let w = d.join("model.safetensors");
                let len = std::fs::metadata(&w).unwrap().len();
                std::fs::File::options()
                    .write(true)
                    .open(&w)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
                bert_embed(&d, ids())
            }),
            "WeightsInvalid",
        ),
        (
            "bert: garbage safetensors header",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                std::fs::write(
                    d.join("model.safetensors"),
                    b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header",
                )
                .unwrap();
                bert_embed(&d, ids())
            }),
            "WeightsInvalid",
        ),
        (
            "bert: empty safetensors file",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                std::fs::write(d.join("model.safetensors"), b"").unwrap();
                bert_embed(&d, ids())
            }),
            "WeightsInvalid",
        ),
        (
            "bert: a tensor missing",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                // Renamed, not removed: safetensors forbids holes in the data.
                edit_header(&d, |h| {
                    let t = h
                        .remove("bert.encoder.layer.1.attention.self.query.weight")
                        .unwrap();
                    h.insert("unused.renamed".into(), t);
                });
                bert_embed(&d, ids())
            }),
            "TensorMissing",
        ),
        (
            "bert: wrong dtype (f32 data labelled I32)",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                edit_header(&d, |h| {
                    h["bert.embeddings.word_embeddings.weight"]["dtype"] = "I32".into();
                });
                bert_embed(&d, ids())
            }),
            "TensorInvalid",
        ),
        (
            "bert: config says hidden 64, weights are 32",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                edit_config(&d, |c| {
                    c["hidden_size"] = 64.into();
                    c["intermediate_size"] = 128.into();
                });
                bert_embed(&d, ids())
            }),
            "TensorInvalid",
        ),
        (
            "bert: config.json is not JSON",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                std::fs::write(d.join("config.json"), "{ \"model_type\": \"bert\", ").unwrap();
                bert_embed(&d, ids())
            }),
            "ConfigInvalid",
        ),
        (
            "bert: config.json names another model type",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                edit_config(&d, |c| c["model_type"] = "llama".into());
                bert_embed(&d, ids())
            }),
            "ModelTypeMismatch",
        ),
        (
            "bert: weights file missing",
            Box::new(|t| {
                let d = copy_fixture("bert", t);
                std::fs::remove_file(d.join("model.safetensors")).unwrap();
                bert_embed(&d, ids())
            }),
            "ModelFileMissing",
        ),
        (
            "bert: empty batch",
            Box::new(|t| bert_embed(&copy_fixture("bert", t), TextBatch::TokenIds(vec![]))),
            "InvalidRequest",
        ),
        (
            "bert: an input with no token ids",
            Box::new(|t| {
                bert_embed(
                    &copy_fixture("bert", t),
                    TextBatch::TokenIds(vec![vec![1], vec![]]),
                )
            }),
            "InvalidRequest",
        ),
        (
            "bert: token ids longer than max_position_embeddings (32)",
            Box::new(|t| {
                bert_embed(
                    &copy_fixture("bert", t),
                    TextBatch::TokenIds(vec![vec![5; 40]]),
                )
            }),
            "InvalidRequest",
        ),
        (
            "bert: token id outside the vocabulary",
            Box::new(|t| {
                bert_embed(
                    &copy_fixture("bert", t),
                    TextBatch::TokenIds(vec![vec![2, 100_000]]),
                )
            }),
            "InvalidRequest",
        ),
        (
            "bert: text input without tokenizer.json",
            Box::new(|t| bert_embed(&copy_fixture("bert", t), TextBatch::from("hello"))),
            "ModelFileMissing",
        ),
        (
            "bert: model directory at a non-UTF-8 path (works)",
            Box::new(|t| {
                let d = t.join(OsStr::from_bytes(b"model-\xff\xfe"));
                copy_fixture("bert", &d);
                bert_embed(&d, ids())
            }),
            "Ok",
        ),
        (
            "bert: model directory missing",
            Box::new(|t| bert_embed(&t.join("nope"), ids())),
            "ModelDirMissing",
        ),
        (
            "llama: truncated safetensors",
            Box::new(|t| {
                let d = copy_fixture("llama", t);
                let w = d.join("model.safetensors");
                let len = std::fs::metadata(&w).unwrap().len();
                std::fs::File::options()
                    .write(true)
                    .open(&w)
                    .unwrap()
                    .set_len(len - 100)
                    .unwrap();
                llama_generate(&d, GenerateRequest::from(vec![1, 2, 3]).max_tokens(2))
            }),
            "WeightsInvalid",
        ),
        (
            "llama: a tensor missing",
            Box::new(|t| {
                let d = copy_fixture("llama", t);
                edit_header(&d, |h| {
                    let t = h.remove("model.layers.0.mlp.up_proj.weight").unwrap();
                    h.insert("unused.renamed".into(), t);
                });
                llama_generate(&d, GenerateRequest::from(vec![1, 2, 3]).max_tokens(2))
            }),
            "TensorMissing",
        ),
        (
            "llama: rope_theta missing from the config",
            Box::new(|t| {
                let d = copy_fixture("llama", t);
                edit_config(&d, |c| {
                    c.remove("rope_theta");
                    c.remove("rope_parameters");
                });
                llama_generate(&d, GenerateRequest::from(vec![1, 2, 3]).max_tokens(2))
            }),
            "ConfigField",
        ),
        (
            "llama: empty prompt",
            Box::new(|t| {
                llama_generate(
                    &copy_fixture("llama", t),
                    GenerateRequest::from(Vec::<u32>::new()),
                )
            }),
            "InvalidRequest",
        ),
        (
            "llama: top_p out of range",
            Box::new(|t| {
                llama_generate(
                    &copy_fixture("llama", t),
                    GenerateRequest::from(vec![1, 2])
                        .temperature(1.0)
                        .top_p(1.5),
                )
            }),
            "InvalidRequest",
        ),
    ]
}

fn variant(e: &SkillError) -> String {
    // `Debug` of an enum starts with the variant name.
    let d = format!("{e:?}");
    d.split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn fault_table() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (i, (name, run, expected)) in cases().into_iter().enumerate() {
        let dir = tmp.path().join(format!("case-{i}"));
        let outcome = catch_unwind(AssertUnwindSafe(|| run(&dir)));
        let (got, detail) = match outcome {
            Err(_) => ("PANIC".to_owned(), String::new()),
            Ok(Ok(())) => ("Ok".to_owned(), String::new()),
            Ok(Err(e)) => (variant(&e), e.to_string()),
        };
        if got != expected {
            failures.push(format!("{name}: expected {expected}, got {got}: {detail}"));
        }
        rows.push(format!(
            "| {name} | {got} | {} |",
            detail.replace('|', "\\|")
        ));
    }
    eprintln!("| fault | outcome | message |\n|---|---|---|");
    for r in &rows {
        eprintln!("{r}");
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
