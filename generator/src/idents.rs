//! Turning registry strings into Rust: identifiers and string literals.
//!
//! Identifiers are only ever derived from model types that passed
//! [`crate::validate`]'s charset check (`[A-Za-z0-9][A-Za-z0-9_.-]*`), so the results below are
//! always valid Rust identifiers. Every other string that ends up in generated code goes through
//! [`rust_str`] and is emitted as an escaped string literal, never spliced raw.

use skillgen_vocab::Family;

/// Strict and reserved keywords of Rust 2024 (plus `union`/`macro_rules`/`raw`/`safe`, which are
/// only contextual but confusing as module names).
pub const RUST_KEYWORDS: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "gen",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "union",
    "macro_rules",
    "raw",
    "safe",
];

/// Module names the generated crate uses itself (besides the family modules).
pub const RESERVED_MODULES: &[&str] = &[
    "registry",
    "prelude",
    "std",
    "core",
    "alloc",
    "skillgen_runtime",
    "skills",
];

/// Type names a skill struct must not shadow: `Self` and the prelude types that macro-generated
/// code might name unqualified.
pub const RESERVED_TYPES: &[&str] = &[
    "Self",
    "Option",
    "Some",
    "None",
    "Result",
    "Ok",
    "Err",
    "String",
    "Vec",
    "Box",
    "Send",
    "Sync",
    "Sized",
    "Copy",
    "Clone",
    "Debug",
    "Default",
    "Drop",
    "Fn",
    "FnMut",
    "FnOnce",
    "Iterator",
    "ToString",
    "ToOwned",
    "Into",
    "From",
    "Eq",
    "PartialEq",
    "Ord",
    "PartialOrd",
    "AsRef",
    "AsMut",
    "Unpin",
];

/// A valid Rust string literal with the same contents, e.g. `"a\"b"`.
///
/// `Debug` for `str` escapes `"`, `\`, control characters and non-printable characters
/// (including bidi overrides), so the result can be pasted into any Rust source as one token.
pub fn rust_str(s: &str) -> String {
    format!("{s:?}")
}

/// The module identifier for a model type: lowercase, `-`/`.` → `_`, runs of `_` collapsed
/// (so the name stays `snake_case`), leading digit → `m_` prefix, keywords and reserved names
/// (and Windows device names such as `con`, which cannot be file stems there) get a trailing `_`.
///
/// `xlm-roberta` → `xlm_roberta`, `2d-model` → `m_2d_model`, `type` → `type_`,
/// `encoder` → `encoder_`.
pub fn module_ident(model_type: &str) -> String {
    let mut out = String::with_capacity(model_type.len() + 2);
    for c in model_type.chars() {
        let c = match c {
            '-' | '.' => '_',
            c => c.to_ascii_lowercase(),
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "m_");
    }
    if is_reserved_module(&out) {
        out.push('_');
    }
    out
}

/// File stems Windows refuses whatever the extension (`con.rs` cannot be checked out there).
pub const WINDOWS_DEVICE_NAMES: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

fn is_reserved_module(s: &str) -> bool {
    RUST_KEYWORDS.contains(&s)
        || RESERVED_MODULES.contains(&s)
        || WINDOWS_DEVICE_NAMES.contains(&s)
        || Family::ALL.iter().any(|f| f.module() == s)
        || s == "_"
}

/// The struct identifier for a model type: UpperCamelCase of the parts split at `-`, `.`, `_`
/// (each part's first letter uppercased, the rest kept), with `_` kept between two digits so
/// that `qwen2_5` and `qwen25` stay distinct; leading digit → `M` prefix; `Self` and prelude
/// names get a `Model` suffix.
///
/// `xlm-roberta` → `XlmRoberta`, `gpt-sw3` → `GptSw3`, `t5` → `T5`, `qwen2_5_vl` →
/// `Qwen2_5Vl`, `2d-model` → `M2dModel`, `self` → `SelfModel`.
pub fn struct_ident(model_type: &str) -> String {
    let mut out = String::with_capacity(model_type.len() + 1);
    for part in model_type.split(['-', '.', '_']).filter(|p| !p.is_empty()) {
        if out.ends_with(|c: char| c.is_ascii_digit())
            && part.starts_with(|c: char| c.is_ascii_digit())
        {
            out.push('_');
        }
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'M');
    }
    if out.is_empty() {
        out.push_str("Unnamed");
    }
    if RESERVED_TYPES.contains(&out.as_str()) || RUST_KEYWORDS.contains(&out.as_str()) {
        out.push_str("Model");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules() {
        assert_eq!(module_ident("bert"), "bert");
        assert_eq!(module_ident("xlm-roberta"), "xlm_roberta");
        assert_eq!(module_ident("xlm_roberta"), "xlm_roberta");
        assert_eq!(module_ident("gpt-sw3"), "gpt_sw3");
        assert_eq!(module_ident("2d-model"), "m_2d_model");
        assert_eq!(module_ident("type"), "type_");
        assert_eq!(module_ident("self"), "self_");
        assert_eq!(module_ident("Self"), "self_");
        assert_eq!(module_ident("gen"), "gen_");
        assert_eq!(module_ident("crate"), "crate_");
        assert_eq!(module_ident("encoder"), "encoder_");
        assert_eq!(module_ident("time-series"), "time_series_");
        assert_eq!(module_ident("registry"), "registry_");
        assert_eq!(module_ident("std"), "std_");
        assert_eq!(module_ident("a--b..c"), "a_b_c");
        assert_eq!(module_ident("Qwen2.5"), "qwen2_5");
        assert_eq!(module_ident("con"), "con_");
        assert_eq!(module_ident("COM1"), "com1_");
        assert_eq!(module_ident("nul.txt"), "nul_txt");
    }

    #[test]
    fn structs() {
        assert_eq!(struct_ident("bert"), "Bert");
        assert_eq!(struct_ident("xlm-roberta"), "XlmRoberta");
        assert_eq!(struct_ident("xlm_roberta"), "XlmRoberta");
        assert_eq!(struct_ident("gpt-sw3"), "GptSw3");
        assert_eq!(struct_ident("t5"), "T5");
        assert_eq!(struct_ident("qwen2_5_vl"), "Qwen2_5Vl");
        assert_eq!(struct_ident("qwen25_vl"), "Qwen25Vl");
        assert_eq!(struct_ident("2d-model"), "M2dModel");
        assert_eq!(struct_ident("self"), "SelfModel");
        assert_eq!(struct_ident("result"), "ResultModel");
        assert_eq!(struct_ident("type"), "Type");
    }

    #[test]
    fn idents_parse_as_rust() {
        for mt in [
            "bert", "type", "self", "Self", "crate", "super", "gen", "2d-model", "a.b", "x-",
            "encoder", "m_", "a__b", "9", "result", "try", "async", "union",
        ] {
            let m = module_ident(mt);
            let s = struct_ident(mt);
            let src = format!("mod {m} {{ pub struct {s}; }}");
            syn::parse_file(&src).unwrap_or_else(|e| panic!("{mt}: {src}: {e}"));
        }
    }

    #[test]
    fn string_literals_round_trip() {
        for s in [
            "plain",
            "quote\"break",
            "*/ /*",
            "{{ tera }}",
            "new\nline",
            "\\",
            "\u{202e}",
        ] {
            let lit = rust_str(s);
            let parsed: syn::LitStr = syn::parse_str(&lit).unwrap();
            assert_eq!(parsed.value(), s);
            assert!(!lit.contains('\u{202e}'), "bidi chars are escaped");
        }
    }
}
