//! `MaxServer`: one `max serve` process (and its children) owned by this process, run under a
//! watchdog so that it never outlives this process.
//!
//! # The watchdog
//! `max serve` is not spawned directly: a small Python program ([`WATCHDOG`], run by the
//! interpreter of the `max` script, i.e. the MAX venv's Python, see [`watchdog_python`]) is
//! spawned as the leader of a new process group and starts `max serve` as its child, in that
//! group (MAX's worker processes inherit it). The watchdog's stdin is a pipe whose only write
//! end this process holds, in the [`MaxServer`] handle. When this process dies — whatever the
//! way, SIGKILL included — the kernel closes that end, the watchdog reads EOF, SIGTERMs the
//! group, waits the stop grace period and SIGKILLs the group (itself included). No `unsafe`,
//! no `PR_SET_PDEATHSIG` (which fires when the spawning *thread* exits, not the process).
//! While this process lives, the watchdog exits as `max serve` did (same exit code, same
//! signal), so the handle sees a crash as before; a normal stop signals the whole group.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::client::{MaxClient, MaxClientConfig};
use crate::{DEFAULT_CACHE_DIR, DEFAULT_VENV_MAX, LOG_TAIL_LINES, MaxError};
use skillgen_runtime::caps::find_tool;
use skillgen_runtime::env::{EnvSource, vars};

/// How to start `max serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxServerConfig {
    /// The `max` executable; `None`: [`find_max_executable`].
    pub exe: Option<PathBuf>,
    /// The model directory (`--model-path`; canonicalised, so the served id is absolute).
    pub model_dir: PathBuf,
    /// `--devices` (default `cpu`).
    pub devices: String,
    /// `--quantization-encoding` (default `float32`).
    pub quantization_encoding: Option<String>,
    /// `--max-batch-size` (MAX's default for embeddings is 1).
    pub max_batch_size: Option<u32>,
    /// `--max-length` (MAX rejects longer inputs; it does not truncate).
    pub max_length: Option<u32>,
    /// `--served-model-name` (MAX's default: the model path as passed).
    pub served_model_name: Option<String>,
    /// The port; `None`: a free loopback port.
    pub port: Option<u16>,
    /// `XDG_CACHE_HOME` for the server (compiled graphs); `None`: [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Where stdout and stderr go; `None`: a file in the temp directory.
    pub log_path: Option<PathBuf>,
    /// The longest wait for `GET /v1/models` to answer (a cold CPU compile of MiniLM takes
    /// about 150 s on 2 cores).
    pub start_timeout: Duration,
    /// After SIGTERM, how long to wait before SIGKILL.
    pub stop_grace: Duration,
    /// More arguments for `max serve`.
    pub extra_args: Vec<String>,
    /// More environment variables for the server.
    pub extra_env: Vec<(String, String)>,
}

impl MaxServerConfig {
    /// Defaults for serving `model_dir` on the CPU in float32.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            exe: None,
            model_dir: model_dir.into(),
            devices: "cpu".to_owned(),
            quantization_encoding: Some("float32".to_owned()),
            max_batch_size: None,
            max_length: None,
            served_model_name: None,
            port: None,
            cache_dir: None,
            log_path: None,
            start_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(10),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        }
    }
}

/// The `max` executable: `SKILLGEN_MAX_BIN` (which must then be valid), else `max` on `PATH`,
/// else `$HOME/.cache/skillgen/venv-max/bin/max`.
pub fn find_max_executable(env: &dyn EnvSource) -> Result<PathBuf, MaxError> {
    let probe = find_tool(env, vars::SKILLGEN_MAX_BIN, "max");
    if let Some(p) = probe.path {
        return Ok(p);
    }
    if env
        .var(vars::SKILLGEN_MAX_BIN)
        .is_some_and(|v| !v.trim().is_empty())
    {
        return Err(MaxError::ExecutableNotFound {
            detail: probe.detail,
        });
    }
    let venv = env
        .var("HOME")
        .map(|h| Path::new(&h).join(DEFAULT_VENV_MAX));
    match venv {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(MaxError::ExecutableNotFound {
            detail: format!("{}, and {} does not exist", probe.detail, p.display()),
        }),
        None => Err(MaxError::ExecutableNotFound {
            detail: format!("{}, and HOME is not set", probe.detail),
        }),
    }
}

