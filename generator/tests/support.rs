//! `SUPPORT.md` at the repository root is what the generator renders from the real
//! `models.yaml`, byte for byte.

use std::path::Path;

#[test]
fn support_md_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("generator/ lives in the workspace");
    let config = skillgen::Config::in_root(root);
    let expected = skillgen::render_support(&config).expect("models.yaml renders");
    let path = root.join(skillgen::SUPPORT_FILE);
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{} is stale or missing: run `cargo run -p skillgen` to regenerate it (and generated/src)",
        path.display()
    );
}

#[test]
fn support_md_counts_what_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = skillgen::render_support(&skillgen::Config::in_root(root)).unwrap();
    for row in [
        "| `llama` | `causal-lm` | **verified** (`decoder`) | **delegated** (architecture `llama3`) |",
        "| `vit` | `image-classification` | **verified** (`vit`) | not implemented |",
    ] {
        assert!(text.contains(row), "SUPPORT.md lacks {row:?}");
    }
    let granite = text
        .lines()
        .find(|l| l.starts_with("| `granite` | `causal-lm` |"))
        .expect("granite's causal-lm row");
    assert!(
        granite.contains("| **verified** (`decoder`) |")
            && granite.ends_with("| **delegated** (architecture `granite`) |"),
        "{granite}"
    );
    assert!(
        !text.contains("| `blip` |"),
        "types where nothing runs are counted, not listed"
    );
    assert!(
        text.contains("| `clip` | `zero-shot-image-classification` | **verified** (`dual`) |"),
        "{text}"
    );
    let idle_vision_text = text
        .lines()
        .find_map(|l| l.strip_prefix("- vision-text: "))
        .and_then(|l| l.strip_suffix(" of 25 model types"))
        .and_then(|n| n.parse::<usize>().ok())
        .expect("the vision-text line of \"Nothing runs yet\"");
    assert!(
        idle_vision_text < 25,
        "clip and siglip run, so not every vision-text type is idle: {idle_vision_text}"
    );
}
