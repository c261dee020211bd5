#!/usr/bin/env bash
# kvlb's main job in one command: a skewed memcached cluster, balanced before your eyes.
#
#   scripts/demo.sh [options]
#
# Installs what it needs (Debian 12, idempotent), builds kvlb and kvbench in release mode,
# starts a cluster of real memcached servers on loopback, and drives it through kvlb with
# kvbench, hot-key handling off and then on: Zipf 0.99, Zipf 1.2, and Zipf 0.99 with the hot
# set moving half-way through. It prints a short report and saves it with plots (markdown,
# JSON, PNG) under the output folder. Everything it starts is stopped on exit, also on ^C.
#
# options:
#   --servers N      memcached servers (default 8)
#   --keys K         key space (default 1000000)
#   --duration S     seconds per phase (default 15)
#   --quick          3 phases of 8 s on 100000 keys (a smoke run)
#   --out DIR        output folder (default out/demo-<date>)
#   --dpdk           run kvlb as a standalone DPDK app (net_af_packet on veths, memcached and
#                    kvbench in network namespaces; needs root; scripts/lib/demo-dpdk.sh);
#                    default: kernel sockets on loopback (kvlb serve)
#   --tcp            clients speak memcached over TCP to kvlb serve (pipelined connections;
#                    kvlb terminates them and keeps persistent connections to the servers,
#                    which run with memcached's default of UDP off); default: UDP
#   --onvm           run kvlb as an OpenNetVM NF (needs ONVM_HOME, RTE_SDK and RTE_TARGET of a
#                    built ONVM whose manager runs with two TAP ports; scripts/lib/demo-onvm.sh)
#   --balance-target F  fail (exit 4) when a phase with hot-key handling on leaves the
#                    busiest server above F times the mean (default 1.10)
#   --no-install     skip the apt step
#   --no-build       use the binaries already in target/release
#   -h, --help       this help
#
# Exit status: 0 when every phase ran and passed; 3 when kvbench read a stale or corrupt
# value in any phase; 4 when a phase with hot-key handling on missed the balance target or
# found no hot key; other non-zero values when something failed to start or run. The report
# is written first in every case where the phases ran.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

servers=8 keys=1000000 duration=15 quick=0 out="" mode=serve install=1 build=1 balance_target=1.10 proto=udp
while [ $# -gt 0 ]; do
    case "$1" in
        --servers) servers=$2; shift ;;
        --keys) keys=$2; shift ;;
        --duration) duration=$2; shift ;;
        --quick) quick=1 ;;
        --out) out=$2; shift ;;
        --dpdk) mode=dpdk ;;
        --onvm) mode=onvm ;;
        --tcp) proto=tcp ;;
        --no-install) install=0 ;;
        --no-build) build=0 ;;
        --balance-target) balance_target=$2; shift ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$quick" = 1 ]; then keys=100000; duration=8; fi
if [ "$proto" = tcp ] && [ "$mode" != serve ]; then
    echo "demo.sh: --tcp needs the socket datapath (kvlb serve); the packet datapaths speak UDP" >&2
    exit 2
fi
out=${out:-out/demo-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
started=$(date +%s)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# --- where things run ---------------------------------------------------------------------
# With kernel sockets everything runs on loopback here. The packet datapaths put kvlb between
# two network namespaces: memcached runs in a server namespace, kvbench in a client one, and
# RUN_SERVER / RUN_CLIENT are the command prefixes that run there (empty on loopback).
RUN_CLIENT=() RUN_SERVER=() SERVER_IP=127.0.0.1 VIP_IP=127.0.0.1 NETNS_CLEANUP=""
case "$mode" in
    dpdk) . scripts/lib/demo-dpdk.sh; dpdk_check ;;
    onvm) . scripts/lib/demo-onvm.sh; onvm_check ;;
esac

# --- everything we start is recorded here and stopped on exit --------------------------
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
    if [ -n "${NETNS_CLEANUP:-}" ]; then eval "$NETNS_CLEANUP"; fi
    return 0
}
trap cleanup EXIT
trap 'echo; echo "demo.sh: interrupted"; exit 130' INT TERM

# --- install and build --------------------------------------------------------------------
. scripts/lib/deps.sh
if [ "$install" = 1 ]; then
    say "installing what the demo needs (apt, idempotent)"
    install_demo_deps
    [ "$mode" = dpdk ] && apt_install libdpdk-dev dpdk pkg-config clang libclang-dev ethtool
    [ "$mode" = onvm ] && apt_install pkg-config clang libclang-dev ethtool
