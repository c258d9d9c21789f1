//! Formatting rendered Rust: `syn::parse_file` + `prettyplease::unparse`, with a fast path for
//! the leading documentation.
//!
//! Generated files are mostly documentation: a skill module is ~40 `//!` lines and one `///`
//! line in front of a ten-line struct. Parsing every doc line into a `syn::Attribute` (a token
//! stream, a string literal to unescape, a `Meta`) was 40% of a full regeneration. prettyplease
//! prints a single-line doc attribute as `//!`/`///` plus its value with trailing spaces
//! trimmed, followed by a hard break at the file's indentation (0): nothing before or after it
//! depends on the other doc lines. So [`rust`] takes the leading run of such doc attributes off
//! the text, formats the rest behind *one* placeholder doc attribute of each style (so the file's
//! box is broken exactly as it is with the real lines: every line after a hard break is laid out
//! the same), and swaps the placeholder lines for the real ones.
//!
//! Only plain cases are taken off: `//!`/`///` comments and `#![doc = "..."]`/`#[doc = "..."]`
//! with a cooked string literal whose escapes are the common ones, whose value is one line, and
//! (outer) does not start with `/`, all inner before all outer. Anything else ends the run and
//! stays in the text syn parses. If the shortened text does not parse, or its output does not
//! start with the placeholder lines, [`rust`] formats the whole text with [`rust_reference`]
//! instead, so errors (and any case this reasoning missed) are exactly the reference's. The tests
//! compare both on every file of every registry in the repository and on edge cases.

use std::borrow::Cow;

/// Formats `text` like [`rust_reference`], faster (see the module documentation).
pub fn rust(text: &str) -> Result<String, syn::Error> {
    let docs = leading_docs(text);
    if docs.inner.is_empty() && docs.outer.is_empty() {
        return rust_reference(text);
    }
    let mut short = String::with_capacity(docs.rest.len() + 32);
    if !docs.inner.is_empty() {
        short.push_str("#![doc = \"\"]\n");
    }
    if !docs.outer.is_empty() {
        short.push_str("#[doc = \"\"]\n");
    }
    short.push_str(docs.rest);
    let Ok(file) = syn::parse_file(&short) else {
        return rust_reference(text);
    };
    let formatted = prettyplease::unparse(&file);
    let mut tail = formatted.as_str();
    for (lines, placeholder) in [(&docs.inner, "//!\n"), (&docs.outer, "///\n")] {
        if !lines.is_empty() {
            match tail.strip_prefix(placeholder) {
                Some(t) => tail = t,
                None => return rust_reference(text),
            }
        }
    }
    let doc_bytes: usize = docs
        .inner
        .iter()
        .chain(&docs.outer)
        .map(|d| d.len() + 4)
        .sum();
    let mut out = String::with_capacity(doc_bytes + tail.len());
    for (lines, marker) in [(&docs.inner, "//!"), (&docs.outer, "///")] {
        for line in lines.iter() {
            out.push_str(marker);
            out.push_str(line.trim_end_matches(' '));
            out.push('\n');
        }
    }
    out.push_str(tail);
    Ok(out)
}

/// The plain formatter: `prettyplease::unparse(&syn::parse_file(text)?)`.
pub fn rust_reference(text: &str) -> Result<String, syn::Error> {
    Ok(prettyplease::unparse(&syn::parse_file(text)?))
}

/// The leading doc attributes of a file (their values) and the text after them.
#[derive(Debug, Default, PartialEq, Eq)]
struct LeadingDocs<'a> {
    inner: Vec<Cow<'a, str>>,
    outer: Vec<Cow<'a, str>>,
    rest: &'a str,
}

fn leading_docs(text: &str) -> LeadingDocs<'_> {
    let mut docs = LeadingDocs {
        rest: text,
        ..LeadingDocs::default()
    };
    let mut s = text;
    loop {
        s = s.trim_start_matches([' ', '\t', '\n']);
        let Some((inner, value, after)) = doc_attribute(s) else {
            break;
        };
        // prettyplease prints other values (several lines, an outer one starting with `/`)
        // differently; and inner attributes must come first.
        if value.contains(['\n', '\r'])
            || (!inner && value.starts_with('/'))
            || (inner && !docs.outer.is_empty())
        {
            break;
        }
        if inner {
            docs.inner.push(value);
        } else {
            docs.outer.push(value);
        }
        s = after;
        docs.rest = s;
    }
    docs
}

/// One doc attribute at the start of `s`: (inner, value, the text after it).
fn doc_attribute(s: &str) -> Option<(bool, Cow<'_, str>, &str)> {
    for (marker, inner) in [("//!", true), ("///", false)] {
        if let Some(body) = s.strip_prefix(marker) {
            if !inner && body.starts_with('/') {
                return None; // `////` is a plain comment
            }
            let (line, after) = body.split_once('\n').unwrap_or((body, ""));
            if line.contains('\r') {
                return None;
            }
            return Some((inner, Cow::Borrowed(line), after));
        }
    }
    let (inner, s) = if let Some(s) = s.strip_prefix("#![") {
        (true, s)
    } else {
        (false, s.strip_prefix("#[")?)
    };
    let s = s.trim_start_matches([' ', '\t']).strip_prefix("doc")?;
    let s = s.trim_start_matches([' ', '\t']).strip_prefix('=')?;
    let (value, s) = string_literal(s.trim_start_matches([' ', '\t']))?;
    let s = s.trim_start_matches([' ', '\t']).strip_prefix(']')?;
    Some((inner, value, s))
}

