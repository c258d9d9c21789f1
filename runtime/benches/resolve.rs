//! Cached target resolution + dispatch plan, per call.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use skillgen_runtime::dispatch::{plan, resolve};
use skillgen_runtime::{
    Capabilities, Capability, Family, MapEnv, Modality, ProcessEnv, SkillInfo, Target, TargetSpec,
    Task, TaskInfo,
};

static LLAMA: SkillInfo = SkillInfo {
    model_type: "llama",
    struct_name: "Llama",
    family: Family::Decoder,
    modalities: &[Modality::Text],
    config_class: Some("LlamaConfig"),
    hf_module: Some("llama"),
    tasks: &[
        TaskInfo {
            task: Task::BaseModel,
            hf_classes: &["LlamaModel"],
        },
        TaskInfo {
            task: Task::CausalLm,
            hf_classes: &["LlamaForCausalLM"],
        },
    ],
    candle: Some("llama"),
    max: &["LlamaForCausalLM"],
    sub_config_of: &[],
    deprecated: false,
};

fn bench(c: &mut Criterion) {
    // The cached detection (probed once, outside the measured loop).
    let detected = Capabilities::detected();
    c.bench_function("resolve/process_env", |b| {
        b.iter(|| resolve(black_box(&TargetSpec::Default), &ProcessEnv))
    });
    c.bench_function("plan/process_env+detected/auto", |b| {
        b.iter(|| {
            plan(
                black_box(&LLAMA),
                Capability::Generate,
                &TargetSpec::Auto,
                &ProcessEnv,
                detected,
                false,
            )
        })
    });
    let fixed = Capabilities::fixed_with_max(&["LlamaForCausalLM"]);
    let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]);
    c.bench_function("plan/map_env+fixed_max/default", |b| {
        b.iter(|| {
            plan(
                black_box(&LLAMA),
                Capability::Generate,
                &TargetSpec::Default,
                &env,
                &fixed,
                false,
            )
        })
    });
    c.bench_function("plan/map_env+fixed_max/exact_cpu", |b| {
        b.iter(|| {
            plan(
                black_box(&LLAMA),
                Task::CausalLm,
                &TargetSpec::Exact(Target::Cpu),
                &env,
                &fixed,
                false,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
