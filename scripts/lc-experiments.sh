#!/usr/bin/env bash
# Runs the lossy counting experiments (`kvlb lc-experiments`) in release mode, then draws
# the plots. Progress goes to stderr.
#
# usage: scripts/lc-experiments.sh [OUT_DIR] [--quick] [more lc-experiments options]
#   OUT_DIR defaults to docs/lc-experiments. The full run takes about 10-20 minutes on a
#   busy 2-core machine; --quick a couple of minutes.
#
# Checks before plotting: kvlb lc-experiments exits 0; it wrote summary.md and at least one
# CSV during this run; every CSV it wrote has a data row and no nan or inf figure; the
# throughput columns (mups_wall, mups_cpu, wall_s, cpu_s) are > 0. A failed check prints
# `lc-experiments.sh: FAILED: <what>: <reason>` on stderr and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() {
    echo "lc-experiments.sh: FAILED: $1: $2" >&2
    exit 1
}

out="docs/lc-experiments"
if [[ $# -gt 0 && "$1" != --* ]]; then
    out="$1"
    shift
fi

# The experiments are a crate of their own; `kvlb lc-experiments` runs its binary.
cargo build --release -p kvlb -p kvlb-lc-experiments || fail "cargo build" "exit status $?"
mkdir -p "$out"
# Files this run wrote are newer than this stamp.
stamp=$(mktemp)

pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$stamp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The machine is shared: run at lower priority.
nice -n 10 target/release/kvlb lc-experiments --out "$out" "$@" &
pid=$!
status=0
wait "$pid" || status=$?
pid=""
[[ $status == 0 ]] || fail "kvlb lc-experiments" "exit status $status (its messages are above)"
python3 - "$out" "$stamp" <<'EOF' || exit 1
import csv, math, os, sys
out, stamp = sys.argv[1], os.path.getmtime(sys.argv[2])
def fail(what, why):
    sys.exit(f"lc-experiments.sh: FAILED: {what}: {why}")
def fresh(p):
    return os.path.exists(p) and os.path.getmtime(p) >= stamp
if not fresh(os.path.join(out, "summary.md")):
    fail("kvlb lc-experiments", f"did not write {out}/summary.md")
written = [f for f in ("thresholds", "sweep", "drift", "weighted", "bench", "sampled") if fresh(os.path.join(out, f + ".csv"))]
if not written:
    fail("kvlb lc-experiments", f"wrote no CSV in {out}")
for f in written:
    p = os.path.join(out, f + ".csv")
    rows = list(csv.DictReader(open(p)))
    if not rows:
        fail(p, "no data row")
    for i, r in enumerate(rows, 2):
        for k, v in r.items():
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(x):
                fail(p, f"line {i}: {k} is {v}")
            if k in ("mups_wall", "mups_cpu", "wall_s", "cpu_s") and x <= 0:
                fail(p, f"line {i}: {k} is {v}, not > 0")
print(f"checked {', '.join(f + '.csv' for f in written)}: data rows, finite figures, rates > 0", file=sys.stderr)
EOF

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
"$py" scripts/plot_lc.py "$out" || fail plot "scripts/plot_lc.py exited with status $? (the CSVs in $out are complete)"
echo "results in $out (summary.md, *.csv, *.png)"
