#!/usr/bin/env python3
"""llama.cpp reference logits for akari's quantised (int8-activation) path.

llama.cpp's CPU backend multiplies quantised weights with activations quantised to int8
blocks (Q8_0 for Q4_0/Q8_0/Q5_0 weights, Q8_1 for Q4_1/Q5_1, Q8_K for K-quants), as akari
does by default; transformers (fixtures/*/reference.json) computes in float32 on the
dequantised weights. This script writes, beside each reference.json:

* fixtures/tiny/<model>-<type>/reference-llamacpp.json
    Same shape as reference.json. steps[0] = last-position logits after the prompt, then one
    step per token of the *transformers* greedy chain (the `argmax` values of reference.json
    are fed, so step i of both files sees the same tokens); each step's `argmax` is
    llama.cpp's own argmax of those logits (compare with reference.json to spot a flip).
* fixtures/smollm2/reference-llamacpp.json
    Same prompts and prompt token ids as fixtures/smollm2/reference.json (ids fed directly,
    no re-tokenisation), llama.cpp greedy continuation of up to 48 tokens on the Q4_1 file,
    stopping at token 2 (<|im_end|>), with per-step top1-top2 margins.

llama.cpp comes from scripts/bench/build-llama-cpp.sh (shared libraries in its bin dir); the
Python ctypes bindings are the llama_cpp/ directory of the same llama-cpp-python sdist, so no
second compilation (pip install llama-cpp-python) is needed.

Settings: n_threads = 1 (use --threads to check thread-count independence), F32 K/V cache
and flash attention off by default (so attention is plain f32 and the only int8 rounding is
in the weight matmuls, as in akari); --kv f16 gives llama.cpp's default F16 cache with flash
attention on auto.

phi3 (LongRoPE): llama.cpp picks rope_factors_long when its per-sequence context exceeds
original_max_position_embeddings (32 for the tiny phi3), and it pads n_ctx to a multiple of
256, so it always uses the long factors here. transformers (and akari) pick by the current
sequence length: `short` (7 prompt tokens) uses the short factors, `long` (48) the long ones.
So phi3 `short` differs from reference.json by design; phi3 `long` is comparable.

Usage (repository root):
    .venv/bin/python scripts/llamacpp_reference.py             # tiny + smollm2
    .venv/bin/python scripts/llamacpp_reference.py --tiny
    .venv/bin/python scripts/llamacpp_reference.py --smollm2 [--threads 2] [--out-suffix X]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SMOLLM2_MAX_NEW = 48
EOS_IM_END = 2
# Metadata overrides for loading the tiny fixtures (token ids are fed directly, so neither
# affects the computation): llama.cpp rejects tokenizer.ggml.pre = "gpt2" (its spelling is
# "gpt-2"), and a general.name containing "phi3" makes it look up Phi-3 special tokens
# ("<|end|>", ...) that the tiny vocabulary does not have (unordered_map::at).
TINY_OVERRIDES = {"tokenizer.ggml.pre": "gpt-2", "general.name": "akari-tiny"}


def build_llama_cpp() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "bench" / "build-llama-cpp.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    return Path(out.splitlines()[-1])


def load_bindings(bin_dir: Path):
    """Import llama_cpp.llama_cpp (ctypes) from the sdist without its high-level package."""
    root = bin_dir.parent.parent  # $CACHE/llama.cpp
    version = bin_dir.parent.name.removeprefix("build-")
    src = root / f"src-{version}"
    pkg_dir = src / "llama_cpp"
    if not (pkg_dir / "llama_cpp.py").exists():
        sys.exit(f"llama_cpp bindings not found in {pkg_dir}")
    os.environ["LLAMA_CPP_LIB_PATH"] = str(bin_dir)
    # A bare package object so that `llama_cpp/__init__.py` (which pulls in the high-level
    # API and its extra dependencies) is not executed.
    pkg = types.ModuleType("llama_cpp")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["llama_cpp"] = pkg
    import llama_cpp.llama_cpp as L  # noqa: E402
    commit = "unknown"
    vfile = root / "VERSION"
    if vfile.exists():
        for line in vfile.read_text().splitlines():
            if line.startswith("llama.cpp "):
                commit = line.split()[1]
    return L, version, commit


def sig6(x: float) -> float:
    return float(f"{float(x):.6g}")


def write_cases_json(path: Path, head: dict, cases: list[dict]):
    """Same layout as scripts/make_fixtures.py (one line per case)."""
    lines = ["{"] + [f" {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
    lines.append(' "cases": [')
    lines += [f"  {json.dumps(c, ensure_ascii=False)}" + ("," if i + 1 < len(cases) else "") for i, c in enumerate(cases)]
    lines += [" ]", "}"]
    text = "\n".join(lines) + "\n"
    json.loads(text)
    path.write_text(text, encoding="utf-8")


class Runner:
    def __init__(self, L, threads: int, kv: str):
        self.L, self.threads, self.kv = L, threads, kv
        if not os.environ.get("LLAMACPP_VERBOSE"):
            self._log_cb = L.llama_log_callback(lambda level, text, user: None)
            L.llama_log_set(self._log_cb, ctypes.c_void_p(0))
        L.llama_backend_init()

    def arithmetic_note(self) -> str:
        kv = ("F32 K/V cache, flash attention off" if self.kv == "f32"
              else "F16 K/V cache, flash attention auto")
        return f"{kv}, {self.threads} thread(s)"

    def open(self, path: Path, n_ctx: int, overrides: dict[str, str] | None = None):
        L = self.L
        mp = L.llama_model_default_params()
        mp.use_mmap = True
        if overrides:
            ov = (L.llama_model_kv_override * (len(overrides) + 1))()
            for i, (k, v) in enumerate(overrides.items()):
                ov[i].tag = L.LLAMA_KV_OVERRIDE_TYPE_STR
                ov[i].key = k.encode()
                ov[i].value.val_str = v.encode()
            self._overrides = ov  # keep alive while the model loads
            mp.kv_overrides = ov
        model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = max(n_ctx, 512)
        cp.n_ubatch = max(n_ctx, 512)
        cp.n_seq_max = 1
        cp.n_threads = self.threads
        cp.n_threads_batch = self.threads
        if self.kv == "f32":
            cp.type_k = L.GGML_TYPE_F32
            cp.type_v = L.GGML_TYPE_F32
            cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = L.llama_init_from_model(model, cp)
        if not ctx:
            L.llama_model_free(model)
            raise RuntimeError(f"llama.cpp could not create a context for {path}")
        n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
        return model, ctx, n_vocab

    def close(self, model, ctx):
        self.L.llama_free(ctx)
        self.L.llama_model_free(model)

    def feed(self, ctx, n_vocab: int, tokens: list[int]) -> np.ndarray:
        """Decode tokens (appending to the KV cache); return the last position's logits."""
        L = self.L
        arr = (L.llama_token * len(tokens))(*tokens)
        batch = L.llama_batch_get_one(arr, len(tokens))
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        ptr = L.llama_get_logits_ith(ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32).copy()


