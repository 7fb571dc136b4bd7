# Sourced by the scripts that drive headless Chromium (scripts/test-web.sh,
# scripts/bench/web/bench.sh): installs Debian's Chromium when none is on PATH and
# playwright-core under ${AKARI_CACHE:-~/.cache/akari}/npm, then exports CHROMIUM (the
# browser) and AKARI_NPM (the folder whose node_modules holds playwright-core).

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

AKARI_NPM="${AKARI_CACHE:-$HOME/.cache/akari}/npm"
if [ ! -d "$AKARI_NPM/node_modules/playwright-core" ]; then
    mkdir -p "$AKARI_NPM"
    npm install --prefix "$AKARI_NPM" --no-audit --no-fund --silent playwright-core@1
fi
export AKARI_NPM
