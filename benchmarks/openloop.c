/*
 * openloop: open-loop HTTP/1.1 keep-alive load at a fixed rate, for latency at a given
 * throughput (the wrk2 method; Debian has wrk but not wrk2).
 *
 *   gcc -O2 -o var/openloop benchmarks/openloop.c -lm      (benchmarks/api_reads.py does this)
 *   var/openloop --url http://127.0.0.1:8000 --rate 1000 --seconds 10 --connections 32 \
 *       --users 10000 --key dk_... --path '/v1/users/{user}/offers'
 *
 * Request i is *scheduled* at start + i / rate, whatever happened before it; its latency is
 * measured from that scheduled time to the last byte of its answer. A request that is due
 * while every connection is busy waits (in order) for the next free one, and that wait is
 * part of its latency: a server that stalls cannot hide the queue behind it (no
 * coordinated omission). One thread, epoll, one request in flight per connection (no
 * pipelining), the schedule kept by a timerfd armed at the next request's scheduled time
 * (nanosecond resolution, timer slack set to 1 µs).
 *
 * {user} in the path becomes u-<n>, n uniform in 1..users (a fixed seed), like the wrk
 * script and api_load.py of the benchmark. Prints one JSON line: sent, ok, errors (every
 * request not answered 200: non_200 + conn_errors + timeouts), achieved rate (ok per
 * second from the first scheduled time to the last answer), p50/p90/p99/p99.9/max in ms
 * (of the ok requests, nearest rank), and the client's own lateness: how late after a
 * request's scheduled time this process woke up to queue it (client_lag_*), which is
 * the part of a latency tail that is this process not being scheduled by the OS, not the
 * server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int busy;             /* a request is in flight */
    int64_t scheduled;    /* its scheduled time (ns, CLOCK_MONOTONIC) */
    char out[2048];
    size_t out_len, out_off;
    char *in;
    size_t in_len, in_cap;
} conn_t;

static struct sockaddr_storage addr;
static socklen_t addr_len;
static int ep;
static char host[256] = "127.0.0.1";
static int port = 80;
static const char *path_tpl = "/v1/users/{user}/offers";
static const char *key = "";
static long users = 10000;
static uint64_t rng_state = 7;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t next_rand(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void conn_open(conn_t *c) {
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, addr_len) < 0 && errno != EINPROGRESS)
        die("connect");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    c->busy = 0;
    c->in_len = 0;
    c->out_len = c->out_off = 0;
}

