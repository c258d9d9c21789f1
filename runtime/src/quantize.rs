//! Load-time weight quantization a user may ask of a float checkpoint: its projection matrices
//! stored as llama.cpp's block formats (Q8_0, Q4_K) and multiplied by quantized kernels. Asked
//! for with [`crate::SkillState::quantize`]; a backend or implementation that cannot honour it
//! refuses (it never runs the float model in its place silently).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A block format for a float checkpoint's matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Quantization {
    /// 8-bit, blocks of 32 weights with one f16 scale (8.5 bits per weight).
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit K-quant, super-blocks of 256 weights with 6-bit sub-block scales and mins (4.5
    /// bits per weight). A matrix whose rows are not whole super-blocks but whole 32-weight
    /// blocks is stored as `Q5_0` (5.5 bits per weight) instead, as llama.cpp's quantizer does.
    #[serde(rename = "q4_k")]
    Q4K,
}

impl Quantization {
    /// Every format, in order of size.
    pub const ALL: [Quantization; 2] = [Quantization::Q8_0, Quantization::Q4K];

    /// The name, as llama.cpp writes it in lower case: `q8_0`, `q4_k`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Quantization::Q8_0 => "q8_0",
            Quantization::Q4K => "q4_k",
        }
    }

    /// How many weights one block holds: a matrix row must be a whole number of blocks.
    pub const fn block_size(self) -> usize {
        match self {
            Quantization::Q8_0 => 32,
            Quantization::Q4K => 256,
        }
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no [`Quantization`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizationParseError(pub String);

impl fmt::Display for QuantizationParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown quantization `{}` (expected one of: q8_0, q4_k)",
            self.0
        )
    }
}

impl std::error::Error for QuantizationParseError {}

impl FromStr for Quantization {
    type Err = QuantizationParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantization::ALL
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| QuantizationParseError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for q in Quantization::ALL {
            assert_eq!(q.as_str().parse::<Quantization>(), Ok(q));
            assert_eq!(q.to_string(), q.as_str());
        }
        assert_eq!(" Q4_K ".parse::<Quantization>(), Ok(Quantization::Q4K));
        let e = "q4_1".parse::<Quantization>().unwrap_err();
        assert!(e.to_string().contains("q8_0, q4_k"), "{e}");
    }
}
