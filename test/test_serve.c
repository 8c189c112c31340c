/*
 * test/test_serve.c - listeners and serving (nest/net.h): nest_serve_tcp,
 * nest_serve_unix, nest_serve_listeners, listener defaults.
 *
 * Covers: serving on port 0 with the nest_start() handshake (the caller
 * learns the port; a task per connection; cancelling the server cancels
 * every connection, closes the listeners, and the clients see EOF); a
 * handler's failure fails the server unless on_error absorbs it; one call
 * listening on 127.0.0.1 and ::1 gets one port for both; Unix listeners
 * (abstract and filesystem paths; an existing path is -EADDRINUSE; the
 * stream conformance check over Unix sockets; a client retries while the
 * listener's queue is full); accept out of file descriptors (RLIMIT_NOFILE
 * lowered in the test) backs off 100, 200, 400, 800 ms on the mock clock,
 * logs one line, and serves the queued clients once fds are free; the
 * default backlog is the system's somaxconn (read back with TCP_INFO); the
 * first listener raises the soft open-file limit to the hard one unless
 * opted out; SO_REUSEPORT on request; out of memory at every allocation of
 * a serve/connect/echo run: 0 or -ENOMEM, nothing leaked.
 *
 * Only loopback addresses are used; every case runs on the mock clock with
 * autojump 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/net.h"
#include "nest/stream.h"
#include "nest/stream_check.h"

/* ---- helpers ------------------------------------------------------------- */

static int send_str(nest_stream *s, const char *str) {
    return nest_stream_send_all(s, str, strlen(str), NULL);
}

static int recv_str(nest_stream *s, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = nest_stream_receive_some(s, buf + got, n - got);
        if (r <= 0) return r < 0 ? (int)r : -EPROTO;
        got += (size_t)r;
    }
    return 0;
}

/* ---- handlers ---------------------------------------------------------- */

static int connections, handlers_done;

/* Echoes until EOF. */
static int echo(nest_stream *s, void *arg) {
    (void)arg;
    connections++;
    char buf[256];
    int rc = 0;
    for (;;) {
        ssize_t n = nest_stream_receive_some(s, buf, sizeof buf);
        if (n <= 0) {
            rc = (int)n;
            break;
        }
        if ((rc = nest_stream_send_all(s, buf, (size_t)n, NULL)) < 0) break;
    }
    handlers_done++;
    return rc;
}

/* ---- serve_tcp with the start handshake ------------------------------------ */

static int port;

static int client(void *arg) {
    const char *msg = arg;
    nest_socket_stream c;
    CHECK_EQ(nest_tcp_connect("127.0.0.1", port, NULL, &c), 0);
    CHECK_EQ(send_str(&c.stream, msg), 0);
    char buf[64] = {0};
    CHECK_EQ(recv_str(&c.stream, buf, strlen(msg)), 0);
    CHECK_STREQ(buf, msg);
    nest_stream_close(&c.stream);
    return 0;
}

static nest_socket_stream idle_client;

