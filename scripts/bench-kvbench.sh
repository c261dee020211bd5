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
#
# Checks before a figure is kept: memcached answers `stats` at both ends of every window;
# each tool is still running at the end of its window and then exits 0 (memaslap's known
# abort, an assertion in its UDP reader, reruns that tool's measurement once, its window
# thrown away); memcached counted requests in the window and the tool used CPU time. A
# failed check prints `bench-kvbench.sh: FAILED: <side>: <reason>` on stderr and exits 1,
# before any ratio or CSV is written: a partial window never enters a ratio.
set -euo pipefail
shopt -s inherit_errexit
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
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "bench-kvbench.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

KVBENCH=${KVBENCH:-target/release/kvbench}
if [ ! -x "$KVBENCH" ]; then
    cargo build --release -p kvbench
fi
fail() {
    echo "bench-kvbench.sh: FAILED: $1: $2" >&2
    exit 1
}
log_tail() { tail -n 5 "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-600; }
MEMASLAP=${MEMASLAP:-$(command -v memcaslap || command -v memaslap || true)}
MEMTIER=${MEMTIER:-$(command -v memtier_benchmark || true)}
[ -n "$MEMASLAP" ] || { echo "bench-kvbench.sh: memaslap not found (apt-get install libmemcached-tools)" >&2; exit 1; }
command -v memcached >/dev/null || { echo "bench-kvbench.sh: memcached not found" >&2; exit 1; }
mkdir -p "$out"

# memcached's PID, and the PID of the tool being measured (empty when none).
mc_pid='' tool_pid=''
cleanup() {
    for p in "$tool_pid" "$mc_pid"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null
    done
    wait 2>/dev/null || true
    rm -f "/tmp/kvbench-cmp.$$."*.log
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# memcached on a free random port (memcached exits at once if the port is taken).
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
total_conns=$(( threads * conns ))
keys=40000
run_for=$(( warm + seconds + 2 ))
hz=$(getconf CLK_TCK)

# stats_line: "cmd_get cmd_set" from the server itself.
stats_line() {
    "$KVBENCH" --stats-of "$server" --json 2>/dev/null | python3 -c \
        'import json,sys; s=json.load(sys.stdin)["stats"]; print(s["cmd_get"], s["cmd_set"])' 2>/dev/null ||
        fail memcached "does not answer stats (exited: $(kill -0 "$mc_pid" 2>/dev/null && echo no || echo yes))"
}
# cpu_ticks PID: utime+stime of a process (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# measure NAME CMD...: runs CMD pinned to the client CPU and samples the window. A tool
# that is gone before its window ends, exits non-zero, or left no request in the window
# fails the script; memaslap's known assertion abort reruns it once (window discarded).
results=()
measure() {
    local name=$1; shift
    local log="/tmp/kvbench-cmp.$$.$name.log" attempt status
    local s0 c0 t0 s1 c1 t1
    for attempt in 1 2; do
        taskset -c "$client_cpu" "$@" >"$log" 2>&1 &
        tool_pid=$!
        sleep "$warm"
        s0=$(stats_line); c0=$(cpu_ticks "$tool_pid" 2>/dev/null) || c0=''; t0=$(date +%s.%N)
        if [ -n "$c0" ]; then
            sleep "$seconds"
            s1=$(stats_line); c1=$(cpu_ticks "$tool_pid" 2>/dev/null) || c1=''; t1=$(date +%s.%N)
        fi
        status=0
        wait "$tool_pid" || status=$?
        tool_pid=''
        if [ "$name" = memaslap-udp ] && [ "$attempt" = 1 ] && grep -q Assertion "$log"; then
            echo "  $name aborted on its own assertion; measuring it again: $(log_tail "$log")" >&2
            continue
        fi
        [ -n "$c0" ] && [ -n "$c1" ] ||
            fail "$name" "exited (status $status) before the end of its window (${warm}s warm-up + ${seconds}s): $(log_tail "$log")"
        [ "$status" = 0 ] || fail "$name" "exit status $status: $(log_tail "$log")"
        break
    done
    rm -f "$log"
    local line
    line=$(python3 - "$name" "$s0" "$s1" "$c0" "$c1" "$t0" "$t1" "$hz" <<'PY'
import sys
name, s0, s1, c0, c1, t0, t1, hz = sys.argv[1:]
g0, w0 = map(int, s0.split()); g1, w1 = map(int, s1.split())
dt = float(t1) - float(t0)
gets, sets = g1 - g0, w1 - w0
cpu = (int(c1) - int(c0)) / int(hz)
reqs = gets + sets
if gets <= 0 or dt <= 0:
    print(f"memcached counted no get from it in its {dt:.1f}s window ({sets} sets)"); sys.exit(1)
if cpu <= 0:
    print(f"no CPU time in its {dt:.1f}s window ({reqs} requests)"); sys.exit(1)
print(f"{name},{gets/dt:.0f},{sets/dt:.0f},{cpu/dt*100:.1f},{cpu*1e6/reqs:.3f}")
PY
) || fail "$name" "$line"
    echo "  $line"
    results+=("$round,$line")
}

echo "kvbench comparison: memcached $(memcached -V | cut -d' ' -f2) at $server (-t 2, cpu $server_cpu);"
echo "tools on cpu $client_cpu; $threads thread(s) x $conns connection(s), depth $depth; window ${seconds}s after ${warm}s; $rounds rounds"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Prepopulate: kvbench's keys (64-byte and 14-byte names), memtier's keys.
for ks in 64 14; do
    "$KVBENCH" --server "$server" --proto tcp --keys "$keys" --key-size "$ks" --value-size 1024 \
        --load --requests 1 --connections 4 --quiet >/dev/null ||
        fail kvbench "prepopulating $keys keys of $ks bytes: exit status $?"
done
if [ -n "$MEMTIER" ]; then
    "$MEMTIER" -s 127.0.0.1 -p "$port" -P memcache_text -t 1 -c 1 --ratio 1:0 \
        --key-pattern P:P --key-minimum 1 --key-maximum $keys --requests $keys -d 1024 \
        --hide-histogram >"/tmp/kvbench-cmp.$$.prepopulate.log" 2>&1 ||
        fail memtier_benchmark "prepopulating its keys: exit status $?: $(log_tail "/tmp/kvbench-cmp.$$.prepopulate.log")"
    rm -f "/tmp/kvbench-cmp.$$.prepopulate.log"
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
python3 - "$csv" <<'EOF' || fail summary "the per-round figures in $csv do not give finite medians and plausible ratios > 0 (see the line above)"
import csv, math, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
by = {}
for r in rows:
    by.setdefault(r["round"], {})[r["tool"]] = r
def ratios(a, b):
    g, c = [], []
    for rnd in by.values():
        if a in rnd and b in rnd:
            g.append(float(rnd[a]["gets_per_sec"]) / float(rnd[b]["gets_per_sec"]))
            c.append(float(rnd[a]["cpu_us_per_request"]) / float(rnd[b]["cpu_us_per_request"]))
    if not all(math.isfinite(x) and x > 0 for x in g + c):
        sys.exit(f"{a} / {b}: a ratio is not a finite number > 0: gets {g}, cpu {c}")
    # Two load generators on the same machine and server are within a few times of each
    # other; a round 20 times apart means one side stalled (memaslap was once seen at 5
    # gets/s after its UDP timeouts), and its ratio would be a wrong figure.
    for x in g:
        if not 1 / 20 <= x <= 20:
            sys.exit(f"FAILED: {a} / {b}: a round's gets/s ratio is {x:.3g}: one side stalled "
                     f"(rounds {', '.join(f'{y:.3g}' for y in g)})")
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
