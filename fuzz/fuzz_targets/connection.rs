//! The whole connection state machine (read, parse, pipelining, bodies, 100-continue, kept
//! responders, backpressure, lingering close) fed arbitrary bytes, split at arbitrary points,
//! through a real `http::Server` on a real reactor over TCP loopback.
//!
//! Input layout: `flags`, then `flags & 7` split bytes (each a position as a fraction of the
//! stream, /256), then the byte stream the client sends. Flags: bit 3-4 close mode (FIN, RST,
//! plain close), bit 5 = client reads only at the end (lets output back up), bit 6 = small
//! client receive buffer (server writes go partial and wait for EPOLLOUT).
//!
//! Checked:
//! - every response received starts with `HTTP/1.1 ` and is well-framed (see
//!   `fuzz_support::responses`);
//! - the answers are the right ones, in order: a model walks the whole byte stream at once,
//!   request after request (`http::request::parse` and the chunked decoder on the unsplit
//!   stream, the service's routes, the keep-alive rules and the per-connection request cap)
//!   and says what each answer must be: status, body (none for HEAD), `Connection` header,
//!   and where the server must stop. The server, which saw the stream in arbitrary pieces,
//!   must agree: a request split across reads is answered as if it came whole. A request the
//!   model rejects must be rejected too (any rejection status when it closes the connection:
//!   the status of a head cut short can depend on where the cut is, e.g. 431 before a later
//!   syntax error). `100 Continue` only for a request with `Expect: 100-continue` and a body,
//!   at most once, before its answer. With a clean close (FIN read to EOF) nothing may be
//!   missing; otherwise what came must be a prefix of the model's list;
//! - the loop never spins; after the client closes, the server holds no connection, no timer
//!   and no epoll registration, and no kept responder is left unanswered.

#![no_main]

use std::cell::RefCell;

use fuzz_support::loopback::{CloseMode, Loopback};
use fuzz_support::responses::{self, Received};
use fuzz_support::Bytes;
use http::body::{ChunkedDecoder, TrailerBudget};
use http::request::{self, BodyKind, HttpError};
use http::{Body, Config, Ctx, Limits, Request, Responder, Response, Service};
use libfuzzer_sys::fuzz_target;
use reactor::{Reactor, Remote};

const MAX_INPUT: usize = 4096;
const LIMITS: Limits = Limits {
    max_header_bytes: 1024,
    max_headers: 16,
    max_request_line: 256,
    max_body_bytes: 1024,
    max_output_bytes: 4096,
};
const MAX_REQUESTS: u32 = 32;
const BIG: usize = 8 * 1024;

/// Routes: `/later` keeps the responder and answers it from a posted message (the path of
/// answers that come back through the loop); `/close` asks to close; `/big` is larger than
/// the output cap; `/echo` returns the body; `/nothing` is a 304; anything else 200 `ok`.
struct Svc {
    remote: Remote<()>,
    kept: Vec<Responder>,
}

impl Service for Svc {
    type Msg = ();
    type Note = ();
    type Timer = ();

    fn call(&mut self, ctx: &mut Ctx<'_, Svc>, req: &Request<'_>, responder: Responder) {
        let resp = match req.path {
            "/later" => {
                self.kept.push(responder);
                let _ = self.remote.post(());
                return;
            }
            "/close" => Response::text(200, "bye").close(),
            "/big" => Response::new(200).body(Body::Bytes(vec![b'x'; BIG])),
            "/echo" => {
                let mut body = b"echo:".to_vec();
                body.extend_from_slice(req.body);
                Response::new(200).body(Body::Bytes(body))
            }
            "/nothing" => Response::new(304),
            _ => Response::text(200, "ok"),
        };
        let _ = ctx.respond(responder, resp);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Svc>, _msg: ()) {
        for r in self.kept.drain(..) {
            // Err(Closed) if the client left meanwhile: a harmless no-op.
            let _ = ctx.respond(r, Response::text(200, "later"));
        }
    }
}

