//! The hub's parameters and the hub itself.
//!
//! 1. `app::hub::valid_channel_name` and `app::config::parse_seconds` on arbitrary strings,
//!    against straightforward models of their documented grammar (and a round trip for
//!    `parse_seconds`).
//! 2. `app::hub::Hub` driven by fuzzed publish/subscribe operations against a model: seq
//!    strictly increasing per channel, retained count <= retain and bytes (bodies plus
//!    `MESSAGE_OVERHEAD` each) <= retain_bytes, the hub's byte bound evicting the globally
//!    oldest first (a channel left empty is dropped and starts over), messages too large for
//!    the limits, the channel limit, the counters, one epoch per life of a channel, and every
//!    answer, rendered by `app::render` from the hub's description, is valid JSON whose
//!    messages, `next`, `missed` and `reset` are what the model says.
//! 3. With `ctl` bit 7: the same operations as real requests to the `tidings` service (a fresh
//!    server per input, two loopback clients: subscribers on one, publishers on the other),
//!    with fuzzed query strings and `If-None-Match` headers. This reaches the private cursor
//!    and timeout parsing of `app/src/service.rs`: each answer's status must be what a model
//!    of `?since=` / `If-None-Match` / `?timeout=` says; 200 answers are valid JSON with a
//!    matching ETag (`"EPOCH:next"`); held polls are woken by publishes; after both clients leave, no waiter,
//!    timer or connection is left.

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use app::config::parse_seconds;
use app::hub::{valid_channel_name, Cursor, Hub, HubError, HubLimits, Poll, MESSAGE_OVERHEAD};
use app::render;
use app::{Options, Tidings};
use fuzz_support::json::{self, Json};
use fuzz_support::loopback::{CloseMode, Loopback};
use fuzz_support::{responses, Bytes};
use libfuzzer_sys::fuzz_target;

const MAX_INPUT: usize = 4096;
const MAX_OPS: usize = 48;
const MAX_CHANNELS: usize = 3;

#[derive(Debug)]
enum Op {
    Publish {
        name: usize,
        data: Vec<u8>,
    },
    Subscribe {
        name: usize,
        cursor: Option<u64>,
    },
    /// A raw `GET /sub/{name}?{query}` with an optional If-None-Match (service phase only;
    /// in the hub phase it is a subscribe without cursor).
    Raw {
        name: usize,
        query: Vec<u8>,
        inm: Option<Vec<u8>>,
        on_publisher: bool,
    },
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut input = Bytes::new(data);
    let ctl = input.u8();

    // 1. The parsers on their own.
    let s1 = String::from_utf8_lossy(input.bytes(160)).into_owned();
    let s2 = String::from_utf8_lossy(input.bytes(32)).into_owned();
    for s in [&s1, &s2] {
        assert_eq!(valid_channel_name(s), model_channel_name(s), "{s:?}");
        assert_eq!(parse_seconds(s), model_seconds(s), "{s:?}");
    }
    let secs = input.u64() % (366 * 86_400 + 1);
    let nanos = (input.u64() % 1_000_000_000) as u32;
    let d = Duration::new(secs, nanos);
    assert_eq!(parse_seconds(&format!("{secs}.{nanos:09}")), Some(d));
    assert_eq!(parse_seconds(&format!("{secs}")), Some(Duration::from_secs(secs)));

    // 2. The hub against a model.
    let names = [s1.clone(), s2.clone(), "a".to_string(), "b.c-1:_".to_string()];
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < MAX_OPS {
        let b = input.u8();
        let name = (b >> 2) as usize % names.len();
        ops.push(match b & 3 {
            0 => Op::Publish { name, data: input.bytes(40).to_vec() },
            1 => Op::Subscribe { name, cursor: None },
            2 => Op::Subscribe { name, cursor: Some(input.u8() as u64 % 12) },
            _ => {
                let flags = input.u8();
                let query = input.bytes(48).to_vec();
                let inm = (flags & 1 == 1).then(|| input.bytes(24).to_vec());
                Op::Raw { name, query, inm, on_publisher: flags & 2 == 2 }
            }
        });
    }
    // Messages are 0..=40 bytes: the smallest `retain_bytes` refuses the larger ones, and
    // bit 6 sets a hub bound of two channels' worth, so the globally oldest go first.
    let retain_bytes = MESSAGE_OVERHEAD + 8 + 16 * ((ctl >> 2) & 3) as usize;
    let limits = HubLimits {
        retain: 1 + (ctl & 3) as usize,
        retain_bytes,
        max_retained_bytes: if ctl & 0x40 != 0 {
            2 * retain_bytes
        } else {
            HubLimits::default().max_retained_bytes
        },
        max_channels: MAX_CHANNELS,
        max_batch: 1 + ((ctl >> 4) & 3) as usize,
        // The model has no clock: nothing expires.
        message_ttl_ms: 0,
        ..HubLimits::default()
    };
    hub_model_check(&ops, &names, limits);

