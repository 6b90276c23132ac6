//! Every body the app writes, in one place: the `/sub` answers, the publish answer, `/stats`,
//! `/metrics` and `/work`'s answer, and the header text of a cursor (`ETag: "EPOCH:SEQ"`).
//!
//! # Why one module
//! The JSON used to be written three ways (by the hub while it chose messages, by hand with
//! [`json`] helpers in the publish route, with `format!` for `/stats` and `/work`). Now the
//! [`crate::hub`] only says *what* an answer holds (a [`Batch`]) and this module alone says
//! how it looks on the wire, including how long each message will be once written
//! ([`encoding`]): the hub needs those lengths to decide which messages fit in
//! `--max-answer-bytes`, and takes them from here, so the budget and the bytes cannot drift
//! apart. [`json`] stays the low-level escaper, number and base64 writer.
//!
//! # Why the fan-out stays cheap
//! [`messages`] builds one body and one header block per [`Batch`], as [`Answer`]'s two
//! reference-counted buffers; a publish that wakes 10,000 waiters at one cursor renders once
//! and every waiter's response holds the same two `Rc`s.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

use crate::hub::{Batch, MessageRef};
use crate::json;
use crate::metrics::DeliveryLatency;

/// The longest JSON of an answer without its messages (channel name of 128 bytes, epoch,
/// numbers of 20 digits, `reset`), plus one message's own keys. An answer of one message
/// of `len` bytes is at most `max_encoded_len(len) + ANSWER_FRAME` long.
pub const ANSWER_FRAME: usize = 384;

/// `{"seq":N,"data_b64":...},` around one message's value, with N of 20 digits.
pub const PER_MESSAGE_KEYS: usize = 48;

/// The most JSON a message of `len` bytes can take in an answer besides the fixed part:
/// base64 (4 bytes per 3), the only form longer than 4/3 of the message being never chosen.
pub fn max_encoded_len(len: usize) -> usize {
    len.div_ceil(3).saturating_mul(4).saturating_add(2)
}

/// How a message will be written in answers, and the length of its JSON value: as a JSON
/// string when it is UTF-8 and its escaped form is at most 4/3 of its size (what base64 would
/// cost), else as base64. So 64 KiB of control bytes cost 87 KiB in an answer, not the
/// 384 KiB of `\u00XX` escapes. Returns (length with quotes, as text). Computed once per
/// message, when it is published.
pub fn encoding(data: &[u8]) -> (u32, bool) {
    let b64 = max_encoded_len(data.len());
    let text = std::str::from_utf8(data).ok().map(|s| json::escaped_len(s) + 2);
    let (len, as_text) = match text {
        Some(len) if (len - 2).saturating_mul(3) <= data.len().saturating_mul(4) => (len, true),
        _ => (b64, false),
    };
    (len.min(u32::MAX as usize) as u32, as_text)
}

/// An epoch as it travels: 8 lowercase hex digits.
pub fn format_epoch(epoch: u32) -> String {
    format!("{epoch:08x}")
}

/// The ETag of a cursor: `"EPOCH:SEQ"`.
pub fn etag(epoch: u32, seq: u64) -> String {
    format!("\"{}:{seq}\"", format_epoch(epoch))
}

/// A `/sub` 200 answer, ready to send: rendered once per [`Batch`] and shared (two reference
/// counts) by every subscriber it goes to.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The JSON body.
    pub body: Rc<[u8]>,
    /// Its header lines: `ETag: "EPOCH:next"` and `Cache-Control: no-cache`.
    pub headers: Rc<str>,
}

/// The answer of `batch` on channel `channel`, whose messages are `messages` (from
/// [`crate::hub::Hub::messages`]):
/// `{"channel":..,"epoch":..,"messages":[{"seq":N,"data":..}|{"seq":N,"data_b64":..}],"next":N,"missed":N[,"reset":true]}`.
pub fn messages<'a>(channel: &str, batch: &Batch, messages: impl Iterator<Item = MessageRef<'a>>) -> Answer {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"channel\":");
    json::push_str(&mut out, channel);
    out.extend_from_slice(b",\"epoch\":\"");
    push_epoch(&mut out, batch.epoch);
    out.extend_from_slice(b"\",\"messages\":[");
    for (i, m) in messages.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"seq\":");
        json::push_u64(&mut out, m.seq);
        match std::str::from_utf8(m.data) {
            Ok(s) if m.as_text => {
                out.extend_from_slice(b",\"data\":");
                json::push_str(&mut out, s);
            }
            _ => {
                out.extend_from_slice(b",\"data_b64\":");
                json::push_base64(&mut out, m.data);
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"next\":");
    json::push_u64(&mut out, batch.next);
    out.extend_from_slice(b",\"missed\":");
    json::push_u64(&mut out, batch.missed);
    if batch.reset {
        out.extend_from_slice(b",\"reset\":true");
    }
    out.push(b'}');
    let headers = format!("ETag: {}\r\nCache-Control: no-cache\r\n", etag(batch.epoch, batch.next));
    Answer { body: out.into(), headers: headers.into() }
}

