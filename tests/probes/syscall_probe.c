/*
 * syscall_probe: creates and binds UDP sockets through syscall(2) (SYS_socket, SYS_bind) and,
 * as a control, through the libc wrappers, then exchanges one datagram between them.
 * Usage: syscall_probe <port-for-syscall-socket> <port-for-libc-socket>
 * Prints one line per step; under LD_PRELOAD=libaccel.so at debug level the library must log a
 * decision for both sockets (so syscall() is seen, not only the libc wrappers).
 *
 * Build: cc -O1 -Wall -o syscall_probe syscall_probe.c -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void check(const char *what, long r) {
    if (r < 0) {
        printf("%s failed: %s\n", what, strerror(errno));
        exit(1);
    }
    printf("%s ok\n", what);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SYSCALL_PORT LIBC_PORT\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sockaddr_in sa = loopback(atoi(argv[1])), la = loopback(atoi(argv[2]));

    long s = syscall(SYS_socket, AF_INET, SOCK_DGRAM, 0);
    check("syscall_socket", s);
    check("syscall_bind", syscall(SYS_bind, s, &sa, sizeof sa));

    int l = socket(AF_INET, SOCK_DGRAM, 0);
    check("libc_socket", l);
    check("libc_bind", bind(l, (struct sockaddr *)&la, sizeof la));

    check("syscall_sendto", syscall(SYS_sendto, s, "ping", 4, 0, &la, sizeof la));
    char buf[16];
    long n = recv(l, buf, sizeof buf, 0);
    check("libc_recv", n);
    printf("received %.*s\n", (int)n, buf);
    check("libc_sendto", sendto(l, "pong", 4, 0, (struct sockaddr *)&sa, sizeof sa));
    n = syscall(SYS_recvfrom, s, buf, sizeof buf, 0, NULL, NULL);
    check("syscall_recvfrom", n);
    printf("received %.*s\n", (int)n, buf);
    check("syscall_close", syscall(SYS_close, s));
    check("libc_close", close(l));
    return 0;
}
