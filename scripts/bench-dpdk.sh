#!/bin/bash
# Throughput of kvlb's packet datapaths against DPDK/ONVM baselines measured in the same run.
#
#   scripts/bench-dpdk.sh [options]          kvlb dpdk vs dpdk-testpmd --forward-mode=macswap
#   scripts/bench-dpdk.sh --onvm [options]   speed_tester -> kvlb onvm vs speed_tester -> simple_forward
#
# DPDK mode: both applications forward on one core (lcore --core) the same pcap of memcached
# GETs, looped by `net_pcap ... infinite_rx=1` on port 0, into `net_null` on port 1. kvlb runs
# its real pipeline (kvlb settings below: clients 10.0.0.9 -> VIP 10.0.0.1:11211, backends
# 10.0.0.2/3 on port 1). Rates are the per-second receive rates after a warm-up, averaged;
# rounds alternate the two applications. Goal: kvlb >= 0.5x macswap.
# Nothing answers the GETs kvlb forwards, so by default kvlb runs with `--timeout 1ms
# --down-after 4000000000`: every GET goes through the whole request lifecycle (parse,
# detect, route, track in the flow table, rewrite, and expire a millisecond later) and the
# backends are never marked down (else every frame would be a cheap `no_backend` drop).
# KVLB_BENCH_ARGS adds or overrides kvlb options.
#
# ONVM mode: a manager without ports and a circular chain speed_tester (service 1, -d 2) ->
# NF under test (service 2, -d 1) -> speed_tester; the rate is speed_tester's. Needs ONVM_HOME
# (built manager, speed_tester, simple_forward) and a kvlb built with --features onvm.
# Core layout: on a machine with at least 6 CPUs each thread has its own core (manager
# master/rx/tx on lcores 0-2, speed_tester on 3, the NF under test on 4); on fewer (this
# project's 2-CPU VM) the manager's rx and tx threads share CPU 1 and both NFs share CPU 0,
# so there the chain's rate is a shared-core figure.
#
# Options:
#   --seconds N   run time per application and round [10]
#   --rounds N    alternating rounds [2]
#   --core N      the forwarding lcore [1]
#   --frames N    distinct GET frames in the pcap [2048]
#   --kvlb PATH   kvlb binary [target/release/kvlb] (DPDK mode: --features dpdk)
#   --no-huge     run without hugepages (default: hugepages for both sides, -m 1024)
#
# Stops everything it starts by PID, also when interrupted. Runs under nice -n 10.
set -euo pipefail

repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
seconds=10 rounds=2 core=1 frames=2048 kvlb=$repo/target/release/kvlb mem=(-m 1024) onvm=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --core) core=$2; shift 2 ;;
        --frames) frames=$2; shift 2 ;;
        --kvlb) kvlb=$2; shift 2 ;;
        --no-huge) mem=(--no-huge -m 1024); shift ;;
        --onvm) onvm=1; shift ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-dpdk.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -x $kvlb ]] || { echo "no kvlb binary at $kvlb (cargo build --release --features dpdk, or --kvlb)" >&2; exit 1; }
if [[ ${mem[0]} == -m ]]; then
    free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
    if (( free < 600 )); then
        echo "need 600 free 2 MiB hugepages (have $free): echo 1024 > /proc/sys/vm/nr_hugepages; mount -t hugetlbfs nodev /mnt/huge — or pass --no-huge" >&2
        exit 1
    fi
fi

work=$(mktemp -d /tmp/kvlb-bench.XXXXXX)
# KVLB_BENCH_KEEP=1 keeps the logs (printed at the end).
keep=${KVLB_BENCH_KEEP:-0}
prefix=kvlbbench$$
# PIDs of what is running, in a file: the measuring functions run in command substitutions
# (subshells), and the cleanup trap must see their children too.
pidfile=$work/pids
: >"$pidfile"
stop_pid() {
    kill -INT "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
    if [[ -f $pidfile ]]; then
        tac "$pidfile" | while read -r pid; do stop_pid "$pid"; done
    fi
    if [[ $keep == 1 ]]; then echo "logs kept in $work" >&2; else rm -rf "$work"; fi
    rm -rf /var/run/dpdk/"$prefix"*
    find /mnt/huge /dev/hugepages -maxdepth 1 -name "${prefix}*" -delete 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Starts a command in the background (own session), records its PID.
start() {
    local log=$1
    shift
    setsid nice -n 10 "$@" </dev/null >"$log" 2>&1 &
    echo $! >>"$pidfile"
}
# Stops the most recently started command that is still recorded (SIGINT, as DPDK apps
# expect), and forgets it.
stop_last() {
    local pid
    pid=$(tail -n 1 "$pidfile")
    stop_pid "$pid"
    sed -i '$d' "$pidfile"
}
# Mean of the values after the first $1 (warm-up); of all of them when a short run left no
# more than that.
mean_after() {
    awk -v skip="$1" '{ v[NR] = $1 } END {
        from = NR > skip ? skip + 1 : 1
        for (i = from; i <= NR; i++) { s += v[i]; n++ }
        if (n) printf "%.3f", s / n; else print "nan" }'
}

