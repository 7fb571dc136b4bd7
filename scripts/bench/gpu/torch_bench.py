"""PyTorch transformers (fp16, eager, CUDA) on a config.json's architecture with random
weights: prefill tokens/s for a prompt, decode tokens/s after a context, and the card's
device-to-device copy bandwidth. Prints one JSON object.

    python3 torch_bench.py CONFIG.json
"""

import json
import sys
import time

import torch
import transformers


def timed(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def main() -> None:
    cfg = json.load(open(sys.argv[1]))
    dev = torch.device("cuda")
    out = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "transformers": transformers.__version__}

    # Copy bandwidth: bytes read + written per second, as the memory floor's yardstick.
    buf = torch.empty(2 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(buf)
    t = timed(lambda: dst.copy_(buf), 10)
    out["copy_bandwidth_gb_s"] = 2 * buf.numel() / t / 1e9
    del buf, dst

    config = transformers.Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")})
    with torch.device(dev):
        model = transformers.Qwen2ForCausalLM(config).to(torch.float16).eval()
    gen = torch.Generator(device=dev).manual_seed(0)
    vocab = cfg["vocab_size"]

    @torch.inference_mode()
    def prefill(n: int):
        ids = torch.randint(0, vocab, (1, n), device=dev, generator=gen)
        return model(ids, use_cache=True)

    @torch.inference_mode()
    def decode_rate(ctx: int, steps: int) -> float:
        r = prefill(ctx)
        cache = r.past_key_values
        tok = r.logits[:, -1:].argmax(-1)
        for _ in range(3):
            r = model(tok, past_key_values=cache, use_cache=True)
            tok = r.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            r = model(tok, past_key_values=cache, use_cache=True)
            tok = r.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        return steps / (time.perf_counter() - t)

    out["prefill_512_tok_s"] = 512 / timed(lambda: prefill(512), 5)
    out["decode_128_tok_s"] = decode_rate(128, 64)
    out["decode_2048_tok_s"] = decode_rate(2048, 64)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
