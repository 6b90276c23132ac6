//! Command line: `tidings-load MODE [FLAGS]`, parsed by hand like the server's flags.
//!
//! Every value is bounded, every target must be a loopback address (127.0.0.0/8 or ::1): this
//! tool opens thousands of connections as fast as it can and must never be pointed at
//! someone else's machine by a typo.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::common::Procs;

pub const USAGE: &str = "\
tidings-load: the tidings load generator (one reactor thread, loopback targets only)

USAGE:
  tidings-load http     --url URL [-c N] [-d SECS] [--pipeline K] [--conn-per-request]
                        [--warmup SECS] [--timeout SECS] [--pid PID]
  tidings-load longpoll --addr ADDR --pid PID [-n N] [--idle SECS] [--publish M] [--prefix P]
  tidings-load fanout   --addr ADDR [-n N] [--burst K] [--channel NAME] [--pid PID]
  tidings-load ws       --addr ADDR --pid PID [-n N] [--idle SECS] [--subs M] [--rate R]
                        [-d SECS] [--channel NAME]
  tidings-load sse      --addr ADDR --pid PID [-n N] [--idle SECS] [--subs M] [--rate R]
                        [-d SECS] [--channel NAME]
  tidings-load --help

MODES
  http      N connections send GET URL for D seconds (after a warm-up that is not counted) and
            report requests/s, latency percentiles and errors by kind. Keep-alive by default,
            with --pipeline K requests in flight per connection; --conn-per-request opens a new
            connection for every request (Connection: close; its latency includes the connect).
            Latency runs from the write of a request to the last byte of its response.
  longpoll  Opens N connections, each holding GET /sub/{P}{i}?since=0&timeout=300 on a channel
            of its own; waits until the server's /stats shows them all waiting; measures the
            server's CPU and RSS over an idle window (RSS per held poll is the growth since
            before the polls were opened, over N); publishes to M of the channels one at a time
            (1 ms apart) and times publish -> delivery (POST written -> that subscriber's 200
            fully read) and publish -> acknowledgement (POST written -> its 200 read); then
            resets all N connections (RST) and times until /stats shows no waiting polls.
  fanout    N subscribers hold GET /sub/NAME?since=S on one channel; one publish; reports the
            time until the last subscriber has read it (and the median, the p99). With
            --burst K: every subscriber re-polls with its cursor (since=next) while K messages are published
            back to back, and each must receive every message exactly once, in order.
  ws        N WebSockets on GET /ws, each subscribed to one channel (NAME, default
            ws-<our pid>); measures the server's CPU and RSS over an idle window (RSS per
            socket: the growth since before they opened, over N); then one publish (POST) and
            the delay until each socket has read its event: p50, p99, last; then the steady
            rate phase of sse below, on M of the sockets (an event = a text frame with a seq).
  sse       Opens N Server-Sent Events streams (GET /sse/NAME, HTTP/1.0) on one channel;
            waits until /stats shows them; measures the server's CPU and RSS over an idle
            window (RSS per stream = growth since before they opened, over N); publishes one
            message and times POST written -> each stream has read it (p50, p99, last); then
            keeps M streams and publishes R messages/s for D seconds from another thread
            (request k written at k/R s, pipelined on one keep-alive connection, the answers
            read by a third thread), counting the events every stream reads: publishes sent
            and answered, messages/s delivered, server and own CPU, and how many each stream
            is missing (any missing event, or a refused publish, makes the run fail).

