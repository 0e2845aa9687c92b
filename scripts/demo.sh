#!/usr/bin/env bash
# Runs kinetail for real on a fresh Debian machine with Rust: starts a local
# Kinesis-compatible server (kinesalite) on 127.0.0.1:4567, creates the
# stream "demo" with two shards, writes sample logs under /tmp/kinetail-demo,
# runs kinetail on config/demo.toml, and prints what arrived in the stream.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=/tmp/kinetail-demo
PORT=4567
ENDPOINT=http://127.0.0.1:$PORT

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
npm ci --prefix tests/server --no-audit --no-fund --loglevel=error
cargo build --locked --release
BIN=$ROOT/target/release/kinetail

rm -rf "$DEMO" && mkdir -p "$DEMO/logs" "$DEMO/app/web/2026" "$DEMO/state"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

node tests/server/kinesalite.js "$PORT" > "$DEMO/kinesalite.out" &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$DEMO/kinesalite.out" 2>/dev/null && break; sleep 0.1; done
node tests/server/kinesis.js "$ENDPOINT" create-stream demo 2

# Sample logs: syslog-style lines (CRLF on one file) and JSON lines.
for i in $(seq 1 500); do
    printf 'Nov 25 10:%02d:%02d host-%d sshd[%d]: session %d opened\n' $((i / 60 % 60)) $((i % 60)) $((i % 3)) $((1000 + i)) "$i"
done > "$DEMO/logs/auth.log"
for i in $(seq 1 300); do
    printf 'Nov 25 11:00:%02d web-%d nginx[7]: GET /item/%d 200\r\n' $((i % 60)) $((i % 2)) "$i"
done > "$DEMO/logs/web.log"
for i in $(seq 1 200); do
    printf '{"user":{"id":"u%d"},"event":"click","n":%d}\n' $((i % 7)) "$i"
done > "$DEMO/app/web/2026/events.json"
echo "this file is excluded" > "$DEMO/logs/old.gz"

export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo
"$BIN" check --config config/demo.toml > /dev/null
"$BIN" run --config config/demo.toml &
KPID=$!
PIDS+=($KPID)
expected=$(( 500 + 300 + 200 ))
for _ in $(seq 150); do
    n=$(node tests/server/kinesis.js "$ENDPOINT" read demo | wc -l)
    [ "$n" -ge "$expected" ] && break
    sleep 0.2
done
kill -TERM "$KPID"; wait "$KPID" || true

echo
echo "== what arrived in stream demo (shard, partition key, data): first 5 and last 5"
node tests/server/kinesis.js "$ENDPOINT" read demo > "$DEMO/arrived.tsv"
head -5 "$DEMO/arrived.tsv"; echo "..."; tail -5 "$DEMO/arrived.tsv"
echo
echo "== $(wc -l < "$DEMO/arrived.tsv") records arrived for $expected lines written"
echo "== checkpoints saved in $DEMO/state/checkpoints.json:"
cat "$DEMO/state/checkpoints.json"
