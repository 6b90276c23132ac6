//! `GET /ws`: the hub's channels over WebSocket (RFC 6455).
//!
//! After the upgrade handshake (`Sec-WebSocket-Accept` = base64(SHA-1(key + GUID))) the client
//! sends JSON commands in text frames and the server answers with JSON events:
//!
//! | client | server |
//! |---|---|
//! | `{"op":"sub","channel":"c","since":7,"epoch":"3fa2c901","token":".."}` | the retained messages after the cursor, then every new one |
//! | `{"op":"unsub","channel":"c"}` | nothing more from `c` |
//! | `{"op":"pub","channel":"c","data":".."}` | (the message reaches every subscriber, this socket too if subscribed) |
//!
//! Events: `{"channel":"c","seq":8,"epoch":"3fa2c901","data":".."}` (or `"data_b64"` for a
//! message that is not UTF-8), `{"channel":"c","reset":true,"epoch":..,"next":N}` (the cursor
//! was of another life of the channel), `{"channel":"c","missed":N}` (messages evicted before
//! the client read them), `{"error":"..","op":..}` (a bad command; the socket stays open).
//!
//! # Why it is built like this
//! - Each subscription is a stream of the [`Hub`] ([`Hub::add_stream`]) once it has caught
//!   up; until then it is a cursor here (`SubState::CatchingUp`), fed batch by batch as the
//!   socket drains, so a client with a large backlog is never taken for a slow one and
//!   nothing is buffered for it beyond [`CATCH_UP_CHUNK`]. One thread: no publish can slip in
//!   between the last batch and the parking.
//! - A publish renders one set of frames per delivery (per cursor) and queues the same bytes
//!   on every socket by reference ([`Ctx::send_shared`]).
//! - Backpressure as for every stream: a socket whose unsent output passes the server's
//!   output limit ([`Flow::Slow`]) is dropped and counted (`ws_dropped_slow_total`); it
//!   reconnects with its cursor and loses nothing still retained.
//! - Liveness (`Liveness`): every `--ws-ping` seconds a socket that sent nothing during
//!   the last interval is pinged; one that still has sent nothing at the next tick is closed
//!   (1008). A half-sent frame followed by silence ends the same way.
//! - The frame rules (masking, RSV bits, fragmentation, control frames, sizes, UTF-8) are in
//!   [`frame`], each broken rule mapped to its close code; the close is sent and the
//!   connection ends once it is written.

pub mod command;
pub mod frame;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use http::{ConnId, Ctx, Flow, Request, Responder, Response, StreamId};
use reactor::TimerId;
use slab::Slab;

use crate::auth::{unix_now, SubscribeKey};
use crate::hub::{valid_channel_name, Batch, Cursor, Hub, MessageRef, Poll};
use crate::json;
use crate::render::format_epoch;
use crate::service::{parse_epoch, Note, Parked, Tidings, Timer};
use command::Value;
use frame::{CloseCode, Decoder, Event, Opcode};

/// RFC 6455's fixed GUID, appended to the client's key for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Backlog bytes queued on a catching-up socket before waiting for it to drain.
pub const CATCH_UP_CHUNK: usize = 64 * 1024;

/// The payload the hub parks for a live WebSocket subscription: the socket's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsSub {
    pub socket: usize,
}

/// The WebSocket settings (`--ws-max-channels`, `--ws-max-message`, `--ws-ping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    pub max_channels: usize,
    pub max_message: usize,
    pub ping: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits { max_channels: 64, max_message: 128 * 1024, ping: Duration::from_secs(30) }
    }
}

/// Whether a socket has shown signs of life since the last ping tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    /// It sent a frame during the last interval: no ping needed.
    Heard,
    /// Silent for an interval: pinged at the next tick.
    Quiet,
    /// Pinged and silent since: closed at the next tick.
    Pinged,
}

/// Where one subscription of a socket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// Still sending the backlog after this cursor (`None`: nothing asked, park at once).
    CatchingUp(Option<Cursor>),
    /// Parked in the hub as a stream, with this waiter key.
    Live(usize),
}

#[derive(Debug)]
struct Subscription {
    channel: Box<str>,
    state: SubState,
}

/// What the handshake granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRight {
    Granted,
    Refused,
}

