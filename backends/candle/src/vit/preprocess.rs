//! ViTImageProcessor settings (`preprocessor_config.json`): resize, rescale, normalise.

use std::path::Path;

use serde_json::Value;

use skillgen_checkpoint::{Fields, read_json};
use skillgen_runtime::request::ImageInput;
use skillgen_runtime::{Capability, SkillError};

/// Resampling filter of the preprocessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resample {
    Nearest,
    Bilinear,
    Bicubic,
}

/// ViTImageProcessor settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Preprocess {
    pub(crate) resize: Option<(u32, u32)>,
    pub(crate) resample: Resample,
    pub(crate) rescale: Option<f32>,
    pub(crate) normalize: Option<([f32; 3], [f32; 3])>,
}

fn three(f: &Fields<'_>, field: &str, default: f32) -> Result<[f32; 3], SkillError> {
    match f.get(field) {
        None => Ok([default; 3]),
        Some(Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN) as f32;
            Ok([x; 3])
        }
        Some(Value::Array(a)) if a.len() == 3 => {
            let mut out = [0f32; 3];
            for (o, v) in out.iter_mut().zip(a) {
                *o = v
                    .as_f64()
                    .ok_or_else(|| f.err(field, format!("expected numbers, found {v}")))?
                    as f32;
            }
            Ok(out)
        }
        Some(v) => Err(f.err(field, format!("expected 3 numbers, found {v}"))),
    }
}

fn bool_or(f: &Fields<'_>, field: &str, default: bool) -> Result<bool, SkillError> {
    match f.get(field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(f.err(field, format!("expected a boolean, found {v}"))),
    }
}

impl Preprocess {
    pub(crate) fn read(dir: &Path, image_size: usize) -> Result<Self, SkillError> {
        let path = dir.join("preprocessor_config.json");
        let side = u32::try_from(image_size).unwrap_or(u32::MAX);
        if !path.is_file() {
            return Ok(Self {
                resize: Some((side, side)),
                resample: Resample::Bilinear,
                rescale: Some(1.0 / 255.0),
                normalize: Some(([0.5; 3], [0.5; 3])),
            });
        }
        let map = read_json(&path)?;
        let f = Fields {
            path: &path,
            map: &map,
        };
        let resize = if bool_or(&f, "do_resize", true)? {
            let (h, w) = match f.get("size") {
                None => (side, side),
                Some(Value::Number(n)) => {
                    let s = n
                        .as_u64()
                        .and_then(|s| u32::try_from(s).ok())
                        .ok_or_else(|| f.err("size", "expected a positive integer"))?;
                    (s, s)
                }
                Some(Value::Object(o)) => {
                    let g = |k: &str| {
                        o.get(k)
                            .and_then(Value::as_u64)
                            .and_then(|s| u32::try_from(s).ok())
                    };
                    match (g("height"), g("width")) {
                        (Some(h), Some(w)) => (h, w),
                        _ => {
                            return Err(f.err(
                                "size",
                                "only {height, width} sizes are supported (ViTImageProcessor)",
                            ));
                        }
                    }
                }
                Some(v) => return Err(f.err("size", format!("unsupported value {v}"))),
            };
            if h == 0 || w == 0 {
                return Err(f.err("size", "must be positive"));
            }
            Some((h, w))
        } else {
            None
        };
        let resample = match f.usize_opt("resample")? {
            None | Some(2) => Resample::Bilinear,
            Some(0) => Resample::Nearest,
            Some(3) => Resample::Bicubic,
            Some(other) => {
                return Err(f.err(
                    "resample",
                    format!("PIL filter {other} is not supported (0, 2, 3)"),
                ));
            }
        };
        let rescale = if bool_or(&f, "do_rescale", true)? {
            Some(match f.get("rescale_factor") {
                None => 1.0 / 255.0,
                Some(_) => f.f64("rescale_factor")? as f32,
            })
        } else {
            None
        };
        let normalize = if bool_or(&f, "do_normalize", true)? {
            Some((three(&f, "image_mean", 0.5)?, three(&f, "image_std", 0.5)?))
        } else {
            None
        };
        if let Some((_, std)) = normalize
            && std.iter().any(|s| *s == 0.0 || !s.is_finite())
        {
            return Err(f.err("image_std", "must be finite and non-zero"));
        }
        Ok(Self {
            resize,
            resample,
            rescale,
            normalize,
        })
    }
}

impl Preprocess {
    /// Decode `image` and preprocess it into `[3, side, side]` pixel values (row-major).
    pub(crate) fn pixels(&self, image: &ImageInput, side: usize) -> Result<Vec<f32>, SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::ClassifyImage,
            detail,
        };
        let img = match image {
            ImageInput::Path(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|err| invalid(format!("reading image {}: {err}", p.display())))?;
                image::load_from_memory(&bytes)
                    .map_err(|err| invalid(format!("decoding image {}: {err}", p.display())))?
            }
            ImageInput::Encoded(bytes) => image::load_from_memory(bytes)
                .map_err(|err| invalid(format!("decoding image bytes: {err}")))?,
        };
        let rgb = img.to_rgb8();
        let (h, w) = self.resize.unwrap_or((rgb.height(), rgb.width()));
        let side = u32::try_from(side).unwrap_or(u32::MAX);
        if (h, w) != (side, side) {
            return Err(invalid(format!(
                "preprocessing yields {h}x{w} images, the model takes {side}x{side}"
            )));
        }
        let rgb = if self.resize.is_some() && (rgb.height(), rgb.width()) != (h, w) {
            let filter = match self.resample {
                Resample::Nearest => image::imageops::FilterType::Nearest,
                Resample::Bilinear => image::imageops::FilterType::Triangle,
                Resample::Bicubic => image::imageops::FilterType::CatmullRom,
            };
            image::imageops::resize(&rgb, w, h, filter)
        } else {
            rgb
        };
        let (hw, wu) = (h as usize, w as usize);
        let mut out = vec![0f32; 3 * hw * wu];
        for (x, y, px) in rgb.enumerate_pixels() {
            for c in 0..3 {
                let mut v = f32::from(px.0[c]);
                if let Some(s) = self.rescale {
                    v *= s;
                }
                if let Some((mean, std)) = self.normalize {
                    v = (v - mean[c]) / std[c];
                }
                if let Some(slot) = out.get_mut((c * hw + y as usize) * wu + x as usize) {
                    *slot = v;
                }
            }
        }
        Ok(out)
    }
}
