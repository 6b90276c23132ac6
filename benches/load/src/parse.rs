//! Reading what the server sends: HTTP/1.1 responses (status line + headers through
//! `httparse::Response`, bodies framed by Content-Length) and the few JSON fields of the hub's
//! answers the load generator checks.
//!
//! Chunked bodies are not supported (the tidings server never sends them): seeing
//! `Transfer-Encoding` is a parse error, as is a body-carrying response without
//! Content-Length, so a misbehaving server is reported instead of mis-measured.

/// Longest response head accepted before calling the response malformed.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// One complete response at the start of a buffer.
#[derive(Debug)]
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// The server will close the connection after this response (`Connection: close`, or
    /// HTTP/1.0 without keep-alive).
    pub close: bool,
    /// The raw ETag value (with its quotes), if any.
    pub etag: Option<&'a [u8]>,
    /// Bytes of the buffer this response occupies (head + body).
    pub len: usize,
}

/// Parses the response at the start of `buf`. `Ok(None)` = incomplete, read more.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response<'_>>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err("response head too large"),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many response headers"),
        Err(_) => return Err("malformed response head"),
    };
    let status = r.code.ok_or("malformed status line")?;
    let mut close = r.version == Some(0);
    let mut content_length: Option<usize> = None;
    let mut etag = None;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| "bad Content-Length")?.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad Content-Length");
            }
            let n: usize = v.parse().map_err(|_| "bad Content-Length")?;
            if content_length.is_some_and(|old| old != n) {
                return Err("conflicting Content-Length headers");
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("Transfer-Encoding (chunked) responses are not supported");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && r.version == Some(0) {
                    close = false;
                }
            }
        } else if h.name.eq_ignore_ascii_case("etag") {
            etag = Some(h.value);
        }
    }
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let body_len = match content_length {
        _ if no_body => 0,
        Some(n) if n > MAX_BODY => return Err("response body too large"),
        Some(n) => n,
        None => return Err("response without Content-Length"),
    };
    let len = head_len + body_len;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Response { status, body: &buf[head_len..len], close, etag, len }))
}

/// The unsigned integer after `"key":` in a JSON text (first occurrence). Enough for the
/// hub's flat answers (`/stats`, publish acknowledgements, `next`, `missed`).
pub fn json_u64(body: &[u8], key: &str) -> Option<u64> {
    let mut pat = Vec::with_capacity(key.len() + 3);
    pat.push(b'"');
    pat.extend_from_slice(key.as_bytes());
    pat.extend_from_slice(b"\":");
    let at = find(body, &pat)? + pat.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits]).ok()?.parse().ok()
}

/// The `(seq, data)` pairs of a `/sub` answer's `"messages"` array, in order. Only plain
/// string data without escapes is understood (what the load generator publishes); anything
/// else is an error so that it is noticed.
pub fn messages(body: &[u8]) -> Result<Vec<(u64, &[u8])>, &'static str> {
    let start = find(body, b"\"messages\":[").ok_or("no messages array")? + 12;
    let mut rest = &body[start..];
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"]") {
            return Ok(out);
        }
        if !out.is_empty() {
            rest = rest.strip_prefix(b",").ok_or("messages: expected ','")?;
        }
        rest = rest.strip_prefix(b"{\"seq\":").ok_or("messages: expected {\"seq\":")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let seq = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("messages: bad seq")?;
        rest = rest[digits..].strip_prefix(b",\"data\":\"").ok_or("messages: expected \"data\"")?;
        let end = rest.iter().position(|&b| b == b'"' || b == b'\\').ok_or("messages: unterminated data")?;
        if rest[end] == b'\\' {
            return Err("messages: escaped data is not understood");
        }
        out.push((seq, &rest[..end]));
        rest = rest[end + 1..].strip_prefix(b"}").ok_or("messages: expected '}'")?;
    }
}

