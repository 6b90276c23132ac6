//! The long-poll hub: channels are named logs of messages, subscribers read them with a cursor.
//!
//! # Why cursors
//! The old Python app kept one queue per client and *popped* a message before writing it: a
//! client that vanished mid-write took the message with it. Here a channel keeps its last
//! messages (bounded by count and bytes) and every subscriber says which sequence number it
//! has seen. Reading never removes anything, so a client that reconnects with its cursor gets
//! every message still retained, and `missed` tells it honestly how many it lost to eviction.
//!
//! # Why waiting costs nothing
//! A subscriber with nothing to read becomes a [`Waiter`]: its responder, its cursor and a
//! timer for its timeout. It sits in its channel's waiter list until a publish wakes it (in
//! the same loop turn) or the timer fires. Nothing polls: an idle hub sleeps in `epoll_wait`.
//! Waiters live in a slab, and each channel lists its waiters' keys in a `Vec` where each
//! waiter knows its own position, so removing one (timeout, client gone) is a `swap_remove`.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use http::Responder;
use reactor::TimerId;
use slab::Slab;

use crate::json;

/// Limits of the hub (all set by flags).
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Messages a channel keeps.
    pub retain: usize,
    /// Bytes of message bodies a channel keeps.
    pub retain_bytes: usize,
    pub max_channels: usize,
    /// Messages per answer.
    pub max_batch: usize,
}

impl Default for HubLimits {
    /// The binary's defaults (`tidings --help`).
    fn default() -> Self {
        HubLimits { retain: 1000, retain_bytes: 1024 * 1024, max_channels: 100_000, max_batch: 100 }
    }
}

struct Message {
    seq: u64,
    data: Vec<u8>,
    utf8: bool,
}

struct Channel {
    name: Box<str>,
    messages: VecDeque<Message>,
    /// Seq of the last message ever published (0 = none).
    last_seq: u64,
    bytes: usize,
    /// Keys of the waiters parked on this channel.
    waiters: Vec<u32>,
}

