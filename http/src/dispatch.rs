//! From the read buffer to the service, and its answers back into the output: the `Idle`,
//! `Head`, `Body` and `Service` phases of a connection (see [`conn`](crate::conn)).
//!
//! `Server::dispatch_buffered` parses as many complete requests as the buffer holds (pipelining) and
//! calls the [`Service`] for each; a responder the service *keeps* stops the parsing: later
//! requests wait their turn. So does a turn that has run for [`TURN_BUDGET_MS`]: one client's
//! pipelined batch of costly requests (publishes that each wake thousands of subscribers) must
//! not keep every other client waiting until it is done. The rest of the batch is dispatched
//! on the next turn (a zero-delay timer brings it back), after the loop has looked at
//! everyone else. On an upgraded connection it hands the buffer to the service
//! instead. The answers are serialised straight into the connection's output, to be written
//! with one `write` per batch.

use crate::body::TrailerBudget;
use crate::conn::{BodyProgress, HeldRequest, PendingBody, Phase};
use crate::request::{self, BodyKind, Framing, HttpError, KeptHead, Request};
use crate::response::{self, Body, BodyLength, HeadContext, Response};
use crate::server::{Server, ServerState};
use crate::service::{Ctx, Loop, Responder, Service, StreamId};

/// How long a loop turn may dispatch one connection's pipelined requests before it lets the
/// others have their turn (ms since the loop woke up).
pub const TURN_BUDGET_MS: u64 = 2;
/// The clock is read once per this many requests (a read costs about as much as 1/40 of the
/// cheapest request; once per request would show in the CPU per request).
const BUDGET_CHECK_EVERY: u32 = 16;

impl<S: Service> Server<S> {
    /// Parses and dispatches every complete request in the buffer, in order, until the
    /// buffer runs dry, the service holds a responder, the output is over its cap
    /// (backpressure), or the turn's budget is spent (then a timer resumes it next turn). On
    /// an upgraded connection, gives the buffered bytes to the service.
    pub(crate) fn dispatch_buffered(&mut self, r: &mut Loop<S>, key: usize) {
        let Some(conn) = self.core.conns.get_mut(key) else { return };
        if conn.rbuf.is_empty() {
            return;
        }
        // The buffer leaves the connection while requests borrow from it; `at` walks through
        // the pipelined requests and the consumed prefix is dropped once, at the end.
        let mut buf = std::mem::take(&mut conn.rbuf);
        let mut at = 0;
        let cap = self.core.config.limits.max_output_bytes;
        let mut dispatched: u32 = 0;
        loop {
            let Some(conn) = self.core.conns.get(key) else {
                self.core.pool.give(buf);
                return;
            };
            if at == buf.len() {
                break;
            }
            match &conn.phase {
                Phase::Idle | Phase::Head | Phase::Body(_) if conn.out.len() <= cap => {
                    // Before the 17th request, the 33rd, ...: a batch of 16 never reads the clock.
                    dispatched += 1;
                    if dispatched % BUDGET_CHECK_EVERY == 1
                        && dispatched > 1
                        && self.yield_if_budget_spent(r, key)
                    {
                        break;
                    }
                    match self.next_request(r, key, &mut buf, at) {
                        Some(n) => at += n,
                        None => break,
                    }
                }
                Phase::Upgraded(st) => {
                    let stream = StreamId { conn: conn.id(key), seq: st.seq };
                    self.core.dispatching = Some(key);
                    let mut ctx = Ctx { reactor: r, core: &mut self.core };
                    self.service.on_data(&mut ctx, stream, &buf[at..]);
                    self.core.dispatching = None;
                    at = buf.len();
                }
                _ => break,
            }
        }
        buf.drain(..at);
        match self.core.conns.get_mut(key) {
            Some(conn) => conn.rbuf = buf,
            None => self.core.pool.give(buf),
        }
    }

    /// If this loop turn has run for [`TURN_BUDGET_MS`] since the loop woke up: arms the
    /// timer that resumes connection `key` next turn, and says so. (Cold: a long pipelined
    /// batch reaches it, a request or a batch of 16 never does.)
    #[cold]
    #[inline(never)]
    fn yield_if_budget_spent(&mut self, r: &mut Loop<S>, key: usize) -> bool {
        let now = r.elapsed();
        let now_ms = now.as_secs().saturating_mul(1000).saturating_add(u64::from(now.subsec_millis()));
        if now_ms < r.now_ms() + TURN_BUDGET_MS {
            return false;
        }
        let conn = &mut self.core.conns[key];
        if !conn.resuming {
            conn.resuming = true;
            r.set_timer(std::time::Duration::ZERO, crate::server::ServerTimer::Resume(key as u32, conn.gen));
        }
        true
    }

