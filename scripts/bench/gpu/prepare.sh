#!/usr/bin/env bash
# Fills .bench/ (git-ignored) with what scripts/bench/gpu/run.sh needs on the GPU machine:
# a stripped release akari, llama.cpp's source (from the llama-cpp-python sdist that
# scripts/bench/build-llama-cpp.sh caches), gguf-py, and the Vulkan loader packages.
set -euo pipefail
cd "$(dirname "$0")/../../.."
CACHE="${AKARI_CACHE:-$HOME/.cache/akari}"
mkdir -p .bench/gl
grep -qx '/.bench/' .git/info/exclude 2>/dev/null || echo '/.bench/' >>"$(git rev-parse --git-common-dir)/info/exclude"
cargo build --release -p akari-cli
strip -o .bench/akari target/release/akari
bash scripts/bench/build-llama-cpp.sh >/dev/null
src="$(ls -d "$CACHE"/llama.cpp/src-*/vendor/llama.cpp | head -1)"
tar czf .bench/llama.cpp.tar.gz -C "$(dirname "$src")" \
    --exclude=llama.cpp/models --exclude=llama.cpp/docs --exclude=llama.cpp/tests \
    --exclude=llama.cpp/benches --exclude=llama.cpp/media --exclude=llama.cpp/tools/server/public \
    --exclude=llama.cpp/tools/server/webui --exclude=llama.cpp/examples/*/*.gguf llama.cpp
rm -rf .bench/gguf-py && cp -r "$src/gguf-py" .bench/gguf-py
if ! ls .bench/gl/libvulkan1_*.deb >/dev/null 2>&1; then
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    apt-get $o update -qq
    (cd .bench/gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh .bench
