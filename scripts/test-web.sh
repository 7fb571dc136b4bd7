#!/usr/bin/env bash
# Browser tests: builds the bundle (scripts/build-web.sh) and the native `akari`, installs
# Chromium (Debian package) and playwright-core (npm, under ${AKARI_CACHE:-~/.cache/akari}),
# then runs web/tests/*.test.mjs in headless Chromium. Screenshots go to
# target/web-test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${AKARI_CACHE:-$HOME/.cache/akari}"
NPM_DIR="$CACHE/npm"

if [ -z "${CHROMIUM:-}" ]; then
    CHROMIUM=$(command -v chromium || true)
    if [ -z "$CHROMIUM" ]; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
        CHROMIUM=$(command -v chromium)
    fi
fi
export CHROMIUM

if [ ! -d "$NPM_DIR/node_modules/playwright-core" ]; then
    mkdir -p "$NPM_DIR"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent playwright-core@1
fi
export AKARI_NPM="$NPM_DIR"

AKARI_MODEL="${AKARI_MODEL:-$(bash scripts/fetch-smollm2.sh)}"
export AKARI_MODEL

bash scripts/build-web.sh >/dev/null
cargo build --release -p akari-cli
export AKARI_BIN="$PWD/target/release/akari"
export AKARI_WEB_ARTIFACTS="$PWD/target/web-test-artifacts"

node --test --test-reporter=spec web/tests/browser.test.mjs crates/akari-app/tests/browser.test.mjs
