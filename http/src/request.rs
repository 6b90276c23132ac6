//! Request heads: syntax by httparse, framing and safety rules by us.
//!
//! httparse checks that a head is well-formed and hands back borrowed slices (no copy). It
//! does not decide how long the body is, whether two headers contradict each other, or which
//! versions we serve. Those rules are where request smuggling lives (a front proxy and a back
//! server disagreeing on where one request ends), so they are spelled out here, after RFC 9112:
//!
//! | head | answer |
//! |---|---|
//! | Content-Length *and* Transfer-Encoding | 400, close |
//! | several Content-Length values that differ, or one that is not a number | 400, close |
//! | Transfer-Encoding other than exactly `chunked` | 501, close |
//! | Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1: its framing is faulty) | 400, close |
//! | obs-fold (a header line starting with a space), bare CR | 400, close (httparse rejects them) |
//! | HTTP/1.1 without Host, or with several | 400 |
//! | request line longer than the limit | 414, close |
//! | head longer than `max_header_bytes`, or more than `max_headers` (100) fields | 431, close |
//! | `HTTP/2.0` or later (incl. the HTTP/2 preface) | 505, close |
//! | `HTTP/1.2` .. `HTTP/1.9` | served as HTTP/1.1 |
//! | `Expect: 100-continue` in HTTP/1.0 | ignored (RFC 9110 §10.1.1) |
//!
//! A chunked body's trailer fields count toward the same two head limits (see [`crate::body`]).
//!
//! ## Header slots, without an allocation per request
//!
//! httparse writes the headers it finds into slots the caller provides. [`HeaderStorage`]
//! holds [`INLINE_HEADERS`] (100, the default `max_headers`) uninitialised slots on the
//! caller's stack: free to create, enough for every request under the default limit. Only an
//! operator who raises `max_headers` above that pays, and only for a request that actually has
//! more fields than the inline slots: its head is parsed again into a heap `spill` sized to fit.
//!
//! ## A head is parsed once, even when its body comes in many reads
//!
//! A request whose body is not all in yet waits in the connection's read buffer. Parsing its
//! head again on every read would cost head size x reads (a 16 KiB head with a body sent a
//! byte at a time). Instead, the first parse is remembered as a `KeptHead`: the framing,
//! and the positions (relative to the start of the request) of the method, target and every
//! header name and value. The head's bytes stay where they are in the buffer (only bytes
//! before the request, or decoded chunked bytes after it, are ever removed), so when the body
//! is complete the [`Request`] is rebuilt from those positions without running the parser.
use std::mem::MaybeUninit;
use std::ops::Range;

use crate::Limits;

/// Header slots on the stack, and the default of [`Limits::max_headers`].
pub const INLINE_HEADERS: usize = 100;

/// Room for httparse to write the headers it finds (see the module docs). The inline slots
/// are left uninitialised (httparse writes before it reads), so creating one costs nothing.
pub struct HeaderStorage<'b> {
    inline: [MaybeUninit<httparse::Header<'b>>; INLINE_HEADERS],
    /// Used only when `max_headers` is above [`INLINE_HEADERS`] and a request has more fields
    /// than that. Empty (no allocation) otherwise.
    spill: Vec<MaybeUninit<httparse::Header<'b>>>,
}

/// A fresh, uninitialised [`HeaderStorage`].
pub fn header_storage<'b>() -> HeaderStorage<'b> {
    HeaderStorage { inline: [const { MaybeUninit::uninit() }; INLINE_HEADERS], spill: Vec::new() }
}

/// An HTTP error answer decided by the server itself (not the application).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: &'static str,
    /// Whether the connection must be closed after the answer because its framing can no
    /// longer be trusted (we do not know where the next request starts).
    pub close: bool,
    /// When the connection stays open: the bytes of the rejected request to skip.
    pub skip: usize,
}

