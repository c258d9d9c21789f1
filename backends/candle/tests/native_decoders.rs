//! candle causal LMs (`generate`) checked against PyTorch/transformers references recorded by
//! `fixtures/make_native_fixtures.py` in `fixtures/native/<type>/reference.json`:
//! - last-position logits of one forward pass over each prompt (`logits_last`);
//! - logits at every position, fed one token at a time through candle's KV cache
//!   (`logits_full`; candle's causal LMs return only the last position);
//! - greedy tokens equal transformers' `generate(do_sample=False)` exactly, through dispatch,
//!   and the stream yields the same tokens;
//! - seeded sampling, EOS / max_tokens / context / stop-string endings, concurrency, and typed
//!   errors for broken model directories.

use std::path::{Path, PathBuf};

use serde_json::Value;
use skillgen_candle::parity::{decoder_incremental_logits, decoder_prefill_logits};
use skillgen_runtime::request::{Call, FinishReason, GenerateRequest, Generation, Output, Prompt};
use skillgen_runtime::{
    Capabilities, MapEnv, Skill, SkillError, SkillInfo, SkillState, Target, TargetSpec,
};
use skillgen_test_support::{floats, int_rows, native_fixture, read_json, tolerance};

macro_rules! decoder_skill {
    ($name:ident, $ty:literal, $class:literal, $candle:literal) => {
        #[derive(Debug, Skill)]
        #[skill(
                                                            model_type = $ty,
                                                            family = decoder,
                                                            modalities(text),
                                                            tasks(causal_lm($class)),
                                                            candle = $candle,
                                                            native(causal_lm = decoder),
                                                            backends = skillgen_candle::backends
                                                        )]
        pub struct $name {
            state: SkillState,
        }
    };
}

decoder_skill!(Llama, "llama", "LlamaForCausalLM", "llama");
decoder_skill!(Qwen2, "qwen2", "Qwen2ForCausalLM", "qwen2");
decoder_skill!(Mistral, "mistral", "MistralForCausalLM", "mistral");
decoder_skill!(Phi3, "phi3", "Phi3ForCausalLM", "phi3");
decoder_skill!(Gemma, "gemma", "GemmaForCausalLM", "gemma");
decoder_skill!(Qwen3, "qwen3", "Qwen3ForCausalLM", "qwen3");
decoder_skill!(Olmo2, "olmo2", "Olmo2ForCausalLM", "olmo2");
decoder_skill!(
    Starcoder2,
    "starcoder2",
    "Starcoder2ForCausalLM",
    "starcoder2"
);
decoder_skill!(Gemma2, "gemma2", "Gemma2ForCausalLM", "gemma2");
decoder_skill!(Olmo, "olmo", "OlmoForCausalLM", "olmo");
decoder_skill!(Phi, "phi", "PhiForCausalLM", "phi");
decoder_skill!(StableLm, "stablelm", "StableLmForCausalLM", "stable_lm");
decoder_skill!(Mixtral, "mixtral", "MixtralForCausalLM", "mixtral");
decoder_skill!(Qwen2Moe, "qwen2_moe", "Qwen2MoeForCausalLM", "qwen2_moe");
decoder_skill!(Qwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM", "qwen3_moe");
decoder_skill!(Helium, "helium", "HeliumForCausalLM", "helium");
decoder_skill!(SmolLm3, "smollm3", "SmolLM3ForCausalLM", "smol");
decoder_skill!(
    GptBigcode,
    "gpt_bigcode",
    "GPTBigCodeForCausalLM",
    "bigcode"
);

const TYPES: &[&str] = &[
    "llama",
    "qwen2",
    "mistral",
    "phi3",
    "gemma",
    "gpt_bigcode",
    "qwen3",
    "olmo2",
    "starcoder2",
    "gemma2",
    "olmo",
    "phi",
    "stablelm",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "helium",
    "smollm3",
];

fn info(model_type: &str) -> &'static SkillInfo {
    match model_type {
        "llama" => Llama::INFO,
        "qwen2" => Qwen2::INFO,
        "mistral" => Mistral::INFO,
        "phi3" => Phi3::INFO,
        "gemma" => Gemma::INFO,
        "gpt_bigcode" => GptBigcode::INFO,
        "qwen3" => Qwen3::INFO,
        "olmo2" => Olmo2::INFO,
        "starcoder2" => Starcoder2::INFO,
        "gemma2" => Gemma2::INFO,
        "olmo" => Olmo::INFO,
        "phi" => Phi::INFO,
        "stablelm" => StableLm::INFO,
        "mixtral" => Mixtral::INFO,
        "qwen2_moe" => Qwen2Moe::INFO,
        "qwen3_moe" => Qwen3Moe::INFO,
        "helium" => Helium::INFO,
        "smollm3" => SmolLm3::INFO,
        other => panic!("no test skill for {other}"),
    }
}

