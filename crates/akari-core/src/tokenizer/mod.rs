//! Text to token ids and back.
//!
//! [`Tokenizer`] wraps a `tokenizers::Tokenizer`, built either from a Hugging Face
//! `tokenizer.json` or from the vocabulary a GGUF file carries ([`VocabSpec`]).
//! [`Detokenizer`] turns a stream of generated ids into text, one id at a time, without ever
//! emitting half a UTF-8 character.
//!
//! Nothing here touches the filesystem: everything takes bytes or strings, so the module
//! builds for `wasm32` too.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A vocabulary as GGUF metadata describes it (`tokenizer.ggml.*`).
#[derive(Clone, Debug, Default)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer flavour of `gpt2` vocabularies.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    /// llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    pub merges: Option<Vec<String>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub eot_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
}

/// llama.cpp token types.
const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

/// Llama 3's pre-tokenizer regex (numbers in groups of up to three digits).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pre-tokenizer regex (every digit on its own).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

/// A tokenizer: text to ids and ids to text, plus the special tokens a model uses.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
    specials: HashSet<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    ///
    /// `tokenizer.json` does not say which tokens are BOS and EOS; they are guessed (BOS from a
    /// `TemplateProcessing` post-processor that starts with a special token, EOS from common
    /// names). Callers that have `tokenizer_config.json` / `generation_config.json` should
    /// override them with [`Tokenizer::set_bos_id`], [`Tokenizer::set_eos_id`] and
    /// [`Tokenizer::set_add_bos_default`].
    pub fn from_hf_json(bytes: &[u8]) -> Result<Tokenizer> {
        let json: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json is not valid JSON: {e}")))?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(tok_err)?;
        let added = inner.get_added_tokens_decoder();
        let specials: HashSet<u32> = added
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();

        // BOS: the first special token a TemplateProcessing post-processor puts before `$A`.
        let mut bos_id = None;
        if let Some(pp) = json.get("post_processor") {
            let processors: Vec<&Value> = match pp.get("type").and_then(Value::as_str) {
                Some("Sequence") => pp
                    .get("processors")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().collect())
                    .unwrap_or_default(),
                _ => vec![pp],
            };
            for p in processors {
                if p.get("type").and_then(Value::as_str) != Some("TemplateProcessing") {
                    continue;
                }
                let first = p
                    .get("single")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first());
                if let Some(name) = first
                    .and_then(|f| f.get("SpecialToken"))
                    .and_then(|s| s.get("id"))
                    .and_then(Value::as_str)
                {
                    bos_id = inner.token_to_id(name);
                }
            }
        }
        let add_bos = bos_id.is_some();
        let eos_id = [
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<｜end▁of▁sentence｜>",
            "</s>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<eos>",
        ]
        .iter()
        .filter_map(|name| inner.token_to_id(name))
        .find(|id| specials.contains(id));
        let vocab_size = inner.get_vocab_size(true);
        Ok(Tokenizer {
            inner,
            vocab_size,
            bos_id,
            eos_id,
            add_bos,
            specials,
        })
    }

    /// Builds a tokenizer from the vocabulary stored in GGUF metadata.
    pub fn from_vocab(spec: &VocabSpec) -> Result<Tokenizer> {
        if spec.tokens.is_empty() {
            return Err(Error::Tokenizer("the vocabulary has no tokens".into()));
        }
        let n = spec.tokens.len();
        if let Some(types) = &spec.token_types {
            if types.len() != n {
                return Err(Error::Tokenizer(format!(
                    "{} token types for {n} tokens",
                    types.len()
                )));
            }
        }
        if let Some(scores) = &spec.scores {
            if scores.len() != n {
                return Err(Error::Tokenizer(format!(
                    "{} token scores for {n} tokens",
                    scores.len()
                )));
            }
        }
        for (what, id) in [
            ("bos", spec.bos_id),
            ("eos", spec.eos_id),
            ("eot", spec.eot_id),
            ("unk", spec.unk_id),
            ("pad", spec.pad_id),
        ] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(Error::Tokenizer(format!(
                        "{what} token id {id} is outside the vocabulary ({n} tokens)"
                    )));
                }
            }
        }

        let type_of = |i: usize| -> i32 {
            spec.token_types
                .as_ref()
                .map(|t| t[i])
                .unwrap_or(TYPE_NORMAL)
        };

        // Token string -> id (the first id wins when a string appears twice).
        let mut vocab = serde_json::Map::with_capacity(n);
        let mut ids: HashMap<&str, u32> = HashMap::with_capacity(n);
        let mut duplicates = 0usize;
        for (i, t) in spec.tokens.iter().enumerate() {
            if ids.contains_key(t.as_str()) {
                duplicates += 1;
                continue;
            }
            ids.insert(t.as_str(), i as u32);
            vocab.insert(t.clone(), json!(i as u32));
        }
        if duplicates > 0 {
            tracing::warn!(
                "{duplicates} duplicate token strings in the vocabulary; the first of each is used"
            );
        }

        // Special (control, unknown) and user-defined tokens become added tokens so that they
        // are recognised when written in text. BOS/EOS/EOT/PAD count as special whatever their
        // type says (some converters mark every token normal).
        let mut marked: HashSet<u32> = [spec.bos_id, spec.eos_id, spec.eot_id, spec.pad_id]
            .into_iter()
            .flatten()
            .collect();
        if spec.model == "llama" {
            if let Some(u) = spec.unk_id {
                marked.insert(u);
            }
        }
        let mut added = Vec::new();
        let mut specials = HashSet::new();
        for (i, t) in spec.tokens.iter().enumerate() {
            let ty = type_of(i);
            let special = ty == TYPE_CONTROL
                || ty == TYPE_UNKNOWN
                || (marked.contains(&(i as u32)) && ty != TYPE_USER_DEFINED);
            if !(special || ty == TYPE_USER_DEFINED) || t.is_empty() {
                continue;
            }
            if ids.get(t.as_str()) != Some(&(i as u32)) {
                continue; // a duplicate; the first id already owns the string
            }
            if special {
                specials.insert(i as u32);
            }
            added.push(json!({
                "id": i as u32,
                "content": t,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": special,
            }));
        }

        let (model, normalizer, pre_tokenizer, decoder, default_add_bos) = match spec.model.as_str()
        {
            "gpt2" => {
                let merges = gpt2_merges(spec, &ids);
                let pre = spec.pre.as_deref().unwrap_or("default");
                let (pre_tokenizer, ignore_merges, normalizer) = gpt2_pre_tokenizer(pre);
                let model = json!({
                    "type": "BPE",
                    "dropout": null,
                    "unk_token": null,
                    "continuing_subword_prefix": null,
                    "end_of_word_suffix": null,
                    "fuse_unk": false,
                    "byte_fallback": false,
                    "ignore_merges": ignore_merges,
                    "vocab": Value::Object(vocab),
                    "merges": merges,
                });
                let decoder = json!({
                    "type": "ByteLevel",
                    "add_prefix_space": true,
                    "trim_offsets": true,
                    "use_regex": true,
                });
                (model, normalizer, pre_tokenizer, decoder, false)
            }
            "llama" => {
                let merges = spm_merges(spec, &ids, &type_of);
                let unk = spec
                    .unk_id
                    .map(|u| spec.tokens[u as usize].clone())
                    .or_else(|| ids.contains_key("<unk>").then(|| "<unk>".to_string()));
                let model = json!({
                    "type": "BPE",
                    "dropout": null,
                    "unk_token": unk,
                    "continuing_subword_prefix": null,
                    "end_of_word_suffix": null,
                    "fuse_unk": true,
                    "byte_fallback": true,
                    "ignore_merges": false,
                    "vocab": Value::Object(vocab),
                    "merges": merges,
                });
                let normalizer = json!({
                    "type": "Sequence",
                    "normalizers": [
                        {"type": "Prepend", "prepend": "▁"},
                        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
                    ],
                });
                let decoder = json!({
                    "type": "Sequence",
                    "decoders": [
                        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                        {"type": "ByteFallback"},
                        {"type": "Fuse"},
                        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
                    ],
                });
                (model, normalizer, Value::Null, decoder, true)
            }
            other => {
                return Err(Error::Tokenizer(format!(
                    "unsupported tokenizer model `{other}`"
                )))
            }
        };

        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": decoder,
            "model": model,
        });
        let bytes = serde_json::to_vec(&doc).map_err(tok_err)?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(tok_err)?;
        Ok(Tokenizer {
            inner,
            vocab_size: n,
            bos_id: spec.bos_id,
            eos_id: spec.eos_id,
            add_bos: spec.add_bos.unwrap_or(default_add_bos),
            specials,
        })
    }

    /// Text to ids. Special tokens written in `text` (`<|im_start|>`) are recognised.
    /// With `add_bos`, BOS is put first when the vocabulary has one and `text` does not
    /// already start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if add_bos {
            if let Some(bos) = self.bos_id {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    /// Ids to text; `skip_special` leaves special tokens out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    /// The vocabulary string of a token (`Ġhello`, `▁hello`, `<0xE3>`), not its text.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    pub fn bos_token(&self) -> Option<String> {
        self.bos_id.and_then(|id| self.id_to_token(id))
    }

    pub fn eos_token(&self) -> Option<String> {
        self.eos_id.and_then(|id| self.id_to_token(id))
    }

    /// Whether raw prompts get BOS (GGUF `add_bos_token`; SentencePiece vocabularies default
    /// to yes, byte-level BPE ones to no).
    pub fn add_bos_default(&self) -> bool {
        self.add_bos && self.bos_id.is_some()
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.specials.contains(&id)
    }

    /// Overrides the BOS token (e.g. from `tokenizer_config.json`).
    pub fn set_bos_id(&mut self, id: Option<u32>) {
        self.bos_id = id;
    }

    /// Overrides the EOS token (e.g. from `generation_config.json`).
    pub fn set_eos_id(&mut self, id: Option<u32>) {
        self.eos_id = id;
    }

    /// Overrides whether raw prompts get BOS.
    pub fn set_add_bos_default(&mut self, yes: bool) {
        self.add_bos = yes;
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The pre-tokenizer for a `gpt2` vocabulary of flavour `pre`, whether its BPE ignores merges
/// for words already in the vocabulary, and its normalizer.
fn gpt2_pre_tokenizer(pre: &str) -> (Value, bool, Value) {
    let byte_level = |use_regex: bool| {
        json!({
            "type": "ByteLevel",
            "add_prefix_space": false,
            "trim_offsets": true,
            "use_regex": use_regex,
        })
    };
    let split_then_bytes = |regex: &str| {
        json!({
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": regex},
                    "behavior": "Isolated",
                    "invert": false,
                },
                byte_level(false),
            ],
        })
    };
    match pre {
        "default" | "gpt2" | "gpt-2" => (byte_level(true), false, Value::Null),
        "llama-bpe" | "llama3" | "llama-v3" | "falcon3" => {
            (split_then_bytes(LLAMA3_REGEX), true, Value::Null)
        }
        "qwen2" | "deepseek-r1-qwen" | "qwen35" => {
            (split_then_bytes(QWEN2_REGEX), false, json!({"type": "NFC"}))
        }
        "smollm" => (
            json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": true},
                    byte_level(true),
                ],
            }),
            false,
            Value::Null,
        ),
        other => {
            tracing::warn!(
                "unknown pre-tokenizer `{other}`; using the GPT-2 one, tokenization may differ from the original"
            );
            (byte_level(true), false, Value::Null)
        }
    }
}

