#!/bin/bash
# Starts kvlb as an OpenNetVM NF, the way ONVM's example NFs start with their go.sh:
#
#   scripts/go.sh SERVICE_ID [kvlb args]                 NF on core $KVLB_CORE (default 0)
#   scripts/go.sh -F onvm_config/kvlb.json [kvlb args]   EAL, ONVM and kvlb settings from JSON
#   scripts/go.sh [EAL args] -- [ONVM args] -- [kvlb args]
#
# e.g.  scripts/go.sh 1 --backend 10.10.1.2:11211 --vip 10.10.0.1:11211 -p 100000
#
# Environment:
#   KVLB_BIN          the kvlb binary (default: target/release/kvlb, built with --features onvm)
#   KVLB_CORE         the EAL core for the SERVICE_ID form (default 0)
#   ONVM_FILE_PREFIX  the manager's EAL --file-prefix, if it was started with one
#
# The manager must be running. NFs are DPDK secondary processes: EAL gets
# `-n 3 --proc-type=secondary --no-pci` (plus --file-prefix) as in ONVM's start_nf.sh.
# kvlb, like every ONVM NF, writes kvlb_stats.csv into the working directory when it stops.
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 1
}

repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
bin=${KVLB_BIN:-$repo/target/release/kvlb}
if [[ ! -x $bin ]]; then
    echo "ERROR: kvlb binary not found at $bin" >&2
    echo "Build it with: cargo build --release --features onvm   (or set KVLB_BIN)" >&2
    exit 1
fi
[[ $# -ge 1 ]] || usage

if [[ -z $(pgrep -x onvm_mgr || true) ]] && ! grep -q docker /proc/1/cgroup 2>/dev/null; then
    echo "ERROR: NF cannot start without a running manager (onvm_mgr)" >&2
    exit 1
fi

base_args=(-n 3 --proc-type=secondary --no-pci)
if [[ -n ${ONVM_FILE_PREFIX:-} ]]; then
    base_args+=("--file-prefix=$ONVM_FILE_PREFIX")
fi

sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)

# Config launch: kvlb reads the JSON itself (EAL, ONVM and kvlb sections).
if [[ $1 == "-F" ]]; then
    [[ $# -ge 2 ]] || usage
    config=$(readlink -f "$2")
    shift 2
    if [[ -n ${ONVM_FILE_PREFIX:-} ]]; then
        exec "${sudo[@]}" "$bin" onvm -F "$config" "--file-prefix=$ONVM_FILE_PREFIX" -- "$@"
    fi
    exec "${sudo[@]}" "$bin" onvm -F "$config" "$@"
fi

dashes=0
for a in "$@"; do
    [[ $a == "--" ]] && dashes=$((dashes + 1))
done

if [[ $dashes -ge 2 ]]; then
    # [EAL args] -- [ONVM args] -- [kvlb args]: add the base EAL arguments.
    exec "${sudo[@]}" "$bin" onvm "${base_args[@]}" "$@"
elif [[ $dashes -eq 0 ]]; then
    service=$1
    shift
    [[ $service =~ ^[0-9]+$ ]] || usage
    exec "${sudo[@]}" "$bin" onvm -l "${KVLB_CORE:-0}" "${base_args[@]}" -- -r "$service" -- "$@"
else
    echo "ERROR: expected 0 or at least 2 '--' separators" >&2
    usage
fi
