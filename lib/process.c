/*
 * lib/process.c - child processes (nest/process.h) and pipe streams.
 *
 * Owns: nest_pipe_stream (a stream over one end of a pipe), spawning with
 * posix_spawn, the exit notification (a pidfd, or a watcher thread), the
 * reaping of children, the termination ladder (term_signal, grace,
 * SIGKILL) and nest_process_run.  See design/12-subprocesses.md.
 *
 * Invariants:
 *  - A spawned child is reaped exactly once, by the runtime's thread
 *    (try_reap), and only after its exit fd became readable or waitpid
 *    says it exited: until then its pid is ours, so kill() can never hit
 *    another process.  Once P_REAPED is set nothing signals the pid again.
 *    That holds only while the program keeps the rule of nest/process.h
 *    (it never reaps nest's children); where a pidfd exists, signals and
 *    reaps go through it (send_signal, wait_status), which stays safe
 *    even when the rule is broken.
 *  - Every live (spawned, unclosed) process has a record (struct
 *    nest__proc_rec, allocated before the spawn and freed by close) on its
 *    runtime's list rt->procs; nest__process_check_closed aborts a run
 *    that ends with one left.  The record, not the nest_process, is on the
 *    list: an unclosed nest_process is often on a task stack that is gone
 *    by the end of the run.
 *  - p->exit_fd is readable once the child has exited: a pidfd (Linux), or
 *    the read end of a pipe whose write end the watcher thread closes when
 *    waitid(WNOWAIT) returns.  A task waits for it with block kind
 *    NEST__BLOCK_PROCESS, so dumps name the pid.  At most one task waits
 *    (p->waiter points at its record on its own stack, which is also the
 *    busy check); close marks the record and wakes it with NEST_ECLOSED
 *    (nest_notify_closing) before closing anything, and a woken wait reads
 *    its record before it touches p again.
 *  - The watcher thread touches only its own struct nest__proc_watch
 *    (pid, wfd: written before pthread_create) and the kernel; the runtime
 *    joins it (after seeing EOF on the pipe, so the join is immediate)
 *    before close frees the record that holds the struct.  Its pid can
 *    never be reused while it waits: the child is reaped only after the
 *    thread's waitid has returned.
 *  - nest_process_close always reaps: the ladder runs in a shielded scope,
 *    and if waiting fails for another reason (out of memory for the fd
 *    table) the child is SIGKILLed and reaped with a blocking waitpid.
 *  - Pipe writes never raise SIGPIPE (see write_nosigpipe).
 *  - A pipe stream's fd is closed only through nest__fd_close (close,
 *    send_eof), so its waits reuse their watcher (nest__wait_stable, as
 *    socket streams do; design/10-io-and-sockets.md).
 *  - With new_group (P_GROUP) the child leads a process group whose id is
 *    its pid, and the group is signalled only while the leader is
 *    unreaped: the leader, even as a zombie, keeps that id from naming any
 *    other group.  Every reap of a leader is preceded by a SIGKILL to its
 *    group, sent once the leader is known to have exited (waitid WNOWAIT,
 *    or the watcher's EOF) - the last moment the group can be reached.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "core.h"
#include "nest/process.h"
#include "proc.h"
#include "sock.h"

extern char **environ;

#define PROC_LIVE 0x70726f63u   /* "proc": spawned, not closed */
#define PROC_CLOSED 0x636c6f73u /* "clos": nest_process_close returned */

enum {
    P_REAPED = 1u << 0,    /* returncode is known (or lost); the pid is not ours */
    P_LOST = 1u << 1,      /* someone else reaped it: waits return -ECHILD */
    P_CLOSING = 1u << 2,   /* nest_process_close is running */
    P_HAS_PIDFD = 1u << 3, /* exit_fd is a pidfd */
    P_GROUP = 1u << 4,     /* new_group: signals go to the process group */
};

/* ---- pipe streams ---------------------------------------------------------- */

/* write(2) without SIGPIPE: a write to a pipe without readers raises
 * SIGPIPE in the writing thread, which kills the process by default.  So
 * SIGPIPE is blocked around the write, and the one the write raised is
 * taken off the thread's pending set before it is unblocked.  If the
 * thread already blocked SIGPIPE, nothing is changed: a SIGPIPE pending
 * then may be the program's own.  Returns the count or a negated errno. */
