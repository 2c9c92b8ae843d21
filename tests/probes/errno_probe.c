/*
 * errno_probe: exercises every family of socket-API calls libaccel.so intercepts and prints one
 * line per case: `name ret errno` (errno as its symbolic name, `-` when the call succeeded).
 * Some cases append extra fields (revents, values) that must also be identical.
 *
 * The output must be byte-identical with and without LD_PRELOAD=libaccel.so. Nothing printed
 * depends on fd numbers, port numbers or timing: calls returning an fd print `fd`, calls whose
 * result varies print a normalised result. (The library may hold fds of its own, e.g. its log.)
 *
 * Build: cc -O1 -Wall -o errno_probe errno_probe.c -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *ename(int e) {
    const char *n = strerrorname_np(e);
    static char buf[32];
    if (n) return n;
    snprintf(buf, sizeof buf, "E#%d", e);
    return buf;
}

static void report(const char *name, long ret, int err, const char *extra) {
    printf("%s %ld %s%s%s\n", name, ret, ret < 0 ? ename(err) : "-", extra ? " " : "",
           extra ? extra : "");
}

/* A plain result. */
#define T(name, expr)                      \
    do {                                   \
        errno = 0;                         \
        long r_ = (long)(expr);            \
        int e_ = errno;                    \
        report((name), r_, e_, NULL);      \
    } while (0)

/* A result that is an fd on success: prints `fd` instead of the number; stores it. */
#define TFD(name, expr, out)                                          \
    do {                                                              \
        errno = 0;                                                    \
        long r_ = (long)(expr);                                       \
        int e_ = errno;                                               \
        if (r_ >= 0) printf("%s fd -\n", (name));                     \
        else report((name), r_, e_, NULL);                            \
        (out) = (int)r_;                                              \
    } while (0)

/* A case that may crash a broken interposer (bad user pointers): run it in a child so a crash
 * is reported as such and the remaining cases still run. */
#define TFORK(name, expr)                                                  \
    do {                                                                   \
        fflush(stdout);                                                    \
        pid_t p_ = fork();                                                 \
        if (p_ == 0) {                                                     \
            T((name), (expr));                                             \
            fflush(stdout);                                                \
            _exit(0);                                                      \
        }                                                                  \
        int st_ = 0;                                                       \
        waitpid(p_, &st_, 0);                                              \
        if (WIFSIGNALED(st_))                                              \
            printf("%s crashed %s\n", (name), sigabbrev_np(WTERMSIG(st_))); \
    } while (0)

/* A successful call must leave errno alone (glibc's wrappers do): errno is set to a sentinel
 * before the call and printed after it. */
#define TKEEP(name, expr)                                                            \
    do {                                                                             \
        errno = 4242;                                                                \
        long r_ = (long)(expr);                                                      \
        int e_ = errno;                                                              \
        printf("%s %s errno=%s\n", (name), r_ >= 0 ? "ok" : "failed",                 \
               e_ == 4242 ? "kept" : ename(e_));                                     \
    } while (0)

static char namebuf[128];
static const char *nm(const char *a, const char *b) {
    snprintf(namebuf, sizeof namebuf, "%s_%s", a, b);
    return namebuf;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

/* An fd number that was a (UDP) socket and has just been closed. */
static int closed_fd(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) die("socket");
    close(s);
    return s;
}

static struct sockaddr_in loopback(unsigned short port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* A UDP socket bound to 127.0.0.1:<ephemeral>; its address in *addr. */
static int udp_bound(int flags, struct sockaddr_in *addr) {
    int s = socket(AF_INET, SOCK_DGRAM | flags, 0);
    if (s < 0) die("socket udp");
    struct sockaddr_in a = loopback(0);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind udp");
    socklen_t l = sizeof a;
    if (getsockname(s, (struct sockaddr *)&a, &l) < 0) die("getsockname");
    if (addr) *addr = a;
    return s;
}

/* A TCP listener on 127.0.0.1:<ephemeral>. */
static int tcp_listener(int flags, struct sockaddr_in *addr) {
    int s = socket(AF_INET, SOCK_STREAM | flags, 0);
    if (s < 0) die("socket tcp");
    struct sockaddr_in a = loopback(0);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind tcp");
    if (listen(s, 8) < 0) die("listen");
    socklen_t l = sizeof a;
    if (getsockname(s, (struct sockaddr *)&a, &l) < 0) die("getsockname");
    if (addr) *addr = a;
    return s;
}

/* A port on 127.0.0.1 with nothing bound to it (UDP and TCP) right now. */
static unsigned short dead_port(int type) {
    int s = socket(AF_INET, type, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t l = sizeof a;
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &l) < 0)
        die("dead_port");
    close(s);
    return ntohs(a.sin_port);
}

/* Drains whatever is queued on a socket (non-blocking). */
static void drain(int s) {
    char b[65536];
    while (recv(s, b, sizeof b, MSG_DONTWAIT) > 0) {
    }
}

/* ---- signals ---------------------------------------------------------------------------- */

static volatile sig_atomic_t alarms;
static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

static void handler(int restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = restart ? SA_RESTART : 0;
    if (sigaction(SIGALRM, &sa, NULL) < 0) die("sigaction");
}

/* SIGALRM every 50 ms until timer_off(): a blocking call is interrupted even if the first
 * signal arrives before the call blocks. */
static void timer_on(void) {
    struct itimerval it = {{0, 50000}, {0, 50000}};
    if (setitimer(ITIMER_REAL, &it, NULL) < 0) die("setitimer");
}
static void timer_off(void) {
    struct itimerval it = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
}

/* Interrupted-call case: timer on, call, timer off, report. */
#define TINTR(name, expr)                  \
    do {                                   \
        timer_on();                        \
        errno = 0;                         \
        long r_ = (long)(expr);            \
        int e_ = errno;                    \
        timer_off();                       \
        report((name), r_, e_, NULL);      \
    } while (0)

/* Helper thread: after a delay, writes to a pipe or sends a datagram. SIGALRM is blocked in it
 * (it inherits the mask main had while creating it), so signals go to the main thread. */
struct later {
    int fd;
    struct sockaddr_in to; /* sin_family 0: write() instead of sendto() */
};
static void *later_thread(void *p) {
    struct later *l = p;
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    if (l->to.sin_family)
        sendto(l->fd, "later", 5, 0, (struct sockaddr *)&l->to, sizeof l->to);
    else if (write(l->fd, "later", 5) != 5)
        die("later write");
    return NULL;
}
static pthread_t start_later(struct later *l) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_t t;
    if (pthread_create(&t, NULL, later_thread, l) != 0) die("pthread_create");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return t;
}

