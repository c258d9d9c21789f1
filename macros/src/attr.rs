//! Parsing and validation of `#[skill(...)]`, collecting every error.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use quote::ToTokens;
use skillgen_vocab::{Backend, Family, Modality, NativeImpl, Task, did_you_mean};
use syn::{Attribute, Error, Ident, LitStr, Path};

/// The keys accepted in the struct-level `#[skill(...)]`.
pub const KEYS: &[&str] = &[
    "model_type",
    "family",
    "modalities",
    "config_class",
    "hf_module",
    "tasks",
    "candle",
    "max",
    "native",
    "refused",
    "sub_config_of",
    "deprecated",
    "backends",
];

/// Collected errors.
#[derive(Default)]
pub struct Errors(Option<Error>);

impl Errors {
    pub fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn spanned(&mut self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        self.push(Error::new_spanned(tokens, msg));
    }

    pub fn into_compile_error(self) -> TokenStream {
        self.0.map(Error::into_compile_error).unwrap_or_default()
    }
}

/// One parsed task: the task, the ident it was written as, and its HF classes.
pub struct TaskAttr {
    pub task: Task,
    pub ident: Ident,
    pub classes: Vec<String>,
}

/// The parsed struct-level attributes; `None` where absent or invalid.
#[derive(Default)]
pub struct SkillAttrs {
    pub model_type: Option<String>,
    pub family: Option<Family>,
    pub modalities: Option<Vec<Modality>>,
    pub config_class: Option<String>,
    pub hf_module: Option<String>,
    pub tasks: Option<Vec<TaskAttr>>,
    pub candle: Option<String>,
    pub max: Option<Vec<String>>,
    /// `native(task = implementation, ...)`: the candle implementation per task.
    pub native: Option<Vec<(Task, Ident, NativeImpl)>>,
    /// `refused(backend = "why", ...)`.
    pub refused: Option<Vec<(Backend, String)>>,
    pub sub_config_of: Option<Vec<String>>,
    /// `backends = path::to::fn`: a `fn() -> &'static Backends`.
    pub backends: Option<Path>,
    pub deprecated: bool,
    /// Keys seen (even when their value was invalid), to report duplicates and missing keys once.
    seen: Vec<String>,
}

/// The shape of one `key ...` item.
enum Value {
    /// `key`
    Flag,
    /// `key = tokens`
    Eq(TokenStream),
    /// `key(tokens)`
    List(TokenStream),
}

/// Split `tokens` at top-level commas; empty trailing item dropped.
fn split_commas(tokens: TokenStream) -> Vec<TokenStream> {
    let mut items = vec![TokenStream::new()];
    for tt in tokens {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => items.push(TokenStream::new()),
            _ => {
                if let Some(last) = items.last_mut() {
                    last.extend([tt]);
                }
            }
        }
    }
    if items.last().is_some_and(TokenStream::is_empty) {
        items.pop();
    }
    items
}

fn is_empty(ts: &TokenStream) -> bool {
    ts.clone().into_iter().next().is_none()
}

/// `key`, `key = ...` or `key(...)`. `Err` is a syntax error (reported by the caller).
fn split_item(item: &TokenStream) -> Result<(Ident, Value), Error> {
    let mut it = item.clone().into_iter();
    let key = match it.next() {
        Some(TokenTree::Ident(i)) => i,
        Some(tt) => return Err(Error::new_spanned(tt, "expected a key like `model_type`")),
        None => return Err(Error::new_spanned(item, "empty item")),
    };
    let rest: TokenStream = it.collect();
    let mut r = rest.clone().into_iter();
    let value = match r.next() {
        None => Value::Flag,
        Some(TokenTree::Punct(p)) if p.as_char() == '=' => {
            let v: TokenStream = r.collect();
            if is_empty(&v) {
                return Err(Error::new_spanned(
                    quote::quote!(#key #p),
                    format!("expected a value after `{key} =`"),
                ));
            }
            Value::Eq(v)
        }
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis => {
            if let Some(extra) = r.next() {
                return Err(Error::new_spanned(
                    extra,
                    format!("unexpected tokens after `{key}(...)`; separate keys with commas"),
                ));
            }
            Value::List(g.stream())
        }
        Some(_) => {
            return Err(Error::new_spanned(
                item,
                format!("expected `{key}`, `{key} = ...` or `{key}(...)`"),
            ));
        }
    };
    Ok((key, value))
}

fn describe(ts: &TokenStream) -> &'static str {
    let mut it = ts.clone().into_iter();
    match (it.next(), it.next()) {
        (Some(TokenTree::Literal(l)), None) => {
            let s = l.to_string();
            if s.starts_with('"') || s.starts_with("r\"") || s.starts_with("r#") {
                "a string literal"
            } else {
                "a non-string literal"
            }
        }
        (Some(TokenTree::Ident(_)), None) => "an identifier",
        _ => "an expression",
    }
}

