//! RESP2, the Redis serialization protocol: replies read from a byte buffer, commands written
//! to one. No I/O here; the connection code feeds it what the socket gave.
//!
//! # The format
//! Every reply starts with a type byte and a line ended by CRLF:
//!
//! | bytes | reply |
//! |---|---|
//! | `+OK\r\n` | [`Reply::Simple`]: a line of text |
//! | `-ERR unknown command\r\n` | [`Reply::Error`]: the text after `-` |
//! | `:12\r\n` | [`Reply::Integer`] |
//! | `$5\r\nhello\r\n` | [`Reply::Bulk`]: a length, then exactly that many bytes and CRLF; `$-1\r\n` is the null bulk |
//! | `*2\r\n:1\r\n:2\r\n` | [`Reply::Array`]: a count, then that many replies (of any type, arrays too); `*-1\r\n` is the null array |
//!
//! A command is an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), which is all
//! [`encode_command`] writes.
//!
//! # Why it is easy to parse incrementally
//! Each element announces what it is before its content (its type byte), and the only
//! variable-length parts either end at a CRLF (lines, which never contain CR or LF) or carry
//! their length up front (bulk data, array elements). So a parser never has to look back or
//! guess: it walks forward, and at any point it can tell "this is a valid start, I need more
//! bytes" from "this can never become a reply". That is why [`parse_reply`] keeps no state
//! between calls: on [`None`] the caller reads more and calls again with the whole buffer,
//! and the parse starts over. A reply is small next to a socket read for everything the
//! cluster sends (a publish, a subscription confirmation, a short XRANGE), so the repeated
//! walk costs little; a very large reply arriving in many reads is walked once per read.
//!
//! # Why so strict
//! Redis writes exactly one spelling of each reply: CRLF line ends, integers without `+` or
//! leading zeros, `-1` as the only negative length. Anything else did not come from a working
//! Redis: a peer that is not Redis (a wrong port, a proxy speaking something else), a stream
//! that lost bytes, or a hostile peer. Accepting variants would only let such a stream run
//! longer and do damage later (a bulk length read from the middle of a message). So every
//! deviation is [`ReplyError::Malformed`] and the caller drops the connection. The strictness
//! also makes the encoding canonical: a reply has one byte form, which the fuzz target
//! (`fuzz/fuzz_targets/resp_reply.rs`) uses to check that writing a parsed reply back gives
//! the same bytes.
//!
//! # Why limits before data
//! A bulk or array announces its size before its content. A parser that waited for the
//! content before judging the size would let a peer that sends `$99999999999\r\n` make the
//! client buffer 100 GB, one read at a time. [`parse_reply`] compares the announced size with
//! [`ReplyLimits`] as soon as the length line is complete and fails at once with
//! [`ReplyError::TooLarge`]. For the same reason nothing is allocated from an announced
//! count: an array's vector is reserved for at most as many elements as the bytes present
//! could hold, so memory stays proportional to the input. Simple and error lines have no
//! length, so a line that runs past `max_bulk` bytes without its CRLF is also TooLarge.
//! Nesting is bounded by `max_depth`, which also bounds the parser's recursion.

use std::fmt;

/// One reply of RESP2 (Redis' protocol without HELLO 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK\r\n`: the text between `+` and CRLF.
    Simple(Vec<u8>),
    /// `-ERR ...\r\n`: the text after `-`.
    Error(Vec<u8>),
    /// `:12\r\n`.
    Integer(i64),
    /// `$3\r\nabc\r\n`; `$-1\r\n` is `Bulk(None)`.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`; `*-1\r\n` is `Array(None)`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bytes of a simple string or a non-null bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(text) => Some(text),
            Reply::Bulk(Some(data)) => Some(data),
            _ => None,
        }
    }

    /// An integer reply, or a simple or bulk string holding a decimal integer (`-?[0-9]+`,
    /// no `+`, no leading zeros, within `i64`), as Redis returns some numbers as strings.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            // The whole text must be the digits: a CR (the start of a line end) makes it
            // `Done` or incomplete without a value.
            Reply::Simple(text) | Reply::Bulk(Some(text)) => match scan_integer(text, 0) {
                Ok(Scan::EndOfInput { value }) => value,
                _ => None,
            },
            _ => None,
        }
    }
}

