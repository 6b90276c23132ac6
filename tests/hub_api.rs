//! The hub's HTTP API, rule by rule, against an in-process server (one per test).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// What each retained message costs besides its body (`app::hub::MESSAGE_OVERHEAD`).
const OVERHEAD: u64 = app::hub::MESSAGE_OVERHEAD as u64;

fn server() -> std::net::SocketAddr {
    start(opts())
}

/// Publishes `n` messages `m1..=mn` to `channel` and checks their seqs.
fn publish_n(addr: std::net::SocketAddr, channel: &str, n: u64) {
    let mut c = Client::connect(addr);
    for i in 1..=n {
        let r = c.post(&format!("/pub/{channel}"), format!("m{i}").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json().get("seq").as_u64(), i);
    }
}

#[test]
fn publish_answers_seq_and_subscribers() {
    let addr = server();
    let mut c = Client::connect(addr);
    for i in 1..=3u64 {
        let r = c.post("/pub/news", b"hello");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let j = r.json();
        assert_eq!(j, Json::parse(&format!(r#"{{"seq":{i},"subscribers":0}}"#)).unwrap());
    }
    // Seqs are per channel.
    let r = c.post("/pub/other", b"x");
    assert_eq!(r.json().get("seq").as_u64(), 1);
    let r = c.post("/pub/news", b"");
    assert_eq!(r.json().get("seq").as_u64(), 4, "an empty message is a message");
}

#[test]
fn subscribe_with_query_cursor() {
    let addr = server();
    publish_n(addr, "c", 3);
    let mut c = Client::connect(addr);
    let r = c.get("/sub/c?since=0&timeout=0");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.etag_seq(), "\"3\"");
    let j = r.json();
    assert_eq!(j.get("channel").as_str(), "c");
    assert_eq!(messages(&j), vec![(1, b"m1".to_vec()), (2, b"m2".to_vec()), (3, b"m3".to_vec())]);
    assert_eq!(j.get("next").as_u64(), 3);
    assert_eq!(j.get("missed").as_u64(), 0);
    assert!(j.opt("reset").is_none(), "no reset for a cursor behind the channel");

    let r = c.get("/sub/c?since=1");
    assert_eq!(r.status, 200, "messages after the cursor are answered at once");
    assert_eq!(seqs(&r.json()), vec![2, 3]);
    assert_eq!(r.etag_seq(), "\"3\"");
    // The answer's exact shape; the epoch is the ETag's.
    let r = c.get("/sub/c?since=2");
    let (epoch, _) = r.etag_parts();
    let want = format!(
        r#"{{"channel":"c","epoch":"{epoch}","messages":[{{"seq":3,"data":"m3"}}],"next":3,"missed":0}}"#
    );
    assert_eq!(r.text(), want);
}

#[test]
fn cursor_from_if_none_match_and_query_wins() {
    let addr = server();
    publish_n(addr, "c", 3);
    let mut c = Client::connect(addr);
    let r = c.get_with("/sub/c?timeout=0", &[("If-None-Match", "\"1\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(seqs(&r.json()), vec![2, 3]);
    assert_eq!(r.etag_seq(), "\"3\"");

    // The ETag of an answer works as the next If-None-Match.
    let etag = r.etag().to_string(); // "EPOCH:SEQ", sent back as is
    let r = c.get_with("/sub/c?timeout=0", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304, "up to date");
    assert_eq!(r.etag_seq(), "\"3\"");
    assert!(r.body.is_empty());

    // Query and header disagree: the query wins, both ways.
    let r = c.get_with("/sub/c?since=2&timeout=0", &[("If-None-Match", "\"0\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(seqs(&r.json()), vec![3]);
    let r = c.get_with("/sub/c?since=0&timeout=0", &[("If-None-Match", "\"3\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(seqs(&r.json()), vec![1, 2, 3]);
    let r = c.get_with("/sub/c?since=3&timeout=0", &[("If-None-Match", "\"0\"")]);
    assert_eq!(r.status, 304);
    assert_eq!(r.etag_seq(), "\"3\"");
}

#[test]
fn timeout_answers_304_with_the_cursor() {
    let addr = server();
    publish_n(addr, "t", 2);
    let mut c = Client::connect(addr);
    let t0 = Instant::now();
    let r = c.get("/sub/t?since=2&timeout=0.4");
    let took = t0.elapsed();
    assert_eq!(r.status, 304);
    assert_eq!(r.etag_seq(), "\"2\"");
    assert!(r.body.is_empty());
    assert!(took >= Duration::from_millis(350), "held only {took:?}");
    assert!(took < Duration::from_secs(5), "held {took:?}");

    // The cursor from If-None-Match comes back the same way.
    let r = c.get_with("/sub/t?timeout=0.2", &[("If-None-Match", "\"2\"")]);
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"2\""));

    // timeout=0: 304 at once.
    let t0 = Instant::now();
    let r = c.get("/sub/t?since=2&timeout=0");
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"2\""));
    assert!(t0.elapsed() < Duration::from_secs(2));

    // The connection is still usable after the 304s.
    assert_eq!(c.get("/plaintext").text(), "Hello, World!");
}

#[test]
fn no_cursor_means_only_new_messages() {
    let addr = server();
    // A new channel: the 304's ETag is "0".
    let r = get(addr, "/sub/fresh?timeout=0.2");
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"0\""));
    let r = get(addr, "/sub/fresh2?timeout=0");
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"0\""));

    // An existing channel at seq 2: no cursor = up to date, ETag "2".
    publish_n(addr, "old", 2);
    let r = get(addr, "/sub/old?timeout=0.2");
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"2\""), "old messages are not replayed");

    // A held poll without cursor gets only what is published after it arrived.
    let mut sub = Client::connect(addr);
    sub.send_request("GET", "/sub/old?timeout=10", &[], b"");
    wait_stat(addr, "waiting_polls", 1, Duration::from_secs(5));
    let p = post(addr, "/pub/old", b"new");
    assert_eq!(p.json().get("seq").as_u64(), 3);
    assert_eq!(p.json().get("subscribers").as_u64(), 1);
    let r = sub.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.etag_seq(), "\"3\"");
    let j = r.json();
    assert_eq!(messages(&j), vec![(3, b"new".to_vec())]);
    assert_eq!(j.get("next").as_u64(), 3);
    assert_eq!(j.get("missed").as_u64(), 0);
}

