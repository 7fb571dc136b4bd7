#!/usr/bin/env bash
# Loads a model with more than 2 GiB of weights on WebGPU in headless Chromium and checks its
# greedy reply against the native engine (web/tests/big-model.test.mjs): DeepSeek-R1-Distill-
# Qwen-1.5B's decoder with random weights as a transformers.js fp16 ONNX repository with
# external data (scripts/make_big_onnx.py, cached under ${AKARI_CACHE:-~/.cache/akari}/onnx;
# the first run exports it, which needs the fixtures' Python environments, about 12 GB of
# memory and half an hour on two cores). Not part of the test suite: SwiftShader, Chromium's
# CPU implementation of WebGPU, takes minutes to run a model of this size.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/browser-env.sh
bash scripts/build-web.sh >/dev/null
cargo build --release -p akari-cli
export AKARI_BIN="$PWD/target/release/akari"
AKARI_BIG_MODEL="$(.venv/bin/python scripts/make_big_onnx.py | tail -1)"
export AKARI_BIG_MODEL
node --test --test-reporter=spec web/tests/big-model.test.mjs
