//! Counters and the periodic report (human lines and JSON lines).
//!
//! Owns: what is counted and how it is printed. Must not: do I/O except through the writer
//! it is handed.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::nf::DropReason;

/// The core's counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub frames_in: u64,
    pub frames_out: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

impl Stats {
    pub fn count_drop(&mut self, reason: DropReason) {
        *self.drops.entry(reason.name()).or_insert(0) += 1;
    }
}
