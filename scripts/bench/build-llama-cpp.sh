#!/usr/bin/env bash
# Build llama.cpp (CPU only) from the llama.cpp copy vendored in the PyPI sdist
# of llama-cpp-python, so that nothing but PyPI is needed.
#
# Idempotent: caches everything under ${AKARI_CACHE:-$HOME/.cache/akari}/llama.cpp/
#   sdist/     the downloaded llama_cpp_python-<ver>.tar.gz
#   src/       the extracted sdist (llama.cpp is in src/vendor/llama.cpp)
#   tools/     a venv with cmake and ninja from PyPI (only if not on PATH)
#   build/     the CMake build; binaries and shared libraries in build/bin
#   VERSION    llama-cpp-python version and llama.cpp commit
#
# The build uses shared libraries (libllama.so, libggml*.so in build/bin) so
# the Python bindings from the same sdist (src/llama_cpp) can load them with
# LLAMA_CPP_LIB_PATH=<bin dir>; see scripts/llamacpp_reference.py.
#
# Prints the bin directory (and nothing else) on stdout; progress on stderr.
set -euo pipefail

LCP_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${AKARI_CACHE:-$HOME/.cache/akari}"
ROOT="$CACHE/llama.cpp"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-$(nproc)}"
TARGETS="${LLAMA_TARGETS:-llama-bench llama-simple}"

SDIST_DIR="$ROOT/sdist"
SRC="$ROOT/src-$LCP_VERSION"
BUILD="$ROOT/build-$LCP_VERSION"
BIN="$BUILD/bin"
STAMP="$BUILD/.akari-built"

log() { echo "build-llama-cpp: $*" >&2; }

all_built() {
    [ -f "$STAMP" ] || return 1
    [ "$(cat "$STAMP")" = "$TARGETS" ] || return 1
    local t
    for t in $TARGETS; do [ -x "$BIN/$t" ] || return 1; done
}

if all_built; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$SDIST_DIR"

# 1. The sdist. llama-cpp-python publishes no wheels on PyPI, so a plain
#    `pip download` fetches the sdist; --no-binary names only this package so
#    the build backend (scikit-build-core) comes as a wheel for the metadata
#    step (`--no-binary :all:` would build cmake/ninja from source: very slow).
TARBALL="$SDIST_DIR/llama_cpp_python-$LCP_VERSION.tar.gz"
if [ ! -f "$TARBALL" ]; then
    log "downloading llama-cpp-python==$LCP_VERSION sdist from PyPI"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==$LCP_VERSION" -d "$SDIST_DIR" >&2
fi
[ -f "$TARBALL" ] || { log "$TARBALL not found after download"; exit 1; }

# 2. Extract.
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
    log "extracting $TARBALL"
    rm -rf "$SRC" "$SRC.tmp"
    mkdir -p "$SRC.tmp"
    tar -xzf "$TARBALL" -C "$SRC.tmp" --strip-components=1
    mv "$SRC.tmp" "$SRC"
fi
LLAMA_SRC="$SRC/vendor/llama.cpp"

# llama.cpp commit: the sdist carries the submodule's git dir.
COMMIT=""
if [ -f "$SRC/.git/modules/vendor/llama.cpp/HEAD" ]; then
    COMMIT=$(head -c 40 "$SRC/.git/modules/vendor/llama.cpp/HEAD")
fi
printf 'llama-cpp-python %s\nllama.cpp %s\n' "$LCP_VERSION" "${COMMIT:-unknown}" > "$ROOT/VERSION"

# 3. cmake / ninja (from PyPI when not on PATH).
CMAKE=$(command -v cmake || true)
NINJA=$(command -v ninja || true)
if [ -z "$CMAKE" ] || [ -z "$NINJA" ]; then
    TOOLS="$ROOT/tools"
    if [ ! -x "$TOOLS/bin/cmake" ] || [ ! -x "$TOOLS/bin/ninja" ]; then
        log "installing cmake and ninja from PyPI into $TOOLS"
        "$PYTHON" -m venv "$TOOLS"
        "$TOOLS/bin/python" -m pip install --quiet --only-binary :all: cmake ninja >&2
    fi
    [ -n "$CMAKE" ] || CMAKE="$TOOLS/bin/cmake"
    [ -n "$NINJA" ] || NINJA="$TOOLS/bin/ninja"
fi

# 4. Configure and build only the needed targets.
start=$(date +%s)
if [ ! -f "$BUILD/build.ninja" ]; then
    log "configuring in $BUILD"
    "$CMAKE" -S "$LLAMA_SRC" -B "$BUILD" -G Ninja \
        -DCMAKE_MAKE_PROGRAM="$NINJA" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=ON \
        -DGGML_NATIVE=ON \
        -DGGML_OPENMP=ON \
        -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_COMMON=ON \
        -DLLAMA_BUILD_TOOLS=ON \
        -DLLAMA_BUILD_EXAMPLES=ON >&2
fi
log "building $TARGETS with $JOBS jobs"
# shellcheck disable=SC2086
"$CMAKE" --build "$BUILD" --config Release -j "$JOBS" --target $TARGETS >&2
echo "$TARGETS" > "$STAMP"
log "build took $(( $(date +%s) - start ))s; $(tr '\n' ' ' < "$ROOT/VERSION")"
echo "$BIN"
