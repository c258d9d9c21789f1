//! What this machine can run: CPU, candle GPU support, a reachable MAX server, the Mojo toolchain.
//!
//! [`crate::Backends::capabilities`] probes once per backend set and caches the report. A [`Capabilities`]
//! is a plain struct, so tests build fixed reports ([`Capabilities::fixed_cpu_only`],
//! [`Capabilities::fixed_with_max`] and the `with_*` builders) instead of probing; a fixed report
//! says so in its [`ReportSource`].

use serde::Serialize;
use std::path::{Path, PathBuf};

use crate::decision::SkipReason;
use crate::env::{EnvSource, vars};

/// The capability report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Probed from this machine, or a fixed report built for tests.
    pub source: ReportSource,
    /// The CPU.
    pub cpu: CpuInfo,
    /// candle's CUDA support.
    pub cuda: DeviceSupport,
    /// candle's Metal support.
    pub metal: DeviceSupport,
    /// Modular MAX.
    pub max: MaxInfo,
    /// The Mojo toolchain.
    pub mojo: ToolProbe,
}

/// Where a report comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportSource {
    /// Probed on this machine.
    Detected,
    /// Built by hand (tests, snapshots); the name says which fixed report.
    Fixed(String),
}

/// CPU architecture and the SIMD features detected at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    /// `std::env::consts::ARCH`, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// Detected features (e.g. `avx2`, `fma`, `avx512f`, `neon`), in a fixed order.
    pub features: Vec<String>,
    /// `std::thread::available_parallelism`.
    pub threads: usize,
}

/// A candle GPU backend: compiled in or not, and the devices present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSupport {
    /// Whether skillgen-runtime was built with the matching cargo feature (`cuda` / `metal`).
    pub compiled_in: bool,
    /// Devices present on this machine (counted even when not compiled in).
    pub devices: u32,
    /// How the devices were counted, or why none were found.
    pub detail: String,
}

/// Modular MAX: a server answering `GET /v1/models`, or a `max` executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaxInfo {
    /// `MAX_SERVE_URL`, if set.
    pub serve_url: Option<String>,
    /// What the server at `serve_url` answered.
    pub server: MaxServer,
    /// The `max` executable (`SKILLGEN_MAX_BIN`, then `PATH`): the MAX backend starts `max serve`
    /// with it on first use when `mojo_max` is asked for.
    pub executable: ToolProbe,
}

/// The state of the MAX server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MaxServer {
    /// `MAX_SERVE_URL` is not set.
    NotConfigured,
    /// `MAX_SERVE_URL` is set but did not answer with a model list.
    Unreachable {
        /// Why (connection refused, timeout, HTTP status, bad JSON, ...).
        error: String,
    },
    /// The server answered `GET /v1/models`.
    Serving {
        /// The served model ids.
        models: Vec<String>,
    },
}

/// An executable looked up on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolProbe {
    /// Its path, when found.
    pub path: Option<PathBuf>,
    /// How it was found, or why not.
    pub detail: String,
}

impl ToolProbe {
    /// Not found, with the reason.
    pub fn missing(detail: impl Into<String>) -> Self {
        Self {
            path: None,
            detail: detail.into(),
        }
    }

    /// Found at `path`.
    pub fn found(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self {
            path: Some(path.into()),
            detail: detail.into(),
        }
    }
}

impl Capabilities {
    /// The core's part of the report, probed now from `env`: the CPU, GPU device counts (not
    /// compiled in until a backend built for them says so), `MAX_SERVE_URL` (not probed until
    /// the MAX backend does), and the `max` and `mojo` executables. A [`crate::Backends`] set
    /// completes it with each backend's [`crate::Backend::probe`]; use
    /// [`crate::Backends::capabilities`] for the cached report of a set.
    pub fn probe_core(env: &dyn EnvSource) -> Capabilities {
        let serve_url = env
            .var(vars::MAX_SERVE_URL)
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        let server = match &serve_url {
            None => MaxServer::NotConfigured,
            Some(_) => MaxServer::Unreachable {
                error: "not probed: the MAX backend is not compiled in".to_owned(),
            },
        };
        Capabilities {
            source: ReportSource::Detected,
            cpu: CpuInfo::detect(),
            cuda: DeviceSupport::cuda(false),
            metal: DeviceSupport::metal(false),
            max: MaxInfo {
                serve_url,
                server,
                executable: find_tool(env, vars::SKILLGEN_MAX_BIN, "max"),
            },
            mojo: find_tool(env, vars::SKILLGEN_MOJO_BIN, "mojo"),
        }
    }

