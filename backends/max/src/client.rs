//! `MaxClient`: the OpenAI-compatible HTTP API of `max serve`, over ureq, every call bounded.

use std::io::BufReader;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::MaxError;
use crate::pooling::{
    Correction, MaxEmbeddings, SentenceHead, correct_bert_embeddings, looks_token_summed,
};
use crate::server::ServerWatch;
use crate::sse::{SseItem, SseReader};
use skillgen_runtime::env::{EnvSource, vars};
use skillgen_runtime::request::{Pooling, TextBatch};
use skillgen_runtime::stream::{earliest_stop, held_back};

/// Timeouts and retries of a [`MaxClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxClientConfig {
    /// TCP connect timeout, per attempt.
    pub connect_timeout: Duration,
    /// Whole-call timeout of a non-streaming request (connect, send, wait, read the body).
    pub request_timeout: Duration,
    /// Streaming: the longest wait for the next bytes (also for the response headers).
    pub stream_read_timeout: Duration,
    /// Streaming: the longest a whole stream may take.
    pub stream_timeout: Duration,
    /// Extra attempts after a refused / failed connection (never after a response, e.g. 4xx).
    pub connect_retries: u32,
    /// Wait before the first retry; doubled for each later one.
    pub retry_backoff: Duration,
}

impl Default for MaxClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(120),
            stream_read_timeout: Duration::from_secs(60),
            stream_timeout: Duration::from_secs(600),
            connect_retries: 2,
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// A client of one `max serve` endpoint.
#[derive(Debug, Clone)]
pub struct MaxClient {
    base: String,
    config: MaxClientConfig,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
    watch: Option<ServerWatch>,
}

/// A completion prompt: text, or token ids (MAX accepts both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids.
    TokenIds(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_owned())
    }
}
impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}
impl From<Vec<u32>> for Prompt {
    fn from(ids: Vec<u32>) -> Self {
        Prompt::TokenIds(ids)
    }
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionRequest {
    /// The served model id.
    pub model: String,
    /// The prompt.
    pub prompt: Prompt,
    /// The most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature (`None`: the server's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Stop strings (cut from the text by the client: MAX leaves them in).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Sampling seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k sampling (a MAX extension of the OpenAI API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Ask MAX to return the generated token ids (`return_token_ids`, a MAX extension).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub return_token_ids: bool,
}

impl CompletionRequest {
    /// A request with the server's default sampling and no stop strings.
    pub fn new(model: impl Into<String>, prompt: impl Into<Prompt>, max_tokens: u32) -> Self {
        Self {
            model: model.into(),
            prompt: prompt.into(),
            max_tokens,
            temperature: None,
            stop: Vec::new(),
            seed: None,
            top_p: None,
            top_k: None,
            return_token_ids: false,
        }
    }

    /// Set the temperature.
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Add a stop string.
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        self.stop.push(s.into());
        self
    }

    /// Set the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    fn validate(&self) -> Result<(), MaxError> {
        if let Prompt::TokenIds(ids) = &self.prompt
            && ids.is_empty()
        {
            return Err(MaxError::InvalidRequest("empty token-id prompt".to_owned()));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(MaxError::InvalidRequest("empty stop string".to_owned()));
        }
        Ok(())
    }
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Completion {
    /// The text, cut before the first stop string.
    pub text: String,
    /// The text as the server sent it.
    pub raw_text: String,
    /// The server's finish reason (`stop`, `length`, ...).
    pub finish_reason: Option<String>,
    /// The stop string the client cut (MAX leaves stop strings in the text).
    pub stop_cut: Option<String>,
    /// The generated token ids, when [`CompletionRequest::return_token_ids`] was set (all of
    /// them, including those of a cut stop string and special tokens dropped from the text).
    pub token_ids: Option<Vec<u32>>,
}

/// One piece of a streamed completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompletionChunk {
    /// New text (may be empty on the last chunk).
    pub text: String,
    /// Set on the last chunk: the server's finish reason, or `stop` when the client cut a stop
    /// string.
    pub finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}