fi
features=()
[ "$mode" = dpdk ] && features=(--features dpdk)
[ "$mode" = onvm ] && features=(--features onvm)
if [ "$build" = 1 ]; then
    ensure_rust
    say "building kvlb and kvbench (release)"
    # Two builds: kvbench is a crate of its own and never links DPDK, whatever kvlb's features.
    cargo build --release --quiet "${features[@]}" -p kvlb --bin kvlb
    cargo build --release --quiet -p kvbench
fi
setup_s=$(( $(date +%s) - started ))
started=$(date +%s)
KVLB=${CARGO_TARGET_DIR:-$ROOT/target}/release/kvlb
KVBENCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/kvbench
case "$mode" in
    dpdk) dpdk_setup ;;
    onvm) onvm_setup ;;
esac
# The report needs matplotlib: Debian's python3-matplotlib lives in /usr/bin/python3, but a
# python3 first on PATH (a venv) may be the one that has it.
PY=""
for py in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [ -x "$py" ] && "$py" -c 'import matplotlib' 2>/dev/null; then PY=$py; break; fi
done
[ -n "$PY" ] || { echo "demo.sh: no python3 with matplotlib (apt-get install python3-matplotlib)" >&2; exit 1; }

# --- the cluster ----------------------------------------------------------------------------
free_base() {
    # A block of 100 free ports for the servers and the VIP.
    local base used
    used=$(ss -Htuan 2>/dev/null | awk '{print $5}' | sed 's/.*://' | sort -un)
    while :; do
        base=$(( (RANDOM % 400 + 200) * 100 ))
        if ! echo "$used" | awk -v b="$base" '$1 >= b && $1 < b + 100 { f = 1 } END { exit !f }'; then
            echo "$base"
            return
        fi
    done
}
base=$(free_base)
backends=() stats_servers=() direct=()
say "starting $servers memcached servers on $SERVER_IP:$base.."
for i in $(seq 0 $((servers - 1))); do
    port=$((base + i))
    # Over TCP the servers run with memcached's default of UDP off: kvlb reaches them, its
    # own replication requests and probes included, over TCP only.
    udp_port=$port
    [ "$proto" = tcp ] && udp_port=0
    "${RUN_SERVER[@]}" memcached -u "$(id -un)" -l "$SERVER_IP" -p "$port" -U "$udp_port" -t 1 -m 256 &
    PIDS+=($!)
    backends+=(--backend "$SERVER_IP:$port")
    stats_servers+=(--stats-server "$SERVER_IP:$port")
    direct+=(--server "$SERVER_IP:$port")
done
vip_port=$((base + 90))
# Ready when the last server answers a stats request (also where iproute2's ss is missing).
for _ in $(seq 50); do
    "${RUN_SERVER[@]}" "$KVBENCH" --stats-of "$SERVER_IP:$((base + servers - 1))" --json > /dev/null 2>&1 && break
    sleep 0.1
done

say "loading $keys keys (100-byte values) into the cluster"
"${RUN_CLIENT[@]}" "$KVBENCH" "${direct[@]}" --proto "$proto" --keys "$keys" --load --duration 0 --value-size 100 \
    --threads 1 --connections 8 --depth 8 --quiet --json > "$out/load.json"

# --- kvlb, per datapath -----------------------------------------------------------------
KVLB_PID=""
VIP=$VIP_IP:$vip_port
start_kvlb() { # $1 = phase dir, rest = kvlb options
    local dir=$1; shift
    # Each start_* runs kvlb in the background: $! is its PID.
    case "$mode" in
        serve)
            "$KVLB" serve --listen "$VIP" "${backends[@]}" --source-port-base 0 \
                --stats-interval 1s --stats-json "$dir/kvlb.jsonl" "$@" 2> "$dir/kvlb.log" &
            ;;
        dpdk) start_kvlb_dpdk "$dir" "$@" ;;
        onvm) start_kvlb_onvm "$dir" "$@" ;;
    esac
    KVLB_PID=$!
    PIDS+=("$KVLB_PID")
    # Ready when a stats request through the VIP is answered.
    for _ in $(seq 100); do
        "${RUN_CLIENT[@]}" "$KVBENCH" --stats-of "$VIP" --stats-proto "$proto" --json > /dev/null 2>&1 && return 0
        kill -0 "$KVLB_PID" 2> /dev/null || break
        sleep 0.1
    done
    echo "demo.sh: kvlb did not come up; its log:" >&2
    cat "$dir/kvlb.log" >&2
    if [ -f "$dir/kvlb.out" ]; then tail -n 20 "$dir/kvlb.out" >&2; fi
    exit 1
}
stop_kvlb() {
    kill "$KVLB_PID" 2>/dev/null || true
    wait "$KVLB_PID" 2>/dev/null || true
}