/* ---- the cases -------------------------------------------------------------------------- */

static char buf[65536];
/* An invalid user pointer (EFAULT); volatile so the compiler cannot reason about it. */
static void *volatile bad_ptr = (void *)8;
static struct iovec iov = {buf, 256};
static struct msghdr mh;
static struct mmsghdr mm[2];
static struct iovec mmiov[2] = {{buf, 256}, {buf + 256, 256}};

static void reset_msgs(void) {
    memset(&mh, 0, sizeof mh);
    iov.iov_base = buf;
    iov.iov_len = 256;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; i++) {
        mmiov[i].iov_base = buf + 256 * i;
        mmiov[i].iov_len = 256;
        mm[i].msg_hdr.msg_iov = &mmiov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
}

static void ebadf_cases(void) {
    struct sockaddr_in dst = loopback(9);
    struct sockaddr_in sa;
    socklen_t sl;
    int v = 1, n = 0;
    socklen_t vl = sizeof v;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int good = socket(AF_INET, SOCK_DGRAM, 0);
    struct epoll_event ev = {.events = EPOLLIN};
    struct epoll_event evs[4];

    for (int k = 0; k < 2; k++) {
        const char *sfx = k ? "closed" : "neg";
#define BAD (k ? closed_fd() : -1)
        reset_msgs();
        T(nm("recv", sfx), recv(BAD, buf, 16, 0));
        T(nm("recvfrom", sfx), recvfrom(BAD, buf, 16, 0, NULL, NULL));
        T(nm("recvmsg", sfx), recvmsg(BAD, &mh, 0));
        T(nm("recvmmsg", sfx), recvmmsg(BAD, mm, 2, 0, NULL));
        T(nm("read", sfx), read(BAD, buf, 16));
        T(nm("readv", sfx), readv(BAD, &iov, 1));
        T(nm("send", sfx), send(BAD, "x", 1, MSG_NOSIGNAL));
        T(nm("sendto", sfx), sendto(BAD, "x", 1, 0, (struct sockaddr *)&dst, sizeof dst));
        T(nm("sendmsg", sfx), sendmsg(BAD, &mh, 0));
        T(nm("sendmmsg", sfx), sendmmsg(BAD, mm, 2, 0));
        T(nm("write", sfx), write(BAD, "x", 1));
        T(nm("writev", sfx), writev(BAD, &iov, 1));
        T(nm("bind", sfx), bind(BAD, (struct sockaddr *)&dst, sizeof dst));
        T(nm("listen", sfx), listen(BAD, 1));
        T(nm("accept", sfx), accept(BAD, NULL, NULL));
        T(nm("accept4", sfx), accept4(BAD, NULL, NULL, SOCK_CLOEXEC));
        T(nm("connect", sfx), connect(BAD, (struct sockaddr *)&dst, sizeof dst));
        T(nm("shutdown", sfx), shutdown(BAD, SHUT_RDWR));
        sl = sizeof sa;
        T(nm("getsockname", sfx), getsockname(BAD, (struct sockaddr *)&sa, &sl));
        sl = sizeof sa;
        T(nm("getpeername", sfx), getpeername(BAD, (struct sockaddr *)&sa, &sl));
        T(nm("getsockopt", sfx), getsockopt(BAD, SOL_SOCKET, SO_TYPE, &v, &vl));
        T(nm("setsockopt", sfx), setsockopt(BAD, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
        T(nm("close", sfx), close(BAD));
        T(nm("dup", sfx), dup(BAD));
        T(nm("dup2", sfx), dup2(BAD, 200));
        T(nm("dup3", sfx), dup3(BAD, 200, 0));
        T(nm("fcntl_getfl", sfx), fcntl(BAD, F_GETFL));
        T(nm("fcntl_setfl", sfx), fcntl(BAD, F_SETFL, O_NONBLOCK));
        T(nm("ioctl_fionread", sfx), ioctl(BAD, FIONREAD, &n));
        T(nm("ioctl_fionbio", sfx), ioctl(BAD, FIONBIO, &v));
        T(nm("epoll_ctl_add_fd", sfx), epoll_ctl(ep, EPOLL_CTL_ADD, BAD, &ev));
        T(nm("epoll_ctl_bad_epfd", sfx), epoll_ctl(BAD, EPOLL_CTL_ADD, good, &ev));
        T(nm("epoll_wait", sfx), epoll_wait(BAD, evs, 4, 0));
        T(nm("syscall_close", sfx), syscall(SYS_close, BAD));
        {
            struct pollfd p = {.fd = BAD, .events = POLLIN};
            char extra[32];
            errno = 0;
            long r = poll(&p, 1, 0);
            int e = errno;
            snprintf(extra, sizeof extra, "revents=0x%x", p.revents);
            report(nm("poll", sfx), r, e, extra);
        }
#undef BAD
    }
    {
        int c = closed_fd();
        fd_set r;
        FD_ZERO(&r);
        FD_SET(c, &r);
        struct timeval tv = {0, 0};
        T("select_closed", select(c + 1, &r, NULL, NULL, &tv));
    }
    /* The same fd closed twice. */
    {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        T("close_first", close(s));
        T("close_again", close(s));
    }
    close(good);
    close(ep);
}

static void enotsock_cases(void) {
    int p[2];
    if (pipe(p) < 0) die("pipe");
    struct sockaddr_in dst = loopback(9), sa;
    socklen_t sl = sizeof sa;
    int v = 1;
    socklen_t vl = sizeof v;
    reset_msgs();
    T("pipe_recv", recv(p[0], buf, 16, MSG_DONTWAIT));
    T("pipe_recvfrom", recvfrom(p[0], buf, 16, MSG_DONTWAIT, NULL, NULL));
    T("pipe_recvmsg", recvmsg(p[0], &mh, MSG_DONTWAIT));
    T("pipe_recvmmsg", recvmmsg(p[0], mm, 2, MSG_DONTWAIT, NULL));
    T("pipe_send", send(p[1], "x", 1, MSG_NOSIGNAL));
    T("pipe_sendto", sendto(p[1], "x", 1, 0, (struct sockaddr *)&dst, sizeof dst));
    T("pipe_sendmsg", sendmsg(p[1], &mh, 0));
    T("pipe_sendmmsg", sendmmsg(p[1], mm, 2, 0));
    T("pipe_bind", bind(p[0], (struct sockaddr *)&dst, sizeof dst));
    T("pipe_listen", listen(p[0], 1));
    T("pipe_accept", accept(p[0], NULL, NULL));
    T("pipe_accept4", accept4(p[0], NULL, NULL, 0));
    T("pipe_connect", connect(p[0], (struct sockaddr *)&dst, sizeof dst));
    T("pipe_shutdown", shutdown(p[0], SHUT_RD));
    T("pipe_getsockname", getsockname(p[0], (struct sockaddr *)&sa, &sl));
    sl = sizeof sa;
    T("pipe_getpeername", getpeername(p[0], (struct sockaddr *)&sa, &sl));
    T("pipe_getsockopt", getsockopt(p[0], SOL_SOCKET, SO_TYPE, &v, &vl));
    T("pipe_setsockopt", setsockopt(p[0], SOL_SOCKET, SO_REUSEADDR, &v, sizeof v));
    /* Ordinary pipe I/O through the hooked read/write. */
    T("pipe_write", write(p[1], "hello", 5));
    T("pipe_read", read(p[0], buf, sizeof buf));
    T("pipe_writev", writev(p[1], &(struct iovec){"abc", 3}, 1));
    iov.iov_len = 256;
    T("pipe_readv", readv(p[0], &iov, 1));
    close(p[0]);
    close(p[1]);

    int dn = open("/dev/null", O_RDWR);
    T("devnull_recv", recv(dn, buf, 16, 0));
    T("devnull_send", send(dn, "x", 1, 0));
    T("devnull_write", write(dn, "x", 1));
    T("devnull_read", read(dn, buf, 16));
    close(dn);
}

static void eagain_cases(void) {
    struct sockaddr_in a;
    int u = udp_bound(SOCK_NONBLOCK, &a);
    reset_msgs();
    T("nb_udp_recv", recv(u, buf, 256, 0));
    T("nb_udp_recvfrom", recvfrom(u, buf, 256, 0, NULL, NULL));
    T("nb_udp_recvmsg", recvmsg(u, &mh, 0));
    T("nb_udp_recvmmsg", recvmmsg(u, mm, 2, 0, NULL));
    T("nb_udp_read", read(u, buf, 256));
    T("nb_udp_readv", readv(u, &iov, 1));

    int b = udp_bound(0, NULL);
    T("dontwait_recv", recv(b, buf, 256, MSG_DONTWAIT));
    T("dontwait_recvfrom", recvfrom(b, buf, 256, MSG_DONTWAIT, NULL, NULL));
    T("dontwait_recvmsg", recvmsg(b, &mh, MSG_DONTWAIT));
    T("dontwait_recvmmsg", recvmmsg(b, mm, 2, MSG_DONTWAIT, NULL));

    /* Switching to non-blocking through fcntl and through ioctl(FIONBIO). */
    int fl = fcntl(b, F_GETFL);
    T("fcntl_setfl_nonblock", fcntl(b, F_SETFL, fl | O_NONBLOCK));
    printf("fcntl_getfl_nonblock %d\n", (fcntl(b, F_GETFL) & O_NONBLOCK) != 0);
    T("fcntl_nb_recv", recv(b, buf, 256, 0));
    T("fcntl_setfl_block", fcntl(b, F_SETFL, fl));
    int on = 1, off = 0;
    T("ioctl_fionbio_on", ioctl(b, FIONBIO, &on));
    T("fionbio_nb_recvfrom", recvfrom(b, buf, 256, 0, NULL, NULL));
    T("ioctl_fionbio_off", ioctl(b, FIONBIO, &off));
    printf("fcntl_getfl_blocking %d\n", (fcntl(b, F_GETFL) & O_NONBLOCK) != 0);

    /* SO_RCVTIMEO on a blocking socket: the timeout ends in EAGAIN. */
    struct timeval tv = {0, 100000};
    T("setsockopt_rcvtimeo", setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    T("rcvtimeo_recv", recv(b, buf, 256, 0));
    T("rcvtimeo_recvfrom", recvfrom(b, buf, 256, 0, NULL, NULL));
    T("rcvtimeo_recvmsg", recvmsg(b, &mh, 0));
    T("rcvtimeo_read", read(b, buf, 256));
    T("rcvtimeo_recvmmsg", recvmmsg(b, mm, 2, 0, NULL));
    tv.tv_usec = 0;
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    /* Non-blocking listener; a non-blocking connected TCP socket with nothing to read and,
     * after enough sends, no room to write. */
    struct sockaddr_in la;
    int l = tcp_listener(SOCK_NONBLOCK, &la);
    int acc;
    T("nb_accept", accept(l, NULL, NULL));
    T("nb_accept4", accept4(l, NULL, NULL, SOCK_NONBLOCK));
    int c = socket(AF_INET, SOCK_STREAM, 0);
    T("tcp_connect", connect(c, (struct sockaddr *)&la, sizeof la));
    struct pollfd pl = {.fd = l, .events = POLLIN};
    poll(&pl, 1, 5000);
    TFD("nb_accept_ready", accept4(l, NULL, NULL, SOCK_NONBLOCK), acc);
    T("nb_tcp_recv", recv(acc, buf, 256, 0));
    T("nb_tcp_read", read(acc, buf, 256));
    long sent = 0, r;
    int e = 0;
    for (int i = 0; i < 100000; i++) {
        r = send(acc, buf, sizeof buf, MSG_NOSIGNAL);
        if (r < 0) {
            e = errno;
            break;
        }
        sent += r;
    }
    printf("nb_tcp_send_until_full %s %s\n", sent > 0 ? "sent" : "nothing", ename(e));
    T("tcp_shutdown_wr", shutdown(c, SHUT_WR));
    drain(acc);
    T("tcp_recv_after_peer_shutdown", recv(acc, buf, 16, MSG_DONTWAIT));
    close(c);
    close(acc);
    close(l);
    close(u);
    close(b);
}

static void eintr_cases(void) {
    struct sockaddr_in a;
    int b = udp_bound(0, &a);
    struct sockaddr_in la;
    int l = tcp_listener(0, &la);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN}, evs[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev);
    int p[2];
    if (pipe(p) < 0) die("pipe");

    /* Without SA_RESTART every blocking call fails with EINTR. */
    handler(0);
    reset_msgs();
    TINTR("eintr_recvfrom", recvfrom(b, buf, 256, 0, NULL, NULL));
    TINTR("eintr_recv", recv(b, buf, 256, 0));
    TINTR("eintr_recvmsg", recvmsg(b, &mh, 0));
    TINTR("eintr_recvmmsg", recvmmsg(b, mm, 2, 0, NULL));
    TINTR("eintr_read_udp", read(b, buf, 256));
    TINTR("eintr_readv_udp", readv(b, &iov, 1));
    TINTR("eintr_read_pipe", read(p[0], buf, 256));
    TINTR("eintr_accept", accept(l, NULL, NULL));
    TINTR("eintr_accept4", accept4(l, NULL, NULL, 0));
    {
        struct pollfd pf = {.fd = b, .events = POLLIN};
        TINTR("eintr_poll", poll(&pf, 1, -1));
        TINTR("eintr_ppoll", ppoll(&pf, 1, NULL, NULL));
    }
    {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(b, &r);
        TINTR("eintr_select", select(b + 1, &r, NULL, NULL, NULL));
        FD_ZERO(&r);
        FD_SET(b, &r);
        TINTR("eintr_pselect", pselect(b + 1, &r, NULL, NULL, NULL, NULL));
    }
    TINTR("eintr_epoll_wait", epoll_wait(ep, evs, 4, -1));
    TINTR("eintr_epoll_pwait", epoll_pwait(ep, evs, 4, -1, NULL));

    /* With SA_RESTART: read on a pipe and recvfrom on a UDP socket are restarted and return the
     * data a helper thread provides after 300 ms. */
    handler(1);
    {
        struct later lt = {.fd = p[1]};
        pthread_t t = start_later(&lt);
        TINTR("restart_read_pipe", read(p[0], buf, 256));
        pthread_join(t, NULL);
    }
    {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct later lt = {.fd = s, .to = a};
        pthread_t t = start_later(&lt);
        TINTR("restart_recvfrom_udp", recvfrom(b, buf, 256, 0, NULL, NULL));
        pthread_join(t, NULL);
        close(s);
    }
    /* ...but never for poll/select/epoll_wait, nor for a socket with SO_RCVTIMEO (signal(7)). */
    {
        struct pollfd pf = {.fd = b, .events = POLLIN};
        TINTR("restart_poll", poll(&pf, 1, -1));
    }
    {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(b, &r);
        TINTR("restart_select", select(b + 1, &r, NULL, NULL, NULL));
    }
    TINTR("restart_epoll_wait", epoll_wait(ep, evs, 4, -1));
    {
        struct timeval tv = {5, 0};
        setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        TINTR("restart_rcvtimeo_recvfrom", recvfrom(b, buf, 256, 0, NULL, NULL));
    }
    signal(SIGALRM, SIG_IGN);
    close(p[0]);
    close(p[1]);
    close(ep);
    close(l);
    close(b);
}

static void udp_success_cases(void) {
    struct sockaddr_in aa, ca, from;
    socklen_t fl;
    int a = udp_bound(0, &aa);
    int c = udp_bound(0, &ca);
    char extra[64];
    int n;

    for (int i = 0; i < 100; i++) buf[i] = (char)i;
    T("udp_sendto", sendto(a, buf, 100, 0, (struct sockaddr *)&ca, sizeof ca));
    n = -1;
    T("udp_ioctl_fionread", ioctl(c, FIONREAD, &n));
    printf("udp_fionread_value %d\n", n);
    {
        struct pollfd pf = {.fd = c, .events = POLLIN | POLLOUT};
        errno = 0;
        long r = poll(&pf, 1, 0);
        snprintf(extra, sizeof extra, "revents=0x%x", pf.revents);
        report("udp_poll_ready", r, errno, extra);
    }
    {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(c, &r);
        struct timeval tv = {0, 0};
        T("udp_select_ready", select(c + 1, &r, NULL, NULL, &tv));
        printf("udp_select_isset %d\n", FD_ISSET(c, &r) != 0);
    }
    char rb[256];
    memset(rb, 0, sizeof rb);
    fl = sizeof from;
    T("udp_recvfrom", recvfrom(c, rb, sizeof rb, 0, (struct sockaddr *)&from, &fl));
    printf("udp_recvfrom_check len=%d from_ok=%d data_ok=%d\n", (int)fl,
           from.sin_port == aa.sin_port && from.sin_addr.s_addr == aa.sin_addr.s_addr,
           memcmp(rb, buf, 100) == 0);

    /* Truncation, MSG_TRUNC, MSG_PEEK. */
    sendto(a, buf, 100, 0, (struct sockaddr *)&ca, sizeof ca);
    T("udp_recv_peek", recv(c, rb, sizeof rb, MSG_PEEK));
    T("udp_recv_trunc_flag", recv(c, rb, 10, MSG_PEEK | MSG_TRUNC));
    T("udp_recv_short_buffer", recv(c, rb, 10, 0));
    sendto(a, buf, 100, 0, (struct sockaddr *)&ca, sizeof ca);
    {
        struct iovec v = {rb, 10};
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = &v;
        m.msg_iovlen = 1;
        m.msg_name = &from;
        m.msg_namelen = sizeof from;
        T("udp_recvmsg_trunc", recvmsg(c, &m, 0));
        printf("udp_recvmsg_flags trunc=%d namelen=%d\n", (m.msg_flags & MSG_TRUNC) != 0,
               (int)m.msg_namelen);
    }

    /* sendmsg/recvmsg, sendmmsg/recvmmsg. */
    {
        struct iovec v[2] = {{buf, 50}, {buf + 50, 150}};
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_name = &ca;
        m.msg_namelen = sizeof ca;
        m.msg_iov = v;
        m.msg_iovlen = 2;
        T("udp_sendmsg", sendmsg(a, &m, 0));
        struct iovec rv = {rb, sizeof rb};
        memset(&m, 0, sizeof m);
        m.msg_iov = &rv;
        m.msg_iovlen = 1;
        T("udp_recvmsg", recvmsg(c, &m, 0));
    }
    {
        struct mmsghdr s[2];
        struct iovec v[2] = {{buf, 10}, {buf, 20}};
        memset(s, 0, sizeof s);
        for (int i = 0; i < 2; i++) {
            s[i].msg_hdr.msg_name = &ca;
            s[i].msg_hdr.msg_namelen = sizeof ca;
            s[i].msg_hdr.msg_iov = &v[i];
            s[i].msg_hdr.msg_iovlen = 1;
        }
        T("udp_sendmmsg", sendmmsg(a, s, 2, 0));
        printf("udp_sendmmsg_lens %u %u\n", s[0].msg_len, s[1].msg_len);
        reset_msgs();
        T("udp_recvmmsg", recvmmsg(c, mm, 2, 0, NULL));
        printf("udp_recvmmsg_lens %u %u\n", mm[0].msg_len, mm[1].msg_len);
    }

    /* Connected UDP: send/recv/write/read, zero-length datagrams, getpeername. */
    T("udp_connect", connect(c, (struct sockaddr *)&aa, sizeof aa));
    T("udp_send_connected", send(c, "hello", 5, 0));
    T("udp_recv_connected", recv(a, rb, sizeof rb, 0));
    T("udp_write_connected", write(c, "abc", 3));
    T("udp_read", read(a, rb, sizeof rb));
    T("udp_writev_connected", writev(c, &(struct iovec){"abcd", 4}, 1));
    {
        struct iovec rv = {rb, sizeof rb};
        T("udp_readv", readv(a, &rv, 1));
    }
    T("udp_send_zero_length", send(c, "", 0, 0));
    T("udp_recv_zero_length", recv(a, rb, sizeof rb, 0));
    {
        struct sockaddr_in p;
        socklen_t pl = sizeof p;
        T("udp_getpeername", getpeername(c, (struct sockaddr *)&p, &pl));
        printf("udp_getpeername_ok %d\n", p.sin_port == aa.sin_port && pl == sizeof p);
        pl = sizeof p;
        T("udp_getsockname", getsockname(c, (struct sockaddr *)&p, &pl));
        printf("udp_getsockname_ok %d\n", p.sin_port == ca.sin_port && pl == sizeof p);
    }
    /* Disconnect with AF_UNSPEC (on another socket: disconnecting a socket bound to port 0
     * also unbinds it). */
    {
        int e = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr un = {.sa_family = AF_UNSPEC};
        T("udp_connect_other", connect(e, (struct sockaddr *)&aa, sizeof aa));
        T("udp_disconnect", connect(e, &un, sizeof un));
        T("udp_send_after_disconnect", send(e, "x", 1, 0));
        close(e);
    }

    /* Connected to a port nobody listens on: the ICMP error surfaces as ECONNREFUSED. */
    {
        int d = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in dead = loopback(dead_port(SOCK_DGRAM));
        T("udp_connect_dead", connect(d, (struct sockaddr *)&dead, sizeof dead));
        T("udp_send_dead", send(d, "x", 1, 0));
        struct pollfd pf = {.fd = d, .events = POLLIN};
        errno = 0;
        long r = poll(&pf, 1, 2000);
        snprintf(extra, sizeof extra, "revents=0x%x", pf.revents);
        report("udp_poll_dead", r, errno, extra);
        int so = -1;
        socklen_t sol = sizeof so;
        T("udp_recv_dead", recv(d, rb, sizeof rb, MSG_DONTWAIT));
        T("udp_getsockopt_so_error", getsockopt(d, SOL_SOCKET, SO_ERROR, &so, &sol));
        printf("udp_so_error_value %s\n", so ? ename(so) : "0");
        T("udp_send_dead_again", send(d, "x", 1, 0));
        poll(&pf, 1, 2000);
        so = -1;
        T("udp_getsockopt_so_error_2", getsockopt(d, SOL_SOCKET, SO_ERROR, &so, &sol));
        printf("udp_so_error_value_2 %s\n", so ? ename(so) : "0");
        close(d);
    }

    /* dup: the duplicate shares the socket; closing it leaves the original working. */
    {
        int d;
        TFD("udp_dup", dup(a), d);
        T("udp_sendto_via_dup", sendto(d, "dup", 3, 0, (struct sockaddr *)&ca, sizeof ca));
        T("udp_recv_after_dup", recv(c, rb, sizeof rb, 0));
        T("udp_close_dup", close(d));
        T("udp_sendto_after_dup_close", sendto(a, "orig", 4, 0, (struct sockaddr *)&ca, sizeof ca));
        T("udp_recv_after_dup_close", recv(c, rb, sizeof rb, 0));
        int d2 = fcntl(a, F_DUPFD_CLOEXEC, 100);
        printf("udp_fcntl_dupfd_cloexec %s %d\n", d2 >= 100 ? "fd>=100" : "bad",
               fcntl(d2, F_GETFD));
        int d3;
        TFD("udp_dup2_over", dup2(c, d2), d3);
        printf("udp_dup2_returns_target %d\n", d3 == d2);
        T("udp_sendto_via_dup2", sendto(d2, "d2", 2, 0, (struct sockaddr *)&aa, sizeof aa));
        T("udp_recv_via_dup2_target", recv(a, rb, sizeof rb, 0));
        T("udp_dup3_same", dup3(d2, d2, 0));
        TFD("udp_dup2_same", dup2(d2, d2), d3);
        printf("udp_dup2_same_returns_fd %d\n", d3 == d2);
        close(d2);
    }

    /* Options. */
    {
        int v = 65536, got = 0;
        socklen_t gl = sizeof got;
        T("setsockopt_rcvbuf", setsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, sizeof v));
        T("getsockopt_rcvbuf", getsockopt(c, SOL_SOCKET, SO_RCVBUF, &got, &gl));
        printf("getsockopt_rcvbuf_value %d len=%d\n", got, (int)gl);
        gl = sizeof got;
        T("getsockopt_type", getsockopt(c, SOL_SOCKET, SO_TYPE, &got, &gl));
        printf("getsockopt_type_value %d\n", got);
        gl = sizeof got;
        T("getsockopt_bad_optname", getsockopt(c, SOL_SOCKET, 9999, &got, &gl));
        gl = sizeof got;
        T("getsockopt_bad_level", getsockopt(c, 9999, 1, &got, &gl));
        T("setsockopt_short_optlen", setsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, 0));
        TFORK("setsockopt_bad_ptr", setsockopt(c, SOL_SOCKET, SO_RCVBUF, bad_ptr, sizeof v));
        gl = sizeof got;
        TFORK("getsockopt_bad_ptr", getsockopt(c, SOL_SOCKET, SO_RCVBUF, bad_ptr, &gl));
        int fl = fcntl(c, F_GETFL);
        printf("fcntl_getfl_udp 0x%x\n", fl);
        T("fcntl_bad_cmd", fcntl(c, 9999));
        T("ioctl_bad_request", ioctl(c, 0x7fff1234, &v));
    }

    /* Errors of unconnected/unsuitable UDP sockets (c is connected to a: use a receiver r). */
    {
        struct sockaddr_in ra;
        int r = udp_bound(0, &ra);
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in x;
        socklen_t xl = sizeof x;
        T("udp_send_unconnected", send(u, "x", 1, 0));
        T("udp_write_unconnected", write(u, "x", 1));
        T("udp_getpeername_unconnected", getpeername(u, (struct sockaddr *)&x, &xl));
        {
            /* Linux fails with ENOTCONN but still marks the socket shut down. */
            int z = socket(AF_INET, SOCK_DGRAM, 0);
            T("udp_shutdown_unconnected", shutdown(z, SHUT_RDWR));
            T("udp_sendto_after_failed_shutdown",
              sendto(z, "x", 1, 0, (struct sockaddr *)&ra, sizeof ra));
            close(z);
        }
        {
            /* shutdown on a connected pair (through the bypass when accelerated): what was
             * queued before SHUT_RD is still delivered, then a blocking receive returns 0 at
             * once; after SHUT_WR a send fails with EPIPE. */
            struct sockaddr_in aa, ba;
            int a = udp_bound(0, &aa), b = udp_bound(0, &ba);
            connect(a, (struct sockaddr *)&ba, sizeof ba);
            connect(b, (struct sockaddr *)&aa, sizeof aa);
            T("udp_shut_send_before", send(b, "12", 2, 0));
            usleep(20000);
            T("udp_shut_rd", shutdown(a, SHUT_RD));
            char sb[8];
            T("udp_shut_rd_queued", recv(a, sb, sizeof sb, 0));
            T("udp_shut_rd_empty_dontwait", recv(a, sb, sizeof sb, MSG_DONTWAIT));
            T("udp_shut_rd_empty_blocking", recv(a, sb, sizeof sb, 0));
            struct pollfd pf = {.fd = a, .events = POLLIN | POLLRDHUP};
            errno = 0;
            long pr = poll(&pf, 1, 0);
            snprintf(extra, sizeof extra, "revents=0x%x", pf.revents);
            report("udp_shut_rd_poll", pr, errno, extra);
            T("udp_shut_wr", shutdown(b, SHUT_WR));
            T("udp_shut_wr_send", send(b, "3", 1, MSG_NOSIGNAL));
            T("udp_shut_wr_sendto", sendto(b, "3", 1, MSG_NOSIGNAL, (struct sockaddr *)&aa, sizeof aa));
            T("udp_shut_rd_peer_send", send(a, "4", 1, 0));
            usleep(20000);
            T("udp_shut_wr_recv", recv(b, sb, sizeof sb, MSG_DONTWAIT));
            close(a);
            close(b);
        }
        T("udp_listen", listen(u, 1));
        T("udp_accept", accept(u, NULL, NULL));
        T("udp_sendto_too_big", sendto(u, buf, 65508, 0, (struct sockaddr *)&ra, sizeof ra));
        T("udp_sendto_max", sendto(u, buf, 65507, 0, (struct sockaddr *)&ra, sizeof ra));
        T("udp_recv_max", recv(r, buf, sizeof buf, 0));
        /* Bad user pointers: the kernel says EFAULT (or EINVAL for a NULL address); an
         * interposer must not dereference them itself. */
        TFORK("udp_sendto_null_buf", sendto(u, NULL, 10, 0, (struct sockaddr *)&ra, sizeof ra));
        T("udp_sendto_bad_addrlen", sendto(u, "x", 1, 0, (struct sockaddr *)&ca, 3));
        TFORK("udp_sendto_bad_addr_ptr", sendto(u, "x", 1, 0, bad_ptr, sizeof ca));
        TFORK("udp_sendto_null_addr_len16", sendto(u, "x", 1, 0, NULL, sizeof ca));
        {
            struct msghdr m;
            struct iovec v = {"x", 1};
            memset(&m, 0, sizeof m);
            m.msg_iov = &v;
            m.msg_iovlen = 1;
            m.msg_name = bad_ptr;
            m.msg_namelen = sizeof ra;
            TFORK("udp_sendmsg_bad_name", sendmsg(u, &m, 0));
            TFORK("udp_sendmsg_bad_msghdr", sendmsg(u, bad_ptr, 0));
            struct mmsghdr mmh;
            memset(&mmh, 0, sizeof mmh);
            mmh.msg_hdr = m;
            TFORK("udp_sendmmsg_bad_name", sendmmsg(u, &mmh, 1, 0));
            TFORK("udp_sendmmsg_bad_vec", sendmmsg(u, bad_ptr, 1, 0));
            m.msg_name = &ra;
            m.msg_iov = bad_ptr;
            TFORK("udp_sendmsg_bad_iov", sendmsg(u, &m, 0));
        }
        {
            int w2 = socket(AF_INET, SOCK_DGRAM, 0);
            TFORK("udp_bind_bad_ptr", bind(w2, bad_ptr, sizeof ra));
            TFORK("udp_bind_null", bind(w2, NULL, sizeof ra));
            TFORK("udp_connect_bad_ptr", connect(w2, bad_ptr, sizeof ra));
            TFORK("udp_connect_null", connect(w2, NULL, sizeof ra));
            close(w2);
        }
        sendto(u, "fault", 5, 0, (struct sockaddr *)&ra, sizeof ra);
        TFORK("udp_recv_bad_buf", recv(r, bad_ptr, 5, 0));
        sendto(u, "fault", 5, 0, (struct sockaddr *)&ra, sizeof ra);
        TFORK("udp_recvfrom_bad_addr", recvfrom(r, buf, 5, 0, bad_ptr, &xl));
        sendto(u, "fault", 5, 0, (struct sockaddr *)&ra, sizeof ra);
        TFORK("udp_recvfrom_bad_addrlen", recvfrom(r, buf, 5, 0, (struct sockaddr *)&x, bad_ptr));
        TFORK("udp_recvmsg_bad_msghdr", recvmsg(r, bad_ptr, MSG_DONTWAIT));
        TFORK("udp_recvmmsg_bad_vec", recvmmsg(r, bad_ptr, 1, MSG_DONTWAIT, NULL));
        drain(r);
        xl = sizeof x;
        TFORK("udp_getsockname_bad_ptr", getsockname(u, bad_ptr, &xl));
        TFORK("udp_getsockname_bad_len", getsockname(u, (struct sockaddr *)&x, bad_ptr));
        TFORK("udp_getpeername_bad_ptr", getpeername(u, bad_ptr, &xl));
        int w = socket(AF_INET, SOCK_DGRAM, 0); /* u got a port by sending: bind a fresh one */
        struct sockaddr_in inuse = ra;
        T("udp_bind_in_use", bind(w, (struct sockaddr *)&inuse, sizeof inuse));
        struct sockaddr_in far = loopback(0);
        far.sin_addr.s_addr = inet_addr("10.255.255.1");
        T("udp_bind_not_local", bind(w, (struct sockaddr *)&far, sizeof far));
        T("udp_bind_bad_len", bind(w, (struct sockaddr *)&far, 3));
        struct sockaddr_in6 six;
        memset(&six, 0, sizeof six);
        six.sin6_family = AF_INET6;
        T("udp_bind_wrong_family", bind(w, (struct sockaddr *)&six, sizeof six));
        struct sockaddr_in any = loopback(0);
        T("udp_bind_ok", bind(w, (struct sockaddr *)&any, sizeof any));
        T("udp_bind_twice", bind(w, (struct sockaddr *)&any, sizeof any));
        close(w);
        close(u);
        close(r);
    }
    close(a);
    close(c);
}

