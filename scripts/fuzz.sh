#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS seconds (20 by
# default) from its committed corpus (fuzz/corpus/TARGET), when a nightly
# Rust toolchain is installed; without one it says so and passes. A finding
# fails the run and leaves its input in fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "== fuzzing skipped: no nightly Rust toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked --quiet; then
        echo "== fuzzing skipped: cargo-fuzz could not be installed"
        exit 0
    fi
fi
for target in config framing kpl answers envelope; do
    echo "== fuzzing $target for ${secs}s"
    # A scratch copy of the corpus: what a run finds stays out of the tree
    # (copy it into fuzz/corpus deliberately, after `cargo fuzz cmin`).
    work=$(mktemp -d)
    cp -r "fuzz/corpus/$target/." "$work/"
    log="$work.log"
    status=0
    cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$work" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|ERROR|SUMMARY" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log"
    fi
    rm -f "$log"
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        echo "== fuzz target $target failed (exit $status); the input is in fuzz/artifacts/$target"
        exit "$status"
    fi
done
