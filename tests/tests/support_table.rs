//! The one table of what runs: the runtime's view (`SkillInfo::support`, from the attributes
//! the generator wrote into `skills`) equals the generator's view of `models.yaml` (which also
//! renders `SUPPORT.md` and `skillgen list --json`), for every (model type, task, backend); and
//! every verified model type has its reference fixture.

use skillgen::Config;
use skillgen::support::Facts;
use skillgen_runtime::{BackendKind, Support};

#[test]
fn runtime_table_equals_the_registry_for_every_type_task_and_backend() {
    let root = skillgen_test_support::repo();
    let registry = skillgen::load(&Config::in_root(&root)).expect("models.yaml is valid");
    assert_eq!(registry.models.len(), skills::registry::all().len());
    let mut compared = 0;
    for model in &registry.models {
        let info = skills::registry::by_model_type(&model.model_type.value)
            .unwrap_or_else(|| panic!("`{}` is not in skills", model.model_type.value));
        let facts = Facts::of(model);
        for t in &model.tasks {
            let task = t.task.value;
            for &backend in BackendKind::ALL {
                assert_eq!(
                    info.support(task, backend),
                    facts.support(task, backend),
                    "{} / {task} / {backend}: the runtime and models.yaml disagree; run `cargo run -p skillgen`",
                    info.model_type
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 3000, "compared only {compared} cells");
}

#[test]
fn every_verified_type_has_its_reference_fixture() {
    let mut verified = Vec::new();
    for info in skills::registry::all() {
        let runs = info.tasks.iter().any(|t| {
            matches!(
                info.support(t.task, BackendKind::Candle),
                Support::Verified(_)
            )
        });
        if runs {
            // The hand-written parity fixtures, or the factory's conformance fixture (which
            // `conformance.rs` runs; the decoder types are held to it exactly there).
            let native =
                skillgen_test_support::native_fixture(info.model_type).join("reference.json");
            let conformance = skillgen_test_support::repo()
                .join("fixtures/conformance")
                .join(info.model_type);
            // A causal-LM fixture at the top, or a task head's (`classify/`, `qa/`, ...).
            let has_conformance = conformance.join("reference.safetensors").is_file()
                || std::fs::read_dir(&conformance).is_ok_and(|dirs| {
                    dirs.flatten()
                        .any(|d| d.path().join("reference.safetensors").is_file())
                });
            assert!(
                native.is_file() || has_conformance,
                "`{}` is verified on candle in models.yaml but has neither {} (fixtures/make_native_fixtures*.py) nor {} (fixtures/factory/make_fixture.py)",
                info.model_type,
                native.display(),
                conformance.join("[<task>/]reference.safetensors").display()
            );
            verified.push(info.model_type);
        }
    }
    assert!(verified.len() >= 24, "{verified:?}");
}