FLAGS
  --url URL             http://HOST[:PORT]/PATH, HOST = a loopback IP or localhost
  --addr ADDR           HOST:PORT of a tidings server, HOST = a loopback IP or localhost
  -c, --connections N   http: connections [50] (1..=50000)
  -d, --duration SECS   http: measured window [10]; sse/ws: steady-rate window [5]
                        (fractions allowed, at most 3600)
  --pipeline K          http: requests in flight per connection [1] (1..=1024)
  --conn-per-request    http: a new connection per request (no pipelining)
  --warmup SECS         http: load before the measured window, not counted [1] (at most 600)
  --timeout SECS        http: a request (or connect) unanswered this long is an error [5]
  --pid PID             the server's pid: report its CPU (and, for longpoll, RSS) from /proc.
                        http: server CPU µs per request over the measured window (the
                        headline figure; use a window of 10 s or more: ticks are 10 ms).
                        Required for longpoll. http/longpoll/fanout: repeatable, for the
                        nodes of a cluster behind one --reuse-port address: CPU and RSS are
                        summed over them, and longpoll/fanout read /stats of each (a node
                        counts only the polls it holds) through a connection that pid has
                        accepted (found in /proc), and sum them; longpoll then accepts
                        `subscribers` 0 in a publish's answer (the node that took the
                        publish may not be the one holding that channel's poll). sse/ws: once.
  -n N                  longpoll/fanout/ws: held polls or sockets [1000] (1..=60000; the kernel's ephemeral
                        port range, 28k by default, bounds what one target address can take)
  --idle SECS           longpoll/ws: idle window [5] (at most 3600)
  --publish M           longpoll: publishes, to M distinct channels [min(1000, N)]
  --prefix P            longpoll: channel name prefix [lp-<our pid>-], so reruns use new channels
  --burst K             fanout: messages in the burst [0 = no burst] (at most 100000)
  --channel NAME        fanout: the channel [fan]; sse: [sse-<our pid>]; ws: [ws-<our pid>]
  --subs M              sse/ws: streams or sockets kept for the steady-rate phase [min(1000, N)]
  --rate R              sse/ws: publishes per second in the steady-rate phase [1000] (1..=100000)
  -h, --help            print this and exit

OUTPUT
  Human-readable lines, then one line `RESULT mode=... key=value ...` for scripts.
  Exit code 0 when the run completed (errors, if any, are counted in the RESULT line), 1 when
  it could not (server not there, a phase missed its deadline), 2 for a bad command line.
  Every phase has a deadline: the tool always stops by itself.
";

#[derive(Debug)]
pub enum Command {
    Help,
    Http(HttpOpts),
    Longpoll(LongpollOpts),
    Fanout(FanoutOpts),
    Ws(WsOpts),
    Sse(SseOpts),
}

#[derive(Debug, Clone)]
pub struct SseOpts {
    pub addr: SocketAddr,
    pub pid: u32,
    pub n: usize,
    pub idle: Duration,
    pub subs: usize,
    pub rate: usize,
    pub duration: Duration,
    pub channel: String,
}

#[derive(Debug, Clone)]
pub struct WsOpts {
    pub addr: SocketAddr,
    pub n: usize,
    pub idle: Duration,
    pub subs: usize,
    pub rate: usize,
    pub duration: Duration,
    pub channel: String,
    pub pid: u32,
}

#[derive(Debug, Clone)]
pub struct HttpOpts {
    pub addr: SocketAddr,
    /// Value of the Host header.
    pub host: String,
    /// Request target (path and query).
    pub path: String,
    pub connections: usize,
    pub duration: Duration,
    pub pipeline: usize,
    pub conn_per_request: bool,
    pub warmup: Duration,
    pub timeout: Duration,
    /// Empty: the server's CPU is not reported.
    pub pids: Procs,
}