fn harness() -> Loopback<Svc> {
    let reactor = Reactor::new().expect("reactor");
    let svc = Svc { remote: reactor.remote(), kept: Vec::new() };
    let config = Config {
        limits: LIMITS,
        max_requests_per_connection: MAX_REQUESTS,
        read_buffer: 512,
        ..Config::default()
    };
    Loopback::new(config, reactor, svc)
}

thread_local! {
    static HARNESS: RefCell<Option<Loopback<Svc>>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let mut input = Bytes::new(data);
    let flags = input.u8();
    let splits: Vec<u8> = (0..flags & 7).map(|_| input.u8()).collect();
    let stream = input.rest();
    let mode = match (flags >> 3) & 3 {
        0 | 3 => CloseMode::Fin,
        1 => CloseMode::Reset,
        _ => CloseMode::Drop,
    };
    let read_late = flags & 0x20 != 0;
    let small_rcvbuf = flags & 0x40 != 0;

    let mut cuts: Vec<usize> = splits.iter().map(|&s| s as usize * stream.len() / 256).collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    cuts.dedup();

    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        let lb = h.get_or_insert_with(harness);
        let mut client = lb.connect(small_rcvbuf);
        for w in cuts.windows(2) {
            lb.send(&mut client, &stream[w[0]..w[1]], !read_late);
            if client.eof || client.reset || client.write_broken {
                break;
            }
        }
        lb.settle(&mut client, true);
        let (received, complete) = lb.finish(client, mode);
        assert!(lb.server.service().kept.is_empty(), "a kept responder was never answered");
        assert_eq!(lb.timers(), 0, "timers left behind");
        let got = responses::check(&received, complete);
        compare(&got, &model(stream), complete);
    });
});

// ----- the model -----------------------------------------------------------------------------

/// One answer the model expects.
#[derive(Debug)]
struct Expected {
    /// `Err(keeps)` = rejected by the server: with `keeps`, exactly a 400 that keeps the
    /// connection (a Host problem); without, any rejection status, then the connection ends.
    status: Result<u16, bool>,
    /// The body, for a service answer to a non-HEAD request.
    body: Option<Vec<u8>>,
    /// The connection ends after this answer (`Connection: close`).
    close: bool,
    /// HTTP/1.0 keep-alive (`Connection: keep-alive`).
    http10_keep: bool,
    /// A `100 Continue` may come before this answer.
    may_continue: bool,
}

struct Model {
    answers: Vec<Expected>,
    /// After the last answer: an incomplete request that may have been sent `100 Continue`.
    trailing_continue: bool,
}

/// The server's parse of the request at the start of `rest`, 1.x retry included: the framing
/// and the number of header fields.
#[allow(clippy::type_complexity)]
fn parse_one(rest: &[u8]) -> (Vec<u8>, Result<Option<(request::Framing, usize)>, HttpError>) {
    let mut buf = rest.to_vec();
    let mut headers = request::header_storage();
    if matches!(request::parse(&buf, &mut headers, &LIMITS), Err(e) if e == request::RETRY_AS_HTTP11) {
        request::downgrade_minor_version(&mut buf);
    }
    let mut headers = request::header_storage();
    let verdict = request::parse(&buf, &mut headers, &LIMITS).map(|o| o.map(|(r, f)| (f, r.headers.len())));
    (buf, verdict)
}

fn rejected(e: HttpError, may_continue: bool) -> Expected {
    let status = if e.close { Err(false) } else { Err(true) };
    Expected { status, body: None, close: e.close, http10_keep: false, may_continue }
}

