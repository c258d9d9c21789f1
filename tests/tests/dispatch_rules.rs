//! The fallback chain and strict mode of dispatch planning over the real backend checks (candle
//! and MAX), with the support predicate opened up where noted.

use skillgen_candle::CandleBackend;
use skillgen_max::MaxBackend;
use skillgen_runtime::dispatch::{
    Dispatch, SkipReason, TargetSource, outcome, outcome_code, plan, plan_with_check, resolve,
    table,
};
use skillgen_runtime::{
    Backend, Capabilities, Capability, CheckInput, Family, MapEnv, Modality, SkillError, SkillInfo,
    Target, TargetSpec, Task, TaskInfo,
};

/// A decoder whose generation candle does not run (candle ignores Granite's multipliers).
static GRANITE: SkillInfo = SkillInfo {
    model_type: "granite",
    struct_name: "Granite",
    family: Family::Decoder,
    modalities: &[Modality::Text],
    config_class: Some("GraniteConfig"),
    hf_module: Some("granite"),
    tasks: &[
        TaskInfo {
            task: Task::BaseModel,
            hf_classes: &["GraniteModel"],
        },
        TaskInfo {
            task: Task::CausalLm,
            hf_classes: &["GraniteForCausalLM"],
        },
        TaskInfo {
            task: Task::SequenceClassification,
            hf_classes: &["GraniteForSequenceClassification"],
        },
    ],
    candle: Some("granite"),
    max: &["GraniteForCausalLM"],
    native: &[],
    refused: &[],
    sub_config_of: &[],
    deprecated: false,
};

static BERT: SkillInfo = SkillInfo {
    model_type: "bert",
    struct_name: "Bert",
    family: Family::Encoder,
    modalities: &[Modality::Text],
    config_class: None,
    hf_module: None,
    tasks: &[TaskInfo {
        task: Task::MaskedLm,
        hf_classes: &[],
    }],
    candle: Some("bert"),
    max: &[],
    native: &[],
    refused: &[],
    sub_config_of: &[],
    deprecated: false,
};

/// The real checks, except that candle is taken to implement every task: exercises the
/// chain past this build's "task not implemented" (a support predicate, no output).
fn candle_implements_all(input: &CheckInput<'_>) -> Result<(), SkipReason> {
    match input.target {
        Target::MojoMax => MaxBackend.check(input),
        _ => match CandleBackend.check(input) {
            Err(SkipReason::TaskNotImplemented { .. }) => Ok(()),
            other => other,
        },
    }
}

const NO_MAX: &str =
    "mojo_max skipped: MAX unreachable (MAX_SERVE_URL not set and no `max` executable found)";

fn hyp(
    info: &SkillInfo,
    spec: TargetSpec,
    env: &[(&str, &str)],
    caps: &Capabilities,
    strict: bool,
) -> Result<Dispatch, SkillError> {
    plan_with_check(
        info,
        Capability::Generate.into(),
        &spec,
        &MapEnv::from_pairs(env),
        caps,
        strict,
        &[],
        &candle_implements_all,
    )
    .or_else(|e| match e {
        // BERT has no `generate`; use its task.
        SkillError::CapabilityMissing { .. } => plan_with_check(
            info,
            Task::MaskedLm.into(),
            &spec,
            &MapEnv::from_pairs(env),
            caps,
            strict,
            &[],
            &candle_implements_all,
        ),
        e => Err(e),
    })
}

fn used_and_skips(r: &Result<Dispatch, SkillError>) -> (Option<Target>, Vec<String>) {
    match r {
        Ok(d) => (
            Some(d.used),
            d.fallbacks.iter().map(ToString::to_string).collect(),
        ),
        Err(e) => (None, e.tried().iter().map(ToString::to_string).collect()),
    }
}

