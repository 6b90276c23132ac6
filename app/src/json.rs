//! The low-level JSON writers [`crate::render`] uses: strings, numbers, base64. Written by
//! hand because the output has a fixed shape and the only hard part, escaping, is a dozen
//! lines.

/// Appends `s` as a JSON string literal (with quotes).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The length of `s` escaped by [`push_str`], without the quotes.
pub(crate) fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a decimal number.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    http::response::push_u64(out, v);
}

/// Appends `data` in standard base64 with padding, inside quotes.
pub(crate) fn push_base64(out: &mut Vec<u8>, data: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push(b'"');
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(ALPHABET[(n >> 18) as usize & 63]);
        out.push(ALPHABET[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 { ALPHABET[(n >> 6) as usize & 63] } else { b'=' });
        out.push(if chunk.len() > 2 { ALPHABET[n as usize & 63] } else { b'=' });
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn escapes() {
        let raw = "a\"b\\c\nd\u{1}é";
        assert_eq!(s(|o| push_str(o, raw)), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(escaped_len(raw) + 2, s(|o| push_str(o, raw)).len());
    }

    #[test]
    fn base64() {
        assert_eq!(s(|o| push_base64(o, b"")), "\"\"");
        assert_eq!(s(|o| push_base64(o, b"f")), "\"Zg==\"");
        assert_eq!(s(|o| push_base64(o, b"fo")), "\"Zm8=\"");
        assert_eq!(s(|o| push_base64(o, b"foo")), "\"Zm9v\"");
        assert_eq!(s(|o| push_base64(o, &[0xff, 0xfe, 0x00, 0x80])), "\"//4AgA==\"");
    }
}
