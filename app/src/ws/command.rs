//! The JSON commands a WebSocket client sends: `{"op":"sub","channel":"c","since":7,
//! "epoch":"3fa2c901","token":".."}`, `{"op":"unsub","channel":"c"}`,
//! `{"op":"pub","channel":"c","data":".."}`. A flat object of strings and whole numbers is
//! all they are, so a small hand-written reader is enough (the app has no JSON dependency);
//! anything else (nesting, fractions, `true`) is refused as a bad command.

/// A value of a command's field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Num(u64),
}

/// Parses a flat JSON object into its fields, in order.
pub fn parse_object(s: &str) -> Result<Vec<(String, Value)>, &'static str> {
    let mut p = Reader { b: s.as_bytes(), i: 0 };
    let mut fields = Vec::new();
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let value = match p.peek() {
                Some(b'"') => Value::Str(p.string()?),
                Some(b'0'..=b'9') => Value::Num(p.number()?),
                _ => return Err("invalid JSON: values are strings or whole numbers"),
            };
            fields.push((key, value));
            p.ws();
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b'}') => {
                    p.i += 1;
                    break;
                }
                _ => return Err("invalid JSON"),
            }
        }
    }
    p.ws();
    if p.i != p.b.len() {
        return Err("invalid JSON: text after the object");
    }
    Ok(fields)
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), &'static str> {
        if self.peek() != Some(c) {
            return Err("invalid JSON: a command is an object");
        }
        self.i += 1;
        Ok(())
    }

    fn number(&mut self) -> Result<u64, &'static str> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return Err("invalid JSON: numbers are whole");
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or("invalid JSON: number too large")
    }

    fn hex4(&mut self) -> Result<u32, &'static str> {
        let digits = self.b.get(self.i..self.i + 4).ok_or("invalid JSON escape")?;
        let s = std::str::from_utf8(digits).map_err(|_| "invalid JSON escape")?;
        let v = u32::from_str_radix(s, 16).map_err(|_| "invalid JSON escape")?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        const BAD: &str = "invalid JSON string";
        if self.peek() != Some(b'"') {
            return Err(BAD);
        }
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while !matches!(self.peek(), Some(b'"' | b'\\') | None) {
                if self.b[self.i] < 0x20 {
                    return Err(BAD);
                }
                self.i += 1;
            }
            // The input is a &str and we split at ASCII bytes: always on a char boundary.
            out.push_str(std::str::from_utf8(&self.b[start..self.i]).map_err(|_| BAD)?);
            match self.peek() {
                None => return Err(BAD),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(_) => {
                    self.i += 1;
                    let e = self.peek().ok_or(BAD)?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xd800..0xdc00).contains(&hi) {
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(BAD);
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(BAD);
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            char::from_u32(cp).ok_or(BAD)?
                        }
                        _ => return Err(BAD),
                    };
                    out.push(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        let f = parse_object(r#" {"op":"sub", "channel":"c","since":7,"epoch":"3fa2c901"} "#).unwrap();
        assert_eq!(f[0], ("op".into(), Value::Str("sub".into())));
        assert_eq!(f[2], ("since".into(), Value::Num(7)));
        let f = parse_object(r#"{"data":"a\"b\\n\n\u00e9\ud83d\ude00/"}"#).unwrap();
        assert_eq!(f[0].1, Value::Str("a\"b\\n\né😀/".into()));
        assert_eq!(parse_object("{}").unwrap(), vec![]);
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a":1.5}"#,
            r#"{"a":true}"#,
            r#"{"a":{}}"#,
            r#"{"a":"x"} x"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":99999999999999999999999}"#,
            r#"{"a" 1}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":1,}"#,
        ] {
            assert!(parse_object(bad).is_err(), "{bad}");
        }
    }
}
