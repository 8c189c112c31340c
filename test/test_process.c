/*
 * test/test_process.c - child processes and pipe streams (nest/process.h).
 *
 * Covers: stdin -> cat -> stdout through pipe streams, EOF; stderr kept
 * apart, or merged with NEST_STDIO_STDOUT; exit statuses; killed-by-signal
 * codes; exec failures (-ENOENT) leaving nothing open; the termination
 * ladder: a child ignoring SIGTERM is SIGKILLed when the grace period
 * (mock clock, autojump) has passed, a child that obeys SIGTERM gets no
 * SIGKILL (mock clock that never jumps: a SIGKILL could only come from a
 * bug); a cancelled wait leaves the child running and a later wait reaps
 * it; close always reaps (waitpid says ECHILD afterwards) and leaks no fd;
 * close wakes a blocked wait with NEST_ECLOSED; writing to a child that
 * has exited gives -EPIPE, not SIGPIPE; nest_process_run: input,
 * captured output, truncation, cancellation; cwd, envp, PATH lookup; only
 * fds 0-2 are inherited by default; dumps say "waiting for process N to
 * exit"; out-of-memory at every allocation; misuse.  Also: NEST_STDIO_FD
 * sources among 0-2 are taken as they were before the spawn (stdout and
 * stderr swapped); with a pidfd, a pid reaped behind nest's back and
 * reused is neither signalled nor reaped; a process left unclosed aborts
 * the end of the run.  Pipe streams round-trip data through cat with
 * waits in both directions on reused watchers.  Process groups
 * (new_group): close, a cancelled run, kill and the reap of the leader
 * end a grandchild too (seen as EOF on a pipe only the grandchild holds),
 * and without new_group the grandchild outlives the close.
 *
 * Both ways of noticing an exit are tested: the pidfd (default on Linux)
 * and, with nest__process_force_thread(1), the watcher thread; cases
 * ending in _thread run the same body on the fallback.  Children are
 * /bin/sh, cat, true, false and sleep; every handshake goes through a pipe
 * (the child prints "ready" once its trap is set), never a sleep.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "nest.h"
#include "nest/process.h"
#include "proc.h"
#include "support.h"

static char *sh_argv(const char *script, char **argv) {
    argv[0] = "sh";
    argv[1] = "-c";
    argv[2] = (char *)script;
    argv[3] = NULL;
    return argv[0];
}

static nest_process_options pipes(int in, int out, int err) {
    nest_process_options o;
    nest_process_options_init(&o);
    o.stdio[0] = in ? NEST_STDIO_PIPE : NEST_STDIO_DEVNULL;
    o.stdio[1] = out ? NEST_STDIO_PIPE : NEST_STDIO_DEVNULL;
    o.stdio[2] = err ? NEST_STDIO_PIPE : NEST_STDIO_DEVNULL;
    return o;
}

static int spawn_sh(nest_process *p, const char *script, const nest_process_options *o) {
    char *argv[4];
    sh_argv(script, argv);
    return nest_process_spawn(p, "/bin/sh", argv, o);
}

/* Reads s until EOF into buf (NUL-terminated); returns the length. */
static ssize_t read_all(nest_stream *s, char *buf, size_t cap) {
    size_t len = 0;
    for (;;) {
        ssize_t n = nest_stream_receive_some(s, buf + len, cap - 1 - len);
        if (n < 0) return n;
        if (n == 0) break;
        len += (size_t)n;
        CHECK(len < cap - 1);
    }
    buf[len] = 0;
    return (ssize_t)len;
}

/* Reads one line (the handshake) byte by byte, so nothing after it is
 * consumed; checks it is `want`. */
static void expect_line(nest_stream *s, const char *want) {
    char line[64];
    size_t len = 0;
    for (;;) {
        CHECK_EQ(nest_stream_receive_some(s, line + len, 1), 1);
        if (line[len] == '\n') break;
        CHECK(++len < sizeof line);
    }
    line[len] = 0;
    CHECK_STREQ(line, want);
}

static int no_zombie(pid_t pid) {
    return waitpid(pid, NULL, WNOHANG) == -1 && errno == ECHILD;
}

static int run_thread_mode(nest_fn fn) {
    nest__process_force_thread(1);
    return run_mock(fn, NULL);
}

/* A mock clock that never jumps by itself. */
static int run_frozen(nest_fn fn) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    return nest_run_opts(fn, NULL, &o);
}

/* ---- pipes ---------------------------------------------------------------- */

static int echo_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    nest_process p;
    nest_process_options o = pipes(1, 1, 0);
    char *argv[] = {"cat", NULL};
    CHECK_EQ(nest_process_spawn(&p, "/bin/cat", argv, &o), 0);
    CHECK(p.stdin_ && p.stdout_ && !p.stderr_);
    CHECK_STREQ(nest_stream_kind(p.stdin_), "pipe");
    size_t sent = 0;
    CHECK_EQ(nest_stream_send_all(p.stdin_, "hello, ", 7, &sent), 0);
    CHECK_EQ(sent, 7);
    CHECK_EQ(nest_stream_send_all(p.stdin_, "cat", 3, NULL), 0);
    CHECK_EQ(nest_stream_send_eof(p.stdin_), 0);
    CHECK_EQ(nest_stream_send_all(p.stdin_, "x", 1, NULL), NEST_ECLOSED);
    char buf[64];
    CHECK_EQ(read_all(p.stdout_, buf, sizeof buf), 10);
    CHECK_STREQ(buf, "hello, cat");
    CHECK_EQ(nest_stream_receive_some(p.stdout_, buf, sizeof buf), 0); /* EOF again */
    int code = -1;
    CHECK_EQ(nest_process_wait(&p, &code), 0);
    CHECK_EQ(code, 0);
    CHECK_EQ(p.returncode, 0);
    code = -1;
    CHECK_EQ(nest_process_wait(&p, &code), 0); /* reaped: the same answer */
    CHECK_EQ(code, 0);
    CHECK(no_zombie(p.pid));
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(nest_process_close(&p), 0); /* twice: nothing */
    CHECK_EQ(count_fds(), fds);
    return 0;
}

NEST_TEST(cat_echoes_stdin_to_stdout) { CHECK_EQ(run_mock(echo_body, NULL), 0); }
NEST_TEST(cat_echoes_stdin_to_stdout_thread) { CHECK_EQ(run_thread_mode(echo_body), 0); }

