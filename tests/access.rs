//! Access control through the real binary: the publish token (`--publish-token-file`, 401),
//! signed subscribe tokens (`--subscribe-key-file`, 403 with a reason, `tidings token`), CORS
//! (`--allow-origin`, preflight, headers on late answers too), the same with `curl`, and the
//! start-up errors of missing or empty secret files (one line, exit 2).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use app::auth::{unix_now, SubscribeKey};
use common::*;

const TOKEN: &str = "pub-s3cret-token";
const KEY: &[u8] = b"subscribe signing key";
const BEARER: (&str, &str) = ("Authorization", "Bearer pub-s3cret-token");
const ALLOWED: &str = "http://app.example:8000";

/// A file in the temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tidings-access-{}-{n}", std::process::id()));
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A hub with all three access controls on (the token and key files as an operator writes
/// them, with a trailing newline). The files are kept alive with it.
fn guarded(extra: &[&str]) -> (Child, TempFile, TempFile) {
    let token = TempFile::new(format!("{TOKEN}\n").as_bytes());
    let key = TempFile::new(&[KEY, b"\n"].concat());
    let mut args = vec!["--publish-token-file", token.path(), "--subscribe-key-file", key.path()];
    args.extend_from_slice(extra);
    (Child::spawn(&args), token, key)
}

fn sub_token(channel: &str) -> String {
    SubscribeKey::new(KEY).sign(channel, unix_now() + 60)
}

/// Runs the binary to completion (at most 10 s: a flag wrongly accepted would start a server).
fn run(args: &[&str]) -> Output {
    common::run(args, Duration::from_secs(10))
}

#[test]
fn publish_needs_the_bearer_token() {
    let (server, _t, _k) = guarded(&[]);
    let mut c = Client::connect(server.addr);
    for auth in [None, Some("Bearer wrong"), Some("Bearer pub-s3cret-toke"), Some("Basic pub-s3cret-token")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let r = c.request("POST", "/pub/news", &headers, b"sneaky");
        assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")), "{auth:?}: {r:?}");
    }
    // Nothing of those reached the hub; the right token publishes (scheme in any case).
    assert_eq!(c.get("/stats").json().get("published_total").as_u64(), 0);
    let r = c.request("POST", "/pub/news", &[BEARER], b"hello");
    assert_eq!((r.status, r.json().get("seq").as_u64()), (200, 1), "{r:?}");
    let r = c.request("POST", "/pub/news", &[("authorization", "bearer pub-s3cret-token")], b"again");
    assert_eq!(r.status, 200, "{r:?}");
    // /stats, /metrics and the page stay open.
    for target in ["/stats", "/metrics", "/", "/plaintext"] {
        assert_eq!(c.get(target).status, 200, "{target}");
    }
}

#[test]
fn work_needs_the_bearer_token_too() {
    let (server, _t, _k) = guarded(&[]);
    let mut c = Client::connect(server.addr);
    let r = c.get("/work?ms=1");
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")), "{r:?}");
    assert_eq!(c.get_with("/work?ms=1", &[("Authorization", "Bearer nope")]).status, 401);
    let r = c.get_with("/work?ms=1", &[BEARER]);
    assert_eq!((r.status, r.json().get("ms").as_u64()), (200, 1), "{r:?}");
}

#[test]
fn subscribe_needs_a_signed_unexpired_token_for_its_channel() {
    let (server, _t, _k) = guarded(&[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.request("POST", "/pub/news", &[BEARER], b"hello").status, 200);
    let key = SubscribeKey::new(KEY);
    let now = unix_now();
    let good = key.sign("news", now + 60);
    let sig = good.split_once('.').unwrap().1;
    let cases = [
        (String::new(), "missing"),
        ("token=".to_string(), "missing"),
        ("token=12345".to_string(), "malformed"),
        (format!("token={}", key.sign("news", now - 5)), "expired"),
        (format!("token={}.{sig}", now + 3600), "not valid"), // expiry changed: signature fails
        (format!("token={}", key.sign("sport", now + 60)), "not valid"), // another channel's
        (format!("token={}", SubscribeKey::new(b"other key").sign("news", now + 60)), "not valid"),
    ];
    for (query, reason) in &cases {
        let r = c.get(&format!("/sub/news?since=0&{query}"));
        assert_eq!(r.status, 403, "{query}: {r:?}");
        assert!(r.text().contains(reason), "{query}: reason {:?} lacks {reason:?}", r.text());
        assert!(!r.text().contains('\n'), "one line: {:?}", r.text());
    }
    // The right token reads ...
    let r = c.get(&format!("/sub/news?since=0&token={good}"));
    assert_eq!((r.status, seqs(&r.json())), (200, vec![1]), "{r:?}");
    // ... and holds: a poll with nothing new waits, and the next publish answers it.
    let mut held = Client::connect(server.addr);
    held.send_request("GET", &format!("/sub/news?since=1&timeout=10&token={good}"), &[], b"");
    wait_stat(server.addr, "waiting_polls", 1, Duration::from_secs(10));
    assert_eq!(c.request("POST", "/pub/news", &[BEARER], b"second").status, 200);
    let r = held.read_response().expect("held poll answered");
    assert_eq!((r.status, seqs(&r.json())), (200, vec![2]), "{r:?}");
    // A 403 is answered before the cursor is looked at, and HEAD is guarded too.
    assert_eq!(c.get("/sub/news?since=bogus").status, 403);
    // (A HEAD answer has a Content-Length but no body: read it raw, to the close.)
    let mut h = Client::connect(server.addr);
    h.send_request("HEAD", "/sub/news?since=0", &[("Connection", "close")], b"");
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut h.stream, &mut raw).expect("HEAD answer");
    assert!(raw.starts_with("HTTP/1.1 403 "), "{raw}");
}

#[test]
fn a_token_printed_by_tidings_token_works() {
    let (server, _t, key) = guarded(&[]);
    let out = run(&["token", "news", "--ttl", "120", "--subscribe-key-file", key.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.strip_suffix('\n').expect("one line");
    let (expiry, sig) = token.split_once('.').expect("EXPIRY.SIG");
    let expiry: u64 = expiry.parse().expect("decimal expiry");
    let now = unix_now();
    assert!((now + 100..=now + 121).contains(&expiry), "expiry {expiry}, now {now}, ttl 120");
    assert!(sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(post_with(&server, "/pub/news", b"m").status, 200);
    let r = get(server.addr, &format!("/sub/news?since=0&token={token}"));
    assert_eq!((r.status, seqs(&r.json())), (200, vec![1]), "{r:?}");
    // The same token does not open another channel.
    assert_eq!(get(server.addr, &format!("/sub/other?since=0&token={token}")).status, 403);
}

fn post_with(server: &Child, target: &str, body: &[u8]) -> Resp {
    Client::connect(server.addr).request("POST", target, &[BEARER, ("Connection", "close")], body)
}

#[test]
fn missing_or_empty_secret_files_exit_2_with_one_line() {
    let empty = TempFile::new(b"");
    let newline = TempFile::new(b"\n");
    let control = TempFile::new(b"two\nlines\n");
    let key = TempFile::new(KEY);
    let missing = "/nonexistent/tidings-secret";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--publish-token-file", missing], "--publish-token-file"),
        (vec!["--publish-token-file", empty.path()], "--publish-token-file"),
        (vec!["--publish-token-file", newline.path()], "--publish-token-file"),
        (vec!["--publish-token-file", control.path()], "--publish-token-file"),
        (vec!["--publish-token-file", "/"], "--publish-token-file"),
        (vec!["--publish-token-file"], "--publish-token-file"),
        (vec!["--subscribe-key-file", missing], "--subscribe-key-file"),
        (vec!["--subscribe-key-file", newline.path()], "--subscribe-key-file"),
        (vec!["--allow-origin", "app.example"], "--allow-origin"),
        (vec!["--allow-origin", "http://app.example/"], "--allow-origin"),
        (vec!["token", "news"], "--subscribe-key-file"),
        (vec!["token", "news", "--subscribe-key-file", empty.path()], "--subscribe-key-file"),
        (vec!["token", "--subscribe-key-file", key.path()], "CHANNEL"),
        (vec!["token", "bad/name", "--subscribe-key-file", key.path()], "channel"),
        (vec!["token", "news", "--ttl", "0", "--subscribe-key-file", key.path()], "--ttl"),
        (vec!["token", "news", "--ttl", "soon", "--subscribe-key-file", key.path()], "--ttl"),
        (vec!["token", "news", "--ttl"], "--ttl"),
    ];
    for (args, names) in cases {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line, got {stderr:?}");
        assert!(stderr.contains(names), "{args:?}: {stderr:?} does not name {names}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn help_documents_the_access_flags() {
    let out = run(&["--help"]);
    let usage = String::from_utf8(out.stdout).unwrap();
    for flag in ["--publish-token-file", "--subscribe-key-file", "--allow-origin", "tidings token", "--ttl"] {
        assert!(usage.contains(flag), "--help does not mention {flag}");
    }
}

fn cors_headers(r: &Resp) -> Vec<(String, String)> {
    r.headers.iter().filter(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-")).cloned().collect()
}

#[test]
fn cors_headers_on_every_answer_to_an_allowed_origin_and_none_otherwise() {
    let (server, _t, _k) = guarded(&["--allow-origin", ALLOWED, "--allow-origin", "https://other.example"]);
    let tok = sub_token("c");
    let origin = ("Origin", ALLOWED);
    let mut c = Client::connect(server.addr);
    // Answers of every kind, each to the allowed origin.
    let answers = [
        c.request("POST", "/pub/c", &[origin], b"no token"), // 401
        c.request("POST", "/pub/c", &[origin, BEARER], b"one"), // 200
        c.get_with("/sub/c?since=0", &[origin]),             // 403
        c.get_with(&format!("/sub/c?since=0&token={tok}"), &[origin]), // 200
        c.get_with(&format!("/sub/c?since=1&timeout=0&token={tok}"), &[origin]), // 304
        c.get_with("/nowhere", &[origin]),                   // 404
        c.request("DELETE", "/stats", &[origin], b""),       // 405
        c.get_with("/stats", &[origin]),                     // 200
    ];
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 200, 403, 200, 304, 404, 405, 200]);
    for r in &answers {
        assert_eq!(r.header("access-control-allow-origin"), Some(ALLOWED), "{r:?}");
        assert!(r.header("access-control-expose-headers").is_some_and(|v| v.contains("ETag")), "{r:?}");
        assert_eq!(r.header("vary"), Some("Origin"), "{r:?}");
    }
    // The second allowed origin gets its own name back.
    let r = c.get_with("/plaintext", &[("Origin", "https://other.example")]);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://other.example"));
    // Another origin, no origin, or a near miss: no CORS headers (on the same connection, so
    // nothing granted to an earlier request leaks onto a later one).
    for headers in [&[("Origin", "http://evil.example")][..], &[], &[("Origin", "http://app.example:8001")]] {
        let r = c.request("POST", "/pub/c", &[&[BEARER][..], headers].concat(), b"x");
        assert_eq!(r.status, 200);
        assert_eq!(cors_headers(&r), vec![], "{headers:?}: {r:?}");
        assert_eq!(r.header("vary"), Some("Origin"), "the answer depends on Origin: caches must know");
    }
}

#[test]
fn held_poll_and_work_answered_later_carry_cors_headers() {
    let (server, _t, _k) = guarded(&["--allow-origin", ALLOWED]);
    let tok = sub_token("late");
    let origin = ("Origin", ALLOWED);
    // A poll held until a publish (sent without an Origin) wakes it.
    let mut woken = Client::connect(server.addr);
    woken.send_request("GET", &format!("/sub/late?since=0&timeout=10&token={tok}"), &[origin], b"");
    // The same from a refused origin.
    let mut refused = Client::connect(server.addr);
    let evil = ("Origin", "http://evil.example");
    refused.send_request("GET", &format!("/sub/late?since=0&timeout=10&token={tok}"), &[evil], b"");
    wait_stat(server.addr, "waiting_polls", 2, Duration::from_secs(10));
    let r = post_with(&server, "/pub/late", b"wake");
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, None), "{r:?}");

    let r = woken.read_response().expect("woken poll");
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, Some(ALLOWED)), "{r:?}");
    assert!(r.header("access-control-expose-headers").is_some_and(|v| v.contains("ETag")));
    let r = refused.read_response().expect("woken poll of a refused origin");
    assert_eq!((r.status, cors_headers(&r)), (200, vec![]), "{r:?}");
    // A poll held until its timeout: 304 after the hold, with the headers.
    let tok2 = sub_token("late2");
    let mut c = Client::connect(server.addr);
    let r = c.get_with(&format!("/sub/late2?since=0&timeout=0.3&token={tok2}"), &[origin]);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (304, Some(ALLOWED)), "{r:?}");
    // A /work job answered from the worker pool.
    let r = c.get_with("/work?ms=20", &[origin, BEARER]);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, Some(ALLOWED)), "{r:?}");
}

