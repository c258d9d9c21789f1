//! `OUT/.skillgen-digest`: a run whose inputs and outputs match the last run's digest renders
//! nothing and writes nothing; any change to the registry, a template or a generated file (or
//! `--force`, or a damaged digest) makes it render, and it then writes exactly what differs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use skillgen::{Config, Options, digest};

const FIXTURE: &str = include_str!("fixtures/basic.yaml");

struct Env {
    dir: tempfile::TempDir,
    config: Config,
}

/// The basic fixture and a copy of the real templates (so tests may edit them) in a temp dir.
fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("models.yaml");
    fs::write(&registry, FIXTURE).unwrap();
    let templates = dir.path().join("templates");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates"),
        &templates,
    );
    let out = dir.path().join("generated");
    Env {
        config: Config {
            registry,
            templates,
            support: Config::default_support(&out),
            out,
        },
        dir,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            fs::copy(&p, &target).unwrap();
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

impl Env {
    fn generate(&self) -> skillgen::Summary {
        skillgen::generate(&self.config, false).unwrap()
    }

    fn generate_with(&self, dry_run: bool, force: bool) -> skillgen::Summary {
        skillgen::generate_with(&self.config, Options { dry_run, force }).unwrap()
    }

    fn digest_path(&self) -> PathBuf {
        digest::path(&self.config.out)
    }

    fn digest(&self) -> String {
        fs::read_to_string(self.digest_path()).unwrap()
    }

    /// Every file under the temp dir (registry, templates, OUT, SUPPORT.md): bytes and mtime.
    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, SystemTime)>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_owned();
                    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
                    out.insert(rel, (fs::read(&p).unwrap(), mtime));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }
}

