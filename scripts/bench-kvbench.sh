#!/usr/bin/env bash
# Compares kvbench with memaslap (UDP gets) and memtier_benchmark (TCP gets) against the
# same memcached, with the same threads and concurrency, counted by memcached's own
# `stats` (never by a tool's claim) over the same window, and each tool's CPU time read
# from /proc/<pid>/stat over that window.
#
#   scripts/bench-kvbench.sh [--seconds 10] [--warm 3] [--rounds 3] [--threads 1]
#                            [--conns 4] [--depth 1] [--server-cpu 0] [--client-cpu 1]
#                            [--out docs/kvbench]
#
# Setup (printed again in the results): memcached -t 2 -m 1024 on a random port, pinned to
# --server-cpu with taskset; each tool pinned to --client-cpu; workload get:set = 9:1,
# 1024-byte values, 40000 keys prepopulated by each tool's own keys before measuring
# (memaslap fills its window itself). Each round runs every tool once, in a rotating
# order; the window starts --warm seconds after the tool starts and lasts --seconds.
# Reported per tool: server-counted gets/s (cmd_get), sets/s, and the tool's CPU
# microseconds per request ((utime+stime) / (cmd_get+cmd_set)); ratios are kvbench over
# the other tool within the same round, then the median over rounds.
#
# Tools: memaslap is Debian's `memcaslap` (libmemcached-tools), or $MEMASLAP.
# memtier_benchmark is used when on PATH or named by $MEMTIER; it is not part of kvlb
# (build it yourself from https://github.com/RedisLabs/memtier_benchmark); without it the
# TCP comparison is skipped with a message. kvbench is target/release/kvbench (built if
# missing) or $KVBENCH.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10 warm=3 rounds=3 threads=1 conns=4 depth=1 server_cpu=0 client_cpu=1
out=docs/kvbench
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --warm) warm=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --depth) depth=$2; shift 2 ;;
        --server-cpu) server_cpu=$2; shift 2 ;;
        --client-cpu) client_cpu=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "bench-kvbench.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

KVBENCH=${KVBENCH:-target/release/kvbench}
if [ ! -x "$KVBENCH" ]; then
    cargo build --release --bin kvbench
fi
MEMASLAP=${MEMASLAP:-$(command -v memcaslap || command -v memaslap || true)}
MEMTIER=${MEMTIER:-$(command -v memtier_benchmark || true)}
[ -n "$MEMASLAP" ] || { echo "bench-kvbench.sh: memaslap not found (apt-get install libmemcached-tools)" >&2; exit 1; }
command -v memcached >/dev/null || { echo "bench-kvbench.sh: memcached not found" >&2; exit 1; }
mkdir -p "$out"

pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# memcached on a free random port (memcached exits at once if the port is taken).
mc_pid=
for _ in $(seq 20); do
    port=$(( 20000 + (RANDOM % 30000) ))
    taskset -c "$server_cpu" memcached -l 127.0.0.1 -p "$port" -U "$port" -t 2 -m 1024 -u nobody &
    mc_pid=$!
    sleep 0.5
    if kill -0 "$mc_pid" 2>/dev/null && "$KVBENCH" --stats-of "127.0.0.1:$port" >/dev/null 2>&1; then
        pids+=("$mc_pid")
        break
    fi
    mc_pid=
done
[ -n "$mc_pid" ] || { echo "bench-kvbench.sh: could not start memcached" >&2; exit 1; }
server=127.0.0.1:$port
total_conns=$(( threads * conns ))
keys=40000
run_for=$(( warm + seconds + 2 ))
hz=$(getconf CLK_TCK)

# stats_line: "cmd_get cmd_set" from the server itself.
stats_line() {
    "$KVBENCH" --stats-of "$server" --json | python3 -c \
        'import json,sys; s=json.load(sys.stdin)["stats"]; print(s["cmd_get"], s["cmd_set"])'
}
# cpu_ticks PID: utime+stime of a process (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# measure NAME CMD...: runs CMD pinned to the client CPU and samples the window.
results=()
measure() {
    local name=$1; shift
    taskset -c "$client_cpu" "$@" >"/tmp/kvbench-cmp.$$.$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    sleep "$warm"
    local s0 c0 t0 s1 c1 t1
    s0=$(stats_line); c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    sleep "$seconds"
    s1=$(stats_line); c1=$(cpu_ticks "$pid"); t1=$(date +%s.%N)
    wait "$pid" || { echo "$name failed:"; tail -5 "/tmp/kvbench-cmp.$$.$name.log"; }
    rm -f "/tmp/kvbench-cmp.$$.$name.log"
    local line
    line=$(python3 - "$name" "$s0" "$s1" "$c0" "$c1" "$t0" "$t1" "$hz" <<'EOF'
import sys
name, s0, s1, c0, c1, t0, t1, hz = sys.argv[1:]
g0, w0 = map(int, s0.split()); g1, w1 = map(int, s1.split())
dt = float(t1) - float(t0)
gets, sets = g1 - g0, w1 - w0
cpu = (int(c1) - int(c0)) / int(hz)
reqs = gets + sets
print(f"{name},{gets/dt:.0f},{sets/dt:.0f},{cpu/dt*100:.1f},{(cpu*1e6/reqs) if reqs else 0:.3f}")
EOF
)
    echo "  $line"
    results+=("$round,$line")
}