/// A single string literal for `key`.
fn lit_str(key: &Ident, ts: &TokenStream, errors: &mut Errors) -> Option<String> {
    lit_str_in(
        &format!("`{key}`"),
        &format!("`{key} = \"...\"`"),
        ts,
        errors,
    )
}

/// A single non-empty string literal; `what` and `example` phrase the error.
fn lit_str_in(what: &str, example: &str, ts: &TokenStream, errors: &mut Errors) -> Option<String> {
    match syn::parse2::<LitStr>(ts.clone()) {
        Ok(s) if s.value().is_empty() => {
            errors.spanned(&s, format!("{what} must not be empty"));
            None
        }
        Ok(s) => Some(s.value()),
        Err(_) => {
            errors.spanned(
                ts,
                format!(
                    "expected a string literal for {what}, found {}: write {example}",
                    describe(ts)
                ),
            );
            None
        }
    }
}

/// A single identifier.
fn ident(key: &str, ts: &TokenStream, example: &str, errors: &mut Errors) -> Option<Ident> {
    match syn::parse2::<Ident>(ts.clone()) {
        Ok(i) => Some(i),
        Err(_) => {
            errors.spanned(
                ts,
                format!(
                    "expected an identifier for `{key}`, found {}: write `{key} = {example}`",
                    describe(ts)
                ),
            );
            None
        }
    }
}

fn unknown(kind: &str, got: &Ident, suggestion: Option<&str>, errors: &mut Errors) {
    let hint = suggestion
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    errors.spanned(got, format!("unknown {kind} `{got}`{hint}"));
}

fn family_ident(i: &Ident, errors: &mut Errors) -> Option<Family> {
    match Family::from_ident(&i.to_string()) {
        Ok(f) => Some(f),
        Err(e) => {
            unknown("family", i, e.suggestion, errors);
            None
        }
    }
}