#[test]
fn use_mojo_max_without_max_falls_back_to_cpu() {
    let caps = Capabilities::fixed_cpu_only();
    let r = hyp(
        &GRANITE,
        TargetSpec::Default,
        &[("USE_MOJO_MAX_TARGET", "1")],
        &caps,
        false,
    );
    let d = r.as_ref().unwrap();
    assert_eq!(d.resolved.target, Some(Target::MojoMax));
    assert_eq!(d.resolved.source, TargetSource::UseMojoMaxTarget);
    assert_eq!(d.used, Target::Cpu);
    assert_eq!(d.task, Task::CausalLm);
    assert!(!d.strict);
    assert_eq!(
        used_and_skips(&r).1,
        [
            NO_MAX,
            "cuda:0 skipped: not compiled in (build `skills` with the `cuda` feature)",
            "metal:0 skipped: not compiled in (build `skills` with the `metal` feature)",
        ]
    );
    let json = serde_json::to_value(d).unwrap();
    assert_eq!(json["used"], "cpu");
    assert_eq!(json["requested"], "default");
    assert_eq!(json["resolved"]["target"], "mojo_max");
    assert_eq!(json["resolved"]["source"], "use_mojo_max_target");
    assert_eq!(json["fallbacks"][0]["reason"], "max_unreachable");
    assert_eq!(json["capability"], "generate");
}

#[test]
fn strict_turns_the_max_fallback_into_an_error() {
    let caps = Capabilities::fixed_cpu_only();
    for (env, strict, why) in [
        (
            &[("USE_MOJO_MAX_TARGET", "1"), ("SKILLGEN_STRICT", "1")][..],
            false,
            "SKILLGEN_STRICT is set",
        ),
        (
            &[("USE_MOJO_MAX_TARGET", "yes")][..],
            true,
            "strict mode was requested",
        ),
        (
            &[("SKILLGEN_TARGET", "mojo_max"), ("SKILLGEN_STRICT", "true")][..],
            false,
            "SKILLGEN_STRICT is set",
        ),
    ] {
        let e = hyp(&GRANITE, TargetSpec::Default, env, &caps, strict).unwrap_err();
        match &e {
            SkillError::Strict { skip, why: w, .. } => {
                assert_eq!(skip.to_string(), NO_MAX);
                assert_eq!(*w, why);
            }
            e => panic!("{env:?}: {e}"),
        }
        assert!(e.to_string().contains("MAX unreachable"), "{e}");
    }
    // Strict does not change auto: auto asks for the best available.
    let d = hyp(
        &GRANITE,
        TargetSpec::Auto,
        &[("SKILLGEN_STRICT", "1")],
        &caps,
        false,
    )
    .unwrap();
    assert_eq!((d.used, d.strict), (Target::Cpu, true));
    // Strict with an exact target that works is fine.
    let d = hyp(&GRANITE, Target::Cpu.into(), &[], &caps, true).unwrap();
    assert_eq!((d.used, d.fallbacks.len()), (Target::Cpu, 0));
}

