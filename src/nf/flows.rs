//! The flow records: what the core remembers about each outstanding request, and the
//! table that matches replies to them.
//!
//! Owns: the [`FlowTable`] of [`Flow`]s, keyed by the backend id each request went to.
//! Must not: decide anything; the core reads and writes flows through [`Flows`] only.
//!
//! # Layout (measured, and not yet compact)
//! A flow is stored as the core's own [`FlowKind`] (the slot is 168 bytes). A
//! packed layout was built and measured first: a one-key client request in 48 bytes and a
//! 64-byte slot (asserted), rare parts in an out-of-line store, packed on insert and
//! unpacked on reply and expiry. Under callgrind it cut D1 misses on a replay, but `kvlb
//! dpdk` ran slower with it: 0.86x of the same code without it (median of 4 interleaved
//! runs, `--no-hotkeys`), because every insert, reply and expiry moved the request between
//! the two shapes (about 230 more instructions per request), more than the misses it saved.
//! A compact record the request path builds and reads in place (no second shape) is the
//! way to the one-cache-line goal; the packed version is in git history (commit 06ee936).

use std::time::Duration;

use super::response::Expect;
use super::{Client, Flow, FlowKind, GroupRef, Learn};
use crate::backend::BackendId;
use crate::clock::Instant;
use crate::flow::{FlowError, FlowTable, Token};

/// A live client flow as [`Flows::peek`] sees it (no owned parts).
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientPeek {
    pub client: Client,
    pub retrieval: bool,
    pub expect: Expect,
    pub learn: Option<Learn>,
    pub group: Option<GroupRef>,
}

/// A live flow as [`Flows::peek`] sees it.
#[derive(Debug)]
pub(super) enum Peek<'a> {
    Client(ClientPeek),
    Own(&'a FlowKind),
}

/// The flow table.
#[derive(Debug)]
pub(super) struct Flows {
    table: FlowTable<FlowKind, u16>,
}

fn backend_key(b: BackendId) -> u16 {
    // Config validation bounds the backend count far below 65536.
    debug_assert!(b <= usize::from(u16::MAX));
    b as u16
}

impl Flows {
    pub fn new(capacity: usize, source_ports: u16, timeout: Duration) -> Flows {
        Flows {
            table: FlowTable::new(capacity, source_ports, timeout),
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Loads the table slots the next `n` inserts will take (see
    /// [`FlowTable::touch_next`]).
    #[inline]
    pub fn touch_next(&self, n: usize) {
        self.table.touch_next(n);
    }

    /// Records `flow` sent at `now`; the flow back when the table is full.
    // The flow comes back by value so the caller can undo what it noted for it; boxing
    // it would allocate per refused request, exactly when the table is full.
    #[allow(clippy::result_large_err)]
    #[inline]
    pub fn insert(&mut self, now: Instant, flow: Flow) -> Result<Token, Flow> {
        let backend = flow.backend;
        match self.table.insert(now, backend_key(backend), flow.kind) {
            Ok(t) => Ok(t),
            Err((FlowError::Full, kind)) => Err(Flow { backend, kind }),
        }
    }

    /// The live flow `token` names, if it went to `backend`.
    #[inline]
    pub fn peek(&self, token: Token, backend: BackendId) -> Option<Peek<'_>> {
        match self.table.get(token, backend_key(backend))? {
            FlowKind::Client(cf) => Some(Peek::Client(ClientPeek {
                client: cf.client,
                retrieval: cf.retrieval,
                expect: cf.expect,
                learn: cf.learn,
                group: cf.group,
            })),
            own => Some(Peek::Own(own)),
        }
    }

    /// Takes `len` bytes from a live client flow's reply cap; false (nothing taken) when
    /// fewer are left or the flow is gone.
    pub fn take_cap(&mut self, token: Token, backend: BackendId, len: usize) -> bool {
        match self.table.get_mut(token, backend_key(backend)) {
            Some(FlowKind::Client(cf)) if cf.cap_left >= len => {
                cf.cap_left -= len;
                true
            }
            _ => false,
        }
    }

    /// Removes the flow `token` names (if it went to `backend`): its send time and itself.
    #[inline]
    pub fn remove(
        &mut self,
        now: Instant,
        token: Token,
        backend: BackendId,
    ) -> Option<(Instant, Flow)> {
        let (sent, kind) = self.table.remove(now, token, backend_key(backend))?;
        Some((sent, Flow { backend, kind }))
    }

    /// One flow whose deadline passed (see [`FlowTable::pop_expired`]).
    #[inline]
    pub fn pop_expired(&mut self, now: Instant) -> Option<(Instant, Flow)> {
        let (_, backend, sent, kind) = self.table.pop_expired(now)?;
        Some((
            sent,
            Flow {
                backend: usize::from(backend),
                kind,
            },
        ))
    }
}
