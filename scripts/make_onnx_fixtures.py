#!/usr/bin/env python3
"""Generate fixtures/onnx: the tiny Hugging Face models exported to ONNX the way the
transformers.js model repos (onnx-community/...) and onnxruntime-genai are made, with
onnxruntime reference logits.

Run with the main fixtures venv (transformers 5.x, onnx, onnxruntime, onnxruntime-genai,
onnxconverter-common, onnxslim):

    .venv/bin/python scripts/make_onnx_fixtures.py                 # everything
    .venv/bin/python scripts/make_onnx_fixtures.py --models llama  # a subset
    .venv/bin/python scripts/make_onnx_fixtures.py --inventory     # only rewrite inventory.md

The optimum export itself needs transformers < 4.58 (optimum-onnx 0.1.0), so it runs in a second
venv, `.venv-onnx` (see scripts/requirements-onnx.txt and fixtures/README.md); this script calls
it as a subprocess (`--export-worker`). Override its interpreter with AKARI_OPTIMUM_PYTHON.

Pipeline per model (mirrors transformers.js scripts/convert.py + scripts/quantize.py):
  1. optimum main_export(task="text-generation-with-past")  -> model.onnx (merged decoder with past)
  2. onnxslim.slim(model.onnx)                                -> onnx/model.onnx
  3. fp16:  onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True, block list of
            transformers.js' float16.py: + Cast, + RandomNormalLike, - Range) + onnxslim
  4. q4:    MatMulNBitsQuantizer(block_size=32, is_symmetric=True, accuracy_level=None)
  5. q4f16: q4, then step 3
  6. q8:    ONNXQuantizer(IntegerOps, dynamic, QInt8 weights, per_channel=False,
            reduce_range=False, MatMulConstBOnly) -> onnx/model_quantized.onnx
     int8 / uint8: the same with QInt8 / QUInt8 weights and per_channel=True
            -> onnx/model_int8.onnx / onnx/model_uint8.onnx
     bnb4:  MatMulBnb4Quantizer(NF4, block_size=64) -> onnx/model_bnb4.onnx
  7. onnxruntime_genai.models.builder -p int4 / -p fp32 -e cpu -> <model>-genai-<p>/
  8. onnxruntime (CPU EP, default options) greedy references, op inventory.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_HF = ROOT / "fixtures" / "tiny-hf"
TINY = ROOT / "fixtures" / "tiny"
OUT = ROOT / "fixtures" / "onnx"
MODELS = ["llama", "qwen2", "phi3"]
COPIED = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
# variant -> (file under onnx/, weight_type in the reference)
VARIANTS = {
    "fp32": ("model.onnx", "onnx-fp32"),
    "fp16": ("model_fp16.onnx", "onnx-fp16"),
    "q4": ("model_q4.onnx", "onnx-q4"),
    "q4f16": ("model_q4f16.onnx", "onnx-q4f16"),
    "q8": ("model_quantized.onnx", "onnx-q8"),
    # transformers.js quantize.py's int8 / uint8 modes (weight type forced), per-channel scales
    "int8": ("model_int8.onnx", "onnx-int8"),
    "uint8": ("model_uint8.onnx", "onnx-uint8"),
    # transformers.js quantize.py's bnb4 mode: com.microsoft.MatMulBnb4, NF4, block 64
    "bnb4": ("model_bnb4.onnx", "onnx-bnb4"),
}
# Models made here rather than taken from fixtures/tiny-hf: random weights (make_fixtures.py's
# initialisation, fixed seed), saved with transformers' save_pretrained, then the same pipeline.
# `base` lends the tokenizer files, generation_config.json and the prompts; only `variants` are made.
DERIVED = {
    # hidden 80 / intermediate 144 are not multiples of 32: MatMulNBits with block_size 32 pads
    # the last block of every row (K = 80 -> 3 blocks, K = 144 -> 5 blocks). bnb4 blocks of 64 run
    # over the flattened [N, K] weight, so there they straddle rows.
    "llama-k80": dict(base="llama", seed=21, tied=False, variants=["fp32", "q4", "bnb4"],
                      cfg=dict(hidden_size=80, num_attention_heads=5, num_key_value_heads=1, head_dim=16,
                               intermediate_size=144)),
}
GENAI_PRECISIONS = ["int4", "fp32"]
N_STEPS = 5


def log(msg: str):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# 1. optimum export (runs inside .venv-onnx, transformers 4.57)
# --------------------------------------------------------------------------------------------

def config_for_transformers4(cfg: dict) -> dict:
    """transformers 5 writes `rope_parameters`; transformers 4.x reads `rope_theta` + `rope_scaling`."""
    cfg = dict(cfg)
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        cfg["rope_theta"] = rp["rope_theta"]
        rtype = rp.get("rope_type", "default")
        if rtype == "default":
            cfg["rope_scaling"] = None
        elif rtype == "longrope":
            # transformers 4.x Phi3Config accepts exactly type/short_factor/long_factor;
            # original_max_position_embeddings stays top-level (it is in the tiny config).
            cfg["rope_scaling"] = {"type": "longrope", "short_factor": rp["short_factor"],
                                   "long_factor": rp["long_factor"]}
            if rp.get("partial_rotary_factor") is not None:
                cfg["partial_rotary_factor"] = rp["partial_rotary_factor"]
        else:
            cfg["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    cfg.pop("transformers_version", None)
    return cfg


def export_worker(src: Path, out: Path):
    import torch
    import transformers
    from optimum.exporters.onnx import main_export

    torch.set_num_threads(1)
    torch.manual_seed(0)
    assert transformers.__version__.startswith("4."), transformers.__version__
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        cfg = json.loads((src / "config.json").read_text())
        (td / "config.json").write_text(json.dumps(config_for_transformers4(cfg), indent=2))
        for f in src.iterdir():
            if f.name != "config.json":
                (td / f.name).symlink_to(f.resolve())
        # AKARI_EXPORT_VALIDATE=0 skips optimum's check against PyTorch, for models too large to
        # hold twice in memory (make_big_onnx.py).
        main_export(model_name_or_path=str(td), output=str(out), task="text-generation-with-past",
                    device="cpu", do_validation=os.environ.get("AKARI_EXPORT_VALIDATE", "1") != "0")


def optimum_export(src: Path, out: Path):
    py = os.environ.get("AKARI_OPTIMUM_PYTHON", str(ROOT / ".venv-onnx" / "bin" / "python"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0",
               OMP_NUM_THREADS="1")
    subprocess.run([py, __file__, "--export-worker", str(src), str(out)], check=True, env=env)


# --------------------------------------------------------------------------------------------
# 2-6. slim, fp16, q4, q4f16, q8 (as transformers.js scripts/quantize.py)
# --------------------------------------------------------------------------------------------

def save(model, path: Path):
    import onnx
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


def slim(model):
    import onnxslim
    return onnxslim.slim(model)


def to_fp16(model):
    import onnx
    # onnxconverter-common 1.16's converter produces invalid graphs here (an Unsqueeze typed f16 whose
    # input stays f32); onnxruntime's maintained copy of the same converter works.
    from onnxruntime.transformers import float16
    from google.protobuf.message import EncodeError
    try:
        disable_shape_infer = model.ByteSize() >= onnx.checker.MAXIMUM_PROTOBUF
    except EncodeError:  # protobuf cannot even size a model past 2 GiB held in memory
        disable_shape_infer = True
    # transformers.js ships its own fork of this converter; its block list is onnxconverter-common's
    # without "Range", plus "RandomNormalLike" and "Cast" (existing fp32 Casts, e.g. in the rotary
    # embedding, stay fp32 with casts around them; without that the graph is invalid).
    block = (set(float16.DEFAULT_OP_BLOCK_LIST) - {"Range"}) | {"RandomNormalLike", "Cast"}
    m = float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=disable_shape_infer,
                                         op_block_list=block)
    return slim(m)


def to_q4(model):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    q = MatMulNBitsQuantizer(model=model, block_size=32, is_symmetric=True, accuracy_level=None)
    q.process()
    return q.model.model


def to_bnb4(model):
    from onnxruntime.quantization.matmul_bnb4_quantizer import MatMulBnb4Quantizer
    q = MatMulBnb4Quantizer(model, MatMulBnb4Quantizer.NF4, 64)
    q.process()
    return q.model.model


def to_q8(model, weight_type: str | None = None, per_channel: bool = False):
    """weight_type None: transformers.js' q8 choice; "int8" / "uint8": its int8 / uint8 modes."""
    from onnxruntime.quantization import QuantizationMode, QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    ops = {n.op_type for n in model.graph.node}
    # transformers.js: QUInt8 if the graph has Conv / GroupQueryAttention / MultiHeadAttention
    wtype = QuantType.QUInt8 if ops & {"Conv", "GroupQueryAttention", "MultiHeadAttention"} else QuantType.QInt8
    if weight_type is not None:
        wtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[weight_type]
    q = ONNXQuantizer(model, per_channel, False, mode=QuantizationMode.IntegerOps, static=False,
                      weight_qType=wtype, activation_qType=QuantType.QUInt8, tensors_range=None,
                      nodes_to_quantize=[], nodes_to_exclude=[],
                      op_types_to_quantize=set(IntegerOpsRegistry.keys()),
                      extra_options=dict(EnableSubgraph=True, MatMulConstBOnly=True))
    q.quantize_model()
    return q.model.model