#[test]
fn fallback_reasons_table() {
    struct Case {
        name: &'static str,
        info: &'static SkillInfo,
        spec: TargetSpec,
        env: &'static [(&'static str, &'static str)],
        caps: Capabilities,
        used: Option<Target>,
        first_skip: &'static str,
    }
    let cpu = Capabilities::fixed_cpu_only;
    let cases = [
        Case {
            name: "no MAX architecture",
            info: &BERT,
            spec: Target::MojoMax.into(),
            env: &[],
            caps: cpu(),
            used: Some(Target::Cpu),
            first_skip: "mojo_max skipped: the registry names no MAX architecture for model type `bert`",
        },
        Case {
            name: "no MAX architecture beats MAX reachability",
            info: &BERT,
            spec: TargetSpec::Default,
            env: &[("USE_MOJO_MAX_TARGET", "true")],
            caps: Capabilities::fixed_with_max(&["bert"]),
            used: Some(Target::Cpu),
            first_skip: "mojo_max skipped: the registry names no MAX architecture for model type `bert`",
        },
        Case {
            name: "MAX up, serving something else",
            info: &GRANITE,
            spec: Target::MojoMax.into(),
            env: &[],
            caps: Capabilities::fixed_with_max(&["google/gemma-3-1b-it"]),
            used: Some(Target::Cpu),
            first_skip: "mojo_max skipped: the MAX server at http://127.0.0.1:8000 serves google/gemma-3-1b-it, not model type `granite`",
        },
        Case {
            name: "MAX up, serving nothing",
            info: &GRANITE,
            spec: Target::MojoMax.into(),
            env: &[],
            caps: Capabilities::fixed_with_max(&[]),
            used: Some(Target::Cpu),
            first_skip: "mojo_max skipped: the MAX server at http://127.0.0.1:8000 serves no models",
        },
        Case {
            name: "MAX serves the architecture",
            info: &GRANITE,
            spec: Target::MojoMax.into(),
            env: &[],
            caps: Capabilities::fixed_with_max(&["GraniteForCausalLM"]),
            used: Some(Target::MojoMax),
            first_skip: "",
        },
        Case {
            name: "MAX URL down, executable found: the backend starts its own server",
            info: &GRANITE,
            spec: Target::MojoMax.into(),
            env: &[],
            caps: cpu()
                .with_max_unreachable("http://127.0.0.1:9", "connection refused")
                .with_max_executable("/opt/max/bin/max"),
            used: Some(Target::MojoMax),
            first_skip: "",
        },
        Case {
            name: "MAX serving something else, executable found",
            info: &GRANITE,
            spec: Target::MojoMax.into(),
            env: &[],
            caps: Capabilities::fixed_with_max(&["google/gemma-3-1b-it"])
                .with_max_executable("/opt/max/bin/max"),
            used: Some(Target::MojoMax),
            first_skip: "",
        },
        Case {
            name: "MAX URL down, no executable",
            info: &GRANITE,
            spec: Target::MojoMax.into(),
            env: &[],
            caps: cpu().with_max_unreachable("http://127.0.0.1:9", "connection refused"),
            used: Some(Target::Cpu),
            first_skip: "mojo_max skipped: MAX unreachable (MAX_SERVE_URL=http://127.0.0.1:9 did not answer: connection refused and no `max` executable found)",
        },
        Case {
            name: "auto picks CUDA when compiled in with a device",
            info: &GRANITE,
            spec: TargetSpec::Auto,
            env: &[],
            caps: cpu().with_cuda(true, 1),
            used: Some(Target::Cuda(0)),
            first_skip: NO_MAX,
        },
        Case {
            name: "missing CUDA ordinal",
            info: &GRANITE,
            spec: Target::Cuda(1).into(),
            env: &[],
            caps: cpu().with_cuda(true, 1),
            used: Some(Target::Cpu),
            first_skip: "cuda:1 skipped: no CUDA device 1 (1 found: fixed report: 1 CUDA device(s))",
        },
        Case {
            name: "metal compiled in, no device",
            info: &GRANITE,
            spec: Target::Metal(0).into(),
            env: &[],
            caps: cpu().with_metal(true, 0),
            used: Some(Target::Cpu),
            first_skip: "metal:0 skipped: no Metal device 0 (0 found: fixed report: 0 Metal device(s))",
        },
        Case {
            name: "explicit beats SKILLGEN_TARGET",
            info: &GRANITE,
            spec: Target::Cpu.into(),
            env: &[("SKILLGEN_TARGET", "mojo_max"), ("SKILLGEN_STRICT", "1")],
            caps: cpu(),
            used: Some(Target::Cpu),
            first_skip: "",
        },
        Case {
            name: "SKILLGEN_TARGET beats USE_MOJO_MAX_TARGET",
            info: &GRANITE,
            spec: TargetSpec::Default,
            env: &[("SKILLGEN_TARGET", "metal:0"), ("USE_MOJO_MAX_TARGET", "1")],
            caps: cpu(),
            used: Some(Target::Cpu),
            first_skip: "metal:0 skipped: not compiled in (build `skills` with the `metal` feature)",
        },
        Case {
            name: "USE_MOJO_MAX_TARGET=0 is ignored",
            info: &GRANITE,
            spec: TargetSpec::Default,
            env: &[("USE_MOJO_MAX_TARGET", "0")],
            caps: cpu().with_cuda(true, 2),
            used: Some(Target::Cuda(0)),
            first_skip: NO_MAX,
        },
        Case {
            name: "empty USE_MOJO_MAX_TARGET is ignored",
            info: &GRANITE,
            spec: TargetSpec::Default,
            env: &[("USE_MOJO_MAX_TARGET", ""), ("SKILLGEN_TARGET", "")],
            caps: cpu(),
            used: Some(Target::Cpu),
            first_skip: NO_MAX,
        },
    ];
    for c in cases {
        let r = hyp(c.info, c.spec, c.env, &c.caps, false);
        let (used, skips) = used_and_skips(&r);
        assert_eq!(used, c.used, "{}: {r:?}", c.name);
        assert_eq!(
            skips.first().map_or("", String::as_str),
            c.first_skip,
            "{}",
            c.name
        );
    }
}

