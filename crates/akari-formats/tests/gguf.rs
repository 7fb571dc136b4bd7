//! GGUF reading end to end, on tiny models written in memory.

use akari_core::weights::{Bytes, LayerTensor, Matrix, TensorKey};
use akari_core::{Arch, Error, QuantFormat, RopeScaling};
use akari_formats::ggml::GgmlType;
use akari_formats::gguf::writer::GgufWriter;
use akari_formats::gguf::{Value, ValueType};
use akari_formats::{read_gguf, GgufFile, ModelSource};

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FF: usize = 256;
const VOCAB: usize = 40;
const LAYERS: usize = 2;
const Q_DIM: usize = HEADS * HEAD_DIM;
const KV_DIM: usize = KV_HEADS * HEAD_DIM;

/// Deterministic test values; `seed` tells tensors apart.
fn matrix(seed: usize, rows: usize, cols: usize) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|r| {
            (0..cols)
                .map(|c| ((seed * 31 + r * 7 + c * 13 + r * c) % 19) as f32 / 8.0 - 1.0)
                .collect()
        })
        .collect()
}

fn vector(seed: usize, n: usize) -> Vec<f32> {
    matrix(seed, 1, n).remove(0)
}

/// llama.cpp's converter permutation of Q/K rows:
/// `w.reshape(n_head, 2, d/2, cols).swapaxes(1, 2).reshape(w.shape)`.
fn llama_permute<T: Clone>(rows: &[T], n_head: usize) -> Vec<T> {
    let d = rows.len() / n_head;
    let half = d / 2;
    let mut out = Vec::new();
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                out.push(rows[h * d + j * half + i].clone());
            }
        }
    }
    out
}

/// The bytes of `rows` in `ty` (F32 or a backend block format).
fn encode(rows: &[Vec<f32>], ty: GgmlType) -> Vec<u8> {
    let fmt = ty
        .native_format()
        .expect("test encodes backend formats only");
    let mut out = Vec::new();
    for r in rows {
        let mut b = vec![0u8; fmt.row_bytes(r.len())];
        fmt.quantize_row(r, &mut b);
        out.extend(b);
    }
    out
}

/// What a row of `ty` reads back as.
fn round_trip(row: &[f32], ty: GgmlType) -> Vec<f32> {
    let b = encode(&[row.to_vec()], ty);
    let mut out = vec![0f32; row.len()];
    ty.dequantize_row(&b, &mut out).unwrap();
    out
}

fn put_matrix(w: &mut GgufWriter, name: &str, rows: &[Vec<f32>], ty: GgmlType) {
    let dims = [rows[0].len() as u64, rows.len() as u64];
    w.tensor(name, &dims, ty, encode(rows, ty));
}

fn put_vector(w: &mut GgufWriter, name: &str, v: &[f32]) {
    w.f32_tensor(name, &[v.len() as u64], v);
}

/// The Hugging Face-layout weights of the tiny model, by canonical key.
fn hf_weights(layer: usize) -> Vec<(LayerTensor, Vec<Vec<f32>>)> {
    let s = 100 * (layer + 1);
    vec![
        (LayerTensor::Q, matrix(s + 1, Q_DIM, HIDDEN)),
        (LayerTensor::K, matrix(s + 2, KV_DIM, HIDDEN)),
        (LayerTensor::V, matrix(s + 3, KV_DIM, HIDDEN)),
        (LayerTensor::O, matrix(s + 4, HIDDEN, Q_DIM)),
        (LayerTensor::Gate, matrix(s + 5, FF, HIDDEN)),
        (LayerTensor::Up, matrix(s + 6, FF, HIDDEN)),
        (LayerTensor::Down, matrix(s + 7, HIDDEN, FF)),
    ]
}

fn matrix_type(t: LayerTensor) -> GgmlType {
    match t {
        LayerTensor::V | LayerTensor::Up => GgmlType::F32,
        _ => GgmlType::Q8_0,
    }
}

fn layer_suffix(t: LayerTensor) -> &'static str {
    match t {
        LayerTensor::Q => "attn_q.weight",
        LayerTensor::K => "attn_k.weight",
        LayerTensor::V => "attn_v.weight",
        LayerTensor::O => "attn_output.weight",
        LayerTensor::Gate => "ffn_gate.weight",
        LayerTensor::Up => "ffn_up.weight",
        LayerTensor::Down => "ffn_down.weight",
        LayerTensor::QBias => "attn_q.bias",
        LayerTensor::KBias => "attn_k.bias",
        LayerTensor::VBias => "attn_v.bias",
        LayerTensor::AttnNorm => "attn_norm.weight",
        LayerTensor::FfnNorm => "ffn_norm.weight",
    }
}

struct Tiny {
    arch: &'static str,
    tied: bool,
    /// File tensor names to leave out (tests add their own).
    skip: Vec<String>,
}

impl Tiny {
    fn new(arch: &'static str) -> Tiny {
        Tiny {
            arch,
            tied: false,
            skip: Vec::new(),
        }
    }

    fn skip(mut self, name: &str) -> Tiny {
        self.skip.push(name.to_string());
        self
    }

