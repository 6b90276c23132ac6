//! Command-line flags, parsed by hand (a dozen `--name value` pairs do not need a framework).
//!
//! Every flag takes a value (`--name value` or `--name=value`) except `--access-log` and
//! `--help`. `tidings token ..` is a subcommand (see [`Command::Token`]). The token and key
//! files are read here, at start, so a missing or empty one is a usage error too. Durations are seconds, fractions allowed. A bad flag or value produces a one-line
//! error naming it; `main` prints it and exits with code 2.

use std::time::Duration;

use crate::auth::{Cors, PublishToken, SubscribeKey};
use crate::hub::{valid_channel_name, HubLimits, MESSAGE_OVERHEAD};
use crate::render;
use crate::ws::WsLimits;

/// Everything the binary can be told. The server's own settings (address, head limit,
/// timeouts, connection limits) are an [`http::Config`] and the hub's retention limits a
/// [`HubLimits`], set directly by their flags: each setting is defined, and defaulted, once.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--listen`, `--max-header-bytes`, `--max-headers`, `--header-timeout`, `--body-timeout`,
    /// `--keepalive-timeout`, `--max-connections`, `--max-requests-per-connection`,
    /// `--shutdown-timeout`. (The body limit is `max_message`: see [`Options::http_config`].)
    pub http: http::Config,
    /// `--retain`, `--retain-bytes`, `--max-retained-bytes`, `--max-channels`, `--max-batch`,
    /// `--max-answer-bytes`, `--message-ttl`.
    pub hub: HubLimits,
    pub poll_timeout: Duration,
    pub max_message: usize,
    pub workers: usize,
    pub work_queue: usize,
    pub access_log: bool,
    /// `--publish-token-file`: `POST /pub/..` and `GET /work` need `Authorization: Bearer`.
    pub publish_token: Option<PublishToken>,
    /// `--subscribe-key-file`: `GET /sub/..` needs a `token=` signed with this key.
    pub subscribe_key: Option<SubscribeKey>,
    /// `--allow-origin`: CORS for pages on other origins.
    pub cors: Cors,
    /// `--ws-max-channels`, `--ws-max-message`, `--ws-ping`.
    pub ws: WsLimits,
    /// `--sse-heartbeat`: an idle SSE stream gets a `: hb` comment after this long.
    pub sse_heartbeat: Duration,
    /// `--max-stream-backlog`: an SSE stream whose unsent output passes this is dropped.
    pub max_stream_backlog: usize,
    /// `--redis`, `--redis-password-file`, `--redis-timeout`: cluster mode (see
    /// [`crate::cluster`]); `None` runs the in-memory hub alone.
    pub redis: Option<RedisOptions>,
}

/// Where the cluster's Redis is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `--redis redis://HOST:PORT[/DB]`, HOST resolved once at start.
    pub addr: std::net::SocketAddr,
    pub db: u32,
    /// `--redis-password-file`: sent with `AUTH` on every connection.
    pub password: Option<String>,
    /// `--redis-timeout`: a command not answered within it marks the connection down.
    pub timeout: Duration,
}

/// `--redis-timeout`'s default.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for Options {
    fn default() -> Self {
        Options {
            http: http::Config::default(),
            hub: HubLimits::default(),
            poll_timeout: Duration::from_secs(10),
            max_message: 64 * 1024,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).min(MAX_WORKERS),
            work_queue: 64,
            access_log: false,
            publish_token: None,
            subscribe_key: None,
            cors: Cors::Off,
            ws: WsLimits::default(),
            sse_heartbeat: Duration::from_secs(15),
            max_stream_backlog: 1024 * 1024,
            redis: None,
        }
    }
}

pub const USAGE: &str = "\
tidings: a long-poll message hub on a hand-rolled epoll reactor