#[test]
fn preflight_is_answered_for_allowed_origins_only() {
    let (server, _t, _k) = guarded(&["--allow-origin", ALLOWED]);
    let mut c = Client::connect(server.addr);
    for target in ["/pub/news", "/sub/news?since=0", "/work?ms=1", "/stats"] {
        let r = c.request(
            "OPTIONS",
            target,
            &[
                ("Origin", ALLOWED),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization, content-type"),
            ],
            b"",
        );
        assert_eq!(r.status, 204, "{target}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(ALLOWED));
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, HEAD, POST, OPTIONS"));
        let allowed = r.header("access-control-allow-headers").unwrap_or("").to_ascii_lowercase();
        for h in ["authorization", "content-type", "if-none-match", "last-event-id"] {
            assert!(allowed.contains(h), "{target}: {h} not in {allowed:?}");
        }
        assert!(r.header("access-control-max-age").is_some_and(|v| v.parse::<u32>().is_ok()));
    }
    // A refused origin (or none) gets what OPTIONS always got: 405 with Allow, or 404.
    for origin in [&[("Origin", "http://evil.example")][..], &[]] {
        let r = c.request("OPTIONS", "/pub/news", origin, b"");
        assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "{r:?}");
        assert_eq!(cors_headers(&r), vec![]);
        assert_eq!(c.request("OPTIONS", "/nowhere", origin, b"").status, 404);
    }
    assert_eq!(stat(server.addr, "published_total"), 0);
}