def top2(logits: np.ndarray):
    order = np.argsort(-logits, kind="stable")
    a, b = int(order[0]), int(order[1])
    return a, float(logits[a] - logits[b])


def activation_note(weight_type: str) -> str:
    """How llama.cpp's CPU matmul rounds the activations for this weight type (vec_dot_type)."""
    wt = weight_type.upper()
    if wt == "F32":
        return "f32 activations"
    if wt in ("F16", "BF16"):
        return f"activations rounded to {wt.lower()}"
    if wt.endswith("_K"):
        return "int8 activations (Q8_K blocks of 256)"
    if wt in ("Q4_1", "Q5_1"):
        return "int8 activations (Q8_1 blocks of 32)"
    return "int8 activations (Q8_0 blocks of 32)"


def tiny_dirs() -> list[Path]:
    return sorted(p for p in (FIXTURES / "tiny").iterdir() if (p / "reference.json").exists())


def make_tiny(runner: Runner, label: str, only: list[str] | None):
    summary = []
    for d in tiny_dirs():
        if only and d.name not in only:
            continue
        ref = json.loads((d / "reference.json").read_text())
        try:
            model, ctx, n_vocab = runner.open(d / "model.gguf", 64, overrides=TINY_OVERRIDES)
        except RuntimeError as e:
            print(f"{d.name}: SKIPPED ({e})", flush=True)
            summary.append((d.name, None))
            continue
        cases = []
        try:
            for case in ref["cases"]:
                prompt = case["prompt_tokens"]
                chain = [s["argmax"] for s in case["steps"]]
                # n_ctx is padded to 256 by llama.cpp anyway; a fresh context per case.
                runner.L.llama_memory_clear(runner.L.llama_get_memory(ctx), True)
                steps = []
                logits = runner.feed(ctx, n_vocab, prompt)
                for i in range(len(chain)):
                    if i > 0:
                        logits = runner.feed(ctx, n_vocab, [chain[i - 1]])
                    am, margin = top2(logits)
                    steps.append({"argmax": am, "margin": sig6(margin), "logits": [sig6(v) for v in logits]})
                cases.append({"name": case["name"], "prompt_tokens": prompt, "steps": steps})
        finally:
            runner.close(model, ctx)
        note = (f"{label} CPU, {activation_note(ref['weight_type'])} ({runner.arithmetic_note()}; metadata overrides "
                f"{TINY_OVERRIDES} so that the vocabulary loads); "
                "fed the transformers argmax chain of reference.json; argmax = llama.cpp's own")
        if d.name.startswith("phi3"):
            note += ("; phi3: llama.cpp uses rope_factors_long for every case (n_ctx padded to 256 > "
                     "original context 32), so case `short` differs from reference.json by design")
        out = {"model": ref["model"], "weight_type": ref["weight_type"], "arithmetic": note, "cases": cases}
        with open(d / "reference-llamacpp.json", "w") as f:
            json.dump(out, f, separators=(",", ":"))
            f.write("\n")
        # quick comparison with the transformers reference
        worst = 0.0
        flips = 0
        for rc, lc in zip(ref["cases"], cases):
            for rs, ls in zip(rc["steps"], lc["steps"]):
                r = np.array(rs["logits"]); x = np.array(ls["logits"])
                worst = max(worst, float(np.abs(r - x).max() / (r.max() - r.min())))
                flips += rs["argmax"] != ls["argmax"]
        line = f"{d.name}: max|llama.cpp - transformers|/range = {worst:.4%}, argmax flips {flips}"
        print(line, flush=True)
        summary.append((d.name, worst))
    return summary