static ssize_t write_nosigpipe(int fd, const void *buf, size_t len) {
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t n = write(fd, buf, len);
    int err = n < 0 ? errno : 0;
    if (err == EPIPE && !sigismember(&old, SIGPIPE)) {
        /* SIGPIPE was not blocked before, so none was pending: this one is
         * ours (or, if SIGPIPE is ignored, there is none and this returns
         * at once). */
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return n < 0 ? -err : n;
}

static int pipe_send_all(nest_stream *s, const void *buf, size_t len, size_t *sent,
                         nest_stream_op *op) {
    nest_pipe_stream *ps = (nest_pipe_stream *)s;
    int fd = ps->fd;
    const char *p = buf;
    size_t total = 0;
    int waited = 0;
    while (total < len) {
        ssize_t n = write_nosigpipe(fd, p + total, len - total);
        if (n >= 0) {
            total += (size_t)n;
            continue;
        }
        if (n == -EINTR) continue;
        if (n != -EAGAIN && n != -EWOULDBLOCK) {
            *sent = total;
            return (int)n;
        }
        int rc = nest__wait_stable(fd, 1, &ps->waited);
        waited = 1;
        if (op->closed || rc < 0) {
            *sent = total;
            return rc < 0 ? rc : NEST_ECLOSED;
        }
    }
    *sent = total;
    if (!waited) (void)nest_checkpoint(); /* cannot fail: see nest_stream_vtable */
    return 0;
}

static ssize_t pipe_receive_some(nest_stream *s, void *buf, size_t max, nest_stream_op *op) {
    nest_pipe_stream *ps = (nest_pipe_stream *)s;
    int fd = ps->fd;
    int waited = 0;
    for (;;) {
        ssize_t n = read(fd, buf, max);
        if (n >= 0) {
            if (!waited) (void)nest_checkpoint(); /* cannot fail: see nest_stream_vtable */
            return n;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return nest__neg_errno();
        int rc = nest__wait_stable(fd, 0, &ps->waited);
        waited = 1;
        if (op->closed || rc < 0) return rc < 0 ? rc : NEST_ECLOSED;
    }
}

/* A pipe cannot half-close: EOF for the reader is the write end's close.
 * So send_eof closes a write-only end (nobody can receive on it: a
 * concurrent receive would be on a descriptor that cannot read). */
static int pipe_send_eof(nest_stream *s, nest_stream_op *op) {
    (void)op;
    nest_pipe_stream *ps = (nest_pipe_stream *)s;
    int fl = fcntl(ps->fd, F_GETFL);
    if (fl < 0) return nest__neg_errno();
    if ((fl & O_ACCMODE) == O_RDONLY) return -EBADF;
    if ((fl & O_ACCMODE) != O_WRONLY) return -EOPNOTSUPP;
    int fd = ps->fd;
    ps->fd = -1;
    nest__fd_close(fd);
    return 0;
}

static int pipe_close(nest_stream *s) {
    nest_pipe_stream *ps = (nest_pipe_stream *)s;
    int fd = ps->fd;
    ps->fd = -1;
    nest__fd_close(fd);
    return 0;
}

static const nest_stream_vtable pipe_vt = {
    "pipe", pipe_send_all, pipe_receive_some, pipe_send_eof, pipe_close,
};

int nest_pipe_stream_init(nest_pipe_stream *s, int fd) {
    if (fd < 0) return -EBADF;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return nest__neg_errno();
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return nest__neg_errno();
    nest_stream_init(&s->stream, &pipe_vt);
    s->fd = fd;
    s->waited = 0;
    return 0;
}

/* ---- noticing the exit ------------------------------------------------------ */

static _Atomic int force_thread; /* tests: never use pidfds */
static _Atomic int no_pidfd;     /* pidfd_open was refused once: stop trying */

void nest__process_force_thread(int on) { atomic_store(&force_thread, on != 0); }

struct nest__proc_watch {
    pthread_t thread;
    pid_t pid;
    int wfd; /* closed by the thread when the child has exited */
};

/* What a live process has on the heap: the watcher's struct (used only on
 * that path) and its entry in the runtime's list of live processes. */
struct nest__proc_rec {
    struct nest__proc_watch watch;
    struct nest__proc_rec *next, **prev; /* rt->procs */
    pid_t pid;
    char name[16]; /* the program's name, truncated, for the abort */
};

/* The watcher thread: waits, without reaping, until the child has exited
 * (Trio's fallback), then closes its end of the pipe, which makes the
 * runtime's end readable (EOF). */
static void *watch_main(void *arg) {
    struct nest__proc_watch *w = arg;
    siginfo_t si;
    while (waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
    }
    close(w->wfd);
    return NULL;
}

/* Starts the watcher for p->pid with the struct w (p's record's); on
 * success p->watch is w and p->exit_fd is its pipe. */
static int watch_start(nest_process *p, struct nest__proc_watch *w) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) return nest__neg_errno();
    w->pid = p->pid;
    w->wfd = fds[1];
    /* The thread runs with every signal blocked: signals meant for the
     * program are then delivered to its own threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&w->thread, NULL, watch_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        close(fds[0]);
        close(fds[1]);
        return -err;
    }
    p->watch = w;
    p->exit_fd = fds[0];
    return 0;
}

static int pidfd_open_(pid_t pid) {
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0); /* always close-on-exec */
    return fd < 0 ? nest__neg_errno() : fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

static int want_thread(void) { return atomic_load(&force_thread) || atomic_load(&no_pidfd); }

/* The exit fd is a pidfd (not the watcher's pipe, not closed yet). */
static int has_pidfd(const nest_process *p) {
    return (p->flags & P_HAS_PIDFD) && p->exit_fd >= 0;
}

#define NEST_PIDFD_SIGNAL_PROCESS_GROUP (1u << 2) /* Linux >= 6.9; C libraries lack it */

/* pidfd_send_signal(2): 0 or a negated errno (-ENOSYS without it). */
static int pidfd_signal(int pidfd, int sig, unsigned flags) {
#ifdef SYS_pidfd_send_signal
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, flags) == 0 ? 0 : nest__neg_errno();
#else
    (void)pidfd, (void)sig, (void)flags;
    return -ENOSYS;
#endif
}

