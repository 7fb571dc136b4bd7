//! Tests with small hand-built vocabularies.

use super::*;

/// GPT-2's byte -> printable character table.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = Vec::new();
    printable.extend(u32::from(b'!')..=u32::from(b'~'));
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = vec!['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable.contains(&b) {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    table
}

/// The byte-level form of `bytes`.
fn bl(bytes: &[u8]) -> String {
    let t = byte_chars();
    bytes.iter().map(|&b| t[b as usize]).collect()
}

/// A byte-level BPE vocabulary: the 256 bytes, a few merges, and ChatML specials.
fn gpt2_spec(pre: Option<&str>) -> VocabSpec {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| bl(&[b])).collect();
    let mut types = vec![1; 256];
    let mut merges = Vec::new();
    let mut merge = |a: &[u8], b: &[u8], tokens: &mut Vec<String>, types: &mut Vec<i32>| {
        merges.push(format!("{} {}", bl(a), bl(b)));
        let mut ab = a.to_vec();
        ab.extend_from_slice(b);
        tokens.push(bl(&ab));
        types.push(1);
    };
    for (a, b) in [
        ("h", "e"),
        ("l", "l"),
        ("he", "ll"),
        ("hell", "o"),
        (" ", "w"),
        ("o", "r"),
        (" w", "or"),
        ("l", "d"),
        (" wor", "ld"),
        ("1", "2"),
        ("12", "3"),
        ("4", "5"),
    ] {
        merge(a.as_bytes(), b.as_bytes(), &mut tokens, &mut types);
    }
    // Half of "こ" (E3 81 93), and a token spanning the end of "こ" and the start of "ん".
    merge(&[0xE3], &[0x81], &mut tokens, &mut types);
    merge(&[0x93], &[0xE3], &mut tokens, &mut types);
    // Emoji 😀 = F0 9F 98 80, merged into two halves.
    merge(&[0xF0], &[0x9F], &mut tokens, &mut types);
    merge(&[0x98], &[0x80], &mut tokens, &mut types);
    for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(s.to_string());
        types.push(3);
    }
    tokens.push("<think>".to_string());
    types.push(4);
    let eos = tokens.iter().position(|t| t == "<|im_end|>").unwrap() as u32;
    let bos = tokens.iter().position(|t| t == "<|endoftext|>").unwrap() as u32;
    VocabSpec {
        model: "gpt2".into(),
        pre: pre.map(str::to_string),
        tokens,
        token_types: Some(types),
        merges: Some(merges),
        bos_id: Some(bos),
        eos_id: Some(eos),
        ..Default::default()
    }
}

/// A tiny SentencePiece vocabulary with scores and byte-fallback tokens.
fn spm_spec() -> VocabSpec {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for s in [
        "▁", "h", "e", "l", "o", "w", "r", "d", "こ", "ん", "ll", "▁h", "▁he", "llo", "▁hello",
        "▁w", "or", "▁wor", "ld", "▁world", "el",
    ] {
        tokens.push(s.to_string());
        types.push(1);
    }
    tokens.push("<|im_start|>".to_string());
    types.push(3);
    // Merges rank by the score of the merged token: here, lower ids first.
    let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
    VocabSpec {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        ..Default::default()
    }
}

fn ids_of(tok: &Tokenizer, pieces: &[&str]) -> Vec<u32> {
    pieces
        .iter()
        .map(|p| {
            tok.token_to_id(p)
                .unwrap_or_else(|| panic!("{p} not in vocab"))
        })
        .collect()
}

/// Feeds `ids` one at a time; checks no chunk carries U+FFFD and that the chunks add up to
/// `decode(ids)`.
fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut d = Detokenizer::new(skip_special);
    let mut chunks = Vec::new();
    for &id in ids {
        chunks.push(d.push(tok, id).unwrap());
    }
    chunks.push(d.flush(tok).unwrap());
    for c in &chunks {
        assert!(!c.contains('\u{FFFD}'), "chunk {c:?} in {chunks:?}");
    }
    assert_eq!(chunks.concat(), tok.decode(ids, skip_special).unwrap());
    chunks
}

#[test]
fn gpt2_round_trip() {
    let tok = Tokenizer::from_vocab(&gpt2_spec(None)).unwrap();
    let ids = tok.encode("hello world", false).unwrap();
    assert_eq!(ids, ids_of(&tok, &["hello", "Ġworld"]));
    assert_eq!(tok.decode(&ids, false).unwrap(), "hello world");
    for text in [
        "hello world",
        "  Hi there!\n\nnew line\ttab",
        "こんにちは世界",
        "emoji 😀 and 👍🏽 flags 🇯🇵",
        "12345 apples",
        "",
    ] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{ids:?}");
    }
    assert_eq!(tok.vocab_size(), 256 + 16 + 4);
    assert!(!tok.add_bos_default());
}

