/* The fan-out floor: a bare level-triggered epoll loop (like floor.c) that speaks just enough
 * of the hub's HTTP API for `tidings-load fanout` to drive it exactly as it drives tidings:
 *
 *   GET /sub/NAME?timeout=0      304, ETag "00000000:SEQ" (the load generator's probe)
 *   GET /sub/NAME?since=S...     S < SEQ: 200 at once with the messages after S (a re-poll in a
 *                                burst); otherwise held: the socket is kept, nothing is written
 *   POST /pub/NAME  (body)       SEQ+1; ONE canned 200 (head + JSON body shaped like tidings'
 *                                answer, built once) written to every held socket with one
 *                                write() each; then {"seq":SEQ,"subscribers":K}
 *   GET /stats                   {"waiting_polls":K} (the only key tidings-load fanout reads)
 *
 * What it leaves out, so that it is a floor: one channel (every NAME is the same one, echoed in
 * the answer, never looked up), no timers (a held poll waits until a publish or its client
 * leaves), no JSON escaping (the load generator publishes "m<seq>"), no limits beyond fixed
 * buffers, no Date formatting, every message kept for the process's life. Answers go out with
 * one write() each, nothing buffered but a tiny leftover if a write is partial (on loopback,
 * for answers this small, it never is). A client that sends a request while its poll is held,
 * or anything this floor does not understand, is disconnected.
 *
 *   cc -O2 -o fanout_floor fanout_floor.c && ./fanout_floor 127.0.0.1 8091
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 65536
#define MAX_REQUEST 65536 /* longest request (head + body) accepted */

/* One connection, indexed by its fd. */
struct conn {
    char *in;             /* bytes of an unfinished request from the previous reads (rare) */
    size_t in_len;
    char *out;            /* the unwritten tail of a partial write (rare) */
    size_t out_len;
    int held;             /* index in held[] + 1 while its poll is held, else 0 */
};
static struct conn conns[MAXFD];
static int held[MAXFD];   /* the fds of the held polls */
static int nheld;

/* The channel: every message's data, back to back, and where each one starts. */
static char *data;
static size_t data_len, data_cap;
static size_t *msg_at;    /* msg_at[s - 1] = offset of message s in data; msg_at[seq] = data_len */
static unsigned long long seq, msg_cap;
static char chan[129] = "c";

static int ep;

/* A growable byte buffer for answers built once and sent many times. */
struct buf { char *p; size_t len, cap; };
static void put(struct buf *b, const char *s, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) { perror("realloc"); exit(1); }
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}
static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* A 200 with the messages after `since` (at least one), head and body as tidings writes them
 * (same headers, same JSON shape, the epoch always 00000000). */
static void build_answer(struct buf *ans, unsigned long long since) {
    static struct buf body;
    char num[64];
    body.len = 0;
    puts_(&body, "{\"channel\":\"");
    puts_(&body, chan);
    puts_(&body, "\",\"epoch\":\"00000000\",\"messages\":[");
    for (unsigned long long s = since + 1; s <= seq; s++) {
        int n = snprintf(num, sizeof num, "%s{\"seq\":%llu,\"data\":\"", s > since + 1 ? "," : "", s);
        put(&body, num, n);
        put(&body, data + msg_at[s - 1], msg_at[s] - msg_at[s - 1]);
        put(&body, "\"}", 2);
    }
    int n = snprintf(num, sizeof num, "],\"next\":%llu,\"missed\":0}", seq);
    put(&body, num, n);
    char head[256];
    n = snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Mon, 23 Nov 2026 00:00:00 GMT\r\n"
                 "Content-Length: %zu\r\nContent-Type: application/json\r\n"
                 "ETag: \"00000000:%llu\"\r\nCache-Control: no-cache\r\n\r\n",
                 body.len, seq);
    ans->len = 0;
    put(ans, head, n);
    put(ans, body.p, body.len);
}

static void unhold(int fd) {
    int i = conns[fd].held - 1;
    if (i < 0) return;
    held[i] = held[--nheld];
    conns[held[i]].held = i + 1;
    conns[fd].held = 0;
}