def make_derived_hf(model: str, out: Path):
    """A DERIVED model as a Hugging Face directory (float32 safetensors) at `out`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_fixtures as mf

    spec = DERIVED[model]
    mf.MODELS[model] = dict(arch="llama", cls="LlamaForCausalLM", tied=spec["tied"], cfg=spec["cfg"])
    config = mf.hf_config(model, spec["seed"])
    m = mf.build_model(model, config)
    mf.load_weights(m, mf.random_state_dict(m, spec["seed"]))
    m.save_pretrained(str(out), safe_serialization=True)
    for f in COPIED:
        if f != "config.json":
            shutil.copy(TINY_HF / spec["base"] / f, out / f)


def hf_source(model: str, td: Path) -> Path:
    """The Hugging Face directory a model is exported from (made in `td` for DERIVED ones)."""
    if model not in DERIVED:
        return TINY_HF / model
    src = td / "hf"
    if not src.exists():
        make_derived_hf(model, src)
    return src


def variants_of(model: str) -> dict:
    keep = DERIVED[model]["variants"] if model in DERIVED else list(VARIANTS)
    return {v: VARIANTS[v] for v in keep}


def make_optimum_variants(model: str):
    import onnx
    d = OUT / model
    if model in DERIVED and d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        src = hf_source(model, td)
        for f in COPIED:
            shutil.copy(src / f, d / f)
        optimum_export(src, td / "export")
        raw = onnx.load(str(td / "export" / "model.onnx"))
    fp32 = slim(raw)
    save(fp32, d / "onnx" / "model.onnx")
    load = lambda: onnx.load(str(d / "onnx" / "model.onnx"))  # noqa: E731 (quantisers modify in place)
    make = {
        "fp16": lambda: to_fp16(load()),
        "q4": lambda: to_q4(load()),
        "q4f16": lambda: to_fp16(to_q4(load())),
        "q8": lambda: to_q8(load()),
        "int8": lambda: to_q8(load(), "int8", per_channel=True),
        "uint8": lambda: to_q8(load(), "uint8", per_channel=True),
        "bnb4": lambda: to_bnb4(load()),
    }
    for v, (fname, _) in variants_of(model).items():
        if v != "fp32":
            save(make[v](), d / "onnx" / fname)


# --------------------------------------------------------------------------------------------
# 7. onnxruntime-genai builder
# --------------------------------------------------------------------------------------------

def make_genai(model: str, precision: str) -> str | None:
    d = OUT / f"{model}-genai-{precision}"
    if d.exists():
        shutil.rmtree(d)
    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "hf"
        shutil.copytree(TINY_HF / model, src)
        cfg = json.loads((src / "config.json").read_text())
        rp = cfg.get("rope_parameters") or {}
        if rp.get("rope_type") == "longrope" and "type" not in rp:
            # builder 0.18 (builders/phi.py) reads rope_parameters["type"], which only configs with the
            # legacy `rope_scaling: {"type": "longrope", ...}` (the real Phi-3 repos) carry.
            rp["type"] = "longrope"
            (src / "config.json").write_text(json.dumps(cfg, indent=2))
        # The builder stamps producer_version with `git rev-parse HEAD` run five directories above its
        # own file, i.e. in this repository when the venv lives in it: hide git from it.
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
                   GIT_DIR=os.devnull, GIT_CEILING_DIRECTORIES="/")
        r = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src),
                            "-o", str(d), "-p", precision, "-e", "cpu", "-c", str(Path(td) / "cache")],
                           env=env, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-5:]
        if d.exists():
            shutil.rmtree(d)
        return "\n".join(tail)
    return None


# --------------------------------------------------------------------------------------------
# 8. references
# --------------------------------------------------------------------------------------------

def sig6(x: float) -> float:
    return float(f"{float(x):.6g}")


def ort_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


def greedy(path: Path, prompt: list[int], head_dim: int):
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    np_type = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
    past = {}
    for name, i in inputs.items():
        if name.startswith("past_key_values."):
            # [batch, kv_heads, past_len, head_dim]; genai names the last dim 'kv_cache_dim'
            shape = [1, i.shape[1], 0, i.shape[3] if isinstance(i.shape[3], int) else head_dim]
            past[name] = np.zeros(shape, dtype=np_type[i.type])
    steps, pos, ids = [], 0, list(prompt)
    for _ in range(N_STEPS):
        n = len(ids)
        feed = {"input_ids": np.array([ids], dtype=np.int64)}
        if "attention_mask" in inputs:
            feed["attention_mask"] = np.ones((1, pos + n), dtype=np.int64)
        if "position_ids" in inputs:
            feed["position_ids"] = np.arange(pos, pos + n, dtype=np.int64)[None, :]
        feed.update(past)
        res = dict(zip(outputs, sess.run(outputs, feed)))
        logits = res["logits"][0, -1].astype(np.float32)
        order = np.argsort(-logits, kind="stable")
        top = int(order[0])
        steps.append({"argmax": top, "margin": sig6(logits[order[0]] - logits[order[1]]),
                      "logits": [sig6(v) for v in logits.tolist()]})
        for k in past:
            past[k] = res[k.replace("past_key_values.", "present.")]
        pos += n
        ids = [top]
    return steps


def write_reference(path: Path, model: str, weight_type: str, onnx_file: Path):
    base = DERIVED[model]["base"] if model in DERIVED else model
    cases = json.loads((TINY / f"{base}-f32" / "reference.json").read_text())["cases"]
    cfg = json.loads(((OUT / model) if model in DERIVED else (TINY_HF / model)).joinpath("config.json").read_text())
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    ref = {
        "model": model,
        "weight_type": weight_type,
        "arithmetic": f"onnxruntime {ort_version()} CPU on {onnx_file.relative_to(ROOT / 'fixtures')}",
        "cases": [{"name": c["name"], "prompt_tokens": c["prompt_tokens"],
                   "steps": greedy(onnx_file, c["prompt_tokens"], head_dim)} for c in cases],
    }
    with open(path, "w") as f:
        json.dump(ref, f, separators=(",", ":"))
    return ref


def compare(ref: dict, model: str) -> list[str]:
    """Max |logit diff| per case against fixtures/tiny/<model>-f32 (transformers float32); for
    DERIVED models (no transformers reference) against their own onnxruntime fp32 reference."""
    if model in DERIVED:
        base = json.loads((OUT / model / "reference-fp32.json").read_text())
    else:
        base = json.loads((TINY / f"{model}-f32" / "reference.json").read_text())
    out = []
    for a, b in zip(ref["cases"], base["cases"]):
        same = [sa["argmax"] for sa in a["steps"]] == [sb["argmax"] for sb in b["steps"]]
        d = max(abs(x - y) for sa, sb in zip(a["steps"], b["steps"]) for x, y in zip(sa["logits"], sb["logits"]))
        rng = max(max(sb["logits"]) - min(sb["logits"]) for sb in b["steps"])
        margin = min(s["margin"] for s in a["steps"])
        out.append(f"{a['name']}: max|diff| {d:.3g} ({100 * d / rng:.3g}% of range), same argmax path: {same}, "
                   f"min margin {margin:.3g}")
    return out


# --------------------------------------------------------------------------------------------
# inventory
# --------------------------------------------------------------------------------------------

DTYPE = {1: "f32", 2: "u8", 3: "i8", 6: "i32", 7: "i64", 9: "bool", 10: "f16", 16: "bf16"}


def inventory(path: Path) -> list[str]:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    ops = collections.Counter((n.domain or "ai.onnx", n.op_type) for n in g.node)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in m.opset_import)
    lines = [f"- opsets: {opsets}; "
             f"ir_version {m.ir_version}; producer {m.producer_name} {m.producer_version}; "
             f"{len(g.node)} nodes, {len(g.initializer)} initializers"]
    io = lambda vs: ", ".join(f"{v.name}:{DTYPE.get(v.type.tensor_type.elem_type, v.type.tensor_type.elem_type)}" for v in vs)  # noqa: E731
    inputs = [v for v in g.input if not v.name.startswith("past_key_values.") or v.name.startswith("past_key_values.0.")]
    outputs = [v for v in g.output if not v.name.startswith("present.") or v.name.startswith("present.0.")]
    lines.append(f"- inputs: {io(inputs)} (…per layer); outputs: {io(outputs)} (…per layer)")
    lines.append("- ops: " + ", ".join(f"{op}×{c}" if dom == "ai.onnx" else f"{dom}.{op}×{c}"
                                       for (dom, op), c in sorted(ops.items(), key=lambda kv: (kv[0][0] != "ai.onnx", kv[0][1]))))
    init_types = collections.Counter(DTYPE.get(t.data_type, t.data_type) for t in g.initializer)
    lines.append("- initializer dtypes: " + ", ".join(f"{k}×{v}" for k, v in sorted(init_types.items())))
    ext = sum(1 for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    if ext:
        lines.append(f"- {ext} initializers in external data ({path.name}.data)")
    inits = {t.name: t for t in g.initializer}
    seen = set()
    for n in g.node:
        if n.op_type in ("MatMulNBits", "MatMulBnb4", "GroupQueryAttention", "RotaryEmbedding", "SkipSimplifiedLayerNormalization", "GatherBlockQuantized",
                         "SimplifiedLayerNormalization", "DynamicQuantizeLinear", "MatMulInteger",
                         "DynamicQuantizeMatMul", "DequantizeLinear", "Cast"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
            init_sig = tuple((i, DTYPE.get(inits[x].data_type), tuple(inits[x].dims)) for i, x in enumerate(n.input) if x in inits)
            if n.op_type == "MatMulNBits":
                key = (n.op_type, tuple(sorted((k, v) for k, v in attrs.items() if k not in ("K", "N"))),
                       tuple((i, t) for i, t, _ in init_sig), len(n.input))
                desc = (f"MatMulNBits attrs {dict(sorted(attrs.items()))} inputs {list(n.input)[:1]}+"
                        f"{[f'#{i} {t}{list(s)}' for i, t, s in init_sig]}"
                        f" ({len(n.input)} inputs; zero_points {'present' if len(n.input) > 3 and n.input[3] else 'absent'})")
            elif n.op_type == "Cast":
                key = (n.op_type, attrs.get("to"))
                desc = None
            else:
                key = (n.op_type, tuple(sorted((k, str(v)) for k, v in attrs.items())), tuple((i, t) for i, t, _ in init_sig))
                desc = f"{n.op_type} attrs {dict(sorted(attrs.items()))}" + (f" consts {[f'#{i} {t}{list(s)}' for i, t, s in init_sig]}" if init_sig else "")
            if key in seen:
                continue
            seen.add(key)
            if desc:
                lines.append(f"- e.g. `{n.name}`: {desc}")
    casts = collections.Counter(DTYPE.get(onnx.helper.get_attribute_value(a), "?") for n in g.node if n.op_type == "Cast" for a in n.attribute if a.name == "to")
    if casts:
        lines.append("- Cast targets: " + ", ".join(f"{k}×{v}" for k, v in sorted(casts.items())))
    def source(x: str, depth: int = 2) -> str:
        if x in inits:
            return f"initializer {x} {DTYPE.get(inits[x].data_type)}{list(inits[x].dims)}"
        prod = next((p for p in g.node if x in p.output), None)
        if prod is None:
            return x
        if depth == 0:
            return f"{prod.op_type} `{prod.name}`"
        return f"{prod.op_type} `{prod.name}`({', '.join(source(i, depth - 1) for i in prod.input if i)})"

    # how the embedding and lm_head weights are reached
    for n in g.node:
        if "input_ids" in n.input and n.op_type in ("Gather", "GatherBlockQuantized"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            lines.append(f"- embedding: `{n.name}` ({n.op_type}{' ' + str(attrs) if attrs else ''}) data = "
                         + "; ".join(source(x) for i, x in enumerate(n.input) if x != "input_ids"))
        if "lm_head" in n.name and n.op_type in ("MatMul", "MatMulNBits", "MatMulBnb4", "MatMulInteger", "DynamicQuantizeMatMul"):
            lines.append(f"- lm_head: `{n.name}` ({n.op_type}) weight = {source(n.input[1])}")
        if n.op_type == "DequantizeLinear" and "lm_head" not in n.name:
            users = [u for u in g.node if n.output[0] in u.input]
            lines.append(f"- DequantizeLinear `{n.name}`: {', '.join(source(i, 0) for i in n.input)} -> "
                         + ", ".join(f"{u.op_type} `{u.name}`" for u in users))
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                sub = a.g
                sops = collections.Counter(x.op_type for x in sub.node)
                consts = [f"{DTYPE.get(c.t.data_type)}{list(c.t.dims)}" for x in sub.node if x.op_type == "Constant"
                          for c in x.attribute if c.name == "value"]
                sinits = [f"{t.name} {DTYPE.get(t.data_type)}{list(t.dims)}" for t in sub.initializer]
                lines.append(f"- {n.op_type} `{n.name}` (cond {n.input[0]} = {source(n.input[0], 1)}) branch "
                             f"{a.name}: ops {dict(sops)}; constants {consts}; initializers {sinits}; outputs {[o.name for o in sub.output]}")
    return lines


def write_inventory(models):
    md = ["# Op inventory of fixtures/onnx (generated by scripts/make_onnx_fixtures.py)", ""]
    for model in models:
        for v, (fname, _) in VARIANTS.items():
            p = OUT / model / "onnx" / fname
            if p.exists():
                md += [f"## {model}/onnx/{fname} ({v}, {p.stat().st_size} bytes)", ""] + inventory(p) + [""]
        for prec in GENAI_PRECISIONS:
            p = OUT / f"{model}-genai-{prec}" / "model.onnx"
            if p.exists():
                size = p.stat().st_size + (p.with_name("model.onnx.data").stat().st_size if p.with_name("model.onnx.data").exists() else 0)
                md += [f"## {model}-genai-{prec}/model.onnx (+ .data; {size} bytes)", ""] + inventory(p) + [""]
    (OUT / "inventory.md").write_text("\n".join(md))


# --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export-worker", nargs=2, metavar=("SRC", "OUT"))
    ap.add_argument("--models", nargs="+", default=MODELS + list(DERIVED), choices=MODELS + list(DERIVED))
    ap.add_argument("--skip-genai", action="store_true")
    ap.add_argument("--skip-export", action="store_true", help="reuse existing onnx files, only recompute references")
    ap.add_argument("--inventory", action="store_true", help="only rewrite fixtures/onnx/inventory.md")
    args = ap.parse_args()
    if args.export_worker:
        export_worker(Path(args.export_worker[0]), Path(args.export_worker[1]))
        return
    if args.inventory:
        write_inventory(MODELS + list(DERIVED))
        return
    report = []
    for model in args.models:
        if not args.skip_export:
            log(f"== {model}: optimum export + variants")
            make_optimum_variants(model)
        for v, (fname, wtype) in variants_of(model).items():
            f = OUT / model / "onnx" / fname
            ref = write_reference(OUT / model / f"reference-{v}.json", model, wtype, f)
            report.append(f"{model} {v}: " + " | ".join(compare(ref, model)))
            log(report[-1])
        if args.skip_genai or model in DERIVED:
            continue
        for prec in GENAI_PRECISIONS:
            d = OUT / f"{model}-genai-{prec}"
            if not args.skip_export:
                log(f"== {model}: onnxruntime-genai builder -p {prec}")
                err = make_genai(model, prec)
                if err:
                    report.append(f"{model} genai {prec}: builder FAILED: {err}")
                    log(report[-1])
                    continue
            if (d / "model.onnx").exists():
                ref = write_reference(d / "reference.json", model, f"onnx-genai-{prec}", d / "model.onnx")
                report.append(f"{model} genai-{prec}: " + " | ".join(compare(ref, model)))
                log(report[-1])
    write_inventory(MODELS + list(DERIVED))
    print("\n".join(report))
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>9}  {hashlib.sha256(p.read_bytes()).hexdigest()[:16]}  {p.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
