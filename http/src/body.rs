//! Chunked transfer coding (RFC 9112 §7.1), decoded incrementally.
//!
//! The decoder is a byte-level state machine so that a body split at any byte boundary across
//! reads decodes the same as one arriving whole. It follows the grammar exactly, because
//! leniency here is where request smuggling lives (a proxy and a server disagreeing on where a
//! chunk, and so the request, ends). Everything outside it is 400 and close:
//!
//! | part | rule |
//! |---|---|
//! | chunk size | 1 to 15 hex digits (no sign, no `0x`; 15 digits cannot overflow) |
//! | chunk extensions | `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, name a token; BWS is spaces and tabs; no whitespace between the last extension and CRLF |
//! | size line (size + extensions) | at most [`MAX_CHUNK_LINE`] (1 KiB) before its CRLF |
//! | line ends | CRLF, after the size line, the data and every trailer line |
//! | trailer field | `name ":" OWS value OWS`: name a token right before the colon, value of visible characters, spaces, tabs and obs-text; no obs-fold (a line starting with whitespace) |
//!
//! Extensions and trailer fields are checked, then dropped: nothing here uses them. Trailer
//! fields are header fields arriving late, so they count toward the head's limits
//! ([`TrailerBudget`]: what the head left of `max_header_bytes` and `max_headers`); past
//! either, 431 and close.

use crate::request::HttpError;

/// Longest chunk-size line (size and extensions), CRLF not counted.
pub const MAX_CHUNK_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// After the size: chunk extensions, up to CR.
    Extension(Ext),
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR, then LF, after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field's name, up to the colon.
    TrailerName,
    /// Inside a trailer field's value, up to CR.
    TrailerValue,
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    Done,
}

/// Where in `*( BWS ";" BWS name [ BWS "=" BWS value ] )` the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Whitespace after the size or a value: only more of it or `;` may follow.
    BeforeSemicolon,
    /// After `;`: whitespace, then the name's first character.
    NameStart,
    Name,
    /// Whitespace after a name: `=` or `;` must follow.
    AfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash inside a quoted string.
    QuotedPair,
    /// After the closing quote.
    AfterQuoted,
}

/// What the trailer section may take: what the head left of the head limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailerBudget {
    /// Bytes of trailer field lines, CRLFs included (the final empty line is not counted,
    /// as the head's is part of the head).
    pub bytes: usize,
    /// Trailer fields.
    pub fields: usize,
}

/// Incremental decoder of a chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes left in the current chunk (or the size being accumulated).
    remaining: u64,
    /// Decoded bytes so far.
    total: usize,
    /// Bytes of the current size line so far.
    line_bytes: usize,
    /// What is left of the trailer budget.
    budget: TrailerBudget,
}

const BAD_CHUNK: HttpError = HttpError::new(400, "invalid chunked body", true);
const TRAILERS_TOO_LARGE: HttpError = HttpError::new(431, "trailer fields too large", true);

