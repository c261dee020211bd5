#!/usr/bin/env bash
# kvlb's test command: installs what the tests need on a fresh Debian 12 (idempotent), then
# runs the format check, clippy and every test, with the DPDK datapath built in.
#
#   scripts/test.sh            # everything
#   scripts/test.sh --no-install   # skip the apt step (packages already present)
#
# Real-DPDK tests run with --no-huge --no-pci on software ports; they need root for the
# network-namespace tests (skipped with a message otherwise). ONVM tests run when ONVM_HOME
# points to a built openNetVM and are reported as skipped when it does not.
set -euo pipefail
cd "$(dirname "$0")/.."

install=1
for a in "$@"; do
    case "$a" in
        --no-install) install=0 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "test.sh: unknown argument '$a'" >&2; exit 2 ;;
    esac
done

. scripts/lib/deps.sh
if [ "$install" = 1 ]; then
    install_test_deps
fi
ensure_rust

export RUST_BACKTRACE=1
features="--features dpdk"
if [ -n "${ONVM_HOME:-}" ]; then
    features="--features dpdk,onvm"
    echo "test.sh: ONVM_HOME=$ONVM_HOME: ONVM tests will run"
else
    echo "test.sh: ONVM_HOME is not set: ONVM tests will be skipped (see README, 'Running on OpenNetVM')"
fi

step() { printf '\n=== %s\n' "$*"; }

# Tests report the real components they ran against and the tests they had to skip into
# these two logs (tests/skip/mod.rs); the summary at the end lists both. In CI (CI=true) a
# test whose component this script installs fails instead of skipping.
logs=target/test-logs
mkdir -p "$logs"
export KVLB_SKIP_LOG="$PWD/$logs/skipped.tsv" KVLB_REAL_LOG="$PWD/$logs/real.tsv"
: > "$KVLB_SKIP_LOG"
: > "$KVLB_REAL_LOG"
rm -f "$logs/cargo-test.log"
summary() {
    local rc=$?
    printf '\n=== tests that ran against real components\n'
    if [ -s "$KVLB_REAL_LOG" ]; then
        # component<TAB>test<TAB>detail -> one line per component with its distinct tests.
        cut -f1,2 "$KVLB_REAL_LOG" | sort -u | awk -F'\t' '
            { n[$1]++; t[$1] = t[$1] "\n    " $2 }
            END { for (c in n) printf "%s: %d tests%s\n", c, n[c], t[c] }' | sort
    else
        echo "(none recorded)"
    fi
    local skipped
    skipped=$(cut -f2 "$KVLB_SKIP_LOG" | sort -u | grep -c . || true)
    printf '\n=== skipped tests: %s\n' "$skipped"
    if [ "$skipped" -gt 0 ]; then
        sort -u "$KVLB_SKIP_LOG" | awk -F'\t' '{ printf "  %s (%s): %s\n", $2, $1, $3 }'
    fi
    # One closing line over every test binary: libtest's passed and failed counts summed
    # (a skipped test passed as far as libtest knows, so it is taken out of the passed).
    if [ -s "$logs/cargo-test.log" ]; then
        awk -v skipped="$skipped" '/^test result:/ {
                for (i = 1; i <= NF; i++) {
                    if ($(i + 1) ~ /^passed/) p += $i
                    if ($(i + 1) ~ /^failed/) f += $i
                }
            }
            END { printf "\ntests: %d passed, %d failed, %d skipped\n", p - skipped, f, skipped }' \
            "$logs/cargo-test.log"
    fi
    exit "$rc"
}
trap summary EXIT
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --workspace --all-targets $features"
cargo clippy --workspace --all-targets $features -- -D warnings
# The crates other than the NF's are tested on their own, without kvlb's features (kvbench
# never links DPDK). This also builds target/debug/kvbench and kvlb-lc-experiments, which
# kvlb's tests run (tests/workspace_bin).
tested=0
step "cargo test -p kvbench -p kvlb-lc-experiments"
cargo test -p kvbench -p kvlb-lc-experiments --no-fail-fast 2>&1 | tee "$logs/cargo-test.log" || tested=$?
# kvlb, and onvm-sys's bindgen layout tests (the Rust view of DPDK's and ONVM's structs).
step "cargo test -p kvlb -p onvm-sys $features"
cargo test -p kvlb -p onvm-sys $features --no-fail-fast 2>&1 | tee -a "$logs/cargo-test.log" || tested=$?
[ "$tested" = 0 ] || exit "$tested"
step "scripts/ tests"
bash scripts/lint.sh
echo
echo "test.sh: all tests passed"
