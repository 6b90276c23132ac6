//! Epochs: a cursor always knows whether it still means the same stream. Through real
//! sockets, in-process servers for the rules and the real binary for a restart.

mod common;

use std::time::Duration;

use common::*;

fn publish(addr: std::net::SocketAddr, channel: &str, bodies: &[&str]) {
    let mut c = Client::connect(addr);
    for b in bodies {
        assert_eq!(c.post(&format!("/pub/{channel}"), b.as_bytes()).status, 200);
    }
}

/// Every answer about a channel carries its epoch: JSON `epoch`, `ETag: "EPOCH:SEQ"`, and
/// the 304's ETag likewise. Sent back (header or query), it works as the cursor.
#[test]
fn answers_carry_the_epoch_and_take_it_back() {
    let addr = start(opts());
    publish(addr, "e", &["a", "b"]);
    let mut c = Client::connect(addr);
    let r = c.get("/sub/e?since=0&timeout=0");
    let (epoch, seq) = r.etag_parts();
    assert_eq!(seq, 2);
    assert_eq!(r.json().get("epoch").as_str(), epoch);
    assert!(r.json().opt("reset").is_none());

    // Up to date, by header and by query: 304 with the same ETag.
    let tag = format!("\"{epoch}:2\"");
    let r = c.get_with("/sub/e?timeout=0", &[("If-None-Match", &tag)]);
    assert_eq!((r.status, r.etag()), (304, tag.as_str()));
    let r = c.get(&format!("/sub/e?since=2&epoch={epoch}&timeout=0"));
    assert_eq!((r.status, r.etag()), (304, tag.as_str()));
    // Behind, same epoch: the messages after the cursor, no reset.
    let r = c.get(&format!("/sub/e?since=1&epoch={epoch}&timeout=0"));
    assert_eq!(messages(&r.json()), vec![(2, b"b".to_vec())]);
    assert!(r.json().opt("reset").is_none());
    // The epoch of a held poll's answer and of its timeout.
    let r = c.get(&format!("/sub/e?since=2&epoch={epoch}&timeout=0.1"));
    assert_eq!((r.status, r.etag()), (304, tag.as_str()));
    // Uppercase hex is the same epoch.
    let r = c.get(&format!("/sub/e?since=2&epoch={}&timeout=0", epoch.to_uppercase()));
    assert_eq!(r.status, 304);

    // Malformed epochs are 400, in the query and in the header.
    for bad in ["xyz", "123", "123456789", "12345678:", "-1234567"] {
        let r = c.get(&format!("/sub/e?since=2&epoch={bad}&timeout=0"));
        assert_eq!(r.status, 400, "epoch={bad}");
    }
    for bad in ["\"zzzzzzzz:2\"", "\"1234567:2\"", "\":2\"", "\"12345678:\"", "\"12345678:x\""] {
        let r = c.get_with("/sub/e?timeout=0", &[("If-None-Match", bad)]);
        assert_eq!(r.status, 400, "If-None-Match: {bad}");
    }
    // Channels have their own epochs (random: two of them are equal once in 2^32).
    publish(addr, "other", &["x"]);
    let r = c.get("/sub/other?since=0&timeout=0");
    assert_ne!(r.etag_parts().0, epoch);
}

/// A cursor of another epoch is answered at once: 200, `reset`, the retained messages from
/// the oldest, `missed` 0, whatever the seq (behind, equal, ahead).
#[test]
fn another_epoch_is_a_reset_from_the_oldest() {
    let addr = start(hub_opts(|h| h.retain = 3));
    publish(addr, "r", &["1", "2", "3", "4", "5"]); // retained: 3, 4, 5
    let mut c = Client::connect(addr);
    let epoch = c.get("/sub/r?since=5&timeout=0").etag_parts().0;
    let other = if epoch == "00000000" { "00000001" } else { "00000000" };
    for since in [0, 2, 5, 9] {
        for how in ["query", "header"] {
            let r = match how {
                "query" => c.get(&format!("/sub/r?since={since}&epoch={other}&timeout=30")),
                _ => c.get_with("/sub/r?timeout=30", &[("If-None-Match", &format!("\"{other}:{since}\""))]),
            };
            assert_eq!(r.status, 200, "since {since} by {how}");
            let j = r.json();
            assert_eq!(seqs(&j), vec![3, 4, 5], "since {since} by {how}");
            assert!(j.get("reset").as_bool(), "since {since} by {how}");
            assert_eq!(j.get("missed").as_u64(), 0);
            assert_eq!(j.get("epoch").as_str(), epoch);
            assert_eq!(r.etag(), format!("\"{epoch}:5\""));
        }
    }
    // Weak validators are accepted as well.
    let r = c.get_with("/sub/r?timeout=0", &[("If-None-Match", &format!("W/\"{epoch}:5\""))]);
    assert_eq!(r.status, 304);
}

