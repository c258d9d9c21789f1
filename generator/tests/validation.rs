//! One test per validation rule: the message and the `line:column` it is reported at.

use skillgen::{Diagnostic, Registry};

fn load(yaml: &str) -> Result<Registry, skillgen::Error> {
    Registry::parse_str(yaml, "models.yaml")
}

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match load(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => {
            let d = e.diagnostics().to_vec();
            assert!(!d.is_empty(), "not a registry error: {e}");
            d
        }
    }
}

/// The only error, as `(line, column, message)`.
fn one(yaml: &str) -> (usize, usize, String) {
    let d = errors(yaml);
    assert_eq!(d.len(), 1, "expected one error, got: {d:#?}");
    (d[0].line, d[0].column, d[0].message.clone())
}

/// A registry with one entry made of `fields` (YAML lines at entry indentation).
fn entry(fields: &str) -> String {
    let mut s = String::from("version: 1\nmodels:\n");
    let mut first = true;
    for line in fields.lines() {
        s.push_str(if first { "  - " } else { "    " });
        s.push_str(line);
        s.push('\n');
        first = false;
    }
    s
}

const BASE: &str = "model_type: bert\nconfig_class: BertConfig\nhf_module: bert\nfamily: encoder\nfamily_source: derived\nmodalities: [text]";

fn base_with(extra: &str) -> String {
    entry(&format!("{BASE}\n{extra}"))
}

/// Two valid entries, then `extra` lines appended to the second one (line 10 onwards).
fn two(first_type: &str, second_type: &str) -> String {
    let mut s = String::from("version: 1\nmodels:\n");
    for mt in [first_type, second_type] {
        s.push_str(&format!(
            "  - model_type: {mt}\n    config_class: XConfig\n    hf_module: x\n    family: encoder\n    family_source: derived\n    modalities: [text]\n"
        ));
    }
    s
}

#[test]
fn valid_entry_loads() {
    let r = load(&base_with(
        "tasks:\n  base-model: [BertModel]\n  masked-lm: [BertForMaskedLM]\ncandle: bert\nmax: [bert]\nnotes: \"multi\\nline\"\ndeprecated: true",
    ))
    .unwrap();
    let m = &r.models[0];
    assert_eq!(m.module, "bert");
    assert_eq!(m.struct_name, "Bert");
    assert_eq!(m.tasks.len(), 2);
    assert!(m.deprecated);
    assert_eq!(m.notes.as_ref().unwrap().value, "multi\nline");
    assert_eq!((m.model_type.line, m.model_type.column), (3, 17));
}

#[test]
fn yaml_syntax_error_has_position() {
    let d = errors("version: 1\nmodels:\n  - model_type: [bert\n    family: encoder\n");
    assert_eq!(d.len(), 1);
    assert!(
        d[0].message.starts_with("YAML syntax error: "),
        "{}",
        d[0].message
    );
    assert!(d[0].line >= 3, "{:?}", d[0]);
}

#[test]
fn duplicate_yaml_key_is_a_syntax_error() {
    let d = errors(&base_with("family: decoder"));
    assert_eq!(d.len(), 1);
    assert!(d[0].message.contains("duplicate"), "{}", d[0].message);
}

#[test]
fn empty_registry() {
    assert_eq!(
        one(""),
        (
            1,
            1,
            "the registry is empty: expected a mapping with `version` and `models`".into()
        )
    );
}

#[test]
fn top_level_must_be_a_mapping() {
    let (l, c, m) = one("- a\n- b\n");
    assert_eq!((l, c), (1, 1));
    assert!(
        m.starts_with("expected a mapping with `version` and `models`"),
        "{m}"
    );
}

#[test]
fn missing_top_level_keys() {
    let d = errors("sources: {}\n");
    let msgs: Vec<_> = d.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "missing required top-level key `models`",
            "missing required top-level key `version`"
        ]
    );
}

#[test]
fn unsupported_version() {
    assert_eq!(
        one("version: 2\nmodels: []\n"),
        (
            1,
            10,
            "unsupported registry version `2` (this skillgen reads version 1)".into()
        )
    );
}

#[test]
fn unknown_top_level_key_did_you_mean() {
    assert_eq!(
        one("version: 1\nmodel: []\nmodels: []\n"),
        (2, 1, "unknown key `model` (did you mean `models`?)".into())
    );
}