static int serve_port0(void *arg) {
    (void)arg;
    int before = count_fds();
    nest_nursery n;
    nest_nursery_open(&n);
    nest_tcp_server srv = {0, "127.0.0.1", echo, NULL, NULL};
    void *v = NULL;
    CHECK_EQ(nest_start(&n, nest_serve_tcp_task, &srv, &v), 0);
    const nest_listeners *ls = v;
    CHECK_EQ(ls->count, 1);
    port = nest_listener_port(&ls->listener[0]);
    CHECK(port > 0);
    note("listening fds %+d", count_fds() - before);
    /* Three clients at once, each served by its own task. */
    nest_nursery cn;
    nest_nursery_open(&cn);
    CHECK_EQ(nest_spawn(&cn, client, "one"), 0);
    CHECK_EQ(nest_spawn(&cn, client, "two"), 0);
    CHECK_EQ(nest_spawn(&cn, client, "three"), 0);
    CHECK_EQ(nest_nursery_close(&cn, 0), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    note("served %d done %d", connections, handlers_done);
    /* A connection still open when the server is cancelled. */
    CHECK_EQ(nest_tcp_connect("127.0.0.1", port, NULL, &idle_client), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_nursery_cancel(&n);
    note("close %s", nest_err_name(nest_nursery_close(&n, 0)));
    note("served %d done %d", connections, handlers_done);
    char c;
    note("client sees %zd", nest_stream_receive_some(&idle_client.stream, &c, 1));
    nest_stream_close(&idle_client.stream);
    note("fds %+d", count_fds() - before);
    nest_socket_stream late;
    note("after %s", nest_err_name(nest_tcp_connect("127.0.0.1", port, NULL, &late)));
    return 0;
}

NEST_TEST(serve_tcp_on_port_0_reports_port_through_start) {
    CHECK_EQ(run_mock(serve_port0, NULL), 0);
    CHECK_STREQ(events, "listening fds +1 served 3 done 3 close OK served 4 done 4 "
                        "client sees 0 fds +0 after ECONNREFUSED");
}

/* ---- handler errors --------------------------------------------------------- */

static int failing(nest_stream *s, void *arg) {
    (void)s;
    (void)arg;
    return -EPROTO;
}

static int swallow(void *arg, int rc) {
    (void)arg;
    note("on_error %s", nest_err_name(rc));
    return 0;
}

static int serve_failing(void *arg) {
    nest_serve_options *o = arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_tcp_server srv = {0, "127.0.0.1", failing, NULL, o};
    void *v = NULL;
    CHECK_EQ(nest_start(&n, nest_serve_tcp_task, &srv, &v), 0);
    port = nest_listener_port(&((nest_listeners *)v)->listener[0]);
    nest_socket_stream c;
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(nest_tcp_connect("127.0.0.1", port, NULL, &c), 0);
        char ch;
        note("client %zd", nest_stream_receive_some(&c.stream, &ch, 1)); /* EOF */
        nest_stream_close(&c.stream);
        if (!o) break;
    }
    if (o) nest_nursery_cancel(&n);
    note("close %s", nest_err_name(nest_nursery_close(&n, 0)));
    return 0;
}

NEST_TEST(handler_failure_fails_the_server) {
    CHECK_EQ(run_mock(serve_failing, NULL), 0);
    /* The failure cancels the server's nursery, body included: the client
     * code, running as the body, is cancelled too. */
    CHECK_STREQ(events, "client -125 close EPROTO");
}

NEST_TEST(on_error_can_keep_the_server_going) {
    nest_serve_options o;
    nest_serve_options_init(&o);
    o.on_error = swallow;
    CHECK_EQ(run_mock(serve_failing, &o), 0);
    CHECK_STREQ(events, "on_error EPROTO client 0 on_error EPROTO client 0 close OK");
}

/* ---- two families, one port ------------------------------------------------- */

static int both_loopbacks(void *arg, const char *host, int p, int family, int flags,
                          nest_sockaddr *out, size_t max) {
    (void)arg, (void)host, (void)family, (void)flags;
    CHECK(max >= 2);
    CHECK_EQ(nest_sockaddr_ip(&out[0], "127.0.0.1", p), 0);
    CHECK_EQ(nest_sockaddr_ip(&out[1], "::1", p), 0);
    return 2;
}

static int serve_two(void *arg) {
    (void)arg;
    nest_serve_options o;
    nest_serve_options_init(&o);
    o.listen.resolve = both_loopbacks;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_tcp_server srv = {0, "loopbacks", echo, NULL, &o};
    void *v = NULL;
    CHECK_EQ(nest_start(&n, nest_serve_tcp_task, &srv, &v), 0);
    const nest_listeners *ls = v;
    CHECK_EQ(ls->count, 2);
    port = nest_listener_port(&ls->listener[0]);
    CHECK_EQ(nest_listener_port(&ls->listener[1]), port);
    const char *hosts[] = {"127.0.0.1", "::1"};
    for (int i = 0; i < 2; i++) {
        nest_socket_stream c;
        CHECK_EQ(nest_tcp_connect(hosts[i], port, NULL, &c), 0);
        CHECK_EQ(send_str(&c.stream, "x"), 0);
        char ch;
        CHECK_EQ(recv_str(&c.stream, &ch, 1), 0);
        nest_stream_close(&c.stream);
    }
    nest_nursery_cancel(&n);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    note("served %d", connections);
    return 0;
}

NEST_TEST(one_port_for_ipv4_and_ipv6_listeners) {
    if (!have_ipv6_loopback(SOCK_STREAM)) NEST_SKIP("no IPv6 loopback (::1) on this machine");
    CHECK_EQ(run_mock(serve_two, NULL), 0);
    CHECK_STREQ(events, "served 2");
}

/* ---- Unix sockets ------------------------------------------------------------ */

static char unix_path[108];

static int serve_unix(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_listener l;
    CHECK_EQ(nest_unix_listen(unix_path, NULL, &l), 0);
    char buf[128];
    note("listening on %s", strcmp(nest_sockaddr_format(&l.addr, buf, sizeof buf), unix_path) == 0 ? "path" : buf);
    CHECK_EQ(nest_listener_port(&l), -EINVAL);
    nest_listener again;
    note("again %s", nest_err_name(nest_unix_listen(unix_path, NULL, &again)));
    nest_scope cs;
    nest_scope_enter(&cs, NEST_FOREVER);
    nest_scope_cancel(&cs);
    note("cancelled %s", nest_err_name(nest_unix_connect(unix_path, &idle_client)));
    nest_scope_exit(&cs, -ECANCELED);
    note("missing %s", nest_err_name(nest_unix_connect("@nest-test-nobody-listens", &idle_client)));
    CHECK_EQ(nest_unix_connect(unix_path, &idle_client), 0);
    nest_socket_stream s;
    CHECK_EQ(nest_listener_accept(&l, &s, NULL), 0);
    CHECK_EQ(send_str(&idle_client.stream, "via unix"), 0);
    CHECK_EQ(recv_str(&s.stream, buf, 8), 0);
    note("%.8s", buf);
    nest_stream_close(&s.stream);
    nest_stream_close(&idle_client.stream);
    nest_listener_close(&l);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(unix_listener_on_abstract_name) {
    snprintf(unix_path, sizeof unix_path, "@nest-test-%d", (int)getpid());
    CHECK_EQ(run_mock(serve_unix, NULL), 0);
    CHECK_STREQ(events, "listening on path again EADDRINUSE cancelled ECANCELED missing ECONNREFUSED via unix");
}

NEST_TEST(unix_listener_on_path) {
    char dir[] = "/tmp/nest-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(unix_path, sizeof unix_path, "%s/sock", dir);
    CHECK_EQ(run_mock(serve_unix, NULL), 0);
    CHECK_STREQ(events, "listening on path again EADDRINUSE cancelled ECANCELED missing ECONNREFUSED via unix");
    unlink(unix_path); /* nest never unlinks */
    CHECK_EQ(rmdir(dir), 0);
}

static int serve_unix_task(void *arg) {
    (void)arg;
    return nest_serve_unix(unix_path, echo, NULL, NULL);
}

static int serve_unix_echo(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_start(&n, serve_unix_task, NULL, NULL), 0);
    nest_socket_stream c;
    CHECK_EQ(nest_unix_connect(unix_path, &c), 0);
    CHECK_EQ(send_str(&c.stream, "hello"), 0);
    char buf[8];
    CHECK_EQ(recv_str(&c.stream, buf, 5), 0);
    note("%.5s", buf);
    nest_stream_close(&c.stream);
    nest_nursery_cancel(&n);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(serve_unix_echoes) {
    snprintf(unix_path, sizeof unix_path, "@nest-test-serve-%d", (int)getpid());
    CHECK_EQ(run_mock(serve_unix_echo, NULL), 0);
    CHECK_STREQ(events, "hello");
}

static nest_listener ulis;
static nest_socket_stream ua, ub;

static int open_unix_pair(void *arg, nest_stream **a, nest_stream **b) {
    (void)arg;
    int rc = nest_unix_connect(unix_path, &ua);
    if (rc < 0) return rc;
    if ((rc = nest_listener_accept(&ulis, &ub, NULL)) < 0) {
        nest_stream_close(&ua.stream);
        return rc;
    }
    *a = &ua.stream;
    *b = &ub.stream;
    return 0;
}

static char check_msg[512];

static int unix_check(void *arg) {
    (void)arg;
    CHECK_EQ(nest_unix_listen(unix_path, NULL, &ulis), 0);
    nest_stream_check_options o = {open_unix_pair, NULL, NULL, 0};
    int rc = nest_stream_check(&o, check_msg, sizeof check_msg);
    nest_listener_close(&ulis);
    return rc;
}

NEST_TEST(unix_socket_streams_pass_conformance_check) {
    signal(SIGPIPE, SIG_DFL);
    snprintf(unix_path, sizeof unix_path, "@nest-test-check-%d", (int)getpid());
    int rc = run_mock(unix_check, NULL);
    if (rc) fprintf(stderr, "%s\n", check_msg);
    CHECK_EQ(rc, 0);
}

/* A Unix listener whose queue is full makes connect(2) fail with EAGAIN;
 * nest_unix_connect retries with a growing sleep until it gets in. */
static int accept_later(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(50)), 0);
    nest_socket_stream s;
    CHECK_EQ(nest_listener_accept(&ulis, &s, NULL), 0);
    note("accepted one @%lld", ms());
    nest_stream_close(&s.stream);
    return 0;
}

