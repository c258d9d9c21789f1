//! The MAX part of the capability report: what the server at `MAX_SERVE_URL` serves
//! (`GET /v1/models`, with a short timeout).

use std::time::Duration;

use serde::Deserialize;
use skillgen_runtime::caps::MaxServer;

/// How long the MAX server probe may take (connect + answer).
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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

#[cfg(test)]
mod tests {
    use super::*;
    use skillgen_runtime::env::{MapEnv, vars};
    use skillgen_runtime::{Capabilities, caps::ReportSource};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// The core's report completed by the MAX backend's probe.
    fn probe(env: &MapEnv) -> Capabilities {
        crate::backends().probe(env)
    }

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
        let caps = probe(&env);
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
}