static int stderr_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(0, 1, 1);
    CHECK_EQ(spawn_sh(&p, "echo out; echo err >&2; echo out2", &o), 0);
    char out[64], err[64];
    CHECK_EQ(read_all(p.stdout_, out, sizeof out), 9);
    CHECK_EQ(read_all(p.stderr_, err, sizeof err), 4);
    CHECK_STREQ(out, "out\nout2\n");
    CHECK_STREQ(err, "err\n");
    CHECK_EQ(nest_process_wait(&p, NULL), 0);
    CHECK_EQ(nest_process_close(&p), 0);

    o.stdio[2] = NEST_STDIO_STDOUT; /* 2>&1 */
    CHECK_EQ(spawn_sh(&p, "echo out; echo err >&2", &o), 0);
    CHECK(p.stderr_ == NULL);
    CHECK_EQ(read_all(p.stdout_, out, sizeof out), 8);
    CHECK_STREQ(out, "out\nerr\n");
    return nest_process_close(&p);
}

NEST_TEST(stderr_is_separate_or_merged) { CHECK_EQ(run_mock(stderr_body, NULL), 0); }

static int exit_code_of(const char *script) {
    nest_process p;
    CHECK_EQ(spawn_sh(&p, script, NULL), 0);
    int code = 12345;
    CHECK_EQ(nest_process_wait(&p, &code), 0);
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK(no_zombie(p.pid));
    return code;
}

static int codes_body(void *arg) {
    (void)arg;
    CHECK_EQ(exit_code_of("exit 0"), 0);
    CHECK_EQ(exit_code_of("exit 42"), 42);
    CHECK_EQ(exit_code_of("kill -USR1 $$"), -SIGUSR1);
    nest_process p;
    char *t[] = {"true", NULL}, *f[] = {"false", NULL};
    nest_process_options o;
    nest_process_options_init(&o);
    o.search_path = 1;
    int code = -1;
    CHECK_EQ(nest_process_spawn(&p, "true", t, &o), 0);
    CHECK_EQ(nest_process_wait(&p, &code), 0);
    CHECK_EQ(code, 0);
    nest_process_close(&p);
    CHECK_EQ(nest_process_spawn(&p, "false", f, &o), 0);
    CHECK_EQ(nest_process_wait(&p, &code), 0);
    CHECK_EQ(code, 1);
    nest_process_close(&p);
    return 0;
}

NEST_TEST(exit_codes_and_signals_are_reported) { CHECK_EQ(run_mock(codes_body, NULL), 0); }
NEST_TEST(exit_codes_and_signals_are_reported_thread) {
    CHECK_EQ(run_thread_mode(codes_body), 0);
}

static int killed_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(0, 1, 0);
    CHECK_EQ(spawn_sh(&p, "echo ready; exec sleep 1000", &o), 0);
    expect_line(p.stdout_, "ready");
    CHECK_EQ(nest_process_poll(&p, NULL), 0); /* still running */
    CHECK_EQ(nest_process_kill(&p), 0);
    int code = 0;
    CHECK_EQ(nest_process_wait(&p, &code), 0);
    CHECK_EQ(code, -SIGKILL);
    CHECK_EQ(nest_process_kill(&p), 0); /* reaped: nothing is sent */
    CHECK_EQ(nest_process_poll(&p, &code), 1);
    CHECK_EQ(code, -SIGKILL);
    nest_process_close(&p);
    CHECK_EQ(nest_process_wait(&p, &code), NEST_ECLOSED);
    CHECK_EQ(nest_process_signal(&p, SIGTERM), NEST_ECLOSED);
    return 0;
}

NEST_TEST(killed_child_reports_minus_signal) { CHECK_EQ(run_mock(killed_body, NULL), 0); }

static int enoent_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    nest_process p;
    nest_process_options o = pipes(1, 1, 1);
    char *argv[] = {"nope", NULL};
    CHECK_EQ(nest_process_spawn(&p, "/nonexistent/nope", argv, &o), -ENOENT);
    CHECK_EQ(nest_process_close(&p), 0); /* a failed spawn may be closed */
    CHECK_EQ(nest_process_wait(&p, NULL), NEST_ECLOSED);
    o.search_path = 1;
    CHECK_EQ(nest_process_spawn(&p, "nest-no-such-program", argv, &o), -ENOENT);
    CHECK_EQ(nest_process_spawn(&p, "/dev/null", argv, &o), -EACCES);
    CHECK_EQ(nest_process_spawn(&p, NULL, argv, &o), -EINVAL);
    o.stdio[0] = NEST_STDIO_STDOUT;
    CHECK_EQ(nest_process_spawn(&p, "/bin/true", argv, &o), -EINVAL);
    o.stdio[0] = NEST_STDIO_FD; /* stdio_fd[0] is -1 */
    CHECK_EQ(nest_process_spawn(&p, "/bin/true", argv, &o), -EBADF);
    CHECK_EQ(count_fds(), fds);
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD); /* no child at all */
    return 0;
}

NEST_TEST(exec_failure_is_an_error_and_leaves_nothing) { CHECK_EQ(run_mock(enoent_body, NULL), 0); }
NEST_TEST(exec_failure_is_an_error_and_leaves_nothing_thread) {
    CHECK_EQ(run_thread_mode(enoent_body), 0);
}

static int epipe_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(1, 0, 0);
    CHECK_EQ(spawn_sh(&p, "exec 0<&-; exit 3", &o), 0); /* closes its stdin at once */
    CHECK_EQ(nest_process_wait(&p, NULL), 0);
    static char big[1 << 16];
    CHECK_EQ(nest_stream_send_all(p.stdin_, big, sizeof big, NULL), -EPIPE);
    sigset_t pending;
    sigpending(&pending);
    CHECK(!sigismember(&pending, SIGPIPE)); /* none left behind */
    return nest_process_close(&p);
}

NEST_TEST(writing_to_an_exited_child_is_epipe_not_sigpipe) {
    signal(SIGPIPE, SIG_DFL); /* would kill the test */
    CHECK_EQ(run_mock(epipe_body, NULL), 0);
}