static int unix_full(void *arg) {
    (void)arg;
    nest_listen_options lo;
    nest_listen_options_init(&lo);
    lo.backlog = 1;
    CHECK_EQ(nest_unix_listen(unix_path, &lo, &ulis), 0);
    nest_socket_stream queued[4];
    int nq = 0;
    /* Fill the queue with raw non-blocking connects. */
    nest_sockaddr a;
    CHECK_EQ(nest_sockaddr_unix(&a, unix_path), 0);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (connect(fd, &a.u.sa, a.len) < 0) {
            CHECK_EQ(errno, EAGAIN);
            close(fd);
            break;
        }
        CHECK(nq < 4);
        CHECK_EQ(nest_socket_stream_init(&queued[nq++], fd), 0);
    }
    note("queued %d", nq);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, accept_later, NULL), 0);
    nest_socket_stream c;
    int rc = nest_unix_connect(unix_path, &c);
    note("connect %s @%lld", nest_err_name(rc), ms());
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_stream_close(&c.stream);
    for (int i = 0; i < nq; i++) nest_stream_close(&queued[i].stream);
    nest_listener_close(&ulis);
    return 0;
}

NEST_TEST(unix_connect_retries_while_listener_queue_is_full) {
    snprintf(unix_path, sizeof unix_path, "@nest-test-full-%d", (int)getpid());
    CHECK_EQ(run_mock(unix_full, NULL), 0);
    /* Sleeps of 1, 2, 4, 8, 16, 32 ms: the retry at 63 ms gets in. */
    CHECK_STREQ(events, "queued 2 accepted one @50 connect OK @63");
}