#[test]
fn held_poll_is_woken_by_a_publish() {
    let addr = server();
    publish_n(addr, "w", 1);
    let mut subs: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    for s in &mut subs {
        s.send_request("GET", "/sub/w?since=1&timeout=30", &[], b"");
    }
    // A waiter on another channel is not woken.
    let mut other = Client::connect(addr);
    other.send_request("GET", "/sub/elsewhere?since=0&timeout=30", &[], b"");
    wait_stat(addr, "waiting_polls", 4, Duration::from_secs(5));

    let t0 = Instant::now();
    let p = post(addr, "/pub/w", b"wake up");
    assert_eq!(p.json(), Json::parse(r#"{"seq":2,"subscribers":3}"#).unwrap());
    for s in &mut subs {
        let r = s.read_response().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.etag_seq(), "\"2\"");
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let (epoch, _) = r.etag_parts();
        let want = format!(
            r#"{{"channel":"w","epoch":"{epoch}","messages":[{{"seq":2,"data":"wake up"}}],"next":2,"missed":0}}"#
        );
        assert_eq!(r.text(), want);
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "woken after {:?}", t0.elapsed());
    assert_eq!(stat(addr, "waiting_polls"), 1, "the other channel's waiter still waits");
    // Nothing was woken twice: a second publish finds no waiter on w.
    let p = post(addr, "/pub/w", b"again");
    assert_eq!(p.json().get("subscribers").as_u64(), 0);
    drop(other);
}

#[test]
fn batch_limit() {
    let addr = start(hub_opts(|h| h.max_batch = 3));
    publish_n(addr, "b", 7);
    let mut c = Client::connect(addr);
    let mut cursor = 0;
    let mut batches = Vec::new();
    loop {
        let r = c.get(&format!("/sub/b?since={cursor}&timeout=0"));
        if r.status == 304 {
            assert_eq!(r.etag_seq(), "\"7\"");
            break;
        }
        let j = r.json();
        let s = seqs(&j);
        assert!(s.len() <= 3, "batch of {}", s.len());
        assert_eq!(j.get("next").as_u64(), *s.last().unwrap());
        assert_eq!(r.etag_seq(), format!("\"{}\"", s.last().unwrap()));
        cursor = j.get("next").as_u64();
        batches.push(s);
    }
    assert_eq!(batches, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);

    // A woken waiter's answer is limited too (only one new message here, so just check the
    // cursor-behind path with a waiter: waiters at the head get the single new message).
    let mut sub = Client::connect(addr);
    sub.send_request("GET", "/sub/b?since=7&timeout=30", &[], b"");
    wait_stat(addr, "waiting_polls", 1, Duration::from_secs(5));
    post(addr, "/pub/b", b"m8");
    assert_eq!(seqs(&sub.read_response().unwrap().json()), vec![8]);
}

#[test]
fn missed_counts_evicted_messages() {
    let addr = start(hub_opts(|h| h.retain = 3));
    publish_n(addr, "r", 6); // retained: 4, 5, 6
    let r = get(addr, "/sub/r?since=0&timeout=0");
    let j = r.json();
    assert_eq!(seqs(&j), vec![4, 5, 6]);
    assert_eq!(j.get("missed").as_u64(), 3);
    assert_eq!(j.get("next").as_u64(), 6);
    let j = get(addr, "/sub/r?since=2&timeout=0").json();
    assert_eq!((seqs(&j), j.get("missed").as_u64()), (vec![4, 5, 6], 1));
    let j = get(addr, "/sub/r?since=3&timeout=0").json();
    assert_eq!((seqs(&j), j.get("missed").as_u64()), (vec![4, 5, 6], 0));
    let j = get(addr, "/sub/r?since=4&timeout=0").json();
    assert_eq!((seqs(&j), j.get("missed").as_u64()), (vec![5, 6], 0));
    let s = stats(addr);
    assert_eq!(s.get("retained_messages").as_u64(), 3);
    // Bodies of 2 bytes, plus the fixed overhead of each message.
    assert_eq!(s.get("retained_bytes").as_u64(), 3 * (2 + OVERHEAD));
    assert_eq!(s.get("published_total").as_u64(), 6);
}

#[test]
fn retain_bytes_evicts_oldest() {
    // Room for two 4-byte messages (each costs 4 + OVERHEAD), not three.
    let mut o = hub_opts(|h| h.retain_bytes = 2 * (4 + OVERHEAD as usize) + 10);
    o.max_message = 16;
    let addr = start(o);
    let mut c = Client::connect(addr);
    for i in 1..=4u64 {
        let r = c.post("/pub/rb", format!("abc{i}").as_bytes()); // 4 bytes each
        assert_eq!(r.json().get("seq").as_u64(), i);
    }
    let j = c.get("/sub/rb?since=0&timeout=0").json();
    assert_eq!(seqs(&j), vec![3, 4]);
    assert_eq!(j.get("missed").as_u64(), 2);
    let s = stats(addr);
    assert_eq!(s.get("retained_messages").as_u64(), 2);
    assert_eq!(s.get("retained_bytes").as_u64(), 2 * (4 + OVERHEAD));

    // A message of --max-message always fits (the flags are checked at start): it evicts
    // the older ones and the channel's seq keeps going (+1 per message).
    let big = vec![b'x'; 16];
    assert_eq!(c.post("/pub/rb", &big).json().get("seq").as_u64(), 5);
    assert_eq!(c.post("/pub/rb", b"ok").json().get("seq").as_u64(), 6);
    let j = c.get("/sub/rb?since=4&timeout=0").json();
    assert_eq!(messages(&j), vec![(5, big.clone()), (6, b"ok".to_vec())]);
    assert_eq!(j.get("missed").as_u64(), 0);
    let r = c.get("/sub/rb?since=6&timeout=0");
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"6\""));
}

