//! Delivery latency: how long a published message takes to reach its subscribers, per
//! transport, as a fixed-bucket histogram (`tidings_delivery_seconds` in `/metrics`, and in
//! every `/dashboard` snapshot).
//!
//! # What is measured
//! From the moment a publish is accepted (the hub has appended it) to the moment the answer
//! bytes of a subscriber were handed to the kernel: for a held poll, when `ctx.respond` of its
//! late answer returned (a late answer is written at once); for a stream, when its
//! `ctx.send_shared` returned. The transports call [`DeliveryLatency::record`] (or
//! [`DeliveryLatency::record_n`] for a group of subscribers sent the same bytes in one go):
//! in `Tidings::publish`, `accepted` is the instant taken when the hub took the message, so a
//! transport records a delivery group with
//! `self.latency.record_n(Transport::Sse, accepted.elapsed(), n)` once its sends returned.
//!
//! # Why it is cheap
//! One clock read when the publish is accepted and one per delivery group (all the
//! subscribers that share one rendered answer), never one per subscriber: a publish to
//! 10,000 held polls at one cursor costs two `Instant::now()` (vDSO, no syscall) and one
//! bucket search. Recording is a linear scan of 14 bounds and three additions; rendering
//! happens only when `/metrics` or the dashboard asks.

use std::fmt::Write as _;
use std::time::Duration;

/// The upper bounds of the buckets, in microseconds: 50 us to 1 s, about 2.5x apart, the
/// range of a loop turn on loopback to a very slow fan-out. `+Inf` is implicit.
pub const BOUNDS_US: [u64; 14] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];

/// How a subscriber receives its messages: the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    LongPoll,
    Sse,
    Ws,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::LongPoll, Transport::Sse, Transport::Ws];

    /// The label value: `longpoll`, `sse`, `ws`.
    pub fn label(self) -> &'static str {
        match self {
            Transport::LongPoll => "longpoll",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }

    fn index(self) -> usize {
        match self {
            Transport::LongPoll => 0,
            Transport::Sse => 1,
            Transport::Ws => 2,
        }
    }
}

/// One histogram: per-bucket counts (not cumulative: made cumulative when written), the sum
/// in nanoseconds and the count.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// `buckets[i]`: observations in (BOUNDS_US[i-1], BOUNDS_US[i]]; the last one: above 1 s.
    buckets: [u64; BOUNDS_US.len() + 1],
    sum_ns: u128,
    count: u64,
}

impl Histogram {
    /// Adds `n` observations of `d`.
    pub fn record_n(&mut self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let us = d.as_micros();
        let i = BOUNDS_US.iter().position(|&b| us <= b as u128).unwrap_or(BOUNDS_US.len());
        self.buckets[i] += n;
        self.sum_ns += d.as_nanos() * n as u128;
        self.count += n;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Cumulative counts, one per bound, then `+Inf` (= the count).
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().scan(0u64, |acc, &c| {
            *acc += c;
            Some(*acc)
        })
    }
}

/// The delivery latency of every transport.
#[derive(Debug, Clone, Default)]
pub struct DeliveryLatency {
    by_transport: [Histogram; 3],
}

impl DeliveryLatency {
    /// One delivery over `transport`, `d` after its publish was accepted.
    pub fn record(&mut self, transport: Transport, d: Duration) {
        self.record_n(transport, d, 1);
    }

    /// `n` deliveries of the same bytes, written in one go, `d` after the publish.
    pub fn record_n(&mut self, transport: Transport, d: Duration, n: u64) {
        self.by_transport[transport.index()].record_n(d, n);
    }

    pub fn get(&self, transport: Transport) -> &Histogram {
        &self.by_transport[transport.index()]
    }

