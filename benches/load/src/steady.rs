//! The steady-rate phase of the `sse` and `ws` modes: publishes at a fixed rate to M
//! subscribers of one channel, and what each of them read.
//!
//! # The publisher: paced by a clock, pipelined
//! [`Publisher`] writes `POST /pub/CHANNEL` requests on one keep-alive connection. Request k
//! is due at `t0 + k/rate`; the writer thread writes every request that is due in one
//! `write`, then sleeps until the next one is due (never past it). When it is late (a write
//! blocked, the thread was not scheduled) the next pass writes all that came due meanwhile:
//! it catches up instead of drifting. It stops at `t0 + duration`, so a publisher that keeps
//! up sends exactly `ceil(rate * duration)` requests. A second thread reads the answers on a
//! `try_clone` of the same socket and counts them: the requests are pipelined, as HTTP/1.1
//! allows, and the rate is not bounded by a round trip. (The first version waited for each
//! answer before the next request and reached about 250 publishes/s of the 1,000 asked.)
//!
//! # The subscribers
//! The mode's reader (a [`Counting`] handler on the mode's reactor) counts the events each
//! subscriber reads; [`run`] pumps that reactor while the publisher runs, then until every
//! subscriber has read every publish the server accepted (or a deadline), and reports the
//! messages/s delivered over the whole window, readers' catch-up included, and how many each
//! subscriber is missing (a non-zero count is an error, with the worst subscriber named).
//!
//! What limits the rate shows in the report: the publisher's lateness (its thread or its
//! socket), the server's CPU over the window (its one loop), and this process's CPU (the
//! reader on its reactor, plus the publisher).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reactor::{Handler, Reactor};
use test_support::procfs;

use crate::common::ms;
use crate::hist::Histogram;
use crate::parse::parse_response;

/// How long the answers to the last publishes, and the subscribers' catch-up, may take once
/// the publisher has stopped.
const DRAIN: Duration = Duration::from_secs(10);

/// `sent` before the writer has finished: the reader does not know the total yet.
const UNKNOWN: u64 = u64::MAX;

/// What the publisher did.
pub struct PublishReport {
    /// Requests written.
    pub sent: u64,
    /// Answered `200`: the publishes the server accepted.
    pub accepted: u64,
    /// Answered with another status.
    pub refused: u64,
    /// The rate asked, and the window the requests were due in.
    pub rate: usize,
    pub duration: Duration,
    /// How late each request was written behind its due time (ns).
    pub lateness: Histogram,
    /// From the first request's due time to the last answer read.
    pub answered_within: Duration,
}

impl PublishReport {
    /// Requests written per second of the window.
    pub fn achieved_rate(&self) -> f64 {
        self.sent as f64 / self.duration.as_secs_f64()
    }

    /// Publishes accepted per second, until the last answer: the rate the server kept up with.
    pub fn accepted_rate(&self) -> f64 {
        self.accepted as f64 / self.answered_within.as_secs_f64().max(self.duration.as_secs_f64())
    }
}

/// A running publisher: a writer thread and a reader thread on one connection.
pub struct Publisher {
    writer: JoinHandle<Result<Histogram, String>>,
    reader: JoinHandle<Result<Answers, String>>,
    sent: Arc<AtomicU64>,
    rate: usize,
    duration: Duration,
}

#[derive(Default)]
struct Answers {
    accepted: u64,
    refused: u64,
    last: Duration,
}

/// The time request `k` is due, from `t0`.
fn due(k: u64, rate: usize) -> Duration {
    Duration::from_nanos((k as u128 * 1_000_000_000 / rate as u128).min(u64::MAX as u128) as u64)
}