#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

#[derive(Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingEntry>,
}
#[derive(Deserialize)]
struct EmbeddingEntry {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

#[derive(Deserialize)]
struct CompletionBody {
    #[serde(default)]
    choices: Vec<Choice>,
}
#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    text: String,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    token_ids: Option<Vec<u32>>,
}

const BODY_LIMIT: u64 = 256 * 1024 * 1024;
const SNIPPET: usize = 2048;

fn snippet(s: &str) -> String {
    if s.len() <= SNIPPET {
        return s.to_owned();
    }
    let mut end = SNIPPET;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// `base` without a trailing `/` or `/v1`.
fn normalize_base(url: &str) -> String {
    let t = url.trim().trim_end_matches('/');
    t.strip_suffix("/v1").unwrap_or(t).to_owned()
}

fn timeout_name(t: ureq::Timeout) -> &'static str {
    match t {
        ureq::Timeout::Connect => "connect",
        ureq::Timeout::Resolve => "resolve",
        ureq::Timeout::PerRead => "read",
        ureq::Timeout::RecvResponse => "response",
        ureq::Timeout::RecvBody => "body",
        ureq::Timeout::SendRequest | ureq::Timeout::SendBody => "send",
        _ => "request",
    }
}

/// How a ureq failure is classified.
enum Failure {
    /// No connection was made: safe to retry.
    Connect(String),
    /// Anything else.
    Other(MaxError),
}

impl MaxClient {
    /// A client of the server at `url` (e.g. `http://127.0.0.1:8000`; a trailing `/v1` is
    /// accepted) with the default [`MaxClientConfig`].
    pub fn new(url: &str) -> Self {
        Self::with_config(url, MaxClientConfig::default())
    }