    fn writer(&self) -> GgufWriter {
        let a = self.arch;
        let mut w = GgufWriter::new();
        w.string("general.architecture", a)
            .string("general.name", "tiny")
            .u32(&format!("{a}.block_count"), LAYERS as u32)
            .kv(&format!("{a}.context_length"), Value::U64(4096))
            .kv(&format!("{a}.embedding_length"), Value::I32(HIDDEN as i32))
            .kv(&format!("{a}.feed_forward_length"), Value::U16(FF as u16))
            .kv(
                &format!("{a}.attention.head_count"),
                Value::I64(HEADS as i64),
            )
            .u32(&format!("{a}.attention.head_count_kv"), KV_HEADS as u32)
            .f32(&format!("{a}.attention.layer_norm_rms_epsilon"), 1e-6)
            .f32(&format!("{a}.rope.freq_base"), 500000.0)
            .u32(&format!("{a}.rope.dimension_count"), HEAD_DIM as u32)
            .string("tokenizer.ggml.model", "gpt2")
            .string("tokenizer.ggml.pre", "smollm")
            .kv(
                "tokenizer.ggml.tokens",
                Value::Array(
                    ValueType::String,
                    (0..VOCAB).map(|i| Value::String(format!("t{i}"))).collect(),
                ),
            )
            .kv(
                "tokenizer.ggml.token_type",
                Value::Array(
                    ValueType::I32,
                    (0..VOCAB)
                        .map(|i| Value::I32(1 + (i < 2) as i32 * 2))
                        .collect(),
                ),
            )
            .strings("tokenizer.ggml.merges", &["t 1", "t 2"])
            .u32("tokenizer.ggml.bos_token_id", 0)
            .u32("tokenizer.ggml.eos_token_id", 1)
            .kv("tokenizer.ggml.padding_token_id", Value::I32(1000))
            .kv("tokenizer.ggml.add_bos_token", Value::Bool(true))
            .string("tokenizer.chat_template", "{{ messages }}");
        let put_m = |w: &mut GgufWriter, name: &str, rows: &[Vec<f32>], ty: GgmlType| {
            if !self.skip.iter().any(|s| s == name) {
                put_matrix(w, name, rows, ty);
            }
        };
        put_m(
            &mut w,
            "token_embd.weight",
            &matrix(1, VOCAB, HIDDEN),
            GgmlType::F32,
        );
        if !self.tied {
            put_m(
                &mut w,
                "output.weight",
                &matrix(2, VOCAB, HIDDEN),
                GgmlType::Q8_0,
            );
        }
        for layer in 0..LAYERS {
            let hf = hf_weights(layer);
            let get = |t: LayerTensor| {
                hf.iter()
                    .find(|(k, _)| *k == t)
                    .map(|(_, m)| m.clone())
                    .unwrap()
            };
            for (t, rows) in &hf {
                let name = format!("blk.{layer}.{}", layer_suffix(*t));
                let rows = match (a, t) {
                    ("llama", LayerTensor::Q) => llama_permute(rows, HEADS),
                    ("llama", LayerTensor::K) => llama_permute(rows, KV_HEADS),
                    ("phi3", LayerTensor::Q) => {
                        let mut qkv = rows.clone();
                        qkv.extend(get(LayerTensor::K));
                        qkv.extend(get(LayerTensor::V));
                        put_m(
                            &mut w,
                            &format!("blk.{layer}.attn_qkv.weight"),
                            &qkv,
                            GgmlType::Q8_0,
                        );
                        continue;
                    }
                    ("phi3", LayerTensor::K | LayerTensor::V | LayerTensor::Gate) => continue,
                    ("phi3", LayerTensor::Up) => {
                        let mut gate_up = get(LayerTensor::Gate);
                        gate_up.extend(rows.clone());
                        put_m(&mut w, &name, &gate_up, GgmlType::Q8_0);
                        continue;
                    }
                    _ => rows.clone(),
                };
                put_m(&mut w, &name, &rows, matrix_type(*t));
            }
            let mut put_v = |name: String, v: Vec<f32>| {
                if !self.skip.contains(&name) {
                    put_vector(&mut w, &name, &v);
                }
            };
            put_v(
                format!("blk.{layer}.attn_norm.weight"),
                vector(layer * 10 + 1, HIDDEN),
            );
            put_v(
                format!("blk.{layer}.ffn_norm.weight"),
                vector(layer * 10 + 2, HIDDEN),
            );
            if a == "qwen2" {
                put_v(
                    format!("blk.{layer}.attn_q.bias"),
                    vector(layer * 10 + 3, Q_DIM),
                );
                put_v(
                    format!("blk.{layer}.attn_k.bias"),
                    vector(layer * 10 + 4, KV_DIM),
                );
                put_v(
                    format!("blk.{layer}.attn_v.bias"),
                    vector(layer * 10 + 5, KV_DIM),
                );
            }
        }
        if !self.skip.iter().any(|s| s == "output_norm.weight") {
            put_vector(&mut w, "output_norm.weight", &vector(3, HIDDEN));
        }
        w
    }

    fn bytes(&self) -> Vec<u8> {
        self.writer().to_bytes()
    }
}

fn read(bytes: Vec<u8>) -> Result<ModelSource, Error> {
    read_gguf(Bytes::from_vec(bytes), "tiny.gguf")
}

fn rows_of(m: &Matrix) -> Vec<Vec<f32>> {
    (0..m.rows)
        .map(|r| {
            let mut row = vec![0f32; m.cols];
            m.row_f32(r, &mut row);
            row
        })
        .collect()
}

fn expect_rows(m: &Matrix, want: &[Vec<f32>], ty: GgmlType, what: &str) {
    assert_eq!((m.rows, m.cols), (want.len(), want[0].len()), "{what}");
    let got = rows_of(m);
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, &round_trip(w, ty), "{what} row {r}");
    }
}

fn in_buffer(m: &Matrix, buf: &Bytes) -> bool {
    let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
    let p = m.bytes.as_ptr() as usize;
    p >= start && p + m.bytes.len() <= end
}