    // 3. The same through the HTTP service, whose `--max-message` (40) must fit in a channel.
    if ctl & 0x80 != 0 {
        let retain_bytes = limits.retain_bytes.max(40 + MESSAGE_OVERHEAD);
        let max_retained_bytes = limits.max_retained_bytes.max(retain_bytes);
        service_check(&ops, &names, HubLimits { retain_bytes, max_retained_bytes, ..limits });
    }
});

// ----- 1. parsers ----------------------------------------------------------------------------

fn model_channel_name(s: &str) -> bool {
    let ok_byte = |b: u8| b.is_ascii_alphanumeric() || b"._:-".contains(&b);
    !s.is_empty() && s.len() <= 128 && s.bytes().all(ok_byte) && s.bytes().any(|b| b != b'.')
}

/// `DIGITS [ "." DIGITS ]` or `"." DIGITS`, at most 8 integer digits, at most a year;
/// fraction digits past the 9th (nanoseconds) are dropped.
fn model_seconds(s: &str) -> Option<Duration> {
    let (int, frac) = match s.find('.') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || int.len() > 8 {
        return None;
    }
    match frac {
        None if int.is_empty() => return None,
        Some(f) if f.is_empty() || !digits(f) => return None,
        _ => {}
    }
    let secs: u128 = if int.is_empty() { 0 } else { int.parse().unwrap() };
    let mut nanos: u128 = 0;
    let f = frac.unwrap_or("").as_bytes();
    for i in 0..9 {
        nanos = nanos * 10 + f.get(i).map_or(0, |b| (b - b'0') as u128);
    }
    let total = secs * 1_000_000_000 + nanos;
    if total > 366 * 86_400 * 1_000_000_000 {
        return None;
    }
    Some(Duration::new((total / 1_000_000_000) as u64, (total % 1_000_000_000) as u32))
}

// ----- 2. the hub model ----------------------------------------------------------------------

#[derive(Default, Clone)]
struct ModelChannel {
    last_seq: u64,
    /// (seq, data, publish number) of each retained message.
    messages: VecDeque<(u64, Vec<u8>, u64)>,
    /// Bodies plus `MESSAGE_OVERHEAD` each.
    bytes: usize,
    /// The epoch the hub gave this life of the channel, once seen.
    epoch: Option<u32>,
}

/// What the model expects a subscribe to answer.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// (seq, data) of each message, next, missed, reset.
    Messages(Vec<(u64, Vec<u8>)>, u64, u64, bool),
    Hold(u64),
}

#[derive(Debug, PartialEq, Eq)]
enum PublishError {
    TooManyChannels,
    TooLarge,
}

#[derive(Default)]
struct Model {
    /// Channels that exist: those holding messages (subscribes alone leave none behind, and
    /// a channel whose last message is evicted is dropped: its seqs start over).
    channels: HashMap<String, ModelChannel>,
    published: u64,
    delivered: u64,
    /// Messages evicted by the hub's byte bound.
    evicted: u64,
}

impl Model {
    fn retained_bytes(&self) -> usize {
        self.channels.values().map(|c| c.bytes).sum()
    }

