//! Cluster mode (`--redis`) when something fails: a Redis that stops answering (SIGSTOP), a
//! Redis killed and restarted empty, a node killed (SIGKILL), a node stopped (SIGSTOP) while
//! the others work. Each test runs real `tidings` processes on a real `redis-server` and checks
//! what the contract of issue 13 promises: publishes answer 503 (never hang) while Redis is
//! unavailable, held polls and streams stay open, and afterwards every subscriber gets what was
//! published after its cursor, exactly once, in order, or `reset` exactly once when Redis lost
//! the channel.
//!
//! The tests measure time (a 503 within `--redis-timeout` plus a little, a delivery not held up
//! by a stopped node), so they run one at a time.

mod cluster_support;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_support::*;
use common::*;

/// `--redis-timeout` of the nodes, as a duration.
const TIMEOUT: Duration = Duration::from_millis(500);

#[test]
fn a_redis_that_stops_answering_means_503_then_everything_after_each_cursor_once() {
    let _serial = serial();
    let redis = RedisServer::start();
    let n = nodes(&redis, 2);
    let (a, b) = (n[0].addr, n[1].addr);
    for i in 1..=3 {
        assert_eq!(publish(a, "out", &format!("m{i}")), i);
    }
    let epoch = epoch_of(a, "out");
    let cursor = format!("{epoch}:3");
    // Subscribers at cursor 3 that live through the outage, each read on its own thread until
    // the sentinel published at the end: an SSE stream on A, and a long-poll on B whose polls
    // end (304) and start again (same cursor) every 2 s meanwhile.
    let subs: Vec<Box<dyn Subscriber>> = vec![
        Box::new(Sse::open("sse on A", a, "out", "", &[("Last-Event-ID", &cursor)])),
        Box::new(LongPoll::open_holding("long-poll on B", b, "out", Some(3), Some(&epoch), 2)),
    ];
    let is_sentinel = |g: &Got| matches!(g, Got::Message { data, .. } if data == "sentinel");
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            std::thread::spawn(move || {
                let got = receive_until(sub.as_mut(), is_sentinel, Duration::from_secs(40));
                (sub.name().to_string(), got)
            })
        })
        .collect();
    // And one held poll on B (timeout 3 s) to see it end as usual during the outage.
    let mut held = Client::connect(b);
    let held_since = Instant::now();
    held.send_request("GET", &format!("/sub/out?since=3&epoch={epoch}&timeout=3"), &[], b"");
    wait_stat(b, "waiting_polls", 2, RECEIVE_LIMIT);

    redis.stop();
    let stopped = Instant::now();
    // A publish in flight when Redis stops answering: 503 once --redis-timeout has passed.
    let t = Instant::now();
    let r = post(a, "/pub/out", b"lost-1");
    let took = t.elapsed();
    assert_unavailable(&r, "a publish Redis does not answer");
    assert!(took < TIMEOUT + Duration::from_millis(1500), "the 503 came after {took:?}");
    for node in [a, b] {
        // B, which sends nothing, sees it at its next PING (every 3 s) at the latest.
        wait_stat(node, "redis_connected", 0, Duration::from_secs(5));
    }
    assert!(stat(a, "redis_timeouts_total") >= 1, "{:?}", stats(a));
    // A publish while the connection is down: 503 as well, without waiting for Redis.
    let t = Instant::now();
    let r = post(b, "/pub/out", b"lost-2");
    assert_unavailable(&r, "a publish while the connection is down");
    assert!(t.elapsed() < TIMEOUT + Duration::from_millis(1500), "the 503 came after {:?}", t.elapsed());

    // The held poll stayed open and ends at its own timeout, 304 with its cursor.
    held.set_read_timeout(Duration::from_secs(10));
    let r = held.read_response().expect("the held poll's answer");
    let waited = held_since.elapsed();
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.etag(), format!("\"{cursor}\""));
    assert!(
        waited >= Duration::from_millis(2900),
        "the held poll ended after {waited:?}, before its timeout"
    );
    let reconnects_before: Vec<u64> =
        n.iter().map(|node| stat(node.addr, "redis_reconnects_total")).collect();
    // Stopped long enough for every connection of both nodes to be found down: the idle ones
    // at their PING (every 3 s) plus --redis-timeout. So both nodes must subscribe again.
    std::thread::sleep((stopped + Duration::from_millis(4500)).saturating_duration_since(Instant::now()));

    redis.cont();
    for (node, before) in n.iter().zip(&reconnects_before) {
        let back = wait_until(CONNECT_LIMIT, || {
            let s = stats(node.addr);
            s.get("redis_connected").as_u64() == 1 && s.get("redis_reconnects_total").as_u64() > *before
        });
        assert!(back, "node {} is not back: {:?}", node.addr, stats(node.addr));
    }
    let mut acked = BTreeMap::new();
    for (node, data) in [(a, "after-1"), (b, "after-2"), (a, "after-3"), (b, "sentinel")] {
        acked.insert(publish(node, "out", data), data.to_string());
    }
    // A publish answered 503 on a timeout may still have been applied (Redis reads it when it
    // runs again): the seqs after 3 are the acknowledged ones plus at most the two refused.
    let last = *acked.keys().last().unwrap();
    assert!((7..=9).contains(&last), "seqs of the acknowledged publishes: {acked:?}");

    for reader in readers {
        let (name, got) = reader.join().unwrap_or_else(|_| panic!("a reader failed (its panic is above)"));
        assert_eq!(seqs_of(&got), (4..=last).collect::<Vec<_>>(), "{name}: {got:?}");
        assert_eq!(message_count(&got), got.len(), "{name}: no reset, no missed: {got:?}");
        let mut refused_seen = Vec::new();
        for g in &got {
            let Got::Message { seq, epoch: e, data } = g else { unreachable!() };
            assert_eq!(e, &epoch, "{name}: the epoch survives an outage");
            match acked.get(seq) {
                Some(want) => assert_eq!(data, want, "{name}: seq {seq}"),
                None => {
                    assert!(data == "lost-1" || data == "lost-2", "{name}: seq {seq} is {data:?}");
                    assert!(!refused_seen.contains(data), "{name}: {data} twice");
                    refused_seen.push(data.clone());
                }
            }
        }
    }
}

