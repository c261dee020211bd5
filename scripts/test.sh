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
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets $features"
cargo clippy --all-targets $features -- -D warnings
step "cargo test $features"
cargo test $features --no-fail-fast
step "scripts/ tests"
bash scripts/lint.sh
echo
echo "test.sh: all tests passed"
