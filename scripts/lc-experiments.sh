#!/usr/bin/env bash
# Runs the lossy counting experiments (`kvlb lc-experiments`) in release mode, then draws
# the plots. Progress goes to stderr.
#
# usage: scripts/lc-experiments.sh [OUT_DIR] [--quick] [more lc-experiments options]
#   OUT_DIR defaults to docs/lc-experiments. The full run takes about 10-20 minutes on a
#   busy 2-core machine; --quick a couple of minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

out="docs/lc-experiments"
if [[ $# -gt 0 && "$1" != --* ]]; then
    out="$1"
    shift
fi

cargo build --release --bin kvlb

pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The machine is shared: run at lower priority.
nice -n 10 target/release/kvlb lc-experiments --out "$out" "$@" &
pid=$!
wait "$pid"
pid=""

# Debian's python3-matplotlib lives under /usr/bin/python3, which a pyenv or venv python3
# earlier in PATH may hide; $PYTHON overrides.
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
    for cand in python3 /usr/bin/python3; do
        if "$cand" -c 'import matplotlib' 2>/dev/null; then
            py="$cand"
            break
        fi
    done
fi
if [[ -z "$py" ]]; then
    echo "no python3 with matplotlib found (apt-get install python3-matplotlib); CSVs are in $out" >&2
    exit 1
fi
"$py" scripts/plot_lc.py "$out"
echo "results in $out (summary.md, *.csv, *.png)"