/// `$HOME/.cache/skillgen/max-cache`, or a directory under the temp dir without `HOME`.
pub fn default_cache_dir(env: &dyn EnvSource) -> PathBuf {
    match env.var("HOME") {
        Some(h) => Path::new(&h).join(DEFAULT_CACHE_DIR),
        None => std::env::temp_dir().join("skillgen-max-cache"),
    }
}

/// The watchdog (Python 3, standard library only), run as
/// `python -I -u -c WATCHDOG GRACE_SECONDS EXE ARGS...` in a new process group with a pipe as
/// stdin whose only write end the [`MaxServer`] handle holds. It starts `EXE ARGS...` (stdin
/// `/dev/null`) as its child, in its process group (MAX's workers inherit it), then:
/// - stdin reaches EOF (the process holding the pipe is gone): SIGTERM the group, wait up to
///   `GRACE_SECONDS` for the server, SIGKILL the group (the watchdog included);
/// - the server exits: SIGTERM the rest of the group (its workers), then exit the same way
///   (re-raise its signal, or its exit code).
///
/// SIGTERM is caught and ignored by the watchdog itself (a group stop reaches the server, and
/// the watchdog follows it out); a caught signal is reset to the default in the server at exec.
pub const WATCHDOG: &str = r#"import os, signal, subprocess, sys, threading, time
grace = float(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: None)
try:
    server = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL)
except OSError as e:
    print(f"skillgen watchdog: cannot start {sys.argv[2]!r}: {e}", file=sys.stderr, flush=True)
    sys.exit(127)
orphaned = threading.Event()
def watch_parent():
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    orphaned.set()
    print("skillgen watchdog: the process that started this server is gone (stdin closed); stopping process group", os.getpgrp(), file=sys.stderr, flush=True)
    try:
        os.killpg(0, signal.SIGTERM)
    except OSError:
        pass
    deadline = time.monotonic() + grace
    while server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(0, signal.SIGKILL)
watcher = threading.Thread(target=watch_parent, daemon=True)
watcher.start()
rc = server.wait()
if orphaned.is_set():
    watcher.join()
try:
    os.killpg(0, signal.SIGTERM)
except OSError:
    pass