echo "kvbench comparison: memcached $(memcached -V | cut -d' ' -f2) at $server (-t 2, cpu $server_cpu);"
echo "tools on cpu $client_cpu; $threads thread(s) x $conns connection(s), depth $depth; window ${seconds}s after ${warm}s; $rounds rounds"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Prepopulate: kvbench's keys (64-byte and 14-byte names), memtier's keys.
"$KVBENCH" --server "$server" --proto tcp --keys "$keys" --key-size 64 --value-size 1024 \
    --load --requests 1 --connections 4 --quiet >/dev/null
"$KVBENCH" --server "$server" --proto tcp --keys "$keys" --key-size 14 --value-size 1024 \
    --load --requests 1 --connections 4 --quiet >/dev/null
if [ -n "$MEMTIER" ]; then
    "$MEMTIER" -s 127.0.0.1 -p "$port" -P memcache_text -t 1 -c 1 --ratio 1:0 \
        --key-pattern P:P --key-minimum 1 --key-maximum $keys --requests $keys -d 1024 \
        --hide-histogram >/dev/null 2>&1
else
    echo "memtier_benchmark not found (PATH or \$MEMTIER): TCP comparison skipped"
fi

kv_udp=("$KVBENCH" --server "$server" --proto udp --threads "$threads" --connections "$conns"
    --depth "$depth" --keys "$keys" --key-size 64 --value-size 1024 --get-ratio 0.9
    --duration "$run_for" --quiet)
# memaslap: -c is the total concurrency, spread over -T threads; 64-byte keys by default.
slap_udp=("$MEMASLAP" -s "$server" -U -T "$threads" -c "$total_conns" -X 1024 -t "${run_for}s")
kv_tcp=("$KVBENCH" --server "$server" --proto tcp --threads "$threads" --connections "$conns"
    --depth "$depth" --keys "$keys" --key-size 14 --value-size 1024 --get-ratio 0.9
    --duration "$run_for" --quiet)
tier_tcp=("$MEMTIER" -s 127.0.0.1 -p "$port" -P memcache_text -t "$threads" -c "$conns"
    --pipeline "$depth" --ratio 1:9 -d 1024 --key-maximum "$keys" --test-time "$run_for"
    --hide-histogram)

for round in $(seq "$rounds"); do
    echo "round $round (load $(cut -d' ' -f1 /proc/loadavg)):"
    if [ $(( round % 2 )) = 1 ]; then
        measure kvbench-udp "${kv_udp[@]}"; measure memaslap-udp "${slap_udp[@]}"
    else
        measure memaslap-udp "${slap_udp[@]}"; measure kvbench-udp "${kv_udp[@]}"
    fi
    if [ -n "$MEMTIER" ]; then
        if [ $(( round % 2 )) = 1 ]; then
            measure memtier-tcp "${tier_tcp[@]}"; measure kvbench-tcp "${kv_tcp[@]}"
        else
            measure kvbench-tcp "${kv_tcp[@]}"; measure memtier-tcp "${tier_tcp[@]}"
        fi
    fi
done

csv="$out/comparison.csv"
{
    echo "round,tool,gets_per_sec,sets_per_sec,cpu_percent,cpu_us_per_request"
    printf '%s\n' "${results[@]}"
} >"$csv"
echo
python3 - "$csv" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
by = {}
for r in rows:
    by.setdefault(r["round"], {})[r["tool"]] = r
def ratios(a, b):
    g, c = [], []
    for rnd in by.values():
        if a in rnd and b in rnd:
            g.append(float(rnd[a]["gets_per_sec"]) / max(float(rnd[b]["gets_per_sec"]), 1))
            c.append(float(rnd[a]["cpu_us_per_request"]) / max(float(rnd[b]["cpu_us_per_request"]), 1e-9))
    return g, c
print("median over rounds (server-counted):")
for tool in ["kvbench-udp", "memaslap-udp", "kvbench-tcp", "memtier-tcp"]:
    xs = [r for r in rows if r["tool"] == tool]
    if xs:
        med = lambda k: statistics.median(float(r[k]) for r in xs)
        print(f"  {tool:13} {med('gets_per_sec'):>10.0f} gets/s {med('sets_per_sec'):>9.0f} sets/s "
              f"cpu {med('cpu_percent'):5.1f}% {med('cpu_us_per_request'):7.2f} us/request")
for a, b in [("kvbench-udp", "memaslap-udp"), ("kvbench-tcp", "memtier-tcp")]:
    g, c = ratios(a, b)
    if g:
        print(f"  {a} / {b}: gets/s x{statistics.median(g):.2f} (rounds {', '.join(f'{x:.2f}' for x in g)}), "
              f"cpu per request x{statistics.median(c):.2f} (rounds {', '.join(f'{x:.2f}' for x in c)})")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "per-round figures: $csv"