    /// A fixed report for tests and snapshots (not detection): an `x86_64` CPU with no
    /// features listed, one thread, no CUDA or Metal compiled in or present, `MAX_SERVE_URL`
    /// unset, no `max` or `mojo` executable.
    pub fn fixed_cpu_only() -> Capabilities {
        Capabilities {
            source: ReportSource::Fixed("cpu-only".to_owned()),
            cpu: CpuInfo {
                arch: "x86_64".to_owned(),
                features: Vec::new(),
                threads: 1,
            },
            cuda: DeviceSupport {
                compiled_in: false,
                devices: 0,
                detail: "fixed report: no CUDA device".to_owned(),
            },
            metal: DeviceSupport {
                compiled_in: false,
                devices: 0,
                detail: "fixed report: no Metal device".to_owned(),
            },
            max: MaxInfo {
                serve_url: None,
                server: MaxServer::NotConfigured,
                executable: ToolProbe::missing("`max` not found on PATH"),
            },
            mojo: ToolProbe::missing("`mojo` not found on PATH"),
        }
    }

    /// A fixed report for tests and snapshots (not detection): [`fixed_cpu_only`] plus a MAX
    /// server at `http://127.0.0.1:8000` serving `served` (model ids, model types or MAX
    /// architecture names).
    ///
    /// [`fixed_cpu_only`]: Capabilities::fixed_cpu_only
    pub fn fixed_with_max(served: &[&str]) -> Capabilities {
        let mut c = Self::fixed_cpu_only().with_max_serving(
            "http://127.0.0.1:8000",
            served.iter().map(|s| (*s).to_owned()).collect(),
        );
        c.source = ReportSource::Fixed(format!("max-serving[{}]", served.join(",")));
        c
    }

    /// Builder: `MAX_SERVE_URL=url` answering with `models`.
    pub fn with_max_serving(mut self, url: &str, models: Vec<String>) -> Self {
        self.max.serve_url = Some(url.to_owned());
        self.max.server = MaxServer::Serving { models };
        self
    }

    /// Builder: `MAX_SERVE_URL=url` not answering, with `error`.
    pub fn with_max_unreachable(mut self, url: &str, error: &str) -> Self {
        self.max.serve_url = Some(url.to_owned());
        self.max.server = MaxServer::Unreachable {
            error: error.to_owned(),
        };
        self
    }

    /// Builder: a `max` executable at `path`.
    pub fn with_max_executable(mut self, path: &str) -> Self {
        self.max.executable = ToolProbe::found(path, "fixed report");
        self
    }

    /// Builder: CUDA compiled in or not, with `devices` devices present.
    pub fn with_cuda(mut self, compiled_in: bool, devices: u32) -> Self {
        self.cuda = DeviceSupport {
            compiled_in,
            devices,
            detail: format!("fixed report: {devices} CUDA device(s)"),
        };
        self
    }

    /// Builder: Metal compiled in or not, with `devices` devices present.
    pub fn with_metal(mut self, compiled_in: bool, devices: u32) -> Self {
        self.metal = DeviceSupport {
            compiled_in,
            devices,
            detail: format!("fixed report: {devices} Metal device(s)"),
        };
        self
    }

    /// The models the MAX server serves, when it answered.
    pub fn max_served(&self) -> Option<&[String]> {
        match &self.max.server {
            MaxServer::Serving { models } => Some(models),
            _ => None,
        }
    }
}

impl CpuInfo {
    /// Detect the CPU of this process.
    pub fn detect() -> CpuInfo {
        CpuInfo {
            arch: std::env::consts::ARCH.to_owned(),
            features: cpu_features(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($name) {
                f.push($name.to_owned());
            }
        )*};
    }
    probe!(
        "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"
    );
    f
}

#[cfg(target_arch = "aarch64")]
fn cpu_features() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! probe {
        ($($name:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($name) {
                f.push($name.to_owned());
            }
        )*};
    }
    probe!("neon", "fp16", "dotprod", "sve", "i8mm", "bf16");
    f
}

#[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_features() -> Vec<String> {
    Vec::new()
}

const NVIDIA_GPUS: &str = "/proc/driver/nvidia/gpus";

impl DeviceSupport {
    /// `Ok` when device `n` is usable: compiled in (the cargo `feature`) and present.
    pub fn check(
        &self,
        kind: &'static str,
        feature: &'static str,
        n: u32,
    ) -> Result<(), SkipReason> {
        if !self.compiled_in {
            return Err(SkipReason::NotCompiledIn { feature });
        }
        if n >= self.devices {
            return Err(SkipReason::NoDevice {
                kind,
                ordinal: n,
                found: self.devices,
                detail: self.detail.clone(),
            });
        }
        Ok(())
    }