/* A stream over a plain pipe(). */
static int user_pipe_body(void *arg) {
    (void)arg;
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    nest_pipe_stream r, w;
    CHECK_EQ(nest_pipe_stream_init(&r, fds[0]), 0);
    CHECK_EQ(nest_pipe_stream_init(&w, fds[1]), 0);
    CHECK(fcntl(fds[0], F_GETFL) & O_NONBLOCK);
    CHECK_EQ(nest_stream_send_all(&w.stream, "ab", 2, NULL), 0);
    char buf[8];
    CHECK_EQ(nest_stream_receive_some(&w.stream, buf, sizeof buf), -EBADF);
    CHECK_EQ(nest_stream_send_all(&r.stream, "x", 1, NULL), -EBADF);
    CHECK_EQ(nest_stream_send_eof(&r.stream), -EBADF);
    CHECK_EQ(nest_stream_send_eof(&w.stream), 0);
    CHECK_EQ(nest_stream_receive_some(&r.stream, buf, sizeof buf), 2);
    CHECK_EQ(nest_stream_receive_some(&r.stream, buf, sizeof buf), 0);
    CHECK_EQ(nest_stream_close(&w.stream), 0);
    CHECK_EQ(nest_stream_close(&r.stream), 0);
    CHECK_EQ(nest_pipe_stream_init(&r, -1), -EBADF);
    return 0;
}

NEST_TEST(pipe_streams_over_plain_pipes) {
    int fds = count_fds();
    CHECK_EQ(run_mock(user_pipe_body, NULL), 0);
    CHECK_EQ(count_fds(), fds);
}

/* A child that does not read: send_all fills the pipe, blocks, and a
 * cancellation reports exactly how much went in. */
static int partial_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(1, 1, 0);
    CHECK_EQ(spawn_sh(&p, "echo ready; exec sleep 1000", &o), 0);
    expect_line(p.stdout_, "ready");
    long cap = fcntl(((nest_pipe_stream *)p.stdin_)->fd, F_GETPIPE_SZ);
    CHECK(cap > 0);
    static char big[1 << 20];
    size_t sent = 0;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int rc = nest_stream_send_all(p.stdin_, big, sizeof big, &sent);
    CHECK_EQ(rc, -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    CHECK_EQ(ms(), 1000);
    CHECK_EQ(sent, cap); /* the pipe's buffer, to the byte */
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(p.returncode, -SIGTERM);
    return 0;
}

NEST_TEST(send_to_a_child_that_does_not_read_blocks_and_reports_the_count) {
    CHECK_EQ(run_mock(partial_body, NULL), 0);
}

/* ---- the termination ladder ---------------------------------------------- */

static int ladder_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(0, 1, 0);
    CHECK_EQ(spawn_sh(&p, "trap '' TERM; echo ready; exec sleep 1000", &o), 0);
    expect_line(p.stdout_, "ready"); /* the trap is set */
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_process_wait(&p, NULL), -ECANCELED);
    CHECK_EQ(ms(), 0);
    CHECK_EQ(nest_process_close(&p), 0); /* in the cancelled scope */
    CHECK_EQ(nest_scope_exit(&s, 0), 0);
    CHECK_EQ(ms(), 5000); /* the grace period, then SIGKILL */
    CHECK_EQ(p.returncode, -SIGKILL);
    CHECK(no_zombie(p.pid));
    return 0;
}

NEST_TEST(child_ignoring_sigterm_is_killed_after_the_grace_period) {
    CHECK_EQ(run_mock(ladder_body, NULL), 0);
}
NEST_TEST(child_ignoring_sigterm_is_killed_after_the_grace_period_thread) {
    CHECK_EQ(run_thread_mode(ladder_body), 0);
}

static int obeys_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(0, 1, 0);
    o.grace = NEST_SEC(1);
    CHECK_EQ(spawn_sh(&p, "echo ready; exec sleep 1000", &o), 0);
    expect_line(p.stdout_, "ready");
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(p.returncode, -SIGTERM); /* no SIGKILL: the frozen clock never got there */
    CHECK_EQ(nest_now(), 0);
    return 0;
}

NEST_TEST(child_obeying_sigterm_gets_no_sigkill) { CHECK_EQ(run_frozen(obeys_body), 0); }
NEST_TEST(child_obeying_sigterm_gets_no_sigkill_thread) {
    nest__process_force_thread(1);
    CHECK_EQ(run_frozen(obeys_body), 0);
}

static int custom_signal_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(0, 1, 0);
    o.term_signal = SIGUSR1;
    CHECK_EQ(spawn_sh(&p, "echo ready; exec sleep 1000", &o), 0);
    expect_line(p.stdout_, "ready");
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(p.returncode, -SIGUSR1);
    o.grace = 0; /* SIGKILL at once */
    CHECK_EQ(spawn_sh(&p, "trap '' USR1; echo ready; exec sleep 1000", &o), 0);
    expect_line(p.stdout_, "ready");
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(p.returncode, -SIGKILL);
    CHECK_EQ(nest_now(), 0);
    return 0;
}

NEST_TEST(term_signal_and_zero_grace_options) { CHECK_EQ(run_frozen(custom_signal_body), 0); }

/* ---- waiting and closing ---------------------------------------------------- */

static int cancelled_wait_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(1, 1, 0);
    CHECK_EQ(spawn_sh(&p, "echo ready; read x; exit 7", &o), 0);
    expect_line(p.stdout_, "ready");
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(10)); /* autojump: expires at once */
    int code = 99;
    int rc = nest_process_wait(&p, &code);
    CHECK_EQ(rc, -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    CHECK_EQ(code, 99); /* did not happen */
    CHECK_EQ(ms(), 10000);
    CHECK_EQ(kill(p.pid, 0), 0); /* still running, not reaped */
    CHECK_EQ(nest_process_poll(&p, &code), 0);
    CHECK_EQ(nest_stream_send_all(p.stdin_, "go\n", 3, NULL), 0);
    CHECK_EQ(nest_process_wait(&p, &code), 0);
    CHECK_EQ(code, 7);
    CHECK(no_zombie(p.pid));
    nest_process_close(&p);
    return 0;
}

NEST_TEST(cancelled_wait_leaves_the_child_running) {
    CHECK_EQ(run_mock(cancelled_wait_body, NULL), 0);
}
NEST_TEST(cancelled_wait_leaves_the_child_running_thread) {
    CHECK_EQ(run_thread_mode(cancelled_wait_body), 0);
}

static int close_reaps_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    nest_process ps[4];
    for (int i = 0; i < 4; i++) {
        nest_process_options o = pipes(1, 1, 1);
        char *argv[] = {"cat", NULL};
        CHECK_EQ(nest_process_spawn(&ps[i], "/bin/cat", argv, &o), 0);
    }
    CHECK(count_fds() > fds);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(nest_process_close(&ps[i]), 0);
        CHECK(ps[i].returncode == 0 || ps[i].returncode == -SIGTERM);
        CHECK(no_zombie(ps[i].pid));
    }
    CHECK_EQ(count_fds(), fds);
    return 0;
}

