//! A GGUF file's tokenizer (`tokenizer.ggml.*`) as a `tokenizers::Tokenizer`, built the way
//! llama.cpp tokenizes. Two tokenizer models (`tokenizer.ggml.model`) are translated:
//!
//! - `gpt2`: byte-level BPE from `tokens` and `merges`, with the pre-tokenizer
//!   `tokenizer.ggml.pre` names (`smollm`: single digits, then GPT-2's byte-level split; `gpt2` /
//!   `default`: GPT-2's). Control and user-defined tokens (`token_type` 3 and 4) are special
//!   added tokens, matched whole in text (`<|im_start|>`), as in the original `tokenizer.json`.
//! - `llama`: SentencePiece (llama.cpp's `llm_tokenizer_spm`, e.g. Gemma 3). Spaces become `▁`;
//!   the text is cut into UTF-8 characters, and the adjacent pair whose concatenation is a token
//!   with the highest `scores` entry is merged, again and again; what is left that is not a token
//!   is spelled in byte tokens `<0xNN>`. That is a BPE whose merges are every split of every
//!   token into two tokens, ranked by the score of the token they make (transformers' GGUF
//!   converter derives them the same way, from the tokens' order, which for Gemma is the score
//!   order), with byte fallback. Control tokens (type 3, and the unknown token, type 2) are
//!   special added tokens and user-defined tokens (type 4: Gemma's `\n` runs, runs of spaces and
//!   tabs, HTML tags) plain added tokens, both matched whole in the raw text before anything
//!   else, as llama.cpp's `tokenizer_st_partition` does.
//!
//! A BOS token is prepended when `add_bos_token` says so (default: yes for `llama`, no for
//! `gpt2`, as llama.cpp), an EOS token appended when `add_eos_token` does. What llama.cpp does
//! and this does not (another tokenizer model or pre-tokenizer, SentencePiece's
//! `add_space_prefix` or `remove_extra_whitespaces`, a vocabulary without all 256 byte tokens or
//! with a token twice) is a typed error naming the key.

use serde_json::{Value as Json, json};
use skillgen_runtime::SkillError;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper};

use super::{Meta, invalid};

/// llama.cpp's token types (`llama_token_type`).
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Strings of an array-valued key.
fn strings<'a>(meta: &'a Meta<'_>, key: &str) -> Result<Vec<&'a str>, SkillError> {
    array(meta, key)?
        .iter()
        .map(|x| {
            x.to_string()
                .map(String::as_str)
                .map_err(|_| invalid(meta.path, key, "holds a non-string"))
        })
        .collect()
}

fn array<'a>(
    meta: &'a Meta<'_>,
    key: &str,
) -> Result<&'a Vec<candle_core::quantized::gguf_file::Value>, SkillError> {
    meta.get(key)
        .ok_or_else(|| invalid(meta.path, key, "missing from the GGUF metadata"))?
        .to_vec()
        .map_err(|_| invalid(meta.path, key, "is not an array"))
}

/// `tokenizer.ggml.token_type` (all normal when absent, as llama.cpp reads it).
fn token_types(meta: &Meta<'_>, n: usize) -> Result<Vec<i64>, SkillError> {
    const KEY: &str = "tokenizer.ggml.token_type";
    if meta.get(KEY).is_none() {
        return Ok(vec![1; n]);
    }
    let types: Vec<i64> = array(meta, KEY)?
        .iter()
        .map(|t| {
            t.to_i32()
                .map(i64::from)
                .or_else(|_| t.to_u32().map(i64::from))
                .map_err(|_| invalid(meta.path, KEY, "holds a non-integer"))
        })
        .collect::<Result<_, _>>()?;
    if types.len() != n {
        return Err(invalid(
            meta.path,
            KEY,
            format!("has {} entries for {n} tokens", types.len()),
        ));
    }
    Ok(types)
}

/// The number of tokens of the file's vocabulary (`tokenizer.ggml.tokens`).
pub(crate) fn token_count(meta: &Meta<'_>) -> Result<usize, SkillError> {
    Ok(array(meta, "tokenizer.ggml.tokens")?.len())
}

/// The pre-tokenizer llama.cpp applies for `pre` (byte-level BPE).
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