/// A list of string literals.
fn str_list(
    what: &str,
    example: &str,
    ts: TokenStream,
    errors: &mut Errors,
) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut ok = true;
    for item in split_commas(ts) {
        match lit_str_in(what, example, &item, errors) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

impl SkillAttrs {
    /// Parse every `#[skill(...)]` on the struct.
    pub fn parse(attrs: &[Attribute], errors: &mut Errors) -> Self {
        let mut out = SkillAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("skill")) {
            let list = match attr.meta.require_list() {
                Ok(l) => l,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            for item in split_commas(list.tokens.clone()) {
                match split_item(&item) {
                    Ok((key, value)) => out.item(&item, key, value, errors),
                    Err(e) => errors.push(e),
                }
            }
        }
        out
    }

    fn item(&mut self, item: &TokenStream, key: Ident, value: Value, errors: &mut Errors) {
        let name = key.to_string();
        if !KEYS.contains(&name.as_str()) {
            let hint = if name == "state" {
                "; `state` marks a field: put #[skill(state)] on the SkillState field".to_owned()
            } else {
                did_you_mean(&name, KEYS.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("; expected one of: {}", KEYS.join(", ")))
            };
            errors.spanned(&key, format!("unknown skill attribute `{name}`{hint}"));
            return;
        }
        if self.seen.contains(&name) {
            errors.spanned(&key, format!("duplicate skill attribute `{name}`"));
            return;
        }
        self.seen.push(name.clone());
        let shape_err = |errors: &mut Errors, expected: &str| {
            errors.spanned(item, format!("expected {expected}"));
        };
        match (name.as_str(), value) {
            ("deprecated", Value::Flag) => self.deprecated = true,
            ("deprecated", _) => shape_err(errors, "the flag `deprecated` without a value"),
            (
                "model_type" | "config_class" | "hf_module" | "candle",
                Value::Eq(ts) | Value::List(ts),
            ) => {
                let v = lit_str(&key, &ts, errors);
                match name.as_str() {
                    "model_type" => self.model_type = v,
                    "config_class" => self.config_class = v,
                    "hf_module" => self.hf_module = v,
                    _ => self.candle = v,
                }
            }
            ("family", Value::Eq(ts)) => {
                if let Some(i) = ident("family", &ts, "encoder", errors) {
                    self.family = family_ident(&i, errors);
                }
            }
            ("family", _) => shape_err(errors, "`family = <family>`, e.g. `family = encoder`"),
            ("modalities", Value::List(ts)) => {
                let mut v = Vec::new();
                let mut ok = true;
                for item in split_commas(ts) {
                    let Some(i) = ident("modalities", &item, "text", errors) else {
                        ok = false;
                        continue;
                    };
                    match Modality::from_ident(&i.to_string()) {
                        Ok(m) if v.contains(&m) => {
                            errors.spanned(&i, format!("duplicate modality `{i}`"));
                        }
                        Ok(m) => v.push(m),
                        Err(e) => {
                            unknown("modality", &i, e.suggestion, errors);
                            ok = false;
                        }
                    }
                }
                self.modalities = ok.then_some(v);
            }
            ("modalities", _) => shape_err(
                errors,
                "`modalities(<modality>, ...)`, e.g. `modalities(text)`",
            ),
            ("tasks", Value::List(ts)) => self.tasks = Some(parse_tasks(ts, errors)),
            ("tasks", _) => shape_err(
                errors,
                "`tasks(<task>, <task>(\"HfClass\", ...), ...)`, e.g. `tasks(masked_lm(\"BertForMaskedLM\"))`",
            ),
            ("max", Value::List(ts)) => {
                self.max = str_list("`max`", "`max(\"Architecture\", ...)`", ts, errors);
            }
            ("max", Value::Eq(ts)) => self.max = lit_str(&key, &ts, errors).map(|s| vec![s]),
            ("native", Value::List(ts)) => self.native = parse_native(ts, errors),
            ("native", _) => shape_err(
                errors,
                "`native(<task> = <implementation>, ...)`, e.g. `native(causal_lm = decoder)`",
            ),
            ("refused", Value::List(ts)) => self.refused = parse_refused(ts, errors),
            ("refused", _) => shape_err(
                errors,
                "`refused(<backend> = \"why\", ...)`, e.g. `refused(candle = \"...\")`",
            ),
            ("backends", Value::Eq(ts)) => match syn::parse2::<Path>(ts.clone()) {
                Ok(p) => self.backends = Some(p),
                Err(_) => errors.spanned(
                    &ts,
                    "expected a path to a `fn() -> &'static Backends`, e.g. `backends = skills::backends`",
                ),
            },
            ("backends", _) => shape_err(errors, "`backends = path::to::fn`"),
            ("sub_config_of", Value::List(ts)) => {
                self.sub_config_of = str_list(
                    "`sub_config_of`",
                    "`sub_config_of(\"parent_model_type\", ...)`",
                    ts,
                    errors,
                );
            }
            ("sub_config_of", Value::Eq(ts)) => {
                self.sub_config_of = lit_str(&key, &ts, errors).map(|s| vec![s]);
            }
            (_, Value::Flag) => shape_err(errors, &format!("a value: `{name} = \"...\"`")),
            (_, Value::Eq(_)) => shape_err(errors, &format!("`{name}(...)`")),
            (_, Value::List(_)) => shape_err(errors, &format!("`{name} = ...`")),
        }
    }

    /// Check required keys and family/task consistency. `anchor` spans missing-key errors.
    pub fn validate(&self, anchor: &dyn ToTokens, errors: &mut Errors) {
        for (key, example) in [
            ("model_type", "model_type = \"...\""),
            ("family", "family = <family>"),
            ("tasks", "tasks(...)"),
        ] {
            if !self.seen.iter().any(|s| s == key) {
                errors.spanned(
                    anchor,
                    format!(
                        "missing required skill attribute `{key}`: add `{example}` to #[skill(...)]"
                    ),
                );
            }
        }
        if let (Some(native), Some(tasks)) = (&self.native, &self.tasks) {
            for (task, key, _) in native {
                if !tasks.iter().any(|t| t.task == *task) {
                    errors.spanned(
                        key,
                        format!(
                            "`native({key} = ...)`: task `{key}` is not listed in `tasks(...)`"
                        ),
                    );
                }
            }
        }
        if let (Some(family), Some(tasks)) = (self.family, &self.tasks) {
            for t in tasks {
                if !family.accepts(t.task) {
                    let cats: Vec<&str> = family
                        .accepted_categories()
                        .iter()
                        .map(|c| c.as_str())
                        .collect();
                    errors.spanned(
                        &t.ident,
                        format!(
                            "task `{}` ({} task) is not accepted by family `{}`, which accepts {} tasks",
                            t.ident,
                            t.task.category().as_str(),
                            family.ident(),
                            cats.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// `key = value` items of a list, as identifier keys and token values.
fn key_values(ts: TokenStream, what: &str, errors: &mut Errors) -> Vec<(Ident, TokenStream)> {
    let mut out = Vec::new();
    for item in split_commas(ts) {
        match split_item(&item) {
            Ok((key, Value::Eq(v))) => out.push((key, v)),
            Ok(_) => errors.spanned(
                &item,
                format!("expected `<key> = <value>` in `{what}(...)`"),
            ),
            Err(e) => errors.push(e),
        }
    }
    out
}

fn parse_native(ts: TokenStream, errors: &mut Errors) -> Option<Vec<(Task, Ident, NativeImpl)>> {
    let mut out: Vec<(Task, Ident, NativeImpl)> = Vec::new();
    let mut ok = true;
    for (key, value) in key_values(ts, "native", errors) {
        let task = match Task::from_ident(&key.to_string()) {
            Ok(t) => t,
            Err(e) => {
                unknown("task", &key, e.suggestion, errors);
                ok = false;
                continue;
            }
        };
        let Some(i) = ident("native", &value, "decoder", errors) else {
            ok = false;
            continue;
        };
        let imp = match NativeImpl::from_ident(&i.to_string()) {
            Ok(n) => n,
            Err(e) => {
                unknown("native implementation", &i, e.suggestion, errors);
                ok = false;
                continue;
            }
        };
        if out.iter().any(|(t, _, _)| *t == task) {
            errors.spanned(&key, format!("duplicate task `{key}` in `native(...)`"));
            ok = false;
            continue;
        }
        out.push((task, key, imp));
    }
    ok.then_some(out)
}

fn parse_refused(ts: TokenStream, errors: &mut Errors) -> Option<Vec<(Backend, String)>> {
    let mut out: Vec<(Backend, String)> = Vec::new();
    let mut ok = true;
    for (key, value) in key_values(ts, "refused", errors) {
        let backend = match Backend::parse(&key.to_string()) {
            Ok(b) => b,
            Err(e) => {
                unknown("backend", &key, e.suggestion, errors);
                ok = false;
                continue;
            }
        };
        let Some(why) = lit_str(&key, &value, errors) else {
            ok = false;
            continue;
        };
        if out.iter().any(|(b, _)| *b == backend) {
            errors.spanned(&key, format!("duplicate backend `{key}` in `refused(...)`"));
            ok = false;
            continue;
        }
        out.push((backend, why));
    }
    ok.then_some(out)
}

fn parse_tasks(ts: TokenStream, errors: &mut Errors) -> Vec<TaskAttr> {
    let mut out: Vec<TaskAttr> = Vec::new();
    for item in split_commas(ts) {
        let mut it = item.clone().into_iter();
        let ident = match it.next() {
            Some(TokenTree::Ident(i)) => i,
            _ => {
                errors.spanned(
                    &item,
                    format!(
                        "expected a task identifier like `masked_lm`, found {}",
                        describe(&item)
                    ),
                );
                continue;
            }
        };
        let classes = match (it.next(), it.next()) {
            (None, _) => Some(Vec::new()),
            (Some(TokenTree::Group(g)), None) if g.delimiter() == Delimiter::Parenthesis => {
                str_list(
                    &format!("the HF classes of `{ident}`"),
                    &format!("`{ident}(\"ClassName\")`"),
                    g.stream(),
                    errors,
                )
            }
            (Some(extra), _) => {
                errors.spanned(
                    extra,
                    format!("expected `{ident}` or `{ident}(\"HfClass\", ...)`"),
                );
                None
            }
        };
        let task = match Task::from_ident(&ident.to_string()) {
            Ok(t) => t,
            Err(e) => {
                unknown("task", &ident, e.suggestion, errors);
                continue;
            }
        };
        if out.iter().any(|t| t.task == task) {
            errors.spanned(&ident, format!("duplicate task `{ident}`"));
            continue;
        }
        out.push(TaskAttr {
            task,
            ident,
            classes: classes.unwrap_or_default(),
        });
    }
    out
}

/// The modalities a family implies when `modalities(...)` is absent.
pub fn default_modalities(family: Family) -> &'static [Modality] {
    use Modality as M;
    match family {
        Family::Encoder | Family::Decoder | Family::EncoderDecoder | Family::Retrieval => {
            &[M::Text]
        }
        Family::Vision | Family::Diffusion => &[M::Image],
        Family::VisionText => &[M::Text, M::Image],
        Family::Speech | Family::Audio => &[M::Audio],
        Family::Multimodal => &[M::Text, M::Image],
        Family::Video => &[M::Video],
        Family::TimeSeries => &[M::TimeSeries],
        Family::ReinforcementLearning => &[M::Trajectory],
        Family::Graph => &[M::Graph],
    }
}

/// Whether a field carries `#[skill(state)]`; other content is an error.
pub fn field_is_state(attrs: &[Attribute], errors: &mut Errors) -> bool {
    let mut found = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("skill")) {
        let list = match attr.meta.require_list() {
            Ok(l) => l,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for item in split_commas(list.tokens.clone()) {
            match syn::parse2::<Ident>(item.clone()) {
                Ok(i) if i == "state" => found = true,
                _ => errors.spanned(&item, "the only field attribute is #[skill(state)]"),
            }
        }
    }
    found
}

/// A span for errors about the attribute as a whole.
pub fn skill_attr(attrs: &[Attribute]) -> Option<&Attribute> {
    attrs.iter().find(|a| a.path().is_ident("skill"))
}