    /// The histogram in the exposition format, `# HELP` and `# TYPE` first.
    pub fn write_metrics(&self, s: &mut String) {
        s.push_str(
            "# HELP tidings_delivery_seconds Delivery latency: publish accepted to the answer bytes handed to the kernel, by transport.\n\
             # TYPE tidings_delivery_seconds histogram\n",
        );
        for t in Transport::ALL {
            let h = self.get(t);
            let label = t.label();
            for (le, n) in
                BOUNDS_US.iter().map(|&b| format_seconds(b)).chain(Some("+Inf".into())).zip(h.cumulative())
            {
                let _ =
                    writeln!(s, "tidings_delivery_seconds_bucket{{transport=\"{label}\",le=\"{le}\"}} {n}");
            }
            let _ = writeln!(s, "tidings_delivery_seconds_sum{{transport=\"{label}\"}} {}", h.sum_seconds());
            let _ = writeln!(s, "tidings_delivery_seconds_count{{transport=\"{label}\"}} {}", h.count());
        }
    }

    /// The histogram as JSON for the dashboard:
    /// `{"le":[0.00005,..,1],"longpoll":{"buckets":[cumulative..,+Inf],"sum":S,"count":N},..}`.
    pub fn write_json(&self, s: &mut String) {
        s.push_str("{\"le\":[");
        for (i, &b) in BOUNDS_US.iter().enumerate() {
            let _ = write!(s, "{}{}", if i > 0 { "," } else { "" }, format_seconds(b));
        }
        s.push(']');
        for t in Transport::ALL {
            let h = self.get(t);
            let _ = write!(s, ",\"{}\":{{\"buckets\":[", t.label());
            for (i, n) in h.cumulative().enumerate() {
                let _ = write!(s, "{}{n}", if i > 0 { "," } else { "" });
            }
            let _ = write!(s, "],\"sum\":{},\"count\":{}}}", h.sum_seconds(), h.count());
        }
        s.push('}');
    }
}

/// Microseconds as seconds, shortest decimal form: 50 -> `0.00005`, 1_000_000 -> `1`.
fn format_seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_bounds() {
        let mut h = Histogram::default();
        h.record_n(Duration::from_micros(50), 1); // on the bound: in it (le = less or equal)
        h.record_n(Duration::from_micros(51), 2);
        h.record_n(Duration::from_secs(2), 1);
        h.record_n(Duration::from_secs(2), 0);
        let c: Vec<u64> = h.cumulative().collect();
        assert_eq!(c.len(), BOUNDS_US.len() + 1);
        assert_eq!(&c[..3], &[1, 3, 3]);
        assert_eq!(c[BOUNDS_US.len() - 1], 3);
        assert_eq!(c[BOUNDS_US.len()], 4);
        assert_eq!(h.count(), 4);
        assert!((h.sum_seconds() - (0.00005 + 2.0 * 0.000051 + 2.0)).abs() < 1e-9);
    }

    #[test]
    fn seconds_format() {
        assert_eq!(format_seconds(50), "0.00005");
        assert_eq!(format_seconds(2_500), "0.0025");
        assert_eq!(format_seconds(250_000), "0.25");
        assert_eq!(format_seconds(1_000_000), "1");
    }

    #[test]
    fn exposition() {
        let mut d = DeliveryLatency::default();
        d.record(Transport::Sse, Duration::from_millis(3));
        let mut s = String::new();
        d.write_metrics(&mut s);
        assert!(s.starts_with("# HELP tidings_delivery_seconds "));
        assert!(s.contains("tidings_delivery_seconds_bucket{transport=\"sse\",le=\"0.0025\"} 0\n"));
        assert!(s.contains("tidings_delivery_seconds_bucket{transport=\"sse\",le=\"0.005\"} 1\n"));
        assert!(s.contains("tidings_delivery_seconds_bucket{transport=\"sse\",le=\"+Inf\"} 1\n"));
        assert!(s.contains("tidings_delivery_seconds_count{transport=\"longpoll\"} 0\n"));
        assert!(s.contains("tidings_delivery_seconds_sum{transport=\"sse\"} 0.003\n"));
        let mut j = String::new();
        d.write_json(&mut j);
        assert!(j.starts_with("{\"le\":[0.00005,0.0001,"));
        assert!(j.contains("\"sse\":{\"buckets\":[0,0,0,0,0,0,1,1,1,1,1,1,1,1,1],\"sum\":0.003,\"count\":1}"));
    }
}