fn paths(v: &[PathBuf]) -> Vec<String> {
    v.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn an_unchanged_run_skips_rendering_and_touches_nothing() {
    let env = env();
    let first = env.generate();
    assert!(!first.from_digest);
    assert_eq!(first.written.len(), 14);
    let digest = env.digest();
    assert!(digest.starts_with("skillgen-digest 1\n"), "{digest}");
    assert!(digest.contains(" src/encoder/bert.rs\n"), "{digest}");
    let before = env.snapshot();

    let second = env.generate();
    assert!(second.from_digest, "{second:?}");
    assert!(second.written.is_empty() && second.removed.is_empty() && !second.support_written);
    assert_eq!((second.skills, second.files, second.unchanged), (7, 14, 14));
    assert_eq!(env.snapshot(), before, "no byte and no mtime changed");
    let line = second.to_string();
    assert!(
        line.contains("0 written, 14 unchanged, 0 removed")
            && line.contains("SUPPORT.md unchanged in ")
            && line.contains(".skillgen-digest"),
        "{line}"
    );

    let report = skillgen::check(&env.config).unwrap();
    assert!(report.is_fresh() && report.from_digest, "{report:?}");
    assert_eq!(report.files, 14);
    let forced = skillgen::check_with(
        &env.config,
        Options {
            dry_run: false,
            force: true,
        },
    )
    .unwrap();
    assert!(forced.is_fresh() && !forced.from_digest);

    let dry = env.generate_with(true, false);
    assert!(dry.from_digest && dry.written.is_empty() && !dry.support_written);
    assert_eq!(env.snapshot(), before);
}

#[test]
fn force_renders_but_writes_only_what_differs() {
    let env = env();
    env.generate();
    let before = env.snapshot();
    let forced = env.generate_with(false, true);
    assert!(!forced.from_digest);
    assert!(forced.written.is_empty() && forced.removed.is_empty() && !forced.support_written);
    assert_eq!(forced.unchanged, 14);
    assert_eq!(env.snapshot(), before, "the digest itself is unchanged too");
}

#[test]
fn an_edited_registry_renders_and_writes_the_change() {
    let env = env();
    env.generate();
    let old_digest = env.digest();
    edit(
        &env.config.registry,
        "      masked-lm: [BertForMaskedLM]",
        "      masked-lm: [BertForMaskedLM, BertForMLM]",
    );
    let s = env.generate();
    assert!(!s.from_digest);
    assert_eq!(paths(&s.written), ["src/encoder/bert.rs"]);
    assert_ne!(env.digest(), old_digest);
    assert!(
        env.generate().from_digest,
        "and the run after that skips again"
    );

    // A change that no output shows (a YAML comment) still renders (the key changed), writes
    // no generated file, and records the new key.
    let digest = env.digest();
    let text = fs::read_to_string(&env.config.registry).unwrap();
    fs::write(&env.config.registry, format!("# a comment\n{text}")).unwrap();
    let s = env.generate();
    assert!(!s.from_digest && s.written.is_empty() && !s.support_written);
    assert_ne!(env.digest(), digest);
    assert!(env.generate().from_digest);
}

#[test]
fn an_edited_template_renders() {
    let env = env();
    env.generate();
    let encoder = env.config.templates.join("families/encoder.rs.tera");
    edit(
        &encoder,
        "//! Encoder models read the whole input at once",
        "//! Encoder models (edited) read the whole input at once",
    );
    let s = env.generate();
    assert!(!s.from_digest);
    assert_eq!(
        paths(&s.written),
        ["src/encoder/bert.rs", "src/encoder/mod.rs"]
    );
    let bert = fs::read_to_string(env.config.out.join("src/encoder/bert.rs")).unwrap();
    assert!(bert.contains("//! Encoder models (edited) read"), "{bert}");
    assert!(env.generate().from_digest);

    // A new template file (even an unused one) is an input too.
    fs::write(env.config.templates.join("unused.rs.tera"), "// unused\n").unwrap();
    let s = env.generate();
    assert!(!s.from_digest && s.written.is_empty());
    assert!(env.generate().from_digest);
}

#[test]
fn a_hand_edited_deleted_or_added_output_file_is_repaired() {
    let env = env();
    env.generate();
    let digest = env.digest();
    let out = &env.config.out;
    let lib = out.join("src/lib.rs");
    let original = fs::read(&lib).unwrap();

    // Same length, different bytes.
    let mut edited = original.clone();
    let last = edited.len() - 2;
    edited[last] = if edited[last] == b'x' { b'y' } else { b'x' };
    fs::write(&lib, &edited).unwrap();
    let report = skillgen::check(&env.config).unwrap();
    assert!(!report.from_digest && !report.is_fresh());
    assert_eq!(paths(&report.stale), ["src/lib.rs"]);
    let s = env.generate();
    assert!(!s.from_digest);
    assert_eq!(paths(&s.written), ["src/lib.rs"]);
    assert_eq!(fs::read(&lib).unwrap(), original);
    assert_eq!(
        env.digest(),
        digest,
        "same inputs, same outputs: same digest"
    );

    // Deleted.
    fs::remove_file(out.join("src/vision/type_.rs")).unwrap();
    let s = env.generate();
    assert_eq!(paths(&s.written), ["src/vision/type_.rs"]);

    // An extra file, an empty directory, a symlink.
    fs::write(out.join("src/extra.rs"), "// stray\n").unwrap();
    let s = env.generate();
    assert!(!s.from_digest);
    assert_eq!(paths(&s.removed), ["src/extra.rs"]);
    fs::create_dir(out.join("src/empty")).unwrap();
    assert!(!env.generate().from_digest);
    assert!(!out.join("src/empty").exists());
    std::os::unix::fs::symlink("lib.rs", out.join("src/link.rs")).unwrap();
    let s = env.generate();
    assert_eq!(paths(&s.removed), ["src/link.rs"]);

    // The whole tree gone.
    fs::remove_dir_all(out.join("src")).unwrap();
    let s = env.generate();
    assert_eq!(s.written.len(), 14);

    // SUPPORT.md edited, then deleted.
    fs::write(&env.config.support, "stale\n").unwrap();
    let s = env.generate();
    assert!(!s.from_digest && s.support_written && s.written.is_empty());
    fs::remove_file(&env.config.support).unwrap();
    assert!(env.generate().support_written);
    assert!(env.generate().from_digest);
}

#[test]
fn a_missing_or_damaged_digest_is_never_trusted() {
    let env = env();
    env.generate();
    let good = env.digest();
    let lib = env.config.out.join("src/lib.rs");

    // Each damaged digest comes with a hand-edited lib.rs: trusting it would keep the edit.
    let mut broken: Vec<String> = vec![
        String::new(),
        "garbage\n".to_owned(),
        good[..good.len() / 2].to_owned(),
        good.replacen("skills 7", "skills 8", 1),
    ];
    // A digest whose check line is right but whose key is another registry's.
    let key_line = good.lines().nth(1).unwrap().to_owned();
    let other_key = good.replacen(&key_line, "key 0123456789abcdef", 1);
    broken.push(other_key);
    for damaged in broken {
        fs::write(&lib, "// hand-edited\n").unwrap();
        fs::write(env.digest_path(), &damaged).unwrap();
        let s = env.generate();
        assert!(!s.from_digest, "trusted {damaged:?}");
        assert_eq!(paths(&s.written), ["src/lib.rs"]);
        assert_eq!(env.digest(), good, "rewritten after {damaged:?}");
    }

    // No digest at all: renders, writes nothing but the digest.
    fs::remove_file(env.digest_path()).unwrap();
    let s = env.generate();
    assert!(!s.from_digest && s.written.is_empty());
    assert_eq!(env.digest(), good);

    // A digest that is a directory is not read, and the run still works.
    fs::remove_file(env.digest_path()).unwrap();
    fs::create_dir(env.digest_path()).unwrap();
    assert!(!skillgen::check(&env.config).unwrap().from_digest);
}

#[test]
fn a_digest_of_another_tree_is_not_trusted() {
    // Two output directories from two registries; swap their digests.
    let a = env();
    let b = env();
    edit(
        &b.config.registry,
        "      masked-lm: [BertForMaskedLM]",
        "      masked-lm: [BertForMaskedLM, BertForMLM]",
    );
    a.generate();
    b.generate();
    let digest_b = b.digest();
    // Same registry as `a` now, but `b`'s tree and digest: the key no longer matches.
    fs::write(&b.config.registry, FIXTURE).unwrap();
    let s = b.generate();
    assert!(!s.from_digest);
    assert_eq!(paths(&s.written), ["src/encoder/bert.rs"]);
    assert_ne!(b.digest(), digest_b);
    // Now `a`'s digest over `b`'s tree after a hand edit of `b`: the key matches (same inputs,
    // same generator) but the tree does not.
    fs::write(b.config.out.join("src/encoder/bert.rs"), "// edited\n").unwrap();
    fs::write(b.digest_path(), a.digest()).unwrap();
    assert!(!b.generate().from_digest);
}

#[test]
fn the_digest_names_no_location() {
    let a = env();
    let b = env();
    a.generate();
    b.generate();
    assert_eq!(a.digest(), b.digest());
    assert!(!a.digest().contains(&a.dir.path().display().to_string()));
}

#[test]
fn a_dry_run_writes_no_digest() {
    let env = env();
    let dry = env.generate_with(true, false);
    assert!(!dry.from_digest && dry.written.len() == 14);
    assert!(!env.config.out.exists());
    env.generate();
    fs::write(env.config.out.join("src/lib.rs"), "// edited\n").unwrap();
    let digest = env.digest();
    let before = env.snapshot();
    let dry = env.generate_with(true, false);
    assert!(!dry.from_digest);
    assert_eq!(paths(&dry.written), ["src/lib.rs"]);
    assert_eq!(env.snapshot(), before);
    assert_eq!(env.digest(), digest);
}

#[test]
fn an_up_to_date_run_cleans_what_a_killed_run_left() {
    let env = env();
    env.generate();
    let out = &env.config.out;
    // A run for other inputs was killed while staging; the inputs are back to the last run's.
    fs::create_dir_all(out.join(".skillgen-staging/encoder")).unwrap();
    fs::write(out.join(".skillgen-staging/encoder/bert.rs"), "partial").unwrap();
    let staged_digest = skillgen::tree::staging_file(&env.digest_path());
    fs::write(&staged_digest, "partial").unwrap();
    let s = env.generate();
    assert!(s.from_digest);
    assert!(!out.join(".skillgen-staging").exists() && !staged_digest.exists());
}

#[test]
fn a_failed_run_keeps_the_old_digest() {
    let env = env();
    env.generate();
    let digest = env.digest();
    edit(
        &env.config.registry,
        "    family: encoder\n",
        "    family: encodr\n",
    );
    skillgen::generate(&env.config, false).unwrap_err();
    assert_eq!(env.digest(), digest);
    // Back to the valid registry: the old digest still describes the tree.
    fs::write(&env.config.registry, FIXTURE).unwrap();
    assert!(env.generate().from_digest);
}