    /// A client of the server at `url` with `config`.
    pub fn with_config(url: &str, config: MaxClientConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.request_timeout))
            .build()
            .into();
        let stream_agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_recv_response(Some(config.stream_read_timeout))
            .timeout_per_read(Some(config.stream_read_timeout))
            .timeout_global(Some(config.stream_timeout))
            .build()
            .into();
        Self {
            base: normalize_base(url),
            config,
            agent,
            stream_agent,
            watch: None,
        }
    }

    /// A client of `MAX_SERVE_URL`, or `None` when it is unset or empty.
    pub fn from_env(env: &dyn EnvSource, config: MaxClientConfig) -> Option<Self> {
        env.var(vars::MAX_SERVE_URL)
            .filter(|u| !u.trim().is_empty())
            .map(|u| Self::with_config(&u, config))
    }

    pub(crate) fn watching(mut self, watch: ServerWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The configuration.
    pub fn config(&self) -> &MaxClientConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `ServerDied` when this client watches a server that is gone.
    fn check_alive(&self) -> Result<(), MaxError> {
        match &self.watch {
            Some(w) => w.check(&self.base),
            None => Ok(()),
        }
    }

    /// Prefer "the server died" over a connection error when it did.
    fn explain(&self, e: MaxError) -> MaxError {
        if e.is_connection()
            || matches!(e, MaxError::Transport { .. } | MaxError::BadResponse { .. })
        {
            // Give a dying process a moment to be reaped, so the status is known.
            for _ in 0..5 {
                if let Err(dead) = self.check_alive() {
                    return dead;
                }
                if self.watch.is_none() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        e
    }

    fn classify(&self, url: &str, e: ureq::Error, timeout: Duration) -> Failure {
        match e {
            ureq::Error::ConnectionFailed => Failure::Connect("connection failed".to_owned()),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Failure::Connect(io.to_string())
            }
            ureq::Error::HostNotFound => Failure::Other(MaxError::Unreachable {
                url: url.to_owned(),
                attempts: 1,
                detail: "host not found".to_owned(),
            }),
            ureq::Error::Timeout(t) => Failure::Other(MaxError::Timeout {
                url: url.to_owned(),
                which: timeout_name(t),
                timeout: if t == ureq::Timeout::Connect {
                    self.config.connect_timeout
                } else {
                    timeout
                },
                detail: e.to_string(),
            }),
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Failure::Other(MaxError::Timeout {
                    url: url.to_owned(),
                    which: "request",
                    timeout,
                    detail: io.to_string(),
                })
            }
            other => Failure::Other(MaxError::Transport {
                url: url.to_owned(),
                detail: other.to_string(),
            }),
        }
    }

    /// Send with retries on connection failures; returns the response whatever its status.
    fn send(
        &self,
        url: &str,
        streaming: bool,
        body: Option<&serde_json::Value>,
    ) -> Result<ureq::http::Response<ureq::Body>, MaxError> {
        self.check_alive()?;
        let agent = if streaming {
            &self.stream_agent
        } else {
            &self.agent
        };
        let timeout = if streaming {
            self.config.stream_read_timeout
        } else {
            self.config.request_timeout
        };
        let mut backoff = self.config.retry_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match body {
                Some(b) => agent.post(url).send_json(b),
                None => agent.get(url).call(),
            };
            match result {
                Ok(r) => return Ok(r),
                Err(e) => match self.classify(url, e, timeout) {
                    Failure::Connect(detail) => {
                        if attempt > self.config.connect_retries {
                            return Err(self.explain(MaxError::Unreachable {
                                url: url.to_owned(),
                                attempts: attempt,
                                detail,
                            }));
                        }
                        self.check_alive()?;
                        std::thread::sleep(backoff);
                        backoff = backoff.saturating_mul(2);
                    }
                    Failure::Other(e) => return Err(self.explain(e)),
                },
            }
        }
    }

    /// A non-streaming call: the JSON body of a 2xx answer.
    fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, MaxError> {
        let url = self.url(path);
        let resp = self.send(&url, false, body)?;
        let status = resp.status().as_u16();
        let text = resp
            .into_body()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(
                |e| match self.classify(&url, e, self.config.request_timeout) {
                    Failure::Connect(detail) => MaxError::Transport {
                        url: url.clone(),
                        detail,
                    },
                    Failure::Other(e) => self.explain(e),
                },
            )?;
        if !(200..300).contains(&status) {
            return Err(MaxError::Http {
                url,
                status,
                body: snippet(&text),
            });
        }
        serde_json::from_str(&text).map_err(|e| MaxError::MalformedJson {
            url,
            detail: e.to_string(),
            body: snippet(&text),
        })
    }

    /// `GET /v1/models`: the served model ids.
    pub fn models(&self) -> Result<Vec<String>, MaxError> {
        let list: ModelList = self.call_json("/v1/models", None)?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }

    /// `POST /v1/embeddings`: the vectors exactly as MAX returns them (for `bert`: token sums,
    /// see [`correct_bert_embeddings`]), in input order. Checks one vector per input, all of
    /// one non-zero dimension, finite. MAX tokenizes the texts itself and does not truncate: a
    /// text longer than the server's `--max-length` fails with HTTP 500
    /// `Internal server error.`; send token ids ([`MaxClient::embeddings_ids`]) to control
    /// truncation.
    pub fn embeddings(&self, model: &str, inputs: &[&str]) -> Result<Vec<Vec<f32>>, MaxError> {
        self.embeddings_of(model, serde_json::json!(inputs), inputs.len())
    }

    /// [`MaxClient::embeddings`] for pre-tokenized inputs (with the special tokens: MAX adds
    /// none to token ids).
    pub fn embeddings_ids(
        &self,
        model: &str,
        inputs: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>, MaxError> {
        if let Some(i) = inputs.iter().position(Vec::is_empty) {
            return Err(MaxError::InvalidRequest(format!(
                "input {i} has no token ids"
            )));
        }
        self.embeddings_of(model, serde_json::json!(inputs), inputs.len())
    }

    fn embeddings_of(
        &self,
        model: &str,
        input: serde_json::Value,
        n: usize,
    ) -> Result<Vec<Vec<f32>>, MaxError> {
        if n == 0 {
            return Err(MaxError::InvalidRequest("no inputs to embed".to_owned()));
        }
        let body = serde_json::json!({ "model": model, "input": input });
        let list: EmbeddingList = self.call_json("/v1/embeddings", Some(&body))?;
        let url = self.url("/v1/embeddings");
        let bad = |detail: String| MaxError::BadResponse {
            url: url.clone(),
            detail,
        };
        if list.data.len() != n {
            return Err(bad(format!(
                "{} embedding(s) for {n} input(s)",
                list.data.len()
            )));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
        for (pos, e) in list.data.into_iter().enumerate() {
            let i = e.index.unwrap_or(pos);
            match out.get_mut(i) {
                Some(slot @ None) => *slot = Some(e.embedding),
                Some(Some(_)) => return Err(bad(format!("index {i} appears twice"))),
                None => return Err(bad(format!("index {i} out of range"))),
            }
        }
        let out: Vec<Vec<f32>> = out.into_iter().flatten().collect();
        let dim = out[0].len();
        if dim == 0 {
            return Err(bad("empty embedding vector".to_owned()));
        }
        for (i, v) in out.iter().enumerate() {
            if v.len() != dim {
                return Err(bad(format!(
                    "embedding {i} has dimension {}, embedding 0 has {dim}",
                    v.len()
                )));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("embedding {i} has a non-finite value")));
            }
        }
        Ok(out)
    }

    /// BERT sentence embeddings following the model's `head` (see
    /// [`super::sentence_transformers_head`]): [`MaxClient::embeddings`] (or
    /// [`MaxClient::embeddings_ids`]), then, when the vectors are MAX's token sums,
    /// [`correct_bert_embeddings`]; the correction is recorded in
    /// [`MaxEmbeddings::correction`].
    pub fn embed_bert(
        &self,
        model: &str,
        input: &TextBatch,
        head: SentenceHead,
    ) -> Result<MaxEmbeddings, MaxError> {
        let raw = match input {
            TextBatch::Texts(t) => {
                let t: Vec<&str> = t.iter().map(String::as_str).collect();
                self.embeddings(model, &t)?
            }
            TextBatch::TokenIds(ids) => self.embeddings_ids(model, ids)?,
        };
        let dim = raw[0].len();
        let (vectors, correction) = match (head.pooling, head.normalize) {
            (Pooling::Mean, true) if !looks_token_summed(&raw) => (raw, None),
            (pooling, normalize) => (
                correct_bert_embeddings(&raw, pooling, normalize)?,
                Some(Correction::L2NormalizedTokenSums),
            ),
        };
        Ok(MaxEmbeddings {
            vectors,
            dim,
            head,
            correction,
            model: model.to_owned(),
        })
    }

    /// `POST /v1/completions`, not streamed. Stop strings are cut from the text.
    pub fn completions(&self, req: &CompletionRequest) -> Result<Completion, MaxError> {
        req.validate()?;
        let body =
            serde_json::to_value(req).map_err(|e| MaxError::InvalidRequest(e.to_string()))?;
        let resp: CompletionBody = self.call_json("/v1/completions", Some(&body))?;
        let Some(choice) = resp.choices.into_iter().next() else {
            return Err(MaxError::BadResponse {
                url: self.url("/v1/completions"),
                detail: "no choices".to_owned(),
            });
        };
        let (text, stop_cut) = match earliest_stop(&choice.text, &req.stop) {
            Some((pos, s)) => (choice.text[..pos].to_owned(), Some(s.to_owned())),
            None => (choice.text.clone(), None),
        };
        Ok(Completion {
            text,
            raw_text: choice.text,
            finish_reason: choice.finish_reason,
            stop_cut,
            token_ids: choice.token_ids,
        })
    }

    /// `POST /v1/completions` with `stream: true`: an iterator of text chunks. Each wait for
    /// data is bounded by `stream_read_timeout`, the whole stream by `stream_timeout`. Stop
    /// strings are cut (text that could start a stop string is held back until it cannot).
    pub fn completions_stream(
        &self,
        req: &CompletionRequest,
    ) -> Result<CompletionStream, MaxError> {
        req.validate()?;
        let mut body =
            serde_json::to_value(req).map_err(|e| MaxError::InvalidRequest(e.to_string()))?;
        body["stream"] = serde_json::Value::Bool(true);
        let url = self.url("/v1/completions");
        let resp = self.send(&url, true, Some(&body))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp
                .into_body()
                .with_config()
                .limit(1024 * 1024)
                .read_to_string()
                .unwrap_or_else(|e| format!("(body unreadable: {e})"));
            return Err(MaxError::Http {
                url,
                status,
                body: snippet(&text),
            });
        }
        Ok(CompletionStream {
            client: self.clone(),
            url,
            reader: Some(SseReader::new(BufReader::new(
                resp.into_body().into_reader(),
            ))),
            stops: req.stop.clone(),
            pending: String::new(),
            finished: false,
        })
    }
}

