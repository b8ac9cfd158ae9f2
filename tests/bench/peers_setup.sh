#!/usr/bin/env bash
# Set up the peer systems of tests/bench/peers (Redis, the BullMQ peer's node_modules, the Celery peer's venv).
# Idempotent and fast when already done. Never fails the caller: a step that cannot be done prints a note and
# the benchmark skips that peer. Everything it builds lives under .state/peers (git-ignored).
set -u
cd "$(dirname "$0")/../.." || exit 0
STATE=.state/peers
mkdir -p "$STATE"
note() { echo "peers_setup: $*" >&2; }

# 1. redis-server (both peers' broker).
if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"
    else SUDO="none"; fi
    if [ "$SUDO" = none ]; then
        note "redis-server missing and neither root nor sudo: the BullMQ and Celery peers will be skipped"
    else
        note "installing redis-server with apt-get"
        $SUDO apt-get install -y -q redis-server >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q redis-server >/dev/null 2>&1; } \
            || note "apt-get install redis-server failed: the BullMQ and Celery peers will be skipped"
    fi
fi

# 2. The BullMQ peer: a copy of tests/bench/peers/bullmq with its node_modules (and npm's package-lock) in .state.
if command -v node >/dev/null && command -v npm >/dev/null; then
    src=tests/bench/peers/bullmq dst=$STATE/bullmq
    mkdir -p "$dst"
    if ! cmp -s "$src/package.json" "$dst/package.json"; then rm -rf "$dst/node_modules" "$dst/package-lock.json"; fi
    cp "$src/package.json" "$src/run.js" "$src/worker.js" "$dst/"
    # the fairness driver (ours, not a copied peer) runs the unchanged workers; it needs their node_modules
    cp tests/bench/peers_fairness/fairness.js "$dst/"
    if [ ! -f "$dst/node_modules/.installed" ]; then
        note "npm install in $dst"
        if (cd "$dst" && npm install --no-audit --no-fund --loglevel=error >/dev/null); then
            touch "$dst/node_modules/.installed"
        else
            rm -rf "$dst/node_modules"
            note "npm install failed: the BullMQ peer will be skipped"
        fi
    fi
else
    note "node/npm missing: the BullMQ peer will be skipped"
fi

# 3. The Celery peer's (and the image server's) Python environment.
VENV=$STATE/venv
if [ ! -f "$VENV/.installed" ]; then
    PY=$(command -v python3.11 || command -v python3)
    note "creating $VENV"
    rm -rf "$VENV"
    if "$PY" -m venv "$VENV" \
        && "$VENV/bin/pip" install -q celery redis requests packaging 'psycopg[binary]' aiohttp pillow; then
        touch "$VENV/.installed"
    else
        rm -rf "$VENV"
        note "could not build $VENV: the Celery peer will be skipped"
    fi
fi
exit 0
