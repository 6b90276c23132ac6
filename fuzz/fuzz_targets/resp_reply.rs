//! `app::redis::resp::parse_reply` on arbitrary bytes, read as a stream of replies the way the
//! Redis client reads its socket: parse from the front, drop what was used, again, until
//! "incomplete" or an error. Done twice, with small limits (bulk 8 bytes, 4 elements, depth 3)
//! and with the default ones.
//!
//! Input layout: the bytes are the stream, nothing else (so the seeds are real replies).
//!
//! Checked, beyond "no panic":
//! - a reply uses `0 < used <= len` bytes;
//! - **never found early**: every prefix of the bytes a reply used is "incomplete" (a reply
//!   arriving in pieces is waited for, wherever the reads stop, never refused or misread);
//! - **canonical round trip**: writing the reply back (`fuzz_support::resp::write_reply`)
//!   gives exactly the bytes it used (the grammar is strict, so each reply has one spelling),
//!   and those bytes parse back to the same reply;
//! - the reply is within the limits (bulk and line lengths, element counts, depth);
//! - **a straightforward model**: a second, non-incremental reader written from the grammar
//!   with other means (the line found by searching for CRLF, integers checked by
//!   `str::parse` and by printing them back) agrees on each step: the same reply and length,
//!   "incomplete", or "broken";
//! - "incomplete" and "broken" are final in their direction: every prefix of an incomplete
//!   buffer is incomplete, a broken buffer stays broken with more bytes after it;
//! - the small limits only ever add refusals: where they accept, the default limits give the
//!   same answer.

#![no_main]

use app::redis::resp::{parse_reply, Reply, ReplyError, ReplyLimits};
use fuzz_support::resp::write_reply;
use libfuzzer_sys::fuzz_target;

const SMALL: ReplyLimits = ReplyLimits { max_bulk: 8, max_elements: 4, max_depth: 3 };

/// Above this, prefixes are checked on a sample (the first and last 64, then every 17th), so
/// that one long input does not take seconds.
const ALL_PREFIXES_UP_TO: usize = 1024;

fuzz_target!(|data: &[u8]| {
    walk(data, &SMALL, true);
    walk(data, &ReplyLimits::default(), false);
});

fn walk(data: &[u8], limits: &ReplyLimits, compare_with_default: bool) {
    let mut pos = 0;
    loop {
        let rest = &data[pos..];
        let got = parse_reply(rest, limits);
        assert_eq!(outcome(&got), model(rest, 0, limits), "model disagrees at {pos} with {limits:?}");
        if compare_with_default {
            if let Ok(answer) = &got {
                assert_eq!(&parse_reply(rest, &ReplyLimits::default()), &Ok(answer.clone()));
            }
        }
        match got {
            Ok(Some((reply, used))) => {
                assert!(used > 0 && used <= rest.len(), "used {used} of {}", rest.len());
                let consumed = &rest[..used];
                for cut in prefixes(used) {
                    assert_eq!(parse_reply(&consumed[..cut], limits), Ok(None), "found early at {cut}");
                }
                let mut written = Vec::new();
                write_reply(&mut written, &reply);
                assert_eq!(written, consumed, "not the canonical spelling");
                assert_eq!(parse_reply(&written, limits), Ok(Some((reply.clone(), used))));
                check_within(&reply, limits, 0);
                pos += used;
            }
            Ok(None) => {
                for cut in prefixes(rest.len()) {
                    assert_eq!(parse_reply(&rest[..cut], limits), Ok(None), "prefix {cut} of incomplete");
                }
                return;
            }
            Err(_) => {
                let mut longer = rest.to_vec();
                longer.extend_from_slice(b"\r\n+OK\r\n");
                assert!(parse_reply(&longer, limits).is_err(), "an error healed by more bytes");
                return;
            }
        }
    }
}

/// The cut points checked below `len`.
fn prefixes(len: usize) -> impl Iterator<Item = usize> {
    (0..len).filter(move |&cut| len <= ALL_PREFIXES_UP_TO || cut < 64 || cut + 64 >= len || cut % 17 == 0)
}

fn check_within(reply: &Reply, limits: &ReplyLimits, depth: usize) {
    match reply {
        Reply::Simple(text) | Reply::Error(text) => {
            assert!(text.len() <= limits.max_bulk);
            assert!(!text.contains(&b'\r') && !text.contains(&b'\n'));
        }
        Reply::Bulk(Some(data)) => assert!(data.len() <= limits.max_bulk),
        Reply::Array(Some(elements)) => {
            assert!(depth < limits.max_depth && elements.len() <= limits.max_elements);
            for element in elements {
                check_within(element, limits, depth + 1);
            }
        }
        Reply::Array(None) => assert!(depth < limits.max_depth),
        Reply::Integer(_) | Reply::Bulk(None) => {}
    }
}

/// What a parse says, without the error's detail (the model does not name rules).
#[derive(Debug, PartialEq)]
enum Outcome {
    Reply(Reply, usize),
    Incomplete,
    Broken,
}