NEST_TEST(close_always_reaps_and_leaks_no_fd) { CHECK_EQ(run_mock(close_reaps_body, NULL), 0); }
NEST_TEST(close_always_reaps_and_leaks_no_fd_thread) {
    CHECK_EQ(run_thread_mode(close_reaps_body), 0);
}

static nest_process shared;

static int blocked_waiter(void *arg) {
    (void)arg;
    CHECK_EQ(nest_process_wait(&shared, NULL), NEST_ECLOSED);
    note("waiter woke");
    return 0;
}

static int exit_waiter(void *arg) {
    (void)arg;
    int code = -1;
    CHECK_EQ(nest_process_wait(&shared, &code), 0);
    note("waiter got %d", code);
    return 0;
}

static int blocked_reader(void *arg) {
    (void)arg;
    char buf[16];
    CHECK_EQ(nest_stream_receive_some(shared.stdout_, buf, sizeof buf), NEST_ECLOSED);
    note("reader woke");
    return 0;
}

static int poll_under_waiter_body(void *arg) {
    (void)arg;
    nest_process_options o = pipes(1, 0, 0);
    CHECK_EQ(spawn_sh(&shared, "read x; exit 4", &o), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, exit_waiter, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_stream_send_all(shared.stdin_, "\n", 1, NULL), 0);
    int code = -1;
    while (nest_process_poll(&shared, &code) == 0) nest_checkpoint(); /* racing the waiter */
    CHECK_EQ(code, 4);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_STREQ(events, "waiter got 4");
    return nest_process_close(&shared);
}

static int second_waiter(void *arg) {
    (void)arg;
    CHECK_EQ(nest_process_wait(&shared, NULL), -EBUSY);
    note("busy");
    return 0;
}

static int close_wakes_body(void *arg) {
    (void)arg;
    nest_process_options o = pipes(0, 1, 0);
    CHECK_EQ(spawn_sh(&shared, "echo ready; exec sleep 1000", &o), 0);
    expect_line(shared.stdout_, "ready");
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, blocked_waiter, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_spawn(&n, blocked_reader, NULL), 0);
    CHECK_EQ(nest_spawn(&n, second_waiter, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_process_close(&shared), 0);
    CHECK_EQ(shared.returncode, -SIGTERM);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_STREQ(events, "busy reader woke waiter woke");
    return 0;
}

NEST_TEST(close_wakes_blocked_waits_and_reads_and_a_second_wait_is_busy) {
    CHECK_EQ(run_frozen(close_wakes_body), 0);
}

NEST_TEST(poll_and_wait_from_two_tasks_agree) { CHECK_EQ(run_frozen(poll_under_waiter_body), 0); }
NEST_TEST(poll_and_wait_from_two_tasks_agree_thread) {
    nest__process_force_thread(1);
    CHECK_EQ(run_frozen(poll_under_waiter_body), 0);
}

/* ---- the two ways of noticing the exit -------------------------------------- */

static void fd_target(int fd, char *buf, size_t cap) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, buf, cap - 1);
    CHECK(n > 0);
    buf[n] = 0;
}

static int threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1) break;
    fclose(f);
    return n;
}

static int path_body(void *arg) {
    int want_thread = (int)(intptr_t)arg;
    int before = threads();
    nest_process p;
    nest_process_options o = pipes(0, 1, 0);
    CHECK_EQ(spawn_sh(&p, "echo ready; exec sleep 1000", &o), 0);
    char target[128];
    fd_target(p.exit_fd, target, sizeof target);
    if (want_thread) {
        CHECK(strncmp(target, "pipe:", 5) == 0);
        CHECK(threads() > before); /* the watcher (TSan may add its own) */
    } else {
        if (!strstr(target, "pidfd")) NEST_SKIP("this kernel has no pidfd_open");
        CHECK_EQ(threads(), before);
    }
    expect_line(p.stdout_, "ready");
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(p.returncode, -SIGTERM);
    /* That the watcher was joined is not checked by counting threads here:
     * a joined thread may still show in /proc for a moment.  TSan reports
     * a thread that is never joined as a leak. */
    return 0;
}

NEST_TEST(pidfd_is_used_where_the_kernel_has_it) { CHECK_EQ(run_mock(path_body, NULL), 0); }
NEST_TEST(thread_fallback_uses_a_watcher_thread_and_a_pipe) {
    nest__process_force_thread(1);
    CHECK_EQ(run_mock(path_body, (void *)1), 0);
}

struct dump_ctx {
    char *buf;
    size_t len;
};