#[test]
fn llama_round_trip() {
    let bytes = Bytes::from_vec(Tiny::new("llama").bytes());
    let m = read_gguf(bytes.clone(), "tiny.gguf").unwrap();
    let c = &m.config;
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_layers
        ),
        (VOCAB, HIDDEN, FF, LAYERS)
    );
    assert_eq!(
        (c.num_heads, c.num_kv_heads, c.head_dim),
        (HEADS, KV_HEADS, HEAD_DIM)
    );
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.max_position_embeddings, 4096);
    assert_eq!(c.rope_scaling, RopeScaling::None);
    assert!(!c.tie_word_embeddings);
    assert!(!c.qkv_bias);
    assert_eq!(m.name.as_deref(), Some("tiny"));
    assert_eq!(m.chat_template.as_deref(), Some("{{ messages }}"));
    assert_eq!(m.file_type, "Q8_0", "most matrix elements are Q8_0");

    let w = &m.weights;
    expect_rows(
        &w.matrices[&TensorKey::Embed],
        &matrix(1, VOCAB, HIDDEN),
        GgmlType::F32,
        "embed",
    );
    expect_rows(
        &w.matrices[&TensorKey::Output],
        &matrix(2, VOCAB, HIDDEN),
        GgmlType::Q8_0,
        "output",
    );
    assert_eq!(w.vectors[&TensorKey::OutputNorm], vector(3, HIDDEN));
    for layer in 0..LAYERS {
        // Q and K come back in Hugging Face order, the permutation undone.
        for (t, rows) in hf_weights(layer) {
            let m = &w.matrices[&TensorKey::Layer(layer, t)];
            let ty = matrix_type(t);
            assert_eq!(m.format, ty.native_format().unwrap());
            expect_rows(m, &rows, ty, &format!("layer {layer} {t:?}"));
            if !matches!(t, LayerTensor::Q | LayerTensor::K) {
                assert!(
                    in_buffer(m, &bytes),
                    "layer {layer} {t:?} should be zero-copy"
                );
            }
        }
        assert_eq!(
            w.vectors[&TensorKey::Layer(layer, LayerTensor::AttnNorm)],
            vector(layer * 10 + 1, HIDDEN)
        );
        assert_eq!(
            w.vectors[&TensorKey::Layer(layer, LayerTensor::FfnNorm)],
            vector(layer * 10 + 2, HIDDEN)
        );
    }
    assert!(in_buffer(&w.matrices[&TensorKey::Embed], &bytes));
    assert_eq!(w.matrices.len(), 2 + 7 * LAYERS);
    assert_eq!(w.vectors.len(), 1 + 2 * LAYERS);

    let v = m.vocab.unwrap();
    assert_eq!(v.model, "gpt2");
    assert_eq!(v.pre.as_deref(), Some("smollm"));
    assert_eq!(v.tokens.len(), VOCAB);
    assert_eq!(v.tokens[5], "t5");
    assert_eq!(v.token_types.as_ref().unwrap()[..3], [3, 3, 1]);
    assert_eq!(v.merges.as_ref().unwrap().len(), 2);
    assert!(v.scores.is_none());
    assert_eq!((v.bos_id, v.eos_id, v.eot_id), (Some(0), Some(1), None));
    assert_eq!(v.pad_id, None, "an out-of-range id is dropped");
    assert_eq!(v.add_bos, Some(true));

    assert!(m
        .metadata
        .iter()
        .any(|(k, v)| k == "llama.block_count" && v == "2"));
    let tokens = &m
        .metadata
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .unwrap()
        .1;
    assert!(tokens.starts_with("[string; 40]"), "{tokens}");
}

#[test]
fn header_is_listable() {
    let f = GgufFile::parse(Bytes::from_vec(Tiny::new("llama").bytes()), "tiny.gguf").unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(f.data_start % 32, 0);
    let t = f.tensor("blk.1.ffn_down.weight").unwrap();
    assert_eq!(t.dims, [FF as u64, HIDDEN as u64]);
    assert_eq!(t.shape(), [HIDDEN, FF]);
    assert_eq!(t.ggml_type, GgmlType::Q8_0);
    assert_eq!(t.n_bytes as usize, HIDDEN * FF / 32 * 34);
    assert_eq!(
        f.get("llama.feed_forward_length"),
        Some(&Value::U16(FF as u16))
    );
    assert_eq!(f.tensors.len(), 2 + 9 * LAYERS + 1);
}

#[test]
fn tied_embeddings_and_version_2_and_custom_alignment() {
    let mut w = Tiny {
        tied: true,
        ..Tiny::new("llama")
    }
    .writer();
    w.version(2).alignment(64);
    let bytes = w.to_bytes();
    let f = GgufFile::parse(Bytes::from_vec(bytes.clone()), "t").unwrap();
    assert_eq!((f.version, f.alignment, f.data_start % 64), (2, 64, 0));
    let m = read(bytes).unwrap();
    assert!(m.config.tie_word_embeddings);
    assert!(!m.weights.matrices.contains_key(&TensorKey::Output));
}

