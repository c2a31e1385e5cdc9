// weft-load: the bench's load generator and echo server, in C so that its own cost is a small,
// measured floor under every path (the Node generators it replaced added ~240 µs to every request:
// a worker thread's wake-up, a message to the main thread, a JS callback per send and per reply).
// No packaged tool does constant-rate (open-loop) load with every request timed from its intended
// send time (wrk2 is not in Debian; wrk, netperf and sockperf are closed-loop or sample), so here
// it is, small: one thread, epoll, a timerfd on an absolute clock (waking just before each request is
// due, then polling), every latency kept and sorted.
//
//   weft-load tcp  HOST PORT RATE CONNECTIONS SECONDS [SIZE=1024] [WARMUP_SECONDS=1]
//       SIZE-byte requests answered with SIZE bytes, request i due at start + i/RATE on connection
//       i % CONNECTIONS, pipelined (a stalled reply delays nothing else on the wire).
//   weft-load http HOST PORT RATE CONNECTIONS SECONDS [SIZE=1024] [WARMUP_SECONDS=1] [HOST_HEADER] [HEADER_FILE]
//       HTTP/1.1 POSTs with a SIZE-byte body over kept-alive connections, one in flight on each (no
//       pipelining, as browsers and Envoy do); a request due while all are busy waits its turn.
//   weft-load connrate HOST PORT CONCURRENCY SECONDS [SIZE=1024]
//       CONCURRENCY loops of connect, one SIZE-byte request and reply, close.
//   weft-load echo PORT [SIZE=1024]
//       answers every SIZE bytes received with SIZE bytes, on every connection.
//
// Prints one JSON line, latencies in microseconds: p50, p90, p99, p999, max of the requests due
// after the warm-up; completed, lost (unanswered at the end), errors; for http non2xx and codes;
// and the generator's own lateness (how long after its due time each request went out: p50, p99),
// so a run shows its own floor.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define RING 16384 /* requests in flight per connection (tcp) */
#define MAX_HEAD 65536

static void die(const char *fmt, const char *arg) {
  fprintf(stderr, "weft-load: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  exit(2);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static long num(const char *s, const char *what, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) die("bad %s", what);
  return v;
}

static double fnum(const char *s, const char *what) {
  char *end;
  double v = strtod(s, &end);
  if (*end || !(v >= 0) || v > 86400) die("bad %s", what);
  return v;
}

// ---- latencies: every value kept (a run is at most a few hundred thousand), sorted at the end ----

typedef struct {
  uint64_t *v;
  size_t n, cap;
} samples_t;

static void add(samples_t *s, uint64_t ns) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 65536;
    s->v = realloc(s->v, s->cap * sizeof(uint64_t));
    if (!s->v) die("%s", "out of memory");
  }
  s->v[s->n++] = ns;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

// The value at percentile q: the smallest with at least q % of the values at or below it, in µs.
static long pct(samples_t *s, double q) {
  if (!s->n) return 0;
  size_t i = (size_t)((q / 100.0) * (double)s->n + 0.999999);
  if (i < 1) i = 1;
  if (i > s->n) i = s->n;
  return (long)((s->v[i - 1] + 500) / 1000);
}

// ---- sockets ----

static struct sockaddr_storage dst;
static socklen_t dst_len;

static void resolve(const char *host, const char *port) {
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
  if (getaddrinfo(host, port, &hints, &res) != 0 || !res) die("cannot resolve %s", host);
  memcpy(&dst, res->ai_addr, res->ai_addrlen);
  dst_len = res->ai_addrlen;
  freeaddrinfo(res);
}

static int dial(void) {
  int fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&dst, dst_len) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

static int ep;
static void watch(int fd, uint32_t events, uint64_t data, int op) {
  struct epoll_event e = {.events = events, .data.u64 = data};
  if (epoll_ctl(ep, op, fd, &e) < 0 && op != EPOLL_CTL_DEL) die("epoll_ctl: %s", strerror(errno));
}

