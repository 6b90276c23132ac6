//! The WebSocket frame codec (RFC 6455 section 5), with no I/O: [`Decoder`] turns the bytes a
//! client sends into whole messages and control frames, enforcing what a server must (masked
//! frames, no RSV bits without an extension, control frames of at most 125 bytes and never
//! fragmented, continuation frames only inside a fragmented message, a message size limit,
//! UTF-8 text); [`encode`] writes the server's (unmasked) frames.
//!
//! Why a module of its own: the rules are many and each maps to a close code, so they are
//! tested here byte by byte, away from the sockets.

/// Close codes the server sends (RFC 6455 section 7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: the server is going away (shutdown).
    GoingAway,
    /// 1002: a protocol error.
    Protocol,
    /// 1003: a data type the server does not accept (binary messages).
    Unsupported,
    /// 1007: a text message that is not UTF-8.
    InvalidData,
    /// 1008: a policy violation (an unanswered ping, a client too slow to read).
    Policy,
    /// 1009: a message over `--ws-max-message`.
    TooBig,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::Protocol => 1002,
            CloseCode::Unsupported => 1003,
            CloseCode::InvalidData => 1007,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
        }
    }
}

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(b: u8) -> Option<Opcode> {
        Some(match b {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xa => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xa,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// What the decoder hands up.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole text message (UTF-8 checked).
    Text(String),
    /// A whole binary message.
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: its code (`None` if it had no payload), already checked.
    Close(Option<u16>),
}

/// A fragmented message being put together.
#[derive(Debug)]
enum Assembly {
    /// No data message is open: the next data frame must be Text or Binary.
    Idle,
    /// A message whose first frame had FIN clear: continuation frames follow.
    Open { text: bool, data: Vec<u8> },
}

/// Decodes a client's byte stream. Feed bytes with [`Decoder::push`], then take events with
/// [`Decoder::next_event`] until it returns `Ok(None)` (needs more bytes) or an error (the
/// code to close with; the connection is done).
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    buf: Vec<u8>,
    assembly: Assembly,
}

impl Decoder {
    pub fn new(max_message: usize) -> Decoder {
        Decoder { max_message, buf: Vec::new(), assembly: Assembly::Idle }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet decoded (a frame in progress).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_event(&mut self) -> Result<Option<Event>, CloseCode> {
        loop {
            let Some((fin, op, payload)) = self.next_frame()? else { return Ok(None) };
            if op.is_control() {
                return control(op, payload).map(Some);
            }
            let (text, data) = match (op, &mut self.assembly) {
                (Opcode::Continuation, Assembly::Idle) => return Err(CloseCode::Protocol),
                (Opcode::Continuation, Assembly::Open { data, .. }) => {
                    if data.len() + payload.len() > self.max_message {
                        return Err(CloseCode::TooBig);
                    }
                    data.extend_from_slice(&payload);
                    if !fin {
                        continue;
                    }
                    match std::mem::replace(&mut self.assembly, Assembly::Idle) {
                        Assembly::Open { text, data } => (text, data),
                        Assembly::Idle => return Err(CloseCode::Protocol),
                    }
                }
                (_, Assembly::Open { .. }) => return Err(CloseCode::Protocol),
                (op, Assembly::Idle) => {
                    let text = op == Opcode::Text;
                    if !fin {
                        self.assembly = Assembly::Open { text, data: payload };
                        continue;
                    }
                    (text, payload)
                }
            };
            return if text {
                String::from_utf8(data).map(|s| Some(Event::Text(s))).map_err(|_| CloseCode::InvalidData)
            } else {
                Ok(Some(Event::Binary(data)))
            };
        }
    }

    /// The next whole frame, unmasked: (FIN, opcode, payload).
    fn next_frame(&mut self) -> Result<Option<(bool, Opcode, Vec<u8>)>, CloseCode> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(CloseCode::Protocol);
        }
        let op = Opcode::from_bits(b[0] & 0x0f).ok_or(CloseCode::Protocol)?;
        if b[1] & 0x80 == 0 {
            return Err(CloseCode::Protocol);
        }
        if op.is_control() && (!fin || b[1] & 0x7f > 125) {
            return Err(CloseCode::Protocol);
        }
        let (len, at) = match b[1] & 0x7f {
            126 => match b.get(2..4) {
                Some(l) => (u16::from_be_bytes([l[0], l[1]]) as u64, 4),
                None => return Ok(None),
            },
            127 => match b.get(2..10) {
                Some(l) => {
                    let mut a = [0; 8];
                    a.copy_from_slice(l);
                    let len = u64::from_be_bytes(a);
                    if len >> 63 != 0 {
                        return Err(CloseCode::Protocol);
                    }
                    (len, 10)
                }
                None => return Ok(None),
            },
            n => (n as u64, 2),
        };
        // Refused as soon as the length is known: an oversize frame is never buffered.
        let open = match &self.assembly {
            Assembly::Open { data, .. } if !op.is_control() => data.len() as u64,
            _ => 0,
        };
        if open.saturating_add(len) > self.max_message as u64 {
            return Err(CloseCode::TooBig);
        }
        let len = len as usize;
        let Some(mask) = b.get(at..at + 4) else { return Ok(None) };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        let start = at + 4;
        if b.len() < start + len {
            return Ok(None);
        }
        let mut payload: Vec<u8> = b[start..start + len].to_vec();
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        self.buf.drain(..start + len);
        Ok(Some((fin, op, payload)))
    }
}