USAGE: tidings [FLAGS]

  --listen ADDR                      address to listen on [127.0.0.1:8080]
  --poll-timeout SECS                default hold time of GET /sub (0..=300) [10]
  --max-message BYTES                largest message POST /pub accepts (else 413) [65536]
  --max-batch N                      most messages in one /sub answer [100]
  --retain N                         messages each channel keeps [1000]
  --retain-bytes BYTES               bytes each channel keeps: bodies + 64 per message [1048576]
  --max-retained-bytes BYTES         bytes all channels keep together, counted the same way;
                                     past it the oldest messages of any channel go [268435456]
  --message-ttl SECS                 messages older than this are evicted, 0 = never [3600]
  --max-answer-bytes BYTES           longest /sub answer body (at least one message) [1048576]
  --max-channels N                   most channels holding messages; past it a publish to a
                                     new channel gets 503 [100000]
  --workers N                        worker threads for /work (0..=1024), at nice 10;
                                     0 turns /work off (404) [number of cores]
  --work-queue N                     /work jobs waiting for a thread (0..=1000000);
                                     past it 503 [64]
  --max-header-bytes BYTES           longest request head (else 431) [16384]
  --max-headers N                    most header fields in a request (else 431) [100]
  --header-timeout SECS              first to last byte of a request head (else 408) [10]
  --body-timeout SECS                longest pause while a body arrives (else 408) [30]
  --keepalive-timeout SECS           idle time before a connection is closed [60]
  --max-connections N                open connections; more wait in the backlog [100000]
  --max-requests-per-connection N    close a connection after N requests, 0 = no limit [0]
  --shutdown-timeout SECS            graceful stop waits at most this long [5]
  --access-log                       log one line per request to stderr
  --publish-token-file PATH          POST /pub and GET /work need `Authorization: Bearer
                                     TOKEN` (else 401); TOKEN = the file less one newline
  --subscribe-key-file PATH          GET /sub and /sse need `token=EXPIRY.SIG` (else 403),
                                     SIG = hex HMAC-SHA256 of \"CHANNEL\\nEXPIRY\" under the file's key
  --allow-origin ORIGIN              CORS for pages on ORIGIN (https://host[:port]);
                                     repeatable; `*` for any origin [none]
  --ws-max-channels N                channels one WebSocket may subscribe to [64]
  --ws-max-message BYTES             largest message a WebSocket client may send (else
                                     close 1009) [131072]
  --ws-ping SECS                     ping a WebSocket silent this long; close it (1008) if
                                     still silent one interval later [30]
  --sse-heartbeat SECS               an idle GET /sse stream gets a `: hb` comment line
                                     after this long without traffic [15]
  --max-stream-backlog BYTES         a GET /sse stream whose unsent output passes this is
                                     disconnected (it resumes by Last-Event-ID) [1048576]
  --redis redis://HOST:PORT[/DB]     cluster mode: share channels with every tidings node
                                     on this Redis (seqs, epochs and history live there) [off]
  --redis-password-file PATH         AUTH with the file's first line on each Redis connection
  --redis-timeout SECS               a Redis command unanswered this long marks the
                                     connection down (publishes get 503) and it is redone [1]
  --reuse-port                       let several processes listen on --listen (SO_REUSEPORT);
                                     needs --redis, or they would not share channels
  --help                             print this and exit

  tidings token CHANNEL [--ttl SECS] --subscribe-key-file PATH
                                     print a subscribe token for CHANNEL valid SECS [3600]

The limits must agree: --max-message + 64 <= --retain-bytes <= --max-retained-bytes, and
--max-answer-bytes must hold one message of --max-message bytes (4/3 of it + 384).

Endpoints: POST /pub/{channel}, GET /sub/{channel}?since=S&epoch=E&timeout=T,
GET /sse/{channel}?since=S&epoch=E (Server-Sent Events), GET /ws (WebSocket: JSON commands
sub/unsub/pub), GET /work?ms=M, GET /stats, GET /metrics, GET /dashboard (live picture of
the loop, fed by GET /dashboard/stream), GET / (chat demo), GET /plaintext. /stats, /metrics
and /dashboard are never guarded: bind --listen to a private address.
SIGINT/SIGTERM stop gracefully (held polls get 304) with exit code 0.
";

/// Most `--workers`: each is a thread with its own stack, and thread start-up past what the
/// kernel allows (memory maps, tasks) is not a clean error (std panics in the new thread).
pub(crate) const MAX_WORKERS: usize = 1024;

/// Most `--work-queue`: a queued job is a few dozen bytes, and a disconnecting client's job
/// is found by a scan of the queue (about a millisecond at this length).
pub(crate) const MAX_WORK_QUEUE: usize = 1_000_000;

/// What the command line asks for.
// Built once at start and taken apart at once: boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Run(Options),
    Help,
    /// `tidings token CHANNEL [--ttl SECS] --subscribe-key-file PATH`: print a subscribe
    /// token for `channel` that expires `ttl` seconds from now.
    Token {
        channel: String,
        ttl: u64,
        key: SubscribeKey,
    },
}

