//! Atomicity under `SIGKILL`: the generator binary is killed at random moments of a full
//! regeneration, again and again, and after every kill the output tree is entirely the old one
//! or entirely the new one; the next run then repairs whatever the kill left and finishes.
//!
//! The two registries are the real `models.yaml` (804 skills, 818 files) and the hostile-names
//! fixture (16 skills), so a swap replaces almost every file in either direction. Kill delays are
//! spread over the measured duration of one run. Iterations: `SKILLGEN_KILL_ITERATIONS`
//! (default 25); the seed is printed, and `SKILLGEN_KILL_SEED` replays a run.
//!
//! Every killed run renders (the registries alternate, so `OUT/.skillgen-digest` never matches);
//! after each repair the digest must be exactly the one a clean run writes, whatever the kill
//! left (a digest of the old tree next to the new one, a staged digest file, ...).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Tree = BTreeMap<PathBuf, Vec<u8>>;

/// The digest file the generator keeps in OUT (`skillgen::digest::FILE`).
const DIGEST: &str = ".skillgen-digest";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("generator/ lives in the workspace")
        .to_path_buf()
}

/// Every file under `dir` (relative path → bytes). Directories that hold no file don't count.
fn read_tree(dir: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
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
    let mut out = Tree::new();
    walk(dir, dir, &mut out);
    out
}

fn command(registry: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillgen"));
    cmd.arg("--registry")
        .arg(registry)
        .arg("--templates")
        .arg(workspace().join("templates"))
        .arg("--out")
        .arg(out)
        .arg("generate")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn generate(registry: &Path, out: &Path) {
    let status = command(registry, out).status().expect("skillgen runs");
    assert!(
        status.success(),
        "skillgen failed on {}",
        registry.display()
    );
}

/// xorshift64*: enough randomness for kill delays, with a printable seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn killed_regeneration_leaves_the_old_or_the_new_tree() {
    let iterations: usize = std::env::var("SKILLGEN_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let seed: u64 = std::env::var("SKILLGEN_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("kill test: {iterations} iterations, SKILLGEN_KILL_SEED={seed}");
    let mut rng = Rng(seed);

    let registries = [
        workspace().join("models.yaml"),
        workspace().join("tests/fixtures/registries/valid/hostile-names.yaml"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    // The two complete trees, and how long a full regeneration takes here.
    let mut trees = Vec::new();
    let mut digests = Vec::new();
    let mut slowest = Duration::ZERO;
    for (i, registry) in registries.iter().enumerate() {
        let out = tmp.path().join(format!("reference-{i}"));
        let other = tmp.path().join(format!("reference-{i}-from-other"));
        generate(&registries[1 - i], &other);
        let start = Instant::now();
        generate(registry, &other);
        slowest = slowest.max(start.elapsed());
        generate(registry, &out);
        let tree = read_tree(&out.join("src"));
        assert!(!tree.is_empty());
        assert_eq!(
            tree,
            read_tree(&other.join("src")),
            "regenerating over another tree equals generating fresh"
        );
        trees.push(tree);
        let digest = fs::read(out.join(DIGEST)).ok();
        assert!(digest.is_some(), "a complete run leaves a digest");
        assert_eq!(digest, fs::read(other.join(DIGEST)).ok());
        digests.push(digest);
    }
    let window_us = (slowest.as_micros() as u64).max(1_000) * 5 / 4;

    let out = tmp.path().join("out");
    generate(&registries[0], &out);
    let mut current = 0usize;
    let (mut stayed_old, mut became_new, mut finished_before_kill) = (0, 0, 0);
    for iteration in 0..iterations {
        let target = 1 - current;
        let delay = Duration::from_micros(rng.next() % window_us);
        let mut child = command(&registries[target], &out)
            .spawn()
            .expect("skillgen starts");
        std::thread::sleep(delay);
        if child.try_wait().expect("child status").is_some() {
            finished_before_kill += 1;
        } else {
            child.kill().expect("SIGKILL delivered");
        }
        child.wait().expect("child reaped");

        let tree = read_tree(&out.join("src"));
        if tree == trees[current] {
            stayed_old += 1;
        } else if tree == trees[target] {
            became_new += 1;
        } else {
            let (old, new) = (&trees[current], &trees[target]);
            let mixed = tree
                .iter()
                .filter(|(p, b)| old.get(*p) != Some(*b) && new.get(*p) != Some(*b))
                .count();
            panic!(
                "iteration {iteration} (seed {seed}, kill after {delay:?}): src/ is neither the old \
                 nor the new tree ({} files, {mixed} match neither; old has {}, new has {})",
                tree.len(),
                old.len(),
                new.len()
            );
        }
        // The next run repairs what the kill left and completes.
        generate(&registries[target], &out);
        assert_eq!(
            read_tree(&out.join("src")),
            trees[target],
            "iteration {iteration}: the run after a kill produced the new tree"
        );
        // The digest is the one a clean run writes for these inputs (it names no path).
        assert_eq!(
            fs::read(out.join(DIGEST)).ok(),
            digests[target],
            "iteration {iteration}: the digest after the repair"
        );
        let leftovers: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "src" && n != DIGEST)
            .collect();
        assert!(
            leftovers.is_empty(),
            "iteration {iteration}: left behind {leftovers:?}"
        );
        current = target;
    }
    eprintln!(
        "kill test: {stayed_old} kills left the old tree, {became_new} the new one, \
         {finished_before_kill} runs finished before the kill (window {window_us} µs)"
    );
    assert!(
        stayed_old > 0 || iterations < 10,
        "no kill landed before the swap: the delays do not cover the run"
    );
}