/* Sends sig to the child, or with P_GROUP to its process group: through
 * its pidfd when there is one, so that a pid reaped behind nest's back
 * and reused can never be hit; else (the watcher thread, or a kernel
 * without pidfd_send_signal) with kill(2), correct under the rule that
 * nobody else reaps our children.  Callers send only while the child is
 * unreaped, which is what keeps its pid, and so its group id, ours.
 * Returns 0 or a negated errno. */
static int send_signal(nest_process *p, int sig) {
    int group = (p->flags & P_GROUP) != 0;
    if (has_pidfd(p)) {
        int rc = pidfd_signal(p->exit_fd, sig, group ? NEST_PIDFD_SIGNAL_PROCESS_GROUP : 0);
        if (rc == -EINVAL && group) {
            /* A kernel before 6.9 does not know the flag.  Signal 0 through
             * the pidfd checks that the leader is still ours (not reaped
             * behind nest's back), and then its id names its group. */
            rc = pidfd_signal(p->exit_fd, 0, 0);
            if (rc == 0) rc = -ENOSYS; /* go on with kill(2) */
        }
        if (rc != -ENOSYS) return rc;
    }
    return kill(group ? -p->pid : p->pid, sig) < 0 ? nest__neg_errno() : 0;
}

/* Blocks until p->exit_fd is readable: the fd wait of lib/fd.c, parked
 * with the process kind so that dumps and traces name the pid.  A
 * checkpoint; returns 0, -ECANCELED, NEST_ECLOSED (close), -ENOMEM. */
static int wait_exit_fd(nest_process *p) {
    return nest__wait_fd_as(p->exit_fd, 0, NEST__WATCH_PLAIN, NEST__BLOCK_PROCESS,
                            (const void *)(intptr_t)p->pid, "nest_process_wait");
}

/* ---- reaping ---------------------------------------------------------------- */

static int decode_status(int st) {
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return -WTERMSIG(st);
    return 0; /* not reached: only WEXITED is asked for */
}

#ifdef __linux__
#define NEST_P_PIDFD 3 /* waitid's P_PIDFD (Linux >= 5.4), which older C libraries lack */
#endif

/* Reaps the child (flags: WNOHANG or 0).  Returns 1 with its returncode
 * in *code, 0 while it runs (WNOHANG), or a negated errno (-ECHILD: its
 * status was taken by someone else).  With a pidfd it waits through it
 * (waitid P_PIDFD), so that a pid reaped behind nest's back and reused by
 * another of the program's children is never reaped by mistake; a kernel
 * without P_PIDFD (5.3) says EINVAL, and then waitpid is used. */