/// The bounds [`parse_reply`] enforces on what the peer announces.
#[derive(Debug, Clone, Copy)]
pub struct ReplyLimits {
    /// Longest bulk string, and longest simple or error line, in bytes.
    pub max_bulk: usize,
    /// Most elements in one array.
    pub max_elements: usize,
    /// Deepest nesting of arrays: 1 allows an array of scalars, 0 no array at all. Each
    /// level is one stack frame of the parser: keep it small.
    pub max_depth: usize,
}

impl Default for ReplyLimits {
    /// - `max_bulk` 512 MiB: Redis' own limit on a string (`proto-max-bulk-len`), so nothing
    ///   Redis can store is refused; the caller lowers it to what it expects.
    /// - `max_elements` 1 Mi: far above any reply the cluster asks for (it reads streams in
    ///   bounded `COUNT`s), low enough that a hostile count is refused before any element.
    /// - `max_depth` 8: the deepest reply the cluster reads is XREAD's (array of streams, each
    ///   `[name, array of entries]`, each entry `[id, array of fields]`: 4 levels), 5 inside
    ///   a MULTI/EXEC reply; 8 leaves room and keeps the recursion a few frames deep.
    fn default() -> Self {
        ReplyLimits { max_bulk: 512 << 20, max_elements: 1 << 20, max_depth: 8 }
    }
}