/* ---- EMFILE on accept ------------------------------------------------------- */

static int hi(nest_stream *s, void *arg) {
    (void)arg;
    return send_str(s, "hi");
}

static char errlog[] = "/tmp/nest-test-stderr-XXXXXX";

static int emfile(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_tcp_server srv = {0, "127.0.0.1", hi, NULL, NULL};
    void *v = NULL;
    CHECK_EQ(nest_start(&n, nest_serve_tcp_task, &srv, &v), 0);
    port = nest_listener_port(&((nest_listeners *)v)->listener[0]);

    /* Two client sockets made now, while fds are available. */
    int cfd[2];
    for (int i = 0; i < 2; i++)
        CHECK((cfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) >= 0);
    /* stderr goes to a file, to count the server's log lines. */
    int logfd = mkstemp(errlog);
    CHECK(logfd >= 0);
    int saved_stderr = dup(2);
    CHECK_EQ(dup2(logfd, 2), 2);
    close(logfd);

    /* Use up every descriptor below a lowered limit. */
    struct rlimit old, low;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 64;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    int dups[64], nd = 0, fd;
    while ((fd = dup(0)) >= 0) dups[nd++] = fd;
    CHECK_EQ(errno, EMFILE);

    nest_sockaddr a;
    CHECK_EQ(nest_sockaddr_ip(&a, "127.0.0.1", port), 0);
    for (int i = 0; i < 2; i++) {
        int r = connect(cfd[i], &a.u.sa, a.len); /* needs no new fd */
        CHECK(r == 0 || errno == EINPROGRESS);
    }
    /* The server now fails to accept: it backs off at 0, 100, 300, 700 ms
     * (sleeping 100, 200, 400, 800 ms) instead of spinning - a spinning
     * server would keep this task from ever reaching 1 s. */
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("fds freed @%lld", ms());
    for (int i = 0; i < nd; i++) close(dups[i]);
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);

    for (int i = 0; i < 2; i++) {
        CHECK_EQ(nest_wait_readable(cfd[i]), 0);
        char buf[4] = {0};
        CHECK_EQ(read(cfd[i], buf, sizeof buf), 2);
        note("client %d got %s @%lld", i, buf, ms());
        close(cfd[i]);
    }
    nest_nursery_cancel(&n);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);

    fflush(stderr);
    CHECK_EQ(dup2(saved_stderr, 2), 2);
    close(saved_stderr);
    FILE *f = fopen(errlog, "r");
    CHECK(f != NULL);
    char line[512];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        fputs(line, stderr);
        lines++;
        CHECK(strstr(line, "nest: accept on 127.0.0.1:") == line);
        CHECK(strstr(line, "Too many open files") != NULL);
    }
    fclose(f);
    unlink(errlog);
    note("logged %d", lines);
    return 0;
}

