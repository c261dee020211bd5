#!/usr/bin/env bash
# Open-loop latency sweep of memcached with kvbench: offered load vs p50/p99/p99.9, as CSV
# and a PNG plot (scripts/plot_latency.py).
#
#   scripts/latency-sweep.sh [--proto udp|tcp] [--seconds 5] [--threads 1] [--conns 8]
#                            [--rates "R1 R2 ..."] [--server-cpu 0] [--client-cpu 1]
#                            [--out docs/kvbench] [--name latency-sweep]
#
# memcached (-t 2, 1 GiB) runs on a random port pinned to --server-cpu; kvbench runs
# pinned to --client-cpu. Without --rates, the capacity is first measured closed loop
# (depth 8 per connection) and the sweep offers 10%..130% of it. Each point is a Poisson
# open-loop run of --seconds after a 1-second warm-up; latency is from each request's
# intended send time, so past saturation the queueing shows instead of being hidden.
# Points where kvbench itself fell behind its schedule (over 1% of sends more than 1 ms
# late) are marked in the CSV (kept_up = 0) and drawn hollow.
#
# Checks before a row is written: kvbench exits 0 at every point (and for the capacity
# run), memcached still answers `stats` after each, and each point completed requests,
# with finite latencies > 0 (a closed-loop capacity of 0 is refused too). A failed check
# prints `latency-sweep.sh: FAILED: <side>: <reason>` on stderr and exits 1.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

proto=udp seconds=5 threads=1 conns=8 rates="" server_cpu=0 client_cpu=1
out=docs/kvbench name=latency-sweep
while [ $# -gt 0 ]; do
    case "$1" in
        --proto) proto=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --rates) rates=$2; shift 2 ;;
        --server-cpu) server_cpu=$2; shift 2 ;;
        --client-cpu) client_cpu=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "latency-sweep.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

KVBENCH=${KVBENCH:-target/release/kvbench}
if [ ! -x "$KVBENCH" ]; then
    cargo build --release -p kvbench
fi
command -v memcached >/dev/null || { echo "latency-sweep.sh: memcached not found" >&2; exit 1; }
fail() {
    echo "latency-sweep.sh: FAILED: $1: $2" >&2
    exit 1
}
log_tail() { tail -n 5 "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-600; }
mkdir -p "$out"

mc_pid=''
# The rows go to $rows first and become $out/$name.csv only when every point passed.
point=$(mktemp) errlog=$(mktemp) rows=$(mktemp)
cleanup() {
    [ -n "$mc_pid" ] && kill "$mc_pid" 2>/dev/null
    wait 2>/dev/null || true
    rm -f "$point" "$errlog" "$rows"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq 20); do
    port=$(( 20000 + (RANDOM % 30000) ))
    taskset -c "$server_cpu" memcached -l 127.0.0.1 -p "$port" -U "$port" -t 2 -m 1024 -u nobody &
    mc_pid=$!
    sleep 0.5
    if kill -0 "$mc_pid" 2>/dev/null && "$KVBENCH" --stats-of "127.0.0.1:$port" >/dev/null 2>&1; then
        break
    fi
    kill "$mc_pid" 2>/dev/null || true
    mc_pid=''
done
[ -n "$mc_pid" ] || fail memcached "could not start it on a free port"
server=127.0.0.1:$port
common=(--server "$server" --proto "$proto" --threads "$threads" --connections "$conns"
    --keys 100000 --value-size 100 --get-ratio 0.9 --quiet)

# memcached_up WHEN: memcached still runs and answers stats.
memcached_up() {
    kill -0 "$mc_pid" 2>/dev/null && "$KVBENCH" --stats-of "$server" >/dev/null 2>&1 ||
        fail memcached "$1: it no longer answers stats (exited: $(kill -0 "$mc_pid" 2>/dev/null && echo no || echo yes))"
}
"$KVBENCH" "${common[@]}" --load --requests 1 >/dev/null 2>"$errlog" ||
    fail kvbench "loading the keys: exit status $?: $(log_tail "$errlog")"
if [ -z "$rates" ]; then
    taskset -c "$client_cpu" "$KVBENCH" "${common[@]}" --depth 8 --duration 3 --json >"$point" 2>"$errlog" ||
        fail "kvbench (capacity run)" "exit status $?: $(log_tail "$errlog")"
    capacity=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["ops_per_sec"]))' "$point") ||
        fail "kvbench (capacity run)" "no ops_per_sec in its JSON"
    (( capacity > 0 )) || fail "kvbench (capacity run)" "closed-loop capacity $capacity requests/s"
    memcached_up "after the capacity run"
    echo "closed-loop capacity: $capacity requests/s"
    rates=$(python3 -c "c=$capacity; print(' '.join(str(int(c*f/100)) for f in (10,20,30,40,50,60,70,80,85,90,95,100,110,120,130)))")
fi

csv="$out/$name.csv"
echo "offered,achieved,p50_us,p90_us,p99_us,p999_us,max_us,timeouts,errors,late_fraction,kept_up" >"$rows"
echo "memcached $(memcached -V | cut -d' ' -f2) on cpu $server_cpu, kvbench on cpu $client_cpu, $proto, $threads x $conns connections, load average $(cut -d' ' -f1 /proc/loadavg)"
for rate in $rates; do
    [[ $rate =~ ^[1-9][0-9]*$ ]] || fail rates "'$rate' is not a positive whole number of requests/s"
    taskset -c "$client_cpu" "$KVBENCH" "${common[@]}" --rate "$rate" --arrival poisson \
        --warmup 1 --duration "$seconds" --json >"$point" 2>"$errlog" ||
        fail "kvbench (rate $rate)" "exit status $?: $(log_tail "$errlog")"
    memcached_up "after the point at rate $rate"
    row=$(python3 - "$point" <<'EOF'
import json, math, sys
try:
    s = json.load(open(sys.argv[1]))
    l, sc = s["latency_us"], s["schedule"]
    ops = s["ops_per_sec"]
    lat = [l[k] for k in ("p50", "p90", "p99", "p999", "max")]
    row = [f"{sc['target_rate']:.0f}", f"{ops:.0f}"]
    row += [f"{v:.1f}" for v in lat]
    row += [str(s["timeouts"]), str(s["errors"]), f"{sc['late_fraction']:.4f}", str(int(sc["kept_up"]))]
except (OSError, ValueError, KeyError, TypeError) as e:
    print(f"cannot read its JSON summary ({e!r})"); sys.exit(1)
if not (math.isfinite(ops) and ops > 0):
    print(f"no request completed (achieved {ops} requests/s, {s['timeouts']} timeouts, {s['errors']} errors)"); sys.exit(1)
if not all(math.isfinite(v) and v > 0 for v in lat):
    print(f"latencies are not finite numbers > 0: {lat}"); sys.exit(1)
print(",".join(row))
EOF
) || fail "kvbench (rate $rate)" "$row"
    echo "$row" | tee -a "$rows"
done
cat "$rows" >"$csv"
# Debian's python3-matplotlib lives with the system interpreter; a python3 earlier on PATH
# (pyenv, venv) may not have it.
plot_py=${PYTHON:-python3}
if ! "$plot_py" -c 'import matplotlib' 2>/dev/null && [ -x /usr/bin/python3 ]; then
    plot_py=/usr/bin/python3
fi
"$plot_py" scripts/plot_latency.py "$csv" "$out/$name.png" \
    --title "memcached $(memcached -V | cut -d' ' -f2), $proto, kvbench open loop (Poisson)" ||
    fail plot "scripts/plot_latency.py exited with status $? (the CSV $csv is complete)"
echo "wrote $csv and $out/$name.png"