// Writes n bytes of buf, or what the socket takes; returns bytes written, -1 on a dead socket.
static ssize_t put(int fd, const char *buf, size_t n) {
  ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
  if (w < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  return w;
}

// ---- the constant-rate clock ----

static int tfd;
static uint64_t start_ns, interval_ns, measure_from;
static long total;

static uint64_t due(long i) { return start_ns + (uint64_t)((double)i * (double)interval_ns); }

static uint64_t armed_at;
static void arm(uint64_t at) {
  if (at == armed_at) return;
  armed_at = at;
  struct itimerspec its = {.it_value = {.tv_sec = (time_t)(at / 1000000000ull), .tv_nsec = (long)(at % 1000000000ull)}};
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

// Waking a sleeping thread takes tens of µs here (a VM's idle vCPU), which would be lateness in
// every request: the timer fires EARLY_NS before a request is due, and the last stretch is spent
// polling epoll without sleeping (replies are still read on time). About 2 % of a core at 1000/s.
#define EARLY_NS 60000ull

// The epoll timeout (ms) until request `next` is due: sleep on the timer, or poll (0) close to it.
static int pace(long next, int idle_ms) {
  if (next >= total) return idle_ms;
  uint64_t d = due(next), now = now_ns();
  if (d <= now + EARLY_NS) return 0;
  arm(d - EARLY_NS);
  return -1;
}

static samples_t lat, late;
static long completed, lost, errors;

static void print_common(const char *mode, long rate, long conns, double seconds) {
  qsort(lat.v, lat.n, sizeof(uint64_t), cmp_u64);
  qsort(late.v, late.n, sizeof(uint64_t), cmp_u64);
  printf("{\"tool\":\"weft-load %s\",\"rate\":%ld,\"connections\":%ld,\"seconds\":%g,\"completed\":%ld,\"lost\":%ld,\"errors\":%ld,"
         "\"p50\":%ld,\"p90\":%ld,\"p99\":%ld,\"p999\":%ld,\"max\":%ld,\"late_p50\":%ld,\"late_p99\":%ld",
         mode, rate, conns, seconds, completed, lost, errors, pct(&lat, 50), pct(&lat, 90), pct(&lat, 99), pct(&lat, 99.9),
         lat.n ? (long)((lat.v[lat.n - 1] + 500) / 1000) : 0, pct(&late, 50), pct(&late, 99));
}

// ---- tcp: pipelined request/response ----

typedef struct {
  int fd;
  long idx;
  uint64_t ring[RING];  // intended send times of the requests in flight, oldest first
  unsigned head, tail;
  size_t got;    // reply bytes towards the next whole reply
  size_t owed;   // request bytes not yet taken by the socket
  int writing;   // EPOLLOUT armed
} tconn_t;

static char fill[65536];

static int tcp_flush(tconn_t *c) {
  while (c->owed) {
    ssize_t w = put(c->fd, fill, c->owed < sizeof fill ? c->owed : sizeof fill);
    if (w < 0) return -1;
    if (w == 0) break;
    c->owed -= (size_t)w;
  }
  int want = c->owed > 0;
  if (want != c->writing) {
    watch(c->fd, EPOLLIN | (want ? EPOLLOUT : 0), (uint64_t)c->idx, EPOLL_CTL_MOD);
    c->writing = want;
  }
  return 0;
}

static int run_tcp(int argc, char **argv) {
  if (argc < 5) die("%s", "usage: weft-load tcp HOST PORT RATE CONNECTIONS SECONDS [SIZE] [WARMUP_SECONDS]");
  long rate = num(argv[2], "RATE", 1, 10000000), conns = num(argv[3], "CONNECTIONS", 1, MAX_CONNS);
  double seconds = fnum(argv[4], "SECONDS"), warmup = argc > 6 ? fnum(argv[6], "WARMUP_SECONDS") : 1;
  long size = argc > 5 ? num(argv[5], "SIZE", 1, 1 << 24) : 1024;
  resolve(argv[0], argv[1]);
  tconn_t *cs = calloc((size_t)conns, sizeof(tconn_t));
  if (!cs) die("%s", "out of memory");
  // Connect every connection first (bounded: 10 s), then start the clock.
  for (long i = 0; i < conns; i++) {
    cs[i].idx = i;
    cs[i].fd = dial();
    if (cs[i].fd < 0) die("connect: %s", strerror(errno));
    watch(cs[i].fd, EPOLLOUT, (uint64_t)i, EPOLL_CTL_ADD);
  }
  uint64_t give_up = now_ns() + 10000000000ull;
  for (long up = 0; up < conns;) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, 100);
    for (int k = 0; k < n; k++) {
      tconn_t *c = &cs[evs[k].data.u64];
      int err = 0;
      socklen_t l = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
      if (err) die("connect: %s", strerror(err));
      watch(c->fd, EPOLLIN, evs[k].data.u64, EPOLL_CTL_MOD);
      up++;
    }
    if (now_ns() > give_up) die("%s", "connections not up within 10 s");
  }
  interval_ns = (uint64_t)(1e9 / (double)rate);
  total = (long)((double)rate * (seconds + warmup) + 0.5);
  start_ns = now_ns() + 1000000;  // the first request 1 ms from now
  measure_from = start_ns + (uint64_t)(warmup * 1e9);
  watch(tfd, EPOLLIN, UINT64_MAX, EPOLL_CTL_ADD);
  long next = 0, outstanding = 0;
  uint64_t drain_until = 0;
  static char rbuf[65536];
  for (;;) {
    if (next >= total) {
      if (!outstanding) break;
      if (!drain_until) drain_until = now_ns() + 10000000000ull;  // bounded drain: 10 s
      if (now_ns() > drain_until) break;
    }
    // Requests now due, each on its connection (i % CONNECTIONS).
    uint64_t now = now_ns();
    while (next < total && due(next) <= now) {
      tconn_t *c = &cs[next % conns];
      if (c->fd >= 0 && ((c->tail - c->head) & (RING - 1)) != RING - 1) {
        c->ring[c->tail++ & (RING - 1)] = due(next);
        c->owed += (size_t)size;
        outstanding++;
        if (due(next) >= measure_from) add(&late, now - due(next));
        if (tcp_flush(c) < 0) {
          errors++;
          close(c->fd);
          c->fd = -1;
        }
      } else {
        lost++;
      }
      next++;
    }
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, pace(next, 10));
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int k = 0; k < n; k++) {
      if (evs[k].data.u64 == UINT64_MAX) {
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0) { /* spurious */ }
        continue;
      }
      tconn_t *c = &cs[evs[k].data.u64];
      if (c->fd < 0) continue;
      if (evs[k].events & EPOLLOUT && tcp_flush(c) < 0) goto dead;
      if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
          ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          if (r <= 0) goto dead;
          uint64_t now = now_ns();
          c->got += (size_t)r;
          while (c->got >= (size_t)size && c->head != c->tail) {
            c->got -= (size_t)size;
            uint64_t intended = c->ring[c->head++ & (RING - 1)];
            outstanding--;
            if (intended >= measure_from) {
              add(&lat, now - intended);
              completed++;
            }
          }
          if ((size_t)r < sizeof rbuf) break;
        }
      }
      continue;
    dead:
      errors++;
      close(c->fd);
      c->fd = -1;
      lost += (long)(c->tail - c->head);
      outstanding -= (long)(c->tail - c->head);
      c->head = c->tail;
    }
  }
  lost += outstanding;
  print_common("tcp", rate, conns, seconds);
  printf("}\n");
  return 0;
}