/// Default lifetime of a token printed by `tidings token`, seconds.
pub(crate) const DEFAULT_TOKEN_TTL: u64 = 3600;
/// Longest `--ttl` (ten years): beyond it a token is a password, and should be one.
pub(crate) const MAX_TOKEN_TTL: u64 = 10 * 366 * 86_400;

/// Parses the arguments (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut o = Options::default();
    let (mut redis_url, mut redis_password, mut redis_timeout) = (None, None, DEFAULT_REDIS_TIMEOUT);
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "token") {
        args.next();
        return parse_token_args(args);
    }
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--access-log" => {
                o.access_log = true;
                continue;
            }
            "--reuse-port" => {
                o.http.reuse_port = true;
                continue;
            }
            _ => {}
        }
        if !name.starts_with("--") {
            return Err(format!("unexpected argument {name:?} (see --help)"));
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value")),
        };
        let v = value.as_str();
        match name.as_str() {
            "--listen" => {
                o.http.addr = v.parse().map_err(|_| bad(&name, v, "an address like 127.0.0.1:8080"))?
            }
            "--poll-timeout" => {
                o.poll_timeout = seconds(&name, v)?;
                if o.poll_timeout > Duration::from_secs(300) {
                    return Err(bad(&name, v, "seconds between 0 and 300"));
                }
            }
            "--max-message" => o.max_message = count(&name, v, 0)?,
            "--max-batch" => o.hub.max_batch = count(&name, v, 1)?,
            "--retain" => o.hub.retain = count(&name, v, 1)?,
            "--retain-bytes" => o.hub.retain_bytes = count(&name, v, 1)?,
            "--max-retained-bytes" => o.hub.max_retained_bytes = count(&name, v, 1)?,
            "--max-answer-bytes" => o.hub.max_answer_bytes = count(&name, v, 1)?,
            "--message-ttl" => {
                let ttl = seconds(&name, v)?;
                o.hub.message_ttl_ms = ttl.as_millis().try_into().unwrap_or(u64::MAX);
            }
            "--max-channels" => o.hub.max_channels = count(&name, v, 1)?,
            "--workers" => o.workers = count_up_to(&name, v, 0, MAX_WORKERS)?,
            "--work-queue" => o.work_queue = count_up_to(&name, v, 0, MAX_WORK_QUEUE)?,
            "--max-header-bytes" => o.http.limits.max_header_bytes = count(&name, v, 256)?,
            "--max-headers" => o.http.limits.max_headers = count(&name, v, 1)?,
            "--header-timeout" => o.http.header_timeout = positive_seconds(&name, v)?,
            "--body-timeout" => o.http.body_timeout = positive_seconds(&name, v)?,
            "--keepalive-timeout" => o.http.keepalive_timeout = positive_seconds(&name, v)?,
            "--max-connections" => o.http.max_connections = count(&name, v, 1)?,
            "--max-requests-per-connection" => {
                o.http.max_requests_per_connection =
                    count(&name, v, 0)?.try_into().map_err(|_| bad(&name, v, "a smaller number"))?
            }
            "--shutdown-timeout" => o.http.shutdown_timeout = seconds(&name, v)?,
            "--publish-token-file" => o.publish_token = Some(PublishToken::from_file(&name, v)?),
            "--subscribe-key-file" => o.subscribe_key = Some(SubscribeKey::from_file(&name, v)?),
            "--allow-origin" => o.cors.allow(&name, v)?,
            "--ws-max-channels" => o.ws.max_channels = count(&name, v, 1)?,
            "--ws-max-message" => o.ws.max_message = count_up_to(&name, v, 125, 1 << 30)?,
            "--ws-ping" => o.ws.ping = positive_seconds(&name, v)?,
            "--sse-heartbeat" => o.sse_heartbeat = positive_seconds(&name, v)?,
            "--max-stream-backlog" => o.max_stream_backlog = count(&name, v, 1)?,
            "--redis" => redis_url = Some(redis_url_of(&name, v)?),
            "--redis-password-file" => redis_password = Some(password_file(&name, v)?),
            "--redis-timeout" => redis_timeout = positive_seconds(&name, v)?,
            _ => return Err(format!("unknown flag {name} (see --help)")),
        }
    }
    o.redis = match (redis_url, redis_password) {
        (Some((addr, db)), password) => Some(RedisOptions { addr, db, password, timeout: redis_timeout }),
        (None, Some(_)) => return Err("--redis-password-file needs --redis".into()),
        (None, None) => None,
    };
    if o.http.reuse_port && o.redis.is_none() {
        return Err("--reuse-port needs --redis: processes sharing a port must share their channels".into());
    }
    o.check()?;
    Ok(Command::Run(o))
}