static void tcp_cases(void) {
    struct sockaddr_in la;
    int l = tcp_listener(0, &la);
    char rb[256];
    {
        int z = socket(AF_INET, SOCK_STREAM, 0);
        T("tcp_recv_unconnected", recv(z, rb, sizeof rb, MSG_DONTWAIT));
        T("tcp_send_unconnected", send(z, "x", 1, MSG_NOSIGNAL));
        /* Fails with ENOTCONN but marks the socket shut down. */
        T("tcp_shutdown_unconnected", shutdown(z, SHUT_RDWR));
        T("tcp_connect_after_failed_shutdown", connect(z, (struct sockaddr *)&la, sizeof la));
        T("tcp_send_after_failed_shutdown", send(z, "x", 1, MSG_NOSIGNAL));
        close(z);
        int y = -1;
        TFD("tcp_accept_shutdown_peer", accept(l, NULL, NULL), y);
        if (y >= 0) close(y);
    }
    int c = socket(AF_INET, SOCK_STREAM, 0), s;
    T("tcp_connect_ok", connect(c, (struct sockaddr *)&la, sizeof la));
    T("tcp_connect_again", connect(c, (struct sockaddr *)&la, sizeof la));
    TFD("tcp_accept", accept(l, NULL, NULL), s);
    T("tcp_send", send(c, "hello", 5, 0));
    T("tcp_recv", recv(s, rb, sizeof rb, 0));
    T("tcp_write", write(s, "world!", 6));
    T("tcp_read", read(c, rb, sizeof rb));
    T("tcp_shutdown_wr", shutdown(c, SHUT_WR));
    T("tcp_recv_eof", recv(s, rb, sizeof rb, 0));
    close(s);
    close(c);
    T("tcp_listen_again", listen(l, 16));
    int d = socket(AF_INET, SOCK_STREAM, 0);
    T("tcp_bind_in_use", bind(d, (struct sockaddr *)&la, sizeof la));
    struct sockaddr_in dead = loopback(dead_port(SOCK_STREAM));
    T("tcp_connect_refused", connect(d, (struct sockaddr *)&dead, sizeof dead));
    close(d);
    int n = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    errno = 0;
    long r = connect(n, (struct sockaddr *)&la, sizeof la);
    /* Loopback may complete immediately or report EINPROGRESS: normalise. */
    printf("tcp_nb_connect %s\n", r == 0 || errno == EINPROGRESS ? "ok" : ename(errno));
    struct pollfd pf = {.fd = n, .events = POLLOUT};
    poll(&pf, 1, 5000);
    int so = -1;
    socklen_t sol = sizeof so;
    T("tcp_nb_connect_so_error", getsockopt(n, SOL_SOCKET, SO_ERROR, &so, &sol));
    printf("tcp_nb_connect_so_error_value %d\n", so);
    close(n);
    T("tcp_accept4_bad_flags", accept4(l, NULL, NULL, 0x7fff0000));
    close(l);
}