// ---- http: one request in flight per kept-alive connection ----

typedef struct {
  int fd;
  int up;           // connected
  uint64_t flight;  // intended send time of the request in flight, 0 for none
  size_t owed;      // bytes of the request not yet taken by the socket
  int writing;
  // the response being read
  char head[MAX_HEAD];
  size_t hlen;
  int in_body, chunked, status;
  long left;        // body bytes (content-length) or bytes of the current chunk (+2 for its CRLF) to skip
  int chunk_state;  // chunked: 0 size line, 1 data, 2 trailer
  uint64_t retry_at;
} hconn_t;

static char *req;
static size_t req_len;
static long non2xx, codes[600];
static uint64_t *waitq;  // intended times of requests due while every connection was busy
static long wq_head, wq_tail;

static void h_watch(hconn_t *c, long i, int op) {
  uint32_t ev = EPOLLIN | (!c->up || c->owed ? EPOLLOUT : 0);
  watch(c->fd, ev, (uint64_t)i, op);
  c->writing = !c->up || c->owed;
}

static int h_flush(hconn_t *c, long i) {
  while (c->owed) {
    ssize_t w = put(c->fd, req + (req_len - c->owed), c->owed);
    if (w < 0) return -1;
    if (w == 0) break;
    c->owed -= (size_t)w;
  }
  if ((c->owed > 0) != c->writing) h_watch(c, i, EPOLL_CTL_MOD);
  return 0;
}

