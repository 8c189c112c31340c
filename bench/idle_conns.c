/*
 * bench/idle_conns.c - N concurrent idle TCP connections on one thread,
 * each served by its own task waiting in receive under its own deadline:
 * server memory per connection, time to accept them all, and time to
 * cancel them all.
 *
 *     bench_idle_conns [N=100000] [buf=BYTES] [reps=3]   the driver
 *     bench_idle_conns N sockets|tasks|raw [buf=BYTES] --one  one run in this process
 *
 * Server (mode "sockets"): one runtime, nest_serve_listeners() on one
 * 127.0.0.1 listener; each connection's handler enters its own deadline
 * scope - nest_move_on_after(1 h + i µs), every deadline different - and
 * waits in nest_stream_receive_some() into a buf-byte buffer on its stack
 * (default 64 B).  Once all N handlers wait and the runtime is quiet, the
 * server reads its RSS; then it cancels the serving nursery and times
 * until the close returns: every task has unwound its scope, closed its
 * socket, and the serve call has returned.
 *
 * Client: a second process (forked before the runtime starts), so that the
 * server's RSS holds only the server's side.  It opens the N connections
 * with plain blocking connect(2) - the kernel completes the handshake into
 * the listener's queue, so the figure is the server's accept rate whenever
 * the server is the slower side - from source addresses 127.0.0.2,
 * 127.0.0.3, ... (20,000 connections each, ports 20000-39999), since
 * one source address has only ~28,000 ephemeral ports for one destination.
 * Each source port is bound explicitly: letting connect(2) pick one costs
 * a search of the ephemeral range that grows with the ports in use (it made
 * 20,000 connects take 4 s here).  It holds them open until the server is
 * done.  Both processes raise
 * RLIMIT_NOFILE to N + 100, which needs CAP_SYS_RESOURCE when the hard
 * limit is lower; without it N is capped to the hard limit - 100 (and the
 * program says so on stderr and prints asked=N).
 *
 * Baseline (mode "tasks", same N, same process shape, run interleaved with
 * the sockets runs): N tasks, each in the same kind of deadline scope,
 * waiting in nest_sleep_forever() - the runtime's own per-task cost of
 * parking and cancelling, without a socket.  "accept" is then the time to
 * spawn them and let each reach its wait.
 *
 * Floor (mode "raw", same client): no nest at all - a blocking accept4()
 * loop for the N connections, then a close(2) loop over them: what the
 * kernel's own accept and close cost, which nest's figures include.
 *
 * Figures per run: rss_b_per_conn = (VmRSS when all wait - VmRSS after
 * listening) / N, from /proc/self/statm (user memory of the server: task
 * control blocks and stack pages, the connection structs, the fd watcher
 * tables); kernel memory is not in RSS, so the run also reports the
 * growth of the kernel's slab caches (/proc/slabinfo, live objects; it
 * holds both ends of every connection, the client's sockets too, hence
 * "per pair")
 * and of TCP buffer pages (/proc/net/sockstat "mem", zero for idle
 * sockets).  accept_ms = from sending the port to the client until the
 * Nth handler waits; cancel_ms = nest_nursery_cancel + close.
 *
 * The driver runs every repetition as a fresh process (fork), sockets,
 * tasks and raw in turn, and prints the medians.
 */
#include "bench.h" /* first: it defines _GNU_SOURCE */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nest/fd.h>
#include <nest/lowlevel.h>
#include <nest/net.h>
#include <nest/stream.h>

/* Client source addresses: 127.0.0.2, .3, ..., each with ports FIRST_PORT
 * .. FIRST_PORT + PER_SOURCE_ADDR - 1, bound explicitly. */
#define PER_SOURCE_ADDR 20000
#define FIRST_PORT 20000

enum { M_SOCKETS, M_TASKS, M_RAW, M_COUNT };
static const char *mode_name[] = {"sockets", "tasks", "raw"};

static long N;
static int mode;
static size_t bufsize = 64;

/* ---- process measurements ------------------------------------------------- */

