#!/usr/bin/env bash
# Runs every test of kinetail on a fresh Debian machine with Rust:
# installs what the tests need (Node.js, logrotate and the local
# Kinesis-compatible server, kinesalite; moto for Firehose and its S3),
# then runs the unit and integration tests. The integration tests start
# their own kinesalite and moto on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests use: Node.js and npm (for kinesalite), logrotate
# (the rotation tests drive the real program).
missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || missing+=(logrotate)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} (Debian packages)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

echo "== installing kinesalite (tests/server)"
npm ci --prefix tests/server --no-audit --no-fund --loglevel=error

echo "== installing aws-kinesis-agg (tests/agg), the independent de-aggregator"
if [ ! -x tests/agg/.venv/bin/python ]; then
    if ! python3 -m venv tests/agg/.venv 2>/dev/null; then
        rm -rf tests/agg/.venv
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        python3 -m venv tests/agg/.venv
    fi
fi
tests/agg/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/agg/requirements.txt

echo "== installing moto (tests/moto), the Firehose and S3 stand-in"
if [ ! -x tests/moto/.venv/bin/python ]; then
    python3 -m venv tests/moto/.venv
fi
tests/moto/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/moto/requirements.txt

echo "== installing kubernetes-validate (tests/manifests), the Kubernetes schemas offline"
if [ ! -x tests/manifests/.venv/bin/python ]; then
    python3 -m venv tests/manifests/.venv
fi
tests/manifests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/manifests/requirements.txt

# Tests that cannot check what they are for (data absent, a case the
# machine cannot make) skip themselves and list why here.
skipped=target/tmp/skipped.txt
mkdir -p target/tmp
rm -f "$skipped"

# Formatting and lints are part of the tests: a diff or a warning fails.
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        component=$([ "$tool" = fmt ] && echo rustfmt || echo clippy)
        rustup component add "$component" >/dev/null 2>&1 || true
    fi
done
if cargo fmt --version >/dev/null 2>&1; then
    echo "== cargo fmt --check"
    cargo fmt --all --check
else
    echo "cargo fmt --check: rustfmt is not installed and could not be" >>"$skipped"
fi
if cargo clippy --version >/dev/null 2>&1; then
    echo "== cargo clippy -D warnings"
    cargo clippy --locked --workspace --all-targets -- -D warnings
else
    echo "cargo clippy: clippy is not installed and could not be" >>"$skipped"
fi

echo "== cargo test"
cargo test --locked --workspace --all-targets -- --test-threads "${KINETAIL_TEST_THREADS:-2}"
# The tests that measure rates against an endpoint enforcing per-second
# limits run alone: beside another test on two cores, the machine's own
# scheduling delays calls by more than the jitter pacing allows for
# (Kinesis's network does not), and they would measure the machine.
echo "== packaging/kubernetes: the manifests against the Kubernetes schemas, their configs against kinetail check"
tests/manifests/.venv/bin/kubernetes-validate --strict packaging/kubernetes/*.yaml
cargo build --locked --bin kinetail
tests/manifests/.venv/bin/python tests/manifests/configs.py target/debug/kinetail packaging/kubernetes/*.yaml
echo "== cargo test: the rate tests, one at a time"
cargo test --locked --test it -- --ignored --test-threads 1
if [ -s "$skipped" ]; then
    echo "== tests that skipped themselves:"
    sed 's/^/   SKIPPED /' "$skipped"
fi