#[test]
fn unknown_entry_key_did_you_mean() {
    let d = errors(&base_with("taks: {}"));
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].line, d[0].column, d[0].message.as_str()),
        (9, 5, "unknown key `taks` (did you mean `tasks`?)")
    );
    assert_eq!(d[0].model_type.as_deref(), Some("bert"));
    assert_eq!(d[0].index, Some(0));
}

#[test]
fn unknown_key_without_suggestion_lists_allowed_keys() {
    let (_, _, m) = one(&base_with("zzzzzzzzzz: 1"));
    assert!(
        m.starts_with("unknown key `zzzzzzzzzz` (expected one of `model_type`, "),
        "{m}"
    );
}

#[test]
fn missing_required_keys() {
    let d = errors(&entry("model_type: bert\nfamily: encoder"));
    let msgs: Vec<_> = d
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(
        msgs,
        [
            (3, 5, "missing required key `config_class`"),
            (3, 5, "missing required key `family_source`"),
            (3, 5, "missing required key `hf_module`"),
            (3, 5, "missing required key `modalities`"),
        ]
    );
}

#[test]
fn family_not_set() {
    let yaml = entry(
        "model_type: bert\nconfig_class: BertConfig\nhf_module: bert\nfamily_source: derived\nmodalities: [text]",
    );
    let (l, c, m) = one(&yaml);
    assert_eq!((l, c), (3, 5));
    assert!(m.starts_with("family not set: resolve by hand"), "{m}");
    let yaml = yaml.replace("family_source", "family: null\n    family_source");
    let (l, c, m) = one(&yaml);
    assert_eq!((l, c), (6, 13));
    assert!(m.starts_with("family not set: resolve by hand"), "{m}");
}

#[test]
fn wrong_types_are_all_reported() {
    let d = errors(&entry(
        "model_type: 12\nconfig_class: [BertConfig]\nhf_module: bert\nfamily: encoder\nfamily_source: derived\nmodalities: text\ndeprecated: \"yes\"\ntasks: [base-model]",
    ));
    let msgs: Vec<_> = d
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(
        msgs,
        [
            (3, 17, "expected a string, found integer `12`"),
            (4, 19, "expected a string, found a list"),
            (
                8,
                17,
                "expected a non-empty list of modalities, found string `text`"
            ),
            (9, 17, "expected `true` or `false`, found string `yes`"),
            (
                10,
                12,
                "expected a mapping of task to class names, found a list"
            ),
        ]
    );
}

#[test]
fn unknown_family_did_you_mean() {
    let (l, c, m) = one(&entry(
        "model_type: bert\nconfig_class: BertConfig\nhf_module: bert\nfamily: encodr\nfamily_source: derived\nmodalities: [text]",
    ));
    assert_eq!(
        (l, c, m.as_str()),
        (6, 13, "unknown family `encodr` (did you mean `encoder`?)")
    );
}

#[test]
fn unknown_family_source() {
    let yaml = base_with("").replace("family_source: derived", "family_source: curatd");
    assert_eq!(
        one(&yaml),
        (
            7,
            20,
            "unknown family source `curatd` (did you mean `curated`?)".into()
        )
    );
}

#[test]
fn unknown_modality_did_you_mean() {
    let yaml = base_with("").replace("[text]", "[text, imag]");
    assert_eq!(
        one(&yaml),
        (
            8,
            24,
            "unknown modality `imag` (did you mean `image`?)".into()
        )
    );
}

#[test]
fn duplicate_modality() {
    let yaml = base_with("").replace("[text]", "[text, text]");
    assert_eq!(one(&yaml), (8, 24, "duplicate modality `text`".into()));
}

#[test]
fn empty_modalities() {
    let yaml = base_with("").replace("[text]", "[]");
    let (l, c, m) = one(&yaml);
    assert_eq!((l, c), (8, 17));
    assert!(m.starts_with("`modalities` must not be empty"), "{m}");
}

#[test]
fn unknown_task_did_you_mean() {
    assert_eq!(
        one(&base_with("tasks:\n  masked_lm: [BertForMaskedLM]")),
        (
            10,
            7,
            "unknown task `masked_lm` (did you mean `masked-lm`?)".into()
        )
    );
}

#[test]
fn task_without_classes() {
    assert_eq!(
        one(&base_with("tasks:\n  masked-lm: []")),
        (
            10,
            18,
            "task `masked-lm` lists no classes: give at least one class name or remove the task"
                .into()
        )
    );
}

