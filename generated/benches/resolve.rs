//! Cached target resolution + dispatch plan, per call, over the backends of this build.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use skillgen_runtime::dispatch::{plan, resolve};
use skillgen_runtime::{
    Capabilities, Capability, MapEnv, ProcessEnv, SkillInfo, Target, TargetSpec, Task,
};

/// The skill under test, declared the way users and the generator declare one.
#[derive(Debug, skillgen_runtime::Skill)]
#[skill(
    model_type = "llama",
    family = decoder,
    config_class = "LlamaConfig",
    hf_module = "llama",
    tasks(base_model("LlamaModel"), causal_lm("LlamaForCausalLM")),
    candle = "llama",
    max("LlamaForCausalLM"),
    native(causal_lm = decoder),
    backends = skills::backends,
)]
struct Llama {
    state: skillgen_runtime::SkillState,
}

const LLAMA: &SkillInfo = Llama::INFO;

fn bench(c: &mut Criterion) {
    // The cached detection (probed once, outside the measured loop).
    let backends = skills::backends();
    let detected = backends.capabilities();
    c.bench_function("resolve/process_env", |b| {
        b.iter(|| resolve(black_box(&TargetSpec::Default), &ProcessEnv))
    });
    c.bench_function("plan/process_env+detected/auto", |b| {
        b.iter(|| {
            plan(
                black_box(LLAMA),
                Capability::Generate,
                &TargetSpec::Auto,
                &ProcessEnv,
                detected,
                false,
                backends,
            )
        })
    });
    let fixed = Capabilities::fixed_with_max(&["LlamaForCausalLM"]);
    let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]);
    c.bench_function("plan/map_env+fixed_max/default", |b| {
        b.iter(|| {
            plan(
                black_box(LLAMA),
                Capability::Generate,
                &TargetSpec::Default,
                &env,
                &fixed,
                false,
                backends,
            )
        })
    });
    c.bench_function("plan/map_env+fixed_max/exact_cpu", |b| {
        b.iter(|| {
            plan(
                black_box(LLAMA),
                Task::CausalLm,
                &TargetSpec::Exact(Target::Cpu),
                &env,
                &fixed,
                false,
                backends,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
