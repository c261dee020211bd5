#!/usr/bin/env bash
# The socket datapath's cost: `kvlb serve` in front of one memcached against memcached
# direct, get-only load with uniform keys (so kvlb's cache cannot help), the rate counted by
# memcached's own `stats` (cmd_get), rounds alternating.
#
#   scripts/bench-serve.sh [--seconds S] [--rounds N] [--keys K] [--tool kvbench|memaslap]
#                          [--tcp] [--value-size BYTES] [-- KVLB_ARGS...]
#
# Arguments after `--` are passed to `kvlb serve` (e.g. `-- --source-ports 1`).
# Prints both rates per round and the ratio kvlb/direct. With --tcp, the load is memcached
# over TCP (kvbench: 32 pipelined connections of depth 4; memaslap: 64 connections), and
# each round also measures twemproxy (Debian's `nutcracker`, one server pool, same load)
# and prints kvlb/twemproxy. --value-size sets the values' size (default 32). Everything
# runs on loopback and is stopped by PID on exit. Build first: cargo build --release -p kvlb
# -p kvbench.
#
# Checks before any figure is printed: memcached answers `stats`; kvlb serve answers a
# set/get round trip through the VIP (within 10 s) before each measured run, is still
# running after it, exits 0 on SIGTERM, and its final stats (--stats-json) show no frame
# dropped or passed on; the load tool exits 0 (memaslap: at most two reruns after its own
# known assertion) and memcached counted gets in the window; every rate and ratio is > 0.
# A failed check prints `bench-serve.sh: FAILED: <side>: <reason>` on stderr and exits 1.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
seconds=10 rounds=3 keys=100000 tool=kvbench proto=udp value_size=32
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        --keys) keys=$2; shift ;;
        --tool) tool=$2; shift ;;
        --tcp) proto=tcp ;;
        --value-size) value_size=$2; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "bench-serve.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
