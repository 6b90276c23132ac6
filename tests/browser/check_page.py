#!/usr/bin/env python3
"""The chat demo page (`GET /`) in a real headless browser: two tabs on one channel; a message
typed and sent in tab A must appear in tab B (through B's held long-poll) and in A, in order.

    tests/browser/check_page.py http://127.0.0.1:PORT CHROMIUM

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


def main():
    base, chromium = sys.argv[1], sys.argv[2]
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
            # The page URL goes in the query: its "#" must be escaped, or it would end the URL here.
            page_url = urllib.parse.quote(base + "/#" + CHANNEL, safe=":/")
            req = urllib.request.Request(devtools + "/json/new?" + page_url, method="PUT")
            with urllib.request.urlopen(req, timeout=10) as r:
                tabs.append(Page(json.loads(r.read())["webSocketDebuggerUrl"]))
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
        return 0
    finally:
        browser.kill()
        browser.wait()


if __name__ == "__main__":
    sys.exit(main())