/// A streamed completion; see [`MaxClient::completions_stream`]. Ends after the server's
/// `[DONE]`, a cut stop string, or the first error.
pub struct CompletionStream {
    client: MaxClient,
    url: String,
    reader: Option<SseReader<BufReader<ureq::BodyReader<'static>>>>,
    stops: Vec<String>,
    pending: String,
    finished: bool,
}

impl std::fmt::Debug for CompletionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompletionStream")
            .field("url", &self.url)
            .field("open", &self.reader.is_some())
            .field("finished", &self.finished)
            .finish()
    }
}

impl CompletionStream {
    fn fail(&mut self, e: MaxError) -> Option<Result<CompletionChunk, MaxError>> {
        self.finished = true;
        self.reader = None;
        Some(Err(e))
    }

    fn finish_with(&mut self, reason: Option<String>) -> Option<Result<CompletionChunk, MaxError>> {
        self.finished = true;
        self.reader = None;
        Some(Ok(CompletionChunk {
            text: std::mem::take(&mut self.pending),
            finish_reason: reason,
        }))
    }
}

impl Iterator for CompletionStream {
    type Item = Result<CompletionChunk, MaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.finished {
                return None;
            }
            let reader = self.reader.as_mut()?;
            let event = match reader.next_event() {
                Ok(ev) => ev,
                Err(io) => {
                    let e = if io.kind() == std::io::ErrorKind::TimedOut {
                        MaxError::Timeout {
                            url: self.url.clone(),
                            which: "stream read",
                            timeout: self.client.config.stream_read_timeout,
                            detail: io.to_string(),
                        }
                    } else {
                        MaxError::Transport {
                            url: self.url.clone(),
                            detail: format!("reading the event stream: {io}"),
                        }
                    };
                    let e = self.client.explain(e);
                    return self.fail(e);
                }
            };
            let data = match event {
                Some(SseItem::Data(d)) => d,
                Some(SseItem::Done) => return self.finish_with(None),
                None => {
                    let e = self.client.explain(MaxError::BadResponse {
                        url: self.url.clone(),
                        detail: "the event stream ended without `data: [DONE]`".to_owned(),
                    });
                    return self.fail(e);
                }
            };
            let value: serde_json::Value = match serde_json::from_str(&data) {
                Ok(v) => v,
                Err(e) => {
                    let e = MaxError::MalformedJson {
                        url: self.url.clone(),
                        detail: e.to_string(),
                        body: snippet(&data),
                    };
                    return self.fail(e);
                }
            };
            if let Some(err) = value.get("error") {
                let e = MaxError::BadResponse {
                    url: self.url.clone(),
                    detail: format!("error event: {err}"),
                };
                return self.fail(e);
            }
            let choice = value.get("choices").and_then(|c| c.get(0));
            let text = choice
                .and_then(|c| c.get("text"))
                .and_then(|t| t.as_str())
                .unwrap_or_default();
            let reason = choice
                .and_then(|c| c.get("finish_reason"))
                .and_then(|r| r.as_str())
                .map(str::to_owned);
            self.pending.push_str(text);
            if let Some((pos, _)) = earliest_stop(&self.pending, &self.stops) {
                self.pending.truncate(pos);
                return self.finish_with(Some("stop".to_owned()));
            }
            // Hold back what could still grow into a stop string.
            let emit = self.pending.len() - held_back(&self.pending, &self.stops);
            if emit > 0 || reason.is_some() {
                let rest = self.pending.split_off(emit);
                let text = std::mem::replace(&mut self.pending, rest);
                let text = if reason.is_some() {
                    // The server finished: nothing more can complete a stop string.
                    text + &std::mem::take(&mut self.pending)
                } else {
                    text
                };
                return Some(Ok(CompletionChunk {
                    text,
                    finish_reason: reason,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    /// Answers each connection with the next canned response; returns the base URL.
    fn serve(responses: Vec<(&'static str, String)>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for (status, body) in responses {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read headers + body (content-length) well enough for tests.
                loop {
                    let n = s.read(&mut buf).unwrap_or(0);
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let cl = text[..h]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= h + 4 + cl {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let ctype = if body.starts_with("data:") {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    fn fast() -> MaxClientConfig {
        MaxClientConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(800),
            stream_read_timeout: Duration::from_millis(800),
            stream_timeout: Duration::from_secs(2),
            connect_retries: 2,
            retry_backoff: Duration::from_millis(20),
        }
    }

    #[test]
    fn base_url_is_normalised() {
        assert_eq!(normalize_base("http://h:1/v1/"), "http://h:1");
        assert_eq!(normalize_base(" http://h:1/ "), "http://h:1");
    }

    #[test]
    fn embeddings_in_index_order_and_checked() {
        let url = serve(vec![
            (
                "200 OK",
                r#"{"data":[{"embedding":[3,4],"index":1},{"embedding":[1,0],"index":0}],"usage":{"prompt_tokens":0}}"#.into(),
            ),
            ("200 OK", r#"{"data":[{"embedding":[1,0],"index":0}]}"#.into()),
            (
                "200 OK",
                r#"{"data":[{"embedding":[1,0],"index":0},{"embedding":[1],"index":1}]}"#.into(),
            ),
            ("200 OK", "not json".into()),
            ("400 Bad Request", r#"{"detail":"Value error."}"#.into()),
        ]);
        let c = MaxClient::with_config(&url, fast());
        assert_eq!(
            c.embeddings("m", &["a", "b"]).unwrap(),
            vec![vec![1.0, 0.0], vec![3.0, 4.0]]
        );
        let e = c.embeddings("m", &["a", "b"]).unwrap_err();
        assert!(
            e.to_string().contains("1 embedding(s) for 2 input(s)"),
            "{e}"
        );
        let e = c.embeddings("m", &["a", "b"]).unwrap_err();
        assert!(e.to_string().contains("dimension 1"), "{e}");
        let e = c.embeddings("m", &["a"]).unwrap_err();
        assert!(matches!(e, MaxError::MalformedJson { .. }), "{e}");
        let e = c.embeddings("m", &["a"]).unwrap_err();
        assert_eq!(e.http_status(), Some(400), "{e}");
        assert!(e.to_string().contains("Value error."), "{e}");
        assert!(matches!(
            c.embeddings("m", &[]),
            Err(MaxError::InvalidRequest(_))
        ));
    }

    #[test]
    fn embed_bert_corrects_sums_and_records_it() {
        let url = serve(vec![
            (
                "200 OK",
                r#"{"data":[{"embedding":[3,4],"index":0}]}"#.into(),
            ),
            (
                "200 OK",
                r#"{"data":[{"embedding":[0.6,0.8],"index":0}]}"#.into(),
            ),
            (
                "200 OK",
                r#"{"data":[{"embedding":[3,4],"index":0}]}"#.into(),
            ),
        ]);
        let c = MaxClient::with_config(&url, fast());
        let head = SentenceHead {
            pooling: Pooling::Mean,
            normalize: true,
        };
        let e = c.embed_bert("m", &"a".into(), head).unwrap();
        assert_eq!(e.correction, Some(Correction::L2NormalizedTokenSums));
        assert!((e.vectors[0][0] - 0.6).abs() < 1e-6 && (e.vectors[0][1] - 0.8).abs() < 1e-6);
        let e = c.embed_bert("m", &"a".into(), head).unwrap();
        assert_eq!(e.correction, None, "unit vectors pass through");
        let cls = SentenceHead {
            pooling: Pooling::Cls,
            normalize: true,
        };
        assert!(matches!(
            c.embed_bert("m", &"a".into(), cls),
            Err(MaxError::PoolingUnrecoverable { .. })
        ));
    }

    #[test]
    fn closed_port_fails_fast_after_retries() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = MaxClient::with_config(&format!("http://127.0.0.1:{port}"), fast());
        let t = Instant::now();
        let e = c.models().unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        match e {
            MaxError::Unreachable { attempts, .. } => assert_eq!(attempts, 3),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = MaxClient::with_config(&format!("http://{}", l.local_addr().unwrap()), fast());
        let t = Instant::now();
        let e = c.embeddings("m", &["a"]).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert!(matches!(e, MaxError::Timeout { .. }), "{e}");
        drop(l);
    }

    fn sse(chunks: &[&str], done: bool) -> String {
        let mut s = String::new();
        for c in chunks {
            s += &format!(
                "data: {}\n\n",
                serde_json::json!({"choices":[{"index":0,"text":c,"finish_reason":null}]})
            );
        }
        if done {
            s += "data: [DONE]\n\n";
        }
        s
    }

    #[test]
    fn completions_cut_stop_strings() {
        let url = serve(vec![(
            "200 OK",
            r#"{"choices":[{"index":0,"text":"one two\nthree","finish_reason":"stop"}]}"#.into(),
        )]);
        let c = MaxClient::with_config(&url, fast());
        let req = CompletionRequest::new("m", vec![1, 2, 3], 8)
            .stop("\n")
            .temperature(0.0)
            .seed(7);
        let body = serde_json::to_value(&req).unwrap();
        assert_eq!(body["prompt"], serde_json::json!([1, 2, 3]));
        assert_eq!(body["stop"], serde_json::json!(["\n"]));
        let out = c.completions(&req).unwrap();
        assert_eq!(out.text, "one two");
        assert_eq!(out.raw_text, "one two\nthree");
        assert_eq!(out.stop_cut.as_deref(), Some("\n"));
    }

    #[test]
    fn stream_yields_chunks_and_cuts_stop_across_chunks() {
        let url = serve(vec![
            ("200 OK", sse(&["Hel", "lo", " wor", "ld"], true)),
            ("200 OK", sse(&["ab", "cE", "NDxyz", "more"], true)),
            ("200 OK", sse(&["x"], false)),
            ("400 Bad Request", r#"{"detail":"Value error."}"#.into()),
        ]);
        let c = MaxClient::with_config(&url, fast());
        let text: String = c
            .completions_stream(&CompletionRequest::new("m", "p", 4))
            .unwrap()
            .map(|r| r.unwrap().text)
            .collect();
        assert_eq!(text, "Hello world");

        let chunks: Vec<CompletionChunk> = c
            .completions_stream(&CompletionRequest::new("m", "p", 4).stop("END"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(text, "abc");
        assert_eq!(
            chunks.last().unwrap().finish_reason.as_deref(),
            Some("stop")
        );

        let items: Vec<_> = c
            .completions_stream(&CompletionRequest::new("m", "p", 4))
            .unwrap()
            .collect();
        assert!(
            matches!(items.last(), Some(Err(MaxError::BadResponse { .. }))),
            "{items:?}"
        );

        let e = c
            .completions_stream(&CompletionRequest::new("nope", "p", 4))
            .unwrap_err();
        assert_eq!(e.http_status(), Some(400));
    }
}