for v in "seconds=$seconds" "rounds=$rounds" "keys=$keys" "value-size=$value_size"; do
    [[ ${v#*=} =~ ^[1-9][0-9]*$ ]] || { echo "bench-serve.sh: --${v%%=*} expects a positive integer, not '${v#*=}'" >&2; exit 2; }
done
case "$tool" in kvbench|memaslap) ;; *) echo "bench-serve.sh: --tool expects kvbench or memaslap, not '$tool'" >&2; exit 2 ;; esac
KVLB=${KVLB:-target/release/kvlb} KVBENCH=${KVBENCH:-target/release/kvbench}
[ -x "$KVLB" ] && [ -x "$KVBENCH" ] || { echo "build first: cargo build --release -p kvlb -p kvbench" >&2; exit 1; }
[ "$tool" = memaslap ] && ! command -v memcaslap >/dev/null && { echo "memcaslap not installed (libmemcached-tools)" >&2; exit 1; }
[ "$proto" = tcp ] && ! command -v nutcracker >/dev/null && { echo "nutcracker (twemproxy) not installed (apt-get install nutcracker)" >&2; exit 1; }

# fail SIDE REASON: says which side failed and why, on stderr, and exits 1 (from a command
# substitution too: inherit_errexit ends the script on the failed assignment).
fail() {
    echo "bench-serve.sh: FAILED: $1: $2" >&2
    exit 1
}
log_tail() { tail -n 5 "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-600; }

# The PIDs of the memcached and the kvlb serve running now (empty when none).
mc='' K='' T=''
work=$(mktemp -d /tmp/kvlb-bench-serve.XXXXXX)
cleanup() {
    for p in "$K" "$mc" "$T"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# memcached on a free port (it exits at once when the port is taken), below Linux's
# ephemeral range (32768 and up) like every port this script listens on (port + 50, 60,
# 61): the load's own connections can then never hold one of them.
for _ in $(seq 10); do
    port=$(( (RANDOM % 120 + 200) * 100 ))
    memcached -u "$(id -un)" -l 127.0.0.1 -p "$port" -U "$port" -t 1 -m 256 2> "$work/memcached.log" &
    mc=$!
    sleep 0.3
    kill -0 "$mc" 2>/dev/null && "$KVBENCH" --stats-of "127.0.0.1:$port" >/dev/null 2>&1 && break
    kill "$mc" 2>/dev/null || true
    mc=
done
[ -n "$mc" ] || fail memcached "did not start or does not answer stats: $(log_tail "$work/memcached.log")"
"$KVBENCH" --server "127.0.0.1:$port" --proto tcp --keys "$keys" --load --duration 0 --value-size "$value_size" \
    --quiet --json > /dev/null ||
    fail kvbench "could not load $keys keys into memcached"

cmd_get() {
    "$KVBENCH" --stats-of "127.0.0.1:$port" --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["cmd_get"])' 2>/dev/null ||
        fail memcached "does not answer stats (exited: $(kill -0 "$mc" 2>/dev/null && echo no || echo yes))"
}

# ready TARGET: a set/get round trip through TARGET (16 keys set, 64 gets that must all hit
# with the values set), within 10 s; returns 1 otherwise, with the reason in $work/ready.why.
ready() {
    local status=0
    timeout 10 "$KVBENCH" --server "$1" --proto "$proto" --keys 16 --key-prefix ready: --value-size 32 --load \
        --requests 64 --get-ratio 1 --timeout 500 --quiet --json > "$work/ready.json" 2> "$work/ready.err" || status=$?
    if [ "$status" != 0 ]; then
        echo "kvbench exit status $status: $(log_tail "$work/ready.err")" > "$work/ready.why"
        return 1
    fi
    python3 - "$work/ready.json" > "$work/ready.why" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
l = s.get("load") or {}
print(f"sets stored {l.get('stored')} of {l.get('keys')} (timeouts {l.get('timeouts')}, errors {l.get('errors')}); "
      f"gets {s.get('gets')}: hits {s.get('hits')}, misses {s.get('misses')}, timeouts {s.get('timeouts')}, errors {s.get('errors')}")
ok = s.get("gets", 0) >= 1 and s.get("hits", 0) == s["gets"] and s.get("timeouts", 1) == 0 and s.get("errors", 1) == 0
sys.exit(0 if ok else 1)
PY
}

# One load run against $1 for $seconds; prints memcached's cmd_get/s over the run. $2 names
# the side being measured in failures.
drive() {
    local target=$1 side=$2 before after
    before=$(cmd_get)
    if [ "$tool" = kvbench ]; then
        # kvbench shares the 2 CPUs with memcached and kvlb: no polling for replies
        # (--spin-us 0), which would take CPU from the process under test.
        local transport=(--udp-sockets thread --spin-us 0)
        [ "$proto" = tcp ] && transport=(--proto tcp)
        "$KVBENCH" --server "$target" --threads 1 --connections 32 --depth 4 "${transport[@]}" \
            --keys "$keys" --dist uniform --get-ratio 1 --duration "$seconds" --no-validate \
            --value-size "$value_size" --max-udp-value "$value_size" \
            --quiet --json > "$work/kvbench.json" 2> "$work/kvbench.err" ||
            fail "kvbench ($side)" "exit status $?: $(log_tail "$work/kvbench.err")"
        python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["ops_per_sec"] > 0 else 1)' \
            "$work/kvbench.json" 2>/dev/null || fail "kvbench ($side)" "no request completed (no reply came back)"
    else
        # memaslap uses keys of its own: each of its 64 connections first stores a window
        # of 1k keys (counted as sets, not in cmd_get), then gets them uniformly for the
        # rest of the run. (`-x N` would stop it after N operations, long before the run
        # ends.)
        local cfg=$work/memaslap.cfg
        printf 'key\n16 16 1\nvalue\n%s %s 1\ncmd\n0 0.0\n1 1.0\n' "$value_size" "$value_size" > "$cfg"
        local udp=(--udp)
        [ "$proto" = tcp ] && udp=()
        # memaslap sometimes aborts on an assertion in its UDP reader (`ms_sort_udp_packet:
        # Assertion req_id == c->request_id`), against memcached directly too (1 run in 10
        # here): such a run is repeated, at most twice, and the aborted window is dropped.
        local attempt status
        for attempt in 1 2 3; do
            before=$(cmd_get)
            status=0
            timeout $((seconds + 5)) memcaslap -s "$target" "${udp[@]}" -T 1 -c 64 -w 1k -t "${seconds}s" -F "$cfg" \
                > "$work/memaslap.log" 2>&1 || status=$?
            if grep -q Assertion "$work/memaslap.log"; then
                [ "$attempt" = 3 ] && fail "memaslap ($side)" "aborted on its own assertion 3 times: $(log_tail "$work/memaslap.log")"
                echo "memaslap aborted on its own assertion (attempt $attempt against $target); running it again" >&2
                continue
            fi
            [ "$status" = 0 ] || fail "memaslap ($side)" "exit status $status (124: did not finish in $((seconds + 5)) s): $(log_tail "$work/memaslap.log")"
            break
        done
    fi
    after=$(cmd_get)
    (( after > before )) || fail "$side" "memcached counted no get in the ${seconds}s window"
    echo $(( (after - before) / seconds ))
}

# check_kvlb LOG STATS: kvlb serve's final --stats-json line shows no drop and no pass,
# and its exit summary no send error (a datagram it could not forward).
check_kvlb() {
    local verdict
    verdict=$(python3 - "$1" "$2" <<'PY'
import json, re, sys
m = re.search(r"kvlb serve: stopped; (\d+) datagrams in .* (\d+) out .* (\d+) send errors", open(sys.argv[1], errors="replace").read())
if not m:
    print("no exit summary (kvlb serve: stopped; ...) in its log"); sys.exit(1)
dgin, dgout, send_errors = map(int, m.groups())
try:
    j = json.loads([l for l in open(sys.argv[2]) if l.strip()][-1])
except (OSError, IndexError, ValueError) as e:
    print(f"no final --stats-json line ({e})"); sys.exit(1)
p = []
if j.get("drops"): p.append("dropped frames " + json.dumps(j["drops"]))
if j.get("passed"): p.append("passed frames on " + json.dumps(j["passed"]))
if j.get("requests", {}).get("reads", 0) == 0: p.append("saw no GET")
if send_errors: p.append(f"{send_errors} send errors (datagrams it could not forward)")
if p: print("; ".join(p)); sys.exit(1)
print(f"kvlb handled {j['requests']['reads']} GETs ({dgin} datagrams in, {dgout} out), dropped 0, passed 0, send errors 0")
PY
) || fail "kvlb serve" "$verdict; its log ends: $(log_tail "$1")"
    echo "$verdict"
}

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || fail cpu "cannot read /proc/$1/stat"
}