#[test]
fn without_allow_origin_there_are_no_cors_headers() {
    let server = Child::spawn(&[]);
    let mut c = Client::connect(server.addr);
    let origin = ("Origin", ALLOWED);
    let r = c.request("OPTIONS", "/pub/news", &[origin, ("Access-Control-Request-Method", "POST")], b"");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "{r:?}");
    for r in
        [r, c.request("POST", "/pub/news", &[origin], b"open"), c.get_with("/sub/news?since=0", &[origin])]
    {
        assert_eq!((cors_headers(&r), r.header("vary")), (vec![], None), "{r:?}");
    }
}

#[test]
fn allow_origin_star_allows_any_origin() {
    let (server, _t, _k) = guarded(&["--allow-origin", "*"]);
    let mut c = Client::connect(server.addr);
    let r = c.request("OPTIONS", "/pub/x", &[("Origin", "http://anywhere.example")], b"");
    assert_eq!((r.status, r.header("access-control-allow-origin")), (204, Some("*")), "{r:?}");
    for origin in [&[("Origin", "http://anywhere.example")][..], &[]] {
        let r = c.request("POST", "/pub/x", &[&[BEARER][..], origin].concat(), b"m");
        assert_eq!((r.status, r.header("access-control-allow-origin")), (200, Some("*")), "{r:?}");
        assert_eq!(r.header("vary"), None, "`*` does not depend on Origin");
        let r = c.get_with("/sub/x?since=0", origin);
        assert_eq!((r.status, r.header("access-control-allow-origin")), (403, Some("*")), "{r:?}");
    }
}