impl HttpError {
    pub const fn new(status: u16, message: &'static str, close: bool) -> HttpError {
        HttpError { status, message, close, skip: 0 }
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(usize),
    Chunked,
}

/// A parsed request. Everything borrows the connection's read buffer: nothing is copied.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as sent (origin-form `/path?query`, or absolute-form).
    pub target: &'a str,
    /// The path part of the target (never percent-decoded).
    pub path: &'a str,
    /// The part after `?`, or "".
    pub query: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (and 1.x, served as 1.1).
    pub version_minor: u8,
    pub headers: &'a [httparse::Header<'a>],
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// The raw value of query parameter `name` (first occurrence; not percent-decoded).
    /// `Some("")` for `?name` or `?name=`.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// What the framing analysis of a complete head found.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub is_head: bool,
}

/// What [`parse`] returns for a request line naming `HTTP/1.2` .. `HTTP/1.9`: call
/// [`downgrade_minor_version`] on the buffer and parse again (such requests are served as 1.1).
pub const RETRY_AS_HTTP11: HttpError = HttpError::new(505, "newer HTTP/1 minor version", true);

/// The version token at the end of the request line, if the line is complete ("HTTP/M.m").
/// Empty lines before it are skipped, as httparse skips them (RFC 9112 §2.2).
fn version_token(buf: &[u8]) -> Option<std::ops::Range<usize>> {
    let line = request_line_start(buf);
    let end = line + buf[line..].iter().position(|&b| b == b'\n')?;
    let end = if buf[end - 1] == b'\r' { end - 1 } else { end };
    let start = end.checked_sub(8).filter(|&s| s >= line)?;
    let v = &buf[start..end];
    (v.starts_with(b"HTTP/") && v[5].is_ascii_digit() && v[6] == b'.' && v[7].is_ascii_digit())
        .then_some(start..end)
}

/// Where the request line begins: after the empty lines a client may send first (httparse
/// skips them, RFC 9112 §2.2). `buf.len()` if there is nothing else yet.
fn request_line_start(buf: &[u8]) -> usize {
    buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len())
}

/// An incomplete head: read on, unless it is already over a limit.
fn incomplete<T>(buf: &[u8], limits: &Limits) -> Result<Option<T>, HttpError> {
    // Only an incomplete head pays for these scans. The line's CRLF does not count against
    // the limit (as in the check of a complete line in `parse`).
    let line_max = limits.max_request_line.saturating_add(2);
    if buf.len() >= line_max && !buf[..line_max].contains(&b'\n') {
        return Err(HttpError::new(414, "request line too long", true));
    }
    if buf.len() > limits.max_header_bytes {
        return Err(HttpError::new(431, "request header fields too large", true));
    }
    Ok(None)
}

/// The request line is not complete and ends with what may still become `HTTP/M.m` + CR:
/// the version httparse refused may be one [`version_error`] accepts, once the line is in.
fn version_pending(buf: &[u8]) -> bool {
    let line = &buf[request_line_start(buf)..];
    // method SP target SP version: the version is all that follows the second space.
    let Some(version) = line.splitn(3, |&b| b == b' ').nth(2) else { return false };
    !line.contains(&b'\n')
        && version.len() <= 9
        && version
            .iter()
            .zip(b"HTTP/#.#\r")
            .all(|(&b, &p)| if p == b'#' { b.is_ascii_digit() } else { b == p })
}

/// httparse only knows HTTP/1.0 and 1.1. Decide what its version error means: a later 1.x
/// (retry as 1.1), HTTP/2 or later (505), or garbage (400).
fn version_error(buf: &[u8]) -> HttpError {
    match version_token(buf).map(|r| (buf[r.start + 5], buf[r.start + 7])) {
        Some((b'1', minor)) if minor > b'1' => RETRY_AS_HTTP11,
        Some((b'2'..=b'9', _)) => HttpError::new(505, "HTTP version not supported", true),
        _ => HttpError::new(400, "malformed request line", true),
    }
}

/// Rewrites `HTTP/1.x` on the request line to `HTTP/1.1` (after [`RETRY_AS_HTTP11`]).
pub fn downgrade_minor_version(buf: &mut [u8]) {
    if let Some(r) = version_token(buf) {
        buf[r.end - 1] = b'1';
    }
}

/// Whether the request at the start of `buf` names the HEAD method, judged from its first
/// bytes alone: a rejected request may not parse, and its answer must still have no body.
pub(crate) fn names_head_method(buf: &[u8]) -> bool {
    buf[request_line_start(buf)..].starts_with(b"HEAD ")
}

