#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 600), one after another, under
# `nice -n 10`, and prints the executions per target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the nightly-only
# sanitizer flags are unlocked with RUSTC_BOOTSTRAP=1. Seeds come from fuzz/corpus/<target>
# (committed, left untouched); what the fuzzer learns goes to fuzz/target/work/<target>;
# crashes land in fuzz/artifacts/<target>/. Per-target logs: fuzz/target/logs/<target>.log.
set -euo pipefail

cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^kvlb-fuzz$')
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi

export RUSTC_BOOTSTRAP=1
child=""
cleanup() {
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

mkdir -p fuzz/target/logs
nice -n 10 cargo fuzz build -O >fuzz/target/logs/build.log 2>&1 || { cat fuzz/target/logs/build.log >&2; exit 1; }
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/target/work/$t" "fuzz/corpus/$t"
    log="fuzz/target/logs/$t.log"
    nice -n 10 cargo fuzz run -O "$t" "fuzz/target/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 &
    child=$!
    if wait "$child"; then rc=0; else rc=$?; fi
    child=""
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        printf '%-10s %6ss  %12s executions  ok\n' "$t" "$secs" "${execs:-?}"
    else
        printf '%-10s %6ss  %12s executions  FAILED (rc %s, see %s)\n' "$t" "$secs" "${execs:-?}" "$rc" "$log"
        status=1
    fi
done
exit "$status"