#[test]
fn a_redis_restarted_empty_is_one_reset_then_the_new_epoch() {
    let _serial = serial();
    let mut redis = RedisServer::start();
    let n = nodes(&redis, 2);
    let (a, b) = (n[0].addr, n[1].addr);
    let mut poll_b = LongPoll::open("long-poll on B", b, "life", Some(0), None);
    let mut sse_a = Sse::open("sse on A", a, "life", "?since=0", &[]);
    let mut ws_b = Ws::open("ws on B", b, "life", Some(0), None);
    for i in 1..=2 {
        assert_eq!(publish(a, "life", &format!("m{i}")), i);
    }
    let old = epoch_of(a, "life");
    let want: Vec<(u64, String)> = (1..=2).map(|s| (s, format!("m{s}"))).collect();
    {
        let subs: [&mut dyn Subscriber; 3] = [&mut poll_b, &mut sse_a, &mut ws_b];
        for sub in subs {
            let got = receive(sub, 2, RECEIVE_LIMIT);
            assert_exactly(sub.name(), &got, &want, &old);
        }
    }

    let reconnects: Vec<u64> = n.iter().map(|node| stat(node.addr, "redis_reconnects_total")).collect();
    redis.restart_empty();
    for (node, before) in n.iter().zip(&reconnects) {
        let back = wait_until(CONNECT_LIMIT, || {
            let s = stats(node.addr);
            s.get("redis_reconnects_total").as_u64() > *before && s.get("redis_connected").as_u64() == 1
        });
        assert!(back, "node {} did not reconnect: {:?}", node.addr, stats(node.addr));
    }
    // The channel starts over in Redis: its first publish is seq 1 of a new epoch.
    assert_eq!(publish(a, "life", "new-1"), 1);
    let new = epoch_of(b, "life");
    assert_ne!(new, old, "Redis lost the channel: a new epoch");
    let subs: [&mut dyn Subscriber; 3] = [&mut poll_b, &mut sse_a, &mut ws_b];
    for sub in subs {
        let got = receive(sub, 1, RECEIVE_LIMIT);
        let want = vec![
            Got::Reset { epoch: new.clone() },
            Got::Message { seq: 1, epoch: new.clone(), data: "new-1".into() },
        ];
        assert_eq!(got, want, "{}: one reset, then the new life", sub.name());
    }
    // And nothing twice: the next event of each is the next publish, not another reset.
    assert_eq!(publish(b, "life", "new-2"), 2);
    let subs: [&mut dyn Subscriber; 3] = [&mut poll_b, &mut sse_a, &mut ws_b];
    for sub in subs {
        let got = receive(sub, 1, RECEIVE_LIMIT);
        assert_exactly(sub.name(), &got, &[(2, "new-2".to_string())], &new);
    }
}