/// Parses the head at the start of `buf`. `Ok(None)` = incomplete, read more.
/// On success, `headers` holds the parsed headers and the returned request borrows `buf`.
pub fn parse<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut HeaderStorage<'b>,
    limits: &Limits,
) -> Result<Option<(Request<'h>, Framing)>, HttpError>
where
    'b: 'h,
{
    let inline = limits.max_headers.min(INLINE_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let mut status = req.parse_with_uninit_headers(buf, &mut headers.inline[..inline]);
    if matches!(status, Err(httparse::Error::TooManyHeaders)) && limits.max_headers > INLINE_HEADERS {
        // A raised limit and more fields than the inline slots: parse again into slots on the
        // heap. A header line takes at least 3 bytes (`a:` LF), so `buf` cannot hold more
        // than len/3 of them: no need to allocate `max_headers` slots for a short head.
        let slots = limits.max_headers.min(buf.len() / 3 + 1);
        headers.spill.resize_with(slots, MaybeUninit::uninit);
        req = httparse::Request::new(&mut []);
        status = req.parse_with_uninit_headers(buf, &mut headers.spill);
    }
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return incomplete(buf, limits),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(431, "too many header fields", true));
        }
        // httparse refuses a version as soon as its first bytes are in, before the line ends:
        // wait for the end of the line to decide, or the verdict on `HTTP/1.7` (served as
        // 1.1) would depend on where a read happened to stop.
        Err(httparse::Error::Version) if version_pending(buf) => return incomplete(buf, limits),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => return Err(HttpError::new(400, "malformed request head", true)),
    };
    if head_len > limits.max_header_bytes {
        return Err(HttpError::new(431, "request header fields too large", true));
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    // method SP target SP HTTP/1.1 CRLF
    if method.len() + target.len() + 12 > limits.max_request_line.saturating_add(2) {
        return Err(HttpError::new(414, "request line too long", true));
    }
    let version_minor = req.version.unwrap_or(1);
    let headers: &'h [httparse::Header<'b>] = req.headers;

    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut hosts = 0;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        // Dispatch on the length first: most headers (User-Agent, Accept, ...) match none of
        // these and cost one comparison.
        match name.len() {
            14 if name.eq_ignore_ascii_case("content-length") => {
                for part in h.value.split(|&b| b == b',') {
                    let n = parse_decimal(trim(part)).ok_or(HttpError::new(
                        400,
                        "invalid Content-Length",
                        true,
                    ))?;
                    match content_length {
                        Some(prev) if prev != n => {
                            return Err(HttpError::new(400, "conflicting Content-Length", true));
                        }
                        _ => content_length = Some(n),
                    }
                }
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                if transfer_encoding {
                    return Err(HttpError::new(501, "unsupported transfer coding", true));
                }
                transfer_encoding = true;
                chunked = trim(h.value).eq_ignore_ascii_case(b"chunked");
            }
            4 if name.eq_ignore_ascii_case("host") => hosts += 1,
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in h.value.split(|&b| b == b',') {
                    let token = trim(token);
                    conn_close |= token.eq_ignore_ascii_case(b"close");
                    conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            // An HTTP/1.0 client cannot know 100 Continue: ignore its expectation (RFC 9110
            // §10.1.1) instead of sending it an interim answer it cannot parse.
            6 if version_minor == 1 && name.eq_ignore_ascii_case("expect") => {
                expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
            }
            _ => {}
        }
    }
    if transfer_encoding && version_minor == 0 {
        // HTTP/1.0 has no transfer codings: a 1.0 message that names one may have passed an
        // intermediary that framed it differently (RFC 9112 §6.1).
        return Err(HttpError::new(400, "Transfer-Encoding in HTTP/1.0", true));
    }
    if transfer_encoding && content_length.is_some() {
        return Err(HttpError::new(400, "both Content-Length and Transfer-Encoding", true));
    }
    if transfer_encoding && !chunked {
        return Err(HttpError::new(501, "unsupported transfer coding", true));
    }
    let body = match (chunked, content_length) {
        (true, _) => BodyKind::Chunked,
        (false, Some(n)) if n > 0 => BodyKind::Length(n),
        _ => BodyKind::None,
    };
    if version_minor == 1 && hosts != 1 {
        // Framing is still sound when there is no body: answer and keep the connection.
        let close = body != BodyKind::None;
        let message = if hosts == 0 { "missing Host header" } else { "several Host headers" };
        return Err(HttpError { skip: head_len, ..HttpError::new(400, message, close) });
    }
    if let BodyKind::Length(n) = body {
        if n > limits.max_body_bytes {
            return Err(HttpError::new(413, "request body too large", true));
        }
    }
    let keep_alive = if version_minor == 0 { conn_keep_alive && !conn_close } else { !conn_close };
    let (path, query) = split_target(target);
    let request = Request { method, target, path, query, version_minor, headers, body: &[] };
    let framing = Framing { head_len, body, keep_alive, expect_continue, is_head: method == "HEAD" };
    Ok(Some((request, framing)))
}

