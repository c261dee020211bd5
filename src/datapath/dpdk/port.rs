//! Ethernet ports: configured with one receive and one transmit queue, started, and stopped
//! and closed on drop (which also flushes drivers that buffer, like net_pcap's writer).

use std::cell::Cell;
use std::ffi::{c_char, CStr};
use std::fmt;
use std::marker::PhantomData;

use onvm_sys::{rte_eth_conf, rte_eth_dev_info, rte_eth_stats, rte_ether_addr, rte_mbuf};

use super::{DpdkError, Eal, Mbuf, Mempool};
use crate::config::{Mac, PortId};

/// How a port is set up.
#[derive(Clone, Debug)]
pub struct PortConfig {
    /// Receive descriptors (adjusted to the driver's limits).
    pub rx_desc: u16,
    /// Transmit descriptors (adjusted to the driver's limits).
    pub tx_desc: u16,
    /// Ask the driver for receive timestamps ([`super::RteMbuf::rx_timestamp`]).
    pub rx_timestamp: bool,
    /// Receive frames for any destination MAC (best effort: some virtual ports lack it).
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_desc: 1024,
            tx_desc: 1024,
            rx_timestamp: false,
            promiscuous: true,
        }
    }
}

/// A port's hardware/driver counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames the driver dropped for lack of receive descriptors or mbufs.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
}

/// A started ethernet port with receive and transmit queue 0.
///
/// `Send` but not `Sync`: a DPDK queue must be used by one thread at a time.
pub struct Port {
    id: u16,
    name: String,
    mac: Mac,
    _one_thread: PhantomData<Cell<()>>,
}

impl Port {
    /// The ids of the ports EAL created (from `--vdev` arguments or bound NICs).
    pub fn ids(_eal: Eal) -> Vec<PortId> {
        (0..onvm_sys::RTE_MAX_ETHPORTS as u16)
            // SAFETY: EAL is up; the call only checks the port table.
            .filter(|&p| unsafe { onvm_sys::rte_eth_dev_is_valid_port(p) } == 1)
            .map(PortId)
            .collect()
    }

