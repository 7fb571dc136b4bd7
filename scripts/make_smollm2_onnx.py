#!/usr/bin/env python3
"""SmolLM2-135M-Instruct as a transformers.js-style ONNX repo, plus an onnxruntime greedy reference.

    .venv/bin/python scripts/make_smollm2_onnx.py

1. `scripts/fetch-smollm2.sh` -> SmolLM2-135M-Instruct.Q4_1.gguf (cached, not committed).
2. transformers 5 loads the GGUF (dequantised to float32) and saves it in Hugging Face layout to
   ${AKARI_CACHE:-~/.cache/akari}/onnx/smollm2/hf.
3. Same pipeline as scripts/make_onnx_fixtures.py: optimum export in .venv-onnx (transformers 4.57),
   onnxslim -> onnx/model.onnx, MatMulNBitsQuantizer(block_size=32, is_symmetric=True) ->
   onnx/model_q4.onnx, q4 + fp16 conversion -> onnx/model_q4f16.onnx, all under
   ${AKARI_CACHE:-~/.cache/akari}/onnx/smollm2/ (not committed; about 0.5 GB + 0.2 GB + 0.15 GB).
4. onnxruntime (CPU EP, default options) greedy continuations of up to 48 tokens for the prompts of
   fixtures/smollm2/reference.json (same prompt_tokens, stop after <|im_end|> = 2), written to
   fixtures/smollm2/reference-onnx-q4.json in the format of fixtures/smollm2/reference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_onnx_fixtures as mof  # noqa: E402

ROOT = mof.ROOT
CACHE = Path(os.environ.get("AKARI_CACHE", Path.home() / ".cache" / "akari")) / "onnx" / "smollm2"
MAX_NEW = 48
EOS = 2  # <|im_end|>


def fetch() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "fetch-smollm2.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    return Path(out)


def make_hf(gguf: Path, out: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # a GGUF-loaded model refuses save_pretrained ("quantized with gguf"): copy into a plain model
    cfg = loaded.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    model.tie_weights()
    del loaded
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)


def make_onnx(hf: Path, out: Path):
    import onnx

    (out / "onnx").mkdir(parents=True, exist_ok=True)
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]:
        if (hf / f).exists():
            shutil.copy(hf / f, out / f)
    with tempfile.TemporaryDirectory() as td:
        py = os.environ.get("AKARI_OPTIMUM_PYTHON", str(ROOT / ".venv-onnx" / "bin" / "python"))
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
        subprocess.run([py, mof.__file__, "--export-worker", str(hf), td], check=True, env=env)
        fp32 = mof.slim(onnx.load(str(Path(td) / "model.onnx")))
    onnx.save_model(fp32, str(out / "onnx" / "model.onnx"))
    del fp32
    load = lambda: onnx.load(str(out / "onnx" / "model.onnx"))  # noqa: E731
    q4 = mof.to_q4(load())
    onnx.save_model(q4, str(out / "onnx" / "model_q4.onnx"))
    onnx.save_model(mof.to_fp16(q4), str(out / "onnx" / "model_q4f16.onnx"))


def generate(sess, prompt_ids: list[int], n_kv: int, head_dim: int):
    import numpy as np

    inputs = {i.name for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    past = {i.name: np.zeros((1, n_kv, 0, head_dim), dtype=np.float32)
            for i in sess.get_inputs() if i.name.startswith("past_key_values.")}
    ids, pos, gen, margins = list(prompt_ids), 0, [], []
    for _ in range(MAX_NEW):
        n = len(ids)
        feed = {"input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.ones((1, pos + n), dtype=np.int64)}
        if "position_ids" in inputs:
            feed["position_ids"] = np.arange(pos, pos + n, dtype=np.int64)[None, :]
        feed.update(past)
        res = dict(zip(outputs, sess.run(outputs, feed)))
        logits = res["logits"][0, -1].astype(np.float32)
        order = np.argsort(-logits, kind="stable")
        nxt = int(order[0])
        margins.append(float(logits[order[0]] - logits[order[1]]))
        gen.append(nxt)
        if nxt == EOS:
            break
        for k in past:
            past[k] = res[k.replace("past_key_values.", "present.")]
        pos += n
        ids = [nxt]
    return gen, margins


def reference(repo: Path, variant_file: str, out_json: Path | None):
    import onnxruntime as ort
    from tokenizers import Tokenizer
    import make_fixtures as mf

    base = json.loads((ROOT / "fixtures" / "smollm2" / "reference.json").read_text())
    cfg = json.loads((repo / "config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    tok = Tokenizer.from_file(str(repo / "tokenizer.json"))
    sess = ort.InferenceSession(str(repo / "onnx" / variant_file), providers=["CPUExecutionProvider"])
    cases = []
    for c in base["cases"]:
        gen, margins = generate(sess, c["prompt_tokens"], cfg["num_key_value_heads"], head_dim)
        text = tok.decode(gen, skip_special_tokens=True)
        same = gen == c["tokens"]
        first_diff = next((i for i, (a, b) in enumerate(zip(gen, c["tokens"])) if a != b), None)
        print(f"[{len(gen)} tokens, min_margin_32={min(margins[:32]):.4f}, same as transformers: {same}"
              f"{'' if same else f' (first difference at {first_diff})'}] {c['prompt']!r} -> {text!r}", flush=True)
        cases.append({"prompt": c["prompt"], "prompt_tokens": c["prompt_tokens"], "tokens": gen, "text": text,
                      "min_margin_32": mf.sig6(min(margins[:32]))})
    if out_json is None:
        return
    mf.write_cases_json(out_json, {
        "model_file": f"{base['model_file']} -> optimum ONNX -> {variant_file}",
        "arithmetic": f"onnxruntime {ort.__version__} CPU on {variant_file} (transformers.js q4: "
                      "MatMulNBits bits=4 block_size=32 symmetric, f32 activations; lm_head f32)"}, cases)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild the cached HF and ONNX files")
    ap.add_argument("--check-fp32", action="store_true",
                    help="also run onnx/model.onnx and compare with fixtures/smollm2/reference.json (writes nothing)")
    args = ap.parse_args()
    gguf = fetch()
    hf = CACHE / "hf"
    if args.force and CACHE.exists():
        shutil.rmtree(CACHE)
    if not (hf / "config.json").exists():
        print(f"== HF layout -> {hf}", flush=True)
        make_hf(gguf, hf)
    if not (CACHE / "onnx" / "model_q4f16.onnx").exists():
        print(f"== ONNX -> {CACHE}", flush=True)
        make_onnx(hf, CACHE)
    if args.check_fp32:
        reference(CACHE, "model.onnx", None)
    reference(CACHE, "model_q4.onnx", ROOT / "fixtures" / "smollm2" / "reference-onnx-q4.json")


if __name__ == "__main__":
    main()
