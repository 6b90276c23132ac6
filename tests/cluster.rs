//! Cluster mode (`--redis`) when everything works: several real `tidings` processes on one real
//! `redis-server` (`test_support::redis::RedisServer`) are one hub. Seqs and epochs come from
//! Redis, so a publish on any node reaches the subscribers of every node, on every transport,
//! exactly once, in order, in one epoch; a cursor taken on one node is good on another. Also:
//! `--reuse-port` (several nodes on one port), `--redis-password-file`, the flags' errors, and
//! the `/stats` and `/metrics` counters. What happens when Redis or a node fails is in
//! `tests/cluster_faults.rs`.

mod cluster_support;
mod common;

use std::time::Duration;

use cluster_support::*;
use common::*;

/// `(seq, "m{seq}")` for `seqs`: what a test publishes, message `mN` being expected at seq N.
fn numbered(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
    seqs.map(|s| (s, format!("m{s}"))).collect()
}

#[test]
fn every_transport_on_every_node_sees_one_sequence_in_one_epoch() {
    let redis = RedisServer::start();
    let n = nodes(&redis, 3);
    let (a, b, c) = (n[0].addr, n[1].addr, n[2].addr);
    // From seq 0: nothing published after the subscription started can be missed, however
    // long the node takes to follow the channel.
    let mut poll_b = LongPoll::open("long-poll on B", b, "news", Some(0), None);
    let mut sse_c = Sse::open("sse on C", c, "news", "?since=0", &[]);
    let mut ws_a = Ws::open("ws on A", a, "news", Some(0), None);

    let mut seqs = Vec::new();
    for (node, i) in [(a, 1), (a, 2), (a, 3), (b, 4), (b, 5), (b, 6)] {
        seqs.push(publish(node, "news", &format!("m{i}")));
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "the publish answers' seqs, over two nodes");

    let epoch = epoch_of(a, "news");
    for other in [b, c] {
        assert_eq!(epoch_of(other, "news"), epoch, "every node sees the epoch of Redis");
    }
    let subs: [&mut dyn Subscriber; 3] = [&mut poll_b, &mut sse_c, &mut ws_a];
    for sub in subs {
        let got = receive(sub, 6, RECEIVE_LIMIT);
        assert_exactly(sub.name(), &got, &numbered(1..=6), &epoch);
    }

    // Exactly once: the next thing each gets is the next publish, not a repeat. It goes
    // through C, which holds one subscriber (the SSE stream): `subscribers` counts only the
    // publishing node's own.
    let r = post(c, "/pub/news", b"m7").json();
    assert_eq!((r.get("seq").as_u64(), r.get("subscribers").as_u64()), (7, 1), "{r:?}");
    let subs: [&mut dyn Subscriber; 3] = [&mut poll_b, &mut sse_c, &mut ws_a];
    for sub in subs {
        let got = receive(sub, 1, RECEIVE_LIMIT);
        assert_exactly(sub.name(), &got, &numbered(7..=7), &epoch);
    }
    for node in &n {
        assert_eq!(stat(node.addr, "redis_channels"), 1, "each node follows the one channel");
        assert_eq!(stat(node.addr, "redis_connected"), 1);
    }
}

#[test]
fn a_burst_alternating_between_two_nodes_reaches_every_subscriber_once_in_order() {
    const BURST: u64 = 50;
    let redis = RedisServer::start();
    let n = nodes(&redis, 2);
    let (a, b) = (n[0].addr, n[1].addr);
    let subs: Vec<Box<dyn Subscriber>> = vec![
        Box::new(LongPoll::open("long-poll on A", a, "burst", Some(0), None)),
        Box::new(LongPoll::open("long-poll on B", b, "burst", Some(0), None)),
        Box::new(Sse::open("sse on A", a, "burst", "?since=0", &[])),
        Box::new(Sse::open("sse on B", b, "burst", "?since=0", &[])),
    ];
    // Each subscriber reads (and re-polls) on its own thread while the burst is published.
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            std::thread::spawn(move || {
                let got = receive(sub.as_mut(), BURST as usize, Duration::from_secs(30));
                (sub.name().to_string(), got)
            })
        })
        .collect();
    for i in 1..=BURST {
        let node = if i % 2 == 1 { a } else { b };
        assert_eq!(publish(node, "burst", &format!("m{i}")), i, "publish {i} on {node}");
    }
    let epoch = epoch_of(b, "burst");
    for reader in readers {
        let (name, got) = reader.join().unwrap_or_else(|_| panic!("a reader failed (its panic is above)"));
        assert_exactly(&name, &got, &numbered(1..=BURST), &epoch);
    }
}

