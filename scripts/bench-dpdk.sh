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
#
# Checks, after every run, before any figure is printed: each application was still running
# when stopped and exited 0 on SIGINT; it gave at least one rate sample; every rate and
# ratio is finite and > 0; testpmd transmitted every frame it received; kvlb forwarded every
# frame it received (out = rx: none dropped, none passed on, no transmit drops) and its
# stats (--stats-json) show no drop, so none for a bad IPv4 or UDP checksum: the pcap
# carries real checksums, as clients send, and kvlb verifies them. In ONVM mode
# speed_tester must replay the pcap (built with `make ENABLE_PCAP=1`; refused otherwise,
# since it would send its own non-memcached packets). A failed check prints
# `bench-dpdk.sh: FAILED: <side>: <reason>` on stderr and exits 1 (2: bad usage).
set -euo pipefail
# The measuring functions run in command substitutions: a failed check there must end them.
shopt -s inherit_errexit

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
        -h|--help) sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-dpdk.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
# fail SIDE REASON: the run cannot give a true figure; says which side and why, exits 1.
# (In a measuring function, which runs in a command substitution, the subshell exits 1 and
# the assignment's failure ends the script under set -e.)
fail() {
    echo "bench-dpdk.sh: FAILED: $1: $2" >&2
    exit 1
}
# Positive whole numbers only: a bad --seconds would otherwise surface as a missing sample.
for v in "seconds=$seconds" "rounds=$rounds" "frames=$frames"; do
    [[ ${v#*=} =~ ^[1-9][0-9]*$ ]] || { echo "bench-dpdk.sh: --${v%%=*} expects a positive integer, not '${v#*=}'" >&2; exit 2; }
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
trap cleanup EXIT
trap 'echo "bench-dpdk.sh: interrupted" >&2; exit 130' INT TERM

# Starts a command in the background (own session), records its PID.
start() {
    local log=$1
    shift
    setsid nice -n 10 "$@" </dev/null >"$log" 2>&1 &
    echo $! >>"$pidfile"
}
# stop_last NAME LOG: stops the most recently started command that is still recorded
# (SIGINT, as DPDK apps expect) and forgets it. Fails (naming NAME, with the end of LOG)
# when it had already exited, or did not exit 0 on SIGINT. Runs in the subshell that
# started the command (bash keeps its exit status for `wait`).
stop_last() {
    local name=$1 log=$2 pid alive=1 status=0
    pid=$(tail -n 1 "$pidfile")
    kill -0 "$pid" 2>/dev/null || alive=0
    stop_pid "$pid"
    sed -i '$d' "$pidfile"
    wait "$pid" || status=$?
    if [[ $alive == 0 ]]; then
        fail "$name" "exited (status $status) before the end of its ${seconds}s run; its log ends: $(log_tail "$log")"
    fi
    if [[ $status != 0 ]]; then
        fail "$name" "exit status $status after SIGINT (137: did not stop within 10 s); its log ends: $(log_tail "$log")"
    fi
}
# await_ready NAME LOG REGEX: waits (up to 60 s) until the most recently started command
# has written a line matching REGEX to LOG, so that its measured run starts when it runs,
# and so that the SIGINT that ends it cannot come before it handles SIGINT (background
# commands start with SIGINT ignored). Fails naming NAME when it exits first or times out.
await_ready() {
    local name=$1 log=$2 regex=$3 pid
    pid=$(tail -n 1 "$pidfile")
    for _ in $(seq 300); do
        grep -a -q -E "$regex" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || fail "$name" "exited before it was running: $(log_tail "$log")"
        sleep 0.2
    done
    fail "$name" "not running after 60 s (no line matching '$regex'): $(log_tail "$log")"
}
log_tail() {
    tail -n 5 "$1" 2>/dev/null | tr -d '\033' | tr '\n' ' ' | cut -c1-600
}
# mean_after SKIP: mean of the values on stdin after the first SKIP (warm-up), of all of
# them when a short run left no more than that. Returns 1 (printing nothing) when there
# is no value or the mean is not a finite number > 0.
mean_after() {
    awk -v skip="$1" '{ v[NR] = $1 } END {
        from = NR > skip ? skip + 1 : 1
        for (i = from; i <= NR; i++) { s += v[i]; n++ }
        if (n == 0) exit 1
        m = s / n
        if (!(m > 0) || m == m + 1 || m != m) exit 1
        printf "%.3f", m }'
}
# samples NAME [SKIP]: mean_after SKIP (default 1) of the rates on stdin; fails naming
# NAME when there are none.
samples() {
    local name=$1 skip=${2:-1} vals
    vals=$(cat)
    [[ -n $vals ]] || fail "$name" "no rate sample in its log (no statistics line with a rate > 0; a longer --seconds may help)"
    printf '%s\n' "$vals" | mean_after "$skip" || fail "$name" "rate samples give no finite mean > 0: $(echo "$vals" | tr '\n' ' ')"
}

# The GETs: Pareto-distributed keys, client 10.0.0.9 -> VIP 10.0.0.1:11211, to kvlb's MAC,
# with real IPv4 header and UDP checksums (as clients send them; kvlb verifies both, and
# skips the UDP one only when it is 0).
python3 - "$work/gets.pcap" "$frames" <<'PY'
import random, struct, sys
path, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
def csum(data):
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack('>%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = bytes([10, 0, 0, 9]), bytes([10, 0, 0, 1])
with open(path, 'wb') as f:
    f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for i in range(n):
        key = b'key:%06d' % min(int(random.paretovariate(1.2)), 999999)
        payload = struct.pack('>HHHH', i & 0xffff, 0, 1, 0) + b'get ' + key + b'\r\n'
        ulen = 8 + len(payload)
        ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + ulen, i & 0xffff, 0, 64, 17, 0, src, dst)
        ip = ip[:10] + struct.pack('>H', csum(ip)) + ip[12:]
        udp = struct.pack('>HHHH', 40000 + i % 64, 11211, ulen, 0)
        # Over the pseudo-header, header and payload; a computed 0 is sent as 0xffff.
        ck = csum(src + dst + struct.pack('>BBH', 0, 17, ulen) + udp + payload) or 0xffff
        udp = udp[:6] + struct.pack('>H', ck)
        frame = bytes.fromhex('020000000001' '020000000009') + b'\x08\x00' + ip + udp + payload
        f.write(struct.pack('<IIII', 1700000000 + i // 1000, (i % 1000) * 1000, len(frame), len(frame)))
        f.write(frame)
PY

kvlb_args=(--client-port 0 --server-port 1 --mac 02:00:00:00:00:01
    --vip 10.0.0.1:11211 --local-ip 10.0.0.1
    --backend 10.0.0.2:11211 --backend 10.0.0.3:11211
    --neighbor 10.0.0.2=02:00:00:00:00:02 --neighbor 10.0.0.3=02:00:00:00:00:03
    --neighbor 10.0.0.9=02:00:00:00:00:09 --stats-interval 1s
    --timeout 1ms --down-after 4000000000 --flow-capacity 524288)
# shellcheck disable=SC2206
kvlb_args+=(${KVLB_BENCH_ARGS:-})

# check_kvlb dpdk|onvm LOG STATS_JSON: kvlb's own account of the run, from its last counters
# (the line `rx N (R Mpps) tx N out N passed N dropped N emitted N | core in N out N
# drop.REASON N pass.REASON N ...` of `kvlb dpdk`, the stats screen of `kvlb onvm`) and the
# last --stats-json line. Every frame must have been forwarded: nothing dropped (in
# particular none for a bad IPv4 or UDP checksum), nothing passed on unchanged (frames
# that are not GETs to the VIP), no transmit or emit loss, and the core must have seen
# them as GETs. Prints a one-line summary; on a problem fails naming kvlb.
check_kvlb() {
    local verdict
    verdict=$(python3 - "$@" <<'PY'
import json, re, sys
mode, log, stats = sys.argv[1:]
text = open(log, errors="replace").read()
problems = []
if mode == "dpdk":
    lines = re.findall(r"^\[\s*[\d.]+s\] (rx \d+ \([\d.]+ Mpps\) .*)$", text, re.M)
    if not lines:
        print("no counters line in its log"); sys.exit(1)
    last = lines[-1]
    m = re.match(r"rx (\d+) \([\d.]+ Mpps\) tx (\d+) out (\d+) passed (\d+) dropped (\d+) emitted (\d+) \| core in (\d+) out (\d+)(.*)", last)
    if not m:
        print(f"cannot read its counters line: {last}"); sys.exit(1)
    rx, tx, out, passed, dropped, emitted, core_in, core_out = map(int, m.groups()[:8])
    extra = dict((k, int(v)) for k, v in re.findall(r"(\S+) (\d+)", m.group(9)))
    fwd = out
    for k in ("tx_full", "emit_failed", "unknown_port", "multi_segment", "panics"):
        if extra.get(k, 0):
            problems.append(f"{k} {extra[k]}")
    if tx < out:
        problems.append(f"transmitted {tx} of the {out} frames it forwarded")
else:
    screens = text.split("KVLB (service")
    if len(screens) < 2:
        print("no stats screen in its log"); sys.exit(1)
    last = screens[-1]
    def field(name):
        m = re.search(r"^" + re.escape(name) + r"\s*: (\d+)$", last, re.M)
        return int(m.group(1)) if m else None
    rx, out, tonf, nxt, dropped = (field(n) for n in ("rx", "out", "tonf", "next", "drop"))
    if None in (rx, out, tonf, nxt, dropped):
        print("cannot read its stats screen"); sys.exit(1)
    passed, fwd = nxt, out + tonf
    extra = dict((k, int(v)) for k, v in re.findall(r"^((?:drop|pass)\.\S+?)\s*: (\d+)$", last, re.M))
    for k in ("emit_failed", "multi_seg", "panics"):
        if field(k):
            problems.append(f"{k} {field(k)}")
if rx == 0:
    print("received no frame"); sys.exit(1)
reasons = lambda p: ", ".join(f"{k[len(p):]} {v}" for k, v in extra.items() if k.startswith(p))
if dropped:
    problems.append(f"dropped {dropped} of {rx} frames ({reasons('drop.') or 'reasons not shown'})")
if passed:
    problems.append(f"passed {passed} of {rx} frames on unchanged instead of forwarding them "
                    f"({reasons('pass.') or 'reasons not shown'}: not GETs to its VIP?)")
if fwd < rx:
    problems.append(f"forwarded {fwd} of {rx} frames")
# The core's cumulative stats, last JSON line.
try:
    lines = [l for l in open(stats) if l.strip()]
    j = json.loads(lines[-1])
except (OSError, IndexError, ValueError) as e:
    print(f"no readable --stats-json line in {stats} ({e})"); sys.exit(1)
bad_ck = {k: v for k, v in j.get("drops", {}).items() if "checksum" in k}
if bad_ck:
    problems.append("refused frames for bad checksums (" + ", ".join(f"{k} {v}" for k, v in bad_ck.items()) + ")")
if j.get("drops"):
    problems.append("stats drops " + json.dumps(j["drops"]))
if j.get("passed"):
    problems.append("stats passed " + json.dumps(j["passed"]))
reads = j.get("requests", {}).get("reads", 0)
if reads < j.get("frames_in", 0) or reads == 0:
    problems.append(f"only {reads} of its {j.get('frames_in', 0)} input frames were GETs")
if problems:
    print("; ".join(problems)); sys.exit(1)
print(f"rx {rx} forwarded {fwd} (GETs {reads}), dropped 0 (bad checksums 0), passed 0")
PY
) || fail kvlb "$verdict; its log ends: $(log_tail "$2")"
    echo "$verdict"
}

run_testpmd() {
    local log=$work/testpmd.log
    start "$log" dpdk-testpmd -l "0,$core" --main-lcore 0 --no-pci --file-prefix="${prefix}tp" "${mem[@]}" \
        --vdev "net_pcap0,rx_pcap=$work/gets.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1" \
        -- --forward-mode=macswap --nb-cores=1 --stats-period 1 --mbcache=256 --total-num-mbufs=16384
    await_ready testpmd "$log" 'start packet forwarding'
    sleep "$seconds"
    stop_last testpmd "$log"
    # Its forward statistics at exit: every frame received must have been transmitted.
    local acc
    acc=$(awk '/Accumulated forward statistics/ { a = 1 } a && /RX-packets:/ { rx = $2 }
        a && /TX-packets:/ { tx = $2; drop = $4 } END { if (a) print rx + 0, tx + 0, drop + 0 }' "$log")
    [[ -n $acc ]] || fail testpmd "no forward statistics at exit in its log: $(log_tail "$log")"
    read -r tp_rx tp_tx tp_drop <<<"$acc"
    (( tp_rx > 0 )) || fail testpmd "received no frame"
    (( tp_drop == 0 && tp_tx == tp_rx )) ||
        fail testpmd "transmitted $tp_tx of $tp_rx frames received ($tp_drop dropped)"
    # Rx-pps of port 0, once per second.
    awk '/NIC statistics for port/ { port = $6 } /Rx-pps:/ && port == 0 { print $2 / 1e6 }' "$log" |
        awk '$1 > 0' | samples testpmd
    echo " rx $tp_rx tx $tp_tx dropped 0"
}

run_kvlb_dpdk() {
    local log=$work/kvlb.log
    rm -f "$work/kvlb-stats.json"
    start "$log" "$kvlb" dpdk -l "$core" --no-pci --file-prefix="${prefix}kv" "${mem[@]}" \
        --vdev "net_pcap0,rx_pcap=$work/gets.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1" \
        -- --mbufs 16384 "${kvlb_args[@]}" --stats-json "$work/kvlb-stats.json"
    # Its first counters line: the datapath runs (and SIGINT stops it).
    await_ready kvlb "$log" '^\[ *[0-9.]+s\] rx [0-9]+ '
    sleep "$seconds"
    stop_last kvlb "$log"
    local summary
    summary=$(check_kvlb dpdk "$log" "$work/kvlb-stats.json")
    { grep -o '([0-9.]* Mpps)' "$log" || true; } | tr -d '(' | awk '$1 > 0 { print $1 }' | samples kvlb
    echo " $summary"
}

# ratio A B: A / B, both checked finite and > 0 (they come from samples/mean_after).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else exit 1 }' ||
        fail ratio "not a ratio of two rates > 0: '$1' / '$2'"
}
# Each measuring function prints "RATE CHECK-SUMMARY"; splits it into $rate and $checked.
split_result() {
    rate=${1%% *} checked=${1#* }
}

if [[ $onvm == 0 ]]; then
    command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd not found (apt-get install dpdk)" >&2; exit 1; }
    echo "kvlb dpdk vs dpdk-testpmd macswap: $frames GETs looped by net_pcap into net_null, lcore $core, ${seconds}s x $rounds rounds (${mem[*]})"
    tp_all=() kv_all=()
    for r in $(seq "$rounds"); do
        res=$(run_testpmd)
        split_result "$res"; tp=$rate tp_checked=$checked
        res=$(run_kvlb_dpdk)
        split_result "$res"; kv=$rate kv_checked=$checked
        rt=$(ratio "$kv" "$tp")
        echo "round $r: testpmd macswap $tp Mpps, kvlb dpdk $kv Mpps, ratio $rt"
        echo "  checked: testpmd $tp_checked; kvlb $kv_checked"
        tp_all+=("$tp") kv_all+=("$kv")
    done
    tp=$(printf '%s\n' "${tp_all[@]}" | mean_after 0) || fail testpmd "no mean rate over the rounds"
    kv=$(printf '%s\n' "${kv_all[@]}" | mean_after 0) || fail kvlb "no mean rate over the rounds"
    rt=$(ratio "$kv" "$tp")
    echo "mean: testpmd macswap $tp Mpps, kvlb dpdk $kv Mpps, kvlb/macswap $rt (goal >= 0.5)"
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

# speed_tester replays the GETs only when built with ENABLE_PCAP=1; without it, `-o` makes
# it exit, and without `-o` it sends packets of its own (not IPv4, not memcached) that kvlb
# passes on cheaply: no kvlb figure. Its usage text lists -o either way, and its symbols
# do not tell either: a build without ENABLE_PCAP links pcap_open_offline too (DPDK's
# pcap PMD comes with the static DPDK libraries). Its strings do: only a pcap build holds
# the replay's message ("Replaying %s pcap file"), only a build without holds the refusal
# ("To enable pcap replay"). The run then checks that it did replay the file.
st_pcap_support() {
    grep -a -q 'Replaying %s pcap file' "$1" && ! grep -a -q 'To enable pcap replay' "$1"
}
st_pcap_support "$st" ||
    fail speed_tester "$st was built without pcap support (it would send its own non-memcached packets, which kvlb only passes on): rebuild it with \`make -C $ONVM_HOME/examples/speed_tester ENABLE_PCAP=1\` (as a make argument: the Makefile's own ENABLE_PCAP=0 overrides the environment; needs libpcap-dev)"
st_args=(-d 2 -p 2000000 -c "$frames" -o "$work/gets.pcap")

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
    local mlog=$work/mgr-$name.log nlog=$work/$name.log slog=$work/st-$name.log
    rm -f "$work/kvlb-stats.json"
    start "$mlog" "$mgr" "${mgr_lcores[@]}" -n 4 --proc-type=primary \
        --base-virtaddr=0x7f000000000 --file-prefix="${prefix}onvm" --no-pci "${mem[@]}" -- -p 0 -n "$nf_mask"
    await_ready "onvm_mgr ($name run)" "$mlog" 'Running master thread'
    # The NF under test first: speed_tester sends its packets once, when it starts.
    start "$nlog" "$@"
    await_ready "$name" "$nlog" 'Finished Process Init'
    sleep 1
    # Line-buffered (stdbuf): its stdout is a file, and C stdio would hold the lines below
    # for some 100 million packets.
    start "$slog" stdbuf -oL "$st" -l "$st_lcore" "${nf_eal[@]}" -- -r 1 -- "${st_args[@]}"
    # It says which packets it sends once they are made: the pcap's, or its own.
    await_ready "speed_tester ($name run)" "$slog" 'Replaying .* pcap file|Creating [0-9]+ packets'
    sleep "$seconds"
    stop_last "speed_tester ($name run)" "$slog"
    stop_last "$name" "$nlog"
    stop_last "onvm_mgr ($name run)" "$mlog"
    grep -a -q "Replaying $work/gets.pcap pcap file" "$slog" ||
        fail "speed_tester ($name run)" "did not replay the GETs pcap: $(log_tail "$slog")"
    local summary="$name ran to the end"
    if [[ $name == kvlb ]]; then
        summary=$(check_kvlb onvm "$nlog" "$work/kvlb-stats.json")
    fi
    # Its first rate counts from its start-up (a few hundred packets/s), never a figure;
    # it prints one every 2 million packets (-p), so a short run may leave no other.
    { grep -a -o 'TX pkts per second: *[0-9]*' "$slog" || true; } |
        awk 'NR > 1 { print $NF / 1e6 }' | awk '$1 > 0' | samples "speed_tester ($name run)" 0
    echo " $summary"
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
    res=$(run_chain simple_forward "$sf_bin" -l "$nf_lcore" "${nf_eal[@]}" -- -r 2 -- -d 1 -p 100000000)
    split_result "$res"; sf=$rate sf_checked=$checked
    res=$(run_chain kvlb "$kvlb" onvm -l "$nf_lcore" "${nf_eal[@]}" -- -r 2 -- -d 1 "${onvm_kvlb_args[@]}" \
        --stats-interval 0 --stats-json "$work/kvlb-stats.json")
    split_result "$res"; kv=$rate kv_checked=$checked
    rt=$(ratio "$kv" "$sf")
    echo "round $r: simple_forward $sf Mpps, kvlb $kv Mpps, ratio $rt"
    echo "  checked: speed_tester replayed the GETs; $sf_checked; kvlb $kv_checked"
    sf_all+=("$sf") kv_all+=("$kv")
done
sf=$(printf '%s\n' "${sf_all[@]}" | mean_after 0) || fail simple_forward "no mean rate over the rounds"
kv=$(printf '%s\n' "${kv_all[@]}" | mean_after 0) || fail kvlb "no mean rate over the rounds"
rt=$(ratio "$kv" "$sf")
echo "mean: speed_tester->simple_forward $sf Mpps, speed_tester->kvlb $kv Mpps, kvlb/simple_forward $rt"
