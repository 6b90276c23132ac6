//! A strict JSON reader (RFC 8259), enough to check that the hub's answers are valid JSON and
//! to read their fields back: the end-to-end tests read `/stats` and `/sub` answers with it,
//! the fuzz targets check every answer with it.
//!
//! Strict means it refuses what a lenient reader lets through and a browser's `JSON.parse`
//! would not: trailing bytes, leading zeros, `+1`, `1.`, raw control characters in strings,
//! lone surrogates, bad escapes, input that is not UTF-8. Numbers keep their text, so a `u64`
//! reads back exactly (no trip through `f64`). Nesting deeper than [`MAX_DEPTH`] is an error,
//! not a stack overflow.
//!
//! Two sets of accessors: `opt`/`u64`/`str`/... return `Option` (for code that must not
//! panic on a surprise, or that wants to say more about it), `get`/`as_u64`/`as_str`/...
//! panic with the value in the message (for tests, where a panic is the failure report).

/// How deeply arrays and objects may nest.
pub const MAX_DEPTH: usize = 64;

/// A parsed JSON value. Object members keep their order (and duplicates: `opt` finds the
/// first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A number, as its (valid) text.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Parses a whole document from bytes; `Err` says where and why it is not JSON.
pub fn parse(input: &[u8]) -> Result<Json, String> {
    let text = std::str::from_utf8(input).map_err(|e| format!("not UTF-8: {e}"))?;
    Json::parse(text)
}

