"""The seed's long-poll app, as its users wrote it, speaking the tidings /pub /sub API.

Each waiting client re-arms a timeout (10 ms at first, 100 ms once it has waited a second) to
check whether its channel has something new: CPU grows linearly with idle clients. (The seed
also popped a message before writing it, losing it when the client vanished; with the cursor
API that would break the other subscribers' checks, so that part is not reproduced: this peer
is here for its cost.)

    python longpoll_seed.py 127.0.0.1 8083
"""
import json
import sys
import time

import tornado.ioloop
import tornado.gen
import tornado.web

def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


channels = {}  # name -> {"last": int, "queue": [(seq, text)]}
waiting = 0  # held polls, for /stats


def channel(name):
    return channels.setdefault(name, {"last": 0, "queue": []})


class Pub(tornado.web.RequestHandler):
    def post(self, name):
        ch = channel(name)
        ch["last"] += 1
        ch["queue"].append((ch["last"], self.request.body.decode("utf-8", "replace")))
        del ch["queue"][:-1000]
        self.write(compact({"seq": ch["last"], "subscribers": 0}))


class Sub(tornado.web.RequestHandler):
    async def get(self, name):
        ch = channel(name)
        since = int(self.get_argument("since", ch["last"]))
        deadline = time.monotonic() + float(self.get_argument("timeout", "10"))
        waited = 0.0
        global waiting
        waiting += 1
        try:
            await self.hold(name, ch, since, deadline, waited)
        finally:
            waiting -= 1

    async def hold(self, name, ch, since, deadline, waited):
        while True:
            fresh = [m for m in ch["queue"] if m[0] > since]
            if fresh:
                msgs = [{"seq": s, "data": d} for s, d in fresh[:100]]
                self.set_header("ETag", '"%d"' % msgs[-1]["seq"])
                self.finish(compact({"channel": name, "messages": msgs, "next": msgs[-1]["seq"], "missed": 0}))
                return
            if time.monotonic() >= deadline:
                self.set_status(304)
                self.set_header("ETag", '"%d"' % since)
                self.finish()
                return
            step = 0.01 if waited < 1.0 else 0.1
            waited += step
            await tornado.gen.sleep(step)


class Stats(tornado.web.RequestHandler):
    def get(self):
        self.write(compact({"waiting_polls": waiting, "channels": len(channels)}))


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