#[test]
fn task_not_accepted_by_family() {
    assert_eq!(
        one(&base_with("tasks:\n  image-classification: [BertForImages]")),
        (
            10,
            7,
            "task `image-classification` (category `image`) is not allowed for family `encoder`, which accepts task categories `generic`, `text`".into()
        )
    );
}

#[test]
fn class_names_must_be_identifier_like() {
    assert_eq!(
        one(&base_with("tasks:\n  base-model: [\"Bert Model\"]")),
        (
            10,
            20,
            "class name `Bert Model` must match `[A-Za-z_][A-Za-z0-9_]*`".into()
        )
    );
    let yaml = base_with("").replace("BertConfig", "1Config");
    assert_eq!(
        one(&yaml),
        (
            4,
            19,
            "config class `1Config` must match `[A-Za-z_][A-Za-z0-9_]*`".into()
        )
    );
}

#[test]
fn duplicate_class_in_task() {
    assert_eq!(
        one(&base_with("tasks:\n  base-model: [BertModel, BertModel]")),
        (10, 31, "duplicate class `BertModel`".into())
    );
}

#[test]
fn candle_charset() {
    assert_eq!(
        one(&base_with("candle: Bert-Model")),
        (
            9,
            13,
            "candle module `Bert-Model` must match `[a-z0-9_]+`".into()
        )
    );
}

#[test]
fn max_charset() {
    assert_eq!(
        one(&base_with("max: [bert, \"bert arch\"]")),
        (
            9,
            17,
            "MAX architecture `bert arch` must match `[A-Za-z0-9_]+`".into()
        )
    );
}

#[test]
fn hf_module_charset() {
    let yaml = base_with("").replace("hf_module: bert", "hf_module: bert/x");
    assert_eq!(
        one(&yaml),
        (
            5,
            16,
            "transformers module `bert/x` must match `[A-Za-z0-9_]+(\\.[A-Za-z0-9_]+)*`".into()
        )
    );
}

#[test]
fn control_characters_rejected_except_newline_in_notes() {
    assert_eq!(
        one(&base_with("notes: \"tab\\there\"")),
        (
            9,
            12,
            "notes `tab\\there` contains a control character (`\\t`)".into()
        )
    );
    load(&base_with("notes: \"line\\nbreak\"")).unwrap();
    let yaml = base_with("").replace("BertConfig", "\"Bert\\nConfig\"");
    assert_eq!(
        one(&yaml),
        (
            4,
            19,
            "config class `Bert\\nConfig` contains a control character (`\\n`)".into()
        )
    );
    let yaml = base_with("notes: \"evil \u{202e} text\"");
    let (_, _, m) = one(&yaml);
    assert!(m.contains("bidirectional-override character"), "{m}");
}

#[test]
fn sub_config_of_must_exist() {
    assert_eq!(
        one(&base_with("sub_config_of: [zzz]")),
        (
            9,
            21,
            "`sub_config_of` names unknown model type `zzz`".into()
        )
    );
    let mut yaml = two("clip", "clip_text_model");
    yaml.push_str("    sub_config_of: [clipp]\n");
    assert_eq!(
        one(&yaml),
        (
            15,
            21,
            "`sub_config_of` names unknown model type `clipp` (did you mean `clip`?)".into()
        )
    );
    let mut yaml = two("clip", "clip_text_model");
    yaml.push_str("    sub_config_of: [clip]\n");
    load(&yaml).unwrap();
}

#[test]
fn sub_config_of_self() {
    assert_eq!(
        one(&base_with("sub_config_of: [bert]")),
        (
            9,
            21,
            "`bert` cannot be a sub-configuration of itself".into()
        )
    );
}

#[test]
fn duplicate_model_type() {
    assert_eq!(
        one(&two("bert", "bert")),
        (
            9,
            17,
            "duplicate model type `bert` (first defined in models[0] at models.yaml:3:17)".into()
        )
    );
}