/// GGUF `merges` ("a b") as `[a, b]` pairs, leaving out any whose pieces are not in the
/// vocabulary (the `tokenizers` BPE refuses those).
fn gpt2_merges(spec: &VocabSpec, ids: &HashMap<&str, u32>) -> Vec<Value> {
    let Some(merges) = &spec.merges else {
        tracing::warn!("a gpt2 vocabulary without merges; every word will be split into bytes");
        return Vec::new();
    };
    let mut out = Vec::with_capacity(merges.len());
    let mut dropped = 0usize;
    for m in merges {
        let Some((a, b)) = m.split_once(' ') else {
            dropped += 1;
            continue;
        };
        let merged = format!("{a}{b}");
        if ids.contains_key(a) && ids.contains_key(b) && ids.contains_key(merged.as_str()) {
            out.push(json!([a, b]));
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!("{dropped} merges refer to tokens outside the vocabulary and were left out");
    }
    out
}

/// Merges for a SentencePiece vocabulary, derived the way `transformers` converts one: every
/// split of a token into two vocabulary pieces is a merge, ranked by the score of the merged
/// token (highest first), ties by token id and then by the ids of the pieces.
fn spm_merges(
    spec: &VocabSpec,
    ids: &HashMap<&str, u32>,
    type_of: &dyn Fn(usize) -> i32,
) -> Vec<Value> {
    let scores = spec.scores.as_deref();
    let mut merges: Vec<(f32, u32, u32, &str, &str)> = Vec::new();
    for (i, t) in spec.tokens.iter().enumerate() {
        let ty = type_of(i);
        if ty != TYPE_NORMAL && ty != TYPE_USER_DEFINED {
            continue;
        }
        if ids.get(t.as_str()) != Some(&(i as u32)) {
            continue;
        }
        // Without scores, lower ids rank higher (as SentencePiece BPE vocabularies are ordered).
        let score = scores.map(|s| s[i]).unwrap_or(-(i as f32));
        let mut local: Vec<(u32, u32, &str, &str)> = Vec::new();
        for (pos, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(pos);
            if let (Some(&il), Some(&ir)) = (ids.get(l), ids.get(r)) {
                local.push((il, ir, l, r));
            }
        }
        local.sort_by_key(|&(il, ir, _, _)| (il, ir));
        merges.extend(
            local
                .into_iter()
                .map(|(il, ir, l, r)| (score, il, ir, l, r)),
        );
    }
    // Stable: equal scores keep token order.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, _, _, l, r)| json!([l, r]))
        .collect()
}

/// Streaming detokenizer: feed generated ids one at a time, get the text that is final.
///
/// It decodes a short window of ids (the previous chunk as context, then the new ids) and
/// emits only what the new ids add, and only once that does not end in U+FFFD (a character
/// whose bytes are split over several tokens). Concatenating every [`Detokenizer::push`] and
/// the final [`Detokenizer::flush`] gives `decode(all ids)`.
#[derive(Clone, Debug, Default)]
pub struct Detokenizer {
    skip_special: bool,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

/// Ids held back waiting for a character to complete; past this many the text is emitted
/// anyway (a UTF-8 character has at most four bytes, each token at least one).
const MAX_PENDING: usize = 4;

impl Detokenizer {
    pub fn new(skip_special: bool) -> Self {
        Detokenizer {
            skip_special,
            ..Default::default()
        }
    }

    /// Feeds one generated id; returns the new text that is now final (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        self.emit(tok, false)
    }

    /// Returns whatever is still held back (at the end of generation).
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<String> {
        self.emit(tok, true)
    }

    /// Forgets everything, for a new sequence.
    pub fn reset(&mut self) {
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
    }

    fn emit(&mut self, tok: &Tokenizer, force: bool) -> Result<String> {
        if self.read_offset >= self.ids.len() {
            return Ok(String::new());
        }
        let prefix = tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = tok.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        let pending = self.ids.len() - self.read_offset;
        if !force && full.ends_with('\u{FFFD}') && pending < MAX_PENDING {
            return Ok(String::new());
        }
        let new = match full.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_string(),
            None => {
                // The context decodes differently once followed by the new ids (should not
                // happen with the decoders used here); emit what differs after the common part.
                let common = prefix
                    .char_indices()
                    .zip(full.chars())
                    .find(|((_, a), b)| a != b)
                    .map(|((i, _), _)| i)
                    .unwrap_or(prefix.len().min(full.len()));
                full[common..].to_string()
            }
        };
        if new.is_empty() {
            // Nothing visible (a skipped special token, say): keep the current context, since
            // an empty one would lose the leading space of the next SentencePiece piece.
            self.read_offset = self.ids.len();
        } else {
            // The new ids become the context for the next ones; older ids are no longer needed.
            self.ids.drain(..self.read_offset);
            self.prefix_offset = 0;
            self.read_offset = self.ids.len();
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests;
