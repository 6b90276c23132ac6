//! Request-head parsing and framing rules (`http::request::parse`, with the server's
//! `RETRY_AS_HTTP11` + `downgrade_minor_version` step for HTTP/1.2..1.9) and chunked body
//! decoding (`http::body::ChunkedDecoder`) on arbitrary bytes.
//!
//! Input layout: `ctl`, then the bytes. `ctl` bit 0 picks small limits (so 413/414/431 are
//! reachable, including 431 for too many fields or trailers), the rest of `ctl` picks where the input is split in two for the "split reads
//! decode the same" checks.
//!
//! Checked, beyond "no panic":
//! - a rejected head has a status in {400, 413, 414, 431, 501, 505}; only the Host errors (400)
//!   keep the connection, skipping exactly the head;
//! - the 1.x retry changes exactly one byte (a 1.x minor version digit to `1`), and the
//!   second parse never asks for another retry;
//! - an incomplete head is within the limits (no LF within the request-line limit, no more
//!   than `max_header_bytes`);
//! - an accepted head: head_len <= input and <= max_header_bytes, ends with LF; every prefix
//!   of it is "incomplete" (not an error: a head arriving in pieces is read on, whatever the
//!   split); re-parsing the head alone gives the same framing, and so does the head after an
//!   empty line (RFC 9112 §2.2); the framing agrees with the headers (Content-Length vs
//!   Transfer-Encoding, Host count, keep-alive rules, body limit); path/query are what the
//!   target says; an HTTP/1.0 head has no Transfer-Encoding and no 100-continue expectation;
//! - chunked decoding: used <= input, decoded <= used, decoded <= max_body, and it matches a
//!   simple reference decoder (the chunk-extension grammar, the 1 KiB size-line bound,
//!   trailer fields as header fields within what the head left of the head limits): same
//!   outcome whole, split in two, and byte by byte.

#![no_main]

use http::body::{ChunkedDecoder, TrailerBudget};
use http::request::{self, BodyKind, HttpError};
use http::Limits;
use libfuzzer_sys::fuzz_target;

const REJECT_STATUSES: [u16; 6] = [400, 413, 414, 431, 501, 505];

fn limits(small: bool) -> Limits {
    if small {
        Limits {
            max_header_bytes: 200,
            max_headers: 8,
            max_request_line: 64,
            max_body_bytes: 100,
            max_output_bytes: 1024,
        }
    } else {
        Limits::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else { return };
    let limits = limits(ctl & 1 == 1);
    let split = if input.is_empty() { 0 } else { (ctl >> 1) as usize * input.len() / 128 };
    check_head(input, &limits);
    // The chunked decoder on the raw bytes, and on what follows a head if there is one.
    let budget = TrailerBudget { bytes: limits.max_header_bytes / 4, fields: limits.max_headers / 4 };
    check_chunked(input, split, limits.max_body_bytes, budget);
});

fn check_rejection(e: &HttpError, buf_len: usize) {
    assert!(REJECT_STATUSES.contains(&e.status), "unexpected status {e:?}");
    if e.close {
        // `skip` is not used when the connection closes (a Host error on a request with a
        // body still says where its head ends).
        assert!(e.skip <= buf_len, "{e:?} for {buf_len} bytes");
    } else {
        // Only a Host problem on a request without a body keeps the connection.
        assert_eq!(e.status, 400, "{e:?}");
        assert!(e.skip > 0 && e.skip <= buf_len, "{e:?} for {buf_len} bytes");
    }
}

/// What the server does before it parses for good: parse once, and on `RETRY_AS_HTTP11`
/// patch the version to 1.1 (parsing again happens in the caller, which keeps the borrow).
/// Returns the buffer to parse (patched only after a retry).
fn downgrade_if_asked(input: &[u8], limits: &Limits) -> Vec<u8> {
    let mut buf = input.to_vec();
    let mut headers = request::header_storage();
    let retry = matches!(request::parse(&buf, &mut headers, limits), Err(e) if e == request::RETRY_AS_HTTP11);
    if retry {
        request::downgrade_minor_version(&mut buf);
        let changed: Vec<usize> = (0..buf.len()).filter(|&i| buf[i] != input[i]).collect();
        let [i] = changed[..] else { panic!("the 1.x downgrade changed {changed:?}") };
        assert!(buf[i] == b'1' && (b'2'..=b'9').contains(&input[i]), "downgrade patch at {i}");
        assert!(buf[..i].ends_with(b"HTTP/1."), "downgrade patched something else than a version");
    }
    buf
}

