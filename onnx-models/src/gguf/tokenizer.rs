//! The tokenizer in a GGUF file's metadata as Hugging Face `tokenizers`
//! files: `tokenizer.json` and `tokenizer_config.json` (the end token and
//! chat template). Two vocabularies: byte-level BPE (`tokenizer.ggml.model`
//! gpt2, with its merges) and SentencePiece BPE (`llama`, with scores and
//! byte fallback), as transformers' converters write them.

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

/// The vocabulary of `tokenizer.ggml.model`: the parts of `tokenizer.json` that differ.
struct Model {
    normalizer: Json,
    pre_tokenizer: Json,
    decoder: Json,
    bpe: Json,
}

/// Byte-level BPE (`gpt2`): the file's merges, llama.cpp's pre-tokenizer.
fn byte_level(file: &GgufFile, vocab: Json, merges: Vec<&str>) -> Result<Model, GgufError> {
    let pre_name = file.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    let pre = pre_tokenizer(pre_name).ok_or_else(|| {
        file.key_error("tokenizer.ggml.pre", format!("`{pre_name}`: expected default, gpt2 or smollm"))
    })?;
    Ok(Model {
        normalizer: Json::Null,
        pre_tokenizer: pre,
        decoder: json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        bpe: json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}),
    })
}

/// SentencePiece BPE (`llama`): spaces as `▁`, one prefixed to each piece of
/// text between special tokens (as llama.cpp's `add_space_prefix` does), bytes
/// `<0xXX>` for what the vocabulary lacks. The file has scores, not merges:
/// llama.cpp merges the adjacent pair whose result scores highest, which is
/// BPE with every split of a piece ranked by that piece's score.
fn sentencepiece(file: &GgufFile, vocab: Json, tokens: &[&str]) -> Result<Model, GgufError> {
    let scores: Vec<f64> = file.require("tokenizer.ggml.scores", "an array of numbers, one per token", |v| {
        let s: Vec<f64> = v.as_array()?.iter().map(Value::as_f64).collect::<Option<_>>()?;
        (s.len() == tokens.len()).then_some(s)
    })?;
    let known: std::collections::HashSet<&str> = tokens.iter().copied().collect();
    let mut merges: Vec<(f64, usize, [&str; 2])> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if known.contains(left) && known.contains(right) {
                merges.push((scores[id], id, [left, right]));
            }
        }
    }
    // Highest score first; ties by the piece's id, as transformers' converter orders them.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges: Vec<[&str; 2]> = merges.into_iter().map(|(_, _, m)| m).collect();
    let unk = file
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(Value::as_u64)
        .and_then(|id| tokens.get(id as usize))
        .copied();
    let prefix = file.get("tokenizer.ggml.add_space_prefix").and_then(Value::as_bool).unwrap_or(true);
    let mut normalize = vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})];
    if prefix {
        normalize.insert(0, json!({"type": "Prepend", "prepend": "▁"}));
    }
    let mut decode = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if prefix {
        decode.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(Model {
        normalizer: json!({"type": "Sequence", "normalizers": normalize}),
        pre_tokenizer: Json::Null,
        decoder: json!({"type": "Sequence", "decoders": decode}),
        bpe: json!({"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab, "merges": merges}),
    })
}

/// The tokenizer files of `file`'s metadata.
pub fn tokenizer_files(file: &GgufFile) -> Result<TokenizerFiles, GgufError> {
    let kind = file.require("tokenizer.ggml.model", "a string", Value::as_str)?;
    let strings = |key: &str| -> Result<Vec<&str>, GgufError> {
        file.require(key, "an array of strings", |v| v.as_array()?.iter().map(Value::as_str).collect())
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
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
    let model = match kind {
        "gpt2" => byte_level(file, Json::Object(vocab), strings("tokenizer.ggml.merges")?)?,
        "llama" => sentencepiece(file, Json::Object(vocab), &tokens)?,
        _ => {
            return Err(file.key_error(
                "tokenizer.ggml.model",
                format!("`{kind}`: expected gpt2 (byte-level BPE) or llama (SentencePiece BPE)"),
            ))
        }
    };
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
        "normalizer": model.normalizer,
        "pre_tokenizer": model.pre_tokenizer,
        "post_processor": post_processor,
        "decoder": model.decoder,
        "model": model.bpe,
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
