//! A common face for everything the experiments compare: kvlb's own detectors and the
//! external baselines from crates.io, Apache DataSketches' frequent-items sketch
//! (`datasketches`, a Misra-Gries variant with reverse purging) and HeavyKeeper
//! (`heavykeeper`).
//!
//! The baselines are measured, not used on the packet path: they have no hot-set
//! tracking and no epochs.

use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use heavykeeper::TopK;

use kvlb::hotkey::{sort_items, threshold, AnyDetector, Detector, HotItem, ReportRule};

/// Something that counts a key stream and reports frequent keys.
pub trait Summary {
    /// A label for tables and plots.
    fn label(&self) -> String;
    /// Counts one request (`weight` ignored by unweighted summaries).
    fn observe(&mut self, key: &[u8], weight: u64);
    /// Keys reported at `support` (of the summary's total weight), hottest first.
    fn report(&self, support: f64) -> Vec<HotItem>;
    /// Keys reported at `support` under `rule` (summaries without rules ignore it).
    fn report_rule(&self, support: f64, _rule: ReportRule) -> Vec<HotItem> {
        self.report(support)
    }
    /// The set a balancer would act on now (kvlb detectors: the hot set; baselines: their
    /// report at `support`).
    fn hot_now(&self, support: f64) -> Vec<HotItem> {
        self.report(support)
    }
    /// Ends an epoch (only kvlb's decayed detector has them).
    fn rotate(&mut self) {}
    /// Keys tracked now / at most so far.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn peak_len(&self) -> usize;
    /// Bytes held now.
    fn memory_bytes(&self) -> usize;
}

/// A kvlb detector reporting with a fixed rule.
#[derive(Debug)]
pub struct DetectorSummary {
    pub detector: AnyDetector,
    pub rule: ReportRule,
    pub label: String,
}

impl DetectorSummary {
    pub fn new(detector: AnyDetector, rule: ReportRule, label: impl Into<String>) -> Self {
        DetectorSummary {
            detector,
            rule,
            label: label.into(),
        }
    }
}

impl Summary for DetectorSummary {
    fn label(&self) -> String {
        self.label.clone()
    }
    #[inline]
    fn observe(&mut self, key: &[u8], weight: u64) {
        self.detector.observe(key, weight);
    }
    fn report(&self, support: f64) -> Vec<HotItem> {
        self.detector.report(support, self.rule)
    }
    fn report_rule(&self, support: f64, rule: ReportRule) -> Vec<HotItem> {
        self.detector.report(support, rule)
    }
    fn hot_now(&self, _support: f64) -> Vec<HotItem> {
        self.detector.hot_items()
    }
    fn rotate(&mut self) {
        self.detector.rotate();
    }
    fn len(&self) -> usize {
        self.detector.len()
    }
    fn peak_len(&self) -> usize {
        self.detector.peak_len()
    }
    fn memory_bytes(&self) -> usize {
        self.detector.memory_bytes()
    }
}

/// Apache DataSketches' frequent-items sketch over byte keys.
#[derive(Debug)]
pub struct DataSketchesFrequent {
    sketch: FrequentItemsSketch<Vec<u8>>,
    weighted: bool,
    key_bytes: usize,
}

impl DataSketchesFrequent {
    /// A sketch whose worst-case error `3.5/M` is at most `error`: `M` is the next power
    /// of two ≥ `3.5/error` (the sketch's own sizing rule), clamped to its range.
    pub fn for_error(error: f64, weighted: bool) -> Self {
        let m = ((3.5 / error).ceil() as usize)
            .clamp(8, 1 << 26)
            .next_power_of_two();
        Self::with_map_size(m, weighted)
    }

    /// A sketch with maximum map size `m` (a power of two in 8..=2^30).
    pub fn with_map_size(m: usize, weighted: bool) -> Self {
        let m = m.clamp(8, 1 << 30).next_power_of_two();
        DataSketchesFrequent {
            // The size is a power of two in range by construction; new() cannot fail.
            sketch: FrequentItemsSketch::new(m)
                .unwrap_or_else(|_| FrequentItemsSketch::new(8).expect("8 is a valid size")),
            weighted,
            key_bytes: 0,
        }
    }

    #[cfg(test)]
    pub fn map_size(&self) -> usize {
        self.sketch.max_map_size()
    }
}