#[test]
fn qwen2_biases_and_no_permutation() {
    let m = read(Tiny::new("qwen2").bytes()).unwrap();
    assert_eq!(m.config.arch, Arch::Qwen2);
    assert!(m.config.qkv_bias);
    let w = &m.weights;
    for layer in 0..LAYERS {
        let hf = hf_weights(layer);
        expect_rows(
            &w.matrices[&TensorKey::Layer(layer, LayerTensor::Q)],
            &hf[0].1,
            GgmlType::Q8_0,
            "q",
        );
        expect_rows(
            &w.matrices[&TensorKey::Layer(layer, LayerTensor::K)],
            &hf[1].1,
            GgmlType::Q8_0,
            "k",
        );
        assert_eq!(
            w.vectors[&TensorKey::Layer(layer, LayerTensor::QBias)],
            vector(layer * 10 + 3, Q_DIM)
        );
        assert_eq!(
            w.vectors[&TensorKey::Layer(layer, LayerTensor::KBias)],
            vector(layer * 10 + 4, KV_DIM)
        );
        assert_eq!(
            w.vectors[&TensorKey::Layer(layer, LayerTensor::VBias)],
            vector(layer * 10 + 5, KV_DIM)
        );
    }
    // All three biases are needed once one is there.
    let e = read(Tiny::new("qwen2").skip("blk.1.attn_v.bias").bytes()).unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor(t) if t == "blk.1.attn_v.bias"),
        "{e}"
    );
}

#[test]
fn llama_biases_are_unpermuted() {
    let mut w = Tiny::new("llama").writer();
    let q_bias: Vec<f32> = (0..Q_DIM).map(|i| i as f32).collect();
    let k_bias: Vec<f32> = (0..KV_DIM).map(|i| 1000.0 + i as f32).collect();
    let v_bias: Vec<f32> = (0..KV_DIM).map(|i| -(i as f32)).collect();
    for layer in 0..LAYERS {
        put_vector(
            &mut w,
            &format!("blk.{layer}.attn_q.bias"),
            &llama_permute(&q_bias, HEADS),
        );
        put_vector(
            &mut w,
            &format!("blk.{layer}.attn_k.bias"),
            &llama_permute(&k_bias, KV_HEADS),
        );
        put_vector(&mut w, &format!("blk.{layer}.attn_v.bias"), &v_bias);
    }
    let m = read(w.to_bytes()).unwrap();
    assert!(m.config.qkv_bias);
    assert_eq!(
        m.weights.vectors[&TensorKey::Layer(1, LayerTensor::QBias)],
        q_bias
    );
    assert_eq!(
        m.weights.vectors[&TensorKey::Layer(1, LayerTensor::KBias)],
        k_bias
    );
    assert_eq!(
        m.weights.vectors[&TensorKey::Layer(1, LayerTensor::VBias)],
        v_bias
    );
}

#[test]
fn phi3_fused_tensors_are_split_in_place() {
    let bytes = Bytes::from_vec(phi3_bytes());
    let (long, short) = phi3_factors();
    let m = read_gguf(bytes.clone(), "phi.gguf").unwrap();
    assert_eq!(m.config.arch, Arch::Phi3);
    assert!(!m.config.qkv_bias);
    for layer in 0..LAYERS {
        for (t, rows) in hf_weights(layer) {
            let mat = &m.weights.matrices[&TensorKey::Layer(layer, t)];
            let ty = match t {
                LayerTensor::O | LayerTensor::Down => matrix_type(t),
                _ => GgmlType::Q8_0,
            };
            expect_rows(mat, &rows, ty, &format!("layer {layer} {t:?}"));
            assert!(
                in_buffer(mat, &bytes),
                "layer {layer} {t:?} should be a slice of the file"
            );
        }
    }
    match &m.config.rope_scaling {
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            attention_factor,
        } => {
            assert_eq!((short_factor, long_factor), (&short, &long));
            assert_eq!(*original_max_position_embeddings, 1024);
            let want = akari_core::config::longrope_attention_factor(4096, 1024);
            assert_eq!(*attention_factor, want);
            assert!(want > 1.0);
        }
        other => panic!("expected longrope, got {other:?}"),
    }
}

#[test]
fn rope_scaling_variants() {
    let mut w = Tiny::new("llama").writer();
    let freqs: Vec<f32> = (0..HEAD_DIM / 2).map(|i| 1.0 + i as f32).collect();
    put_vector(&mut w, "rope_freqs.weight", &freqs);
    let m = read(w.to_bytes()).unwrap();
    assert_eq!(m.config.rope_scaling, RopeScaling::FreqFactors(freqs));

    let mut w = Tiny::new("llama").writer();
    w.string("llama.rope.scaling.type", "linear")
        .f32("llama.rope.scaling.factor", 4.0);
    assert_eq!(
        read(w.to_bytes()).unwrap().config.rope_scaling,
        RopeScaling::Linear { factor: 4.0 }
    );

    let mut w = Tiny::new("llama").writer();
    w.string("llama.rope.scaling.type", "yarn");
    let e = read(w.to_bytes()).unwrap_err();
    assert!(e.to_string().contains("yarn"), "{e}");

    // Factors of the wrong length are caught by the config's validation.
    let mut w = Tiny::new("llama").writer();
    put_vector(&mut w, "rope_freqs.weight", &[1.0; 5]);
    let e = read(w.to_bytes()).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
}

