//! A log-linear latency histogram: constant memory, O(1) record, bounded relative error.
//!
//! Values (nanoseconds here, but any `u64`) below 2^[`SUB_BITS`] get one bucket each, so they
//! are exact. Above that, every power of two `[2^k, 2^(k+1))` is cut into 2^(SUB_BITS-1)
//! equal buckets: a bucket is at most 1/2^(SUB_BITS-1) = 1/64 ≈ 1.6% as wide as the values
//! in it. The index is computed from the position of the highest set bit and the next
//! SUB_BITS-1 bits below it: a few instructions, no float, no search. The whole `u64` range
//! fits in 3,776 buckets (30 KB), so nothing is ever clamped or dropped.
//!
//! A percentile is reported as the *upper* end of the bucket holding it (never below the
//! true value, at most 1.6% above it), clipped to the exact maximum. Count, sum, min and max
//! are kept exactly.

/// Bits of precision: values below 2^SUB_BITS are exact, larger ones within 2^-(SUB_BITS-1).
pub const SUB_BITS: u32 = 7;
const HALF: usize = 1 << (SUB_BITS - 1);
/// Buckets needed for the whole `u64` range.
const BUCKETS: usize = (64 - SUB_BITS as usize) * HALF + 2 * HALF;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < (1 << SUB_BITS) {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - (SUB_BITS - 1);
    // (v >> shift) is in [HALF, 2*HALF): the SUB_BITS-1 bits after the leading one, plus it.
    shift as usize * HALF + (v >> shift) as usize
}

/// The smallest and largest value that land in bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    if i < 2 * HALF {
        return (i as u64, i as u64);
    }
    let shift = (i / HALF - 1) as u32;
    let mantissa = (i - shift as usize * HALF) as u64;
    let low = mantissa << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], total: 0, sum: 0, min: u64::MAX, max: 0 }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Records a duration in nanoseconds (saturating at `u64::MAX` ns, about 584 years).
    pub fn record_duration(&mut self, d: std::time::Duration) {
        self.record(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn clear(&mut self) {
        *self = Histogram::new();
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// Exact maximum (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Exact minimum (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Exact mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the smallest bucket whose cumulative count
    /// reaches `ceil(q * count)`, reported as that bucket's upper end, clipped to the maximum.
    /// 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bounds(i).1.min(self.max).max(self.min);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use test_support::rng::Rng;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(index(0), 0);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let mut prev_high = None;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds(i);
            assert!(lo <= hi, "bucket {i}");
            assert_eq!(index(lo), i, "low end of bucket {i}");
            assert_eq!(index(hi), i, "high end of bucket {i}");
            if let Some(p) = prev_high {
                assert_eq!(lo, p + 1, "gap before bucket {i}");
            }
            prev_high = Some(hi);
        }
        assert_eq!(prev_high, Some(u64::MAX));
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!(h.quantile(0.0), 1);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn quantiles_are_within_the_stated_precision() {
        let mut rng = Rng::new(0x1234_5678_9abc_def1);
        let mut values: Vec<u64> = (0..100_000)
            .map(|_| {
                // Log-uniform over 1 ns .. ~17 s, like real latencies.
                let exp = rng.below(34);
                1 + rng.below(1u64 << exp)
            })
            .collect();
        let mut h = Histogram::new();
        for &v in &values {
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            let exact = values[rank - 1];
            let got = h.quantile(q);
            assert!(got >= exact, "q={q}: {got} < exact {exact}");
            let bound = exact + exact / (HALF as u64) + 1;
            assert!(got <= bound, "q={q}: {got} > {bound} (exact {exact})");
        }
        assert_eq!(h.quantile(1.0), *values.last().unwrap());
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.min(), 0);
        assert_eq!(h.mean(), 0.0);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        h.record(u64::MAX - 1);
        assert_eq!(h.quantile(1.0), u64::MAX);
        assert_eq!(h.quantile(0.5), u64::MAX);
    }
}