#[test]
fn data_is_a_json_string_or_base64() {
    let addr = server();
    let texts: [&[u8]; 4] = [
        b"",
        "quote \" backslash \\ newline \n tab \t ctrl \u{1} é 日本 🎉".as_bytes(),
        b"{\"json\":1}",
        b"plain",
    ];
    for t in texts {
        post(addr, "/pub/d", t);
    }
    let binary: [&[u8]; 3] = [&[0xff, 0x00, 0x41], &[0xc3], &[0x80, 0x81, 0x82, 0x83]];
    for b in binary {
        post(addr, "/pub/d", b);
    }
    let r = get(addr, "/sub/d?since=0&timeout=0");
    let j = r.json();
    let msgs = j.get("messages").as_array();
    assert_eq!(msgs.len(), 7);
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(msgs[i].get("data").as_str().as_bytes(), *t);
        assert!(msgs[i].opt("data_b64").is_none());
        assert_eq!(msgs[i].keys(), vec!["seq", "data"]);
    }
    for (i, b) in binary.iter().enumerate() {
        let m = &msgs[texts.len() + i];
        assert!(m.opt("data").is_none(), "{m:?}");
        assert_eq!(m.keys(), vec!["seq", "data_b64"]);
        assert_eq!(base64_decode(m.get("data_b64").as_str()), *b);
    }
    assert_eq!(msgs[4].get("data_b64").as_str(), "/wBB");
    assert_eq!(msgs[6].get("data_b64").as_str(), "gIGCgw==");
}