def fetch_smollm2() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "fetch-smollm2.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout.strip()
    return Path(out)


def make_smollm2(runner: Runner, label: str, out_name: str):
    ref = json.loads((FIXTURES / "smollm2" / "reference.json").read_text())
    path = fetch_smollm2()
    model, ctx, n_vocab = runner.open(path, 512)
    cases = []
    try:
        for case in ref["cases"]:
            runner.L.llama_memory_clear(runner.L.llama_get_memory(ctx), True)
            ids = case["prompt_tokens"]
            gen, margins = [], []
            logits = runner.feed(ctx, n_vocab, ids)
            for _ in range(SMOLLM2_MAX_NEW):
                nxt, margin = top2(logits)
                gen.append(nxt)
                margins.append(margin)
                if nxt == EOS_IM_END:
                    break
                logits = runner.feed(ctx, n_vocab, [nxt])
            text = detok(runner.L, model, gen)
            same = 0
            for a, b in zip(gen, case["tokens"]):
                if a != b:
                    break
                same += 1
            print(f"[{len(gen)} tokens, min_margin_32={min(margins[:32]):.4f}, shares {same}/"
                  f"{len(case['tokens'])} with transformers] {case['prompt']!r} -> {text!r}", flush=True)
            cases.append({"prompt": case["prompt"], "prompt_tokens": ids, "tokens": gen, "text": text,
                          "min_margin_32": sig6(min(margins[:32])),
                          "margins": [sig6(m) for m in margins]})
    finally:
        runner.close(model, ctx)
    write_cases_json(FIXTURES / "smollm2" / out_name, {
        "model_file": ref["model_file"],
        "arithmetic": f"{label} CPU, int8 activations ({runner.arithmetic_note()})"}, cases)


def detok(L, model, tokens: list[int]) -> str:
    vocab = L.llama_model_get_vocab(model)
    out = b""
    buf = ctypes.create_string_buffer(256)
    for t in tokens:
        n = L.llama_token_to_piece(vocab, t, buf, len(buf), 0, False)  # special tokens not rendered
        if n > 0:
            out += buf.raw[:n]
    return out.decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="only the tiny fixtures")
    ap.add_argument("--smollm2", action="store_true", help="only the SmolLM2 reference")
    ap.add_argument("--only", nargs="*", help="tiny fixture directory names (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kv", choices=["f32", "f16"], default="f32")
    ap.add_argument("--out-suffix", default="", help="write reference-llamacpp<suffix>.json (SmolLM2)")
    args = ap.parse_args()
    both = not (args.tiny or args.smollm2)
    bin_dir = build_llama_cpp()
    L, version, commit = load_bindings(bin_dir)
    label = f"llama.cpp {commit[:10]} (llama-cpp-python {version})"
    print(f"{label}: {L.llama_print_system_info().decode().strip()}", flush=True)
    runner = Runner(L, args.threads, args.kv)
    if args.tiny or both:
        make_tiny(runner, label, args.only)
    if args.smollm2 or both:
        make_smollm2(runner, label, f"reference-llamacpp{args.out_suffix}.json")


if __name__ == "__main__":
    main()