/// `v` without leading and trailing ASCII whitespace.
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &v[start..end]
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The seq inside an ETag: `"17"` (the Tornado peers; also `W/"17"`) or tidings' `"EPOCH:17"`
/// (the channel's epoch, 8 hex digits, a colon, the seq): the decimal number after the colon.
pub fn etag_u64(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    let v = v.strip_prefix(b"W/").unwrap_or(v);
    let v = v.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let v = match v.iter().position(|&b| b == b':') {
        Some(colon) => {
            let epoch = &v[..colon];
            if epoch.len() != 8 || !epoch.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            &v[colon + 1..]
        }
        None => v,
    };
    if v.is_empty() || !v.iter().all(|b| b.is_ascii_digit()) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

    #[test]
    fn complete_response() {
        let r = parse_response(OK).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"Hello, World!");
        assert_eq!(r.len, OK.len());
        assert!(!r.close);
        assert!(r.etag.is_none());
    }

    #[test]
    fn every_proper_prefix_is_incomplete() {
        for n in 0..OK.len() {
            assert!(parse_response(&OK[..n]).unwrap().is_none(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn pipelined_responses_are_taken_one_at_a_time() {
        let mut buf = OK.to_vec();
        buf.extend_from_slice(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nConnection: close\r\n\r\nnot found",
        );
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let a = parse_response(&buf).unwrap().unwrap();
        let a_len = a.len;
        let b = parse_response(&buf[a_len..]).unwrap().unwrap();
        assert_eq!((b.status, b.body, b.close), (404, &b"not found"[..], true));
        let rest = &buf[a_len + b.len..];
        assert!(parse_response(rest).unwrap().is_none());
    }

    #[test]
    fn not_modified_has_no_body_and_an_etag() {
        let buf = b"HTTP/1.1 304 Not Modified\r\nETag: \"41\"\r\nContent-Length: 5\r\n\r\nHTTP/1.1";
        let r = parse_response(buf).unwrap().unwrap();
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        assert_eq!(r.etag.and_then(etag_u64), Some(41));
    }

    #[test]
    fn etags_with_and_without_an_epoch() {
        assert_eq!(etag_u64(b"\"17\""), Some(17));
        assert_eq!(etag_u64(b" W/\"17\" "), Some(17));
        assert_eq!(etag_u64(b"\"0a1b2c3d:17\""), Some(17));
        assert_eq!(etag_u64(b"\"00000000:0\""), Some(0));
        assert_eq!(etag_u64(b"W/\"DEADBEEF:18446744073709551615\""), Some(u64::MAX));
        let buf = b"HTTP/1.1 304 Not Modified\r\nETag: \"9f86d081:41\"\r\n\r\n";
        let r = parse_response(buf).unwrap().unwrap();
        assert_eq!(r.etag.and_then(etag_u64), Some(41));
        for bad in [
            &b"17"[..],
            b"\"\"",
            b"\"0a1b2c3d:\"",
            b"\":17\"",
            b"\"0a1b2c3:17\"",
            b"\"0a1b2c3g:17\"",
            b"\"0a1b2c3d:1:7\"",
            b"\"0a1b2c3d:-1\"",
            b"\"18446744073709551616\"",
        ] {
            assert_eq!(etag_u64(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let r = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap();
        assert!(r.close);
        let r = parse_response(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.close);
    }

    #[test]
    fn malformed_and_unsupported_responses_are_errors() {
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        .is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nbody until close").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx").is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(parse_response(b"SMTP ready\r\n\r\n").is_err());
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert!(parse_response(&huge).is_err());
    }

    #[test]
    fn hub_json_fields() {
        let stats = br#"{"connections":3,"waiting_polls":10000,"channels":2,"responses_total":{"200":5}}"#;
        assert_eq!(json_u64(stats, "waiting_polls"), Some(10000));
        assert_eq!(json_u64(stats, "connections"), Some(3));
        assert_eq!(json_u64(stats, "nope"), None);
        let sub = br#"{"channel":"fan","epoch":"0a1b2c3d","messages":[{"seq":7,"data":"m7"},{"seq":8,"data":"m8"}],"next":8,"missed":0}"#;
        assert_eq!(messages(sub).unwrap(), vec![(7, &b"m7"[..]), (8, &b"m8"[..])]);
        assert_eq!(json_u64(sub, "next"), Some(8));
        assert_eq!(json_u64(sub, "missed"), Some(0));
        let empty = br#"{"channel":"c","messages":[],"next":3,"missed":2}"#;
        assert!(messages(empty).unwrap().is_empty());
        assert!(messages(br#"{"messages":[{"seq":1,"data_b64":"AA=="}]}"#).is_err());
        assert!(messages(br#"{"messages":[{"seq":1,"data":"a\"b"}]}"#).is_err());
    }
}