/// The server's whole parse: framing only.
fn run(input: &[u8], limits: &Limits) -> Result<Option<request::Framing>, HttpError> {
    let buf = downgrade_if_asked(input, limits);
    let mut headers = request::header_storage();
    Ok(request::parse(&buf, &mut headers, limits)?.map(|(_, f)| f))
}

fn check_head(input: &[u8], limits: &Limits) {
    let buf = downgrade_if_asked(input, limits);
    let mut headers = request::header_storage();
    let (req, framing) = match request::parse(&buf, &mut headers, limits) {
        Err(e) => {
            assert_ne!(e, request::RETRY_AS_HTTP11, "asked to retry after the downgrade");
            check_rejection(&e, buf.len());
            return;
        }
        Ok(None) => {
            assert!(buf.len() <= limits.max_header_bytes, "incomplete head beyond the limit");
            // The request line may take `max_request_line` bytes plus its CRLF.
            let window = &buf[..buf.len().min(limits.max_request_line + 2)];
            assert!(
                window.contains(&b'\n') || buf.len() <= limits.max_request_line + 1,
                "incomplete request line beyond the limit"
            );
            return;
        }
        Ok(Some(parsed)) => parsed,
    };

    // Sizes.
    let head_len = framing.head_len;
    assert!(head_len <= buf.len() && head_len <= limits.max_header_bytes);
    assert!(head_len > 0 && buf[head_len - 1] == b'\n');
    assert!(req.headers.len() <= limits.max_headers);

    // Framing against the headers.
    let all = |name: &str| -> Vec<&[u8]> {
        req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect()
    };
    let lengths = all("content-length");
    let codings = all("transfer-encoding");
    let hosts = all("host").len();
    match framing.body {
        BodyKind::Chunked => {
            assert!(lengths.is_empty(), "chunked with Content-Length");
            assert_eq!(codings.len(), 1);
            assert!(trim(codings[0]).eq_ignore_ascii_case(b"chunked"));
        }
        BodyKind::Length(n) => {
            assert!(codings.is_empty());
            assert!(n > 0 && n <= limits.max_body_bytes);
            for v in &lengths {
                for part in v.split(|&b| b == b',') {
                    assert_eq!(std::str::from_utf8(trim(part)).ok().and_then(|s| s.parse().ok()), Some(n));
                }
            }
        }
        BodyKind::None => {
            assert!(codings.is_empty());
            for v in &lengths {
                for part in v.split(|&b| b == b',') {
                    assert_eq!(trim(part).iter().filter(|&&b| b != b'0').count(), 0, "non-zero length");
                }
            }
        }
    }
    if req.version_minor == 1 {
        assert_eq!(hosts, 1);
    } else {
        assert_eq!(req.version_minor, 0);
        // RFC 9112 §6.1, RFC 9110 §10.1.1.
        assert!(codings.is_empty(), "HTTP/1.0 with Transfer-Encoding accepted");
        assert!(!framing.expect_continue, "HTTP/1.0 expectation not ignored");
    }
    let tokens: Vec<Vec<u8>> = all("connection")
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| trim(t).to_ascii_lowercase())
        .collect();
    let close = tokens.iter().any(|t| t == b"close");
    let keep = tokens.iter().any(|t| t == b"keep-alive");
    assert_eq!(framing.keep_alive, if req.version_minor == 0 { keep && !close } else { !close });
    assert_eq!(framing.is_head, req.method == "HEAD");

    // Target pieces: path and query are slices of the target.
    assert!(req.query.is_empty() || req.target.ends_with(req.query));
    assert!(!req.path.contains('?'));
    if !req.target.contains("://") {
        let expect = match req.query {
            "" if !req.target.ends_with('?') => req.path.to_string(),
            q => format!("{}?{q}", req.path),
        };
        assert_eq!(req.target, expect);
    }
    // Accessors must not panic on anything.
    let _ = req.query_param("since");
    let _ = req.query_param("");
    let _ = req.header("if-none-match");

    // The head alone parses to the same framing (nothing after it matters) ...
    let again = run(&input[..head_len], limits).expect("head alone").expect("head alone complete");
    assert_eq!(again.head_len, head_len);
    assert_eq!(again.body, framing.body);
    assert_eq!(again.keep_alive, framing.keep_alive);
    // ... also after an empty line, which a server ignores before a request line ...
    let mut led = b"\r\n".to_vec();
    led.extend_from_slice(&input[..head_len]);
    if head_len + 2 <= limits.max_header_bytes {
        match run(&led, limits) {
            Ok(Some(f)) => {
                assert_eq!(f.head_len, head_len + 2);
                assert_eq!(f.body, framing.body);
                assert_eq!(f.keep_alive, framing.keep_alive);
            }
            other => panic!("the head after an empty line gave {other:?}"),
        }
    }
    // ... and no prefix of it is an error: a head arriving in pieces is read on, not rejected.
    for cut in prefix_cuts(head_len) {
        match run(&input[..cut], limits) {
            Ok(None) => {}
            other => panic!("prefix {cut}/{head_len} of an accepted head gave {other:?}"),
        }
    }

    if framing.body == BodyKind::Chunked {
        // What the server gives the trailers: what the head left of the head limits.
        let budget = TrailerBudget {
            bytes: limits.max_header_bytes - head_len,
            fields: limits.max_headers - req.headers.len(),
        };
        check_chunked(&buf[head_len..], (buf.len() - head_len) / 2, limits.max_body_bytes, budget);
    }
}

