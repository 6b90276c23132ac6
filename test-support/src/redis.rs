//! A real `redis-server` for the cluster tests: started on a free port of 127.0.0.1 with no
//! persistence, stopped and continued (SIGSTOP/SIGCONT) to play a Redis that stops answering,
//! killed and started again empty to play one that lost its data, killed when dropped.
//!
//! The cluster tests need the real server: a fake would only check that `tidings` agrees with
//! the fake. When `redis-server` is not on `PATH` this panics and says how to get it (`.ci/run`
//! installs it); it never skips, so a machine without Redis cannot pass the suite silently.
//!
//! [`RedisServer::command`] speaks just enough RESP (the Redis protocol) to inspect or poke
//! the server from a test (`FLUSHALL`, `HGETALL tidings:{news}:meta`, ..); it is not a client
//! library, and nothing in the product uses it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to answer PING, and a [`RedisServer::command`] to answer.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// One `redis-server` process of ours on 127.0.0.1, killed when dropped.
pub struct RedisServer {
    /// `None` between [`RedisServer::kill`] and the next start.
    child: Option<Child>,
    port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port without a password and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// Like [`RedisServer::start`], with `--requirepass PASSWORD`: connections must `AUTH`.
    pub fn with_password(password: &str) -> RedisServer {
        RedisServer::start_with(Some(password.to_string()))
    }

    fn start_with(password: Option<String>) -> RedisServer {
        // The port is found by binding port 0 and letting it go: another process may take it
        // in between, so a server that does not come up is tried again on a new port.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut server = RedisServer { child: None, port, password: password.clone() };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:PORT`, the value of `tidings --redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_else(|| panic!("redis-server is not running"))
    }

    /// SIGSTOP: the server keeps its sockets open and answers nothing (a hung Redis).
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: a stopped server answers again, including what was sent while it was stopped.
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signo: libc::c_int) {
        crate::process::kill(self.pid(), signo)
            .unwrap_or_else(|e| panic!("kill(redis-server {}, {signo}): {e}", self.pid()));
    }

    /// SIGKILL and reap: every connection to it is reset, its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a new one, empty, on the same port (a Redis restarted
    /// without persistence). Waits until it answers PING.
    pub fn restart_empty(&mut self) {
        self.kill();
        // The old listener is gone with the process; redis-server binds with SO_REUSEADDR, so
        // the port is free again at once. A few tries cover a slow kernel all the same.
        let mut last_error = String::new();
        for _ in 0..3 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("redis-server did not restart on port {}: {last_error}", self.port);
    }

    /// Sends one command (after `AUTH` when the server has a password) on a fresh connection
    /// and returns its answer as text: a simple string or bulk string as is, an error as
    /// `-ERR ..`, an integer in decimal, a nil as `(nil)`, an array as its elements one per
    /// line. Panics if the server does not answer within 5 s.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Like [`RedisServer::command`], but a server that does not answer is an error.
    pub fn try_command(&self, args: &[&str]) -> io::Result<String> {
        self.try_command_within(args, COMMAND_TIMEOUT)
    }

    fn try_command_within(&self, args: &[&str], timeout: Duration) -> io::Result<String> {
        let stream = TcpStream::connect_timeout(&self.addr(), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        if let Some(password) = &self.password {
            writer.write_all(&encode(&["AUTH", password]))?;
            let auth = read_reply(&mut reader)?;
            if auth.starts_with('-') {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("AUTH: {auth}")));
            }
        }
        writer.write_all(&encode(args))?;
        read_reply(&mut reader)
    }

    /// Starts the process on `self.port` and waits for PING; on failure the process is
    /// killed and the reason returned.
    fn spawn(&mut self) -> Result<(), String> {
        let binary = redis_server_path();
        let port = self.port.to_string();
        let dir = std::env::temp_dir();
        let mut cmd = Command::new(&binary);
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if let Ok(answer) = self.try_command_within(&["PING"], Duration::from_millis(500)) {
                if answer == "PONG" {
                    return Ok(());
                }
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!("redis-server on port {} exited: {status}", self.port));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING in {STARTUP_LIMIT:?}",
                    port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped process dies of SIGKILL as well.
        self.kill();
    }
}

/// `redis-server` on `PATH`; panics with how to install it when it is not there.
pub fn redis_server_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!("redis-server not found: .ci/run installs it (apt-get install redis-server)")
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection"));
    }
    Ok(line.trim_end_matches("\r\n").to_string())
}

/// One RESP2 reply, as text (see [`RedisServer::command`]).
fn read_reply(r: &mut impl BufRead) -> io::Result<String> {
    let line = read_line(r)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP line {line:?}"));
    let (Some(kind), Some(rest)) = (line.get(..1), line.get(1..)) else { return Err(bad()) };
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Ok(line.clone()),
        "$" => {
            let Ok(len) = usize::try_from(rest.parse::<i64>().map_err(|_| bad())?) else {
                return Ok("(nil)".to_string());
            };
            let mut body = vec![0; len + 2];
            r.read_exact(&mut body)?;
            body.truncate(len);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        "*" => {
            let Ok(n) = usize::try_from(rest.parse::<i64>().map_err(|_| bad())?) else {
                return Ok("(nil)".to_string());
            };
            let items = (0..n).map(|_| read_reply(r)).collect::<io::Result<Vec<_>>>()?;
            Ok(items.join("\n"))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_as_text() {
        let mut input: &[u8] =
            b"+OK\r\n-ERR no\r\n:42\r\n$5\r\nhe\r\no\r\n$-1\r\n*2\r\n$1\r\na\r\n:7\r\n*-1\r\n";
        let got: Vec<String> = (0..7).map(|_| read_reply(&mut input).unwrap()).collect();
        assert_eq!(got, ["OK", "-ERR no", "42", "he\r\no", "(nil)", "a\n7", "(nil)"]);
        assert!(read_reply(&mut &b"?x\r\n"[..]).is_err());
        assert!(read_reply(&mut &b""[..]).is_err());
        assert_eq!(encode(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn a_real_server_stops_continues_and_restarts_empty() {
        let mut redis = RedisServer::start();
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        assert_eq!(redis.command(&["SET", "k", "v"]), "OK");
        assert_eq!(redis.command(&["GET", "k"]), "v");

        redis.stop();
        let hung = redis.try_command_within(&["PING"], Duration::from_millis(300));
        assert!(hung.is_err(), "a stopped server answered: {hung:?}");
        redis.cont();
        assert_eq!(redis.command(&["PING"]), "PONG");

        let port = redis.port();
        redis.restart_empty();
        assert_eq!(redis.port(), port);
        assert_eq!(redis.command(&["GET", "k"]), "(nil)");

        let pid = redis.pid();
        drop(redis);
        // Killed and reaped: the process is gone.
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "redis-server {pid} still runs");
    }

    #[test]
    fn a_password_is_required_and_sent() {
        let redis = RedisServer::with_password("s3cret");
        assert_eq!(redis.command(&["PING"]), "PONG");
        let anonymous = RedisServer { child: None, port: redis.port(), password: None };
        assert!(anonymous.command(&["PING"]).starts_with("-NOAUTH"), "no AUTH was needed");
    }
}
