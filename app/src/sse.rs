//! Server-Sent Events: `GET /sse/{channel}?since=S&epoch=E` (or `Last-Event-ID: E:S`), a
//! `text/event-stream` of the channel's messages on the hub's own cursors and epochs.
//!
//! # The wire
//! ```text
//! retry: 2000                      once, at the start
//!
//! event: reset                     the cursor was of another life of the channel
//! id: 3fa2c901:4
//! data: 3fa2c901
//!
//! event: missed                    messages after the cursor evicted before it read them
//! data: 2
//!
//! id: 3fa2c901:7                   one event per message; each line of it a `data:` line
//! data: <message>
//!
//! : hb                             after --sse-heartbeat seconds without traffic
//! ```
//! A message that is not UTF-8 is sent as `event: b64` with its base64. The `id` is the
//! cursor (`EPOCH:SEQ`): EventSource sends the last one back as `Last-Event-ID` when it
//! reconnects, so a reconnect resumes exactly where the stream stopped (the query wins if both
//! are given). No cursor: only messages published after the request.
//!
//! # Why catching up goes as the socket drains
//! A subscriber with an old cursor may have megabytes of backlog. It is written batch by batch
//! (at most `--max-batch` messages and about `--max-answer-bytes` each, as a long-poll
//! answer): a batch, and if the kernel took all of it the next, else nothing more until
//! [`http::Service::on_drained`] says the socket has drained. Only once it is up to date is
//! the stream parked in the hub ([`crate::hub::Hub::add_stream`]), so its output never holds
//! more than one batch of backlog, and a client catching up is never mistaken for a slow one.
//! Nothing is published in between: the loop has one thread.
//!
//! # Why a slow reader is dropped, not buffered for
//! A parked stream gets every publish, rendered once per delivery and queued by reference
//! ([`http::Ctx::send_shared`]), so 10,000 streams cost one render. A client that stops
//! reading would make its queue grow without bound: once its unsent output passes
//! `--max-stream-backlog` it is ended (its queued output still goes out if it reads again,
//! then the connection closes) and counted in `streams_dropped_slow_total`. Nothing is lost
//! that is still retained: it reconnects with its `Last-Event-ID`.
//!
//! # Heartbeats
//! One timer per stream, armed for `--sse-heartbeat` after its last write. A publish does not
//! touch it (that would be one timer operation per stream per publish): the stream only
//! notes the time of its last write, and when the timer fires it either writes `: hb` (idle
//! long enough) or is re-armed for the rest of the interval.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use http::{ConnId, Ctx, Request, Response, StreamId};
use reactor::TimerId;
use slab::Slab;

use crate::hub::{Batch, Cursor, Hub, MessageRef, Poll};
use crate::json;
use crate::render::format_epoch;
use crate::service::{parse_epoch, parse_u64, Note, Parked, Tidings, Timer};

/// The first bytes of every stream: how long EventSource waits before it reconnects.
pub const RETRY: &[u8] = b"retry: 2000\n\n";

/// The comment line of a heartbeat.
pub const HEARTBEAT: &[u8] = b": hb\n";

