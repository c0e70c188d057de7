//! A mergeable latency distribution: counts in logarithmic buckets, 16 per power of two (the
//! layout of an OpenTelemetry exponential histogram at scale 4). Any quantile read back is within
//! 2.2% of a value that was recorded, however many histograms were merged, which is what lets
//! rollups written at assembly answer percentiles over days without the raw spans.

/// Buckets per power of two.
const PER_OCTAVE: f64 = 16.0;

/// The bucket of a duration in nanoseconds: `floor(16 · log2(nanos))`, 0 for anything under 1 ns.
pub fn bucket_of(nanos: i64) -> u16 {
    if nanos <= 1 {
        return 0;
    }
    ((nanos as f64).log2() * PER_OCTAVE).floor() as u16
}

/// The value a bucket stands for: its geometric midpoint.
pub fn bucket_value(bucket: u16) -> f64 {
    if bucket == 0 {
        return 1.0;
    }
    ((bucket as f64 + 0.5) / PER_OCTAVE).exp2()
}

/// Sparse counts per bucket, kept sorted by bucket (a few dozen pairs for a real latency
/// distribution, so a vector is smaller and faster than a tree), and the smallest and largest
/// value recorded: a quantile never reads back outside them, so a distribution of one value is
/// exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Vec<(u16, u64)>,
    min: i64,
    max: i64,
}

impl LatencyHistogram {
    pub fn record(&mut self, nanos: i64) {
        self.record_n(nanos, 1);
    }

    /// Records `nanos` `count` times (a sampled value standing for `count`).
    pub fn record_n(&mut self, nanos: i64, count: u64) {
        if count == 0 {
            return;
        }
        self.widen(nanos, nanos);
        self.add_bucket(bucket_of(nanos), count);
    }

    /// Takes [min, max] into the range of recorded values.
    fn widen(&mut self, min: i64, max: i64) {
        if self.counts.is_empty() {
            (self.min, self.max) = (min, max);
        } else {
            (self.min, self.max) = (self.min.min(min), self.max.max(max));
        }
    }

    fn add_bucket(&mut self, bucket: u16, count: u64) {
        if count == 0 {
            return;
        }
        match self.counts.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => self.counts[i].1 += count,
            Err(i) => self.counts.insert(i, (bucket, count)),
        }
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.clone_from(other);
            return;
        }
        self.widen(other.min, other.max);
        for (bucket, count) in &other.counts {
            self.add_bucket(*bucket, *count);
        }
    }

    /// Memory the buckets take beyond the struct itself.
    pub fn heap_bytes(&self) -> usize {
        self.counts.capacity() * std::mem::size_of::<(u16, u64)>()
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|(_, c)| c).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// (bucket, count) pairs in bucket order.
    pub fn buckets(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.counts.iter().copied()
    }

    /// (value, count) per bucket in bucket order, the value being what the bucket stands for
    /// (its midpoint, within the recorded minimum and maximum).
    pub fn values(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.counts.iter().map(|(bucket, count)| (self.clamp(bucket_value(*bucket)), *count))
    }

    /// The q-quantile (0 ≤ q ≤ 1) by nearest rank, 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in &self.counts {
            seen += count;
            if seen >= rank {
                return self.clamp(bucket_value(*bucket));
            }
        }
        self.clamp(bucket_value(self.counts.last().expect("not empty").0))
    }

    fn clamp(&self, value: f64) -> f64 {
        value.clamp(self.min as f64, self.max as f64)
    }

    /// Compact bytes, little-endian: min and max (i64), then (bucket u16, count u32) pairs; a
    /// count beyond u32 is split. Empty for an empty histogram.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.counts.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(16 + self.counts.len() * 6);
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        for (bucket, count) in &self.counts {
            let mut left = *count;
            while left > 0 {
                let part = left.min(u32::MAX as u64);
                out.extend_from_slice(&bucket.to_le_bytes());
                out.extend_from_slice(&(part as u32).to_le_bytes());
                left -= part;
            }
        }
        out
    }

    /// Adds the counts of `to_bytes` output; a trailing partial pair is ignored.
    pub fn merge_bytes(&mut self, bytes: &[u8]) {
        if bytes.len() < 16 {
            return;
        }
        let min = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let max = i64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        self.widen(min, max);
        for pair in bytes[16..].chunks_exact(6) {
            let bucket = u16::from_le_bytes([pair[0], pair[1]]);
            let count = u32::from_le_bytes([pair[2], pair[3], pair[4], pair[5]]);
            self.add_bucket(bucket, count as u64);
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut histogram = Self::default();
        histogram.merge_bytes(bytes);
        histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_error_of_the_exact_ones() {
        let mut histogram = LatencyHistogram::default();
        let values: Vec<i64> = (1..=1000).map(|i| i * 1_000_003).collect();
        for v in &values {
            histogram.record(*v);
        }
        for q in [0.01, 0.5, 0.95, 0.99, 1.0] {
            let exact = values[((q * values.len() as f64).ceil() as usize).max(1) - 1] as f64;
            let estimate = histogram.quantile(q);
            assert!((estimate - exact).abs() / exact < 0.023, "q={q}: {estimate} against {exact}");
        }
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (LatencyHistogram::default(), LatencyHistogram::default(), LatencyHistogram::default());
        for v in [5, 70, 900, 12_000, 12_001, 3_000_000_000] {
            a.record(v);
            all.record(v);
        }
        for v in [1, 0, 70, 44_000_000] {
            b.record(v);
            all.record(v);
        }
        let mut merged = LatencyHistogram::from_bytes(&a.to_bytes());
        merged.merge_bytes(&b.to_bytes());
        assert_eq!(merged, all);
        assert_eq!(merged.count(), 10);
        assert_eq!(LatencyHistogram::default().quantile(0.5), 0.0);
    }

    #[test]
    fn a_single_value_reads_back_exactly() {
        for v in [2i64, 999, 1_000_000, 86_400_000_000_000] {
            let mut histogram = LatencyHistogram::default();
            histogram.record(v);
            let estimate = histogram.quantile(0.5);
            assert_eq!(estimate, v as f64, "one value reads back exactly");
        }
    }
}