#[test]
fn a_cursor_from_one_node_catches_up_on_another() {
    let redis = RedisServer::start();
    let n = nodes(&redis, 3);
    let (a, b, c) = (n[0].addr, n[1].addr, n[2].addr);
    for i in 1..=5 {
        assert_eq!(publish(a, "log", &format!("m{i}")), i);
    }
    let epoch = epoch_of(a, "log");

    let r = get(b, &format!("/sub/log?since=2&epoch={epoch}&timeout=5"));
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j.get("epoch").as_str(), epoch);
    assert!(j.opt("reset").is_none(), "{j:?}");
    assert_eq!(j.get("missed").as_u64(), 0);
    let got: Vec<(u64, String)> =
        messages(&j).into_iter().map(|(s, d)| (s, String::from_utf8_lossy(&d).into())).collect();
    assert_eq!(got, numbered(3..=5));
    assert_eq!(r.etag(), format!("\"{epoch}:5\""));

    // The same cursor on the other transports, through a third node.
    let mut sse = Sse::open("sse on C", c, "log", "", &[("Last-Event-ID", &format!("{epoch}:2"))]);
    let got = receive(&mut sse, 3, RECEIVE_LIMIT);
    assert_exactly("sse on C", &got, &numbered(3..=5), &epoch);
    let mut ws = Ws::open("ws on B", b, "log", Some(2), Some(&epoch));
    let got = receive(&mut ws, 3, RECEIVE_LIMIT);
    assert_exactly("ws on B", &got, &numbered(3..=5), &epoch);
}

