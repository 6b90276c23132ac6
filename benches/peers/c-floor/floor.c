/* The syscall floor: a bare epoll loop that answers every "\r\n\r\n" it reads with a canned
 * response, without parsing anything. One read and one write per readiness event, all answers
 * of a read in that one write (so pipelined batches cost one write, like tidings).
 * No Date header formatting, no timers, no limits: nothing a real server could skip.
 *
 *   cc -O2 -o floor floor.c && ./floor 127.0.0.1 8081
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESP[] =
    "HTTP/1.1 200 OK\r\nServer: floor\r\nDate: Mon, 23 Nov 2026 00:00:00 GMT\r\n"
    "Content-Length: 13\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, World!";

int main(int argc, char **argv) {
    const char *host = argc > 1 ? argv[1] : "127.0.0.1";
    int port = argc > 2 ? atoi(argv[2]) : 8081;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1024)) { perror("listen"); return 1; }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[1024];
    static char in[65536], out[65536 * 2];
    /* tail[fd]: how many bytes of a "\r\n\r\n" the previous read ended with. */
    static unsigned char tail[65536];
    fprintf(stderr, "floor: listening on %s:%d\n", host, port);
    for (;;) {
        int n = epoll_wait(ep, events, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    tail[c % 65536] = 0;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, in, sizeof in);
            if (r <= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); close(fd); continue; }
            static const char END[] = "\r\n\r\n";
            unsigned m = tail[fd % 65536];
            size_t o = 0;
            for (ssize_t k = 0; k < r; k++) {
                if (in[k] == END[m]) {
                    if (++m == 4) {
                        m = 0;
                        if (o + sizeof RESP <= sizeof out) { memcpy(out + o, RESP, sizeof RESP - 1); o += sizeof RESP - 1; }
                    }
                } else {
                    m = in[k] == '\r' ? 1 : 0;
                }
            }
            tail[fd % 65536] = m;
            if (o && write(fd, out, o) < 0) { epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); close(fd); }
        }
    }
}