# us_per_get TICKS RATE: CPU microseconds per get, from ticks over the run and its rate.
us_per_get() {
    awk -v t="$1" -v r="$2" -v s="$seconds" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { if (t > 0 && r > 0) printf "%.2f", t / hz * 1e6 / (r * s); else exit 1 }' ||
        fail cpu "no CPU time or no rate measured ($1 ticks, $2 gets/s)"
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else exit 1 }' ||
        fail ratio "not a ratio of two rates > 0: '$1' / '$2'"
}

# One twemproxy run in front of the same memcached (memcached over TCP only); prints the
# rate as drive does.
twemproxy() {
    local listen=$((port + 60))
    cat > "$work/nutcracker.yml" <<YML
kvlb_bench:
  listen: 127.0.0.1:$listen
  hash: fnv1a_64
  distribution: ketama
  timeout: 1000
  server_connections: 2
  servers:
    - 127.0.0.1:$port:1
YML
    nutcracker -c "$work/nutcracker.yml" -s $((port + 61)) -o "$work/nutcracker.log" &
    T=$!
    local up=0
    for _ in $(seq 20); do
        sleep 0.2
        kill -0 "$T" 2>/dev/null || { T=; fail twemproxy "exited at start: $(log_tail "$work/nutcracker.log")"; }
        if ready "127.0.0.1:$listen"; then up=1; break; fi
    done
    [ "$up" = 1 ] || fail twemproxy "no set/get round trip through 127.0.0.1:$listen: $(cat "$work/ready.why")"
    local c0 rate
    c0=$(cpu_ticks "$T")
    rate=$(drive "127.0.0.1:$listen" twemproxy)
    echo "$rate $(us_per_get $(( $(cpu_ticks "$T") - c0 )) "$rate")"
    kill "$T"
    wait "$T" 2>/dev/null || true
    T=
}

