//! The dispatch table of every generated skill, snapshotted under two fixed capability
//! reports: a CPU-only machine with no MAX, and a machine whose `max serve` serves the model.
//! The reports are injected (`Capabilities::fixed_*`), so the snapshots don't depend on the
//! machine running the tests. `tests/snapshots/dispatch/` holds one file per model type; a
//! second test rejects snapshot files whose model type left the registry.

use std::collections::BTreeSet;
use std::path::Path;

use skillgen_runtime::{Capabilities, dispatch};

const SNAPSHOTS: &str = "snapshots/dispatch";

fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(SNAPSHOTS);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

#[test]
fn dispatch_table_of_every_skill() {
    let no_max = Capabilities::fixed_cpu_only();
    let skills = skills::registry::all();
    assert_eq!(
        skills.len(),
        804,
        "one skill per transformers 5.23 model type"
    );
    snapshot_settings().bind(|| {
        for info in skills {
            let serving = Capabilities::fixed_with_max(&[info.model_type]);
            let text = format!(
                "{}\n{}",
                dispatch::table(info, &no_max, skills::backends()),
                dispatch::table(info, &serving, skills::backends())
            );
            insta::assert_snapshot!(info.model_type, text);
        }
    });
}

#[test]
fn no_dispatch_snapshot_outlives_its_model_type() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(SNAPSHOTS);
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".snap"))
        .collect();
    let expected: BTreeSet<String> = skills::registry::all()
        .iter()
        .map(|info| format!("{}.snap", info.model_type))
        .collect();
    let orphans: Vec<_> = on_disk.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&on_disk).collect();
    assert!(
        orphans.is_empty() && missing.is_empty(),
        "dispatch snapshots out of sync with the registry\n  orphans (delete): {orphans:?}\n  \
         missing (run `INSTA_UPDATE=always cargo test -p skillgen-tests --test dispatch`): {missing:?}"
    );
}
