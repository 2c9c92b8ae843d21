/*
 * shm_pingpong: the floor for same-host ping-pong latency, in two forms.
 *
 * word (default): two processes (fork), one sequence word each way in a MAP_SHARED anonymous
 * mapping, each word alone on its own 128-byte block (a cache line plus the one the
 * adjacent-line prefetcher pairs with it). The parent ("client") writes ping = i and spins
 * until the child ("server") echoes pong = i. The least any shared-memory exchange can cost:
 * one cache line each way, nothing carried.
 *
 * ring: a plain single-producer single-consumer ring each way, carrying 64-byte messages, as
 * a textbook shared-memory ring does it: 256 slots of 128 bytes (a length, then the payload),
 * the producer's tail and the consumer's head each on a 128-byte block of its own; the
 * producer copies the message into the slot and then publishes it by storing tail + 1
 * (release); the consumer polls tail (acquire), copies the message out and stores head + 1.
 * The server copies each message it receives back into the other ring. No multi-producer
 * lock, no addresses, no crash safety, no sockets: what moving a 64 B datagram through shared
 * memory costs at the least with the usual head/tail protocol.
 *
 * Both spin; no system call on the fast path.
 * Per round trip: clock_gettime(CLOCK_MONOTONIC) before and after; half-RTT = RTT / 2.
 *
 * usage: shm_pingpong [ROUND_TRIPS=1000000] [CLIENT_CPU=1] [SERVER_CPU=0] [word|ring]
 * output (µs): one line "half-RTT usec: avg=.. p50=.. p99=.. p99.9=.. min=.. max=.. n=.."
 *
 * Build: cc -O2 -o shm_pingpong shm_pingpong.c
 */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 128

struct shared {
    _Alignas(BLOCK) volatile uint64_t ping; /* written by the client */
    _Alignas(BLOCK) volatile uint64_t pong; /* written by the server */
    _Alignas(BLOCK) volatile uint64_t stop;
};

#define SLOTS 256
#define MSG 64

struct slot {
    _Alignas(BLOCK) uint32_t len;
    unsigned char payload[MSG];
};

struct ring {
    _Alignas(BLOCK) volatile uint64_t tail; /* written by the producer */
    _Alignas(BLOCK) volatile uint64_t head; /* written by the consumer */
    struct slot slots[SLOTS];
};

struct rings {
    struct ring to_server, to_client;
    _Alignas(BLOCK) volatile uint64_t stop;
};

/* Producer side; this test never fills a ring (one message in flight), so no full check. */
static inline void ring_push(struct ring *r, uint64_t *tail, const unsigned char *msg)
{
    struct slot *s = &r->slots[*tail % SLOTS];
    s->len = MSG;
    memcpy(s->payload, msg, MSG);
    __atomic_store_n(&r->tail, ++*tail, __ATOMIC_RELEASE);
}

/* Consumer side: 1 when a message was taken into msg, 0 when the ring was empty. */
static inline int ring_pop(struct ring *r, uint64_t *head, unsigned char *msg)
{
    if (__atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) == *head)
        return 0;
    struct slot *s = &r->slots[*head % SLOTS];
    memcpy(msg, s->payload, s->len < MSG ? s->len : MSG);
    __atomic_store_n(&r->head, ++*head, __ATOMIC_RELEASE);
    return 1;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        exit(2);
    }
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t pct(const uint64_t *v, size_t n, double p)
{
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

/* A zeroed MAP_SHARED anonymous mapping the forked child shares; exits 2 on failure. */
static void *map_shared(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    memset(p, 0, size);
    return p;
}

static pid_t fork_or_exit(void)
{
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        exit(2);
    }
    return child;
}

static void report(uint64_t *half, long n)
{
    double sum = 0;
    for (long i = 0; i < n; i++)
        sum += (double)half[i];
    qsort(half, (size_t)n, sizeof *half, cmp_u64);
    /* RTT ns -> half-RTT µs: / 2000 */
    printf("half-RTT usec: avg=%.3f p50=%.3f p99=%.3f p99.9=%.3f min=%.3f max=%.3f n=%ld\n",
           sum / (double)n / 2000.0, pct(half, n, 50) / 2000.0, pct(half, n, 99) / 2000.0,
           pct(half, n, 99.9) / 2000.0, half[0] / 2000.0, half[n - 1] / 2000.0, n);
}