#[test]
fn other_types_are_converted() {
    // ffn_down rows are FF = 256 values: one K-quant super-block.
    let k_block = |ty: GgmlType| -> Vec<u8> {
        (0..HIDDEN * ty.block_bytes())
            .map(|i| match (ty, i % ty.block_bytes()) {
                // Keep the f16 scales small and finite.
                (GgmlType::Q4_K | GgmlType::Q5_K, 0 | 2) => 0x00,
                (GgmlType::Q4_K | GgmlType::Q5_K, 1 | 3) => 0x20,
                (GgmlType::Q6_K, 208) => 0x00,
                (GgmlType::Q6_K, 209) => 0x20,
                (_, j) => (j * 37 % 251) as u8,
            })
            .collect()
    };
    for (ty, want) in [
        (GgmlType::Q4_K, QuantFormat::Q4_1),
        (GgmlType::Q5_K, QuantFormat::Q8_0),
        (GgmlType::Q6_K, QuantFormat::Q8_0),
    ] {
        let mut w = Tiny::new("llama").skip("blk.0.ffn_down.weight").writer();
        let data = k_block(ty);
        w.tensor(
            "blk.0.ffn_down.weight",
            &[FF as u64, HIDDEN as u64],
            ty,
            data.clone(),
        );
        let m = read(w.to_bytes()).unwrap();
        let mat = &m.weights.matrices[&TensorKey::Layer(0, LayerTensor::Down)];
        assert_eq!(mat.format, want, "{ty}");
        let row_bytes = ty.block_bytes();
        for (r, got) in rows_of(mat).iter().enumerate() {
            let mut exact = vec![0f32; FF];
            ty.dequantize_row(&data[r * row_bytes..(r + 1) * row_bytes], &mut exact)
                .unwrap();
            let amax = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (g, e) in got.iter().zip(&exact) {
                assert!(
                    (g - e).abs() <= amax / 127.0 + 1e-3 * amax.max(1.0),
                    "{ty}: {g} vs {e}"
                );
            }
        }
    }
    // BF16 becomes F32; a BF16 norm reads as f32.
    let mut w = Tiny::new("llama")
        .skip("blk.1.attn_v.weight")
        .skip("blk.1.attn_norm.weight")
        .writer();
    let v = matrix(9, KV_DIM, HIDDEN);
    let bf = |x: &f32| half::bf16::from_f32(*x).to_le_bytes();
    w.tensor(
        "blk.1.attn_v.weight",
        &[HIDDEN as u64, KV_DIM as u64],
        GgmlType::BF16,
        v.iter().flatten().flat_map(bf).collect(),
    );
    let norm = vector(77, HIDDEN);
    w.tensor(
        "blk.1.attn_norm.weight",
        &[HIDDEN as u64],
        GgmlType::BF16,
        norm.iter().flat_map(bf).collect(),
    );
    let m = read(w.to_bytes()).unwrap();
    let mat = &m.weights.matrices[&TensorKey::Layer(1, LayerTensor::V)];
    assert_eq!(mat.format, QuantFormat::F32);
    assert_eq!(rows_of(mat), v, "these values are exact in bf16");
    assert_eq!(
        m.weights.vectors[&TensorKey::Layer(1, LayerTensor::AttnNorm)],
        norm
    );
}

// ---- damaged and unsupported files: every one an error, none a panic ----

fn format_err(bytes: Vec<u8>) -> String {
    match read(bytes) {
        Err(Error::Format { file, msg }) => {
            assert_eq!(file, "tiny.gguf");
            msg
        }
        Err(e) => panic!("expected a format error, got {e:?}"),
        Ok(_) => panic!("expected a format error, got a model"),
    }
}

#[test]
fn wrong_magic() {
    let mut b = Tiny::new("llama").bytes();
    b[..4].copy_from_slice(b"GGML");
    assert!(format_err(b).contains("not a GGUF file"));
    assert!(format_err(b"GG".to_vec()).contains("truncated"));
    assert!(format_err(Vec::new()).contains("truncated"));
}

#[test]
fn unsupported_versions() {
    let mut w = Tiny::new("llama").writer();
    w.version(1);
    let msg = format_err(w.to_bytes());
    assert!(msg.contains("version 1"), "{msg}");
    w.version(4);
    assert!(format_err(w.to_bytes()).contains("version 4"));
    w.version(3u32.swap_bytes());
    assert!(format_err(w.to_bytes()).contains("big-endian"));
}

#[test]
fn truncated_files_are_errors() {
    let full = Tiny::new("llama").bytes();
    read(full.clone()).unwrap();
    let data_start = GgufFile::parse(Bytes::from_vec(full.clone()), "t")
        .unwrap()
        .data_start;
    // Every cut through the header and the start of the data, then every 61st byte.
    let cuts = (0..data_start + 2048).chain((data_start + 2048..full.len()).step_by(61));
    for cut in cuts.chain([full.len() - 1]) {
        match read(full[..cut].to_vec()) {
            Err(Error::Format { .. }) => {}
            other => panic!(
                "cut at {cut} of {}: {:?}",
                full.len(),
                other.map(|_| "a model")
            ),
        }
    }
}

#[test]
fn tensor_offset_past_the_end() {
    let mut w = Tiny::new("llama").writer();
    w.raw_tensor(
        "extra.weight",
        &[32],
        GgmlType::F32.id(),
        Vec::new(),
        Some(1 << 20),
    );
    let msg = format_err(w.to_bytes());
    assert!(
        msg.contains("tensor offsets past the end") && msg.contains("extra.weight"),
        "{msg}"
    );
    // Offsets near u64::MAX must not overflow.
    let mut w = Tiny::new("llama").writer();
    w.raw_tensor(
        "extra.weight",
        &[32],
        GgmlType::F32.id(),
        Vec::new(),
        Some(u64::MAX - 31),
    );
    assert!(format_err(w.to_bytes()).contains("past the end"));
    let mut w = Tiny::new("llama").writer();
    w.raw_tensor(
        "extra.weight",
        &[32],
        GgmlType::F32.id(),
        Vec::new(),
        Some(4),
    );
    assert!(format_err(w.to_bytes()).contains("not a multiple of the alignment"));
}