/// 8 lowercase hex digits, as [`format_epoch`], without a `String`.
fn push_epoch(out: &mut Vec<u8>, epoch: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..8).rev() {
        out.push(HEX[((epoch >> (i * 4)) & 0xf) as usize]);
    }
}

/// The answer of a publish: `{"seq":N,"subscribers":K}`.
pub fn published(seq: u64, subscribers: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(40);
    body.extend_from_slice(b"{\"seq\":");
    json::push_u64(&mut body, seq);
    body.extend_from_slice(b",\"subscribers\":");
    json::push_u64(&mut body, subscribers as u64);
    body.push(b'}');
    body
}

/// `/stats`: every counter by name, then the delivery latency
/// (`"delivery_seconds":{"le":[..],"longpoll":{"buckets":[..],"sum":S,"count":N},..}`, see
/// [`DeliveryLatency::write_json`]), then `"responses_total":{"STATUS":N,..}` (last: scripts
/// cut it out of the line).
pub fn stats(
    counters: &[(&str, u64)],
    latency: &DeliveryLatency,
    responses: impl Iterator<Item = (u16, u64)>,
) -> Vec<u8> {
    let mut s = String::with_capacity(1024);
    s.push('{');
    for (name, value) in counters {
        let _ = write!(s, "\"{name}\":{value},");
    }
    s.push_str("\"delivery_seconds\":");
    latency.write_json(&mut s);
    s.push_str(",\"responses_total\":{");
    for (i, (code, n)) in responses.enumerate() {
        let _ = write!(s, "{}\"{code}\":{n}", if i > 0 { "," } else { "" });
    }
    s.push_str("}}");
    s.into_bytes()
}

/// `/metrics`: the same counters in the exposition format (`tidings_` prefix, `_total` ones
/// as counters, the others as gauges), each with its `# HELP` and `# TYPE` lines, then the
/// `tidings_delivery_seconds` histogram and `tidings_responses_total` by status.
pub fn metrics(
    counters: &[(&str, u64)],
    latency: &DeliveryLatency,
    responses: impl Iterator<Item = (u16, u64)>,
) -> Vec<u8> {
    let mut s = String::with_capacity(4096);
    for (name, value) in counters {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = write!(
            s,
            "# HELP tidings_{name} {}\n# TYPE tidings_{name} {kind}\ntidings_{name} {value}\n",
            help(name)
        );
    }
    latency.write_metrics(&mut s);
    s.push_str("# HELP tidings_responses_total Responses sent, by status code.\n");
    s.push_str("# TYPE tidings_responses_total counter\n");
    for (code, n) in responses {
        let _ = writeln!(s, "tidings_responses_total{{code=\"{code}\"}} {n}");
    }
    s.into_bytes()
}

/// The `# HELP` text of a counter of `/stats` (a counter without its own text gets a generic
/// one, so every metric has a HELP line whatever is added to the list).
fn help(name: &str) -> &'static str {
    match name {
        "connections" => "Open client connections.",
        "waiting_polls" => "Long-poll subscribers held, waiting for a publish.",
        "channels" => "Channels that exist (with messages or subscribers).",
        "retained_messages" => "Messages retained for late subscribers.",
        "retained_bytes" => "Bytes of the retained messages.",
        "published_total" => "Messages published.",
        "delivered_total" => "Messages delivered to subscribers (one per message and subscriber).",
        "evicted_total" => "Retained messages evicted (count, size or age limits).",
        "timers_pending" => "Timers armed in the event loop.",
        "loop_wakeups_total" => "Event loop wake-ups (returns from epoll_wait).",
        "remote_wakeups_total" => "Wake-ups of the loop by other threads (worker results).",
        "jobs_queued" => "/work jobs waiting in the worker pool's queue.",
        "jobs_running" => "/work jobs running on worker threads.",
        "jobs_cancelled_total" => "/work jobs dequeued or stopped because their client left.",
        "accepted_total" => "Connections accepted.",
        "closed_by_peer_total" => "Connections closed by the client.",
        "dashboard_streams" => "Open /dashboard/stream streams.",
        _ => "A tidings counter (see /stats and README.md).",
    }
}

