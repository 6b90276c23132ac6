//! The hub's parameters and the hub itself.
//!
//! 1. `app::hub::valid_channel_name` and `app::config::parse_seconds` on arbitrary strings,
//!    against straightforward models of their documented grammar (and a round trip for
//!    `parse_seconds`).
//! 2. `app::hub::Hub` driven by fuzzed publish/subscribe operations and clock steps against a
//!    model that follows the hub's rules exactly: seqs per channel life; per-channel limits
//!    (`retain`, `retain_bytes`, each message costing its body + `MESSAGE_OVERHEAD`); the
//!    hub's global bound (`max_retained_bytes`), which evicts the globally oldest first; message
//!    TTL; a channel with no message (and, here, never a waiter) is dropped at once and comes
//!    back with a new epoch; `max_channels` counts only channels holding messages and only
//!    publishes fail on it; epochs in cursors (none, the channel's current one, a wrong one,
//!    the previous life's); answers bounded by `max_batch` and `max_answer_bytes` (at least
//!    one message) with the text-or-base64 rule; `missed`, `reset`, `next`, the counters and
//!    `Hub::expire`'s next deadline. Every answer, rendered by `render::messages` from the
//!    hub's `Batch`, is valid JSON (checked by `test_support::json`) that agrees with the batch.
//!    The model learns each channel life's epoch from the hub the first time the life shows
//!    up, then checks it stays the same while the channel lives and changes when it is
//!    dropped and created again.
//! 3. With `ctl` bit 7: the same operations as real requests to the `tidings` service (a fresh
//!    server per input, two loopback clients: subscribers on one, publishers on the other),
//!    with fuzzed query strings and `If-None-Match` headers and epochs learnt from earlier
//!    answers. This reaches the private cursor, epoch and timeout parsing of
//!    `app/src/service.rs`: each answer's status must be what a model of `?since=`/`?epoch=`
//!    / `If-None-Match` / `?timeout=` says; 200 answers are valid JSON within the answer
//!    bounds with an ETag `"EPOCH:next"`; held polls are woken by publishes; after both
//!    clients leave, no waiter, connection or timer is left (but the TTL timer while messages
//!    are retained).
//!
//! Input: `ctl` (bits 0-1 retain, 2-3 retain_bytes, 4-5 max_batch, 7 service phase), `lim`
//! (bits 0-2 max_retained_bytes, 3-4 max_answer_bytes, 5-6 message TTL, 7 max_channels; 0 =
//! the roomy limits of before the global bound), the two parser strings, two u64, then the
//! operations: one byte each (bits 0-1 the kind, 2-3 the channel, 4-5 the cursor's epoch for a
//! subscribe with a cursor, 6-7 a clock step before it) and their operands.

#![no_main]

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use app::config::parse_seconds;
use app::hub::{valid_channel_name, Cursor, Hub, HubError, HubLimits, Poll, MESSAGE_OVERHEAD};
use app::render::{self, ANSWER_FRAME};
use app::{Options, Tidings};
use fuzz_support::loopback::{CloseMode, Loopback};
use fuzz_support::{responses, Bytes};
use libfuzzer_sys::fuzz_target;
use test_support::base64;
use test_support::json::{self, Json};

const MAX_INPUT: usize = 4096;
const MAX_OPS: usize = 48;
/// The longest message the operations publish.
const MAX_DATA: usize = 40;
/// What a retained message costs besides its body (the hub's own figure, documented in
/// README and `--help`; the limits below are in multiples of it).
const OVERHEAD: usize = MESSAGE_OVERHEAD;
/// Bytes an answer counts per message besides its value (`{"seq":N,"data_b64":...},`).
const PER_MESSAGE_KEYS: usize = 48;
/// Fixed seed of the hub's epochs in phase 2: repeatable runs. Its first 100,000 epochs are
/// distinct (checked once, with the hub's splitmix64), so "a new life has a new epoch" can
/// only fail on a real reuse.
const EPOCH_SEED: u64 = 0x7469_6469_6e67_7331;
/// The epoch a cursor carries when nothing is known of the channel.
const UNKNOWN_EPOCH: u32 = 0x0123_4567;

/// The epoch a subscribe's cursor carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochChoice {
    /// No epoch: the rules of before epochs.
    Absent,
    /// The channel's current epoch (or its last life's, if it is gone).
    Current,
    /// Not the current epoch.
    Wrong,
    /// The previous life's epoch (a client that slept through a drop and re-creation).
    Previous,
}

