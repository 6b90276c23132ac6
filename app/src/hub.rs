//! The long-poll hub: channels are named logs of messages, subscribers read them with a cursor.
//!
//! # Why cursors
//! The old Python app (a Tornado long-poll server, see the book) kept one queue per client and
//! *popped* a message before writing it: a client that vanished mid-write took the message
//! with it. Here a channel keeps its last messages and every subscriber says which sequence
//! number it has seen. Reading never removes anything, so a client that reconnects with its
//! cursor gets every message still retained, and `missed` tells it honestly how many it lost to
//! eviction.
//!
//! # Why epochs
//! A seq only means something within one life of a channel. When the server restarts, or a
//! channel is dropped (nothing retained, nobody waiting) and created again, seqs start over
//! at 1, and a client's cursor `7` may now point *behind* the new channel's last seq: it would
//! silently skip messages. So every channel gets a random **epoch** when it is created, every
//! answer carries it, and a client that sends back a cursor of another epoch is answered at
//! once with `"reset":true` and the retained messages from the oldest. (A client that sends no
//! epoch keeps the old rule: a cursor *ahead* of the channel is a reset.)
//!
//! # Why memory is bounded
//! Everything the hub holds is bounded by the flags, whatever clients send:
//! - retained messages: each one costs its body plus [`MESSAGE_OVERHEAD`] bytes (the structures
//!   that hold it), counted per channel (`retain`, `retain_bytes`) and over the whole hub
//!   (`max_retained_bytes`). When a publish would pass the hub's bound, the **globally oldest**
//!   messages are evicted first, whatever their channel; subscribers see them in `missed`.
//!   Messages older than `message_ttl` are evicted too. Both use one queue of every retained
//!   message in publish order (the age queue), so eviction never scans channels;
//! - channels: at most `max_channels` hold messages. A channel with only waiters does not
//!   count (it is bounded by the connections that wait on it), so subscribers cannot lock
//!   publishers out. A channel with no message and no waiter is dropped at once;
//! - answers: at most `max_batch` messages and `max_answer_bytes` of JSON (always at least
//!   one message), so a 43-byte request cannot pin megabytes of output.
//!
//! # Why waiting costs nothing
//! A subscriber with nothing to read becomes a [`Waiter`]: its responder, its cursor and a
//! timer for its timeout. It sits in its channel's waiter list until a publish wakes it (in
//! the same loop turn) or the timer fires. Nothing polls: an idle hub sleeps in `epoll_wait`.
//! Waiters live in a slab, and each channel lists its waiters' keys in a `Vec` where each
//! waiter knows its own position, so removing one (timeout, client gone) is a `swap_remove`.
//! A publish builds each answer once per distinct cursor (usually once) and hands the same
//! bytes to every waiter it wakes.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use http::Responder;
use reactor::TimerId;
use slab::Slab;

use crate::json;

/// Limits of the hub (all set by flags).
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Messages a channel keeps (`--retain`).
    pub retain: usize,
    /// Bytes a channel keeps, bodies plus [`MESSAGE_OVERHEAD`] each (`--retain-bytes`).
    pub retain_bytes: usize,
    /// Bytes the whole hub keeps, counted the same way (`--max-retained-bytes`).
    pub max_retained_bytes: usize,
    /// Channels that hold messages (`--max-channels`).
    pub max_channels: usize,
    /// Messages per answer (`--max-batch`).
    pub max_batch: usize,
    /// Bytes of one answer's JSON body (`--max-answer-bytes`), at least one message.
    pub max_answer_bytes: usize,
    /// Messages older than this many ms are evicted (`--message-ttl`; 0 = never).
    pub message_ttl_ms: u64,
}

impl Default for HubLimits {
    /// The binary's defaults (`tidings --help`).
    fn default() -> Self {
        HubLimits {
            retain: 1000,
            retain_bytes: 1024 * 1024,
            max_retained_bytes: 256 * 1024 * 1024,
            max_channels: 100_000,
            max_batch: 100,
            max_answer_bytes: 1024 * 1024,
            message_ttl_ms: 3_600_000,
        }
    }
}