static int h_start(hconn_t *c, long i) {
  if (!c->up || c->flight || wq_head == wq_tail) return 0;
  c->flight = waitq[wq_head++];
  c->owed = req_len;
  uint64_t now = now_ns();
  if (c->flight >= measure_from) add(&late, now - c->flight);
  return h_flush(c, i);
}

static void h_open(hconn_t *c, long i) {
  c->fd = dial();
  c->up = 0;
  c->hlen = 0;
  c->in_body = c->chunked = 0;
  c->owed = 0;
  c->retry_at = 0;
  if (c->fd < 0) {
    c->retry_at = now_ns() + 10000000ull;
    return;
  }
  h_watch(c, i, EPOLL_CTL_ADD);
}

static void h_done(hconn_t *c) {
  uint64_t now = now_ns();
  if (!c->flight) {
    errors++;  // a response nobody asked for
    return;
  }
  if (c->status < 200 || c->status > 299) {
    non2xx++;
    codes[c->status]++;
  }
  if (c->flight >= measure_from) {
    add(&lat, now - c->flight);
    completed++;
  }
  c->flight = 0;
}

static const char *field(const char *head, const char *name) {
  size_t n = strlen(name);
  for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n"))
    if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') return p + 3 + n;
  return NULL;
}

// Feeds response bytes; returns -1 on a malformed response.
static int h_feed(hconn_t *c, const char *d, size_t n) {
  while (n) {
    if (!c->in_body) {
      size_t take = n < MAX_HEAD - 1 - c->hlen ? n : MAX_HEAD - 1 - c->hlen;
      memcpy(c->head + c->hlen, d, take);
      size_t before = c->hlen;
      c->hlen += take;
      c->head[c->hlen] = 0;
      char *end = strstr(c->head + (before > 3 ? before - 3 : 0), "\r\n\r\n");
      if (!end) {
        if (c->hlen >= MAX_HEAD - 1) return -1;
        return 0;
      }
      size_t used = (size_t)(end + 4 - c->head) - before;
      d += used;
      n -= used;
      end[2] = 0;  // the head, ending with its last line's CRLF
      if (strncmp(c->head, "HTTP/1.", 7) != 0 || (c->head[7] != '0' && c->head[7] != '1') || c->head[8] != ' ') return -1;
      c->status = (int)strtol(c->head + 9, NULL, 10);
      if (c->status < 100 || c->status > 599) return -1;
      const char *te = field(c->head, "transfer-encoding"), *cl = field(c->head, "content-length");
      c->chunked = te && strcasestr(te, "chunked") != NULL;
      c->left = 0;
      if (!c->chunked && cl) {
        char *e;
        c->left = strtol(cl, &e, 10);
        if (c->left < 0) return -1;
      }
      c->in_body = 1;
      c->chunk_state = 0;
      c->hlen = 0;
      if (!c->chunked && c->left == 0) {
        c->in_body = 0;
        h_done(c);
      }
      continue;
    }
    if (!c->chunked) {
      size_t take = (size_t)c->left < n ? (size_t)c->left : n;
      c->left -= (long)take;
      d += take;
      n -= take;
      if (!c->left) {
        c->in_body = 0;
        h_done(c);
      }
      continue;
    }
    // Chunked: size line, data and CRLF, ...; a zero size, then trailer lines to an empty one.
    if (c->chunk_state == 1) {
      size_t take = (size_t)c->left < n ? (size_t)c->left : n;
      c->left -= (long)take;
      d += take;
      n -= take;
      if (!c->left) c->chunk_state = 0;
      continue;
    }
    // A line (size line or trailer line), gathered in head.
    const char *nl = memchr(d, '\n', n);
    size_t take = nl ? (size_t)(nl - d) + 1 : n;
    if (c->hlen + take >= MAX_HEAD - 1) return -1;
    memcpy(c->head + c->hlen, d, take);
    c->hlen += take;
    d += take;
    n -= take;
    if (!nl) return 0;
    c->head[c->hlen] = 0;
    int empty = c->hlen <= 2;
    c->hlen = 0;
    if (c->chunk_state == 2) {
      if (empty) {
        c->in_body = 0;
        h_done(c);
      }
      continue;
    }
    char *e;
    long sz = strtol(c->head, &e, 16);
    if (e == c->head || sz < 0) return -1;
    if (sz == 0) {
      c->chunk_state = 2;
    } else {
      c->left = sz + 2;
      c->chunk_state = 1;
    }
  }
  return 0;
}