#[test]
fn model_type_charset_rules() {
    let cases: &[(&str, &str)] = &[
        ("\"\"", "model type must not be empty"),
        (
            "../etc",
            "model type `../etc` contains a path separator (`/` or `\\`)",
        ),
        ("a..b", "model type `a..b` contains `..`"),
        (
            "a/b",
            "model type `a/b` contains a path separator (`/` or `\\`)",
        ),
        (
            "'a\\b'",
            "model type `a\\b` contains a path separator (`/` or `\\`)",
        ),
        (
            "-bert",
            "model type `-bert` must start with an ASCII letter or digit",
        ),
        (
            "\"quote\\\"break\"",
            "model type `quote\"break` contains `\"`: only ASCII letters, digits, `_`, `.` and `-` are allowed",
        ),
        (
            "\"*/ /*\"",
            "model type `*/ /*` contains a path separator (`/` or `\\`)",
        ),
        (
            "\"{{ tera }}\"",
            "model type `{{ tera }}` must start with an ASCII letter or digit",
        ),
        (
            "\"new\\nline\"",
            "model type `new\\nline` contains a control character (`\\n`)",
        ),
        (
            "bért",
            "model type `bért` contains `é`: only ASCII letters, digits, `_`, `.` and `-` are allowed",
        ),
    ];
    for (yaml_value, expected) in cases {
        let yaml = base_with("").replace("model_type: bert", &format!("model_type: {yaml_value}"));
        let (l, c, m) = one(&yaml);
        assert_eq!((l, c, m.as_str()), (3, 17, *expected), "for {yaml_value}");
    }
    let long = "a".repeat(65);
    let yaml = base_with("").replace("model_type: bert", &format!("model_type: {long}"));
    let (_, _, m) = one(&yaml);
    assert!(
        m.ends_with("is 65 characters long (at most 64 allowed)"),
        "{m}"
    );
    let ok = "a".repeat(64);
    load(&base_with("").replace("model_type: bert", &format!("model_type: {ok}"))).unwrap();
}

#[test]
fn module_collision_names_both_entries() {
    let d = errors(&two("xlm-roberta", "xlm_roberta"));
    let msgs: Vec<_> = d
        .iter()
        .map(|d| (d.line, d.column, d.message.as_str()))
        .collect();
    assert_eq!(
        msgs,
        [
            (
                9,
                17,
                "model type `xlm_roberta` collides with model type `xlm-roberta` (models[0] at models.yaml:3:17): both become the Rust module name `xlm_roberta`; rename one of them"
            ),
            (
                9,
                17,
                "model type `xlm_roberta` collides with model type `xlm-roberta` (models[0] at models.yaml:3:17): both become the Rust struct name `XlmRoberta`; rename one of them"
            ),
        ]
    );
}

#[test]
fn struct_only_collision() {
    // `ab-c` → module `ab_c`, struct `AbC`; `AbC` → module `abc`, struct `AbC`.
    let (l, c, m) = one(&two("ab-c", "AbC"));
    assert_eq!((l, c), (9, 17));
    assert!(m.contains("struct name `AbC`"), "{m}");
}