static int dump_body(void *arg) {
    (void)arg;
    nest_process_options o = pipes(0, 1, 0);
    CHECK_EQ(spawn_sh(&shared, "echo ready; exec sleep 1000", &o), 0);
    expect_line(shared.stdout_, "ready");
    nest_nursery n;
    nest_nursery_open(&n);
    nest_task *w = spawn_named(&n, blocked_waiter, NULL, "waiter");
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_block_info bi;
    CHECK_EQ(nest_task_block(w, &bi), NEST_BLOCK_PROCESS);
    CHECK_EQ(bi.kind, NEST_BLOCK_PROCESS);
    CHECK_EQ(bi.fd, shared.pid);
    struct dump_ctx d = {0};
    FILE *f = open_memstream(&d.buf, &d.len);
    nest_dump(f);
    fclose(f);
    char want[64];
    snprintf(want, sizeof want, "waiting for process %d to exit", (int)shared.pid);
    if (!strstr(d.buf, want)) {
        fprintf(stderr, "dump:\n%s", d.buf);
        CHECK(!"the dump names the process");
    }
    free(d.buf);
    nest_process_close(&shared);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(dump_says_waiting_for_process) { CHECK_EQ(run_frozen(dump_body), 0); }
NEST_TEST(dump_says_waiting_for_process_thread) {
    nest__process_force_thread(1);
    CHECK_EQ(run_frozen(dump_body), 0);
}

/* ---- nest_process_run -------------------------------------------------------- */

static int run_body(void *arg) {
    (void)arg;
    char *cat[] = {"cat", NULL};
    nest_process_options o = pipes(1, 1, 1);
    char out[16], err[16];
    nest_process_io io = {0};
    io.input = "some input";
    io.input_len = 10;
    io.out = out;
    io.out_cap = sizeof out;
    CHECK_EQ(nest_process_run("/bin/cat", cat, &o, &io), 0);
    CHECK_EQ(io.returncode, 0);
    CHECK_EQ(io.out_len, 10);
    CHECK(memcmp(out, "some input", 10) == 0);
    CHECK_EQ(io.err_len, 0);

    /* Truncation, as snprintf: the count is the whole output. */
    char *argv[4];
    sh_argv("printf abcdefgh; printf 12 >&2; exit 5", argv);
    memset(&io, 0, sizeof io);
    io.out = out;
    io.out_cap = 4;
    io.err = err;
    io.err_cap = sizeof err;
    CHECK_EQ(nest_process_run("/bin/sh", argv, &o, &io), 0);
    CHECK_EQ(io.returncode, 5);
    CHECK_EQ(io.out_len, 8);
    CHECK(memcmp(out, "abcd", 4) == 0);
    CHECK_EQ(io.err_len, 2);
    CHECK(memcmp(err, "12", 2) == 0);

    /* A child that never reads its input: the -EPIPE is not an error. */
    static char big[1 << 17];
    sh_argv("exec 0<&-; exit 0", argv);
    memset(&io, 0, sizeof io);
    io.input = big;
    io.input_len = sizeof big;
    CHECK_EQ(nest_process_run("/bin/sh", argv, &o, &io), 0);

    /* No io at all; exec failure. */
    CHECK_EQ(nest_process_run("/bin/true", cat, NULL, NULL), 0);
    CHECK_EQ(nest_process_run("/nonexistent", cat, &o, &io), -ENOENT);
    return 0;
}

NEST_TEST(run_feeds_input_and_captures_output) { CHECK_EQ(run_mock(run_body, NULL), 0); }

static nest_scope run_scope;
static int ready_fd;

static int canceller(void *arg) {
    (void)arg;
    nest_pipe_stream r;
    CHECK_EQ(nest_pipe_stream_init(&r, ready_fd), 0);
    expect_line(&r.stream, "ready");
    note("ready@%lld", ms());
    nest_scope_cancel(&run_scope);
    nest_stream_close(&r.stream);
    return 0;
}

static int run_cancel_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    int hs[2];
    CHECK_EQ(pipe2(hs, O_CLOEXEC), 0);
    ready_fd = hs[0];
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, canceller, NULL), 0);
    /* The handshake goes through stderr, given as an fd. */
    nest_process_options o = pipes(1, 1, 0);
    o.stdio[2] = NEST_STDIO_FD;
    o.stdio_fd[2] = hs[1];
    char *argv[4];
    sh_argv("trap '' TERM; echo out; echo ready >&2; exec sleep 1000", argv);
    char out[16];
    nest_process_io io = {0};
    io.out = out;
    io.out_cap = sizeof out;
    nest_scope_enter(&run_scope, NEST_FOREVER);
    int rc = nest_process_run("/bin/sh", argv, &o, &io);
    CHECK_EQ(rc, -ECANCELED);
    note("run %s@%lld", nest_err_name(rc), ms());
    CHECK_EQ(nest_scope_exit(&run_scope, rc), 0);
    close(hs[1]);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_STREQ(events, "ready@0 run ECANCELED@5000");
    CHECK_EQ(io.returncode, -SIGKILL);
    CHECK_EQ(io.out_len, 4); /* what came before the cancellation */
    CHECK_EQ(count_fds(), fds);
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
    return 0;
}

NEST_TEST(cancelled_run_terminates_then_kills_and_reaps) {
    CHECK_EQ(run_mock(run_cancel_body, NULL), 0);
}
NEST_TEST(cancelled_run_terminates_then_kills_and_reaps_thread) {
    CHECK_EQ(run_thread_mode(run_cancel_body), 0);
}

/* ---- options ------------------------------------------------------------------ */

static int options_body(void *arg) {
    (void)arg;
    char *env[] = {"NEST_TEST_VAR=hello there", NULL};
    nest_process_options o = pipes(0, 1, 0);
    o.cwd = "/";
    o.envp = env;
    o.search_path = 1;
    char *argv[4];
    sh_argv("pwd; echo \"$NEST_TEST_VAR\"", argv);
    char out[64];
    nest_process_io io = {0};
    io.out = out;
    io.out_cap = sizeof out - 1;
    CHECK_EQ(nest_process_run("sh", argv, &o, &io), 0);
    out[io.out_len] = 0;
    CHECK_STREQ(out, "/\nhello there\n");

    /* Only fds 0-2 reach the child unless inherit_fds is set. */
    int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC */
    CHECK(leak >= 3);
    char script[64];
    snprintf(script, sizeof script, "test -e /proc/self/fd/%d", leak);
    sh_argv(script, argv);
    nest_process_options_init(&o);
    CHECK_EQ(nest_process_run("/bin/sh", argv, &o, &io), 0);
    CHECK_EQ(io.returncode, 1);
    o.inherit_fds = 1;
    CHECK_EQ(nest_process_run("/bin/sh", argv, &o, &io), 0);
    CHECK_EQ(io.returncode, 0);
    close(leak);
    return 0;
}

NEST_TEST(cwd_env_path_lookup_and_fd_inheritance) { CHECK_EQ(run_mock(options_body, NULL), 0); }

/* Reads fd (a pipe's read end, taken over) to EOF into buf. */
static void read_fd_all(int fd, char *buf, size_t cap) {
    nest_pipe_stream r;
    CHECK_EQ(nest_pipe_stream_init(&r, fd), 0);
    CHECK(read_all(&r.stream, buf, cap) >= 0);
    nest_stream_close(&r.stream);
}

/* NEST_STDIO_FD sources 0, 1, 2 are the parent's fds as they were before
 * the spawn, even where an earlier dup2 in the child replaced them.  The
 * parent's 0, 1, 2 become pipes for the moment of the spawn. */
