//! Execution targets and how a caller asks for one.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Where a skill runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// candle on the CPU.
    Cpu,
    /// candle on CUDA device `N`.
    Cuda(u32),
    /// candle on Metal device `N`.
    Metal(u32),
    /// A Modular MAX server (Mojo kernels).
    MojoMax,
}

impl Target {
    /// The fallback chain, best first: `mojo_max → cuda → metal → cpu`.
    pub const CHAIN: [Target; 4] = [
        Target::MojoMax,
        Target::Cuda(0),
        Target::Metal(0),
        Target::Cpu,
    ];

    /// Position of this target's kind in [`Target::CHAIN`].
    pub const fn chain_position(self) -> usize {
        match self {
            Target::MojoMax => 0,
            Target::Cuda(_) => 1,
            Target::Metal(_) => 2,
            Target::Cpu => 3,
        }
    }

    /// The targets to try when `self` is requested: itself, then the rest of the chain after it.
    pub fn fallbacks_from(self) -> impl Iterator<Item = Target> {
        std::iter::once(self).chain(Target::CHAIN[self.chain_position() + 1..].iter().copied())
    }

    /// The backend that serves this target.
    pub const fn backend(self) -> skillgen_vocab::Backend {
        match self {
            Target::MojoMax => skillgen_vocab::Backend::Max,
            _ => skillgen_vocab::Backend::Candle,
        }
    }
}

/// The allowed spellings of a [`Target`].
pub const TARGET_ALLOWED: &str = "cpu, cuda, cuda:N, metal, metal:N, mojo_max";
/// The allowed spellings of a [`TargetSpec`] (and of `SKILLGEN_TARGET`).
pub const SPEC_ALLOWED: &str = "cpu, cuda, cuda:N, metal, metal:N, mojo_max, auto";

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cpu => f.write_str("cpu"),
            Target::Cuda(n) => write!(f, "cuda:{n}"),
            Target::Metal(n) => write!(f, "metal:{n}"),
            Target::MojoMax => f.write_str("mojo_max"),
        }
    }
}

/// A string was not a valid target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target `{input}`: expected one of {allowed}")]
pub struct TargetParseError {
    /// The rejected input.
    pub input: String,
    /// The allowed spellings.
    pub allowed: &'static str,
}

fn parse_ordinal(input: &str, rest: &str, allowed: &'static str) -> Result<u32, TargetParseError> {
    if rest.is_empty() {
        return Ok(0);
    }
    rest.strip_prefix(':')
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| TargetParseError {
            input: input.to_owned(),
            allowed,
        })
}

fn parse_target(input: &str, allowed: &'static str) -> Result<Target, TargetParseError> {
    let s = input.trim();
    let err = || TargetParseError {
        input: input.to_owned(),
        allowed,
    };
    match s {
        "cpu" => Ok(Target::Cpu),
        "mojo_max" => Ok(Target::MojoMax),
        _ => {
            if let Some(rest) = s.strip_prefix("cuda") {
                parse_ordinal(input, rest, allowed).map(Target::Cuda)
            } else if let Some(rest) = s.strip_prefix("metal") {
                parse_ordinal(input, rest, allowed).map(Target::Metal)
            } else {
                Err(err())
            }
        }
    }
}

impl FromStr for Target {
    type Err = TargetParseError;
    /// `cpu`, `cuda` (= `cuda:0`), `cuda:N`, `metal` (= `metal:0`), `metal:N`, `mojo_max`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_target(s, TARGET_ALLOWED)
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TargetSpec {
    /// Nothing explicit: consult `SKILLGEN_TARGET`, then `USE_MOJO_MAX_TARGET`, else auto.
    #[default]
    Default,
    /// The best available target (walk the whole chain from `mojo_max`).
    Auto,
    /// This target, falling back along the chain unless strict.
    Exact(Target),
}

impl From<Target> for TargetSpec {
    fn from(t: Target) -> Self {
        TargetSpec::Exact(t)
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Default => f.write_str("default"),
            TargetSpec::Auto => f.write_str("auto"),
            TargetSpec::Exact(t) => t.fmt(f),
        }
    }
}

impl FromStr for TargetSpec {
    type Err = TargetParseError;
    /// A target spelling, or `auto`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "auto" {
            Ok(TargetSpec::Auto)
        } else {
            parse_target(s, SPEC_ALLOWED).map(TargetSpec::Exact)
        }
    }
}

impl Serialize for TargetSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip() {
        for (s, t) in [
            ("cpu", Target::Cpu),
            ("cuda", Target::Cuda(0)),
            ("cuda:0", Target::Cuda(0)),
            ("cuda:3", Target::Cuda(3)),
            ("metal", Target::Metal(0)),
            ("metal:1", Target::Metal(1)),
            ("mojo_max", Target::MojoMax),
        ] {
            assert_eq!(s.parse::<Target>().unwrap(), t, "{s}");
            assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        }
        assert_eq!(Target::Cuda(0).to_string(), "cuda:0");
    }

    #[test]
    fn bad_targets_list_the_allowed_set() {
        for bad in [
            "gpu", "cuda:", "cuda:x", "cuda0", "cuda:-1", "auto", "", "mojo-max",
        ] {
            let e = bad.parse::<Target>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(
                e.to_string()
                    .contains("cpu, cuda, cuda:N, metal, metal:N, mojo_max"),
                "{e}"
            );
        }
        assert_eq!("auto".parse::<TargetSpec>().unwrap(), TargetSpec::Auto);
        assert_eq!(
            "cuda:2".parse::<TargetSpec>().unwrap(),
            TargetSpec::Exact(Target::Cuda(2))
        );
        assert!(
            "tpu"
                .parse::<TargetSpec>()
                .unwrap_err()
                .to_string()
                .ends_with("mojo_max, auto")
        );
    }

    #[test]
    fn chain_order() {
        let from_cuda: Vec<_> = Target::Cuda(1).fallbacks_from().collect();
        assert_eq!(from_cuda, [Target::Cuda(1), Target::Metal(0), Target::Cpu]);
        let from_max: Vec<_> = Target::MojoMax.fallbacks_from().collect();
        assert_eq!(from_max, Target::CHAIN);
        assert_eq!(
            Target::Cpu.fallbacks_from().collect::<Vec<_>>(),
            [Target::Cpu]
        );
    }
}