# The GETs: Pareto-distributed keys, client 10.0.0.9 -> VIP 10.0.0.1:11211, to kvlb's MAC.
python3 - "$work/gets.pcap" "$frames" <<'EOF'
import random, struct, sys
path, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
def csum(h):
    s = sum(struct.unpack('>10H', h))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
with open(path, 'wb') as f:
    f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for i in range(n):
        key = b'key:%06d' % min(int(random.paretovariate(1.2)), 999999)
        payload = struct.pack('>HHHH', i & 0xffff, 0, 1, 0) + b'get ' + key + b'\r\n'
        ulen = 8 + len(payload)
        ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + ulen, i & 0xffff, 0, 64, 17, 0,
                         bytes([10, 0, 0, 9]), bytes([10, 0, 0, 1]))
        ip = ip[:10] + struct.pack('>H', csum(ip)) + ip[12:]
        udp = struct.pack('>HHHH', 40000 + i % 64, 11211, ulen, 0)
        frame = bytes.fromhex('020000000001' '020000000009') + b'\x08\x00' + ip + udp + payload
        f.write(struct.pack('<IIII', 1700000000 + i // 1000, (i % 1000) * 1000, len(frame), len(frame)))
        f.write(frame)
EOF

kvlb_args=(--client-port 0 --server-port 1 --mac 02:00:00:00:00:01
    --vip 10.0.0.1:11211 --local-ip 10.0.0.1
    --backend 10.0.0.2:11211 --backend 10.0.0.3:11211
    --neighbor 10.0.0.2=02:00:00:00:00:02 --neighbor 10.0.0.3=02:00:00:00:00:03
    --neighbor 10.0.0.9=02:00:00:00:00:09 --stats-interval 1s
    --timeout 1ms --down-after 4000000000 --flow-capacity 524288)
# shellcheck disable=SC2206
kvlb_args+=(${KVLB_BENCH_ARGS:-})

run_testpmd() {
    local log=$work/testpmd.log
    start "$log" dpdk-testpmd -l "0,$core" --main-lcore 0 --no-pci --file-prefix="${prefix}tp" "${mem[@]}" \
        --vdev "net_pcap0,rx_pcap=$work/gets.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1" \
        -- --forward-mode=macswap --nb-cores=1 --stats-period 1 --mbcache=256 --total-num-mbufs=16384
    sleep "$seconds"
    stop_last
    # Rx-pps of port 0, once per second.
    awk '/NIC statistics for port/ { port = $6 } /Rx-pps:/ && port == 0 { print $2 / 1e6 }' "$log" |
        awk '$1 > 0' | mean_after 1
}

run_kvlb_dpdk() {
    local log=$work/kvlb.log
    start "$log" "$kvlb" dpdk -l "$core" --no-pci --file-prefix="${prefix}kv" "${mem[@]}" \
        --vdev "net_pcap0,rx_pcap=$work/gets.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1" \
        -- --mbufs 16384 "${kvlb_args[@]}"
    sleep "$seconds"
    stop_last
    { grep -o '([0-9.]* Mpps)' "$log" || true; } | tr -d '(' | awk '$1 > 0 { print $1 }' | mean_after 1
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'
}

if [[ $onvm == 0 ]]; then
    command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd not found (apt-get install dpdk)" >&2; exit 1; }
    echo "kvlb dpdk vs dpdk-testpmd macswap: $frames GETs looped by net_pcap into net_null, lcore $core, ${seconds}s x $rounds rounds (${mem[*]})"
    tp_all=() kv_all=()
    for r in $(seq "$rounds"); do
        tp=$(run_testpmd)
        kv=$(run_kvlb_dpdk)
        echo "round $r: testpmd macswap $tp Mpps, kvlb dpdk $kv Mpps, ratio $(ratio "$kv" "$tp")"
        tp_all+=("$tp") kv_all+=("$kv")
    done
    tp=$(printf '%s\n' "${tp_all[@]}" | mean_after 0)
    kv=$(printf '%s\n' "${kv_all[@]}" | mean_after 0)
    echo "mean: testpmd macswap $tp Mpps, kvlb dpdk $kv Mpps, kvlb/macswap $(ratio "$kv" "$tp") (goal >= 0.5)"
    exit 0
fi

# --- ONVM: circular chain with speed_tester ---
: "${ONVM_HOME:?set ONVM_HOME to a built openNetVM v21.10}"
target=${RTE_TARGET:-x86_64-native-linuxapp-gcc}
mgr=$ONVM_HOME/onvm/onvm_mgr/$target/app/onvm_mgr
st=$ONVM_HOME/examples/speed_tester/build/app/speed_tester
sf_bin=$ONVM_HOME/examples/simple_forward/build/app/simple_forward
for b in "$mgr" "$st" "$sf_bin"; do [[ -x $b ]] || { echo "missing $b (build ONVM and its examples)" >&2; exit 1; }; done
nf_eal=(-n 3 --proc-type=secondary --no-pci --file-prefix="${prefix}onvm")

# speed_tester replays the GETs when built with ENABLE_PCAP=1, else sends its own packets.
st_args=(-d 2 -p 2000000 -c 2048)
if [[ $({ nm "$st"; nm -D "$st"; } 2>/dev/null | grep -c pcap_open_offline) -gt 0 ]]; then
    st_args+=(-o "$work/gets.pcap")
fi

if (( $(nproc) >= 6 )); then
    mgr_lcores=(-l "0,1,2") nf_mask=0x18 st_lcore=3 nf_lcore=4
    layout="one core each: manager 0-2, speed_tester 3, NF 4"
else
    mgr_lcores=("--lcores=0@0,1@1,2@1") nf_mask=0x3 st_lcore=0 nf_lcore=0
    layout="shared: manager on CPUs 0-1, both NFs on CPU 0"
fi

run_chain() {  # $1: name of the NF under test; the rest: its command
    local name=$1
    shift
    start "$work/mgr-$name.log" "$mgr" "${mgr_lcores[@]}" -n 4 --proc-type=primary \
        --base-virtaddr=0x7f000000000 --file-prefix="${prefix}onvm" --no-pci "${mem[@]}" -- -p 0 -n "$nf_mask"
    for _ in $(seq 100); do grep -q "Running master thread" "$work/mgr-$name.log" 2>/dev/null && break; sleep 0.2; done
    # The NF under test first: speed_tester sends its packets once, when it starts.
    start "$work/$name.log" "$@"
    for _ in $(seq 100); do grep -q "Finished Process Init" "$work/$name.log" 2>/dev/null && break; sleep 0.2; done
    sleep 1
    start "$work/st-$name.log" "$st" -l "$st_lcore" "${nf_eal[@]}" -- -r 1 -- "${st_args[@]}"
    sleep "$seconds"
    stop_last
    stop_last
    stop_last
    { grep -a -o 'TX pkts per second: *[0-9]*' "$work/st-$name.log" || true; } |
        awk '{ print $NF / 1e6 }' | awk '$1 > 0' | mean_after 1
}

# In the loop every packet must reach kvlb as a client GET, every time round: kvlb's one
# backend is its own VIP and its address toward backends is the clients' (10.0.0.9), so
# the GET it forwards comes back from speed_tester as a new client GET (new source port).
# Each pass is the whole request lifecycle, as in DPDK mode (the flow expires after 1 ms).
# The manager has no ports: with -d, kvlb sends every frame to service 1.
onvm_kvlb_args=(--client-port 0 --server-port 0 --mac 02:00:00:00:00:01
    --vip 10.0.0.1:11211 --local-ip 10.0.0.9 --backend 10.0.0.1:11211
    --neighbor 10.0.0.1=02:00:00:00:00:01 --neighbor 10.0.0.9=02:00:00:00:00:09
    --timeout 1ms --down-after 4000000000 --flow-capacity 524288)
# shellcheck disable=SC2206
onvm_kvlb_args+=(${KVLB_BENCH_ARGS:-})

echo "ONVM circular chain speed_tester -> NF -> speed_tester, ${seconds}s x $rounds rounds, cores $layout"
sf_all=() kv_all=()
for r in $(seq "$rounds"); do
    sf=$(run_chain simple_forward "$sf_bin" -l "$nf_lcore" "${nf_eal[@]}" -- -r 2 -- -d 1 -p 100000000)
    kv=$(run_chain kvlb "$kvlb" onvm -l "$nf_lcore" "${nf_eal[@]}" -- -r 2 -- -d 1 "${onvm_kvlb_args[@]}" --stats-interval 0)
    echo "round $r: simple_forward $sf Mpps, kvlb $kv Mpps, ratio $(ratio "$kv" "$sf")"
    sf_all+=("$sf") kv_all+=("$kv")
done
sf=$(printf '%s\n' "${sf_all[@]}" | mean_after 0)
kv=$(printf '%s\n' "${kv_all[@]}" | mean_after 0)
echo "mean: speed_tester->simple_forward $sf Mpps, speed_tester->kvlb $kv Mpps, kvlb/simple_forward $(ratio "$kv" "$sf")"