/// The head of a stream: `200 text/event-stream`, not cached, not buffered by proxies (nginx
/// reads `X-Accel-Buffering`).
pub fn head() -> Response {
    Response::new(200)
        .content_type("text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("X-Accel-Buffering", "no")
}

/// Where a stream starts: `?since=S[&epoch=E]` or, failing that, `Last-Event-ID: E:S` (or
/// `S`); `None`: from now on.
pub fn cursor(req: &Request<'_>) -> Result<Option<Cursor>, &'static str> {
    if req.query_param("since").is_some() {
        let since = req.query_param("since").and_then(parse_u64).ok_or("invalid since")?;
        let epoch = match req.query_param("epoch") {
            None => None,
            Some(e) => Some(parse_epoch(e).ok_or("invalid epoch: 8 hex digits")?),
        };
        return Ok(Some(Cursor { since, epoch }));
    }
    let Some(raw) = req.header("last-event-id") else { return Ok(None) };
    let v = std::str::from_utf8(raw).map_err(|_| "invalid Last-Event-ID")?.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let (epoch, since) = match v.split_once(':') {
        Some((e, s)) => (Some(parse_epoch(e).ok_or("invalid Last-Event-ID")?), s),
        None => (None, v),
    };
    let since = parse_u64(since).ok_or("invalid Last-Event-ID")?;
    Ok(Some(Cursor { since, epoch }))
}

/// The events of `batch` (a reset and missed notice first, if it has them), as one piece of
/// the stream. Rendered once per delivery and shared by every stream that gets it.
pub fn render<'a>(batch: &Batch, messages: impl Iterator<Item = MessageRef<'a>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let epoch = format_epoch(batch.epoch);
    if batch.reset {
        // The id the client resumes from if it reconnects before the messages that follow.
        let at = if batch.count > 0 { batch.first - 1 } else { batch.next };
        out.extend_from_slice(b"event: reset\nid: ");
        push_id(&mut out, &epoch, at);
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(epoch.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    if batch.missed > 0 {
        out.extend_from_slice(b"event: missed\ndata: ");
        json::push_u64(&mut out, batch.missed);
        out.extend_from_slice(b"\n\n");
    }
    for m in messages {
        out.extend_from_slice(b"id: ");
        push_id(&mut out, &epoch, m.seq);
        out.push(b'\n');
        match std::str::from_utf8(m.data) {
            Ok(text) => {
                // CR LF, CR and LF all end a line in an event stream: each line of the
                // message is one `data:` line, which the browser joins with `\n`.
                for line in text.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
            }
            Err(_) => {
                out.extend_from_slice(b"event: b64\ndata: ");
                let start = out.len();
                json::push_base64(&mut out, m.data);
                // Without the JSON quotes.
                out.pop();
                out.remove(start);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
    out
}

fn push_id(out: &mut Vec<u8>, epoch: &str, seq: u64) {
    out.extend_from_slice(epoch.as_bytes());
    out.push(b':');
    json::push_u64(out, seq);
}

/// Where an open stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Writing the retained messages after `cursor`, a batch each time the socket drains.
    CatchingUp { cursor: Option<Cursor> },
    /// Up to date and parked in the hub (this waiter key): gets every publish.
    Live { waiter: usize },
}

/// One open SSE stream.
#[derive(Debug)]
struct Subscriber {
    stream: StreamId,
    channel: Box<str>,
    phase: Phase,
    heartbeat: TimerId,
    /// Loop ms of the last bytes written to it (for the heartbeat).
    last_write_ms: u64,
}

/// Every open SSE stream, by key (its hub payload, note and heartbeat timer name it).
pub struct Streams {
    set: Settings,
    subs: Slab<Subscriber>,
    /// The key of each open stream's connection (for `on_drained`, which names a stream).
    by_conn: HashMap<ConnId, usize>,
    /// Streams ended because their unsent output passed `--max-stream-backlog`.
    pub dropped_slow_total: u64,
}

/// What a stream needs of the service's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub heartbeat: Duration,
    pub max_backlog: usize,
}

type Hb = Hub<Parked>;

impl Streams {
    pub fn new(set: Settings) -> Streams {
        Streams { set, subs: Slab::new(), by_conn: HashMap::new(), dropped_slow_total: 0 }
    }

    /// Open streams.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// A stream has just been opened (its head and `retry:` written): catch it up from
    /// `cursor`, then park it.
    pub fn start(
        &mut self,
        ctx: &mut Ctx<'_, Tidings>,
        hub: &mut Hb,
        stream: StreamId,
        channel: &str,
        cursor: Option<Cursor>,
    ) {
        let entry = self.subs.vacant_entry();
        let key = entry.key();
        let heartbeat = ctx.set_timer(self.set.heartbeat, Timer::SseHeartbeat(key));
        entry.insert(Subscriber {
            stream,
            channel: channel.into(),
            phase: Phase::CatchingUp { cursor },
            heartbeat,
            last_write_ms: ctx.now_ms(),
        });
        self.by_conn.insert(stream.conn(), key);
        ctx.set_stream_note(&stream, Note::Sse(key));
        self.feed(ctx, hub, key);
    }

    /// Writes the next batches of a stream catching up, while the kernel takes them whole;
    /// parks it once it is up to date.
    fn feed(&mut self, ctx: &mut Ctx<'_, Tidings>, hub: &mut Hb, key: usize) {
        loop {
            let Some(sub) = self.subs.get_mut(key) else { return };
            let Phase::CatchingUp { cursor } = sub.phase else { return };
            match hub.subscribe(&sub.channel, cursor, ctx.now_ms()) {
                Poll::Messages(batch) => {
                    let bytes = render(&batch, hub.messages(&batch));
                    if ctx.send(&sub.stream, &bytes).is_err() {
                        return self.forget(ctx, hub, key);
                    }
                    sub.last_write_ms = ctx.now_ms();
                    sub.phase = Phase::CatchingUp {
                        cursor: Some(Cursor { since: batch.next, epoch: Some(batch.epoch) }),
                    };
                    if ctx.pending(&sub.stream) != Some(0) {
                        return; // on_drained goes on
                    }
                }
                Poll::Hold(hold) => {
                    let waiter = hub.add_stream(hold, |_| Parked::Sse(key));
                    sub.phase = Phase::Live { waiter };
                    return;
                }
            }
        }
    }

    /// The socket of `stream` has drained: the next batch, if it is catching up.
    pub fn drained(&mut self, ctx: &mut Ctx<'_, Tidings>, hub: &mut Hb, stream: StreamId) {
        if let Some(&key) = self.by_conn.get(&stream.conn()) {
            if self.subs.get(key).is_some_and(|s| s.stream == stream) {
                self.feed(ctx, hub, key);
            }
        }
    }

    /// Writes one publish's events (`bytes`, rendered once) to the parked streams `waiters`
    /// (hub keys), and ends those whose unsent output passes the backlog limit.
    pub fn deliver(&mut self, ctx: &mut Ctx<'_, Tidings>, hub: &mut Hb, waiters: &[usize], bytes: &Rc<[u8]>) {
        let now = ctx.now_ms();
        let mut slow = Vec::new();
        for &w in waiters {
            let Some(&Parked::Sse(key)) = hub.waiter(w) else { continue };
            let Some(sub) = self.subs.get_mut(key) else { continue };
            match ctx.send_shared(&sub.stream, bytes) {
                Ok(_) => {
                    sub.last_write_ms = now;
                    if ctx.pending(&sub.stream).unwrap_or(0) > self.set.max_backlog {
                        slow.push(key);
                    }
                }
                Err(_) => slow.push(key),
            }
        }
        for key in slow {
            self.drop_slow(ctx, hub, key);
        }
    }

    /// Ends a stream that does not read (or whose connection is gone).
    fn drop_slow(&mut self, ctx: &mut Ctx<'_, Tidings>, hub: &mut Hb, key: usize) {
        let Some(stream) = self.subs.get(key).map(|s| s.stream) else { return };
        self.forget(ctx, hub, key);
        if ctx.end(stream).is_ok() {
            self.dropped_slow_total += 1;
        }
    }

    /// Takes a stream out of everything that names it (hub, timer, map); writes nothing.
    fn forget(&mut self, ctx: &mut Ctx<'_, Tidings>, hub: &mut Hb, key: usize) {
        let Some(sub) = self.subs.try_remove(key) else { return };
        if let Phase::Live { waiter } = sub.phase {
            hub.remove_waiter(waiter);
        }
        ctx.cancel_timer(sub.heartbeat);
        self.by_conn.remove(&sub.stream.conn());
    }

    /// The client of stream `key` left (its connection `conn` closed).
    pub fn closed(&mut self, ctx: &mut Ctx<'_, Tidings>, hub: &mut Hb, conn: ConnId, key: usize) {
        if self.subs.get(key).is_some_and(|s| s.stream.conn() == conn) {
            self.forget(ctx, hub, key);
        }
    }

    /// The heartbeat timer `id` of stream `key` fired.
    pub fn heartbeat(&mut self, ctx: &mut Ctx<'_, Tidings>, hub: &mut Hb, id: TimerId, key: usize) {
        let now = ctx.now_ms();
        let Some(sub) = self.subs.get_mut(key) else { return };
        if sub.heartbeat != id {
            return;
        }
        let every = self.set.heartbeat.as_millis().min(u64::MAX as u128) as u64;
        let idle = now.saturating_sub(sub.last_write_ms);
        // A stream catching up with output still queued is not idle: it waits for its drain.
        let waiting_for_drain =
            matches!(sub.phase, Phase::CatchingUp { .. }) && ctx.pending(&sub.stream).unwrap_or(0) > 0;
        let next = if waiting_for_drain {
            every
        } else if idle >= every {
            match ctx.send(&sub.stream, HEARTBEAT) {
                Ok(_) => sub.last_write_ms = now,
                Err(_) => return self.forget(ctx, hub, key),
            }
            if ctx.pending(&sub.stream).unwrap_or(0) > self.set.max_backlog {
                return self.drop_slow(ctx, hub, key);
            }
            every
        } else {
            every - idle
        };
        sub.heartbeat = ctx.set_timer(Duration::from_millis(next), Timer::SseHeartbeat(key));
    }

    /// Shutdown: every stream ends (EventSource reconnects, after the restart, by its
    /// `Last-Event-ID`).
    pub fn end_all(&mut self, ctx: &mut Ctx<'_, Tidings>, hub: &mut Hb) {
        let keys: Vec<usize> = self.subs.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(stream) = self.subs.get(key).map(|s| s.stream) else { continue };
            self.forget(ctx, hub, key);
            let _ = ctx.end(stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(batch: Batch, msgs: &[(u64, &[u8])]) -> String {
        let it = msgs.iter().map(|&(seq, data)| MessageRef { seq, data, as_text: true });
        String::from_utf8(render(&batch, it)).unwrap()
    }

    #[test]
    fn events() {
        let b = Batch { chan: 0, epoch: 0x3fa2c901, first: 7, count: 2, next: 8, missed: 0, reset: false };
        assert_eq!(
            text(b, &[(7, b"hello"), (8, b"a\nb\r\nc\rd")]),
            "id: 3fa2c901:7\ndata: hello\n\nid: 3fa2c901:8\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        let b = Batch { chan: 0, epoch: 0xab, first: 3, count: 1, next: 3, missed: 2, reset: true };
        assert_eq!(
            text(b, &[(3, &[0xff, 0])]),
            "event: reset\nid: 000000ab:2\ndata: 000000ab\n\nevent: missed\ndata: 2\n\n\
             id: 000000ab:3\nevent: b64\ndata: /wA=\n\n"
        );
        let b = Batch { chan: 0, epoch: 0xab, first: 0, count: 0, next: 5, missed: 0, reset: true };
        assert_eq!(text(b, &[]), "event: reset\nid: 000000ab:5\ndata: 000000ab\n\n");
        // An empty message is one empty data line: the browser still dispatches it.
        let b = Batch { chan: 0, epoch: 1, first: 1, count: 1, next: 1, missed: 0, reset: false };
        assert_eq!(text(b, &[(1, b"")]), "id: 00000001:1\ndata: \n\n");
    }
}