fn fixture_dir(model_type: &str) -> PathBuf {
    native_fixture(model_type)
}

/// Max |a - b| and whether every element is within `atol + rtol * |b|` (the manifest's
/// `decoders` tolerance).
fn compare(a: &[f32], b: &[f32]) -> (f32, bool) {
    assert_eq!(a.len(), b.len());
    let (atol, rtol) = tolerance("decoders");
    let mut max = 0f32;
    let mut ok = true;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        ok &= d <= atol + rtol * y.abs();
    }
    (max, ok && max.is_finite())
}

struct Fixture {
    prompts: Vec<Vec<u32>>,
    logits_last: Vec<Vec<f32>>,
    /// `[batch][position]` → vocab logits.
    logits_full: Vec<Vec<Vec<f32>>>,
    greedy: Vec<Vec<u32>>,
}

fn fixture(model_type: &str) -> Fixture {
    let r = read_json(&fixture_dir(model_type).join("reference.json"));
    let prompts = int_rows(&r["inputs"]["input_ids"]);
    let (shape, last) = floats(&r["outputs"]["logits_last"]);
    let logits_last = last.chunks(shape[1]).map(<[f32]>::to_vec).collect();
    let (shape, full) = floats(&r["outputs"]["logits_full"]);
    let (seq, vocab) = (shape[1], shape[2]);
    let logits_full = full
        .chunks(seq * vocab)
        .map(|b| b.chunks(vocab).map(<[f32]>::to_vec).collect())
        .collect();
    Fixture {
        prompts,
        logits_last,
        logits_full,
        greedy: int_rows(&r["outputs"]["greedy_new_tokens"]),
    }
}

fn state(model_type: &str, dir: &Path) -> SkillState {
    SkillState::load(
        info(model_type),
        skillgen_candle::backends(),
        dir,
        TargetSpec::Default,
    )
    .unwrap()
}

fn caps() -> Capabilities {
    Capabilities::fixed_cpu_only()
}

fn generate(state: &SkillState, req: GenerateRequest) -> Result<Generation, SkillError> {
    let (out, d) = state.run_with(Call::Generate(req), &MapEnv::empty(), &caps())?;
    assert_eq!(d.used, Target::Cpu);
    match out {
        Output::Generate(g) => Ok(g),
        other => panic!("{other:?}"),
    }
}

fn ids(prompt: &[u32]) -> GenerateRequest {
    GenerateRequest::new(Prompt::TokenIds(prompt.to_vec()))
}

// ---------------------------------------------------------------- parity with transformers

