//! kvlb's ONVM datapath on a real ONVM v21.10 manager, chained behind ONVM's
//! simple_forward: client (namespace, TAP port 0) → manager → simple_forward (service 1,
//! `-d 2`) → kvlb's NF (service 2) → OUT port 1 → server (namespace, TAP port 1), plus a
//! frame kvlb emits itself for each one it relays.
//!
//! Runs when ONVM_HOME names a built openNetVM (with simple_forward), as root, with free
//! hugepages; otherwise prints `SKIPPED: <reason>`.

mod onvm_support;

#[cfg(not(feature = "onvm"))]
#[test]
fn onvm_chain() {
    onvm_support::skipped(
        "built without --features onvm (needs ONVM_HOME and RTE_SDK/RTE_TARGET at build time)",
    );
}

#[cfg(feature = "onvm")]
#[test]
fn onvm_chain() {
    use kvlb::nf::{PortId, Verdict};
    use onvm_support::*;

    if let Some(reason) = skip_reason() {
        skipped(&reason);
        return;
    }
    let mut m = Manager::start("ch");
    m.start_example("simple_forward", 1, &["-d", "2"]);
    let payloads: Vec<Vec<u8>> = (0..20).map(|i| format!("A{i:03}").into_bytes()).collect();
    let run = relay_run(&m, 2, 8, Verdict::Out(PortId(1)), true, &payloads);
    let mut want: Vec<Vec<u8>> = payloads.clone();
    want.extend(payloads.iter().map(|p| {
        let mut e = p.clone();
        e[0] = b'E';
        e
    }));
    let mut sorted = run.got.clone();
    sorted.sort();
    want.sort();
    assert_eq!(
        sorted, want,
        "the server got every relayed and every emitted datagram"
    );
    let counters = run.counters;
    assert_eq!(run.relay.relayed, 20);
    assert_eq!(counters.out, 20);
    assert_eq!(counters.emitted, 20);
    assert_eq!(counters.rx, counters.out + counters.dropped);
    assert_eq!(counters.panics, 0);
    eprintln!("onvm_chain: {counters:?}");
}