if rc < 0:
    try:
        signal.signal(-rc, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    try:
        os.kill(os.getpid(), -rc)
        time.sleep(1)
    except OSError:
        pass
    os._exit(128 - rc)
os._exit(rc & 255)
"#;

/// The Python that runs the [`WATCHDOG`]: the interpreter named by `exe`'s `#!` line when it
/// is a Python (`max` in a venv: the venv's Python; `#!/usr/bin/env python3`: `python3` on
/// `PATH`), else `python3` on `env`'s `PATH`, this process's `PATH`, or `/usr/bin/python3`.
pub fn watchdog_python(exe: &Path, env: &dyn EnvSource) -> Result<PathBuf, MaxError> {
    let on_path = |name: &str| -> Option<PathBuf> {
        let paths = env
            .var(vars::PATH)
            .map(std::ffi::OsString::from)
            .into_iter()
            .chain(std::env::var_os("PATH"));
        paths
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    };
    if let Some(line) = shebang(exe) {
        let mut words = line.split_whitespace();
        let interp = words.next().map(Path::new);
        let name = interp.and_then(|p| p.file_name()).and_then(|n| n.to_str());
        let is_python = |n: &str| n.starts_with("python");
        match (interp, name) {
            (Some(p), Some(n)) if is_python(n) && p.is_file() => return Ok(p.to_path_buf()),
            (Some(_), Some("env")) => {
                if let Some(p) = words
                    .find(|w| !w.starts_with('-'))
                    .filter(|w| is_python(w))
                    .and_then(on_path)
                {
                    return Ok(p);
                }
            }
            _ => {}
        }
    }
    on_path("python3")
        .or_else(|| Some(PathBuf::from("/usr/bin/python3")).filter(|p| p.is_file()))
        .ok_or_else(|| MaxError::Spawn {
            exe: exe.to_path_buf(),
            detail: "no Python to run the watchdog that stops the server when this process dies (not in the `#!` line of the executable, no python3 on PATH)".to_owned(),
        })
}

/// The `#!` line of a script (without `#!`), if `path` starts with one.
fn shebang(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut head = [0u8; 512];
    let n = File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    Some(String::from_utf8_lossy(&line[..end]).trim().to_owned())
}

/// State shared between the server handle and the clients watching it.
#[derive(Debug)]
struct Shared {
    /// The watchdog (the process group's leader; `max serve` is its child).
    child: Mutex<Child>,
    /// The write end of the watchdog's stdin: closing it (this process dying, or the handle
    /// dropped) makes the watchdog stop the group. Only this process holds it (`CLOEXEC`).
    _lifeline: ChildStdin,
    exit: Mutex<Option<String>>,
    log: PathBuf,
    pgid: u32,
}

impl Shared {
    /// `Some(status)` once the watchdog (hence `max serve`, whose status it repeats) has
    /// exited (it is reaped here). When that is first seen, the group's stragglers are killed.
    fn exited(&self) -> Option<String> {
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if exit.is_none() {
            let status = {
                let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
                match child.try_wait() {
                    Ok(Some(status)) => Some(status.to_string()),
                    Ok(None) => None,
                    Err(e) => Some(format!("unknown ({e})")),
                }
            };
            if status.is_some() {
                *exit = status;
                drop(exit);
                self.signal_group("KILL");
                return self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone();
            }
        }
        exit.clone()
    }

    /// Signal the whole process group (`kill -s SIG -- -PGID`); falls back to killing the
    /// main process when `kill` cannot be run.
    fn signal_group(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, "--", &format!("-{}", self.pgid)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !ok {
            let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
            let _ = child.kill();
        }
    }

    /// SIGTERM the group, wait up to `grace`, SIGKILL the group, reap the main process.
    fn stop(&self, grace: Duration) -> String {
        if let Some(s) = self.exited() {
            self.signal_group("KILL"); // stragglers in the group
            return s;
        }
        self.signal_group("TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group("KILL");
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if exit.is_none() {
            let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
            *exit = Some(match child.wait() {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown ({e})"),
            });
        }
        exit.clone().unwrap_or_default()
    }
}

/// Lets a [`MaxClient`] say "the server died" instead of "connection refused".
#[derive(Debug, Clone)]
pub(crate) struct ServerWatch {
    shared: Weak<Shared>,
}

impl ServerWatch {
    pub(crate) fn check(&self, url: &str) -> Result<(), MaxError> {
        let Some(shared) = self.shared.upgrade() else {
            return Err(MaxError::ServerDied {
                url: url.to_owned(),
                detail: "its MaxServer handle was dropped (the server was stopped)".to_owned(),
                tail: String::new(),
            });
        };
        match shared.exited() {
            None => Ok(()),
            Some(status) => Err(MaxError::ServerDied {
                url: url.to_owned(),
                detail: format!(
                    "`max serve` exited ({status}); log {}",
                    shared.log.display()
                ),
                tail: log_tail(&shared.log),
            }),
        }
    }
}

/// A running `max serve` under its watchdog ([`WATCHDOG`]), in their own process group;
/// stopped (the whole group) on drop, and by the watchdog when this process dies, however it
/// dies (SIGKILL included): the kernel closes the watchdog's stdin pipe, whose write end only
/// this handle holds, and the watchdog stops the group. No `unsafe`, no `PR_SET_PDEATHSIG`
/// (which fires when the spawning *thread* exits, not the process).
#[derive(Debug)]
pub struct MaxServer {
    shared: Arc<Shared>,
    url: String,
    port: u16,
    models: Vec<String>,
    startup: Duration,
    stop_grace: Duration,
}

/// The last lines of a log file (empty when unreadable).
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl MaxServer {
    /// Start `max serve` with `config`, reading `SKILLGEN_MAX_BIN`, `PATH` and `HOME` from
    /// `env`, and wait until `GET /v1/models` lists a model.
    ///
    /// Errors: no executable, a bad model directory, spawn failure, the process exiting early
    /// ([`MaxError::ServerExited`], returned as soon as it is seen, with the log tail), or no
    /// answer within `start_timeout` ([`MaxError::StartTimeout`]; the server is stopped).
    pub fn start(config: &MaxServerConfig, env: &dyn EnvSource) -> Result<MaxServer, MaxError> {
        let exe = match &config.exe {
            Some(p) => p.clone(),
            None => find_max_executable(env)?,
        };
        let spawn_err = |detail: String| MaxError::Spawn {
            exe: exe.clone(),
            detail,
        };
        let model_dir =
            std::fs::canonicalize(&config.model_dir).map_err(|e| MaxError::ModelDir {
                path: config.model_dir.clone(),
                detail: e.to_string(),
            })?;
        if let Ok(Some(path)) = skillgen_runtime::gguf_of(&model_dir) {
            return Err(MaxError::GgufUnsupported {
                path,
                reason: crate::GGUF_REFUSAL,
            });
        }
        if !model_dir.join("config.json").is_file() {
            return Err(MaxError::ModelDir {
                path: model_dir,
                detail: "no config.json".to_owned(),
            });
        }
        let port = match config.port {
            Some(p) => p,
            None => free_port().map_err(|e| spawn_err(format!("no free port: {e}")))?,
        };
        let cache = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| default_cache_dir(env));
        std::fs::create_dir_all(&cache)
            .map_err(|e| spawn_err(format!("cache dir {}: {e}", cache.display())))?;
        let log = config.log_path.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "skillgen-max-serve-{}-{port}.log",
                std::process::id()
            ))
        });
        let out = File::create(&log)
            .map_err(|e| spawn_err(format!("log file {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| spawn_err(format!("log file {}: {e}", log.display())))?;

        if !exe.is_file() {
            return Err(spawn_err("no such file".to_owned()));
        }
        let python = watchdog_python(&exe, env)?;
        let mut cmd = Command::new(&python);
        cmd.args(["-I", "-u", "-c", WATCHDOG])
            .arg(format!("{:.3}", config.stop_grace.as_secs_f64()))
            .arg(&exe)
            .arg("serve")
            .arg("--model-path")
            .arg(&model_dir)
            .args(["--devices", &config.devices])
            .args(["--host", "127.0.0.1"])
            .args(["--port", &port.to_string()]);
        if let Some(q) = &config.quantization_encoding {
            cmd.args(["--quantization-encoding", q]);
        }
        if let Some(b) = config.max_batch_size {
            cmd.args(["--max-batch-size", &b.to_string()]);
        }
        if let Some(l) = config.max_length {
            cmd.args(["--max-length", &l.to_string()]);
        }
        if let Some(n) = &config.served_model_name {
            cmd.args(["--served-model-name", n]);
        }
        cmd.args(&config.extra_args)
            .env("HF_HUB_OFFLINE", "1")
            .env("MAX_SERVE_DISABLE_TELEMETRY", "1")
            .env("XDG_CACHE_HOME", &cache)
            .envs(config.extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let t0 = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_err(format!("watchdog {}: {e}", python.display())))?;
        let Some(lifeline) = child.stdin.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err("the watchdog has no stdin pipe".to_owned()));
        };
        let pgid = child.id();
        tracing::info!(
            pgid,
            watchdog = %python.display(),
            port,
            model = %config.model_dir.display(),
            log = %log.display(),
            "max serve spawned; waiting for it to compile the model and answer"
        );
        let shared = Arc::new(Shared {
            child: Mutex::new(child),
            _lifeline: lifeline,
            exit: Mutex::new(None),
            log: log.clone(),
            pgid,
        });
        let url = format!("http://127.0.0.1:{port}");
        let mut server = MaxServer {
            shared,
            url,
            port,
            models: Vec::new(),
            startup: Duration::ZERO,
            stop_grace: config.stop_grace,
        };
        let probe = MaxClient::with_config(
            &server.url,
            MaxClientConfig {
                connect_timeout: Duration::from_millis(500),
                request_timeout: Duration::from_secs(2),
                connect_retries: 0,
                ..MaxClientConfig::default()
            },
        );
        let mut next_report = Duration::from_secs(10);
        loop {
            if let Some(status) = server.shared.exited() {
                server.shared.signal_group("KILL");
                tracing::warn!(%status, elapsed_s = t0.elapsed().as_secs_f64(), "max serve exited before it was ready");
                return Err(MaxError::ServerExited {
                    status,
                    waited: t0.elapsed(),
                    log: log.clone(),
                    tail: log_tail(&log),
                });
            }
            let last_probe = match probe.models() {
                Ok(models) if !models.is_empty() => {
                    server.models = models;
                    server.startup = t0.elapsed();
                    tracing::info!(
                        elapsed_s = server.startup.as_secs_f64(),
                        models = ?server.models,
                        url = %server.url,
                        "max serve ready"
                    );
                    return Ok(server);
                }
                Ok(_) => "an empty model list".to_owned(),
                Err(e) => e.to_string(),
            };
            if t0.elapsed() >= next_report {
                // A cold start compiles the graph for minutes: say where it is.
                let tail = log_tail(&log);
                tracing::info!(
                    elapsed_s = t0.elapsed().as_secs_f64(),
                    last_log_line = tail.lines().last().unwrap_or(""),
                    "max serve still starting (a cold start compiles the model, ~3 minutes on a CPU)"
                );
                next_report += Duration::from_secs(10);
            }
            if t0.elapsed() >= config.start_timeout {
                tracing::warn!(
                    waited_s = config.start_timeout.as_secs_f64(),
                    "max serve start timed out; stopping it"
                );
                server.shared.stop(server.stop_grace);
                return Err(MaxError::StartTimeout {
                    waited: config.start_timeout,
                    last_probe,
                    log: log.clone(),
                    tail: log_tail(&log),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The model ids `GET /v1/models` listed when the server became ready.
    pub fn model_ids(&self) -> &[String] {
        &self.models
    }

    /// The first served model id.
    pub fn model_id(&self) -> &str {
        self.models.first().map_or("", String::as_str)
    }

    /// How long the start took (spawn to first model list).
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// The server's log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.shared.log
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.shared.log)
    }

    /// The process group id of the server: the pid of its watchdog, whose child is
    /// `max serve` (see [`WATCHDOG`]).
    pub fn pgid(&self) -> u32 {
        self.shared.pgid
    }

    /// Whether `max serve` is still running.
    pub fn is_running(&self) -> bool {
        self.shared.exited().is_none()
    }

    /// How `max serve` ended (`exit status: 1`, `signal: 9 (SIGKILL)`), once it has.
    pub fn exit_status(&self) -> Option<String> {
        self.shared.exited()
    }

    /// A client with the default config; it reports [`MaxError::ServerDied`] once this server
    /// is gone.
    pub fn client(&self) -> MaxClient {
        self.client_with(MaxClientConfig::default())
    }

    /// A client with `config`, watching this server.
    pub fn client_with(&self, config: MaxClientConfig) -> MaxClient {
        MaxClient::with_config(&self.url, config).watching(ServerWatch {
            shared: Arc::downgrade(&self.shared),
        })
    }

    /// SIGKILL the whole process group now, without waiting (the handle stays; for tests of
    /// a crashing server). [`Drop`] still reaps it.
    pub fn kill(&self) {
        self.shared.signal_group("KILL");
    }

    /// Stop the server (SIGTERM to the group, SIGKILL after the grace period) and return its
    /// exit status.
    pub fn stop(self) -> String {
        self.shared.stop(self.stop_grace)
    }
}

impl Drop for MaxServer {
    fn drop(&mut self) {
        self.shared.stop(self.stop_grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skillgen_runtime::env::MapEnv;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("max");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn model_dir(dir: &Path) -> PathBuf {
        let m = dir.join("model");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("config.json"), "{}").unwrap();
        m
    }

    #[test]
    fn finds_executable_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(dir.path(), "");
        let env = MapEnv::from_pairs(&[(vars::SKILLGEN_MAX_BIN, exe.to_str().unwrap())]);
        assert_eq!(find_max_executable(&env).unwrap(), exe);
        let env = MapEnv::from_pairs(&[(vars::SKILLGEN_MAX_BIN, "/nonexistent/max")]);
        let e = find_max_executable(&env).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/max"), "{e}");
        let home = tempfile::tempdir().unwrap();
        let env = MapEnv::from_pairs(&[("HOME", home.path().to_str().unwrap())]);
        let e = find_max_executable(&env).unwrap_err();
        assert!(e.to_string().contains("venv-max"), "{e}");
        let venv = home.path().join(DEFAULT_VENV_MAX);
        std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
        std::fs::write(&venv, "").unwrap();
        assert_eq!(find_max_executable(&env).unwrap(), venv);
    }

    #[test]
    fn early_exit_is_reported_at_once_with_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(
            dir.path(),
            "echo \"args: $*\"; echo \"cache=$XDG_CACHE_HOME offline=$HF_HUB_OFFLINE\"; echo boom >&2; exit 3",
        );
        let mut cfg = MaxServerConfig::new(model_dir(dir.path()));
        cfg.exe = Some(exe);
        cfg.cache_dir = Some(dir.path().join("cache"));
        cfg.log_path = Some(dir.path().join("serve.log"));
        cfg.max_batch_size = Some(32);
        let t = Instant::now();
        let e = MaxServer::start(&cfg, &MapEnv::empty()).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let MaxError::ServerExited { status, tail, .. } = &e else {
            panic!("{e}")
        };
        assert!(status.contains('3'), "{status}");
        assert!(tail.contains("boom"), "{tail}");
        assert!(tail.contains("--max-batch-size 32"), "{tail}");
        assert!(tail.contains("--host 127.0.0.1"), "{tail}");
        assert!(tail.contains("offline=1"), "{tail}");
        assert!(tail.contains("/cache"), "{tail}");
    }

    #[test]
    fn silent_server_hits_the_start_timeout_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        // A child in the same group that would outlive the parent without a group kill.
        let pidfile = dir.path().join("child.pid");
        let exe = script(
            dir.path(),
            &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
        );
        let mut cfg = MaxServerConfig::new(model_dir(dir.path()));
        cfg.exe = Some(exe);
        cfg.cache_dir = Some(dir.path().join("cache"));
        // Long enough for the watchdog's Python and the script to start on a loaded machine.
        cfg.start_timeout = Duration::from_secs(3);
        cfg.stop_grace = Duration::from_secs(2);
        let t = Instant::now();
        let e = MaxServer::start(&cfg, &MapEnv::empty()).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(matches!(e, MaxError::StartTimeout { .. }), "{e}");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        // Gone, or a zombie waiting for its new parent to reap it.
        let alive = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        assert!(!alive, "the grandchild {pid} survived");
    }

    #[test]
    fn the_watchdog_runs_on_the_python_of_the_shebang() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let venv_python = bin.join("python3.11");
        std::fs::write(&venv_python, "").unwrap();
        let path_python = bin.join("python3");
        std::fs::write(&path_python, "").unwrap();
        let env = MapEnv::from_pairs(&[("PATH", bin.to_str().unwrap())]);
        let exe = dir.path().join("max");
        // A venv's console script.
        std::fs::write(&exe, format!("#!{}\nimport sys\n", venv_python.display())).unwrap();
        assert_eq!(watchdog_python(&exe, &env).unwrap(), venv_python);
        // `env python3`: from PATH.
        std::fs::write(&exe, "#!/usr/bin/env -S python3 -u\n").unwrap();
        assert_eq!(watchdog_python(&exe, &env).unwrap(), path_python);
        // Not a Python script: python3 from PATH.
        std::fs::write(&exe, "#!/bin/sh\nexit 0\n").unwrap();
        assert_eq!(watchdog_python(&exe, &env).unwrap(), path_python);
        std::fs::write(&exe, [0x7f, b'E', b'L', b'F']).unwrap();
        assert_eq!(watchdog_python(&exe, &env).unwrap(), path_python);
    }

    #[test]
    fn a_gguf_model_is_refused_typed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.Q4_1.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let exe = script(dir.path(), "exit 3");
        for path in [file.clone(), dir.path().to_path_buf()] {
            let mut cfg = MaxServerConfig::new(&path);
            cfg.exe = Some(exe.clone());
            let e = MaxServer::start(&cfg, &MapEnv::empty()).unwrap_err();
            let MaxError::GgufUnsupported { path: got, reason } = &e else {
                panic!("{e}")
            };
            assert_eq!(got, &std::fs::canonicalize(&file).unwrap());
            assert!(reason.contains("KeyError: <GGMLQuantizationType.Q4_1: 3>"));
        }
    }

    #[test]
    fn missing_model_dir_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = MaxServerConfig::new(dir.path().join("nope"));
        cfg.exe = Some(script(dir.path(), ""));
        assert!(matches!(
            MaxServer::start(&cfg, &MapEnv::empty()),
            Err(MaxError::ModelDir { .. })
        ));
    }
}
