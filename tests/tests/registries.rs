//! Registry-level tests over the fixture corpus in `tests/fixtures/registries/`:
//! - every invalid registry is rejected with located messages (snapshotted) and leaves the
//!   output directory byte-identical;
//! - the checked-in outputs (`generated/` for `models.yaml`, `tests/fixture-skills/` for the
//!   hostile-names fixture) are fresh, so `cargo test` fails when someone forgets to regenerate;
//! - regenerating into a fresh directory twice gives byte-identical trees.

use std::fs;
use std::path::{Path, PathBuf};

use skillgen::Config;

fn workspace() -> PathBuf {
    skillgen_test_support::repo()
}

fn fixtures() -> PathBuf {
    workspace().join("tests/fixtures/registries")
}

use skillgen_test_support::snapshot_tree;

fn hostile_config(out: &Path) -> Config {
    Config {
        registry: fixtures().join("valid/hostile-names.yaml"),
        templates: workspace().join("templates"),
        out: out.to_path_buf(),
        support: out.join("SUPPORT.md"),
    }
}

#[test]
fn generated_crate_is_fresh() {
    let report = skillgen::check(&Config::workspace_default()).expect("models.yaml is valid");
    assert!(
        report.is_fresh(),
        "generated/ is stale:\n{report}\nrun `cargo run -p skillgen -- generate` and commit the result"
    );
}

#[test]
fn fixture_crate_is_fresh() {
    let report = skillgen::check(&hostile_config(&workspace().join("tests/fixture-skills")))
        .expect("hostile-names.yaml is valid");
    assert!(
        report.is_fresh(),
        "tests/fixture-skills is stale:\n{report}\nrun `cargo run -p skillgen -- --registry \
         tests/fixtures/registries/valid/hostile-names.yaml --out tests/fixture-skills \
         --support tests/fixture-skills/SUPPORT.md generate`"
    );
}

#[test]
fn regenerating_twice_is_byte_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for dir in [a.path(), b.path()] {
        skillgen::generate(&hostile_config(dir), false).expect("generates");
    }
    let first = snapshot_tree(a.path());
    assert!(!first.is_empty(), "generation wrote files");
    assert_eq!(first, snapshot_tree(b.path()));

    // A second run over the same directory changes nothing.
    let before = snapshot_tree(a.path());
    let summary = skillgen::generate(&hostile_config(a.path()), false).expect("generates");
    assert!(
        summary.written.is_empty(),
        "no-op regeneration wrote files: {summary:?}"
    );
    assert_eq!(before, snapshot_tree(a.path()));
}

#[test]
fn invalid_registries_are_rejected_with_locations_and_leave_output_untouched() {
    // Start from a real generated tree so "untouched" is meaningful.
    let out = tempfile::tempdir().unwrap();
    skillgen::generate(&hostile_config(out.path()), false).expect("fixture generates");
    let before = snapshot_tree(out.path());

    insta::glob!("../fixtures/registries/invalid", "*.yaml", |path| {
        let config = Config {
            registry: path.to_path_buf(),
            ..hostile_config(out.path())
        };
        let err =
            skillgen::generate(&config, false).expect_err("an invalid registry must be rejected");
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Reports name the registry as it was given; keep only the file name so snapshots
        // don't depend on where the checkout lives.
        let dir = path.parent().unwrap();
        let report = err
            .to_string()
            .replace(&format!("{}/", dir.display()), "")
            .replace("fixtures/registries/invalid/", "");
        if !err.diagnostics().is_empty() {
            assert!(
                report.contains(&format!("--> {file_name}:")),
                "every report names the file and line:\n{report}"
            );
        }
        insta::assert_snapshot!(report);
        assert_eq!(
            before,
            snapshot_tree(out.path()),
            "{file_name}: a rejected registry changed the output directory"
        );
    });
}

