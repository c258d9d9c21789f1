//! The `mojo_max` target: which (architecture, task) pairs MAX serves, the server and client a
//! skill uses, and running [`Call`]s on them.
//!
//! A skill runs on MAX through, in order:
//! 1. the server at `MAX_SERVE_URL`, when it serves this model (its id matches the model type,
//!    a MAX architecture, `_name_or_path`, `architectures` or the directory name); else
//! 2. a `max serve` this process starts for the skill's model directory on first use (CPU,
//!    float32, `HF_HUB_OFFLINE=1`, telemetry off, compile cache in
//!    `~/.cache/skillgen/max-cache` or `SKILLGEN_MAX_CACHE`). The server belongs to the skill's
//!    state: it is stopped when the last clone of the state is dropped, and it never outlives
//!    this process (a watchdog stops it when this process dies, SIGKILL included: see
//!    [`crate::MaxServer`]). A server that fails to start is not retried for that state (every
//!    call falls back at once with the start error).
//!
//! A started server that dies (crash, OOM kill, `kill -9`) is restarted **once per skill
//! state**: the call that finds it dead — before sending, or because the request failed as it
//! died — starts a new one and runs on it. A second death is not restarted: that call and every
//! later one fall back, recorded as `max_failed` with a reason naming the death and the restart
//! already used. A server at `MAX_SERVE_URL` is not ours and is never restarted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use skillgen_runtime::{Capability, Task};

use skillgen_checkpoint::{
    Fields, load_tokenizer, read_json, sentence_max_len, sentence_transformers_head,
};
use skillgen_runtime::dispatch::SkipReason;
use skillgen_runtime::env::EnvSource;
use skillgen_runtime::request::{
    Call, EmbedRequest, Embeddings, FinishReason, GenerateRequest, Generation, Output, Pooling,
    Prompt, TextBatch,
};
use skillgen_runtime::{BackendKind, Capabilities, Model, SkillError, SkillInfo};

use crate::backend::served_matches;
use crate::{
    CompletionRequest, MaxClient, MaxClientConfig, MaxError, MaxServer, MaxServerConfig,
    SentenceHead, correct_bert_embeddings,
};

pub use skillgen_runtime::MaxJob;

/// `--max-batch-size` of a server started for embeddings; larger batches are split.
pub const EMBED_BATCH: usize = 32;
/// The longest wait for a server started here to answer (it is stopped after that).
pub const START_TIMEOUT: Duration = Duration::from_secs(600);
/// Environment variable overriding the compile cache directory of servers started here.
pub const SKILLGEN_MAX_CACHE: &str = "SKILLGEN_MAX_CACHE";

/// What MAX serves for `info` doing `task`, or the typed reason it does not. Call only for a
/// model type with a MAX architecture.
pub fn max_job(info: &SkillInfo, task: Task) -> Result<MaxJob, SkipReason> {
    skillgen_runtime::max_job(info.max, info.family, task).map_err(|serves| {
        SkipReason::MaxTaskUnsupported {
            architectures: info.max,
            task,
            serves,
        }
    })
}

/// The served model id at `MAX_SERVE_URL` matching this model, if any.
pub(crate) fn served_model<'c>(
    caps: &'c Capabilities,
    info: &SkillInfo,
    model_names: &[&str],
) -> Option<(&'c str, &'c str)> {
    let url = caps.max.serve_url.as_deref()?;
    let id = caps
        .max_served()?
        .iter()
        .find(|m| served_matches(m, info, model_names))?;
    Some((url, id.as_str()))
}

/// Timeouts of the backend's client: embeddings are fast; generation may take minutes on a CPU.
fn client_config(job: MaxJob) -> MaxClientConfig {
    MaxClientConfig {
        request_timeout: match job {
            MaxJob::Embed => Duration::from_secs(120),
            MaxJob::Generate => Duration::from_secs(600),
        },
        connect_retries: 2,
        ..MaxClientConfig::default()
    }
}

/// The tokenizer and limits a MAX call needs locally (MAX does not truncate: a long text is an
/// HTTP 500).
#[derive(Debug)]
struct Prep {
    tokenizer: Option<tokenizers::Tokenizer>,
    tokenizer_path: PathBuf,
    /// Truncation length for text (embeddings) / context length (generation).
    max_len: usize,
    vocab_size: usize,
    /// The sentence-transformers head (embeddings).
    head: SentenceHead,
}