#[test]
fn hostile_but_valid_names_get_safe_identifiers() {
    let mut yaml = String::from("version: 1\nmodels:\n");
    let names = [
        "type",
        "self",
        "Self-x",
        "crate",
        "super",
        "gen",
        "2d-model",
        "encoder",
        "registry",
        "prelude",
        "std",
        "mod",
        "a.b-c",
        "vision-text",
    ];
    for mt in names {
        yaml.push_str(&format!(
            "  - model_type: {mt}\n    config_class: XConfig\n    hf_module: x\n    family: encoder\n    family_source: derived\n    modalities: [text]\n"
        ));
    }
    let r = load(&yaml).unwrap();
    let got: Vec<(&str, &str, &str)> = r
        .models
        .iter()
        .map(|m| {
            (
                m.model_type.as_str(),
                m.module.as_str(),
                m.struct_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("type", "type_", "Type"),
            ("self", "self_", "SelfModel"),
            ("Self-x", "self_x", "SelfX"),
            ("crate", "crate_", "Crate"),
            ("super", "super_", "Super"),
            ("gen", "gen_", "Gen"),
            ("2d-model", "m_2d_model", "M2dModel"),
            ("encoder", "encoder_", "Encoder"),
            ("registry", "registry_", "Registry"),
            ("prelude", "prelude_", "Prelude"),
            ("std", "std_", "Std"),
            ("mod", "mod_", "Mod"),
            ("a.b-c", "a_b_c", "ABC"),
            ("vision-text", "vision_text_", "VisionText"),
        ]
    );
    for m in &r.models {
        let src = format!("mod {} {{ pub struct {}; }}", m.module, m.struct_name);
        syn::parse_file(&src).unwrap_or_else(|e| panic!("{src}: {e}"));
    }
}

#[test]
fn every_error_is_collected_and_sorted() {
    let yaml = "\
version: 1
sources:
  transformers: 5.23.0
models:
  - model_type: bert
    config_class: BertConfig
    hf_module: bert
    family: encodr
    family_source: derived
    modalities: [txt]
    tasks:
      base-model: [BertModel]
  - model_type: bert
    config_class: BertConfig
    hf_module: bert
    family: decoder
    family_source: derived
    modalities: [text]
    tasks:
      image-classification: [\"Not A Class\"]
    candel: bert
  - model_type: ../etc
    config_class: EtcConfig
    hf_module: etc
    family_source: derived
    modalities: [text]
    sub_config_of: [nope]
";
    let err = load(yaml).unwrap_err();
    assert_eq!(err.diagnostics().len(), 9);
    let mut sorted = err.diagnostics().to_vec();
    sorted.sort_by_key(|d| (d.line, d.column));
    assert_eq!(sorted, err.diagnostics());
    insta::assert_snapshot!("multi_error_report", err.to_string());
}

// ---------------------------------------------------------------------------------------------
// `native:` and `refused:`
// ---------------------------------------------------------------------------------------------

const TASKS: &str = "tasks:\n  base-model: [BertModel]\n  masked-lm: [BertForMaskedLM]";

/// `base_with` plus the two tasks above (lines 9–11); `extra` starts at line 12.
fn with_tasks(extra: &str) -> String {
    base_with(&format!("{TASKS}\n{extra}"))
}

#[test]
fn native_and_refused_load_sorted() {
    let r = load(&with_tasks(
        "native:\n  masked-lm: encoder\n  base-model: encoder\nrefused:\n  max: \"MAX pools differently | *really*\"",
    ))
    .unwrap();
    let m = &r.models[0];
    let native: Vec<_> = m
        .native
        .iter()
        .map(|n| (n.task.as_str(), n.implementation.as_str()))
        .collect();
    assert_eq!(
        native,
        [("base-model", "encoder"), ("masked-lm", "encoder")]
    );
    assert_eq!((m.native[0].task.line, m.native[0].task.column), (14, 7));
    assert_eq!(m.refused.len(), 1);
    assert_eq!(m.refused[0].backend.as_str(), "max");
    assert_eq!(
        m.refused[0].reason.value,
        "MAX pools differently | *really*"
    );
    // Empty mappings are allowed and mean nothing.
    let r = load(&with_tasks("native: {}\nrefused:")).unwrap();
    assert!(r.models[0].native.is_empty() && r.models[0].refused.is_empty());
}

#[test]
fn native_unknown_task_did_you_mean() {
    let d = errors(&with_tasks("native:\n  masked_lm: encoder"));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].line, d[0].column, d[0].message.as_str()),
        (
            13,
            7,
            "unknown task `masked_lm` (did you mean `masked-lm`?)"
        )
    );
    assert_eq!(d[0].model_type.as_deref(), Some("bert"));
    assert_eq!(d[0].field.as_deref(), Some("native.masked_lm"));
    let shown = d[0].to_string();
    assert!(shown.contains("--> models.yaml:13:7"), "{shown}");
    assert!(
        shown.contains("in models[0] (model_type `bert`), field `native.masked_lm`"),
        "{shown}"
    );
}

#[test]
fn native_unknown_implementation_did_you_mean() {
    let d = errors(&with_tasks("native:\n  masked-lm: encodr"));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].line, d[0].column, d[0].message.as_str()),
        (
            13,
            18,
            "unknown native implementation `encodr` (did you mean `encoder`?)"
        )
    );
    assert_eq!(d[0].field.as_deref(), Some("native.masked-lm"));
    // The identifier spelling of a task is not the canonical one either way round.
    let (l, c, m) = one(&with_tasks("native:\n  masked-lm: Decoder"));
    assert_eq!((l, c), (13, 18));
    assert_eq!(
        m,
        "unknown native implementation `Decoder` (did you mean `decoder`?)"
    );
}

#[test]
fn native_wrong_shapes() {
    let (l, c, m) = one(&with_tasks("native: [masked-lm]"));
    assert_eq!(
        (l, c, m.as_str()),
        (
            12,
            13,
            "expected a mapping of task to native implementation, found a list"
        )
    );
    let (l, c, m) = one(&with_tasks("native:\n  masked-lm: [encoder]"));
    assert_eq!((l, c), (13, 18));
    // Every implementation the vocabulary has, in its order.
    let all: Vec<String> = skillgen_vocab::NativeImpl::ALL
        .iter()
        .map(|i| format!("`{}`", i.as_str()))
        .collect();
    assert_eq!(
        m,
        format!(
            "expected a native implementation ({}), found a list",
            all.join(", ")
        )
    );
    assert!(m.starts_with("expected a native implementation (`encoder`, `decoder`,"));
}