NEST_TEST(accept_out_of_fds_backs_off_logs_once_and_recovers) {
    CHECK_EQ(run_mock(emfile, NULL), 0);
    CHECK_STREQ(events, "fds freed @1000 client 0 got hi @1500 client 1 got hi @1500 logged 1");
}

/* ---- listener defaults -------------------------------------------------------- */

static int listen_backlog(const nest_listener *l) {
    /* Linux reports a listening socket's backlog in tcpi_sacked. */
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    CHECK_EQ(getsockopt(l->fd, IPPROTO_TCP, TCP_INFO, &ti, &len), 0);
    return (int)ti.tcpi_sacked;
}

NEST_TEST(default_backlog_is_the_system_maximum) {
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");
    if (!f) NEST_SKIP("no /proc/sys/net/core/somaxconn");
    int somaxconn = 0;
    CHECK_EQ(fscanf(f, "%d", &somaxconn), 1);
    fclose(f);
    nest_listener l;
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, NULL, &l, 1), 1);
    CHECK_EQ(listen_backlog(&l), somaxconn);
    nest_listener_close(&l);
    nest_listen_options o;
    nest_listen_options_init(&o);
    o.backlog = 7;
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, &o, &l, 1), 1);
    CHECK_EQ(listen_backlog(&l), 7);
    int one = 0;
    socklen_t len = sizeof one;
    CHECK_EQ(getsockopt(l.fd, SOL_SOCKET, SO_REUSEADDR, &one, &len), 0);
    CHECK_EQ(one, 1);
    nest_listener_close(&l);
    nest_listener_close(&l); /* twice: harmless */
}

