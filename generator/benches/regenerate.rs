//! Regeneration of the real registry (`models.yaml`, 804 skills): a full run into an empty
//! output directory, a no-op run over an up-to-date tree (the digest matches: nothing is
//! rendered), the same with `--force` (everything rendered and compared), and rendering alone.
//!
//! `cargo bench -p skillgen --bench regenerate`

use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use skillgen::Config;

fn config(out: &Path) -> Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("generator/ is inside the workspace");
    Config {
        registry: root.join("models.yaml"),
        templates: root.join("templates"),
        out: out.to_path_buf(),
        support: Config::default_support(out),
    }
}

fn regenerate(c: &mut Criterion) {
    let mut group = c.benchmark_group("models.yaml");
    group.sample_size(10);

    group.bench_function("render (parse, validate, render, syn, format)", |b| {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        b.iter(|| skillgen::render(&config).expect("models.yaml renders"));
    });

    group.bench_function("generate into an empty directory", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                let summary = skillgen::generate(&config(dir.path()), false).expect("generates");
                assert!(!summary.written.is_empty());
                dir
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function("generate over an up-to-date tree (no-op, digest)", |b| {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        skillgen::generate(&config, false).expect("generates");
        b.iter(|| {
            let summary = skillgen::generate(&config, false).expect("generates");
            assert!(summary.from_digest, "the digest was not used");
            assert!(summary.written.is_empty(), "no-op run wrote files");
        });
    });

    group.bench_function(
        "generate --force over an up-to-date tree (render, compare)",
        |b| {
            let dir = tempfile::tempdir().unwrap();
            let config = config(dir.path());
            skillgen::generate(&config, false).expect("generates");
            let force = skillgen::Options {
                dry_run: false,
                force: true,
            };
            b.iter(|| {
                let summary = skillgen::generate_with(&config, force).expect("generates");
                assert!(!summary.from_digest && summary.written.is_empty());
            });
        },
    );

    group.finish();
}

criterion_group!(benches, regenerate);
criterion_main!(benches);