    /// CUDA: the NVIDIA GPUs of this machine, usable when a backend built for CUDA says
    /// `compiled_in`.
    pub fn cuda(compiled_in: bool) -> DeviceSupport {
        let (devices, found) = match std::fs::read_dir(NVIDIA_GPUS) {
            Ok(rd) => {
                let n = rd.filter_map(Result::ok).count();
                (
                    u32::try_from(n).unwrap_or(u32::MAX),
                    format!("{n} NVIDIA GPU(s) under {NVIDIA_GPUS}"),
                )
            }
            Err(_) => (0, format!("no NVIDIA driver ({NVIDIA_GPUS} not readable)")),
        };
        let detail = if compiled_in {
            found
        } else {
            format!("not compiled in (build `skills` with the `cuda` feature); {found}")
        };
        DeviceSupport {
            compiled_in,
            devices,
            detail,
        }
    }

    /// Metal: the Metal device of this machine, usable when a backend built for Metal says
    /// `compiled_in`.
    pub fn metal(compiled_in: bool) -> DeviceSupport {
        let (devices, found) = if cfg!(target_os = "macos") {
            (
                1,
                "macOS: one Metal device (every Mac a supported macOS runs on has one)".to_owned(),
            )
        } else {
            (
                0,
                format!(
                    "Metal is only available on macOS (this is {})",
                    std::env::consts::OS
                ),
            )
        };
        let detail = if compiled_in {
            found
        } else {
            format!("not compiled in (build `skills` with the `metal` feature); {found}")
        };
        DeviceSupport {
            compiled_in,
            devices,
            detail,
        }
    }
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Find an executable: the path in `override_var` if set, else `name` on the env's `PATH`.
pub fn find_tool(env: &dyn EnvSource, override_var: &str, name: &str) -> ToolProbe {
    if let Some(p) = env.var(override_var).filter(|p| !p.trim().is_empty()) {
        let path = PathBuf::from(p.trim());
        return if is_executable(&path) {
            ToolProbe::found(path, format!("via {override_var}"))
        } else {
            ToolProbe::missing(format!(
                "{override_var}={} is not an executable file",
                path.display()
            ))
        };
    }
    let Some(search) = env.var(vars::PATH) else {
        return ToolProbe::missing(format!("`{name}` not found (PATH is not set)"));
    };
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return ToolProbe::found(candidate, "on PATH");
        }
    }
    ToolProbe::missing(format!("`{name}` not found on PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn tools_found_via_override_then_path() {
        let dir = std::env::temp_dir().join(format!("skillgen-rt-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let max = dir.join("max");
        std::fs::write(&max, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&max, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let on_path = MapEnv::from_pairs(&[(vars::PATH, dir.to_str().unwrap())]);
        let t = find_tool(&on_path, vars::SKILLGEN_MAX_BIN, "max");
        assert_eq!(t.path.as_deref(), Some(max.as_path()));
        assert_eq!(
            find_tool(&on_path, vars::SKILLGEN_MOJO_BIN, "mojo").path,
            None
        );

        let bad = MapEnv::from_pairs(&[
            (vars::PATH, dir.to_str().unwrap()),
            (vars::SKILLGEN_MAX_BIN, "/nonexistent/max"),
        ]);
        let t = find_tool(&bad, vars::SKILLGEN_MAX_BIN, "max");
        assert_eq!(t.path, None, "an explicit override wins over PATH");
        assert!(
            t.detail.contains("SKILLGEN_MAX_BIN=/nonexistent/max"),
            "{}",
            t.detail
        );

        let caps = Capabilities::probe_core(&on_path);
        assert_eq!(caps.max.server, MaxServer::NotConfigured);
        assert_eq!(caps.max.executable.path.as_deref(), Some(max.as_path()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn detection_reports_this_build() {
        let caps = Capabilities::probe_core(&MapEnv::empty());
        assert_eq!(caps.cpu.arch, std::env::consts::ARCH);
        assert!(caps.cpu.threads >= 1);
        // No backend has said it was built for a GPU.
        assert!(!caps.cuda.compiled_in && !caps.metal.compiled_in);
        assert!(
            caps.cuda.detail.starts_with("not compiled in"),
            "{}",
            caps.cuda.detail
        );
        let url = MapEnv::from_pairs(&[(vars::MAX_SERVE_URL, "http://127.0.0.1:9")]);
        assert!(matches!(
            Capabilities::probe_core(&url).max.server,
            MaxServer::Unreachable { .. }
        ));
        assert_eq!(caps.mojo.path, None, "PATH unset in this env");
        let json = serde_json::to_value(&caps).unwrap();
        assert_eq!(json["source"], "detected");
        assert_eq!(json["max"]["server"]["state"], "not_configured");
    }

    #[test]
    fn fixed_reports_say_they_are_fixed() {
        let c = Capabilities::fixed_with_max(&["llama"]);
        assert_eq!(c.max_served(), Some(&["llama".to_owned()][..]));
        assert_eq!(
            serde_json::to_value(&c).unwrap()["source"]["fixed"],
            "max-serving[llama]"
        );
        assert_eq!(Capabilities::fixed_cpu_only().max_served(), None);
    }
}