static int stopping;

// A connection the other side closed (or a malformed response): its request in flight is lost,
// and a new connection takes its place 10 ms later.
static void h_dead(hconn_t *c) {
  errors++;
  if (c->flight) lost++;
  c->flight = 0;
  watch(c->fd, 0, 0, EPOLL_CTL_DEL);
  close(c->fd);
  c->fd = -1;
  c->up = 0;
  c->retry_at = stopping ? 0 : now_ns() + 10000000ull;
}

static int run_http(int argc, char **argv) {
  if (argc < 5) die("%s", "usage: weft-load http HOST PORT RATE CONNECTIONS SECONDS [SIZE] [WARMUP_SECONDS] [HOST_HEADER] [HEADER_FILE]");
  long rate = num(argv[2], "RATE", 1, 10000000), conns = num(argv[3], "CONNECTIONS", 1, MAX_CONNS);
  double seconds = fnum(argv[4], "SECONDS"), warmup = argc > 6 ? fnum(argv[6], "WARMUP_SECONDS") : 1;
  long size = argc > 5 ? num(argv[5], "SIZE", 0, 1 << 24) : 1024;
  const char *authority = argc > 7 ? argv[7] : argv[0];
  char extra[8192] = "";
  if (argc > 8) {
    FILE *f = fopen(argv[8], "r");
    if (!f) die("cannot read HEADER_FILE %s", argv[8]);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
      line[strcspn(line, "\r\n")] = 0;
      if (!*line) continue;
      if (strlen(extra) + strlen(line) + 3 > sizeof extra) die("%s", "HEADER_FILE too long");
      strcat(extra, line);
      strcat(extra, "\r\n");
    }
    fclose(f);
  }
  resolve(argv[0], argv[1]);
  char headbuf[16384];
  int hl = snprintf(headbuf, sizeof headbuf,
                    "POST / HTTP/1.1\r\nhost: %s\r\ncontent-type: application/octet-stream\r\ncontent-length: %ld\r\n%s\r\n",
                    authority, size, extra);
  if (hl < 0 || (size_t)hl >= sizeof headbuf) die("%s", "request head too long");
  req_len = (size_t)hl + (size_t)size;
  req = malloc(req_len);
  memcpy(req, headbuf, (size_t)hl);
  memset(req + hl, 'b', (size_t)size);
  interval_ns = (uint64_t)(1e9 / (double)rate);
  total = (long)((double)rate * (seconds + warmup) + 0.5);
  waitq = calloc((size_t)total + 1, sizeof(uint64_t));
  hconn_t *cs = calloc((size_t)conns, sizeof(hconn_t));
  if (!cs || !waitq) die("%s", "out of memory");
  for (long i = 0; i < conns; i++) h_open(&cs[i], i);
  // Every connection up first (bounded: 10 s), then the clock starts.
  uint64_t give_up = now_ns() + 10000000000ull;
  static char rbuf[65536];
  long up = 0;
  while (up < conns) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, 100);
    for (int k = 0; k < n; k++) {
      hconn_t *c = &cs[evs[k].data.u64];
      int err = 0;
      socklen_t l = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
      if (err) die("connect: %s", strerror(err));
      if (!c->up) {
        c->up = 1;
        up++;
        h_watch(c, (long)evs[k].data.u64, EPOLL_CTL_MOD);
      }
    }
    if (now_ns() > give_up) die("no connection to %s within 10 s", argv[0]);
  }
  start_ns = now_ns() + 1000000;
  measure_from = start_ns + (uint64_t)(warmup * 1e9);
  watch(tfd, EPOLLIN, UINT64_MAX, EPOLL_CTL_ADD);
  long next = 0;
  uint64_t drain_until = 0;
  for (;;) {
    int busy = wq_head != wq_tail;
    for (long i = 0; i < conns && !busy; i++) busy = cs[i].flight != 0;
    if (next >= total) {
      if (!busy) break;
      if (!drain_until) drain_until = now_ns() + 10000000000ull;
      if (now_ns() > drain_until) break;
    }
    // Connections waiting to be opened again.
    uint64_t now = now_ns();
    int reopening = 0;
    for (long i = 0; i < conns; i++) {
      if (cs[i].fd < 0 && cs[i].retry_at && cs[i].retry_at <= now) h_open(&cs[i], i);
      reopening |= cs[i].fd < 0;
    }
    // Requests now due join the queue, and go out on the idle connections.
    if (next < total && due(next) <= now) {
      while (next < total && due(next) <= now) waitq[wq_tail++] = due(next++);
      for (long i = 0; i < conns && wq_head != wq_tail; i++)
        if (cs[i].fd >= 0 && h_start(&cs[i], i) < 0) h_dead(&cs[i]);
    }
    struct epoll_event evs[64];
    int t = pace(next, 10);
    if (reopening && (t < 0 || t > 10)) t = 10;  // a connection to open again in 10 ms
    int n = epoll_wait(ep, evs, 64, t);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int k = 0; k < n; k++) {
      if (evs[k].data.u64 == UINT64_MAX) {
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0) { /* spurious */ }
        continue;
      }
      long i = (long)evs[k].data.u64;
      hconn_t *c = &cs[i];
      if (c->fd < 0) continue;
      if (!c->up) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) goto dead;
        if (!(evs[k].events & EPOLLOUT)) continue;
        c->up = 1;
        h_watch(c, i, EPOLL_CTL_MOD);
        if (h_start(c, i) < 0) goto dead;
        continue;
      }
      if (evs[k].events & EPOLLOUT && h_flush(c, i) < 0) goto dead;
      if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
          ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          if (r <= 0) goto dead;
          if (h_feed(c, rbuf, (size_t)r) < 0) goto dead;
          if ((size_t)r < sizeof rbuf) break;
        }
        if (h_start(c, i) < 0) goto dead;
      }
      continue;
    dead:
      h_dead(c);
    }
  }
  stopping = 1;
  lost += wq_tail - wq_head;
  for (long i = 0; i < conns; i++) lost += cs[i].flight != 0;
  print_common("http", rate, conns, seconds);
  printf(",\"non2xx\":%ld,\"codes\":{", non2xx);
  int first = 1;
  for (int s = 0; s < 600; s++)
    if (codes[s]) {
      printf("%s\"%d\":%ld", first ? "" : ",", s, codes[s]);
      first = 0;
    }
  printf("}}\n");
  return 0;
}