/// Why a buffer can never become a valid reply. Either way the stream is unusable: the
/// caller drops the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// Not what Redis writes (the message says which rule broke).
    Malformed(&'static str),
    /// A size over [`ReplyLimits`], refused before its data arrived.
    TooLarge(&'static str),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed(what) => write!(f, "malformed RESP reply: {what}"),
            ReplyError::TooLarge(what) => write!(f, "RESP reply too large: {what}"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Parses one reply from the front of `buf`. `Ok(None)`: incomplete, read more and call
/// again with the whole buffer. `Ok(Some((reply, used)))`: `used` bytes were consumed (never
/// 0, never more than `buf.len()`). `Err`: the stream is broken (the caller drops the
/// connection).
pub fn parse_reply(buf: &[u8], limits: &ReplyLimits) -> Result<Option<(Reply, usize)>, ReplyError> {
    parse_at(buf, 0, limits, 0)
}

/// Appends one command as an array of bulk strings: `*N\r\n$len\r\narg\r\n...`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(out, arg.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// The smallest element an array can hold (`+\r\n`): an array's vector is never reserved for
/// more elements than the bytes present could hold.
const MIN_ELEMENT_LEN: usize = 3;

/// Parses the reply starting at `pos`; `depth` is the number of arrays it is inside.
/// `Ok(Some((reply, end)))` with `end` the position after it.
fn parse_at(
    buf: &[u8],
    pos: usize,
    limits: &ReplyLimits,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ReplyError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let pos = pos + 1;
    match kind {
        b'+' | b'-' => {
            let Some(end) = scan_line(buf, pos, limits.max_bulk)? else {
                return Ok(None);
            };
            let text = buf[pos..end].to_vec();
            let reply = if kind == b'+' { Reply::Simple(text) } else { Reply::Error(text) };
            Ok(Some((reply, end + 2)))
        }
        b':' => match scan_integer(buf, pos)? {
            Scan::Done(n, end) => Ok(Some((Reply::Integer(n), end))),
            Scan::EndOfInput { .. } => Ok(None),
        },
        b'$' => {
            let Some((len, start)) = scan_length(buf, pos, limits.max_bulk, "bulk length")? else {
                return Ok(None);
            };
            let Some(len) = len else {
                return Ok(Some((Reply::Bulk(None), start)));
            };
            // Only a `max_bulk` near usize::MAX (on a 32-bit target) could make this overflow.
            let Some(data_end) = start.checked_add(len) else {
                return Err(ReplyError::TooLarge("bulk length"));
            };
            match buf.get(data_end..) {
                None | Some([]) => Ok(None),
                Some([b'\r']) => Ok(None),
                Some([b'\r', b'\n', ..]) => {
                    Ok(Some((Reply::Bulk(Some(buf[start..data_end].to_vec())), data_end + 2)))
                }
                Some(_) => Err(ReplyError::Malformed("bulk data not followed by CRLF")),
            }
        }
        b'*' => {
            if depth >= limits.max_depth {
                return Err(ReplyError::TooLarge("arrays nested too deep"));
            }
            let Some((count, mut at)) = scan_length(buf, pos, limits.max_elements, "array length")? else {
                return Ok(None);
            };
            let Some(count) = count else {
                return Ok(Some((Reply::Array(None), at)));
            };
            let room = (buf.len() - at) / MIN_ELEMENT_LEN;
            let mut elements = Vec::with_capacity(count.min(room));
            for _ in 0..count {
                let Some((element, end)) = parse_at(buf, at, limits, depth + 1)? else {
                    return Ok(None);
                };
                elements.push(element);
                at = end;
            }
            Ok(Some((Reply::Array(Some(elements)), at)))
        }
        _ => Err(ReplyError::Malformed("unknown type byte")),
    }
}

/// Finds the CRLF ending the simple or error line whose text starts at `pos`: `Some(end)`,
/// the position of its CR, or `None` while the line is incomplete. CR or LF inside the line
/// is Malformed; a line past `max_len` bytes is TooLarge, complete or not.
fn scan_line(buf: &[u8], pos: usize, max_len: usize) -> Result<Option<usize>, ReplyError> {
    let rest = &buf[pos..];
    match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if i > max_len => Err(ReplyError::TooLarge("line longer than max_bulk")),
        Some(i) if rest[i] == b'\n' => Err(ReplyError::Malformed("LF without CR in a line")),
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(pos + i)),
            Some(_) => Err(ReplyError::Malformed("CR without LF in a line")),
        },
        None if rest.len() > max_len => Err(ReplyError::TooLarge("line longer than max_bulk")),
        None => Ok(None),
    }
}

/// What [`scan_integer`] saw.
enum Scan {
    /// A complete integer line: the value and the position after its CRLF.
    Done(i64, usize),
    /// The input ended before the CRLF; `value` is what the digits so far make, if they make
    /// a valid integer (for [`Reply::as_int`], which reads an integer with no CRLF).
    EndOfInput { value: Option<i64> },
}