static int wait_status(nest_process *p, int flags, int *code) {
#ifdef NEST_P_PIDFD
    if (has_pidfd(p)) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int r;
        while ((r = waitid((idtype_t)NEST_P_PIDFD, (id_t)p->exit_fd, &si, WEXITED | flags)) < 0 &&
               errno == EINTR) {
        }
        if (r == 0) {
            if (si.si_pid == 0) return 0; /* WNOHANG: still running */
            *code = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
            return 1;
        }
        if (errno != EINVAL) return nest__neg_errno();
    }
#endif
    int st = 0;
    pid_t r;
    while ((r = waitpid(p->pid, &st, flags)) < 0 && errno == EINTR) {
    }
    if (r < 0) return nest__neg_errno();
    if (r == 0) return 0;
    *code = decode_status(st);
    return 1;
}

/* Whether the child has exited, without reaping it (waitid with
 * WNOWAIT): 1 when it is a zombie, 0 while it runs, or a negated errno
 * (-ECHILD: someone else reaped it).  Through the pidfd where there is
 * one, as wait_status. */
static int peek_exit(nest_process *p) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = -1;
    const int opts = WEXITED | WNOHANG | WNOWAIT;
#ifdef NEST_P_PIDFD
    if (has_pidfd(p)) {
        while ((r = waitid((idtype_t)NEST_P_PIDFD, (id_t)p->exit_fd, &si, opts)) < 0 &&
               errno == EINTR) {
        }
        if (r < 0 && errno != EINVAL) return nest__neg_errno();
    }
#endif
    if (r < 0) {
        while ((r = waitid(P_PID, (id_t)p->pid, &si, opts)) < 0 && errno == EINTR) {
        }
        if (r < 0) return nest__neg_errno();
    }
    return si.si_pid != 0;
}

/* Lets go of what noticed the exit: joins the watcher (which closed its
 * own end of the pipe before we could see EOF, so the join is immediate)
 * and closes the exit fd. */
static void exit_watch_release(nest_process *p) {
    if (p->watch) {
        pthread_join(p->watch->thread, NULL);
        p->watch = NULL; /* the struct is in p->rec */
    }
    int fd = p->exit_fd;
    p->exit_fd = -1;
    p->flags &= ~(unsigned)P_HAS_PIDFD;
    nest__fd_close(fd);
}

/* Reaps the child if it has exited.  Returns 1 when reaped (now or
 * before), 0 while it runs, -ECHILD when its status was lost.  Never
 * blocks for long: with a watcher, waitpid runs only after the thread saw
 * the exit.  A group leader's group gets SIGKILL first, while the zombie
 * still pins the group id (after the reap, the id may be reused). */
static int try_reap(nest_process *p) {
    if (p->flags & P_REAPED) return (p->flags & P_LOST) ? -ECHILD : 1;
    int flags = WNOHANG, exited = 0;
    if (p->watch) {
        char c;
        ssize_t n = read(p->exit_fd, &c, 1);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
        flags = 0; /* EOF: the child is a zombie, waitpid returns at once */
        exited = 1;
    }
    if (p->flags & P_GROUP) {
        if (!exited) {
            int r = peek_exit(p);
            if (r == 0) return 0;
            exited = r > 0; /* r < 0: lost, and wait_status reports it */
        }
        if (exited) (void)send_signal(p, SIGKILL);
    }
    int code = 0;
    int r = wait_status(p, flags, &code);
    if (r == 0) return 0;
    exit_watch_release(p);
    p->flags |= P_REAPED;
    if (r < 0) {
        p->flags |= P_LOST;
        p->returncode = 0;
        return -ECHILD;
    }
    p->returncode = code;
    return 1;
}

/* Waits for the exit and reaps.  A checkpoint; 0 or an error. */
static int reap_wait(nest_process *p) {
    for (;;) {
        int rc = try_reap(p);
        if (rc != 0) return rc < 0 ? rc : 0;
        rc = wait_exit_fd(p);
        if (rc < 0) return rc;
    }
}

/* Kills and reaps without blocking the runtime for more than the kernel's
 * time to end a SIGKILLed process.  For paths that cannot wait as a task
 * (spawn's own failure, close after a failed wait).  The blocking wait
 * relies on the rule that the program does not reap our children: with
 * SIGCHLD set to SIG_IGN the kernel reaps them itself, and POSIX lets a
 * blocking waitpid(pid) then return (ECHILD) only once all of them have
 * exited (Linux returns when this one has). */