/// `FLUSHALL` loses the data while every connection stays up: nothing tells the nodes. The next
/// publish starts a new life in Redis, and its notification (another epoch) makes each node
/// read the channel again: every subscriber gets one reset, then the new life.
#[test]
fn a_flushall_is_noticed_at_the_next_publish_and_is_one_reset() {
    let _serial = serial();
    let redis = RedisServer::start();
    let n = nodes(&redis, 2);
    let (a, b) = (n[0].addr, n[1].addr);
    let mut poll_b = LongPoll::open("long-poll on B", b, "flushed", Some(0), None);
    let mut sse_a = Sse::open("sse on A", a, "flushed", "?since=0", &[]);
    assert_eq!(publish(a, "flushed", "m1"), 1);
    let old = epoch_of(a, "flushed");
    {
        let subs: [&mut dyn Subscriber; 2] = [&mut poll_b, &mut sse_a];
        for sub in subs {
            let got = receive(sub, 1, RECEIVE_LIMIT);
            assert_exactly(sub.name(), &got, &[(1, "m1".to_string())], &old);
        }
    }
    assert_eq!(redis.command(&["FLUSHALL"]), "OK");
    assert_eq!(publish(b, "flushed", "new-1"), 1, "the first seq of a new life");
    // (The new epoch is read from what the subscribers get: a node's mirror learns it from
    // the notification, which may still be on its way when the publish is answered.)
    let mut epochs = Vec::new();
    let subs: [&mut dyn Subscriber; 2] = [&mut poll_b, &mut sse_a];
    for sub in subs {
        let got = receive(sub, 1, RECEIVE_LIMIT);
        let Some(Got::Reset { epoch: new }) = got.first().cloned() else {
            panic!("{}: no reset first: {got:?}", sub.name());
        };
        assert_ne!(new, old, "{}: the reset is to a new life", sub.name());
        let want = vec![
            Got::Reset { epoch: new.clone() },
            Got::Message { seq: 1, epoch: new.clone(), data: "new-1".into() },
        ];
        assert_eq!(got, want, "{}: one reset, then the new life", sub.name());
        epochs.push(new);
    }
    assert_eq!(epochs[0], epochs[1], "one new epoch on both nodes");
}

#[test]
fn subscribers_of_a_killed_node_resume_on_another_with_their_cursor() {
    let redis = RedisServer::start();
    let mut n = nodes(&redis, 2);
    let (a, b) = (n[0].addr, n[1].addr);
    let mut sse = Sse::open("sse", b, "kill", "?since=0", &[]);
    let mut poll = LongPoll::open("long-poll", b, "kill", Some(0), None);
    for i in 1..=2 {
        assert_eq!(publish(a, "kill", &format!("m{i}")), i);
    }
    let epoch = epoch_of(a, "kill");
    let want = |range: std::ops::RangeInclusive<u64>| -> Vec<(u64, String)> {
        range.map(|s| (s, format!("m{s}"))).collect()
    };
    for sub in [&mut sse as &mut dyn Subscriber, &mut poll] {
        let got = receive(sub, 2, RECEIVE_LIMIT);
        assert_exactly(sub.name(), &got, &want(1..=2), &epoch);
    }

    n[1].signal(libc::SIGKILL);
    assert!(n[1].wait_exit(Duration::from_secs(5)).is_some(), "node B did not die");
    for i in 3..=7 {
        assert_eq!(publish(a, "kill", &format!("m{i}")), i);
    }
    // Both come back through A with their cursor (Last-Event-ID, since+epoch).
    assert_eq!(sse.last_id.as_deref(), Some(format!("{epoch}:2").as_str()));
    sse.reopen(a);
    poll.move_to(a);
    for sub in [&mut sse as &mut dyn Subscriber, &mut poll] {
        let got = receive(sub, 5, RECEIVE_LIMIT);
        assert_exactly(sub.name(), &got, &want(3..=7), &epoch);
    }
    assert_eq!(publish(a, "kill", "m8"), 8);
    for sub in [&mut sse as &mut dyn Subscriber, &mut poll] {
        let got = receive(sub, 1, RECEIVE_LIMIT);
        assert_exactly(sub.name(), &got, &want(8..=8), &epoch);
    }
}