// ---- connrate: connect, one request and reply, close ----

typedef struct {
  int fd;
  size_t sent, got;
} cconn_t;

static int run_connrate(int argc, char **argv) {
  if (argc < 4) die("%s", "usage: weft-load connrate HOST PORT CONCURRENCY SECONDS [SIZE]");
  long conc = num(argv[2], "CONCURRENCY", 1, MAX_CONNS);
  double seconds = fnum(argv[3], "SECONDS");
  long size = argc > 4 ? num(argv[4], "SIZE", 1, 1 << 20) : 1024;
  resolve(argv[0], argv[1]);
  cconn_t *cs = calloc((size_t)conc, sizeof(cconn_t));
  long done = 0;
  static char rbuf[65536];
  uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9);
  long live = 0;
  for (long i = 0; i < conc; i++) {
    cs[i].fd = dial();
    if (cs[i].fd < 0) {
      errors++;
      continue;
    }
    live++;
    watch(cs[i].fd, EPOLLOUT | EPOLLIN, (uint64_t)i, EPOLL_CTL_ADD);
  }
  while (live > 0) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, 100);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    int over = now_ns() >= end;
    for (int k = 0; k < n; k++) {
      long i = (long)evs[k].data.u64;
      cconn_t *c = &cs[i];
      int failed = 0, finished = 0;
      if (evs[k].events & EPOLLERR) failed = 1;
      if (!failed && c->sent < (size_t)size && evs[k].events & EPOLLOUT) {
        ssize_t w = put(c->fd, fill, (size_t)size - c->sent);
        if (w < 0) failed = 1;
        else c->sent += (size_t)w;
        if (c->sent == (size_t)size) watch(c->fd, EPOLLIN, (uint64_t)i, EPOLL_CTL_MOD);
      }
      if (!failed && evs[k].events & (EPOLLIN | EPOLLHUP)) {
        ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (r <= 0 && !(r < 0 && errno == EAGAIN)) failed = 1;
        else if (r > 0 && (c->got += (size_t)r) >= (size_t)size) finished = 1;
      }
      if (!failed && !finished) continue;
      if (finished) done++;
      else errors++;
      close(c->fd);
      c->fd = -1;
      c->sent = c->got = 0;
      live--;
      if (over) continue;
      c->fd = dial();
      if (c->fd < 0) {
        errors++;
        continue;
      }
      live++;
      watch(c->fd, EPOLLOUT | EPOLLIN, (uint64_t)i, EPOLL_CTL_ADD);
    }
    if (now_ns() > end + 10000000000ull) break;  // bounded: replies that never come
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  printf("{\"tool\":\"weft-load connrate\",\"connections\":%ld,\"errors\":%ld,\"seconds\":%.3f,\"conn_per_s\":%ld}\n", done, errors,
         secs, (long)((double)done / secs + 0.5));
  return 0;
}

