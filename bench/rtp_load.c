/* RTP load generator and sink for bench/bench_media.py (built by it with cc -O2).
 *
 *   rtp_load CALLS SECONDS WARM SYMS_CALLER SYMS_CALLEE PT_CALLER PT_CALLEE
 *
 * Binds 2*CALLS UDP sockets on 127.0.0.1 (socket 2i = caller of call i, 2i+1 =
 * callee), prints their ports on one line, reads as many destination ports from
 * stdin, then sends one 172-byte RTP packet every 20 ms from each socket (calls
 * spread evenly over the period) for WARM+SECONDS seconds.  Each payload starts with
 * a packet counter written in 4 symbols (hex digit -> byte; 16 bytes given as 32 hex
 * characters) that survive G.711 transcoding, so the sink knows when it was sent.
 * Prints "start" and "end" around the measured window, then one line:
 *   sent received transit_p50 transit_p99 jitter_p50 jitter_p99   (ms)
 * where jitter is |transit(j) - transit(j-1)| per stream (RFC 3550 D(i,j)).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING 4096
#define SLOTS 20

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double q) {
    if (n == 0) return -1;
    long i = (long)(q * n);
    if (i >= n) i = n - 1;
    return v[i] * 1000;
}

static void parse_syms(const char *hex, unsigned char *sym, int *dec) {
    for (int i = 0; i < 256; i++) dec[i] = -1;
    for (int i = 0; i < 16; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        sym[i] = (unsigned char)v;
        dec[v] = i;
    }
}

int main(int argc, char **argv) {
    if (argc != 8) { fprintf(stderr, "usage: see source\n"); return 2; }
    int calls = atoi(argv[1]), n = 2 * calls;
    double seconds = atof(argv[2]), warm = atof(argv[3]);
    unsigned char sym[2][16];
    int dec[2][256];
    parse_syms(argv[4], sym[0], dec[0]);
    parse_syms(argv[5], sym[1], dec[1]);
    int pt[2] = {atoi(argv[6]), atoi(argv[7])};
    int *fd = calloc(n, sizeof(int));
    struct sockaddr_in *dst = calloc(n, sizeof(struct sockaddr_in));
    double *sent_at = calloc((size_t)n * RING, sizeof(double));
    double *last_tr = calloc(n, sizeof(double));
    unsigned *counter = calloc(n, sizeof(unsigned));
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int rcv = 1 << 18;
        setsockopt(fd[i], SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(fd[i], (struct sockaddr *)&a, sizeof a)) { perror("bind"); return 1; }
        socklen_t len = sizeof a;
        getsockname(fd[i], (struct sockaddr *)&a, &len);
        printf("%d ", ntohs(a.sin_port));
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
        last_tr[i] = -1;
    }
    printf("\n");
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        int port;
        if (scanf("%d", &port) != 1) { fprintf(stderr, "missing destination port\n"); return 1; }
        dst[i] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(port),
                                      .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    }
    long cap = (long)(n * 50 * (seconds + 1)) + 1000;
    double *transit = malloc(cap * sizeof(double)), *jitter = malloc(cap * sizeof(double));
    long ntr = 0, nji = 0, sent = 0, received = 0;
    unsigned char pkt[172];
    memset(pkt, 0, sizeof pkt);
    double t0 = now(), from = t0 + warm, end = from + seconds;
    int started = 0;
    unsigned long tick = 0;
    struct epoll_event evs[256];
    unsigned char buf[2048];
    for (;;) {
        double due = t0 + tick * (0.020 / SLOTS), t = now();
        if (t >= due) {
            if (due >= end) break;
            if (!started && t >= from) { printf("start\n"); fflush(stdout); started = 1; }
            for (int i = 0; i < n; i++) {
                if ((i / 2) % SLOTS != (int)(tick % SLOTS)) continue;
                int side = i & 1;
                unsigned k = counter[i]++;
                pkt[0] = 0x80; pkt[1] = (unsigned char)pt[side];
                pkt[2] = (unsigned char)(k >> 8); pkt[3] = (unsigned char)k;
                unsigned ts = k * 160;
                pkt[4] = ts >> 24; pkt[5] = ts >> 16; pkt[6] = ts >> 8; pkt[7] = ts;
                pkt[8] = 0; pkt[9] = 1; pkt[10] = (unsigned char)(i >> 8); pkt[11] = (unsigned char)i;
                pkt[12] = sym[side][(k >> 12) & 15]; pkt[13] = sym[side][(k >> 8) & 15];
                pkt[14] = sym[side][(k >> 4) & 15]; pkt[15] = sym[side][k & 15];
                memset(pkt + 16, sym[side][0], sizeof pkt - 16);
                double s = now();
                sent_at[(size_t)i * RING + k % RING] = s;
                sendto(fd[i], pkt, sizeof pkt, 0, (struct sockaddr *)&dst[i], sizeof dst[i]);
                if (s >= from) sent++;
            }
            tick++;
            continue;
        }
        int timeout_ms = (int)((due - t) * 1000);
        int m = epoll_wait(ep, evs, 256, timeout_ms);
        for (int e = 0; e < m; e++) {
            int i = (int)evs[e].data.u32, side = i & 1, src = i ^ 1;
            for (;;) {
                ssize_t r = recv(fd[i], buf, sizeof buf, 0);
                if (r < 0) break;
                double rt = now();
                if (r < 16) continue;
                /* written with the other side's symbols, translated on the way
                   into this side's law: this side's symbols again */
                int d0 = dec[side][buf[12]], d1 = dec[side][buf[13]];
                int d2 = dec[side][buf[14]], d3 = dec[side][buf[15]];
                if (d0 < 0 || d1 < 0 || d2 < 0 || d3 < 0) continue;
                unsigned k = (unsigned)(d0 << 12 | d1 << 8 | d2 << 4 | d3);
                double st = sent_at[(size_t)src * RING + k % RING];
                if (st < from || rt > end + 0.5) continue;
                received++;
                double tr = rt - st;
                if (ntr < cap) transit[ntr++] = tr;
                if (last_tr[i] >= 0 && nji < cap) {
                    double dj = tr - last_tr[i];
                    jitter[nji++] = dj < 0 ? -dj : dj;
                }
                last_tr[i] = tr;
            }
        }
    }
    printf("end\n");
    fflush(stdout);
    /* drain packets still in flight for 200 ms */
    double drain = now() + 0.2;
    while (now() < drain) {
        int m = epoll_wait(ep, evs, 256, 20);
        for (int e = 0; e < m; e++) {
            int i = (int)evs[e].data.u32, side = i & 1, src = i ^ 1;
            for (;;) {
                ssize_t r = recv(fd[i], buf, sizeof buf, 0);
                if (r < 16) { if (r < 0) break; continue; }
                int d0 = dec[side][buf[12]], d1 = dec[side][buf[13]];
                int d2 = dec[side][buf[14]], d3 = dec[side][buf[15]];
                if (d0 < 0 || d1 < 0 || d2 < 0 || d3 < 0) continue;
                unsigned k = (unsigned)(d0 << 12 | d1 << 8 | d2 << 4 | d3);
                if (sent_at[(size_t)src * RING + k % RING] >= from) received++;
            }
        }
    }
    qsort(transit, ntr, sizeof(double), cmp);
    qsort(jitter, nji, sizeof(double), cmp);
    printf("%ld %ld %.4f %.4f %.4f %.4f\n", sent, received, pct(transit, ntr, 0.5),
           pct(transit, ntr, 0.99), pct(jitter, nji, 0.5), pct(jitter, nji, 0.99));
    return 0;
}
