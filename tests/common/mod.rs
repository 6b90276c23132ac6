//! Shared helpers of the end-to-end tests: a tiny blocking HTTP/1.1 client over
//! `std::net::TcpStream` and two ways to run the hub: in-process on a thread ([`start`]) or
//! as the real `tidings` binary ([`Child::spawn`]). The JSON reader, the `/proc` readers and
//! the socket and process probes are the `test-support` crate's (re-exported here).
//!
//! Every socket has a read timeout, so a server that never answers fails the test instead of
//! hanging it; every child process is killed when its guard drops.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use app::Options;
#[allow(unused_imports)] // each test binary uses some of them
pub use test_support::{base64, json, procfs, sockets, Json};

/// How long a client waits for an answer before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

// ----- servers -----------------------------------------------------------------------------

/// Options for a test server: an ephemeral port on loopback, two workers, defaults otherwise.
pub fn opts() -> Options {
    let mut o = Options { workers: 2, ..Options::default() };
    o.http.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    o
}

/// [`opts`] with the hub's limits changed by `f` (e.g. `hub_opts(|h| h.retain = 3)`).
pub fn hub_opts(f: impl FnOnce(&mut app::hub::HubLimits)) -> Options {
    let mut o = opts();
    f(&mut o.hub);
    o
}

/// Runs a hub in this process on its own thread (like `app::run`, but without watching
/// signals: only one reactor per process may do that) and returns its address. The server
/// runs until the test process exits.
pub fn start(opts: Options) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tidings-test-server".into())
        .spawn(move || {
            let mut reactor = reactor::Reactor::new().expect("reactor");
            let service = app::Tidings::new(opts.clone(), reactor.remote()).expect("service");
            let mut server = http::Server::bind(opts.http_config(), service, &mut reactor).expect("bind");
            tx.send(server.local_addr()).expect("send addr");
            server.run(&mut reactor).expect("server loop");
        })
        .expect("spawn server thread");
    rx.recv_timeout(Duration::from_secs(10)).expect("server did not start")
}

/// Serialises the tests of one test binary that measure time or CPU (tests run on parallel
/// threads by default; two of these at once on a small machine would disturb each other).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises this process's open-file limit to its hard limit (children inherit it) and
/// returns it.
pub fn raise_nofile() -> u64 {
    test_support::limits::raise_nofile_limit().expect("raise RLIMIT_NOFILE")
}

/// Path of the `tidings` binary. Cargo sets `CARGO_BIN_EXE_<name>` only for binaries of the
/// package under test, and the binary belongs to the `tidings` package, not to this one; so
/// it is looked up next to the test executable (`target/<profile>/deps/<test>` ->
/// `target/<profile>/tidings`), after a `cargo build` of it that is a no-op when it is
/// already fresh (`cargo test --workspace` builds it anyway). `TIDINGS_BIN=path` overrides.
pub fn tidings_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TIDINGS_BIN") {
            return PathBuf::from(p);
        }
        if let Some(p) = option_env!("CARGO_BIN_EXE_tidings") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>").to_path_buf();
        let bin = profile_dir.join("tidings");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--manifest-path", manifest, "-p", "tidings", "--bin", "tidings"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        match cmd.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "note: cargo build of the tidings binary failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("note: cannot run cargo to build the tidings binary: {e}"),
        }
        assert!(bin.exists(), "tidings binary not found at {}", bin.display());
        bin
    })
    .clone()
}

/// The real `tidings` binary as a child process, killed when dropped.
pub struct Child {
    child: std::process::Child,
    pub addr: SocketAddr,
    pub pid: u32,
    stderr: Arc<Mutex<String>>,
}

impl Child {
    /// Starts `tidings --listen 127.0.0.1:0 ARGS..` and waits for its "listening on" line.
    pub fn spawn(args: &[&str]) -> Child {
        Child::spawn_with(args, |_| {})
    }

