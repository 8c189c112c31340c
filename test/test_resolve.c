/*
 * test/test_resolve.c - the default resolver, nest_resolve_system()
 * (lib/addr.c): numeric addresses without a thread, names through
 * getaddrinfo on the thread pool, abandoned on cancellation.
 *
 * Covers: numeric hosts (and the passive wildcard) take no thread and work
 * outside a task; "localhost" through the real getaddrinfo (skipped if
 * /etc/hosts lacks it) and nest_tcp_connect("localhost") end to end; the
 * EAI_* mapping (NEST_ENONAME, -EAGAIN, -ENOMEM, -EIO, -errno, ...); a
 * deadline during a lookup that is still blocked returns at once (mock
 * clock), the lookup's thread is abandoned and its memory is released
 * later, on the runtime's thread; a lookup that finishes only while
 * nest_run ends is released too, with nothing leaked; out of memory at
 * every allocation of a lookup; a name lookup outside a task aborts.
 *
 * No case needs the network: lib/resolve.h's seam replaces getaddrinfo
 * with a scripted one.  A host "block..." makes it wait at a semaphore
 * until the test posts it; "err<N>" makes it fail with EAI code N; any
 * other name answers 127.0.0.1 at once.  Every allocation is checked to
 * happen on the runtime's thread.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/net.h"
#include "nest/thread.h"
#include "resolve.h"

/* ---- the scripted getaddrinfo ------------------------------------------- */

static sem_t gate;
static atomic_int entered, returned, after_run_seen, returned_after_run;

static int scripted_gai(const char *host, const char *serv, const struct addrinfo *hints,
                        struct addrinfo **res) {
    if (strncmp(host, "block", 5) == 0) {
        atomic_store(&entered, 1);
        sem_wait(&gate);
    }
    if (strncmp(host, "err", 3) == 0) {
        int e = atoi(host + 3);
        if (e == EAI_SYSTEM) errno = EMFILE;
        return e;
    }
    struct addrinfo h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    int rc = getaddrinfo("127.0.0.1", serv, &h, res);
    if (atomic_load(&after_run_seen)) atomic_store(&returned_after_run, 1);
    atomic_store(&returned, 1);
    return rc;
}

static void scripted(void) {
    sem_init(&gate, 0, 0);
    nest__getaddrinfo = scripted_gai;
}

/* ---- every allocation on the runtime's thread ---------------------------- */

static pthread_t rt_thread;

static void *checked_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    CHECK(pthread_equal(pthread_self(), rt_thread));
    return counting_alloc(ud, ptr, osize, nsize);
}

static void after_run(void *arg) {
    (void)arg;
    atomic_store(&after_run_seen, 1);
    sem_post(&gate); /* a lookup still blocked ends while nest_run ends */
}

/* Runs fn on the mock clock (autojump 0) under the checked counting
 * allocator, with after_run() called when the run's tasks are done, and
 * checks that nothing is left allocated. */
static int run_checked(nest_fn fn) {
    memset(&mem, 0, sizeof mem);
    events[0] = 0;
    rt_thread = pthread_self();
    nest_instrument ins;
    memset(&ins, 0, sizeof ins);
    ins.after_run = after_run;
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    o.instrument = &ins;
    nest_set_allocator(checked_alloc, NULL);
    int rc = nest_run_opts(fn, NULL, &o);
    nest_set_allocator(NULL, NULL);
    CHECK_EQ(mem.live_bytes, 0);
    CHECK_EQ(mem.live_blocks, 0);
    return rc;
}

static int threads_alive(void) {
    nest_thread_stats st;
    nest_thread_statistics(&st);
    return st.threads;
}

/* ---- numeric addresses --------------------------------------------------- */

static int numeric_root(void *arg) {
    (void)arg;
    nest_sockaddr a[4];
    char buf[64];
    CHECK_EQ(nest_resolve_system(NULL, "127.0.0.1", 80, AF_UNSPEC, 0, a, 4), 1);
    note("%s", nest_sockaddr_format(&a[0], buf, sizeof buf));
    CHECK_EQ(nest_resolve_system(NULL, "::1", 443, AF_UNSPEC, 0, a, 4), 1);
    note("%s", nest_sockaddr_format(&a[0], buf, sizeof buf));
    CHECK_EQ(nest_resolve_system(NULL, NULL, 80, AF_UNSPEC, NEST_RESOLVE_PASSIVE, a, 4), 2);
    note("%s", nest_err_name(nest_resolve_system(NULL, NULL, 80, AF_UNSPEC, 0, a, 4)));
    note("%s", nest_err_name(nest_resolve_system(NULL, "127.0.0.1", 65536, AF_UNSPEC, 0, a, 4)));
    note("%s", nest_err_name(nest_resolve_system(NULL, "::1", 80, AF_INET, 0, a, 4)));
    note("threads %d", threads_alive());
    return 0;
}