impl ChunkedDecoder {
    pub fn new(budget: TrailerBudget) -> Self {
        ChunkedDecoder { state: State::Size { digits: 0 }, remaining: 0, total: 0, line_bytes: 0, budget }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending data to `out`. Returns how many input bytes were used;
    /// stops right after the end of the body (the rest is the next request).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, max_body: usize) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = (self.remaining.min((input.len() - i) as u64)) as usize;
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            if matches!(self.state, State::Size { .. } | State::Extension(_)) && b != b'\r' {
                self.line_bytes += 1;
                if self.line_bytes > MAX_CHUNK_LINE {
                    return Err(BAD_CHUNK);
                }
            }
            self.state = match self.state {
                State::Size { digits } => match hex_value(b) {
                    Some(v) if digits < 15 => {
                        self.remaining = self.remaining * 16 + v as u64;
                        State::Size { digits: digits + 1 }
                    }
                    Some(_) => return Err(BAD_CHUNK),
                    None if digits == 0 => return Err(BAD_CHUNK),
                    None => match b {
                        b'\r' => State::SizeLf,
                        b';' => State::Extension(Ext::NameStart),
                        b' ' | b'\t' => State::Extension(Ext::BeforeSemicolon),
                        _ => return Err(BAD_CHUNK),
                    },
                },
                State::Extension(e) => extension(e, b)?,
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BAD_CHUNK);
                    }
                    if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        self.total = self.total.saturating_add(self.remaining as usize);
                        if self.total > max_body {
                            return Err(HttpError::new(413, "request body too large", true));
                        }
                        State::Data
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.line_bytes = 0;
                    State::Size { digits: 0 }
                }
                State::DataCr | State::DataLf => return Err(BAD_CHUNK),
                State::TrailerStart if b == b'\r' => State::EndLf,
                State::TrailerStart => {
                    self.trailer_byte()?;
                    // A new field: a name (a line starting with whitespace is obs-fold).
                    if !is_tchar(b) {
                        return Err(BAD_CHUNK);
                    }
                    if self.budget.fields == 0 {
                        return Err(TRAILERS_TOO_LARGE);
                    }
                    self.budget.fields -= 1;
                    State::TrailerName
                }
                State::TrailerName => {
                    self.trailer_byte()?;
                    match b {
                        b':' => State::TrailerValue,
                        _ if is_tchar(b) => State::TrailerName,
                        _ => return Err(BAD_CHUNK),
                    }
                }
                State::TrailerValue => {
                    self.trailer_byte()?;
                    match b {
                        b'\r' => State::TrailerLf,
                        _ if is_field_value_byte(b) => State::TrailerValue,
                        _ => return Err(BAD_CHUNK),
                    }
                }
                State::TrailerLf => {
                    self.trailer_byte()?;
                    if b != b'\n' {
                        return Err(BAD_CHUNK);
                    }
                    State::TrailerStart
                }
                State::EndLf if b == b'\n' => State::Done,
                State::EndLf => return Err(BAD_CHUNK),
                State::Data | State::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    /// Counts one byte of a trailer field line against the budget.
    fn trailer_byte(&mut self) -> Result<(), HttpError> {
        if self.budget.bytes == 0 {
            return Err(TRAILERS_TOO_LARGE);
        }
        self.budget.bytes -= 1;
        Ok(())
    }
}

/// The state after byte `b` of a chunk extension (or after its CR: the size line's LF).
fn extension(e: Ext, b: u8) -> Result<State, HttpError> {
    let ws = b == b' ' || b == b'\t';
    let next = match e {
        Ext::BeforeSemicolon | Ext::NameStart | Ext::AfterName | Ext::ValueStart if ws => e,
        Ext::BeforeSemicolon if b == b';' => Ext::NameStart,
        Ext::NameStart | Ext::Name if is_tchar(b) => Ext::Name,
        Ext::Name if ws => Ext::AfterName,
        Ext::Name | Ext::AfterName if b == b'=' => Ext::ValueStart,
        Ext::Name | Ext::AfterName | Ext::Token | Ext::AfterQuoted if b == b';' => Ext::NameStart,
        Ext::ValueStart | Ext::Token if is_tchar(b) => Ext::Token,
        Ext::ValueStart if b == b'"' => Ext::Quoted,
        Ext::Token | Ext::AfterQuoted if ws => Ext::BeforeSemicolon,
        Ext::Quoted if b == b'"' => Ext::AfterQuoted,
        Ext::Quoted if b == b'\\' => Ext::QuotedPair,
        // qdtext: HTAB, SP, VCHAR except `"` and `\`, obs-text.
        Ext::Quoted if ws || (b >= 0x21 && b != 0x7f) => Ext::Quoted,
        // quoted-pair: `\` then HTAB, SP, VCHAR or obs-text.
        Ext::QuotedPair if ws || (b >= 0x21 && b != 0x7f) => Ext::Quoted,
        Ext::Name | Ext::Token | Ext::AfterQuoted if b == b'\r' => return Ok(State::SizeLf),
        _ => return Err(BAD_CHUNK),
    };
    Ok(State::Extension(next))
}