#[derive(Debug, Clone)]
pub struct LongpollOpts {
    pub addr: SocketAddr,
    pub n: usize,
    pub idle: Duration,
    pub publish: usize,
    /// At least one.
    pub pids: Procs,
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct FanoutOpts {
    pub addr: SocketAddr,
    pub n: usize,
    pub burst: usize,
    pub channel: String,
    pub pids: Procs,
}

/// Every flag as parsed, before the mode picks what it needs.
#[derive(Default)]
struct Raw {
    url: Option<String>,
    addr: Option<String>,
    connections: Option<usize>,
    duration: Option<Duration>,
    pipeline: Option<usize>,
    conn_per_request: bool,
    warmup: Option<Duration>,
    timeout: Option<Duration>,
    pids: Vec<u32>,
    n: Option<usize>,
    idle: Option<Duration>,
    publish: Option<usize>,
    prefix: Option<String>,
    burst: Option<usize>,
    channel: Option<String>,
    subs: Option<usize>,
    rate: Option<usize>,
}

/// Which flags each mode accepts (anything else is an error rather than silently ignored).
const HTTP_FLAGS: &[&str] = &[
    "--url",
    "--connections",
    "--duration",
    "--pipeline",
    "--conn-per-request",
    "--warmup",
    "--timeout",
    "--pid",
];
const LONGPOLL_FLAGS: &[&str] = &["--addr", "-n", "--idle", "--publish", "--pid", "--prefix"];
const FANOUT_FLAGS: &[&str] = &["--addr", "-n", "--burst", "--channel", "--pid"];
const WS_FLAGS: &[&str] = &["--addr", "--pid", "-n", "--idle", "--subs", "--rate", "--duration", "--channel"];
const SSE_FLAGS: &[&str] =
    &["--addr", "--pid", "-n", "--idle", "--subs", "--rate", "--duration", "--channel"];

pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mode = match args.next() {
        None => return Err("no mode given: http, longpoll, fanout, sse or ws (see --help)".into()),
        Some(m) if m == "--help" || m == "-h" || m == "help" => return Ok(Command::Help),
        Some(m) => m,
    };
    let allowed = match mode.as_str() {
        "http" => HTTP_FLAGS,
        "longpoll" => LONGPOLL_FLAGS,
        "fanout" => FANOUT_FLAGS,
        "ws" => WS_FLAGS,
        "sse" => SSE_FLAGS,
        other => {
            return Err(format!("unknown mode {other:?}: expected http, longpoll, fanout or ws (see --help)"))
        }
    };
    let mut raw = Raw::default();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let name = match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-c" => "--connections".to_string(),
            "-d" => "--duration".to_string(),
            _ => name,
        };
        if !allowed.contains(&name.as_str()) {
            return Err(if name.starts_with('-') {
                format!("{name} is not a flag of mode {mode} (see --help)")
            } else {
                format!("unexpected argument {name:?} (see --help)")
            });
        }
        if name == "--conn-per-request" {
            if inline.is_some() {
                return Err("--conn-per-request takes no value".into());
            }
            raw.conn_per_request = true;
            continue;
        }
        let value = inline.or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"))?;
        let v = value.as_str();
        match name.as_str() {
            "--url" => raw.url = Some(value.clone()),
            "--addr" => raw.addr = Some(value.clone()),
            "--connections" => raw.connections = Some(int(&name, v, 1, 50_000)?),
            "--duration" => raw.duration = Some(secs(&name, v, false, 3600.0)?),
            "--pipeline" => raw.pipeline = Some(int(&name, v, 1, 1024)?),
            "--warmup" => raw.warmup = Some(secs(&name, v, true, 600.0)?),
            "--timeout" => raw.timeout = Some(secs(&name, v, false, 600.0)?),
            "--pid" => raw.pids.push(int(&name, v, 1, u32::MAX as usize)? as u32),
            "-n" => raw.n = Some(int(&name, v, 1, 60_000)?),
            "--idle" => raw.idle = Some(secs(&name, v, false, 3600.0)?),
            "--publish" => raw.publish = Some(int(&name, v, 0, 60_000)?),
            "--prefix" => raw.prefix = Some(channel_part(&name, v, 100)?),
            "--burst" => raw.burst = Some(int(&name, v, 0, 100_000)?),
            "--channel" => raw.channel = Some(channel_part(&name, v, 128)?),
            "--subs" => raw.subs = Some(int(&name, v, 1, 60_000)?),
            "--rate" => raw.rate = Some(int(&name, v, 1, 100_000)?),
            _ => unreachable!("flag {name} is allowed but not handled"),
        }
    }
    match mode.as_str() {
        "http" => http_opts(raw).map(Command::Http),
        "longpoll" => longpoll_opts(raw).map(Command::Longpoll),
        "ws" => ws_opts(raw).map(Command::Ws),
        "sse" => sse_opts(raw).map(Command::Sse),
        _ => fanout_opts(raw).map(Command::Fanout),
    }
}