    /// Like [`Child::spawn`], with `configure` applied to the command before it starts (an
    /// environment variable, a `pre_exec` setting a resource limit, ..).
    pub fn spawn_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Child {
        let mut cmd = Command::new(tidings_bin());
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("spawn tidings");
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr pipe");
        let log = stderr.clone();
        std::thread::spawn(move || {
            // Keep draining stderr so the child never blocks on a full pipe.
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let guard_addr = rx.recv_timeout(Duration::from_secs(20));
        let mut c = Child { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), pid, stderr };
        match guard_addr {
            Ok(a) => c.addr = a.parse().expect("listening address"),
            Err(_) => panic!("tidings did not start; stderr:\n{}", c.stderr()),
        }
        c
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signo: i32) {
        test_support::process::kill(self.pid, signo)
            .unwrap_or_else(|e| panic!("kill({}, {signo}): {e}", self.pid));
    }

    /// Waits at most `limit` for the child to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// User + system CPU time of the child so far, from /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        procfs::cpu_time(self.pid).expect("read /proc/PID/stat")
    }

    /// Open file descriptors of the child, from /proc/PID/fd.
    pub fn fd_count(&self) -> usize {
        procfs::fd_count(self.pid).expect("read /proc/PID/fd")
    }

    /// Resident memory of the child in bytes (VmRSS of /proc/PID/status).
    pub fn rss(&self) -> u64 {
        procfs::rss_bytes(self.pid).expect("read VmRSS of /proc/PID/status")
    }

