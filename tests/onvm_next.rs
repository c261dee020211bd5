//! kvlb's ONVM datapath passing packets on with ONVM_NF_ACTION_NEXT (what the core does
//! with traffic that is not kvlb's when `--pass-other` is on): nflib then looks the flow up
//! in the manager's flow director table and, finding no entry, follows the default chain
//! (the manager's: service 1, which ends there, so the packets are dropped by ONVM).
//! Regression: before the NF attached to the flow director table (onvm_flow_dir_nf_init),
//! the first NEXT dereferenced NULL inside onvm_ft_lookup_pkt and killed the NF.
//!
//! Runs when ONVM_HOME names a built openNetVM, as root, with free hugepages; otherwise
//! prints `SKIPPED: <reason>`.

mod onvm_support;

#[cfg(not(feature = "onvm"))]
#[test]
fn onvm_next() {
    onvm_support::skipped(
        "built without --features onvm (needs ONVM_HOME and RTE_SDK/RTE_TARGET at build time)",
    );
}

#[cfg(feature = "onvm")]
#[test]
fn onvm_next() {
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    use kvlb::datapath::onvm::{NfOptions, OnvmNf};
    use kvlb::nf::Verdict;
    use onvm_support::*;

    if let Some(reason) = skip_reason() {
        skipped(&reason);
        return;
    }
    let m = Manager::start("nx");
    let server_mac = Manager::mac_of(&m.server_ns, &m.server_if);
    std::env::set_current_dir(m.dir.path()).unwrap();
    let mut nf = OnvmNf::init(
        "kvlbtest",
        &m.nf_eal_args(),
        &["-r".into(), "1".into(), "-t".into(), "6".into()],
    )
    .expect("kvlb registers with the manager");
    let ports = nf.ports();
    let mut relay = Relay::new(7777, server_mac, ports[1].mac, Verdict::Next, false);
    let payloads: Vec<Vec<u8>> = (0..20).map(|i| format!("N{i:03}").into_bytes()).collect();
    let mut receiver = m.udp_receiver(7777, 5);
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
        // Returns when ONVM's time to live (-t 6) ends the NF: it survived every NEXT.
        nf.run(&mut relay, &opts, &mut |_, _, _| {})
    });
    drop(nf);
    let got = received(receiver);
    assert_eq!(relay.relayed, 20, "the NF saw every packet");
    assert_eq!(counters.next, 20, "and passed each one on with NEXT");
    assert_eq!(counters.panics, 0);
    assert!(
        got.is_empty(),
        "the default chain ends at service 1, so nothing reaches the server: {got:?}"
    );
    eprintln!("onvm_next: {counters:?}");
}