fn http_opts(raw: Raw) -> Result<HttpOpts, String> {
    let url = raw.url.ok_or("http needs --url, e.g. --url http://127.0.0.1:8080/plaintext")?;
    let (addr, host, path) = parse_url(&url)?;
    let pipeline = raw.pipeline.unwrap_or(1);
    if raw.conn_per_request && pipeline > 1 {
        return Err("--pipeline and --conn-per-request exclude each other".into());
    }
    Ok(HttpOpts {
        addr,
        host,
        path,
        connections: raw.connections.unwrap_or(50),
        duration: raw.duration.unwrap_or(Duration::from_secs(10)),
        pipeline,
        conn_per_request: raw.conn_per_request,
        warmup: raw.warmup.unwrap_or(Duration::from_secs(1)),
        timeout: raw.timeout.unwrap_or(Duration::from_secs(5)),
        pids: Procs(raw.pids),
    })
}

/// The one `--pid` of the modes that take a single server process.
fn single_pid(raw: &Raw, mode: &str) -> Result<u32, String> {
    match raw.pids[..] {
        [pid] => Ok(pid),
        [] => Err(format!("{mode} needs --pid PID (the server's pid, to read its CPU and RSS)")),
        _ => Err(format!("{mode} takes --pid once (one server process)")),
    }
}

fn longpoll_opts(raw: Raw) -> Result<LongpollOpts, String> {
    let addr = parse_addr(raw.addr.as_deref().ok_or("longpoll needs --addr, e.g. --addr 127.0.0.1:8080")?)?;
    if raw.pids.is_empty() {
        return Err("longpoll needs --pid PID (the server's pid, to read its CPU and RSS)".into());
    }
    let n = raw.n.unwrap_or(1000);
    let publish = raw.publish.unwrap_or(n.min(1000));
    if publish > n {
        return Err(format!("--publish {publish} is more than the {n} held polls (-n)"));
    }
    Ok(LongpollOpts {
        addr,
        n,
        idle: raw.idle.unwrap_or(Duration::from_secs(5)),
        publish,
        pids: Procs(raw.pids),
        prefix: raw.prefix.unwrap_or_else(|| format!("lp-{}-", std::process::id())),
    })
}

/// `-n` (default 1000) and `--subs` (default `min(n, 1000)`, at most `n`): how many `what` are
/// held, and how many of them stay for the steady phase.
fn held_and_steady(raw: &Raw, what: &str) -> Result<(usize, usize), String> {
    let n = raw.n.unwrap_or(1000);
    let subs = raw.subs.unwrap_or(n.min(1000));
    if subs > n {
        return Err(format!("--subs {subs} is more than the {n} {what} (-n)"));
    }
    Ok((n, subs))
}

/// `--channel`, or `default()`; a name of dots only is refused (the server would refuse it).
fn channel(given: Option<String>, default: impl FnOnce() -> String) -> Result<String, String> {
    let channel = given.unwrap_or_else(default);
    if channel.bytes().all(|b| b == b'.') {
        return Err("--channel: a channel name cannot be only dots".into());
    }
    Ok(channel)
}

fn sse_opts(raw: Raw) -> Result<SseOpts, String> {
    let addr = parse_addr(raw.addr.as_deref().ok_or("sse needs --addr, e.g. --addr 127.0.0.1:8080")?)?;
    let pid = single_pid(&raw, "sse")?;
    let (n, subs) = held_and_steady(&raw, "streams")?;
    let channel = channel(raw.channel, || format!("sse-{}", std::process::id()))?;
    Ok(SseOpts {
        addr,
        pid,
        n,
        idle: raw.idle.unwrap_or(Duration::from_secs(5)),
        subs,
        rate: raw.rate.unwrap_or(1000),
        duration: raw.duration.unwrap_or(Duration::from_secs(5)),
        channel,
    })
}

fn fanout_opts(raw: Raw) -> Result<FanoutOpts, String> {
    let addr = parse_addr(raw.addr.as_deref().ok_or("fanout needs --addr, e.g. --addr 127.0.0.1:8080")?)?;
    let channel = channel(raw.channel, || "fan".into())?;
    Ok(FanoutOpts {
        addr,
        n: raw.n.unwrap_or(1000),
        burst: raw.burst.unwrap_or(0),
        channel,
        pids: Procs(raw.pids),
    })
}

