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
//! A subscriber with nothing to read becomes a waiter: its cursor and whatever the caller
//! parks with it (the payload `W`: for the service, the connection's responder and the
//! timer of its timeout). It sits in its channel's waiter list until a publish wakes it (in
//! the same loop turn) or the caller takes it out (timeout, client gone, shutdown). Nothing
//! polls: an idle hub sleeps in `epoll_wait`. Waiters live in a slab, and each channel lists
//! its waiters' keys in a `Vec` where each waiter knows its own position, so removing one is a
//! `swap_remove`.
//!
//! # Why the hub is a pure model
//! The hub does no I/O and writes no JSON: it knows neither sockets nor timers nor the wire
//! format. It says *what* to answer and [`crate::render`] writes the bytes:
//! - [`Hub::subscribe`] returns a [`Poll`]: a [`Batch`] to send now, or a [`Hold`] to park
//!   with [`Hub::add_waiter`] (one call that parks the payload and returns its key);
//! - [`Hub::publish`] returns a [`Published`]: for each distinct cursor among the woken
//!   waiters (usually one: they were all up to date), one [`Batch`] and the payloads that get
//!   it, so the caller renders each body once and shares its bytes with every waiter of the
//!   group.
//!
//! # Why a mirror mode
//! In cluster mode ([`crate::cluster`]) the log of a channel lives in Redis, which assigns
//! seqs and epochs; the hub of each node is a **mirror** of the channels it has subscribers
//! for ([`Hub::mirror`]). Nothing else changes for the transports: a subscribe on a channel
//! the mirror does not hold yet parks the subscriber on a channel that is *loading* (its
//! cursor kept as it was asked, [`Asked`]) and names the channel in [`Hub::take_wanted`];
//! the cluster reads it from Redis and hands it to [`Hub::load`], which answers every parked
//! subscriber as a subscribe would have (and again after a reconnect or a gap: the mirror is
//! replaced, and whoever is behind gets what is new). Each publish, wherever it was made,
//! comes back as a notification and goes through [`Hub::append`], which takes it only in
//! order (a gap or another epoch asks for a reload) and wakes the waiters as
//! [`Hub::publish`] does. The bounds are the same: the mirror is an ordinary hub.
//!
//! A [`Batch`] is a description: the channel, its epoch, the run of retained messages to send
//! (as a range of seqs, read back with [`Hub::messages`] before the hub changes again),
//! `next`, `missed`, `reset`. Which messages fit in an answer is the model's decision (at most
//! `max_batch` and `max_answer_bytes`), taken from each message's encoded length, which
//! [`crate::render::encoding`] computes once, at publish; the bytes themselves are render's.

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::render::{self, ANSWER_FRAME, PER_MESSAGE_KEYS};

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

struct Message {
    data: Box<[u8]>,
    /// Length of its JSON value (`"..."` escaped, or base64 with quotes): [`render::encoding`].
    encoded_len: u32,
    /// Sent as `data` (a JSON string) rather than `data_b64`.
    as_text: bool,
}

/// One message of a [`Batch`], as [`Hub::messages`] lends it to the renderer.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    pub seq: u64,
    pub data: &'a [u8],
    /// Sent as `data` (a JSON string: it is UTF-8 and its escapes cost at most 4/3 of its
    /// size) rather than `data_b64`.
    pub as_text: bool,
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
    /// In a mirror, 0 until loaded, and for a channel Redis has no life of yet.
    epoch: u32,
    state: ChannelState,
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

/// Whether a channel's messages can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    /// Its messages are here (always, outside a mirror).
    Ready,
    /// A mirror's channel whose log is being read from Redis: subscribers park with their
    /// cursor as asked, and [`Hub::load`] answers them.
    Loading,
}

/// How a subscriber gave its cursor, kept while its channel loads (a mirror only): its
/// `since` is the waiter's cursor, its epoch is here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// No cursor: only what is published from now on.
    Tail,
    /// `since` in this epoch (`None`: not said).
    Since(Option<u32>),
}

/// A subscriber waiting for a message, with the caller's payload.
struct Waiter<W> {
    chan: u32,
    /// Position in the channel's `waiters`.
    pos: u32,
    cursor: u64,
    wakes: Wakes,
    /// How the cursor was asked (it matters only until the channel is loaded).
    asked: Asked,
    payload: W,
}

/// Which waiters a new message wakes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woken {
    All,
    /// Held polls now; streams with [`Hub::wake_streams`].
    PollsOnly,
}

/// What waking does to one waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// It is up to date: it stays, at this cursor.
    Stay(u64),
    /// Send it what follows `cursor` (from the oldest retained if `reset`).
    Deliver { cursor: u64, reset: bool },
}

/// How often a parked subscriber is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakes {
    /// A held poll: the first publish answers it and it leaves the hub.
    Once,
    /// A stream (Server-Sent Events, a WebSocket subscription): every publish is delivered to
    /// it and it stays, its cursor moved to the new seq, until the caller removes it.
    Every,
}

/// Where a subscriber stands: `since` (the last seq it has seen) in the channel's life
/// `epoch` (`None`: it did not say, as clients before epochs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub since: u64,
    pub epoch: Option<u32>,
}

/// What a 200 answer of a channel says (messages, or an empty reset): a description the
/// renderer turns into bytes ([`crate::render::messages`]), with the messages read back by
/// [`Hub::messages`]. Valid until the hub changes again: render it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// The channel's key (for [`Hub::messages`]).
    pub chan: u32,
    pub epoch: u32,
    /// Seq of the first message sent (meaningless when `count` is 0).
    pub first: u64,
    /// Messages sent: seqs `first..first + count`, all retained.
    pub count: usize,
    /// The cursor the client continues from (its ETag is `"EPOCH:next"`).
    pub next: u64,
    /// Messages after the client's cursor that were evicted before it read them.
    pub missed: u64,
    /// The client's cursor was of another life of the channel: this starts over.
    pub reset: bool,
}

/// Nothing newer than `cursor` on channel `chan`: park the subscriber with
/// [`Hub::add_waiter`], or answer 304 at once (then [`Hub::release_channel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub chan: u32,
    /// Where the subscriber stands (the channel's last seq): its 304's ETag.
    pub cursor: u64,
    pub epoch: u32,
    /// How it asked (kept for a mirror's channel that is loading).
    pub asked: Asked,
    /// The channel is loading (a mirror's): see [`Hold::asked_while_loading`].
    pub loading: bool,
}