static void kill_and_reap_now(nest_process *p) {
    if (!(p->flags & P_REAPED)) {
        (void)send_signal(p, SIGKILL);
        if (p->watch) { /* its waitid returns now; the pid is not reaped before */
            pthread_join(p->watch->thread, NULL);
            p->watch = NULL;
        }
        int code = 0;
        int r = wait_status(p, 0, &code);
        p->flags |= P_REAPED;
        if (r < 0)
            p->flags |= P_LOST;
        else
            p->returncode = code;
    }
    exit_watch_release(p);
}

/* The termination ladder: term_signal, up to grace for the exit, SIGKILL,
 * and the reap.  Shielded, so it runs to the end in a cancelled scope. */
static int terminate_and_reap(nest_process *p) {
    int rc = try_reap(p);
    if (rc != 0) return rc < 0 ? rc : 0;
    nest_scope shield;
    nest_scope_enter(&shield, NEST_FOREVER);
    nest_scope_set_shield(&shield, 1);
    if (p->term_signal > 0 && p->grace > 0) {
        (void)send_signal(p, p->term_signal);
        nest_scope grace;
        nest_move_on_after(&grace, p->grace);
        rc = reap_wait(p);
        rc = nest_scope_exit(&grace, rc);
    }
    if (!(p->flags & P_REAPED)) {
        (void)send_signal(p, SIGKILL);
        rc = reap_wait(p);
    }
    nest_scope_exit(&shield, 0);
    if (!(p->flags & P_REAPED)) kill_and_reap_now(p); /* the wait itself failed */
    return (p->flags & P_LOST) ? -ECHILD : 0;
}

/* ---- spawning ---------------------------------------------------------------- */

void nest_process_options_init(nest_process_options *o) {
    memset(o, 0, sizeof *o);
    o->stdio_fd[0] = o->stdio_fd[1] = o->stdio_fd[2] = -1;
    o->grace = NEST_SEC(5);
    o->term_signal = SIGTERM;
}

/* Moves fd to a number >= 3, so that the child's dup2 onto 0, 1, 2 can
 * never overwrite a pipe end still to be duplicated (possible when the
 * parent runs with fd 0, 1 or 2 closed). */
static int move_up(int fd) {
    if (fd >= 3) return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int err = errno;
    close(fd);
    return nfd >= 0 ? nfd : -err;
}

static int check_options(const char *path, char *const argv[], const nest_process_options *o) {
    if (!path || !argv) return -EINVAL;
    for (int i = 0; i < 3; i++) {
        int m = o->stdio[i];
        if (m < NEST_STDIO_INHERIT || m > NEST_STDIO_STDOUT) return -EINVAL;
        if (m == NEST_STDIO_STDOUT && i != 2) return -EINVAL;
        if (m == NEST_STDIO_FD && o->stdio_fd[i] < 0) return -EBADF;
    }
    if (o->grace < 0 || o->term_signal < 0 || o->term_signal >= 65) return -EINVAL;
    return 0;
}

/* Sets up fd i of the child in fa; for a pipe, *parent_end is ours.
 * *child_end is a parent's fd to close once the child has been started. */
static int stdio_action(posix_spawn_file_actions_t *fa, const nest_process_options *o, int i,
                        int *parent_end, int *child_end) {
    int fds[2];
    switch (o->stdio[i]) {
    case NEST_STDIO_PIPE:
        if (pipe2(fds, O_CLOEXEC) < 0) return nest__neg_errno();
        if ((fds[0] = move_up(fds[0])) < 0 || (fds[1] = move_up(fds[1])) < 0) {
            int rc = fds[0] < 0 ? fds[0] : fds[1];
            if (fds[0] >= 0) close(fds[0]);
            if (fds[1] >= 0) close(fds[1]);
            return rc;
        }
        *child_end = fds[i == 0 ? 0 : 1];
        *parent_end = fds[i == 0 ? 1 : 0];
        if (fcntl(*parent_end, F_SETFL, O_NONBLOCK) < 0) return nest__neg_errno();
        return -posix_spawn_file_actions_adddup2(fa, *child_end, i);
    case NEST_STDIO_DEVNULL:
        return -posix_spawn_file_actions_addopen(fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY,
                                                 0);
    case NEST_STDIO_FD:
        if (o->stdio_fd[i] >= 3) return -posix_spawn_file_actions_adddup2(fa, o->stdio_fd[i], i);
        /* The actions run in order, so a source among 0, 1, 2 may already
         * have been replaced in the child by an earlier one (stdout and
         * stderr swapped; the parent's stdin given as stdout while stdin
         * is a pipe).  A copy above 2, made now in the parent, still is
         * the fd the caller meant when its turn comes. */
        if ((*child_end = fcntl(o->stdio_fd[i], F_DUPFD_CLOEXEC, 3)) < 0) return nest__neg_errno();
        return -posix_spawn_file_actions_adddup2(fa, *child_end, i);
    case NEST_STDIO_STDOUT:
        return -posix_spawn_file_actions_adddup2(fa, 1, 2);
    default:
        return 0;
    }
}