#[test]
fn gpt2_specials_in_text() {
    let tok = Tokenizer::from_vocab(&gpt2_spec(Some("smollm"))).unwrap();
    let text = "<|im_start|>user\nhello<|im_end|>\n<think>";
    let ids = tok.encode(text, false).unwrap();
    let start = tok.token_to_id("<|im_start|>").unwrap();
    let end = tok.token_to_id("<|im_end|>").unwrap();
    let think = tok.token_to_id("<think>").unwrap();
    assert_eq!(ids[0], start);
    assert!(ids.contains(&end));
    assert_eq!(*ids.last().unwrap(), think);
    assert!(tok.is_special(start) && tok.is_special(end));
    assert!(!tok.is_special(think));
    assert!(!tok.is_special(ids[1]));
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhello\n<think>");
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.bos_token().as_deref(), Some("<|endoftext|>"));
    // add_bos puts BOS first, once.
    let bos = tok.bos_id().unwrap();
    let with = tok.encode("hello", true).unwrap();
    assert_eq!(with[0], bos);
    let again = tok.encode("<|endoftext|>hello", true).unwrap();
    assert_eq!(again, with);
}

#[test]
fn gpt2_pre_tokenizers() {
    let digits = |pre: Option<&str>| {
        let tok = Tokenizer::from_vocab(&gpt2_spec(pre)).unwrap();
        let ids = tok.encode("12345", false).unwrap();
        ids.iter()
            .map(|&i| tok.id_to_token(i).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(digits(None), ["123", "45"]);
    assert_eq!(digits(Some("gpt2")), ["123", "45"]);
    assert_eq!(digits(Some("llama-bpe")), ["123", "45"]);
    assert_eq!(digits(Some("qwen2")), ["1", "2", "3", "4", "5"]);
    assert_eq!(digits(Some("deepseek-r1-qwen")), ["1", "2", "3", "4", "5"]);
    assert_eq!(digits(Some("smollm")), ["1", "2", "3", "4", "5"]);
    // Unknown flavours fall back to GPT-2's.
    assert_eq!(digits(Some("no-such-pre")), ["123", "45"]);
    for pre in ["llama-bpe", "llama3", "qwen2", "smollm", "default"] {
        let tok = Tokenizer::from_vocab(&gpt2_spec(Some(pre))).unwrap();
        for text in ["hello world", " it's  12345\r\n\n x", "こんにちは 😀"] {
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(tok.decode(&ids, false).unwrap(), text, "{pre}");
        }
    }
}

#[test]
fn gpt2_streaming_japanese_and_emoji() {
    let tok = Tokenizer::from_vocab(&gpt2_spec(Some("qwen2"))).unwrap();
    for text in [
        "こんにちは",
        "hello 😀 world",
        "😀😀こん",
        "👍🏽🇯🇵 日本語のテキスト",
        "<|im_start|>assistant\nこんにちは😀<|im_end|>",
    ] {
        let ids = tok.encode(text, false).unwrap();
        let chunks = stream(&tok, &ids, false);
        assert_eq!(chunks.concat(), text);
        let skipped = stream(&tok, &ids, true);
        assert_eq!(
            skipped.concat(),
            text.replace("<|im_start|>", "").replace("<|im_end|>", "")
        );
    }
    // The token spanning the end of "こ" and the start of "ん" is used; the text waits until
    // "ん" is complete and comes out whole.
    let ids = tok.encode("こん", false).unwrap();
    assert!(ids.contains(&tok.token_to_id(&bl(&[0x93, 0xE3])).unwrap()));
    let chunks = stream(&tok, &ids, false);
    let visible: Vec<&String> = chunks.iter().filter(|c| !c.is_empty()).collect();
    assert_eq!(visible, ["こん"]);
}

#[test]
fn spm_round_trip() {
    let tok = Tokenizer::from_vocab(&spm_spec()).unwrap();
    let ids = tok.encode("hello world", false).unwrap();
    assert_eq!(ids, ids_of(&tok, &["▁hello", "▁world"]));
    assert_eq!(tok.decode(&ids, false).unwrap(), "hello world");
    assert!(tok.add_bos_default());
    let with = tok.encode("hello world", true).unwrap();
    assert_eq!(with[0], 1);
    assert_eq!(&with[1..], &ids[..]);
    assert_eq!(tok.decode(&with, true).unwrap(), "hello world");
    assert_eq!(tok.decode(&with, false).unwrap(), "<s> hello world");
    // Byte fallback for characters outside the vocabulary.
    let ids = tok.encode("こんにちは", false).unwrap();
    assert_eq!(
        &ids[..3],
        &ids_of(&tok, &["▁", "こ", "ん"])[..],
        "{:?}",
        ids.iter().map(|&i| tok.id_to_token(i)).collect::<Vec<_>>()
    );
    assert_eq!(tok.id_to_token(ids[3]).as_deref(), Some("<0xE3>"));
    assert_eq!(tok.decode(&ids, false).unwrap(), "こんにちは");
    for text in ["hello  world", "hello\nworld 😀", "  leading", "x"] {
        let ids = tok.encode(text, false).unwrap();
        assert!(!ids.contains(&0), "no <unk> with byte fallback");
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
    assert_eq!(tok.vocab_size(), 3 + 256 + 21 + 1);
}

#[test]
fn spm_specials_and_streaming() {
    let tok = Tokenizer::from_vocab(&spm_spec()).unwrap();
    let start = tok.token_to_id("<|im_start|>").unwrap();
    let ids = tok.encode("<|im_start|>hello world</s>", false).unwrap();
    assert_eq!(ids[0], start);
    assert_eq!(&ids[1..3], &ids_of(&tok, &["▁hello", "▁world"])[..]);
    assert_eq!(ids[3], 2);
    assert!(tok.is_special(start) && tok.is_special(1) && tok.is_special(2));
    assert!(!tok.is_special(ids[1]));

    for text in [
        "hello world",
        "こんにちは world 😀",
        "hello </s> world",
        "😀",
        "  hello  ",
    ] {
        let ids = tok.encode(text, true).unwrap();
        let chunks = stream(&tok, &ids, true);
        assert!(!chunks.concat().is_empty());
        stream(&tok, &ids, false);
    }
    let ids = tok.encode("hello world", false).unwrap();
    assert_eq!(stream(&tok, &ids, false).concat(), "hello world");
}

#[test]
fn detokenizer_holds_back_split_characters() {
    let tok = Tokenizer::from_vocab(&spm_spec()).unwrap();
    // "に" = E3 81 AB: nothing until the third byte.
    let ids = ids_of(&tok, &["▁hello", "<0xE3>", "<0x81>", "<0xAB>", "▁world"]);
    let mut d = Detokenizer::new(false);
    assert_eq!(d.push(&tok, ids[0]).unwrap(), "hello");
    assert_eq!(d.push(&tok, ids[1]).unwrap(), "");
    assert_eq!(d.push(&tok, ids[2]).unwrap(), "");
    assert_eq!(d.push(&tok, ids[3]).unwrap(), "に");
    assert_eq!(d.push(&tok, ids[4]).unwrap(), " world");
    assert_eq!(d.flush(&tok).unwrap(), "");
    // An incomplete character at the end comes out on flush.
    let mut d = Detokenizer::new(false);
    assert_eq!(d.push(&tok, ids[1]).unwrap(), "");
    assert_eq!(
        d.flush(&tok).unwrap(),
        tok.decode(&ids[1..2], false).unwrap()
    );
}

#[test]
fn errors() {
    let spec = VocabSpec {
        model: "bert".into(),
        tokens: vec!["a".into()],
        ..Default::default()
    };
    let err = Tokenizer::from_vocab(&spec).unwrap_err().to_string();
    assert!(err.contains("unsupported tokenizer model `bert`"), "{err}");
    assert!(Tokenizer::from_vocab(&VocabSpec::default()).is_err());
    assert!(Tokenizer::from_hf_json(b"{not json").is_err());
}

#[test]
fn hf_json() {
    // A tokenizer.json shaped like SmolLM2's, built from the gpt2 vocabulary above.
    let spec = gpt2_spec(Some("smollm"));
    let vocab: serde_json::Map<String, Value> = spec
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|t| {
            json!({"id": spec.tokens.iter().position(|x| x == t).unwrap(), "content": t,
                   "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": spec.merges.clone().unwrap()},
    });
    let tok = Tokenizer::from_hf_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
    let from_vocab = Tokenizer::from_vocab(&spec).unwrap();
    for text in [
        "<|im_start|>user\nhello world 12345<|im_end|>",
        "こんにちは😀",
    ] {
        assert_eq!(
            tok.encode(text, false).unwrap(),
            from_vocab.encode(text, false).unwrap()
        );
    }
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.bos_id(), None);
    assert!(!tok.add_bos_default());
    assert!(tok.is_special(tok.token_to_id("<|im_start|>").unwrap()));
    assert_eq!(tok.vocab_size(), spec.tokens.len());
}
