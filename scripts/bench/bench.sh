#!/usr/bin/env bash
# Compare akari's speed with llama.cpp's (llama-bench) on the same model and thread count.
#
# Usage: scripts/bench/bench.sh [-m MODEL] [-t THREADS] [-r ROUNDS] [-p PROMPT] [-n GEN] [-a ACT] [-o OUT.md]
#   MODEL    default: SmolLM2-135M-Instruct Q4_1 (scripts/fetch-smollm2.sh)
#   THREADS  default: 2          ROUNDS default: 3 (interleaved: akari, llama.cpp, akari, ...)
#   PROMPT   default: 128        GEN    default: 64
#   ACT      akari --activations (int8 = llama.cpp's arithmetic, int16); default: akari's default
#   OUT.md   also write the markdown table there
#
# Each round runs `akari bench --repeats 1` (one warm-up + one measured run) and
# `llama-bench -r 1` (one warm-up + one measured run) under /usr/bin/time -v; the table
# reports medians over the rounds. akari's decode follows its prompt, so llama-bench's decode
# is run at depth PROMPT (`-d PROMPT`) for a like-for-like number.
# Environment: AKARI (akari binary, default target/release/akari), LLAMA_BIN (llama.cpp bin
# dir, default: scripts/bench/build-llama-cpp.sh, which builds it if needed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
MODEL="" THREADS=2 ROUNDS=3 PROMPT=128 GEN=64 OUT="" ACT=()
while getopts "m:t:r:p:n:a:o:h" opt; do
    case "$opt" in
        m) MODEL="$OPTARG" ;; t) THREADS="$OPTARG" ;; r) ROUNDS="$OPTARG" ;;
        p) PROMPT="$OPTARG" ;; n) GEN="$OPTARG" ;; o) OUT="$OPTARG" ;;
        a) ACT=(--activations "$OPTARG") ;;
        *) sed -n '2,17p' "$0"; exit 2 ;;
    esac
done
[ -n "$MODEL" ] || MODEL="$(bash "$REPO/scripts/fetch-smollm2.sh")"
AKARI="${AKARI:-$REPO/target/release/akari}"
LLAMA_BIN="${LLAMA_BIN:-$(bash "$HERE/build-llama-cpp.sh")}"
LLAMA_BENCH="$LLAMA_BIN/llama-bench"
TIME=/usr/bin/time
if [ -z "${AKARI_SET:-}" ] && [ "$AKARI" = "$REPO/target/release/akari" ]; then
    (cd "$REPO" && cargo build --release --quiet --bin akari)
