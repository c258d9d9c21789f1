//! ViTImageProcessor settings (`preprocessor_config.json`): resize, rescale, normalise — and
//! Siglip2ImageProcessor's NaFlex resize to a patch grid (`patch_size`, `max_num_patches`).

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
    /// NaFlex (`Siglip2ImageProcessor`): `(patch_size, max_num_patches)`.
    pub(crate) naflex: Option<(usize, usize)>,
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
                naflex: None,
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
        let naflex = match f.usize_opt("max_num_patches")? {
            Some(0) => return Err(f.err("max_num_patches", "must be positive")),
            Some(max) => match f.usize_opt("patch_size")? {
                Some(p) if p > 0 => Some((p, max)),
                _ => return Err(f.err("patch_size", "missing or zero (with max_num_patches)")),
            },
            None => None,
        };
        Ok(Self {
            resize,
            resample,
            rescale,
            normalize,
            naflex,
        })
    }
}

/// Siglip2ImageProcessor's target size of an `h × w` image: the largest scale whose
/// patch-rounded size has at most `max` patches (its bisection, step for step).
pub(crate) fn naflex_size(h: u32, w: u32, patch: usize, max: usize) -> (usize, usize) {
    let scaled = |scale: f64, size: u32| -> usize {
        let s = f64::from(size) * scale;
        let s = (s / patch as f64).ceil() as usize * patch;
        s.max(patch)
    };
    let (mut lo, mut hi) = (1e-5 / 10.0, 100.0);
    while hi - lo >= 1e-5 {
        let scale = (lo + hi) / 2.0;
        let n = (scaled(scale, h) / patch) * (scaled(scale, w) / patch);
        if n <= max {
            lo = scale;
        } else {
            hi = scale;
        }
    }
    (scaled(lo, h), scaled(lo, w))
}

impl Preprocess {
    /// NaFlex: decode `image`, resize it to its patch grid and cut it into patch rows
    /// (`(y, x, channel)` within a patch, patches row-major). Returns the rows and the grid.
    pub(crate) fn patch_rows(
        &self,
        image: &ImageInput,
    ) -> Result<(Vec<f32>, (usize, usize)), SkillError> {
        let Some((patch, max)) = self.naflex else {
            return Err(SkillError::InvalidRequest {
                capability: Capability::ImageTextSimilarity,
                detail: "the preprocessor has no max_num_patches (not a NaFlex processor)".into(),
            });
        };
        let rgb = decode(image)?;
        let (h, w) = naflex_size(rgb.height(), rgb.width(), patch, max);
        let chw = self.values(rgb, (h as u32, w as u32));
        let (gh, gw) = (h / patch, w / patch);
        let mut rows = Vec::with_capacity(chw.len());
        for py in 0..gh {
            for px in 0..gw {
                for y in 0..patch {
                    for x in 0..patch {
                        for c in 0..3 {
                            rows.push(chw[(c * h + py * patch + y) * w + px * patch + x]);
                        }
                    }
                }
            }
        }
        Ok((rows, (gh, gw)))
    }

    /// Decode `image` and preprocess it into `[3, side, side]` pixel values (row-major).
    pub(crate) fn pixels(&self, image: &ImageInput, side: usize) -> Result<Vec<f32>, SkillError> {
        let invalid = |detail: String| SkillError::InvalidRequest {
            capability: Capability::ClassifyImage,
            detail,
        };
        let rgb = decode(image)?;
        let (h, w) = self.resize.unwrap_or((rgb.height(), rgb.width()));
        let side = u32::try_from(side).unwrap_or(u32::MAX);
        if (h, w) != (side, side) {
            return Err(invalid(format!(
                "preprocessing yields {h}x{w} images, the model takes {side}x{side}"
            )));
        }
        Ok(self.values(rgb, (h, w)))
    }

    /// Resize `rgb` to `(h, w)` (when it differs), rescale and normalise: `[3, h, w]`.
    fn values(&self, rgb: image::RgbImage, (h, w): (u32, u32)) -> Vec<f32> {
        let rgb = if (rgb.height(), rgb.width()) != (h, w) {
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
        out
    }
}

/// Decode `image` into RGB.
fn decode(image: &ImageInput) -> Result<image::RgbImage, SkillError> {
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
    Ok(img.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::naflex_size;

    #[test]
    fn naflex_sizes_follow_the_processor() {
        // transformers' get_image_size_for_max_num_patches.
        assert_eq!(naflex_size(32, 32, 8, 16), (32, 32));
        assert_eq!(naflex_size(224, 224, 16, 256), (256, 256));
        assert_eq!(naflex_size(480, 640, 16, 256), (224, 288));
        assert_eq!(naflex_size(1, 1000, 16, 256), (16, 4096));
    }
}
