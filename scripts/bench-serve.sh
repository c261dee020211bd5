#!/usr/bin/env bash
# The socket datapath's cost: `kvlb serve` in front of one memcached against memcached
# direct, get-only load with uniform keys (so kvlb's cache cannot help), the rate counted by
# memcached's own `stats` (cmd_get), rounds alternating.
#
#   scripts/bench-serve.sh [--seconds S] [--rounds N] [--keys K] [--tool kvbench|memaslap]
#                          [-- KVLB_ARGS...]
#
# Arguments after `--` are passed to `kvlb serve` (e.g. `-- --source-ports 1`).
# Prints both rates per round and the ratio kvlb/direct. Everything runs on loopback and is
# stopped by PID on exit. Build first: cargo build --release --bin kvlb --bin kvbench.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=10 rounds=3 keys=100000 tool=kvbench
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        --keys) keys=$2; shift ;;
        --tool) tool=$2; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "bench-serve.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
KVLB=target/release/kvlb KVBENCH=target/release/kvbench
[ -x "$KVLB" ] && [ -x "$KVBENCH" ] || { echo "build first: cargo build --release --bin kvlb --bin kvbench" >&2; exit 1; }
[ "$tool" = memaslap ] && ! command -v memcaslap >/dev/null && { echo "memcaslap not installed (libmemcached-tools)" >&2; exit 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM
work=$(mktemp -d /tmp/kvlb-bench-serve.XXXXXX)

port=$(( (RANDOM % 300 + 300) * 100 ))
memcached -u "$(id -un)" -l 127.0.0.1 -p "$port" -U "$port" -t 1 -m 256 &
PIDS+=($!)
sleep 0.3
"$KVBENCH" --server "127.0.0.1:$port" --keys "$keys" --load --duration 0 --value-size 32 --quiet --json > /dev/null

cmd_get() { "$KVBENCH" --stats-of "127.0.0.1:$port" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["cmd_get"])'; }

# One load run against $1 for $seconds; prints memcached's cmd_get/s over the run.
drive() {
    local target=$1 before after
    before=$(cmd_get)
    if [ "$tool" = kvbench ]; then
        # kvbench shares the 2 CPUs with memcached and kvlb: no polling for replies
        # (--spin-us 0), which would take CPU from the process under test.
        "$KVBENCH" --server "$target" --threads 1 --connections 32 --depth 4 --udp-sockets thread --spin-us 0 \
            --keys "$keys" --dist uniform --get-ratio 1 --duration "$seconds" --no-validate \
            --quiet --json > "$work/kvbench.json"
    else
        # memaslap uses keys of its own: each of its 64 connections first stores a window
        # of 1k keys (counted as sets, not in cmd_get), then gets them uniformly for the
        # rest of the run. (`-x N` would stop it after N operations, long before the run
        # ends.)
        local cfg=$work/memaslap.cfg
        printf 'key\n16 16 1\nvalue\n32 32 1\ncmd\n0 0.0\n1 1.0\n' > "$cfg"
        # memaslap sometimes aborts on an assertion in its UDP reader (`ms_sort_udp_packet:
        # Assertion req_id == c->request_id`), against memcached directly too (1 run in 10
        # here): such a run is repeated, at most twice.
        local attempt
        for attempt in 1 2 3; do
            before=$(cmd_get)
            timeout $((seconds + 5)) memcaslap -s "$target" --udp -T 1 -c 64 -w 1k -t "${seconds}s" -F "$cfg" \
                > "$work/memaslap.log" 2>&1 || true
            grep -q Assertion "$work/memaslap.log" || break
            echo "memaslap aborted on its own assertion (attempt $attempt against $target); running it again" >&2
        done
    fi
    after=$(cmd_get)
    echo $(( (after - before) / seconds ))
}

echo "get-only, uniform over $keys keys, $tool, ${seconds}s per run, memcached -t 1"
sum_d=0 sum_k=0
for r in $(seq "$rounds"); do
    direct=$(drive "127.0.0.1:$port")
    vip=$((port + 50))
    "$KVLB" serve --listen "127.0.0.1:$vip" --backend "127.0.0.1:$port" --source-port-base 0 \
        --stats-interval 0 "$@" 2> "$work/kvlb.log" &
    K=$!
    PIDS+=("$K")
    sleep 0.3
    via=$(drive "127.0.0.1:$vip")
    kill "$K"; wait "$K" 2>/dev/null || true
    echo "round $r: direct $direct gets/s, through kvlb serve $via gets/s, ratio $(awk -v a="$via" -v b="$direct" 'BEGIN { printf "%.2f", a / b }')"
    sum_d=$((sum_d + direct)) sum_k=$((sum_k + via))
done
echo "mean: direct $((sum_d / rounds)) gets/s, kvlb $((sum_k / rounds)) gets/s, kvlb/direct $(awk -v a="$sum_k" -v b="$sum_d" 'BEGIN { printf "%.2f", a / b }') (goal >= 0.6)"
