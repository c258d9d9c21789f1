//! The watchdog that keeps a `max serve` started by [`MaxServer::start`] from outliving the
//! process that started it, tested for real with processes and signals, without MAX.
//!
//! The server is a stand-in `max` executable (a Python script answering `GET /v1/models` and
//! keeping a `sleep` worker in its process group, as MAX keeps its model worker), passed as
//! [`MaxServerConfig::exe`]: everything else is the product's code path, watchdog included.
//! The same check against a real `max serve` is `tests/tests/max_watchdog.rs`.
//!
//! The SIGKILL test re-executes this test binary as the child that starts the server
//! ([`CHILD`] set), then SIGKILLs that child and watches the server's process group vanish.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skillgen_max::{MaxServer, MaxServerConfig};
use skillgen_runtime::env::ProcessEnv;

/// Set (to the test's scratch directory) in the child that starts the server.
const CHILD: &str = "SKILLGEN_MAX_WATCHDOG_TEST_CHILD";

/// A stand-in for `max serve`: answers `GET /v1/models` with one model, keeps a `sleep 600`
/// worker in its process group, and writes "SERVER_PID WORKER_PID" to `$STAND_IN_STATE/pids`.
const STAND_IN: &str = r#"#!/usr/bin/env python3
import http.server, json, os, subprocess, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
worker = subprocess.Popen(["sleep", "600"])
with open(os.path.join(os.environ["STAND_IN_STATE"], "pids"), "w") as f:
    f.write(f"{os.getpid()} {worker.pid}\n")
class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "stand-in", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Models).serve_forever()
"#;

/// The stand-in `max` and a model directory under `dir`, and the config serving it.
fn config(dir: &Path) -> MaxServerConfig {
    let exe = dir.join("max");
    std::fs::write(&exe, STAND_IN).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let mut cfg = MaxServerConfig::new(&model);
    cfg.exe = Some(exe);
    cfg.cache_dir = Some(dir.join("cache"));
    cfg.log_path = Some(dir.join("serve.log"));
    cfg.start_timeout = Duration::from_secs(60);
    cfg.stop_grace = Duration::from_secs(3);
    cfg.extra_env = vec![("STAND_IN_STATE".to_owned(), dir.display().to_string())];
    cfg
}

/// The live (not zombie) processes of process group `pgid`: (pid, state letter, command).
fn group_members(pgid: u32) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            out.push((pid, fields[0].to_owned(), stat[open + 1..close].to_owned()));
        }
    }
    out
}

/// Waits up to `limit` for group `pgid` to be empty; returns what is left.
fn wait_group_gone(pgid: u32, limit: Duration) -> Vec<(u32, String, String)> {
    let t = Instant::now();
    loop {
        let left = group_members(pgid);
        if left.is_empty() || t.elapsed() >= limit {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills what a failed test left behind.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .status();
}

fn read_pids(dir: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(dir.join("pids")).unwrap();
    let mut it = text.split_whitespace().map(|p| p.parse::<u32>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// The child: start the server, say its process group, then wait to be killed.
fn child_main(dir: PathBuf) {
    match MaxServer::start(&config(&dir), &ProcessEnv) {
        Ok(server) => {
            println!("\nPGID {}", server.pgid());
            // Killed long before this ends; bounded so a broken parent does not hang the run.
            std::thread::sleep(Duration::from_secs(120));
            drop(server);
        }
        Err(e) => println!("\nERROR {}", e.to_string().replace('\n', " | ")),
    }
}

#[test]
fn the_server_group_dies_when_the_process_that_started_it_is_sigkilled() {
    if let Some(dir) = std::env::var_os(CHILD) {
        child_main(PathBuf::from(dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_server_group_dies_when_the_process_that_started_it_is_sigkilled",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut pgid = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("PGID ") {
            pgid = Some(p.trim().parse::<u32>().unwrap());
            break;
        }
        if let Some(e) = line.strip_prefix("ERROR ") {
            let _ = child.kill();
            panic!("the child could not start the stand-in server: {e}");
        }
    }
    let Some(pgid) = pgid else {
        let _ = child.kill();
        panic!("the child exited without starting the server");
    };
    let (server_pid, worker_pid) = read_pids(tmp.path());
    let before = group_members(pgid);
    let pids: Vec<u32> = before.iter().map(|m| m.0).collect();
    assert!(
        pids.contains(&pgid) && pids.contains(&server_pid) && pids.contains(&worker_pid),
        "watchdog {pgid}, server {server_pid} and worker {worker_pid} should all be in the group: {before:?}"
    );

    // SIGKILL: the child runs no destructor, closes nothing itself.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let t = Instant::now();
    let left = wait_group_gone(pgid, Duration::from_secs(10));
    let took = t.elapsed();
    if !left.is_empty() {
        kill_group(pgid);
    }
    assert!(
        left.is_empty(),
        "after the parent was SIGKILLed ({status}), process group {pgid} still has {left:?} after {took:?}"
    );
    eprintln!(
        "[watchdog] parent SIGKILLed ({status}): server group {pgid} ({} processes) gone in {took:.2?}",
        before.len()
    );
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
    assert!(
        log.contains("the process that started this server is gone"),
        "the watchdog says why it stopped the server: {log}"
    );
}

#[test]
fn a_server_that_dies_alone_is_seen_dead_with_its_signal_and_its_workers_go() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MaxServer::start(&config(tmp.path()), &ProcessEnv).unwrap();
    assert_eq!(server.model_id(), "stand-in");
    assert!(server.is_running());
    assert_eq!(server.exit_status(), None);
    let pgid = server.pgid();
    let (server_pid, worker_pid) = read_pids(tmp.path());
    assert_ne!(server_pid, pgid, "the server runs under the watchdog");
    // Kill the server process only (as an OOM kill would): the watchdog follows it out with
    // its status, and its worker does not survive.
    Command::new("kill")
        .args(["-s", "KILL", &server_pid.to_string()])
        .status()
        .unwrap();
    let t = Instant::now();
    while server.is_running() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = server.exit_status().expect("seen dead within 5 s");
    assert!(
        status.contains("SIGKILL") || status.contains("signal: 9"),
        "{status}"
    );
    let left = wait_group_gone(pgid, Duration::from_secs(5));
    assert!(
        left.iter().all(|m| m.0 != worker_pid),
        "the worker {worker_pid} survived: {left:?}"
    );
    // The client says so.
    let e = server.client().models().unwrap_err();
    assert!(e.to_string().contains("is gone"), "{e}");
    drop(server);
    assert!(wait_group_gone(pgid, Duration::from_secs(5)).is_empty());
}

#[test]
fn dropping_the_handle_stops_the_whole_group_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let server = MaxServer::start(&config(tmp.path()), &ProcessEnv).unwrap();
    let pgid = server.pgid();
    assert!(group_members(pgid).len() >= 3, "{:?}", group_members(pgid));
    let t = Instant::now();
    drop(server);
    let left = wait_group_gone(pgid, Duration::from_secs(5));
    assert!(left.is_empty(), "{left:?}");
    // SIGTERM reaches the stand-in at once: well within the 3 s grace.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
