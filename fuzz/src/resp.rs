//! A RESP2 writer for any [`Reply`], for the `resp_reply` target's round trip. The product
//! only writes commands (`encode_command`); replies are only read, so the writer lives here.

use app::redis::resp::Reply;

/// Appends `reply` in the one spelling Redis uses (and `parse_reply` accepts).
pub fn write_reply(out: &mut Vec<u8>, reply: &Reply) {
    match reply {
        Reply::Simple(text) => line(out, b'+', text),
        Reply::Error(text) => line(out, b'-', text),
        Reply::Integer(n) => line(out, b':', n.to_string().as_bytes()),
        Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Reply::Bulk(Some(data)) => {
            line(out, b'$', data.len().to_string().as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Reply::Array(Some(elements)) => {
            line(out, b'*', elements.len().to_string().as_bytes());
            for element in elements {
                write_reply(out, element);
            }
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}