/// The same through `curl`, as the README shows it. curl is a Debian package that this
/// suite's machines have; if it is missing this test fails (it is not skipped).
#[test]
fn with_curl() {
    let version = Command::new("curl").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "curl is not installed (apt-get install curl): this test needs it: {version:?}"
    );
    let (server, _t, key) = guarded(&["--allow-origin", ALLOWED]);
    let base = format!("http://{}", server.addr);
    let curl = |args: &[&str]| -> (u16, String) {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("run curl");
        let text = String::from_utf8(out.stdout).expect("UTF-8 from curl");
        let (body, code) = text.rsplit_once('\n').expect("curl -w status line");
        (code.parse().expect("status code"), body.to_string())
    };
    let url = format!("{base}/pub/news");
    assert_eq!(curl(&["-X", "POST", "--data", "hi", &url]).0, 401);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, body) = curl(&["-X", "POST", "-H", &auth, "--data", "hello", &url]);
    assert_eq!((code, body.as_str()), (200, r#"{"seq":1,"subscribers":0}"#));

    let out = run(&["token", "news", "--subscribe-key-file", key.path()]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (code, body) = curl(&[&format!("{base}/sub/news?since=0&token={token}")]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(seqs(&Json::parse(&body).unwrap()), vec![1]);
    let (code, body) = curl(&[&format!("{base}/sub/news?since=0")]);
    assert_eq!((code, body.as_str()), (403, "subscribe token missing: add token=EXPIRY.SIG to the query"));

    // A preflight as a browser sends it, headers shown with -i.
    let (code, head) = curl(&[
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        &format!("Origin: {ALLOWED}"),
        "-H",
        "Access-Control-Request-Method: POST",
        &url,
    ]);
    assert_eq!(code, 204, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains(&format!("access-control-allow-origin: {ALLOWED}")), "{head}");
    assert!(head.contains("access-control-allow-headers: authorization"), "{head}");
}

#[test]
fn sse_needs_the_subscribe_token_too() {
    let (server, _t, _k) = guarded(&[]);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.request("POST", "/pub/news", &[BEARER], b"hello").status, 200);
    let r = c.get("/sse/news?since=0");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.text().contains("missing"), "{:?}", r.text());
    let r = c.get(&format!("/sse/news?since=0&token={}", sub_token("sport")));
    assert_eq!(r.status, 403, "another channel's token");
    // The right one streams.
    let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET /sse/news?since=0&token={} HTTP/1.0\r\n\r\n", sub_token("news"));
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("data: hello\n") {
        let n = std::io::Read::read(&mut s, &mut buf).expect("the stream");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&got));
}