/// What one retained message costs besides its body: its entry in its channel's queue, its
/// entry in the hub's age queue, and the allocator's header of its body's allocation.
/// (Spare capacity of the two queues is not counted: it is at most what is counted, and goes
/// when the queues shrink.)
pub const MESSAGE_OVERHEAD: usize =
    std::mem::size_of::<Message>() + std::mem::size_of::<AgeEntry>() + ALLOCATOR_HEADER;
/// glibc's malloc keeps 8-16 bytes before each allocation; count the larger.
const ALLOCATOR_HEADER: usize = 16;

/// The most JSON a message of `len` bytes can take in an answer besides the fixed part:
/// base64 (4 bytes per 3), the only form longer than 4/3 of the message being never chosen.
pub fn max_encoded_len(len: usize) -> usize {
    len.div_ceil(3).saturating_mul(4).saturating_add(2)
}

/// The longest JSON of an answer without its messages (channel name of 128 bytes, epoch,
/// numbers of 20 digits, `reset`), plus one message's own keys. An answer of one message
/// of `len` bytes is at most `max_encoded_len(len) + ANSWER_FRAME` long.
pub const ANSWER_FRAME: usize = 384;
/// `{"seq":N,"data_b64":...},` around one message's value, with N of 20 digits.
const PER_MESSAGE_KEYS: usize = 48;

struct Message {
    data: Box<[u8]>,
    /// Length of its JSON value (`"..."` escaped, or base64 with quotes).
    encoded_len: u32,
    /// Sent as `data` (a JSON string) rather than `data_b64`.
    as_text: bool,
}

/// One retained message in publish order across every channel: the oldest is at the front.
/// Entries whose message is already gone (evicted by its channel's own limits) are skipped
/// when they reach the front, and swept out when they outnumber the live ones.
#[derive(Debug, Clone, Copy)]
struct AgeEntry {
    chan: u32,
    /// The channel's creation number: a slab key reused by a later channel is not this one.
    chan_gen: u32,
    seq: u64,
    published_ms: u64,
}

struct Channel {
    name: Box<str>,
    epoch: u32,
    gen: u32,
    /// Retained messages; the last has seq `last_seq`, and seqs are contiguous.
    messages: VecDeque<Message>,
    /// Seq of the last message ever published in this life of the channel (0 = none).
    last_seq: u64,
    /// Retained bytes: bodies plus [`MESSAGE_OVERHEAD`] each.
    bytes: usize,
    /// Keys of the waiters parked on this channel.
    waiters: Vec<u32>,
}

impl Channel {
    /// Seq of the oldest retained message (last_seq + 1 when none is retained).
    fn first_seq(&self) -> u64 {
        self.last_seq + 1 - self.messages.len() as u64
    }
}

/// A subscriber waiting for a message.
pub struct Waiter {
    chan: u32,
    /// Position in the channel's `waiters`.
    pos: u32,
    pub cursor: u64,
    pub timer: Option<TimerId>,
    pub responder: Responder,
}

/// Where a subscriber stands: `since` (the last seq it has seen) in the channel's life
/// `epoch` (`None`: it did not say, as clients before epochs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub since: u64,
    pub epoch: Option<u32>,
}

/// An answer with messages (or an empty reset), ready to send: built once per distinct cursor
/// and shared (two reference counts) by every subscriber it goes to.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The JSON body.
    pub body: Rc<[u8]>,
    /// Its header lines: `ETag: "EPOCH:next"` and `Cache-Control: no-cache`.
    pub headers: Rc<str>,
    /// The cursor the client continues from (its ETag is `"EPOCH:next"`).
    pub next: u64,
    pub epoch: u32,
    /// Messages in the body.
    pub count: usize,
}

/// What a subscribe asks of the HTTP layer.
pub enum Poll {
    /// Answer now with 200 and this answer.
    Messages(Answer),
    /// Nothing newer than `cursor`: hold (or 304 at once if the timeout is 0).
    Hold { chan: u32, cursor: u64, epoch: u32 },
}

/// A waiter woken by a publish, to be answered by the caller.
pub struct Woken {
    pub responder: Responder,
    pub timer: Option<TimerId>,
    pub answer: Answer,
}