NEST_TEST(first_listener_raises_open_file_limit) {
    struct rlimit rl;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max < 300) NEST_SKIP("hard RLIMIT_NOFILE too low to observe a raise");
    rl.rlim_cur = 256;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    /* Opted out: unchanged. */
    nest_listen_options o;
    nest_listen_options_init(&o);
    o.keep_nofile_limit = 1;
    nest_listener l;
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, &o, &l, 1), 1);
    nest_listener_close(&l);
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    CHECK_EQ(rl.rlim_cur, 256);
    /* By default: raised to the hard limit, once per process. */
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, NULL, &l, 1), 1);
    nest_listener_close(&l);
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    CHECK(rl.rlim_cur == rl.rlim_max);
    rl.rlim_cur = 256;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, NULL, &l, 1), 1);
    nest_listener_close(&l);
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
    CHECK_EQ(rl.rlim_cur, 256);
    /* The explicit call raises it any time. */
    CHECK_EQ(nest_raise_open_file_limit(), (long)rl.rlim_max);
}

NEST_TEST(reuse_port_lets_two_listeners_share_a_port) {
    nest_listener a, b;
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, NULL, &a, 1), 1);
    int p = nest_listener_port(&a);
    CHECK_EQ(nest_tcp_listen("127.0.0.1", p, NULL, &b, 1), -EADDRINUSE);
    nest_listener_close(&a);
    nest_listen_options o;
    nest_listen_options_init(&o);
    o.reuse_port = 1;
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, &o, &a, 1), 1);
    p = nest_listener_port(&a);
    CHECK_EQ(nest_tcp_listen("127.0.0.1", p, &o, &b, 1), 1);
    nest_listener_close(&a);
    nest_listener_close(&b);
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 70000, NULL, &a, 1), -EINVAL);
    /* The resolver's error comes back: the numeric one refuses names. */
    nest_listen_options_init(&o);
    o.resolve = nest_resolve_numeric;
    CHECK_EQ(nest_tcp_listen("localhost", 0, &o, &a, 1), -EINVAL);
}

/* ---- out of memory ---------------------------------------------------------- */

static long live_blocks, calls, fail_at;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        if (ptr) live_blocks--;
        free(ptr);
        return NULL;
    }
    if (++calls == fail_at) return NULL;
    void *p = realloc(ptr, nsize);
    if (!ptr) live_blocks++;
    return p;
}

static int oom_program(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_tcp_server srv = {0, "127.0.0.1", echo, NULL, NULL};
    void *v = NULL;
    int rc = nest_start(&n, nest_serve_tcp_task, &srv, &v);
    nest_socket_stream c;
    if (rc == 0) {
        port = nest_listener_port(&((nest_listeners *)v)->listener[0]);
        rc = nest_tcp_connect("127.0.0.1", port, NULL, &c);
    }
    if (rc == 0) {
        char buf[4];
        rc = send_str(&c.stream, "oom");
        if (rc == 0) rc = recv_str(&c.stream, buf, 3);
        nest_stream_close(&c.stream);
    }
    if (rc == 0) nest_nursery_cancel(&n);
    rc = nest_nursery_close(&n, rc);
    /* A server that ran out of memory fails, and its client may see the
     * connection reset first: the run's result is the out-of-memory. */
    for (int i = 0; i < nest_nursery_failure_count(&n) && i < NEST_NURSERY_FAILURES; i++) {
        nest_failure f;
        CHECK_EQ(nest_nursery_failure(&n, i, &f), 0);
        if (f.code == -ENOMEM) return -ENOMEM;
    }
    return rc;
}

NEST_TEST(serve_out_of_memory_at_every_allocation) {
    nest_set_allocator(failing_alloc, NULL);
    int before = count_fds();
    for (fail_at = 1;; fail_at++) {
        calls = 0;
        live_blocks = 0;
        int rc = run_mock(oom_program, NULL);
        if (rc != 0 && rc != -ENOMEM) fprintf(stderr, "fail_at %ld: %s\n", fail_at, nest_err_name(rc));
        CHECK(rc == 0 || rc == -ENOMEM);
        CHECK_EQ(live_blocks, 0);
        CHECK_EQ(count_fds(), before);
        if (rc == 0 && calls < fail_at) break;
        CHECK(fail_at < 10000);
    }
    CHECK(fail_at > 5);
    nest_set_allocator(NULL, NULL);
}