#[test]
fn unknown_architecture() {
    let e = read(Tiny::new("gpt5").bytes()).unwrap_err();
    assert!(
        matches!(&e, Error::UnknownArchitecture(a) if a == "gpt5"),
        "{e}"
    );
}

#[test]
fn unsupported_types() {
    let mut w = Tiny::new("llama").writer();
    w.raw_tensor("blk.0.weird.weight", &[32, 2], 99, vec![0; 256], None);
    let e = read(w.to_bytes()).unwrap_err();
    match &e {
        Error::UnsupportedWeightType { tensor, kind } => {
            assert_eq!(tensor, "blk.0.weird.weight");
            assert!(kind.contains("99"), "{kind}");
        }
        other => panic!("{other:?}"),
    }
    // IQ2_XXS is a real ggml type: the header parses, loading refuses it.
    let mut w = Tiny::new("llama").skip("blk.1.ffn_down.weight").writer();
    w.tensor(
        "blk.1.ffn_down.weight",
        &[FF as u64, HIDDEN as u64],
        GgmlType::IQ2_XXS,
        vec![0; HIDDEN * 66],
    );
    let bytes = w.to_bytes();
    let f = GgufFile::parse(Bytes::from_vec(bytes.clone()), "t").unwrap();
    assert_eq!(
        f.tensor("blk.1.ffn_down.weight").unwrap().ggml_type.id(),
        16
    );
    let e = read(bytes).unwrap_err();
    match &e {
        Error::UnsupportedWeightType { tensor, kind } => {
            assert_eq!(tensor, "blk.1.ffn_down.weight");
            assert!(kind.contains("IQ2_XXS") && kind.contains("16"), "{kind}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn row_length_not_a_multiple_of_the_block() {
    let mut w = Tiny::new("llama").writer();
    w.raw_tensor(
        "blk.0.odd.weight",
        &[40, 2],
        GgmlType::Q8_0.id(),
        vec![0; 68],
        None,
    );
    let msg = format_err(w.to_bytes());
    assert!(
        msg.contains("blk.0.odd.weight") && msg.contains("block size 32"),
        "{msg}"
    );
}

#[test]
fn duplicate_names() {
    let mut w = Tiny::new("llama").writer();
    put_vector(&mut w, "output_norm.weight", &vector(3, HIDDEN));
    assert!(format_err(w.to_bytes()).contains("duplicate tensor name `output_norm.weight`"));
    let mut w = Tiny::new("llama").writer();
    w.u32("llama.block_count", 2);
    assert!(format_err(w.to_bytes()).contains("duplicate metadata key"));
}

#[test]
fn missing_tensors_and_wrong_shapes() {
    let e = read(Tiny::new("llama").skip("blk.1.ffn_gate.weight").bytes()).unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor(t) if t == "blk.1.ffn_gate.weight"),
        "{e}"
    );
    let e = read(Tiny::new("llama").skip("output_norm.weight").bytes()).unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor(t) if t == "output_norm.weight"),
        "{e}"
    );

    let mut w = Tiny::new("llama").skip("blk.0.attn_k.weight").writer();
    put_matrix(
        &mut w,
        "blk.0.attn_k.weight",
        &matrix(5, Q_DIM, HIDDEN),
        GgmlType::F32,
    );
    match read(w.to_bytes()).unwrap_err() {
        Error::ShapeMismatch {
            tensor,
            expected,
            got,
        } => {
            assert_eq!(tensor, "blk.0.attn_k.weight");
            assert_eq!((expected, got), (vec![KV_DIM, HIDDEN], vec![Q_DIM, HIDDEN]));
        }
        e => panic!("{e:?}"),
    }
    let mut w = Tiny::new("llama").skip("blk.0.ffn_norm.weight").writer();
    put_vector(&mut w, "blk.0.ffn_norm.weight", &[1.0; 32]);
    assert!(matches!(
        read(w.to_bytes()),
        Err(Error::ShapeMismatch { .. })
    ));

    // A layer past block_count.
    let mut w = Tiny::new("llama").writer();
    put_vector(&mut w, "blk.7.attn_norm.weight", &vector(1, HIDDEN));
    assert!(format_err(w.to_bytes()).contains("layer 7"));
}

#[test]
fn bad_metadata() {
    let bytes = Tiny::new("llama").bytes();
    let needle = b"llama.block_count";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len();
    // Type u32 → i32, value 2 → -1.
    let mut b = bytes.clone();
    b[at..at + 4].copy_from_slice(&5u32.to_le_bytes());
    b[at + 4..at + 8].copy_from_slice(&(-1i32).to_le_bytes());
    assert!(format_err(b).contains("block_count"));
    // Type → string: the value's 4 bytes become a length prefix that runs off.
    let mut b = bytes.clone();
    b[at..at + 4].copy_from_slice(&8u32.to_le_bytes());
    format_err(b);
    // Unknown value type.
    let mut b = bytes;
    b[at..at + 4].copy_from_slice(&77u32.to_le_bytes());
    assert!(format_err(b).contains("unknown value type 77"));

    let mut w = GgufWriter::new();
    w.string("general.architecture", "llama");
    let msg = format_err(w.to_bytes());
    assert!(msg.contains("llama.embedding_length"), "{msg}");

    let mut w = Tiny::new("llama").writer();
    w.kv("general.alignment", Value::U32(24));
    assert!(format_err(w.to_bytes()).contains("power of two"));

    let mut w = Tiny::new("llama").writer();
    w.kv(
        "nested",
        Value::Array(ValueType::Array, vec![Value::Array(ValueType::U8, vec![])]),
    );
    assert!(format_err(w.to_bytes()).contains("nested"));
}