#[test]
fn invalid_env_values_name_the_variable() {
    let caps = Capabilities::fixed_cpu_only();
    for (var, value, allowed) in [
        (
            "SKILLGEN_TARGET",
            "gpu",
            "cpu, cuda, cuda:N, metal, metal:N, mojo_max, auto",
        ),
        (
            "SKILLGEN_TARGET",
            "cuda:x",
            "cpu, cuda, cuda:N, metal, metal:N, mojo_max, auto",
        ),
        (
            "USE_MOJO_MAX_TARGET",
            "maybe",
            skillgen_runtime::env::BOOL_ALLOWED,
        ),
        ("SKILLGEN_STRICT", "2", skillgen_runtime::env::BOOL_ALLOWED),
    ] {
        let e = hyp(&GRANITE, TargetSpec::Default, &[(var, value)], &caps, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("invalid {var}=`{value}`: expected one of {allowed}")
        );
    }
    // An explicit target does not read SKILLGEN_TARGET, so a bad value there is not consulted…
    assert!(
        hyp(
            &GRANITE,
            Target::Cpu.into(),
            &[("SKILLGEN_TARGET", "gpu")],
            &caps,
            false
        )
        .is_ok()
    );
    // …but SKILLGEN_STRICT is always read.
    assert!(
        hyp(
            &GRANITE,
            Target::Cpu.into(),
            &[("SKILLGEN_STRICT", "sure")],
            &caps,
            false
        )
        .is_err()
    );
}

#[test]
fn resolution_order() {
    let r =
        |spec: TargetSpec, env: &[(&str, &str)]| resolve(&spec, &MapEnv::from_pairs(env)).unwrap();
    assert_eq!(r(TargetSpec::Default, &[]).to_string(), "auto (default)");
    assert_eq!(
        r(TargetSpec::Auto, &[("SKILLGEN_TARGET", "cpu")]).to_string(),
        "auto (explicit)"
    );
    assert_eq!(
        r(
            TargetSpec::Default,
            &[("SKILLGEN_TARGET", "auto"), ("USE_MOJO_MAX_TARGET", "1")]
        )
        .to_string(),
        "auto (SKILLGEN_TARGET)"
    );
    assert_eq!(
        r(TargetSpec::Default, &[("SKILLGEN_TARGET", " CUDA ")]).to_string(),
        "cuda:0 (SKILLGEN_TARGET)"
    );
    assert_eq!(
        r(TargetSpec::Default, &[("USE_MOJO_MAX_TARGET", "TRUE")]).to_string(),
        "mojo_max (USE_MOJO_MAX_TARGET)"
    );
}