static long rss_bytes(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * sysconf(_SC_PAGESIZE);
}

/* A "Key: value" line of a /proc file, e.g. meminfo's "Slab:" (kB). */
static long proc_value(const char *path, const char *key, int field) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    long v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) != 0) continue;
        char *p = line + klen;
        for (int i = 0; i <= field && p; i++) {
            while (*p == ' ') p++;
            if (i == field) v = strtol(p, NULL, 10);
            else p = strchr(p, ' ');
        }
        break;
    }
    fclose(f);
    return v;
}

/* Bytes held by live objects of every slab cache (/proc/slabinfo, root
 * only: active_objs * objsize), or, without it, meminfo's "Slab" (whole
 * slab pages, so coarser). */
#define MAX_CACHES 512
struct slab_cache {
    char name[128];
    long bytes;
};
/* The last snapshot of every cache, for the breakdown on stderr. */
static struct slab_cache caches[2][MAX_CACHES];
static int ncaches[2];

static long slab_bytes_into(int snap) {
    FILE *f = fopen("/proc/slabinfo", "r");
    if (!f) return proc_value("/proc/meminfo", "Slab:", 0) * 1024;
    char line[512], name[128];
    long total = 0, active, num, size;
    ncaches[snap] = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%127s %ld %ld %ld", name, &active, &num, &size) != 4) continue;
        total += active * size;
        if (ncaches[snap] < MAX_CACHES) {
            struct slab_cache *c = &caches[snap][ncaches[snap]++];
            memcpy(c->name, name, sizeof c->name);
            c->bytes = active * size;
        }
    }
    fclose(f);
    return total;
}

/* Prints to stderr the caches that grew most between the two snapshots,
 * in bytes per connection (both ends). */
static void slab_breakdown(void) {
    fprintf(stderr, "kernel slab growth per connection (both ends), largest caches:");
    for (int shown = 0; shown < 8; shown++) {
        int best = -1;
        long best_d = 0;
        for (int i = 0; i < ncaches[1]; i++) {
            long before = 0;
            for (int j = 0; j < ncaches[0]; j++)
                if (strcmp(caches[0][j].name, caches[1][i].name) == 0) before = caches[0][j].bytes;
            long d = caches[1][i].bytes - before;
            if (d > best_d) best_d = d, best = i;
        }
        if (best < 0) break;
        fprintf(stderr, " %s %.0f", caches[1][best].name, (double)best_d / (double)N);
        caches[1][best].bytes -= best_d; /* shown: not again */
    }
    fprintf(stderr, "\n");
}
/* "TCP: inuse X orphan X tw X alloc X mem X": the 9th word after "TCP:". */
static long tcp_mem_pages(void) { return proc_value("/proc/net/sockstat", "TCP:", 8); }

/* File descriptors a process needs beyond its N connections. */
#define FD_SPARE 100

/* Raises RLIMIT_NOFILE (soft, and hard if need be) to n + FD_SPARE. */
static void raise_nofile(long n) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)n + FD_SPARE;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) rl.rlim_max = want;
    if (rl.rlim_cur < want) rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        fprintf(stderr, "bench_idle_conns: cannot raise RLIMIT_NOFILE to %ld (%s): raising the "
                        "hard limit needs CAP_SYS_RESOURCE\n", (long)want, strerror(errno));
        printf("error=rlimit_nofile\n");
        exit(2);
    }
}

/* The most connections one process can hold: N is capped to it when the
 * hard limit cannot be raised (no CAP_SYS_RESOURCE, e.g. in a container). */
static long max_conns(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max == RLIM_INFINITY) return 1L << 30;
    struct rlimit probe = rl;
    probe.rlim_max = rl.rlim_max + 1;
    if (setrlimit(RLIMIT_NOFILE, &probe) == 0) { /* the hard limit can rise */
        setrlimit(RLIMIT_NOFILE, &rl);
        return 1L << 30;
    }
    return (long)rl.rlim_max - FD_SPARE;
}

/* ---- the client process --------------------------------------------------- */

