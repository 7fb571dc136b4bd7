#!/usr/bin/env python3
"""Compare akari's logits/greedy tokens with the llama.cpp and transformers references.

Needs target/release/akari and the reference-llamacpp.json files written by
scripts/llamacpp_reference.py. Standard library + numpy only.

* tiny fixtures: `akari logits model.gguf --tokens <prompt> --steps N-1` (akari feeds its own
  argmax); step i is compared while akari's argmax chain before it equals the chain fed to
  llama.cpp (the transformers chain). Prints max |akari - ref| / (logit range of ref) over
  all compared steps, for ref = llama.cpp and ref = transformers.
* SmolLM2: `akari generate --prompt TEXT --json --max-tokens 48`; prints how many leading
  greedy tokens akari shares with llama.cpp and with transformers per prompt.

Usage: .venv/bin/python scripts/compare_llamacpp.py [--activations int8|int16|default] [--dtype auto]
       [--threads 1] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
AKARI = ROOT / "target" / "release" / "akari"


ACT_ARGS: list[str] = []


def akari_json(args: list[str]) -> dict:
    out = subprocess.run([str(AKARI), *args, *ACT_ARGS], check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / (ref.max() - ref.min()))


def shared(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tiny(args):
    rows = []
    for d in sorted((ROOT / "fixtures" / "tiny").iterdir()):
        lref = d / "reference-llamacpp.json"
        if not lref.exists() or (args.only and d.name not in args.only):
            continue
        L = json.loads(lref.read_text())
        T = json.loads((d / "reference.json").read_text())
        worst_l = worst_t = worst_lt = 0.0
        compared = total = 0
        per_case = {}
        for lc, tc in zip(L["cases"], T["cases"]):
            chain = [s["argmax"] for s in tc["steps"]]
            n = len(chain)
            a = akari_json(["logits", str(d / "model.gguf"), "--dtype", args.dtype, "--threads", str(args.threads),
                            "--tokens", ",".join(map(str, lc["prompt_tokens"])), "--steps", str(n - 1)])
            asteps = a["steps"]
            case_l = 0.0
            for i in range(n):
                total += 1
                if i > 0 and [s["argmax"] for s in asteps[:i]] != chain[:i]:
                    break  # akari fed a different token than llama.cpp/transformers did
                x = np.array(asteps[i]["logits"], dtype=np.float64)
                lg = np.array(lc["steps"][i]["logits"], dtype=np.float64)
                tg = np.array(tc["steps"][i]["logits"], dtype=np.float64)
                case_l = max(case_l, rel(x, lg))
                worst_t = max(worst_t, rel(x, tg))
                worst_lt = max(worst_lt, rel(lg, tg))
                compared += 1
            per_case[lc["name"]] = case_l
            worst_l = max(worst_l, case_l)
        rows.append((d.name, worst_l, worst_t, worst_lt, compared, total, per_case))
    print(f"| fixture | akari vs llama.cpp | akari vs transformers | llama.cpp vs transformers | steps compared | per case (vs llama.cpp) |")
    print("|---|---:|---:|---:|---:|---|")
    for name, wl, wt, wlt, c, t, pc in rows:
        pcs = ", ".join(f"{k} {v:.3%}" for k, v in pc.items())
        print(f"| {name} | {wl:.3%} | {wt:.3%} | {wlt:.3%} | {c}/{t} | {pcs} |")


def smollm2(args):
    L = json.loads((ROOT / "fixtures" / "smollm2" / "reference-llamacpp.json").read_text())
    T = json.loads((ROOT / "fixtures" / "smollm2" / "reference.json").read_text())
    print(f"| prompt | akari tokens | shared with llama.cpp | shared with transformers | llama.cpp vs transformers | prompt ids equal |")
    print("|---|---:|---:|---:|---:|---|")
    for lc, tc in zip(L["cases"], T["cases"]):
        g = akari_json(["generate", "--prompt", lc["prompt"], "--json", "--max-tokens", "48", "--dtype", args.dtype,
                        "--threads", str(args.threads)])
        toks = [int(t) for t in g["tokens"]]
        pt = g.get("prompt_tokens")
        same_prompt = (pt == lc["prompt_tokens"]) if isinstance(pt, list) else f"n={pt}"
        print(f"| {lc['prompt'][:40]} | {len(toks)} | {shared(toks, lc['tokens'])}/{len(lc['tokens'])} | "
              f"{shared(toks, tc['tokens'])}/{len(tc['tokens'])} | {shared(lc['tokens'], tc['tokens'])} | {same_prompt} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--activations", default="int8",
                    help="akari --activations (int8 = llama.cpp's arithmetic; int16; 'default' passes nothing)")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--smollm2", action="store_true")
    args = ap.parse_args()
    both = not (args.tiny or args.smollm2)
    if args.activations != "default":
        ACT_ARGS[:] = ["--activations", args.activations]
    print(f"akari {' '.join(ACT_ARGS) or '(default activations)'}, --dtype {args.dtype}, {args.threads} thread(s)\n")
    if args.tiny or both:
        tiny(args)
    if args.smollm2 or both:
        smollm2(args)


if __name__ == "__main__":
    main()