#[test]
fn real_backends_end_in_no_backend_with_the_full_trace() {
    let caps = Capabilities::fixed_cpu_only();
    let env = MapEnv::from_pairs(&[("USE_MOJO_MAX_TARGET", "1")]);
    let e = plan(
        &GRANITE,
        Capability::Generate,
        &TargetSpec::Default,
        &env,
        &caps,
        false,
        skills::backends(),
    )
    .unwrap_err();
    let SkillError::NoBackend {
        tried,
        requested,
        task,
        ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(*task, Task::CausalLm);
    assert_eq!(requested, "mojo_max (USE_MOJO_MAX_TARGET)");
    let kinds: Vec<_> = tried.iter().map(|s| s.reason.kind()).collect();
    assert_eq!(
        kinds,
        [
            "max_unreachable",
            "not_compiled_in",
            "not_compiled_in",
            "task_not_implemented"
        ]
    );
    assert_eq!(
        tried[3].to_string(),
        "cpu skipped: task not implemented by the candle backend"
    );
    assert!(e.to_string().starts_with(
        "no backend can run model type `granite` task `causal-lm` (target mojo_max (USE_MOJO_MAX_TARGET)): mojo_max skipped: MAX unreachable"
    ), "{e}");
}

#[test]
fn missing_capability_or_task_is_typed() {
    let caps = Capabilities::fixed_cpu_only();
    let env = MapEnv::empty();
    let e = plan(
        &BERT,
        Capability::Transcribe,
        &TargetSpec::Auto,
        &env,
        &caps,
        false,
        skills::backends(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "model type `bert` has no `transcribe` capability (it has: fill_mask)"
    );
    let e = plan(
        &BERT,
        Task::Ctc,
        &TargetSpec::Auto,
        &env,
        &caps,
        false,
        skills::backends(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "model type `bert` does not list task `ctc` (it lists: masked-lm)"
    );
}

#[test]
fn table_is_deterministic_and_grouped() {
    let caps = Capabilities::fixed_cpu_only();
    let t = table(&GRANITE, &caps, skills::backends());
    assert_eq!(t, table(&GRANITE, &caps, skills::backends()));
    // MAX serves causal-lm only: two rows.
    assert_eq!(t.rows.len(), 2);
    assert_eq!(t.rows[0].tasks, ["base-model", "sequence-classification"]);
    assert_eq!(t.rows[1].tasks, ["causal-lm"]);
    assert!(
        t.rows[0].outcomes[2].starts_with("no backend: mojo_max=max_task_unsupported"),
        "{t}"
    );
    let [auto, cpu, max, use_max, strict] = &t.rows[1].outcomes;
    assert_eq!(
        auto,
        "no backend: mojo_max=max_unreachable, cuda:0=not_compiled_in, metal:0=not_compiled_in, cpu=task_not_implemented"
    );
    assert_eq!(cpu, "no backend: cpu=task_not_implemented");
    assert_eq!(max, auto);
    assert_eq!(max, use_max);
    assert_eq!(strict, "strict: mojo_max=max_unreachable");
    let served = table(
        &GRANITE,
        &Capabilities::fixed_with_max(&["GraniteForCausalLM"]),
        skills::backends(),
    );
    // MAX serves generation (causal-lm) only; the other tasks say why.
    assert_eq!(served.rows.len(), 2, "{served}");
    let causal = served
        .rows
        .iter()
        .find(|r| r.tasks == ["causal-lm"])
        .unwrap();
    assert_eq!(causal.outcomes[2], "used mojo_max");
    let other = served
        .rows
        .iter()
        .find(|r| r.tasks != ["causal-lm"])
        .unwrap();
    assert!(
        other.outcomes[2].starts_with("no backend: mojo_max=max_task_unsupported"),
        "{served}"
    );
    // The full-text form names the reason for a human.
    let env = MapEnv::from_pairs(&[
        (skillgen_runtime::env::vars::USE_MOJO_MAX_TARGET, "1"),
        (skillgen_runtime::env::vars::SKILLGEN_STRICT, "1"),
    ]);
    let r = plan(
        &GRANITE,
        Task::CausalLm,
        &TargetSpec::Default,
        &env,
        &caps,
        false,
        skills::backends(),
    );
    assert_eq!(outcome(&r), format!("error: strict: {NO_MAX}"));
    assert_eq!(outcome_code(&r), "strict: mojo_max=max_unreachable");
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(
        json["settings"][4],
        "SKILLGEN_TARGET=mojo_max SKILLGEN_STRICT=1"
    );
    assert!(t.to_string().starts_with(
        "granite\n  [base-model, sequence-classification]\n    auto: no backend: mojo_max=max_task_unsupported"
    ));
}
