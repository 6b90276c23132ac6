"""The same long-poll app written event-driven: waiters sleep on a Future that a publish
resolves, and a single timeout per waiter ends it. What Tornado can do "done right".

    python longpoll_futures.py 127.0.0.1 8084
"""
import json
import sys

import tornado.ioloop
import tornado.gen
import tornado.web
from tornado.concurrent import Future

def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


channels = {}  # name -> {"last": int, "messages": [(seq, text)], "waiters": set(Future)}


def channel(name):
    return channels.setdefault(name, {"last": 0, "messages": [], "waiters": set()})


def answer(handler, name, ch, since):
    msgs = [{"seq": s, "data": d} for s, d in ch["messages"] if s > since][:100]
    nxt = msgs[-1]["seq"] if msgs else ch["last"]
    handler.set_header("ETag", '"%d"' % nxt)
    handler.set_header("Cache-Control", "no-cache")
    handler.finish(compact({"channel": name, "messages": msgs, "next": nxt, "missed": 0}))


class Pub(tornado.web.RequestHandler):
    def post(self, name):
        ch = channel(name)
        ch["last"] += 1
        ch["messages"].append((ch["last"], self.request.body.decode("utf-8", "replace")))
        del ch["messages"][:-1000]
        waiters, ch["waiters"] = ch["waiters"], set()
        for f in waiters:
            if not f.done():
                f.set_result(True)
        self.write(compact({"seq": ch["last"], "subscribers": len(waiters)}))


class Sub(tornado.web.RequestHandler):
    async def get(self, name):
        ch = channel(name)
        since = int(self.get_argument("since", ch["last"]))
        if since >= ch["last"]:
            self.waiter = Future()
            ch["waiters"].add(self.waiter)
            timeout = float(self.get_argument("timeout", "10"))
            try:
                await tornado.gen.with_timeout(tornado.ioloop.IOLoop.current().time() + timeout, self.waiter)
            except tornado.gen.TimeoutError:
                ch["waiters"].discard(self.waiter)
                self.set_status(304)
                self.set_header("ETag", '"%d"' % since)
                self.finish()
                return
            except Exception:
                return
        if self.request.connection.stream.closed():
            return
        answer(self, name, ch, since)

    def on_connection_close(self):
        w = getattr(self, "waiter", None)
        if w is not None and not w.done():
            w.set_exception(RuntimeError("client gone"))


class Stats(tornado.web.RequestHandler):
    def get(self):
        n = sum(len(c["waiters"]) for c in channels.values())
        self.write(compact({"waiting_polls": n, "channels": len(channels)}))


class Plain(tornado.web.RequestHandler):
    def get(self):
        self.write("Hello, World!")


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    app = tornado.web.Application([(r"/pub/([^/]+)", Pub), (r"/sub/([^/]+)", Sub), (r"/plaintext", Plain), (r"/stats", Stats)])
    app.listen(port, address=host)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
