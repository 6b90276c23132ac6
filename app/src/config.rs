//! Command-line flags, parsed by hand (a dozen `--name value` pairs do not need a framework).
//!
//! Every flag takes a value (`--name value` or `--name=value`) except `--access-log` and
//! `--help`. Durations are seconds, fractions allowed. A bad flag or value produces a one-line
//! error naming it; `main` prints it and exits with code 2.

use std::time::Duration;

use crate::hub::HubLimits;

/// Everything the binary can be told. The server's own settings (address, head limit,
/// timeouts, connection limits) are an [`http::Config`] and the hub's retention limits a
/// [`HubLimits`], set directly by their flags: each setting is defined, and defaulted, once.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--listen`, `--max-header-bytes`, `--max-headers`, `--header-timeout`, `--body-timeout`,
    /// `--keepalive-timeout`, `--max-connections`, `--max-requests-per-connection`,
    /// `--shutdown-timeout`. (The body limit is `max_message`: see [`Options::http_config`].)
    pub http: http::Config,
    /// `--retain`, `--retain-bytes`, `--max-channels`, `--max-batch`.
    pub hub: HubLimits,
    pub poll_timeout: Duration,
    pub max_message: usize,
    pub workers: usize,
    pub work_queue: usize,
    pub access_log: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            http: http::Config::default(),
            hub: HubLimits::default(),
            poll_timeout: Duration::from_secs(10),
            max_message: 64 * 1024,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            work_queue: 64,
            access_log: false,
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
  --retain-bytes BYTES               message bytes each channel keeps [1048576]
  --max-channels N                   most channels; past it new channels get 503 [100000]
  --workers N                        worker threads for /work [number of cores]
  --work-queue N                     /work jobs waiting for a thread; past it 503 [64]
  --max-header-bytes BYTES           longest request head (else 431) [16384]
  --max-headers N                    most header fields in a request (else 431) [100]
  --header-timeout SECS              first to last byte of a request head (else 408) [10]
  --body-timeout SECS                longest pause while a body arrives (else 408) [30]
  --keepalive-timeout SECS           idle time before a connection is closed [60]
  --max-connections N                open connections; more wait in the backlog [100000]
  --max-requests-per-connection N    close a connection after N requests, 0 = no limit [0]
  --shutdown-timeout SECS            graceful stop waits at most this long [5]
  --access-log                       log one line per request to stderr
  --help                             print this and exit

Endpoints: POST /pub/{channel}, GET /sub/{channel}?since=S&timeout=T, GET /work?ms=M,
GET /stats, GET /metrics, GET / (chat demo), GET /plaintext.
SIGINT/SIGTERM stop gracefully (held polls get 304) with exit code 0.
";

/// What the command line asks for.
// Built once at start and taken apart at once: boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    Run(Options),
    Help,
}

/// Parses the arguments (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut o = Options::default();
    let mut args = args.into_iter();
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
            "--max-channels" => o.hub.max_channels = count(&name, v, 1)?,
            "--workers" => o.workers = count(&name, v, 1)?,
            "--work-queue" => o.work_queue = count(&name, v, 0)?,
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
            _ => return Err(format!("unknown flag {name} (see --help)")),
        }
    }
    Ok(Command::Run(o))
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
    fn seconds_format() {
        assert_eq!(parse_seconds("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_seconds("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_seconds(".5"), Some(Duration::from_millis(500)));
        for bad in ["", ".", "1.", "-1", "1e3", "abc", " 1"] {
            assert_eq!(parse_seconds(bad), None, "{bad}");
        }
    }
}