static int low_fds_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    int a[2], b[2], c[2];
    CHECK_EQ(pipe2(a, O_CLOEXEC), 0);
    CHECK_EQ(pipe2(b, O_CLOEXEC), 0);
    CHECK_EQ(pipe2(c, O_CLOEXEC), 0);
    int save[3];
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 3; i++) CHECK((save[i] = fcntl(i, F_DUPFD_CLOEXEC, 3)) >= 3);
    CHECK_EQ(dup2(c[1], 0), 0); /* the parent's "stdin" is the write end of c */
    CHECK_EQ(dup2(a[1], 1), 1);
    CHECK_EQ(dup2(b[1], 2), 2);

    /* Swapped: the child's stdout is the parent's fd 2, its stderr fd 1. */
    nest_process p1, p2;
    nest_process_options o = pipes(0, 0, 0);
    o.stdio[1] = o.stdio[2] = NEST_STDIO_FD;
    o.stdio_fd[1] = 2;
    o.stdio_fd[2] = 1;
    int rc1 = spawn_sh(&p1, "echo out; echo err >&2", &o);
    /* The parent's fd 0 as the child's stdout, while its stdin is a pipe
     * (whose dup2 onto 0 comes first). */
    o = pipes(1, 0, 0);
    o.stdio[1] = NEST_STDIO_FD;
    o.stdio_fd[1] = 0;
    int rc2 = spawn_sh(&p2, "read x; echo \"got $x\"", &o);
    for (int i = 0; i < 3; i++) {
        dup2(save[i], i);
        close(save[i]);
    }
    CHECK_EQ(rc1, 0);
    CHECK_EQ(rc2, 0);
    close(a[1]);
    close(b[1]);
    close(c[1]);
    CHECK_EQ(nest_stream_send_all(p2.stdin_, "in\n", 3, NULL), 0);
    char out[32], err[32], got[32];
    read_fd_all(a[0], err, sizeof err);
    read_fd_all(b[0], out, sizeof out);
    read_fd_all(c[0], got, sizeof got);
    CHECK_STREQ(out, "out\n");
    CHECK_STREQ(err, "err\n");
    CHECK_STREQ(got, "got in\n");
    int code = -1;
    CHECK_EQ(nest_process_wait(&p1, &code), 0);
    CHECK_EQ(code, 0);
    CHECK_EQ(nest_process_wait(&p2, &code), 0);
    CHECK_EQ(code, 0);
    CHECK_EQ(nest_process_close(&p1), 0);
    CHECK_EQ(nest_process_close(&p2), 0);
    CHECK_EQ(count_fds(), fds);
    return 0;
}

NEST_TEST(stdio_fd_sources_0_1_2_land_where_asked) { CHECK_EQ(run_mock(low_fds_body, NULL), 0); }

/* ---- out of memory ------------------------------------------------------------ */

static long fail_after;
static int ooms;

static int oom_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    char *argv[4];
    sh_argv("read x; echo \"<$x>\"; echo err >&2", argv);
    nest_process_options o = pipes(1, 1, 1);
    char out[16], err[16];
    nest_process_io io = {0};
    io.input = "in\n";
    io.input_len = 3;
    io.out = out;
    io.out_cap = sizeof out;
    io.err = err;
    io.err_cap = sizeof err;
    mem.fail_from = mem.calls + fail_after;
    int rc = nest_process_run("/bin/sh", argv, &o, &io);
    mem.fail_from = 0;
    if (rc == -ENOMEM) {
        ooms++;
    } else {
        CHECK_EQ(rc, 0);
        CHECK_EQ(io.returncode, 0);
        CHECK_EQ(io.out_len, 5);
        CHECK(memcmp(out, "<in>\n", 5) == 0);
        CHECK_EQ(io.err_len, 4);
    }
    CHECK_EQ(count_fds(), fds);
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
    return rc == -ENOMEM ? 1 : 0;
}

static void oom_loop(void) {
    for (fail_after = 1;; fail_after++) {
        CHECK(fail_after < 200);
        if (run_counted(oom_body) == 0) break;
    }
    CHECK(ooms > 0); /* some allocation was failed on purpose */
}

NEST_TEST(out_of_memory_at_every_allocation_leaks_nothing) { oom_loop(); }
NEST_TEST(out_of_memory_at_every_allocation_leaks_nothing_thread) {
    nest__process_force_thread(1);
    oom_loop();
}

/* ---- pipe streams keep their watchers ------------------------------------------ */

struct pump_ctx {
    nest_stream *s;
    char *buf;
    size_t len;
};

static int pump_in(void *arg) {
    struct pump_ctx *c = arg;
    return nest_stream_send_all(c->s, c->buf, c->len, NULL);
}

/* Several messages through cat, both ways at once: 1 MiB into a 64 KiB
 * pipe makes the writer wait for writability again and again while the
 * reader waits for data.  Both streams wait through nest__wait_stable,
 * whose record says which directions have a watcher set up. */
static int round_trip_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    nest_process p;
    nest_process_options o = pipes(1, 1, 0);
    char *argv[] = {"cat", NULL};
    CHECK_EQ(nest_process_spawn(&p, "/bin/cat", argv, &o), 0);
    nest_pipe_stream *in = (nest_pipe_stream *)p.stdin_, *out = (nest_pipe_stream *)p.stdout_;
    CHECK_EQ(in->waited, 0);
    CHECK_EQ(out->waited, 0);
    for (int i = 0; i < 5; i++) { /* ping-pong: each reply is waited for */
        char msg[32], got[32];
        int len = snprintf(msg, sizeof msg, "message %d\n", i);
        CHECK_EQ(nest_stream_send_all(p.stdin_, msg, (size_t)len, NULL), 0);
        size_t n = 0;
        while (n < (size_t)len) {
            ssize_t r = nest_stream_receive_some(p.stdout_, got + n, sizeof got - n);
            CHECK(r > 0);
            n += (size_t)r;
        }
        CHECK_EQ(n, (size_t)len);
        CHECK(memcmp(got, msg, n) == 0);
    }
    static char big[1 << 20], back[1 << 20];
    for (int round = 0; round < 3; round++) {
        for (size_t j = 0; j < sizeof big; j++) big[j] = (char)(j * 7 + (size_t)round);
        struct pump_ctx c = {p.stdin_, big, sizeof big};
        nest_nursery n;
        nest_nursery_open(&n);
        CHECK_EQ(nest_spawn(&n, pump_in, &c), 0);
        size_t got = 0;
        while (got < sizeof back) {
            ssize_t r = nest_stream_receive_some(p.stdout_, back + got, sizeof back - got);
            CHECK(r > 0);
            got += (size_t)r;
        }
        CHECK_EQ(nest_nursery_close(&n, 0), 0);
        CHECK(memcmp(big, back, sizeof big) == 0);
    }
    CHECK_EQ(in->waited, 2u);  /* the write end waited for writability */
    CHECK_EQ(out->waited, 1u); /* the read end for data */
    CHECK_EQ(nest_stream_send_eof(p.stdin_), 0);
    char rest[8];
    CHECK_EQ(nest_stream_receive_some(p.stdout_, rest, sizeof rest), 0);
    int code = -1;
    CHECK_EQ(nest_process_wait(&p, &code), 0);
    CHECK_EQ(code, 0);
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(count_fds(), fds);
    return 0;
}