#[test]
fn cursor_ahead_resets() {
    let addr = start(hub_opts(|h| h.max_batch = 2));
    publish_n(addr, "a", 3);
    let t0 = Instant::now();
    let r = get(addr, "/sub/a?since=10&timeout=30");
    assert!(t0.elapsed() < Duration::from_secs(2), "answered at once");
    assert_eq!(r.status, 200);
    let j = r.json();
    assert!(j.get("reset").as_bool());
    assert_eq!(j.get("missed").as_u64(), 0);
    assert_eq!(seqs(&j), vec![1, 2], "from the oldest, at most max-batch");
    assert_eq!(j.get("next").as_u64(), 2);
    assert_eq!(r.etag_seq(), "\"2\"");
    // Via If-None-Match too.
    let mut c = Client::connect(addr);
    let r = c.get_with("/sub/a?timeout=30", &[("If-None-Match", "\"99\"")]);
    assert_eq!(r.status, 200);
    assert!(r.json().get("reset").as_bool());

    // Oldest retained after eviction.
    let addr = start(hub_opts(|h| h.retain = 2));
    publish_n(addr, "e", 5);
    let j = get(addr, "/sub/e?since=6&timeout=0").json();
    assert_eq!((seqs(&j), j.get("missed").as_u64(), j.get("next").as_u64()), (vec![4, 5], 0, 5));
    assert!(j.get("reset").as_bool());

    // A channel that does not exist: empty, next = its last seq (0).
    let r = get(addr, "/sub/nothing?since=5&timeout=30");
    assert_eq!(r.status, 200);
    assert_eq!(r.etag_seq(), "\"0\"");
    let j = r.json();
    assert_eq!(j.get("messages").as_array().len(), 0);
    assert_eq!((j.get("next").as_u64(), j.get("missed").as_u64()), (0, 0));
    assert!(j.get("reset").as_bool());
    // ... and asking about it did not leave a channel behind.
    assert_eq!(stat(addr, "channels"), 1, "only `e` exists");
}