/// Reads `-?[0-9]+` then CRLF from `pos`, with no `+`, no leading zero (but `0`), no `-0`,
/// within `i64` (checked as each digit arrives, so an endless number fails at its 20th).
fn scan_integer(buf: &[u8], pos: usize) -> Result<Scan, ReplyError> {
    let negative = buf.get(pos) == Some(&b'-');
    let digits_start = if negative { pos + 1 } else { pos };
    // The magnitude, at most 2^63 (i64::MIN's).
    let mut magnitude: u64 = 0;
    let limit: u64 = if negative { 1 << 63 } else { i64::MAX as u64 };
    let mut at = digits_start;
    let value = |magnitude: u64| -> Option<i64> {
        if negative {
            // 0 - 2^63 is i64::MIN; `checked_sub_unsigned` keeps it exact.
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        }
    };
    loop {
        let Some(&b) = buf.get(at) else {
            let digits = at > digits_start;
            return Ok(Scan::EndOfInput { value: if digits { value(magnitude) } else { None } });
        };
        match b {
            b'0'..=b'9' => {
                if at > digits_start && buf[digits_start] == b'0' {
                    return Err(ReplyError::Malformed("integer with a leading zero"));
                }
                // `-0` can only go on as `-0\r\n` or `-0N`: both wrong, so say it now.
                if negative && at == digits_start && b == b'0' {
                    return Err(ReplyError::Malformed("negative zero"));
                }
                magnitude = magnitude
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(u64::from(b - b'0')))
                    .filter(|&m| m <= limit)
                    .ok_or(ReplyError::Malformed("integer out of range"))?;
                at += 1;
            }
            b'\r' => {
                if at == digits_start {
                    return Err(ReplyError::Malformed("integer without digits"));
                }
                return match buf.get(at + 1) {
                    None => Ok(Scan::EndOfInput { value: None }),
                    Some(b'\n') => match value(magnitude) {
                        Some(n) => Ok(Scan::Done(n, at + 2)),
                        None => Err(ReplyError::Malformed("integer out of range")),
                    },
                    Some(_) => Err(ReplyError::Malformed("CR without LF after an integer")),
                };
            }
            _ => return Err(ReplyError::Malformed("not a digit in an integer")),
        }
    }
}

