#!/usr/bin/env python3
"""Reads GET /sse/{channel} of a running tidings with Python's standard library only, the
way any EventSource-like client would, and checks the event-stream contract:

- the head: 200, text/event-stream, Cache-Control: no-cache, X-Accel-Buffering: no;
- `retry: 2000` first;
- a message with line breaks (LF, CR LF, CR) comes as several `data:` lines that join back
  into it (with LF, as the browser does); a message that is not UTF-8 as `event: b64`;
- an idle stream gets `: hb` comment lines (the server runs with a short --sse-heartbeat);
- after a disconnect, a reconnect with `Last-Event-ID` gets exactly the messages published
  meanwhile: no duplicate, no gap.

Usage: raw_client.py HOST:PORT CHANNEL. Exit 0 if every check held, 1 (with the reason on
stderr) otherwise. Run by tests/sse.rs.
"""

import base64
import http.client
import sys
import time


def fail(msg):
    print("raw_client.py: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def publish(host, port, channel, body):
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("POST", "/pub/" + channel, body=body)
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 200:
        fail("publish answered %d" % r.status)


class Stream:
    """One open event stream, read line by line (http.client undoes the chunking)."""

    def __init__(self, host, port, channel, last_event_id=None):
        self.conn = http.client.HTTPConnection(host, port, timeout=10)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", "/sse/" + channel, headers=headers)
        self.resp = self.conn.getresponse()
        self.pending = b""

    def line(self):
        """The next line without its ending (LF, CR LF or CR), as bytes; None at EOF."""
        while True:
            for i, b in enumerate(self.pending):
                if b == 0x0A or b == 0x0D:
                    # A CR at the end of what we have may be followed by its LF: read more.
                    if b == 0x0D and i + 1 == len(self.pending):
                        break
                    line = self.pending[:i]
                    skip = 2 if self.pending[i : i + 2] == b"\r\n" else 1
                    self.pending = self.pending[i + skip :]
                    return line
            more = self.resp.read1(65536)
            if not more:
                return None
            self.pending += more

    def event(self, comments):
        """The next dispatched event as a dict (event, id, data); comment lines seen on the
        way are appended to `comments`, `retry:` is returned as {"retry": ..}."""
        ev = {"data": []}
        while True:
            line = self.line()
            if line is None:
                fail("stream ended while waiting for an event")
            if line == b"":
                if "retry" in ev and not ev["data"]:
                    return ev
                if ev["data"]:
                    ev["data"] = "\n".join(ev["data"])
                    return ev
                continue
            if line.startswith(b":"):
                comments.append(line)
                continue
            name, _, value = line.decode("utf-8").partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                ev["data"].append(value)
            else:
                ev[name] = value

    def close(self):
        self.conn.close()


def main():
    if len(sys.argv) != 3:
        fail("usage: raw_client.py HOST:PORT CHANNEL")
    host, port = sys.argv[1].rsplit(":", 1)
    port = int(port)
    channel = sys.argv[2]

    s = Stream(host, port, channel)
    r = s.resp
    if r.status != 200:
        fail("status %d" % r.status)
    for name, want in [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                       ("X-Accel-Buffering", "no")]:
        if r.getheader(name) != want:
            fail("%s is %r, not %r" % (name, r.getheader(name), want))
    comments = []
    first = s.event(comments)
    if first.get("retry") != "2000":
        fail("the stream does not start with retry: 2000: %r" % first)

    # Multi-line and binary messages, published while the stream is open.
    sent = ["one line", "two\nlines", "crlf\r\nand cr\rend", "", "trailing newline\n"]
    for m in sent:
        publish(host, port, channel, m.encode("utf-8"))
    publish(host, port, channel, b"\xff\x00binary")
    got = [s.event(comments) for _ in range(len(sent) + 1)]
    for ev, m in zip(got, sent):
        want = m.replace("\r\n", "\n").replace("\r", "\n")
        if ev["data"] != want or "event" in ev:
            fail("message %r arrived as %r" % (m, ev))
    b64 = got[-1]
    if b64.get("event") != "b64" or base64.b64decode(b64["data"]) != b"\xff\x00binary":
        fail("the non-UTF-8 message arrived as %r" % b64)
    ids = [ev["id"] for ev in got]
    seqs = [int(i.split(":")[1]) for i in ids]
    if seqs != list(range(seqs[0], seqs[0] + len(seqs))) or len({i.split(":")[0] for i in ids}) != 1:
        fail("ids are not one epoch and consecutive seqs: %r" % ids)

    # Idle: heartbeats (the server runs with --sse-heartbeat well under a second).
    comments.clear()
    deadline = time.monotonic() + 10
    while len(comments) < 2:
        if time.monotonic() > deadline:
            fail("no heartbeats on an idle stream")
        line = s.line()
        if line is None:
            fail("the idle stream ended")
        if line.startswith(b":"):
            comments.append(line)
        elif line != b"":
            fail("unexpected line on an idle stream: %r" % line)
    if comments[0] != b": hb":
        fail("heartbeat is %r" % comments[0])
    s.close()

    # Disconnected: three messages are published; the reconnect gets exactly them.
    last = ids[-1]
    missed = ["while away 1", "while away\n2", "while away 3"]
    for m in missed:
        publish(host, port, channel, m.encode("utf-8"))
    s = Stream(host, port, channel, last_event_id=last)
    if s.resp.status != 200:
        fail("reconnect status %d" % s.resp.status)
    if s.event([]).get("retry") != "2000":
        fail("the reconnect does not start with retry")
    back = [s.event([]) for _ in missed]
    if [ev["data"] for ev in back] != missed:
        fail("after Last-Event-ID %s: %r, not %r" % (last, [ev["data"] for ev in back], missed))
    if int(back[0]["id"].split(":")[1]) != seqs[-1] + 1:
        fail("a gap or a duplicate after the reconnect: %s after %s" % (back[0]["id"], last))
    # And live again: the next publish arrives once.
    publish(host, port, channel, b"live again")
    ev = s.event([])
    if ev["data"] != "live again":
        fail("after the catch-up: %r" % ev)
    s.close()
    print("raw_client.py: ok (%d events, reconnect from %s)" % (len(got) + len(back) + 1, last))


if __name__ == "__main__":
    main()
