//! The tokenizer in a GGUF file's metadata as Hugging Face `tokenizers`
//! files: `tokenizer.json` (byte-level BPE: `tokenizer.ggml.model` gpt2) and
//! `tokenizer_config.json` (the end token and chat template).

use serde_json::{json, Value as Json};

use super::{GgufError, GgufFile, Value};

/// llama.cpp's token types (`llama_token_type`) that are added tokens, not BPE pieces.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// What the metadata says of the tokenizer besides its vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerFiles {
    /// `tokenizer.json`.
    pub tokenizer: Json,
    /// `tokenizer_config.json`: `eos_token`, `bos_token`, `add_bos_token`, `chat_template`.
    pub config: Json,
    pub eos: Option<u32>,
    pub chat_template: Option<String>,
}

/// The pre-tokenizer of llama.cpp's `tokenizer.ggml.pre` name, as the Hugging Face tokenizer it was converted from has it.
fn pre_tokenizer(pre: &str) -> Option<Json> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre {
        "default" | "gpt-2" | "gpt2" => Some(byte_level),
        // SmolLM: digits one by one, then GPT-2's split (llama.cpp's LLAMA_VOCAB_PRE_TYPE_SMOLLM).
        "smollm" => Some(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]})),
        _ => None,
    }
}

/// The tokenizer files of `file`'s metadata.
pub fn tokenizer_files(file: &GgufFile) -> Result<TokenizerFiles, GgufError> {
    let model = file.require("tokenizer.ggml.model", "a string", Value::as_str)?;
    if model != "gpt2" {
        return Err(file.key_error(
            "tokenizer.ggml.model",
            format!(
                "`{model}`: expected gpt2 (byte-level BPE; SentencePiece `llama` vocabularies are not converted yet)"
            ),
        ));
    }
    let pre_name = file.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    let pre = pre_tokenizer(pre_name).ok_or_else(|| {
        file.key_error("tokenizer.ggml.pre", format!("`{pre_name}`: expected default, gpt2 or smollm"))
    })?;
    let strings = |key: &str| -> Result<Vec<&str>, GgufError> {
        file.require(key, "an array of strings", |v| v.as_array()?.iter().map(Value::as_str).collect())
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i64> = match file.get("tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some(_) => file.require("tokenizer.ggml.token_type", "an array of integers", |v| {
            v.as_array()?
                .iter()
                .map(|t| match *t {
                    Value::I32(t) => Some(i64::from(t)),
                    _ => t.as_u64().and_then(|t| i64::try_from(t).ok()),
                })
                .collect()
        })?,
    };
    let id = |key: &str| -> Result<Option<u32>, GgufError> {
        match file.get(key) {
            None => Ok(None),
            Some(_) => file
                .require(key, &format!("a token id below {}", tokens.len()), |v| {
                    v.as_u64().filter(|id| *id < tokens.len() as u64).map(|id| id as u32)
                })
                .map(Some),
        }
    };
    let (bos, eos) = (id("tokenizer.ggml.bos_token_id")?, id("tokenizer.ggml.eos_token_id")?);
    let add_bos = file.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool).unwrap_or(false);
    let chat_template = file.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_string);

    // A repeated piece keeps its first id, as llama.cpp's lookup does.
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(json!(i));
    }
    let added: Vec<Json> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(**t, CONTROL | USER_DEFINED))
        .map(|(i, t)| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": *t == CONTROL})
        })
        .collect();
    let post_processor = match (add_bos, bos) {
        (true, Some(bos)) => {
            let name = tokens[bos as usize];
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": name, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": name, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {name: {"id": name, "ids": [bos], "tokens": [name]}}})
        }
        _ => Json::Null,
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    let name = |id: Option<u32>| id.map(|i| tokens[i as usize]);
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name(bos),
        "eos_token": name(eos),
        "add_bos_token": add_bos,
        "chat_template": chat_template,
    });
    Ok(TokenizerFiles { tokenizer, config, eos, chat_template })
}
