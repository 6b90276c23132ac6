//! `GET /dashboard` and its feed, `GET /dashboard/stream`: the loop's life as a picture.
//!
//! The page (`dashboard.html`, plain JavaScript and SVG, no external URL, no build step,
//! compiled in like the chat page) opens an `EventSource` on `/dashboard/stream` and draws the
//! last five minutes from it: connections and waiting subscribers by transport, loop wake-ups,
//! publishes and deliveries per second, timers pending, the delivery-latency histogram.
//!
//! # The feed
//! `text/event-stream`: `retry: 2000`, then a snapshot at once and one a second, each one
//! `data: <the /stats JSON>` (the same keys, one line). One repeating service timer serves
//! every open feed, and is armed only while one is open (an idle hub without a dashboard
//! does not wake up for it); each snapshot is rendered once and shared by reference among
//! the feeds ([`http::Ctx::send_shared`]).
//!
//! # Bounds
//! At most [`MAX_FEEDS`] feeds (more get 503); a feed whose unsent output passes
//! [`MAX_BACKLOG`] (a client that does not read: about a minute of snapshots) is ended,
//! as is every feed at shutdown (the browser's EventSource reconnects by itself).

use std::rc::Rc;

use http::{Ctx, Flow, Service, StreamId};
use slab::Slab;

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// How often a snapshot goes out.
pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

/// Unsent bytes past which a feed is ended.
pub const MAX_BACKLOG: usize = 64 * 1024;

/// Open feeds past which a new one is refused (503).
pub const MAX_FEEDS: usize = 64;

/// The open feeds, by key (the key is the stream's note).
#[derive(Default)]
pub struct Feeds {
    streams: Slab<StreamId>,
}

/// What [`Feeds::broadcast`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Broadcast {
    /// Feeds that got the snapshot.
    pub sent: usize,
    /// Feeds ended because their client does not read.
    pub dropped_slow: usize,
}

impl Feeds {
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.streams.len() >= MAX_FEEDS
    }

    /// A new feed: its key, to give the stream as its note.
    pub fn add(&mut self, stream: StreamId) -> usize {
        self.streams.insert(stream)
    }

    /// The client of feed `key` (on connection `conn`) left.
    pub fn remove(&mut self, key: usize, conn: http::ConnId) {
        if self.streams.get(key).is_some_and(|s| s.conn() == conn) {
            self.streams.remove(key);
        }
    }

    /// The first event of a feed: the reconnect delay, then `snapshot`.
    pub fn greeting(snapshot: &[u8]) -> Vec<u8> {
        let mut out = b"retry: 2000\n\n".to_vec();
        out.extend_from_slice(&event(snapshot));
        out
    }

    /// Sends `snapshot` (a `/stats` body) to every feed as one shared event; ends the feeds
    /// that lag behind, forgets the closed ones.
    pub fn broadcast<S: Service>(&mut self, ctx: &mut Ctx<'_, S>, snapshot: &[u8]) -> Broadcast {
        let bytes: Rc<[u8]> = event(snapshot).into();
        let mut done = Broadcast::default();
        self.streams.retain(|_, stream| {
            let backlog = ctx.pending(stream).unwrap_or(0);
            match ctx.send_shared(stream, &bytes) {
                Ok(Flow::Ready) if backlog + bytes.len() <= MAX_BACKLOG => {
                    done.sent += 1;
                    true
                }
                Ok(_) => {
                    let _ = ctx.end(*stream);
                    done.dropped_slow += 1;
                    false
                }
                Err(http::Closed) => false,
            }
        });
        done
    }

    /// Ends every feed (shutdown).
    pub fn end_all<S: Service>(&mut self, ctx: &mut Ctx<'_, S>) {
        for stream in self.streams.drain() {
            let _ = ctx.end(stream);
        }
    }
}

/// One server-sent event: `data: <json>\n\n` (the JSON is one line).
fn event(snapshot: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(snapshot.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(snapshot);
    out.extend_from_slice(b"\n\n");
    out
}
