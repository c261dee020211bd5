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
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    use kvlb::datapath::onvm::{NfOptions, OnvmNf};
    use kvlb::nf::Verdict;
    use onvm_support::*;

    if let Some(reason) = skip_reason() {
        skipped(&reason);
        return;
    }
    let mut m = Manager::start("ch");
    m.start_example("simple_forward", 1, &["-d", "2"]);
    let server_mac = Manager::mac_of(&m.server_ns, &m.server_if);
    // The NF writes kvlbtest_stats.csv into the working directory when it stops.
    std::env::set_current_dir(m.dir.path()).unwrap();
    let mut nf = OnvmNf::init(
        "kvlbtest",
        &m.nf_eal_args(),
        &["-r".into(), "2".into(), "-t".into(), "8".into()],
    )
    .expect("kvlb registers with the manager");
    assert_eq!(nf.service_id(), 2);
    let ports = nf.ports();
    assert_eq!(ports.iter().map(|p| p.id).collect::<Vec<_>>(), [0, 1]);
    let mut relay = Relay::new(7777, server_mac, ports[1].mac, Verdict::Out(1), true);

    let payloads: Vec<Vec<u8>> = (0..20).map(|i| format!("A{i:03}").into_bytes()).collect();
    let mut receiver = m.udp_receiver(7777, 7);
    let mut ready = String::new();
    BufReader::new(receiver.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let opts = NfOptions {
        stats_interval: Duration::ZERO,
        ..NfOptions::default()
    };
    let counters = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            m.send_udp(7777, &payloads, Duration::from_millis(50));
        });
        // Returns when ONVM's time to live (-t 8) ends the NF.
        nf.run(&mut relay, &opts, &mut |_, _, _| {})
    });
    drop(nf);
    let got = received(receiver);
    let mut want: Vec<Vec<u8>> = payloads.clone();
    want.extend(payloads.iter().map(|p| {
        let mut e = p.clone();
        e[0] = b'E';
        e
    }));
    let mut sorted = got.clone();
    sorted.sort();
    want.sort();
    assert_eq!(
        sorted, want,
        "the server got every relayed and every emitted datagram"
    );
    assert_eq!(relay.relayed, 20);
    assert_eq!(counters.out, 20);
    assert_eq!(counters.emitted, 20);
    assert_eq!(counters.rx, counters.out + counters.dropped);
    assert_eq!(counters.panics, 0);
    eprintln!("onvm_chain: {counters:?}");
}