/// `/work`'s answer: `{"ms":M,"took_ms":T,"result":"16 hex digits"}`.
pub fn work_done(ms: u64, took: Duration, result: u64) -> Vec<u8> {
    format!("{{\"ms\":{ms},\"took_ms\":{:.3},\"result\":\"{result:016x}\"}}", took.as_secs_f64() * 1000.0)
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn encoding_rule() {
        assert_eq!(encoding(b"hello"), (7, true));
        assert_eq!(encoding(b""), (2, true));
        assert!(!encoding(&[1u8; 30]).1);
        assert!(!encoding(&[0xff]).1);
        // Quotes escape to 2 bytes: 2x is more than 4/3, so base64.
        assert!(!encoding(b"\"\"\"\"").1);
        assert!(encoding("a\"bcdef".as_bytes()).1);
    }

    #[test]
    fn encoded_lengths_are_what_is_written() {
        for data in
            [&b"hello"[..], b"", &[1u8; 30], &[0xff], b"\"\"\"\"", "a\"bcdef".as_bytes(), &[0, 1, 2, 3]]
        {
            let (len, as_text) = encoding(data);
            let batch = Batch { chan: 0, epoch: 7, first: 1, count: 1, next: 1, missed: 0, reset: false };
            let one = MessageRef { seq: 1, data, as_text };
            let body = messages("c", &batch, std::iter::once(one)).body;
            let frame = br#"{"channel":"c","epoch":"00000007","messages":[{"seq":1,"data_b64":}],"next":1,"missed":0}"#;
            let key = if as_text { 4 } else { 0 }; // "data" is 4 bytes shorter than "data_b64"
            assert_eq!(body.len() + key, frame.len() + len as usize, "{data:?}");
        }
    }

    #[test]
    fn answers() {
        let batch = Batch { chan: 0, epoch: 0xab, first: 3, count: 2, next: 4, missed: 2, reset: true };
        let m = [
            MessageRef { seq: 3, data: b"m2", as_text: true },
            MessageRef { seq: 4, data: &[0xff, 0], as_text: false },
        ];
        let a = messages("c", &batch, m.into_iter());
        assert_eq!(
            text(a.body.to_vec()),
            r#"{"channel":"c","epoch":"000000ab","messages":[{"seq":3,"data":"m2"},{"seq":4,"data_b64":"/wA="}],"next":4,"missed":2,"reset":true}"#
        );
        assert_eq!(&*a.headers, "ETag: \"000000ab:4\"\r\nCache-Control: no-cache\r\n");
        assert_eq!(etag(0xdead_beef, 9), "\"deadbeef:9\"");
    }

    #[test]
    fn other_bodies() {
        assert_eq!(text(published(7, 3)), r#"{"seq":7,"subscribers":3}"#);
        let counters = [("channels", 2), ("published_total", 5)];
        let latency = DeliveryLatency::default();
        let stats = text(stats(&counters, &latency, [(200, 4), (304, 1)].into_iter()));
        assert!(stats.starts_with(r#"{"channels":2,"published_total":5,"delivery_seconds":{"le":[0.00005,"#));
        assert!(stats.ends_with(r#""count":0}},"responses_total":{"200":4,"304":1}}"#));
        let m = text(metrics(&counters, &latency, [(200, 4)].into_iter()));
        assert!(m.starts_with(
            "# HELP tidings_channels Channels that exist (with messages or subscribers).\n\
             # TYPE tidings_channels gauge\ntidings_channels 2\n# HELP tidings_published_total Messages published.\n\
             # TYPE tidings_published_total counter\ntidings_published_total 5\n# HELP tidings_delivery_seconds "
        ));
        assert!(m.ends_with(
            "# HELP tidings_responses_total Responses sent, by status code.\n\
             # TYPE tidings_responses_total counter\ntidings_responses_total{code=\"200\"} 4\n"
        ));
        assert_eq!(
            text(work_done(5, Duration::from_micros(5_012_345), 0xbeef)),
            r#"{"ms":5,"took_ms":5012.345,"result":"000000000000beef"}"#
        );
    }
}
