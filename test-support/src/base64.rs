//! Strict base64 (RFC 4648, standard alphabet, with padding): the hub sends a message that is
//! not UTF-8 as `data_b64`, and a test reads it back. Strict, so that a hub writing anything
//! but the canonical encoding fails the test rather than being decoded kindly.

/// Decodes `s`; `None` unless it is canonical padded base64 (length a multiple of 4, `=` only
/// at the end, unused bits zero).
pub fn decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.as_bytes();
    if s.len() % 4 != 0 {
        return None;
    }
    let quads = s.len() / 4;
    let mut out = Vec::with_capacity(quads * 3);
    for (i, q) in s.chunks(4).enumerate() {
        let last = i + 1 == quads;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = n << 6 | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // Non-canonical encodings (leftover bits set) are refused.
        if bytes[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_canonical_base64() {
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("Zg=="), Some(b"f".to_vec()));
        assert_eq!(decode("Zm8="), Some(b"fo".to_vec()));
        assert_eq!(decode("Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(decode("Zm9vYmFy"), Some(b"foobar".to_vec()));
        assert_eq!(decode("/+8A"), Some(vec![0xff, 0xef, 0x00]));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["Zg", "Zg=", "Zh==", "Zm9=", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm 9v", "-_8A"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
