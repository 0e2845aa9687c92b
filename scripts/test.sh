#!/usr/bin/env bash
# Runs every test of kinetail on a fresh Debian machine with Rust:
# installs what the tests need (Node.js and the local Kinesis-compatible
# server, kinesalite), then runs the unit and integration tests. The
# integration tests start their own kinesalite on a free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "== installing Node.js and npm (Debian packages)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi

echo "== installing kinesalite (tests/server)"
npm ci --prefix tests/server --no-audit --no-fund --loglevel=error

echo "== cargo test"
cargo test --locked --all-targets -- --test-threads "${KINETAIL_TEST_THREADS:-2}"
