//! Diagnostics: every problem found in the registry, with its position in the file.
//!
//! Loading never stops at the first problem: the parser and the validator push every
//! [`Diagnostic`] they find, and [`Error::Registry`](crate::Error::Registry) reports them all,
//! sorted by position, in a rustc-like format:
//!
//! ```text
//! error: unknown family `encodr` (did you mean `encoder`?)
//!   --> models.yaml:12:13
//!    = in models[3] (model_type `bert`), field `family`
//! ```

use std::fmt;

use serde::Serialize;

/// One problem in the registry, located at `file:line:column` (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The registry file as shown to the user (e.g. `models.yaml`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Index of the entry in `models`, when the problem is inside one.
    pub index: Option<usize>,
    /// The entry's `model_type`, when the problem is inside an entry that has one.
    pub model_type: Option<String>,
    /// The key path inside the entry (or at the top level), e.g. `family` or `tasks.masked-lm[0]`.
    pub field: Option<String>,
    /// What is wrong, e.g. ``unknown family `encodr` (did you mean `encoder`?)``.
    pub message: String,
}

impl Diagnostic {
    /// Sort key: position first, then the message so that equal positions are stable.
    pub(crate) fn sort_key(&self) -> (usize, usize, &str) {
        (self.line, self.column, &self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        write!(f, "  --> {}:{}:{}", self.file, self.line, self.column)?;
        let field = self.field.as_deref();
        match (self.index, self.model_type.as_deref(), field) {
            (Some(i), Some(mt), Some(field)) => write!(
                f,
                "\n   = in models[{i}] (model_type `{}`), field `{field}`",
                printable(mt)
            ),
            (Some(i), Some(mt), None) => {
                write!(f, "\n   = in models[{i}] (model_type `{}`)", printable(mt))
            }
            (Some(i), None, Some(field)) => write!(f, "\n   = in models[{i}], field `{field}`"),
            (Some(i), None, None) => write!(f, "\n   = in models[{i}]"),
            (None, _, Some(field)) => write!(f, "\n   = in top-level field `{field}`"),
            (None, _, None) => Ok(()),
        }
    }
}

/// Makes a user-supplied string safe to print inside a one-line message: control and bidi
/// characters are shown as escapes, everything else as is.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || crate::validate::is_bidi_control(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A sink for diagnostics about one registry file.
#[derive(Debug)]
pub(crate) struct Sink {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

/// Where in the registry a diagnostic belongs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ctx {
    pub index: Option<usize>,
    pub model_type: Option<String>,
}

impl Sink {
    pub fn new(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            diagnostics: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        ctx: &Ctx,
        pos: (usize, usize),
        field: Option<&str>,
        message: impl Into<String>,
    ) {
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line: pos.0,
            column: pos.1,
            index: ctx.index,
            model_type: ctx.model_type.clone(),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.diagnostics
            .sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.diagnostics.dedup();
        self.diagnostics
    }
}

/// Writes every diagnostic, a blank line between them, then the count line.
pub(crate) fn write_report(
    f: &mut fmt::Formatter<'_>,
    file: &str,
    diagnostics: &[Diagnostic],
) -> fmt::Result {
    for d in diagnostics {
        writeln!(f, "{d}\n")?;
    }
    let n = diagnostics.len();
    write!(
        f,
        "error: could not load `{file}` due to {n} error{}",
        if n == 1 { "" } else { "s" }
    )
}
