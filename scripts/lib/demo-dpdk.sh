# shellcheck shell=bash disable=SC2034,SC2154
# (SC2034/SC2154: the variables set here are used by scripts/demo.sh, and KVLB, VIP and
# backends come from it.)
#
# scripts/demo.sh --dpdk: kvlb as a standalone DPDK application between network namespaces.
# Sourced by demo.sh; defines functions only.
#
#   client ns ──veth── lb ns: kvlb dpdk ──veth── server ns
#   (kvbench)    net_af_packet0 (lbc) │ net_af_packet1 (lbs)    (memcached)
#
# Addresses and the management link are described in scripts/lib/demo-netns.sh. kvlb's ports
# sit in a namespace of their own without addresses, so no kernel stack answers or forwards
# the frames kvlb handles. EAL runs in memory (--in-memory: no runtime or hugepage files
# left behind), on hugepages when at least 256 MiB of them are free, as a benchmark would,
# and with --no-huge otherwise; the poll loop runs on lcore $KVLB_DPDK_LCORE (default 1).
#
# Needs root, iproute2, ethtool and kvlb built with --features dpdk (demo.sh builds it).

. scripts/lib/demo-netns.sh

# dpdk_check: fails before the build if this mode cannot run here.
dpdk_check() {
    demo_netns_require "--dpdk"
}

# dpdk_setup: the namespaces, and what demo.sh needs to use them (RUN_CLIENT, RUN_SERVER,
# SERVER_IP, VIP_IP, NETNS_CLEANUP) and DPDK_EAL.
dpdk_setup() {
    local base=kvlbdemo-$$
    DEMO_LB_NS=$base-lb
    NETNS_CLEANUP="ip netns del $base-client 2>/dev/null; ip netns del $base-server 2>/dev/null; \
ip netns del $base-lb 2>/dev/null; true"
    demo_netns_create "$base-client" "$base-server" "$DEMO_LB_NS"
    ip link add name kvlb0 netns "$DEMO_CLIENT_NS" type veth peer name lbc netns "$DEMO_LB_NS"
    ip link add name kvlb1 netns "$DEMO_SERVER_NS" type veth peer name lbs netns "$DEMO_LB_NS"
    ip -n "$DEMO_LB_NS" link set lbc up
    ip -n "$DEMO_LB_NS" link set lbs up
    demo_netns_addresses kvlb0 kvlb1
    RUN_CLIENT=(ip netns exec "$DEMO_CLIENT_NS")
    RUN_SERVER=(ip netns exec "$DEMO_SERVER_NS")

    local free size_kb
    free=$(awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo)
    size_kb=$(awk '/^Hugepagesize:/ { print $2 }' /proc/meminfo)
    if [ "${free:-0}" -gt 0 ] && [ $((free * ${size_kb:-0} / 1024)) -ge 256 ] &&
        grep -qs hugetlbfs /proc/mounts; then
        DPDK_EAL=(--in-memory)
        echo "kvlb dpdk: on hugepages ($free free of $((size_kb / 1024)) MiB)"
    else
        DPDK_EAL=(--in-memory --no-huge -m 512)
        echo "kvlb dpdk: --no-huge (fewer than 256 MiB of free hugepages)"
    fi
    DPDK_EAL+=(--no-pci --no-telemetry --log-level=warning -l "${KVLB_DPDK_LCORE:-1}"
        --vdev "net_af_packet0,iface=lbc" --vdev "net_af_packet1,iface=lbs")
}

# start_kvlb_dpdk DIR [kvlb options...]: kvlb dpdk in the background (so that $! is its PID:
# `ip netns exec` execs it), stats in DIR/kvlb.jsonl, the core's log in DIR/kvlb.log and the
# datapath's report lines in DIR/kvlb.out.
start_kvlb_dpdk() {
    local dir=$1
    shift
    ip netns exec "$DEMO_LB_NS" "$KVLB" dpdk "${DPDK_EAL[@]}" -- \
        --client-port 0 --server-port 1 --vip "$VIP" --local-ip "$LB_LOCAL_IP" \
        --trusted 10.77.0.0/24 "${backends[@]}" \
        --stats-interval 1s --stats-json "$dir/kvlb.jsonl" "$@" \
        > "$dir/kvlb.out" 2> "$dir/kvlb.log" &
}
