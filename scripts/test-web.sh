#!/usr/bin/env bash
# Browser tests: builds the bundle (scripts/build-web.sh) and the native `akari`, installs
# Chromium (Debian package) and playwright-core (npm, under ${AKARI_CACHE:-~/.cache/akari}),
# then runs the WebNN stand-in's op tests, the JS API tests (web/tests; the WebNN devices on the
# stand-in) and the chat app tests (crates/akari-app/tests) in headless Chromium. Screenshots go to
# target/web-test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/browser-env.sh

AKARI_MODEL="${AKARI_MODEL:-$(bash scripts/fetch-smollm2.sh)}"
export AKARI_MODEL

bash scripts/build-web.sh >/dev/null
cargo build --release -p akari-cli
export AKARI_BIN="$PWD/target/release/akari"
export AKARI_WEB_ARTIFACTS="$PWD/target/web-test-artifacts"

# The WebNN stand-in's op-by-op cases: graphs the WebNN backend records, with the CPU
# backend's results on the same inputs.
cargo run --release -p akari-webnn --example webnn-cases -- target/webnn-cases.json
export AKARI_WEBNN_CASES="$PWD/target/webnn-cases.json"

node --test --test-reporter=spec web/tests/webnn-ops.test.mjs web/tests/browser.test.mjs \
    web/tests/webnn.test.mjs crates/akari-app/tests/browser.test.mjs
