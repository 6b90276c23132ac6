//! The hub's parameters and the hub itself.
//!
//! 1. `app::hub::valid_channel_name` and `app::config::parse_seconds` on arbitrary strings,
//!    against straightforward models of their documented grammar (and a round trip for
//!    `parse_seconds`).
//! 2. `app::hub::Hub` driven by fuzzed publish/subscribe operations against a model: seq
//!    strictly increasing per channel, retained count <= retain and bytes (bodies plus
//!    `MESSAGE_OVERHEAD` each) <= retain_bytes, the channel limit, a channel's epoch constant
//!    through its life, cursors with no epoch, the channel's own or another, the counters,
//!    and every answer is valid JSON whose epoch, messages, `next`, `missed` and `reset` are
//!    what the model says. (The hub-wide byte bound, the TTL and the answer-size bound are
//!    set out of reach here: the model does not follow them.)
//! 3. With `ctl` bit 7: the same operations as real requests to the `tidings` service (a fresh
//!    server per input, two loopback clients: subscribers on one, publishers on the other),
//!    with fuzzed query strings and `If-None-Match` headers. This reaches the private cursor
//!    and timeout parsing of `app/src/service.rs`: each answer's status must be what a model
//!    of `?since=` / `?epoch=` / `If-None-Match` / `?timeout=` says; 200 answers are valid JSON
//!    with a matching ETag (`"EPOCH:next"`); held polls are woken by publishes; after both clients leave, no waiter,
//!    timer or connection is left.

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use app::config::parse_seconds;
use app::hub::{format_epoch, valid_channel_name, Cursor, Hub, HubError, HubLimits, Poll, MESSAGE_OVERHEAD};
use app::{Options, Tidings};
use fuzz_support::loopback::{CloseMode, Loopback};
use fuzz_support::{responses, Bytes};
use libfuzzer_sys::fuzz_target;
use test_support::base64;
use test_support::json::{self, Json};

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
        epoch: EpochGuess,
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

/// The epoch a subscribe sends with its cursor (in the hub phase; the service phase sends none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochGuess {
    None,
    /// The channel's own epoch (no epoch if the model has no such channel).
    Current,
    /// Another epoch than the channel's (no epoch if the model has no such channel).
    Other,
}

/// Largest message the ops publish.
const MAX_DATA: usize = 40;

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
            0 => Op::Publish { name, data: input.bytes(MAX_DATA).to_vec() },
            1 => Op::Subscribe { name, cursor: None, epoch: EpochGuess::None },
            2 => {
                let since = input.u8() as u64 % 12;
                let epoch =
                    [EpochGuess::None, EpochGuess::Current, EpochGuess::Other][input.u8() as usize % 3];
                Op::Subscribe { name, cursor: Some(since), epoch }
            }
            _ => {
                let flags = input.u8();
                let query = input.bytes(48).to_vec();
                let inm = (flags & 1 == 1).then(|| input.bytes(24).to_vec());
                Op::Raw { name, query, inm, on_publisher: flags & 2 == 2 }
            }
        });
    }
    // Every message fits in a channel (the service refuses to start otherwise); one of 40
    // bytes may fill it. The hub-wide bound, the TTL and the answer size stay out of reach.
    let limits = HubLimits {
        retain: 1 + (ctl & 3) as usize,
        retain_bytes: MESSAGE_OVERHEAD + MAX_DATA + 16 * ((ctl >> 2) & 3) as usize,
        max_retained_bytes: 1 << 30,
        max_channels: MAX_CHANNELS,
        max_batch: 1 + ((ctl >> 4) & 3) as usize,
        max_answer_bytes: 1 << 20,
        message_ttl_ms: 0,
    };
    hub_model_check(&ops, &names, limits);

    // 3. The same through the HTTP service.
    if ctl & 0x80 != 0 {
        service_check(&ops, &names, limits);
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
    /// The channel's epoch, as the hub's first publish to it said (None: not created yet).
    epoch: Option<u32>,
    last_seq: u64,
    messages: VecDeque<(u64, Vec<u8>)>,
    /// Bodies plus `MESSAGE_OVERHEAD` each.
    bytes: usize,
}

/// What the model expects a subscribe to answer.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// (seq, data) of each message, next, missed, reset.
    Messages(Vec<(u64, Vec<u8>)>, u64, u64, bool),
    Hold(u64),
}

#[derive(Default)]
struct Model {
    /// Channels that exist: published to at least once (subscribes alone leave none behind,
    /// and a channel always keeps its last message: nothing else evicts in this phase).
    channels: HashMap<String, ModelChannel>,
    published: u64,
}