struct Socket {
    stream: StreamId,
    decoder: Decoder,
    subs: Vec<Subscription>,
    publish: PublishRight,
    /// The `token=` of the handshake, for `sub` commands without their own.
    token: Option<Box<str>>,
    liveness: Liveness,
    ping_timer: TimerId,
}

/// A `pub` command for the service to carry out (it owns the publish path).
pub struct Publish {
    pub socket: usize,
    pub channel: String,
    pub data: Vec<u8>,
}

/// Every open WebSocket.
pub struct Sockets {
    limits: WsLimits,
    subscribe_key: Option<SubscribeKey>,
    /// `--max-message`: a `pub` is held to the same limit as `POST /pub`.
    max_publish: usize,
    conns: Slab<Socket>,
    by_conn: HashMap<ConnId, usize>,
    /// Sockets found slow during a fan-out, dropped once it is done.
    slow: Vec<usize>,
    pub dropped_slow_total: u64,
}

type Hb = Hub<Parked>;
type C<'a, 'b> = &'a mut Ctx<'b, Tidings>;

impl Sockets {
    pub fn new(limits: WsLimits, subscribe_key: Option<SubscribeKey>, max_publish: usize) -> Sockets {
        Sockets {
            limits,
            subscribe_key,
            max_publish,
            conns: Slab::new(),
            by_conn: HashMap::new(),
            slow: Vec::new(),
            dropped_slow_total: 0,
        }
    }

    pub fn open_count(&self) -> usize {
        self.conns.len()
    }

