//! Pieces the modes share: error counters, the control connection (for `/stats` and
//! publishes), and formatting.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reactor::{Reactor, TimerId};

use crate::client::{Fail, Key, Pool};
use crate::parse::{json_u64, parse_response};
use test_support::procfs::{self, Cpu};

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

/// The server's processes (`--pid`, repeatable: the nodes of a cluster on this machine,
/// e.g. several `tidings --reuse-port` behind one port). Their CPU time and RSS are summed:
/// the cost of a request is what all of them spent on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Procs(pub Vec<u32>);

impl Procs {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// [`check_pid`] for each.
    pub fn check(&self) -> Result<(), String> {
        self.0.iter().try_for_each(|&pid| check_pid(pid))
    }

    /// The summed CPU time (`None` without pids, or if one cannot be read).
    pub fn cpu(&self) -> Option<Cpu> {
        if self.is_empty() {
            return None;
        }
        let ticks = self.0.iter().map(|&pid| procfs::cpu(pid).map(|c| c.ticks)).sum::<io::Result<u64>>();
        ticks.ok().map(|ticks| Cpu { ticks })
    }

    /// The summed resident memory.
    pub fn rss_bytes(&self) -> io::Result<u64> {
        self.0.iter().map(|&pid| procfs::rss_bytes(pid)).sum()
    }

    /// `pid 7` or `pids 7+9`, for the report lines.
    pub fn describe(&self) -> String {
        let list: Vec<String> = self.0.iter().map(u32::to_string).collect();
        match list.len() {
            1 => format!("pid {}", list[0]),
            _ => format!("pids {}", list.join("+")),
        }
    }
}

/// The figures of `/stats` the hub modes wait on, summed over every node.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsSum {
    pub waiting: u64,
    /// `None` if a node does not report `loop_wakeups_total`.
    pub wakeups: Option<u64>,
}

/// `GET /stats` of every process of the server, summed: with one `--pid` (or none) the
/// target's; with several (the nodes of a cluster behind one `--reuse-port` address, each
/// counting only the polls it holds itself) one keep-alive connection **pinned** to each:
/// connections to the shared address are opened until the kernel has handed one to each
/// pid (the server-side socket of the connection, found in `/proc/net/tcp`, is among that
/// pid's descriptors). Blocking, one node after the other: these are control requests
/// (about 0.1 ms each on loopback), never measured, and their answer is needed before the
/// phase can go on anyway.
pub struct StatsGroup {
    addr: SocketAddr,
    req: Vec<u8>,
    /// One per node: its pid (`None`: whichever process answers) and its connection.
    nodes: Vec<(Option<u32>, Option<TcpStream>)>,
}

/// Connections opened to reach one given process before giving up (the kernel picks the
/// process by a hash of the connection's addresses, so a few tries find each of K nodes).
const PIN_TRIES: usize = 64;

impl StatsGroup {
    pub fn new(addr: SocketAddr, pids: &Procs) -> StatsGroup {
        let nodes = match pids.0.len() {
            0 | 1 => vec![(None, None)],
            _ => pids.0.iter().map(|&pid| (Some(pid), None)).collect(),
        };
        StatsGroup { addr, req: crate::client::get_request(&addr.to_string(), "/stats", false), nodes }
    }

    /// Reads `/stats` of every node (reconnecting, once per node, a connection the server
    /// closed in the meantime) and sums it.
    pub fn read(&mut self) -> Result<StatsSum, String> {
        let mut sum = StatsSum { waiting: 0, wakeups: Some(0) };
        for i in 0..self.nodes.len() {
            let body = match self.ask(i) {
                Ok(b) => b,
                Err(_) => {
                    self.nodes[i].1 = None;
                    self.ask(i)?
                }
            };
            let waiting = json_u64(&body, "waiting_polls")
                .ok_or("GET /stats answered without \"waiting_polls\": is this a tidings server?")?;
            sum.waiting += waiting;
            sum.wakeups = sum.wakeups.zip(json_u64(&body, "loop_wakeups_total")).map(|(a, b)| a + b);
        }
        Ok(sum)
    }

    /// One `GET /stats` to node `i`: the body of its 200.
    fn ask(&mut self, i: usize) -> Result<Vec<u8>, String> {
        let (pid, conn) = &mut self.nodes[i];
        let stream = match conn {
            Some(s) => s,
            None => conn.insert(connect_to_pid(self.addr, *pid)?),
        };
        stream.write_all(&self.req).map_err(|e| format!("GET /stats: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(resp) = parse_response(&buf).map_err(|e| format!("GET /stats: {e}"))? {
                if resp.status != 200 {
                    return Err(format!("GET /stats answered {}", resp.status));
                }
                if resp.close {
                    *conn = None;
                }
                return Ok(resp.body.to_vec());
            }
            match stream.read(&mut chunk) {
                Ok(0) => return Err("GET /stats: the server closed the connection".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("GET /stats: {e}")),
            }
        }
    }
}

/// A keep-alive connection to `addr` that process `pid` has accepted (any process if `None`).
fn connect_to_pid(addr: SocketAddr, pid: Option<u32>) -> Result<TcpStream, String> {
    for _ in 0..PIN_TRIES {
        let s = TcpStream::connect(addr).map_err(|e| cannot_connect(addr, &e))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let Some(pid) = pid else { return Ok(s) };
        let local = s.local_addr().map_err(|e| e.to_string())?;
        // The server accepts at once; its side of the connection has an inode once accepted.
        for _ in 0..100 {
            match accepted_by(addr, local, pid) {
                Some(true) => return Ok(s),
                Some(false) => break,
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    Err(format!(
        "no connection to {addr} reached pid {pid:?} in {PIN_TRIES} tries: is it a node listening there?"
    ))
}

/// Whether the server side of the connection `server` <- `client` is a descriptor of `pid`;
/// `None` while it is not accepted yet (no inode in `/proc/net/tcp`).
fn accepted_by(server: SocketAddr, client: SocketAddr, pid: u32) -> Option<bool> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(v6) => format!("{:04X}", v6.port()),
    };
    let (want_local, want_remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote).then(|| f[9].to_string())
    })?;
    if inode == "0" {
        return None;
    }
    let target = format!("socket:[{inode}]");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == target.as_str())))
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