static int spawn_attrs(posix_spawnattr_t *at, const nest_process_options *o) {
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGXFSZ);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    int rc = posix_spawnattr_setsigmask(at, &none);
    if (!rc) rc = posix_spawnattr_setsigdefault(at, &dfl);
    if (!rc && o->new_group) {
        rc = posix_spawnattr_setpgroup(at, 0); /* 0: a group named by the child's pid */
        flags |= POSIX_SPAWN_SETPGROUP;
    }
    if (!rc) rc = posix_spawnattr_setflags(at, flags);
    return -rc;
}

/* Everything spawn does with the file actions ready; fills p->pid. */
static int do_spawn(nest_process *p, const char *path, char *const argv[],
                    const nest_process_options *o, int parent_end[3], int child_end[3]) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int rc = -posix_spawn_file_actions_init(&fa);
    if (rc < 0) return rc;
    rc = -posix_spawnattr_init(&at);
    if (rc < 0) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    /* First the directory, so that a relative program path is taken from
     * there, as Python's cwd does.  (Nothing else here is a path that it
     * could affect: /dev/null is absolute, and NEST_STDIO_FD names one of
     * the parent's open fds.) */
    if (o->cwd) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 29)
        rc = -posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
#else
        rc = -ENOSYS;
#endif
    }
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = stdio_action(&fa, o, i, &parent_end[i], &child_end[i]);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
    if (rc == 0 && !o->inherit_fds) rc = -posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    if (rc == 0) rc = spawn_attrs(&at, o);
    if (rc == 0) {
        pid_t pid;
        char *const *envp = o->envp ? o->envp : environ;
        /* glibc reports a failed exec as the return value (the child
         * exits and is reaped inside posix_spawn). */
        int err = o->search_path ? posix_spawnp(&pid, path, &fa, &at, argv, envp)
                                 : posix_spawn(&pid, path, &fa, &at, argv, envp);
        if (err) {
            rc = -err;
        } else {
            p->pid = pid;
            /* The parent sets the group too, as shells do: a posix_spawn
             * built on fork may return before the child did, and a group
             * signal must not miss it.  After the child's exec (glibc:
             * always) this fails with EACCES, harmlessly. */
            if (o->new_group) (void)setpgid(pid, pid);
        }
    }
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* Notices the exit of the freshly spawned p->pid: a pidfd where the
 * kernel has one, else a watcher thread whose struct is in the record
 * (allocated before the spawn, so no allocation can fail here). */
static int exit_watch_begin(nest_process *p, struct nest__proc_rec *rec) {
    if (!want_thread()) {
        int fd = pidfd_open_(p->pid);
        if (fd >= 0) {
            p->exit_fd = fd;
            p->flags |= P_HAS_PIDFD;
            return 0;
        }
        /* ENOSYS: an old kernel; EPERM: a seccomp filter that refuses it. */
        if (fd != -ENOSYS && fd != -EPERM) return fd;
        atomic_store(&no_pidfd, 1);
    }
    return watch_start(p, &rec->watch);
}

/* Puts p's record on the runtime's list of live processes. */
static void live_link(struct nest__rt *rt, nest_process *p, const char *path) {
    struct nest__proc_rec *rec = p->rec;
    const char *slash = strrchr(path, '/');
    const char *base = slash && slash[1] ? slash + 1 : path;
    size_t n = strlen(base);
    if (n >= sizeof rec->name) n = sizeof rec->name - 1;
    memcpy(rec->name, base, n);
    rec->name[n] = 0;
    rec->pid = p->pid;
    rec->next = rt->procs;
    rec->prev = &rt->procs;
    if (rt->procs) rt->procs->prev = &rec->next;
    rt->procs = rec;
}

/* Takes p's record off the list and frees it (the watcher is joined). */
static void live_unlink(nest_process *p) {
    struct nest__proc_rec *rec = p->rec;
    *rec->prev = rec->next;
    if (rec->next) rec->next->prev = rec->prev;
    p->rec = NULL;
    nest__free(rec, sizeof *rec);
}

