"""Writes a GGUF with a config.json's architecture (Qwen2) and random weights, for speed runs.

    python3 make_model.py CONFIG.json OUT.gguf {q4_0,f16}

Weights are random (speed does not depend on them); 2-D weights are Q4_0 blocks with small
scales or f16 values of std 0.02, norms are ones, biases small. The tokenizer is a byte-level
BPE vocabulary of the config's size with a few merges: enough for every runtime to load the file.
Needs numpy and gguf-py (from llama.cpp's tree: PYTHONPATH=<llama.cpp>/gguf-py).
"""

import json
import sys

import numpy as np
import gguf


def byte_chars() -> list[str]:
    # GPT-2's printable stand-ins for the 256 byte values.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def vocab(size: int) -> tuple[list[str], list[str]]:
    """Byte tokens, then distinct 2- and 3-byte strings; merges for the first 2-byte ones."""
    chars = byte_chars()
    tokens = chars[:]
    i = 0
    while len(tokens) < size - 1:
        a, b = divmod(i, 256)
        tokens.append(chars[b] + chars[a % 256] + (chars[a // 256 - 1] if a >= 256 else ""))
        i += 1
    tokens.append("<|endoftext|>")
    merges = [f"{t[0]} {t[1]}" for t in tokens[256:1256]]
    return tokens, merges


def q4_0(rng, rows: int, cols: int) -> np.ndarray:
    blocks = rng.integers(0, 256, size=(rows, cols // 32, 18), dtype=np.uint8)
    d = rng.uniform(0.002, 0.006, size=(rows, cols // 32)).astype(np.float16)
    blocks[:, :, 0:2] = d.view(np.uint8).reshape(rows, cols // 32, 2)
    return blocks.reshape(rows, cols // 32 * 18)


def main() -> None:
    cfg = json.load(open(sys.argv[1]))
    out, kind = sys.argv[2], sys.argv[3]
    rng = np.random.default_rng(0)
    h, inter, nl = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    nh, nkv, nv = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]
    hd = h // nh
    w = gguf.GGUFWriter(out, "qwen2")
    w.add_name("DeepSeek-R1-Distill-Qwen-1.5B (random weights)")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(h)
    w.add_feed_forward_length(inter)
    w.add_block_count(nl)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_freq_base(float(cfg["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0 if kind == "q4_0" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    toks, merges = vocab(nv)
    w.add_token_list(toks)
    w.add_token_types([gguf.TokenType.NORMAL] * (nv - 1) + [gguf.TokenType.CONTROL])
    w.add_token_merges(merges)
    w.add_bos_token_id(nv - 1)
    w.add_eos_token_id(nv - 1)

    def matrix(name: str, rows: int, cols: int) -> None:
        if kind == "q4_0":
            w.add_tensor(name, q4_0(rng, rows, cols), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            v = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)
            w.add_tensor(name, v)

    def vector(name: str, n: int, value: float | None = None) -> None:
        v = np.full(n, value, np.float32) if value is not None else (rng.standard_normal(n, dtype=np.float32) * 0.02)
        w.add_tensor(name, v)

    matrix("token_embd.weight", nv, h)
    for i in range(nl):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", h, 1.0)
        matrix(p + "attn_q.weight", h, h)
        vector(p + "attn_q.bias", h)
        matrix(p + "attn_k.weight", nkv * hd, h)
        vector(p + "attn_k.bias", nkv * hd)
        matrix(p + "attn_v.weight", nkv * hd, h)
        vector(p + "attn_v.bias", nkv * hd)
        matrix(p + "attn_output.weight", h, h)
        vector(p + "ffn_norm.weight", h, 1.0)
        matrix(p + "ffn_gate.weight", inter, h)
        matrix(p + "ffn_up.weight", inter, h)
        matrix(p + "ffn_down.weight", h, inter)
    vector("output_norm.weight", h, 1.0)
    matrix("output.weight", nv, h)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