/// A parsed head remembered by position, for a request whose body is still arriving (see
/// the module docs): rebuilt into a [`Request`] without parsing again.
#[derive(Debug, Clone)]
pub(crate) struct KeptHead {
    pub framing: Framing,
    version_minor: u8,
    method: Range<usize>,
    target: Range<usize>,
    /// (name, value) of each header, in order.
    headers: Vec<(Range<usize>, Range<usize>)>,
}

impl KeptHead {
    /// Remembers `req`, parsed from `buf` (which starts where the request starts).
    pub(crate) fn new(buf: &[u8], req: &Request<'_>, framing: Framing) -> KeptHead {
        KeptHead {
            framing,
            version_minor: req.version_minor,
            method: position(buf, req.method.as_bytes()),
            target: position(buf, req.target.as_bytes()),
            headers: req
                .headers
                .iter()
                .map(|h| (position(buf, h.name.as_bytes()), position(buf, h.value)))
                .collect(),
        }
    }

    /// The headers, borrowed again from `buf` (the same bytes the head was parsed from).
    pub(crate) fn headers<'b>(&self, buf: &'b [u8]) -> Vec<httparse::Header<'b>> {
        self.headers
            .iter()
            .map(|(n, v)| httparse::Header { name: text(buf, n), value: bytes(buf, v) })
            .collect()
    }

    /// The request again, borrowing `buf`, `headers` (from [`KeptHead::headers`]) and `body`.
    pub(crate) fn request<'a>(
        &self,
        buf: &'a [u8],
        headers: &'a [httparse::Header<'a>],
        body: &'a [u8],
    ) -> Request<'a> {
        let target = text(buf, &self.target);
        let (path, query) = split_target(target);
        let method = text(buf, &self.method);
        Request { method, target, path, query, version_minor: self.version_minor, headers, body }
    }
}

/// Where `part`, a slice of `buf`, lies in it (empty if it is not in it: never the case for
/// what httparse returns, but a wrong position must not become a panic).
fn position(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= buf.len() => start..end,
        _ => 0..0,
    }
}

fn bytes<'b>(buf: &'b [u8], r: &Range<usize>) -> &'b [u8] {
    buf.get(r.clone()).unwrap_or(b"")
}

/// httparse checked these bytes (method, target, header name) are ASCII, so they are UTF-8.
fn text<'b>(buf: &'b [u8], r: &Range<usize>) -> &'b str {
    std::str::from_utf8(bytes(buf, r)).unwrap_or("")
}

