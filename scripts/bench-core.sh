#!/usr/bin/env bash
# The balancing core's cost per request in process (no I/O) against parsing plus address
# rewriting alone, in the same criterion run (benches/core.rs: 8 backends, 10^6 keys, 95 %
# GETs, 100-byte values, Zipf 0.99 and 1.2, and Zipf 0.99 with hot-key handling off).
#
#   scripts/bench-core.sh [--no-run]
#
# Runs `cargo bench --bench core` (unless --no-run: then it reads the last run's figures)
# and prints, per workload, the mean time per request for each loop and the ratio
# (core - f x craft) / (parse_rewrite - craft): `craft`, the frame copy and the simulated
# backend's reply, is subtracted from both, from the core's time for the fraction f of
# requests it forwarded (cache hits get no backend reply). Goal: <= 2. The bench also runs the three
# loops interleaved in 21 rounds and reports the median of the per-round ratios (robust
# to this VM's speed drifting between criterion's back-to-back measurements). Also writes
# the figures as JSON to target/criterion/core-ratios.json.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    --no-run) ;;
    "") cargo bench --bench core ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-core.sh: unknown option '$1'" >&2; exit 2 ;;
esac
python3 - <<'EOF'
import json, os, sys
root = "target/criterion"
out = {}
print(f"{'workload':22} {'core':>9} {'parse+rw':>9} {'craft':>9}  fwd   ratio   interleaved median [min-max]   (goal <= 2)")
for w in ("core_zipf0.99", "core_zipf1.2", "core_zipf0.99_nohot"):
    est = {}
    for f in ("core", "parse_rewrite", "craft"):
        p = os.path.join(root, w, f, "new", "estimates.json")
        if not os.path.exists(p):
            sys.exit(f"bench-core.sh: no figures at {p}: run without --no-run first")
        est[f] = json.load(open(p))["mean"]["point_estimate"]
    # Each iteration runs every frame of the workload once.
    n = json.load(open(os.path.join(root, w, "core", "new", "benchmark.json")))["throughput"]["Elements"]
    ns = {f: v / n for f, v in est.items()}
    # The core crafts a reply only for the requests it forwarded (not for cache hits).
    il = os.path.join(root, w, "interleaved.json")
    fwd = json.load(open(il)).get("forwarded_fraction", 1.0) if os.path.exists(il) else 1.0
    ratio = (ns["core"] - fwd * ns["craft"]) / (ns["parse_rewrite"] - ns["craft"])
    out[w[len("core_"):]] = {**{f"{f}_ns": round(v, 1) for f, v in ns.items()}, "forwarded": fwd, "ratio": round(ratio, 2)}
    inter = ""
    if os.path.exists(il):
        j = json.load(open(il))
        out[w[len("core_"):]]["interleaved"] = {k: j[k] for k in ("median_ratio", "min_ratio", "max_ratio")}
        inter = f"{j['median_ratio']:.2f} [{j['min_ratio']:.2f}-{j['max_ratio']:.2f}]"
    print(f"{w[len('core_'):]:22} {ns['core']:8.0f}n {ns['parse_rewrite']:8.0f}n {ns['craft']:8.0f}n  {fwd:.2f}  {ratio:.2f}    {inter}")
json.dump(out, open(os.path.join(root, "core-ratios.json"), "w"), indent=1)
EOF