/* Reads the port from `in`, opens N connections, writes N to `out`, then
 * holds them until `in` reaches EOF. */
static void client_main(int in, int out) {
    int port = 0;
    if (read(in, &port, sizeof port) != sizeof port) _exit(1);
    for (long i = 0; i < N; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fprintf(stderr, "client: socket #%ld: %s\n", i, strerror(errno));
            _exit(1);
        }
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + (uint32_t)(i / PER_SOURCE_ADDR));
        a.sin_port = htons((uint16_t)(FIRST_PORT + i % PER_SOURCE_ADDR));
        if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            fprintf(stderr, "client: bind #%ld: %s\n", i, strerror(errno));
            _exit(1);
        }
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)port);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            fprintf(stderr, "client: connect #%ld: %s\n", i, strerror(errno));
            _exit(1);
        }
    }
    long n = N;
    if (write(out, &n, sizeof n) != sizeof n) _exit(1);
    char b;
    while (read(in, &b, 1) > 0) {
    }
    _exit(0); /* the kernel closes every connection */
}

/* ---- the server ------------------------------------------------------------ */

static long waiting, ended;
static nest_parking_lot all_waiting = NEST_PARKING_LOT_INIT;

/* Each connection (or task) waits under its own deadline, 1 h + i µs. */
static int wait_under_deadline(nest_stream *s) {
    long i = waiting++;
    nest_scope sc;
    nest_move_on_after(&sc, NEST_SEC(3600) + NEST_USEC(i));
    if (waiting == N) nest_unpark_all(&all_waiting, 0);
    char *buf = __builtin_alloca(bufsize); /* on this task's stack */
    int rc = s ? (int)nest_stream_receive_some(s, buf, bufsize) : nest_sleep_forever();
    rc = nest_scope_exit(&sc, rc < 0 ? rc : 0);
    ended++;
    return rc;
}

static int handler(nest_stream *s, void *arg) {
    (void)arg;
    return wait_under_deadline(s);
}

static int bare_task(void *arg) {
    (void)arg;
    return wait_under_deadline(NULL);
}

static nest_listener listener;

static int serve(void *arg) {
    (void)arg;
    return nest_serve_listeners(&listener, 1, handler, NULL, NULL);
}

struct result {
    double rss_b_per_conn, accept_ms, cancel_ms, slab_b_per_pair, tcp_mem_pages;
};

static int client_in = -1, client_out = -1;
static struct result res;

static int server_main(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    int port = 0;
    if (mode == M_SOCKETS) {
        nest_listen_options lo;
        nest_listen_options_init(&lo);
        lo.keep_nofile_limit = 1; /* raised already, beyond the old hard limit */
        bench_check(nest_tcp_listen("127.0.0.1", 0, &lo, &listener, 1), "listen");
        port = nest_listener_port(&listener);
    }
    /* Warm the runtime's first stack slab and the listener before measuring. */
    bench_check(nest_checkpoint(), "checkpoint");
    long rss0 = rss_bytes(), slab0 = slab_bytes_into(0), mem0 = tcp_mem_pages();
    int64_t t0 = bench_now_ns();
    if (mode == M_SOCKETS) {
        bench_check(nest_start(&n, serve, NULL, NULL), "serve");
        if (write(client_out, &port, sizeof port) != sizeof port) bench_check(-EIO, "write");
    } else {
        for (long i = 0; i < N; i++) bench_check(nest_spawn(&n, bare_task, NULL), "spawn");
    }
    nest_waiter w;
    if (waiting < N) bench_check(nest_park(&all_waiting, &w, NULL, NULL), "park");
    int64_t t1 = bench_now_ns();
    if (mode == M_SOCKETS) { /* the client has finished connecting */
        long got = 0;
        bench_check(nest_wait_readable(client_in), "wait client");
        if (read(client_in, &got, sizeof got) != sizeof got || got != N) bench_check(-EPROTO, "client");
    }
    bench_check(nest_wait_all_tasks_blocked(), "quiet");
    long rss1 = rss_bytes(), slab1 = slab_bytes_into(1), mem1 = tcp_mem_pages();
    int64_t t2 = bench_now_ns();
    nest_nursery_cancel(&n);
    int rc = nest_nursery_close(&n, 0);
    int64_t t3 = bench_now_ns();
    bench_check(rc, "close");
    if (ended != N) bench_check(-EPROTO, "not every task ended");
    res.rss_b_per_conn = (double)(rss1 - rss0) / (double)N;
    res.accept_ms = (double)(t1 - t0) / 1e6;
    res.cancel_ms = (double)(t3 - t2) / 1e6;
    if (mode == M_SOCKETS) slab_breakdown();
    res.slab_b_per_pair = mode == M_SOCKETS ? (double)(slab1 - slab0) / (double)N : 0;
    res.tcp_mem_pages = (double)(mem1 - mem0);
    return 0;
}