echo "get-only, uniform over $keys keys, $value_size-byte values, $tool over $proto, ${seconds}s per run, memcached -t 1"
sum_d=0 sum_k=0 sum_t=0 sum_kc=0 sum_tc=0
for r in $(seq "$rounds"); do
    direct=$(drive "127.0.0.1:$port" direct)
    tw=0 tw_cpu=0
    [ "$proto" = tcp ] && read -r tw tw_cpu <<< "$(twemproxy)"
    vip=$((port + 50))
    "$KVLB" serve --listen "127.0.0.1:$vip" --backend "127.0.0.1:$port" --source-port-base 0 \
        --stats-interval 0 --stats-json "$work/kvlb-stats.json" "$@" 2> "$work/kvlb.log" &
    K=$!
    up=0
    for _ in $(seq 20); do
        sleep 0.2
        kill -0 "$K" 2>/dev/null || { K=; fail "kvlb serve" "exited at start: $(log_tail "$work/kvlb.log")"; }
        if ready "127.0.0.1:$vip"; then up=1; break; fi
    done
    [ "$up" = 1 ] || fail "kvlb serve" "no set/get round trip through its VIP 127.0.0.1:$vip after 20 tries: $(cat "$work/ready.why")"
    c0=$(cpu_ticks "$K")
    via=$(drive "127.0.0.1:$vip" "through kvlb")
    k_cpu=$(us_per_get $(( $(cpu_ticks "$K") - c0 )) "$via")
    if ! kill -0 "$K" 2>/dev/null; then
        st=0; wait "$K" || st=$?
        K=
        fail "kvlb serve" "died during the run (status $st): $(log_tail "$work/kvlb.log")"
    fi
    kill "$K"
    st=0; wait "$K" || st=$?
    K=
    [ "$st" = 0 ] || fail "kvlb serve" "exit status $st after SIGTERM: $(log_tail "$work/kvlb.log")"
    checked=$(check_kvlb "$work/kvlb.log" "$work/kvlb-stats.json")
    rt=$(ratio "$via" "$direct")
    if [ "$proto" = tcp ]; then
        echo "round $r: direct $direct gets/s, twemproxy $tw gets/s, through kvlb serve $via gets/s, kvlb/direct $rt, kvlb/twemproxy $(ratio "$via" "$tw")"
        echo "  CPU per get: kvlb $k_cpu us, twemproxy $tw_cpu us, twemproxy/kvlb $(ratio "$tw_cpu" "$k_cpu")"
        sum_kc=$(awk -v a="$sum_kc" -v b="$k_cpu" 'BEGIN { print a + b }')
        sum_tc=$(awk -v a="$sum_tc" -v b="$tw_cpu" 'BEGIN { print a + b }')
    else
        echo "round $r: direct $direct gets/s, through kvlb serve $via gets/s, ratio $rt"
    fi
    echo "  checked: $checked"
    sum_d=$((sum_d + direct)) sum_k=$((sum_k + via)) sum_t=$((sum_t + tw))
done
rt=$(ratio "$sum_k" "$sum_d")
if [ "$proto" = tcp ]; then
    echo "mean: direct $((sum_d / rounds)) gets/s, twemproxy $((sum_t / rounds)) gets/s, kvlb $((sum_k / rounds)) gets/s, kvlb/direct $rt (goal >= 0.6), kvlb/twemproxy $(ratio "$sum_k" "$sum_t") (goal >= 2)"
    echo "mean CPU per get: kvlb $(awk -v a="$sum_kc" -v n="$rounds" 'BEGIN { printf "%.2f", a / n }') us, twemproxy $(awk -v a="$sum_tc" -v n="$rounds" 'BEGIN { printf "%.2f", a / n }') us, twemproxy/kvlb $(ratio "$sum_tc" "$sum_kc")"
else
    echo "mean: direct $((sum_d / rounds)) gets/s, kvlb $((sum_k / rounds)) gets/s, kvlb/direct $rt (goal >= 0.6)"
fi