impl Publisher {
    /// Connects (here, so that a refused connect is reported at once) and starts publishing
    /// `rate` messages/s for `duration` to `channel`.
    pub fn start(
        addr: SocketAddr,
        channel: &str,
        rate: usize,
        duration: Duration,
    ) -> Result<Publisher, String> {
        let out = TcpStream::connect(addr).map_err(|e| format!("publisher: connect {addr}: {e}"))?;
        out.set_nodelay(true).map_err(|e| e.to_string())?;
        // The tool stops by itself even if the server stops reading.
        out.set_write_timeout(Some(DRAIN)).map_err(|e| e.to_string())?;
        let input = out.try_clone().map_err(|e| format!("publisher: {e}"))?;
        // The reader wakes up this often to see whether the writer has finished.
        input.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        let sent = Arc::new(AtomicU64::new(UNKNOWN));
        let t0 = Instant::now();
        let head = format!("POST /pub/{channel} HTTP/1.1\r\nHost: load\r\nContent-Length: ");
        let writer = {
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || write_paced(out, &head, rate, duration, t0, &sent))
        };
        let reader = {
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || read_answers(input, t0, &sent))
        };
        Ok(Publisher { writer, reader, sent, rate, duration })
    }

    /// Waits for the writer to finish and for every answer (at most [`DRAIN`] more).
    pub fn finish(self) -> Result<PublishReport, String> {
        let written = self.writer.join().map_err(|_| "the publisher's writer panicked".to_string());
        if !matches!(written, Ok(Ok(_))) {
            // Tell the reader to stop waiting for answers that will not come.
            self.sent.store(0, Ordering::Release);
        }
        let answers = self.reader.join().map_err(|_| "the publisher's reader panicked".to_string())?;
        let lateness = written??;
        let answers = answers?;
        let sent = self.sent.load(Ordering::Acquire);
        Ok(PublishReport {
            sent,
            accepted: answers.accepted,
            refused: answers.refused,
            rate: self.rate,
            duration: self.duration,
            lateness,
            answered_within: answers.last,
        })
    }
}

/// The writer thread: every request when it is due; stores the total in `sent` at the end.
fn write_paced(
    mut s: TcpStream,
    head: &str,
    rate: usize,
    duration: Duration,
    t0: Instant,
    sent: &AtomicU64,
) -> Result<Histogram, String> {
    let mut lateness = Histogram::new();
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut k = 0u64;
    while due(k, rate) < duration {
        let now = t0.elapsed();
        batch.clear();
        while due(k, rate) <= now && due(k, rate) < duration {
            let body = format!("steady {k}");
            batch.extend_from_slice(head.as_bytes());
            batch.extend_from_slice(format!("{}\r\n\r\n{body}", body.len()).as_bytes());
            lateness.record_duration(now - due(k, rate));
            k += 1;
        }
        if !batch.is_empty() {
            s.write_all(&batch).map_err(|e| format!("publisher: write: {e}"))?;
        }
        let next = due(k, rate);
        let now = t0.elapsed();
        if next > now && next < duration {
            std::thread::sleep(next - now);
        }
    }
    sent.store(k, Ordering::Release);
    Ok(lateness)
}

