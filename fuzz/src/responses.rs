//! Splits the bytes a client received into responses and checks each one strictly.
//!
//! The services used by the fuzz targets never produce a body that starts with `HTTP/1.1 `,
//! so "no body" (HEAD, 1xx, 204, 304) is recognised by the next response starting right
//! after the head.

/// One response as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub status: u16,
    /// The head, status line to blank line.
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    /// The first header `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Parses and checks the whole stream. `complete` = the server closed cleanly after writing
/// everything (a FIN read to EOF), so no response may be cut short. Panics on any violation.
pub fn check(stream: &[u8], complete: bool) -> Vec<Received> {
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let shown = || String::from_utf8_lossy(&rest[..rest.len().min(200)]).into_owned();
        if !complete && rest.len() < 9 {
            assert!(b"HTTP/1.1 ".starts_with(rest), "not a response start: {:?}", shown());
            break;
        }
        assert!(rest.starts_with(b"HTTP/1.1 "), "response does not start with HTTP/1.1: {:?}", shown());
        let Some(end) = find(rest, b"\r\n\r\n") else {
            assert!(!complete, "response head cut short in a complete stream: {:?}", shown());
            break;
        };
        let head_bytes = &rest[..end + 4];
        let head = std::str::from_utf8(head_bytes)
            .unwrap_or_else(|_| panic!("response head is not UTF-8: {:?}", shown()))
            .to_string();
        let status_line = head.split("\r\n").next().unwrap();
        let code = &status_line[9..];
        assert!(
            code.len() >= 4
                && code.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                && code.as_bytes()[3] == b' ',
            "bad status line {status_line:?}"
        );
        let status: u16 = code[..3].parse().unwrap();
        assert!((100..600).contains(&status), "bad status {status}");
        let mut r = Received { status, head, body: Vec::new() };
        rest = &rest[end + 4..];
        if status == 100 {
            assert_eq!(r.head, "HTTP/1.1 100 Continue\r\n\r\n");
            out.push(r);
            continue;
        }
        assert!(r.header("server") == Some("tidings"), "no Server header: {:?}", r.head);
        assert!(r.header("date").is_some_and(|d| d.len() == 29), "no Date header: {:?}", r.head);
        let lengths = r.head.to_ascii_lowercase().matches("\r\ncontent-length:").count();
        if http::response::is_bodiless(status) {
            assert_eq!(lengths, 0, "Content-Length on a bodiless status: {:?}", r.head);
        } else {
            assert_eq!(lengths, 1, "want exactly one Content-Length: {:?}", r.head);
            let n: usize = r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad Content-Length: {:?}", r.head));
            let bodiless = rest.is_empty() || rest.starts_with(b"HTTP/1.1 ");
            if !bodiless && n > 0 {
                if rest.len() < n {
                    assert!(!complete, "body cut short in a complete stream: {:?}", r.head);
                    r.body = rest.to_vec();
                    out.push(r);
                    break;
                }
                r.body = rest[..n].to_vec();
                rest = &rest[n..];
            }
        }
        out.push(r);
    }
    out
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