/// Header fields patched to absurd values.
#[test]
fn absurd_counts_and_dimensions() {
    let good = Tiny::new("llama").bytes();
    let patch = |at: usize, v: u64| {
        let mut b = good.clone();
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        b
    };
    // Tensor count, metadata count.
    for at in [8, 16] {
        for v in [u64::MAX, u64::MAX / 13 + 1, 1 << 40, 1 << 20] {
            assert!(format_err(patch(at, v)).contains("more than"));
        }
    }
    // The first key's length.
    assert!(format_err(patch(24, u64::MAX)).contains("more than"));

    let mut w = Tiny::new("llama").writer();
    w.raw_tensor("x", &[32, 1, 1, 1, 1], 0, vec![0; 128], None);
    assert!(format_err(w.to_bytes()).contains("5 dimensions"));
    let mut w = Tiny::new("llama").writer();
    w.raw_tensor("x", &[32, 0], 0, vec![], None);
    assert!(format_err(w.to_bytes()).contains("invalid dimensions"));
    let mut w = Tiny::new("llama").writer();
    w.raw_tensor("x", &[1 << 32, 1 << 32, 1 << 32], 0, vec![], None);
    assert!(format_err(w.to_bytes()).contains("overflows"));
    let mut w = Tiny::new("llama").writer();
    w.raw_tensor("x", &[1 << 40, 1 << 20], 0, vec![], None);
    format_err(w.to_bytes());
}

/// Random byte corruption anywhere in the header: errors or (harmless changes) models, never
/// panics.
#[test]
fn corrupted_headers_never_panic() {
    let good = Tiny::new("llama").bytes();
    let header_len = GgufFile::parse(Bytes::from_vec(good.clone()), "t")
        .unwrap()
        .data_start;
    let mut s = 0x9e3779b9u32;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as usize
    };
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + next() % 3 {
            let at = next() % header_len;
            b[at] = match next() % 4 {
                0 => 0xff,
                1 => 0,
                2 => b[at] ^ (1 << (next() % 8)),
                _ => next() as u8,
            };
        }
        let _ = read(b);
    }
}

#[test]
fn vocab_arrays() {
    let mut w = Tiny::new("llama").writer();
    let scores = (0..VOCAB).map(|i| Value::F32(-(i as f32))).collect();
    w.kv(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, scores),
    );
    let v = read(w.to_bytes()).unwrap().vocab.unwrap();
    assert_eq!(v.scores.as_ref().unwrap()[3], -3.0);

    let mut w = Tiny::new("llama").writer();
    w.kv(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, vec![Value::F32(0.0); 3]),
    );
    assert!(format_err(w.to_bytes()).contains("3 entries for 40 tokens"));

    // More tokens than embedding rows would let token ids index past the embedding.
    let mut w = Tiny::new("llama").writer();
    w.u32("llama.vocab_size", 30);
    assert!(matches!(
        read(w.to_bytes()),
        Err(Error::ShapeMismatch { .. })
    ));

    // No tokenizer at all is fine.
    let mut w = GgufWriter::new();
    let full = Tiny::new("llama").bytes();
    let f = GgufFile::parse(Bytes::from_vec(full.clone()), "t").unwrap();
    for (k, v) in &f.metadata {
        if !k.starts_with("tokenizer.") {
            w.kv(k, v.clone());
        }
    }
    for t in &f.tensors {
        let data = f.tensor_data(t).unwrap().to_vec();
        w.raw_tensor(&t.name, &t.dims, t.ggml_type.id(), data, None);
    }
    let m = read(w.to_bytes()).unwrap();
    assert!(m.vocab.is_none() && m.chat_template.is_none());
}

// ---- files read a range at a time (a browser's Blob) ----

/// A file read a range at a time, recording each read.
struct Counted {
    data: Vec<u8>,
    reads: std::sync::Mutex<Vec<std::ops::Range<usize>>>,
}

impl Counted {
    fn new(data: Vec<u8>) -> std::sync::Arc<Counted> {
        std::sync::Arc::new(Counted {
            data,
            reads: Default::default(),
        })
    }

    fn reads(&self) -> Vec<std::ops::Range<usize>> {
        self.reads.lock().unwrap().clone()
    }
}

impl akari_formats::ByteSource for Counted {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> akari_core::Result<Vec<u8>> {
        let r = offset as usize..offset as usize + len;
        self.reads.lock().unwrap().push(r.clone());
        self.data
            .get(r)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::format("counted", "past the end"))
    }
}

/// Phi-3's long and short rope factors.
fn phi3_factors() -> (Vec<f32>, Vec<f32>) {
    let long = (0..HEAD_DIM / 2).map(|i| 1.0 + i as f32).collect();
    let short = (0..HEAD_DIM / 2).map(|i| 1.0 + i as f32 / 10.0).collect();
    (long, short)
}

/// A Phi-3 file: fused QKV and gate/up, long-rope factors.
fn phi3_bytes() -> Vec<u8> {
    let mut w = Tiny::new("phi3").writer();
    let (long, short) = phi3_factors();
    put_vector(&mut w, "rope_factors_long.weight", &long);
    put_vector(&mut w, "rope_factors_short.weight", &short);
    w.u32("phi3.rope.scaling.original_context_length", 1024);
    w.to_bytes()
}