#[test]
fn a_stopped_node_does_not_hold_up_the_others_and_catches_up_after() {
    const TOTAL: u64 = 150;
    const INTERVAL: Duration = Duration::from_millis(20); // ~50 publishes a second
    const STOP_AT: u64 = 25;
    const STOPPED_FOR: Duration = Duration::from_secs(2);
    /// Generous: not a speed target, only "B is not waiting for C".
    const MAX_DELAY: Duration = Duration::from_millis(500);
    let _serial = serial();
    let redis = RedisServer::start();
    let n = nodes(&redis, 3);
    let (a, b, c) = (n[0].addr, n[1].addr, n[2].addr);
    let mut sse_c = Sse::open("sse on C", c, "steady", "?since=0", &[]);
    let mut poll_b = LongPoll::open("long-poll on B", b, "steady", Some(0), None);
    let reader = std::thread::spawn(move || {
        let mut arrivals = Vec::new();
        while arrivals.len() < TOTAL as usize {
            let got = poll_b.next(Duration::from_secs(20));
            let now = Instant::now();
            arrivals.extend(got.into_iter().map(|g| (g, now)));
        }
        arrivals
    });

    let mut sent = Vec::new();
    let mut stopped_since = None;
    let start = Instant::now();
    for i in 1..=TOTAL {
        if i == STOP_AT {
            n[2].signal(libc::SIGSTOP);
            stopped_since = Some(Instant::now());
        }
        if stopped_since.is_some_and(|t| t.elapsed() >= STOPPED_FOR) {
            n[2].signal(libc::SIGCONT);
            stopped_since = None;
        }
        let at = Instant::now();
        assert_eq!(publish(a, "steady", &format!("m{i}")), i);
        sent.push(at);
        // Paced from the start, so a slow publish does not slow the rest down.
        let due = start + INTERVAL * i as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    if stopped_since.is_some() {
        n[2].signal(libc::SIGCONT);
    }
    let epoch = epoch_of(a, "steady");

    let arrivals =
        reader.join().unwrap_or_else(|_| panic!("the long-poll reader failed (its panic is above)"));
    let got: Vec<Got> = arrivals.iter().map(|(g, _)| g.clone()).collect();
    let want: Vec<(u64, String)> = (1..=TOTAL).map(|s| (s, format!("m{s}"))).collect();
    assert_exactly("long-poll on B", &got, &want, &epoch);
    let late: Vec<(u64, Duration)> = arrivals
        .iter()
        .filter_map(|(g, at)| match g {
            Got::Message { seq, .. } => Some((*seq, at.saturating_duration_since(sent[*seq as usize - 1]))),
            _ => None,
        })
        .filter(|(_, delay)| *delay > MAX_DELAY)
        .collect();
    assert!(
        late.is_empty(),
        "long-poll on B: messages later than {MAX_DELAY:?} after their publish: {late:?}"
    );

    // C, continued, delivers everything published while it was stopped, in order.
    let got = receive(&mut sse_c, TOTAL as usize, RECEIVE_LIMIT);
    assert_exactly("sse on C", &got, &want, &epoch);
}