/// `redis://HOST[:PORT][/DB]` (port 6379, db 0 by default); HOST is resolved now, once.
fn redis_url_of(name: &str, v: &str) -> Result<(std::net::SocketAddr, u32), String> {
    use std::net::ToSocketAddrs as _;
    let want = "redis://HOST:PORT[/DB]";
    let rest = v.strip_prefix("redis://").ok_or_else(|| bad(name, v, want))?;
    let (hostport, db) = match rest.split_once('/') {
        None | Some((_, "")) => (rest.trim_end_matches('/'), 0),
        Some((hp, db)) => {
            (hp, db.parse::<u32>().ok().filter(|&d| d < 10_000).ok_or_else(|| bad(name, v, want))?)
        }
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| bad(name, v, want))?)
        }
        _ => (hostport, 6379),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad(name, v, want));
    }
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{name} {v:?}: cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{name} {v:?}: {host:?} has no address"))?;
    Ok((addr, db))
}

/// The first line of a secret file, trimmed; missing, unreadable or empty is an error.
fn password_file(name: &str, path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name} {path:?}: {e}"))?;
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err(format!("{name} {path:?}: the file is empty")),
    }
}

/// The arguments of `tidings token` (after the word `token`).
fn parse_token_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    const USE: &str = "usage: tidings token CHANNEL [--ttl SECS] --subscribe-key-file PATH";
    let (mut channel, mut ttl, mut key) = (None, DEFAULT_TOKEN_TTL, None);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if !name.starts_with("--") {
            if channel.is_some() {
                return Err(format!("unexpected argument {name:?} ({USE})"));
            }
            if !valid_channel_name(&name) {
                return Err(format!("invalid channel name {name:?}: 1..128 bytes of [A-Za-z0-9._:-]"));
            }
            channel = Some(name);
            continue;
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value ({USE})")),
        };
        match name.as_str() {
            "--ttl" => match value.parse::<u64>() {
                Ok(n) if (1..=MAX_TOKEN_TTL).contains(&n) => ttl = n,
                _ => return Err(bad(&name, &value, &format!("whole seconds from 1 to {MAX_TOKEN_TTL}"))),
            },
            "--subscribe-key-file" => key = Some(SubscribeKey::from_file(&name, &value)?),
            _ => return Err(format!("unknown flag {name} ({USE})")),
        }
    }
    match (channel, key) {
        (Some(channel), Some(key)) => Ok(Command::Token { channel, ttl, key }),
        (None, _) => Err(format!("tidings token needs a CHANNEL ({USE})")),
        (_, None) => Err(format!("tidings token needs --subscribe-key-file ({USE})")),
    }
}