static void conn_close(conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void want_out(conn_t *c, int on) {
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* 1: all written; 0: more to write (EPOLLOUT armed); -1: connection error */
static int flush_out(conn_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                want_out(c, 1);
                return 0;
            }
            if (errno == EINTR) continue;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    want_out(c, 0);
    return 1;
}

static int send_request(conn_t *c, int64_t scheduled) {
    char path[1024];
    const char *mark = strstr(path_tpl, "{user}");
    long user = (long)(next_rand() % (uint64_t)users) + 1;
    if (mark)
        snprintf(path, sizeof path, "%.*su-%ld%s", (int)(mark - path_tpl), path_tpl, user,
                 mark + 6);
    else
        snprintf(path, sizeof path, "%s", path_tpl);
    int n = snprintf(c->out, sizeof c->out,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n\r\n",
                     path, host, port, key);
    if (n <= 0 || (size_t)n >= sizeof c->out) {
        fprintf(stderr, "request too long\n");
        exit(2);
    }
    c->out_len = (size_t)n;
    c->out_off = 0;
    c->busy = 1;
    c->scheduled = scheduled;
    return flush_out(c);
}

/* Parse one complete response at the start of c->in. Returns its length in bytes (and
 * sets *status, *close_after), 0 if incomplete, -1 if malformed. */
static long parse_response(conn_t *c, int *status, int *close_after) {
    char *buf = c->in;
    size_t len = c->in_len;
    char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return len > 65536 ? -1 : 0;
    size_t head = (size_t)(end - buf) + 4;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(buf + 9);
    *close_after = memcmp(buf, "HTTP/1.0", 8) == 0;
    long content_length = -1;
    int chunked = 0;
    for (char *line = memchr(buf, '\n', head) + 1; line < end;) {
        char *eol = memchr(line, '\n', (size_t)(end + 2 - line));
        if (!eol) break;
        if (strncasecmp(line, "content-length:", 15) == 0)
            content_length = strtol(line + 15, NULL, 10);
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0 &&
                 memmem(line, (size_t)(eol - line), "chunked", 7))
            chunked = 1;
        else if (strncasecmp(line, "connection:", 11) == 0) {
            if (memmem(line, (size_t)(eol - line), "close", 5)) *close_after = 1;
            if (memmem(line, (size_t)(eol - line), "keep-alive", 10)) *close_after = 0;
        }
        line = eol + 1;
    }
    int no_body = (*status >= 100 && *status < 200) || *status == 204 || *status == 304;
    if (no_body) return (long)head;
    if (chunked) {
        size_t pos = head;
        for (;;) {
            char *crlf = memmem(buf + pos, len - pos, "\r\n", 2);
            if (!crlf) return 0;
            long size = strtol(buf + pos, NULL, 16);
            pos = (size_t)(crlf - buf) + 2;
            if (size == 0) { /* trailers end with an empty line */
                char *fin = memmem(buf + pos - 2, len - pos + 2, "\r\n\r\n", 4);
                return fin ? (long)(fin - buf) + 4 : 0;
            }
            if (len < pos + (size_t)size + 2) return 0;
            pos += (size_t)size + 2;
        }
    }
    if (content_length < 0) return -1; /* close-delimited bodies are not supported */
    return len >= head + (size_t)content_length ? (long)(head + (size_t)content_length) : 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(const int64_t *sorted, long n, double pct) {
    if (n == 0) return NAN;
    long idx = (long)ceil(pct / 100.0 * (double)n) - 1;
    if (idx < 0) idx = 0;
    if (idx > n - 1) idx = n - 1;
    return (double)sorted[idx] / 1e6;
}

/* a JSON number, or null when there is none (no ok request) */
static const char *num(char *buf, size_t size, double value, int decimals) {
    if (isnan(value)) return "null";
    snprintf(buf, size, "%.*f", decimals, value);
    return buf;
}

static void usage(void) {
    fprintf(stderr, "usage: openloop --url http://HOST:PORT [--rate R] [--seconds S] "
                    "[--connections N] [--users U] [--key K] [--path P] [--drain S]\n");
    exit(2);
}

int main(int argc, char **argv) {
    double rate = 1000, seconds = 10, drain = 5;
    int nconn = 32;
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--connections")) nconn = atoi(v);
        else if (!strcmp(a, "--users")) users = atol(v);
        else if (!strcmp(a, "--key")) key = v;
        else if (!strcmp(a, "--path")) path_tpl = v;
        else if (!strcmp(a, "--drain")) drain = atof(v);
        else usage();
    }
    if (!url || rate <= 0 || seconds <= 0 || nconn <= 0 || users <= 0) usage();
    if (strncmp(url, "http://", 7) != 0) usage();
    const char *hp = url + 7;
    size_t hl = strcspn(hp, ":/");
    if (hl == 0 || hl >= sizeof host) usage();
    memcpy(host, hp, hl);
    host[hl] = 0;
    if (hp[hl] == ':') port = atoi(hp + hl + 1);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0) {
        fprintf(stderr, "cannot resolve %s\n", host);
        return 2;
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addr_len = res->ai_addrlen;
    freeaddrinfo(res);

    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev) < 0) die("epoll_ctl");

    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    /* idle connections, first in first out (every connection is used in turn, as
     * api_load.py's workers are, so none sits idle long enough for the server's
     * keep-alive timeout) */
    int *idle = malloc((size_t)nconn * sizeof *idle);
    int idle_head = 0, nidle = 0;
#define IDLE_PUSH(i) (idle[(idle_head + nidle++) % nconn] = (i))
#define IDLE_POP() (nidle--, idle[idle_head++ % nconn])
    for (int i = 0; i < nconn; i++) {
        conns[i].in_cap = 16384;
        conns[i].in = malloc(conns[i].in_cap);
        conn_open(&conns[i]);
        IDLE_PUSH(i);
    }

    long total = (long)llround(rate * seconds);
    double interval = 1e9 / rate;
    int64_t *lat = malloc((size_t)(total > 0 ? total : 1) * sizeof *lat);
    int64_t *lag = malloc((size_t)(total > 0 ? total : 1) * sizeof *lag);
    long nlat = 0, nlag = 0, non200 = 0, conn_errors = 0, timeouts = 0;
    long due = 0;     /* requests whose scheduled time has come (0..due-1) */
    long started = 0; /* of those, sent */
    long busy = 0;
    int64_t start = now_ns() + 200000000; /* 200 ms to let the connections establish */
    int64_t last_done = start;
