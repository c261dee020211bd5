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
#
# Every figure is read from files this run wrote (with --no-run: files newer than the
# sources, Cargo.toml/Cargo.lock and the bench binary, else it refuses: stale data would
# describe other code); each workload needs criterion's estimates and the bench's
# interleaved.json (forwarded fraction and interleaved ratios), and every time, fraction
# and ratio must be a finite number > 0 (parse_rewrite slower than craft). A failed check
# prints `bench-core.sh: FAILED: <what>: <reason>` on stderr and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() {
    echo "bench-core.sh: FAILED: $1: $2" >&2
    exit 1
}
case "${1:-}" in
    --no-run) since=sources ;;
    "")
        stamp=$(mktemp /tmp/kvlb-bench-core.XXXXXX)
        trap 'rm -f "$stamp"' EXIT
        # Whole-second mtimes on some filesystems: the data must be strictly newer.
        sleep 1
        status=0
        cargo bench --bench core || status=$?
        [ "$status" = 0 ] || fail "cargo bench --bench core" "exit status $status"
        since=$stamp
        ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-core.sh: unknown option '$1'" >&2; exit 2 ;;
esac
python3 - "$since" <<'EOF' || exit 1
import glob, json, math, os, sys, time
root = "target/criterion"
since = sys.argv[1]

def fail(what, why):
    sys.exit(f"bench-core.sh: FAILED: {what}: {why}")

def when(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

if since == "sources":
    # What the figures depend on: the code, the manifest and lock file, the bench binary.
    deps = ["Cargo.toml", "Cargo.lock", "build.rs", "benches/core.rs"]
    deps += glob.glob("src/**/*.rs", recursive=True)
    deps += [p for p in glob.glob("target/release/deps/core-*") if os.access(p, os.X_OK) and "." not in os.path.basename(p)]
    deps = [p for p in deps if os.path.exists(p)]
    newest = max(deps, key=os.path.getmtime)
    limit, limit_what = os.path.getmtime(newest), f"{newest} ({when(os.path.getmtime(newest))})"
    rerun = "run scripts/bench-core.sh without --no-run"
else:
    limit, limit_what = os.path.getmtime(since), f"the start of this run ({when(os.path.getmtime(since))})"
    rerun = "the bench did not write it"

def load(p, what):
    if not os.path.exists(p):
        fail(what, f"no {p}: {rerun}")
    if os.path.getmtime(p) <= limit:
        fail(what, f"{p} ({when(os.path.getmtime(p))}) is older than {limit_what}: {rerun}")
    try:
        return json.load(open(p))
    except (OSError, ValueError) as e:
        fail(what, f"{p} is not valid JSON ({e})")

def positive(what, name, v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        fail(what, f"{name} is {v!r}, not a finite number > 0")
    return v

out = {}
# Printed only once every workload's figures passed.
lines = [f"{'workload':22} {'core':>9} {'parse+rw':>9} {'craft':>9}  fwd   ratio   interleaved median [min-max]   (goal <= 2)"]
for w in ("core_zipf0.99", "core_zipf1.2", "core_zipf0.99_nohot"):
    name = w[len("core_"):]
    est = {}
    for f in ("core", "parse_rewrite", "craft"):
        j = load(os.path.join(root, w, f, "new", "estimates.json"), f"{name}/{f}")
        try:
            est[f] = positive(f"{name}/{f}", "the mean estimate", j["mean"]["point_estimate"])
        except (KeyError, TypeError):
            fail(f"{name}/{f}", "estimates.json has no mean.point_estimate")
    # Each iteration runs every frame of the workload once.
    bj = load(os.path.join(root, w, "core", "new", "benchmark.json"), f"{name}/core")
    try:
        n = positive(f"{name}/core", "the throughput's element count", bj["throughput"]["Elements"])
    except (KeyError, TypeError):
        fail(f"{name}/core", "benchmark.json has no throughput.Elements")
    ns = {f: v / n for f, v in est.items()}
    if ns["parse_rewrite"] <= ns["craft"]:
        fail(name, f"parse_rewrite ({ns['parse_rewrite']:.1f} ns) is not slower than craft ({ns['craft']:.1f} ns): no ratio")
    # The core crafts a reply only for the requests it forwarded (not for cache hits).
    il = load(os.path.join(root, w, "interleaved.json"), f"{name}/interleaved")
    if not isinstance(il, dict):
        fail(f"{name}/interleaved", "interleaved.json is not an object")
    try:
        fwd = positive(f"{name}/interleaved", "forwarded_fraction", il["forwarded_fraction"])
        inter_fig = {k: positive(f"{name}/interleaved", k, il[k]) for k in ("median_ratio", "min_ratio", "max_ratio")}
    except KeyError as e:
        fail(f"{name}/interleaved", f"interleaved.json has no {e}")
    if fwd > 1:
        fail(f"{name}/interleaved", f"forwarded_fraction {fwd} is over 1")
    ratio = positive(name, "the ratio", (ns["core"] - fwd * ns["craft"]) / (ns["parse_rewrite"] - ns["craft"]))
    out[name] = {**{f"{f}_ns": round(v, 1) for f, v in ns.items()}, "forwarded": fwd, "ratio": round(ratio, 2)}
    out[name]["interleaved"] = inter_fig
    inter = f"{inter_fig['median_ratio']:.2f} [{inter_fig['min_ratio']:.2f}-{inter_fig['max_ratio']:.2f}]"
    lines.append(f"{name:22} {ns['core']:8.0f}n {ns['parse_rewrite']:8.0f}n {ns['craft']:8.0f}n  {fwd:.2f}  {ratio:.2f}    {inter}")
print("\n".join(lines))
json.dump(out, open(os.path.join(root, "core-ratios.json"), "w"), indent=1)
EOF