/// Reads the length line of a bulk or an array from `pos`: `Some((Some(len), start))` with
/// `start` the position after its CRLF, `Some((None, start))` for `-1` (null), `None` while
/// incomplete. Below -1 is Malformed, above `max` TooLarge, both before any data.
fn scan_length(
    buf: &[u8],
    pos: usize,
    max: usize,
    what: &'static str,
) -> Result<Option<(Option<usize>, usize)>, ReplyError> {
    let (n, start) = match scan_integer(buf, pos)? {
        Scan::Done(n, start) => (n, start),
        Scan::EndOfInput { .. } => return Ok(None),
    };
    match n {
        -1 => Ok(Some((None, start))),
        n if n < -1 => Err(ReplyError::Malformed("length below -1")),
        n => match usize::try_from(n) {
            Ok(len) if len <= max => Ok(Some((Some(len), start))),
            _ => Err(ReplyError::TooLarge(what)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        parse_reply(bytes, &ReplyLimits::default())
    }

    /// Parses a whole buffer that must hold exactly one reply.
    fn one(bytes: &[u8]) -> Reply {
        match parse(bytes) {
            Ok(Some((reply, used))) => {
                assert_eq!(used, bytes.len(), "{:?}", String::from_utf8_lossy(bytes));
                reply
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn bulk(data: &[u8]) -> Reply {
        Reply::Bulk(Some(data.to_vec()))
    }

    fn malformed(bytes: &[u8]) {
        assert!(
            matches!(parse(bytes), Err(ReplyError::Malformed(_))),
            "{:?} gave {:?}",
            String::from_utf8_lossy(bytes),
            parse(bytes)
        );
    }

    #[test]
    fn every_type() {
        assert_eq!(one(b"+OK\r\n"), Reply::Simple(b"OK".to_vec()));
        assert_eq!(one(b"+\r\n"), Reply::Simple(Vec::new()));
        assert_eq!(one(b"-ERR unknown command 'x'\r\n"), Reply::Error(b"ERR unknown command 'x'".to_vec()));
        assert_eq!(one(b":0\r\n"), Reply::Integer(0));
        assert_eq!(one(b":12\r\n"), Reply::Integer(12));
        assert_eq!(one(b":-7\r\n"), Reply::Integer(-7));
        assert_eq!(one(b":9223372036854775807\r\n"), Reply::Integer(i64::MAX));
        assert_eq!(one(b":-9223372036854775808\r\n"), Reply::Integer(i64::MIN));
        assert_eq!(one(b"$5\r\nhello\r\n"), bulk(b"hello"));
        assert_eq!(one(b"$0\r\n\r\n"), bulk(b""));
        // Bulk data is binary: CR, LF, NUL and CRLF inside are data.
        assert_eq!(one(b"$6\r\na\r\nb\0\n\r\n"), bulk(b"a\r\nb\0\n"));
        assert_eq!(one(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(one(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(one(b"*0\r\n"), Reply::Array(Some(Vec::new())));
        assert_eq!(
            one(b"*3\r\n:1\r\n$-1\r\n+x\r\n"),
            Reply::Array(Some(vec![Reply::Integer(1), Reply::Bulk(None), Reply::Simple(b"x".to_vec())]))
        );
    }

    #[test]
    fn nested_arrays() {
        // An XRANGE reply: entries of [id, [field, value, ...]].
        let xrange = b"*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$5\r\nhello\r\n\
                       *2\r\n$3\r\n2-0\r\n*2\r\n$1\r\nd\r\n$0\r\n\r\n";
        let entry = |id: &[u8], value: &[u8]| {
            Reply::Array(Some(vec![bulk(id), Reply::Array(Some(vec![bulk(b"d"), bulk(value)]))]))
        };
        assert_eq!(one(xrange), Reply::Array(Some(vec![entry(b"1-0", b"hello"), entry(b"2-0", b"")])));
        assert_eq!(
            one(b"*2\r\n*-1\r\n*1\r\n*0\r\n"),
            Reply::Array(Some(vec![
                Reply::Array(None),
                Reply::Array(Some(vec![Reply::Array(Some(vec![]))]))
            ]))
        );
    }

    #[test]
    fn replies_are_read_one_at_a_time() {
        let buf = b"+OK\r\n:1\r\n$3\r\nabc\r\n+tail";
        let (first, used) = parse(buf).unwrap().unwrap();
        assert_eq!((first, used), (Reply::Simple(b"OK".to_vec()), 5));
        let (second, used2) = parse(&buf[used..]).unwrap().unwrap();
        assert_eq!((second, used2), (Reply::Integer(1), 4));
        let (third, used3) = parse(&buf[used + used2..]).unwrap().unwrap();
        assert_eq!((third, used3), (bulk(b"abc"), 9));
        assert_eq!(parse(&buf[used + used2 + used3..]), Ok(None));
    }

    #[test]
    fn depth_limit() {
        let limits = ReplyLimits { max_depth: 2, ..ReplyLimits::default() };
        assert!(parse_reply(b"*1\r\n*1\r\n:1\r\n", &limits).unwrap().is_some());
        assert_eq!(
            parse_reply(b"*1\r\n*1\r\n*1\r\n:1\r\n", &limits),
            Err(ReplyError::TooLarge("arrays nested too deep"))
        );
        // Refused at the third `*`, before the rest is there.
        assert_eq!(
            parse_reply(b"*1\r\n*1\r\n*", &limits),
            Err(ReplyError::TooLarge("arrays nested too deep"))
        );
        let none = ReplyLimits { max_depth: 0, ..ReplyLimits::default() };
        assert!(matches!(parse_reply(b"*0\r\n", &none), Err(ReplyError::TooLarge(_))));
        assert!(parse_reply(b":1\r\n", &none).unwrap().is_some());
        // The default allows 8 levels, not 9.
        let nested = |levels: usize| [b"*1\r\n".repeat(levels), b":1\r\n".to_vec()].concat();
        assert!(parse(&nested(8)).unwrap().is_some());
        assert!(matches!(parse(&nested(9)), Err(ReplyError::TooLarge(_))));
    }

    #[test]
    fn every_malformed_case() {
        // Type byte.
        for bad in [&b"x"[..], b"\r\n", b"\0", b"OK\r\n", b" +OK\r\n", b"%1\r\n", b"_\r\n"] {
            malformed(bad);
        }
        // Lines: CR and LF only as the final CRLF.
        for bad in [&b"+OK\n"[..], b"+O\rK\r\n", b"-ERR\n\r\n", b"+OK\r\r\n", b"+OK\rx", b"-\n"] {
            malformed(bad);
        }
        // Integers and lengths: -?[0-9]+, canonical, in range, then CRLF.
        for bad in [
            &b":\r\n"[..],
            b":+1\r\n",
            b":01\r\n",
            b":00\r\n",
            b":-0\r\n",
            // Refused as soon as the byte that cannot go on is there, not at the CRLF.
            b":-0",
            b":01",
            b":1x",
            b"$-0",
            b":-01\r\n",
            b":-\r\n",
            b":1 \r\n",
            b": 1\r\n",
            b":1\n",
            b":1\rx",
            b":1.5\r\n",
            b":9223372036854775808\r\n",
            b":-9223372036854775809\r\n",
            b":99999999999999999999999",
            b"$+1\r\nx\r\n",
            b"$01\r\nx\r\n",
            b"$-0\r\n",
            b"$\r\n",
            b"$1\nx\r\n",
            b"*01\r\n:1\r\n",
            b"*\r\n",
            b"*1 \r\n",
        ] {
            malformed(bad);
        }
        // Lengths below -1.
        for bad in [&b"$-2\r\n"[..], b"*-2\r\n", b"$-9223372036854775808\r\n"] {
            assert_eq!(parse(bad), Err(ReplyError::Malformed("length below -1")), "{bad:?}");
        }
        // Bulk data not followed by exactly CRLF: detected as soon as the byte is there.
        for bad in [&b"$3\r\nabcd\r\n"[..], b"$3\r\nabc\n", b"$3\r\nabc\rx", b"$3\r\nab\r\n", b"$0\r\nx"] {
            malformed(bad);
        }
        // Inside an array, at any depth.
        malformed(b"*2\r\n:1\r\n+a\nb\r\n");
        malformed(b"*1\r\n*1\r\n$1\r\nxx\r\n");
    }

    #[test]
    fn too_large_before_the_data() {
        let limits = ReplyLimits { max_bulk: 10, max_elements: 3, max_depth: 8 };
        // The length line alone is enough to refuse: no data needed.
        assert_eq!(parse_reply(b"$11\r\n", &limits), Err(ReplyError::TooLarge("bulk length")));
        assert_eq!(parse_reply(b"*4\r\n", &limits), Err(ReplyError::TooLarge("array length")));
        assert_eq!(parse_reply(b"$10\r\n", &limits), Ok(None));
        assert_eq!(parse_reply(b"*3\r\n", &limits), Ok(None));
        assert!(parse_reply(b"$10\r\n0123456789\r\n", &limits).unwrap().is_some());
        // A line without a length is refused once it runs past max_bulk, CRLF or not.
        assert_eq!(parse_reply(b"+0123456789", &limits), Ok(None));
        assert!(parse_reply(b"+0123456789\r\n", &limits).unwrap().is_some());
        assert!(matches!(parse_reply(b"+0123456789A", &limits), Err(ReplyError::TooLarge(_))));
        assert!(matches!(parse_reply(b"-0123456789A\r\n", &limits), Err(ReplyError::TooLarge(_))));
        // The hostile length of the default limits: refused at once, nothing buffered.
        assert_eq!(parse(b"$99999999999\r\n"), Err(ReplyError::TooLarge("bulk length")));
        assert_eq!(parse(b"*99999999999\r\n"), Err(ReplyError::TooLarge("array length")));
        assert_eq!(parse(b"$536870913\r\n"), Err(ReplyError::TooLarge("bulk length")));
        assert_eq!(parse(b"$536870912\r\n"), Ok(None));
        assert_eq!(parse(b"*1048577\r\n"), Err(ReplyError::TooLarge("array length")));
        // A count allowed by the limits reserves only what the bytes present can hold.
        assert_eq!(parse(b"*1048576\r\n:1\r\n"), Ok(None));
    }

    /// Every prefix of a buffer of several replies, split anywhere (mid-number, mid-CRLF,
    /// mid-data), is "incomplete" until the whole first reply is there; then the replies come
    /// out one by one.
    #[test]
    fn every_split_point_is_incomplete_then_complete() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR wrong type\r\n",
            b":-1234\r\n",
            b"$5\r\nhe\r\no\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n",
            b"*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$5\r\nhello\r\n*2\r\n$3\r\n2-0\r\n*-1\r\n",
            b":0\r\n",
        ];
        let all = replies.concat();
        let mut pos = 0;
        for reply in replies {
            let rest = &all[pos..];
            for cut in 0..reply.len() {
                assert_eq!(
                    parse(&rest[..cut]),
                    Ok(None),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(reply)
                );
            }
            for end in reply.len()..=rest.len() {
                let (parsed, used) = parse(&rest[..end]).unwrap().unwrap();
                assert_eq!(used, reply.len());
                assert_eq!(parsed, one(reply));
            }
            pos += reply.len();
        }
        assert_eq!(pos, all.len());
    }

    #[test]
    fn encode_round_trip() {
        let args: &[&[u8]] = &[b"XADD", b"tidings:c", b"*", b"d", b"", b"bin\r\n\0\xff"];
        let mut out = b"junk".to_vec();
        encode_command(&mut out, args);
        let encoded = &out[4..];
        assert!(encoded.starts_with(b"*6\r\n$4\r\nXADD\r\n$9\r\ntidings:c\r\n"));
        let expected = Reply::Array(Some(args.iter().map(|a| bulk(a)).collect()));
        assert_eq!(one(encoded), expected);
        // Two commands back to back, lengths of more than one digit.
        let long = vec![b'x'; 1234];
        let mut out = Vec::new();
        encode_command(&mut out, &[b"PUBLISH", &long]);
        encode_command(&mut out, &[]);
        let (first, used) = parse(&out).unwrap().unwrap();
        assert_eq!(first, Reply::Array(Some(vec![bulk(b"PUBLISH"), bulk(&long)])));
        assert_eq!(one(&out[used..]), Reply::Array(Some(Vec::new())));
    }

    #[test]
    fn as_int_and_as_bytes() {
        assert_eq!(Reply::Integer(-3).as_int(), Some(-3));
        assert_eq!(bulk(b"42").as_int(), Some(42));
        assert_eq!(bulk(b"-42").as_int(), Some(-42));
        assert_eq!(bulk(b"0").as_int(), Some(0));
        assert_eq!(Reply::Simple(b"7".to_vec()).as_int(), Some(7));
        assert_eq!(bulk(b"-9223372036854775808").as_int(), Some(i64::MIN));
        for not_int in [&b""[..], b"-", b"+1", b"01", b"-0", b"1-0", b"4 ", b"9223372036854775808", b"1\r\n"]
        {
            assert_eq!(bulk(not_int).as_int(), None, "{not_int:?}");
        }
        assert_eq!(Reply::Bulk(None).as_int(), None);
        assert_eq!(Reply::Error(b"1".to_vec()).as_int(), None);
        assert_eq!(Reply::Array(Some(vec![Reply::Integer(1)])).as_int(), None);

        assert_eq!(Reply::Simple(b"OK".to_vec()).as_bytes(), Some(&b"OK"[..]));
        assert_eq!(bulk(b"").as_bytes(), Some(&b""[..]));
        assert_eq!(Reply::Bulk(None).as_bytes(), None);
        assert_eq!(Reply::Error(b"ERR".to_vec()).as_bytes(), None);
        assert_eq!(Reply::Integer(1).as_bytes(), None);
    }

    #[test]
    fn errors_display_their_rule() {
        assert_eq!(ReplyError::Malformed("x").to_string(), "malformed RESP reply: x");
        assert_eq!(ReplyError::TooLarge("bulk length").to_string(), "RESP reply too large: bulk length");
    }
}