/// The token structure of a Rust file with every literal (strings, doc comments) replaced by
/// the same placeholder, and the literals themselves in order.
fn masked_tokens(path: &Path, source: &str) -> (String, Vec<String>) {
    fn walk(stream: proc_macro2::TokenStream, shape: &mut String, lits: &mut Vec<String>) {
        use proc_macro2::TokenTree;
        for tree in stream {
            match tree {
                TokenTree::Group(g) => {
                    shape.push_str(&format!("{:?}(", g.delimiter()));
                    walk(g.stream(), shape, lits);
                    shape.push(')');
                }
                TokenTree::Literal(l) => {
                    shape.push_str("LIT ");
                    lits.push(l.to_string());
                }
                TokenTree::Ident(i) => {
                    shape.push_str(&i.to_string());
                    shape.push(' ');
                }
                TokenTree::Punct(p) => shape.push(p.as_char()),
            }
        }
    }
    let file = syn::parse_file(source)
        .unwrap_or_else(|e| panic!("{} does not parse as Rust: {e}", path.display()));
    let mut shape = String::new();
    let mut lits = Vec::new();
    walk(
        quote::ToTokens::to_token_stream(&file),
        &mut shape,
        &mut lits,
    );
    // A multi-line note becomes one doc attribute per line: count a run of them as one.
    for doc in ["#!Bracket(doc =LIT )", "#Bracket(doc =LIT )"] {
        let twice = doc.repeat(2);
        while shape.contains(&twice) {
            shape = shape.replace(&twice, doc);
        }
    }
    (shape, lits)
}

/// Replace every `notes: "…"` value of a registry with a plain word.
fn plain_notes(yaml: &str) -> String {
    yaml.lines()
        .map(|line| match line.find("notes: \"") {
            Some(i) => format!("{}notes: \"plain\"", &line[..i]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn hostile_free_text_stays_inside_literals() {
    let mut hostile = fs::read_to_string(fixtures().join("valid/hostile-values.yaml")).unwrap();
    // An enormous value (200 kB of notes) too: generated, not committed.
    hostile.push_str(&format!(
        "  - model_type: enormous_notes\n    config_class: EnormousConfig\n    hf_module: enormous\n    \
         family: encoder\n    family_source: curated\n    modalities: [text]\n    notes: \"{}\"\n",
        "x".repeat(200_000)
    ));
    let tame = plain_notes(&hostile);
    assert_ne!(hostile, tame, "the twin differs from the hostile registry");
    let dir = tempfile::tempdir().unwrap();
    let render = |name: &str, yaml: &str| {
        let registry = dir.path().join(name);
        fs::write(&registry, yaml).unwrap();
        skillgen::render(&Config {
            registry,
            ..hostile_config(dir.path())
        })
        .unwrap_or_else(|e| panic!("{name} must be valid:\n{e}"))
    };
    let hostile_files = render("hostile.yaml", &hostile);
    let tame_files = render("tame.yaml", &tame);
    assert_eq!(
        hostile_files.keys().collect::<Vec<_>>(),
        tame_files.keys().collect::<Vec<_>>(),
        "hostile text changed which files are generated"
    );
    let mut differing_literals = 0;
    for (path, hostile_src) in &hostile_files {
        let (hostile_shape, hostile_lits) = masked_tokens(path, hostile_src);
        let (tame_shape, tame_lits) = masked_tokens(path, &tame_files[path]);
        assert_eq!(
            hostile_shape,
            tame_shape,
            "{}: hostile notes changed the code outside literals",
            path.display()
        );
        differing_literals += hostile_lits
            .iter()
            .zip(&tame_lits)
            .filter(|(a, b)| a != b)
            .count();
    }
    // Each hostile note reaches the output (doc comment and/or `notes` string), so the check
    // above compared files that really contain the hostile text.
    assert!(
        differing_literals >= 11,
        "only {differing_literals} literals carry the hostile notes"
    );
    // And the text survives verbatim, as documentation.
    let file = &hostile_files[&PathBuf::from("src/encoder/hostile2.rs")];
    assert!(
        file.contains(r#"//! "); std::process::exit(1); (""#),
        "the note is documented verbatim in src/encoder/hostile2.rs"
    );
}

#[test]
fn a_ten_thousand_entry_registry_generates_parseable_code() {
    let mut yaml = String::from("version: 1\nsources: {}\nmodels:\n");
    for i in 0..10_000 {
        yaml.push_str(&format!(
            "  - model_type: synth-{i}\n    config_class: Synth{i}Config\n    hf_module: synth_{i}\n    \
             family: decoder\n    family_source: curated\n    modalities: [text]\n    tasks:\n      \
             causal-lm: [Synth{i}ForCausalLM]\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("big.yaml");
    fs::write(&registry, yaml).unwrap();
    let files = skillgen::render(&Config {
        registry,
        ..hostile_config(dir.path())
    })
    .expect("a 10k-entry registry renders");
    // 10,000 skill files plus lib.rs, registry.rs and the decoder family module; every file
    // was parsed with syn by the generator before it was returned.
    assert_eq!(files.len(), 10_003);
    assert!(
        files[&PathBuf::from("src/registry.rs")]
            .contains("crate::decoder::synth_9999::Synth9999::INFO")
    );
}