impl Hold {
    /// Whether the channel was loading (a mirror's): the hold is not an answer yet.
    pub fn asked_while_loading(&self) -> bool {
        self.loading
    }
}

/// What a subscribe asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Answer now with 200 and this batch.
    Messages(Batch),
    /// Nothing newer: hold (or 304 at once if the timeout is 0).
    Hold(Hold),
}

/// What a publish asks of the caller: its seq, and the waiters it woke, grouped by the
/// answer they get (one group per distinct cursor, in the order they waited).
#[derive(Debug)]
pub struct Published<W> {
    pub seq: u64,
    pub epoch: u32,
    pub deliveries: Vec<Delivery<W>>,
}

impl<W> Published<W> {
    /// Subscribers reached, held polls and streams (the `subscribers` of the publish answer).
    pub fn subscribers(&self) -> usize {
        self.deliveries.iter().map(|d| d.waiters.len() + d.streams.len()).sum()
    }
}

/// One answer of a publish and who gets it: the payloads of the held polls it ends, and the
/// keys of the streams it goes to (they stay parked: read their payloads with
/// [`Hub::waiter`]).
#[derive(Debug)]
pub struct Delivery<W> {
    pub batch: Batch,
    /// The cursor its waiters stood at.
    pub cursor: u64,
    pub waiters: Vec<W>,
    pub streams: Vec<usize>,
}

/// A waiter taken out of the hub (timed out, client gone, shutdown), with what its 304 says.
#[derive(Debug)]
pub struct Removed<W> {
    pub payload: W,
    /// Where it stood: its 304's ETag is `"EPOCH:cursor"`.
    pub cursor: u64,
    pub epoch: u32,
}

/// What notifications of a mirror ([`Hub::append`]) did.
#[derive(Debug)]
pub struct Appended<W> {
    /// Some were taken, in order: deliver them (one wake for all). `None`: nothing new (the
    /// channel is not held or still loading, or they were already here).
    pub published: Option<Published<W>>,
    /// One was out of order (a seq skipped, or another epoch): read the channel again.
    pub gap: bool,
}

/// What one notification did.
enum Taken {
    Pushed(u64),
    Duplicate,
    Gap,
    NotHeld,
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
    /// Held polls parked ([`Wakes::Once`]).
    pub waiting_polls: usize,
    /// Streams parked ([`Wakes::Every`]).
    pub streams: usize,
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

/// The hub, parking a `W` for each waiting subscriber (see the module docs).
pub struct Hub<W> {
    limits: HubLimits,
    /// A mirror of Redis (cluster mode) or the log itself.
    mirror: bool,
    /// Mirror: channels subscribed to that are not held yet, for the cluster to load.
    wanted: Vec<Box<str>>,
    names: HashMap<Box<str>, u32>,
    channels: Slab<Channel>,
    /// Channels holding at least one message (what `max_channels` bounds).
    channels_with_messages: usize,
    next_gen: u32,
    epochs: EpochSource,
    /// Every retained message, oldest first.
    age: VecDeque<AgeEntry>,
    waiters: Slab<Waiter<W>>,
    stats: HubStats,
}

/// Where a cursor stands against a channel in epoch `epoch` at `last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// Another life: start over from the oldest retained message.
    Reset,
    /// Messages after this seq are to be sent.
    After(u64),
    /// Nothing newer: wait.
    UpToDate,
}

fn resolve(cursor: Cursor, epoch: u32, last_seq: u64) -> Resolved {
    match cursor {
        // Another life of the channel: start over from its oldest message, even if nothing
        // is retained (then `next` tells the client where this life stands). A client at 0 of
        // a channel at 0 has nothing to start over from: it waits, as otherwise every poll of
        // an idle channel (dropped and created anew between two polls) would be a reset.
        Cursor { since, epoch: Some(e) } if e != epoch && !(since == 0 && last_seq == 0) => Resolved::Reset,
        // Without an epoch, a cursor ahead of the channel is the only sign of a new life.
        Cursor { since, epoch: None } if since > last_seq => Resolved::Reset,
        Cursor { since, .. } if since < last_seq && last_seq > 0 => Resolved::After(since),
        _ => Resolved::UpToDate,
    }
}

/// Whether `name` is a valid channel name: 1..=128 bytes of `[A-Za-z0-9._:-]`, not only dots.
pub fn valid_channel_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && !name.bytes().all(|b| b == b'.')
}

/// Epochs: a splitmix64 sequence from a seed of the OS's randomness (mixed with the clock and
/// the pid, should `/dev/urandom` be unreadable). Not for secrets: an epoch only has to differ
/// from the last life's, and a restarted process must not repeat its predecessor's.
pub(crate) struct EpochSource {
    state: u64,
}

impl EpochSource {
    fn new(seed: u64) -> EpochSource {
        EpochSource { state: seed }
    }

    pub(crate) fn from_os() -> EpochSource {
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

    /// The next epoch: never 0, which a mirror uses for "no life yet".
    pub(crate) fn next(&mut self) -> u32 {
        loop {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let e = (z ^ (z >> 31)) as u32;
            if e != 0 {
                return e;
            }
        }
    }
}

impl<W> Hub<W> {
    pub fn new(limits: HubLimits) -> Hub<W> {
        Hub::with_epoch_seed(limits, None)
    }