fn outcome(got: &Result<Option<(Reply, usize)>, ReplyError>) -> Outcome {
    match got {
        Ok(Some((reply, used))) => Outcome::Reply(reply.clone(), *used),
        Ok(None) => Outcome::Incomplete,
        Err(_) => Outcome::Broken,
    }
}

/// The model: RESP2 as the module docs state it, read without the parser's byte-by-byte
/// scanning. `depth` is the number of arrays around the reply at `buf[0]`.
fn model(buf: &[u8], depth: usize, limits: &ReplyLimits) -> Outcome {
    let Some((&kind, body)) = buf.split_first() else {
        return Outcome::Incomplete;
    };
    match kind {
        b'+' | b'-' => match find_crlf(body) {
            Some(end) => {
                let text = &body[..end];
                if text.len() > limits.max_bulk || text.contains(&b'\r') || text.contains(&b'\n') {
                    return Outcome::Broken;
                }
                let text = text.to_vec();
                let reply = if kind == b'+' { Reply::Simple(text) } else { Reply::Error(text) };
                Outcome::Reply(reply, 1 + end + 2)
            }
            None => {
                // No CRLF yet: a line still being written is its text, then perhaps its CR.
                let text = body.strip_suffix(b"\r").unwrap_or(body);
                if text.len() > limits.max_bulk || text.contains(&b'\r') || text.contains(&b'\n') {
                    Outcome::Broken
                } else {
                    Outcome::Incomplete
                }
            }
        },
        b':' => match model_integer(body) {
            Number::Complete(n, len) => Outcome::Reply(Reply::Integer(n), 1 + len),
            Number::Incomplete => Outcome::Incomplete,
            Number::Broken => Outcome::Broken,
        },
        b'$' => match model_integer(body) {
            Number::Complete(-1, len) => Outcome::Reply(Reply::Bulk(None), 1 + len),
            Number::Complete(n, len) => {
                if n < -1 {
                    return Outcome::Broken;
                }
                if n as u64 > limits.max_bulk as u64 {
                    return Outcome::Broken;
                }
                let n = n as usize;
                let data = &body[len..];
                if data.len() >= n + 2 {
                    if &data[n..n + 2] == b"\r\n" {
                        Outcome::Reply(Reply::Bulk(Some(data[..n].to_vec())), 1 + len + n + 2)
                    } else {
                        Outcome::Broken
                    }
                } else if data.len() == n + 1 && data[n] != b'\r' {
                    Outcome::Broken
                } else {
                    Outcome::Incomplete
                }
            }
            Number::Incomplete => Outcome::Incomplete,
            Number::Broken => Outcome::Broken,
        },
        b'*' => {
            if depth >= limits.max_depth {
                return Outcome::Broken;
            }
            match model_integer(body) {
                Number::Complete(-1, len) => Outcome::Reply(Reply::Array(None), 1 + len),
                Number::Complete(n, len) => {
                    if n < -1 || n as u64 > limits.max_elements as u64 {
                        return Outcome::Broken;
                    }
                    let mut at = 1 + len;
                    let mut elements = Vec::new();
                    for _ in 0..n {
                        match model(&buf[at..], depth + 1, limits) {
                            Outcome::Reply(element, used) => {
                                elements.push(element);
                                at += used;
                            }
                            other => return other,
                        }
                    }
                    Outcome::Reply(Reply::Array(Some(elements)), at)
                }
                Number::Incomplete => Outcome::Incomplete,
                Number::Broken => Outcome::Broken,
            }
        }
        _ => Outcome::Broken,
    }
}

enum Number {
    /// The value and the length of its line with the CRLF.
    Complete(i64, usize),
    Incomplete,
    Broken,
}

/// An integer line: exactly the text `i64::to_string` prints, then CRLF. Incomplete while
/// what is there can still become one.
fn model_integer(buf: &[u8]) -> Number {
    let canonical = |text: &[u8]| -> Option<i64> {
        let n: i64 = std::str::from_utf8(text).ok()?.parse().ok()?;
        (n.to_string().as_bytes() == text).then_some(n)
    };
    match find_crlf(buf) {
        Some(end) => match canonical(&buf[..end]) {
            Some(n) => Number::Complete(n, end + 2),
            None => Number::Broken,
        },
        None => {
            let (text, has_cr) = match buf.strip_suffix(b"\r") {
                Some(text) => (text, true),
                None => (buf, false),
            };
            // Before the CR the text must already be a whole integer; without a CR, a start
            // of one: empty, "-", or an integer that more digits may extend ("-0" and "0"
            // followed by anything can only be wrong, so "-0" is broken at once).
            let ok = if has_cr {
                canonical(text).is_some()
            } else {
                text.is_empty() || text == b"-" || canonical(text).is_some()
            };
            if ok {
                Number::Incomplete
            } else {
                Number::Broken
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|pair| pair == b"\r\n")
}