    fn publish(&mut self, name: &str, data: &[u8], limits: &HubLimits) -> Result<u64, PublishError> {
        let cost = data.len() + MESSAGE_OVERHEAD;
        if cost > limits.retain_bytes || cost > limits.max_retained_bytes {
            return Err(PublishError::TooLarge);
        }
        // Room first: the globally oldest message goes, whatever its channel.
        while self.retained_bytes() + cost > limits.max_retained_bytes {
            let oldest = self
                .channels
                .iter()
                .filter_map(|(n, c)| c.messages.front().map(|m| (m.2, n.clone())))
                .min()
                .map(|(_, n)| n)
                .expect("bytes retained, so a message is");
            let c = self.channels.get_mut(&oldest).unwrap();
            let (_, d, _) = c.messages.pop_front().unwrap();
            c.bytes -= d.len() + MESSAGE_OVERHEAD;
            if c.messages.is_empty() {
                self.channels.remove(&oldest);
            }
            self.evicted += 1;
        }
        if !self.channels.contains_key(name) && self.channels.len() >= limits.max_channels {
            return Err(PublishError::TooManyChannels);
        }
        let order = self.published;
        let c = self.channels.entry(name.to_string()).or_default();
        c.last_seq += 1;
        c.messages.push_back((c.last_seq, data.to_vec(), order));
        c.bytes += cost;
        while c.messages.len() > limits.retain || (c.bytes > limits.retain_bytes && !c.messages.is_empty()) {
            let (_, d, _) = c.messages.pop_front().unwrap();
            c.bytes -= d.len() + MESSAGE_OVERHEAD;
        }
        self.published += 1;
        Ok(c.last_seq)
    }

    /// A subscribe with a cursor of no epoch (the rules of before epochs).
    fn subscribe(&self, name: &str, cursor: Option<u64>, limits: &HubLimits) -> Answer {
        let c = self.channels.get(name).cloned().unwrap_or_default();
        let cursor = cursor.unwrap_or(c.last_seq);
        if cursor == c.last_seq {
            return Answer::Hold(cursor);
        }
        let reset = cursor > c.last_seq;
        let after = if reset { 0 } else { cursor };
        let first = c.messages.front().map_or(c.last_seq + 1, |m| m.0);
        let missed = if reset { 0 } else { first.saturating_sub(after + 1) };
        let batch: Vec<(u64, Vec<u8>)> = c
            .messages
            .iter()
            .filter(|m| m.0 > after)
            .take(limits.max_batch)
            .map(|m| (m.0, m.1.clone()))
            .collect();
        let next = batch.last().map_or(c.last_seq, |m| m.0);
        Answer::Messages(batch, next, missed, reset)
    }
}

/// Reads a hub answer back into the model's terms, checking it is valid JSON of the
/// documented shape.
/// Also returns the answer's epoch (8 lowercase hex digits).
fn read_answer(body: &[u8], channel: &str) -> (Answer, String) {
    let doc = json::parse(body)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    assert_eq!(doc.get("channel").and_then(Json::str), Some(channel), "channel field");
    let epoch = doc.get("epoch").and_then(Json::str).expect("epoch").to_string();
    assert!(
        epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "epoch {epoch:?}"
    );
    let messages = doc
        .get("messages")
        .and_then(Json::arr)
        .unwrap_or_else(|| panic!("no messages array"))
        .iter()
        .map(|m| {
            let seq = m.get("seq").and_then(Json::num).expect("seq");
            let data = match (m.get("data"), m.get("data_b64")) {
                (Some(Json::Str(s)), None) => {
                    assert!(model_as_text(s.as_bytes()), "sent as text, escapes past 4/3: {s:?}");
                    s.as_bytes().to_vec()
                }
                (None, Some(Json::Str(b))) => {
                    let d = json::base64_decode(b).expect("data_b64 is canonical base64");
                    assert!(!model_as_text(&d), "sent as base64, fits as text: {d:?}");
                    d
                }
                other => panic!("message needs exactly one of data/data_b64: {other:?}"),
            };
            (seq, data)
        })
        .collect();
    let next = doc.get("next").and_then(Json::num).expect("next");
    let missed = doc.get("missed").and_then(Json::num).expect("missed");
    let reset = match doc.get("reset") {
        None => false,
        Some(Json::Bool(true)) => true,
        Some(other) => panic!("reset: {other:?}"),
    };
    (Answer::Messages(messages, next, missed, reset), epoch)
}

/// Whether a message goes as a JSON string: UTF-8, and its escaped form (`\"`, `\\`, `\n`,
/// `\r`, `\t` 2 bytes, other control bytes 6) at most 4/3 of its size; else base64.
fn model_as_text(d: &[u8]) -> bool {
    let escaped: usize = d
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum();
    std::str::from_utf8(d).is_ok() && escaped * 3 <= d.len() * 4
}

