//! `GET /ws` end to end: a real client library (`tungstenite`) for the happy paths, and
//! frames made by hand over a `TcpStream` for everything a hostile or broken client sends.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use app::auth::{unix_now, PublishToken, SubscribeKey};
use common::*;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn connect(addr: SocketAddr, query: &str) -> Ws {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let (ws, resp) = tungstenite::client(format!("ws://{addr}/ws{query}"), s).unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string())).unwrap();
}

/// The next JSON event (pings are answered by the library on the way).
fn event(ws: &mut Ws) -> Json {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return Json::parse(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Waits until every command sent before is carried out: commands run in order, and an
/// `unsub` of a channel never subscribed answers with an error.
fn barrier(ws: &mut Ws) {
    send(ws, r#"{"op":"unsub","channel":"barrier"}"#);
    let e = event(ws);
    assert_eq!(e.get("op").as_str(), "unsub", "{e:?}");
    assert_eq!(e.get("error").as_str(), "not subscribed");
}

fn epoch_of(addr: SocketAddr, channel: &str) -> String {
    get(addr, &format!("/sub/{channel}?since=0&timeout=0")).etag_parts().0
}

#[test]
fn subscribe_then_publish_over_http() {
    let addr = start(opts());
    let mut ws = connect(addr, "");
    send(&mut ws, r#"{"op":"sub","channel":"news"}"#);
    barrier(&mut ws);
    let published = post(addr, "/pub/news", b"hello \"world\"\n").json();
    assert_eq!(published.get("subscribers").as_u64(), 1);
    let e = event(&mut ws);
    assert_eq!(e.get("channel").as_str(), "news");
    assert_eq!(e.get("seq").as_u64(), 1);
    assert_eq!(e.get("data").as_str(), "hello \"world\"\n");
    assert_eq!(e.get("epoch").as_str(), epoch_of(addr, "news"));
    assert_eq!(stat(addr, "ws_connections"), 1);
}

#[test]
fn since_and_epoch_catch_up_or_reset() {
    let addr = start(opts());
    for m in ["m1", "m2", "m3"] {
        post(addr, "/pub/log", m.as_bytes());
    }
    let epoch = epoch_of(addr, "log");
    let mut ws = connect(addr, "");
    send(&mut ws, &format!(r#"{{"op":"sub","channel":"log","since":1,"epoch":"{epoch}"}}"#));
    for (seq, data) in [(2, "m2"), (3, "m3")] {
        let e = event(&mut ws);
        assert_eq!((e.get("seq").as_u64(), e.get("data").as_str()), (seq, data));
    }
    // Then the live ones.
    barrier(&mut ws);
    post(addr, "/pub/log", b"m4");
    assert_eq!(event(&mut ws).get("seq").as_u64(), 4);

    // A cursor of another life: reset first, then everything retained.
    let mut other = connect(addr, "");
    send(&mut other, r#"{"op":"sub","channel":"log","since":9,"epoch":"00000001"}"#);
    let reset = event(&mut other);
    assert!(reset.get("reset").as_bool(), "{reset:?}");
    assert_eq!(reset.get("epoch").as_str(), epoch);
    let seqs: Vec<u64> = (0..4).map(|_| event(&mut other).get("seq").as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

#[test]
fn missed_and_binary_messages() {
    let addr = start(hub_opts(|h| h.retain = 2));
    for m in ["a", "b", "c", "d", "e"] {
        post(addr, "/pub/small", m.as_bytes());
    }
    let epoch = epoch_of(addr, "small");
    let mut ws = connect(addr, "");
    send(&mut ws, &format!(r#"{{"op":"sub","channel":"small","since":1,"epoch":"{epoch}"}}"#));
    let missed = event(&mut ws);
    assert_eq!((missed.get("channel").as_str(), missed.get("missed").as_u64()), ("small", 2));
    assert_eq!(event(&mut ws).get("seq").as_u64(), 4);
    assert_eq!(event(&mut ws).get("data").as_str(), "e");

    post(addr, "/pub/small", &[0xff, 0x00, 0x80]);
    let e = event(&mut ws);
    assert_eq!(e.get("data_b64").as_str(), "/wCA");
    assert!(e.opt("data").is_none());
}

#[test]
fn pub_unsub_and_several_channels_up_to_the_limit() {
    let mut o = opts();
    o.ws.max_channels = 3;
    let addr = start(o);
    let mut ws = connect(addr, "");
    for c in ["a", "b", "c"] {
        send(&mut ws, &format!(r#"{{"op":"sub","channel":"{c}"}}"#));
    }
    send(&mut ws, r#"{"op":"sub","channel":"d"}"#);
    let e = event(&mut ws);
    assert_eq!(e.get("op").as_str(), "sub");
    assert!(e.get("error").as_str().contains("too many channels"), "{e:?}");
    send(&mut ws, r#"{"op":"sub","channel":"a"}"#);
    assert_eq!(event(&mut ws).get("error").as_str(), "already subscribed");

    // pub over the socket reaches the socket itself and an HTTP poller.
    send(&mut ws, r#"{"op":"pub","channel":"c","data":"to c \u00e9"}"#);
    let e = event(&mut ws);
    assert_eq!((e.get("channel").as_str(), e.get("data").as_str()), ("c", "to c é"));
    assert_eq!(get(addr, "/sub/c?since=0").json().get("messages").as_array().len(), 1);
    post(addr, "/pub/a", b"to a");
    assert_eq!(event(&mut ws).get("channel").as_str(), "a");

    // After unsub, nothing more from "a"; the freed slot takes "d".
    send(&mut ws, r#"{"op":"unsub","channel":"a"}"#);
    send(&mut ws, r#"{"op":"sub","channel":"d"}"#);
    barrier(&mut ws);
    post(addr, "/pub/a", b"not for you");
    post(addr, "/pub/d", b"to d");
    let e = event(&mut ws);
    assert_eq!((e.get("channel").as_str(), e.get("data").as_str()), ("d", "to d"));

    // Bad commands answer an error and leave the socket open.
    for (cmd, op) in [
        ("nonsense", None),
        (r#"{"op":"dance","channel":"a"}"#, Some("dance")),
        (r#"{"op":"pub","channel":"a"}"#, Some("pub")),
        (r#"{"op":"sub","channel":"a b"}"#, Some("sub")),
    ] {
        send(&mut ws, cmd);
        let e = event(&mut ws);
        assert!(!e.get("error").as_str().is_empty());
        assert_eq!(e.get("op").str(), op, "{cmd}");
    }
    barrier(&mut ws);
}

#[test]
fn publish_and_subscribe_tokens() {
    let mut o = opts();
    o.publish_token = Some(PublishToken::new(b"s3cret"));
    o.subscribe_key = Some(SubscribeKey::new(b"key"));
    let addr = start(o);
    let token = SubscribeKey::new(b"key").sign("news", unix_now() + 60);

    let mut plain = connect(addr, "");
    send(&mut plain, r#"{"op":"pub","channel":"news","data":"x"}"#);
    assert!(event(&mut plain).get("error").as_str().contains("publish token"));
    send(&mut plain, r#"{"op":"sub","channel":"news"}"#);
    assert!(event(&mut plain).get("error").as_str().contains("subscribe token"));
    // Per command.
    send(&mut plain, &format!(r#"{{"op":"sub","channel":"news","token":"{token}"}}"#));
    barrier(&mut plain);

    // In the handshake: token= for subscribing, publish_token= for publishing.
    let mut both = connect(addr, &format!("?token={token}&publish_token=s3cret"));
    send(&mut both, r#"{"op":"sub","channel":"news"}"#);
    send(&mut both, r#"{"op":"sub","channel":"other"}"#);
    assert!(event(&mut both).get("error").as_str().contains("subscribe token"));
    send(&mut both, r#"{"op":"pub","channel":"news","data":"signed"}"#);
    assert_eq!(event(&mut both).get("data").as_str(), "signed");
    assert_eq!(event(&mut plain).get("data").as_str(), "signed");
}

// ----- hand-made frames ---------------------------------------------------------------------

/// A raw WebSocket after a hand-written handshake.
fn raw(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{head}");
    s
}

/// A client frame: `first` is FIN/RSV/opcode; masked unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0xa1, 0x02, 0x7c, 0x3e];
    let bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(bit | n as u8),
        n @ 126..=0xffff => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The next server frame: (opcode, payload); `None` at EOF.
fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    assert_eq!(h[0] & 0x70, 0, "server frames have no RSV bits");
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).unwrap();
    Some((h[0] & 0x0f, payload))
}

/// Reads until the server's close frame, checks its code, then the end of the connection.
fn expect_close(s: &mut TcpStream, code: u16) {
    loop {
        match read_frame(s) {
            Some((0x8, p)) => {
                assert_eq!(u16::from_be_bytes([p[0], p[1]]), code);
                break;
            }
            Some(_) => continue,
            None => panic!("connection ended without a close frame (wanted {code})"),
        }
    }
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "bytes after the close frame");
}

fn hostile(bytes: &[u8], code: u16) {
    let mut o = opts();
    o.ws.max_message = 1000;
    let addr = start(o);
    let mut s = raw(addr);
    s.write_all(bytes).unwrap();
    expect_close(&mut s, code);
    wait_stat(addr, "ws_connections", 0, READ_TIMEOUT);
}

#[test]
fn unmasked_frame_is_a_protocol_error() {
    hostile(&frame(0x81, b"{}", false), 1002);
}

#[test]
fn rsv_bits_are_a_protocol_error() {
    hostile(&frame(0xc1, b"{}", true), 1002);
    hostile(&frame(0xa1, b"{}", true), 1002);
}

#[test]
fn fragmented_or_long_control_frames_are_protocol_errors() {
    hostile(&frame(0x09, b"ping", true), 1002);
    hostile(&frame(0x89, &[b'p'; 126], true), 1002);
}

#[test]
fn oversize_message_is_1009() {
    hostile(&frame(0x81, &[b' '; 1001], true), 1009);
    // In fragments adding up past the limit.
    let mut b = frame(0x01, &[b' '; 600], true);
    b.extend(frame(0x80, &[b' '; 600], true));
    hostile(&b, 1009);
}

#[test]
fn invalid_utf8_text_is_1007_and_binary_1003() {
    hostile(&frame(0x81, &[b'"', 0xc3, 0x28, b'"'], true), 1007);
    hostile(&frame(0x82, b"{}", true), 1003);
}

#[test]
fn close_handshake() {
    // A bad code: 1002. A good one is echoed.
    hostile(&frame(0x88, &1005u16.to_be_bytes(), true), 1002);
    hostile(&frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e'], true), 1000);
    hostile(&frame(0x88, &4001u16.to_be_bytes(), true), 4001);
}

#[test]
fn ping_pong_and_fragments_with_interleaved_control() {
    let addr = start(opts());
    let mut s = raw(addr);
    s.write_all(&frame(0x89, b"are you there", true)).unwrap();
    assert_eq!(read_frame(&mut s), Some((0xa, b"are you there".to_vec())));
    // A command in three fragments with a ping between them.
    let cmd = br#"{"op":"unsub","channel":"nothing"}"#;
    let mut b = frame(0x01, &cmd[..5], true);
    b.extend(frame(0x89, b"mid", true));
    b.extend(frame(0x00, &cmd[5..20], true));
    b.extend(frame(0x80, &cmd[20..], true));
    s.write_all(&b).unwrap();
    assert_eq!(read_frame(&mut s), Some((0xa, b"mid".to_vec())));
    let (op, text) = read_frame(&mut s).unwrap();
    assert_eq!(op, 0x1);
    let e = Json::parse(std::str::from_utf8(&text).unwrap()).unwrap();
    assert_eq!((e.get("error").as_str(), e.get("op").as_str()), ("not subscribed", "unsub"));
}

#[test]
fn half_sent_frame_then_silence_is_pinged_then_closed() {
    let mut o = opts();
    o.ws.ping = Duration::from_millis(300);
    let addr = start(o);
    let mut s = raw(addr);
    let f = frame(0x81, br#"{"op":"sub","channel":"x"}"#, true);
    s.write_all(&f[..9]).unwrap();
    let start = Instant::now();
    // Silent for one interval: pinged; silent for the next: closed with 1008.
    assert_eq!(read_frame(&mut s).map(|f| f.0), Some(0x9));
    expect_close(&mut s, 1008);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "{took:?}");
    wait_stat(addr, "ws_connections", 0, READ_TIMEOUT);
}

#[test]
fn a_client_that_answers_pings_stays() {
    let mut o = opts();
    o.ws.ping = Duration::from_millis(200);
    let addr = start(o);
    let mut ws = connect(addr, "");
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(m) => panic!("unexpected {m:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        // tungstenite queues the pong; flushing sends it.
        let _ = ws.flush();
    }
    assert!(pings >= 2, "{pings}");
    assert_eq!(stat(addr, "ws_connections"), 1);
}

#[test]
fn bad_handshakes() {
    let addr = start(opts());
    assert_eq!(get(addr, "/ws").status, 400);
    let mut c = Client::connect(addr);
    let r = c.get_with(
        "/ws",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "8"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    );
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    assert_eq!(once(addr, "POST", "/ws", b"").status, 405);
}

#[test]
fn a_socket_that_does_not_read_is_dropped() {
    let mut o = opts();
    o.http.limits.max_output_bytes = 64 * 1024;
    let addr = start(o);
    let mut lazy = raw(addr);
    lazy.write_all(&frame(0x81, br#"{"op":"sub","channel":"flood"}"#, true)).unwrap();
    let mut ws = connect(addr, "");
    send(&mut ws, r#"{"op":"sub","channel":"flood"}"#);
    barrier(&mut ws);
    let big = vec![b'x'; 60 * 1024];
    let mut received = 0;
    for _ in 0..400 {
        post(addr, "/pub/flood", &big);
        event(&mut ws);
        received += 1;
        if stat(addr, "ws_dropped_slow_total") > 0 {
            break;
        }
    }
    assert_eq!(stat(addr, "ws_dropped_slow_total"), 1, "after {received} messages");
    // The reading one is unaffected.
    post(addr, "/pub/flood", b"still here");
    assert_eq!(event(&mut ws).get("data").as_str(), "still here");
    assert_eq!(stat(addr, "ws_connections"), 1);
}

#[test]
fn a_large_backlog_arrives_whole_and_in_order_then_live() {
    let addr = start(opts());
    let body = vec![b'y'; 1000];
    for _ in 0..900 {
        post(addr, "/pub/backlog", &body);
    }
    let epoch = epoch_of(addr, "backlog");
    let mut ws = connect(addr, "");
    send(&mut ws, &format!(r#"{{"op":"sub","channel":"backlog","since":0,"epoch":"{epoch}"}}"#));
    for seq in 1..=900 {
        let e = event(&mut ws);
        assert_eq!(e.get("seq").as_u64(), seq);
        assert_eq!(e.get("data").as_str().len(), 1000);
    }
    barrier(&mut ws);
    post(addr, "/pub/backlog", b"live");
    assert_eq!(event(&mut ws).get("seq").as_u64(), 901);
}

#[test]
fn shutdown_sends_close_1001_and_exits_0() {
    let mut server = Child::spawn(&[]);
    let mut s = raw(server.addr);
    s.write_all(&frame(0x81, br#"{"op":"sub","channel":"bye"}"#, true)).unwrap();
    wait_stat(server.addr, "ws_connections", 1, READ_TIMEOUT);
    server.signal(libc::SIGTERM);
    expect_close(&mut s, 1001);
    let status = server.wait_exit(Duration::from_secs(10)).expect("the server did not stop");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}
