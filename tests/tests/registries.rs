//! Registry-level tests over the fixture corpus in `tests/fixtures/registries/`:
//! - every invalid registry is rejected with located messages (snapshotted) and leaves the
//!   output directory byte-identical;
//! - the checked-in outputs (`generated/` for `models.yaml`, `tests/fixture-skills/` for the
//!   hostile-names fixture) are fresh, so `cargo test` fails when someone forgets to regenerate;
//! - regenerating into a fresh directory twice gives byte-identical trees.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use skillgen::Config;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf()
}

fn fixtures() -> PathBuf {
    workspace().join("tests/fixtures/registries")
}

/// Every file under `dir` with its bytes, keyed by relative path.
fn snapshot_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("readable dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("inside root").to_path_buf();
                out.insert(rel, fs::read(&path).expect("readable file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn hostile_config(out: &Path) -> Config {
    Config {
        registry: fixtures().join("valid/hostile-names.yaml"),
        templates: workspace().join("templates"),
        out: out.to_path_buf(),
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
         tests/fixtures/registries/valid/hostile-names.yaml --out tests/fixture-skills generate`"
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