fn ws_opts(raw: Raw) -> Result<WsOpts, String> {
    let addr = parse_addr(raw.addr.as_deref().ok_or("ws needs --addr, e.g. --addr 127.0.0.1:8080")?)?;
    let pid = single_pid(&raw, "ws")?;
    let (n, subs) = held_and_steady(&raw, "sockets")?;
    let channel = channel(raw.channel, || format!("ws-{}", std::process::id()))?;
    Ok(WsOpts {
        addr,
        n,
        idle: raw.idle.unwrap_or(Duration::from_secs(5)),
        subs,
        rate: raw.rate.unwrap_or(1000),
        duration: raw.duration.unwrap_or(Duration::from_secs(5)),
        channel,
        pid,
    })
}

fn int(name: &str, v: &str, min: usize, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{name}: invalid value {v:?} (expected an integer in {min}..={max})")),
    }
}

fn secs(name: &str, v: &str, zero_ok: bool, max: f64) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s <= max && (s > 0.0 || (zero_ok && s == 0.0)) => {
            Ok(Duration::from_secs_f64(s))
        }
        _ => {
            let low = if zero_ok { "0" } else { "more than 0" };
            Err(format!("{name}: invalid value {v:?} (expected seconds, {low} to {max})"))
        }
    }
}

/// A channel name (or prefix): `[A-Za-z0-9._:-]`, at most `max` bytes.
fn channel_part(name: &str, v: &str, max: usize) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("{name}: invalid value {v:?} (1..={max} bytes of [A-Za-z0-9._:-])"))
    }
}

/// Refuses anything that is not a loopback address.
pub fn require_loopback(ip: IpAddr) -> Result<(), String> {
    if ip.is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "refusing to load {ip}: tidings-load only targets loopback addresses (127.0.0.0/8 or ::1)"
        ))
    }
}

/// A host (IP literal, `[v6]`, or `localhost`) to an address; no DNS.
fn host_ip(host: &str) -> Result<IpAddr, String> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = literal.parse().map_err(|_| {
        format!(
            "refusing host {host:?}: tidings-load only targets loopback addresses \
             (an IP literal in 127.0.0.0/8, ::1, or localhost)"
        )
    })?;
    require_loopback(ip)?;
    Ok(ip)
}

/// `HOST:PORT` (HOST may be `[::1]` or `localhost`).
pub fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    let (host, port) = v.rsplit_once(':').ok_or_else(|| format!("--addr {v:?}: expected HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("--addr {v:?}: bad port"))?;
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!("--addr {v:?}: write an IPv6 address in brackets, e.g. [::1]:8080"));
    }
    Ok(SocketAddr::new(host_ip(host)?, port))
}

