//! Environment access behind a trait, so that tests never touch the process environment.

use std::collections::BTreeMap;

/// A source of environment variables.
///
/// The runtime reads every variable through this trait: [`ProcessEnv`] in production,
/// [`MapEnv`] in tests (no `std::env::set_var`, no races between tests).
pub trait EnvSource: Send + Sync {
    /// The value of `name`, or `None` when it is unset or not valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment (`std::env::var`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables; everything else is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEnv {
    vars: BTreeMap<String, String>,
}

impl MapEnv {
    /// An environment with no variables set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// An environment with exactly these variables set.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self {
            vars: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Set one variable (builder style).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }
}

impl EnvSource for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
}

/// Names of the environment variables the runtime reads.
pub mod vars {
    /// `cpu|cuda[:N]|metal[:N]|mojo_max|auto`: the target when none is given explicitly.
    pub const SKILLGEN_TARGET: &str = "SKILLGEN_TARGET";
    /// `1|true|yes` selects `mojo_max` when neither an explicit target nor `SKILLGEN_TARGET` is set.
    pub const USE_MOJO_MAX_TARGET: &str = "USE_MOJO_MAX_TARGET";
    /// `1|true|yes`: falling back from the resolved target is an error.
    pub const SKILLGEN_STRICT: &str = "SKILLGEN_STRICT";
    /// Base URL of a running `max serve` (OpenAI-compatible), e.g. `http://127.0.0.1:8000`.
    pub const MAX_SERVE_URL: &str = "MAX_SERVE_URL";
    /// Path of the `max` executable; otherwise `max` is looked up on `PATH`.
    pub const SKILLGEN_MAX_BIN: &str = "SKILLGEN_MAX_BIN";
    /// Path of the `mojo` executable; otherwise `mojo` is looked up on `PATH`.
    pub const SKILLGEN_MOJO_BIN: &str = "SKILLGEN_MOJO_BIN";
    /// The executable search path.
    pub const PATH: &str = "PATH";
}

/// The allowed spellings of a boolean flag variable.
pub const BOOL_ALLOWED: &str = "1, true, yes (on) or 0, false, no, empty (off)";

/// Parse a boolean flag variable: `Ok(None)` when unset.
pub(crate) fn flag(
    env: &dyn EnvSource,
    name: &'static str,
) -> Result<Option<bool>, crate::SkillError> {
    let Some(raw) = env.var(name) else {
        return Ok(None);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(Some(true)),
        "0" | "false" | "no" | "" => Ok(Some(false)),
        _ => Err(crate::SkillError::InvalidEnv {
            var: name,
            value: raw,
            allowed: BOOL_ALLOWED,
        }),
    }
}