impl Summary for DataSketchesFrequent {
    fn label(&self) -> String {
        format!("datasketches(M={})", self.sketch.max_map_size())
    }
    #[inline]
    fn observe(&mut self, key: &[u8], weight: u64) {
        let w = if self.weighted { weight } else { 1 };
        if w > 0 {
            if self.key_bytes == 0 {
                self.key_bytes = key.len();
            }
            self.sketch.update_with_count_ref(key, w);
        }
    }
    fn report(&self, support: f64) -> Vec<HotItem> {
        // NoFalseNegatives reports upper_bound > t; upper ≥ ⌈sW⌉ is upper > ⌈sW⌉ − 1.
        let t = threshold(support, self.sketch.total_weight()).saturating_sub(1);
        let mut items: Vec<HotItem> = self
            .sketch
            .frequent_items_with_threshold(ErrorType::NoFalseNegatives, t)
            .into_iter()
            .filter(|r| r.upper_bound() > t)
            .map(|r| HotItem {
                key: r.item().clone(),
                estimate: r.lower_bound(),
                max_error: r.upper_bound() - r.lower_bound(),
            })
            .collect();
        sort_items(&mut items);
        items
    }
    fn len(&self) -> usize {
        self.sketch.num_active_items()
    }
    fn peak_len(&self) -> usize {
        // The map purges back under its capacity; once it has purged it has been full.
        if self.sketch.maximum_error() > 0 {
            self.sketch.maximum_map_capacity()
        } else {
            self.sketch.num_active_items()
        }
    }
    fn memory_bytes(&self) -> usize {
        // The sketch counts its arrays; each live key also owns a heap buffer.
        self.sketch.estimated_size() + self.sketch.num_active_items() * self.key_bytes.max(1)
    }
}

/// HeavyKeeper (Gong et al., USENIX ATC 2018) top-k sketch over byte keys.
pub struct HeavyKeeperTopK {
    topk: TopK<Vec<u8>>,
    k: usize,
    width: usize,
    depth: usize,
    weighted: bool,
    total: u64,
}

impl std::fmt::Debug for HeavyKeeperTopK {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeavyKeeperTopK")
            .field("k", &self.k)
            .field("width", &self.width)
            .field("depth", &self.depth)
            .finish()
    }
}

impl HeavyKeeperTopK {
    /// A sketch tracking the top `⌈2/s⌉` keys with `depth` rows of `width` buckets.
    pub fn new(support: f64, width: usize, depth: usize, weighted: bool) -> Self {
        let k = (2.0 / support).ceil() as usize;
        let (width, depth) = (width.max(1), depth.max(1));
        HeavyKeeperTopK {
            topk: TopK::with_seed(k, width, depth, 0.9, 0x6b76_6c62),
            k,
            width,
            depth,
            weighted,
            total: 0,
        }
    }
}

impl Summary for HeavyKeeperTopK {
    fn label(&self) -> String {
        format!("heavykeeper(k={},{}x{})", self.k, self.depth, self.width)
    }
    #[inline]
    fn observe(&mut self, key: &[u8], weight: u64) {
        let w = if self.weighted { weight } else { 1 };
        self.total += w;
        self.topk.add(key, w);
    }
    fn report(&self, support: f64) -> Vec<HotItem> {
        // HeavyKeeper's counts are estimates without a stated error bound.
        let t = threshold(support, self.total);
        let mut items: Vec<HotItem> = self
            .topk
            .list()
            .into_iter()
            .filter(|n| n.count >= t)
            .map(|n| HotItem {
                key: n.item,
                estimate: n.count,
                max_error: 0,
            })
            .collect();
        sort_items(&mut items);
        items
    }
    fn len(&self) -> usize {
        self.topk.list().len()
    }
    fn peak_len(&self) -> usize {
        self.k
    }
    fn memory_bytes(&self) -> usize {
        self.topk.mem_bytes(|v| v.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_find_a_heavy_key() {
        let mut ds = DataSketchesFrequent::for_error(0.01, false);
        assert_eq!(ds.map_size(), 512);
        let mut hk = HeavyKeeperTopK::new(0.1, 256, 2, false);
        for i in 0..20_000u32 {
            let k = if i % 4 == 0 {
                b"heavy".to_vec()
            } else {
                format!("k{i}").into_bytes()
            };
            ds.observe(&k, 1);
            hk.observe(&k, 1);
        }
        for s in [&ds as &dyn Summary, &hk] {
            let r = s.report(0.1);
            assert_eq!(r.len(), 1, "{}", s.label());
            assert_eq!(r[0].key, b"heavy");
            assert!(s.memory_bytes() > 0);
            assert!(s.peak_len() >= s.len().min(1));
        }
        let e = &ds.report(0.1)[0];
        assert!(e.estimate <= 5000 && 5000 <= e.estimate + e.max_error);
    }
}
