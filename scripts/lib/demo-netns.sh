# shellcheck shell=bash disable=SC2034
# (SC2034: the variables set here are used by the scripts that source this one.)
# Shared by scripts/lib/demo-dpdk.sh and scripts/lib/demo-onvm.sh: the client and server
# network namespaces of scripts/demo.sh's packet datapaths. Source it; it defines functions
# and variables only.
#
#   client ns ($DEMO_CLIENT_NS)                          server ns ($DEMO_SERVER_NS)
#   kvbench, 10.77.0.2/24 ── kvlb's client port          kvlb's server port ── 10.77.1.2/24,
#          (kvlb answers for the VIP 10.77.0.1)          (kvlb answers for 10.77.1.1)  memcached
#   10.78.0.1/24 ───────────── management link ───────────────────────────── 10.78.0.2/24
#
# kvlb's ports carry the requests: the client talks to the VIP and the servers answer kvlb's
# local IP, both on-link, found by ARP (kvlb answers). The management link carries what must
# not go through kvlb: loading the keys into the servers and reading their own stats
# counters. The client namespace routes 10.77.1.0/24 over it, so the servers are reached
# under the very names kvlb knows them by (ketama places keys by those names).

CLIENT_IP=10.77.0.2
VIP_IP=10.77.0.1
SERVER_IP=10.77.1.2
LB_LOCAL_IP=10.77.1.1

# demo_netns_create CLIENT_NS SERVER_NS [MORE_NS...]: fresh namespaces, loopback up, IPv6 off
# (no router solicitations on kvlb's ports). Sets DEMO_CLIENT_NS and DEMO_SERVER_NS.
demo_netns_create() {
    DEMO_CLIENT_NS=$1 DEMO_SERVER_NS=$2
    local ns
    for ns in "$@"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
            net.ipv6.conf.default.disable_ipv6=1
    done
}

# demo_netns_addresses CLIENT_IF SERVER_IF: addresses on the interfaces toward kvlb (already
# in the client and server namespaces), and the management link between the namespaces.
demo_netns_addresses() {
    local cif=$1 sif=$2 c=$DEMO_CLIENT_NS s=$DEMO_SERVER_NS
    ip -n "$c" addr add "$CLIENT_IP/24" dev "$cif"
    ip -n "$s" addr add "$SERVER_IP/24" dev "$sif"
    ip link add name mgmt0 netns "$c" type veth peer name mgmt1 netns "$s"
    ip -n "$c" addr add 10.78.0.1/24 dev mgmt0
    ip -n "$s" addr add 10.78.0.2/24 dev mgmt1
    local pair
    for pair in "$c $cif" "$s $sif" "$c mgmt0" "$s mgmt1"; do
        # shellcheck disable=SC2086
        set -- $pair
        ip -n "$1" link set "$2" up
    done
    ip -n "$c" route add 10.77.1.0/24 via 10.78.0.2 dev mgmt0
    # A datagram a local socket sends on a virtual interface carries only a partial UDP
    # checksum, completed by whoever receives it in the kernel. kvlb reads the frames raw
    # and checks checksums, so the kernel sides compute them in software.
    ip netns exec "$c" ethtool -K "$cif" tx off > /dev/null
    ip netns exec "$s" ethtool -K "$sif" tx off > /dev/null
}

# demo_netns_require: root and the tools the namespaces need, or a clear message.
demo_netns_require() {
    local what=$1
    if [ "$(id -u)" != 0 ]; then
        echo "demo.sh: $what needs root (it creates network namespaces); run it with sudo" >&2
        exit 1
    fi
    local tool
    for tool in ip ethtool; do
        command -v "$tool" > /dev/null 2>&1 || {
            echo "demo.sh: $what needs '$tool' (apt-get install iproute2 ethtool)" >&2
            exit 1
        }
    done
}