    /// Configures port `id` with one queue each way, receiving into `pool`, and starts it.
    pub fn start(
        eal: Eal,
        port: PortId,
        pool: Mempool,
        cfg: &PortConfig,
    ) -> Result<Port, DpdkError> {
        if !Self::ids(eal).contains(&port) {
            return Err(DpdkError::NoSuchPort(port.0));
        }
        let PortId(id) = port;
        let mut info = rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a writable rte_eth_dev_info.
        let ret = unsafe { onvm_sys::rte_eth_dev_info_get(id, &mut info) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_info_get", ret));
        }
        let mut conf = rte_eth_conf::default();
        if cfg.rx_timestamp {
            // SAFETY: returns a constant.
            let ts = unsafe { onvm_sys::kvlb_rx_offload_timestamp() };
            if info.rx_offload_capa & ts != 0 {
                conf.rxmode.offloads |= ts;
            } else {
                log::debug!("port {id}: no receive timestamp offload; relying on the driver");
            }
        }
        // SAFETY: id is valid; conf is a fully initialised rte_eth_conf (zero = defaults).
        let ret = unsafe { onvm_sys::rte_eth_dev_configure(id, 1, 1, &conf) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_configure", ret));
        }
        let (mut rxd, mut txd) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: id is a configured port; rxd and txd are writable.
        let ret = unsafe { onvm_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rxd, &mut txd) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_adjust_nb_rx_tx_desc", ret));
        }
        // SAFETY: id is valid. A negative socket (unknown) is passed on as SOCKET_ID_ANY.
        let socket = unsafe { onvm_sys::rte_eth_dev_socket_id(id) } as u32;
        // SAFETY: id is configured with one rx queue; a NULL rxconf selects the driver's
        // defaults; pool is a live pktmbuf pool that outlives the port (pools are never
        // freed).
        let ret = unsafe {
            onvm_sys::rte_eth_rx_queue_setup(id, 0, rxd, socket, std::ptr::null(), pool.as_ptr())
        };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_rx_queue_setup", ret));
        }
        // SAFETY: as above, for the one tx queue with the driver's default txconf.
        let ret = unsafe { onvm_sys::rte_eth_tx_queue_setup(id, 0, txd, socket, std::ptr::null()) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_tx_queue_setup", ret));
        }
        // SAFETY: the port is configured with its queues set up.
        let ret = unsafe { onvm_sys::rte_eth_dev_start(id) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_dev_start", ret));
        }
        // From here on the port is started: dropping `port` stops and closes it.
        let mut port = Port {
            id,
            name: String::new(),
            mac: [0; 6],
            _one_thread: PhantomData,
        };
        if cfg.promiscuous {
            // SAFETY: the port is started.
            let ret = unsafe { onvm_sys::rte_eth_promiscuous_enable(id) };
            if ret != 0 {
                log::debug!("port {id}: promiscuous mode unavailable ({ret})");
            }
        }
        let mut addr = rte_ether_addr::default();
        // SAFETY: the port is valid; addr is writable. (Returns int on DPDK >= 19.11.)
        let ret = unsafe { onvm_sys::rte_eth_macaddr_get(id, &mut addr) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_macaddr_get", ret));
        }
        port.mac = addr.addr_bytes;
        let mut name = [0 as c_char; onvm_sys::RTE_ETH_NAME_MAX_LEN as usize];
        // SAFETY: the port is valid; name has RTE_ETH_NAME_MAX_LEN bytes, which DPDK fills
        // with a NUL-terminated string.
        if unsafe { onvm_sys::rte_eth_dev_get_name_by_port(id, name.as_mut_ptr()) } == 0 {
            // SAFETY: NUL-terminated within the buffer (see above).
            port.name = unsafe { CStr::from_ptr(name.as_ptr()) }
                .to_string_lossy()
                .into_owned();
        }
        if cfg.rx_timestamp {
            // SAFETY: looks up a registered mbuf field by name; no preconditions beyond EAL.
            if unsafe { onvm_sys::kvlb_rx_timestamp_init() } != 0 {
                log::warn!(
                    "port {id} ({}): the driver provides no receive timestamps",
                    port.name
                );
            }
        }
        Ok(port)
    }

    pub fn id(&self) -> PortId {
        PortId(self.id)
    }

    /// The driver's name for the port (e.g. `net_pcap0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Receives up to `max` frames, appending them to `out`; returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: u16) -> usize {
        out.reserve(usize::from(max));
        let len = out.len();
        // SAFETY: out has room for max more elements; Mbuf is repr(transparent) over a
        // non-null *mut rte_mbuf, so the spare capacity is an array of max mbuf pointers.
        // The driver writes n <= max valid, exclusively owned mbufs there, which then
        // become initialised elements (ownership moves into the Vec).
        unsafe {
            let dst = out.as_mut_ptr().add(len).cast::<*mut rte_mbuf>();
            let n = onvm_sys::kvlb_eth_rx_burst(self.id, 0, dst, max);
            out.set_len(len + usize::from(n));
            usize::from(n)
        }
    }

    /// Transmits frames from the front of `pkts`; the ones the driver took leave the Vec,
    /// the ones it had no room for stay (in order). Returns how many were sent.
    #[inline]
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        let len = pkts.len();
        let n = u16::try_from(len).unwrap_or(u16::MAX);
        // SAFETY: the first n elements are owned mbufs laid out as *mut rte_mbuf
        // (repr(transparent)). The driver takes ownership of the first `sent` of them; we
        // forget those by moving the unsent tail to the front and shortening the Vec, so
        // each mbuf keeps exactly one owner.
        unsafe {
            let base = pkts.as_mut_ptr();
            let sent = usize::from(onvm_sys::kvlb_eth_tx_burst(
                self.id,
                0,
                base.cast::<*mut rte_mbuf>(),
                n,
            ));
            std::ptr::copy(base.add(sent), base, len - sent);
            pkts.set_len(len - sent);
            sent
        }
    }

    /// The driver's counters.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = rte_eth_stats::default();
        // SAFETY: the port is valid; s is writable.
        let ret = unsafe { onvm_sys::rte_eth_stats_get(self.id, &mut s) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_eth_stats_get", ret));
        }
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port was started by us and is used by no one else; stop and close
        // release its queues (freeing mbufs they hold) and flush buffering drivers. Their
        // return type differs between DPDK versions (void before 20.11), hence `let _`.
        unsafe {
            #[allow(clippy::let_unit_value)]
            let _ = onvm_sys::rte_eth_dev_stop(self.id);
            #[allow(clippy::let_unit_value)]
            let _ = onvm_sys::rte_eth_dev_close(self.id);
        }
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("mac", &super::MacFmt(self.mac))
            .finish()
    }
}
