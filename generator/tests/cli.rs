//! The `skillgen` binary: `list --json` support statuses, `check`/`generate --dry-run` and
//! `SUPPORT.md`, and a closed stdout pipe.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("generator/ lives in the workspace")
        .to_path_buf()
}

/// `skillgen` on the real registry and templates, writing (if at all) under `out`.
fn skillgen(out: &Path) -> Command {
    skillgen_on(&workspace().join("models.yaml"), out)
}

/// `skillgen` on `registry` and the real templates, writing (if at all) under `out`.
fn skillgen_on(registry: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillgen"));
    cmd.arg("--registry")
        .arg(registry)
        .arg("--templates")
        .arg(workspace().join("templates"))
        .arg("--out")
        .arg(out.join("generated"));
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("skillgen runs");
    assert!(
        output.status.success(),
        "skillgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn list_json() -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(skillgen(tmp.path()).args(["list", "--json"]));
    serde_json::from_slice(&out.stdout).expect("list --json prints JSON")
}

fn model<'a>(list: &'a serde_json::Value, model_type: &str) -> &'a serde_json::Value {
    list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model_type"] == model_type)
        .unwrap_or_else(|| panic!("{model_type} is listed"))
}

fn task<'a>(model: &'a serde_json::Value, task: &str) -> &'a serde_json::Value {
    model["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == task)
        .unwrap_or_else(|| panic!("{} lists {task}", model["model_type"]))
}

#[test]
fn list_json_gives_each_tasks_status_per_backend() {
    let list = list_json();
    assert_eq!(list["models"].as_array().unwrap().len(), 804);

    let llama = model(&list, "llama");
    assert_eq!(
        task(llama, "causal-lm"),
        &serde_json::json!({
            "task": "causal-lm",
            "classes": ["LlamaForCausalLM"],
            "candle": {"status": "verified", "implementation": "decoder"},
            "max": {"status": "delegated", "architecture": "llama3"},
        })
    );
    assert_eq!(
        task(llama, "sequence-classification")["candle"],
        serde_json::json!({"status": "verified", "implementation": "decoder"})
    );
    assert_eq!(
        task(llama, "base-model")["candle"],
        serde_json::json!({"status": "not_implemented"})
    );
    // The existing fields are still there.
    assert_eq!(llama["candle"], "llama");
    assert_eq!(llama["max"], serde_json::json!(["llama3"]));
    assert_eq!(llama["family"], "decoder");
    assert_eq!(llama["path"], "skills::llama::Llama");
    assert_eq!(
        llama["native"],
        serde_json::json!({
            "causal-lm": "decoder",
            "question-answering": "decoder",
            "sequence-classification": "decoder",
            "token-classification": "decoder",
        })
    );

    // Granite runs on both (its candle refusal ended with the config-driven decoder).
    let granite = model(&list, "granite");
    let causal = task(granite, "causal-lm");
    assert_eq!(
        causal["candle"],
        serde_json::json!({"status": "verified", "implementation": "decoder"})
    );
    assert_eq!(
        causal["max"],
        serde_json::json!({"status": "delegated", "architecture": "granite"})
    );

    // blip has a candle-transformers module, but nothing runs it.
    let cc = model(&list, "blip");
    assert_eq!(cc["candle"], "blip");
    for t in cc["tasks"].as_array().unwrap() {
        for backend in ["candle", "max"] {
            assert_eq!(
                t[backend],
                serde_json::json!({"status": "not_implemented"}),
                "blip {} on {backend}",
                t["task"]
            );
        }
    }
}

#[test]
fn list_and_show_print_the_statuses() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(skillgen(tmp.path()).arg("list"));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |mt: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(mt))
            .unwrap_or_else(|| panic!("{mt} listed"))
            .to_owned()
    };
    assert!(
        line("llama").ends_with(
            "runs: causal-lm (candle verified, MAX delegated), question-answering (candle verified), sequence-classification (candle verified), token-classification (candle verified)"
        ),
        "{}",
        line("llama")
    );
    assert!(line("blip").ends_with("runs nothing"), "{}", line("blip"));
    assert!(
        line("clip").ends_with("runs: zero-shot-image-classification (candle verified)"),
        "{}",
        line("clip")
    );

    // A refusal (none is in the registry today): granite refused on candle in a copy.
    let yaml = std::fs::read_to_string(workspace().join("models.yaml")).unwrap();
    let at = yaml
        .find("  - model_type: granite\n")
        .expect("granite entry");
    let end = at + yaml[at + 1..].find("  - model_type: ").expect("next entry") + 1;
    let entry = yaml[at..end].replace(
        "    native:\n      causal-lm: decoder\n",
        "    refused:\n      candle: \"a test reason\"\n",
    );
    let edited = format!("{}{entry}{}", &yaml[..at], &yaml[end..]);
    let registry = tmp.path().join("models.yaml");
    std::fs::write(&registry, edited).unwrap();
    let text =
        String::from_utf8(run(skillgen_on(&registry, tmp.path()).arg("list")).stdout).unwrap();
    let granite = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("granite"))
        .unwrap()
        .to_owned();
    assert!(
        granite.ends_with("runs: causal-lm (MAX delegated); candle refused"),
        "{granite}"
    );
    let text =
        String::from_utf8(run(skillgen_on(&registry, tmp.path()).args(["show", "granite"])).stdout)
            .unwrap();
    assert!(
        text.contains(
            "support:\n  base-model                   candle: refused  |  MAX: not implemented\n  causal-lm                    candle: refused  |  MAX: delegated (architecture granite)\n  refused on candle: a test reason"
        ),
        "{text}"
    );
    let out = run(skillgen(tmp.path()).args(["show", "blip"]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  nothing runs this model type yet"),
        "{text}"
    );
}