/* Room for n round-trip samples; on failure kills the server child and exits 2. */
static uint64_t *samples_or_exit(long n, pid_t child)
{
    uint64_t *half = malloc((size_t)n * sizeof *half);
    if (!half) {
        perror("malloc");
        kill(child, SIGKILL);
        exit(2);
    }
    return half;
}

/* Stops the server child, waits for it and prints the samples. */
static int finish(volatile uint64_t *stop, pid_t child, uint64_t *half, long n)
{
    __atomic_store_n(stop, 1, __ATOMIC_RELAXED);
    waitpid(child, NULL, 0);
    report(half, n);
    free(half);
    return 0;
}

static int ring_main(long n, long warmup, int client_cpu, int server_cpu)
{
    struct rings *sh = map_shared(sizeof *sh);
    pid_t child = fork_or_exit();
    if (child == 0) { /* server: echo each message back */
        pin(server_cpu);
        uint64_t head = 0, tail = 0;
        unsigned char msg[MSG];
        for (;;) {
            while (!ring_pop(&sh->to_server, &head, msg)) {
                if (__atomic_load_n(&sh->stop, __ATOMIC_RELAXED))
                    _exit(0);
                relax();
            }
            ring_push(&sh->to_client, &tail, msg);
        }
    }
    pin(client_cpu);
    uint64_t *half = samples_or_exit(n, child);
    uint64_t head = 0, tail = 0;
    unsigned char msg[MSG], back[MSG];
    memset(msg, 0x5a, sizeof msg);
    for (long i = 0; i < warmup + n; i++) {
        memcpy(msg, &i, sizeof i);
        uint64_t t0 = now_ns();
        ring_push(&sh->to_server, &tail, msg);
        while (!ring_pop(&sh->to_client, &head, back))
            relax();
        uint64_t t1 = now_ns();
        if (memcmp(back, msg, MSG) != 0) {
            fprintf(stderr, "ring: message %ld came back changed\n", i);
            kill(child, SIGKILL);
            return 1;
        }
        if (i >= warmup)
            half[i - warmup] = t1 - t0; /* RTT in ns; halved when printed */
    }
    return finish(&sh->stop, child, half, n);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int client_cpu = argc > 2 ? atoi(argv[2]) : 1;
    int server_cpu = argc > 3 ? atoi(argv[3]) : 0;
    long warmup = n / 10 < 10000 ? n / 10 : 10000;
    int ring = argc > 4 && strcmp(argv[4], "ring") == 0;
    if (n < 1 || (argc > 4 && !ring && strcmp(argv[4], "word") != 0)) {
        fprintf(stderr, "usage: %s [ROUND_TRIPS] [CLIENT_CPU] [SERVER_CPU] [word|ring]\n", argv[0]);
        return 2;
    }
    if (ring)
        return ring_main(n, warmup, client_cpu, server_cpu);

    struct shared *sh = map_shared(sizeof *sh);
    pid_t child = fork_or_exit();
    if (child == 0) { /* server: echo ping into pong */
        pin(server_cpu);
        uint64_t last = 0;
        for (;;) {
            uint64_t v;
            while ((v = __atomic_load_n(&sh->ping, __ATOMIC_ACQUIRE)) == last) {
                if (__atomic_load_n(&sh->stop, __ATOMIC_RELAXED))
                    _exit(0);
                relax();
            }
            last = v;
            __atomic_store_n(&sh->pong, v, __ATOMIC_RELEASE);
        }
    }

    pin(client_cpu);
    uint64_t *half = samples_or_exit(n, child);
    uint64_t seq = 0;
    for (long i = 0; i < warmup + n; i++) {
        uint64_t t0 = now_ns();
        __atomic_store_n(&sh->ping, ++seq, __ATOMIC_RELEASE);
        while (__atomic_load_n(&sh->pong, __ATOMIC_ACQUIRE) != seq)
            relax();
        uint64_t t1 = now_ns();
        if (i >= warmup)
            half[i - warmup] = t1 - t0; /* RTT in ns; halved when printed */
    }
    return finish(&sh->stop, child, half, n);
}
