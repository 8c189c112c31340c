/*
 * test/support.c - the helpers declared in test/support.h: the event log,
 * the mock-clock runners, the counting allocator, expect_abort() and
 * count_fds().
 */
#define _GNU_SOURCE
#include "support.h"

#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- the event log ------------------------------------------------------ */

char events[16384];

void note(const char *fmt, ...) {
    size_t len = strlen(events);
    if (len && len < sizeof events - 1) events[len++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(events + len, sizeof events - len, fmt, ap);
    va_end(ap);
}

long long ms(void) {
    nest_time t = nest_now();
    CHECK_EQ(t % NEST_MSEC(1), 0);
    return (long long)(t / NEST_MSEC(1));
}

/* ---- running on the mock clock ------------------------------------------ */

int run_mock(nest_fn fn, void *arg) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    return nest_run_opts(fn, arg, &o);
}

nest_fn children[9];

int spawn_children(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; children[i]; i++) CHECK_EQ(nest_spawn(&n, children[i], (void *)i), 0);
    return nest_nursery_close(&n, 0);
}

nest_task *spawn_named(nest_nursery *n, nest_fn fn, void *arg, const char *name) {
    nest_task *h = NULL;
    nest_spawn_options o = {0};
    o.name = name;
    o.handle = &h;
    CHECK_EQ(nest_spawn_opts(n, fn, arg, &o), 0);
    return h;
}

/* ---- a counting allocator that can fail --------------------------------- */

struct support_mem mem;

void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (nsize == 0) {
        if (ptr) {
            mem.live_bytes -= (long)osize;
            mem.live_blocks--;
        }
        free(ptr);
        return NULL;
    }
    mem.calls++;
    if (mem.fail_from && mem.calls >= mem.fail_from) return NULL;
    void *p = realloc(ptr, nsize);
    CHECK(p != NULL);
    if (!ptr) mem.live_blocks++;
    mem.live_bytes += (long)nsize - (long)(ptr ? osize : 0);
    return p;
}

void fail_allocations(int on) { mem.fail_from = on ? mem.calls + 1 : 0; }

int run_counted(nest_fn fn) {
    memset(&mem, 0, sizeof mem);
    events[0] = 0;
    nest_set_allocator(counting_alloc, NULL);
    int rc = run_mock(fn, NULL);
    nest_set_allocator(NULL, NULL);
    CHECK_EQ(mem.live_bytes, 0);
    CHECK_EQ(mem.live_blocks, 0);
    return rc;
}

/* ---- misuse that must abort --------------------------------------------- */

void expect_abort(nest_fn task, const char *const *texts) {
    fflush(stdout);
    fflush(stderr);
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        signal(SIGABRT, SIG_DFL);
        nest_run(task, NULL);
        fprintf(stderr, "the run returned instead of aborting\n");
        _exit(0);
    }
    close(fds[1]);
    char buf[16384];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = 0;
    close(fds[0]);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    fputs(buf, stderr);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    for (; *texts; texts++) {
        if (!strstr(buf, *texts)) {
            fprintf(stderr, "the abort message lacks \"%s\"\n", *texts);
            abort();
        }
    }
}

int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own fd */
}

int have_ipv6_loopback(int type) {
    int fd = socket(AF_INET6, type, 0);
    if (fd < 0) return 0;
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}