fn hub_model_check(ops: &[Op], names: &[String], limits: HubLimits) {
    // Nobody waits in this phase: the hub parks nothing.
    let mut hub: Hub<()> = Hub::with_epoch_seed(limits, Some(0x5eed));
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Publish { name, data } => {
                let name = &names[*name];
                let before = model.channels.get(name.as_str()).map_or(0, |c| c.last_seq);
                match (hub.publish(name, data.clone(), 0), model.publish(name, data, &limits)) {
                    (Ok(p), Ok(expect)) => {
                        assert_eq!(p.seq, expect);
                        assert!(p.seq > before || p.seq == 1, "seq not strictly increasing in one life");
                        assert!(p.deliveries.is_empty(), "nobody waits in this phase");
                        let c = model.channels.get_mut(name.as_str()).unwrap();
                        assert_eq!(*c.epoch.get_or_insert(p.epoch), p.epoch, "one epoch per life");
                    }
                    (Err(HubError::TooManyChannels), Err(PublishError::TooManyChannels)) => {}
                    (Err(HubError::TooLarge), Err(PublishError::TooLarge)) => {}
                    (got, want) => panic!("publish {name:?}: hub {:?}, model {want:?}", got.map(|p| p.seq)),
                }
            }
            Op::Subscribe { .. } | Op::Raw { .. } => {
                let (name, cursor) = match op {
                    Op::Subscribe { name, cursor } => (&names[*name], *cursor),
                    Op::Raw { name, .. } => (&names[*name], None),
                    Op::Publish { .. } => unreachable!(),
                };
                let want = model.subscribe(name, cursor, &limits);
                let (got, epoch) =
                    match hub.subscribe(name, cursor.map(|since| Cursor { since, epoch: None }), 0) {
                        Poll::Hold(hold) => {
                            // What the service does with a hold it does not park (timeout 0).
                            hub.release_channel(hold.chan);
                            (Answer::Hold(hold.cursor), hold.epoch)
                        }
                        Poll::Messages(b) => {
                            let body = render::messages(name, &b, hub.messages(&b)).body;
                            let (a, epoch) = read_answer(&body, name);
                            assert_eq!(epoch, render::format_epoch(b.epoch), "epoch in the body");
                            if let Answer::Messages(m, n, missed, reset) = &a {
                                assert_eq!(
                                    (m.len(), *n, *missed, *reset),
                                    (b.count, b.next, b.missed, b.reset),
                                    "batch vs body"
                                );
                                model.delivered += m.len() as u64;
                            }
                            (a, b.epoch)
                        }
                    };
                assert_eq!(got, want, "subscribe {name:?} cursor {cursor:?}");
                if let Some(c) = model.channels.get_mut(name.as_str()) {
                    assert_eq!(*c.epoch.get_or_insert(epoch), epoch, "one epoch per life");
                }
            }
        }
        let stats = hub.stats();
        assert_eq!(stats.channels, model.channels.len(), "channels");
        assert!(stats.channels <= limits.max_channels);
        assert_eq!(stats.waiting_polls, 0);
        assert_eq!(stats.published_total, model.published);
        assert_eq!(stats.delivered_total, model.delivered);
        assert_eq!(stats.evicted_total, model.evicted);
        let n = model.channels.values().map(|c| c.messages.len()).sum();
        assert_eq!(
            (stats.retained_messages, stats.retained_bytes),
            (n, model.retained_bytes()),
            "retained counters"
        );
        assert!(stats.retained_bytes <= limits.max_retained_bytes);
        for c in model.channels.values() {
            assert!(c.messages.len() <= limits.retain && c.bytes <= limits.retain_bytes);
        }
    }
}

// ----- 3. through the service ----------------------------------------------------------------

/// Makes fuzz bytes usable in a request target: visible ASCII except `#`, anything else
/// becomes `%`. (A `/` or `?` in a name stays: the routes must cope.)
fn target_safe(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| if b.is_ascii_graphic() && b != b'#' { b as char } else { '%' }).collect()
}

