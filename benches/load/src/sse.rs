//! `tidings-load sse`: N Server-Sent Events streams on one channel.
//!
//! Phases, each with a deadline:
//! 1. **Open**: N blocking connects on loopback, each writes `GET /sse/NAME HTTP/1.0` (raw
//!    bytes until the close: nothing to de-chunk) and turns non-blocking; `/stats` is polled
//!    until `sse_streams` shows them all.
//! 2. **Idle**: the server's CPU over the idle window and its RSS growth since before the
//!    streams opened, per stream.
//! 3. **Fan-out**: one publish with a unique marker; each stream's delay runs from the POST
//!    being written to the marker read from its socket (p50, p99, last).
//! 4. **Steady rate**: all but M streams are closed; [`crate::steady`] publishes R messages/s
//!    for D seconds (paced and pipelined on one keep-alive connection) while the loop reads
//!    every stream and counts the events (`\nid: `): messages/s delivered over the window, and
//!    how many each stream is missing at the end (must be 0, else the run fails).
//!
//! The streams are read by one reactor thread (epoll, level-triggered, read until EAGAIN).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use reactor::{Event, Handler, Interest, Reactor};

use crate::args::SseOpts;
use crate::common::{bytes, ms, request, stat, us, wait_stat};
use crate::hist::Histogram;
use crate::steady::{self, pump, Counting};
use test_support::procfs;

struct Sub {
    stream: TcpStream,
    /// Unscanned tail of what was read (a marker may straddle two reads).
    tail: Vec<u8>,
    /// Fan-out: when the marker arrived.
    got: Option<Instant>,
}

struct Reader {
    subs: Vec<Option<Sub>>,
    /// Events (`\nid: `) each stream has read, by the same index (kept when it closes).
    events: Vec<u64>,
    marker: Vec<u8>,
    t0: Instant,
    hist: Histogram,
    got: usize,
    closed: usize,
    /// One read buffer for every stream (not zeroed again per event).
    buf: Vec<u8>,
}

const ID: &[u8] = b"\nid: ";

impl Handler<()> for Reader {
    fn on_io(&mut self, _r: &mut Reactor<()>, ev: Event) {
        let Some(Some(sub)) = self.subs.get_mut(ev.tag) else { return };
        let buf = &mut self.buf;
        loop {
            match sub.stream.read(buf) {
                Ok(0) => {
                    self.closed += 1;
                    self.subs[ev.tag] = None;
                    return;
                }
                Ok(n) => {
                    sub.tail.extend_from_slice(&buf[..n]);
                    self.events[ev.tag] += count(&sub.tail, ID) as u64;
                    if sub.got.is_none() && !self.marker.is_empty() && find(&sub.tail, &self.marker) {
                        let now = Instant::now();
                        sub.got = Some(now);
                        self.hist.record_duration(now - self.t0);
                        self.got += 1;
                    }
                    // Keep enough to find a marker or an id that straddles the next read, and
                    // too little to hold a whole one (it would be counted twice).
                    let keep = self.marker.len().max(ID.len()) - 1;
                    if sub.tail.len() > keep {
                        sub.tail.drain(..sub.tail.len() - keep);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closed += 1;
                    self.subs[ev.tag] = None;
                    return;
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

pub fn run(o: SseOpts) -> Result<(), String> {
    let addr = o.addr;
    let base = stat(addr, "sse_streams")?;
    let rss0 = procfs::rss_bytes(o.pid).map_err(|e| format!("RSS of pid {}: {e}", o.pid))?;
    let mut r: Reactor<()> = Reactor::new().map_err(|e| e.to_string())?;
    let mut h = Reader {
        subs: Vec::new(),
        events: Vec::new(),
        marker: Vec::new(),
        t0: Instant::now(),
        hist: Histogram::new(),
        got: 0,
        closed: 0,
        buf: vec![0; 64 * 1024],
    };

    // 1. Open.
    let t_open = Instant::now();
    let req = format!("GET /sse/{} HTTP/1.0\r\n\r\n", o.channel);
    for i in 0..o.n {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("stream {i}: connect: {e}"))?;
        s.write_all(req.as_bytes()).map_err(|e| format!("stream {i}: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        r.register(s.as_raw_fd(), Interest::READABLE, i).map_err(|e| e.to_string())?;
        h.subs.push(Some(Sub { stream: s, tail: Vec::new(), got: None }));
        h.events.push(0);
    }
    wait_stat(addr, "sse_streams", base + o.n as u64, Duration::from_secs(60))?;
    let opened = t_open.elapsed();
    // Read the heads and `retry:` lines, so the idle window starts with nothing queued.
    pump(&mut r, &mut h, Duration::from_millis(500), |_| false)?;
    println!("sse: {} streams open on /sse/{} in {} ms", o.n, o.channel, ms(opened.as_nanos() as u64));

    // 2. Idle.
    let cpu0 = procfs::cpu(o.pid).map_err(|e| e.to_string())?;
    std::thread::sleep(o.idle);
    let cpu1 = procfs::cpu(o.pid).map_err(|e| e.to_string())?;
    let rss1 = procfs::rss_bytes(o.pid).map_err(|e| e.to_string())?;
    let idle_cpu = cpu0.until(cpu1).as_secs_f64() / o.idle.as_secs_f64() * 100.0;
    let per_stream = rss1.saturating_sub(rss0) / o.n as u64;
    println!(
        "idle: server CPU {idle_cpu:.2}% of a core over {:?}; RSS {} -> {} (+{} per stream, kernel socket buffers not included)",
        o.idle,
        bytes(rss0),
        bytes(rss1),
        bytes(per_stream)
    );

    // 3. Fan-out of one publish.
    h.marker = format!("fan-{}-{}", std::process::id(), o.n).into_bytes();
    h.t0 = Instant::now();
    let answer = request(addr, "POST", &format!("/pub/{}", o.channel), &h.marker.clone())?;
    let all = pump(&mut r, &mut h, Duration::from_secs(30), |h| h.got + h.closed >= h.subs.len())?;
    if !all || h.got < o.n {
        return Err(format!(
            "fan-out: {} of {} streams got the message ({} closed); {answer}",
            h.got, o.n, h.closed
        ));
    }
    let (p50, p99, last) = (h.hist.quantile(0.5), h.hist.quantile(0.99), h.hist.max());
    println!(
        "fan-out to {}: p50 {} µs, p99 {} µs, last {} µs (POST written -> marker read)",
        o.n,
        us(p50),
        us(p99),
        us(last)
    );

    // 4. Steady rate to M streams.
    h.subs.truncate(o.subs); // closes the other sockets (and they leave the epoll set)
    h.events.truncate(o.subs);
    wait_stat(addr, "sse_streams", base + o.subs as u64, Duration::from_secs(30))?;
    h.marker.clear();
    let report = steady::run(&mut r, &mut h, addr, o.pid, &o.channel, o.rate, o.duration)?;
    report.print("streams");
    println!(
        "RESULT mode=sse n={} idle_cpu_pct={idle_cpu:.2} rss_per_stream_bytes={per_stream} fan_p50_us={} fan_p99_us={} fan_last_us={} {}",
        o.n,
        p50 / 1000,
        p99 / 1000,
        last / 1000,
        report.result_fields()
    );
    report.check("streams")
}

impl Counting for Reader {
    fn events(&self) -> Vec<u64> {
        self.events.clone()
    }

    fn is_open(&self, i: usize) -> bool {
        matches!(self.subs.get(i), Some(Some(_)))
    }
}
