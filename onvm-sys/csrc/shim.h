/*
 * kvlb's C shim over DPDK (and ONVM): out-of-line copies of the static-inline functions and
 * macros that bindgen cannot bind. Every function is a one-line forward, except the ONVM
 * "advanced rings" helpers at the end, which do what onvm_nflib_run's loop does around its
 * packet handler (that loop and its helpers are static in onvm_nflib.c). The Rust side
 * (kvlb::datapath::dpdk, kvlb::datapath::onvm) states the contracts.
 *
 * Compiled by onvm-sys/build.rs with the same -march and include flags as the DPDK it
 * links against.
 */
#ifndef KVLB_SHIM_H
#define KVLB_SHIM_H

#include <stdint.h>

#include <rte_config.h>
#include <rte_version.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>

#ifdef KVLB_WITH_ONVM
#include <onvm_nflib.h>
#include <onvm_pkt_helper.h>
#include <onvm_flow_dir.h>
#include <onvm_threading.h>
#endif

/* ---- errors, lcores, time ---- */

/** rte_errno of the calling thread (a per-lcore TLS macro). */
int kvlb_rte_errno(void);
/** rte_rdtsc(): the time-stamp counter. */
uint64_t kvlb_rdtsc(void);

/* ---- mbufs ---- */

/** rte_pktmbuf_alloc(): a reset mbuf from mp, or NULL when the pool is empty. */
struct rte_mbuf *kvlb_pktmbuf_alloc(struct rte_mempool *mp);
/** rte_pktmbuf_alloc_bulk(): 0 and count mbufs in mbufs, or a negative errno and none. */
int kvlb_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
/** rte_pktmbuf_free(): frees every segment of m (NULL is allowed). */
void kvlb_pktmbuf_free(struct rte_mbuf *m);
/** rte_pktmbuf_free_bulk(): frees n packets (every segment of each). */
void kvlb_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n);
/** rte_pktmbuf_mtod(m, char *): the first segment's data. */
char *kvlb_pktmbuf_mtod(struct rte_mbuf *m);
/** rte_pktmbuf_append(): grows the last segment by len, NULL (unchanged) without room. */
char *kvlb_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/** rte_pktmbuf_prepend(): grows the first segment at the front, NULL without headroom. */
char *kvlb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
/** rte_pktmbuf_adj(): removes len bytes at the front, NULL if the first segment is shorter. */
char *kvlb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
/** rte_pktmbuf_trim(): removes len bytes at the end, -1 if the last segment is shorter. */
int kvlb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
/** rte_pktmbuf_headroom() / rte_pktmbuf_tailroom() of the first / last segment. */
uint16_t kvlb_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t kvlb_pktmbuf_tailroom(const struct rte_mbuf *m);

/** Offload flag a port must be configured with for receive timestamps (0 if unknown). */
uint64_t kvlb_rx_offload_timestamp(void);
/**
 * Looks up the receive-timestamp mbuf field (DPDK >= 20.11 registers it dynamically when a
 * driver first needs it). Call after the ports are configured. Returns 0 when the field
 * exists.
 */
int kvlb_rx_timestamp_init(void);
/** Stores m's receive timestamp in *ts and returns 1, or returns 0 if m carries none. */
int kvlb_mbuf_rx_timestamp(const struct rte_mbuf *m, uint64_t *ts);

/* ---- ports ---- */

uint16_t kvlb_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t kvlb_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

#ifdef KVLB_WITH_ONVM
/** onvm_get_pkt_meta(): the NF packet metadata stored in the mbuf (udata64). */
struct onvm_pkt_meta *kvlb_onvm_pkt_meta(struct rte_mbuf *m);
/** The shared packet pool's name (PKTMBUF_POOL_NAME). */
const char *kvlb_onvm_pktmbuf_pool_name(void);

/*
 * ---- "advanced rings": the NF runs its own loop over its rings instead of onvm_nflib_run
 * (as ONVM's examples/scaling_example does with -a) ----
 */

/**
 * Pins the calling thread to the NF's core (nf->thread_info.core) and tells the manager the
 * NF is ready (onvm_nflib_nf_ready: returns once the manager marked it running, so packets
 * may arrive from then on). 0 on success, negative on failure.
 */
int kvlb_onvm_nf_ready(struct onvm_nf_local_ctx *ctx);
/**
 * Whether the NF should keep running: neither ONVM's signal handler, a manager's stop
 * message, nor kvlb_onvm_stop_running has cleared ctx->keep_running.
 */
int kvlb_onvm_keep_running(struct onvm_nf_local_ctx *ctx);
/** Clears ctx->keep_running: the loop ends at its next check. */
void kvlb_onvm_stop_running(struct onvm_nf_local_ctx *ctx);
/**
 * What onvm_nflib_run's loop does after each round besides packets: handles one message
 * from the manager (stop, scale, core change, NF message) with onvm_nflib_handle_msg, and
 * stops the NF once its time to live (-t, counted from start_tsc) or packet limit (-l)
 * is reached. Returns kvlb_onvm_keep_running(ctx).
 */
int kvlb_onvm_housekeeping(struct onvm_nf_local_ctx *ctx, uint64_t start_tsc);
/**
 * In the manager's shared-core mode (-c), with nothing in the NF's rx and message rings,
 * sleeps until the manager's wakeup thread (or ONVM's signal handler) wakes the NF, as
 * onvm_nflib_run's loop does; otherwise returns at once.
 */
void kvlb_onvm_sleep_if_idle(struct onvm_nf *nf);
/** Dequeues up to n packets from the NF's rx ring into pkts; returns how many. */
uint16_t kvlb_onvm_rx_burst(struct onvm_nf *nf, struct rte_mbuf **pkts, uint16_t n);
/**
 * Hands n packets, their actions set in their metadata, to ONVM as onvm_nflib_run's loop
 * does with the packets its handler returned (ONVM_NF_HANDLE_TX): onvm_pkt_process_tx_batch
 * frees DROP packets, buffers TONF (and NEXT, through the flow director or default chain)
 * packets for their NFs' rx rings, and OUT packets for the NF's tx ring (the manager's tx
 * thread sends them out of the port); then every buffer is flushed. Counts them in the
 * NF's stats (act_*, tx, tx_drop) as ONVM does. Takes ownership of all n packets.
 */
void kvlb_onvm_send_burst(struct onvm_nf *nf, struct rte_mbuf **pkts, uint16_t n);
#endif

#endif