# --- the phases -----------------------------------------------------------------------------
# name | key distribution | extra kvbench options | kvlb hot-key handling
phases=(
    "zipf0.99-off|zipf:0.99||off"
    "zipf0.99-on|zipf:0.99||on"
    "zipf1.2-off|zipf:1.2||off"
    "zipf1.2-on|zipf:1.2||on"
    "shift-off|zipf:0.99|--shift-at $((duration / 2))|off"
    "shift-on|zipf:0.99|--shift-at $((duration / 2))|on"
)
[ "$quick" = 1 ] && phases=("${phases[0]}" "${phases[1]}" "${phases[5]}")

for p in "${phases[@]}"; do
    IFS='|' read -r name dist extra hot <<< "$p"
    dir=$out/$name
    mkdir -p "$dir"
    say "phase $name: $dist, hot-key handling $hot, ${duration}s"
    start_kvlb "$dir" --hotkeys "$hot"
    # kvbench shares the CPUs with kvlb and the servers here: no polling for replies
    # (--spin-us 0), which would take CPU from them. Over TCP: the same 16 streams of 2
    # outstanding requests, each a pipelined connection.
    transport=(--udp-sockets thread --spin-us 0)
    [ "$proto" = tcp ] && transport=(--proto tcp)
    # shellcheck disable=SC2086
    "${RUN_CLIENT[@]}" "$KVBENCH" --server "$VIP" --threads 1 --connections 16 --depth 2 "${transport[@]}" \
        --keys "$keys" --dist "$dist" --get-ratio 0.95 --value-size 100 \
        --duration "$duration" $extra "${stats_servers[@]}" \
        --stats-csv "$dir/servers.csv" --csv "$dir/kvbench.csv" --json --quiet \
        > "$dir/kvbench.json" 2> "$dir/kvbench.log" || {
        status=$?
        # Exit status 3: stale or corrupt values read. Report it; it is a finding.
        [ "$status" = 3 ] || { cat "$dir/kvbench.log" >&2; exit "$status"; }
    }
    stop_kvlb
    tail -n 1 "$dir/kvlb.log" | sed 's/^/    kvlb: /'
done

# --- the report -----------------------------------------------------------------------------
say "writing the report"
elapsed=$(( $(date +%s) - started ))
report_mode=$mode
[ "$proto" = tcp ] && report_mode=serve-tcp
"$PY" scripts/demo_report.py "$out" --mode "$report_mode" --servers "$servers" --keys "$keys" \
    --duration "$duration" --elapsed "$elapsed" --setup "$setup_s"
echo
echo "report: $out/report.md  (JSON: $out/report.json, plots: $out/*.png)"

# --- the verdict ----------------------------------------------------------------------------
# The demo fails when what it shows did not happen: a stale or corrupt read anywhere, or a
# phase with hot-key handling on that found no hot key or left a server above the target.
"$PY" - "$out/report.json" "$balance_target" <<'PYEOF'
import json, sys
report = json.load(open(sys.argv[1]))
target = float(sys.argv[2])
stale, unbalanced = [], []
for name, p in report["phases"].items():
    if p.get("stale", 0) or p.get("corrupt", 0):
        stale.append(f"{name}: {p.get('stale', 0)} stale, {p.get('corrupt', 0)} corrupt values read")
    if name.endswith("-on"):
        if p.get("hot_keys", 0) < 1:
            unbalanced.append(f"{name}: hot-key handling on but no hot key was found")
        imb = p.get("imbalance")
        if not isinstance(imb, (int, float)) or imb != imb:
            unbalanced.append(f"{name}: no balance figure (servers' counters missing)")
        elif imb > target:
            unbalanced.append(f"{name}: busiest server at {imb:.3f}x the mean, target {target:.2f}x")
for line in stale + unbalanced:
    print(f"demo.sh: FAILED: {line}", file=sys.stderr)
if stale:
    sys.exit(3)
if unbalanced:
    sys.exit(4)
print(f"demo.sh: passed: every phase with hot-key handling on within {target:.2f}x the mean, "
      "0 stale or corrupt reads")
PYEOF