impl Json {
    /// Parses a whole document; `Err` says where and why it is not JSON.
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        p.ws();
        let v = p.value(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at byte {}", p.i));
        }
        Ok(v)
    }

    // ----- accessors that return Option ------------------------------------------------------

    /// The member `key` of an object, if this is an object and has it.
    pub fn opt(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The number as a `u64`, if it is a whole number in range (written without fraction or
    /// exponent, as the hub writes them).
    pub fn u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// The number as an `f64`, if this is a number.
    pub fn f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn arr(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }

    // ----- accessors that panic (tests) ------------------------------------------------------

    /// The member `key` of an object; panics if absent.
    pub fn get(&self, key: &str) -> &Json {
        self.opt(key).unwrap_or_else(|| panic!("no {key:?} in {self:?}"))
    }

    /// The keys of an object, in order; panics if this is not an object.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(members) => members.iter().map(|(k, _)| k.as_str()).collect(),
            _ => panic!("not an object: {self:?}"),
        }
    }

    pub fn as_u64(&self) -> u64 {
        self.u64().unwrap_or_else(|| panic!("not a whole number: {self:?}"))
    }

    pub fn as_f64(&self) -> f64 {
        self.f64().unwrap_or_else(|| panic!("not a number: {self:?}"))
    }

    pub fn as_str(&self) -> &str {
        self.str().unwrap_or_else(|| panic!("not a string: {self:?}"))
    }

    pub fn as_bool(&self) -> bool {
        self.bool().unwrap_or_else(|| panic!("not a bool: {self:?}"))
    }

    pub fn as_array(&self) -> &[Json] {
        self.arr().unwrap_or_else(|| panic!("not an array: {self:?}"))
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            self.err(&format!("expected {:?}", String::from_utf8_lossy(lit)))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    self.eat(b":")?;
                    self.ws();
                    let v = self.value(depth + 1)?;
                    members.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(members));
                        }
                        _ => return self.err("expected , or }"),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return self.err("expected , or ]"),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.eat(b"true").map(|_| Json::Bool(true)),
            Some(b'f') => self.eat(b"false").map(|_| Json::Bool(false)),
            Some(b'n') => self.eat(b"null").map(|_| Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err("expected a value"),
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        match self.digits() {
            0 => return self.err("expected a digit"),
            n if n > 1 && self.s[int_start] == b'0' => return self.err("leading zero"),
            _ => {}
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.err("expected a digit after '.'");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("expected a digit in the exponent");
            }
        }
        // Only ASCII digits and signs were consumed: always valid UTF-8.
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        Ok(Json::Num(text))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let Some(h) = self.s.get(self.i..self.i + 4) else { return self.err("short \\u escape") };
        if !h.iter().all(u8::is_ascii_hexdigit) {
            return self.err("bad \\u escape");
        }
        let v = h.iter().fold(0, |acc, &b| acc << 4 | (b as char).to_digit(16).unwrap_or(0));
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b"\"")?;
        let mut out = String::new();
        loop {
            let start = self.i;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.i += 1;
            }
            // The input is a &str and we stopped at an ASCII byte (or the end): a char
            // boundary, so this never replaces anything.
            out.push_str(&String::from_utf8_lossy(&self.s[start..self.i]));
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let Some(e) = self.peek() else { return self.err("unterminated escape") };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                self.eat(b"\\u").or_else(|_| self.err("lone high surrogate"))?;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return self.err("lone high surrogate");
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            match char::from_u32(code) {
                                Some(c) => out.push(c),
                                None => return self.err("lone low surrogate"),
                            }
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                Some(_) => return self.err("raw control character in string"),
                None => return self.err("unterminated string"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Json {
        Json::Num(s.into())
    }

    #[test]
    fn reads_the_hubs_answers() {
        let doc = parse(
            br#"{"channel":"a","messages":[{"seq":1,"data":"x\u00e9\ud83d\ude00"},{"seq":2,"data_b64":"/w=="}],
               "next":3,"missed":0,"took_ms":31.5,"closed":false,"x":null}"#,
        )
        .unwrap();
        assert_eq!(doc.keys(), ["channel", "messages", "next", "missed", "took_ms", "closed", "x"]);
        assert_eq!(doc.get("channel").as_str(), "a");
        let m = doc.get("messages").as_array();
        assert_eq!(m[0].get("data").as_str(), "x\u{e9}\u{1f600}");
        assert_eq!(m[1].opt("data"), None);
        assert_eq!(doc.get("next").as_u64(), 3);
        assert_eq!(doc.get("took_ms").as_f64(), 31.5);
        assert_eq!(doc.get("took_ms").u64(), None, "not a whole number");
        assert!(!doc.get("closed").as_bool());
        assert_eq!(doc.get("x"), &Json::Null);
        assert_eq!(doc.opt("nope"), None);
        assert_eq!(m[0].opt("seq").and_then(Json::u64), Some(1));
    }

    #[test]
    fn numbers_keep_their_text() {
        assert_eq!(Json::parse("18446744073709551615").unwrap().as_u64(), u64::MAX);
        assert_eq!(Json::parse("18446744073709551616").unwrap().u64(), None, "out of range");
        for ok in ["0", "-0", "7", "-12", "1.5", "0.25", "1e9", "1E+2", "2e-3", "-0.0e0"] {
            assert_eq!(Json::parse(ok), Ok(num(ok)), "{ok}");
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        let bad: &[&[u8]] = &[
            b"",
            b" ",
            b"01",
            b"-",
            b"+1",
            b"1.",
            b".5",
            b"1e",
            b"1e+",
            b"0x10",
            b"NaN",
            b"tru",
            b"nul",
            b"[1,]",
            b"[1 2]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{\"a\":1}x",
            b"\"abc",
            b"\"a\tb\"",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\u12g4\"",
            b"\"\\ud800\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\udc00\"",
            b"\"\xff\"",
            b"'a'",
        ];
        for b in bad {
            assert!(parse(b).is_err(), "accepted {:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Json::parse(&ok).is_ok());
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(Json::parse(&deep).unwrap_err().contains("nested too deeply"));
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(Json::parse("[1,x]").unwrap_err(), "expected a value at byte 3");
        assert_eq!(Json::parse("{} {}").unwrap_err(), "trailing bytes at byte 3");
    }
}