void nest__process_check_closed(struct nest__rt *rt) {
    struct nest__proc_rec *rec = rt->procs;
    if (!rec) return;
    size_t n = 0;
    for (struct nest__proc_rec *r = rec; r; r = r->next) n++;
    nest__panic("the run ended with %zu process%s not closed, e.g. pid %d (%s) (rule: every "
                "nest_process_spawn() must be matched by nest_process_close() before the run "
                "ends)",
                n, n == 1 ? "" : "es", (int)rec->pid, rec->name);
}

int nest_process_spawn(nest_process *p, const char *path, char *const argv[],
                       const nest_process_options *o) {
    nest__task_self("nest_process_spawn");
    nest_process_options defaults;
    if (!o) {
        nest_process_options_init(&defaults);
        o = &defaults;
    }
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->exit_fd = -1;
    p->magic = PROC_CLOSED; /* until it succeeds */
    for (int i = 0; i < 3; i++) p->pipes[i].fd = -1;
    int rc = check_options(path, argv, o);
    if (rc < 0) return rc;
    /* Allocated before the child exists (it also holds the watcher's
     * struct, should pidfd_open be refused), so that out of memory never
     * has to kill a child that was already started. */
    struct nest__proc_rec *rec = nest__alloc(sizeof *rec);
    if (!rec) return -ENOMEM;
    int parent_end[3] = {-1, -1, -1}, child_end[3] = {-1, -1, -1};
    rc = do_spawn(p, path, argv, o, parent_end, child_end);
    for (int i = 0; i < 3; i++)
        if (child_end[i] >= 0) close(child_end[i]);
    if (rc == 0 && o->new_group) p->flags |= P_GROUP; /* kill_and_reap_now's SIGKILL too */
    if (rc == 0 && (rc = exit_watch_begin(p, rec)) < 0) kill_and_reap_now(p);
    if (rc < 0) {
        nest__free(rec, sizeof *rec);
        for (int i = 0; i < 3; i++) nest__fd_close(parent_end[i]); /* -1: nothing */
        p->pid = -1;
        p->flags = 0;
        p->magic = PROC_CLOSED; /* so that a cleanup path may close it anyway */
        return rc;
    }
    nest_stream **ends[3] = {&p->stdin_, &p->stdout_, &p->stderr_};
    for (int i = 0; i < 3; i++) {
        if (parent_end[i] < 0) continue;
        nest_stream_init(&p->pipes[i].stream, &pipe_vt);
        p->pipes[i].fd = parent_end[i]; /* non-blocking since stdio_action */
        p->pipes[i].waited = 0;
        *ends[i] = &p->pipes[i].stream;
    }
    p->grace = o->grace;
    p->term_signal = o->term_signal;
    p->rec = rec;
    live_link(nest__rt_cur, p, path);
    p->magic = PROC_LIVE;
    return 0;
}

/* ---- waiting, signalling, closing -------------------------------------------- */

/* A wait in progress: on the waiting task's stack, pointed to by
 * p->waiter.  Close sets closed before it wakes the task. */
struct nest__proc_wait {
    int closed;
};

static void check_spawned(const nest_process *p, const char *what) {
    if (p->magic != PROC_LIVE && p->magic != PROC_CLOSED)
        nest__panic("%s: the process was never spawned (rule: pass only a nest_process for "
                    "which nest_process_spawn returned 0)",
                    what);
}

int nest_process_wait(nest_process *p, int *returncode) {
    nest_task *self = nest__task_self("nest_process_wait");
    check_spawned(p, "nest_process_wait");
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    if (p->magic == PROC_CLOSED || (p->flags & P_CLOSING)) return NEST_ECLOSED;
    if (p->waiter) return -EBUSY;
    struct nest__proc_wait op = {0};
    p->waiter = &op;
    int waited = 0, rc;
    for (;;) {
        rc = try_reap(p);
        if (rc != 0) break;
        rc = wait_exit_fd(p);
        waited = 1;
        if (op.closed) return rc < 0 ? rc : NEST_ECLOSED; /* p may be gone */
        /* NEST_ECLOSED without op.closed: nest_process_poll reaped the
         * child meanwhile (closing the exit fd); try_reap reports it. */
        if (rc < 0 && !(p->flags & P_REAPED)) break;
    }
    p->waiter = NULL;
    if (rc < 0) return rc;
    if (!waited) (void)nest_checkpoint(); /* cannot fail: nothing ran since the check */
    if (returncode) *returncode = p->returncode;
    return 0;
}