/// A cooked string literal without suffix at the start of `s`: (its value, the text after it).
/// Only the common escapes; anything unusual (line continuations, raw newlines, `_` in `\u`) is
/// `None`, which leaves the attribute to syn.
fn string_literal(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let body = s.strip_prefix('"')?;
    let end = body.find(['"', '\\', '\n', '\r'])?;
    if body.as_bytes()[end] == b'"' {
        return Some((
            Cow::Borrowed(&body[..end]),
            after_literal(&body[end + 1..])?,
        ));
    }
    let mut value = String::with_capacity(body.len().min(256));
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        let unescaped = match c {
            '"' => return Some((Cow::Owned(value), after_literal(&body[i + 1..])?)),
            '\n' | '\r' => return None,
            '\\' => match chars.next()?.1 {
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                '\\' => '\\',
                '0' => '\0',
                '\'' => '\'',
                '"' => '"',
                'x' => {
                    let hi = chars.next()?.1.to_digit(8)?;
                    let lo = chars.next()?.1.to_digit(16)?;
                    char::from_u32(hi * 16 + lo)?
                }
                'u' => {
                    if chars.next()?.1 != '{' {
                        return None;
                    }
                    let mut code = 0u32;
                    let mut digits = 0;
                    loop {
                        let d = chars.next()?.1;
                        if d == '}' {
                            break;
                        }
                        code = code * 16 + d.to_digit(16)?;
                        digits += 1;
                        if digits > 6 {
                            return None;
                        }
                    }
                    if digits == 0 {
                        return None;
                    }
                    char::from_u32(code)?
                }
                _ => return None,
            },
            c => c,
        };
        value.push(unescaped);
    }
    None
}

/// The text after a string literal's closing quote, if no suffix follows it.
fn after_literal(s: &str) -> Option<&str> {
    match s.chars().next() {
        Some(c) if c == '_' || c.is_alphanumeric() => None,
        _ => Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rust` equals `rust_reference`, errors included.
    #[track_caller]
    fn same(text: &str) {
        let fast = rust(text).map_err(|e| e.to_string());
        let reference = rust_reference(text).map_err(|e| e.to_string());
        assert_eq!(fast, reference, "for {text:?}");
    }

    #[test]
    fn takes_plain_doc_lines_off() {
        let docs = leading_docs(
            "//! a\n#![doc = \"b \\\" \\\\ \\u{e9} \\x41\"]\n  #![doc=\"\"]\n/// c\n#[doc = \"d\"]\n#[derive(Debug)]\nstruct S;",
        );
        assert_eq!(docs.inner, [" a", "b \" \\ é A", ""]);
        assert_eq!(docs.outer, [" c", "d"]);
        assert_eq!(docs.rest, "\n#[derive(Debug)]\nstruct S;");
    }

    #[test]
    fn leaves_everything_unusual_to_syn() {
        for text in [
            "#![doc = \"a\\nb\"]\nstruct S;",
            "#![doc = \"a\\\n  b\"]\nstruct S;",
            "#![doc = r\"a\"]\nstruct S;",
            "#![doc = \"a\"suffix]\nstruct S;",
            "#![doc = \"\\u{1_F600}\"]\nstruct S;",
            "#![doc = \"\\x80\"]\nstruct S;",
            "#![doc = \"\\q\"]\nstruct S;",
            "#![doc = concat!(\"a\")]\nstruct S;",
            "#![docs = \"a\"]\nstruct S;",
            "#! [doc = \"a\"]\nstruct S;",
            "/*! a */\nstruct S;",
            "//! a\r\nstruct S;",
            "\u{feff}//! a\nstruct S;",
        ] {
            let docs = leading_docs(text);
            assert!(docs.inner.is_empty() && docs.outer.is_empty(), "{text:?}");
            same(text);
        }
        // An outer doc starting with `/` ends the run; an inner one after an outer one too.
        let docs = leading_docs("//! a\n#[doc = \"/b\"]\nstruct S;");
        assert_eq!((docs.inner.len(), docs.outer.len()), (1, 0));
        let docs = leading_docs("/// a\n//! b\nstruct S;");
        assert_eq!((docs.inner.len(), docs.outer.len()), (0, 1));
    }

    #[test]
    fn matches_the_reference() {
        for text in [
            "",
            "//! only inner docs\n//!\n",
            "//! a   \n//!\tb\t \n/// c  \nstruct S;\n",
            "#![doc = \"  spaces  \"]\n#![doc = \"\"]\n#[doc = \"x\"]\n#[derive(Debug)]\npub struct S { a: u8 }",
            "//! a\n#![allow(dead_code)]\nfn f() {}",
            "//! a\n#![allow(dead_code)]",
            "//! a\n/// b\n#[cfg(test)]\nmod m { fn f() { let x = 1; } }\nstruct T;",
            "//! a\n/// b\n",
            "/// b\n//! a\nstruct S;",
            "//! a\n#[doc = \"/b\"]\nstruct S;",
            "//! a\n#[doc = \"b\\nc\"]\nstruct S;",
            "//! a\n#![doc = \"b\\nc\"]\nstruct S;",
            "//! a\n////plain\n/// b\nstruct S;",
            "//! a\n// plain\n/// b\nstruct S;",
            "//! a \"quoted\" \\ back\n/// \u{301}é\u{200b}\nstruct S;",
            "//! a\n/// b\nmacro_rules! m { () => {} }",
            "//! a\n/// b\nuse x::y;\n/// c\nfn f() {}",
            "//! a\nstruct S",
            "//! a\n/// b\n",
            "#![doc = \"\\u{D800}\"]\nstruct S;",
            "//! a\n#!/bin/sh\nstruct S;",
            "//! a\nfn f() { let long_name_number_one = some_function_call(argument_one, argument_two, argument_three); }",
        ] {
            same(text);
        }
    }
}
