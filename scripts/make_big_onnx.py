#!/usr/bin/env python3
"""An ONNX repository whose weights are larger than 2 GiB, for loading in the browser on WebGPU.

    .venv/bin/python scripts/make_big_onnx.py [OUT]

DeepSeek-R1-Distill-Qwen-1.5B's decoder layers (scripts/bench/gpu/deepseek-r1-distill-qwen-1.5b.json:
hidden 1536, 12/2 heads, FFN 8960), 24 of its 28, with random weights (seed 0) and the tiny qwen2
fixture's 320-token tokenizer, exported the way transformers.js repositories are made
(make_onnx_fixtures.py's optimum export and fp16 conversion): onnx/model_fp16.onnx, with its
2.25 GB of weights in onnx/model_fp16.onnx_data (external data, as transformers.js keeps the
weights of models over 2 GB). The seed's own repository, onnx-community/DeepSeek-R1-Distill-
Qwen-1.5B-ONNX, has the same layers and a 3.5 GB model_fp16.onnx_data.

One step differs from make_onnx_fixtures.py, for memory: the float32 export goes to the fp16
conversion without being slimmed first (the conversion slims its result, as there). Holding the
4.5 GB float32 graph twice, as onnxslim does, did not fit in 23 GB.

OUT defaults to ${AKARI_CACHE:-~/.cache/akari}/onnx/big-qwen2 (about 2.25 GB; the export needs
about 12 GB of memory and 7 GB of temporary disk). Rerunning with the files present does nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_onnx_fixtures as mof  # noqa: E402

ROOT = mof.ROOT
DEFAULT_OUT = Path(os.environ.get("AKARI_CACHE", Path.home() / ".cache" / "akari")) / "onnx" / "big-qwen2"
TOKENIZER = ROOT / "fixtures" / "tiny-hf" / "qwen2"
SHAPE = ROOT / "scripts" / "bench" / "gpu" / "deepseek-r1-distill-qwen-1.5b.json"


def make_hf(out: Path):
    """The random-weight model in Hugging Face layout (float32 safetensors)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tiny = json.loads((TOKENIZER / "config.json").read_text())
    cfg = json.loads(SHAPE.read_text())
    cfg.update(vocab_size=tiny["vocab_size"], bos_token_id=tiny["bos_token_id"],
               eos_token_id=tiny["eos_token_id"], max_position_embeddings=4096, num_hidden_layers=24,
               torch_dtype="float32")
    cfg.pop("architectures")
    cfg.pop("model_type")
    model = Qwen2ForCausalLM(Qwen2Config(**cfg)).eval()
    # transformers initialises norms to ones and biases to zeros, which the export's slimming
    # folds away (a Mul by ones, an Add of zeros): give them values, as real weights have.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn_like(p))
    model.save_pretrained(str(out), safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        shutil.copy(TOKENIZER / f, out / f)


def main():
    import onnx

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    target = out / "onnx" / "model_fp16.onnx"
    if target.exists() and (out / "onnx" / "model_fp16.onnx_data").exists():
        print(out)
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("AKARI_BIG_TMP")) as td:
        td = Path(td)
        mof.log("== random weights, Hugging Face layout")
        make_hf(td / "hf")
        mof.log("== optimum export")
        os.environ["AKARI_EXPORT_VALIDATE"] = "0"
        mof.optimum_export(td / "hf", td / "export")
        (td / "hf" / "model.safetensors").unlink()
        mof.log("== fp16 and slim")
        fp16 = mof.to_fp16(onnx.load(str(td / "export" / "model.onnx")))
        shutil.rmtree(td / "export")
        staged = td / "repo"
        (staged / "onnx").mkdir(parents=True)
        onnx.save_model(fp16, str(staged / "onnx" / "model_fp16.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location="model_fp16.onnx_data",
                        size_threshold=1024)
        del fp16
        onnx.checker.check_model(str(staged / "onnx" / "model_fp16.onnx"))
        for f in mof.COPIED:
            src = TOKENIZER / f
            if f == "config.json":
                src = td / "hf" / f
            shutil.copy(src, staged / f)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(out))
    print(out)


if __name__ == "__main__":
    main()