/// A control frame's event, its close payload checked.
fn control(op: Opcode, payload: Vec<u8>) -> Result<Event, CloseCode> {
    match op {
        Opcode::Ping => Ok(Event::Ping(payload)),
        Opcode::Pong => Ok(Event::Pong(payload)),
        _ => match payload.len() {
            0 => Ok(Event::Close(None)),
            1 => Err(CloseCode::Protocol),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !valid_close_code(code) {
                    return Err(CloseCode::Protocol);
                }
                std::str::from_utf8(&payload[2..]).map_err(|_| CloseCode::InvalidData)?;
                Ok(Event::Close(Some(code)))
            }
        },
    }
}

/// Codes a peer may send in a close frame (RFC 6455 section 7.4, and the IANA registry).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Appends one unmasked server frame (FIN set) to `out`.
pub fn encode(out: &mut Vec<u8>, op: Opcode, payload: &[u8]) {
    out.push(0x80 | op.bits());
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A close frame with `code`.
pub fn close_frame(code: CloseCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    encode(&mut out, Opcode::Close, &code.code().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn decode(bytes: &[u8]) -> Vec<Result<Event, CloseCode>> {
        let mut d = Decoder::new(1000);
        d.push(bytes);
        let mut events = Vec::new();
        loop {
            match d.next_event() {
                Ok(Some(e)) => events.push(Ok(e)),
                Ok(None) => return events,
                Err(c) => {
                    events.push(Err(c));
                    return events;
                }
            }
        }
    }

    #[test]
    fn text_ping_close() {
        let mut b = client(0x81, b"hello");
        b.extend(client(0x89, b"p"));
        b.extend(client(0x88, &[0x03, 0xe8]));
        assert_eq!(
            decode(&b),
            vec![
                Ok(Event::Text("hello".into())),
                Ok(Event::Ping(b"p".to_vec())),
                Ok(Event::Close(Some(1000)))
            ]
        );
    }

    #[test]
    fn byte_by_byte_and_lengths() {
        let big = vec![b'a'; 300];
        let b = client(0x81, &big);
        let mut d = Decoder::new(1000);
        for (i, byte) in b.iter().enumerate() {
            d.push(&[*byte]);
            let e = d.next_event().unwrap();
            assert_eq!(e.is_some(), i == b.len() - 1);
        }
        let mut d = Decoder::new(70_000);
        d.push(&client(0x82, &vec![1; 66_000]));
        assert_eq!(d.next_event(), Ok(Some(Event::Binary(vec![1; 66_000]))));
    }

    #[test]
    fn fragments_with_interleaved_control() {
        let mut b = client(0x01, b"he");
        b.extend(client(0x89, b"x"));
        b.extend(client(0x00, b"ll"));
        b.extend(client(0x80, b"o"));
        assert_eq!(decode(&b), vec![Ok(Event::Ping(b"x".to_vec())), Ok(Event::Text("hello".into()))]);
    }

    #[test]
    fn protocol_errors() {
        // Unmasked.
        assert_eq!(decode(&[0x81, 0x01, b'a']), vec![Err(CloseCode::Protocol)]);
        // RSV1.
        assert_eq!(decode(&client(0xc1, b"a")), vec![Err(CloseCode::Protocol)]);
        // Unknown opcode.
        assert_eq!(decode(&client(0x83, b"a")), vec![Err(CloseCode::Protocol)]);
        // Fragmented ping.
        assert_eq!(decode(&client(0x09, b"a")), vec![Err(CloseCode::Protocol)]);
        // Control frame over 125 bytes.
        assert_eq!(decode(&client(0x89, &[0; 126])), vec![Err(CloseCode::Protocol)]);
        // Continuation with nothing open; a new message inside an open one.
        assert_eq!(decode(&client(0x80, b"a")), vec![Err(CloseCode::Protocol)]);
        let mut b = client(0x01, b"a");
        b.extend(client(0x81, b"b"));
        assert_eq!(decode(&b), vec![Err(CloseCode::Protocol)]);
        // Close with one byte, a reserved code, a bad reason.
        assert_eq!(decode(&client(0x88, &[3])), vec![Err(CloseCode::Protocol)]);
        assert_eq!(decode(&client(0x88, &[0x03, 0xed])), vec![Err(CloseCode::Protocol)]);
        assert_eq!(decode(&client(0x88, &[0x03, 0xe8, 0xff])), vec![Err(CloseCode::InvalidData)]);
    }

    #[test]
    fn size_and_utf8() {
        // Refused from the header alone.
        let b = client(0x81, &[b'a'; 1001]);
        let mut d = Decoder::new(1000);
        d.push(&b[..8]);
        assert_eq!(d.next_event(), Err(CloseCode::TooBig));
        // Fragments adding up past the limit.
        let mut b = client(0x01, &[b'a'; 600]);
        b.extend(client(0x80, &[b'a'; 600]));
        assert_eq!(decode(&b), vec![Err(CloseCode::TooBig)]);
        assert_eq!(decode(&client(0x81, &[0xc3, 0x28])), vec![Err(CloseCode::InvalidData)]);
        // A code point split across fragments is fine.
        let mut b = client(0x01, &[0xc3]);
        b.extend(client(0x80, &[0xa9]));
        assert_eq!(decode(&b), vec![Ok(Event::Text("é".into()))]);
    }

    #[test]
    fn encodes() {
        let mut out = Vec::new();
        encode(&mut out, Opcode::Text, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        let mut out = Vec::new();
        encode(&mut out, Opcode::Binary, &[0; 200]);
        assert_eq!(&out[..4], &[0x82, 126, 0, 200]);
        assert_eq!(close_frame(CloseCode::TooBig), [0x88, 2, 0x03, 0xf1]);
        assert!(valid_close_code(4000) && !valid_close_code(1005) && !valid_close_code(999));
    }
}