static void socket_cases(void) {
    int s;
    TFD("socket_udp", socket(AF_INET, SOCK_DGRAM, 0), s);
    close(s);
    TFD("socket_udp_flags", socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), s);
    printf("socket_udp_flags_check nonblock=%d cloexec=%d\n",
           (fcntl(s, F_GETFL) & O_NONBLOCK) != 0, fcntl(s, F_GETFD) & FD_CLOEXEC);
    close(s);
    TFD("socket_tcp", socket(AF_INET, SOCK_STREAM, IPPROTO_TCP), s);
    close(s);
    TFD("socket_udp6", socket(AF_INET6, SOCK_DGRAM, 0), s);
    close(s);
    TFD("socket_unix_dgram", socket(AF_UNIX, SOCK_DGRAM, 0), s);
    close(s);
    TFD("socket_bad_domain", socket(12345, SOCK_DGRAM, 0), s);
    TFD("socket_bad_type", socket(AF_INET, 12345, 0), s);
    TFD("socket_bad_protocol", socket(AF_INET, SOCK_DGRAM, IPPROTO_TCP), s);
    TFD("socket_bad_flags", socket(AF_INET, SOCK_DGRAM | 0x40000000, 0), s);

    int sp[2];
    char rb[16];
    T("socketpair_unix_stream", socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
    T("socketpair_write", write(sp[0], "hello", 5));
    T("socketpair_read", read(sp[1], rb, sizeof rb));
    T("socketpair_send", send(sp[1], "abc", 3, 0));
    T("socketpair_recv", recv(sp[0], rb, sizeof rb, 0));
    close(sp[0]);
    close(sp[1]);
    T("socketpair_inet", socketpair(AF_INET, SOCK_DGRAM, 0, sp));

    /* syscall(): the raw entry points. */
    long fd = syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0);
    printf("syscall_socket %s\n", fd >= 0 ? "fd" : ename(errno));
    struct sockaddr_in a = loopback(0);
    T("syscall_bind", syscall(SYS_bind, fd, &a, sizeof a));
    T("syscall_sendto_self_unconnected",
      syscall(SYS_sendto, fd, "x", 1, 0, NULL, 0));
    T("syscall_close", syscall(SYS_close, fd));
    T("syscall_close_again", syscall(SYS_close, fd));
    T("syscall_close_neg", syscall(SYS_close, -1));
    T("syscall_socket_bad_domain", syscall(SYS_socket, 12345, SOCK_DGRAM, 0));
    T("syscall_getpid_positive", syscall(SYS_getpid) > 0);
}

