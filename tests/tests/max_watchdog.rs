//! A real `max serve` (MAX 26.7, the llama fixture, CPU) does not outlive the process that
//! started it, even when that process is SIGKILLed: the watchdog of `skillgen_max::MaxServer`
//! (see `backends/max/src/server.rs`) stops its whole process group, MAX's worker processes
//! included. The same mechanism without MAX: `backends/max/tests/watchdog.rs`.
//!
//! The test re-executes this test binary as the child that starts the server
//! (`SKILLGEN_MAX_WATCHDOG_CHILD` set), SIGKILLs the child once the server answers, and waits
//! for the group to vanish. Needs MAX (`SKILLGEN_MAX_BIN`, `max` on `PATH`, or
//! `~/.cache/skillgen/venv-max/bin/max`); a warm compile cache makes the start ~20 s (cold:
//! ~250 s). Run:
//!
//! ```text
//! cargo test -p skillgen-tests --test max_watchdog -- --nocapture
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skillgen_max::{MaxServer, MaxServerConfig, find_max_executable};
use skillgen_runtime::{EnvSource, ProcessEnv};

const CHILD: &str = "SKILLGEN_MAX_WATCHDOG_CHILD";

/// The live (not zombie) processes of process group `pgid`: (pid, command).
fn group_members(pgid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if f.len() > 2 && f[2] == pgid.to_string() && f[0] != "Z" {
            out.push((pid, stat[open + 1..close].to_owned()));
        }
    }
    out
}

fn child_main(exe: PathBuf) {
    let mut cfg = MaxServerConfig::new(skillgen_test_support::repo().join("fixtures/max/llama"));
    cfg.exe = Some(exe);
    cfg.cache_dir = ProcessEnv
        .var("SKILLGEN_MAX_CACHE")
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from);
    cfg.start_timeout = Duration::from_secs(600);
    match MaxServer::start(&cfg, &ProcessEnv) {
        Ok(server) => {
            println!(
                "\nPGID {} {:.1}",
                server.pgid(),
                server.startup().as_secs_f64()
            );
            std::thread::sleep(Duration::from_secs(900));
            drop(server);
        }
        Err(e) => println!("\nERROR {}", e.to_string().replace('\n', " | ")),
    }
}

#[test]
#[cfg_attr(
    skillgen_no_max,
    ignore = "needs MAX 26.7 (no `max` found when this test was built): pip install -c fixtures/max/constraints.txt modular==26.7.0 into ~/.cache/skillgen/venv-max or set SKILLGEN_MAX_BIN, then `cargo test -p skillgen-tests --test max_watchdog -- --nocapture`"
)]
fn a_real_max_serve_dies_with_the_process_that_started_it() {
    let exe = match find_max_executable(&ProcessEnv) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED: MAX is not installed ({e})");
            return;
        }
    };
    if std::env::var_os(CHILD).is_some() {
        child_main(exe);
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_real_max_serve_dies_with_the_process_that_started_it",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pgid = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("PGID ") {
            let mut it = rest.split_whitespace();
            pgid = it.next().and_then(|p| p.parse::<u32>().ok());
            eprintln!(
                "[max_watchdog] max serve ready in {} s",
                it.next().unwrap_or("?")
            );
            break;
        }
        if let Some(e) = line.strip_prefix("ERROR ") {
            let _ = child.kill();
            panic!("the child could not start max serve: {e}");
        }
    }
    let Some(pgid) = pgid else {
        let _ = child.kill();
        panic!("the child exited without starting max serve");
    };
    let before = group_members(pgid);
    eprintln!("[max_watchdog] process group {pgid}: {before:?}");
    assert!(
        before.len() >= 3,
        "watchdog, max serve and its workers: {before:?}"
    );

    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    let t = Instant::now();
    let mut left = group_members(pgid);
    while !left.is_empty() && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        left = group_members(pgid);
    }
    let took = t.elapsed();
    if !left.is_empty() {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pgid}")])
            .status();
    }
    assert!(
        left.is_empty(),
        "parent SIGKILLed ({status}); after {took:?} group {pgid} still has {left:?}"
    );
    eprintln!(
        "[max_watchdog] parent SIGKILLed ({status}): {} processes of max serve's group gone in {took:.2?}",
        before.len()
    );
}