/// The answers to `stream` read whole, in order.
fn model(stream: &[u8]) -> Model {
    let mut answers = Vec::new();
    let mut at = 0;
    let mut seq: u32 = 0;
    let mut trailing_continue = false;
    while at < stream.len() {
        let (buf, verdict) = parse_one(&stream[at..]);
        let (framing, fields) = match verdict {
            Ok(None) => break,
            Err(e) => {
                seq += 1;
                answers.push(rejected(e, false));
                if e.close {
                    break;
                }
                at += e.skip;
                continue;
            }
            Ok(Some(parsed)) => parsed,
        };
        let head_len = framing.head_len;
        let may_continue = framing.expect_continue && framing.body != BodyKind::None;
        let (body, used) = match framing.body {
            BodyKind::None => (Vec::new(), head_len),
            BodyKind::Length(n) => {
                if buf.len() < head_len + n {
                    trailing_continue = may_continue;
                    break;
                }
                (buf[head_len..head_len + n].to_vec(), head_len + n)
            }
            BodyKind::Chunked => {
                // Trailers get what the head left of the head limits.
                let budget = TrailerBudget {
                    bytes: LIMITS.max_header_bytes - head_len,
                    fields: LIMITS.max_headers - fields,
                };
                let mut d = ChunkedDecoder::new(budget);
                let mut body = Vec::new();
                match d.decode(&buf[head_len..], &mut body, LIMITS.max_body_bytes) {
                    Err(e) => {
                        answers.push(rejected(e, may_continue));
                        break;
                    }
                    Ok(_) if !d.is_done() => {
                        trailing_continue = may_continue;
                        break;
                    }
                    Ok(n) => (body, head_len + n),
                }
            }
        };
        // What the service answers (see `Svc::call`).
        let mut headers = request::header_storage();
        let (req, _) = request::parse(&buf, &mut headers, &LIMITS).unwrap().unwrap();
        let (status, mut answer, asks_close): (u16, Vec<u8>, bool) = match req.path {
            "/later" => (200, b"later".to_vec(), false),
            "/close" => (200, b"bye".to_vec(), true),
            "/big" => (200, vec![b'x'; BIG], false),
            "/echo" => (200, [b"echo:".as_slice(), &body].concat(), false),
            "/nothing" => (304, Vec::new(), false),
            _ => (200, b"ok".to_vec(), false),
        };
        seq += 1;
        let keep = framing.keep_alive && seq < MAX_REQUESTS && !asks_close;
        if framing.is_head || http::response::is_bodiless(status) {
            answer.clear();
        }
        answers.push(Expected {
            status: Ok(status),
            body: Some(answer),
            close: !keep,
            http10_keep: keep && req.version_minor == 0,
            may_continue,
        });
        if !keep {
            break;
        }
        at += used;
    }
    Model { answers, trailing_continue }
}

fn compare(got: &[Received], model: &Model, complete: bool) {
    let want = &model.answers;
    let mut i = 0;
    let mut continued = false;
    for r in got {
        if r.status == 100 {
            let ok = want.get(i).map_or(model.trailing_continue, |w| w.may_continue);
            assert!(ok && !continued, "unexpected 100 Continue before answer {i}; model: {want:?}");
            continued = true;
            continue;
        }
        let Some(w) = want.get(i) else {
            panic!("answer {i} ({:?}) beyond the model's {} answers: {want:?}", r.head, want.len());
        };
        match w.status {
            Ok(status) => {
                assert_eq!(r.status, status, "answer {i}: {:?}; model: {w:?}", r.head);
                if let Some(body) = &w.body {
                    assert!(
                        r.body == *body,
                        "answer {i}: body {:?}; model: {w:?}",
                        String::from_utf8_lossy(&r.body)
                    );
                }
            }
            Err(true) => assert_eq!(r.status, 400, "answer {i}: {:?}; model: {w:?}", r.head),
            Err(false) => {
                assert!(
                    [400, 413, 414, 431, 501, 505].contains(&r.status),
                    "answer {i}: {:?}; model: {w:?}",
                    r.head
                )
            }
        }
        let connection = r.header("connection").map(str::to_ascii_lowercase);
        let expect = if w.close {
            Some("close")
        } else if w.http10_keep {
            Some("keep-alive")
        } else {
            None
        };
        assert_eq!(connection.as_deref(), expect, "answer {i}: Connection header; model: {w:?}");
        i += 1;
        continued = false;
    }
    if complete {
        assert_eq!(i, want.len(), "answers missing after a clean close; model: {want:?}");
    }
}
