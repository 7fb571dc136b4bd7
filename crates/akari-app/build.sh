#!/usr/bin/env bash
# Builds the chat UI into the web bundle: OUT/app/akari_app.js + akari_app_bg.wasm,
# OUT/index.html and the files in static/. OUT is the first argument, target/web by default.
# Installs what it needs (the wasm32 target; wasm-bindgen-cli at the version in Cargo.lock,
# cached under ${AKARI_CACHE:-~/.cache/akari}). Set WASM_BINDGEN to use another binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/web}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
cache="${AKARI_CACHE:-$HOME/.cache/akari}"

rustup target list --installed | grep -q wasm32-unknown-unknown ||
    rustup target add wasm32-unknown-unknown

# The CLI must match the wasm-bindgen crate exactly.
version="$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' "$root/Cargo.lock")"
bindgen="${WASM_BINDGEN:-}"
if [ -z "$bindgen" ]; then
    if command -v wasm-bindgen >/dev/null 2>&1 && [ "$(wasm-bindgen --version)" = "wasm-bindgen $version" ]; then
        bindgen=wasm-bindgen
    else
        bindgen="$cache/tools/wasm-bindgen-$version/bin/wasm-bindgen"
        [ -x "$bindgen" ] ||
            cargo install wasm-bindgen-cli --version "$version" --root "$cache/tools/wasm-bindgen-$version"
    fi
fi

# No debug info in the browser build: it would be most of the download.
CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo build --release --manifest-path "$root/Cargo.toml" -p akari-app --target wasm32-unknown-unknown
mkdir -p "$out/app"
"$bindgen" --target web --no-typescript --out-dir "$out/app" \
    "$target_dir/wasm32-unknown-unknown/release/akari_app.wasm"
cp "$here/index.html" "$out/"
cp -r "$here/static/." "$out/"
echo "akari-app: $out/index.html, $out/app/ ($(du -sh "$out/app" | cut -f1))"