NEST_TEST(pipe_round_trips_through_cat_wait_in_both_directions) {
    CHECK_EQ(run_mock(round_trip_body, NULL), 0);
}

/* ---- process groups -------------------------------------------------------------- */

/* Reads one line of s (byte by byte) and returns it as a pid. */
static pid_t read_pid_line(nest_stream *s) {
    char line[32];
    size_t len = 0;
    for (;;) {
        CHECK_EQ(nest_stream_receive_some(s, line + len, 1), 1);
        if (line[len] == '\n') break;
        CHECK(++len < sizeof line);
    }
    line[len] = 0;
    return (pid_t)atoi(line);
}

/* The shell starts a grandchild that ignores SIGTERM and holds the only
 * write end of the handshake pipe (the shell closes its own copy after
 * printing the grandchild's pid), then waits: so EOF on the pipe means
 * the grandchild has exited, and "no EOF yet" means it still runs. */
#define GRANDCHILD_SCRIPT "(trap '' TERM; exec sleep 1000) & echo $!; exec >&-; wait"

static int spawn_with_grandchild(nest_process *p, int new_group, nest_pipe_stream *r, pid_t *gpid) {
    int hs[2];
    CHECK_EQ(pipe2(hs, O_CLOEXEC), 0);
    nest_process_options o = pipes(0, 0, 0);
    o.stdio[1] = NEST_STDIO_FD;
    o.stdio_fd[1] = hs[1];
    o.new_group = new_group;
    CHECK_EQ(spawn_sh(p, GRANDCHILD_SCRIPT, &o), 0);
    close(hs[1]);
    CHECK_EQ(nest_pipe_stream_init(r, hs[0]), 0);
    *gpid = read_pid_line(&r->stream);
    CHECK(*gpid > 0);
    return 0;
}

/* With new_group, close's SIGTERM ends the shell, and the SIGKILL to the
 * group sent before the shell is reaped ends the grandchild, which
 * ignores SIGTERM.  The mock clock never jumps, so the grace period never
 * ends: the grandchild's death can only come from that group SIGKILL. */
static int group_close_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    nest_process p;
    nest_pipe_stream r;
    pid_t gpid;
    spawn_with_grandchild(&p, 1, &r, &gpid);
    CHECK_EQ(getpgid(p.pid), p.pid); /* a group of its own, */
    CHECK_EQ(getpgid(gpid), p.pid);  /* which the grandchild is in */
    CHECK(getpgid(0) != p.pid);
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(p.returncode, -SIGTERM);
    CHECK_EQ(nest_now(), 0);
    char c;
    CHECK_EQ(nest_stream_receive_some(&r.stream, &c, 1), 0); /* EOF: the grandchild is gone */
    nest_stream_close(&r.stream);
    CHECK_EQ(count_fds(), fds);
    return 0;
}

NEST_TEST(new_group_close_ends_the_grandchildren_too) {
    CHECK_EQ(run_frozen(group_close_body), 0);
}
NEST_TEST(new_group_close_ends_the_grandchildren_too_thread) {
    nest__process_force_thread(1);
    CHECK_EQ(run_frozen(group_close_body), 0);
}

/* Without new_group (the default) only the shell is signalled: the
 * grandchild outlives the close, in the test's own group. */
static int no_group_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_pipe_stream r;
    pid_t gpid;
    spawn_with_grandchild(&p, 0, &r, &gpid);
    CHECK_EQ(getpgid(p.pid), getpgid(0));
    CHECK_EQ(nest_process_close(&p), 0);
    CHECK_EQ(p.returncode, -SIGTERM);
    char c;
    CHECK_EQ(read(r.fd, &c, 1), -1); /* the write end is still open: */
    CHECK_EQ(errno, EAGAIN);
    CHECK_EQ(kill(gpid, 0), 0); /* the grandchild runs on */
    CHECK_EQ(kill(gpid, SIGKILL), 0);
    CHECK_EQ(nest_stream_receive_some(&r.stream, &c, 1), 0); /* and ends now */
    nest_stream_close(&r.stream);
    return 0;
}

NEST_TEST(without_new_group_a_grandchild_outlives_the_close) {
    CHECK_EQ(run_frozen(no_group_body), 0);
}

/* A nest_process_run cancelled: the ladder's signals reach the group.
 * Shell and grandchild both ignore SIGTERM; the SIGKILL after the grace
 * period ends both. */
static int group_canceller(void *arg) {
    nest_pipe_stream *r = arg;
    pid_t gpid = read_pid_line(&r->stream);
    CHECK(gpid > 0);
    note("ready@%lld", ms());
    nest_scope_cancel(&run_scope);
    char c;
    CHECK_EQ(nest_stream_receive_some(&r->stream, &c, 1), 0); /* the grandchild ended */
    nest_stream_close(&r->stream);
    return 0;
}

static int group_run_cancel_body(void *arg) {
    (void)arg;
    int fds = count_fds();
    int hs[2];
    CHECK_EQ(pipe2(hs, O_CLOEXEC), 0);
    nest_pipe_stream r;
    CHECK_EQ(nest_pipe_stream_init(&r, hs[0]), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, group_canceller, &r), 0);
    nest_process_options o = pipes(0, 0, 0);
    o.stdio[1] = NEST_STDIO_FD;
    o.stdio_fd[1] = hs[1];
    o.new_group = 1;
    char *argv[4];
    sh_argv("trap '' TERM; " GRANDCHILD_SCRIPT, argv);
    nest_process_io io = {0};
    nest_scope_enter(&run_scope, NEST_FOREVER);
    int rc = nest_process_run("/bin/sh", argv, &o, &io);
    note("run %s@%lld", nest_err_name(rc), ms());
    CHECK_EQ(nest_scope_exit(&run_scope, rc), 0);
    close(hs[1]);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_STREQ(events, "ready@0 run ECANCELED@5000");
    CHECK_EQ(io.returncode, -SIGKILL);
    CHECK_EQ(count_fds(), fds);
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
    return 0;
}

