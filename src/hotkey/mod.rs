//! Hot-key detection: the `Detector` trait and the lossy counting family
//! (classic, weighted, decayed/adaptive, probabilistic), with Space-Saving as the baseline.
//!
//! Owns: frequency estimation over a key stream. Must not: read clocks (the caller drives
//! epochs) or know about caches and backends.