static void errno_kept_cases(void) {
    struct sockaddr_in a = loopback(0), got;
    socklen_t gl = sizeof got;
    int s, c, one = 1, ep, n;
    char rb[64];
    TKEEP("keep_socket", s = socket(AF_INET, SOCK_DGRAM, 0));
    TKEEP("keep_setsockopt", setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    TKEEP("keep_bind", bind(s, (struct sockaddr *)&a, sizeof a));
    TKEEP("keep_getsockname", getsockname(s, (struct sockaddr *)&got, &gl));
    TKEEP("keep_socket2", c = socket(AF_INET, SOCK_DGRAM, 0));
    TKEEP("keep_connect", connect(c, (struct sockaddr *)&got, sizeof got));
    TKEEP("keep_send", send(c, "abc", 3, 0));
    TKEEP("keep_sendto", sendto(c, "abc", 3, 0, (struct sockaddr *)&got, sizeof got));
    TKEEP("keep_write", write(c, "abc", 3));
    TKEEP("keep_ioctl", ioctl(s, FIONREAD, &n));
    TKEEP("keep_fcntl", fcntl(s, F_GETFL));
    {
        struct pollfd pf = {.fd = s, .events = POLLIN};
        TKEEP("keep_poll", poll(&pf, 1, 0));
    }
    TKEEP("keep_ep_create", ep = epoll_create1(0));
    struct epoll_event ev = {.events = EPOLLIN}, evs[2];
    TKEEP("keep_epoll_ctl", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
    TKEEP("keep_epoll_wait", epoll_wait(ep, evs, 2, 0));
    TKEEP("keep_recv", recv(s, rb, sizeof rb, 0));
    TKEEP("keep_recvfrom", recvfrom(s, rb, sizeof rb, 0, NULL, NULL));
    TKEEP("keep_read", read(s, rb, sizeof rb));
    int d;
    TKEEP("keep_dup", d = dup(s));
    TKEEP("keep_close_dup", close(d));
    TKEEP("keep_close_ep", close(ep));
    TKEEP("keep_close", close(s));
    TKEEP("keep_close2", close(c));
    int l;
    TKEEP("keep_tcp_socket", l = socket(AF_INET, SOCK_STREAM, 0));
    TKEEP("keep_tcp_bind", bind(l, (struct sockaddr *)&a, sizeof a));
    TKEEP("keep_tcp_listen", listen(l, 1));
    TKEEP("keep_tcp_close", close(l));
}

static void epoll_cases(void) {
    struct sockaddr_in ua;
    int u = udp_bound(SOCK_NONBLOCK, &ua);
    int ep;
    TFD("epoll_create1", epoll_create1(EPOLL_CLOEXEC), ep);
    int bad;
    TFD("epoll_create_zero", epoll_create(0), bad);
    if (bad >= 0) close(bad);
    TFD("epoll_create1_bad_flags", epoll_create1(12345), bad);
    if (bad >= 0) close(bad);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x1122334455667788ULL}, evs[4];
    T("epoll_ctl_add", epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev));
    T("epoll_ctl_add_again", epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev));
    int other = socket(AF_INET, SOCK_DGRAM, 0);
    T("epoll_ctl_mod_not_added", epoll_ctl(ep, EPOLL_CTL_MOD, other, &ev));
    T("epoll_ctl_del_not_added", epoll_ctl(ep, EPOLL_CTL_DEL, other, NULL));
    T("epoll_ctl_add_self", epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev));
    T("epoll_ctl_bad_op", epoll_ctl(ep, 99, u, &ev));
    int reg = open("/proc/self/exe", O_RDONLY);
    T("epoll_ctl_add_regular_file", epoll_ctl(ep, EPOLL_CTL_ADD, reg, &ev));
    close(reg);
    T("epoll_wait_maxevents_0", epoll_wait(ep, evs, 0, 0));
    T("epoll_wait_empty", epoll_wait(ep, evs, 4, 0));
    sendto(other, "ev", 2, 0, (struct sockaddr *)&ua, sizeof ua);
    TFORK("epoll_wait_bad_events", epoll_wait(ep, bad_ptr, 4, 2000));
    TFORK("epoll_ctl_bad_event", epoll_ctl(ep, EPOLL_CTL_MOD, u, bad_ptr));
    TFORK("poll_bad_fds", poll(bad_ptr, 1, 0));
    TFORK("select_bad_set", select(u + 1, bad_ptr, NULL, NULL, NULL));
    TFORK("ioctl_fionread_bad_ptr", ioctl(u, FIONREAD, bad_ptr));
    memset(evs, 0, sizeof evs);
    T("epoll_wait_ready", epoll_wait(ep, evs, 4, 2000));
    printf("epoll_wait_event events=0x%x data_ok=%d\n", evs[0].events,
           evs[0].data.u64 == 0x1122334455667788ULL);
    ev.events = EPOLLIN | EPOLLET;
    T("epoll_ctl_mod_et", epoll_ctl(ep, EPOLL_CTL_MOD, u, &ev));
    T("epoll_wait_et_first", epoll_wait(ep, evs, 4, 0));
    T("epoll_wait_et_second", epoll_wait(ep, evs, 4, 0));
    drain(u);
    ev.events = EPOLLOUT;
    T("epoll_ctl_mod_out", epoll_ctl(ep, EPOLL_CTL_MOD, u, &ev));
    T("epoll_wait_out", epoll_wait(ep, evs, 4, 0));
    T("epoll_ctl_del", epoll_ctl(ep, EPOLL_CTL_DEL, u, NULL));
    T("epoll_wait_after_del", epoll_wait(ep, evs, 4, 0));
    /* A socket closed while registered disappears from the set. */
    int d = udp_bound(0, &ua);
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev);
    sendto(other, "ev", 2, 0, (struct sockaddr *)&ua, sizeof ua);
    close(d);
    T("epoll_wait_after_close", epoll_wait(ep, evs, 4, 100));

    /* poll and select on an idle and a ready socket. */
    struct pollfd pf = {.fd = u, .events = POLLIN};
    T("poll_idle", poll(&pf, 1, 0));
    struct pollfd neg[2] = {{.fd = -1, .events = POLLIN}, {.fd = u, .events = POLLOUT}};
    T("poll_negative_fd_ignored", poll(neg, 2, 0));
    printf("poll_negative_fd_revents 0x%x 0x%x\n", neg[0].revents, neg[1].revents);
    fd_set r;
    FD_ZERO(&r);
    FD_SET(u, &r);
    struct timeval tv = {0, 0};
    T("select_idle", select(u + 1, &r, NULL, NULL, &tv));
    T("select_nfds_negative", select(-1, NULL, NULL, NULL, &tv));
    tv.tv_usec = -1;
    T("select_bad_timeout", select(u + 1, &r, NULL, NULL, &tv));
    close(other);
    close(u);
    close(ep);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    ebadf_cases();
    enotsock_cases();
    eagain_cases();
    eintr_cases();
    udp_success_cases();
    tcp_cases();
    socket_cases();
    epoll_cases();
    errno_kept_cases();
    printf("done\n");
    return 0;
}