/* Numeric hosts are parsed at once: no thread, no task needed. */
NEST_TEST(numeric_addresses_take_no_thread) {
    nest_sockaddr a;
    CHECK_EQ(nest_resolve_system(NULL, "10.1.2.3", 7, AF_UNSPEC, 0, &a, 1), 1); /* outside a task */
    CHECK_EQ(run_checked(numeric_root), 0);
    CHECK_STREQ(events, "127.0.0.1:80 [::1]:443 EINVAL EINVAL EAFNOSUPPORT threads 0");
}

/* ---- the real getaddrinfo ------------------------------------------------ */

static int hosts_has_localhost(void) {
    FILE *f = fopen("/etc/hosts", "r");
    if (!f) return 0;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        for (char *w = strtok(line, " \t\n"); w && !found; w = strtok(NULL, " \t\n"))
            found = strcmp(w, "localhost") == 0;
    }
    fclose(f);
    return found;
}

static int is_loopback(const nest_sockaddr *a) {
    if (nest_sockaddr_family(a) == AF_INET) return (ntohl(a->u.in4.sin_addr.s_addr) >> 24) == 127;
    return nest_sockaddr_family(a) == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&a->u.in6.sin6_addr);
}

static int localhost_root(void *arg) {
    (void)arg;
    nest_sockaddr a[8];
    int n = nest_resolve_system(NULL, "localhost", 8080, AF_UNSPEC, 0, a, 8);
    CHECK(n >= 1);
    for (int i = 0; i < n && i < 8; i++) {
        CHECK(is_loopback(&a[i]));
        CHECK_EQ(nest_sockaddr_port(&a[i]), 8080);
    }
    n = nest_resolve_system(NULL, "localhost", 8080, AF_INET, 0, a, 8);
    CHECK(n >= 1);
    CHECK_EQ(nest_sockaddr_family(&a[0]), AF_INET);
    CHECK_EQ(threads_alive(), 1); /* the lookups ran on the pool */
    return 0;
}

NEST_TEST(localhost_resolves_through_the_system_getaddrinfo) {
    if (!hosts_has_localhost()) NEST_SKIP("/etc/hosts has no localhost entry");
    CHECK_EQ(nest_run(localhost_root, NULL), 0);
}

static nest_listener lis;

static int serve_one(void *arg) {
    (void)arg;
    nest_socket_stream s;
    CHECK_EQ(nest_listener_accept(&lis, &s, NULL), 0);
    char c = 0;
    CHECK_EQ(nest_stream_receive_some(&s.stream, &c, 1), 1);
    CHECK_EQ(nest_stream_send_all(&s.stream, &c, 1, NULL), 0);
    nest_stream_close(&s.stream);
    return 0;
}

static int connect_localhost(void *arg) {
    (void)arg;
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, NULL, &lis, 1), 1);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, serve_one, NULL), 0);
    nest_socket_stream c;
    CHECK_EQ(nest_tcp_connect("localhost", nest_listener_port(&lis), NULL, &c), 0);
    char x = 'x', y = 0;
    CHECK_EQ(nest_stream_send_all(&c.stream, &x, 1, NULL), 0);
    CHECK_EQ(nest_stream_receive_some(&c.stream, &y, 1), 1);
    CHECK_EQ(y, 'x');
    nest_stream_close(&c.stream);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_listener_close(&lis);
    return 0;
}

/* The default resolver lets a program connect by name (if localhost is
 * ::1 first and nothing listens there, Happy Eyeballs falls back). */
NEST_TEST(connect_to_localhost_end_to_end) {
    if (!hosts_has_localhost()) NEST_SKIP("/etc/hosts has no localhost entry");
    int before = count_fds();
    CHECK_EQ(nest_run(connect_localhost, NULL), 0);
    CHECK_EQ(count_fds(), before);
}

/* ---- errors -------------------------------------------------------------- */

static int map(int eai) {
    char host[32];
    snprintf(host, sizeof host, "err%d", eai);
    nest_sockaddr a;
    return nest_resolve_system(NULL, host, 80, AF_UNSPEC, 0, &a, 1);
}

static int errors_root(void *arg) {
    (void)arg;
    note("%s", nest_err_name(map(EAI_NONAME)));
#ifdef EAI_NODATA
    CHECK_EQ(map(EAI_NODATA), NEST_ENONAME);
#endif
    note("%s", nest_err_name(map(EAI_AGAIN)));
    note("%s", nest_err_name(map(EAI_MEMORY)));
    note("%s", nest_err_name(map(EAI_FAIL)));
    note("%s", nest_err_name(map(EAI_SYSTEM)));
    note("%s", nest_err_name(map(EAI_FAMILY)));
    note("%s", nest_err_name(map(EAI_SERVICE)));
    nest_socket_stream c;
    note("%s", nest_err_name(nest_tcp_connect("err-2", 80, NULL, &c))); /* EAI_NONAME */
    return 0;
}

NEST_TEST(getaddrinfo_errors_are_mapped) {
    scripted();
    CHECK_EQ(EAI_NONAME, -2);
    CHECK_EQ(run_checked(errors_root), 0);
    CHECK_STREQ(events, "NEST_ENONAME EAGAIN ENOMEM EIO EMFILE EAFNOSUPPORT EINVAL NEST_ENONAME");
    CHECK_STREQ(nest_strerror(NEST_ENONAME), "No such host name");
}

