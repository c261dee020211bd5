# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/demo.sh: idempotent installation of what kvlb needs
# on Debian 12. Source it; it defines functions only.

# apt packages the tests need (DPDK 22.11, libclang for bindgen, memcached, tshark,
# libmemcached for the ketama compatibility test, matplotlib for plots, pymemcache as a
# third-party TCP client).
KVLB_TEST_PACKAGES="shellcheck build-essential pkg-config clang libclang-dev libdpdk-dev dpdk dpdk-dev
libpcap-dev memcached tshark libmemcached-dev libmemcached-tools python3 python3-matplotlib python3-pymemcache
iproute2 ethtool curl ca-certificates"
# What the demo needs (no DPDK unless asked).
KVLB_DEMO_PACKAGES="build-essential pkg-config memcached python3 python3-matplotlib iproute2
curl ca-certificates"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PKG...: installs the packages that are missing, non-interactively.
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    # tshark asks whether non-root users may capture; answer no without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | as_root debconf-set-selections
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_test_deps() {
    # shellcheck disable=SC2086
    apt_install $KVLB_TEST_PACKAGES
}

install_demo_deps() {
    # shellcheck disable=SC2086
    apt_install $KVLB_DEMO_PACKAGES
}

# ensure_rust: cargo on PATH, installing the stable toolchain with rustup if absent.
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: installing Rust (stable) with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}