    /// Threads of the child, from /proc/PID/task.
    pub fn thread_count(&self) -> usize {
        procfs::thread_count(self.pid).expect("read /proc/PID/task")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` to completion and returns its output; kills it if it runs for
/// more than `limit` (a bad flag that was accepted would start a server and never exit).
pub fn run(args: &[&str], limit: Duration) -> std::process::Output {
    let child = Command::new(tidings_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidings");
    let pid = child.id();
    // Waited for on a thread, which also drains both pipes (a full pipe would block the child).
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // Our own child, not reaped yet (the thread still waits for it).
            let _ = test_support::process::kill(pid, libc::SIGKILL);
            let out = rx.recv().expect("waiting thread").expect("wait");
            panic!("tidings {args:?} did not exit; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

// ----- client ------------------------------------------------------------------------------

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Json {
        json::parse(&self.body).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.text()))
    }

    pub fn etag(&self) -> &str {
        self.header("etag").unwrap_or_else(|| panic!("no ETag in {self:?}"))
    }

    /// The ETag `"EPOCH:SEQ"` split in two, checking its form (8 lowercase hex digits).
    pub fn etag_parts(&self) -> (String, u64) {
        let tag = self.etag();
        let inner = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
        let (epoch, seq) =
            inner.and_then(|t| t.split_once(':')).unwrap_or_else(|| panic!("ETag {tag}: not \"EPOCH:SEQ\""));
        let hex = epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        assert!(hex, "ETag {tag}: epoch is not 8 lowercase hex digits");
        (epoch.to_string(), seq.parse().unwrap_or_else(|_| panic!("ETag {tag}: seq is not a number")))
    }

    /// The seq of the ETag as the epoch-less form `"SEQ"` (the epoch is checked, then dropped).
    pub fn etag_seq(&self) -> String {
        format!("\"{}\"", self.etag_parts().1)
    }
}

/// One keep-alive connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).expect("connect")
    }

    /// Like [`Client::connect`], but a refused (or failed) connection is an error, not a panic.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        Client::with_stream(TcpStream::connect_timeout(&addr, Duration::from_secs(10))?)
    }

    /// A client on a connection made elsewhere (e.g. with socket options set before connect).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client::with_stream(stream).expect("socket options")
    }

    fn with_stream(stream: TcpStream) -> io::Result<Client> {
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client { stream, buf: Vec::new() })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write request");
    }

    /// Sends a request with the given extra headers and body (Content-Length).
    pub fn send_request(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.send(&request_bytes(method, target, headers, body));
    }

    pub fn request(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.send_request(method, target, headers, body);
        self.read_response().unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    }

    pub fn get(&mut self, target: &str) -> Resp {
        self.request("GET", target, &[], b"")
    }

    pub fn get_with(&mut self, target: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", target, headers, b"")
    }

    pub fn post(&mut self, target: &str, body: &[u8]) -> Resp {
        self.request("POST", target, &[], body)
    }

    /// Reads more bytes into the buffer; `Ok(0)` at EOF. EINTR is retried: on Linux a
    /// `recv` on a socket with a read timeout fails with it when the process is stopped and
    /// continued (signal(7)), even without a signal handler; seen once in a full test run.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response (skipping interim 1xx answers). Bodies are framed by
    /// Content-Length (the server always sends it), none for 204/304.
    pub fn read_response(&mut self) -> io::Result<Resp> {
        loop {
            let head_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                    break i;
                }
                if self.fill()? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed before a response ({} bytes buffered)", self.buf.len()),
                    ));
                }
            };
            let head = String::from_utf8(self.buf[..head_end].to_vec())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 head"))?;
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or("");
            let status: u16 =
                status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {status_line:?}"))
                })?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            self.buf.drain(..head_end + 4);
            if (100..200).contains(&status) {
                continue;
            }
            let len = if status == 204 || status == 304 {
                0
            } else {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?
            };
            while self.buf.len() < len {
                if self.fill()? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-body"));
                }
            }
            let body = self.buf.drain(..len).collect();
            return Ok(Resp { status, headers, body });
        }
    }

    /// Whether the server sends nothing more for `wait` (no extra, duplicate answer). Returns
    /// the unexpected bytes if any arrived (an EOF counts as nothing sent).
    pub fn expect_silence(&mut self, wait: Duration) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(String::from_utf8_lossy(&self.buf).into_owned());
        }
        self.set_read_timeout(wait);
        let r = self.fill();
        self.set_read_timeout(READ_TIMEOUT);
        match r {
            Ok(0) => Ok(()),
            Ok(_) => Err(String::from_utf8_lossy(&self.buf).into_owned()),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(()),
            Err(e) => Err(format!("read error: {e}")),
        }
    }

    /// Whether the server closed the connection (EOF within `wait`).
    pub fn is_closed_by_server(&mut self, wait: Duration) -> bool {
        self.set_read_timeout(wait);
        let r = self.fill();
        self.set_read_timeout(READ_TIMEOUT);
        match r {
            Ok(0) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    /// Closes abruptly: SO_LINGER 0, so the kernel sends RST instead of FIN.
    pub fn reset(self) {
        reset(self.stream);
    }

    /// Closes gracefully (FIN).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

#[allow(unused_imports)]
pub use test_support::sockets::reset;

pub fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let chunked = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    if !chunked && (method == "POST" || !body.is_empty()) {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection (`Connection: close`).
pub fn once(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Resp {
    let mut c = Client::connect(addr);
    c.request(method, target, &[("Connection", "close")], body)
}

pub fn get(addr: SocketAddr, target: &str) -> Resp {
    once(addr, "GET", target, b"")
}

pub fn post(addr: SocketAddr, target: &str, body: &[u8]) -> Resp {
    once(addr, "POST", target, body)
}

/// `GET /stats`, parsed.
pub fn stats(addr: SocketAddr) -> Json {
    let r = get(addr, "/stats");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

/// A scalar counter of `/stats`.
pub fn stat(addr: SocketAddr, key: &str) -> u64 {
    stats(addr).get(key).as_u64()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `/stats` shows `key == want`; panics with the last stats if it never does.
pub fn wait_stat(addr: SocketAddr, key: &str, want: u64, limit: Duration) {
    let mut last = None;
    let ok = wait_until(limit, || {
        let s = stats(addr);
        let v = s.get(key).as_u64();
        last = Some(s);
        v == want
    });
    assert!(ok, "/stats {key} never reached {want}: {:?}", last);
}

/// `(seq, data)` of every message of a `/sub` answer (`data_b64` decoded).
pub fn messages(j: &Json) -> Vec<(u64, Vec<u8>)> {
    j.get("messages")
        .as_array()
        .iter()
        .map(|m| {
            let seq = m.get("seq").as_u64();
            let data = match m.opt("data") {
                Some(d) => d.as_str().as_bytes().to_vec(),
                None => base64_decode(m.get("data_b64").as_str()),
            };
            (seq, data)
        })
        .collect()
}

/// Just the seqs of a `/sub` answer.
pub fn seqs(j: &Json) -> Vec<u64> {
    messages(j).into_iter().map(|(s, _)| s).collect()
}

/// The bytes of a `data_b64` field; panics unless it is canonical base64.
pub fn base64_decode(s: &str) -> Vec<u8> {
    base64::decode(s).unwrap_or_else(|| panic!("not canonical base64: {s:?}"))
}
