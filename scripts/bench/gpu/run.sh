#!/usr/bin/env bash
# GPU speed run for issue-style comparisons, on a machine with an NVIDIA card, CUDA, PyTorch
# and Vulkan. Run from the repository root after scripts/bench/gpu/prepare.sh has filled
# .bench/ (the akari binary, llama.cpp's source, Vulkan loader packages):
#
#   bash scripts/bench/gpu/run.sh setup   # build llama.cpp (CUDA), write the random models
#   bash scripts/bench/gpu/run.sh bench   # every measurement, results in $OUT (or ./bench-out)
#   bash scripts/bench/gpu/run.sh akari   # akari alone, once per AKARI_GPU_SUBMIT_EVERY value
#                                          # in $SUBMIT_EVERY (e.g. "0 32 64"), for tuning
#   bash scripts/bench/gpu/run.sh ab      # decode A/B of $VARIANTS, interleaved (below)
#
# `ab` compares builds and switches on one warm machine: $VARIANTS is a space-separated list
# of name:binary:VAR=value,VAR=value (the last part may be empty), each run in turn, $ROUNDS
# times (default 2), at each prompt length of $CONTEXTS (default "128 2048") and each model
# of $KINDS (default q4_0); one line a run in $OUT/ab.txt. For example
#   VARIANTS="main:.bench/akari: old:.bench/akari-old: noswizzle:.bench/akari:AKARI_GPU_SWIZZLE=0,AKARI_GPU_KV_CACHE=f32"
#
# `bench` runs `setup` first when its products are missing. Work files go to $WORK
# (default /tmp/akari-gpu-bench), so a second call on the same machine reuses them.
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=scripts/bench/gpu
WORK="${WORK:-/tmp/akari-gpu-bench}"
OUT="${OUT:-$PWD/bench-out}"
CONFIG="$HERE/deepseek-r1-distill-qwen-1.5b.json"
AKARI="${AKARI:-.bench/akari}"
mkdir -p "$WORK" "$OUT"
log() { echo "[$(date +%T)] $*" >&2; }

vulkan() {
    if ! ldconfig -p | grep -q libvulkan.so.1; then
        for f in .bench/gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
}

models() {
    for kind in ${KINDS:-q4_0 f16}; do
        if [ ! -f "$WORK/model-$kind.gguf" ]; then
            log "writing the $kind model"
            PYTHONPATH=.bench/gguf-py python3 "$HERE/make_model.py" "$CONFIG" \
                "$WORK/model-$kind.gguf.tmp" "$kind" && mv "$WORK/model-$kind.gguf.tmp" "$WORK/model-$kind.gguf" &
        fi
    done
    wait
}

akari_runs() {
    local m="$1" tag="$2"
    "$AKARI" bench "$m" --device gpu --prompt-tokens 512 --gen-tokens 8 --repeats 3 --json | sed "s/^{/{\"tag\":\"$tag\",/"
    "$AKARI" bench "$m" --device gpu --prompt-tokens 128 --gen-tokens 64 --repeats 3 --json | sed "s/^{/{\"tag\":\"$tag\",/"
    "$AKARI" bench "$m" --device gpu --prompt-tokens 2048 --gen-tokens 64 --repeats 2 --json | sed "s/^{/{\"tag\":\"$tag\",/"
}

akari_only() {
    KINDS="${KINDS:-q4_0}" models
    vulkan
    for kind in ${KINDS:-q4_0}; do
        for every in ${SUBMIT_EVERY:-64}; do
            log "akari $kind, submit every $every"
            AKARI_GPU_SUBMIT_EVERY=$every akari_runs "$WORK/model-$kind.gguf" "$kind-submit$every" | tee -a "$OUT/akari-tuning.jsonl"
        done
    done
}

ab() {
    models
    vulkan
    for round in $(seq "${ROUNDS:-2}"); do
        for kind in ${KINDS:-q4_0}; do
            for p in ${CONTEXTS:-128 2048}; do
                for v in ${VARIANTS:-main:$AKARI:}; do
                    IFS=: read -r name bin vars <<<"$v"
                    local tok
                    # shellcheck disable=SC2086 # the switches split on purpose
                    tok=$(env ${vars//,/ } "$bin" bench "$WORK/model-$kind.gguf" --device gpu \
                        --prompt-tokens "$p" --gen-tokens 64 --repeats 3 --json |
                        grep -o '"decode_tok_s":[0-9.]*' | cut -d: -f2) || tok=failed
                    echo "$kind context $p $name round $round: $tok tok/s" | tee -a "$OUT/ab.txt"
                done
            done
        done
    done
}

setup() {
    local lc="$WORK/llama.cpp"
    if [ ! -x "$lc/build/bin/llama-bench" ]; then
        log "building llama.cpp (CUDA, sm_90)"
        rm -rf "$lc" && mkdir -p "$lc"
        tar xzf .bench/llama.cpp.tar.gz -C "$lc" --strip-components=1
        (cmake -S "$lc" -B "$lc/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
            -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >"$WORK/cmake.log" 2>&1 &&
            ninja -C "$lc/build" llama-bench >"$WORK/build.log" 2>&1) &
        local build=$!
    fi
    models
    wait
    [ -x "$lc/build/bin/llama-bench" ] || { tail -30 "$WORK/build.log" >&2; exit 1; }
    log "setup done"
}

bench() {
    [ -x "$WORK/llama.cpp/build/bin/llama-bench" ] && [ -f "$WORK/model-f16.gguf" ] || setup
    vulkan
    local lb="$WORK/llama.cpp/build/bin/llama-bench"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/card.txt"
    "$AKARI" info "$WORK/model-q4_0.gguf" --device gpu 2>&1 | tail -3 || true
    for kind in q4_0 f16; do
        m="$WORK/model-$kind.gguf"
        log "akari $kind"
        akari_runs "$m" "$kind" | tee "$OUT/akari-$kind.jsonl"
        log "llama.cpp $kind"
        "$lb" -m "$m" -ngl 99 -p 512 -n 0 -r 5 -o jsonl | tee "$OUT/llamacpp-$kind.jsonl"
        "$lb" -m "$m" -ngl 99 -p 0 -n 64 -d 128,2048 -r 5 -o jsonl | tee -a "$OUT/llamacpp-$kind.jsonl"
    done
    log "pytorch fp16"
    python3 "$HERE/torch_bench.py" "$CONFIG" | tee "$OUT/torch.json"
    PYTHONPATH=.bench/gguf-py python3 "$HERE/bytes_per_token.py" "$WORK/model-q4_0.gguf" "$WORK/model-f16.gguf" | tee "$OUT/bytes.json"
}

case "${1:-bench}" in
setup) setup ;;
akari) akari_only ;;
ab) ab ;;
models) models ;;
bench) bench ;;
*) echo "usage: $0 [setup|bench|akari|ab|models]" >&2; exit 2 ;;
esac