static void drop(int fd) {
    unhold(fd);
    free(conns[fd].in); free(conns[fd].out);
    memset(&conns[fd], 0, sizeof conns[fd]);
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

/* One write(); a partial one keeps its tail and waits for EPOLLOUT. 0 = fd dropped. */
static int send_all(int fd, const char *p, size_t n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno != EAGAIN) { drop(fd); return 0; }
    if (w < 0) w = 0;
    if ((size_t)w < n) {
        struct conn *c = &conns[fd];
        c->out = realloc(c->out, c->out_len + n - w);
        memcpy(c->out + c->out_len, p + w, n - w);
        c->out_len += n - w;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    }
    return 1;
}

/* The decimal value of `key=` in a query string; `dflt` if absent. */
static unsigned long long query(const char *q, const char *end, const char *key, unsigned long long dflt) {
    size_t k = strlen(key);
    for (const char *p = q; p && p < end; p = memchr(p, '&', end - p), p = p ? p + 1 : p) {
        if ((size_t)(end - p) > k && !memcmp(p, key, k) && p[k] == '=') {
            unsigned long long v = 0;
            for (p += k + 1; p < end && *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
            return v;
        }
    }
    return dflt;
}

/* Handles the complete requests at the start of p[0..n) from fd; appends fd's own answers to
 * `reply`. Returns the bytes consumed, or -1 to drop the connection. */
static long handle(int fd, const char *p, size_t n, struct buf *reply) {
    static struct buf fan, catchup;
    static unsigned long long catchup_since = ~0ULL, catchup_seq;
    size_t used = 0;
    for (;;) {
        const char *r = p + used;
        size_t left = n - used;
        const char *end = memmem(r, left, "\r\n\r\n", 4);
        if (!end) return left > MAX_REQUEST ? -1 : (long)used;
        size_t head = end + 4 - r;
        if (conns[fd].held) return -1; /* a request while held: not what tidings-load does */
        const char *sp = memchr(r, ' ', head), *tgt = sp ? sp + 1 : NULL;
        const char *tend = tgt ? memchr(tgt, ' ', end - tgt) : NULL;
        if (!tend) return -1;
        const char *q = memchr(tgt, '?', tend - tgt);
        const char *path_end = q ? q : tend;
        char line[160];
        if (!memcmp(r, "POST /pub/", 10)) {
            const char *cl = memmem(r, head, "\r\nContent-Length:", 17);
            if (!cl) cl = memmem(r, head, "\r\ncontent-length:", 17);
            if (!cl) return -1;
            size_t len = strtoul(cl + 17, NULL, 10);
            if (len > MAX_REQUEST) return -1;
            if (left < head + len) return (long)used;
            size_t name = path_end - (tgt + 5);
            if (name == 0 || name >= sizeof chan) return -1;
            memcpy(chan, tgt + 5, name); chan[name] = 0;
            /* Keep the message. */
            if (data_len + len > data_cap) { data_cap = (data_len + len) * 2; data = realloc(data, data_cap); }
            if (seq + 2 > msg_cap) { msg_cap = (seq + 2) * 2; msg_at = realloc(msg_at, msg_cap * sizeof *msg_at); }
            if (!data || !msg_at) { perror("realloc"); exit(1); }
            memcpy(data + data_len, r + head, len);
            msg_at[seq] = data_len;
            data_len += len;
            msg_at[++seq] = data_len;
            /* The fan-out: one answer, one write() per held socket. */
            int k = nheld;
            if (k) {
                build_answer(&fan, seq - 1);
                while (nheld) {
                    int h = held[nheld - 1];
                    unhold(h);
                    send_all(h, fan.p, fan.len);
                }
            }
            char body[64];
            int bl = snprintf(body, sizeof body, "{\"seq\":%llu,\"subscribers\":%d}", seq, k);
            int hl = snprintf(line, sizeof line,
                              "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Mon, 23 Nov 2026 00:00:00 GMT\r\n"
                              "Content-Length: %d\r\nContent-Type: application/json\r\n\r\n", bl);
            put(reply, line, hl);
            put(reply, body, bl);
            used += head + len;
        } else if (!memcmp(r, "GET /sub/", 9)) {
            unsigned long long since = q ? query(q + 1, tend, "since", seq) : seq;
            unsigned long long timeout = q ? query(q + 1, tend, "timeout", 1) : 1;
            if (since < seq) {
                /* A re-poll behind the channel (a burst): its messages at once, the answer
                 * built once per (cursor, seq) like tidings' shared bodies. */
                if (catchup_since != since || catchup_seq != seq) {
                    build_answer(&catchup, since);
                    catchup_since = since; catchup_seq = seq;
                }
                put(reply, catchup.p, catchup.len);
            } else if (timeout == 0) {
                int hl = snprintf(line, sizeof line,
                                  "HTTP/1.1 304 Not Modified\r\nServer: floor\r\nDate: Mon, 23 Nov 2026 00:00:00 GMT\r\n"
                                  "ETag: \"00000000:%llu\"\r\nCache-Control: no-cache\r\n\r\n", seq);
                put(reply, line, hl);
            } else {
                held[nheld++] = fd;
                conns[fd].held = nheld;
            }
            used += head;
        } else if (!memcmp(r, "GET /stats ", 11)) {
            char body[64];
            int bl = snprintf(body, sizeof body, "{\"waiting_polls\":%d}", nheld);
            int hl = snprintf(line, sizeof line,
                              "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Mon, 23 Nov 2026 00:00:00 GMT\r\n"
                              "Content-Length: %d\r\nContent-Type: application/json\r\n\r\n", bl);
            put(reply, line, hl);
            put(reply, body, bl);
            used += head;
        } else {
            return -1;
        }
    }
}

int main(int argc, char **argv) {
    const char *host = argc > 1 ? argv[1] : "127.0.0.1";
    int port = argc > 2 ? atoi(argv[2]) : 8091;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1024)) { perror("listen"); return 1; }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[1024];
    static char in[65536];
    struct buf reply = {0};
    msg_at = calloc(msg_cap = 1024, sizeof *msg_at);
    fprintf(stderr, "fanout_floor: listening on %s:%d\n", host, port);
    for (;;) {
        int n = epoll_wait(ep, events, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    if (c >= MAXFD) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct conn *c = &conns[fd];
            if (c->out_len && (events[i].events & EPOLLOUT)) {
                /* The tail of a partial write. */
                ssize_t w = write(fd, c->out, c->out_len);
                if (w < 0 && errno != EAGAIN) { drop(fd); continue; }
                if (w > 0) { memmove(c->out, c->out + w, c->out_len - w); c->out_len -= w; }
                if (!c->out_len) {
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                }
                if (!(events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
            }
            ssize_t r = read(fd, in, sizeof in);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) { drop(fd); continue; }
            /* Usually the request is whole in this read; else join it to the earlier bytes. */
            const char *p = in;
            size_t len = r;
            if (c->in_len) {
                c->in = realloc(c->in, c->in_len + r);
                memcpy(c->in + c->in_len, in, r);
                p = c->in;
                len = c->in_len += r;
            }
            reply.len = 0;
            long used = handle(fd, p, len, &reply);
            if (used < 0) { drop(fd); continue; }
            if ((size_t)used < len) {
                /* An unfinished request: keep its bytes for the next read. */
                char *rest = malloc(len - used);
                memcpy(rest, p + used, len - used);
                free(c->in);
                c->in = rest;
                c->in_len = len - used;
            } else {
                c->in_len = 0;
            }
            if (reply.len && c->out_len) {
                /* Still writing an earlier answer: queue behind it. */
                c->out = realloc(c->out, c->out_len + reply.len);
                memcpy(c->out + c->out_len, reply.p, reply.len);
                c->out_len += reply.len;
            } else if (reply.len) {
                send_all(fd, reply.p, reply.len);
            }
        }
    }
}