    /// Handles the request at `buf[at..]`. Returns the bytes it used, or `None` if it is
    /// incomplete (or the connection must stop reading requests).
    fn next_request(&mut self, r: &mut Loop<S>, key: usize, buf: &mut Vec<u8>, at: usize) -> Option<usize> {
        if let Phase::Body(_) = self.core.conns[key].phase {
            let Phase::Body(pending) = std::mem::replace(&mut self.core.conns[key].phase, Phase::Head) else {
                return None;
            };
            return self.continue_body(r, key, buf, at, pending);
        }
        let limits = self.core.config.limits;
        let mut headers = request::header_storage();
        self.core.stats.heads_parsed_total += 1;
        let (mut req, framing) = match request::parse(&buf[at..], &mut headers, &limits) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return None,
            Err(e) if e == request::RETRY_AS_HTTP11 => {
                // HTTP/1.2..1.9: served as 1.1 (rare path: patch the line, parse again).
                request::downgrade_minor_version(&mut buf[at..]);
                return self.next_request(r, key, buf, at);
            }
            Err(e) => {
                let is_head = request::names_head_method(&buf[at..]);
                return self.core.reject(r, key, e, is_head);
            }
        };
        let head_len = framing.head_len;
        let body_end = match framing.body {
            BodyKind::None => head_len,
            BodyKind::Length(n) => {
                if buf.len() - at < head_len + n {
                    let head = KeptHead::new(&buf[at..], &req, framing);
                    self.core.await_body(key, PendingBody { head, body: BodyProgress::Length(n) });
                    return None;
                }
                req.body = &buf[at + head_len..at + head_len + n];
                head_len + n
            }
            BodyKind::Chunked => {
                // Trailer fields are header fields arriving late: they get what the head left.
                let budget = TrailerBudget {
                    bytes: limits.max_header_bytes.saturating_sub(head_len),
                    fields: limits.max_headers.saturating_sub(req.headers.len()),
                };
                let mut decoder = crate::body::ChunkedDecoder::new(budget);
                let mut decoded = Vec::new();
                let used = match decoder.decode(&buf[at + head_len..], &mut decoded, limits.max_body_bytes) {
                    Ok(used) => used,
                    Err(e) => return self.core.reject(r, key, e, framing.is_head),
                };
                if !decoder.is_done() {
                    let head = KeptHead::new(&buf[at..], &req, framing);
                    buf.drain(at + head_len..at + head_len + used);
                    let body = BodyProgress::Chunked { decoder, decoded };
                    self.core.await_body(key, PendingBody { head, body });
                    return None;
                }
                let body_end = head_len + used;
                self.dispatch(r, key, &Request { body: &decoded, ..req }, framing);
                return Some(body_end);
            }
        };
        self.dispatch(r, key, &req, framing);
        Some(body_end)
    }

    /// More input for a request whose head was parsed earlier (`pending`): if its body is
    /// now complete, rebuild the request from the kept positions and dispatch it.
    fn continue_body(
        &mut self,
        r: &mut Loop<S>,
        key: usize,
        buf: &mut Vec<u8>,
        at: usize,
        mut pending: Box<PendingBody>,
    ) -> Option<usize> {
        let framing = pending.head.framing;
        let head_len = framing.head_len;
        let max_body = self.core.config.limits.max_body_bytes;
        let body_end = match &mut pending.body {
            BodyProgress::Length(n) => {
                if buf.len() - at < head_len + *n {
                    self.core.conns[key].phase = Phase::Body(pending);
                    return None;
                }
                head_len + *n
            }
            BodyProgress::Chunked { decoder, decoded } => {
                let used = match decoder.decode(&buf[at + head_len..], decoded, max_body) {
                    Ok(used) => used,
                    Err(e) => return self.core.reject(r, key, e, framing.is_head),
                };
                if !decoder.is_done() {
                    buf.drain(at + head_len..at + head_len + used);
                    self.core.conns[key].phase = Phase::Body(pending);
                    return None;
                }
                head_len + used
            }
        };
        let raw = &buf[at..];
        let headers = pending.head.headers(raw);
        let body = match &pending.body {
            BodyProgress::Length(_) => &raw[head_len..body_end],
            BodyProgress::Chunked { decoded, .. } => decoded.as_slice(),
        };
        let req = pending.head.request(raw, &headers, body);
        self.dispatch(r, key, &req, framing);
        Some(body_end)
    }

    /// Calls the service for one complete request.
    fn dispatch(&mut self, r: &mut Loop<S>, key: usize, req: &Request<'_>, framing: Framing) {
        let core = &mut self.core;
        let conn = &mut core.conns[key];
        conn.seq = conn.seq.wrapping_add(1);
        let max = core.config.max_requests_per_connection;
        let last_allowed = max > 0 && conn.seq >= max;
        let keep_alive = framing.keep_alive && !last_allowed && !core.shutting_down;
        conn.phase = Phase::Service(HeldRequest {
            seq: conn.seq,
            keep_alive,
            is_head: framing.is_head,
            http10: req.version_minor == 0,
            note: None,
        });
        conn.clock = crate::conn::Clock::None;
        core.stats.requests_total += 1;
        let responder = Responder { conn: conn.id(key), seq: conn.seq };
        core.dispatching = Some(key);
        let mut ctx = Ctx { reactor: r, core };
        self.service.call(&mut ctx, req, responder);
        self.core.dispatching = None;
    }
}