/// Header value bytes httparse accepts: HTAB, SP..~, obs-text; not leading whitespace.
fn header_safe(bytes: &[u8]) -> Vec<u8> {
    let v: Vec<u8> =
        bytes.iter().map(|&b| if b == b'\t' || b >= 0x20 && b != 0x7f { b } else { b'_' }).collect();
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    v[start..].to_vec()
}

/// What the service must answer a `GET /sub/..` (None: 200, 304, 503 or held).
fn model_sub_status(req: &http::Request<'_>, name: &str) -> Option<(u16, &'static str)> {
    if name.contains('/') {
        return Some((404, "not found"));
    }
    if !model_channel_name(name) {
        return Some((400, "invalid channel name: 1..128 bytes of [A-Za-z0-9._:-]"));
    }
    let digits_u64 = |v: &str| -> Option<u64> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.bytes().try_fold(0u64, |acc, b| acc.checked_mul(10)?.checked_add((b - b'0') as u64))
    };
    let epoch_ok = |e: &str| e.len() == 8 && e.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(v) = req.query_param("since") {
        if digits_u64(v).is_none() {
            return Some((400, "invalid since"));
        }
        if req.query_param("epoch").is_some_and(|e| !epoch_ok(e)) {
            return Some((400, "invalid epoch: 8 hex digits"));
        }
    } else if let Some(raw) = req.header("if-none-match") {
        // An entity tag, optionally weak: `"S"`, `"E:S"`, `W/"S"` or `W/"E:S"`, S a decimal
        // u64, E 8 hex digits.
        let ok = std::str::from_utf8(raw)
            .ok()
            .map(str::trim)
            .map(|v| v.strip_prefix("W/").unwrap_or(v))
            .and_then(|v| v.strip_prefix('"'))
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| match v.split_once(':') {
                Some((e, s)) if epoch_ok(e) => digits_u64(s),
                Some(_) => None,
                None => digits_u64(v),
            })
            .is_some();
        if !ok {
            return Some((400, "invalid If-None-Match"));
        }
    }
    if let Some(v) = req.query_param("timeout") {
        if !model_seconds(v).is_some_and(|d| d <= Duration::from_secs(300)) {
            return Some((400, "invalid timeout"));
        }
    }
    None
}