#[test]
fn streamed_files_defer_every_matrix_and_read_it_when_taken() {
    // A K-quant tensor is converted on the way; llama's Q/K are unpermuted; phi3's fused
    // tensors are cut; a tied embedding.
    let mut converted = Tiny::new("llama").skip("blk.0.ffn_down.weight").writer();
    let kq: Vec<u8> = (0..HIDDEN * GgmlType::Q6_K.block_bytes())
        .map(|i| match i % GgmlType::Q6_K.block_bytes() {
            208 => 0x00,
            209 => 0x20,
            j => (j * 37 % 251) as u8,
        })
        .collect();
    converted.tensor(
        "blk.0.ffn_down.weight",
        &[FF as u64, HIDDEN as u64],
        GgmlType::Q6_K,
        kq,
    );
    let tied = Tiny {
        tied: true,
        ..Tiny::new("qwen2")
    };
    let files = [
        ("llama", Tiny::new("llama").bytes()),
        ("llama with a Q6_K tensor", converted.to_bytes()),
        ("qwen2 tied", tied.bytes()),
        ("phi3", phi3_bytes()),
    ];
    for (what, bytes) in files {
        let eager = read(bytes.clone()).unwrap();
        let source = Counted::new(bytes.clone());
        let file = GgufFile::parse_source(source.clone(), "tiny.gguf").unwrap();
        assert!(file.is_streamed());
        let header_reads = source.reads().len();
        let mut lazy = akari_formats::gguf::load::model_source(&file).unwrap();
        assert_eq!(lazy.config, eager.config, "{what}");
        assert_eq!(lazy.weights.vectors, eager.weights.vectors, "{what}");
        assert!(lazy.weights.matrices.is_empty(), "{what}");
        assert_eq!(
            lazy.weights.deferred.len(),
            eager.weights.matrices.len(),
            "{what}"
        );

        // Reading the model read the header and the vectors, and no matrix.
        let matrix_ranges: Vec<_> = file
            .tensors
            .iter()
            .filter(|t| t.shape().len() == 2)
            .map(|t| {
                let s = file.data_start + t.offset as usize;
                s..s + t.n_bytes as usize
            })
            .collect();
        let overlaps = |a: &std::ops::Range<usize>, b: &std::ops::Range<usize>| {
            a.start < b.end && b.start < a.end
        };
        for r in &source.reads()[header_reads..] {
            assert!(
                !matrix_ranges.iter().any(|m| overlaps(m, r)),
                "{what}: read {r:?} before any matrix was taken"
            );
        }

        let mut keys: Vec<_> = eager.weights.matrices.keys().copied().collect();
        keys.sort_by_key(|k| k.to_string());
        for key in keys {
            let before = source.reads().len();
            let got = lazy.weights.take_matrix(key).unwrap();
            let want = &eager.weights.matrices[&key];
            assert_eq!(
                (got.format, got.rows, got.cols),
                (want.format, want.rows, want.cols),
                "{what} {key}"
            );
            assert_eq!(&got.bytes[..], &want.bytes[..], "{what} {key}");
            let reads = &source.reads()[before..];
            assert!(
                reads.len() <= 1,
                "{what} {key}: {} reads for one take",
                reads.len()
            );
            for r in reads {
                assert!(
                    matrix_ranges.contains(r),
                    "{what} {key}: read {r:?}, not a whole tensor"
                );
            }
        }
        assert!(lazy.weights.deferred.is_empty());
        // Each tensor is read once, fused ones too (their parts share the read).
        let mut taken: Vec<_> = source.reads()[header_reads..]
            .iter()
            .filter(|r| matrix_ranges.contains(r))
            .map(|r| (r.start, r.end))
            .collect();
        let n = taken.len();
        taken.sort_unstable();
        taken.dedup();
        assert_eq!(taken.len(), n, "{what}: a tensor was read twice");
        assert_eq!(
            n,
            matrix_ranges.len(),
            "{what}: every matrix tensor was read"
        );
    }
}

#[test]
fn streamed_headers_longer_than_the_first_read_are_read_whole() {
    let mut w = Tiny::new("llama").writer();
    // Past the first read of the header (4 MiB).
    w.string("general.description", &"x".repeat(9 << 20));
    let bytes = w.to_bytes();
    let source = Counted::new(bytes.clone());
    let file = GgufFile::parse_source(source.clone(), "big-header.gguf").unwrap();
    let eager = GgufFile::parse(Bytes::from_vec(bytes.clone()), "big-header.gguf").unwrap();
    assert_eq!(file.data_start, eager.data_start);
    assert_eq!(file.metadata, eager.metadata);
    let reads = source.reads();
    assert!(
        reads.len() > 1 && reads.iter().all(|r| r.start == 0),
        "{reads:?}"
    );
    assert!(reads.last().unwrap().end <= bytes.len());
}

#[test]
fn streamed_truncated_files_give_the_errors_of_files_in_memory() {
    let full = Tiny::new("llama").bytes();
    let data_start = GgufFile::parse(Bytes::from_vec(full.clone()), "t")
        .unwrap()
        .data_start;
    let cuts = (0..data_start + 64).chain((data_start + 64..full.len()).step_by(97));
    for cut in cuts {
        let part = full[..cut].to_vec();
        let eager = GgufFile::parse(Bytes::from_vec(part.clone()), "t.gguf")
            .and_then(|f| akari_formats::gguf::load::model_source(&f).map(|_| ()));
        let streamed = GgufFile::parse_source(Counted::new(part), "t.gguf")
            .and_then(|f| akari_formats::gguf::load::model_source(&f).map(|_| ()));
        match (eager, streamed) {
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "cut at {cut}"),
            (a, b) => panic!("cut at {cut}: {a:?} vs {b:?}"),
        }
    }
}
