//! Writing the tree: only changed files are written, unchanged files keep their mtime, removed
//! entries lose their module, failures leave the output untouched, interrupted runs recover.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use skillgen::Config;

const FIXTURE: &str = include_str!("fixtures/basic.yaml");

struct Env {
    _dir: tempfile::TempDir,
    config: Config,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("models.yaml");
    fs::write(&registry, FIXTURE).unwrap();
    let out = dir.path().join("generated");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("Cargo.toml"), "[package]\nname = \"skills\"\n").unwrap();
    Env {
        config: Config {
            registry,
            templates: Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates"),
            support: Config::default_support(&out),
            out,
        },
        _dir: dir,
    }
}

impl Env {
    fn edit(&self, from: &str, to: &str) {
        let text = fs::read_to_string(&self.config.registry).unwrap();
        assert!(text.contains(from), "fixture lacks {from:?}");
        fs::write(&self.config.registry, text.replacen(from, to, 1)).unwrap();
    }
}

/// Every entry under `dir`: relative path → (bytes, mtime); directories have no bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Option<Vec<u8>>, SystemTime)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Option<Vec<u8>>, SystemTime)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            if meta.is_dir() {
                out.insert(rel, (None, meta.modified().unwrap()));
                walk(root, &p, out);
            } else {
                out.insert(rel, (Some(fs::read(&p).unwrap()), meta.modified().unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn file_mtimes(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    snapshot(dir)
        .into_iter()
        .filter(|(_, (bytes, _))| bytes.is_some())
        .map(|(p, (_, t))| (p, t))
        .collect()
}

fn paths(v: &[PathBuf]) -> Vec<String> {
    v.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn first_run_writes_everything_second_run_nothing() {
    let env = env();
    let first = skillgen::generate(&env.config, false).unwrap();
    assert_eq!(first.skills, 7);
    assert_eq!(first.files, 14);
    assert_eq!(first.written.len(), 14);
    assert_eq!(first.unchanged, 0);
    let before = snapshot(&env.config.out);
    assert!(before.contains_key(Path::new("src/encoder/bert.rs")));
    assert!(
        before.contains_key(Path::new("Cargo.toml")),
        "Cargo.toml is never touched"
    );

    let second = skillgen::generate(&env.config, false).unwrap();
    assert!(second.written.is_empty() && second.removed.is_empty());
    assert_eq!(second.unchanged, 14);
    assert_eq!(
        snapshot(&env.config.out),
        before,
        "bytes and mtimes unchanged"
    );
    assert!(skillgen::check(&env.config).unwrap().is_fresh());
    assert!(
        !env.config.out.join(".skillgen-staging").exists()
            && !env.config.out.join(".skillgen-old").exists()
    );
}

#[test]
fn editing_one_entry_rewrites_only_its_module() {
    let env = env();
    skillgen::generate(&env.config, false).unwrap();
    let before = file_mtimes(&env.config.out);
    std::thread::sleep(std::time::Duration::from_millis(20));

    env.edit(
        "      masked-lm: [BertForMaskedLM]",
        "      masked-lm: [BertForMaskedLM, BertForMLM]",
    );
    let s = skillgen::generate(&env.config, false).unwrap();
    assert_eq!(paths(&s.written), ["src/encoder/bert.rs"]);
    assert!(s.removed.is_empty());
    let after = file_mtimes(&env.config.out);
    for (path, t) in &before {
        // The digest describes the new inputs, so it is rewritten too.
        if path != Path::new("src/encoder/bert.rs") && path != Path::new(skillgen::digest::FILE) {
            assert_eq!(after[path], *t, "{} kept its mtime", path.display());
        }
    }
    let bert = fs::read_to_string(env.config.out.join("src/encoder/bert.rs")).unwrap();
    assert!(
        bert.contains("masked_lm(\"BertForMaskedLM\", \"BertForMLM\")"),
        "{bert}"
    );
}

#[test]
fn moving_an_entry_to_another_family_moves_its_file() {
    let env = env();
    skillgen::generate(&env.config, false).unwrap();
    env.edit("    family: encoder-decoder\n", "    family: decoder\n");
    let s = skillgen::generate(&env.config, false).unwrap();
    assert_eq!(
        paths(&s.written),
        [
            "src/decoder/encoder_.rs",
            "src/decoder/mod.rs",
            "src/lib.rs",
            "src/registry.rs"
        ]
    );
    assert_eq!(
        paths(&s.removed),
        [
            "src/encoder_decoder/encoder_.rs",
            "src/encoder_decoder/mod.rs"
        ]
    );
    assert!(
        !env.config.out.join("src/encoder_decoder").exists(),
        "empty family dir is gone"
    );
}

#[test]
fn removing_an_entry_deletes_its_module() {
    let env = env();
    skillgen::generate(&env.config, false).unwrap();
    let text = fs::read_to_string(&env.config.registry).unwrap();
    let start = text.find("  - model_type: type\n").unwrap();
    let end = text.find("  - model_type: 2d-model\n").unwrap();
    fs::write(
        &env.config.registry,
        format!("{}{}", &text[..start], &text[end..]),
    )
    .unwrap();

    let s = skillgen::generate(&env.config, false).unwrap();
    assert_eq!(paths(&s.removed), ["src/vision/type_.rs"]);
    assert_eq!(
        paths(&s.written),
        ["src/lib.rs", "src/registry.rs", "src/vision/mod.rs"]
    );
    assert!(!env.config.out.join("src/vision/type_.rs").exists());
    assert!(env.config.out.join("src/vision/m_2d_model.rs").exists());
}

#[test]
fn validation_failure_leaves_output_untouched() {
    let env = env();
    skillgen::generate(&env.config, false).unwrap();
    fs::write(env.config.out.join("src/extra.rs"), "// hand-written\n").unwrap();
    let before = snapshot(&env.config.out);
    env.edit("    family: encoder\n", "    family: encodr\n");
    let err = skillgen::generate(&env.config, false).unwrap_err();
    assert_eq!(err.diagnostics().len(), 1);
    assert_eq!(snapshot(&env.config.out), before);
}

#[test]
fn validation_failure_on_first_run_creates_nothing() {
    let env = env();
    env.edit("    family: encoder\n", "    family: encodr\n");
    skillgen::generate(&env.config, false).unwrap_err();
    assert!(!env.config.out.join("src").exists());
}

#[test]
fn extra_files_are_removed_and_reported_by_check() {
    let env = env();
    skillgen::generate(&env.config, false).unwrap();
    fs::write(env.config.out.join("src/extra.rs"), "// stray\n").unwrap();
    fs::write(env.config.out.join("src/lib.rs"), "// edited\n").unwrap();
    fs::remove_file(env.config.out.join("src/vision/type_.rs")).unwrap();

    let report = skillgen::check(&env.config).unwrap();
    assert!(!report.is_fresh());
    assert_eq!(paths(&report.stale), ["src/lib.rs"]);
    assert_eq!(paths(&report.missing), ["src/vision/type_.rs"]);
    assert_eq!(paths(&report.extra), ["src/extra.rs"]);
    let text = report.to_string();
    assert!(text.contains("cargo run -p skillgen -- generate"), "{text}");

    let dry = skillgen::generate(&env.config, true).unwrap();
    assert_eq!(dry.written.len(), 2);
    assert_eq!(paths(&dry.removed), ["src/extra.rs"]);
    assert!(
        env.config.out.join("src/extra.rs").exists(),
        "dry run writes nothing"
    );

    skillgen::generate(&env.config, false).unwrap();
    assert!(!env.config.out.join("src/extra.rs").exists());
    assert!(skillgen::check(&env.config).unwrap().is_fresh());
}

#[test]
fn interrupted_runs_are_recovered() {
    let env = env();
    skillgen::generate(&env.config, false).unwrap();
    let out = &env.config.out;
    let before = file_mtimes(&out.join("src"));

    // Crash between the two renames of the portable swap: `src` is gone, `.skillgen-old` holds
    // the previous tree, and a half-built staging directory is left behind.
    fs::rename(out.join("src"), out.join(".skillgen-old")).unwrap();
    fs::create_dir_all(out.join(".skillgen-staging/encoder")).unwrap();
    fs::write(out.join(".skillgen-staging/encoder/bert.rs"), "partial").unwrap();

    let s = skillgen::generate(&env.config, false).unwrap();
    assert!(
        s.written.is_empty(),
        "old tree restored, nothing to write: {s:?}"
    );
    assert_eq!(file_mtimes(&out.join("src")), before);
    assert!(!out.join(".skillgen-staging").exists());
    assert!(!out.join(".skillgen-old").exists());
}

#[test]
fn summary_line() {
    let env = env();
    let s = skillgen::generate(&env.config, false).unwrap().to_string();
    assert!(
        s.starts_with("skillgen: 7 skills, 14 files: 14 written, 0 unchanged, 0 removed; "),
        "{s}"
    );
    assert!(s.contains("SUPPORT.md written in "), "{s}");
    let s = skillgen::generate(&env.config, false).unwrap().to_string();
    assert!(s.contains("SUPPORT.md unchanged in "), "{s}");
}

#[test]
fn support_md_is_written_next_to_out_only_when_it_changes() {
    let env = env();
    let support = &env.config.support;
    assert_eq!(
        support,
        &env.config.out.parent().unwrap().join("SUPPORT.md"),
        "the default is next to OUT"
    );
    let first = skillgen::generate(&env.config, false).unwrap();
    assert!(first.support_written);
    let text = fs::read_to_string(support).unwrap();
    assert_eq!(text, skillgen::render_support(&env.config).unwrap());
    assert!(text.contains("| `bert` | `masked-lm` | **verified** (`encoder`) | not implemented |"));
    let mtime = fs::metadata(support).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));

    // Nothing changed: not rewritten, mtime kept.
    let second = skillgen::generate(&env.config, false).unwrap();
    assert!(!second.support_written);
    assert_eq!(fs::metadata(support).unwrap().modified().unwrap(), mtime);

    // A change that only SUPPORT.md and one module see.
    env.edit("      masked-lm: encoder\n", "");
    let third = skillgen::generate(&env.config, false).unwrap();
    assert!(third.support_written);
    assert_eq!(paths(&third.written), ["src/encoder/bert.rs"]);
    let text = fs::read_to_string(support).unwrap();
    assert!(!text.contains("| `bert` | `masked-lm` |"), "{text}");
    let staged = skillgen::tree::staging_file(support);
    assert!(!staged.exists(), "no staging file left behind");
    assert!(skillgen::check(&env.config).unwrap().is_fresh());
}

#[test]
fn check_and_dry_run_report_support_md() {
    let env = env();
    skillgen::generate(&env.config, false).unwrap();
    let support = env.config.support.clone();

    fs::write(&support, "edited by hand\n").unwrap();
    let report = skillgen::check(&env.config).unwrap();
    assert!(!report.is_fresh() && report.src_is_fresh());
    assert_eq!(report.support_state, Some("stale"));
    let text = report.to_string();
    assert!(
        text.contains(&format!("{} is out of date (stale)", support.display())),
        "{text}"
    );
    assert!(text.contains("cargo run -p skillgen -- generate"), "{text}");

    let dry = skillgen::generate(&env.config, true).unwrap();
    assert!(dry.support_written && dry.written.is_empty());
    assert_eq!(
        fs::read_to_string(&support).unwrap(),
        "edited by hand\n",
        "a dry run writes nothing"
    );

    fs::remove_file(&support).unwrap();
    let report = skillgen::check(&env.config).unwrap();
    assert_eq!(report.support_state, Some("missing"));
    skillgen::generate(&env.config, true).unwrap();
    assert!(!support.exists(), "a dry run writes nothing");

    skillgen::generate(&env.config, false).unwrap();
    assert!(skillgen::check(&env.config).unwrap().is_fresh());
}

#[test]
fn validation_failure_leaves_support_md_untouched() {
    let env = env();
    skillgen::generate(&env.config, false).unwrap();
    let before = fs::read(&env.config.support).unwrap();
    env.edit("      masked-lm: encoder\n", "      masked-lm: encodr\n");
    skillgen::generate(&env.config, false).unwrap_err();
    assert_eq!(fs::read(&env.config.support).unwrap(), before);
}

#[test]
fn default_support_path() {
    use skillgen::Config;
    for (out, support) in [
        ("generated", "SUPPORT.md"),
        ("/repo/generated", "/repo/SUPPORT.md"),
        ("repo/generated/", "repo/SUPPORT.md"),
        (".", "./../SUPPORT.md"),
        ("/", "/SUPPORT.md"),
    ] {
        assert_eq!(
            Config::default_support(Path::new(out)),
            PathBuf::from(support),
            "--out {out}"
        );
    }
}