#[derive(Debug)]
struct Sent {
    /// The request target, for failure messages.
    target: String,
    /// The request is a GET /sub (else a POST /pub).
    sub: bool,
    /// The channel segment of the path.
    name: String,
    /// A GET /sub that may be held (no `timeout=0` in its query).
    may_hold: bool,
    /// Status (and body) the model insists on, if it does.
    want: Option<(u16, &'static str)>,
}

fn service_check(ops: &[Op], names: &[String], limits: HubLimits) {
    let opts = Options {
        poll_timeout: Duration::from_secs(10),
        max_message: 40,
        hub: limits,
        workers: 0,
        work_queue: 0,
        ..Options::default()
    };
    let reactor = reactor::Reactor::new().expect("reactor");
    let service = Tidings::new(opts.clone(), reactor.remote()).expect("service");
    let mut lb = Loopback::new(opts.http_config(), reactor, service);
    let mut subs = lb.connect(false);
    let mut pubs = lb.connect(false);
    let mut sent: [Vec<Sent>; 2] = [Vec::new(), Vec::new()];
    let http_limits = opts.http_config().limits;

    for op in ops {
        let (on_pub, head, body): (bool, Vec<u8>, Vec<u8>) = match op {
            Op::Publish { name, data } => {
                let target = target_safe(names[*name].as_bytes());
                let head = format!(
                    "POST /pub/{target} HTTP/1.1\r\nHost: f\r\nContent-Length: {}\r\n\r\n",
                    data.len()
                );
                (true, head.into_bytes(), data.clone())
            }
            Op::Subscribe { name, cursor } => {
                let target = target_safe(names[*name].as_bytes());
                let q = cursor.map_or(String::new(), |c| format!("since={c}&"));
                (
                    false,
                    format!("GET /sub/{target}?{q}timeout=0 HTTP/1.1\r\nHost: f\r\n\r\n").into_bytes(),
                    Vec::new(),
                )
            }
            Op::Raw { name, query, inm, on_publisher } => {
                let target = target_safe(names[*name].as_bytes());
                let mut head =
                    format!("GET /sub/{target}?{} HTTP/1.1\r\nHost: f\r\n", target_safe(query)).into_bytes();
                if let Some(v) = inm {
                    head.extend_from_slice(b"If-None-Match: ");
                    head.extend_from_slice(&header_safe(v));
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"\r\n");
                (*on_publisher, head, Vec::new())
            }
        };
        // The request as the server will parse it, for the model.
        let mut headers = http::request::header_storage();
        let (req, _) = http::request::parse(&head, &mut headers, &http_limits)
            .unwrap_or_else(|e| {
                panic!("synthesized head rejected: {e:?}: {:?}", String::from_utf8_lossy(&head))
            })
            .expect("complete");
        let want = if let Some(name) = req.path.strip_prefix("/sub/") {
            model_sub_status(&req, name)
        } else {
            let name = req.path.strip_prefix("/pub/").unwrap();
            if name.contains('/') {
                Some((404, "not found"))
            } else if !model_channel_name(name) {
                Some((400, "invalid channel name: 1..128 bytes of [A-Za-z0-9._:-]"))
            } else {
                None
            }
        };
        let name = req.path[5..].to_string(); // after "/sub/" or "/pub/"
                                              // Held unless the request *as parsed* says `timeout=0` (a `?` in a fuzzed channel name
                                              // starts the query early and can hide our own `timeout=0`).
        let zero = req.query_param("timeout").and_then(model_seconds).is_some_and(|d| d.is_zero());
        let may_hold = req.path.starts_with("/sub/") && !zero;
        let target = req.target.to_string();
        sent[on_pub as usize].push(Sent { target, sub: req.path.starts_with("/sub/"), name, may_hold, want });
        let mut raw = head;
        raw.extend_from_slice(&body);
        let client = if on_pub { &mut pubs } else { &mut subs };
        lb.send(client, &raw, true);
    }
    lb.settle(&mut subs, true);
    lb.settle(&mut pubs, true);

    for (i, client) in [subs, pubs].into_iter().enumerate() {
        let (received, complete) = lb.finish(client, CloseMode::Fin);
        let got = responses::check(&received, complete);
        assert!(got.len() <= sent[i].len(), "more answers than requests");
        for (r, s) in got.iter().zip(&sent[i]) {
            match s.want {
                Some((status, message)) => {
                    assert_eq!(
                        r.status, status,
                        "{}: model wants {status} {message:?}, got {:?}",
                        s.target, r.head
                    );
                    assert_eq!(r.body, message.as_bytes());
                }
                None if s.sub => {
                    assert!([200, 304, 503].contains(&r.status), "GET {} answered {}", s.target, r.head);
                    if r.status == 200 {
                        let (Answer::Messages(_, next, _, _), epoch) = read_answer(&r.body, &s.name) else {
                            unreachable!()
                        };
                        assert_eq!(
                            r.header("etag"),
                            Some(format!("\"{epoch}:{next}\"").as_str()),
                            "ETag vs next"
                        );
                    }
                    if r.status == 304 {
                        assert!(r.header("etag").is_some_and(|e| e.starts_with('"') && e.ends_with('"')));
                    }
                }
                None => {
                    assert!([200, 503].contains(&r.status), "POST {} answered {}", s.target, r.head);
                    if r.status == 200 {
                        let doc = json::parse(&r.body).expect("publish answer is JSON");
                        assert!(doc.get("seq").and_then(Json::num).is_some_and(|s| s > 0));
                        assert!(doc.get("subscribers").and_then(Json::num).is_some());
                    }
                }
            }
        }
        // Requests behind a held poll are not answered once the client leaves; everything
        // before the first held one was, in order.
        if complete && got.len() < sent[i].len() {
            let s = &sent[i][got.len()];
            let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
            assert!(
                s.sub && s.may_hold && s.want.is_none(),
                "a request that cannot be held went unanswered: {s:?}\nanswers {statuses:?} to {:#?}",
                sent[i]
            );
        }
    }
    let stats = lb.server.service().hub().stats();
    assert_eq!(stats.waiting_polls, 0, "a waiter outlived its client");
    assert!(stats.channels <= limits.max_channels);
    assert_eq!(lb.timers(), 0, "timers left behind");
}
