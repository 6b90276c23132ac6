#!/usr/bin/env python3
"""The chat demo page (`GET /`) in a real headless browser: two tabs on one channel; a message
typed and sent in tab A must appear in tab B (through B's held long-poll) and in A, in order.

Then the dashboard (`GET /dashboard`): its EventSource gets a /stats snapshot a second; after a
few publishes (one answering a held poll) its last snapshot and its charts show them.

Then, if the access-control arguments are given, pages on other origins against a hub started
with --publish-token-file, --subscribe-key-file and --allow-origin: the page on the allowed
origin publishes with `Authorization: Bearer` through fetch() (a CORS preflight first), reads
with a signed token, and gets a held poll's answer (sent later, on a publish) with the CORS
headers; the page on another origin is refused by the browser (its fetch() rejects) and
publishes nothing.

    tests/browser/check_page.py http://127.0.0.1:PORT CHROMIUM \
        [GUARDED_HUB PUBLISH_TOKEN CHANNEL SUB_TOKEN ALLOWED_PAGE REFUSED_PAGE]

With TIDINGS_BIN set to the binary, also the chat page across a restart of the server (a
second process on the same port, seqs from 1 again): every message shown once, in order.

Run by tests/browser/check.sh, which starts tidings and installs chromium if it is missing.
It drives chromium through the DevTools protocol over a WebSocket, with nothing but the Python
standard library (the client below speaks just enough of RFC 6455 for this). Exit 0 = pass.
"""
import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

CHANNEL = "browsercheck%d" % os.getpid()


