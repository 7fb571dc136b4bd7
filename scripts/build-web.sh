#!/usr/bin/env bash
# Builds the browser bundle into target/web/ (what `akari serve` serves by default):
#   target/web/pkg/          the engine, one thread (any page)
#   target/web/pkg-threads/  the engine on Web Worker threads (cross-origin isolated pages)
#   target/web/*.js, *.d.ts  the JavaScript API and its worker
#   target/web/index.html    the chat app when crates/akari-app exists, else the test page
#   target/web/test.html     the engine's bare test page (web/index.html)
#   target/web/app/          the chat app's wasm-bindgen output (when crates/akari-app exists)
# Installs what it needs (rustup target and rust-src, wasm-bindgen-cli at the version in
# Cargo.lock, binaryen's wasm-opt from npm) under ${AKARI_CACHE:-~/.cache/akari}.
# AKARI_WEB_THREADS=0 skips the threaded build.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${AKARI_CACHE:-$HOME/.cache/akari}"
OUT=target/web
TARGET=wasm32-unknown-unknown

rustup target list --installed | grep -q "^$TARGET\$" || rustup target add "$TARGET"

# wasm-bindgen-cli must match the wasm-bindgen crate exactly.
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[" ]/, "", $0); sub("version=", "", $0); print; exit }' Cargo.lock)
WB_ROOT="$CACHE/tools/wasm-bindgen-$WB_VERSION"
WASM_BINDGEN="$WB_ROOT/bin/wasm-bindgen"
if [ ! -x "$WASM_BINDGEN" ]; then
    echo "build-web: installing wasm-bindgen-cli $WB_VERSION" >&2
    # Not --locked: one of its locked dependency versions is no longer served.
    cargo install wasm-bindgen-cli --version "$WB_VERSION" --root "$WB_ROOT"
fi

# wasm-opt shrinks and speeds up the output; the build still works without it.
NPM_DIR="$CACHE/npm"
WASM_OPT="$NPM_DIR/node_modules/.bin/wasm-opt"
if [ ! -x "$WASM_OPT" ] && command -v npm >/dev/null; then
    mkdir -p "$NPM_DIR"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent binaryen@132.0.0 >&2 || true
fi

# simd128 is in every browser akari targets (Chrome 91, Firefox 89, Safari 16.4).
ST_FLAGS="-C target-feature=+simd128"
RUSTFLAGS="$ST_FLAGS" cargo build --profile wasm-release -p akari-web --target "$TARGET" \
    --target-dir target/wasm-st

rm -rf "$OUT/pkg" "$OUT/pkg-threads"
mkdir -p "$OUT"
"$WASM_BINDGEN" --target web --out-dir "$OUT/pkg" \
    "target/wasm-st/$TARGET/wasm-release/akari_web.wasm"

if [ "${AKARI_WEB_THREADS:-1}" != "0" ]; then
    # Threads need std rebuilt with atomics: nightly flags on the stable toolchain.
    rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
    MT_FLAGS=(
        "-C" "target-feature=+atomics,+bulk-memory,+simd128"
        "-C" "link-arg=--shared-memory"
        "-C" "link-arg=--max-memory=4294967296"
        "-C" "link-arg=--import-memory"
        "-C" "link-arg=--export=__wasm_init_tls"
        "-C" "link-arg=--export=__tls_size"
        "-C" "link-arg=--export=__tls_align"
        "-C" "link-arg=--export=__tls_base"
    )
    RUSTFLAGS="${MT_FLAGS[*]}" RUSTC_BOOTSTRAP=1 cargo build --profile wasm-release \
        -p akari-web --features threads --target "$TARGET" --target-dir target/wasm-mt \
        -Z build-std=panic_abort,std
    "$WASM_BINDGEN" --target web --out-dir "$OUT/pkg-threads" \
        "target/wasm-mt/$TARGET/wasm-release/akari_web.wasm"
fi

if [ -x "$WASM_OPT" ]; then
    for pkg in "$OUT/pkg" "$OUT/pkg-threads"; do
        w="$pkg/akari_web_bg.wasm"
        [ -f "$w" ] || continue
        "$WASM_OPT" -O3 --enable-simd --enable-threads --enable-bulk-memory \
            --enable-nontrapping-float-to-int --enable-sign-ext --enable-mutable-globals \
            "$w" -o "$w.opt" && mv "$w.opt" "$w"
    done
fi

cp web/akari.js web/akari.d.ts web/cache.js web/worker.js "$OUT/"

if [ -d crates/akari-app ]; then
    RUSTFLAGS="$ST_FLAGS" cargo build --profile wasm-release -p akari-app --target "$TARGET" \
        --target-dir target/wasm-st
    rm -rf "$OUT/app"
    "$WASM_BINDGEN" --target web --out-dir "$OUT/app" \
        "target/wasm-st/$TARGET/wasm-release/akari_app.wasm"
    if [ -f crates/akari-app/index.html ]; then
        cp crates/akari-app/index.html "$OUT/index.html"
    fi
    [ -d crates/akari-app/static ] && cp -r crates/akari-app/static/. "$OUT/"
else
    cp web/index.html "$OUT/index.html"
fi
# The engine's bare test page, which the browser tests of the JS API drive.
cp web/index.html "$OUT/test.html"

du -sh "$OUT"/pkg*/akari_web_bg.wasm >&2
echo "$OUT"
