#!/bin/sh
# bench/peers/install.sh: the agent-sandbox peers of issue 15, from the npm
# registry, into bench/peers/node_modules (versions pinned by
# package-lock.json; `npm ci` installs exactly those).  Bench only: the
# tests never need them.  sandbox-runtime also needs ripgrep and socat
# (Debian packages, bench/setup.sh).
set -eu
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
    echo "bench/peers: no npm: the peers are left out" >&2
    exit 0
fi
if [ -x node_modules/.bin/srt ] && [ -x node_modules/.bin/codex ]; then
    echo "bench/peers: installed"
    exit 0
fi
timeout 600 npm ci --no-audit --no-fund ||
    echo "bench/peers: npm ci failed: the peers are left out" >&2