/// The post-processor adding BOS / EOS as `add_bos_token` / `add_eos_token` say
/// (`bos_default`: llama.cpp's default for this tokenizer model when the key is absent).
fn post_processor(
    meta: &Meta<'_>,
    tokens: &[&str],
    bos_default: bool,
) -> Result<Option<PostProcessorWrapper>, SkillError> {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut special = serde_json::Map::new();
    let mut special_id = |add: &str, id: &str| -> Result<Option<String>, SkillError> {
        let default = add.contains("bos") && bos_default;
        if !meta.bool_or(add, default)? {
            return Ok(None);
        }
        let id = meta
            .u64_opt(id)?
            .ok_or_else(|| invalid(meta.path, id, format!("missing, but {add} is true")))?;
        let name = tokens
            .get(id as usize)
            .ok_or_else(|| {
                invalid(
                    meta.path,
                    add,
                    format!("token {id} is not in the vocabulary"),
                )
            })?
            .to_string();
        special.insert(
            name.clone(),
            json!({"id": name, "ids": [id], "tokens": [name]}),
        );
        Ok(Some(name))
    };
    let bos = special_id(
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.bos_token_id",
    )?;
    let eos = special_id(
        "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.eos_token_id",
    )?;
    if bos.is_none() && eos.is_none() {
        return Ok(None);
    }
    let tok = |name: &str| json!({"SpecialToken": {"id": name, "type_id": 0}});
    if let Some(b) = &bos {
        single.push(tok(b));
        pair.push(tok(b));
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    if let Some(e) = &eos {
        single.push(tok(e));
        pair.push(tok(e));
    }
    let spec = json!({"type": "TemplateProcessing", "single": single, "pair": pair,
                      "special_tokens": special});
    serde_json::from_value(spec)
        .map(Some)
        .map_err(|e| built(meta, format!("the BOS/EOS post-processor: {e}")))
}

fn built(meta: &Meta<'_>, detail: String) -> SkillError {
    SkillError::ConfigInvalid {
        path: meta.path.to_path_buf(),
        detail: format!("the tokenizer in its metadata does not build: {detail}"),
    }
}

/// The tokenizer of the file whose metadata is `meta`.
pub(crate) fn from_metadata(meta: &Meta<'_>) -> Result<tokenizers::Tokenizer, SkillError> {
    match meta.str("tokenizer.ggml.model")? {
        "gpt2" => gpt2(meta),
        "llama" => sentencepiece(meta),
        model => Err(invalid(
            meta.path,
            "tokenizer.ggml.model",
            format!(
                "`{model}` tokenizers are not translated yet (gpt2: byte-level BPE; llama: \
                 SentencePiece)"
            ),
        )),
    }
}

/// `gpt2`: byte-level BPE.
fn gpt2(meta: &Meta<'_>) -> Result<tokenizers::Tokenizer, SkillError> {
    let tokens = strings(meta, "tokenizer.ggml.tokens")?;
    let merges = strings(meta, "tokenizer.ggml.merges")?;
    let types = token_types(meta, tokens.len())?;
    let pre = meta.str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert((*tok).to_owned(), json!(id));
        if matches!(types[id], CONTROL | USER_DEFINED) {
            added.push(
                json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}),
            );
        }
    }
    let post = match post_processor(meta, &tokens, false)? {
        Some(p) => serde_json::to_value(p).map_err(|e| built(meta, e.to_string()))?,
        None => Json::Null,
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
        .map_err(|e| built(meta, e.to_string()))
}

