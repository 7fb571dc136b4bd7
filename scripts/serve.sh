#!/usr/bin/env bash
# Fetches the default model, builds the web bundle and serves it with `akari serve`
# (http://127.0.0.1:8080 by default; extra arguments go to `akari serve`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch-smollm2.sh >/dev/null
bash scripts/build-web.sh >/dev/null
args=()
# The folder of models in the Hub's layout, where the script that builds it exists.
if [ -f scripts/models-dir.sh ]; then
    args+=(--models "$(bash scripts/models-dir.sh)")
fi
exec cargo run --release -p akari-cli -- serve "${args[@]}" "$@"