impl Model {
    fn publish(&mut self, name: &str, data: &[u8], limits: &HubLimits) -> Option<u64> {
        if !self.channels.contains_key(name) && self.channels.len() >= limits.max_channels {
            return None;
        }
        let c = self.channels.entry(name.to_string()).or_default();
        c.last_seq += 1;
        c.messages.push_back((c.last_seq, data.to_vec()));
        c.bytes += data.len() + MESSAGE_OVERHEAD;
        while c.messages.len() > limits.retain || (c.bytes > limits.retain_bytes && !c.messages.is_empty()) {
            let (_, d) = c.messages.pop_front().unwrap();
            c.bytes -= d.len() + MESSAGE_OVERHEAD;
        }
        self.published += 1;
        Some(c.last_seq)
    }

    /// `epoch_matches`: the cursor carries an epoch, the channel's own (`Some(true)`) or
    /// another (`Some(false)`); `None`: no epoch.
    fn subscribe(
        &self,
        name: &str,
        cursor: Option<u64>,
        epoch_matches: Option<bool>,
        limits: &HubLimits,
    ) -> Answer {
        let c = self.channels.get(name).cloned().unwrap_or_default();
        let Some(cursor) = cursor else { return Answer::Hold(c.last_seq) };
        let reset = match epoch_matches {
            // Another life of the channel: from its oldest message (unless both are at 0).
            Some(false) => !(cursor == 0 && c.last_seq == 0),
            Some(true) => false,
            // Without an epoch, a cursor ahead of the channel is the sign of a new life.
            None => cursor > c.last_seq,
        };
        if !reset && cursor >= c.last_seq {
            return Answer::Hold(c.last_seq);
        }
        let after = if reset { 0 } else { cursor };
        let first = c.messages.front().map_or(c.last_seq + 1, |m| m.0);
        let missed = if reset { 0 } else { first.saturating_sub(after + 1) };
        let batch: Vec<(u64, Vec<u8>)> =
            c.messages.iter().filter(|m| m.0 > after).take(limits.max_batch).cloned().collect();
        let next = batch.last().map_or(c.last_seq, |m| m.0);
        Answer::Messages(batch, next, missed, reset)
    }
}

/// Whether the hub must send `data` as a JSON string rather than base64: it is UTF-8 and its
/// escaped form is at most 4/3 of its size (what base64 costs).
fn model_as_text(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else { return false };
    let escaped: usize = s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' => 2,
            '\0'..='\u{1f}' => 6,
            c => c.len_utf8(),
        })
        .sum();
    escaped * 3 <= data.len() * 4
}

/// Reads a hub answer back into the model's terms (and its epoch), checking it is valid JSON
/// of the documented shape.
fn read_answer(body: &[u8], channel: &str) -> (Answer, String) {
    let doc = json::parse(body)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    assert_eq!(doc.opt("channel").and_then(Json::str), Some(channel), "channel field");
    let epoch = doc.opt("epoch").and_then(Json::str).expect("epoch").to_string();
    assert!(
        epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "epoch {epoch:?}"
    );
    let messages = doc
        .opt("messages")
        .and_then(Json::arr)
        .unwrap_or_else(|| panic!("no messages array"))
        .iter()
        .map(|m| {
            let seq = m.opt("seq").and_then(Json::u64).expect("seq");
            let data = match (m.opt("data"), m.opt("data_b64")) {
                (Some(Json::Str(s)), None) => {
                    assert!(
                        model_as_text(s.as_bytes()),
                        "{s:?} sent as text, its escapes cost more than base64"
                    );
                    s.as_bytes().to_vec()
                }
                (None, Some(Json::Str(b))) => {
                    let d = base64::decode(b).expect("data_b64 is canonical base64");
                    assert!(!model_as_text(&d), "{d:?} sent as base64, text costs no more");
                    d
                }
                other => panic!("message needs exactly one of data/data_b64: {other:?}"),
            };
            (seq, data)
        })
        .collect();
    let next = doc.opt("next").and_then(Json::u64).expect("next");
    let missed = doc.opt("missed").and_then(Json::u64).expect("missed");
    let reset = match doc.opt("reset") {
        None => false,
        Some(Json::Bool(true)) => true,
        Some(other) => panic!("reset: {other:?}"),
    };
    (Answer::Messages(messages, next, missed, reset), epoch)
}

