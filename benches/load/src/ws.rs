//! `tidings-load ws`: N WebSockets subscribed to one channel.
//!
//! Phases:
//! 1. **Open**: N sockets connect, do the handshake and send `{"op":"sub",..}`, one after the
//!    other (blocking: setting up is not what is measured); then each sends an `unsub` of a
//!    channel it is not on and reads the error, which proves its `sub` was carried out
//!    (commands run in order).
//! 2. **Idle**: the server's CPU and RSS over `--idle` seconds; RSS per socket is the growth
//!    since before the sockets opened, over N.
//! 3. **Delivery**: one publish (POST over a connection opened beforehand); every socket,
//!    non-blocking on our reactor, times the POST's write -> its event fully read.
//! 4. **Steady rate**: all but M sockets are closed; [`crate::steady`] publishes R messages/s
//!    for D seconds (paced and pipelined on one keep-alive connection) while the reactor
//!    reads every socket and counts the events (text frames with `"seq":`, pings answered):
//!    messages/s delivered, and how many each socket is missing at the end (must be 0, else
//!    the run fails). The same phase as `sse`'s, with this mode's reader.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use reactor::{Event, Handler, Interest, Reactor, TimerId};
use test_support::procfs;

use crate::args::WsOpts;
use crate::common::{bytes, check_pid, ms, stat, wait_stat};
use crate::hist::Histogram;
use crate::steady::{self, Counting};

/// A masked client text frame (the mask need not be secret here).
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x11, 0xc3, 0x7e];
    let mut out = vec![0x81];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// Reads until `buf` holds `until` (blocking, with the socket's timeout).
fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, until: impl Fn(&[u8]) -> bool) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    while !until(buf) {
        match s.read(&mut chunk) {
            Ok(0) => return Err("the server closed a WebSocket during setup".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading a WebSocket during setup: {e}")),
        }
    }
    Ok(())
}

/// A whole server frame at the start of `b`: its length.
fn frame_len(b: &[u8]) -> Option<usize> {
    let (len, at) = match *b.get(1)? & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => return None,
        n => (n as usize, 2),
    };
    (b.len() >= at + len).then_some(at + len)
}