/// `llama`: SentencePiece as llama.cpp's `llm_tokenizer_spm` runs it (see the module docs).
fn sentencepiece(meta: &Meta<'_>) -> Result<tokenizers::Tokenizer, SkillError> {
    let p = meta.path;
    let pre = meta.str_opt("tokenizer.ggml.pre")?.unwrap_or("default");
    if pre != "default" {
        return Err(invalid(
            p,
            "tokenizer.ggml.pre",
            format!("pre-tokenizer `{pre}` with a SentencePiece vocabulary is not translated"),
        ));
    }
    // llama.cpp's SentencePiece default: a space before each piece of text.
    if meta.bool_or("tokenizer.ggml.add_space_prefix", true)? {
        return Err(invalid(
            p,
            "tokenizer.ggml.add_space_prefix",
            "true (or absent, which llama.cpp reads as true): a `▁` before every piece of text \
             between special tokens is not translated yet",
        ));
    }
    if meta.bool_or("tokenizer.ggml.remove_extra_whitespaces", false)? {
        return Err(invalid(
            p,
            "tokenizer.ggml.remove_extra_whitespaces",
            "true: collapsing whitespace is not translated yet",
        ));
    }
    let tokens = strings(meta, "tokenizer.ggml.tokens")?;
    let types = token_types(meta, tokens.len())?;
    const SCORES: &str = "tokenizer.ggml.scores";
    let scores: Vec<f32> = array(meta, SCORES)?
        .iter()
        .map(|s| {
            s.to_f32()
                .map_err(|_| invalid(p, SCORES, "holds a non-float"))
        })
        .collect::<Result<_, _>>()?;
    if scores.len() != tokens.len() {
        return Err(invalid(
            p,
            SCORES,
            format!("has {} entries for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let mut vocab = Vocab::default();
    vocab.reserve(tokens.len());
    for (id, tok) in tokens.iter().enumerate() {
        if tok.is_empty() {
            return Err(invalid(
                p,
                "tokenizer.ggml.tokens",
                format!("token {id} is empty"),
            ));
        }
        if let Some(first) = vocab.insert((*tok).to_owned(), id as u32) {
            return Err(invalid(
                p,
                "tokenizer.ggml.tokens",
                format!(
                    "{tok:?} is token {first} and token {id}: a vocabulary with a token twice is not translated"
                ),
            ));
        }
    }
    if let Some(b) = (0..=255u8).find(|b| !vocab.contains_key(&format!("<0x{b:02X}>"))) {
        return Err(invalid(
            p,
            "tokenizer.ggml.tokens",
            format!(
                "no byte token <0x{b:02X}>: SentencePiece without all 256 byte-fallback tokens is not translated"
            ),
        ));
    }
    let merges = spm_merges(&tokens, &scores, &vocab);
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .build()
        .map_err(|e| built(meta, e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::new(model);
    let normalizer: NormalizerWrapper = serde_json::from_value(
        json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}),
    )
    .map_err(|e| built(meta, e.to_string()))?;
    let decoder: DecoderWrapper = serde_json::from_value(json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}))
    .map_err(|e| built(meta, e.to_string()))?;
    tok.with_normalizer(Some(normalizer))
        .map_err(|e| built(meta, e.to_string()))?;
    tok.with_decoder(Some(decoder));
    tok.with_post_processor(post_processor(meta, &tokens, true)?);
    let added = |kinds: &[i64], special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| kinds.contains(t))
            .map(|(s, _)| AddedToken::from(*s, special).normalized(false))
            .collect()
    };
    tok.add_special_tokens(added(&[CONTROL, UNKNOWN], true))
        .map_err(|e| built(meta, e.to_string()))?;
    tok.add_tokens(added(&[USER_DEFINED], false))
        .map_err(|e| built(meta, e.to_string()))?;
    Ok(tok)
}