#[test]
fn channel_names() {
    let addr = server();
    let mut c = Client::connect(addr);
    let long = "x".repeat(128);
    for ok in ["a", "A-z_0.9:x", "..a", "a..", ".-.", "0", long.as_str()] {
        let r = c.post(&format!("/pub/{ok}"), b"m");
        assert_eq!(r.status, 200, "{ok}: {}", r.text());
        let r = c.get(&format!("/sub/{ok}?since=0&timeout=0"));
        assert_eq!(r.status, 200, "{ok}");
        assert_eq!(r.json().get("channel").as_str(), ok);
    }
    let too_long = "x".repeat(129);
    for bad in [
        "%41",
        "a%20b",
        "a%2Fb",
        "%",
        ".",
        "..",
        "...",
        too_long.as_str(),
        "a+b",
        "a,b",
        "a=b",
        "a*",
        "~a",
        "a@b",
    ] {
        for path in [format!("/pub/{bad}"), format!("/sub/{bad}?timeout=0")] {
            let method = if path.starts_with("/pub") { "POST" } else { "GET" };
            let body: &[u8] = if method == "POST" { b"m" } else { b"" };
            let mut c = Client::connect(addr);
            let r = c.request(method, &path, &[], body);
            assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        }
    }
    // Raw non-ASCII bytes in the path: never a valid name.
    let mut raw = Client::connect(addr);
    raw.send(b"GET /sub/caf\xc3\xa9?timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = raw.read_response().unwrap();
    assert_eq!(r.status, 400);
    // Empty name.
    assert_eq!(post(addr, "/pub/", b"m").status, 400);
    assert_eq!(get(addr, "/sub/?timeout=0").status, 400);
    // A slash in the name: not a channel route at all.
    for path in ["/pub/a/b", "/pub/a/", "/pub/a/b/c"] {
        assert_eq!(post(addr, path, b"m").status, 404, "{path}");
    }
    for path in ["/sub/a/b", "/sub/a/", "/sub/a/b?since=0"] {
        assert_eq!(get(addr, path).status, 404, "{path}");
    }
    assert_eq!(get(addr, "/nope").status, 404);
    // Nothing above created a channel beyond the 7 valid ones.
    assert_eq!(stat(addr, "channels"), 7);
}

#[test]
fn malformed_parameters_are_400() {
    let addr = server();
    publish_n(addr, "p", 1);
    for q in [
        "since=abc",
        "since=-1",
        "since=",
        "since",
        "since=1.5",
        "since=+1",
        "since=1e3",
        "since=99999999999999999999999",
        "since=%31",
        "timeout=abc",
        "timeout=301",
        "timeout=-1",
        "timeout=",
        "timeout=1e2",
        "timeout=0x10",
        "since=0&timeout=300.5",
    ] {
        let r = get(addr, &format!("/sub/p?{q}"));
        assert_eq!(r.status, 400, "?{q}: {}", r.text());
    }
    for inm in ["5", "\"x\"", "\"\"", "\"-1\"", "*", "\"1", "1\"", "\"1\", \"2\""] {
        let mut c = Client::connect(addr);
        let r = c.get_with("/sub/p?timeout=0", &[("If-None-Match", inm)]);
        assert_eq!(r.status, 400, "If-None-Match: {inm}");
    }
    // The bounds themselves are fine.
    assert_eq!(get(addr, "/sub/p?since=0&timeout=300").status, 200);
    assert_eq!(get(addr, "/sub/p?since=1&timeout=0").status, 304);

    for q in ["", "?ms=", "?ms=abc", "?ms=-1", "?ms=10001", "?ms=1.5", "?ms=1e3"] {
        let r = get(addr, &format!("/work{q}"));
        assert_eq!(r.status, 400, "/work{q}");
    }
    assert_eq!(get(addr, "/work?ms=0").status, 200);
}

#[test]
fn message_size_limit_413() {
    let addr = start(app::Options { max_message: 16, ..opts() });
    assert_eq!(post(addr, "/pub/m", &[b'a'; 16]).status, 200, "exactly max-message is fine");
    let r = post(addr, "/pub/m", &[b'a'; 17]);
    assert_eq!(r.status, 413);
    // Chunked, over the limit in total.
    let mut c = Client::connect(addr);
    c.send(b"POST /pub/m HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n8\r\naaaaaaaa\r\n9\r\naaaaaaaaa\r\n0\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 413);
    // Nothing over the limit was published.
    assert_eq!(stat(addr, "published_total"), 1);

    // Default: 64 KiB.
    let addr = server();
    assert_eq!(post(addr, "/pub/big", &vec![b'b'; 64 * 1024]).status, 200);
    assert_eq!(post(addr, "/pub/big", &vec![b'b'; 64 * 1024 + 1]).status, 413);
    let j = get(addr, "/sub/big?since=0&timeout=0").json();
    assert_eq!(messages(&j), vec![(1, vec![b'b'; 64 * 1024])]);
}

#[test]
fn chunked_publish() {
    let addr = server();
    let mut c = Client::connect(addr);
    c.send(b"POST /pub/ch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().get("seq").as_u64(), 1);
    // Sent in pieces, with a pause between chunks.
    c.send(b"POST /pub/ch HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"2\r\nde\r\n0\r\n\r\n");
    assert_eq!(c.read_response().unwrap().json().get("seq").as_u64(), 2);
    let j = c.get("/sub/ch?since=0&timeout=0").json();
    assert_eq!(messages(&j), vec![(1, b"hello world".to_vec()), (2, b"abcde".to_vec())]);
}

#[test]
fn pipelined_publish_waits_for_the_held_poll() {
    let addr = server();
    let mut c = Client::connect(addr);
    let mut both = request_bytes("GET", "/sub/pipe?since=0&timeout=0.5", &[], b"");
    both.extend(request_bytes("POST", "/pub/pipe", &[], b"after the poll"));
    let t0 = Instant::now();
    c.send(&both);
    // While the poll is held, the POST behind it has not run.
    std::thread::sleep(Duration::from_millis(200));
    let s = stats(addr);
    assert_eq!(s.get("published_total").as_u64(), 0, "the pipelined POST ran early");
    assert_eq!(s.get("waiting_polls").as_u64(), 1);
    let r = get(addr, "/sub/pipe?since=0&timeout=0");
    assert_eq!((r.status, r.etag_seq().as_str()), (304, "\"0\""));

    let poll = c.read_response().unwrap();
    let took = t0.elapsed();
    assert_eq!(poll.status, 304, "the POST must not wake the poll queued before it");
    assert_eq!(poll.etag_seq(), "\"0\"");
    assert!(took >= Duration::from_millis(450), "poll answered after {took:?}");
    let publish = c.read_response().unwrap();
    assert_eq!(publish.status, 200);
    assert_eq!(publish.json(), Json::parse(r#"{"seq":1,"subscribers":0}"#).unwrap());
    let j = get(addr, "/sub/pipe?since=0&timeout=0").json();
    assert_eq!(messages(&j), vec![(1, b"after the poll".to_vec())]);

    // A pipelined poll whose answer is ready is answered at once, in order.
    let mut batch = Vec::new();
    batch.extend(request_bytes("POST", "/pub/pipe", &[], b"two"));
    batch.extend(request_bytes("GET", "/sub/pipe?since=1&timeout=5", &[], b""));
    batch.extend(request_bytes("GET", "/plaintext", &[], b""));
    c.send(&batch);
    assert_eq!(c.read_response().unwrap().json().get("seq").as_u64(), 2);
    assert_eq!(seqs(&c.read_response().unwrap().json()), vec![2]);
    assert_eq!(c.read_response().unwrap().text(), "Hello, World!");
}

#[test]
fn work_endpoint() {
    let addr = server();
    let r = get(addr, "/work?ms=30");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j.get("ms").as_u64(), 30);
    assert!(j.get("took_ms").as_f64() >= 30.0, "{j:?}");
    let hex = j.get("result").as_str();
    assert!(!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
    assert_eq!(j.keys(), vec!["ms", "took_ms", "result"]);
}

#[test]
fn work_queue_full_is_503_with_retry_after() {
    let addr = start(app::Options { workers: 1, work_queue: 1, ..opts() });
    let mut running = Client::connect(addr);
    running.send_request("GET", "/work?ms=1000", &[], b"");
    wait_stat(addr, "jobs_running", 1, Duration::from_secs(5));
    let mut queued = Client::connect(addr);
    queued.send_request("GET", "/work?ms=10", &[], b"");
    wait_stat(addr, "jobs_queued", 1, Duration::from_secs(5));

    let r = get(addr, "/work?ms=10");
    assert_eq!(r.status, 503);
    let retry = r.header("retry-after").expect("Retry-After");
    assert!(retry.parse::<u64>().is_ok(), "Retry-After: {retry}");

    assert_eq!(running.read_response().unwrap().status, 200);
    assert_eq!(queued.read_response().unwrap().status, 200);
    // Room again.
    assert_eq!(get(addr, "/work?ms=0").status, 200);
    let s = stats(addr);
    assert_eq!(s.get("responses_total").get("503").as_u64(), 1);
}

/// A client that asks for a long job and leaves: the job is told to stop at once (it would
/// hold its worker for 5 s), it is counted, and the worker takes the next job. Both ways of leaving: FIN and RST.
#[test]
fn a_running_job_whose_client_left_is_stopped() {
    let addr = start(app::Options { workers: 1, ..opts() });
    for (round, abrupt) in [(1, false), (2, true)] {
        let mut c = Client::connect(addr);
        c.send_request("GET", "/work?ms=5000", &[], b"");
        wait_stat(addr, "jobs_running", 1, Duration::from_secs(5));
        let t0 = Instant::now();
        if abrupt {
            c.reset();
        } else {
            c.close();
        }
        // Without the cancel the job would run for 5 s.
        wait_stat(addr, "jobs_running", 0, Duration::from_secs(3));
        println!("job of a client that left stopped after {:?} (polling /stats every 20 ms)", t0.elapsed());
        assert_eq!(stat(addr, "jobs_cancelled_total"), round);
    }
    // The worker is free: a new job is run and answered.
    let t0 = Instant::now();
    assert_eq!(get(addr, "/work?ms=10").status, 200);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(stat(addr, "jobs_cancelled_total"), 2, "a job that finished is not cancelled");
}

/// Queued jobs of clients that left are taken out of the queue: the slots they held are free
/// for a new client (accepted, not 503), and none of them runs.
#[test]
fn queued_jobs_of_clients_that_left_are_removed() {
    let addr = start(app::Options { workers: 1, work_queue: 2, ..opts() });
    let mut running = Client::connect(addr);
    running.send_request("GET", "/work?ms=3000", &[], b"");
    wait_stat(addr, "jobs_running", 1, Duration::from_secs(5));
    let queued: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send_request("GET", "/work?ms=3000", &[], b"");
            c
        })
        .collect();
    wait_stat(addr, "jobs_queued", 2, Duration::from_secs(5));
    assert_eq!(get(addr, "/work?ms=1").status, 503, "the queue is full");

    for c in queued {
        c.close();
    }
    wait_stat(addr, "jobs_queued", 0, Duration::from_secs(5));
    assert_eq!(stat(addr, "jobs_cancelled_total"), 2);
    assert_eq!(stat(addr, "jobs_running"), 1, "the running job is not theirs");

    // A new client is queued (not 503) behind the running job; it is answered once the
    // running job ends, without the two removed ones running first.
    let mut newcomer = Client::connect(addr);
    newcomer.send_request("GET", "/work?ms=1", &[], b"");
    wait_stat(addr, "jobs_queued", 1, Duration::from_secs(5));
    assert_eq!(running.read_response().unwrap().status, 200);
    let t0 = Instant::now();
    let r = newcomer.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().get("ms").as_u64(), 1);
    assert!(t0.elapsed() < Duration::from_millis(2500), "waited {:?}: a removed job ran first", t0.elapsed());
    let s = stats(addr);
    assert_eq!(s.get("responses_total").get("503").as_u64(), 1);
    assert_eq!(s.get("jobs_cancelled_total").as_u64(), 2);
}

/// `--workers 0`: `/work` does not exist (404 whatever the method), everything else works.
#[test]
fn workers_0_turns_work_off() {
    let addr = start(app::Options { workers: 0, ..opts() });
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/work?ms=1").status, 404);
    assert_eq!(c.get("/work").status, 404);
    assert_eq!(c.request("PUT", "/work?ms=1", &[], b"").status, 404);
    assert_eq!(c.get("/plaintext").text(), "Hello, World!");
    let s = stats(addr);
    assert_eq!((s.get("jobs_queued").as_u64(), s.get("jobs_running").as_u64()), (0, 0));
    assert_eq!(s.get("responses_total").get("404").as_u64(), 3);
}

#[test]
fn max_channels_503() {
    let addr = start(hub_opts(|h| h.max_channels = 2));
    assert_eq!(post(addr, "/pub/one", b"x").status, 200);
    assert_eq!(post(addr, "/pub/two", b"x").status, 200);
    let r = post(addr, "/pub/three", b"x");
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    // Subscribers do not count: only channels that hold messages do, so waiting on channels
    // nobody publishes to cannot lock publishers out.
    let r = get(addr, "/sub/three?since=0&timeout=0");
    assert_eq!(r.status, 304, "a subscribe is not refused");
    let mut held = Client::connect(addr);
    held.send_request("GET", "/sub/four?timeout=30", &[], b"");
    wait_stat(addr, "waiting_polls", 1, Duration::from_secs(5));
    assert_eq!(stat(addr, "channels"), 3, "two with messages, one with a waiter");
    assert_eq!(post(addr, "/pub/four", b"x").status, 503, "a publish there would make a third");
    // Existing channels keep working.
    assert_eq!(post(addr, "/pub/one", b"y").json().get("seq").as_u64(), 2);
    drop(held);
    wait_stat(addr, "channels", 2, Duration::from_secs(5));
}

#[test]
fn stats_and_metrics() {
    let addr = server();
    publish_n(addr, "s", 2);
    get(addr, "/sub/s?since=0&timeout=0");
    get(addr, "/nope");
    let s = stats(addr);
    const KEYS: [&str; 16] = [
        "connections",
        "waiting_polls",
        "channels",
        "retained_messages",
        "retained_bytes",
        "published_total",
        "delivered_total",
        "evicted_total",
        "timers_pending",
        "loop_wakeups_total",
        "remote_wakeups_total",
        "jobs_queued",
        "jobs_running",
        "jobs_cancelled_total",
        "accepted_total",
        "closed_by_peer_total",
    ];
    for k in KEYS {
        s.get(k).as_u64();
    }
    assert_eq!(s.get("published_total").as_u64(), 2);
    assert_eq!(s.get("delivered_total").as_u64(), 2);
    assert_eq!(s.get("channels").as_u64(), 1);
    assert_eq!(s.get("retained_messages").as_u64(), 2);
    assert_eq!(s.get("retained_bytes").as_u64(), 2 * (2 + OVERHEAD));
    assert_eq!(s.get("jobs_cancelled_total").as_u64(), 0);
    assert_eq!(s.get("connections").as_u64(), 1, "just the one asking");
    assert!(s.get("accepted_total").as_u64() >= 4);
    let responses = s.get("responses_total");
    assert!(responses.get("200").as_u64() >= 2);
    assert_eq!(responses.get("404").as_u64(), 1);

    let mut c = Client::connect(addr);
    let r = c.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").map(|ct| ct.starts_with("text/plain; version=0.0.4")), Some(true));
    let text = r.text();
    for k in KEYS {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&format!("tidings_{k}")))
            .unwrap_or_else(|| panic!("no tidings_{k} in\n{text}"));
        let value = line.split_whitespace().nth(1).expect("value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    assert!(text.lines().any(|l| l.starts_with("tidings_responses_total{code=\"404\"} 1")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("tidings_responses_total{code=\"200\"} ")), "{text}");
    for l in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(l.starts_with("tidings_"), "unprefixed metric: {l}");
    }
    let published = text.lines().find(|l| l.starts_with("tidings_published_total ")).unwrap();
    assert_eq!(published, "tidings_published_total 2");
}