/// A token character (RFC 9110 §5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte of a field value (RFC 9110 §5.5): VCHAR, SP, HTAB, obs-text.
fn is_field_value_byte(b: u8) -> bool {
    b == b' ' || b == b'\t' || (b >= 0x21 && b != 0x7f)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: TrailerBudget = TrailerBudget { bytes: 16 * 1024, fields: 100 };

    fn decode_split(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut d = ChunkedDecoder::new(ROOMY);
        let mut out = Vec::new();
        let a = d.decode(&input[..split], &mut out, 1 << 20)?;
        let used = if a == split { a + d.decode(&input[split..], &mut out, 1 << 20)? } else { a };
        assert!(d.is_done(), "not done");
        Ok((out, used))
    }

    /// The whole input at once, with `budget`: the status of the rejection, or 0 if done.
    fn status_with(input: &[u8], budget: TrailerBudget) -> u16 {
        let mut d = ChunkedDecoder::new(budget);
        match d.decode(input, &mut Vec::new(), 1 << 20) {
            Ok(_) if d.is_done() => 0,
            Ok(_) => panic!("incomplete: {:?}", String::from_utf8_lossy(input)),
            Err(e) => {
                assert!(e.close);
                e.status
            }
        }
    }

    fn status(input: &[u8]) -> u16 {
        status_with(input, ROOMY)
    }

    #[test]
    fn decodes_at_every_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for split in 0..body.len() {
            let (out, used) = decode_split(body, split).unwrap();
            assert_eq!(out, b"hello, world");
            assert_eq!(&body[used..], b"NEXT");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let bad: [&[u8]; 7] = [
            b"x\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"1000000000000000\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
        ];
        for b in bad {
            let mut d = ChunkedDecoder::new(ROOMY);
            assert!(d.decode(b, &mut Vec::new(), 1 << 20).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let mut d = ChunkedDecoder::new(ROOMY);
        assert_eq!(d.decode(b"ff\r\n", &mut Vec::new(), 10).unwrap_err().status, 413);
    }

    #[test]
    fn chunk_extensions_follow_the_grammar() {
        let good: [&[u8]; 6] = [
            b"1;a\r\nx\r\n0\r\n\r\n",
            b"1;a=b\r\nx\r\n0\r\n\r\n",
            b"1 ; a = b ;c\r\nx\r\n0\r\n\r\n",
            b"1\t;\ta\t=\t\"q \\\" ;=\"\r\nx\r\n0\r\n\r\n",
            b"1;a=\"\";b;c=d\r\nx\r\n0;last=\"\xff\"\r\n\r\n",
            b"1;!#$%&'*+-.^_`|~=x\r\nx\r\n0\r\n\r\n",
        ];
        for g in good {
            assert_eq!(status(g), 0, "{:?}", String::from_utf8_lossy(g));
        }
        let bad = [
            "1 \r\nx\r\n0\r\n\r\n",         // whitespace, then no extension
            "1;\r\nx\r\n0\r\n\r\n",         // no name
            "1;a \r\nx\r\n0\r\n\r\n",       // whitespace before CRLF
            "1;a=\r\nx\r\n0\r\n\r\n",       // no value
            "1;a=b c\r\nx\r\n0\r\n\r\n",    // two tokens
            "1;a=\"b\r\nx\r\n0\r\n\r\n",    // unterminated quote
            "1;a=\"b\"c\r\nx\r\n0\r\n\r\n", // token after the quote
            "1;a=b=c\r\nx\r\n0\r\n\r\n",
            "1;a(b)\r\nx\r\n0\r\n\r\n",       // not a token
            "1;a=\"\x01\"\r\nx\r\n0\r\n\r\n", // control character in a quoted string
            "1;a\nx\r\n0\r\n\r\n",            // bare LF
            "1;a\rx\r\n0\r\n\r\n",            // bare CR
            "1,a\r\nx\r\n0\r\n\r\n",
        ];
        for b in bad {
            assert_eq!(status(b.as_bytes()), 400, "{b:?}");
        }
    }

    #[test]
    fn size_line_is_bounded_at_1k() {
        let line = |len: usize| {
            let ext = format!(";a={}", "b".repeat(len - 4));
            format!("1{ext}\r\nx\r\n0\r\n\r\n").into_bytes()
        };
        assert_eq!(status(&line(MAX_CHUNK_LINE)), 0);
        assert_eq!(status(&line(MAX_CHUNK_LINE + 1)), 400);
        // The bound is per line: every line may use it.
        let two = [line(MAX_CHUNK_LINE), line(MAX_CHUNK_LINE)].concat();
        let mut d = ChunkedDecoder::new(ROOMY);
        let used = d.decode(&two, &mut Vec::new(), 1 << 20).unwrap();
        assert!(d.is_done() && used == two.len() / 2);
        let first = format!("1;a={}\r\nx\r\n", "b".repeat(MAX_CHUNK_LINE - 4));
        let both = format!("{first}{first}0\r\n\r\n");
        assert_eq!(status(both.as_bytes()), 0);
    }

    #[test]
    fn trailers_are_header_fields() {
        let good: [&[u8]; 3] =
            [b"0\r\nX-T: 1\r\n\r\n", b"0\r\nX-T:1\r\nY:\r\nZ: a \t b \xff\r\n\r\n", b"0\r\na:\t\r\n\r\n"];
        for g in good {
            assert_eq!(status(g), 0, "{:?}", String::from_utf8_lossy(g));
        }
        let bad = [
            "0\r\nX-T 1\r\n\r\n",             // no colon
            "0\r\nX-T : 1\r\n\r\n",           // whitespace before the colon
            "0\r\n: 1\r\n\r\n",               // empty name
            "0\r\nX-T: 1\r\n folded\r\n\r\n", // obs-fold
            "0\r\n\tX: 1\r\n\r\n",
            "0\r\nX(: 1\r\n\r\n",     // not a token
            "0\r\nX: a\x00b\r\n\r\n", // control character
            "0\r\nX: a\x7f\r\n\r\n",
            "0\r\nX: 1\n\r\n",      // bare LF
            "0\r\nX: 1\rY\r\n\r\n", // bare CR
            "0\r\n\r\r",
        ];
        for b in bad {
            assert_eq!(status(b.as_bytes()), 400, "{b:?}");
        }
    }

    #[test]
    fn trailers_count_toward_the_head_limits() {
        // Bytes: each field line with its CRLF; the final empty line is free.
        let one = b"0\r\nX-T: 12\r\n\r\n"; // a 9-byte field line
        assert_eq!(status_with(one, TrailerBudget { bytes: 9, fields: 1 }), 0);
        assert_eq!(status_with(one, TrailerBudget { bytes: 8, fields: 1 }), 431);
        assert_eq!(status_with(b"0\r\n\r\n", TrailerBudget { bytes: 0, fields: 0 }), 0);
        // Fields.
        let three = b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(status_with(three, TrailerBudget { bytes: 100, fields: 3 }), 0);
        assert_eq!(status_with(three, TrailerBudget { bytes: 100, fields: 2 }), 431);
        // A big trailer section is cut at the budget, not read to its end.
        let big = format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(20_000));
        let mut d = ChunkedDecoder::new(TrailerBudget { bytes: 16 * 1024, fields: 100 });
        assert_eq!(d.decode(big.as_bytes(), &mut Vec::new(), 10).unwrap_err().status, 431);
    }
}