/* The kernel's floor, without nest: a blocking accept4 loop for N
 * connections, then a close(2) loop over them. */
static void raw_server(void) {
    int *fds = malloc((size_t)N * sizeof *fds);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (!fds || l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 65535) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) < 0)
        bench_check(-errno, "raw listen");
    int port = ntohs(a.sin_port);
    long rss0 = rss_bytes();
    int64_t t0 = bench_now_ns();
    if (write(client_out, &port, sizeof port) != sizeof port) bench_check(-EIO, "write");
    for (long i = 0; i < N; i++)
        if ((fds[i] = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) < 0)
            bench_check(-errno, "raw accept");
    int64_t t1 = bench_now_ns();
    long got = 0;
    fcntl(client_in, F_SETFL, 0);
    if (read(client_in, &got, sizeof got) != sizeof got || got != N) bench_check(-EPROTO, "client");
    long rss1 = rss_bytes();
    int64_t t2 = bench_now_ns();
    for (long i = 0; i < N; i++) close(fds[i]);
    int64_t t3 = bench_now_ns();
    close(l);
    free(fds);
    res.rss_b_per_conn = (double)(rss1 - rss0) / (double)N;
    res.accept_ms = (double)(t1 - t0) / 1e6;
    res.cancel_ms = (double)(t3 - t2) / 1e6;
}

static void print_result(const struct result *r) {
    printf("mode=%s n=%ld buf=%zu rss_b_per_conn=%.0f accept_ms=%.1f cancel_ms=%.1f "
           "slab_b_per_pair=%.0f tcp_mem_pages=%.0f\n",
           mode_name[mode], N, bufsize, r->rss_b_per_conn, r->accept_ms, r->cancel_ms,
           r->slab_b_per_pair, r->tcp_mem_pages);
}

static void run_one(void) {
    if (mode != M_TASKS) raise_nofile(N);
    if (mode == M_SOCKETS || mode == M_RAW) {
        int to_client[2], from_client[2];
        if (pipe(to_client) < 0 || pipe(from_client) < 0) exit(2);
        pid_t pid = fork();
        if (pid < 0) exit(2);
        if (pid == 0) {
            close(to_client[1]);
            close(from_client[0]);
            client_main(to_client[0], from_client[1]);
        }
        close(to_client[0]);
        close(from_client[1]);
        client_out = to_client[1];
        client_in = from_client[0];
        fcntl(client_in, F_SETFL, O_NONBLOCK);
        int rc = 0;
        if (mode == M_RAW)
            raw_server();
        else
            rc = nest_run(server_main, NULL);
        close(client_out); /* the client closes its connections and exits */
        int status;
        waitpid(pid, &status, 0);
        bench_check(rc, "run");
    } else {
        bench_check(nest_run(server_main, NULL), "run");
    }
    print_result(&res);
}

/* ---- the driver ------------------------------------------------------------ */

static double field(const char *line, const char *key) {
    const char *p = strstr(line, key);
    return p ? atof(p + strlen(key)) : -1;
}