    /// A hub whose epochs come from `seed` (for tests and fuzzing: repeatable), or from the
    /// OS's randomness when `None`.
    pub fn with_epoch_seed(limits: HubLimits, seed: Option<u64>) -> Hub<W> {
        Hub {
            limits,
            mirror: false,
            wanted: Vec::new(),
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

    /// A mirror of the channels of a Redis (see the module docs).
    pub fn mirror(limits: HubLimits) -> Hub<W> {
        Hub { mirror: true, ..Hub::new(limits) }
    }

    pub fn is_mirror(&self) -> bool {
        self.mirror
    }

    pub fn limits(&self) -> &HubLimits {
        &self.limits
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            channels: self.channels.len(),
            waiting_polls: self.waiters.len() - self.stats.streams,
            ..self.stats
        }
    }

    /// The key of channel `name`, created (empty, with a new epoch) if it does not exist.
    fn channel_key(&mut self, name: &str) -> u32 {
        if let Some(&k) = self.names.get(name) {
            return k;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let name: Box<str> = name.into();
        let (epoch, state) = match self.mirror {
            false => (self.epochs.next(), ChannelState::Ready),
            true => {
                self.wanted.push(name.clone());
                (0, ChannelState::Loading)
            }
        };
        let key = self.channels.insert(Channel {
            name: name.clone(),
            epoch,
            state,
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
    fn drop_if_unused(&mut self, key: u32) {
        let c = &self.channels[key as usize];
        if c.messages.is_empty() && c.waiters.is_empty() {
            let c = self.channels.remove(key as usize);
            self.names.remove(&c.name);
        }
    }

    /// Appends `data` to channel `name` (creating it) and wakes every waiter on it. `now_ms`
    /// is the loop's clock, for the messages' age. Returns the new seq, the channel's epoch
    /// and the woken waiters' payloads, grouped by the answer each must be sent (render them
    /// before the hub changes again: see [`Batch`]).
    pub fn publish(&mut self, name: &str, data: Vec<u8>, now_ms: u64) -> Result<Published<W>, HubError> {
        self.publish_waking(name, data, now_ms, Woken::All)
    }

    /// Like [`Hub::publish`], but only the held polls are woken now: the streams of the
    /// channel wait for [`Hub::wake_streams`], so that several publishes in a row (one
    /// client's pipelined batch) reach each stream as one batch, one write, instead of one
    /// each. The caller must call it before the loop sleeps.
    pub fn publish_for_polls(
        &mut self,
        name: &str,
        data: Vec<u8>,
        now_ms: u64,
    ) -> Result<Published<W>, HubError> {
        self.publish_waking(name, data, now_ms, Woken::PollsOnly)
    }

    fn publish_waking(
        &mut self,
        name: &str,
        data: Vec<u8>,
        now_ms: u64,
        woken: Woken,
    ) -> Result<Published<W>, HubError> {
        debug_assert!(!self.mirror, "a mirror takes its messages from Redis (append)");
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
        if self.channels[key as usize].messages.is_empty()
            && self.channels_with_messages >= self.limits.max_channels
        {
            return Err(HubError::TooManyChannels);
        }
        let seq = self.push_message(key, data, now_ms);
        self.stats.published_total += 1;
        Ok(self.woken_by(key, seq, woken))
    }

    /// Delivers to the streams of channel `name` what was published since their cursor
    /// (after [`Hub::publish_for_polls`]); `None` if the channel is gone.
    pub fn wake_streams(&mut self, name: &str) -> Option<Published<W>> {
        let key = *self.names.get(name)?;
        let c = &self.channels[key as usize];
        let (last_seq, epoch) = (c.last_seq, c.epoch);
        let deliveries = self.wake(key, |w| match w.cursor < last_seq {
            true => Wake::Deliver { cursor: w.cursor, reset: false },
            false => Wake::Stay(w.cursor),
        });
        Some(Published { seq: last_seq, epoch, deliveries })
    }

    /// Appends a message to channel `key` as seq `last_seq + 1`, counting it. The caller
    /// made room for it.
    fn push_message(&mut self, key: u32, data: Vec<u8>, now_ms: u64) -> u64 {
        let cost = data.len() + MESSAGE_OVERHEAD;
        let c = &mut self.channels[key as usize];
        if c.messages.is_empty() {
            self.channels_with_messages += 1;
        }
        c.last_seq += 1;
        let seq = c.last_seq;
        let (encoded_len, as_text) = render::encoding(&data);
        c.bytes += cost;
        c.messages.push_back(Message { data: data.into_boxed_slice(), encoded_len, as_text });
        self.age.push_back(AgeEntry { chan: key, chan_gen: c.gen, seq, published_ms: now_ms });
        self.stats.retained_bytes += cost;
        self.stats.retained_messages += 1;
        seq
    }

    /// What a new message (seq `seq`, just pushed) does: every waiter of the channel gets it
    /// (the streams later, with `Woken::PollsOnly`).
    fn woken_by(&mut self, key: u32, seq: u64, woken: Woken) -> Published<W> {
        // The channel's own limits before the answers are described, so that every message
        // a batch names is still retained when the caller renders it. The waiters lose
        // nothing to it: each parked at the channel's last seq and every publish wakes them
        // all, so they only need the new message, which the limits always keep (its cost is
        // within `retain_bytes`, checked above).
        self.trim(key);
        let deliveries = self.wake(key, |w| match (woken, w.wakes) {
            (Woken::PollsOnly, Wakes::Every) => Wake::Stay(w.cursor),
            _ => Wake::Deliver { cursor: w.cursor, reset: false },
        });
        let epoch = self.channels[key as usize].epoch;
        self.sweep_age_queue();
        Published { seq, epoch, deliveries }
    }

    /// Wakes the waiters of channel `key` as `plan` says for each. Waiters on one channel
    /// almost always share a cursor (they were all up to date), so the answer is described
    /// once per distinct cursor: one group per run of waiters with the same cursor, in the
    /// order they waited. Held polls leave the hub; streams stay, in the order they were, at
    /// the last seq they were sent (another round follows for a stream still behind, e.g.
    /// after a reload: a batch holds at most `max_batch` messages).
    fn wake(&mut self, key: u32, plan: impl Fn(&Waiter<W>) -> Wake) -> Vec<Delivery<W>> {
        let waiters = std::mem::take(&mut self.channels[key as usize].waiters);
        let last_seq = self.channels[key as usize].last_seq;
        let mut staying = Vec::with_capacity(waiters.len());
        let mut deliveries: Vec<Delivery<W>> = Vec::new();
        let mut plans: Vec<Wake> = waiters.iter().map(|&k| plan(&self.waiters[k as usize])).collect();
        let mut round = waiters;
        loop {
            let mut behind = Vec::new();
            for (i, &wkey) in round.iter().enumerate() {
                let (cursor, reset) = match plans[i] {
                    Wake::Stay(cursor) => {
                        let w = &mut self.waiters[wkey as usize];
                        w.cursor = cursor;
                        w.pos = staying.len() as u32;
                        staying.push(wkey);
                        continue;
                    }
                    Wake::Deliver { cursor, reset } => (cursor, reset),
                };
                if !matches!(deliveries.last(), Some(d) if d.cursor == cursor && d.batch.reset == reset) {
                    // A new group: sized for its whole run of waiters (all still in the slab).
                    let run = 1 + plans[i + 1..]
                        .iter()
                        .take_while(|p| **p == Wake::Deliver { cursor, reset })
                        .count();
                    let batch = self.batch(key, cursor, reset);
                    deliveries.push(Delivery {
                        batch,
                        cursor,
                        waiters: Vec::with_capacity(run),
                        streams: Vec::new(),
                    });
                }
                let Some(d) = deliveries.last_mut() else { continue };
                match self.waiters[wkey as usize].wakes {
                    Wakes::Once => d.waiters.push(self.waiters.remove(wkey as usize).payload),
                    Wakes::Every => {
                        let w = &mut self.waiters[wkey as usize];
                        w.cursor = d.batch.next;
                        d.streams.push(wkey as usize);
                        if d.batch.next < last_seq {
                            behind.push(wkey);
                        } else {
                            w.pos = staying.len() as u32;
                            staying.push(wkey);
                        }
                    }
                }
            }
            if behind.is_empty() {
                break;
            }
            plans = behind
                .iter()
                .map(|&k| Wake::Deliver { cursor: self.waiters[k as usize].cursor, reset: false })
                .collect();
            round = behind;
        }
        self.channels[key as usize].waiters = staying;
        for d in &deliveries {
            self.stats.delivered_total += (d.batch.count * (d.waiters.len() + d.streams.len())) as u64;
        }
        deliveries
    }

    /// Mirror: channels subscribed to that the hub does not hold yet (each named once, when
    /// it starts loading), for the cluster to read from Redis.
    pub fn take_wanted(&mut self) -> Vec<Box<str>> {
        std::mem::take(&mut self.wanted)
    }

    /// Mirror: channel `name` as Redis has it (its epoch, 0 if Redis has no life of it; its
    /// last seq; its retained messages, oldest first). Replaces what the hub held, and
    /// answers every waiter as a subscribe would: a waiter parked while the channel loaded
    /// by its cursor as asked, the others by where they stood (another epoch: a reset).
    /// `None` if nobody here holds the channel any more.
    pub fn load(
        &mut self,
        name: &str,
        epoch: u32,
        last_seq: u64,
        messages: Vec<(u64, Vec<u8>)>,
        now_ms: u64,
    ) -> Option<Published<W>> {
        let key = *self.names.get(name)?;
        let (was_loading, old_epoch) = {
            let c = &self.channels[key as usize];
            (c.state == ChannelState::Loading, c.epoch)
        };
        // Out with the old life (a new generation: its age entries die with it).
        while !self.channels[key as usize].messages.is_empty() {
            let c = &mut self.channels[key as usize];
            Self::pop_front(c, &mut self.stats, &mut self.channels_with_messages);
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let c = &mut self.channels[key as usize];
        c.gen = self.next_gen;
        c.epoch = epoch;
        c.state = ChannelState::Ready;
        // Only a contiguous run that ends at `last_seq` (Redis trims from the front).
        let mut run: Vec<(u64, Vec<u8>)> = Vec::new();
        for (seq, data) in messages.into_iter().rev() {
            let want = last_seq - run.len() as u64;
            if seq != want || want == 0 {
                break;
            }
            run.push((seq, data));
        }
        run.reverse();
        c.last_seq = last_seq.saturating_sub(run.len() as u64);
        for (_, data) in run {
            let cost = data.len().saturating_add(MESSAGE_OVERHEAD);
            if cost > self.limits.retain_bytes {
                // Larger than this node keeps (another node's flags): counted as evicted.
                self.channels[key as usize].last_seq += 1;
                self.stats.evicted_total += 1;
                continue;
            }
            self.push_message(key, data, now_ms);
        }
        self.channels[key as usize].last_seq = last_seq;
        self.trim(key);
        while self.stats.retained_bytes > self.limits.max_retained_bytes && self.evict_oldest() {}
        if !self.channels.contains(key as usize) || self.channels[key as usize].gen != self.next_gen {
            return None;
        }
        let deliveries = self.wake(key, |w| {
            let asked = match (was_loading, w.asked) {
                (true, Asked::Tail) => return Wake::Stay(last_seq),
                (true, Asked::Since(e)) => Cursor { since: w.cursor, epoch: e },
                (false, _) => Cursor { since: w.cursor, epoch: Some(old_epoch) },
            };
            match resolve(asked, epoch, last_seq) {
                Resolved::Reset => Wake::Deliver { cursor: 0, reset: true },
                Resolved::After(since) => Wake::Deliver { cursor: since, reset: false },
                Resolved::UpToDate => Wake::Stay(last_seq),
            }
        });
        self.sweep_age_queue();
        self.drop_if_unused(key);
        Some(Published { seq: last_seq, epoch, deliveries })
    }

    /// Mirror: publishes of channel `name` as Redis announced them (`(epoch, seq, data)`,
    /// in the order they came: usually one, several when a burst arrived in one read). Each is
    /// taken only in order; the waiters are woken once, after the last one taken, so a burst
    /// answers a held poll with one batch rather than one message per re-poll.
    pub fn append(
        &mut self,
        name: &str,
        notes: impl IntoIterator<Item = (u32, u64, Vec<u8>)>,
        now_ms: u64,
    ) -> Appended<W> {
        let Some(&key) = self.names.get(name) else { return Appended { published: None, gap: false } };
        let mut last = None;
        let mut gap = false;
        for (epoch, seq, data) in notes {
            match self.push_notified(key, epoch, seq, data, now_ms) {
                Taken::Pushed(seq) => last = Some(seq),
                Taken::Duplicate => {}
                Taken::Gap => {
                    gap = true;
                    break;
                }
                Taken::NotHeld => break,
            }
        }
        let published = match last {
            Some(seq) if self.channels.contains(key as usize) => Some(self.woken_by(key, seq, Woken::All)),
            _ => None,
        };
        Appended { published, gap }
    }

    fn push_notified(&mut self, key: u32, epoch: u32, seq: u64, data: Vec<u8>, now_ms: u64) -> Taken {
        let Some(c) = self.channels.get_mut(key as usize) else { return Taken::NotHeld };
        if c.state == ChannelState::Loading {
            return Taken::NotHeld;
        }
        if c.epoch == 0 && c.last_seq == 0 && seq == 1 {
            c.epoch = epoch; // the channel's first life begins
        }
        if epoch != c.epoch || seq > c.last_seq + 1 {
            return Taken::Gap;
        }
        if seq <= c.last_seq {
            return Taken::Duplicate;
        }
        let cost = data.len().saturating_add(MESSAGE_OVERHEAD);
        if cost > self.limits.retain_bytes {
            // Larger than this node keeps (another node's flags): read again, it is skipped.
            self.stats.evicted_total += 1;
            return Taken::Gap;
        }
        self.expire(now_ms);
        while self.stats.retained_bytes + cost > self.limits.max_retained_bytes && self.evict_oldest() {}
        if !self.channels.contains(key as usize) {
            return Taken::NotHeld;
        }
        self.stats.published_total += 1;
        Taken::Pushed(self.push_message(key, data, now_ms))
    }

    /// Mirror: forgets channel `name` if nobody waits on it (the node stops following it in
    /// Redis, so what it holds would go stale). Returns whether it is gone.
    pub fn forget(&mut self, name: &str) -> bool {
        let Some(&key) = self.names.get(name) else { return true };
        if !self.channels[key as usize].waiters.is_empty() {
            return false;
        }
        while !self.channels[key as usize].messages.is_empty() {
            let c = &mut self.channels[key as usize];
            Self::pop_front(c, &mut self.stats, &mut self.channels_with_messages);
        }
        self.drop_if_unused(key);
        true
    }

    /// Subscribers parked on channel `name` (held polls and streams).
    pub fn waiting_on(&self, name: &str) -> usize {
        self.names.get(name).map_or(0, |&k| self.channels[k as usize].waiters.len())
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
            self.drop_if_unused(e.chan);
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
        // A mirror answers `00000000` for a channel Redis has no life of yet: a cursor in it
        // is one from before the first life, as if it had not said.
        let cursor = match self.mirror {
            true => cursor.map(|c| Cursor { epoch: c.epoch.filter(|&e| e != 0), ..c }),
            false => cursor,
        };
        let key = self.channel_key(name);
        let c = &self.channels[key as usize];
        let (epoch, last_seq) = (c.epoch, c.last_seq);
        let asked = cursor.map_or(Asked::Tail, |c| Asked::Since(c.epoch));
        if c.state == ChannelState::Loading {
            // Parked as asked; the load answers it (see `Hub::load`).
            let (since, epoch) = cursor.map_or((0, 0), |c| (c.since, c.epoch.unwrap_or(0)));
            return Poll::Hold(Hold { chan: key, cursor: since, epoch, asked, loading: true });
        }
        let hold = Hold { chan: key, cursor: last_seq, epoch, asked, loading: false };
        let poll = match cursor.map(|c| resolve(c, epoch, last_seq)) {
            None | Some(Resolved::UpToDate) => Poll::Hold(hold),
            Some(Resolved::Reset) => Poll::Messages(self.batch(key, 0, true)),
            Some(Resolved::After(since)) => Poll::Messages(self.batch(key, since, false)),
        };
        if let Poll::Messages(b) = &poll {
            self.stats.delivered_total += b.count as u64;
            // Only a channel created by this subscribe goes (an empty reset, `count` 0): the
            // batch names no message of it, and the caller has the channel's name.
            self.drop_if_unused(key);
        }
        poll
    }

    /// The batch of messages after `cursor`: at most `max_batch` of them and
    /// `max_answer_bytes` of JSON, but always at least one if there is one.
    fn batch(&self, key: u32, cursor: u64, reset: bool) -> Batch {
        let c = &self.channels[key as usize];
        let first = c.first_seq();
        let missed = if reset { 0 } else { first.saturating_sub(cursor + 1) };
        let start = (cursor + 1).max(first);
        let skip = (start - first) as usize;
        // The frame's own bytes stay within ANSWER_FRAME, so messages may use the rest.
        let budget = self.limits.max_answer_bytes.saturating_sub(ANSWER_FRAME);
        let mut used = 0;
        let mut count = 0;
        for m in c.messages.iter().skip(skip).take(self.limits.max_batch) {
            let size = m.encoded_len as usize + PER_MESSAGE_KEYS;
            if count > 0 && used + size > budget {
                break;
            }
            used += size;
            count += 1;
        }
        let next = if count > 0 { start + count as u64 - 1 } else { c.last_seq };
        Batch { chan: key, epoch: c.epoch, first: start, count, next, missed, reset }
    }

    /// The messages of `batch`, oldest first, for the renderer. `batch` must come from this
    /// hub, unchanged since (see [`Batch`]); a batch of no message names no channel.
    pub fn messages(&self, batch: &Batch) -> impl Iterator<Item = MessageRef<'_>> {
        let run = match self.channels.get(batch.chan as usize) {
            Some(c) if batch.count > 0 => {
                let skip = batch.first.checked_sub(c.first_seq()).map(|s| s as usize);
                match skip {
                    Some(skip) if skip.saturating_add(batch.count) <= c.messages.len() => {
                        c.messages.range(skip..skip + batch.count)
                    }
                    _ => {
                        debug_assert!(false, "a batch rendered after its hub changed");
                        Default::default()
                    }
                }
            }
            _ => Default::default(),
        };
        run.zip(batch.first..).map(|(m, seq)| MessageRef { seq, data: &m.data, as_text: m.as_text })
    }

    /// Parks a held poll where `hold` (from [`Poll::Hold`]) says, with the payload `park`
    /// makes from the waiter's key (to name its timer and connection note), and returns
    /// the key. The first publish on its channel ends it.
    pub fn add_waiter(&mut self, hold: Hold, park: impl FnOnce(usize) -> W) -> usize {
        self.park(hold, Wakes::Once, park)
    }

    /// Parks a stream where `hold` says (a subscriber that has caught up: see
    /// [`Hub::subscribe`]): every later publish on the channel is delivered to it, in order,
    /// until [`Hub::remove_waiter`]. Returns its key.
    pub fn add_stream(&mut self, hold: Hold, park: impl FnOnce(usize) -> W) -> usize {
        self.stats.streams += 1;
        self.park(hold, Wakes::Every, park)
    }

    fn park(&mut self, hold: Hold, wakes: Wakes, make: impl FnOnce(usize) -> W) -> usize {
        let Hold { chan, cursor, asked, .. } = hold;
        let entry = self.waiters.vacant_entry();
        let key = entry.key();
        let payload = make(key);
        let c = &mut self.channels[chan as usize];
        entry.insert(Waiter { chan, pos: c.waiters.len() as u32, cursor, wakes, asked, payload });
        c.waiters.push(key as u32);
        key
    }

    /// The payload of a parked stream, to write a delivery to it.
    pub fn waiter_mut(&mut self, key: usize) -> Option<&mut W> {
        self.waiters.get_mut(key).map(|w| &mut w.payload)
    }

    /// The payload of waiter `key`, if it still waits.
    pub fn waiter(&self, key: usize) -> Option<&W> {
        self.waiters.get(key).map(|w| &w.payload)
    }

    /// Removes a waiter (timed out, client gone, shutdown) and returns its payload with
    /// where it stood (for the 304).
    pub fn remove_waiter(&mut self, key: usize) -> Option<Removed<W>> {
        let w = self.waiters.try_remove(key)?;
        if w.wakes == Wakes::Every {
            self.stats.streams -= 1;
        }
        let c = &mut self.channels[w.chan as usize];
        // Still loading: where it stands is what it asked.
        let epoch = match (c.state, w.asked) {
            (ChannelState::Loading, Asked::Since(e)) => e.unwrap_or(0),
            _ => c.epoch,
        };
        c.waiters.swap_remove(w.pos as usize);
        if let Some(&moved) = c.waiters.get(w.pos as usize) {
            self.waiters[moved as usize].pos = w.pos;
        }
        self.drop_if_unused(w.chan);
        Some(Removed { payload: w.payload, cursor: w.cursor, epoch })
    }

    /// Whether waiter `key` waits for its channel to load (a mirror's).
    pub fn is_loading(&self, key: usize) -> bool {
        self.waiters.get(key).is_some_and(|w| self.channels[w.chan as usize].state == ChannelState::Loading)
    }

    /// Keys of every waiter (for shutdown).
    pub fn waiter_keys(&self) -> Vec<usize> {
        self.waiters.iter().map(|(k, _)| k).collect()
    }

    /// Drops a channel created by a subscribe that ended without waiting (timeout 0).
    pub fn release_channel(&mut self, chan: u32) {
        if self.channels.contains(chan as usize) {
            self.drop_if_unused(chan);
        }
    }
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

    /// A hub that parks nothing but the waiters' keys.
    type TestHub = Hub<usize>;

    fn hub(retain: usize) -> TestHub {
        Hub::with_epoch_seed(limits(retain), Some(1))
    }

    fn at(since: u64) -> Option<Cursor> {
        Some(Cursor { since, epoch: None })
    }

    /// What a subscribe to `name` answers, rendered.
    fn sub(h: &mut TestHub, name: &str, cursor: Option<Cursor>) -> String {
        match h.subscribe(name, cursor, 0) {
            Poll::Messages(b) => {
                String::from_utf8(render::messages(name, &b, h.messages(&b)).body.to_vec()).unwrap()
            }
            Poll::Hold(Hold { cursor, .. }) => format!("hold {cursor}"),
        }
    }

    fn epoch_of(h: &mut TestHub, name: &str) -> u32 {
        match h.subscribe(name, None, 0) {
            Poll::Hold(Hold { epoch, chan, .. }) => {
                h.release_channel(chan);
                epoch
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
        let e = render::format_epoch(epoch_of(&mut h, "c"));
        // Retained: 3, 4, 5. Cursor 0 missed 1 and 2; batch of 2.
        assert_eq!(
            sub(&mut h, "c", at(0)),
            format!(
                r#"{{"channel":"c","epoch":"{e}","messages":[{{"seq":3,"data":"m2"}},{{"seq":4,"data":"m3"}}],"next":4,"missed":2}}"#
            )
        );
        assert_eq!(sub(&mut h, "c", at(5)), "hold 5");
        assert_eq!(sub(&mut h, "c", None), "hold 5");
        assert_eq!(
            sub(&mut h, "c", at(9)),
            format!(
                r#"{{"channel":"c","epoch":"{e}","messages":[{{"seq":3,"data":"m2"}},{{"seq":4,"data":"m3"}}],"next":4,"missed":0,"reset":true}}"#
            )
        );
        h.publish("b", vec![0xff, 0], 0).unwrap();
        let eb = render::format_epoch(epoch_of(&mut h, "b"));
        assert_eq!(
            sub(&mut h, "b", at(0)),
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
        let epoch = epoch_of(&mut h, "c");
        let e = render::format_epoch(epoch);
        let old = Some(Cursor { since: 2, epoch: Some(0xdead_beef) });
        let got = sub(&mut h, "c", old);
        assert!(got.contains(r#""seq":1,"data":"b1""#) && got.contains(r#""reset":true"#), "{got}");
        assert!(got.contains(r#""missed":0"#) && got.contains(&format!(r#""epoch":"{e}""#)), "{got}");
        // The same epoch: the normal rules.
        let same = Some(Cursor { since: 2, epoch: Some(epoch) });
        assert!(sub(&mut h, "c", same).contains(r#""messages":[{"seq":3,"data":"b3"}]"#));
        // Nothing retained in this life yet: an empty reset that says where it stands...
        let got = sub(&mut h, "new", Some(Cursor { since: 7, epoch: Some(1) }));
        assert!(got.contains(r#""messages":[],"next":0,"missed":0,"reset":true"#), "{got}");
        // ... but a client at 0 of a channel at 0 just waits (no reset loop on idle channels).
        assert!(sub(&mut h, "new", Some(Cursor { since: 0, epoch: Some(1) })).starts_with("hold"));
    }

    #[test]
    fn streams_get_every_publish_and_stay() {
        let mut h = hub(10);
        let Poll::Hold(hold) = h.subscribe("s", None, 0) else { panic!() };
        let stream = h.add_stream(hold, |key| key + 100);
        let Poll::Hold(hold) = h.subscribe("s", None, 0) else { panic!() };
        let poll = h.add_waiter(hold, |key| key + 200);
        assert_eq!((h.stats().streams, h.stats().waiting_polls), (1, 1));
        // The first publish reaches both, in one group (same cursor): the poll leaves.
        let p = h.publish("s", b"one".to_vec(), 0).unwrap();
        assert_eq!((p.deliveries.len(), p.subscribers()), (1, 2));
        assert_eq!(
            (p.deliveries[0].waiters.clone(), p.deliveries[0].streams.clone()),
            (vec![poll + 200], vec![stream])
        );
        assert_eq!((h.stats().streams, h.stats().waiting_polls), (1, 0));
        // The stream stays, at the new seq: the next publish is the next message for it.
        let p = h.publish("s", b"two".to_vec(), 0).unwrap();
        let d = &p.deliveries[0];
        assert_eq!((d.cursor, d.batch.first, d.batch.count, d.streams.clone()), (1, 2, 1, vec![stream]));
        assert_eq!(h.waiter_mut(stream).copied(), Some(stream + 100));
        assert_eq!(h.stats().delivered_total, 3);
        // Removed (its client left): the channel holds its messages, nobody waits.
        let gone = h.remove_waiter(stream).unwrap();
        assert_eq!((gone.cursor, h.stats().streams, h.stats().channels), (2, 0, 1));
        assert!(h.publish("s", b"three".to_vec(), 0).unwrap().deliveries.is_empty());
    }

    #[test]
    fn a_publish_describes_one_answer_per_cursor_for_its_waiters() {
        let mut h = hub(3);
        let mut keys = Vec::new();
        for i in 0..5 {
            let Poll::Hold(hold) = h.subscribe("c", None, 0) else { panic!() };
            assert_eq!(hold.cursor, 0);
            // The payload is made from the key: one call parks and names it.
            keys.push(h.add_waiter(hold, |key| key * 10 + i));
        }
        assert_eq!(h.waiter(keys[2]), Some(&(keys[2] * 10 + 2)));
        // One leaves (its client closed): it says where it stood, for the 304.
        let gone = h.remove_waiter(keys[1]).unwrap();
        assert_eq!((gone.payload, gone.cursor), (keys[1] * 10 + 1, 0));
        assert!(h.remove_waiter(keys[1]).is_none());
        assert_eq!(h.stats().waiting_polls, 4);

        let p = h.publish("c", b"hi".to_vec(), 0).unwrap();
        assert_eq!((p.seq, p.subscribers()), (1, 4));
        assert_eq!(p.deliveries.len(), 1, "one answer for one cursor");
        let d = &p.deliveries[0];
        let mut got = d.waiters.clone();
        got.sort_unstable();
        assert_eq!(got, [keys[0] * 10, keys[2] * 10 + 2, keys[3] * 10 + 3, keys[4] * 10 + 4]);
        let b = d.batch;
        assert_eq!((b.first, b.count, b.next, b.missed, b.reset, b.epoch), (1, 1, 1, 0, false, p.epoch));
        let seqs: Vec<(u64, &[u8])> = h.messages(&b).map(|m| (m.seq, m.data)).collect();
        assert_eq!(seqs, [(1, &b"hi"[..])]);
        let e = render::format_epoch(p.epoch);
        assert_eq!(
            String::from_utf8(render::messages("c", &b, h.messages(&b)).body.to_vec()).unwrap(),
            format!(
                r#"{{"channel":"c","epoch":"{e}","messages":[{{"seq":1,"data":"hi"}}],"next":1,"missed":0}}"#
            )
        );
        let s = h.stats();
        assert_eq!((s.waiting_polls, s.delivered_total), (0, 4));
        // The channel's own limit goes before the answers are described: a batch only names
        // retained messages, and the new one is always among them.
        let mut h = hub(1);
        h.publish("c", b"old".to_vec(), 0).unwrap();
        let Poll::Hold(hold) = h.subscribe("c", None, 0) else { panic!() };
        h.add_waiter(hold, |key| key);
        let p = h.publish("c", b"new".to_vec(), 0).unwrap();
        let b = p.deliveries[0].batch;
        assert_eq!((b.first, b.count, b.next, b.missed), (2, 1, 2, 0));
        assert_eq!(h.messages(&b).map(|m| m.data).collect::<Vec<_>>(), [&b"new"[..]]);
    }

    #[test]
    fn channel_limit_counts_only_channels_with_messages() {
        let mut h = hub(3);
        // Waiting subscribers on many channels do not lock publishers out.
        for i in 0..50 {
            assert!(matches!(h.subscribe(&format!("w{i}"), None, 0), Poll::Hold(_)));
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
        let mut h = TestHub::with_epoch_seed(l, Some(2));
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
        let got = sub(&mut h, "c0", at(0));
        assert!(got.contains(r#""seq":6"#) && got.contains(r#""missed":5"#), "{got}");
        // Empty messages cost their overhead: 1,640 bytes hold 25 of them.
        let mut h = TestHub::with_epoch_seed(l, Some(3));
        for _ in 0..100 {
            h.publish("e", Vec::new(), 0).unwrap();
        }
        assert_eq!(h.stats().retained_bytes, 25 * MESSAGE_OVERHEAD);
        // Messages evicted by their channel's own limit leave dead entries in the age queue;
        // they are swept before they outnumber the live ones.
        let mut l = limits(2);
        l.max_channels = 1000;
        let mut h = TestHub::with_epoch_seed(l, Some(3));
        for i in 0..10_000 {
            h.publish(&format!("c{}", i % 7), b"x".to_vec(), 0).unwrap();
            assert!(h.age.len() <= 2 * h.stats().retained_messages + 64);
        }
    }

    #[test]
    fn ttl_evicts_and_drops_idle_channels() {
        let mut l = limits(100);
        l.message_ttl_ms = 1000;
        let mut h = TestHub::with_epoch_seed(l, Some(4));
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
        let mut h = TestHub::with_epoch_seed(l, Some(5));
        // Control bytes: escaped they would be 6x; sent as base64 they are 4/3.
        for _ in 0..10 {
            h.publish("c", vec![1u8; 1000], 0).unwrap();
        }
        let Poll::Messages(b) = h.subscribe("c", at(0), 0) else { panic!() };
        let a = render::messages("c", &b, h.messages(&b));
        assert!(a.body.len() <= 4096, "{}", a.body.len());
        // Each is 1,338 bytes of base64: two fit in 4,096, three would not.
        assert_eq!(b.count, 2);
        assert_eq!(b.next, 2);
        // One message larger than the budget still goes out, alone.
        h.publish("big", vec![b'y'; 5000], 0).unwrap();
        let Poll::Messages(b) = h.subscribe("big", at(0), 0) else { panic!() };
        let a = render::messages("big", &b, h.messages(&b));
        assert_eq!(b.count, 1);
        assert!(a.body.len() <= render::max_encoded_len(5000) + ANSWER_FRAME);
    }

    /// The seqs each delivery sends and whether it is a reset, with its held polls' and
    /// streams' payloads.
    fn shape(h: &TestHub, p: &Published<usize>) -> Vec<(Vec<u64>, bool, Vec<usize>, usize)> {
        p.deliveries
            .iter()
            .map(|d| {
                let seqs = h.messages(&d.batch).map(|m| m.seq).collect();
                (seqs, d.batch.reset, d.waiters.clone(), d.streams.len())
            })
            .collect()
    }

    fn park(h: &mut TestHub, name: &str, cursor: Option<Cursor>, id: usize) {
        match h.subscribe(name, cursor, 0) {
            Poll::Hold(hold) => {
                h.add_waiter(hold, |_| id);
            }
            Poll::Messages(_) => panic!("{name}: answered at once"),
        }
    }

    fn msgs(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        seqs.map(|s| (s, format!("m{s}").into_bytes())).collect()
    }

    #[test]
    fn a_mirror_parks_subscribers_until_the_channel_is_loaded() {
        let mut h: TestHub = Hub::mirror(limits(10));
        let e = 0x1234_5678;
        park(&mut h, "c", Some(Cursor { since: 2, epoch: Some(e) }), 1);
        park(&mut h, "c", None, 2);
        park(&mut h, "c", Some(Cursor { since: 1, epoch: Some(7) }), 3);
        assert_eq!(h.take_wanted(), vec![Box::from("c")]);
        assert!(h.take_wanted().is_empty(), "named once");
        let p = h.load("c", e, 4, msgs(1..=4), 0).unwrap();
        // max_batch 2: the first waiter gets 3, 4; the one of another epoch starts over.
        assert_eq!(shape(&h, &p), vec![(vec![3, 4], false, vec![1], 0), (vec![1, 2], true, vec![3], 0)]);
        assert_eq!(h.waiting_on("c"), 1, "the tail waiter stays");
        // Now held: answered locally, no load.
        assert!(sub(&mut h, "c", Some(Cursor { since: 3, epoch: Some(e) })).contains("\"seq\":4"));
        assert!(h.take_wanted().is_empty());
    }

    #[test]
    fn a_mirror_appends_in_order_and_asks_to_reload_on_a_gap() {
        let mut h: TestHub = Hub::mirror(limits(10));
        park(&mut h, "c", None, 1);
        let one = |epoch, seq, data: &[u8]| [(epoch, seq, data.to_vec())];
        let a = h.append("c", one(9, 1, b"x"), 0);
        assert!(a.published.is_none() && !a.gap, "still loading: not taken");
        let p = h.load("c", 0, 0, Vec::new(), 0).unwrap();
        assert!(p.deliveries.is_empty());
        // No life yet: the first notification starts it.
        let p = h.append("c", one(9, 1, b"a"), 0).published.unwrap();
        assert_eq!(shape(&h, &p), vec![(vec![1], false, vec![1], 0)]);
        let dup = h.append("c", one(9, 1, b"a"), 0);
        assert!(dup.published.is_none() && !dup.gap);
        assert!(h.append("c", one(9, 3, b"c"), 0).gap);
        assert!(h.append("c", one(8, 2, b"b"), 0).gap);
        // A burst in one read: one wake, one batch for the held poll.
        park(&mut h, "c", Some(Cursor { since: 1, epoch: Some(9) }), 2);
        let burst =
            vec![(9, 1, b"a".to_vec()), (9, 2, b"b".to_vec()), (9, 3, b"c".to_vec()), (9, 5, b"e".to_vec())];
        let a = h.append("c", burst, 0);
        assert!(a.gap, "5 skips 4");
        assert_eq!(shape(&h, &a.published.unwrap()), vec![(vec![2, 3], false, vec![2], 0)]);
    }

    #[test]
    fn a_reload_in_another_epoch_resets_every_waiter_once() {
        let mut h: TestHub = Hub::mirror(limits(10));
        park(&mut h, "c", Some(Cursor { since: 0, epoch: None }), 1);
        h.load("c", 5, 3, msgs(1..=3), 0);
        let hold = match h.subscribe("c", Some(Cursor { since: 3, epoch: Some(5) }), 0) {
            Poll::Hold(hold) => hold,
            Poll::Messages(_) => panic!(),
        };
        h.add_stream(hold, |_| 2);
        park(&mut h, "c", Some(Cursor { since: 3, epoch: Some(5) }), 3);
        // Same life, nothing new: nobody is woken.
        assert!(h.load("c", 5, 3, msgs(1..=3), 0).unwrap().deliveries.is_empty());
        // Redis lost it: a new life with one message.
        let p = h.load("c", 6, 1, msgs(1..=1), 0).unwrap();
        assert_eq!(shape(&h, &p), vec![(vec![1], true, vec![3], 1)]);
        assert_eq!(h.waiting_on("c"), 1, "the stream stays, at the new life's seq");
        let p = h.append("c", [(6, 2, b"n".to_vec())], 0).published.unwrap();
        assert_eq!(shape(&h, &p), vec![(vec![2], false, vec![], 1)]);
    }

    #[test]
    fn a_forgotten_mirror_channel_loads_again() {
        let mut h: TestHub = Hub::mirror(limits(10));
        park(&mut h, "c", None, 1);
        h.take_wanted();
        h.load("c", 5, 2, msgs(1..=2), 0);
        assert!(!h.forget("c"), "a waiter holds it");
        let key = h.waiter_keys()[0];
        h.remove_waiter(key);
        assert!(h.forget("c"));
        assert_eq!(h.stats().retained_messages, 0);
        assert_eq!(sub(&mut h, "c", Some(Cursor { since: 1, epoch: Some(5) })), "hold 1");
        assert_eq!(h.take_wanted(), vec![Box::from("c")]);
    }

    #[test]
    fn publishes_for_polls_leave_the_streams_to_one_wake() {
        let mut h = hub(10);
        let hold = match h.subscribe("c", None, 0) {
            Poll::Hold(hold) => hold,
            Poll::Messages(_) => panic!(),
        };
        h.add_stream(hold, |_| 1);
        park(&mut h, "c", None, 2);
        // The held poll is answered by the first publish; the stream waits.
        let p = h.publish_for_polls("c", b"a".to_vec(), 0).unwrap();
        assert_eq!(shape(&h, &p), vec![(vec![1], false, vec![2], 0)]);
        for m in [b"b", b"c"] {
            assert!(h.publish_for_polls("c", m.to_vec(), 0).unwrap().deliveries.is_empty());
        }
        // One wake: the stream gets the three in batches of max_batch (2), in order.
        let p = h.wake_streams("c").unwrap();
        assert_eq!(shape(&h, &p), vec![(vec![1, 2], false, vec![], 1), (vec![3], false, vec![], 1)]);
        assert!(h.wake_streams("c").unwrap().deliveries.is_empty(), "up to date: nothing more");
        assert_eq!(h.waiting_on("c"), 1);
    }
}