#[derive(Debug)]
enum Op {
    Publish {
        name: usize,
        data: Vec<u8>,
    },
    Subscribe {
        name: usize,
        cursor: Option<u64>,
        epoch: EpochChoice,
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

/// An operation and the clock step (ms) before it (hub phase only: the service runs on the
/// loop's real clock).
struct Step {
    advance_ms: u64,
    op: Op,
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut input = Bytes::new(data);
    let ctl = input.u8();
    let lim = input.u8();

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
    let mut steps = Vec::new();
    while !input.is_empty() && steps.len() < MAX_OPS {
        let b = input.u8();
        let name = ((b >> 2) & 3) as usize % names.len();
        let op = match b & 3 {
            0 => Op::Publish { name, data: input.bytes(MAX_DATA).to_vec() },
            1 => Op::Subscribe { name, cursor: None, epoch: EpochChoice::Absent },
            2 => {
                let epoch =
                    [EpochChoice::Absent, EpochChoice::Current, EpochChoice::Wrong, EpochChoice::Previous]
                        [((b >> 4) & 3) as usize];
                Op::Subscribe { name, cursor: Some(input.u8() as u64 % 12), epoch }
            }
            _ => {
                let flags = input.u8();
                let query = input.bytes(48).to_vec();
                let inm = (flags & 1 == 1).then(|| input.bytes(24).to_vec());
                Op::Raw { name, query, inm, on_publisher: flags & 2 == 2 }
            }
        };
        steps.push(Step { advance_ms: [0, 1, 9, 100][(b >> 6) as usize], op });
    }
    let limits = HubLimits {
        retain: 1 + (ctl & 3) as usize,
        // One small message, two or three, or plenty.
        retain_bytes: [OVERHEAD + 8, 2 * OVERHEAD + 24, 3 * OVERHEAD + 40, 4096][((ctl >> 2) & 3) as usize],
        max_retained_bytes: [1 << 20, OVERHEAD, 100, 150, 200, 300, 450, 700][(lim & 7) as usize],
        max_channels: if lim & 0x80 == 0 { 3 } else { 2 },
        max_batch: 1 + ((ctl >> 4) & 3) as usize,
        // Budget 0 (one message an answer), about one or two, two to four, plenty.
        max_answer_bytes: [1 << 20, ANSWER_FRAME, ANSWER_FRAME + 110, ANSWER_FRAME + 250]
            [((lim >> 3) & 3) as usize],
        message_ttl_ms: [0, 1, 10, 30][((lim >> 5) & 3) as usize],
    };
    hub_model_check(&steps, &names, limits);

    // 3. The same through the HTTP service.
    if ctl & 0x80 != 0 {
        service_check(&steps, &names, limits);
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

/// An epoch as a cursor carries it: exactly 8 hex digits, either case.
fn model_epoch(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ----- 2. the hub model ----------------------------------------------------------------------

/// Length of `s` as a JSON string, without the quotes (`\"`, `\\`, `\n`, `\r`, `\t`, or
/// `\u00XX` for other control bytes).
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// How a message goes out: `Some(length of its JSON string with quotes)` when it is UTF-8
/// and its escaped form is at most 4/3 of its size, else `None` (base64).
fn text_form(data: &[u8]) -> Option<usize> {
    let escaped = escaped_len(std::str::from_utf8(data).ok()?);
    (escaped * 3 <= data.len() * 4).then_some(escaped + 2)
}

/// Length of a message's JSON value in an answer.
fn encoded_len(data: &[u8]) -> usize {
    text_form(data).unwrap_or(data.len().div_ceil(3) * 4 + 2)
}

struct ModelMessage {
    seq: u64,
    data: Vec<u8>,
    published_ms: u64,
    /// Publish order over the whole hub (the global eviction order).
    order: u64,
}

struct ModelChannel {
    epoch: u32,
    last_seq: u64,
    messages: VecDeque<ModelMessage>,
    /// Bodies plus OVERHEAD each.
    bytes: usize,
}

/// What the model expects a subscribe to answer.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// (seq, data) of each message, next, missed, reset.
    Messages(Vec<(u64, Vec<u8>)>, u64, u64, bool),
    Hold(u64),
}

struct Model {
    limits: HubLimits,
    /// Channels that exist. With nobody waiting (this phase parks no waiter), exactly the
    /// channels that hold messages: the others are dropped at once.
    channels: HashMap<String, ModelChannel>,
    /// Per name, the epochs of its lives so far, oldest first (the hub's, as it reported them).
    epochs: HashMap<String, Vec<u32>>,
    retained_bytes: usize,
    published: u64,
    delivered: u64,
    evicted: u64,
    order: u64,
}

impl Model {
    fn new(limits: HubLimits) -> Model {
        Model {
            limits,
            channels: HashMap::new(),
            epochs: HashMap::new(),
            retained_bytes: 0,
            published: 0,
            delivered: 0,
            evicted: 0,
            order: 0,
        }
    }

    /// The epoch the hub reported for `name`. A channel that lives keeps its epoch; one that
    /// starts a new life gets one that differs from its last life's.
    fn learn_epoch(&mut self, name: &str, reported: u32, new_life: bool) {
        if new_life {
            let lives = self.epochs.entry(name.to_string()).or_default();
            if let Some(&last) = lives.last() {
                assert_ne!(reported, last, "{name:?} dropped and created again kept its epoch {last:08x}");
            }
            lives.push(reported);
        } else {
            let c = &self.channels[name];
            assert_eq!(reported, c.epoch, "{name:?} changed its epoch while it lived");
        }
    }

    /// The epoch a cursor carries for `choice`.
    fn cursor_epoch(&self, name: &str, choice: EpochChoice) -> Option<u32> {
        let lives = self.epochs.get(name).map_or(&[][..], Vec::as_slice);
        let current = self.channels.get(name).map(|c| c.epoch).or(lives.last().copied());
        match choice {
            EpochChoice::Absent => None,
            EpochChoice::Current => Some(current.unwrap_or(UNKNOWN_EPOCH)),
            EpochChoice::Wrong => Some(current.unwrap_or(UNKNOWN_EPOCH) ^ 0x8000_0001),
            EpochChoice::Previous => Some(match lives {
                [.., before, _] => *before,
                _ => current.unwrap_or(UNKNOWN_EPOCH) ^ 0x0000_ffff,
            }),
        }
    }

    /// The globally oldest retained message's channel.
    fn oldest(&self) -> Option<(&String, &ModelMessage)> {
        self.channels.iter().filter_map(|(n, c)| Some((n, c.messages.front()?))).min_by_key(|(_, m)| m.order)
    }

    /// Evicts the globally oldest message (dropping its channel if it was its last).
    fn evict_oldest(&mut self) -> bool {
        let Some((name, _)) = self.oldest() else { return false };
        let name = name.clone();
        let c = self.channels.get_mut(&name).unwrap();
        let m = c.messages.pop_front().unwrap();
        c.bytes -= m.data.len() + OVERHEAD;
        self.retained_bytes -= m.data.len() + OVERHEAD;
        self.evicted += 1;
        if c.messages.is_empty() {
            self.channels.remove(&name);
        }
        true
    }

    fn expire(&mut self, now_ms: u64) {
        while self.next_due().is_some_and(|due| due <= now_ms) {
            self.evict_oldest();
        }
    }

    /// When the oldest message expires (None: no TTL or no message).
    fn next_due(&self) -> Option<u64> {
        let ttl = self.limits.message_ttl_ms;
        if ttl == 0 {
            return None;
        }
        self.oldest().map(|(_, m)| m.published_ms.saturating_add(ttl))
    }

    /// `reported`: the epoch the hub answered with (None if it refused).
    fn publish(
        &mut self,
        name: &str,
        data: &[u8],
        now_ms: u64,
        reported: Option<u32>,
    ) -> Result<u64, HubError> {
        let l = self.limits;
        let cost = data.len() + OVERHEAD;
        if cost > l.retain_bytes || cost > l.max_retained_bytes {
            return Err(HubError::TooLarge);
        }
        self.expire(now_ms);
        while self.retained_bytes + cost > l.max_retained_bytes && self.evict_oldest() {}
        let new_life = !self.channels.contains_key(name);
        if new_life && self.channels.len() >= l.max_channels {
            return Err(HubError::TooManyChannels);
        }
        let epoch =
            reported.unwrap_or_else(|| panic!("publish {name:?}: the hub refused, the model publishes"));
        self.learn_epoch(name, epoch, new_life);
        let c = self.channels.entry(name.to_string()).or_insert_with(|| ModelChannel {
            epoch,
            last_seq: 0,
            messages: VecDeque::new(),
            bytes: 0,
        });
        c.last_seq += 1;
        self.order += 1;
        c.messages.push_back(ModelMessage {
            seq: c.last_seq,
            data: data.to_vec(),
            published_ms: now_ms,
            order: self.order,
        });
        c.bytes += cost;
        self.retained_bytes += cost;
        // The channel's own limits: not counted as evicted.
        while c.messages.len() > l.retain || c.bytes > l.retain_bytes {
            let m = c.messages.pop_front().unwrap();
            c.bytes -= m.data.len() + OVERHEAD;
            self.retained_bytes -= m.data.len() + OVERHEAD;
        }
        self.published += 1;
        Ok(c.last_seq)
    }

    /// `reported`: the epoch of the hub's answer (hold or messages).
    fn subscribe(&mut self, name: &str, cursor: Option<Cursor>, now_ms: u64, reported: u32) -> Answer {
        self.expire(now_ms);
        let new_life = !self.channels.contains_key(name);
        self.learn_epoch(name, reported, new_life);
        let empty = ModelChannel { epoch: reported, last_seq: 0, messages: VecDeque::new(), bytes: 0 };
        let c = self.channels.get(name).unwrap_or(&empty);
        let answer = match cursor {
            None => Answer::Hold(c.last_seq),
            Some(Cursor { since, epoch: Some(e) }) if e != c.epoch && !(since == 0 && c.last_seq == 0) => {
                self.answer(c, 0, true)
            }
            Some(Cursor { since, epoch: None }) if since > c.last_seq => self.answer(c, 0, true),
            Some(Cursor { since, .. }) if since < c.last_seq => self.answer(c, since, false),
            // Up to date, or (with the current epoch) ahead: wait from the channel's last seq.
            Some(_) => Answer::Hold(c.last_seq),
        };
        if let Answer::Messages(m, ..) = &answer {
            self.delivered += m.len() as u64;
        }
        // A channel created by this subscribe holds nothing and nobody waits: it is gone.
        answer
    }

    fn answer(&self, c: &ModelChannel, cursor: u64, reset: bool) -> Answer {
        let first = c.messages.front().map_or(c.last_seq + 1, |m| m.seq);
        let missed = if reset { 0 } else { first.saturating_sub(cursor + 1) };
        let budget = self.limits.max_answer_bytes.saturating_sub(ANSWER_FRAME);
        let mut used = 0;
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::new();
        for m in c.messages.iter().filter(|m| m.seq > cursor).take(self.limits.max_batch) {
            let size = encoded_len(&m.data) + PER_MESSAGE_KEYS;
            if !batch.is_empty() && used + size > budget {
                break;
            }
            used += size;
            batch.push((m.seq, m.data.clone()));
        }
        let next = batch.last().map_or(c.last_seq, |m| m.0);
        Answer::Messages(batch, next, missed, reset)
    }
}

/// Reads a hub answer back into the model's terms, checking it is valid JSON of the
/// documented shape, within the answer bounds, each message in the form the text-or-base64
/// rule says. Returns the answer and its epoch.
fn read_answer(body: &[u8], channel: &str, limits: &HubLimits) -> (Answer, u32) {
    let shown = || String::from_utf8_lossy(body).into_owned();
    let doc = json::parse(body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", shown()));
    assert_eq!(doc.opt("channel").and_then(Json::str), Some(channel), "channel field");
    let epoch = doc
        .opt("epoch")
        .and_then(Json::str)
        .filter(|e| model_epoch(e) && !e.bytes().any(|b| b.is_ascii_uppercase()))
        .and_then(|e| u32::from_str_radix(e, 16).ok())
        .unwrap_or_else(|| panic!("epoch is not 8 lowercase hex digits: {:?}", shown()));
    let messages: Vec<(u64, Vec<u8>)> = doc
        .opt("messages")
        .and_then(Json::arr)
        .unwrap_or_else(|| panic!("no messages array"))
        .iter()
        .map(|m| {
            let seq = m.opt("seq").and_then(Json::u64).expect("seq");
            let (data, as_text) = match (m.opt("data"), m.opt("data_b64")) {
                (Some(Json::Str(s)), None) => (s.as_bytes().to_vec(), true),
                (None, Some(Json::Str(b))) => {
                    (base64::decode(b).expect("data_b64 is canonical base64"), false)
                }
                other => panic!("message needs exactly one of data/data_b64: {other:?}"),
            };
            assert_eq!(as_text, text_form(&data).is_some(), "text-or-base64 rule broken for {data:?}");
            (seq, data)
        })
        .collect();
    assert!(messages.len() <= limits.max_batch, "more than max_batch messages: {:?}", shown());
    assert!(messages.windows(2).all(|w| w[1].0 == w[0].0 + 1), "seqs not contiguous: {:?}", shown());
    let bound = match messages.as_slice() {
        [] => ANSWER_FRAME,
        [(_, only)] => limits.max_answer_bytes.max(render::max_encoded_len(only.len()) + ANSWER_FRAME),
        _ => limits.max_answer_bytes,
    };
    // ANSWER_FRAME counts a valid channel name (at most 128 bytes, nothing to escape); the
    // hub phase also uses names the service would refuse: count what they take beyond that.
    let bound = bound + escaped_len(channel).saturating_sub(128);
    assert!(body.len() <= bound, "answer of {} bytes over its bound {bound}: {:?}", body.len(), shown());
    let next = doc.opt("next").and_then(Json::u64).expect("next");
    let missed = doc.opt("missed").and_then(Json::u64).expect("missed");
    let reset = match doc.opt("reset") {
        None => false,
        Some(Json::Bool(true)) => true,
        Some(other) => panic!("reset: {other:?}"),
    };
    (Answer::Messages(messages, next, missed, reset), epoch)
}

fn hub_model_check(steps: &[Step], names: &[String], limits: HubLimits) {
    // Nobody waits in this phase: the hub parks nothing.
    let mut hub: Hub<()> = Hub::with_epoch_seed(limits, Some(EPOCH_SEED));
    let mut model = Model::new(limits);
    let mut now = 0u64;
    for Step { advance_ms, op } in steps {
        now += advance_ms;
        match op {
            Op::Publish { name, data } => {
                let name = &names[*name];
                let before = model.channels.get(name.as_str()).map_or(0, |c| c.last_seq);
                let got = hub.publish(name, data.clone(), now);
                let reported = got.as_ref().ok().map(|p| p.epoch);
                match (got, model.publish(name, data, now, reported)) {
                    (Ok(p), Ok(expect)) => {
                        assert_eq!(p.seq, expect, "publish {name:?}: seq");
                        assert!(p.seq > before || p.seq == 1, "seq went back within a life");
                        assert!(p.deliveries.is_empty(), "nobody waits in this phase");
                        assert_eq!(p.subscribers(), 0, "nobody waits in this phase");
                    }
                    (Err(e), Err(f)) if e == f => {}
                    (got, want) => panic!("publish {name:?}: hub {:?}, model {want:?}", got.map(|p| p.seq)),
                }
            }
            Op::Subscribe { .. } | Op::Raw { .. } => {
                let (name, cursor) = match op {
                    Op::Subscribe { name, cursor, epoch } => {
                        let name = &names[*name];
                        let epoch = model.cursor_epoch(name, *epoch);
                        (name, cursor.map(|since| Cursor { since, epoch }))
                    }
                    Op::Raw { name, .. } => (&names[*name], None),
                    Op::Publish { .. } => unreachable!(),
                };
                let (got, reported) = match hub.subscribe(name, cursor, now) {
                    Poll::Hold(hold) => {
                        // What the service does with a hold it does not park (timeout 0).
                        hub.release_channel(hold.chan);
                        (Answer::Hold(hold.cursor), hold.epoch)
                    }
                    Poll::Messages(b) => {
                        // Rendered as the service renders it, before the hub changes again.
                        let body = render::messages(name, &b, hub.messages(&b)).body;
                        let (got, epoch) = read_answer(&body, name, &limits);
                        assert_eq!(epoch, b.epoch, "epoch in the body and in the batch");
                        if let Answer::Messages(m, next, missed, reset) = &got {
                            assert_eq!(
                                (m.len(), *next, *missed, *reset),
                                (b.count, b.next, b.missed, b.reset),
                                "the body vs the batch it was rendered from"
                            );
                            assert!(m.first().is_none_or(|f| f.0 == b.first), "first seq vs the batch");
                        }
                        (got, b.epoch)
                    }
                };
                let want = model.subscribe(name, cursor, now, reported);
                assert_eq!(got, want, "subscribe {name:?} cursor {cursor:?} at {now} ms");
            }
        }
        // The TTL timer's next deadline (this also expires what is due, as the service's
        // timer does).
        let due = hub.expire(now);
        model.expire(now);
        assert_eq!(due, model.next_due(), "next expiry");

        let stats = hub.stats();
        assert_eq!(stats.channels, model.channels.len(), "channels");
        assert!(stats.channels <= limits.max_channels);
        assert_eq!(stats.waiting_polls, 0);
        assert_eq!(stats.published_total, model.published, "published_total");
        assert_eq!(stats.delivered_total, model.delivered, "delivered_total");
        assert_eq!(stats.evicted_total, model.evicted, "evicted_total");
        let n = model.channels.values().map(|c| c.messages.len()).sum::<usize>();
        assert_eq!((stats.retained_messages, stats.retained_bytes), (n, model.retained_bytes), "retained");
        assert!(stats.retained_bytes <= limits.max_retained_bytes);
        for c in model.channels.values() {
            assert!(!c.messages.is_empty());
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

/// What the service must answer a `GET /sub/..` (None: 200, 304 or held).
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
    if let Some(v) = req.query_param("since") {
        if digits_u64(v).is_none() {
            return Some((400, "invalid since"));
        }
        // `epoch` counts only beside `since`.
        if req.query_param("epoch").is_some_and(|e| !model_epoch(e)) {
            return Some((400, "invalid epoch: 8 hex digits"));
        }
    } else if let Some(raw) = req.header("if-none-match") {
        // An entity tag, optionally weak: `"E:S"` or `"S"`, with `W/` or not; E 8 hex
        // digits (up to the first colon), S a decimal u64.
        let ok = std::str::from_utf8(raw)
            .ok()
            .map(str::trim)
            .map(|v| v.strip_prefix("W/").unwrap_or(v))
            .and_then(|v| v.strip_prefix('"'))
            .and_then(|v| v.strip_suffix('"'))
            .is_some_and(|tag| match tag.find(':') {
                Some(i) => model_epoch(&tag[..i]) && digits_u64(&tag[i + 1..]).is_some(),
                None => digits_u64(tag).is_some(),
            });
        if !ok {
            return Some((400, "invalid If-None-Match"));
        }
    }
    if let Some(v) = req.query_param("timeout") {
        if model_seconds(v).is_none_or(|d| d > Duration::from_secs(300)) {
            return Some((400, "invalid timeout"));
        }
    }
    None
}

/// An ETag `"EPOCH:SEQ"` as the service writes it (lowercase hex), read back.
fn read_etag(etag: Option<&str>) -> Option<(u32, u64)> {
    let tag = etag?.strip_prefix('"')?.strip_suffix('"')?;
    let (e, s) = tag.split_once(':')?;
    if !model_epoch(e) || e.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((u32::from_str_radix(e, 16).ok()?, s.parse().ok()?))
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

/// The service's options for `limits`, made consistent as `Options::check` wants (the
/// service refuses others): the largest message fits in a channel, a channel in the hub,
/// and one message in an answer (`max_message`: at most `MAX_DATA`, less if a channel holds
/// less; publishes are cut to it).
fn service_options(limits: HubLimits) -> Options {
    let max_message = MAX_DATA.min(limits.retain_bytes - OVERHEAD);
    let hub = HubLimits {
        max_retained_bytes: limits.max_retained_bytes.max(limits.retain_bytes),
        max_answer_bytes: limits.max_answer_bytes.max(render::max_encoded_len(max_message) + ANSWER_FRAME),
        ..limits
    };
    Options {
        poll_timeout: Duration::from_secs(10),
        max_message,
        hub,
        workers: 0,
        work_queue: 0,
        ..Options::default()
    }
}

/// Epochs the service's answers showed, per channel name, in the order they appeared.
#[derive(Default)]
struct SeenEpochs {
    lives: HashMap<String, Vec<u32>>,
    /// Per client: bytes of its stream already read for epochs, and answers in them.
    read: [(usize, usize); 2],
}

impl SeenEpochs {
    fn note(&mut self, name: &str, epoch: u32) {
        let lives = self.lives.entry(name.to_string()).or_default();
        if lives.last() != Some(&epoch) {
            lives.push(epoch);
        }
    }

    /// Reads the answers client `i` received since the last call for the epochs they carry.
    fn learn(&mut self, i: usize, received: &[u8], sent: &[Sent]) {
        let (offset, answered) = self.read[i];
        let got = responses::check(&received[offset..], false);
        // The last answer may be cut short: it is read again next time.
        let whole = got.len().saturating_sub(1);
        for (r, s) in got.iter().zip(&sent[answered..]) {
            if s.sub && s.want.is_none() && (r.status == 200 || r.status == 304) {
                if let Some((epoch, _)) = read_etag(r.header("etag")) {
                    self.note(&s.name, epoch);
                }
            }
        }
        let used: usize = got[..whole].iter().map(|r| r.head.len() + r.body.len()).sum();
        self.read[i] = (offset + used, answered + whole);
    }

    /// The `&epoch=` of a subscribe's query (the previous life's in uppercase, which the
    /// service must accept too).
    fn query(&self, name: &str, choice: EpochChoice) -> String {
        let lives = self.lives.get(name).map_or(&[][..], Vec::as_slice);
        let current = lives.last().copied().unwrap_or(UNKNOWN_EPOCH);
        match choice {
            EpochChoice::Absent => String::new(),
            EpochChoice::Current => format!("epoch={}&", render::format_epoch(current)),
            EpochChoice::Wrong => format!("epoch={}&", render::format_epoch(current ^ 0x8000_0001)),
            EpochChoice::Previous => {
                let before = match lives {
                    [.., before, _] => *before,
                    _ => current ^ 0x0000_ffff,
                };
                format!("epoch={:08X}&", before)
            }
        }
    }
}

fn service_check(steps: &[Step], names: &[String], limits: HubLimits) {
    let opts = service_options(limits);
    let reactor = reactor::Reactor::new().expect("reactor");
    let service = Tidings::new(opts.clone(), reactor.remote()).expect("service");
    let mut lb = Loopback::new(opts.http_config(), reactor, service);
    let mut subs = lb.connect(false);
    let mut pubs = lb.connect(false);
    let mut sent: [Vec<Sent>; 2] = [Vec::new(), Vec::new()];
    let mut seen = SeenEpochs::default();
    let http_limits = opts.http_config().limits;

    for Step { op, .. } in steps {
        let (on_pub, head, body): (bool, Vec<u8>, Vec<u8>) = match op {
            Op::Publish { name, data } => {
                let target = target_safe(names[*name].as_bytes());
                let data = &data[..data.len().min(opts.max_message)];
                let head = format!(
                    "POST /pub/{target} HTTP/1.1\r\nHost: f\r\nContent-Length: {}\r\n\r\n",
                    data.len()
                );
                (true, head.into_bytes(), data.to_vec())
            }
            Op::Subscribe { name, cursor, epoch } => {
                let target = target_safe(names[*name].as_bytes());
                let q = cursor
                    .map_or(String::new(), |c| format!("since={c}&{}", seen.query(&names[*name], *epoch)));
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
        seen.learn(on_pub as usize, &client.received, &sent[on_pub as usize]);
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
                    assert!([200, 304].contains(&r.status), "GET {} answered {}", s.target, r.head);
                    let etag = read_etag(r.header("etag"))
                        .unwrap_or_else(|| panic!("GET {}: no ETag \"EPOCH:SEQ\": {}", s.target, r.head));
                    if r.status == 200 {
                        let (Answer::Messages(_, next, _, _), epoch) =
                            read_answer(&r.body, &s.name, &opts.hub)
                        else {
                            unreachable!()
                        };
                        assert_eq!(etag, (epoch, next), "GET {}: ETag vs epoch and next", s.target);
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
    // Nobody waits: the channels left are those with messages.
    assert!(stats.channels <= limits.max_channels);
    assert_eq!(stats.channels == 0, stats.retained_messages == 0, "an empty channel was kept");
    assert!(stats.retained_bytes <= opts.hub.max_retained_bytes);
    // The one TTL timer is armed while a message is retained (and may outlive the last one);
    // nothing else is left.
    let timers = lb.timers();
    if limits.message_ttl_ms == 0 {
        assert_eq!(timers, 0, "timers left behind");
    } else {
        assert!(timers <= 1, "timers left behind: {timers}");
        assert!(stats.retained_messages == 0 || timers == 1, "messages retained, no TTL timer");
    }
}