/// A waiter taken out of the hub (timed out, client gone, shutdown), with what its 304 says.
pub struct Removed {
    pub waiter: Waiter,
    pub epoch: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubError {
    /// A new channel with messages would exceed `max_channels`.
    TooManyChannels,
    /// The message alone is larger than a channel or the hub may hold (the flags are checked
    /// at start so that `--max-message` fits: only a caller of the library sees this).
    TooLarge,
}

/// Counters for /stats.
#[derive(Debug, Default, Clone, Copy)]
pub struct HubStats {
    pub channels: usize,
    pub waiting_polls: usize,
    pub retained_messages: usize,
    /// Bodies plus [`MESSAGE_OVERHEAD`] per message, over all channels.
    pub retained_bytes: usize,
    pub published_total: u64,
    /// Messages delivered in 200 answers to subscribers.
    pub delivered_total: u64,
    /// Messages evicted before their channel's own limits would have: by the hub's byte
    /// bound or by their age.
    pub evicted_total: u64,
}

pub struct Hub {
    limits: HubLimits,
    names: HashMap<Box<str>, u32>,
    channels: Slab<Channel>,
    /// Channels holding at least one message (what `max_channels` bounds).
    channels_with_messages: usize,
    next_gen: u32,
    epochs: EpochSource,
    /// Every retained message, oldest first.
    age: VecDeque<AgeEntry>,
    waiters: Slab<Waiter>,
    stats: HubStats,
}

/// Whether `name` is a valid channel name: 1..=128 bytes of `[A-Za-z0-9._:-]`, not only dots.
pub fn valid_channel_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && !name.bytes().all(|b| b == b'.')
}

/// An epoch as it travels: 8 lowercase hex digits.
pub fn format_epoch(epoch: u32) -> String {
    format!("{epoch:08x}")
}

/// The ETag of a cursor: `"EPOCH:SEQ"`.
pub fn etag(epoch: u32, seq: u64) -> String {
    format!("\"{}:{seq}\"", format_epoch(epoch))
}

/// Parses an epoch (exactly 8 hex digits, either case).
pub fn parse_epoch(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// Epochs: a splitmix64 sequence from a seed of the OS's randomness (mixed with the clock and
/// the pid, should `/dev/urandom` be unreadable). Not for secrets: an epoch only has to differ
/// from the last life's, and a restarted process must not repeat its predecessor's.
struct EpochSource {
    state: u64,
}

impl EpochSource {
    fn new(seed: u64) -> EpochSource {
        EpochSource { state: seed }
    }

    fn from_os() -> EpochSource {
        use std::io::Read as _;
        let mut bytes = [0u8; 8];
        let urandom = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut seed = u64::from_le_bytes(bytes) ^ clock ^ (u64::from(std::process::id()) << 32);
        if urandom.is_err() {
            seed ^= 0x5851_f42d_4c95_7f2d;
        }
        EpochSource::new(seed)
    }

    fn next(&mut self) -> u32 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }
}

impl Hub {
    pub fn new(limits: HubLimits) -> Hub {
        Hub::with_epoch_seed(limits, None)
    }

    /// A hub whose epochs come from `seed` (for tests and fuzzing: repeatable), or from the
    /// OS's randomness when `None`.
    pub fn with_epoch_seed(limits: HubLimits, seed: Option<u64>) -> Hub {
        Hub {
            limits,
            names: HashMap::new(),
            channels: Slab::new(),
            channels_with_messages: 0,
            next_gen: 0,
            epochs: seed.map_or_else(EpochSource::from_os, EpochSource::new),
            age: VecDeque::new(),
            waiters: Slab::new(),
            stats: HubStats::default(),
        }
    }

    pub fn limits(&self) -> &HubLimits {
        &self.limits
    }

    pub fn stats(&self) -> HubStats {
        HubStats { channels: self.channels.len(), waiting_polls: self.waiters.len(), ..self.stats }
    }

