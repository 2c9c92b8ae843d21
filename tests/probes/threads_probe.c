/*
 * threads_probe: several threads churn through sockets at once (socket, bind, send to self,
 * recv, dup2 over another thread-local fd, close) so fd numbers are reused across threads all
 * the time; every datagram must come back intact on the socket it was sent to. Exercises the
 * interposer's fd table under concurrency. Prints `threads ok` plus per-thread totals.
 *
 * Usage: threads_probe [THREADS [ITERATIONS]]      (default 4 x 2000)
 * Build: cc -O1 -Wall -o threads_probe threads_probe.c -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int iterations = 2000;

struct result {
    long ok;
    char error[256];
};

static void *worker(void *arg) {
    struct result *res = arg;
    for (int i = 0; i < iterations; i++) {
        int s = socket(AF_INET, SOCK_DGRAM | (i % 2 ? SOCK_NONBLOCK : 0), 0);
        if (s < 0) {
            snprintf(res->error, sizeof res->error, "iteration %d: socket: %s", i, strerror(errno));
            return NULL;
        }
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t al = sizeof a;
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
            getsockname(s, (struct sockaddr *)&a, &al) < 0) {
            snprintf(res->error, sizeof res->error, "iteration %d: bind: %s", i, strerror(errno));
            close(s);
            return NULL;
        }
        /* Sometimes move the socket to another fd number with dup2 and use that. */
        int use = s;
        if (i % 3 == 0) {
            int t = socket(AF_INET, SOCK_STREAM, 0);
            if (t >= 0 && dup2(s, t) == t) {
                close(s);
                use = t;
            } else if (t >= 0) {
                close(t);
            }
        }
        char msg[64], got[64];
        int len = snprintf(msg, sizeof msg, "thread %p iteration %d", (void *)res, i);
        if (sendto(use, msg, len, 0, (struct sockaddr *)&a, sizeof a) != len) {
            snprintf(res->error, sizeof res->error, "iteration %d: sendto: %s", i, strerror(errno));
            close(use);
            return NULL;
        }
        struct pollfd pf = {.fd = use, .events = POLLIN};
        if (poll(&pf, 1, 5000) != 1) {
            snprintf(res->error, sizeof res->error, "iteration %d: poll: no datagram", i);
            close(use);
            return NULL;
        }
        ssize_t n = recv(use, got, sizeof got, 0);
        if (n != len || memcmp(got, msg, len) != 0) {
            snprintf(res->error, sizeof res->error, "iteration %d: recv %zd bytes, expected %d",
                     i, n, len);
            close(use);
            return NULL;
        }
        if (close(use) != 0) {
            snprintf(res->error, sizeof res->error, "iteration %d: close: %s", i, strerror(errno));
            return NULL;
        }
        res->ok++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    if (argc > 2) iterations = atoi(argv[2]);
    if (threads < 1 || threads > 64 || iterations < 1) return 2;
    pthread_t t[64];
    struct result r[64];
    memset(r, 0, sizeof r);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, &r[i]);
    int bad = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        if (r[i].error[0]) {
            printf("thread %d failed: %s\n", i, r[i].error);
            bad = 1;
        } else {
            printf("thread %d: %ld round trips\n", i, r[i].ok);
        }
    }
    printf("threads %s\n", bad ? "FAILED" : "ok");
    return bad;
}