/// A handful of prefix lengths to try (all of them for short heads).
fn prefix_cuts(len: usize) -> Vec<usize> {
    if len <= 64 {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..16).map(|i| i * len / 16).collect();
    v.extend([len - 1, len - 2, len - 3, len - 4]);
    v
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

// ----- chunked -------------------------------------------------------------------------------

/// What decoding a byte stream came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Body complete: decoded data, input bytes used.
    Done(Vec<u8>, usize),
    /// All input used, body not complete yet (decoded so far).
    More(Vec<u8>),
    /// Rejected with this status.
    Err(u16),
}

fn decode_pieces(input: &[u8], cuts: &[usize], max_body: usize, budget: TrailerBudget) -> Outcome {
    let mut d = ChunkedDecoder::new(budget);
    let mut out = Vec::new();
    let mut used = 0;
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let piece = &input[start..end];
        match d.decode(piece, &mut out, max_body) {
            Err(e) => {
                assert!(e.close);
                return Outcome::Err(e.status);
            }
            Ok(n) => {
                assert!(n <= piece.len());
                used += n;
                assert!(out.len() <= used, "decoded more than consumed");
                assert!(out.len() <= max_body, "decoded beyond max_body");
                if d.is_done() {
                    return Outcome::Done(out, used);
                }
                assert_eq!(n, piece.len(), "stopped early without being done");
            }
        }
        start = end;
    }
    Outcome::More(out)
}

fn check_chunked(input: &[u8], split: usize, max_body: usize, budget: TrailerBudget) {
    let whole = decode_pieces(input, &[], max_body, budget);
    assert_eq!(whole, reference(input, max_body, budget), "decoder disagrees with the reference");
    let split = split.min(input.len());
    assert_eq!(decode_pieces(input, &[split], max_body, budget), whole, "split at {split}");
    if input.len() <= 512 {
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(decode_pieces(input, &every, max_body, budget), whole, "byte by byte");
    }
    if let Outcome::Err(s) = whole {
        assert!([400, 413, 431].contains(&s));
    }
}

