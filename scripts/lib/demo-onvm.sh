# shellcheck shell=bash disable=SC2034,SC2154
# (SC2034/SC2154: the variables set here are used by scripts/demo.sh, and KVLB, VIP and
# backends come from it.)
#
# scripts/demo.sh --onvm: kvlb as an OpenNetVM network function. Sourced by demo.sh; defines
# functions only.
#
# What it expects (see README.md, "On OpenNetVM"):
# - ONVM_HOME naming a built openNetVM v21.10, RTE_SDK and RTE_TARGET naming the DPDK 20.05
#   it was built with (demo.sh builds kvlb against them with --features onvm);
# - a running onvm_mgr with two net_tap ports: port 0 toward the clients, port 1 toward the
#   servers, whose kernel interfaces ($KVLB_ONVM_CLIENT_TAP, default kvlbtap0, and
#   $KVLB_ONVM_SERVER_TAP, default kvlbtap1) are in the root network namespace, and no NF
#   holding service $KVLB_ONVM_SERVICE (default 1, where the manager sends what its ports
#   receive). For example, on a 2-CPU machine:
#
#     cd $ONVM_HOME/onvm && ./onvm_mgr/$RTE_TARGET/onvm_mgr --lcores=0@0,1@1,2@1 -n 4 \
#         --proc-type=primary --base-virtaddr=0x7f000000000 --file-prefix=kvlbonvm --no-pci \
#         --vdev=net_tap0,iface=kvlbtap0 --vdev=net_tap1,iface=kvlbtap1 -- -p 3 -n 0x3
#
# The demo moves the two TAP interfaces into its client and server namespaces (layout and
# addresses in scripts/lib/demo-netns.sh: kvbench in the client namespace, memcached in the
# server one) and moves them back to the root namespace on exit, so the manager can serve
# the next run. kvlb runs in each phase as the NF of that service: a DPDK secondary process
# with the manager's --file-prefix (read from the manager's command line), on lcore
# $KVLB_ONVM_LCORE (default 1), writing kvlb_stats.csv into the phase folder when it stops.
# It answers ARP with --mac 02:00:00:00:00:01: a TAP port's own MAC is also its kernel
# interface's, and the namespaces would take frames to that address for their own.

. scripts/lib/demo-netns.sh

ONVM_CLIENT_TAP=${KVLB_ONVM_CLIENT_TAP:-kvlbtap0}
ONVM_SERVER_TAP=${KVLB_ONVM_SERVER_TAP:-kvlbtap1}

onvm_fail() {
    echo "demo.sh --onvm: $*" >&2
    echo "  (see README.md, 'On OpenNetVM', and the header of scripts/lib/demo-onvm.sh)" >&2
    exit 1
}

# onvm_check: fails before the build if this mode cannot run here.
onvm_check() {
    demo_netns_require "--onvm"
    [ -n "${ONVM_HOME:-}" ] || onvm_fail "ONVM_HOME is not set: point it at a built openNetVM v21.10"
    [ -d "$ONVM_HOME/onvm" ] || onvm_fail "ONVM_HOME=$ONVM_HOME holds no onvm/ folder"
    [ -n "${RTE_SDK:-}" ] && [ -n "${RTE_TARGET:-}" ] ||
        onvm_fail "RTE_SDK and RTE_TARGET must name the DPDK 20.05 build ONVM uses (kvlb links against it)"
    ONVM_MGR_PID=$(pgrep -x onvm_mgr | head -n 1 || true)
    [ -n "$ONVM_MGR_PID" ] || onvm_fail "no onvm_mgr is running: start the manager with two TAP ports first"
    # The NF must share the manager's EAL file prefix.
    ONVM_PREFIX=$(tr '\0' '\n' < "/proc/$ONVM_MGR_PID/cmdline" |
        awk '/^--file-prefix=/ { sub(/^--file-prefix=/, ""); print; exit }
             p { print; exit } /^--file-prefix$/ { p = 1 }' || true)
    local tap
    for tap in "$ONVM_CLIENT_TAP" "$ONVM_SERVER_TAP"; do
        ip link show dev "$tap" > /dev/null 2>&1 && continue
        local ns where=""
        for ns in $(ip netns list | awk '{ print $1 }'); do
            if ip -n "$ns" link show dev "$tap" > /dev/null 2>&1; then where=$ns; fi
        done
        if [ -n "$where" ]; then
            onvm_fail "TAP interface $tap is in network namespace $where, not the root one: move it back with 'ip -n $where link set $tap netns 1'"
        fi
        onvm_fail "no TAP interface $tap: start onvm_mgr with --vdev=net_tap0,iface=$ONVM_CLIENT_TAP --vdev=net_tap1,iface=$ONVM_SERVER_TAP (or set KVLB_ONVM_CLIENT_TAP / KVLB_ONVM_SERVER_TAP)"
    done
    echo "onvm: manager pid $ONVM_MGR_PID, file prefix '${ONVM_PREFIX:-rte}', TAPs $ONVM_CLIENT_TAP (port 0) and $ONVM_SERVER_TAP (port 1)"
}

# onvm_setup: the namespaces around the manager's TAP ports, and what demo.sh needs to use
# them (RUN_CLIENT, RUN_SERVER, SERVER_IP, VIP_IP, NETNS_CLEANUP).
onvm_setup() {
    local base=kvlbdemo-$$
    # Back to the root namespace first (deleting a namespace would delete the TAPs with it).
    NETNS_CLEANUP="ip -n $base-client link set $ONVM_CLIENT_TAP netns 1 2>/dev/null; \
ip -n $base-server link set $ONVM_SERVER_TAP netns 1 2>/dev/null; \
ip netns del $base-client 2>/dev/null; ip netns del $base-server 2>/dev/null; true"
    demo_netns_create "$base-client" "$base-server"
    ip link set "$ONVM_CLIENT_TAP" netns "$DEMO_CLIENT_NS"
    ip link set "$ONVM_SERVER_TAP" netns "$DEMO_SERVER_NS"
    demo_netns_addresses "$ONVM_CLIENT_TAP" "$ONVM_SERVER_TAP"
    RUN_CLIENT=(ip netns exec "$DEMO_CLIENT_NS")
    RUN_SERVER=(ip netns exec "$DEMO_SERVER_NS")
}

# start_kvlb_onvm DIR [kvlb options...]: the NF in the background, its working directory DIR
# (the subshell execs kvlb, so $! is kvlb's PID); stats in DIR/kvlb.jsonl, the core's log in
# DIR/kvlb.log, ONVM's stats screen in DIR/kvlb.out.
start_kvlb_onvm() {
    local dir=$1
    shift
    local eal=(-l "${KVLB_ONVM_LCORE:-1}" -n 3 --proc-type=secondary --no-pci)
    [ -n "$ONVM_PREFIX" ] && eal+=("--file-prefix=$ONVM_PREFIX")
    (cd "$dir" && exec "$KVLB" onvm "${eal[@]}" -- -r "${KVLB_ONVM_SERVICE:-1}" -- \
        --mac 02:00:00:00:00:01 --client-port 0 --server-port 1 --vip "$VIP" \
        --local-ip "$LB_LOCAL_IP" --trusted 10.77.0.0/24 "${backends[@]}" \
        --stats-interval 1s --stats-json "$dir/kvlb.jsonl" "$@") \
        > "$dir/kvlb.out" 2> "$dir/kvlb.log" &
}
