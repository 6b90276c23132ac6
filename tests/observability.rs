//! Seeing the loop work: `/metrics` in the exposition format (a `# HELP` and a `# TYPE` line
//! for every metric, the `tidings_delivery_seconds` histogram per transport), and the
//! `/dashboard` page with its `/dashboard/stream` feed of `/stats` snapshots, once a second.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Every metric family of an exposition text: its HELP, its TYPE, and its samples as
/// (name with labels, value).
#[derive(Default, Debug)]
struct Family {
    help: usize,
    kind: Option<String>,
    samples: Vec<(String, String)>,
}

/// Parses an exposition text strictly enough to catch a sample without its family's HELP and
/// TYPE before it, a HELP or TYPE given twice, or a line of no known form.
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line:?}"));
            assert!(!help.trim().is_empty(), "empty HELP: {line:?}");
            let f = families.entry(name.to_string()).or_default();
            assert!(f.samples.is_empty() && f.kind.is_none(), "HELP after TYPE or samples: {line:?}");
            f.help += 1;
            assert_eq!(f.help, 1, "HELP twice: {line:?}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without kind: {line:?}"));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line:?}");
            let f = families.get_mut(name).unwrap_or_else(|| panic!("TYPE before HELP: {line:?}"));
            assert!(f.kind.is_none() && f.samples.is_empty(), "TYPE twice or after samples: {line:?}");
            f.kind = Some(kind.to_string());
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
            let (series, value) =
                line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without value: {line:?}"));
            assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
            let name = series.split('{').next().unwrap_or(series);
            let family = match families.get(name) {
                Some(f) if f.kind.as_deref() != Some("histogram") => name,
                _ => ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or_else(|| panic!("sample of no declared family: {line:?}")),
            };
            let f = families.get_mut(family).unwrap_or_else(|| panic!("sample before HELP/TYPE: {line:?}"));
            assert!(f.kind.is_some(), "sample before TYPE: {line:?}");
            f.samples.push((series.to_string(), value.to_string()));
        }
    }
    families
}

/// The histogram of one transport: cumulative (le, count) pairs, sum and count.
fn histogram(f: &Family, transport: &str) -> (Vec<(f64, u64)>, f64, u64) {
    let label = format!("transport=\"{transport}\"");
    let mut buckets = Vec::new();
    let (mut sum, mut count) = (None, None);
    for (series, value) in &f.samples {
        if !series.contains(&label) {
            continue;
        }
        if series.starts_with("tidings_delivery_seconds_bucket{") {
            let le = series.split("le=\"").nth(1).and_then(|r| r.split('"').next()).expect("le label");
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("le value") };
            buckets.push((le, value.parse().expect("bucket count")));
        } else if series.starts_with("tidings_delivery_seconds_sum{") {
            sum = Some(value.parse().expect("sum"));
        } else if series.starts_with("tidings_delivery_seconds_count{") {
            count = Some(value.parse().expect("count"));
        }
    }
    (buckets, sum.expect("a _sum"), count.expect("a _count"))
}

#[test]
fn metrics_exposition_has_help_type_and_the_delivery_histogram() {
    let addr = start(opts());
    // Two held polls at one cursor, one publish: one delivery group of two.
    let mut held: Vec<Client> = (0..2).map(|_| Client::connect(addr)).collect();
    for c in &mut held {
        c.send_request("GET", "/sub/lat?since=0&timeout=20", &[], b"");
    }
    wait_stat(addr, "waiting_polls", 2, Duration::from_secs(5));
    assert_eq!(post(addr, "/pub/lat", b"hello").status, 200);
    for c in &mut held {
        assert_eq!(c.read_response().expect("answer").status, 200);
    }

    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    let text = r.text();
    let families = parse_exposition(&text);
    for (name, f) in &families {
        assert_eq!(f.help, 1, "{name} has no HELP");
        assert!(f.kind.is_some(), "{name} has no TYPE");
        assert!(!f.samples.is_empty(), "{name} has no sample");
    }
    for name in ["tidings_connections", "tidings_published_total", "tidings_responses_total"] {
        assert!(families.contains_key(name), "no {name} in\n{text}");
    }
    let f = &families["tidings_delivery_seconds"];
    assert_eq!(f.kind.as_deref(), Some("histogram"));
    for transport in ["longpoll", "sse", "ws"] {
        let (buckets, sum, count) = histogram(f, transport);
        // 50 us to 1 s, then +Inf; bounds increasing, counts cumulative, +Inf = _count.
        assert_eq!(buckets.first().map(|b| b.0), Some(0.00005), "{transport}");
        assert_eq!(buckets[buckets.len() - 2].0, 1.0, "{transport}");
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY), "{transport}");
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{transport}: bounds not increasing: {buckets:?}");
            assert!(w[0].1 <= w[1].1, "{transport}: counts not cumulative: {buckets:?}");
        }
        assert_eq!(buckets.last().map(|b| b.1), Some(count), "{transport}: +Inf != _count");
        assert_eq!(count == 0, sum == 0.0, "{transport}: sum {sum} with count {count}");
        if transport == "longpoll" {
            assert_eq!(count, 2, "two held polls were answered:\n{text}");
            assert!(sum > 0.0 && sum < 2.0, "longpoll sum {sum}");
        } else {
            assert_eq!(count, 0, "{transport}: nothing was delivered over it");
        }
    }

    // /stats says the same, as JSON.
    let s = stats(addr);
    let lp = s.get("delivery_seconds").get("longpoll");
    assert_eq!(lp.get("count").as_u64(), 2);
    let buckets = lp.get("buckets").arr().expect("buckets");
    assert_eq!(buckets.len(), s.get("delivery_seconds").get("le").arr().expect("le").len() + 1);
    assert_eq!(buckets.last().and_then(|b| b.u64()), Some(2));
}