/* ---- cancellation and abandonment ------------------------------------- */

static nest_scope lookup_scope;
static int connect_rc;

static int connecting(void *arg) {
    (void)arg;
    nest_fail_after(&lookup_scope, NEST_FOREVER);
    nest_socket_stream c;
    connect_rc = nest_tcp_connect("blocked.test", 80, NULL, &c);
    connect_rc = nest_scope_exit(&lookup_scope, connect_rc);
    note("connect %s @%lld", nest_err_name(connect_rc), ms());
    note("lookup still blocked %d", atomic_load(&entered) && !atomic_load(&returned));
    return 0;
}

/* Spawns connecting() and, once its lookup is inside getaddrinfo, gives
 * it a deadline 2 s ahead. */
static void connect_with_deadline_during_lookup(void) {
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, connecting, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    while (!atomic_load(&entered)) usleep(100); /* the worker is in getaddrinfo */
    nest_scope_set_deadline(&lookup_scope, nest_now() + NEST_SEC(2));
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
}

static int abandon_root(void *arg) {
    (void)arg;
    connect_with_deadline_during_lookup();
    long held = mem.live_blocks; /* including the lookup and its job record */
    nest_thread_stats st;
    nest_thread_statistics(&st);
    note("running %d", st.running);
    sem_post(&gate);
    /* The lookup finishes on its own; the pool then frees its record and
     * the lookup's buffer (two blocks), here, at a scheduler pass. */
    for (long i = 0; mem.live_blocks > held - 2; i++) {
        CHECK(i < 100000000);
        CHECK_EQ(nest_checkpoint(), 0);
    }
    CHECK_EQ(mem.live_blocks, held - 2);
    note("released");
    return 0;
}

/* A deadline during a lookup: -ETIMEDOUT at the deadline, while
 * getaddrinfo is still blocked; the lookup is released later on the
 * runtime's thread (checked_alloc), and nothing leaks. */
NEST_TEST(deadline_during_a_lookup_returns_at_once_and_releases_it_later) {
    scripted();
    CHECK_EQ(run_checked(abandon_root), 0);
    CHECK_STREQ(events, "connect ETIMEDOUT @2000 lookup still blocked 1 running 1 released");
    CHECK_EQ(atomic_load(&returned), 1);
}

static int abandon_at_end_root(void *arg) {
    (void)arg;
    connect_with_deadline_during_lookup();
    return 0; /* the lookup is still blocked; after_run() lets it go */
}

/* A lookup abandoned and still running when the run ends: nest_run waits
 * for it and frees everything (on the runtime's thread) before returning. */
NEST_TEST(lookup_finishing_after_the_run_ended_still_frees_everything) {
    scripted();
    CHECK_EQ(run_checked(abandon_at_end_root), 0);
    CHECK_STREQ(events, "connect ETIMEDOUT @2000 lookup still blocked 1");
    CHECK_EQ(atomic_load(&returned_after_run), 1);
}

static int cancelled_before_root(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    nest_sockaddr a;
    note("%s", nest_err_name(nest_resolve_system(NULL, "instant.test", 80, AF_UNSPEC, 0, &a, 1)));
    note("%s", nest_err_name(nest_resolve_system(NULL, "127.0.0.1", 80, AF_UNSPEC, 0, &a, 1) == 1
                                 ? 0
                                 : -1)); /* numeric: no checkpoint */
    return nest_scope_exit(&s, 0);
}

NEST_TEST(lookup_in_a_cancelled_scope_starts_nothing) {
    scripted();
    CHECK_EQ(run_checked(cancelled_before_root), 0);
    CHECK_STREQ(events, "ECANCELED OK");
    CHECK_EQ(atomic_load(&returned), 0);
}

/* ---- out of memory -------------------------------------------------------- */

static long fail_after_calls;

static int oom_root(void *arg) {
    (void)arg;
    nest_sockaddr a[2];
    mem.fail_from = mem.calls + fail_after_calls;
    int rc = nest_resolve_system(NULL, "instant.test", 80, AF_UNSPEC, 0, a, 2);
    mem.fail_from = 0;
    if (rc == 1) CHECK_EQ(nest_sockaddr_port(&a[0]), 80);
    return rc;
}

/* Every allocation of a lookup may fail: -ENOMEM, nothing leaked. */
NEST_TEST(lookup_out_of_memory_at_every_allocation) {
    scripted();
    for (fail_after_calls = 1;; fail_after_calls++) {
        int rc = run_checked(oom_root);
        CHECK(rc == 1 || rc == -ENOMEM);
        if (rc == 1) break;
        CHECK(fail_after_calls < 100);
    }
    CHECK(fail_after_calls > 2); /* the pool, the lookup and the job at least */
}

/* ---- misuse ---------------------------------------------------------------- */

NEST_TEST_ABORTS(name_lookup_outside_a_task_aborts, "nest_resolve_system") {
    nest_sockaddr a;
    nest_resolve_system(NULL, "localhost", 80, AF_UNSPEC, 0, &a, 1);
}
