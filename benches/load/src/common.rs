//! Pieces the modes share: error counters, the control connection (for `/stats` and
//! publishes), and formatting.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reactor::{Reactor, TimerId};

use crate::client::{Fail, Key, Pool};

/// The one deadline the current phase of a hub mode (longpoll, fanout) runs under: a loop
/// timer with the mode's `tag`, and what the phase is doing, for the message if it fires.
#[derive(Default)]
pub struct PhaseDeadline {
    armed: Option<(TimerId, &'static str, Duration)>,
}

impl PhaseDeadline {
    /// Arms the deadline of a new phase (replacing the previous phase's).
    pub fn set(&mut self, r: &mut Reactor<()>, tag: u64, after: Duration, what: &'static str) {
        self.clear(r);
        self.armed = Some((r.set_timer(after, tag), what, after));
    }

    /// The phase finished in time.
    pub fn clear(&mut self, r: &mut Reactor<()>) {
        if let Some((id, _, _)) = self.armed.take() {
            r.cancel_timer(id);
        }
    }

    /// The timer fired: forgets it and says what did not finish in time.
    pub fn fired(&mut self) -> String {
        let (what, after) = self.armed.take().map_or(("a phase", Duration::ZERO), |(_, w, a)| (w, a));
        format!("{what} did not finish within {:.0} s", after.as_secs_f64())
    }
}

/// Errors by kind.
#[derive(Default, Debug, Clone, Copy)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    /// A response with an unexpected status (http: anything outside 2xx).
    pub status: u64,
    /// A response that is not well-framed HTTP/1.1 (or an unreadable hub answer).
    pub parse: u64,
    /// A well-formed answer with the wrong content (longpoll/fanout: a missing, duplicated,
    /// out-of-order or unexpected message).
    pub check: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.status + self.parse + self.check
    }

    /// Counts a connection failure under its kind.
    pub fn count(&mut self, fail: &Fail) {
        match fail {
            Fail::Connect(_) => self.connect += 1,
            Fail::Read(_) | Fail::Eof { .. } => self.read += 1,
            Fail::Write(_) => self.write += 1,
            Fail::Parse(_) => self.parse += 1,
        }
    }

    /// `connect 0, read 0, ...` for the human-readable report.
    pub fn describe(&self) -> String {
        format!(
            "connect {}, read {}, write {}, timeout {}, status {}, parse {}, check {}",
            self.connect, self.read, self.write, self.timeout, self.status, self.parse, self.check
        )
    }

    /// `errors=N errors_connect=N ...` for the RESULT line.
    pub fn result_fields(&self) -> String {
        format!(
            "errors={} errors_connect={} errors_read={} errors_write={} errors_timeout={} errors_status={} \
             errors_parse={} errors_check={}",
            self.total(),
            self.connect,
            self.read,
            self.write,
            self.timeout,
            self.status,
            self.parse,
            self.check
        )
    }
}

/// Checks that `pid` names a live process whose `/proc/PID/stat` we can read (the server's
/// CPU time is read from it), with a clear message otherwise.
pub fn check_pid(pid: u32) -> Result<(), String> {
    test_support::procfs::cpu(pid)
        .map(|_| ())
        .map_err(|e| format!("cannot read /proc/{pid}/stat ({e}): is {pid} the server's pid?"))
}

/// The message for a connect that failed before any connection ever succeeded.
pub fn cannot_connect(addr: SocketAddr, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        format!("cannot connect to {addr}: connection refused (is the server running there?)")
    } else {
        format!("cannot connect to {addr}: {e}")
    }
}

/// Describes a failure in one short phrase (for fatal messages).
pub fn describe_fail(fail: &Fail) -> String {
    match fail {
        Fail::Connect(e) => format!("connect failed: {e}"),
        Fail::Read(e) => format!("read failed: {e}"),
        Fail::Eof { partial: true } => "the server closed the connection in the middle of a response".into(),
        Fail::Eof { partial: false } => "the server closed the connection".into(),
        Fail::Write(e) => format!("write failed: {e}"),
        Fail::Parse(what) => format!("bad response: {what}"),
    }
}

/// A keep-alive connection for control requests (`/stats`, publishes), one request at a
/// time or a pipelined batch, reconnected on demand if the server closed it (e.g. its
/// keep-alive timeout during a long idle window).
#[derive(Default)]
pub struct Ctl {
    pub key: Option<Key>,
    /// Requests written and not yet answered.
    pub outstanding: usize,
}

impl Ctl {
    /// Sends `req` (`count` requests back to back), connecting first if needed (the bytes
    /// wait in the connection's buffer until the connect completes).
    pub fn send<T>(
        &mut self,
        pool: &mut Pool<T>,
        r: &mut Reactor<()>,
        req: &[u8],
        count: usize,
        data: impl FnOnce() -> T,
    ) -> io::Result<()> {
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = pool.connect(r, data())?;
                self.key = Some(k);
                k
            }
        };
        pool.send(r, key, req);
        self.outstanding += count;
        Ok(())
    }

    /// A response arrived on this connection.
    pub fn answered(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// The connection ended; returns how many requests were lost with it.
    pub fn lost(&mut self) -> usize {
        self.key = None;
        std::mem::take(&mut self.outstanding)
    }
}

/// One blocking request on a new connection (`Connection: close`); the body. For the `sse`
/// and `ws` modes' setup and checks, never measured.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: load\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("{method} {path}: {e}"))?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The number after `"KEY":` in `/stats`.
pub fn stat(addr: SocketAddr, key: &str) -> Result<u64, String> {
    let body = request(addr, "GET", "/stats", b"")?;
    let pat = format!("\"{key}\":");
    let at = body.find(&pat).ok_or_else(|| format!("/stats has no {key} (an older tidings?)"))?;
    let digits: String = body[at + pat.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().map_err(|_| format!("/stats {key} is not a number"))
}

/// Polls `/stats` every 100 ms until `key` is `want`, for at most `within`.
pub fn wait_stat(addr: SocketAddr, key: &str, want: u64, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let v = stat(addr, key)?;
        if v == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("/stats {key} is {v}, not {want}, after {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nanoseconds to microseconds with one decimal.
pub fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// Nanoseconds to milliseconds with three decimals.
pub fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// Bytes, human-readable (for the report lines, not the RESULT line).
pub fn bytes(n: u64) -> String {
    if n >= 10 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 10 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}
