//! kvlb as what it is for: the real `kvlb onvm` binary, with its real core, as a network
//! function of a real ONVM v21.10 manager, between clients in one network namespace and
//! real memcached servers in another, reached through the manager's two TAP ports:
//!
//! ```text
//! kvbench (client ns) ─ TAP port 0 ─ onvm_mgr ─ kvlb NF ─ TAP port 1 ─ 3 × memcached (server ns)
//! ```
//!
//! kvbench loads 2,000 keys and reads them under Zipf 1.2, checking every value it reads
//! (a stale or corrupt one fails it). Each test asserts values read, every server used,
//! 0 stale reads, and, where kvlb's caches are on, hot keys found, cached, answered from the
//! cache (`--cache-policy always`, so the cache is used whatever the load) and replicated.
//! Three placements in the chain, one test each:
//! - `alone`: kvlb is the manager's first service;
//! - `behind_simple_forward`: ONVM's simple_forward (service 1, `-d 2`) hands kvlb
//!   (service 2) every packet;
//! - `handing_frames_to_bridge`: kvlb (`-d 2`) hands every frame it sends to ONVM's bridge,
//!   which sends it out of the port opposite the one it came in on. Bridge picks that port
//!   from the packet's receive port, which is right for forwarded requests and replies but
//!   not for frames kvlb answers or makes itself (cache hits would go back out of the port
//!   they came from; replica writes and ARP requests have no receive port), so this run has
//!   hot-key handling off and the servers' MAC as a static neighbour.
//!
//! Needs ONVM_HOME (a built openNetVM with simple_forward and bridge), root and free
//! hugepages, and a kvlb built with `--features onvm`; otherwise each test reports the skip
//! (see `tests/skip`) and passes. Each test runs its own manager, one at a time.

mod onvm_support;

#[cfg(not(feature = "onvm"))]
#[test]
fn alone() {
    onvm_support::skipped(
        "built without --features onvm (needs ONVM_HOME and RTE_SDK/RTE_TARGET at build time)",
    );
}

#[cfg(feature = "onvm")]
mod with_onvm {
    use super::onvm_support::e2e::*;
    use super::onvm_support::*;
    use std::sync::Mutex;

    /// The cache answers every GET of a cached key. Under the default balance policy it
    /// answers only what the servers have no room for, and through ONVM on two shared CPUs
    /// the load (about 1,000 requests/s) leaves them room: a run may then see no cache hit.
    const ALWAYS: &[&str] = &["--cache-policy", "always"];

    /// One manager at a time: this machine has too few cores for two.
    static ONE: Mutex<()> = Mutex::new(());

    fn manager(tag: &str) -> Option<(Manager, std::sync::MutexGuard<'static, ()>)> {
        if let Some(reason) = skip_reason() {
            skipped(&reason);
            return None;
        }
        let guard = ONE.lock().unwrap_or_else(|p| p.into_inner());
        Some((Manager::start(tag), guard))
    }

    #[test]
    fn alone() {
        let Some((mut m, _one)) = manager("ea") else {
            return;
        };
        m.start_memcached();
        m.start_kvlb(1, &[], ALWAYS);
        let summary = m.kvbench(8);
        check_served(&m, &summary);
        check_hot(&m);
        stop_kvlb(&mut m);
        eprintln!("alone: {summary}");
    }

    #[test]
    fn behind_simple_forward() {
        let Some((mut m, _one)) = manager("ec") else {
            return;
        };
        m.start_memcached();
        m.start_example("simple_forward", 1, &["-d", "2"]);
        m.start_kvlb(2, &[], ALWAYS);
        let summary = m.kvbench(8);
        check_served(&m, &summary);
        check_hot(&m);
        stop_kvlb(&mut m);
    }

    #[test]
    fn handing_frames_to_bridge() {
        let Some((mut m, _one)) = manager("et") else {
            return;
        };
        m.start_memcached();
        m.start_example("bridge", 2, &[]);
        // The servers' MAC is given: an ARP request kvlb makes itself has no receive port
        // for the bridge to go by.
        let mac = Manager::mac_of(&m.server_ns, &m.server_if);
        let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        let neighbor = format!("{}={}", m.server_ip(), mac.join(":"));
        m.start_kvlb(
            1,
            &[],
            &["-d", "2", "--no-hotkeys", "--neighbor", &neighbor],
        );
        let summary = m.kvbench(6);
        check_served(&m, &summary);
        // Every frame kvlb sent went to the bridge, none out of a port itself.
        let tonf = m.screen_counter("tonf");
        assert!(tonf >= 2000, "only {tonf} frames handed to the bridge");
        assert_eq!(
            m.screen_counter("out"),
            0,
            "frames sent out of a port directly"
        );
        stop_kvlb(&mut m);
    }
}
