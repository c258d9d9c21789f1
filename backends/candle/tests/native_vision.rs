//! candle ViT image classification against the PyTorch reference in
//! `fixtures/native/vit/reference.json` (pixel_values → logits, tolerance from
//! `fixtures/native/manifest.json`), the `classify_image` path through dispatch on an encoded
//! PNG, and typed errors.

use std::path::PathBuf;

use serde_json::Value;
use skillgen_candle::parity::{VitClassifier, vit_logits};
use skillgen_runtime::request::{Call, ClassifyImageRequest, ImageInput, Output};
use skillgen_runtime::{Capabilities, MapEnv, Skill, SkillError, SkillState, Target, TargetSpec};
use skillgen_test_support::{floats, native_fixture, read_json, tolerance};

#[derive(Debug, Skill)]
#[skill(
    model_type = "vit",
    family = vision,
    modalities(image),
    tasks(
        base_model("ViTModel"),
        image_classification("ViTForImageClassification")
    ),
    candle = "vit",
    native(image_classification = vit),
    backends = skillgen_candle::backends
)]
pub struct Vit {
    state: SkillState,
}

fn dir() -> PathBuf {
    native_fixture("vit")
}

#[test]
fn vit_logits_match_pytorch() {
    let (atol, rtol) = tolerance("default");
    let r = read_json(&dir().join("reference.json"));
    let (pshape, pixels) = floats(&r["inputs"]["pixel_values"]);
    let (lshape, want) = floats(&r["outputs"]["logits"]);
    let shape: [usize; 4] = pshape.try_into().unwrap();
    let (got, gshape) = vit_logits(&dir(), &pixels, shape).unwrap();
    assert_eq!(gshape, lshape);
    let mut max_err = 0f32;
    for (g, w) in got.iter().zip(&want) {
        let err = (g - w).abs();
        assert!(err <= atol + rtol * w.abs(), "|{g} - {w}| = {err}");
        max_err = max_err.max(err);
    }
    eprintln!(
        "vit logits: max |candle - torch| = {max_err:e} over {} values",
        got.len()
    );
    assert_eq!(got.len(), 10);
}

#[test]
fn wrong_pixel_shape_is_a_typed_error() {
    let model = VitClassifier::load(&dir(), "vit", &candle_core::Device::Cpu).unwrap();
    let e = model.logits(&[0.0; 3 * 8 * 8], [1, 3, 8, 8]).unwrap_err();
    assert!(matches!(e, SkillError::InvalidRequest { .. }), "{e}");
    let e = model.logits(&[0.0; 5], [1, 3, 16, 16]).unwrap_err();
    assert!(matches!(e, SkillError::InvalidRequest { .. }), "{e}");
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 16) as u8, (y * 16) as u8, ((x + y) * 8) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn classify_image_runs_through_dispatch() {
    let state = SkillState::load(
        Vit::INFO,
        Vit::backends(),
        dir(),
        TargetSpec::Exact(Target::Cpu),
    )
    .unwrap();
    let caps = Capabilities::fixed_cpu_only();
    let bytes = png(16, 16);
    let (out, d) = state
        .run_with(
            Call::ClassifyImage(ClassifyImageRequest {
                image: ImageInput::Encoded(bytes.clone()),
                top_k: 0,
            }),
            &MapEnv::empty(),
            &caps,
        )
        .unwrap();
    assert_eq!(d.used, Target::Cpu);
    let Output::ClassifyImage(out) = out else {
        panic!("wrong output")
    };
    assert_eq!(out.labels.len(), 5);
    let total: f32 = out.labels.iter().map(|l| l.score).sum();
    assert!((total - 1.0).abs() < 1e-5);
    assert!(out.labels.windows(2).all(|w| w[0].score >= w[1].score));
    // Without preprocessor_config.json: ViTImageProcessor defaults (x/255 - 0.5)/0.5; a 16x16
    // image needs no resize, so the pixel values are known exactly.
    let model = VitClassifier::load(&dir(), "vit", &candle_core::Device::Cpu).unwrap();
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    let mut pixels = vec![0f32; 3 * 16 * 16];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            pixels[(c * 16 + y as usize) * 16 + x as usize] =
                (f32::from(p.0[c]) / 255.0 - 0.5) / 0.5;
        }
    }
    let got = model.preprocess(&ImageInput::Encoded(bytes)).unwrap();
    assert_eq!(got.len(), pixels.len());
    assert!(got.iter().zip(&pixels).all(|(g, w)| (g - w).abs() <= 1e-6));
    // A larger image is resized; garbage bytes are a typed error.
    let big = model
        .classify(&ImageInput::Encoded(png(40, 24)), 2)
        .unwrap();
    assert_eq!(big.labels.len(), 2);
    let e = model
        .classify(&ImageInput::Encoded(b"not an image".to_vec()), 1)
        .unwrap_err();
    assert!(matches!(e, SkillError::InvalidRequest { .. }), "{e}");
}

#[test]
fn broken_vit_checkpoints_are_typed() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(dir().join(name), tmp.path().join(name)).unwrap();
    }
    let w = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 100]).unwrap();
    let e = VitClassifier::load(tmp.path(), "vit", &candle_core::Device::Cpu).unwrap_err();
    assert!(matches!(e, SkillError::WeightsInvalid { .. }), "{e}");
    std::fs::write(&w, &bytes).unwrap();
    let cfg = tmp.path().join("config.json");
    let mut c: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c.insert("patch_size".into(), 8.into());
    std::fs::write(&cfg, Value::Object(c.clone()).to_string()).unwrap();
    match VitClassifier::load(tmp.path(), "vit", &candle_core::Device::Cpu).unwrap_err() {
        SkillError::TensorInvalid { tensor, .. } => {
            assert_eq!(tensor, "vit.embeddings.patch_embeddings.projection.weight")
        }
        e => panic!("{e}"),
    }
    c.insert("patch_size".into(), 5.into());
    std::fs::write(&cfg, Value::Object(c.clone()).to_string()).unwrap();
    match VitClassifier::load(tmp.path(), "vit", &candle_core::Device::Cpu).unwrap_err() {
        SkillError::ConfigField { field, .. } => assert_eq!(field, "patch_size"),
        e => panic!("{e}"),
    }
    c.insert("patch_size".into(), 4.into());
    c.remove("id2label");
    std::fs::write(&cfg, Value::Object(c).to_string()).unwrap();
    match VitClassifier::load(tmp.path(), "vit", &candle_core::Device::Cpu).unwrap_err() {
        SkillError::ConfigField { field, .. } => assert_eq!(field, "id2label"),
        e => panic!("{e}"),
    }
}
