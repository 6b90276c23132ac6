//! Chunked transfer coding (RFC 9112 §7.1), decoded incrementally.
//!
//! The decoder is a byte-level state machine so that a body split at any byte boundary across
//! reads decodes the same as one arriving whole. It is strict where leniency enables
//! smuggling: chunk sizes are hex digits only (no sign, no `0x`), at most 15 of them (so the
//! size cannot overflow), lines end in CRLF. Chunk extensions and trailer fields are skipped.

use crate::request::HttpError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// After the size: optional whitespace and `;extension`, up to CR.
    Extension,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR, then LF, after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line, up to CR.
    TrailerLine,
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    Done,
}

/// Incremental decoder of a chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes left in the current chunk (or the size being accumulated).
    remaining: u64,
    /// Decoded bytes so far.
    total: usize,
    /// Bytes of trailer section seen (bounded).
    trailer_bytes: usize,
}

const BAD_CHUNK: HttpError = HttpError::new(400, "invalid chunked body", true);
const MAX_TRAILER_BYTES: usize = 16 * 1024;

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder { state: State::Size { digits: 0 }, remaining: 0, total: 0, trailer_bytes: 0 }
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
            self.state = match self.state {
                State::Size { digits } => match hex_value(b) {
                    Some(v) if digits < 15 => {
                        self.remaining = self.remaining * 16 + v as u64;
                        State::Size { digits: digits + 1 }
                    }
                    Some(_) => return Err(BAD_CHUNK),
                    None if digits == 0 => return Err(BAD_CHUNK),
                    None => self.after_size(b)?,
                },
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(BAD_CHUNK),
                    _ => State::Extension,
                },
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
                State::DataLf if b == b'\n' => State::Size { digits: 0 },
                State::DataCr | State::DataLf => return Err(BAD_CHUNK),
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(BAD_CHUNK),
                    _ => self.trailer_byte()?,
                },
                State::TrailerLine => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(BAD_CHUNK),
                    _ => self.trailer_byte()?,
                },
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                State::TrailerLf | State::EndLf => return Err(BAD_CHUNK),
                State::Data | State::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }

    fn after_size(&mut self, b: u8) -> Result<State, HttpError> {
        match b {
            b'\r' => Ok(State::SizeLf),
            b';' | b' ' | b'\t' => Ok(State::Extension),
            _ => Err(BAD_CHUNK),
        }
    }

    fn trailer_byte(&mut self) -> Result<State, HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(HttpError::new(431, "trailer section too large", true));
        }
        Ok(State::TrailerLine)
    }
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

    fn decode_split(input: &[u8], split: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let a = d.decode(&input[..split], &mut out, 1 << 20)?;
        let used = if a == split { a + d.decode(&input[split..], &mut out, 1 << 20)? } else { a };
        assert!(d.is_done(), "not done");
        Ok((out, used))
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
            let mut d = ChunkedDecoder::new();
            assert!(d.decode(b, &mut Vec::new(), 1 << 20).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(b"ff\r\n", &mut Vec::new(), 10).unwrap_err().status, 413);
    }

    #[test]
    fn trailer_section_is_bounded() {
        let trailers = |n: usize| format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(n)).into_bytes();
        let mut d = ChunkedDecoder::new();
        let ok = trailers(MAX_TRAILER_BYTES - 100);
        assert_eq!(d.decode(&ok, &mut Vec::new(), 10).unwrap(), ok.len());
        assert!(d.is_done());
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.decode(&trailers(MAX_TRAILER_BYTES), &mut Vec::new(), 10).unwrap_err().status, 431);
    }
}