#define SCHED(i) (start + (int64_t)((double)(i) * interval))
    struct itimerspec its = {0};
    int64_t first = SCHED(0);
    its.it_value.tv_sec = first / 1000000000;
    its.it_value.tv_nsec = first % 1000000000;
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    int64_t deadline = SCHED(total) + (int64_t)(drain * 1e9);

    struct epoll_event events[256];
    for (;;) {
        int64_t t = now_ns();
        int timeout_ms = -1;
        if (due >= total) {
            if (started >= total && busy == 0) break;
            if (t >= deadline) break;
            timeout_ms = (int)((deadline - t) / 1000000) + 1;
        }
        int n = epoll_wait(ep, events, 256, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            if (!c) { /* the schedule's timer */
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                    die("read timerfd");
                continue;
            }
            int failed = 0;
            if (events[e].events & EPOLLOUT) {
                if (c->busy && c->out_off < c->out_len) {
                    if (flush_out(c) < 0) failed = 1;
                } else {
                    want_out(c, 0); /* connected */
                }
            }
            if (!failed && (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
                for (;;) {
                    if (c->in_cap - c->in_len < 4096) {
                        c->in_cap *= 2;
                        c->in = realloc(c->in, c->in_cap);
                    }
                    ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
                    if (r > 0) {
                        c->in_len += (size_t)r;
                        continue;
                    }
                    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                    if (r < 0 && errno == EINTR) continue;
                    failed = 1; /* closed or reset */
                    break;
                }
                while (!failed && c->busy && c->in_len > 0) {
                    int status = 0, close_after = 0;
                    long used = parse_response(c, &status, &close_after);
                    if (used == 0) break;
                    if (used < 0) {
                        failed = 1;
                        break;
                    }
                    int64_t done = now_ns();
                    last_done = done;
                    if (status == 200) lat[nlat++] = done - c->scheduled;
                    else non200++;
                    memmove(c->in, c->in + used, c->in_len - (size_t)used);
                    c->in_len -= (size_t)used;
                    c->busy = 0;
                    busy--;
                    if (close_after) {
                        conn_close(c);
                        conn_open(c);
                    }
                    IDLE_PUSH((int)(c - conns));
                }
                if (!failed && !c->busy && c->in_len > 0) failed = 1; /* unsolicited bytes */
            }
            if (failed) { /* reopened in place; an idle one keeps its turn */
                int was_busy = c->busy;
                if (was_busy) {
                    conn_errors++;
                    busy--;
                    last_done = now_ns();
                }
                conn_close(c);
                conn_open(c);
                if (was_busy) IDLE_PUSH((int)(c - conns));
            }
        }
        /* queue what is due, then send as much of the queue as connections allow */
        t = now_ns();
        while (due < total && SCHED(due) <= t) {
            lag[nlag++] = t - SCHED(due);
            due++;
        }
        while (started < due && nidle > 0) {
            conn_t *c = &conns[IDLE_POP()];
            busy++;
            if (send_request(c, SCHED(started)) < 0) {
                conn_errors++;
                busy--;
                conn_close(c);
                conn_open(c);
                IDLE_PUSH((int)(c - conns));
            }
            started++;
        }
        if (due < total) {
            int64_t next = SCHED(due);
            its.it_value.tv_sec = next / 1000000000;
            its.it_value.tv_nsec = next % 1000000000;
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
    }
    timeouts = busy + (total - started); /* still unanswered (or never sent) at the deadline */

    qsort(lat, (size_t)nlat, sizeof *lat, cmp_i64);
    qsort(lag, (size_t)nlag, sizeof *lag, cmp_i64);
    double elapsed = (double)(last_done - start) / 1e9;
    long errors = non200 + conn_errors + timeouts;
    char b50[32], b90[32], b99[32], b999[32], bmax[32];
    printf("{\"client\": \"openloop.c\", \"sent\": %ld, \"ok\": %ld, \"errors\": %ld, "
           "\"non_200\": %ld, \"conn_errors\": %ld, \"timeouts\": %ld, \"rate\": %.1f, "
           "\"p50_ms\": %s, \"p90_ms\": %s, \"p99_ms\": %s, \"p99_9_ms\": %s, "
           "\"max_ms\": %s, \"client_lag_p99_ms\": %.3f, \"client_lag_max_ms\": %.3f, "
           "\"connections\": %d}\n",
           started, nlat, errors, non200, conn_errors, timeouts,
           elapsed > 0 ? (double)nlat / elapsed : 0.0,
           num(b50, sizeof b50, pct_ms(lat, nlat, 50), 2),
           num(b90, sizeof b90, pct_ms(lat, nlat, 90), 2),
           num(b99, sizeof b99, pct_ms(lat, nlat, 99), 2),
           num(b999, sizeof b999, pct_ms(lat, nlat, 99.9), 2),
           num(bmax, sizeof bmax, nlat ? (double)lat[nlat - 1] / 1e6 : NAN, 2),
           nlag ? (double)lag[(long)ceil(0.99 * (double)nlag) - 1] / 1e6 : 0.0,
           nlag ? (double)lag[nlag - 1] / 1e6 : 0.0, nconn);
    return 0;
}