    /// Accepts a handshake already checked by [`handshake`].
    pub fn open(
        &mut self,
        ctx: C<'_, '_>,
        req: &Request<'_>,
        responder: Responder,
        resp: Response,
        publish: PublishRight,
    ) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        ctx.set_note(&responder, Note::Ws(key));
        let conn = responder.conn();
        let Ok(stream) = ctx.upgrade(responder, resp) else { return };
        let ping_timer = ctx.set_timer(self.limits.ping, Timer::WsPing(key));
        entry.insert(Socket {
            stream,
            decoder: Decoder::new(self.limits.max_message),
            subs: Vec::new(),
            publish,
            token: req.query_param("token").map(Box::from),
            liveness: Liveness::Quiet,
            ping_timer,
        });
        self.by_conn.insert(conn, key);
    }

    /// Bytes from a client: buffered for [`Sockets::next_publish`].
    pub fn on_data(&mut self, stream: StreamId, data: &[u8]) -> Option<usize> {
        let key = *self.by_conn.get(&stream.conn())?;
        let s = self.conns.get_mut(key)?;
        s.decoder.push(data);
        if !data.is_empty() {
            s.liveness = Liveness::Heard;
        }
        Some(key)
    }

    /// Carries out the socket's buffered frames up to the next `pub` command, which it
    /// returns (the service publishes it, then calls again), or to the end of the buffer.
    pub fn next_publish(&mut self, ctx: C<'_, '_>, hub: &mut Hb, key: usize) -> Option<Publish> {
        loop {
            let s = self.conns.get_mut(key)?;
            let event = match s.decoder.next_event() {
                Ok(Some(e)) => e,
                Ok(None) => return None,
                Err(code) => {
                    self.close(ctx, hub, key, Some(code));
                    return None;
                }
            };
            let stream = s.stream;
            match event {
                Event::Ping(payload) => {
                    let mut out = Vec::with_capacity(payload.len() + 2);
                    frame::encode(&mut out, Opcode::Pong, &payload);
                    let _ = ctx.send(&stream, &out);
                }
                Event::Pong(_) => {}
                Event::Close(code) => {
                    let mut out = Vec::with_capacity(4);
                    let payload = code.unwrap_or(1000).to_be_bytes();
                    frame::encode(&mut out, Opcode::Close, if code.is_some() { &payload } else { &[] });
                    let _ = ctx.send(&stream, &out);
                    self.close(ctx, hub, key, None);
                    return None;
                }
                Event::Binary(_) => {
                    self.close(ctx, hub, key, Some(CloseCode::Unsupported));
                    return None;
                }
                Event::Text(text) => {
                    if let Some(p) = self.command(ctx, hub, key, &text) {
                        return Some(p);
                    }
                }
            }
        }
    }

    /// One JSON command.
    fn command(&mut self, ctx: C<'_, '_>, hub: &mut Hb, key: usize, text: &str) -> Option<Publish> {
        let fields = match command::parse_object(text) {
            Ok(f) => f,
            Err(e) => return self.error(ctx, key, e, None),
        };
        let str_field = |name: &str| {
            fields.iter().find(|(k, _)| k == name).map(|(_, v)| match v {
                Value::Str(s) => Ok(s.as_str()),
                Value::Num(_) => Err(()),
            })
        };
        let op = match str_field("op") {
            Some(Ok(op)) => op,
            _ => return self.error(ctx, key, "op must be \"sub\", \"unsub\" or \"pub\"", None),
        };
        let channel = match str_field("channel") {
            Some(Ok(c)) if valid_channel_name(c) => c,
            _ => {
                return self.error(
                    ctx,
                    key,
                    "invalid channel name: 1..128 bytes of [A-Za-z0-9._:-]",
                    Some(op),
                )
            }
        };
        let s = &mut self.conns[key];
        match op {
            "sub" => {
                if s.subs.iter().any(|sub| &*sub.channel == channel) {
                    return self.error(ctx, key, "already subscribed", Some(op));
                }
                if s.subs.len() >= self.limits.max_channels {
                    return self.error(
                        ctx,
                        key,
                        "too many channels on this socket (--ws-max-channels)",
                        Some(op),
                    );
                }
                if let Some(k) = &self.subscribe_key {
                    let token = match str_field("token") {
                        Some(Ok(t)) => Some(t),
                        Some(Err(())) => None,
                        None => s.token.as_deref(),
                    };
                    if let Err(e) = k.verify(channel, token, unix_now()) {
                        return self.error(ctx, key, e.reason(), Some(op));
                    }
                }
                let since = match fields.iter().find(|(k, _)| k == "since") {
                    None => None,
                    Some((_, Value::Num(n))) => Some(*n),
                    Some(_) => return self.error(ctx, key, "invalid since", Some(op)),
                };
                let epoch = match str_field("epoch") {
                    None => None,
                    Some(Ok(e)) if parse_epoch(e).is_some() => parse_epoch(e),
                    Some(_) => return self.error(ctx, key, "invalid epoch: 8 hex digits", Some(op)),
                };
                let cursor = since.map(|since| Cursor { since, epoch });
                s.subs.push(Subscription { channel: channel.into(), state: SubState::CatchingUp(cursor) });
                self.catch_up(ctx, hub, key);
                None
            }
            "unsub" => {
                let Some(i) = s.subs.iter().position(|sub| &*sub.channel == channel) else {
                    return self.error(ctx, key, "not subscribed", Some(op));
                };
                if let SubState::Live(w) = s.subs.swap_remove(i).state {
                    hub.remove_waiter(w);
                }
                None
            }
            "pub" => {
                if s.publish == PublishRight::Refused {
                    return self.error(
                        ctx,
                        key,
                        "missing or wrong publish token: send Authorization: Bearer or publish_token= in the handshake",
                        Some(op),
                    );
                }
                let data = match str_field("data") {
                    Some(Ok(d)) => d,
                    _ => return self.error(ctx, key, "data must be a string", Some(op)),
                };
                if data.len() > self.max_publish {
                    return self.error(ctx, key, "message larger than --max-message", Some(op));
                }
                Some(Publish { socket: key, channel: channel.to_string(), data: data.as_bytes().to_vec() })
            }
            _ => self.error(ctx, key, "op must be \"sub\", \"unsub\" or \"pub\"", Some(op)),
        }
    }

    /// Sends `{"error":..,"op":..}` to socket `key`.
    pub fn error(&mut self, ctx: C<'_, '_>, key: usize, what: &str, op: Option<&str>) -> Option<Publish> {
        let s = self.conns.get(key)?;
        let mut body = Vec::with_capacity(64 + what.len());
        body.extend_from_slice(b"{\"error\":");
        json::push_str(&mut body, what);
        body.extend_from_slice(b",\"op\":");
        match op {
            Some(op) => json::push_str(&mut body, op),
            None => body.extend_from_slice(b"null"),
        }
        body.push(b'}');
        let mut out = Vec::with_capacity(body.len() + 4);
        frame::encode(&mut out, Opcode::Text, &body);
        let _ = ctx.send(&s.stream, &out);
        None
    }

    /// Sends the backlog of every catching-up subscription of socket `key`, batch by batch
    /// while the socket keeps up, parking each in the hub once it is up to date. Stops when
    /// [`CATCH_UP_CHUNK`] bytes wait to be written: [`Sockets::on_drained`] (or the resume
    /// timer, if the loop's own flush wrote them all) goes on.
    fn catch_up(&mut self, ctx: C<'_, '_>, hub: &mut Hb, key: usize) {
        let Some(s) = self.conns.get_mut(key) else { return };
        let stream = s.stream;
        for sub in s.subs.iter_mut() {
            while let SubState::CatchingUp(cursor) = sub.state {
                if ctx.pending(&stream).unwrap_or(0) > CATCH_UP_CHUNK {
                    ctx.set_timer(Duration::ZERO, Timer::WsResume(key));
                    return;
                }
                match hub.subscribe(&sub.channel, cursor, ctx.now_ms()) {
                    Poll::Messages(batch) => {
                        let frames = events(&sub.channel, &batch, hub.messages(&batch));
                        if let Ok(Flow::Slow) = ctx.send(&stream, &frames) {
                            // Not caught up: the socket is slow to read its own backlog,
                            // which is fine; the chunk bound above keeps it small.
                        }
                        sub.state = SubState::CatchingUp(Some(Cursor {
                            since: batch.next,
                            epoch: Some(batch.epoch),
                        }));
                    }
                    Poll::Hold(hold) => {
                        let w = hub.add_stream(hold, |_| Parked::Ws(WsSub { socket: key }));
                        sub.state = SubState::Live(w);
                    }
                }
            }
        }
    }

    /// A backed-up socket wrote everything: go on with its backlog.
    pub fn on_drained(&mut self, ctx: C<'_, '_>, hub: &mut Hb, stream: StreamId) {
        if let Some(&key) = self.by_conn.get(&stream.conn()) {
            self.catch_up(ctx, hub, key);
        }
    }

    /// Queues the frames of one delivery on the sockets of `streams` (hub waiter keys),
    /// rendering them once, on the first WebSocket found.
    pub fn deliver(&mut self, ctx: C<'_, '_>, hub: &Hb, channel: &str, batch: &Batch, streams: &[usize]) {
        let mut frames: Option<Rc<[u8]>> = None;
        for &w in streams {
            let Some(Parked::Ws(WsSub { socket })) = hub.waiter(w) else { continue };
            let Some(s) = self.conns.get(*socket) else { continue };
            let bytes = frames.get_or_insert_with(|| events(channel, batch, hub.messages(batch)).into());
            match ctx.send_shared(&s.stream, bytes) {
                Ok(Flow::Ready) | Err(_) => {}
                Ok(Flow::Slow) => self.slow.push(*socket),
            }
        }
    }

    /// Drops the sockets found slow by [`Sockets::deliver`] (after the fan-out: their hub
    /// entries must not vanish while it runs).
    pub fn drop_slow(&mut self, ctx: C<'_, '_>, hub: &mut Hb) {
        while let Some(key) = self.slow.pop() {
            if self.conns.contains(key) {
                self.dropped_slow_total += 1;
                self.close(ctx, hub, key, Some(CloseCode::Policy));
            }
        }
    }

    /// Closes socket `key`: its subscriptions leave the hub, and with `code` a close frame
    /// is sent and the connection ends once it is written (without: ends at once, or the
    /// connection is already gone).
    fn close(&mut self, ctx: C<'_, '_>, hub: &mut Hb, key: usize, code: Option<CloseCode>) {
        let Some(s) = self.conns.try_remove(key) else { return };
        self.by_conn.remove(&s.stream.conn());
        ctx.cancel_timer(s.ping_timer);
        for sub in s.subs {
            if let SubState::Live(w) = sub.state {
                hub.remove_waiter(w);
            }
        }
        if let Some(code) = code {
            let _ = ctx.send(&s.stream, &frame::close_frame(code));
        }
        let _ = ctx.end(s.stream);
    }

    /// The client's connection closed.
    pub fn on_close(&mut self, ctx: C<'_, '_>, hub: &mut Hb, conn: ConnId, key: usize) {
        if self.conns.get(key).is_some_and(|s| s.stream.conn() == conn) {
            self.close(ctx, hub, key, None);
        }
    }

    pub fn on_ping_timer(&mut self, ctx: C<'_, '_>, hub: &mut Hb, key: usize, id: TimerId) {
        let Some(s) = self.conns.get_mut(key).filter(|s| s.ping_timer == id) else { return };
        s.liveness = match s.liveness {
            Liveness::Heard => Liveness::Quiet,
            Liveness::Quiet => {
                let _ = ctx.send(&s.stream, &[0x89, 0]);
                Liveness::Pinged
            }
            Liveness::Pinged => return self.close(ctx, hub, key, Some(CloseCode::Policy)),
        };
        s.ping_timer = ctx.set_timer(self.limits.ping, Timer::WsPing(key));
    }

    pub fn on_resume_timer(&mut self, ctx: C<'_, '_>, hub: &mut Hb, key: usize) {
        let Some(s) = self.conns.get(key) else { return };
        // With output still waiting, the socket is watched for writing: on_drained comes.
        if ctx.pending(&s.stream) == Some(0) {
            self.catch_up(ctx, hub, key);
        }
    }

    /// Shutdown: every socket gets close 1001.
    pub fn shutdown(&mut self, ctx: C<'_, '_>, hub: &mut Hb) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(ctx, hub, key, Some(CloseCode::GoingAway));
        }
    }
}