/// Splits a request target into path and query. For absolute-form (`http://host/p?q`) the
/// path starts at the first `/` after the authority. Always inlined: it is on every
/// request's path, and with its second caller ([`KeptHead::request`]) the compiler kept it out
/// of line, which cost the parse of a minimal GET 2.5% more instructions.
#[inline(always)]
fn split_target(target: &str) -> (&str, &str) {
    let target = match target.as_bytes().first() {
        // origin-form, the usual case: no scheme to look for.
        Some(b'/') => target,
        _ => match target.find("://") {
            Some(i) => match target[i + 3..].find('/') {
                Some(j) => &target[i + 3 + j..],
                None => "/",
            },
            None => target,
        },
    };
    match target.as_bytes().iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, ""),
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A non-empty run of ASCII digits that fits in usize.
fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0usize, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add((b - b'0') as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: &str) -> Result<Option<Framing>, HttpError> {
        let limits = Limits::default();
        let mut buf = raw.as_bytes().to_vec();
        let mut headers = header_storage();
        match parse(&buf, &mut headers, &limits) {
            Err(e) if e == RETRY_AS_HTTP11 => {}
            other => return Ok(other?.map(|(_, f)| f)),
        }
        downgrade_minor_version(&mut buf);
        let mut headers = header_storage();
        Ok(parse(&buf, &mut headers, &limits)?.map(|(_, f)| f))
    }

    fn status(raw: &str) -> u16 {
        run(raw).err().map(|e| e.status).unwrap_or(0)
    }

    #[test]
    fn framing_rules() {
        assert_eq!(run("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap().body, BodyKind::None);
        assert_eq!(
            run("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap().body,
            BodyKind::Length(5)
        );
        assert_eq!(
            run("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").unwrap().unwrap().body,
            BodyKind::Length(5)
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), 501);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
        assert!(run("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
        assert!(run("GET / HTTP/1.7\r\nHost: a\r\n\r\n").unwrap().unwrap().keep_alive);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400);
        assert!(run("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    /// Found by fuzzing (fuzz/): a head cut right after `HTTP/1.7` (httparse refuses the
    /// version before the line ends) was 400 instead of "read on", and an empty line before
    /// the request line turned a 1.x request into a 400.
    #[test]
    fn later_versions_are_judged_once_the_line_is_in() {
        for raw in ["GET / HTTP/1.7\r\nHost: a\r\n\r\n", "\r\nGET / HTTP/1.7\r\nHost: a\r\n\r\n"] {
            for cut in 0..raw.len() {
                assert!(run(&raw[..cut]).unwrap().is_none(), "{:?}", &raw[..cut]);
            }
            assert!(run(raw).unwrap().unwrap().keep_alive, "{raw:?}");
        }
        assert!(run("GET / HTTP/2").unwrap().is_none());
        assert!(run("GET / HTTP/2.0\r").unwrap().is_none());
        assert_eq!(status("GET / HTTP/2.0\r\n"), 505);
        assert_eq!(status("\r\nGET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        // Not a version in the making: no waiting.
        assert_eq!(status("GET / XTTP/1.1"), 400);
        assert_eq!(status("GET / HTTP/1.77"), 400);
        assert_eq!(status("GET / H\u{a0}; GET "), 400);
    }

    /// Found by fuzzing (fuzz/): a request line of exactly `max_request_line` bytes is
    /// accepted once complete, but while the rest of its head was still coming, its CRLF was
    /// counted against the limit: 414 or not depended on where a read stopped.
    #[test]
    fn request_line_at_the_limit_is_accepted_whatever_the_split() {
        let limits = Limits { max_request_line: 64, ..Limits::default() };
        let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(64 - 14));
        assert_eq!(line.len(), 64 + 2);
        let raw = format!("{line}Host: a\r\n\r\n");
        for cut in 0..raw.len() {
            let mut headers = header_storage();
            assert_eq!(
                parse(&raw.as_bytes()[..cut], &mut headers, &limits).map(|r| r.is_none()),
                Ok(true),
                "cut {cut}"
            );
        }
        let mut headers = header_storage();
        assert!(parse(raw.as_bytes(), &mut headers, &limits).unwrap().is_some());
        // One byte more is over the limit, complete or not.
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n", "a".repeat(64 - 13));
        for cut in [long.len() - 2, long.len()] {
            let mut headers = header_storage();
            assert_eq!(
                parse(&long.as_bytes()[..cut], &mut headers, &limits).unwrap_err().status,
                414,
                "cut {cut}"
            );
        }
        let mut headers = header_storage();
        let complete = format!("{long}\r\n");
        assert_eq!(parse(complete.as_bytes(), &mut headers, &limits).unwrap_err().status, 414);
    }

    #[test]
    fn http10_rules() {
        // RFC 9112 §6.1: a 1.0 message with Transfer-Encoding has faulty framing.
        assert_eq!(status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert!(run("POST / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err().close);
        assert_eq!(status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"), 400);
        // RFC 9110 §10.1.1: a 1.0 client's 100-continue expectation is ignored.
        let expect = |v: &str| {
            run(&format!("POST / HTTP/{v}\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"))
                .unwrap()
                .unwrap()
                .expect_continue
        };
        assert!(!expect("1.0"));
        assert!(expect("1.1"));
        assert!(expect("1.5"));
    }

    fn with_headers(n: usize) -> String {
        let headers: String = (1..n).map(|i| format!("X-{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}\r\n")
    }

    #[test]
    fn header_count_limit_is_max_headers() {
        let count = |raw: &str, max_headers: usize| {
            let limits = Limits { max_headers, max_header_bytes: 64 * 1024, ..Limits::default() };
            let mut headers = header_storage();
            match parse(raw.as_bytes(), &mut headers, &limits) {
                Ok(Some((req, _))) => Ok(req.headers.len()),
                Ok(None) => panic!("incomplete"),
                Err(e) => Err(e.status),
            }
        };
        assert_eq!(Limits::default().max_headers, 100);
        assert_eq!(count(&with_headers(100), 100), Ok(100));
        assert_eq!(count(&with_headers(101), 100), Err(431));
        assert_eq!(count(&with_headers(5), 5), Ok(5));
        assert_eq!(count(&with_headers(6), 5), Err(431));
        // Above the inline slots: the spill holds them.
        assert_eq!(count(&with_headers(101), 1000), Ok(101));
        assert_eq!(count(&with_headers(1000), 1000), Ok(1000));
        assert_eq!(count(&with_headers(1001), 1000), Err(431));
        // An incomplete head with more fields than the limit is already over it.
        let cut = with_headers(101);
        let limits = Limits { max_header_bytes: 64 * 1024, ..Limits::default() };
        let mut headers = header_storage();
        assert_eq!(parse(&cut.as_bytes()[..cut.len() - 2], &mut headers, &limits).unwrap_err().status, 431);
    }

    #[test]
    fn kept_head_rebuilds_the_same_request() {
        let raw = b"\r\nPOST http://h/p/q?a=1&b HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-A: 1 2\r\nContent-Length: 3\r\n\r\n";
        let mut headers = header_storage();
        let (req, framing) = parse(raw, &mut headers, &Limits::default()).unwrap().unwrap();
        let kept = KeptHead::new(raw, &req, framing);
        // The buffer moves (it is the connection's, and grows as the body arrives).
        let moved = [raw.as_slice(), b"abc"].concat();
        let hs = kept.headers(&moved);
        let again = kept.request(&moved, &hs, b"abc");
        assert_eq!(
            (again.method, again.target, again.path, again.query, again.version_minor),
            (req.method, req.target, req.path, req.query, req.version_minor)
        );
        let pairs = |hs: &[httparse::Header<'_>]| {
            hs.iter().map(|h| (h.name.to_string(), h.value.to_vec())).collect::<Vec<_>>()
        };
        assert_eq!(pairs(again.headers), pairs(req.headers));
        assert_eq!(again.body, b"abc");
        assert_eq!(kept.framing.body, BodyKind::Length(3));
    }

    #[test]
    fn head_method_is_recognised_before_parsing() {
        assert!(names_head_method(b"HEAD / HTTP/1.1\r\n"));
        assert!(names_head_method(b"\r\nHEAD /x HTTP/2.0\r\n"));
        assert!(!names_head_method(b"HEADX / HTTP/1.1\r\n"));
        assert!(!names_head_method(b"GET / HTTP/1.1\r\n"));
        assert!(!names_head_method(b"HEA"));
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &str| run(raw).unwrap().unwrap().keep_alive;
        assert!(ka("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn targets() {
        assert_eq!(split_target("/a/b?x=1&y"), ("/a/b", "x=1&y"));
        assert_eq!(split_target("http://h:1/p?q"), ("/p", "q"));
        assert_eq!(split_target("http://h"), ("/", ""));
        assert_eq!(split_target("*"), ("*", ""));
    }
}