#[test]
fn logits_match_pytorch() {
    let mut report = Vec::new();
    let mut failed = Vec::new();
    for &t in TYPES {
        let fx = fixture(t);
        let st = state(t, &fixture_dir(t));
        let mut worst_last = 0f32;
        let mut worst_full = 0f32;
        for (b, prompt) in fx.prompts.iter().enumerate() {
            let last = decoder_prefill_logits(&st, Target::Cpu, prompt).unwrap();
            let (m, ok) = compare(&last, &fx.logits_last[b]);
            worst_last = worst_last.max(m);
            if !ok {
                failed.push(format!("{t} logits_last row {b}: max abs {m}"));
            }
            let full = decoder_incremental_logits(&st, Target::Cpu, prompt).unwrap();
            assert_eq!(full.len(), prompt.len());
            for (p, (got, want)) in full.iter().zip(&fx.logits_full[b]).enumerate() {
                let (m, ok) = compare(got, want);
                worst_full = worst_full.max(m);
                if !ok {
                    failed.push(format!("{t} logits_full row {b} pos {p}: max abs {m}"));
                }
            }
        }
        report.push(format!(
            "{t}: logits_last max abs {worst_last:.3e}, logits_full (KV cache) max abs {worst_full:.3e}"
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn greedy_tokens_match_pytorch_and_stream_agrees() {
    for &t in TYPES {
        let fx = fixture(t);
        let st = state(t, &fixture_dir(t));
        for (b, prompt) in fx.prompts.iter().enumerate() {
            let want = &fx.greedy[b];
            let g = generate(&st, ids(prompt).max_tokens(want.len())).unwrap();
            assert_eq!(&g.token_ids, want, "{t} prompt {b}");
            assert_eq!(g.finish_reason, FinishReason::Length, "{t}");

            let stream = st
                .generate_stream_with(
                    ids(prompt).max_tokens(want.len()),
                    &MapEnv::empty(),
                    &caps(),
                )
                .unwrap();
            assert_eq!(stream.dispatch().unwrap().used, Target::Cpu);
            let items: Vec<_> = stream.map(Result::unwrap).collect();
            let streamed: Vec<u32> = items.iter().map(|i| i.token_id).collect();
            assert_eq!(&streamed, want, "{t} stream {b}");
            let finishes: Vec<_> = items.iter().map(|i| i.finish_reason).collect();
            assert!(finishes[..finishes.len() - 1].iter().all(Option::is_none));
            assert_eq!(finishes.last(), Some(&Some(FinishReason::Length)));
        }
    }
}

// ---------------------------------------------------------------- sampling and endings

#[test]
fn seeded_sampling_is_reproducible_and_seed_sensitive() {
    let st = state("llama", &fixture_dir("llama"));
    let prompt = &fixture("llama").prompts[0];
    let sample = |seed: u64, k: Option<usize>, p: Option<f32>| {
        let mut r = ids(prompt).max_tokens(16).temperature(1.5).seed(seed);
        r.top_k = k;
        r.top_p = p;
        generate(&st, r).unwrap().token_ids
    };
    for (k, p) in [
        (None, None),
        (Some(20), None),
        (None, Some(0.9)),
        (Some(50), Some(0.95)),
    ] {
        let a = sample(7, k, p);
        // 16 tokens unless the EOS id (2, generation_config.json) was sampled.
        assert!(a.len() == 16 || a.last() == Some(&2), "{a:?}");
        assert_eq!(a, sample(7, k, p), "same seed, top_k {k:?}, top_p {p:?}");
        let others: Vec<_> = (8..12).map(|s| sample(s, k, p)).collect();
        assert!(
            others.iter().any(|o| *o != a),
            "4 other seeds all gave {a:?} (top_k {k:?}, top_p {p:?})"
        );
    }
    // top_k = 1 is greedy whatever the temperature and seed.
    let greedy = generate(&st, ids(prompt).max_tokens(8)).unwrap().token_ids;
    assert_eq!(greedy, fixture("llama").greedy[0]);
    for seed in 0..3 {
        let r = ids(prompt)
            .max_tokens(8)
            .temperature(2.0)
            .top_k(1)
            .seed(seed);
        assert_eq!(generate(&st, r).unwrap().token_ids, greedy);
    }
    // A stream with a seed gives the same tokens as generate with that seed.
    let r = ids(prompt).max_tokens(16).temperature(1.5).seed(3);
    let streamed: Vec<u32> = st
        .generate_stream_with(r.clone(), &MapEnv::empty(), &caps())
        .unwrap()
        .map(|t| t.unwrap().token_id)
        .collect();
    assert_eq!(streamed, generate(&st, r).unwrap().token_ids);
}

fn copy_fixture(model_type: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir(model_type)).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    tmp
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let mut v = if path.is_file() {
        read_json(path)
    } else {
        Value::Object(Default::default())
    };
    f(v.as_object_mut().unwrap());
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn eos_from_generation_config_ends_generation() {
    for &t in TYPES {
        let fx = fixture(t);
        let greedy = &fx.greedy[0];
        // The first greedy token not seen before it: generation must stop right there.
        let Some(i) = (1..greedy.len()).find(|&i| !greedy[..i].contains(&greedy[i])) else {
            continue;
        };
        let tmp = copy_fixture(t);
        // A list, as many configs write it; the other id never comes up.
        let other = (0..255u32).find(|x| !greedy.contains(x)).unwrap();
        edit_json(&tmp.path().join("generation_config.json"), |m| {
            m.insert("eos_token_id".into(), serde_json::json!([other, greedy[i]]));
        });
        let st = state(t, tmp.path());
        let g = generate(&st, ids(&fx.prompts[0]).max_tokens(8)).unwrap();
        assert_eq!(g.token_ids, greedy[..=i], "{t}");
        assert_eq!(g.finish_reason, FinishReason::Eos, "{t}");
        // Without generation_config.json, config.json's eos_token_id (an int) is used.
        std::fs::remove_file(tmp.path().join("generation_config.json")).unwrap();
        edit_json(&tmp.path().join("config.json"), |m| {
            m.insert("eos_token_id".into(), serde_json::json!(greedy[i]));
        });
        let g = generate(&state(t, tmp.path()), ids(&fx.prompts[0]).max_tokens(8)).unwrap();
        assert_eq!(
            (g.token_ids.len(), g.finish_reason),
            (i + 1, FinishReason::Eos)
        );
    }
}

#[test]
fn max_tokens_and_context_limit_end_with_length() {
    let fx = fixture("llama");
    let st = state("llama", &fixture_dir("llama"));
    let prompt = &fx.prompts[0];
    let g = generate(&st, ids(prompt).max_tokens(3)).unwrap();
    assert_eq!(g.token_ids, fx.greedy[0][..3]);
    assert_eq!(g.finish_reason, FinishReason::Length);
    // max_position_embeddings = 64: the last token fits position 64 - 1.
    let max_pos = read_json(&fixture_dir("llama").join("config.json"))["max_position_embeddings"]
        .as_u64()
        .unwrap() as usize;
    let g = generate(&st, ids(prompt).max_tokens(1000)).unwrap();
    assert_eq!(g.token_ids.len(), max_pos - prompt.len() + 1);
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(g.token_ids[..8], fx.greedy[0]);
    // A prompt that fills the context is refused.
    let long = vec![5u32; max_pos];
    let e = generate(&st, ids(&long)).unwrap_err();
    assert!(matches!(e, SkillError::InvalidRequest { .. }), "{e}");
    let e = generate(&st, ids(&[1, 256])).unwrap_err();
    assert!(
        e.to_string().contains("outside the vocabulary (size 256)"),
        "{e}"
    );
}

#[test]
fn concurrent_streams_do_not_share_a_kv_cache() {
    let fx = fixture("qwen2");
    let st = state("qwen2", &fixture_dir("qwen2"));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let st = st.clone();
                let fx = &fx;
                s.spawn(move || {
                    let b = i % 2;
                    let g = generate(&st, ids(&fx.prompts[b]).max_tokens(8)).unwrap();
                    assert_eq!(g.token_ids, fx.greedy[b], "thread {i}");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    // Two interleaved streams on one thread.
    let mut a = st
        .generate_stream_with(ids(&fx.prompts[0]).max_tokens(8), &MapEnv::empty(), &caps())
        .unwrap();
    let mut b = st
        .generate_stream_with(ids(&fx.prompts[1]).max_tokens(8), &MapEnv::empty(), &caps())
        .unwrap();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        ta.push(a.next().unwrap().unwrap().token_id);
        tb.push(b.next().unwrap().unwrap().token_id);
    }
    assert!(a.next().is_none() && b.next().is_none());
    assert_eq!((ta, tb), (fx.greedy[0].clone(), fx.greedy[1].clone()));
}

// ---------------------------------------------------------------- typed errors

fn load_err(model_type: &str, dir: &Path) -> SkillError {
    decoder_prefill_logits(&state(model_type, dir), Target::Cpu, &[1, 2, 3]).unwrap_err()
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    for (t, gone) in [
        ("llama", "model.layers.1.mlp.down_proj.weight"),
        ("gemma", "model.norm.weight"),
        ("gpt_bigcode", "transformer.h.0.attn.c_attn.bias"),
        ("phi3", "model.layers.0.self_attn.qkv_proj.weight"),
    ] {
        let tmp = copy_fixture(t);
        let path = tmp.path().join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<_> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| n != gone)
            .collect();
        assert_eq!(kept.len() + 1, st.len(), "{t}: {gone}");
        std::fs::write(&path, safetensors::serialize(kept, None).unwrap()).unwrap();
        match load_err(t, tmp.path()) {
            SkillError::TensorMissing { tensor, path: p } => {
                assert_eq!((tensor.as_str(), p), (gone, path.clone()), "{t}")
            }
            e => panic!("{t}: {e}"),
        }
    }
    // A config that disagrees with the tensors: the shape error names the tensor.
    let tmp = copy_fixture("mistral");
    edit_json(&tmp.path().join("config.json"), |m| {
        m.insert("intermediate_size".into(), 48.into());
    });
    match load_err("mistral", tmp.path()) {
        SkillError::TensorInvalid { tensor, detail, .. } => {
            assert_eq!(tensor, "model.layers.0.mlp.gate_proj.weight");
            assert!(
                detail.contains("[64, 32]") && detail.contains("[48, 32]"),
                "{detail}"
            );
        }
        e => panic!("{e}"),
    }
}

#[test]
fn truncated_corrupt_and_missing_weights_are_typed() {
    let tmp = copy_fixture("qwen2");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for (what, cut) in [
        ("truncated data", bytes[..bytes.len() - 100].to_vec()),
        ("truncated header", bytes[..20].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"not a safetensors file at all".to_vec()),
    ] {
        std::fs::write(&path, &cut).unwrap();
        match load_err("qwen2", tmp.path()) {
            SkillError::WeightsInvalid { path: p, detail } => {
                assert_eq!(p, path, "{what}");
                assert!(!detail.is_empty());
            }
            e => panic!("{what}: {e}"),
        }
    }
    std::fs::remove_file(&path).unwrap();
    match load_err("qwen2", tmp.path()) {
        SkillError::ModelFileMissing { path: p, .. } => assert_eq!(p, path),
        e => panic!("{e}"),
    }
}

#[test]
fn sharded_weights_load_and_match() {
    let fx = fixture("llama");
    let tmp = copy_fixture("llama");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let all = st.tensors();
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().partition(|(n, _)| n.contains("layers.0."));
    let mut map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        for (n, _) in &part {
            map.insert(n.clone(), file.into());
        }
        std::fs::write(
            tmp.path().join(file),
            safetensors::serialize(part, None).unwrap(),
        )
        .unwrap();
    }
    std::fs::remove_file(&path).unwrap();
    let index = tmp.path().join("model.safetensors.index.json");
    std::fs::write(
        &index,
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let s = state("llama", tmp.path());
    let last = decoder_prefill_logits(&s, Target::Cpu, &fx.prompts[0]).unwrap();
    assert!(compare(&last, &fx.logits_last[0]).1);
    // A shard named by the index but absent.
    let tmp2 = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
    ] {
        std::fs::copy(tmp.path().join(f), tmp2.path().join(f)).unwrap();
    }
    match load_err("llama", tmp2.path()) {
        SkillError::ModelFileMissing { path, .. } => {
            assert_eq!(path, tmp2.path().join("model-00002-of-00002.safetensors"))
        }
        e => panic!("{e}"),
    }
}

#[test]
fn bad_configs_are_typed_and_rope_theta_is_never_defaulted() {
    // v5 rope_parameters without rope_theta: an error, not candle's 10000.
    for &t in &["llama", "qwen2", "mistral", "phi3", "gemma"] {
        let tmp = copy_fixture(t);
        edit_json(&tmp.path().join("config.json"), |m| {
            m.insert(
                "rope_parameters".into(),
                serde_json::json!({"rope_type": "default"}),
            );
        });
        match load_err(t, tmp.path()) {
            SkillError::ConfigField { field, .. } => {
                assert_eq!(field, "rope_parameters.rope_theta", "{t}")
            }
            e => panic!("{t}: {e}"),
        }
    }
    // v4-style top-level rope_theta works too and changes the logits when changed.
    let fx = fixture("llama");
    let tmp = copy_fixture("llama");
    edit_json(&tmp.path().join("config.json"), |m| {
        let theta = m.remove("rope_parameters").unwrap()["rope_theta"].clone();
        m.insert("rope_theta".into(), theta);
    });
    let last =
        decoder_prefill_logits(&state("llama", tmp.path()), Target::Cpu, &fx.prompts[0]).unwrap();
    assert!(compare(&last, &fx.logits_last[0]).1);
    edit_json(&tmp.path().join("config.json"), |m| {
        m.insert("rope_theta".into(), 10000.0.into());
    });
    let last =
        decoder_prefill_logits(&state("llama", tmp.path()), Target::Cpu, &fx.prompts[0]).unwrap();
    assert!(
        !compare(&last, &fx.logits_last[0]).1,
        "a wrong rope_theta must be visible"
    );

    for (t, field, value) in [
        (
            "llama",
            "rope_parameters",
            serde_json::json!({"rope_theta": 1e4, "rope_type": "yarn", "factor": 2.0}),
        ),
        ("qwen2", "hidden_act", serde_json::json!("nonsense")),
        ("gemma", "head_dim", serde_json::json!("eight")),
        ("gpt_bigcode", "n_embd", serde_json::Value::Null),
        ("phi3", "num_key_value_heads", serde_json::json!(3)),
        (
            "mistral",
            "layer_types",
            serde_json::json!(["full_attention", "linear_attention"]),
        ),
        (
            "gpt_bigcode",
            "scale_attn_by_inverse_layer_idx",
            serde_json::json!(true),
        ),
        ("stablelm", "qk_layernorm", serde_json::json!(true)),
    ] {
        let tmp = copy_fixture(t);
        edit_json(&tmp.path().join("config.json"), |m| {
            m.insert(field.into(), value.clone());
        });
        match load_err(t, tmp.path()) {
            SkillError::ConfigField {
                field: f,
                path,
                detail,
            } => {
                assert!(f.starts_with(field), "{t}: {f} vs {field}: {detail}");
                assert_eq!(path, tmp.path().join("config.json"));
            }
            e => panic!("{t} {field}: {e}"),
        }
    }
    // eos_token_id of the wrong type.
    let tmp = copy_fixture("llama");
    edit_json(&tmp.path().join("generation_config.json"), |m| {
        m.insert("eos_token_id".into(), serde_json::json!("two"));
    });
    match load_err("llama", tmp.path()) {
        SkillError::ConfigField { field, .. } => assert_eq!(field, "eos_token_id"),
        e => panic!("{e}"),
    }
}

#[test]
fn text_prompts_and_stop_strings_need_a_tokenizer() {
    let tmp = copy_fixture("llama");
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let st = state("llama", tmp.path());
    for req in [GenerateRequest::from("hello"), ids(&[1, 2]).stop("x")] {
        match generate(&st, req).unwrap_err() {
            SkillError::ModelFileMissing { path, .. } => {
                assert_eq!(path, tmp.path().join("tokenizer.json"))
            }
            e => panic!("{e}"),
        }
    }
    // Token ids work without it (and give no text).
    let g = generate(&st, ids(&[1, 2]).max_tokens(2)).unwrap();
    assert_eq!((g.token_ids.len(), g.text.as_str()), (2, ""));
}

struct TextRef {
    prompt_text: String,
    prompt_ids: Vec<u32>,
    greedy_text: Vec<String>,
}

fn text_ref(model_type: &str) -> TextRef {
    let r = read_json(&fixture_dir(model_type).join("reference.json"));
    let t = &r["text"];
    TextRef {
        prompt_text: t["prompt_text"].as_str().unwrap().to_owned(),
        prompt_ids: serde_json::from_value(t["prompt_ids"].clone()).unwrap(),
        greedy_text: serde_json::from_value(t["greedy_text"].clone()).unwrap(),
    }
}

/// Generate `req` by streaming: (concatenated text, token ids, finish reason of the last item).
fn streamed(st: &SkillState, req: GenerateRequest) -> (String, Vec<u32>, Option<FinishReason>) {
    let items: Vec<_> = st
        .generate_stream_with(req, &MapEnv::empty(), &caps())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (
        items.iter().map(|i| i.text.as_str()).collect(),
        items.iter().map(|i| i.token_id).collect(),
        items.last().and_then(|i| i.finish_reason),
    )
}

#[test]
fn text_matches_python_tokenizers() {
    for &t in TYPES {
        let fx = fixture(t);
        let tr = text_ref(t);
        let st = state(t, &fixture_dir(t));
        // Encoding: a text prompt behaves as the ids Python's tokenizer gave for it.
        let from_text = generate(
            &st,
            GenerateRequest::from(tr.prompt_text.as_str()).max_tokens(8),
        )
        .unwrap();
        let from_ids = generate(&st, ids(&tr.prompt_ids).max_tokens(8)).unwrap();
        assert_eq!(from_text, from_ids, "{t}");
        // Decoding: greedy text equals Python's decode of the greedy tokens, streamed or not.
        for (b, prompt) in fx.prompts.iter().enumerate() {
            let g = generate(&st, ids(prompt).max_tokens(8)).unwrap();
            assert_eq!(g.text, tr.greedy_text[b], "{t} prompt {b}");
            let (text, toks, finish) = streamed(&st, ids(prompt).max_tokens(8));
            assert_eq!(
                (text, toks, finish),
                (g.text, g.token_ids, Some(g.finish_reason))
            );
        }
    }
}

#[test]
fn stop_strings_cut_the_text() {
    let mut checked = 0;
    for &t in TYPES {
        let fx = fixture(t);
        let tr = text_ref(t);
        let st = state(t, &fixture_dir(t));
        for (b, prompt) in fx.prompts.iter().enumerate() {
            let full = &tr.greedy_text[b];
            let chars: Vec<(usize, char)> = full.char_indices().collect();
            // Stops of one and two characters (possibly spanning tokens), never U+FFFD.
            let mut stops: Vec<String> = Vec::new();
            for w in chars.windows(2) {
                let (i, c) = w[0];
                if c != '\u{FFFD}' {
                    stops.push(c.to_string());
                    if w[1].1 != '\u{FFFD}' {
                        stops.push(full[i..w[1].0 + w[1].1.len_utf8()].to_owned());
                    }
                }
            }
            for stop in stops {
                let at = full.find(&stop).unwrap();
                let req = ids(prompt).max_tokens(8).stop(stop.clone());
                let g = generate(&st, req.clone()).unwrap();
                assert_eq!(g.text, full[..at], "{t} prompt {b} stop {stop:?}");
                assert_eq!(g.finish_reason, FinishReason::Stop, "{t} stop {stop:?}");
                assert!(g.token_ids.len() <= 8);
                assert_eq!(g.token_ids[..], fx.greedy[b][..g.token_ids.len()]);
                let (text, toks, finish) = streamed(&st, req);
                assert_eq!(
                    (text, toks, finish),
                    (g.text, g.token_ids, Some(FinishReason::Stop))
                );
                checked += 1;
            }
            // A stop string that starts to match but never completes: nothing is lost.
            if let Some(&(_, c)) = chars.iter().rev().nth(1) {
                let never = format!("{c}\u{0}never");
                let (text, toks, finish) = streamed(&st, ids(prompt).max_tokens(8).stop(never));
                assert_eq!(
                    (text.as_str(), toks.len(), finish),
                    (full.as_str(), 8, Some(FinishReason::Length))
                );
            }
        }
    }
    assert!(checked >= 12, "only {checked} stop strings checked");
}

/// Remove `name` from the fixture copy's safetensors.
fn drop_tensor(dir: &Path, name: &str) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != name)
        .collect();
    assert_eq!(kept.len() + 1, st.len(), "{name}");
    std::fs::write(&path, safetensors::serialize(kept, None).unwrap()).unwrap();
}

#[test]
fn tied_lm_head_absent_from_the_file_uses_the_embeddings() {
    for t in ["llama", "mistral", "qwen2", "phi3", "qwen3", "olmo2"] {
        let tmp = copy_fixture(t);
        drop_tensor(tmp.path(), "lm_head.weight");
        // Untied and absent: the missing tensor is named.
        match load_err(t, tmp.path()) {
            SkillError::TensorMissing { tensor, .. } => assert_eq!(tensor, "lm_head.weight"),
            e => panic!("{t}: {e}"),
        }
        edit_json(&tmp.path().join("config.json"), |m| {
            m.insert("tie_word_embeddings".into(), true.into());
        });
        let s = state(t, tmp.path());
        // Logits = final hidden state · embeddingsᵀ: finite, full vocabulary, and different
        // from the untied reference.
        let fx = fixture(t);
        let last = decoder_prefill_logits(&s, Target::Cpu, &fx.prompts[0]).unwrap();
        assert_eq!(last.len(), 256, "{t}");
        assert!(last.iter().all(|x| x.is_finite()), "{t}");
        assert!(!compare(&last, &fx.logits_last[0]).1, "{t}");
        let g = generate(&s, ids(&fx.prompts[0]).max_tokens(3)).unwrap();
        assert_eq!(g.token_ids.len(), 3, "{t}");
    }
    // Tied in the config but a separate lm_head in the file: ambiguous, refused.
    let tmp = copy_fixture("qwen2");
    edit_json(&tmp.path().join("config.json"), |m| {
        m.insert("tie_word_embeddings".into(), true.into());
    });
    match load_err("qwen2", tmp.path()) {
        SkillError::ConfigField { field, .. } => assert_eq!(field, "tie_word_embeddings"),
        e => panic!("{e}"),
    }
}

/// A tensor the translation does not use (here: a q/k norm the llama config does not ask for)
/// means the checkpoint has a part the decoder would not compute: refused, never run without it.
#[test]
fn unused_tensors_are_refused() {
    let tmp = copy_fixture("llama");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let extra = [1f32; 8];
    let extra_bytes: Vec<u8> = extra.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8], &extra_bytes)
        .unwrap();
    let mut all = st.tensors();
    all.push(("model.layers.0.self_attn.q_norm.weight".to_owned(), view));
    std::fs::write(&path, safetensors::serialize(all, None).unwrap()).unwrap();
    match load_err("llama", tmp.path()) {
        SkillError::TensorInvalid { tensor, detail, .. } => {
            assert_eq!(tensor, "model.layers.0.self_attn.q_norm.weight");
            assert!(detail.contains("not used"), "{detail}");
        }
        e => panic!("{e}"),
    }
}