/// Checks a `GET /ws` upgrade request. `Ok`: the 101 to send; `Err`: the answer instead
/// (400 not a WebSocket handshake, 426 another protocol version).
pub fn handshake(req: &Request<'_>) -> Result<Response, Response> {
    let has_token = |name: &str, token: &str| {
        req.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(Response::text(400, "expected a WebSocket handshake (Upgrade: websocket)"));
    }
    if req.header("sec-websocket-version").and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
        != Some("13")
    {
        return Err(Response::text(426, "WebSocket version 13 only").header("Sec-WebSocket-Version", "13"));
    }
    let key = match req.header("sec-websocket-key").and_then(|v| std::str::from_utf8(v).ok()) {
        Some(k) if k.trim().len() == 24 => k.trim(),
        _ => return Err(Response::text(400, "missing or malformed Sec-WebSocket-Key")),
    };
    Ok(Response::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", accept_key(key)))
}

/// `Sec-WebSocket-Accept` for a client's key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    let mut out = Vec::with_capacity(30);
    json::push_base64(&mut out, &sha.digest().bytes());
    // push_base64 writes a JSON string: drop the quotes (base64 has nothing to escape).
    String::from_utf8_lossy(&out[1..out.len() - 1]).into_owned()
}

/// The text frames of a batch on `channel`: a reset event if it starts over, a missed
/// event if messages were evicted before the client read them, then one event per message.
pub fn events<'a>(channel: &str, batch: &Batch, messages: impl Iterator<Item = MessageRef<'a>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut body = Vec::with_capacity(128);
    let epoch = format_epoch(batch.epoch);
    let head = |body: &mut Vec<u8>| {
        body.clear();
        body.extend_from_slice(b"{\"channel\":");
        json::push_str(body, channel);
    };
    if batch.reset {
        head(&mut body);
        body.extend_from_slice(b",\"reset\":true,\"epoch\":\"");
        body.extend_from_slice(epoch.as_bytes());
        body.extend_from_slice(b"\",\"next\":");
        json::push_u64(&mut body, batch.next);
        body.push(b'}');
        frame::encode(&mut out, Opcode::Text, &body);
    }
    if batch.missed > 0 {
        head(&mut body);
        body.extend_from_slice(b",\"missed\":");
        json::push_u64(&mut body, batch.missed);
        body.push(b'}');
        frame::encode(&mut out, Opcode::Text, &body);
    }
    for m in messages {
        head(&mut body);
        body.extend_from_slice(b",\"seq\":");
        json::push_u64(&mut body, m.seq);
        body.extend_from_slice(b",\"epoch\":\"");
        body.extend_from_slice(epoch.as_bytes());
        if m.as_text {
            body.extend_from_slice(b"\",\"data\":");
            // as_text: the hub checked it is UTF-8.
            json::push_str(&mut body, std::str::from_utf8(m.data).unwrap_or_default());
        } else {
            body.extend_from_slice(b"\",\"data_b64\":");
            json::push_base64(&mut body, m.data);
        }
        body.push(b'}');
        frame::encode(&mut out, Opcode::Text, &body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_the_rfc() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