fn bad(name: &str, value: &str, want: &str) -> String {
    format!("invalid value {value:?} for {name}: expected {want}")
}

fn count(name: &str, v: &str, min: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(bad(name, v, &format!("a whole number >= {min}"))),
    }
}

fn count_up_to(name: &str, v: &str, min: usize, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(name, v, &format!("a whole number from {min} to {max}"))),
    }
}

/// Seconds, fractions allowed, 0 or more.
pub fn seconds(name: &str, v: &str) -> Result<Duration, String> {
    parse_seconds(v).ok_or_else(|| bad(name, v, "seconds (e.g. 10 or 0.5)"))
}

fn positive_seconds(name: &str, v: &str) -> Result<Duration, String> {
    match parse_seconds(v) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(bad(name, v, "seconds greater than 0")),
    }
}

/// `"10"`, `"0.5"`, `"1.25"`: non-negative decimal seconds (no exponent, no sign), at most
/// a year. `None` if malformed.
pub fn parse_seconds(v: &str) -> Option<Duration> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if v.ends_with('.') || int.len() > 8 {
        return None;
    }
    let secs: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos: u64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += (b - b'0') as u64 * 10u64.pow(8 - i as u32);
    }
    let d = Duration::new(secs, nanos as u32);
    (d <= Duration::from_secs(366 * 86_400)).then_some(d)
}

impl Options {
    /// Whether the limits agree with each other (one line naming the flags if not): a message
    /// the hub accepts must fit in a channel, a channel in the hub, and the message in an
    /// answer, or the bounds would be broken by the first big message.
    pub fn check(&self) -> Result<(), String> {
        let h = &self.hub;
        if self.max_message.saturating_add(MESSAGE_OVERHEAD) > h.retain_bytes {
            return Err(format!(
                "--max-message {} plus {MESSAGE_OVERHEAD} bytes of overhead does not fit in --retain-bytes {}",
                self.max_message, h.retain_bytes
            ));
        }
        if h.retain_bytes > h.max_retained_bytes {
            return Err(format!(
                "--retain-bytes {} is larger than --max-retained-bytes {}",
                h.retain_bytes, h.max_retained_bytes
            ));
        }
        let one = render::max_encoded_len(self.max_message).saturating_add(render::ANSWER_FRAME);
        if h.max_answer_bytes < one {
            return Err(format!(
                "--max-answer-bytes {} cannot hold one message of --max-message {} bytes (needs {one})",
                h.max_answer_bytes, self.max_message
            ));
        }
        Ok(())
    }