#[test]
fn check_names_a_stale_or_missing_support_md_and_dry_run_does_not_write_it() {
    let tmp = tempfile::tempdir().unwrap();
    let support = tmp.path().join("SUPPORT.md");
    let out = run(skillgen(tmp.path()).args(["generate", "--dry-run"]));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("would write  {}\n", support.display())),
        "{stdout}"
    );
    assert!(!support.exists(), "--dry-run writes no SUPPORT.md");

    run(skillgen(tmp.path()).arg("generate"));
    assert!(support.is_file(), "SUPPORT.md next to OUT");
    run(skillgen(tmp.path()).arg("check"));

    std::fs::write(&support, "stale\n").unwrap();
    let out = skillgen(tmp.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{} is out of date (stale)", support.display())),
        "{stderr}"
    );

    std::fs::remove_file(&support).unwrap();
    let out = skillgen(tmp.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{} is out of date (missing)", support.display())),
        "{stderr}"
    );

    // `--support` puts it elsewhere.
    let elsewhere = tmp.path().join("docs/SUPPORT.md");
    std::fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    run(skillgen(tmp.path())
        .arg("--support")
        .arg(&elsewhere)
        .arg("generate"));
    assert!(elsewhere.is_file() && !support.exists());
}

/// Whether the command ended the way a closed pipe should end it: exit 0, or 141 / SIGPIPE.
fn quiet_end(output: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    matches!(output.status.code(), Some(0 | 141)) || output.status.signal() == Some(13)
}

fn assert_quiet(args: &[&str], output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        quiet_end(output),
        "skillgen {args:?} with a closed stdout: {:?}\n{stderr}",
        output.status
    );
    for bad in ["panicked", "Broken pipe", "failed printing"] {
        assert!(
            !stderr.contains(bad),
            "skillgen {args:?} with a closed stdout printed {bad:?}:\n{stderr}"
        );
    }
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let commands: &[&[&str]] = &[
        &["list", "--json"],
        &["list"],
        &["show", "llama"],
        &["generate", "--dry-run"],
    ];
    for args in commands {
        // A pipe whose reader is already gone: the first write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = skillgen(tmp.path())
            .args(*args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_quiet(args, &output);
    }
}

#[test]
fn head_dash_1_on_list_json() {
    // `skillgen list --json | head -1`: the reader takes one line and goes away mid-output.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = skillgen(tmp.path())
        .args(["list", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "{\n");
    let output = child.wait_with_output().unwrap();
    assert_quiet(&["list", "--json"], &output);
}

#[test]
fn an_unchanged_run_says_so_and_force_renders_anyway() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/basic.yaml");
    let stderr = |args: &[&str]| {
        let out = run(skillgen_on(&registry, tmp.path()).args(args));
        String::from_utf8(out.stderr).unwrap()
    };
    let first = stderr(&["generate"]);
    assert!(
        first.contains("14 written") && !first.contains("digest"),
        "{first}"
    );
    assert!(tmp.path().join("generated/.skillgen-digest").is_file());
    let second = stderr(&["generate"]);
    assert!(
        second.contains("0 written, 14 unchanged")
            && second.contains("(inputs and outputs match .skillgen-digest; --force re-renders)"),
        "{second}"
    );
    for args in [
        &["generate", "--force"][..],
        &["--force"],
        &["check", "--force"],
    ] {
        let text = stderr(args);
        assert!(!text.contains("digest"), "{args:?}: {text}");
    }
    let check = stderr(&["check"]);
    assert!(
        check.contains("is up to date (14 files)") && check.contains("match .skillgen-digest"),
        "{check}"
    );

    // A hand edit: `check` fails even though the digest is there, `generate` repairs it.
    let lib = tmp.path().join("generated/src/lib.rs");
    std::fs::write(&lib, "// edited\n").unwrap();
    let out = skillgen_on(&registry, tmp.path())
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&["generate"]);
    assert!(text.contains("1 written, 13 unchanged"), "{text}");
}

#[test]
fn another_build_of_the_generator_renders_again() {
    // A copy of the binary stands for a rebuild: same bytes, but another file.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("skillgen-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_skillgen"), &copy).unwrap();
    let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/basic.yaml");
    let generate = |exe: &Path| {
        let mut cmd = Command::new(exe);
        cmd.arg("--registry")
            .arg(&registry)
            .arg("--templates")
            .arg(workspace().join("templates"))
            .arg("--out")
            .arg(tmp.path().join("generated"))
            .arg("generate");
        String::from_utf8(run(&mut cmd).stderr).unwrap()
    };
    let original = Path::new(env!("CARGO_BIN_EXE_skillgen"));
    generate(original);
    assert!(generate(original).contains("match .skillgen-digest"));
    let text = generate(&copy);
    assert!(
        text.contains("0 written") && !text.contains("digest"),
        "{text}"
    );
    assert!(generate(&copy).contains("match .skillgen-digest"));
    assert!(!generate(original).contains("digest"), "and back");
}
