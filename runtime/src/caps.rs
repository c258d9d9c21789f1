//! What this machine can run: CPU, candle GPU support, a reachable MAX server, the Mojo toolchain.
//!
//! [`Capabilities::detected`] probes once per process and caches the report. A [`Capabilities`]
//! is a plain struct, so tests build fixed reports ([`Capabilities::fixed_cpu_only`],
//! [`Capabilities::fixed_with_max`] and the `with_*` builders) instead of probing; a fixed report
//! says so in its [`ReportSource`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::env::{EnvSource, ProcessEnv, vars};

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

/// How long the MAX server probe may take (connect + answer).
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

static DETECTED: OnceLock<Capabilities> = OnceLock::new();

impl Capabilities {
    /// This machine's report, probed on first use (process environment) and cached.
    pub fn detected() -> &'static Capabilities {
        DETECTED.get_or_init(|| Capabilities::probe(&ProcessEnv))
    }

    /// Probe now (not cached), reading variables from `env`.
    pub fn probe(env: &dyn EnvSource) -> Capabilities {
        Self::probe_with_timeout(env, MAX_PROBE_TIMEOUT)
    }

    /// Probe now with a custom timeout for the MAX server.
    pub fn probe_with_timeout(env: &dyn EnvSource, timeout: Duration) -> Capabilities {
        let serve_url = env
            .var(vars::MAX_SERVE_URL)
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        let server = match &serve_url {
            None => MaxServer::NotConfigured,
            Some(url) => probe_max_server(url, timeout),
        };
        Capabilities {
            source: ReportSource::Detected,
            cpu: CpuInfo::detect(),
            cuda: detect_cuda(),
            metal: detect_metal(),
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

fn detect_cuda() -> DeviceSupport {
    let compiled_in = cfg!(feature = "cuda");
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
        format!("not compiled in (build skillgen-runtime with the `cuda` feature); {found}")
    };
    DeviceSupport {
        compiled_in,
        devices,
        detail,
    }
}

fn detect_metal() -> DeviceSupport {
    let compiled_in = cfg!(feature = "metal");
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
        format!("not compiled in (build skillgen-runtime with the `metal` feature); {found}")
    };
    DeviceSupport {
        compiled_in,
        devices,
        detail,
    }
}

/// The URL of the model list under a MAX base URL (`…/v1/models`).
pub fn models_url(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.ends_with("/v1/models") {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/models")
    } else {
        format!("{base}/v1/models")
    }
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// `GET {url}/v1/models` with `timeout` for the whole exchange.
pub fn probe_max_server(url: &str, timeout: Duration) -> MaxServer {
    let target = models_url(url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let unreachable = |error: String| MaxServer::Unreachable { error };
    let resp = match agent.get(&target).call() {
        Ok(r) => r,
        Err(e) => return unreachable(format!("GET {target} failed: {e}")),
    };
    let status = resp.status();
    if !status.is_success() {
        return unreachable(format!("GET {target} answered HTTP {}", status.as_u16()));
    }
    match resp.into_body().read_json::<ModelList>() {
        Ok(list) => MaxServer::Serving {
            models: list.data.into_iter().map(|m| m.id).collect(),
        },
        Err(e) => unreachable(format!(
            "GET {target} did not answer with an OpenAI model list: {e}"
        )),
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
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn models_url_joins() {
        assert_eq!(models_url("http://h:8000"), "http://h:8000/v1/models");
        assert_eq!(models_url("http://h:8000/"), "http://h:8000/v1/models");
        assert_eq!(models_url("http://h:8000/v1"), "http://h:8000/v1/models");
        assert_eq!(
            models_url("http://h:8000/v1/models"),
            "http://h:8000/v1/models"
        );
    }

    #[test]
    fn closed_port_is_unreachable_quickly() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let env = MapEnv::from_pairs(&[(vars::MAX_SERVE_URL, &format!("http://127.0.0.1:{port}"))]);
        let t = Instant::now();
        let caps = Capabilities::probe(&env);
        assert!(
            t.elapsed() < MAX_PROBE_TIMEOUT + Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        match &caps.max.server {
            MaxServer::Unreachable { error } => assert!(error.contains("/v1/models"), "{error}"),
            other => panic!("expected unreachable, got {other:?}"),
        }
        assert_eq!(caps.source, ReportSource::Detected);
    }

    #[test]
    fn silent_server_times_out() {
        // Accepts the connection (kernel backlog) but never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let t = Instant::now();
        let s = probe_max_server(&url, Duration::from_millis(300));
        let took = t.elapsed();
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(matches!(s, MaxServer::Unreachable { .. }), "{s:?}");
        drop(l);
    }

    fn serve_once(body: &'static str, status: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if req.starts_with("GET /v1/models ") {
                    (status, body)
                } else {
                    ("404 Not Found", "")
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn parses_served_model_ids() {
        let url = serve_once(
            r#"{"object":"list","data":[{"id":"meta-llama/Llama-3.1-8B-Instruct","object":"model"},{"id":"llama"}]}"#,
            "200 OK",
        );
        let s = probe_max_server(&url, MAX_PROBE_TIMEOUT);
        assert_eq!(
            s,
            MaxServer::Serving {
                models: vec!["meta-llama/Llama-3.1-8B-Instruct".into(), "llama".into()]
            }
        );
    }

    #[test]
    fn http_errors_and_bad_json_are_unreachable_with_detail() {
        let url = serve_once("{}", "500 Internal Server Error");
        match probe_max_server(&url, MAX_PROBE_TIMEOUT) {
            MaxServer::Unreachable { error } => assert!(error.contains("HTTP 500"), "{error}"),
            o => panic!("{o:?}"),
        }
        let url = serve_once("not json", "200 OK");
        match probe_max_server(&url, MAX_PROBE_TIMEOUT) {
            MaxServer::Unreachable { error } => {
                assert!(error.contains("OpenAI model list"), "{error}")
            }
            o => panic!("{o:?}"),
        }
    }

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

        let caps = Capabilities::probe(&on_path);
        assert_eq!(caps.max.server, MaxServer::NotConfigured);
        assert_eq!(caps.max.executable.path.as_deref(), Some(max.as_path()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn detection_reports_this_build() {
        let caps = Capabilities::probe(&MapEnv::empty());
        assert_eq!(caps.cpu.arch, std::env::consts::ARCH);
        assert!(caps.cpu.threads >= 1);
        assert_eq!(caps.cuda.compiled_in, cfg!(feature = "cuda"));
        assert_eq!(caps.metal.compiled_in, cfg!(feature = "metal"));
        if !cfg!(feature = "cuda") {
            assert!(
                caps.cuda.detail.starts_with("not compiled in"),
                "{}",
                caps.cuda.detail
            );
        }
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