fi
[ -x "$AKARI" ] || { echo "bench: $AKARI not found (cargo build --release)" >&2; exit 1; }
[ -x "$LLAMA_BENCH" ] || { echo "bench: $LLAMA_BENCH not found" >&2; exit 1; }
[ -x "$TIME" ] || { apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time; }; } >&2
[ -x "$TIME" ] || { echo "bench: $TIME not found (apt-get install time)" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Other processes on the machine distort the numbers (llama.cpp's spinning OpenMP threads
# suffer most): the 1-minute load average is recorded before each round and reported.
read -r LOAD0 _ < /proc/loadavg
if awk -v l="$LOAD0" -v t="$THREADS" 'BEGIN { exit !(l > 0.5) }'; then
    echo "bench: warning: load average is $LOAD0 before starting; results may be distorted" >&2
fi
for i in $(seq 1 "$ROUNDS"); do
    read -r load _ < /proc/loadavg
    echo "$load" >> "$WORK/load"
    echo "bench: round $i/$ROUNDS: akari" >&2
    "$TIME" -v -o "$WORK/akari-$i.time" "$AKARI" bench "$MODEL" --threads "$THREADS" \
        --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --repeats 1 "${ACT[@]}" --json > "$WORK/akari-$i.json"
    echo "bench: round $i/$ROUNDS: llama-bench" >&2
    "$TIME" -v -o "$WORK/llama-$i.time" "$LLAMA_BENCH" -m "$MODEL" -t "$THREADS" \
        -p "$PROMPT" -n "$GEN" -d "0,$PROMPT" -r 1 -o json > "$WORK/llama-$i.json" 2> "$WORK/llama-$i.err" \
        || { cat "$WORK/llama-$i.err" >&2; exit 1; }
done

python3 - "$WORK" "$ROUNDS" "$PROMPT" "$GEN" "$THREADS" "$MODEL" "$LLAMA_BIN" > "$WORK/table.md" <<'PY'
import json, re, statistics, sys, os
work, rounds, P, G, T, model, llama_bin = sys.argv[1:8]
rounds, P, G = int(rounds), int(P), int(G)

def rss_kib(path):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(path).read())
    return int(m.group(1))

ak = {"pp": [], "tg": [], "rss": [], "rss_self": []}
ll = {"pp": [], "tg": [], "tg_d": [], "rss": []}
info = {}
for i in range(1, rounds + 1):
    a = json.load(open(f"{work}/akari-{i}.json"))
    ak["pp"].append(a["prefill_tok_s"]); ak["tg"].append(a["decode_tok_s"])
    ak["rss"].append(rss_kib(f"{work}/akari-{i}.time") * 1024)
    ak["rss_self"].append(a.get("peak_rss_bytes", 0))
    info["akari_backend"] = a.get("backend", "?")
    for r in json.load(open(f"{work}/llama-{i}.json")):
        d = r.get("n_depth", 0)
        if r["n_prompt"] == P and r["n_gen"] == 0 and d == 0:
            ll["pp"].append(r["avg_ts"])
        elif r["n_gen"] == G and r["n_prompt"] == 0 and d == 0:
            ll["tg"].append(r["avg_ts"])
        elif r["n_gen"] == G and r["n_prompt"] == 0 and d == P:
            ll["tg_d"].append(r["avg_ts"])
        info["llama"] = (f"llama.cpp {r.get('build_commit','?')} (build {r.get('build_number','?')}), "
                         f"{r.get('backends','?')}, type_k {r.get('type_k','?')}, flash_attn {r.get('flash_attn','?')}, "
                         f"n_batch {r.get('n_batch','?')}, cpu: {r.get('cpu_info','?')}")
    ll["rss"].append(rss_kib(f"{work}/llama-{i}.time") * 1024)

med = lambda xs: statistics.median(xs) if xs else float("nan")
mib = lambda b: b / 2**20
print(f"Model `{os.path.basename(model)}`, {T} threads, prompt {P} tokens, {G} generated, "
      f"median of {rounds} interleaved rounds (each: 1 warm-up + 1 measured run).\n")
print("| | akari | llama.cpp | akari / llama.cpp |")
print("|---|---:|---:|---:|")
def row(name, a, l, fmt="{:.1f}"):
    print(f"| {name} | {fmt.format(a)} | {fmt.format(l)} | {a / l:.2f} |")
row(f"prefill (pp{P}) tok/s", med(ak["pp"]), med(ll["pp"]))
row(f"decode tok/s ({G} tokens after a {P}-token prompt)", med(ak["tg"]), med(ll["tg_d"]))
row("peak RSS MiB (/usr/bin/time -v)", mib(med(ak["rss"])), mib(med(ll["rss"])))
print()
print(f"- akari: {info.get('akari_backend')}; its own peak_rss_bytes: {mib(med(ak['rss_self'])):.1f} MiB. "
      f"Both decode {G} greedy tokens after the {P}-token prompt (llama-bench `-d {P}`); "
      f"llama-bench from an empty cache gave {med(ll['tg']):.1f} tok/s.")
print(f"- {info.get('llama')}")
loads = open(f"{work}/load").read().split()
print(f"- 1-minute load average before each round: {', '.join(loads)} (nproc {os.cpu_count()})")
print(f"- raw per-round values: akari pp {[round(x,1) for x in ak['pp']]}, tg {[round(x,1) for x in ak['tg']]}; "
      f"llama.cpp pp {[round(x,1) for x in ll['pp']]}, tg@0 {[round(x,1) for x in ll['tg']]}, "
      f"tg@{P} {[round(x,1) for x in ll['tg_d']]}")
PY
cat "$WORK/table.md"
if [ -n "$OUT" ]; then cp "$WORK/table.md" "$OUT"; fi
