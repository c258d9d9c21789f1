//! Reading `models.yaml` into a small positioned tree.
//!
//! # Why saphyr
//!
//! The registry is parsed with [`saphyr`], the maintained successor of `yaml-rust` (a YAML 1.2
//! parser in pure Rust), through its *annotated* API ([`saphyr::MarkedYaml`]): every node,
//! including every mapping key and every list item, keeps the span (`saphyr::Span`) it was read
//! from. That is what lets the generator report **every** problem at `models.yaml:LINE:COL` —
//! wrong types, unknown keys, bad values, cross-entry conflicts — instead of the first one only.
//! `serde_yaml` is deprecated and, going through serde, loses positions as soon as a value is
//! deserialized; a serde-based loader would also stop at the first error.
//!
//! The saphyr tree is converted right away into a small `Node` tree, which is all the rest of the
//! generator sees, so the YAML library is contained in this module.

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A YAML node with its 1-based position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub line: usize,
    pub column: usize,
    pub kind: Kind,
}

/// The shapes of YAML the registry cares about.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    /// An integer, with its source text.
    Int(i64, String),
    /// A float, with its source text (`5.20` stays `5.20`).
    Float(String),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order. Duplicate keys are rejected by the parser.
    Map(Vec<(Node, Node)>),
    /// A node with a user-defined tag (`!foo`), which the registry never uses.
    Tagged(String),
    /// Anything else saphyr can produce (bad values, unresolved aliases).
    Invalid,
}

impl Node {
    pub fn pos(&self) -> (usize, usize) {
        (self.line, self.column)
    }

    /// A short description for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".to_owned(),
            Kind::Bool(b) => format!("boolean `{b}`"),
            Kind::Int(_, raw) => format!("integer `{raw}`"),
            Kind::Float(raw) => format!("number `{raw}`"),
            Kind::Str(s) => format!("string `{}`", crate::diag::printable(s)),
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
            Kind::Tagged(tag) => format!("a value tagged `{}`", crate::diag::printable(tag)),
            Kind::Invalid => "an invalid value".to_owned(),
        }
    }

    /// The text of a scalar as written (for free-form string maps such as `sources`).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(_, raw) | Kind::Float(raw) => Some(raw.clone()),
            Kind::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A YAML syntax error: 1-based position and the parser's message.
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses one YAML document. `Ok(None)` for an empty stream.
pub(crate) fn parse(source: &str) -> Result<Option<Node>, SyntaxError> {
    let docs = MarkedYaml::load_from_str(source).map_err(|e| SyntaxError {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_owned(),
    })?;
    if docs.len() > 1 {
        let second = &docs[1];
        return Err(SyntaxError {
            line: second.span.start.line(),
            column: second.span.start.col() + 1,
            message: "expected a single YAML document, found several (`---`)".to_owned(),
        });
    }
    let Some(doc) = docs.into_iter().next() else {
        return Ok(None);
    };
    let text = SourceText::new(source);
    let node = convert(&doc, &text);
    if matches!(node.kind, Kind::Invalid | Kind::Null) && matches!(doc.data, YamlData::BadValue) {
        return Ok(None);
    }
    Ok(Some(node))
}

/// Char-index → byte-index lookup, to recover the source text of numbers.
struct SourceText<'a> {
    src: &'a str,
    /// Byte offset of each char, only built for non-ASCII sources.
    offsets: Option<Vec<usize>>,
}

impl<'a> SourceText<'a> {
    fn new(src: &'a str) -> Self {
        let offsets = (!src.is_ascii()).then(|| src.char_indices().map(|(i, _)| i).collect());
        Self { src, offsets }
    }

    fn byte(&self, char_index: usize) -> usize {
        match &self.offsets {
            None => char_index.min(self.src.len()),
            Some(o) => o.get(char_index).copied().unwrap_or(self.src.len()),
        }
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        let (s, e) = (self.byte(start), self.byte(end));
        self.src.get(s..e.max(s)).unwrap_or("").trim()
    }
}

fn convert(node: &MarkedYaml<'_>, text: &SourceText<'_>) -> Node {
    let line = node.span.start.line();
    let column = node.span.start.col() + 1;
    let raw = || {
        text.slice(node.span.start.index(), node.span.end.index())
            .to_owned()
    };
    let kind = match &node.data {
        YamlData::Value(Scalar::Null) => Kind::Null,
        YamlData::Value(Scalar::Boolean(b)) => Kind::Bool(*b),
        YamlData::Value(Scalar::Integer(i)) => Kind::Int(*i, {
            let r = raw();
            if r.is_empty() { i.to_string() } else { r }
        }),
        YamlData::Value(Scalar::FloatingPoint(f)) => Kind::Float({
            let r = raw();
            if r.is_empty() { f.to_string() } else { r }
        }),
        YamlData::Value(Scalar::String(s)) => Kind::Str(s.to_string()),
        YamlData::Representation(s, _, _) => Kind::Str(s.to_string()),
        YamlData::Sequence(items) => Kind::Seq(items.iter().map(|n| convert(n, text)).collect()),
        YamlData::Mapping(map) => Kind::Map(
            map.iter()
                .map(|(k, v)| (convert(k, text), convert(v, text)))
                .collect(),
        ),
        YamlData::Tagged(tag, _) => Kind::Tagged(tag.to_string()),
        YamlData::Alias(_) | YamlData::BadValue => Kind::Invalid,
    };
    Node { line, column, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let n = parse("a: 1\nbb:\n  - x\n  - 5.20\n").unwrap().unwrap();
        let Kind::Map(entries) = &n.kind else {
            panic!()
        };
        assert_eq!(entries[0].0.pos(), (1, 1));
        assert_eq!(entries[0].1.pos(), (1, 4));
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!()
        };
        assert_eq!(items[0].pos(), (3, 5));
        assert_eq!(items[1].scalar_text().as_deref(), Some("5.20"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1 && e.column >= 1, "{e:?}");
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e:?}");
    }

    #[test]
    fn empty_document() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# only a comment\n").unwrap().is_none());
    }
}