NEST_TEST(new_group_cancelled_run_ends_the_grandchildren_too) {
    CHECK_EQ(run_mock(group_run_cancel_body, NULL), 0);
}
NEST_TEST(new_group_cancelled_run_ends_the_grandchildren_too_thread) {
    CHECK_EQ(run_thread_mode(group_run_cancel_body), 0);
}

/* A shell that exits at once, leaving a grandchild with its stdout: run
 * would wait for the grandchild (the pipe has not ended), but with
 * new_group the reap of the shell kills it, and the output ends.  Also
 * nest_process_kill reaches the whole group. */
static int group_run_exit_body(void *arg) {
    (void)arg;
    char *argv[4];
    sh_argv("sleep 1000 & echo started", argv);
    nest_process_options o = pipes(0, 1, 0);
    o.new_group = 1;
    char out[16];
    nest_process_io io = {0};
    io.out = out;
    io.out_cap = sizeof out;
    CHECK_EQ(nest_process_run("/bin/sh", argv, &o, &io), 0);
    CHECK_EQ(io.returncode, 0);
    CHECK_EQ(io.out_len, 8);
    CHECK(memcmp(out, "started\n", 8) == 0);

    nest_process p;
    nest_pipe_stream r;
    pid_t gpid;
    spawn_with_grandchild(&p, 1, &r, &gpid);
    CHECK_EQ(nest_process_kill(&p), 0);
    char c;
    CHECK_EQ(nest_stream_receive_some(&r.stream, &c, 1), 0); /* the grandchild got it too */
    int code = 0;
    CHECK_EQ(nest_process_wait(&p, &code), 0);
    CHECK_EQ(code, -SIGKILL);
    CHECK_EQ(nest_process_kill(&p), 0); /* reaped: nothing is sent to the group */
    nest_stream_close(&r.stream);
    return nest_process_close(&p);
}

NEST_TEST(new_group_reaping_the_leader_ends_its_group) {
    CHECK_EQ(run_frozen(group_run_exit_body), 0);
}
NEST_TEST(new_group_reaping_the_leader_ends_its_group_thread) {
    nest__process_force_thread(1);
    CHECK_EQ(run_frozen(group_run_exit_body), 0);
}

/* ---- pid reuse ------------------------------------------------------------------ */

/* The program breaks the rule and reaps nest's child itself; its pid is
 * then free for reuse.  Reuse is simulated by pointing p.pid at another
 * child of the program (the victim): with a pidfd, nest signals and reaps
 * through it and so never touches the victim. */
static int reuse_body(void *arg) {
    (void)arg;
    nest_process p;
    nest_process_options o = pipes(0, 0, 0);
    char *t[] = {"true", NULL};
    CHECK_EQ(nest_process_spawn(&p, "/bin/true", t, &o), 0);
    char target[128];
    fd_target(p.exit_fd, target, sizeof target);
    if (!strstr(target, "pidfd")) {
        nest_process_close(&p);
        NEST_SKIP("this kernel has no pidfd_open");
    }
    int st;
    CHECK_EQ(waitpid(p.pid, &st, 0), p.pid); /* behind nest's back */
    pid_t victim;
    char *sl[] = {"sleep", "1000", NULL};
    CHECK_EQ(posix_spawn(&victim, "/bin/sleep", NULL, NULL, sl, environ), 0);
    p.pid = victim; /* as if the pid had been reused */
    CHECK_EQ(nest_process_kill(&p), -ESRCH);
    CHECK_EQ(nest_process_poll(&p, NULL), -ECHILD);
    CHECK_EQ(waitpid(victim, &st, WNOHANG), 0); /* alive, not reaped */
    CHECK_EQ(nest_process_close(&p), -ECHILD);
    CHECK_EQ(waitpid(victim, &st, WNOHANG), 0);
    CHECK_EQ(kill(victim, SIGKILL), 0);
    CHECK_EQ(waitpid(victim, &st, 0), victim);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    return 0;
}

NEST_TEST(with_a_pidfd_a_reused_pid_is_never_signalled_or_reaped) {
    CHECK_EQ(run_mock(reuse_body, NULL), 0);
}

/* ---- misuse ---------------------------------------------------------------------- */

static int unclosed_body(void *arg) {
    (void)arg;
    nest_process p, q;
    nest_process_options o = pipes(1, 0, 0); /* cat ends when we die */
    char *argv[] = {"cat", NULL};
    CHECK_EQ(spawn_sh(&q, "exit 0", &o), 0);
    CHECK_EQ(nest_process_spawn(&p, "/bin/cat", argv, &o), 0);
    CHECK_EQ(nest_process_close(&q), 0); /* closed (behind p in the list): not reported */
    return 0;
}

NEST_TEST(a_process_left_unclosed_aborts_at_the_end_of_the_run) {
    const char *texts[] = {"1 process not closed",
                           "nest_process_spawn() must be matched by nest_process_close() before "
                           "the run ends",
                           "(cat)", NULL};
    expect_abort(unclosed_body, texts);
}
NEST_TEST(a_process_left_unclosed_aborts_at_the_end_of_the_run_thread) {
    nest__process_force_thread(1);
    const char *texts[] = {"1 process not closed", "(cat)", NULL};
    expect_abort(unclosed_body, texts);
}

static int never_spawned(void *arg) {
    (void)arg;
    nest_process p;
    memset(&p, 0, sizeof p);
    nest_process_wait(&p, NULL);
    return 0;
}

NEST_TEST(waiting_for_a_process_never_spawned_aborts) {
    const char *texts[] = {"nest_process_wait", "never spawned", NULL};
    expect_abort(never_spawned, texts);
}

static int closer(void *arg) {
    (void)arg;
    nest_process_close(&shared);
    return 0;
}

static int double_close(void *arg) {
    (void)arg;
    nest_process_options o = pipes(0, 1, 0);
    CHECK_EQ(spawn_sh(&shared, "echo ready; exec sleep 1000", &o), 0);
    expect_line(shared.stdout_, "ready");
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, closer, NULL), 0);
    /* It sent SIGTERM (which ends the child even after the abort below)
     * and waits for the exit. */
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_process_close(&shared);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(closing_from_two_tasks_at_once_aborts) {
    const char *texts[] = {"nest_process_close", "already being closed", NULL};
    expect_abort(double_close, texts);
}