    /// The key of channel `name`, created (empty, with a new epoch) if it does not exist.
    fn channel_key(&mut self, name: &str) -> u32 {
        if let Some(&k) = self.names.get(name) {
            return k;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let name: Box<str> = name.into();
        let key = self.channels.insert(Channel {
            name: name.clone(),
            epoch: self.epochs.next(),
            gen: self.next_gen,
            messages: VecDeque::new(),
            last_seq: 0,
            bytes: 0,
            waiters: Vec::new(),
        }) as u32;
        self.names.insert(name, key);
        key
    }

    /// Drops a channel that holds no message and has nobody waiting: an idle hub returns to
    /// its empty footprint. Its seqs end with it; if it comes back, it has a new epoch.
    fn maybe_drop(&mut self, key: u32) {
        let c = &self.channels[key as usize];
        if c.messages.is_empty() && c.waiters.is_empty() {
            let c = self.channels.remove(key as usize);
            self.names.remove(&c.name);
        }
    }

    /// Appends `data` to channel `name` (creating it) and wakes every waiter on it. `now_ms`
    /// is the loop's clock, for the messages' age. Returns the new seq, the channel's epoch
    /// and the woken waiters, each with the answer it must be sent.
    pub fn publish(
        &mut self,
        name: &str,
        data: Vec<u8>,
        now_ms: u64,
    ) -> Result<(u64, u32, Vec<Woken>), HubError> {
        let cost = data.len().saturating_add(MESSAGE_OVERHEAD);
        if cost > self.limits.retain_bytes || cost > self.limits.max_retained_bytes {
            return Err(HubError::TooLarge);
        }
        self.expire(now_ms);
        // Room first (the globally oldest go), so the new message is never the one evicted.
        while self.stats.retained_bytes + cost > self.limits.max_retained_bytes && self.evict_oldest() {}
        let key = match self.names.get(name) {
            Some(&k) => k,
            None if self.channels_with_messages >= self.limits.max_channels => {
                return Err(HubError::TooManyChannels)
            }
            None => self.channel_key(name),
        };
        let c = &mut self.channels[key as usize];
        if c.messages.is_empty() {
            if self.channels_with_messages >= self.limits.max_channels {
                return Err(HubError::TooManyChannels);
            }
            self.channels_with_messages += 1;
        }
        c.last_seq += 1;
        let seq = c.last_seq;
        let (encoded_len, as_text) = encoding(&data);
        c.bytes += cost;
        c.messages.push_back(Message { data: data.into_boxed_slice(), encoded_len, as_text });
        self.age.push_back(AgeEntry { chan: key, chan_gen: c.gen, seq, published_ms: now_ms });
        self.stats.retained_bytes += cost;
        self.stats.retained_messages += 1;
        self.stats.published_total += 1;

        // Wake everyone. Waiters on one channel almost always share a cursor (they were all
        // up to date), so the answer is built once per distinct cursor and shared.
        let waiters = std::mem::take(&mut self.channels[key as usize].waiters);
        let mut woken = Vec::with_capacity(waiters.len());
        let mut last: Option<(u64, Answer)> = None;
        for wkey in waiters {
            let w = self.waiters.remove(wkey as usize);
            let answer = match &last {
                Some((cursor, answer)) if *cursor == w.cursor => answer.clone(),
                _ => {
                    let answer = self.answer(key, w.cursor, false);
                    last = Some((w.cursor, answer.clone()));
                    answer
                }
            };
            self.stats.delivered_total += answer.count as u64;
            woken.push(Woken { responder: w.responder, timer: w.timer, answer });
        }
        self.trim(key);
        let epoch = self.channels[key as usize].epoch;
        self.sweep_age_queue();
        Ok((seq, epoch, woken))
    }

    /// Enforces the channel's own limits (count, bytes), oldest first.
    fn trim(&mut self, key: u32) {
        let c = &mut self.channels[key as usize];
        while c.messages.len() > self.limits.retain
            || (c.bytes > self.limits.retain_bytes && !c.messages.is_empty())
        {
            Self::pop_front(c, &mut self.stats, &mut self.channels_with_messages);
        }
    }

    /// Removes a channel's oldest message, keeping the counters.
    fn pop_front(c: &mut Channel, stats: &mut HubStats, channels_with_messages: &mut usize) {
        if let Some(m) = c.messages.pop_front() {
            let cost = m.data.len() + MESSAGE_OVERHEAD;
            c.bytes -= cost;
            stats.retained_bytes -= cost;
            stats.retained_messages -= 1;
            if c.messages.is_empty() {
                *channels_with_messages -= 1;
            }
        }
    }

    /// Whether an age entry's message is still retained.
    fn is_live(&self, e: &AgeEntry) -> bool {
        self.channels.get(e.chan as usize).is_some_and(|c| c.gen == e.chan_gen && e.seq >= c.first_seq())
    }

    /// Evicts the globally oldest retained message. Returns false if there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some(e) = self.age.pop_front() {
            if !self.is_live(&e) {
                continue;
            }
            let c = &mut self.channels[e.chan as usize];
            // Entries leave the front in publish order, so a live one is its channel's oldest.
            debug_assert_eq!(c.first_seq(), e.seq);
            Self::pop_front(c, &mut self.stats, &mut self.channels_with_messages);
            self.stats.evicted_total += 1;
            self.maybe_drop(e.chan);
            return true;
        }
        false
    }

    /// Drops the age queue's dead entries once they outnumber the live ones (amortised O(1)
    /// per publish: the queue stays under twice the retained messages, plus a little).
    fn sweep_age_queue(&mut self) {
        if self.age.len() > 2 * self.stats.retained_messages + 64 {
            let mut age = std::mem::take(&mut self.age);
            age.retain(|e| self.is_live(e));
            self.age = age;
        }
    }

    /// Evicts messages older than the TTL. Returns when the next one expires (loop ms), for
    /// the caller's one timer; `None` if no message is retained or there is no TTL.
    pub fn expire(&mut self, now_ms: u64) -> Option<u64> {
        let ttl = self.limits.message_ttl_ms;
        if ttl == 0 {
            return None;
        }
        while let Some(e) = self.age.front().copied() {
            if !self.is_live(&e) {
                self.age.pop_front();
                continue;
            }
            let due = e.published_ms.saturating_add(ttl);
            if due > now_ms {
                return Some(due);
            }
            self.evict_oldest();
        }
        None
    }

    /// A subscriber on `name` stands at `cursor` (`None` = nothing yet: only messages published
    /// from now on). Returns what to answer.
    pub fn subscribe(&mut self, name: &str, cursor: Option<Cursor>, now_ms: u64) -> Poll {
        self.expire(now_ms);
        let key = self.channel_key(name);
        let c = &self.channels[key as usize];
        let (epoch, last_seq) = (c.epoch, c.last_seq);
        let poll = match cursor {
            None => Poll::Hold { chan: key, cursor: last_seq, epoch },
            // Another life of the channel: start over from its oldest message, even if
            // nothing is retained (then `next` tells the client where this life stands).
            // A client at 0 of a channel at 0 has nothing to start over from: it waits, as
            // otherwise every poll of an idle channel (dropped and created anew between two
            // polls) would be a reset.
            Some(Cursor { since, epoch: Some(e) }) if e != epoch && !(since == 0 && last_seq == 0) => {
                Poll::Messages(self.answer(key, 0, true))
            }
            // Without an epoch, a cursor ahead of the channel is the only sign of a new life.
            Some(Cursor { since, epoch: None }) if since > last_seq => {
                Poll::Messages(self.answer(key, 0, true))
            }
            Some(Cursor { since, .. }) if since < last_seq && last_seq > 0 => {
                Poll::Messages(self.answer(key, since, false))
            }
            Some(_) => Poll::Hold { chan: key, cursor: last_seq, epoch },
        };
        if let Poll::Messages(a) = &poll {
            self.stats.delivered_total += a.count as u64;
            self.maybe_drop(key);
        }
        poll
    }

    /// The answer with the messages after `cursor`: at most `max_batch` of them and
    /// `max_answer_bytes` of JSON, but always at least one if there is one.
    fn answer(&self, key: u32, cursor: u64, reset: bool) -> Answer {
        let c = &self.channels[key as usize];
        let first = c.first_seq();
        let missed = if reset { 0 } else { first.saturating_sub(cursor + 1) };
        let start = (cursor + 1).max(first);
        let skip = (start - first) as usize;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"channel\":");
        json::push_str(&mut out, &c.name);
        out.extend_from_slice(b",\"epoch\":\"");
        out.extend_from_slice(format_epoch(c.epoch).as_bytes());
        out.extend_from_slice(b"\",\"messages\":[");
        // The frame's own bytes stay within ANSWER_FRAME, so messages may use the rest.
        let budget = self.limits.max_answer_bytes.saturating_sub(ANSWER_FRAME);
        let mut used = 0;
        let mut next = c.last_seq;
        let mut count = 0;
        for (i, m) in c.messages.iter().enumerate().skip(skip).take(self.limits.max_batch) {
            let size = m.encoded_len as usize + PER_MESSAGE_KEYS;
            if count > 0 && used + size > budget {
                break;
            }
            used += size;
            let seq = first + i as u64;
            if count > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"seq\":");
            json::push_u64(&mut out, seq);
            match std::str::from_utf8(&m.data) {
                Ok(s) if m.as_text => {
                    out.extend_from_slice(b",\"data\":");
                    json::push_str(&mut out, s);
                }
                _ => {
                    out.extend_from_slice(b",\"data_b64\":");
                    json::push_base64(&mut out, &m.data);
                }
            }
            out.push(b'}');
            next = seq;
            count += 1;
        }
        out.extend_from_slice(b"],\"next\":");
        json::push_u64(&mut out, next);
        out.extend_from_slice(b",\"missed\":");
        json::push_u64(&mut out, missed);
        if reset {
            out.extend_from_slice(b",\"reset\":true");
        }
        out.push(b'}');
        let headers = format!("ETag: {}\r\nCache-Control: no-cache\r\n", etag(c.epoch, next));
        Answer { body: out.into(), headers: headers.into(), next, epoch: c.epoch, count }
    }

    /// Parks a subscriber on channel `chan` (from [`Poll::Hold`]) and returns its key.
    /// `park` is given the key first, to name the waiter's timer and connection note.
    pub fn add_waiter(
        &mut self,
        chan: u32,
        cursor: u64,
        responder: Responder,
        park: impl FnOnce(usize) -> Option<TimerId>,
    ) -> usize {
        let entry = self.waiters.vacant_entry();
        let key = entry.key();
        let timer = park(key);
        let c = &mut self.channels[chan as usize];
        entry.insert(Waiter { chan, pos: c.waiters.len() as u32, cursor, timer, responder });
        c.waiters.push(key as u32);
        key
    }

    pub fn waiter(&self, key: usize) -> Option<&Waiter> {
        self.waiters.get(key)
    }

    /// Removes a waiter (timed out, client gone, shutdown) and returns it with its channel's
    /// epoch (for the 304).
    pub fn remove_waiter(&mut self, key: usize) -> Option<Removed> {
        let w = self.waiters.try_remove(key)?;
        let c = &mut self.channels[w.chan as usize];
        let epoch = c.epoch;
        c.waiters.swap_remove(w.pos as usize);
        if let Some(&moved) = c.waiters.get(w.pos as usize) {
            self.waiters[moved as usize].pos = w.pos;
        }
        self.maybe_drop(w.chan);
        Some(Removed { waiter: w, epoch })
    }

    /// Keys of every waiter (for shutdown).
    pub fn waiter_keys(&self) -> Vec<usize> {
        self.waiters.iter().map(|(k, _)| k).collect()
    }

    /// Drops a channel created by a subscribe that ended without waiting (timeout 0).
    pub fn release_channel(&mut self, chan: u32) {
        if self.channels.contains(chan as usize) {
            self.maybe_drop(chan);
        }
    }
}

