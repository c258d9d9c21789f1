//! Environment access behind a trait, so that tests never touch the process environment.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A source of environment variables.
///
/// The runtime reads every variable through this trait: [`ProcessEnv`] in production,
/// [`MapEnv`] in tests (no `std::env::set_var`, no races between tests).
pub trait EnvSource: Send + Sync {
    /// The value of `name`, or `None` when it is unset or not valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;

    /// [`EnvSource::var`], borrowed where the source can lend the value (the dispatcher reads
    /// variables on every call and needs no copy). The default copies through `var`.
    fn var_ref(&self, name: &str) -> Option<Cow<'_, str>> {
        self.var(name).map(Cow::Owned)
    }
}

/// The process environment (`std::env::var`).
///
/// The dispatch variables ([`vars::SKILLGEN_TARGET`], [`vars::USE_MOJO_MAX_TARGET`],
/// [`vars::SKILLGEN_STRICT`]) are read once per process, on first use, like the capability
/// probe ([`crate::Backends::capabilities`]): every call reads them, and `std::env::var` takes
/// a global lock and scans the environment each time. Changing them later with
/// `std::env::set_var` (an `unsafe` function since Rust 2024) has no effect on dispatch; pass
/// a [`crate::TargetSpec`] or the builder's strict option instead, or a [`MapEnv`] to the
/// `*_with` functions. Every other variable is read live.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

/// The variables [`ProcessEnv`] snapshots.
const SNAPSHOT_VARS: [&str; 3] = [
    vars::SKILLGEN_TARGET,
    vars::USE_MOJO_MAX_TARGET,
    vars::SKILLGEN_STRICT,
];

/// `Some(value)` when `name` is a snapshotted variable (the value itself may be unset).
fn snapshot(name: &str) -> Option<Option<&'static str>> {
    static SNAPSHOT: OnceLock<[Option<String>; 3]> = OnceLock::new();
    let i = SNAPSHOT_VARS.iter().position(|v| *v == name)?;
    let values = SNAPSHOT.get_or_init(|| SNAPSHOT_VARS.map(|v| std::env::var(v).ok()));
    values.get(i).map(Option::as_deref)
}

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        match snapshot(name) {
            Some(value) => value.map(str::to_owned),
            None => std::env::var(name).ok(),
        }
    }

    fn var_ref(&self, name: &str) -> Option<Cow<'_, str>> {
        match snapshot(name) {
            Some(value) => value.map(Cow::Borrowed),
            None => std::env::var(name).ok().map(Cow::Owned),
        }
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

    fn var_ref(&self, name: &str) -> Option<Cow<'_, str>> {
        self.vars.get(name).map(|v| Cow::Borrowed(v.as_str()))
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