/// RFC 9112 §7.1 as `http::body` documents it, written as a straight-line recursive descent
/// over the whole input (where the decoder is a byte-at-a-time state machine):
/// chunk-size = 1..=15 hex digits; chunk-ext = `*( BWS ";" BWS name [ BWS "=" BWS value ] )`
/// with value = token / quoted-string; the size line at most 1024 bytes before its CRLF;
/// CRLF after the size line and the data; last chunk 0; trailer field lines
/// `token ":" value` (value = VCHAR / SP / HTAB / obs-text) within `budget` (bytes of field
/// lines with their CRLF, fields: 431 past either); the empty line.
fn reference(input: &[u8], max_body: usize, budget: TrailerBudget) -> Outcome {
    const BAD: Outcome = Outcome::Err(400);
    const TOO_LARGE: Outcome = Outcome::Err(431);
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let ws = |b: u8| b == b' ' || b == b'\t';
    // VCHAR, SP, HTAB, obs-text: field values, quoted-pair; qdtext is this minus `"` and `\`.
    let visible = |b: u8| ws(b) || (0x21..=0x7e).contains(&b) || b >= 0x80;
    let mut i = 0;
    let mut out = Vec::new();
    let mut total: usize = 0;
    let mut line: usize;
    macro_rules! next {
        () => {{
            if i >= input.len() {
                return Outcome::More(out);
            }
            i += 1;
            input[i - 1]
        }};
    }
    // A byte of the size line: 1024 of them at most before the CR.
    macro_rules! line_byte {
        () => {{
            let b = next!();
            if b != b'\r' {
                line += 1;
                if line > 1024 {
                    return BAD;
                }
            }
            b
        }};
    }
    loop {
        // Size line.
        line = 0;
        let mut size: u64 = 0;
        let mut digits = 0;
        let mut b = line_byte!();
        while b.is_ascii_hexdigit() {
            if digits == 15 {
                return BAD;
            }
            size = size * 16 + (b as char).to_digit(16).unwrap() as u64;
            digits += 1;
            b = line_byte!();
        }
        if digits == 0 {
            return BAD;
        }
        // Extensions, each starting at `b`, until the CR.
        while b != b'\r' {
            while ws(b) {
                b = line_byte!();
            }
            if b != b';' {
                return BAD;
            }
            b = line_byte!();
            while ws(b) {
                b = line_byte!();
            }
            if !tchar(b) {
                return BAD;
            }
            while tchar(b) {
                b = line_byte!();
            }
            let mut spaced = false;
            while ws(b) {
                spaced = true;
                b = line_byte!();
            }
            if b == b'=' {
                b = line_byte!();
                while ws(b) {
                    b = line_byte!();
                }
                if b == b'"' {
                    loop {
                        b = line_byte!();
                        match b {
                            b'"' => break,
                            b'\\' => {
                                if !visible(line_byte!()) {
                                    return BAD;
                                }
                            }
                            _ if visible(b) => {}
                            _ => return BAD,
                        }
                    }
                    b = line_byte!();
                } else if tchar(b) {
                    while tchar(b) {
                        b = line_byte!();
                    }
                } else {
                    return BAD;
                }
            } else if spaced && b == b'\r' {
                // Whitespace right before the CRLF.
                return BAD;
            }
        }
        if next!() != b'\n' {
            return BAD;
        }
        if size == 0 {
            break;
        }
        total += size as usize;
        if total > max_body {
            return Outcome::Err(413);
        }
        for _ in 0..size {
            let b = next!();
            out.push(b);
        }
        if next!() != b'\r' || next!() != b'\n' {
            return BAD;
        }
    }
    // Trailer section.
    let mut bytes_left = budget.bytes;
    let mut fields_left = budget.fields;
    macro_rules! field_byte {
        ($b:expr) => {{
            let b = $b;
            if bytes_left == 0 {
                return TOO_LARGE;
            }
            bytes_left -= 1;
            b
        }};
    }
    loop {
        let b = next!();
        if b == b'\r' {
            if next!() != b'\n' {
                return BAD;
            }
            return Outcome::Done(out, i);
        }
        let mut b = field_byte!(b);
        if !tchar(b) {
            return BAD;
        }
        if fields_left == 0 {
            return TOO_LARGE;
        }
        fields_left -= 1;
        while tchar(b) {
            b = field_byte!(next!());
        }
        if b != b':' {
            return BAD;
        }
        loop {
            b = field_byte!(next!());
            if b == b'\r' {
                break;
            }
            if !visible(b) {
                return BAD;
            }
        }
        if field_byte!(next!()) != b'\n' {
            return BAD;
        }
    }
}