/// The reader thread: counts the answers until there is one per request written, or
/// [`DRAIN`] after the writer finished.
fn read_answers(mut s: TcpStream, t0: Instant, sent: &AtomicU64) -> Result<Answers, String> {
    let mut answers = Answers::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut writer_done: Option<Instant> = None;
    loop {
        let total = sent.load(Ordering::Acquire);
        if total != UNKNOWN {
            if answers.accepted + answers.refused >= total {
                return Ok(answers);
            }
            let since = *writer_done.get_or_insert_with(Instant::now);
            if since.elapsed() > DRAIN {
                return Ok(answers); // finish() reports the shortfall
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("publisher: the server closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("publisher: read: {e}")),
        }
        let mut at = 0;
        while let Some(resp) = parse_response(&buf[at..]).map_err(|e| format!("publisher: {e}"))? {
            if resp.status == 200 {
                answers.accepted += 1;
            } else {
                answers.refused += 1;
            }
            at += resp.len;
        }
        if at > 0 {
            buf.drain(..at);
            answers.last = t0.elapsed();
        }
    }
}

/// A mode's reader of the subscribers: counts the events each one has read.
pub trait Counting: Handler<()> {
    /// Events read so far, one count per subscriber of the phase.
    fn events(&self) -> Vec<u64>;
    /// Whether subscriber `i` is still connected (a closed one will read nothing more).
    fn is_open(&self, i: usize) -> bool;
}

/// Runs the reactor until `done` or `within` passes; whether `done` was reached.
pub fn pump<H: Handler<()>>(
    r: &mut Reactor<()>,
    h: &mut H,
    within: Duration,
    done: impl Fn(&H) -> bool,
) -> Result<bool, String> {
    let deadline = Instant::now() + within;
    while !done(h) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        r.run_once(h, Some(left.min(Duration::from_millis(50)))).map_err(|e| e.to_string())?;
    }
    Ok(true)
}

/// What the phase measured.
pub struct SteadyReport {
    pub publish: PublishReport,
    pub subs: usize,
    /// Events read by all subscribers, at most one per accepted publish each.
    pub delivered: u64,
    /// From the publisher's start to the last subscriber caught up (or the deadline).
    pub window: Duration,
    /// From the publisher's stop to the last subscriber caught up (or the deadline).
    pub drain: Duration,
    /// Accepted publishes not read, summed over the subscribers; and the worst one
    /// (index, missing, still open).
    pub missing: u64,
    pub worst: Option<(usize, u64, bool)>,
    pub server_cpu_pct: f64,
    pub own_cpu_pct: f64,
}

/// The phase: `rate` publishes/s for `duration` on `channel` while `h` reads on `r`.
pub fn run<H: Counting>(
    r: &mut Reactor<()>,
    h: &mut H,
    addr: SocketAddr,
    pid: u32,
    channel: &str,
    rate: usize,
    duration: Duration,
) -> Result<SteadyReport, String> {
    let base = h.events();
    let subs = base.len();
    let me = std::process::id();
    let (server0, own0) =
        (procfs::cpu(pid).map_err(|e| e.to_string())?, procfs::cpu(me).map_err(|e| e.to_string())?);
    let t0 = Instant::now();
    let publisher = Publisher::start(addr, channel, rate, duration)?;
    pump(r, h, duration, |_| false)?;
    let publish = publisher.finish()?;
    let stopped = t0.elapsed().min(duration);
    let want = publish.accepted;
    let behind = |h: &H, i: usize, n: u64| n - base[i] < want && h.is_open(i);
    pump(r, h, DRAIN, |h| h.events().iter().enumerate().all(|(i, &n)| !behind(h, i, n)))?;
    let window = t0.elapsed();
    let (server1, own1) =
        (procfs::cpu(pid).map_err(|e| e.to_string())?, procfs::cpu(me).map_err(|e| e.to_string())?);
    let read: Vec<u64> = h.events().iter().zip(&base).map(|(n, b)| n - b).collect();
    let delivered = read.iter().map(|&n| n.min(want)).sum();
    let missing = read.iter().map(|&n| want.saturating_sub(n)).sum();
    let worst = read
        .iter()
        .enumerate()
        .max_by_key(|&(_, &n)| want.saturating_sub(n))
        .filter(|&(_, &n)| n < want)
        .map(|(i, &n)| (i, want - n, h.is_open(i)));
    let pct = |cpu: Duration| cpu.as_secs_f64() / window.as_secs_f64() * 100.0;
    Ok(SteadyReport {
        publish,
        subs,
        delivered,
        window,
        drain: window.saturating_sub(stopped),
        missing,
        worst,
        server_cpu_pct: pct(server0.until(server1)),
        own_cpu_pct: pct(own0.until(own1)),
    })
}

impl SteadyReport {
    /// Messages/s read by all the subscribers together, over the whole window.
    pub fn delivered_per_s(&self) -> f64 {
        self.delivered as f64 / self.window.as_secs_f64()
    }

    /// The human-readable lines (`what`: "streams", "sockets").
    pub fn print(&self, what: &str) {
        let p = &self.publish;
        println!(
            "steady: {} publishes written in {:.1} s ({:.0}/s of the {}/s asked; lateness p50 {} ms, p99 {} ms, max {} ms), \
             {} answered 200 ({:.0}/s), {} refused, last answer at {:.3} s",
            p.sent,
            p.duration.as_secs_f64(),
            p.achieved_rate(),
            p.rate,
            ms(p.lateness.quantile(0.5)),
            ms(p.lateness.quantile(0.99)),
            ms(p.lateness.max()),
            p.accepted,
            p.accepted_rate(),
            p.refused,
            p.answered_within.as_secs_f64()
        );
        println!(
            "steady: {} {what}: {:.0} messages/s delivered over {:.3} s ({:.3} s after the publisher stopped), \
             {} missing; server CPU {:.0}% of a core, this process {:.0}%",
            self.subs,
            self.delivered_per_s(),
            self.window.as_secs_f64(),
            self.drain.as_secs_f64(),
            self.missing,
            self.server_cpu_pct,
            self.own_cpu_pct
        );
    }

    /// `steady_...=` fields for the RESULT line.
    pub fn result_fields(&self) -> String {
        let p = &self.publish;
        format!(
            "steady_subs={} steady_rate={} steady_sent={} steady_accepted={} steady_refused={} steady_sent_per_s={:.0} steady_accepted_per_s={:.0} \
             steady_late_p99_us={} steady_late_max_us={} steady_delivered_per_s={:.0} steady_window_s={:.3} \
             steady_drain_s={:.3} steady_missing={} steady_server_cpu_pct={:.0} steady_own_cpu_pct={:.0}",
            self.subs,
            p.rate,
            p.sent,
            p.accepted,
            p.refused,
            p.achieved_rate(),
            p.accepted_rate(),
            p.lateness.quantile(0.99) / 1000,
            p.lateness.max() / 1000,
            self.delivered_per_s(),
            self.window.as_secs_f64(),
            self.drain.as_secs_f64(),
            self.missing,
            self.server_cpu_pct,
            self.own_cpu_pct
        )
    }

    /// An error if a publish was not accepted or a subscriber missed one.
    pub fn check(&self, what: &str) -> Result<(), String> {
        let p = &self.publish;
        if p.refused > 0 {
            return Err(format!("steady: {} of {} publishes were refused (not 200)", p.refused, p.sent));
        }
        if p.accepted < p.sent {
            return Err(format!(
                "steady: the server answered {} of the {} publishes within {} s after the last was written \
                 ({:.0}/s): it did not keep up with {}/s to {} {what}",
                p.accepted,
                p.sent,
                DRAIN.as_secs(),
                p.accepted_rate(),
                p.rate,
                self.subs
            ));
        }
        if let Some((i, n, open)) = self.worst {
            return Err(format!(
                "steady: {} events missing in all; the worst of the {} {what}, #{i}, is missing {n} of {} ({})",
                self.missing,
                self.subs,
                p.accepted,
                if open { "still open" } else { "closed by the server" }
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A stand-in for the server: answers every request on one connection `200`, counting
    /// them and when each one arrived.
    fn counting_server(delay_answers: Duration) -> (SocketAddr, JoinHandle<Vec<Duration>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let t0 = Instant::now();
            let mut arrivals = Vec::new();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                let n = s.read(&mut chunk).unwrap();
                if n == 0 {
                    return arrivals;
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut answers = Vec::new();
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = std::str::from_utf8(&buf[..end]).unwrap();
                    let len: usize = head.split("Content-Length: ").nth(1).unwrap().parse().unwrap();
                    if buf.len() < end + 4 + len {
                        break;
                    }
                    assert!(head.starts_with("POST /pub/c HTTP/1.1\r\n"), "{head}");
                    buf.drain(..end + 4 + len);
                    arrivals.push(t0.elapsed());
                    answers.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
                }
                std::thread::sleep(delay_answers);
                s.write_all(&answers).unwrap();
            }
        });
        (addr, h)
    }

    #[test]
    fn publishes_at_the_rate_without_waiting_for_answers() {
        // Answers take 50 ms each time: a publisher that waited for them would manage 20/s.
        let (addr, server) = counting_server(Duration::from_millis(50));
        let report = Publisher::start(addr, "c", 2000, Duration::from_millis(500)).unwrap().finish().unwrap();
        assert_eq!((report.sent, report.accepted, report.refused), (1000, 1000, 0));
        let arrivals = server.join().unwrap();
        assert_eq!(arrivals.len(), 1000);
        // Paced, not all at once: the last request arrives near the end of the window.
        let last = arrivals[999];
        assert!(last > Duration::from_millis(400), "the last request arrived after {last:?}");
    }

    #[test]
    fn a_request_is_due_at_k_over_rate() {
        assert_eq!(due(0, 1000), Duration::ZERO);
        assert_eq!(due(1, 1000), Duration::from_millis(1));
        assert_eq!(due(4999, 1000), Duration::from_millis(4999));
        assert_eq!(due(3, 4000), Duration::from_micros(750));
    }
}