#[test]
fn native_task_must_be_listed() {
    let d = errors(&with_tasks("native:\n  causal-lm: decoder"));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].line, d[0].column, d[0].message.as_str()),
        (
            13,
            7,
            "`native` names task `causal-lm`, which is not one of this entry's `tasks` (it lists `base-model`, `masked-lm`)"
        )
    );
    assert_eq!(d[0].field.as_deref(), Some("native.causal-lm"));
    let (_, _, m) = one(&base_with("native:\n  causal-lm: decoder"));
    assert!(m.ends_with("(it lists none)"), "{m}");
}

#[test]
fn refused_unknown_backend_did_you_mean() {
    let d = errors(&with_tasks("refused:\n  candel: \"wrong logits\""));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].line, d[0].column, d[0].message.as_str()),
        (13, 7, "unknown backend `candel` (did you mean `candle`?)")
    );
    assert_eq!(d[0].field.as_deref(), Some("refused.candel"));
    let (l, c, m) = one(&with_tasks("refused: \"wrong\""));
    assert_eq!(
        (l, c, m.as_str()),
        (
            12,
            14,
            "expected a mapping of backend to reason, found string `wrong`"
        )
    );
    let (l, c, m) = one(&with_tasks("refused:\n  candle: [a]"));
    assert_eq!(
        (l, c, m.as_str()),
        (13, 15, "expected a string, found a list")
    );
}

#[test]
fn refused_reason_is_one_clean_line() {
    let d = errors(&with_tasks("refused:\n  candle: \"\""));
    assert_eq!(
        (d[0].line, d[0].column, d[0].message.as_str()),
        (13, 15, "refusal reason must not be empty")
    );
    assert_eq!(d[0].field.as_deref(), Some("refused.candle"));
    assert_eq!(
        one(&with_tasks("refused:\n  max: \"two\\nlines\"")),
        (
            13,
            12,
            "refusal reason `two\\nlines` must be a single line (it is shown in tables and listings)"
                .into()
        )
    );
    assert_eq!(
        one(&with_tasks("refused:\n  candle: \"tab\\there\"")),
        (
            13,
            15,
            "refusal reason `tab\\there` contains a control character (`\\t`)".into()
        )
    );
    let (_, _, m) = one(&with_tasks("refused:\n  candle: \"evil \u{202e} text\""));
    assert!(m.contains("bidirectional-override character"), "{m}");
    // Markdown, quotes and template syntax are just text (escaped where they are shown).
    load(&with_tasks(
        "refused:\n  candle: \"a `b` | *c* \\\"d\\\" {{ e }} {% f %} */ <g>\"",
    ))
    .unwrap();
}

#[test]
fn native_and_refused_on_candle_conflict() {
    let yaml = with_tasks(
        "native:\n  base-model: encoder\n  masked-lm: encoder\nrefused:\n  candle: \"wrong logits\"",
    );
    let d = errors(&yaml);
    let got: Vec<_> = d
        .iter()
        .map(|d| (d.line, d.column, d.field.as_deref(), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                13,
                7,
                Some("native.base-model"),
                "task `base-model` is `native` (verified on candle) but the entry is `refused` on candle (line 16); remove one of them"
            ),
            (
                14,
                7,
                Some("native.masked-lm"),
                "task `masked-lm` is `native` (verified on candle) but the entry is `refused` on candle (line 16); remove one of them"
            ),
        ]
    );
    // Refusing MAX does not contradict a native candle implementation.
    load(&with_tasks(
        "native:\n  masked-lm: encoder\nrefused:\n  max: \"pooling differs\"",
    ))
    .unwrap();
}

#[test]
fn misspelt_support_keys_did_you_mean() {
    assert_eq!(
        one(&with_tasks("natve:\n  masked-lm: encoder")),
        (12, 5, "unknown key `natve` (did you mean `native`?)".into())
    );
    assert_eq!(
        one(&with_tasks("refuse:\n  candle: x")),
        (
            12,
            5,
            "unknown key `refuse` (did you mean `refused`?)".into()
        )
    );
}