#[test]
fn reuse_port_without_redis_is_refused_with_one_line() {
    let out = run(&["--listen", "127.0.0.1:0", "--reuse-port"], Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let text = stderr.trim_end_matches('\n');
    assert!(!text.is_empty() && !text.contains('\n'), "not one line: {stderr:?}");
    assert!(text.contains("--reuse-port") && text.contains("--redis"), "{text}");
}

#[test]
fn nodes_sharing_a_port_deliver_to_subscribers_on_either() {
    const POLLS: usize = 20;
    let redis = RedisServer::start();
    let first = node(&redis, &["--reuse-port"]);
    let port = first.addr.port();
    let listen = format!("127.0.0.1:{port}");
    let second = node(&redis, &["--reuse-port", "--listen", &listen]);
    assert_eq!(second.addr, first.addr, "the second node listens on the same port");
    let shared = first.addr;

    let mut polls: Vec<LongPoll> = (0..POLLS)
        .map(|i| LongPoll::open(&format!("long-poll {i}"), shared, "shared", Some(0), None))
        .collect();
    // The kernel spreads connections over the two listeners: each node holds some of them
    // (all 20 on one node has odds of 2^-19).
    let mut held = [0, 0];
    let spread = wait_until(Duration::from_secs(10), || {
        held = [first.pid, second.pid].map(|pid| procfs::established_on_port(pid, port).expect("/proc"));
        held[0] + held[1] == POLLS && held[0] > 0 && held[1] > 0
    });
    assert!(spread, "long-polls held by each node: {held:?}");

    // One publish through the shared port, on whichever node takes it.
    assert_eq!(publish(shared, "shared", "hello"), 1);
    let epoch = epoch_of(first.addr, "shared");
    for p in &mut polls {
        let got = receive(p, 1, RECEIVE_LIMIT);
        assert_exactly(p.name(), &got, &[(1, "hello".to_string())], &epoch);
    }
}

#[test]
fn the_password_file_authenticates_and_a_wrong_one_leaves_the_node_unconnected() {
    let redis = RedisServer::with_password("s3cret-pw");
    let dir = std::env::temp_dir().join(format!("tidings-cluster-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let right = dir.join("right");
    let wrong = dir.join("wrong");
    std::fs::write(&right, "  s3cret-pw \n").unwrap(); // the first line, trimmed
    std::fs::write(&wrong, "not-it\n").unwrap();

    let good = node(&redis, &["--redis-password-file", right.to_str().unwrap()]);
    assert_eq!(publish(good.addr, "pw", "in"), 1);

    let url = redis.url();
    let bad = Child::spawn(&[
        "--redis",
        &url,
        "--redis-timeout",
        REDIS_TIMEOUT,
        "--redis-password-file",
        wrong.to_str().unwrap(),
    ]);
    let connected = wait_until(Duration::from_secs(3), || stat(bad.addr, "redis_connected") != 0);
    assert!(!connected, "a node with the wrong password says it is connected");
    let r = post(bad.addr, "/pub/pw", b"refused");
    assert_unavailable(&r, "publish through a node refused by Redis");
    // Nothing of it reached Redis: the next seq is still 2.
    assert_eq!(publish(good.addr, "pw", "again"), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_cluster_flags_exit_2_with_one_line_naming_the_flag() {
    let dir = std::env::temp_dir().join(format!("tidings-cluster-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    let blank = dir.join("blank");
    std::fs::write(&blank, "  \n").unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let missing = dir.join("missing");
    let (empty, blank, pw, missing) =
        (empty.to_str().unwrap(), blank.to_str().unwrap(), pw.to_str().unwrap(), missing.to_str().unwrap());
    // No Redis is needed: each of these must be refused before anything is connected.
    let ok = "redis://127.0.0.1:1";
    let cases: &[(&[&str], &str)] = &[
        (&["--redis", "http://x"], "--redis"),
        (&["--redis", "redis://"], "--redis"),
        (&["--redis", "redis://host:notaport"], "--redis"),
        (&["--redis", "redis://127.0.0.1:99999"], "--redis"),
        (&["--redis", ""], "--redis"),
        (&["--redis"], "--redis"),
        (&["--redis", "redis://no-such-host.invalid:6379"], "--redis"),
        (&["--redis", ok, "--redis-timeout", "0"], "--redis-timeout"),
        (&["--redis", ok, "--redis-timeout", "-1"], "--redis-timeout"),
        (&["--redis", ok, "--redis-timeout", "soon"], "--redis-timeout"),
        (&["--redis", ok, "--redis-password-file", missing], "--redis-password-file"),
        (&["--redis", ok, "--redis-password-file", empty], "--redis-password-file"),
        (&["--redis", ok, "--redis-password-file", blank], "--redis-password-file"),
        (&["--redis-password-file", pw], "--redis-password-file"),
        (&["--reuse-port"], "--reuse-port"),
    ];
    for (args, flag) in cases {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let out = run(&all, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: stderr {stderr}");
        let text = stderr.trim_end_matches('\n');
        assert!(!text.is_empty() && !text.contains('\n'), "{args:?}: not one line: {stderr:?}");
        assert!(text.contains(flag), "{args:?}: error does not name {flag}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_lists_the_cluster_flags() {
    let out = run(&["--help"], Duration::from_secs(10));
    let usage = String::from_utf8_lossy(&out.stdout);
    for flag in ["--redis ", "--redis-password-file", "--redis-timeout", "--reuse-port"] {
        assert!(usage.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn the_redis_counters_are_in_stats_and_metrics_and_zero_without_redis() {
    const KEYS: [&str; 4] =
        ["redis_connected", "redis_channels", "redis_reconnects_total", "redis_timeouts_total"];
    let alone = Child::spawn(&[]);
    let s = stats(alone.addr);
    for key in KEYS {
        assert_eq!(s.get(key).as_u64(), 0, "{key} without --redis");
    }

    let redis = RedisServer::start();
    let n = node(&redis, &[]);
    let _sub = LongPoll::open("long-poll", n.addr, "counted", Some(0), None);
    wait_stat(n.addr, "redis_channels", 1, RECEIVE_LIMIT);
    let metrics = get(n.addr, "/metrics").text();
    for key in KEYS {
        let name = format!("tidings_{key}");
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"));
        let want = if key == "redis_connected" || key == "redis_channels" { "1" } else { "0" };
        assert_eq!(value.trim(), want, "{name}");
        assert!(metrics.contains(&format!("# TYPE {name} ")), "no # TYPE for {name}");
    }
}

/// `redis://HOST:PORT/DB`: two clusters on two databases of one Redis share nothing: the same
/// channel name has its own keys, seqs and epoch in each, and a subscriber in one never sees
/// the other's messages. (Pub/sub ignores `SELECT`, so the db is also part of the channel's
/// pub/sub name; were it not, each node would only hear the other's notifications, take them
/// for a gap and read its own channel again.)
#[test]
fn two_clusters_on_two_databases_of_one_redis_share_nothing() {
    let redis = RedisServer::start();
    let on_db = |db: u32| {
        let url = format!("{}/{db}", redis.url());
        let n = Child::spawn(&["--redis", url.as_str(), "--redis-timeout", "0.5"]);
        wait_connected(&n, 1);
        n
    };
    let (one, two) = (on_db(1), on_db(2));
    let mut poll_two = LongPoll::open("long-poll on db 2", two.addr, "shared-name", Some(0), None);
    assert_eq!(publish(one.addr, "shared-name", "for db 1"), 1);
    assert_eq!(publish(one.addr, "shared-name", "for db 1 again"), 2);
    assert_eq!(publish(two.addr, "shared-name", "for db 2"), 1, "db 2 has its own seqs");
    let epoch = epoch_of(two.addr, "shared-name");
    let got = receive(&mut poll_two, 1, RECEIVE_LIMIT);
    assert_exactly("long-poll on db 2", &got, &[(1, "for db 2".to_string())], &epoch);
    // The keys are in their own databases.
    let exists = |db: u32| {
        let script = format!(
            "redis.call('SELECT', '{db}'); return redis.call('HGET', 'tidings:shared-name:meta', 'seq')"
        );
        redis.command(&["EVAL", &script, "0"])
    };
    assert_eq!((exists(1), exists(2), exists(0)), ("2".to_string(), "1".to_string(), "(nil)".to_string()));
}