    /// The server's configuration: `http` with the body limit set to `--max-message` (the
    /// only request bodies the hub accepts are messages) and the request line kept within
    /// the head limit.
    pub fn http_config(&self) -> http::Config {
        let mut config = self.http.clone();
        let limits = &mut config.limits;
        limits.max_request_line = limits.max_request_line.min(limits.max_header_bytes);
        limits.max_body_bytes = self.max_message;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Command::Run(o) => Ok(o),
            Command::Help => Err("help".into()),
            Command::Token { .. } => Err("token".into()),
        }
    }

    #[test]
    fn parses_flags() {
        let o =
            run(&["--listen", "127.0.0.1:0", "--poll-timeout=0.5", "--access-log", "--retain", "5"]).unwrap();
        assert_eq!(o.http.addr.port(), 0);
        assert_eq!(o.poll_timeout, Duration::from_millis(500));
        assert!(o.access_log);
        assert_eq!(o.hub.retain, 5);
        assert_eq!(o.http.limits.max_headers, 100);
        let o = run(&["--max-headers", "250"]).unwrap();
        assert_eq!(o.http_config().limits.max_headers, 250);
        assert_eq!(run(&["--max-headers=1"]).unwrap().http.limits.max_headers, 1);
    }

    #[test]
    fn ws_flags() {
        let o = run(&["--ws-max-channels", "2", "--ws-max-message=4096", "--ws-ping", "0.5"]).unwrap();
        assert_eq!((o.ws.max_channels, o.ws.max_message, o.ws.ping), (2, 4096, Duration::from_millis(500)));
        assert_eq!(run(&[]).unwrap().ws, WsLimits::default());
        assert!(run(&["--ws-ping", "0"]).unwrap_err().contains("--ws-ping"));
        assert!(run(&["--ws-max-message", "100"]).unwrap_err().contains("--ws-max-message"));
    }

    #[test]
    fn errors_name_the_flag() {
        assert!(run(&["--retain", "x"]).unwrap_err().contains("--retain"));
        assert!(run(&["--bogus", "1"]).unwrap_err().contains("--bogus"));
        assert!(run(&["--poll-timeout", "301"]).unwrap_err().contains("--poll-timeout"));
        assert!(run(&["--listen"]).unwrap_err().contains("--listen"));
        for bad in ["0", "-1", "x", "", "99999999999999999999999"] {
            assert!(run(&["--max-headers", bad]).unwrap_err().contains("--max-headers"), "{bad}");
        }
    }

    #[test]
    fn limits_must_agree() {
        assert!(run(&[]).is_ok(), "the defaults agree");
        let e = run(&["--max-message", "2000000"]).unwrap_err();
        assert!(e.contains("--max-message") && e.contains("--retain-bytes"), "{e}");
        let e = run(&["--retain-bytes", "1000", "--max-message", "1000"]).unwrap_err();
        assert!(e.contains("--max-message"), "{e}");
        assert!(run(&["--retain-bytes", "1064", "--max-message", "1000"]).is_ok());
        let e = run(&["--max-retained-bytes", "1000"]).unwrap_err();
        assert!(e.contains("--retain-bytes") && e.contains("--max-retained-bytes"), "{e}");
        let e = run(&["--max-answer-bytes", "65536"]).unwrap_err();
        assert!(e.contains("--max-answer-bytes"), "{e}");
        assert!(run(&["--max-answer-bytes", "87770"]).is_ok());
        assert!(run(&["--max-answer-bytes", "87769"]).is_err());
        assert_eq!(run(&["--message-ttl", "0"]).unwrap().hub.message_ttl_ms, 0);
        assert_eq!(run(&["--message-ttl", "1.5"]).unwrap().hub.message_ttl_ms, 1500);
    }

    #[test]
    fn sse_flags() {
        let d = run(&[]).unwrap();
        assert_eq!((d.sse_heartbeat, d.max_stream_backlog), (Duration::from_secs(15), 1 << 20));
        let o = run(&["--sse-heartbeat", "0.5", "--max-stream-backlog=4096"]).unwrap();
        assert_eq!((o.sse_heartbeat, o.max_stream_backlog), (Duration::from_millis(500), 4096));
        for (flag, v) in [("--sse-heartbeat", "0"), ("--sse-heartbeat", "x"), ("--max-stream-backlog", "0")] {
            assert!(run(&[flag, v]).unwrap_err().contains(flag), "{flag} {v}");
        }
    }

    #[test]
    fn redis_flags() {
        let o =
            run(&["--redis", "redis://127.0.0.1:6390/2", "--redis-timeout", "0.5", "--reuse-port"]).unwrap();
        let r = o.redis.unwrap();
        assert_eq!((r.addr.port(), r.db, r.timeout), (6390, 2, Duration::from_millis(500)));
        assert!(o.http.reuse_port);
        assert_eq!(run(&["--redis", "redis://127.0.0.1"]).unwrap().redis.unwrap().addr.port(), 6379);
        assert!(run(&[]).unwrap().redis.is_none());
        let e = run(&["--reuse-port"]).unwrap_err();
        assert!(e.contains("--reuse-port") && e.contains("--redis"), "{e}");
        for url in
            ["http://x", "redis://", "redis://127.0.0.1:notaport", "redis://127.0.0.1:0", "redis://h:1/x"]
        {
            assert!(run(&["--redis", url]).unwrap_err().contains("--redis"), "{url}");
        }
        assert!(run(&["--redis", "redis://127.0.0.1:1", "--redis-timeout", "0"]).is_err());
        let pw = secret_file("redispw", b"hunter2\nrest\n");
        let o = run(&["--redis", "redis://127.0.0.1:1", "--redis-password-file", &pw]).unwrap();
        assert_eq!(o.redis.unwrap().password.as_deref(), Some("hunter2"));
        assert!(run(&["--redis-password-file", &pw]).unwrap_err().contains("--redis"));
        let _ = std::fs::remove_file(pw);
    }

    #[test]
    fn worker_flags_are_bounded() {
        assert_eq!(run(&["--workers", "0"]).unwrap().workers, 0);
        assert_eq!(run(&["--workers", "1024"]).unwrap().workers, 1024);
        assert_eq!(run(&["--work-queue", "1000000"]).unwrap().work_queue, 1_000_000);
        for (flag, v) in [("--workers", "1025"), ("--workers", "100000"), ("--work-queue", "1000001")] {
            assert!(run(&[flag, v]).unwrap_err().contains(flag), "{flag} {v}");
        }
        assert!(Options::default().workers <= MAX_WORKERS);
    }

    #[test]
    fn seconds_format() {
        assert_eq!(parse_seconds("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_seconds("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_seconds(".5"), Some(Duration::from_millis(500)));
        for bad in ["", ".", "1.", "-1", "1e3", "abc", " 1"] {
            assert_eq!(parse_seconds(bad), None, "{bad}");
        }
    }

    fn secret_file(name: &str, contents: &[u8]) -> String {
        let path = std::env::temp_dir().join(format!("tidings-config-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn access_flags() {
        let token = secret_file("token", b"s3cret\n");
        let key = secret_file("key", b"k\r\n");
        let o = run(&["--publish-token-file", &token, "--subscribe-key-file", &key, "--allow-origin", "*"])
            .unwrap();
        assert!(o.publish_token.unwrap().accepts(Some(b"Bearer s3cret")));
        assert_eq!(o.subscribe_key.unwrap().sign("c", 5), crate::auth::SubscribeKey::new(b"k").sign("c", 5));
        assert_eq!(o.cors, Cors::Any);
        let empty = secret_file("empty", b"\n");
        assert!(run(&["--publish-token-file", &empty]).unwrap_err().contains("--publish-token-file"));
        assert!(run(&["--subscribe-key-file", "/nonexistent/key"])
            .unwrap_err()
            .contains("--subscribe-key-file"));
        assert!(run(&["--allow-origin", "example.com"]).unwrap_err().contains("--allow-origin"));
        for f in [token, key, empty] {
            let _ = std::fs::remove_file(f);
        }
    }

    #[test]
    fn token_subcommand() {
        let key = secret_file("tokenkey", b"k");
        let parse = |args: &[&str]| parse_args(args.iter().map(|s| s.to_string()));
        match parse(&["token", "news", "--subscribe-key-file", &key]) {
            Ok(Command::Token { channel, ttl, .. }) => {
                assert_eq!((channel.as_str(), ttl), ("news", DEFAULT_TOKEN_TTL))
            }
            _ => panic!("not a token command"),
        }
        match parse(&["token", "--ttl=60", &format!("--subscribe-key-file={key}"), "c"]) {
            Ok(Command::Token { channel, ttl, .. }) => assert_eq!((channel.as_str(), ttl), ("c", 60)),
            _ => panic!("not a token command"),
        }
        for bad in [
            &["token", "news"][..],
            &["token", "--subscribe-key-file", &key],
            &["token", "a/b", "--subscribe-key-file", &key],
            &["token", "news", "--ttl", "0", "--subscribe-key-file", &key],
            &["token", "news", "--ttl", "x", "--subscribe-key-file", &key],
            &["token", "news", "other", "--subscribe-key-file", &key],
            &["token", "news", "--bogus", "1", "--subscribe-key-file", &key],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let _ = std::fs::remove_file(key);
    }
}
