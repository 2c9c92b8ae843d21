/*
 * overhead_loop: N pass-through calls of one hooked family, for measuring the per-call cost the
 * interposer adds (scripts/bench-overhead.sh runs it under callgrind with and without
 * LD_PRELOAD=libaccel.so and compares instruction counts of run_loop, inclusive).
 *
 * Usage: overhead_loop FAMILY N
 * FAMILY: read write recv_tcp recv_udp send_unix fcntl poll epoll_wait select getsockopt
 *
 * Setup and a warm-up (lazy symbol resolution, first-use initialisation) run outside run_loop, so
 * `callgrind --toggle-collect=run_loop` counts only the steady-state calls.
 *
 * Build: cc -O1 -Wall -o overhead_loop overhead_loop.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

enum fam { F_READ, F_WRITE, F_RECV_TCP, F_RECV_UDP, F_SEND_UNIX, F_FCNTL, F_POLL, F_EPOLL, F_SELECT, F_GETSOCKOPT };
static const char *names[] = {"read", "write", "recv_tcp", "recv_udp", "send_unix",
                              "fcntl", "poll", "epoll_wait", "select", "getsockopt"};

static enum fam fam;
static int fd, fd2, ep;
static char byte;
static long sink;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static inline void op(void) {
    switch (fam) {
    case F_READ: sink += read(fd, &byte, 1); break;
    case F_WRITE: sink += write(fd, &byte, 1); break;
    case F_RECV_TCP:
    case F_RECV_UDP: sink += recv(fd, &byte, 1, MSG_DONTWAIT); break; /* empty: EAGAIN */
    case F_SEND_UNIX:
        sink += send(fd, &byte, 1, 0);
        sink += recv(fd2, &byte, 1, 0); /* keep the pair empty: two calls per iteration */
        break;
    case F_FCNTL: sink += fcntl(fd, F_GETFL); break;
    case F_POLL: {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        sink += poll(&p, 1, 0);
        break;
    }
    case F_EPOLL: {
        struct epoll_event ev[4];
        sink += epoll_wait(ep, ev, 4, 0);
        break;
    }
    case F_SELECT: {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(fd, &r);
        struct timeval tv = {0, 0};
        sink += select(fd + 1, &r, NULL, NULL, &tv);
        break;
    }
    case F_GETSOCKOPT: {
        int v;
        socklen_t l = sizeof v;
        sink += getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l);
        break;
    }
    }
}

__attribute__((noinline)) void run_loop(long n) {
    for (long i = 0; i < n; i++) op();
}

__attribute__((noinline)) void warm_up(long n) {
    for (long i = 0; i < n; i++) op();
}

static struct sockaddr_in loopback0(void) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s FAMILY N\n", argv[0]);
        return 2;
    }
    int found = 0;
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(argv[1], names[i])) fam = (enum fam)i, found = 1;
    if (!found) {
        fprintf(stderr, "unknown family %s\n", argv[1]);
        return 2;
    }
    long n = atol(argv[2]);
    int p[2], sp[2];
    switch (fam) {
    case F_READ: fd = open("/dev/zero", O_RDONLY); break;
    case F_WRITE: fd = open("/dev/null", O_WRONLY); break;
    case F_RECV_TCP: {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = loopback0();
        socklen_t al = sizeof a;
        if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) ||
            getsockname(l, (struct sockaddr *)&a, &al))
            die("listen");
        fd2 = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd2, (struct sockaddr *)&a, sizeof a)) die("connect");
        fd = accept(l, NULL, NULL);
        close(l);
        break;
    }
    case F_RECV_UDP: {
        fd = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = loopback0();
        if (bind(fd, (struct sockaddr *)&a, sizeof a)) die("bind");
        break;
    }
    case F_SEND_UNIX:
        if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sp)) die("socketpair");
        fd = sp[0];
        fd2 = sp[1];
        break;
    case F_FCNTL:
    case F_POLL:
    case F_SELECT:
        if (pipe(p)) die("pipe");
        fd = p[0];
        break;
    case F_EPOLL: {
        if (pipe(p)) die("pipe");
        ep = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLIN};
        epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
        break;
    }
    case F_GETSOCKOPT: fd = socket(AF_INET, SOCK_DGRAM, 0); break;
    }
    if (fd < 0) die("setup");
    warm_up(1000);
    run_loop(n);
    printf("%s %ld calls done (sink %ld)\n", names[fam], n, sink);
    return 0;
}