// ---- echo: SIZE bytes back for every SIZE bytes received ----

typedef struct {
  int fd;
  size_t pending, owed;
} econn_t;

static int run_echo(int argc, char **argv) {
  if (argc < 1) die("%s", "usage: weft-load echo PORT [SIZE]");
  long port = num(argv[0], "PORT", 0, 65535), size = argc > 1 ? num(argv[1], "SIZE", 1, 1 << 24) : 1024;
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0) die("listen: %s", strerror(errno));
  watch(l, EPOLLIN, UINT64_MAX, EPOLL_CTL_ADD);
  socklen_t al = sizeof a;
  getsockname(l, (struct sockaddr *)&a, &al);  // PORT 0: the one the kernel chose
  printf("{\"msg\":\"weft-load echo listening\",\"port\":%d,\"size\":%ld}\n", ntohs(a.sin_port), size);
  fflush(stdout);
  static char rbuf[65536];
  for (;;) {
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int k = 0; k < n; k++) {
      if (evs[k].data.u64 == UINT64_MAX) {
        for (;;) {
          int fd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          econn_t *c = calloc(1, sizeof *c);
          c->fd = fd;
          watch(fd, EPOLLIN, (uint64_t)(uintptr_t)c, EPOLL_CTL_ADD);
        }
        continue;
      }
      econn_t *c = (econn_t *)(uintptr_t)evs[k].data.u64;
      int dead = 0;
      if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (;;) {
          ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          if (r <= 0) {
            dead = 1;
            break;
          }
          c->pending += (size_t)r;
          c->owed += (c->pending / (size_t)size) * (size_t)size;
          c->pending %= (size_t)size;
          if ((size_t)r < sizeof rbuf) break;
        }
      }
      while (!dead && c->owed) {
        ssize_t w = put(c->fd, fill, c->owed < sizeof fill ? c->owed : sizeof fill);
        if (w < 0) dead = 1;
        else if (w == 0) break;
        else c->owed -= (size_t)w;
      }
      if (dead) {
        close(c->fd);
        free(c);
        continue;
      }
      watch(c->fd, EPOLLIN | (c->owed ? EPOLLOUT : 0), (uint64_t)(uintptr_t)c, EPOLL_CTL_MOD);
    }
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  // Wake-ups on time: the default 50 µs timer slack would be lateness in every request.
  prctl(PR_SET_TIMERSLACK, 1UL);
  memset(fill, 'b', sizeof fill);
  ep = epoll_create1(EPOLL_CLOEXEC);
  tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (ep < 0 || tfd < 0) die("%s", "epoll or timerfd");
  if (argc < 2) die("%s", "usage: weft-load tcp|http|connrate|echo ...");
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  if (!strcmp(argv[1], "tcp")) return run_tcp(argc - 2, argv + 2);
  if (!strcmp(argv[1], "http")) return run_http(argc - 2, argv + 2);
  if (!strcmp(argv[1], "connrate")) return run_connrate(argc - 2, argv + 2);
  if (!strcmp(argv[1], "echo")) return run_echo(argc - 2, argv + 2);
  die("unknown mode %s (tcp, http, connrate, echo)", argv[1]);
  return 2;
}