class WebSocket:
    """A minimal RFC 6455 client: text frames out (masked), frames in (unmasked)."""

    def __init__(self, url):
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("DevTools closed the WebSocket handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError("WebSocket handshake refused: %r" % head[:200])
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("DevTools closed the WebSocket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)
            if b0 & 0x0F in (0x1, 0x0):
                message += payload
                if b0 & 0x80:
                    return message.decode()


class Page:
    """One tab, driven through DevTools."""

    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def eval_async(self, expr):
        """Evaluates `expr` (a promise) and returns what it resolves to; a rejection raises."""
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("page script failed: %s" % r["exceptionDetails"])
        return r.get("result", {}).get("value")

    def wait_for(self, expr, what, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.eval(expr):
                return
            time.sleep(0.1)
        raise AssertionError("timed out waiting for " + what)


def http_json(url, data=None):
    with urllib.request.urlopen(url, data=data, timeout=10) as r:
        return json.loads(r.read())


def open_tab(devtools, url):
    # The page URL goes in the query: its "#" must be escaped, or it would end the URL here.
    req = urllib.request.Request(devtools + "/json/new?" + urllib.parse.quote(url, safe=":/"), method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        return Page(json.loads(r.read())["webSocketDebuggerUrl"])


def check_cross_origin(devtools, hub, publish_token, channel, sub_token, allowed_page, refused_page):
    """A page on the allowed origin publishes and subscribes through CORS with its tokens; a
    page on another origin is refused by the browser."""
    ok = open_tab(devtools, allowed_page)
    ok.wait_for("document.readyState === 'complete'", "the allowed page to load")
    # Publish with the bearer token (a non-simple request: the browser preflights it), then
    # read it back with the signed subscribe token, and read the ETag (an exposed header).
    got = ok.eval_async("""(async () => {
        const p = await fetch(%(hub)s + "/pub/" + %(ch)s, {method: "POST",
            headers: {"Authorization": "Bearer " + %(tok)s, "Content-Type": "text/plain"},
            body: "from another origin"});
        const pub = await p.json();
        const s = await fetch(%(hub)s + "/sub/" + %(ch)s + "?since=0&token=" + %(sub)s);
        const sub = await s.json();
        const denied = await fetch(%(hub)s + "/sub/" + %(ch)s + "?since=0");
        return {pub: p.status, seq: pub.seq, sub: s.status, etag: s.headers.get("ETag"),
                data: sub.messages.map((m) => m.data), denied: denied.status,
                deniedText: await denied.text()};
    })()""" % {"hub": json.dumps(hub), "ch": json.dumps(channel), "tok": json.dumps(publish_token),
               "sub": json.dumps(sub_token)})
    assert got["pub"] == 200 and got["seq"] == 1, "publish from the allowed origin: %r" % got
    assert got["sub"] == 200 and got["data"] == ["from another origin"], "subscribe: %r" % got
    assert re.fullmatch(r'"[0-9a-f]{8}:1"', got["etag"] or ""), \
        "ETag not readable from the page (Expose-Headers): %r" % got
    assert got["denied"] == 403 and "missing" in got["deniedText"], "no token: %r" % got

    # A held poll, answered later by a publish from the backend: the late answer must carry
    # the CORS headers too, or the browser would hide it from the page.
    ok.eval("window.held = fetch(%s + '/sub/' + %s + '?since=1&timeout=20&token=' + %s)"
            ".then((r) => r.json()).then((j) => j.messages.map((m) => m.data)); true"
            % (json.dumps(hub), json.dumps(channel), json.dumps(sub_token)))
    deadline = time.time() + 10
    while http_json(hub + "/stats")["waiting_polls"] < 1:
        if time.time() > deadline:
            raise AssertionError("the page's poll is not held")
        time.sleep(0.1)
    req = urllib.request.Request(hub + "/pub/" + channel, data=b"pushed later",
                                 headers={"Authorization": "Bearer " + publish_token})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["subscribers"] == 1
    held = ok.eval_async("window.held")
    assert held == ["pushed later"], "held poll in the page: %r" % held

    # Another origin: the preflight is not granted, so the browser refuses both requests
    # itself (fetch rejects with a TypeError), even with the right tokens.
    no = open_tab(devtools, refused_page)
    no.wait_for("document.readyState === 'complete'", "the refused page to load")
    refused = no.eval_async("""(async () => {
        const out = [];
        for (const [url, init] of [
            [%(hub)s + "/pub/" + %(ch)s, {method: "POST", headers: {"Authorization": "Bearer " + %(tok)s},
                                         body: "must not arrive"}],
            [%(hub)s + "/sub/" + %(ch)s + "?since=0&token=" + %(sub)s, {}]]) {
            try { const r = await fetch(url, init); out.push("answered " + r.status); }
            catch (e) { out.push(e.name); }
        }
        return out;
    })()""" % {"hub": json.dumps(hub), "ch": json.dumps(channel), "tok": json.dumps(publish_token),
               "sub": json.dumps(sub_token)})
    assert refused == ["TypeError", "TypeError"], "the other origin was not refused: %r" % refused
    published = http_json(hub + "/stats")["published_total"]
    assert published == 2, "the refused page published something: published_total %d" % published
    print("browser check: PASS (cross-origin: %s published with a bearer token and read with a signed"
          " token, a held poll answered later reached it; %s was refused by the browser)"
          % (allowed_page, refused_page))


def check_websocket(devtools, base):
    """A tab opens /ws with the browser's own WebSocket, subscribes, and receives a message
    published over HTTP, then one it publishes itself over the socket, in order."""
    tab = open_tab(devtools, base + "/plaintext")
    tab.wait_for("document.readyState === 'complete'", "the WebSocket tab to load")
    script = """new Promise((resolve, reject) => {
      const got = [];
      const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws");
      setTimeout(() => reject(new Error("timed out; got " + JSON.stringify(got))), 10000);
      ws.onerror = () => reject(new Error("WebSocket error"));
      ws.onopen = () => {
        ws.send(JSON.stringify({op: "sub", channel: "browser-ws"}));
        // Commands run in order: the answer to this one says the sub is in place.
        ws.send(JSON.stringify({op: "unsub", channel: "not-subscribed"}));
      };
      ws.onmessage = (e) => {
        const ev = JSON.parse(e.data);
        got.push(ev);
        if (ev.op === "unsub") fetch("/pub/browser-ws", {method: "POST", body: "published over HTTP"});
        if (ev.data === "published over HTTP")
          ws.send(JSON.stringify({op: "pub", channel: "browser-ws", data: "published over the socket"}));
        if (ev.data === "published over the socket") { ws.close(1000); resolve(got); }
      };
    })"""
    got = tab.eval_async(script)
    data = [(e.get("seq"), e.get("data")) for e in got if "seq" in e]
    assert data == [(1, "published over HTTP"), (2, "published over the socket")], got
    assert all(len(e.get("epoch", "")) == 8 for e in got if "seq" in e), got
    print("browser check: PASS (WebSocket tab: subscribed on /ws, received an HTTP publish and its own, in order)")


def start_hub(binary, port):
    """Starts `tidings --listen 127.0.0.1:PORT` and waits until it listens."""
    hub = subprocess.Popen([binary, "--listen", "127.0.0.1:%d" % port],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        line = hub.stderr.readline()
        if "listening on" in line:
            return hub
    hub.kill()
    raise RuntimeError("tidings did not start on port %d" % port)


def stop_hub(hub):
    hub.terminate()
    if hub.wait(timeout=10) != 0:
        raise AssertionError("tidings did not stop with exit 0")


def check_restart(devtools, binary):
    """The chat page across a server restart: the new process counts seqs from 1 again, and
    the page's cursor (seq 2 of the old life) is behind the new life's seq 3 by the time it
    reconnects. With its epoch, the page is answered with a reset and shows every message of
    both lives exactly once, in order, none skipped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = "http://127.0.0.1:%d" % port
    channel = "restart%d" % os.getpid()
    hub = start_hub(binary, port)
    try:
        for text in ["old one", "old two"]:
            http_json(base + "/pub/" + channel, text.encode())
        tab = open_tab(devtools, base + "/#" + channel)
        tab.wait_for("document.getElementById('log').innerText.includes('old two')", "the old messages")
        deadline = time.time() + 10
        while http_json(base + "/stats")["waiting_polls"] < 1:
            if time.time() > deadline:
                raise AssertionError("the tab is not holding a poll")
            time.sleep(0.1)
        stop_hub(hub)
        # The tab's held poll got 304 at the stop; it now retries once a second. Publish three
        # messages in the new life before it gets back, so its cursor 2 is behind seq 3.
        hub = start_hub(binary, port)
        for text in ["new one", "new two", "new three"]:
            http_json(base + "/pub/" + channel, text.encode())
        tab.wait_for("document.getElementById('log').innerText.includes('new three')",
                     "the new life's messages after the restart", timeout=20)
        http_json(base + "/pub/" + channel, b"new four")
        tab.wait_for("document.getElementById('log').innerText.includes('new four')", "a message after")
        log = tab.eval("document.getElementById('log').innerText")
        texts = ["old one", "old two", "new one", "new two", "new three", "new four"]
        counts = {t: log.count(t) for t in texts}
        assert all(n == 1 for n in counts.values()), "shown twice or skipped: %r in %r" % (counts, log)
        order = [log.index(t) for t in texts]
        assert order == sorted(order), "out of order across the restart: %r" % log
        print("browser check: PASS (restart: the chat page showed both lives' 6 messages once each,"
              " in order, after a reset)")
    finally:
        hub.kill()
        hub.wait()


def check_dashboard(devtools, base):
    """The /dashboard page: it receives a /stats snapshot a second over its EventSource and
    draws it; messages published meanwhile show up in its snapshot (the page keeps the last
    one in window.lastSnapshot) and in its charts (SVG paths and histogram bars)."""
    page = open_tab(devtools, base + "/dashboard")
    page.wait_for("document.readyState === 'complete'", "the dashboard to load")
    page.wait_for("window.snapshotCount >= 2", "two snapshots on the dashboard")
    before = page.eval("window.lastSnapshot.published_total")
    # A held long-poll answered by a publish, then a few more publishes.
    channel = "dashboard%d" % os.getpid()
    stats_deadline = time.time() + 10
    http_json(base + "/pub/" + channel, b"first")
    since = http_json(base + "/sub/" + channel + "?since=0&timeout=0")["next"]
    held = threading.Thread(target=http_json, args=(base + "/sub/%s?since=%d&timeout=20" % (channel, since),))
    held.start()
    while http_json(base + "/stats")["waiting_polls"] < 1:
        if time.time() > stats_deadline:
            raise AssertionError("the long-poll is not held")
        time.sleep(0.05)
    for i in range(5):
        http_json(base + "/pub/" + channel, ("message %d" % i).encode())
    held.join(10)
    page.wait_for("window.lastSnapshot.published_total >= %d" % (before + 6),
                  "the dashboard to see the six publishes")
    page.wait_for("window.lastSnapshot.delivery_seconds.longpoll.count >= 1",
                  "a long-poll delivery in the dashboard's histogram")
    page.wait_for("document.querySelectorAll('#latency rect').length > 0", "the histogram bars")
    page.wait_for("document.querySelector('#rates path') !== null", "the publish-rate chart")
    legend = page.eval("document.getElementById('lg-rates').innerText")
    shown = page.eval("JSON.parse(document.getElementById('last').textContent).published_total")
    assert shown >= before + 6, "the snapshot shown on the page: %r" % shown
    print("browser check: PASS (dashboard: %d snapshots, published_total %d -> %d, legend %r)"
          % (page.eval("window.snapshotCount"), before, shown, legend))
def check_sse(devtools, binary):
    """The chat page with EventSource (`?transport=sse`): two tabs on a channel of their own
    hub, a message sent from one shown in both; then a restart of the server: the tabs
    reconnect by themselves, from their cursor, and show every message of both lives exactly
    once, in order (no duplicate, no gap)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = "http://127.0.0.1:%d" % port
    channel = "sse%d" % os.getpid()
    log_js = "document.getElementById('log').innerText"
    hub = start_hub(binary, port)
    try:
        http_json(base + "/pub/" + channel, b"sse before")
        tabs = [open_tab(devtools, base + "/?transport=sse#" + channel) for _ in range(2)]
        for t in tabs:
            t.wait_for("document.readyState === 'complete'", "the page to load")
            t.wait_for(log_js + ".includes('sse before')", "the retained message over SSE")
        deadline = time.time() + 10
        while http_json(base + "/stats").get("sse_streams", 0) < 2:
            if time.time() > deadline:
                raise AssertionError("the two tabs do not hold SSE streams")
            time.sleep(0.1)
        if http_json(base + "/stats")["waiting_polls"] != 0:
            raise AssertionError("an SSE tab is long-polling")
        a, b = tabs
        a.eval("document.getElementById('text').value = 'sse from tab A';"
               "document.getElementById('form').requestSubmit(); true")
        for t in tabs:
            t.wait_for(log_js + ".includes('sse from tab A')", "the message sent from tab A")
        stop_hub(hub)
        hub = start_hub(binary, port)
        for text in ["sse new one", "sse new two", "sse new three"]:
            http_json(base + "/pub/" + channel, text.encode())
        for t in tabs:
            t.wait_for(log_js + ".includes('sse new three')", "the new life's messages", timeout=20)
        http_json(base + "/pub/" + channel, b"sse new four")
        texts = ["sse before", "sse from tab A", "sse new one", "sse new two", "sse new three", "sse new four"]
        for t in tabs:
            t.wait_for(log_js + ".includes('sse new four')", "a message after the restart")
            log = t.eval(log_js)
            counts = {x: log.count(x) for x in texts}
            assert all(n == 1 for n in counts.values()), "shown twice or skipped: %r in %r" % (counts, log)
            order = [log.index(x) for x in texts]
            assert order == sorted(order), "out of order across the restart: %r" % log
        print("browser check: PASS (EventSource: two tabs, a message from A in both, a restart:"
              " both lives' 6 messages once each, in order)")
    finally:
        hub.kill()
        hub.wait()


def main():
    base, chromium = sys.argv[1], sys.argv[2]
    binary = os.environ.get("TIDINGS_BIN")
    access = sys.argv[3:9]
    if access and len(access) != 6:
        raise SystemExit("usage: see the docstring (the access-control arguments come as six)")
    profile = tempfile.mkdtemp(prefix="tidings-browser-")
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--user-data-dir=" + profile,
         "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = None
        deadline = time.time() + 30
        while time.time() < deadline and port is None:
            line = browser.stderr.readline()
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            raise RuntimeError("chromium did not start its DevTools endpoint")
        devtools = "http://127.0.0.1:%d" % port

        # Something retained before the tabs open: both must show it first.
        http_json(base + "/pub/" + CHANNEL, b"before the tabs opened")
        tabs = []
        for _ in range(2):
            tabs.append(open_tab(devtools, base + "/#" + CHANNEL))
        a, b = tabs
        for t in tabs:
            t.wait_for("document.readyState === 'complete'", "the page to load")
            t.wait_for("document.getElementById('log').innerText.includes('before the tabs opened')",
                       "the retained message in a tab")
            assert t.eval("document.getElementById('channel').textContent") == CHANNEL

        # Both tabs now hold a poll: the server must show two waiters on the channel.
        deadline = time.time() + 10
        while http_json(base + "/stats")["waiting_polls"] < 2:
            if time.time() > deadline:
                raise AssertionError("the two tabs are not holding polls")
            time.sleep(0.1)

        # Type in tab A and send; tab B gets it through its held poll, in order.
        for text in ["hello from tab A", "second message"]:
            a.eval("document.getElementById('text').value = %s;"
                   "document.getElementById('form').requestSubmit(); true" % json.dumps(text))
            for t, name in ((b, "B"), (a, "A")):
                t.wait_for("document.getElementById('log').innerText.includes(%s)" % json.dumps(text),
                           "%r in tab %s" % (text, name))
        log_b = b.eval("document.getElementById('log').innerText")
        order = [log_b.index(s) for s in ["before the tabs opened", "hello from tab A", "second message"]]
        assert order == sorted(order), "messages out of order in tab B: %r" % log_b
        status = b.eval("document.getElementById('status').textContent")
        assert status.startswith("connected, up to #3"), "tab B status: %r" % status
        print("browser check: PASS (two tabs on %s; sent in A, shown in A and B in order; status %r)"
              % (CHANNEL, status))
        check_dashboard(devtools, base)
        check_websocket(devtools, base)
        if binary:
            check_restart(devtools, binary)
            check_sse(devtools, binary)
        if access:
            check_cross_origin(devtools, *access)
        return 0
    finally:
        browser.kill()
        browser.wait()


if __name__ == "__main__":
    sys.exit(main())