int nest_process_poll(nest_process *p, int *returncode) {
    nest__task_self("nest_process_poll");
    check_spawned(p, "nest_process_poll");
    if (p->magic == PROC_CLOSED) return NEST_ECLOSED;
    int rc = try_reap(p);
    if (rc == 1 && returncode) *returncode = p->returncode;
    return rc;
}

int nest_process_signal(nest_process *p, int sig) {
    nest__task_self("nest_process_signal");
    check_spawned(p, "nest_process_signal");
    if (sig < 0 || sig >= 65) return -EINVAL;
    if (p->magic == PROC_CLOSED) return NEST_ECLOSED;
    if (p->flags & P_REAPED) return 0;
    return send_signal(p, sig);
}

int nest_process_terminate(nest_process *p) { return nest_process_signal(p, SIGTERM); }
int nest_process_kill(nest_process *p) { return nest_process_signal(p, SIGKILL); }

int nest_process_close(nest_process *p) {
    nest__task_self("nest_process_close");
    check_spawned(p, "nest_process_close");
    if (p->magic == PROC_CLOSED) return 0;
    if (p->flags & P_CLOSING)
        nest__panic("nest_process_close: process %d is already being closed by another task "
                    "(rule: close a process once, from one task)",
                    (int)p->pid);
    p->flags |= P_CLOSING;
    for (int i = 0; i < 3; i++)
        if (p->pipes[i].stream.vt) nest_stream_close(&p->pipes[i].stream);
    if (p->waiter) { /* wake it first: it must not touch p after this */
        p->waiter->closed = 1;
        p->waiter = NULL;
        nest_notify_closing(p->exit_fd);
    }
    int rc = terminate_and_reap(p);
    live_unlink(p);
    p->magic = PROC_CLOSED;
    return rc;
}

/* ---- nest_process_run --------------------------------------------------------- */

struct feed_ctx {
    nest_stream *s;
    const void *buf;
    size_t len;
};

static int feed(void *arg) {
    struct feed_ctx *f = arg;
    int rc = f->len ? nest_stream_send_all(f->s, f->buf, f->len, NULL) : 0;
    if (rc == -EPIPE) rc = 0; /* it exited without reading everything */
    if (rc == 0) nest_stream_close(f->s); /* EOF */
    return rc;
}

struct drain_ctx {
    nest_stream *s;
    char *buf;
    size_t cap;
    size_t *len;
};

static int drain(void *arg) {
    struct drain_ctx *d = arg;
    char scratch[2048];
    for (;;) {
        ssize_t n = *d->len < d->cap ? nest_stream_receive_some(d->s, d->buf + *d->len,
                                                                d->cap - *d->len)
                                     : nest_stream_receive_some(d->s, scratch, sizeof scratch);
        if (n <= 0) return (int)n;
        *d->len += (size_t)n;
    }
}

int nest_process_run(const char *path, char *const argv[], const nest_process_options *o,
                     nest_process_io *io) {
    nest__task_self("nest_process_run");
    if (nest_cancelled()) return -ECANCELED;
    nest_process_io none;
    if (!io) {
        memset(&none, 0, sizeof none);
        io = &none;
    }
    io->out_len = io->err_len = 0;
    io->returncode = 0;
    nest_process p;
    int rc = nest_process_spawn(&p, path, argv, o);
    if (rc < 0) return rc;
    struct feed_ctx f = {p.stdin_, io->input, io->input_len};
    struct drain_ctx out = {p.stdout_, io->out, io->out ? io->out_cap : 0, &io->out_len};
    struct drain_ctx err = {p.stderr_, io->err, io->err ? io->err_cap : 0, &io->err_len};
    nest_nursery n;
    nest_nursery_open(&n);
    if (p.stdin_) rc = nest_spawn(&n, feed, &f);
    if (rc == 0 && p.stdout_) rc = nest_spawn(&n, drain, &out);
    if (rc == 0 && p.stderr_) rc = nest_spawn(&n, drain, &err);
    if (rc == 0) rc = nest_process_wait(&p, NULL);
    rc = nest_nursery_close(&n, rc);
    int crc = nest_process_close(&p); /* terminates the child unless it exited */
    if (rc == 0) rc = crc;
    io->returncode = p.returncode; /* how it ended, also after a cancellation */
    return rc;
}