#[test]
fn index_page_and_plaintext() {
    let addr = server();
    let r = get(addr, "/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    assert!(page.to_ascii_lowercase().contains("<html"));
    assert!(page.contains("/sub/") && page.contains("/pub/"), "the chat page talks to the hub");
    let r = get(addr, "/plaintext");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, World!");
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let addr = server();
    let mut c = Client::connect(addr);
    for (method, target, allow) in [
        ("GET", "/pub/x", "POST"),
        ("DELETE", "/pub/x", "POST"),
        ("POST", "/sub/x", "GET, HEAD"),
        ("PUT", "/work?ms=1", "GET, HEAD"),
        ("POST", "/stats", "GET, HEAD"),
        ("POST", "/plaintext", "GET, HEAD"),
    ] {
        let r = c.request(method, target, &[], b"");
        assert_eq!((r.status, r.header("allow")), (405, Some(allow)), "{method} {target}");
    }
    for target in ["/nope", "/pub", "/sub/", "/pub/a/b", "/stats/x"] {
        assert_eq!(c.get(target).status, if target == "/sub/" { 400 } else { 404 }, "{target}");
    }
    // Nothing was published or created by any of them.
    let s = c.get("/stats").json();
    assert_eq!((s.get("published_total").as_u64(), s.get("channels").as_u64()), (0, 0));
}
