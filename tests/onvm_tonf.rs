//! kvlb's ONVM datapath handing packets to another NF: client (namespace, TAP port 0) →
//! manager → kvlb's NF (service 1) → TONF service 2 = ONVM's bridge → OUT port 1 → server
//! (namespace, TAP port 1).
//!
//! Runs when ONVM_HOME names a built openNetVM (with bridge), as root, with free
//! hugepages; otherwise prints `SKIPPED: <reason>`.

mod onvm_support;

#[cfg(not(feature = "onvm"))]
#[test]
fn onvm_tonf() {
    onvm_support::skipped(
        "built without --features onvm (needs ONVM_HOME and RTE_SDK/RTE_TARGET at build time)",
    );
}

#[cfg(feature = "onvm")]
#[test]
fn onvm_tonf() {
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    use kvlb::datapath::onvm::{NfOptions, OnvmNf};
    use kvlb::nf::Verdict;
    use onvm_support::*;

    if let Some(reason) = skip_reason() {
        skipped(&reason);
        return;
    }
    let mut m = Manager::start("tn");
    m.start_example("bridge", 2, &[]);
    let server_mac = Manager::mac_of(&m.server_ns, &m.server_if);
    std::env::set_current_dir(m.dir.path()).unwrap();
    let mut nf = OnvmNf::init(
        "kvlbtest",
        &m.nf_eal_args(),
        &["-r".into(), "1".into(), "-t".into(), "8".into()],
    )
    .expect("kvlb registers with the manager");
    let ports = nf.ports();
    let mut relay = Relay::new(7777, server_mac, ports[1].mac, Verdict::ToNf(2), false);
    let payloads: Vec<Vec<u8>> = (0..20).map(|i| format!("T{i:03}").into_bytes()).collect();
    let mut receiver = m.udp_receiver(7777, 7);
    let mut ready = String::new();
    BufReader::new(receiver.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let opts = NfOptions {
        stats_interval: Duration::ZERO,
        ..NfOptions::default()
    };
    let counters = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            m.send_udp(7777, &payloads, Duration::from_millis(50));
        });
        nf.run(&mut relay, &opts, &mut |_, _, _| {})
    });
    drop(nf);
    let mut got = received(receiver);
    got.sort();
    assert_eq!(
        got, payloads,
        "bridge sent every packet kvlb handed it out of port 1"
    );
    assert_eq!(counters.to_nf, 20);
    eprintln!("onvm_tonf: {counters:?}");
}