fn open(o: &WsOpts) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(o.addr).map_err(|e| format!("cannot connect to {}: {e}", o.addr))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        o.addr
    );
    let mut out = req.into_bytes();
    out.extend(text_frame(format!(r#"{{"op":"sub","channel":"{}"}}"#, o.channel).as_bytes()));
    s.write_all(&out).map_err(|e| format!("writing a handshake: {e}"))?;
    let mut head = Vec::new();
    read_until(&mut s, &mut head, |b| b.windows(4).any(|w| w == b"\r\n\r\n"))?;
    if !head.starts_with(b"HTTP/1.1 101 ") {
        return Err(format!("the handshake was refused: {:?}", String::from_utf8_lossy(&head)));
    }
    Ok(s)
}

struct Delivery {
    socks: Vec<TcpStream>,
    bufs: Vec<Vec<u8>>,
    got: Vec<bool>,
    received: usize,
    posted: Instant,
    hist: Histogram,
    last: Duration,
}

impl Handler<()> for Delivery {
    fn on_io(&mut self, r: &mut Reactor<()>, ev: Event) {
        let i = ev.tag;
        if self.got[i] {
            return;
        }
        // One read per readiness event (level-triggered: more, if any, is reported again).
        let mut chunk = [0u8; 1024];
        if let Ok(n) = self.socks[i].read(&mut chunk) {
            self.bufs[i].extend_from_slice(&chunk[..n]);
        }
        // The event is the first data frame with a seq; pings are skipped.
        while let Some(len) = frame_len(&self.bufs[i]) {
            let frame: Vec<u8> = self.bufs[i].drain(..len).collect();
            if frame[0] & 0x0f == 0x1 && frame.windows(6).any(|w| w == b"\"seq\":") {
                let d = self.posted.elapsed();
                self.hist.record_duration(d);
                self.last = self.last.max(d);
                self.got[i] = true;
                self.received += 1;
                if self.received == self.socks.len() {
                    r.stop();
                }
                break;
            }
        }
    }

    fn on_timer(&mut self, r: &mut Reactor<()>, _id: TimerId, _tag: u64) {
        r.stop();
    }
}

/// The steady phase's reader: every data frame with a `"seq":` is an event.
struct Steady {
    /// `None` once the server closed it.
    socks: Vec<Option<TcpStream>>,
    /// Each socket's unparsed bytes (a frame may straddle two reads).
    bufs: Vec<Vec<u8>>,
    events: Vec<u64>,
    /// One read buffer for every socket.
    chunk: Vec<u8>,
}

/// A masked client pong carrying `payload` (at most 125 bytes, as the ping's).
fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = text_frame(payload);
    out[0] = 0x8a;
    out
}

impl Handler<()> for Steady {
    fn on_io(&mut self, _r: &mut Reactor<()>, ev: Event) {
        let i = ev.tag;
        let Some(Some(sock)) = self.socks.get_mut(i) else { return };
        // One read per readiness event (level-triggered: more, if any, is reported again).
        let n = match sock.read(&mut self.chunk) {
            Ok(0) => {
                self.socks[i] = None;
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) =>
            {
                return
            }
            Err(_) => {
                self.socks[i] = None;
                return;
            }
        };
        let buf = &mut self.bufs[i];
        buf.extend_from_slice(&self.chunk[..n]);
        let mut at = 0;
        let mut close = false;
        while let Some(len) = frame_len(&buf[at..]) {
            let frame = &buf[at..at + len];
            match frame[0] & 0x0f {
                0x1 if frame.windows(6).any(|w| w == b"\"seq\":") => self.events[i] += 1,
                // A ping: the server closes a socket that stays silent (`--ws-ping`).
                0x9 => {
                    let payload_at = if frame[1] & 0x7f == 126 { 4 } else { 2 };
                    close |= sock.write_all(&pong_frame(&frame[payload_at..])).is_err();
                }
                0x8 => close = true,
                _ => {}
            }
            at += len;
        }
        buf.drain(..at);
        if close {
            self.socks[i] = None;
        }
    }
}

impl Counting for Steady {
    fn events(&self) -> Vec<u64> {
        self.events.clone()
    }

    fn is_open(&self, i: usize) -> bool {
        matches!(self.socks.get(i), Some(Some(_)))
    }
}

pub fn run(o: WsOpts) -> Result<(), String> {
    check_pid(o.pid)?;
    let base = stat(o.addr, "ws_connections")?;
    println!("tidings-load ws: {} WebSockets on channel {:?} at {}", o.n, o.channel, o.addr);
    let rss_before = procfs::rss_bytes(o.pid).map_err(|e| format!("cannot read the server's RSS: {e}"))?;
    let t_open = Instant::now();
    let mut socks = Vec::with_capacity(o.n);
    for _ in 0..o.n {
        socks.push(open(&o)?);
    }
    // Barrier: every sub has been carried out once the unsub's error comes back.
    let barrier = text_frame(br#"{"op":"unsub","channel":"tidings-load-barrier"}"#);
    for s in socks.iter_mut() {
        s.write_all(&barrier).map_err(|e| format!("writing to a WebSocket: {e}"))?;
    }
    for s in socks.iter_mut() {
        let mut b = Vec::new();
        read_until(s, &mut b, |b| frame_len(b).is_some())?;
    }
    let opened = t_open.elapsed();
    println!("  open: {} sockets subscribed in {} ms", o.n, ms(opened.as_nanos() as u64));

    std::thread::sleep(Duration::from_millis(500));
    let rss_held = procfs::rss_bytes(o.pid).unwrap_or(0);
    let cpu0 = procfs::cpu_time(o.pid).map_err(|e| e.to_string())?;
    let t_idle = Instant::now();
    std::thread::sleep(o.idle);
    let idle_cpu = procfs::cpu_time(o.pid).map_err(|e| e.to_string())?.saturating_sub(cpu0);
    let idle_s = t_idle.elapsed().as_secs_f64();
    let idle_cpu_pct = 100.0 * idle_cpu.as_secs_f64() / idle_s;
    let per_socket = (rss_held as i64 - rss_before as i64) / o.n as i64;
    println!(
        "  idle: server CPU {idle_cpu_pct:.2}% over {idle_s:.1} s; RSS {} before, {} with the sockets: {} B per socket",
        bytes(rss_before),
        bytes(rss_held),
        per_socket
    );

    // Delivery.
    let mut r = Reactor::<()>::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    for (i, s) in socks.iter().enumerate() {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        r.register(s.as_raw_fd(), Interest::READABLE, i).map_err(|e| format!("register: {e}"))?;
    }
    let mut publisher =
        TcpStream::connect(o.addr).map_err(|e| format!("cannot connect to {}: {e}", o.addr))?;
    publisher.set_nodelay(true).map_err(|e| e.to_string())?;
    let post =
        format!("POST /pub/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\n\r\nhello", o.channel, o.addr);
    let n = socks.len();
    let mut d = Delivery {
        socks,
        bufs: vec![Vec::new(); n],
        got: vec![false; n],
        received: 0,
        posted: Instant::now(),
        hist: Histogram::new(),
        last: Duration::ZERO,
    };
    let deadline = r.set_timer(Duration::from_secs(30), 0);
    d.posted = Instant::now();
    publisher.write_all(post.as_bytes()).map_err(|e| format!("publishing: {e}"))?;
    let cpu_pub0 = procfs::cpu_time(o.pid).unwrap_or_default();
    r.run(&mut d).map_err(|e| format!("reactor failed: {e}"))?;
    r.cancel_timer(deadline);
    let fan_cpu = procfs::cpu_time(o.pid).unwrap_or_default().saturating_sub(cpu_pub0);
    let (p50, p99) = (d.hist.quantile(0.5), d.hist.quantile(0.99));
    println!(
        "  delivery of one publish: {}/{} sockets; p50 {} ms, p99 {} ms, last {} ms (server CPU {} ms, 10 ms ticks)",
        d.received,
        n,
        ms(p50),
        ms(p99),
        ms(d.last.as_nanos() as u64),
        ms(fan_cpu.as_nanos() as u64)
    );
    if d.received < n {
        return Err(format!("only {} of {n} sockets received the publish within 30 s", d.received));
    }

    // Steady rate to M sockets.
    // Each socket has read the one event published so far: nothing of it is left to count.
    // The sockets past M are closed here (and leave the epoll set).
    let socks: Vec<Option<TcpStream>> = d.socks.into_iter().take(o.subs).map(Some).collect();
    wait_stat(o.addr, "ws_connections", base + o.subs as u64, Duration::from_secs(30))?;
    let mut h =
        Steady { socks, bufs: vec![Vec::new(); o.subs], events: vec![0; o.subs], chunk: vec![0; 64 * 1024] };
    let report = steady::run(&mut r, &mut h, o.addr, o.pid, &o.channel, o.rate, o.duration)?;
    report.print("sockets");
    println!(
        "RESULT mode=ws n={n} open_s={:.3} idle_s={idle_s:.3} idle_cpu_pct={idle_cpu_pct:.3} rss_before_bytes={rss_before} \
         rss_held_bytes={rss_held} rss_per_socket_bytes={per_socket} received={} delivery_p50_us={} delivery_p99_us={} \
         delivery_last_us={} {}",
        opened.as_secs_f64(),
        d.received,
        p50 / 1000,
        p99 / 1000,
        d.last.as_micros(),
        report.result_fields()
    );
    report.check("sockets")
}