/// `http://HOST[:PORT][/PATH]` -> (address, Host header, request target).
pub fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!("--url {url:?}: scheme {scheme:?} is not supported, only http"))
        }
        None => return Err(format!("--url {url:?}: expected http://HOST[:PORT]/PATH")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("--url {url:?}: bad host"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) || path.contains('#') {
        return Err(format!("--url {url:?}: the path must not contain spaces, control characters or '#'"));
    }
    // The port is after the last ':' unless that ':' is inside an IPv6 literal.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            let port: u16 = authority[i + 1..].parse().map_err(|_| format!("--url {url:?}: bad port"))?;
            (&authority[..i], port)
        }
        _ => (authority, 80),
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!("--url {url:?}: write an IPv6 host in brackets, e.g. http://[::1]:8080/"));
    }
    let ip = host_ip(host)?;
    Ok((SocketAddr::new(ip, port), authority.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Command, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn urls() {
        let (a, h, p) = parse_url("http://127.0.0.1:8080/plaintext").unwrap();
        assert_eq!(
            (a.to_string(), h.as_str(), p.as_str()),
            ("127.0.0.1:8080".into(), "127.0.0.1:8080", "/plaintext")
        );
        let (a, _, p) = parse_url("http://localhost").unwrap();
        assert_eq!((a.to_string(), p.as_str()), ("127.0.0.1:80".into(), "/"));
        let (a, _, p) = parse_url("http://[::1]:9000/sub/x?since=0").unwrap();
        assert_eq!((a.to_string(), p.as_str()), ("[::1]:9000".into(), "/sub/x?since=0"));
        assert!(parse_url("http://127.9.9.9:1/").is_ok());
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("127.0.0.1:8080/").is_err());
        assert!(parse_url("http://127.0.0.1:x/").is_err());
    }

    #[test]
    fn non_loopback_targets_are_refused() {
        for url in
            ["http://10.0.0.1:8080/", "http://example.com/", "http://[2001:db8::1]:80/", "http://0.0.0.0/"]
        {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains("loopback"), "{url}: {e}");
        }
        for addr in ["192.168.1.1:8080", "[::ffff:10.0.0.1]:1", "example.com:80"] {
            assert!(parse_addr(addr).unwrap_err().contains("loopback"), "{addr}");
        }
        assert!(parse_addr("[::1]:8080").is_ok());
        assert!(parse_addr("localhost:8080").is_ok());
        assert!(parse_addr("127.0.0.1").is_err());
    }

    #[test]
    fn flags() {
        match args("http --url http://127.0.0.1:8080/plaintext -c 10 -d 2.5 --pipeline=16 --pid 7").unwrap() {
            Command::Http(o) => {
                assert_eq!((o.connections, o.pipeline, o.pids.0), (10, 16, vec![7]));
                assert_eq!(o.duration, Duration::from_millis(2500));
                assert_eq!(o.warmup, Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        match args("longpoll --addr 127.0.0.1:8080 -n 500 --pid 9").unwrap() {
            Command::Longpoll(o) => {
                assert_eq!((o.n, o.publish, o.pids.0), (500, 500, vec![9]));
            }
            other => panic!("{other:?}"),
        }
        match args("longpoll --addr 127.0.0.1:8080 --pid 9 --pid=10").unwrap() {
            Command::Longpoll(o) => assert_eq!(o.pids.0, [9, 10]),
            other => panic!("{other:?}"),
        }
        match args("fanout --addr 127.0.0.1:8080 --burst 50").unwrap() {
            Command::Fanout(o) => assert_eq!((o.n, o.burst, o.channel.as_str()), (1000, 50, "fan")),
            other => panic!("{other:?}"),
        }
        match args("sse --addr 127.0.0.1:8080 --pid 3 -n 500 --rate 20 -d 2").unwrap() {
            Command::Sse(o) => {
                assert_eq!((o.n, o.subs, o.rate, o.pid), (500, 500, 20, 3));
                assert_eq!(o.duration, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
        match args("ws --addr 127.0.0.1:8080 --pid 3 -n 2000 --rate 4000 -d 1.5").unwrap() {
            Command::Ws(o) => {
                assert_eq!((o.n, o.subs, o.rate, o.pid), (2000, 1000, 4000, 3));
                assert_eq!(o.duration, Duration::from_millis(1500));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(args("--help").unwrap(), Command::Help));
        assert!(matches!(args("fanout -h").unwrap(), Command::Help));
        for bad in [
            "",
            "bench",
            "http",
            "http --url http://127.0.0.1/ -c 0",
            "http --url http://127.0.0.1/ -c",
            "http --url http://127.0.0.1/ -d -1",
            "http --url http://127.0.0.1/ --pipeline 4 --conn-per-request",
            "http --url http://127.0.0.1/ --burst 4",
            "longpoll --addr 127.0.0.1:8080",
            "longpoll --addr 127.0.0.1:8080 --pid 1 -n 10 --publish 11",
            "fanout --addr 127.0.0.1:8080 --channel a/b",
            "fanout --addr 127.0.0.1:8080 stray",
            "sse --addr 127.0.0.1:8080",
            "sse --addr 127.0.0.1:8080 --pid 1 -n 10 --subs 11",
            "sse --addr 127.0.0.1:8080 --pid 1 --rate 0",
            "sse --addr 10.0.0.1:8080 --pid 1",
            "ws --addr 127.0.0.1:8080 --pid 1 -n 10 --subs 11",
            "ws --addr 127.0.0.1:8080 --pid 1 --rate 100001",
            "ws --addr 127.0.0.1:8080 --pid 3 --pid 4",
            "sse --addr 127.0.0.1:8080 --pid 3 --pid 4",
        ] {
            assert!(args(bad).is_err(), "accepted: {bad:?}");
        }
    }
}
