//! Chat templates, rendered as transformers' `apply_chat_template` renders them: a Jinja
//! template (from `tokenizer_config.json` or a GGUF file's `tokenizer.chat_template`) over
//! `messages`, `add_generation_prompt` and the tokenizer's special tokens (`bos_token`,
//! `eos_token`, ...), with transformers' environment: `trim_blocks` and `lstrip_blocks`, loop
//! controls, `raise_exception(msg)`, a `tojson` that keeps non-ASCII text, and the Python
//! string methods templates call (`.strip()`, `.startswith()`, ...: minijinja-contrib's
//! `pycompat`). A template that does not parse, or fails while rendering (an unknown
//! function, `raise_exception`), is a typed error naming where the template came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, Value};
use skillgen_runtime::SkillError;

pub use skillgen_runtime::request::ChatMessage as Message;

/// A parsed chat template with the special tokens it may use.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template came from (for errors).
    origin: PathBuf,
    /// `bos_token`, `eos_token`, ... as the template sees them.
    tokens: BTreeMap<String, String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)` — non-ASCII kept,
/// keys in their order, Python's separators (`", "` and `": "`; `","` at line ends when
/// indented).
fn tojson(value: Value, indent: Option<usize>) -> Result<Value, Error> {
    let mut out = String::new();
    py_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn py_json(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let n: f64 = f64::try_from(v.clone()).unwrap_or(f64::NAN);
            if v.as_i64().is_some() {
                out.push_str(&v.to_string());
            } else if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e16 {
                out.push_str(&format!("{n:.1}"));
            } else {
                out.push_str(&v.to_string());
            }
        }
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            out.push_str(&serde_json::Value::from(s).to_string());
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                py_json(item, indent, depth + 1, out)?;
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                let key = k
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| k.to_string());
                out.push_str(&serde_json::Value::from(key).to_string());
                out.push_str(": ");
                py_json(&v.get_item(k)?, indent, depth + 1, out)?;
            }
            if !keys.is_empty() {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialise a {} value", v.kind()),
            ));
        }
    }
    Ok(())
}

impl ChatTemplate {
    /// Parse `source` (from `origin`) with the special tokens `tokens` (`bos_token` → `<s>`).
    pub fn new(
        source: &str,
        origin: &Path,
        tokens: BTreeMap<String, String>,
    ) -> Result<Self, SkillError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| SkillError::ConfigField {
                path: origin.to_path_buf(),
                field: "chat_template".into(),
                detail: format!("does not parse as Jinja: {e}"),
            })?;
        Ok(Self {
            env,
            origin: origin.to_path_buf(),
            tokens,
        })
    }

    /// The prompt for `messages`; `add_generation_prompt` opens the assistant's turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, SkillError> {
        if messages.is_empty() {
            // As transformers: "Cannot apply chat template to an empty conversation".
            return Err(SkillError::InvalidRequest {
                capability: skillgen_runtime::Capability::Generate,
                detail: "a conversation needs at least one message".into(),
            });
        }
        let mut ctx: BTreeMap<&str, Value> = self
            .tokens
            .iter()
            .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
            .collect();
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        let t = self.env.get_template("chat").map_err(|e| self.error(&e))?;
        t.render(ctx).map_err(|e| self.error(&e))
    }

    /// The template of a model directory, as transformers' tokenizer finds it: the file
    /// `chat_template.jinja` (how transformers 5 saves a template; it takes priority), else
    /// `tokenizer_config.json`'s `chat_template` (a string, or a list of named templates,
    /// `default` taken); with the special tokens of `tokenizer_config.json` (`bos_token`,
    /// `eos_token`, `unk_token`, `pad_token`: strings or `{"content": ...}`). `None` without a
    /// template.
    pub fn from_model_dir(dir: &Path) -> Result<Option<Self>, SkillError> {
        let path = dir.join("tokenizer_config.json");
        let jinja = dir.join("chat_template.jinja");
        let map = if path.is_file() {
            crate::read_json(&path)?
        } else {
            serde_json::Map::new()
        };
        let (source, origin) = if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja).map_err(|e| SkillError::ConfigField {
                path: jinja.clone(),
                field: "chat_template".into(),
                detail: format!("unreadable: {e}"),
            })?;
            (text, jinja)
        } else {
            match Self::config_source(&map, &path)? {
                Some(text) => (text, path.clone()),
                None => return Ok(None),
            }
        };
        let mut tokens = BTreeMap::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            let text = match map.get(key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(o)) => {
                    o.get("content").and_then(|c| c.as_str()).map(str::to_owned)
                }
                _ => None,
            };
            if let Some(t) = text {
                tokens.insert(key.to_owned(), t);
            }
        }
        Self::new(&source, &origin, tokens).map(Some)
    }

    /// `tokenizer_config.json`'s `chat_template` (`path`'s `map`), if it has one.
    fn config_source(
        map: &serde_json::Map<String, serde_json::Value>,
        path: &Path,
    ) -> Result<Option<String>, SkillError> {
        let path = path.to_path_buf();
        Ok(Some(match map.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .map(str::to_owned)
                .ok_or_else(|| SkillError::ConfigField {
                    path: path.clone(),
                    field: "chat_template".into(),
                    detail: "a list of templates without one named `default`".into(),
                })?,
            Some(_) => {
                return Err(SkillError::ConfigField {
                    path,
                    field: "chat_template".into(),
                    detail: "neither a string nor a list of named templates".into(),
                });
            }
        }))
    }

    fn error(&self, e: &Error) -> SkillError {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail.push_str(&format!(": {s}"));
            source = s.source();
        }
        SkillError::ConfigField {
            path: self.origin.clone(),
            field: "chat_template".into(),
            detail: format!("rendering failed: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(src: &str) -> ChatTemplate {
        let tokens = BTreeMap::from([("bos_token".to_owned(), "<s>".to_owned())]);
        ChatTemplate::new(src, Path::new("tokenizer_config.json"), tokens).unwrap()
    }

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn blocks_are_trimmed_and_python_methods_work() {
        let src = "{{ bos_token }}{% for m in messages %}\n  {{ m.role.upper() }}: {{ m.content.strip() }}\n{% endfor %}";
        let out = t(src).render(&[msg("user", "  hi  ")], false).unwrap();
        // As Jinja2: trim_blocks drops the newline after a block tag; lstrip_blocks strips
        // only before block tags, so the indent before `{{` stays.
        assert_eq!(out, "<s>  USER: hi\n");
    }

    #[test]
    fn raise_exception_and_bad_syntax_are_typed_errors() {
        let e = t("{{ raise_exception('only user and assistant roles') }}")
            .render(&[msg("user", "x")], true)
            .unwrap_err();
        assert!(
            e.to_string().contains("only user and assistant roles"),
            "{e}"
        );
        let e = ChatTemplate::new("{% for %}", Path::new("x.gguf"), BTreeMap::new()).unwrap_err();
        assert!(matches!(e, SkillError::ConfigField { .. }), "{e}");
    }

    #[test]
    fn a_model_dirs_template_file_takes_priority_over_tokenizer_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        assert!(ChatTemplate::from_model_dir(p).unwrap().is_none());
        std::fs::write(
            p.join("tokenizer_config.json"),
            r#"{"chat_template": "config:{{ bos_token }}", "bos_token": {"content": "<s>"}}"#,
        )
        .unwrap();
        let render = |p: &Path| {
            ChatTemplate::from_model_dir(p)
                .unwrap()
                .unwrap()
                .render(&[msg("user", "x")], true)
                .unwrap()
        };
        assert_eq!(render(p), "config:<s>");
        // transformers 5 saves `chat_template.jinja`; it wins, with the config's tokens.
        std::fs::write(p.join("chat_template.jinja"), "file:{{ bos_token }}").unwrap();
        assert_eq!(render(p), "file:<s>");
        // A template that is neither a string nor a list is a typed error naming the field.
        std::fs::remove_file(p.join("chat_template.jinja")).unwrap();
        std::fs::write(p.join("tokenizer_config.json"), r#"{"chat_template": 3}"#).unwrap();
        let e = ChatTemplate::from_model_dir(p).err().unwrap();
        assert!(matches!(e, SkillError::ConfigField { .. }), "{e}");
    }

    #[test]
    fn tojson_keeps_non_ascii_with_python_separators() {
        let out = t("{{ messages[0] | tojson }}")
            .render(&[msg("user", "café")], false)
            .unwrap();
        assert_eq!(out, r#"{"role": "user", "content": "café"}"#);
    }
}
