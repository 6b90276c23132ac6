//! Responses, and how they are written into a connection's output.
//!
//! A [`Response`] is a status, a content type, a few extra header lines and a body. The
//! server adds what every answer must carry (`Date`, `Server`, `Content-Length`,
//! `Connection` when it matters) while serialising straight into the connection's output
//! buffer: no intermediate string per response, no per-header allocation. Extra headers are
//! kept as preformatted lines in one `String` that is only allocated if a header is added, and
//! lines shared by many responses (one answer fanned out to many subscribers: the same ETag,
//! the same Cache-Control) can be given once, as [`Response::shared_headers`].

use std::fmt::Write as _;
use std::rc::Rc;

/// A response body.
#[derive(Debug, Clone, Default)]
pub enum Body {
    #[default]
    Empty,
    /// Borrowed for the life of the program (e.g. `b"Hello, World!"`): never copied until it
    /// is written out.
    Static(&'static [u8]),
    /// Owned bytes. Large ones are queued as they are, not copied into the output buffer.
    Bytes(Vec<u8>),
    /// Shared with other responses (one answer sent to many subscribers): built once, and
    /// queued by reference in each connection's output (copied only when small).
    Shared(Rc<[u8]>),
}

impl Body {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Static(b) => b,
            Body::Bytes(b) => b,
            Body::Shared(b) => b,
        }
    }
}

/// An answer to one request.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// Extra header lines, each `Name: value\r\n`.
    extra: String,
    /// More header lines, shared with other responses (written after `extra`).
    shared: Option<Rc<str>>,
    pub body: Body,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            content_type: None,
            extra: String::new(),
            shared: None,
            body: Body::Empty,
            close: false,
        }
    }

    /// `text/plain` with a static body.
    pub fn text(status: u16, body: &'static str) -> Response {
        Response::new(status).content_type("text/plain; charset=utf-8").body(Body::Static(body.as_bytes()))
    }

    /// `application/json` with an owned body.
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response::new(status).content_type("application/json").body(Body::Bytes(body))
    }

    pub fn content_type(mut self, ct: &'static str) -> Response {
        self.content_type = Some(ct);
        self
    }

    pub fn body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }

    /// Adds a header line. The server writes Date, Server, Content-Length and Connection
    /// itself; do not add those.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Response {
        let _ = write!(self.extra, "{name}: {value}\r\n");
        self
    }

    /// Header lines (each `Name: value\r\n`) built once and shared by many responses: a
    /// fan-out formats its ETag once per distinct answer, not once per subscriber.
    pub fn shared_headers(mut self, lines: Rc<str>) -> Response {
        self.shared = Some(lines);
        self
    }

    /// Asks the server to close the connection once this response is written.
    pub fn close(mut self) -> Response {
        self.close = true;
        self
    }

    /// The extra header lines: the response's own, then the shared ones.
    pub(crate) fn extra_headers(&self) -> [&str; 2] {
        [&self.extra, self.shared.as_deref().unwrap_or("")]
    }
}

/// The reason phrase for common status codes.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Whether a response with this status carries no body and no Content-Length.
pub fn is_bodiless(status: u16) -> bool {
    status == 204 || status == 304 || (100..200).contains(&status)
}

/// What the connection adds to the head besides the response's own headers.
pub struct HeadContext<'a> {
    pub date: &'a [u8; 29],
    /// `Some(true)` = say `Connection: keep-alive` (HTTP/1.0 client), `Some(false)` = say
    /// `Connection: close`, `None` = say nothing (HTTP/1.1 default keep-alive).
    pub connection: Option<bool>,
    /// How the body is delimited.
    pub length: BodyLength,
}

/// How the end of a response body is told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length` of the response's own body (every complete answer).
    Known,
    /// `Transfer-Encoding: chunked`: a stream to an HTTP/1.1 client, body written later.
    Chunked,
    /// Neither: the body ends when the connection closes (a stream to an HTTP/1.0 client).
    UntilClose,
}

/// Appends the status line and headers (ending with the blank line) to `out`.
pub fn write_head(out: &mut Vec<u8>, resp: &Response, ctx: &HeadContext<'_>) {
    let [extra, shared] = resp.extra_headers();
    let ct = resp.content_type.unwrap_or("");
    // One reservation for the whole head (the fixed parts are under 160 bytes), so the
    // appends below never grow the buffer one by one.
    out.reserve(160 + ct.len() + extra.len() + shared.len());
    write_status_and_date(out, resp.status, ctx.date);
    write_after_date(out, resp, ctx);
}

/// The head up to and including the Date value.
fn write_status_and_date(out: &mut Vec<u8>, status: u16, date: &[u8; 29]) {
    match status {
        // The common status lines as one constant copy each.
        200 => out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: tidings\r\nDate: "),
        304 => out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\nServer: tidings\r\nDate: "),
        status => {
            out.extend_from_slice(b"HTTP/1.1 ");
            push_u64(out, status as u64);
            out.push(b' ');
            out.extend_from_slice(reason(status).as_bytes());
            out.extend_from_slice(b"\r\nServer: tidings\r\nDate: ");
        }
    }
    out.extend_from_slice(date);
}