/// A raw `text/event-stream` reader: the response head, then the `data:` events, each with
/// the time it arrived.
struct Feed {
    stream: TcpStream,
    buf: Vec<u8>,
    head: String,
}

impl Feed {
    fn open(addr: SocketAddr) -> Feed {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        stream
            .write_all(b"GET /dashboard/stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
            .expect("send");
        let mut feed = Feed { stream, buf: Vec::new(), head: String::new() };
        let deadline = Instant::now() + READ_TIMEOUT;
        while !feed.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(feed.fill(deadline), "no response head");
        }
        let end = feed.buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
        feed.head = String::from_utf8_lossy(&feed.buf[..end]).into_owned();
        feed.buf.drain(..end + 4);
        feed
    }

    /// Reads more; false at EOF or past `deadline`.
    fn fill(&mut self, deadline: Instant) -> bool {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next `data:` event's JSON text (each is one chunk: `data: {..}\n\n`).
    fn next_event(&mut self) -> Option<(Instant, String)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(start) = find(&self.buf, b"data: ") {
                if let Some(len) = find(&self.buf[start..], b"\n\n") {
                    let data = String::from_utf8_lossy(&self.buf[start + 6..start + len]).into_owned();
                    self.buf.drain(..start + len + 2);
                    return Some((Instant::now(), data));
                }
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn dashboard_stream_sends_stats_snapshots_once_a_second() {
    let addr = start(opts());
    let opened = Instant::now();
    let mut feed = Feed::open(addr);
    let head = feed.head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(find(&feed.buf, b"retry: 2000\n\n").is_some() || feed.fill(Instant::now() + READ_TIMEOUT));

    let stats_keys: BTreeSet<String> = stats(addr).keys().into_iter().map(String::from).collect();
    let mut times = Vec::new();
    let mut published = Vec::new();
    for i in 0..4 {
        let (at, data) = feed.next_event().unwrap_or_else(|| panic!("event {i} did not come"));
        let snap = Json::parse(&data).unwrap_or_else(|e| panic!("event {i} is not JSON ({e}): {data}"));
        let keys: BTreeSet<String> = snap.keys().into_iter().map(String::from).collect();
        assert_eq!(keys, stats_keys, "event {i} has not the /stats keys");
        assert_eq!(snap.get("dashboard_streams").as_u64(), 1, "event {i}");
        times.push(at);
        published.push(snap.get("published_total").as_u64());
        post(addr, "/pub/dash", b"m");
    }
    // The first at once, then one a second (timer granularity and a loaded machine: loose).
    assert!(times[0] - opened < Duration::from_millis(700), "first snapshot after {:?}", times[0] - opened);
    for w in times.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap > Duration::from_millis(600) && gap < Duration::from_millis(1800), "gap {gap:?}");
    }
    // Each snapshot saw the publish made after the previous one.
    assert_eq!(published, vec![0, 1, 2, 3]);
}

#[test]
fn dashboard_feed_closed_by_client_frees_its_timer() {
    let addr = start(opts());
    let baseline = stat(addr, "timers_pending");
    let mut feed = Feed::open(addr);
    feed.next_event().expect("first snapshot");
    assert_eq!(stat(addr, "dashboard_streams"), 1);
    // The feeds' repeating timer (and the connection's own ones).
    assert!(stat(addr, "timers_pending") > baseline);
    drop(feed);
    wait_stat(addr, "dashboard_streams", 0, Duration::from_secs(5));
    // The timer goes at its next tick, finding no feed.
    wait_stat(addr, "timers_pending", baseline, Duration::from_secs(5));
}

#[test]
fn dashboard_page_is_self_contained() {
    let addr = start(opts());
    let r = get(addr, "/dashboard");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let page = r.text();
    assert!(page.contains("new EventSource(\"/dashboard/stream\")"), "the page reads the feed");
    assert!(page.contains("<svg"), "it draws with SVG");
    // No script, style, image or font from elsewhere (the SVG namespace is a name, not a fetch).
    for pattern in ["src=", "href=", "@import", "url(", "//cdn", "fetch(\"http"] {
        assert!(!page.contains(pattern), "the page loads something: {pattern}");
    }
    assert_eq!(once(addr, "POST", "/dashboard", b"").status, 405);
    assert_eq!(once(addr, "POST", "/dashboard/stream", b"").status, 405);
}

#[test]
fn dashboard_feed_ends_at_shutdown() {
    let mut child = Child::spawn(&[]);
    let mut feed = Feed::open(child.addr);
    feed.next_event().expect("first snapshot");
    child.signal(libc::SIGTERM);
    // The stream ends (last chunk, then EOF) and the server exits without waiting for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while feed.fill(deadline) {}
    assert!(Instant::now() < deadline, "the feed did not end");
    assert!(feed.buf.ends_with(b"0\r\n\r\n"), "no last chunk: {:?}", String::from_utf8_lossy(&feed.buf));
    assert!(child.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()), "{}", child.stderr());
}

#[test]
fn dashboard_feeds_are_bounded() {
    let addr = start(opts());
    let feeds: Vec<Feed> = (0..64).map(|_| Feed::open(addr)).collect();
    assert!(feeds.iter().all(|f| f.head.starts_with("HTTP/1.1 200")));
    wait_stat(addr, "dashboard_streams", 64, Duration::from_secs(5));
    let refused = get(addr, "/dashboard/stream");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(feeds);
    wait_stat(addr, "dashboard_streams", 0, Duration::from_secs(5));
    assert!(Feed::open(addr).head.starts_with("HTTP/1.1 200"), "a feed is accepted again");
}