fn hub_model_check(ops: &[Op], names: &[String], limits: HubLimits) {
    let mut hub = Hub::with_epoch_seed(limits, Some(0));
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Publish { name, data } => {
                let name = &names[*name];
                assert!(data.len() + MESSAGE_OVERHEAD <= limits.retain_bytes, "every message fits");
                let before = model.channels.get(name.as_str()).map_or(0, |c| c.last_seq);
                match (hub.publish(name, data.clone(), 0), model.publish(name, data, &limits)) {
                    (Ok((seq, epoch, woken)), Some(expect)) => {
                        assert_eq!(seq, expect);
                        assert!(seq > before, "seq not strictly increasing");
                        assert!(woken.is_empty(), "nobody waits in this phase");
                        let c = model.channels.get_mut(name.as_str()).unwrap();
                        assert_eq!(
                            *c.epoch.get_or_insert(epoch),
                            epoch,
                            "a channel's epoch changed in its life"
                        );
                    }
                    (Err(HubError::TooManyChannels), None) => {}
                    (got, want) => panic!("publish {name:?}: hub {:?}, model {want:?}", got.map(|r| r.0)),
                }
            }
            Op::Subscribe { .. } | Op::Raw { .. } => {
                let (name, since, guess) = match op {
                    Op::Subscribe { name, cursor, epoch } => (&names[*name], *cursor, *epoch),
                    Op::Raw { name, .. } => (&names[*name], None, EpochGuess::None),
                    Op::Publish { .. } => unreachable!(),
                };
                let known = model.channels.get(name.as_str()).and_then(|c| c.epoch);
                let (epoch, matches) = match (guess, known) {
                    (EpochGuess::Current, Some(e)) => (Some(e), Some(true)),
                    (EpochGuess::Other, Some(e)) => (Some(e ^ 1), Some(false)),
                    _ => (None, None),
                };
                let cursor = since.map(|since| Cursor { since, epoch });
                let want = model.subscribe(name, since, matches, &limits);
                let got = match hub.subscribe(name, cursor, 0) {
                    Poll::Hold { chan, cursor, epoch } => {
                        if let Some(e) = known {
                            assert_eq!(epoch, e, "the hold's epoch");
                        }
                        // What the service does with a hold it does not park (timeout 0).
                        hub.release_channel(chan);
                        Answer::Hold(cursor)
                    }
                    Poll::Messages(a) => {
                        let (got, epoch) = read_answer(&a.body, name);
                        assert_eq!(epoch, format_epoch(a.epoch), "epoch beside the body");
                        if let Some(e) = known {
                            assert_eq!(a.epoch, e, "the answer's epoch");
                        }
                        if let Answer::Messages(m, n, _, _) = &got {
                            assert_eq!((m.len(), *n), (a.count, a.next), "count/next beside the body");
                        }
                        let etag = format!("ETag: \"{epoch}:{}\"\r\n", a.next);
                        assert!(a.headers.starts_with(&etag), "headers {:?}", a.headers);
                        got
                    }
                };
                assert_eq!(got, want, "subscribe {name:?} cursor {cursor:?}");
            }
        }
        let stats = hub.stats();
        assert_eq!(stats.channels, model.channels.len(), "channels");
        assert!(stats.channels <= limits.max_channels);
        assert_eq!(stats.waiting_polls, 0);
        assert_eq!(stats.published_total, model.published);
        let (n, bytes) =
            model.channels.values().fold((0, 0), |(n, b), c| (n + c.messages.len(), b + c.bytes));
        assert_eq!((stats.retained_messages, stats.retained_bytes), (n, bytes), "retained counters");
        for c in model.channels.values() {
            assert!(
                !c.messages.is_empty() && c.messages.len() <= limits.retain && c.bytes <= limits.retain_bytes
            );
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
    let epoch = |v: &str| v.len() == 8 && v.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(v) = req.query_param("since") {
        if digits_u64(v).is_none() {
            return Some((400, "invalid since"));
        }
        if req.query_param("epoch").is_some_and(|e| !epoch(e)) {
            return Some((400, "invalid epoch: 8 hex digits"));
        }
    } else if let Some(raw) = req.header("if-none-match") {
        // An entity tag, optionally weak: `"E:S"` or `"S"` (or `W/` before either), E an
        // epoch of 8 hex digits, S a decimal u64.
        let ok = std::str::from_utf8(raw)
            .ok()
            .map(str::trim)
            .map(|v| v.strip_prefix("W/").unwrap_or(v))
            .and_then(|v| v.strip_prefix('"'))
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| match v.split_once(':') {
                Some((e, s)) if epoch(e) => digits_u64(s),
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
        max_message: MAX_DATA,
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
            Op::Subscribe { name, cursor, .. } => {
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
                        let etag = format!("\"{epoch}:{next}\"");
                        assert_eq!(r.header("etag"), Some(etag.as_str()), "ETag vs epoch and next");
                    }
                    if r.status == 304 {
                        assert!(r.header("etag").is_some_and(|e| e.starts_with('"') && e.ends_with('"')));
                    }
                }
                None => {
                    assert!([200, 503].contains(&r.status), "POST {} answered {}", s.target, r.head);
                    if r.status == 200 {
                        let doc = json::parse(&r.body).expect("publish answer is JSON");
                        assert!(doc.opt("seq").and_then(Json::u64).is_some_and(|s| s > 0));
                        assert!(doc.opt("subscribers").and_then(Json::u64).is_some());
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
