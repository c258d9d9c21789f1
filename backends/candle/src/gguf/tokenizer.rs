//! A GGUF file's tokenizer (`tokenizer.ggml.*`) as a `tokenizers::Tokenizer`, built the way
//! llama.cpp tokenizes: `gpt2` (byte-level BPE from `tokens` and `merges`) with the
//! pre-tokenizer `tokenizer.ggml.pre` names (`smollm`: single digits, then GPT-2's byte-level
//! split; `gpt2` / `default`: GPT-2's). Control and user-defined tokens (`token_type` 3 and 4)
//! are special added tokens, matched whole in text (`<|im_start|>`), as in the original
//! `tokenizer.json`. A BOS token is prepended when `add_bos_token` says so. Other tokenizer
//! models and pre-tokenizers are typed errors naming the key.

use serde_json::{Value as Json, json};
use skillgen_runtime::SkillError;

use super::{Meta, invalid};

/// Strings of an array-valued key.
fn strings<'a>(meta: &'a Meta<'_>, key: &str) -> Result<Vec<&'a str>, SkillError> {
    let v = meta
        .get(key)
        .ok_or_else(|| invalid(meta.path, key, "missing from the GGUF metadata"))?
        .to_vec()
        .map_err(|_| invalid(meta.path, key, "is not an array"))?;
    v.iter()
        .map(|x| {
            x.to_string()
                .map(String::as_str)
                .map_err(|_| invalid(meta.path, key, "holds a non-string"))
        })
        .collect()
}

/// The pre-tokenizer llama.cpp applies for `pre`.
fn pre_tokenizer(meta: &Meta<'_>, pre: &str) -> Result<Json, SkillError> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": true});
    Ok(match pre {
        "gpt2" | "default" => byte_level,
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]}),
        other => {
            return Err(invalid(
                meta.path,
                "tokenizer.ggml.pre",
                format!("pre-tokenizer `{other}` is not translated (gpt2, default, smollm)"),
            ));
        }
    })
}

/// The tokenizer of the file whose metadata is `meta`.
pub(crate) fn from_metadata(meta: &Meta<'_>) -> Result<tokenizers::Tokenizer, SkillError> {
    let model = meta.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(invalid(
            meta.path,
            "tokenizer.ggml.model",
            format!("`{model}` tokenizers are not translated yet (gpt2: byte-level BPE)"),
        ));
    }
    let tokens = strings(meta, "tokenizer.ggml.tokens")?;
    let merges = strings(meta, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = match meta.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|_| invalid(meta.path, "tokenizer.ggml.token_type", "is not an array"))?
            .iter()
            .map(|t| t.to_i32().map(i64::from).unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let pre = meta.str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert((*tok).to_owned(), json!(id));
        if matches!(types.get(id), Some(3 | 4)) {
            added.push(
                json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}),
            );
        }
    }
    let bos = meta.u64_opt("tokenizer.ggml.bos_token_id")?;
    let post = match (meta.bool_or("tokenizer.ggml.add_bos_token", false)?, bos) {
        (true, Some(b)) => {
            let name = tokens.get(b as usize).copied().unwrap_or_default();
            json!({"type": "TemplateProcessing",
                   "single": [{"SpecialToken": {"id": name, "type_id": 0}},
                              {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [{"SpecialToken": {"id": name, "type_id": 0}},
                            {"Sequence": {"id": "A", "type_id": 0}},
                            {"Sequence": {"id": "B", "type_id": 1}}],
                   "special_tokens": {name: {"id": name, "ids": [b], "tokens": [name]}}})
        }
        (true, None) => {
            return Err(invalid(
                meta.path,
                "tokenizer.ggml.bos_token_id",
                "missing, but add_bos_token is true",
            ));
        }
        (false, _) => Json::Null,
    };
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(meta, pre)?,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    spec.to_string()
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| SkillError::ConfigInvalid {
            path: meta.path.to_path_buf(),
            detail: format!("the tokenizer in its metadata does not build: {e}"),
        })
}
