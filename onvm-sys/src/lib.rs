//! Raw FFI bindings to DPDK and OpenNetVM (filled in by the FFI work).
