/* See shim.h. */

/* rte_pktmbuf_free_bulk is still experimental in DPDK 20.05. */
#define ALLOW_EXPERIMENTAL_API 1

#include "shim.h"

#include <rte_mbuf_dyn.h>

#ifdef KVLB_WITH_ONVM
#include <semaphore.h>
#include <stdio.h>
#endif

int kvlb_rte_errno(void) { return rte_errno; }
uint64_t kvlb_rdtsc(void) { return rte_rdtsc(); }

struct rte_mbuf *kvlb_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int kvlb_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}
void kvlb_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void kvlb_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n) { rte_pktmbuf_free_bulk(mbufs, n); }
char *kvlb_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, char *); }
char *kvlb_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char *kvlb_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *kvlb_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int kvlb_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
uint16_t kvlb_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t kvlb_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

#ifdef RTE_ETH_RX_OFFLOAD_TIMESTAMP
uint64_t kvlb_rx_offload_timestamp(void) { return RTE_ETH_RX_OFFLOAD_TIMESTAMP; }
#else
uint64_t kvlb_rx_offload_timestamp(void) { return DEV_RX_OFFLOAD_TIMESTAMP; }
#endif

#ifdef RTE_MBUF_DYNFIELD_TIMESTAMP_NAME
/* DPDK >= 20.11: the timestamp is a dynamic field a driver registers. */
static int timestamp_offset = -1;
static uint64_t timestamp_flag;

int kvlb_rx_timestamp_init(void) {
    int flag_bit = rte_mbuf_dynflag_lookup(RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME, NULL);
    int offset = rte_mbuf_dynfield_lookup(RTE_MBUF_DYNFIELD_TIMESTAMP_NAME, NULL);
    if (flag_bit < 0 || offset < 0)
        return -1;
    timestamp_flag = UINT64_C(1) << flag_bit;
    timestamp_offset = offset;
    return 0;
}

int kvlb_mbuf_rx_timestamp(const struct rte_mbuf *m, uint64_t *ts) {
    if (timestamp_offset < 0 || !(m->ol_flags & timestamp_flag))
        return 0;
    *ts = *RTE_MBUF_DYNFIELD(m, timestamp_offset, const rte_mbuf_timestamp_t *);
    return 1;
}
#else
/* DPDK <= 20.08: a fixed mbuf field. */
int kvlb_rx_timestamp_init(void) { return 0; }

int kvlb_mbuf_rx_timestamp(const struct rte_mbuf *m, uint64_t *ts) {
    if (!(m->ol_flags & PKT_RX_TIMESTAMP))
        return 0;
    *ts = m->timestamp;
    return 1;
}
#endif

uint16_t kvlb_eth_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}
uint16_t kvlb_eth_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

#ifdef KVLB_WITH_ONVM
struct onvm_pkt_meta *kvlb_onvm_pkt_meta(struct rte_mbuf *m) { return onvm_get_pkt_meta(m); }
const char *kvlb_onvm_pktmbuf_pool_name(void) { return PKTMBUF_POOL_NAME; }

/* onvm_nflib.c keeps it in a static of its own; looked up by name like scaling_example. */
static struct rte_mempool *nf_msg_pool;
/* Defined by onvm_nflib.c (set from the manager's configuration by onvm_nflib_init), not
 * declared in its headers. */
extern uint8_t ONVM_NF_SHARE_CORES;

int kvlb_onvm_nf_ready(struct onvm_nf_local_ctx *ctx) {
    struct onvm_nf *nf = ctx->nf;
    nf_msg_pool = rte_mempool_lookup(_NF_MSG_POOL_NAME);
    if (nf_msg_pool == NULL)
        return -1;
    if (onvm_threading_core_affinitize(nf->thread_info.core) < 0)
        return -1;
    return onvm_nflib_nf_ready(nf);
}

int kvlb_onvm_keep_running(struct onvm_nf_local_ctx *ctx) {
    return rte_atomic16_read(&ctx->keep_running) != 0;
}

void kvlb_onvm_stop_running(struct onvm_nf_local_ctx *ctx) { rte_atomic16_set(&ctx->keep_running, 0); }

int kvlb_onvm_housekeeping(struct onvm_nf_local_ctx *ctx, uint64_t start_tsc) {
    struct onvm_nf *nf = ctx->nf;
    struct onvm_nf_msg *msg = NULL;

    if (unlikely(rte_ring_count(nf->msg_q) > 0) && rte_ring_dequeue(nf->msg_q, (void **)&msg) == 0) {
        onvm_nflib_handle_msg(msg, ctx);
        rte_mempool_put(nf_msg_pool, msg);
    }
    if (nf->flags.time_to_live &&
        unlikely((rte_get_tsc_cycles() - start_tsc) * TIME_TTL_MULTIPLIER / rte_get_timer_hz() >=
                 nf->flags.time_to_live)) {
        printf("Time to live exceeded, shutting down\n");
        rte_atomic16_set(&ctx->keep_running, 0);
    }
    if (nf->flags.pkt_limit && unlikely(nf->stats.rx >= (uint64_t)nf->flags.pkt_limit * PKT_TTL_MULTIPLIER)) {
        printf("Packet limit exceeded, shutting down\n");
        rte_atomic16_set(&ctx->keep_running, 0);
    }
    return kvlb_onvm_keep_running(ctx);
}

void kvlb_onvm_sleep_if_idle(struct onvm_nf *nf) {
    if (ONVM_NF_SHARE_CORES && unlikely(rte_ring_count(nf->rx_q) == 0) && likely(rte_ring_count(nf->msg_q) == 0)) {
        rte_atomic16_set(nf->shared_core.sleep_state, 1);
        sem_wait(nf->shared_core.nf_mutex);
    }
}

uint16_t kvlb_onvm_rx_burst(struct onvm_nf *nf, struct rte_mbuf **pkts, uint16_t n) {
    return (uint16_t)rte_ring_dequeue_burst(nf->rx_q, (void **)pkts, n, NULL);
}

void kvlb_onvm_send_burst(struct onvm_nf *nf, struct rte_mbuf **pkts, uint16_t n) {
    onvm_pkt_process_tx_batch(nf->nf_tx_mgr, pkts, n, nf);
    onvm_pkt_enqueue_tx_thread(nf->nf_tx_mgr->to_tx_buf, nf);
    onvm_pkt_flush_all_nfs(nf->nf_tx_mgr, nf);
}
#endif