impl Channel {
    /// Seq of the oldest retained message (last_seq + 1 when none is retained).
    fn first_seq(&self) -> u64 {
        self.messages.front().map_or(self.last_seq + 1, |m| m.seq)
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

/// What a subscribe asks of the HTTP layer.
pub enum Poll {
    /// Answer now with 200 and this JSON body.
    Messages { body: Vec<u8>, next: u64, count: usize },
    /// Nothing newer than `cursor`: hold (or 304 at once if the timeout is 0).
    Hold { chan: u32, cursor: u64 },
}

/// A waiter woken by a publish, to be answered by the caller.
pub struct Woken {
    pub responder: Responder,
    pub timer: Option<TimerId>,
    pub body: Rc<[u8]>,
    pub next: u64,
    pub count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubError {
    /// Creating the channel would exceed `max_channels`.
    TooManyChannels,
}

/// Counters for /stats.
#[derive(Debug, Default, Clone, Copy)]
pub struct HubStats {
    pub channels: usize,
    pub waiting_polls: usize,
    pub retained_messages: usize,
    pub retained_bytes: usize,
    pub published_total: u64,
    /// Messages delivered in 200 answers to subscribers.
    pub delivered_total: u64,
}

pub struct Hub {
    limits: HubLimits,
    names: HashMap<Box<str>, u32>,
    channels: Slab<Channel>,
    waiters: Slab<Waiter>,
    stats: HubStats,
}

/// Whether `name` is a valid channel name: 1..=128 bytes of `[A-Za-z0-9._:-]`, not only dots.
pub fn valid_channel_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && !name.bytes().all(|b| b == b'.')
}

impl Hub {
    pub fn new(limits: HubLimits) -> Hub {
        Hub {
            limits,
            names: HashMap::new(),
            channels: Slab::new(),
            waiters: Slab::new(),
            stats: HubStats::default(),
        }
    }

    pub fn stats(&self) -> HubStats {
        HubStats { channels: self.channels.len(), waiting_polls: self.waiters.len(), ..self.stats }
    }

    fn channel_key(&mut self, name: &str) -> Result<u32, HubError> {
        if let Some(&k) = self.names.get(name) {
            return Ok(k);
        }
        if self.channels.len() >= self.limits.max_channels {
            return Err(HubError::TooManyChannels);
        }
        let name: Box<str> = name.into();
        let key = self.channels.insert(Channel {
            name: name.clone(),
            messages: VecDeque::new(),
            last_seq: 0,
            bytes: 0,
            waiters: Vec::new(),
        }) as u32;
        self.names.insert(name, key);
        Ok(key)
    }

    /// Drops a channel that was never published to and has nobody waiting (one a subscribe
    /// created). A channel that has had messages is kept even when eviction emptied it (a
    /// message larger than `retain_bytes`), so its seq keeps counting from where it was.
    fn maybe_drop(&mut self, key: u32) {
        let c = &self.channels[key as usize];
        if c.last_seq == 0 && c.messages.is_empty() && c.waiters.is_empty() {
            let c = self.channels.remove(key as usize);
            self.names.remove(&c.name);
        }
    }

    /// Appends `data` to channel `name` (creating it) and wakes every waiter on it.
    /// Returns the new seq and the woken waiters, each with the answer it must be sent.
    pub fn publish(&mut self, name: &str, data: Vec<u8>) -> Result<(u64, Vec<Woken>), HubError> {
        let key = self.channel_key(name)?;
        let c = &mut self.channels[key as usize];
        c.last_seq += 1;
        let seq = c.last_seq;
        let utf8 = std::str::from_utf8(&data).is_ok();
        c.bytes += data.len();
        self.stats.retained_bytes += data.len();
        self.stats.retained_messages += 1;
        self.stats.published_total += 1;
        c.messages.push_back(Message { seq, data, utf8 });

        // Wake everyone. Waiters on one channel almost always share a cursor (they were all
        // up to date), so the answer is built once per distinct cursor and shared.
        let mut woken = Vec::with_capacity(c.waiters.len());
        let mut cache: Option<(u64, Rc<[u8]>, u64, usize)> = None;
        for wkey in std::mem::take(&mut c.waiters) {
            let w = self.waiters.remove(wkey as usize);
            let (body, next, count) = match &cache {
                Some((cursor, body, next, count)) if *cursor == w.cursor => (body.clone(), *next, *count),
                _ => {
                    let (body, next, count) = self.build_answer(key, w.cursor, false);
                    let body: Rc<[u8]> = body.into();
                    cache = Some((w.cursor, body.clone(), next, count));
                    (body, next, count)
                }
            };
            self.stats.delivered_total += count as u64;
            woken.push(Woken { responder: w.responder, timer: w.timer, body, next, count });
        }
        self.evict(key);
        Ok((seq, woken))
    }

    fn evict(&mut self, key: u32) {
        let c = &mut self.channels[key as usize];
        while c.messages.len() > self.limits.retain
            || (c.bytes > self.limits.retain_bytes && !c.messages.is_empty())
        {
            if let Some(m) = c.messages.pop_front() {
                c.bytes -= m.data.len();
                self.stats.retained_bytes -= m.data.len();
                self.stats.retained_messages -= 1;
            }
        }
        self.maybe_drop(key);
    }

    /// A subscriber on `name` has seen everything up to `cursor` (None = nothing yet: only
    /// messages published from now on). Returns what to answer.
    pub fn subscribe(&mut self, name: &str, cursor: Option<u64>) -> Result<Poll, HubError> {
        let key = self.channel_key(name)?;
        let c = &self.channels[key as usize];
        let cursor = cursor.unwrap_or(c.last_seq);
        if cursor > c.last_seq {
            // The cursor is ahead of the channel (dropped or server restarted): start over
            // from the oldest retained message instead of waiting forever.
            let (body, next, count) = self.build_answer(key, 0, true);
            self.stats.delivered_total += count as u64;
            self.maybe_drop(key);
            return Ok(Poll::Messages { body, next, count });
        }
        if cursor < c.last_seq {
            let (body, next, count) = self.build_answer(key, cursor, false);
            self.stats.delivered_total += count as u64;
            self.maybe_drop(key);
            return Ok(Poll::Messages { body, next, count });
        }
        Ok(Poll::Hold { chan: key, cursor })
    }

    /// JSON answer with the messages after `cursor` (at most max_batch). Returns (body,
    /// next cursor, number of messages).
    fn build_answer(&self, key: u32, cursor: u64, reset: bool) -> (Vec<u8>, u64, usize) {
        let c = &self.channels[key as usize];
        let first = c.first_seq();
        let missed = if reset { 0 } else { first.saturating_sub(cursor + 1) };
        let start = (cursor + 1).max(first);
        let skip = (start - first) as usize;
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"channel\":");
        json::push_str(&mut out, &c.name);
        out.extend_from_slice(b",\"messages\":[");
        let mut next = c.last_seq;
        let mut count = 0;
        for m in c.messages.iter().skip(skip).take(self.limits.max_batch) {
            if count > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"seq\":");
            json::push_u64(&mut out, m.seq);
            match std::str::from_utf8(&m.data) {
                Ok(s) if m.utf8 => {
                    out.extend_from_slice(b",\"data\":");
                    json::push_str(&mut out, s);
                }
                _ => {
                    out.extend_from_slice(b",\"data_b64\":");
                    json::push_base64(&mut out, &m.data);
                }
            }
            out.push(b'}');
            next = m.seq;
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
        (out, next, count)
    }

    /// The key the next [`add_waiter`](Self::add_waiter) will use (to name its timer and
    /// connection note before parking it).
    pub fn vacant_waiter_key(&self) -> usize {
        self.waiters.vacant_key()
    }

    /// Parks a subscriber on channel `chan` (from [`Poll::Hold`]). Returns the waiter key.
    pub fn add_waiter(
        &mut self,
        chan: u32,
        cursor: u64,
        responder: Responder,
        timer: Option<TimerId>,
    ) -> usize {
        let c = &mut self.channels[chan as usize];
        let key = self.waiters.insert(Waiter { chan, pos: c.waiters.len() as u32, cursor, timer, responder });
        c.waiters.push(key as u32);
        key
    }

    pub fn waiter(&self, key: usize) -> Option<&Waiter> {
        self.waiters.get(key)
    }

    /// Removes a waiter (timed out, client gone, shutdown) and returns it.
    pub fn remove_waiter(&mut self, key: usize) -> Option<Waiter> {
        let w = self.waiters.try_remove(key)?;
        let c = &mut self.channels[w.chan as usize];
        c.waiters.swap_remove(w.pos as usize);
        if let Some(&moved) = c.waiters.get(w.pos as usize) {
            self.waiters[moved as usize].pos = w.pos;
        }
        self.maybe_drop(w.chan);
        Some(w)
    }

    /// Keys of every waiter (for shutdown).
    pub fn waiter_keys(&self) -> Vec<usize> {
        self.waiters.iter().map(|(k, _)| k).collect()
    }

    /// The channel's last seq, for a hold that ends with 304.
    pub fn last_seq(&self, chan: u32) -> u64 {
        self.channels.get(chan as usize).map_or(0, |c| c.last_seq)
    }

    /// Drops a channel created by a subscribe that ended without waiting (timeout 0).
    pub fn release_channel(&mut self, chan: u32) {
        if self.channels.contains(chan as usize) {
            self.maybe_drop(chan);
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

    fn hub(retain: usize) -> Hub {
        Hub::new(HubLimits { retain, retain_bytes: 1 << 20, max_channels: 10, max_batch: 2 })
    }

    fn body(p: Poll) -> String {
        match p {
            Poll::Messages { body, .. } => String::from_utf8(body).unwrap(),
            Poll::Hold { cursor, .. } => format!("hold {cursor}"),
        }
    }

    #[test]
    fn cursors_batches_and_missed() {
        let mut h = hub(3);
        for i in 0..5 {
            h.publish("c", format!("m{i}").into_bytes()).unwrap();
        }
        // Retained: 3, 4, 5. Cursor 0 missed 1 and 2; batch of 2.
        assert_eq!(
            body(h.subscribe("c", Some(0)).unwrap()),
            r#"{"channel":"c","messages":[{"seq":3,"data":"m2"},{"seq":4,"data":"m3"}],"next":4,"missed":2}"#
        );
        assert_eq!(body(h.subscribe("c", Some(5)).unwrap()), "hold 5");
        assert_eq!(body(h.subscribe("c", None).unwrap()), "hold 5");
        assert_eq!(
            body(h.subscribe("c", Some(9)).unwrap()),
            r#"{"channel":"c","messages":[{"seq":3,"data":"m2"},{"seq":4,"data":"m3"}],"next":4,"missed":0,"reset":true}"#
        );
        h.publish("b", vec![0xff, 0]).unwrap();
        assert_eq!(
            body(h.subscribe("b", Some(0)).unwrap()),
            r#"{"channel":"b","messages":[{"seq":1,"data_b64":"/wA="}],"next":1,"missed":0}"#
        );
    }

    #[test]
    fn channel_limit() {
        let mut h = hub(3);
        for i in 0..10 {
            h.publish(&format!("c{i}"), b"x".to_vec()).unwrap();
        }
        assert_eq!(h.publish("c10", b"x".to_vec()).err(), Some(HubError::TooManyChannels));
        assert!(h.publish("c1", b"x".to_vec()).is_ok());
    }
}