impl Prep {
    fn load(dir: &Path, job: MaxJob) -> Result<Self, SkillError> {
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        let f = Fields {
            path: &config_path,
            map: &config,
        };
        let vocab_size = f.positive("vocab_size")?;
        let positions = f.positive("max_position_embeddings")?;
        let (max_len, head) = match job {
            MaxJob::Embed => {
                let (pooling, normalize) = sentence_transformers_head(dir)?;
                let head = SentenceHead { pooling, normalize };
                let seq = sentence_max_len(dir)?;
                (seq.map_or(positions, |s| s.min(positions)), head)
            }
            MaxJob::Generate => (
                positions,
                SentenceHead {
                    pooling: Pooling::Mean,
                    normalize: false,
                },
            ),
        };
        // The file may carry fixed padding/truncation (MiniLM's: 128); MAX gets unpadded rows,
        // truncated to the model's length for embeddings as sentence-transformers does (MAX
        // itself does not truncate).
        let truncate = match job {
            MaxJob::Embed => Some(max_len),
            MaxJob::Generate => None,
        };
        let (tokenizer, tokenizer_path) = load_tokenizer(dir, truncate)?;
        Ok(Self {
            tokenizer,
            tokenizer_path,
            max_len,
            vocab_size,
            head,
        })
    }