impl<S: Service> ServerState<S> {
    /// Serialises `resp` as the answer to the connection's current request: the head into
    /// the output buffer, a static body copied after it, a large owned body queued as is.
    pub(crate) fn write_response(&mut self, key: usize, resp: Response, now_ms: u64) {
        let conn = &mut self.conns[key];
        let Phase::Service(cur) = &conn.phase else { return };
        let keep_alive = cur.keep_alive && !resp.close && !self.shutting_down;
        let connection = match (keep_alive, cur.http10) {
            (false, _) => Some(false),
            (true, true) => Some(true),
            (true, false) => None,
        };
        let with_body = !cur.is_head && !response::is_bodiless(resp.status);
        let head = HeadContext { date: self.date.get(now_ms), connection, length: BodyLength::Known };
        let out = conn.out.tail(&mut self.pool);
        let before = out.len();
        self.heads.write(out, &resp, &head);
        if let (true, Body::Static(b)) = (with_body, &resp.body) {
            out.extend_from_slice(b);
        }
        let written = out.len() - before;
        conn.out.commit(written);
        match (with_body, resp.body) {
            (true, Body::Bytes(b)) => conn.out.push_owned(&mut self.pool, b),
            (true, Body::Shared(b)) => conn.out.push_shared(&mut self.pool, &b),
            _ => {}
        }
        conn.phase = if keep_alive { Phase::Idle } else { Phase::Closing };
        conn.clock = crate::conn::Clock::Write;
        if let Some(slot) = self.stats.responses.get_mut(resp.status as usize) {
            *slot += 1;
        }
    }

    /// Writes the head of `resp` alone (a stream's or an upgrade's), delimited by `length`.
    pub(crate) fn write_head_only(
        &mut self,
        key: usize,
        resp: &Response,
        now_ms: u64,
        length: BodyLength,
        connection: Option<bool>,
    ) {
        let conn = &mut self.conns[key];
        let head = HeadContext { date: self.date.get(now_ms), connection, length };
        let out = conn.out.tail(&mut self.pool);
        let before = out.len();
        response::write_head(out, resp, &head);
        let written = out.len() - before;
        conn.out.commit(written);
        conn.clock = crate::conn::Clock::Write;
        if let Some(slot) = self.stats.responses.get_mut(resp.status as usize) {
            *slot += 1;
        }
    }

    /// Answers a request the server itself rejects. Returns `None` (stop parsing) when the
    /// connection must close after the answer, else the bytes to skip. `is_head`: the
    /// request is a HEAD, so the answer is a head without its body (as any answer to HEAD).
    pub(crate) fn reject(
        &mut self,
        r: &mut Loop<S>,
        key: usize,
        e: HttpError,
        is_head: bool,
    ) -> Option<usize> {
        let conn = &mut self.conns[key];
        conn.seq = conn.seq.wrapping_add(1);
        let cur = HeldRequest { seq: conn.seq, keep_alive: !e.close, is_head, http10: false, note: None };
        conn.phase = Phase::Service(cur);
        self.write_response(key, Response::text(e.status, e.message), r.now_ms());
        if e.close {
            self.conns[key].phase = Phase::Closing;
            None
        } else {
            // Framing is sound (no body): skip exactly this head.
            Some(e.skip)
        }
    }

    /// Parks a request whose body is still arriving, the first time its head is parsed
    /// (answering `Expect: 100-continue`: this happens once per request).
    fn await_body(&mut self, key: usize, pending: PendingBody) {
        let conn = &mut self.conns[key];
        if pending.head.framing.expect_continue {
            // The client waits for this before sending the body (RFC 9110 §10.1.1).
            conn.out.push_copy(&mut self.pool, b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        conn.phase = Phase::Body(Box::new(pending));
    }
}
