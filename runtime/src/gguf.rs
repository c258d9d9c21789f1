//! Just enough of llama.cpp's GGUF format to say which skill a `.gguf` file is for: its
//! `general.architecture`, mapped to the registry's model type. Backends read the rest. The
//! reader is bounded (string and array sizes are checked against what is left of the file, and
//! it stops at the key it wants), so a hostile header is a typed error, not an allocation.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::SkillError;

/// `(general.architecture, registry model type)` of the GGUF architectures a backend runs.
pub const ARCHITECTURES: &[(&str, &str)] = &[("llama", "llama"), ("gemma3", "gemma3_text")];

/// The registry model type of a GGUF `general.architecture`.
pub fn model_type_of(architecture: &str) -> Option<&'static str> {
    ARCHITECTURES
        .iter()
        .find(|a| a.0 == architecture)
        .map(|a| a.1)
}

/// Whether `path` is a GGUF file by name (`*.gguf`).
pub fn is_gguf(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

struct Reader<R> {
    r: R,
    left: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if n > self.left {
            return Err(format!(
                "a field of {n} bytes runs past the end of the file"
            ));
        }
        let mut v = vec![0u8; n as usize];
        self.r.read_exact(&mut v).map_err(|e| e.to_string())?;
        self.left -= n;
        Ok(v)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        let b = self.bytes(n)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Skip one value of GGUF type `t`.
    fn skip(&mut self, t: u32, depth: u32) -> Result<(), String> {
        let fixed = match t {
            0 | 1 | 7 => 1, // u8, i8, bool
            2 | 3 => 2,     // u16, i16
            4..=6 => 4,     // u32, i32, f32
            10..=12 => 8,   // u64, i64, f64
            8 => {
                self.string()?;
                return Ok(());
            }
            9 if depth == 0 => {
                let inner = self.u32()?;
                let n = self.u64()?;
                if n > self.left {
                    return Err(format!("an array of {n} values is longer than the file"));
                }
                for _ in 0..n {
                    self.skip(inner, depth + 1)?;
                }
                return Ok(());
            }
            other => return Err(format!("value type {other} is not a GGUF type")),
        };
        self.bytes(fixed)?;
        Ok(())
    }
}

/// `general.architecture` of the GGUF file `path`.
pub fn architecture(path: &Path) -> Result<String, SkillError> {
    let bad = |detail: String| SkillError::WeightsInvalid {
        path: path.to_path_buf(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| bad(e.to_string()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| bad(e.to_string()))?;
    let mut r = Reader {
        r: BufReader::new(file),
        left: size,
    };
    let run = |r: &mut Reader<_>| -> Result<Option<String>, String> {
        if r.bytes(4)? != b"GGUF" {
            return Err("not a GGUF file (no GGUF magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2, 3)"));
        }
        let _tensors = r.u64()?;
        let kvs = r.u64()?;
        for _ in 0..kvs {
            let key = r.string()?;
            let t = r.u32()?;
            if key == "general.architecture" {
                if t != 8 {
                    return Err("general.architecture is not a string".into());
                }
                return r.string().map(Some);
            }
            r.skip(t, 0)?;
        }
        Ok(None)
    };
    match run(&mut r) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(SkillError::ConfigField {
            path: path.to_path_buf(),
            field: "general.architecture".into(),
            detail: "missing from the GGUF metadata".into(),
        }),
        Err(e) => Err(bad(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kvs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        v.extend((kvs.len() as u64).to_le_bytes());
        for (k, t, val) in kvs {
            v.extend((k.len() as u64).to_le_bytes());
            v.extend(k.as_bytes());
            v.extend(t.to_le_bytes());
            v.extend(val);
        }
        v
    }

    fn gguf_str(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend(s.as_bytes());
        v
    }

    fn arch_of(bytes: &[u8]) -> Result<String, SkillError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, bytes).unwrap();
        architecture(&p)
    }

    #[test]
    fn the_architecture_is_found_after_other_keys() {
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend(2u64.to_le_bytes());
        arr.extend(gguf_str("a"));
        arr.extend(gguf_str("bc"));
        let h = header(&[
            ("general.type", 8, gguf_str("model")),
            ("x.list", 9, arr),
            ("x.n", 4, 7u32.to_le_bytes().to_vec()),
            ("general.architecture", 8, gguf_str("llama")),
        ]);
        assert_eq!(arch_of(&h).unwrap(), "llama");
        assert_eq!(model_type_of("gemma3"), Some("gemma3_text"));
    }

    #[test]
    fn hostile_or_truncated_headers_are_typed_errors() {
        assert!(matches!(
            arch_of(b"GGML...."),
            Err(SkillError::WeightsInvalid { .. })
        ));
        // a string claiming 2^60 bytes
        let mut h = header(&[]);
        h[16..24].copy_from_slice(&1u64.to_le_bytes());
        h.extend((1u64 << 60).to_le_bytes());
        assert!(matches!(
            arch_of(&h),
            Err(SkillError::WeightsInvalid { .. })
        ));
        // no architecture key
        let h = header(&[("general.type", 8, gguf_str("model"))]);
        assert!(
            matches!(arch_of(&h), Err(SkillError::ConfigField { field, .. }) if field == "general.architecture")
        );
    }

    #[test]
    fn a_directory_stands_for_its_one_gguf_file_unless_it_has_a_config() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(crate::gguf_of(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("a.gguf"), b"GGUF").unwrap();
        let one = crate::gguf_of(dir.path()).unwrap();
        assert_eq!(one, Some(dir.path().join("a.gguf")));
        std::fs::write(dir.path().join("b.gguf"), b"GGUF").unwrap();
        let e = crate::gguf_of(dir.path()).unwrap_err();
        assert!(e.to_string().contains("a.gguf, b.gguf"), "{e}");
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        assert_eq!(crate::gguf_of(dir.path()).unwrap(), None);
    }
}