/// How a message will be written in answers: as a JSON string when it is UTF-8 and its
/// escaped form is at most 4/3 of its size (what base64 would cost), else as base64. So
/// 64 KiB of control bytes cost 87 KiB in an answer, not the 384 KiB of `\u00XX` escapes.
fn encoding(data: &[u8]) -> (u32, bool) {
    let b64 = max_encoded_len(data.len());
    let text = std::str::from_utf8(data).ok().map(|s| json::escaped_len(s) + 2);
    let (len, as_text) = match text {
        Some(len) if (len - 2).saturating_mul(3) <= data.len().saturating_mul(4) => (len, true),
        _ => (b64, false),
    };
    (len.min(u32::MAX as usize) as u32, as_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_channel_name("a"));
        assert!(valid_channel_name("chat.room-1:x_y"));
        assert!(valid_channel_name(&"a".repeat(128)));
        assert!(!valid_channel_name(&"a".repeat(129)));
        assert!(!valid_channel_name(""));
        assert!(!valid_channel_name("..."));
        assert!(!valid_channel_name("a%20b"));
        assert!(!valid_channel_name("a/b"));
    }

    #[test]
    fn overhead_is_what_the_docs_say() {
        // README, RELIABILITY.md and --help say 64 bytes.
        assert_eq!(MESSAGE_OVERHEAD, 64);
    }

    fn limits(retain: usize) -> HubLimits {
        HubLimits { retain, max_channels: 10, max_batch: 2, ..HubLimits::default() }
    }

    fn hub(retain: usize) -> Hub {
        Hub::with_epoch_seed(limits(retain), Some(1))
    }

    fn at(since: u64) -> Option<Cursor> {
        Some(Cursor { since, epoch: None })
    }

    fn body(p: Poll) -> String {
        match p {
            Poll::Messages(a) => String::from_utf8(a.body.to_vec()).unwrap(),
            Poll::Hold { cursor, .. } => format!("hold {cursor}"),
        }
    }

    fn epoch_of(h: &mut Hub, name: &str) -> String {
        match h.subscribe(name, None, 0) {
            Poll::Hold { epoch, chan, .. } => {
                h.release_channel(chan);
                format_epoch(epoch)
            }
            Poll::Messages(_) => unreachable!(),
        }
    }

    #[test]
    fn cursors_batches_and_missed() {
        let mut h = hub(3);
        for i in 0..5 {
            h.publish("c", format!("m{i}").into_bytes(), 0).unwrap();
        }
        let e = epoch_of(&mut h, "c");
        // Retained: 3, 4, 5. Cursor 0 missed 1 and 2; batch of 2.
        assert_eq!(
            body(h.subscribe("c", at(0), 0)),
            format!(
                r#"{{"channel":"c","epoch":"{e}","messages":[{{"seq":3,"data":"m2"}},{{"seq":4,"data":"m3"}}],"next":4,"missed":2}}"#
            )
        );
        assert_eq!(body(h.subscribe("c", at(5), 0)), "hold 5");
        assert_eq!(body(h.subscribe("c", None, 0)), "hold 5");
        assert_eq!(
            body(h.subscribe("c", at(9), 0)),
            format!(
                r#"{{"channel":"c","epoch":"{e}","messages":[{{"seq":3,"data":"m2"}},{{"seq":4,"data":"m3"}}],"next":4,"missed":0,"reset":true}}"#
            )
        );
        h.publish("b", vec![0xff, 0], 0).unwrap();
        let eb = epoch_of(&mut h, "b");
        assert_eq!(
            body(h.subscribe("b", at(0), 0)),
            format!(
                r#"{{"channel":"b","epoch":"{eb}","messages":[{{"seq":1,"data_b64":"/wA="}}],"next":1,"missed":0}}"#
            )
        );
    }

    #[test]
    fn another_epoch_resets() {
        let mut h = hub(10);
        for i in 1..=3 {
            h.publish("c", format!("b{i}").into_bytes(), 0).unwrap();
        }
        let e = epoch_of(&mut h, "c");
        let old = Some(Cursor { since: 2, epoch: Some(0xdead_beef) });
        let got = body(h.subscribe("c", old, 0));
        assert!(got.contains(r#""seq":1,"data":"b1""#) && got.contains(r#""reset":true"#), "{got}");
        assert!(got.contains(r#""missed":0"#) && got.contains(&format!(r#""epoch":"{e}""#)), "{got}");
        // The same epoch: the normal rules.
        let same = Some(Cursor { since: 2, epoch: parse_epoch(&e) });
        assert!(body(h.subscribe("c", same, 0)).contains(r#""messages":[{"seq":3,"data":"b3"}]"#));
        // Nothing retained in this life yet: an empty reset that says where it stands...
        let got = body(h.subscribe("new", Some(Cursor { since: 7, epoch: Some(1) }), 0));
        assert!(got.contains(r#""messages":[],"next":0,"missed":0,"reset":true"#), "{got}");
        // ... but a client at 0 of a channel at 0 just waits (no reset loop on idle channels).
        assert!(body(h.subscribe("new", Some(Cursor { since: 0, epoch: Some(1) }), 0)).starts_with("hold"));
    }

    #[test]
    fn channel_limit_counts_only_channels_with_messages() {
        let mut h = hub(3);
        // Waiting subscribers on many channels do not lock publishers out.
        for i in 0..50 {
            assert!(matches!(h.subscribe(&format!("w{i}"), None, 0), Poll::Hold { .. }));
        }
        for i in 0..10 {
            h.publish(&format!("c{i}"), b"x".to_vec(), 0).unwrap();
        }
        assert_eq!(h.publish("c10", b"x".to_vec(), 0).err(), Some(HubError::TooManyChannels));
        assert!(h.publish("c1", b"x".to_vec(), 0).is_ok());
    }

    #[test]
    fn global_bound_evicts_the_oldest_of_any_channel() {
        let mut l = limits(1000);
        l.max_channels = 1000;
        l.max_retained_bytes = 10 * (100 + MESSAGE_OVERHEAD);
        let mut h = Hub::with_epoch_seed(l, Some(2));
        for i in 0..25 {
            h.publish(&format!("c{}", i % 3), vec![b'x'; 100], 0).unwrap();
            let s = h.stats();
            assert!(s.retained_bytes <= l.max_retained_bytes);
            assert_eq!(s.retained_bytes, s.retained_messages * (100 + MESSAGE_OVERHEAD));
        }
        // 25 published, 10 kept: the 10 newest (seqs 6..=9 of c0 and c1 ... as published).
        assert_eq!(h.stats().retained_messages, 10);
        assert_eq!(h.stats().evicted_total, 15);
        // c0 got messages 0,3,...,24 (9 of them, seqs 1..=9); the newest 10 overall are
        // publishes 15..=24, of which c0 has 15, 18, 21, 24: seqs 6..=9, so a cursor at 0
        // missed 5.
        let got = body(h.subscribe("c0", at(0), 0));
        assert!(got.contains(r#""seq":6"#) && got.contains(r#""missed":5"#), "{got}");
        // Empty messages cost their overhead: 1,640 bytes hold 25 of them.
        let mut h = Hub::with_epoch_seed(l, Some(3));
        for _ in 0..100 {
            h.publish("e", Vec::new(), 0).unwrap();
        }
        assert_eq!(h.stats().retained_bytes, 25 * MESSAGE_OVERHEAD);
        // Messages evicted by their channel's own limit leave dead entries in the age queue;
        // they are swept before they outnumber the live ones.
        let mut l = limits(2);
        l.max_channels = 1000;
        let mut h = Hub::with_epoch_seed(l, Some(3));
        for i in 0..10_000 {
            h.publish(&format!("c{}", i % 7), b"x".to_vec(), 0).unwrap();
            assert!(h.age.len() <= 2 * h.stats().retained_messages + 64);
        }
    }

    #[test]
    fn ttl_evicts_and_drops_idle_channels() {
        let mut l = limits(100);
        l.message_ttl_ms = 1000;
        let mut h = Hub::with_epoch_seed(l, Some(4));
        h.publish("a", b"1".to_vec(), 0).unwrap();
        h.publish("b", b"2".to_vec(), 500).unwrap();
        assert_eq!(h.expire(999), Some(1000));
        assert_eq!(h.expire(1000), Some(1500));
        assert_eq!(h.stats().channels, 1);
        assert_eq!(h.expire(1500), None);
        let s = h.stats();
        assert_eq!((s.channels, s.retained_messages, s.retained_bytes), (0, 0, 0));
    }

    #[test]
    fn answers_stay_within_max_answer_bytes() {
        let mut l = limits(1000);
        l.max_batch = 100;
        l.max_answer_bytes = 4096;
        let mut h = Hub::with_epoch_seed(l, Some(5));
        // Control bytes: escaped they would be 6x; sent as base64 they are 4/3.
        for _ in 0..10 {
            h.publish("c", vec![1u8; 1000], 0).unwrap();
        }
        let Poll::Messages(a) = h.subscribe("c", at(0), 0) else { panic!() };
        assert!(a.body.len() <= 4096, "{}", a.body.len());
        // Each is 1,338 bytes of base64: two fit in 4,096, three would not.
        assert_eq!(a.count, 2);
        assert_eq!(a.next, 2);
        // One message larger than the budget still goes out, alone.
        h.publish("big", vec![b'y'; 5000], 0).unwrap();
        let Poll::Messages(a) = h.subscribe("big", at(0), 0) else { panic!() };
        assert_eq!(a.count, 1);
        assert!(a.body.len() <= max_encoded_len(5000) + ANSWER_FRAME);
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
}