/// SentencePiece's merges as BPE merges: every split of every token into two tokens, best
/// score of the token they make first (ties: the token's id, then the longer left part, so the
/// order is fixed).
fn spm_merges(tokens: &[&str], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, usize)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        for (at, _) in tok.char_indices().skip(1) {
            if vocab.contains_key(&tok[..at]) && vocab.contains_key(&tok[at..]) {
                ranked.push((scores[id], id as u32, at));
            }
        }
    }
    ranked.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
            .then(b.2.cmp(&a.2))
    });
    ranked
        .into_iter()
        .map(|(_, id, at)| {
            let t = tokens[id as usize];
            (t[..at].to_owned(), t[at..].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::Value;
    use std::collections::HashMap;
    use std::path::Path;

    /// A SentencePiece vocabulary: specials, the 256 byte tokens, then `pieces` with
    /// decreasing scores (the first best), then `user` user-defined tokens.
    fn spm_meta(pieces: &[&str], user: &[&str], extra: &[(&str, Value)]) -> HashMap<String, Value> {
        let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"]
            .map(String::from)
            .to_vec();
        let mut types = vec![CONTROL as i32; tokens.len()];
        let mut scores = vec![-1000f32; tokens.len()];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (i, p) in pieces.iter().enumerate() {
            tokens.push((*p).to_owned());
            types.push(1);
            scores.push(-(i as f32));
        }
        for u in user {
            tokens.push((*u).to_owned());
            types.push(USER_DEFINED as i32);
            scores.push(-1000.0);
        }
        let mut m: HashMap<String, Value> = [
            ("tokenizer.ggml.model", Value::String("llama".into())),
            ("tokenizer.ggml.pre", Value::String("default".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(tokens.into_iter().map(Value::String).collect()),
            ),
            (
                "tokenizer.ggml.scores",
                Value::Array(scores.into_iter().map(Value::F32).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(2)),
            ("tokenizer.ggml.eos_token_id", Value::U32(1)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in extra {
            m.insert((*k).to_owned(), v.clone());
        }
        m
    }

    fn build(map: &HashMap<String, Value>) -> Result<tokenizers::Tokenizer, SkillError> {
        from_metadata(&Meta {
            path: Path::new("t.gguf"),
            map,
        })
    }

    fn pieces(tok: &tokenizers::Tokenizer, text: &str) -> Vec<String> {
        let enc = tok.encode(text, true).unwrap();
        enc.get_ids()
            .iter()
            .map(|&i| tok.id_to_token(i).unwrap())
            .collect()
    }

    /// The best-scored pair merges first wherever it is: "▁ab" is "▁a" + "b" when "▁a" scores
    /// above "ab", and "▁" + "ab" the other way round (llama.cpp's bigram queue).
    #[test]
    fn merges_follow_the_scores() {
        let base = ["▁", "a", "b", "c"];
        let m = spm_meta(&[&base[..], &["▁a", "ab", "▁ab", "bc"]].concat(), &[], &[]);
        let tok = build(&m).unwrap();
        assert_eq!(pieces(&tok, " ab"), ["<bos>", "▁ab"]);
        assert_eq!(pieces(&tok, " abc"), ["<bos>", "▁ab", "c"]);
        let m = spm_meta(&[&base[..], &["bc", "ab", "▁a", "▁ab"]].concat(), &[], &[]);
        let tok = build(&m).unwrap();
        // "bc" first: "▁", "a", "bc"; then nothing joins "a" + "bc", but "▁a" does.
        assert_eq!(pieces(&tok, " abc"), ["<bos>", "▁a", "bc"]);
        assert_eq!(pieces(&tok, "ab"), ["<bos>", "ab"]);
    }

    /// Characters that are no token are spelled in byte tokens; decoding joins them again.
    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let m = spm_meta(&["▁", "a", "é"], &[], &[]);
        let tok = build(&m).unwrap();
        assert_eq!(pieces(&tok, "aü"), ["<bos>", "a", "<0xC3>", "<0xBC>"]);
        let ids = tok.encode("a é ü", false).unwrap().get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), "a é ü");
    }

    /// Control tokens are special and user-defined ones plain added tokens, both matched whole
    /// in the raw text: a run of spaces stays real spaces, a newline is its own token.
    #[test]
    fn control_and_user_defined_tokens_match_whole() {
        let m = spm_meta(&["▁", "a", "b", "▁b"], &["\n", "  "], &[]);
        let tok = build(&m).unwrap();
        assert_eq!(
            pieces(&tok, "<start_of_turn>a\n b  b"),
            ["<bos>", "<start_of_turn>", "a", "\n", "▁b", "  ", "b"]
        );
        let enc = tok.encode("a\n  b", false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "a\n  b");
        let specials = tok.decode(&[2, 4], true).unwrap();
        assert_eq!(specials, "");
    }

    #[test]
    fn add_bos_and_eos_follow_the_metadata() {
        let off = [("tokenizer.ggml.add_bos_token", Value::Bool(false))];
        let tok = build(&spm_meta(&["a"], &[], &off)).unwrap();
        assert_eq!(pieces(&tok, "a"), ["a"]);
        let eos = [("tokenizer.ggml.add_eos_token", Value::Bool(true))];
        let tok = build(&spm_meta(&["a"], &[], &eos)).unwrap();
        assert_eq!(pieces(&tok, "a"), ["<bos>", "a", "<eos>"]);
        // absent: llama.cpp adds BOS to a SentencePiece vocabulary
        let mut m = spm_meta(&["a"], &[], &[]);
        m.remove("tokenizer.ggml.add_bos_token");
        assert_eq!(pieces(&build(&m).unwrap(), "a"), ["<bos>", "a"]);
    }

    fn field_of(e: SkillError) -> String {
        match e {
            SkillError::ConfigField { field, .. } => field,
            other => panic!("not a ConfigField error: {other:?}"),
        }
    }

    #[test]
    fn what_is_not_translated_is_a_typed_error() {
        let mut m = spm_meta(&["a"], &[], &[]);
        m.remove("tokenizer.ggml.add_space_prefix");
        assert_eq!(
            field_of(build(&m).unwrap_err()),
            "tokenizer.ggml.add_space_prefix"
        );
        let ws = [("tokenizer.ggml.remove_extra_whitespaces", Value::Bool(true))];
        assert_eq!(
            field_of(build(&spm_meta(&["a"], &[], &ws)).unwrap_err()),
            "tokenizer.ggml.remove_extra_whitespaces"
        );
        let pre = [("tokenizer.ggml.pre", Value::String("llama-bpe".into()))];
        assert_eq!(
            field_of(build(&spm_meta(&["a"], &[], &pre)).unwrap_err()),
            "tokenizer.ggml.pre"
        );
        let ugm = [("tokenizer.ggml.model", Value::String("t5".into()))];
        assert_eq!(
            field_of(build(&spm_meta(&["a"], &[], &ugm)).unwrap_err()),
            "tokenizer.ggml.model"
        );
        // a byte token missing, a token twice
        let mut m = spm_meta(&["a"], &[], &[]);
        if let Some(Value::Array(t)) = m.get_mut("tokenizer.ggml.tokens") {
            t[5 + 0x41] = Value::String("x".into());
        }
        assert_eq!(field_of(build(&m).unwrap_err()), "tokenizer.ggml.tokens");
        let m = spm_meta(&["a", "a"], &[], &[]);
        assert_eq!(field_of(build(&m).unwrap_err()), "tokenizer.ggml.tokens");
    }
}