/* Runs one measurement in a fresh process; returns its result line's values. */
static int run_child(int m, struct result *r) {
    int p[2];
    if (pipe(p) < 0) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        mode = m;
        run_one();
        fflush(stdout);
        _exit(0);
    }
    close(p[1]);
    char out[4096];
    size_t len = 0;
    ssize_t k;
    while (len < sizeof out - 1 && (k = read(p[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)k;
    out[len] = 0;
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    printf("%s", out);
    fflush(stdout);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strstr(out, "error=")) return -1;
    r->rss_b_per_conn = field(out, "rss_b_per_conn=");
    r->accept_ms = field(out, "accept_ms=");
    r->cancel_ms = field(out, "cancel_ms=");
    r->slab_b_per_pair = field(out, "slab_b_per_pair=");
    r->tcp_mem_pages = field(out, "tcp_mem_pages=");
    return 0;
}

int main(int argc, char **argv) {
    int one = 0;
    const char *env = getenv("REPS");
    int reps = env && *env ? atoi(env) : 3;
    N = 100000;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--one") == 0) one = 1;
        else if (strncmp(argv[i], "reps=", 5) == 0) reps = atoi(argv[i] + 5);
        else if (strncmp(argv[i], "buf=", 4) == 0) bufsize = (size_t)atol(argv[i] + 4);
        else if (strcmp(argv[i], "tasks") == 0) mode = M_TASKS;
        else if (strcmp(argv[i], "sockets") == 0) mode = M_SOCKETS;
        else if (strcmp(argv[i], "raw") == 0) mode = M_RAW;
        else if (npos++ == 0) N = atol(argv[i]);
        else {
            fprintf(stderr, "usage: bench_idle_conns [N] [sockets|tasks|raw] [buf=BYTES] [reps=K] [--one]\n");
            return 2;
        }
    }
    if (N < 1 || bufsize < 1 || bufsize > 32768) {
        fprintf(stderr, "bench_idle_conns: N >= 1, buf in 1..32768\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    long asked = N;
    if ((!one || mode != M_TASKS) && N > max_conns()) N = max_conns(); /* tasks need no fds */
    if (N != asked)
        fprintf(stderr, "bench_idle_conns: N capped from %ld to %ld: the hard RLIMIT_NOFILE "
                        "cannot be raised here\n", asked, N);
    if (one) {
        run_one();
        return 0;
    }
    if (reps < 1) reps = 1;
    if (reps > BENCH_MAX_REPS) reps = BENCH_MAX_REPS;
    static double v[M_COUNT][5][BENCH_MAX_REPS];
    for (int rep = 0; rep < reps; rep++) {
        for (int m = 0; m < M_COUNT; m++) {
            struct result r;
            if (run_child(m, &r) < 0) {
                printf("error=%s_run_failed\n", mode_name[m]);
                return 1;
            }
            double f[5] = {r.rss_b_per_conn, r.accept_ms, r.cancel_ms, r.slab_b_per_pair,
                           r.tcp_mem_pages};
            for (int k = 0; k < 5; k++) v[m][k][rep] = f[k];
        }
    }
    printf("n=%ld asked=%ld buf=%zu reps=%d", N, asked, bufsize, reps);
    bench_print_stats("sockets_rss_b_per_conn", v[0][0], reps, 0);
    bench_print_stats("sockets_accept_ms", v[0][1], reps, 1);
    bench_print_stats("sockets_cancel_ms", v[0][2], reps, 1);
    bench_print_stats("sockets_slab_b_per_pair", v[0][3], reps, 0);
    bench_print_stats("sockets_tcp_mem_pages", v[0][4], reps, 0);
    bench_print_stats("tasks_rss_b_per_task", v[1][0], reps, 0);
    bench_print_stats("tasks_spawn_ms", v[1][1], reps, 1);
    bench_print_stats("tasks_cancel_ms", v[1][2], reps, 1);
    bench_print_stats("raw_accept_ms", v[2][1], reps, 1);
    bench_print_stats("raw_close_ms", v[2][2], reps, 1);
    printf("\n");
    return 0;
}