/// The head after the Date value: length, type, connection, extra lines, blank line.
fn write_after_date(out: &mut Vec<u8>, resp: &Response, ctx: &HeadContext<'_>) {
    if !is_bodiless(resp.status) {
        match ctx.length {
            BodyLength::Known => {
                out.extend_from_slice(b"\r\nContent-Length: ");
                push_u64(out, resp.body.as_bytes().len() as u64);
            }
            BodyLength::Chunked => out.extend_from_slice(b"\r\nTransfer-Encoding: chunked"),
            BodyLength::UntilClose => {}
        }
    }
    if let Some(ct) = resp.content_type {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(ct.as_bytes());
    }
    match ctx.connection {
        Some(true) => out.extend_from_slice(b"\r\nConnection: keep-alive\r\n"),
        Some(false) => out.extend_from_slice(b"\r\nConnection: close\r\n"),
        None => out.extend_from_slice(b"\r\n"),
    }
    let [extra, shared] = resp.extra_headers();
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(shared.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The part of the last head after its Date, kept to be copied whole into the next head of
/// the same shape: answers repeat (the same status, type, length and connection handling for
/// every `/plaintext`, every 304 of a long-poll), and a head built piece by piece costs a
/// dozen appends and a number formatted, where a copy costs one. Heads with extra header
/// lines are built every time (those lines are per answer).
#[derive(Default)]
pub struct HeadCache {
    shape: Option<HeadShape>,
    after_date: Vec<u8>,
}

/// Everything the part of a head after its Date depends on (a response without extra lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeadShape {
    status: u16,
    /// Where the static content type is (address, length): the same string is the same type.
    content_type: Option<(usize, usize)>,
    length: BodyLength,
    body_len: usize,
    connection: Option<bool>,
}

impl HeadCache {
    /// Appends the head of `resp` to `out`, as [`write_head`] does.
    pub fn write(&mut self, out: &mut Vec<u8>, resp: &Response, ctx: &HeadContext<'_>) {
        if !resp.extra.is_empty() || resp.shared.is_some() {
            return write_head(out, resp, ctx);
        }
        let shape = HeadShape {
            status: resp.status,
            content_type: resp.content_type.map(|ct| (ct.as_ptr() as usize, ct.len())),
            length: ctx.length,
            body_len: resp.body.as_bytes().len(),
            connection: ctx.connection,
        };
        if self.shape != Some(shape) {
            self.after_date.clear();
            write_after_date(&mut self.after_date, resp, ctx);
            self.shape = Some(shape);
        }
        write_status_and_date(out, resp.status, ctx.date);
        out.extend_from_slice(&self.after_date);
    }
}

/// Appends the decimal digits of `v` (no allocation, unlike `write!`).
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    // Most numbers in a head are short (a small body's length, a status): no loop for them.
    if v < 10 {
        out.push(b'0' + v as u8);
        return;
    }
    if v < 100 {
        out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_layout() {
        let mut out = Vec::new();
        let resp = Response::text(200, "hi").header("ETag", "\"3\"");
        let date = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        let length = BodyLength::Known;
        write_head(&mut out, &resp, &HeadContext { date: &date, connection: Some(false), length });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: tidings\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
             Content-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\
             ETag: \"3\"\r\n\r\n"
        );
        let mut out = Vec::new();
        write_head(&mut out, &Response::new(304), &HeadContext { date: &date, connection: None, length });
        assert!(!String::from_utf8(out).unwrap().contains("Content-Length"));
        let mut out = Vec::new();
        let length = BodyLength::Chunked;
        write_head(
            &mut out,
            &Response::new(200),
            &HeadContext { date: &date, connection: Some(false), length },
        );
        let head = String::from_utf8(out).unwrap();
        assert!(head.contains("\r\nTransfer-Encoding: chunked\r\n") && !head.contains("Content-Length"));
    }

    /// The cache writes exactly what `write_head` writes, whatever changes between two heads.
    #[test]
    fn head_cache_writes_what_write_head_writes() {
        let date = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        let later = *b"Thu, 01 Jan 1970 00:00:01 GMT";
        let ctx = |date, connection, length| HeadContext { date, connection, length };
        let cases: Vec<(Response, HeadContext<'_>)> = vec![
            (Response::text(200, "Hello, World!"), ctx(&date, None, BodyLength::Known)),
            (Response::text(200, "Hello, World!"), ctx(&date, None, BodyLength::Known)),
            (Response::text(200, "Hello, World!"), ctx(&later, None, BodyLength::Known)),
            (Response::text(200, "Hello, World"), ctx(&later, None, BodyLength::Known)),
            (Response::text(200, "Hello, World"), ctx(&later, Some(false), BodyLength::Known)),
            (Response::text(200, "Hello, World"), ctx(&later, Some(true), BodyLength::Known)),
            (Response::text(404, "Hello, World"), ctx(&later, Some(true), BodyLength::Known)),
            (Response::new(304), ctx(&later, None, BodyLength::Known)),
            (Response::new(304).content_type("text/plain"), ctx(&later, None, BodyLength::Known)),
            (Response::new(200).content_type("text/plain"), ctx(&later, None, BodyLength::Known)),
            (Response::new(200).content_type("text/html"), ctx(&later, None, BodyLength::Known)),
            (Response::new(200).content_type("text/html"), ctx(&later, None, BodyLength::Chunked)),
            (Response::new(200).content_type("text/html"), ctx(&later, None, BodyLength::UntilClose)),
            (Response::text(200, "x").header("ETag", "\"1\""), ctx(&later, None, BodyLength::Known)),
            (
                Response::text(200, "x").shared_headers("A: b\r\n".into()),
                ctx(&later, None, BodyLength::Known),
            ),
            (Response::text(200, "x"), ctx(&later, None, BodyLength::Known)),
        ];
        let mut cache = HeadCache::default();
        for (resp, ctx) in &cases {
            let (mut want, mut got) = (Vec::new(), b"before".to_vec());
            write_head(&mut want, resp, ctx);
            cache.write(&mut got, resp, ctx);
            assert_eq!(&got[6..], &want[..], "{resp:?}");
        }
        let mut n = Vec::new();
        for v in [0, 7, 10, 99, 100, 1234567890, u64::MAX] {
            n.clear();
            push_u64(&mut n, v);
            assert_eq!(n, v.to_string().as_bytes());
        }
    }
}