/// A channel whose messages all expired is dropped; it comes back with a new epoch, and a
/// client of the old one gets an empty reset that says where the new life stands. A client
/// at 0 of an idle channel waits instead (no reset on every poll).
#[test]
fn a_dropped_channel_comes_back_with_a_new_epoch() {
    let addr = start(hub_opts(|h| h.message_ttl_ms = 200));
    publish(addr, "t", &["x", "y"]);
    let mut c = Client::connect(addr);
    let old = c.get("/sub/t?since=0&timeout=0").etag_parts().0;
    wait_stat(addr, "channels", 0, Duration::from_secs(5));
    assert_eq!(stat(addr, "retained_messages"), 0);
    assert_eq!(stat(addr, "retained_bytes"), 0);

    let r = c.get(&format!("/sub/t?since=2&epoch={old}&timeout=30"));
    assert_eq!(r.status, 200);
    let j = r.json();
    assert!(j.get("reset").as_bool());
    assert_eq!((seqs(&j), j.get("next").as_u64(), j.get("missed").as_u64()), (vec![], 0, 0));
    let new = j.get("epoch").as_str().to_string();
    assert_ne!(new, old);
    // At 0 of an empty channel: hold (here until the timeout), whatever epoch it names.
    let r = c.get(&format!("/sub/t?since=0&epoch={new}&timeout=0.2"));
    assert_eq!(r.status, 304);
    let r = c.get(&format!("/sub/t?since=0&epoch={old}&timeout=0.2"));
    assert_eq!(r.status, 304);
    // The first message of the new life reaches a client that followed the reset.
    let mut held = Client::connect(addr);
    held.send_request("GET", &format!("/sub/t?since=0&epoch={new}&timeout=30"), &[], b"");
    wait_stat(addr, "waiting_polls", 1, Duration::from_secs(5));
    publish(addr, "t", &["z"]);
    let r = held.read_response().unwrap();
    assert_eq!(messages(&r.json()), vec![(1, b"z".to_vec())]);
}

/// The issue's case: the old process had seq 1-2 and the client's cursor is 2; the restarted
/// process publishes b1 b2 b3. With its epoch, the client gets a reset with all three; without
/// it (a client from before epochs), the old rule answers only b3, which is why answers now
/// carry the epoch.
#[test]
fn a_restart_with_a_cursor_behind_is_a_reset_not_a_silent_skip() {
    let mut first = Child::spawn(&[]);
    publish(first.addr, "news", &["a1", "a2"]);
    let r = get(first.addr, "/sub/news?since=0&timeout=0");
    let (old_epoch, cursor) = r.etag_parts();
    assert_eq!(cursor, 2);
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()), Some(0));

    let second = Child::spawn(&[]);
    let addr = second.addr;
    // Before anything is published in the new life: an empty reset, next 0.
    let r = get(addr, &format!("/sub/news?since=2&epoch={old_epoch}&timeout=30"));
    let j = r.json();
    assert!(j.get("reset").as_bool(), "{}", r.text());
    assert_eq!((seqs(&j), j.get("next").as_u64()), (vec![], 0));

    publish(addr, "news", &["b1", "b2", "b3"]);
    let r = get(addr, &format!("/sub/news?since=2&epoch={old_epoch}&timeout=30"));
    let j = r.json();
    assert!(j.get("reset").as_bool(), "{}", r.text());
    assert_eq!(j.get("missed").as_u64(), 0);
    assert_eq!(messages(&j), vec![(1, b"b1".to_vec()), (2, b"b2".to_vec()), (3, b"b3".to_vec())]);
    let new_epoch = j.get("epoch").as_str().to_string();
    assert_ne!(new_epoch, old_epoch);
    // The same by ETag.
    let mut c = Client::connect(addr);
    let r = c.get_with("/sub/news?timeout=30", &[("If-None-Match", &format!("\"{old_epoch}:2\""))]);
    assert_eq!(seqs(&r.json()), vec![1, 2, 3]);
    assert_eq!(r.etag(), format!("\"{new_epoch}:3\""));
    // Without the epoch: the compatibility rule (a cursor behind is taken at its word).
    let j = get(addr, "/sub/news?since=2&timeout=0").json();
    assert_eq!((seqs(&j), j.opt("reset").is_none()), (vec![3], true));
}