    fn tokenizer(&self) -> Result<&tokenizers::Tokenizer, SkillError> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| SkillError::ModelFileMissing {
                path: self.tokenizer_path.clone(),
                what: "the tokenizer, needed for text input (token-id input works without it)",
            })
    }

    fn encode(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>, SkillError> {
        let enc =
            self.tokenizer()?
                .encode_batch(texts, true)
                .map_err(|e| SkillError::Tokenizer {
                    path: self.tokenizer_path.clone(),
                    detail: e.to_string(),
                })?;
        Ok(enc.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, SkillError> {
        self.tokenizer()?
            .decode(ids, true)
            .map_err(|e| SkillError::Tokenizer {
                path: self.tokenizer_path.clone(),
                detail: e.to_string(),
            })
    }

    fn check_ids(&self, capability: Capability, ids: &[Vec<u32>]) -> Result<(), SkillError> {
        for (i, row) in ids.iter().enumerate() {
            if let Some(&id) = row.iter().find(|&&id| id as usize >= self.vocab_size) {
                return Err(SkillError::InvalidRequest {
                    capability,
                    detail: format!(
                        "input {i} has token id {id}, outside the vocabulary (vocab_size {})",
                        self.vocab_size
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A skill's connection to MAX: the server (when started here), a client, the served id.
#[derive(Debug)]
pub(crate) struct MaxSession {
    /// Owned server; `None` for `MAX_SERVE_URL`. Dropping the session stops it.
    server: Option<MaxServer>,
    client: MaxClient,
    model: String,
    prep: Arc<Prep>,
    job: MaxJob,
}

impl MaxSession {
    /// How the server this session started ended, once it has (never for `MAX_SERVE_URL`).
    fn death(&self) -> Option<String> {
        let server = self.server.as_ref()?;
        let status = server.exit_status()?;
        Some(format!(
            "`max serve` (process group {}) died: {status}; log {}",
            server.pgid(),
            server.log_path().display()
        ))
    }

    /// [`MaxSession::death`] after a request failed at the connection level: the server may
    /// be dying, so its exit is waited for a moment (up to 1 s).
    fn death_after(&self, e: &MaxError) -> Option<String> {
        self.server.as_ref()?;
        let connection = e.is_connection()
            || matches!(e, MaxError::Transport { .. } | MaxError::BadResponse { .. });
        if !connection {
            return self.death();
        }
        for _ in 0..20 {
            if let Some(death) = self.death() {
                return Some(death);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Either a live session or the error that starting it gave (not retried for this state).
type SessionSlot = Result<MaxSession, String>;

/// The per-state cache entry: empty until the first call starts (or connects to) MAX.
#[derive(Debug, Default)]
struct SessionCell {
    state: Mutex<CellState>,
}

#[derive(Debug, Default)]
struct CellState {
    current: Option<Arc<SessionSlot>>,
    /// The death that used this state's one restart.
    restarted_after: Option<String>,
}

impl SessionCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get_or_start(&self, start: impl FnOnce() -> SessionSlot) -> Arc<SessionSlot> {
        let mut st = self.lock();
        Arc::clone(st.current.get_or_insert_with(|| Arc::new(start())))
    }

    /// Replace the session whose server died (`dead`, which died as `death` says) by a new one,
    /// once per cell. Returns the session to use: the new one, or the current one when another
    /// call already replaced `dead`. Errors (why the call must fall back) when the one restart
    /// is used up.
    fn restart(
        &self,
        dead: &Arc<SessionSlot>,
        death: &str,
        start: impl FnOnce() -> SessionSlot,
    ) -> Result<Arc<SessionSlot>, String> {
        let mut st = self.lock();
        if let Some(cur) = &st.current
            && !Arc::ptr_eq(cur, dead)
        {
            return Ok(Arc::clone(cur));
        }
        if let Some(first) = &st.restarted_after {
            return Err(format!(
                "the MAX server died again ({death}) and was already restarted once for this skill state (after: {first}); it is not restarted again"
            ));
        }
        tracing::warn!(%death, "the MAX server died; restarting it (once for this skill state)");
        st.restarted_after = Some(death.to_owned());
        // Drop the cell's reference first: the dead server's group is stopped when the last
        // call using it lets go.
        st.current = None;
        let new = Arc::new(
            start().map_err(|e| format!("restarting it after it died ({death}) failed: {e}")),
        );
        st.current = Some(Arc::clone(&new));
        Ok(new)
    }

    fn peek(&self) -> Option<Arc<SessionSlot>> {
        self.lock().current.clone()
    }
}

fn cache_key(job: MaxJob, url: Option<&str>) -> String {
    match url {
        Some(url) => format!("max/server/{url}/{job:?}"),
        None => format!("max/server/local/{job:?}"),
    }
}

/// The `max` executable and cache dir used to start a server, from `caps` and `env`.
fn server_config(
    dir: &Path,
    job: MaxJob,
    exe: &Path,
    max_len: usize,
    env: &dyn EnvSource,
) -> MaxServerConfig {
    let mut cfg = MaxServerConfig::new(dir);
    cfg.exe = Some(exe.to_path_buf());
    // A cold CPU compile took 150 s (MiniLM) to 250 s (a tiny llama: graph + sampler) on 2
    // busy cores; later starts take ~15 s.
    cfg.start_timeout = START_TIMEOUT;
    cfg.cache_dir = env
        .var(SKILLGEN_MAX_CACHE)
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from);
    if job == MaxJob::Embed {
        cfg.max_batch_size = u32::try_from(EMBED_BATCH).ok();
        cfg.max_length = u32::try_from(max_len).ok();
    }
    cfg
}

/// Connect to the server at `MAX_SERVE_URL` serving this model (`served`), or start one.
/// `prep` is reused by a restart.
fn start_session(
    state: &Model,
    job: MaxJob,
    served: Option<(&str, &str)>,
    prep: Option<Arc<Prep>>,
    env: &dyn EnvSource,
    caps: &Capabilities,
) -> SessionSlot {
    let prep = match prep {
        Some(p) => p,
        None => Arc::new(Prep::load(state.dir(), job).map_err(|e| e.to_string())?),
    };
    if let Some((url, id)) = served {
        return Ok(MaxSession {
            server: None,
            client: MaxClient::with_config(url, client_config(job)),
            model: id.to_owned(),
            prep,
            job,
        });
    }
    let Some(exe) = caps.max.executable.path.as_deref() else {
        return Err(format!(
            "no MAX server serves this model and no `max` executable was found ({})",
            caps.max.executable.detail
        ));
    };
    let cfg = server_config(state.dir(), job, exe, prep.max_len, env);
    let server = MaxServer::start(&cfg, env).map_err(|e| e.to_string())?;
    Ok(MaxSession {
        client: server.client_with(client_config(job)),
        model: server.model_id().to_owned(),
        server: Some(server),
        prep,
        job,
    })
}

fn backend_err(detail: impl Into<String>) -> SkillError {
    SkillError::Backend {
        backend: BackendKind::Max,
        detail: detail.into(),
    }
}

/// Run `call` (for `task`) on MAX.
pub(crate) fn run(
    state: &Model,
    task: Task,
    call: Call,
    env: &dyn EnvSource,
    caps: &Capabilities,
) -> Result<Output, SkillError> {
    let job = max_job(state.info(), task).map_err(|r| backend_err(r.to_string()))?;
    let names = state.model_names();
    let served = served_model(caps, state.info(), &names);
    let key = cache_key(job, served.map(|(u, _)| u));
    let cell = state.cached(&key, || Ok(SessionCell::default()))?;
    let mut slot = cell.get_or_start(|| start_session(state, job, served, None, env, caps));
    loop {
        let s = match slot.as_ref() {
            Ok(s) => s,
            Err(e) => return Err(backend_err(format!("the MAX server did not start: {e}"))),
        };
        let death = match s.death() {
            // Dead before the call: restart (once), then run on the new server.
            Some(death) => death,
            None => match run_on(s, call.clone()) {
                Ok(out) => return Ok(out),
                Err(CallError::Skill(e)) => return Err(e),
                Err(CallError::Max(e)) => match s.death_after(&e) {
                    // The server died under the request: restart (once) and run it again.
                    Some(death) => match e {
                        MaxError::ServerDied { .. } => format!("{death}, during the request"),
                        e => format!(
                            "{death}, during the request ({})",
                            e.to_string().lines().next().unwrap_or_default()
                        ),
                    },
                    None => return Err(e.into()),
                },
            },
        };
        let prep = Arc::clone(&s.prep);
        let next = cell
            .restart(&slot, &death, || {
                start_session(state, job, served, Some(prep), env, caps)
            })
            .map_err(backend_err)?;
        slot = next;
    }
}

/// A failed call on a session: MAX's error kept typed (a connection failure may mean the
/// server died), or anything else.
#[derive(Debug)]
enum CallError {
    Max(MaxError),
    Skill(SkillError),
}

impl From<MaxError> for CallError {
    fn from(e: MaxError) -> Self {
        CallError::Max(e)
    }
}

impl From<SkillError> for CallError {
    fn from(e: SkillError) -> Self {
        CallError::Skill(e)
    }
}

fn run_on(s: &MaxSession, call: Call) -> Result<Output, CallError> {
    match (s.job, call) {
        (MaxJob::Embed, Call::Embed(req)) => embed(s, req).map(Output::Embed),
        (MaxJob::Generate, Call::Generate(req)) => generate(s, req).map(Output::Generate),
        (_, call) => Err(CallError::Skill(backend_err(format!(
            "MAX serves {:?} for this model, not the `{}` capability",
            s.job,
            call.capability()
        )))),
    }
}

fn embed(s: &MaxSession, req: EmbedRequest) -> Result<Embeddings, CallError> {
    let ids = match req.input {
        TextBatch::Texts(texts) => s.prep.encode(texts)?,
        TextBatch::TokenIds(ids) => {
            s.prep.check_ids(Capability::Embed, &ids)?;
            ids
        }
    };
    if let Some((i, row)) = ids
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() > s.prep.max_len)
    {
        return Err(CallError::Skill(backend_err(format!(
            "input {i} has {} token ids, more than the MAX server's --max-length {} (MAX does not truncate)",
            row.len(),
            s.prep.max_len
        ))));
    }
    let normalize = req.normalize.unwrap_or(s.prep.head.normalize);
    let head = SentenceHead {
        pooling: s.prep.head.pooling,
        normalize,
    };
    // Fail before sending when MAX's token sums cannot give this head.
    correct_bert_embeddings(&[], head.pooling, head.normalize)?;
    let mut vectors = Vec::with_capacity(ids.len());
    let mut dim = 0;
    for chunk in ids.chunks(EMBED_BATCH) {
        let got = s
            .client
            .embed_bert(&s.model, &TextBatch::TokenIds(chunk.to_vec()), head)?;
        dim = got.dim;
        vectors.extend(got.vectors);
    }
    Ok(Embeddings {
        vectors,
        dim,
        pooling: head.pooling,
        normalized: normalize,
        token_ids: ids,
    })
}

fn generate(s: &MaxSession, req: GenerateRequest) -> Result<Generation, CallError> {
    let prompt = match req.prompt {
        Prompt::Text(t) => s
            .prep
            .encode(vec![t])?
            .into_iter()
            .next()
            .unwrap_or_default(),
        Prompt::TokenIds(ids) => ids,
        Prompt::Messages(_) => {
            return Err(backend_err(
                "chat prompts are not sent to MAX yet (its chat endpoint is not wired)",
            )
            .into());
        }
    };
    if prompt.is_empty() {
        return Err(SkillError::InvalidRequest {
            capability: Capability::Generate,
            detail: "the prompt has no tokens".to_owned(),
        }
        .into());
    }
    s.prep
        .check_ids(Capability::Generate, std::slice::from_ref(&prompt))?;
    if prompt.len() >= s.prep.max_len {
        return Err(SkillError::InvalidRequest {
            capability: Capability::Generate,
            detail: format!(
                "the prompt has {} tokens; the model's context is {} (max_position_embeddings)",
                prompt.len(),
                s.prep.max_len
            ),
        }
        .into());
    }
    let max_tokens = u32::try_from(req.max_tokens).unwrap_or(u32::MAX);
    let mut creq = CompletionRequest::new(s.model.clone(), prompt, max_tokens);
    // Greedy: temperature 0 and top-k 1, so that no server default samples.
    if req.temperature <= 0.0 {
        creq.temperature = Some(0.0);
        creq.top_k = Some(1);
    } else {
        creq.temperature = Some(req.temperature);
        creq.top_k = req.top_k.map(|k| u32::try_from(k).unwrap_or(u32::MAX));
        creq.top_p = req.top_p;
    }
    creq.seed = req.seed;
    creq.stop = req.stop;
    creq.return_token_ids = true;
    let out = s.client.completions(&creq)?;
    let mut token_ids = out.token_ids.ok_or_else(|| {
        backend_err("MAX returned no token_ids although return_token_ids was set")
    })?;
    if let Some(&id) = token_ids
        .iter()
        .find(|&&id| id as usize >= s.prep.vocab_size)
    {
        return Err(backend_err(format!(
            "MAX returned token id {id}, outside the vocabulary ({})",
            s.prep.vocab_size
        ))
        .into());
    }
    let finish_reason = if out.stop_cut.is_some() {
        // Keep the tokens whose text lies before the cut stop string.
        if s.prep.tokenizer.is_some() {
            let mut keep = 0;
            for k in 1..=token_ids.len() {
                let text = s.prep.decode(&token_ids[..k])?;
                if text.len() <= out.text.len() && out.text.starts_with(&text) {
                    keep = k;
                } else {
                    break;
                }
            }
            token_ids.truncate(keep);
        }
        FinishReason::Stop
    } else {
        match out.finish_reason.as_deref() {
            Some("length") => FinishReason::Length,
            Some("stop") => FinishReason::Eos,
            other => {
                if token_ids.len() >= req.max_tokens {
                    FinishReason::Length
                } else {
                    return Err(backend_err(format!(
                        "MAX finished with an unknown finish_reason {other:?}"
                    ))
                    .into());
                }
            }
        }
    };
    Ok(Generation {
        text: out.text,
        token_ids,
        finish_reason,
    })
}

/// The server a skill's state started for `job`, if one is running (for tests and tools:
/// its URL, process group, log).
pub fn started_server<R>(
    state: &skillgen_runtime::SkillState,
    generate: bool,
    f: impl FnOnce(&MaxServer) -> R,
) -> Option<R> {
    let job = if generate {
        MaxJob::Generate
    } else {
        MaxJob::Embed
    };
    let cell = state
        .model()
        .cached(&cache_key(job, None), || Ok(SessionCell::default()))
        .ok()?;
    let slot = cell.peek()?;
    match slot.as_ref() {
        Ok(MaxSession {
            server: Some(server),
            ..
        }) => Some(f(server)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skillgen_runtime::TaskInfo;
    use skillgen_runtime::{Family, Modality};

    const fn info(family: Family, max: &'static [&'static str]) -> SkillInfo {
        SkillInfo {
            model_type: "m",
            struct_name: "M",
            family,
            modalities: &[Modality::Text],
            config_class: None,
            hf_module: None,
            tasks: &[
                TaskInfo {
                    task: Task::BaseModel,
                    hf_classes: &[],
                },
                TaskInfo {
                    task: Task::CausalLm,
                    hf_classes: &[],
                },
                TaskInfo {
                    task: Task::MaskedLm,
                    hf_classes: &[],
                },
            ],
            candle: None,
            max,
            native: &[],
            refused: &[],
            sub_config_of: &[],
            deprecated: false,
        }
    }

    #[test]
    fn max_serves_embeddings_for_encoders_and_generation_for_decoders() {
        let bert = info(Family::Encoder, &["bert"]);
        assert_eq!(max_job(&bert, Task::BaseModel), Ok(MaxJob::Embed));
        assert_eq!(max_job(&bert, Task::TextEncoding), Ok(MaxJob::Embed));
        let e = max_job(&bert, Task::MaskedLm).unwrap_err();
        assert_eq!(e.kind(), "max_task_unsupported");
        assert_eq!(
            e.to_string(),
            "MAX architecture `bert` serves embeddings (base-model, text-encoding), not task `masked-lm`"
        );
        assert!(max_job(&bert, Task::CausalLm).is_err());

        let llama = info(Family::Decoder, &["llama3"]);
        assert_eq!(max_job(&llama, Task::CausalLm), Ok(MaxJob::Generate));
        let e = max_job(&llama, Task::BaseModel).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MAX architecture `llama3` serves text generation (causal-lm), not task `base-model`"
        );

        // qwen3 lists a generation and an embedding architecture: generation only.
        let qwen3 = info(Family::Decoder, &["qwen3", "qwen3_embedding"]);
        assert_eq!(max_job(&qwen3, Task::CausalLm), Ok(MaxJob::Generate));
        assert!(max_job(&qwen3, Task::BaseModel).is_err());
        let emb = info(Family::Decoder, &["qwen3_embedding"]);
        assert!(
            max_job(&emb, Task::CausalLm)
                .unwrap_err()
                .to_string()
                .contains("pooling this runtime does not reproduce")
        );
    }

    #[test]
    fn a_cell_restarts_once_and_says_so_after() {
        // Slots stand for sessions by their start error (a MaxSession needs a server).
        let cell = SessionCell::default();
        let first = cell.get_or_start(|| Err("first".to_owned()));
        assert!(Arc::ptr_eq(&first, &cell.peek().unwrap()));
        let second = cell
            .restart(&first, "death 1", || Err("second".to_owned()))
            .unwrap();
        assert_eq!(
            second.as_ref().as_ref().unwrap_err(),
            "restarting it after it died (death 1) failed: second"
        );
        // Another call that saw `first` die gets the replacement, without a new start.
        let again = cell
            .restart(&first, "death 1", || panic!("started twice"))
            .unwrap();
        assert!(Arc::ptr_eq(&again, &second));
        // The replacement dies too: no second restart.
        let e = cell
            .restart(&second, "death 2", || panic!("restarted twice"))
            .unwrap_err();
        assert_eq!(
            e,
            "the MAX server died again (death 2) and was already restarted once for this skill state (after: death 1); it is not restarted again"
        );
        assert!(Arc::ptr_eq(&cell.peek().unwrap(), &second));
    }

    #[test]
    fn prep_reads_limits_and_rejects_bad_configs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"vocab_size": 10, "max_position_embeddings": 512}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sentence_bert_config.json"),
            r#"{"max_seq_length": 256}"#,
        )
        .unwrap();
        let p = Prep::load(dir.path(), MaxJob::Embed).unwrap();
        assert_eq!((p.max_len, p.vocab_size), (256, 10));
        assert!(p.tokenizer.is_none());
        let e = p.encode(vec!["x".to_owned()]).unwrap_err();
        assert!(e.to_string().contains("tokenizer.json"), "{e}");
        let e = p
            .check_ids(Capability::Embed, &[vec![1, 2], vec![3, 10]])
            .unwrap_err();
        assert!(e.to_string().contains("token id 10"), "{e}");
        let g = Prep::load(dir.path(), MaxJob::Generate).unwrap();
        assert_eq!(g.max_len, 512);

        std::fs::write(
            dir.path().join("config.json"),
            r#"{"vocab_size": 0, "max_position_embeddings": 512}"#,
        )
        .unwrap();
        let e = Prep::load(dir.path(), MaxJob::Embed).unwrap_err();
        assert!(
            matches!(&e, SkillError::ConfigField { field, .. } if field == "vocab_size"),
            "{e}"
        );
    }
}
