/*
 * nest/process.h - child processes (Trio's trio.Process and run_process),
 * and streams over pipes.
 *
 * nest_process_spawn() starts a program; its stdin, stdout and stderr can
 * be pipes, which the parent sees as nest_streams (nest/stream.h).
 * nest_process_wait() waits for the exit as a checkpoint.
 * nest_process_close() closes the pipes and always reaps the child: if it
 * still runs, it gets SIGTERM, a grace period (5 s by default) to exit, and
 * then SIGKILL, all in a shielded scope, so that no zombie and no file
 * descriptor outlives the close.  nest_process_run() does all of it in one
 * call: spawn, feed stdin, capture stdout and stderr, wait; a cancellation
 * terminates (then kills) the child, reaps it and returns -ECANCELED.
 *
 *     nest_process p;
 *     char *argv[] = {"ls", "-l", NULL};
 *     nest_process_options o;
 *     nest_process_options_init(&o);
 *     o.search_path = 1;
 *     o.stdio[1] = NEST_STDIO_PIPE;
 *     int rc = nest_process_spawn(&p, "ls", argv, &o);
 *     if (rc < 0) return rc;
 *     ... nest_stream_receive_some(p.stdout_, buf, sizeof buf) ...
 *     int code;
 *     rc = nest_process_wait(&p, &code);    // a checkpoint
 *     nest_process_close(&p);               // always, also after an error
 *
 * Exit codes follow Trio and Python: returncode >= 0 is the exit status,
 * returncode < 0 means killed by signal -returncode (-9: SIGKILL).  It is
 * always reported through an out parameter, never as a function's return
 * value, so it cannot be confused with an error code.
 *
 * How the exit is noticed (design/12-subprocesses.md): on Linux >= 5.3 a
 * pidfd, waited for like any fd; elsewhere, or where pidfd_open is refused,
 * one helper thread per child blocked in waitid(WNOWAIT), which closes a
 * pipe when the child exits.  Either way the runtime's thread reaps the
 * child, and a blocked wait shows in dumps as "waiting for process N to
 * exit".
 *
 * Rules: a process belongs to one runtime; every spawned process must be
 * closed (nest_process_close) before nest_run returns, or the end of the
 * run aborts naming one that was not; the program must not reap nest's
 * children itself (waitpid(-1, ...), SIGCHLD set to SIG_IGN): the status
 * is then lost and waits return -ECHILD.  Where nest has a pidfd it
 * signals and reaps through it, so a reaped child's reused pid is never
 * hit; without one (the watcher thread) that safety rests on this rule.
 *
 * Process groups (nest_process_options.new_group): a child that starts
 * children of its own can be made the leader of a new process group, so
 * that the termination ladder stops all of them, not just the child.
 */
#ifndef NEST_PROCESS_H
#define NEST_PROCESS_H

#include <sys/types.h>

#include "common.h"
#include "stream.h"

NEST_BEGIN_DECLS

/* ---- pipe streams -------------------------------------------------------- */

/* A stream over one end of a pipe (or a FIFO, or a character device).
 * Caller-allocated; pass &s.stream.  A pipe carries bytes one way only, so
 * a read end's send_all and a write end's receive_some fail with -EBADF,
 * and send_eof on a write end closes the fd (the reader then sees EOF).
 * Writes to a pipe whose reader has gone return -EPIPE and never raise
 * SIGPIPE: the write blocks SIGPIPE in the calling thread for its
 * duration and discards the SIGPIPE it caused (unless the thread already
 * blocked SIGPIPE itself, in which case nothing is changed).  Other fields
 * are private. */
typedef struct nest_pipe_stream {
    nest_stream stream;
    int fd;          /* owned; -1 once closed (or after send_eof) */
    unsigned waited; /* private: directions whose fd watcher is set up */
} nest_pipe_stream;

/* Makes s a stream over fd and takes ownership of fd (nest_stream_close()
 * closes it; the caller must not: the stream keeps its fd watcher set up
 * between waits, and only nest's close tells the event loop that the
 * number is gone).  Sets O_NONBLOCK on fd (which affects every descriptor that
 * shares its open file description).  Not a checkpoint.  Returns 0 or a
 * negated errno (-EBADF ...); then fd stays the caller's and s is
 * unusable. */
NEST_API int nest_pipe_stream_init(nest_pipe_stream *s, int fd);

/* ---- processes ------------------------------------------------------------ */

/* What the child's stdin, stdout or stderr is (nest_process_options.stdio). */
enum nest_stdio {
    NEST_STDIO_INHERIT = 0, /* the parent's own fd 0, 1 or 2 (the default) */
    NEST_STDIO_PIPE = 1,    /* a pipe; the parent's end is p->stdin_ ... */
    NEST_STDIO_DEVNULL = 2, /* /dev/null */
    NEST_STDIO_FD = 3,      /* the fd in nest_process_options.stdio_fd[i] */
    NEST_STDIO_STDOUT = 4   /* stderr only: the same as the child's stdout
                               (2>&1) */
};

/* Options for nest_process_spawn() and nest_process_run().  Initialise
 * with nest_process_options_init(), then set what you need. */
typedef struct nest_process_options {
    /* Non-zero: a path without '/' is looked up in the parent's PATH, as
     * execvp does.  0 (the default): path is used as it is. */
    int search_path;
    /* The child's environment (NULL-terminated "NAME=value" strings), or
     * NULL (the default): the parent's environ. */
    char *const *envp;
    /* The child's working directory, or NULL (the default): the parent's. */
    const char *cwd;
    /* For stdin (0), stdout (1), stderr (2): an enum nest_stdio value. */
    int stdio[3];
    /* For NEST_STDIO_FD: the parent's fd the child gets as fd i.  It stays
     * the caller's (nest neither closes nor changes it).  Any of the
     * parent's fds may be given, 0, 1 and 2 included, in any arrangement
     * (stdout and stderr swapped, the parent's stdin as the child's
     * stdout): each is the parent's fd as it was before the spawn. */
    int stdio_fd[3];
    /* Non-zero: the child also inherits the parent's fds that lack
     * FD_CLOEXEC.  0 (the default): only fds 0, 1 and 2 are passed on
     * (where the C library can close the others in the child: glibc >=
     * 2.34; elsewhere fds without FD_CLOEXEC leak, as with fork/exec). */
    int inherit_fds;
    /* How long a child that is being terminated (close, or run on
     * cancellation) may take to exit after term_signal before it gets
     * SIGKILL; measured on the runtime's clock.  Default NEST_SEC(5).
     * 0: SIGKILL at once. */
    nest_time grace;
    /* The first signal a terminated child gets.  Default SIGTERM; 0: none,
     * SIGKILL at once. */
    int term_signal;
    /* Non-zero: the child becomes the leader of a new process group (its
     * group id is its pid), and every signal nest sends it - signal,
     * terminate, kill, and close's and run's term_signal and SIGKILL - goes
     * to the whole group, so a shell's own children (`sh -c 'a | b'`) get
     * it too.  When nest reaps the child (wait, poll, close, run), it first
     * sends SIGKILL to the group: whatever of the group outlived its leader
     * dies with it.  The grace period is the leader's: a child that wants
     * its children to end cleanly waits for them before it exits.  nest
     * reaps only the child itself; the others are reparented to init (or
     * the subreaper) when they exit.  A process that moves to another group
     * or session (setsid, a shell's job control) is out of reach.  The
     * group is not the terminal's foreground group: the terminal's ^C does
     * not reach it, and a child that reads from the terminal is stopped
     * (SIGTTIN).  0 (the default): the child stays in the parent's group
     * and only it is signalled. */
    int new_group;
} nest_process_options;

/* Fills o with the defaults above.  Never fails; not a checkpoint. */
NEST_API void nest_process_options_init(nest_process_options *o);

struct nest__proc_watch;
struct nest__proc_wait;
struct nest__proc_rec;

/* A child process.  Caller-allocated; it must stay in place from spawn
 * until nest_process_close() returns.  Read pid, stdin_, stdout_,
 * stderr_ and (once reaped) returncode; the other fields are private. */
typedef struct nest_process {
    pid_t pid;           /* the child's process id; ours until it is reaped */
    nest_stream *stdin_; /* the pipe to the child's stdin, or NULL when
                            stdin is not NEST_STDIO_PIPE; likewise: */
    nest_stream *stdout_;
    nest_stream *stderr_;
    int returncode; /* once reaped: exit status, or -signal number */

    nest_pipe_stream pipes[3];
    int exit_fd;                    /* pidfd or the watcher's pipe; -1 once reaped */
    unsigned flags;                 /* reaped, closing, ... */
    unsigned magic;                 /* spawned, or closed */
    struct nest__proc_watch *watch; /* the waitid thread, or NULL */
    struct nest__proc_wait *waiter; /* the wait in progress, or NULL */
    nest_time grace;
    int term_signal;
    struct nest__proc_rec *rec; /* on the runtime's list of unclosed ones */
} nest_process;

/* Starts path with arguments argv (NULL-terminated; argv[0] is the
 * program's name by convention) as a child process, as o (NULL: the
 * defaults) says.  Not a checkpoint: it does not block on anything but
 * the kernel's fork and exec.  Pipe ends are close-on-exec in both
 * processes, so other children never inherit them; the parent's ends are
 * non-blocking streams in p->stdin_, p->stdout_, p->stderr_.
 *
 * Returns 0, or (and then nothing is left running or open):
 * -ENOENT, -EACCES, -ENOEXEC, ... when the program cannot be executed
 * (the exec failure is reported here, not as an exit status 127);
 * -EINVAL for a bad argument (path or argv NULL, a bad stdio value,
 * NEST_STDIO_STDOUT for stdin or stdout, a negative grace or signal);
 * -EBADF for NEST_STDIO_FD with a negative stdio_fd (or, from the
 * kernel, a closed one);
 * -EMFILE/-ENFILE when no pipe could be made; -EAGAIN when no process (or
 * no watcher thread) could be created; -ENOMEM; -ENOSYS when o->cwd is set
 * but the C library cannot change directory in posix_spawn.
 * On failure p is left closed: nest_process_close(p) does nothing and
 * returns 0, so a cleanup path may close it either way.
 * Must be called from a task.  The child's signal mask is empty and its
 * SIGPIPE and SIGXFSZ have their default action (a parent that ignores
 * SIGPIPE does not pass that on). */
NEST_API int nest_process_spawn(nest_process *p, const char *path, char *const argv[],
                                const nest_process_options *o);

/* Waits until the child has exited, reaps it, and stores its returncode
 * (also in p->returncode; returncode may be NULL).  Once reaped, later
 * waits return 0 and the same code at once.  A checkpoint: it yields even
 * when the child has already exited.  Cancellation means it did not
 * happen: a wait that returns -ECANCELED leaves the child running and
 * unreaped, and a later wait (or close) reaps it.
 *
 * Returns 0; -ECANCELED; -EBUSY if another task is waiting for p;
 * NEST_ECLOSED if p is closed (also when another task closes it during
 * the wait: then the wait returns without touching p again); -ECHILD if
 * the status was taken by someone else (see the rules above); -ENOMEM.
 * Must be called from a task. */
NEST_API int nest_process_wait(nest_process *p, int *returncode);

/* If the child has exited, reaps it, stores its returncode (returncode may
 * be NULL) and returns 1; returns 0 if it still runs.  Never blocks, not a
 * checkpoint.  Returns -ECHILD as nest_process_wait, NEST_ECLOSED once p
 * is closed.  Must be called from a task. */
NEST_API int nest_process_poll(nest_process *p, int *returncode);

/* Sends signal sig to the child, if it has not been reaped yet (a reaped
 * child's pid may belong to another process by now, so then nothing is
 * sent and 0 is returned); with new_group, to its whole process group
 * (the same condition keeps the group id from naming another group).
 * nest_process_terminate sends SIGTERM, nest_process_kill SIGKILL.  With
 * a pidfd the signal goes through it (pidfd_send_signal), so it can reach
 * only this child: if the program broke the rules above and reaped it,
 * the result is -ESRCH.  A group signal goes through the pidfd too on
 * Linux 6.9 and later; on older kernels nest checks through the pidfd that
 * the child is unreaped and then uses kill(-pid), which only the rules
 * above keep safe.  Not checkpoints.  Return 0,
 * -EINVAL for a bad signal, NEST_ECLOSED once p is closed, or a negated
 * errno from pidfd_send_signal(2) or kill(2).  Must be called from a
 * task. */
NEST_API int nest_process_signal(nest_process *p, int sig);
NEST_API int nest_process_terminate(nest_process *p);
NEST_API int nest_process_kill(nest_process *p);

/* Closes the pipe streams (tasks blocked on them, or in nest_process_wait,
 * wake with NEST_ECLOSED) and reaps the child.  A child that still runs is
 * terminated: o->term_signal, up to o->grace on the runtime's clock for
 * it to exit, then SIGKILL.  This happens in a shielded scope: close is
 * not a checkpoint, works in a cancelled scope (where cleanup usually
 * runs) and blocks for at most the grace period plus the time the kernel
 * takes to kill.  To let a child finish on its own, wait for it first.
 *
 * Afterwards p->returncode holds the child's code and the struct may be
 * freed.  Closing a closed process does nothing and returns 0; two tasks
 * closing p at the same time is a programming error (abort).  Returns 0,
 * or -ECHILD (see the rules above).  Must be called from a task. */
NEST_API int nest_process_close(nest_process *p);

/* ---- running a program to completion -------------------------------------- */

/* Input and output of nest_process_run(). */
typedef struct nest_process_io {
    /* Bytes written to the child's stdin when it is NEST_STDIO_PIPE,
     * followed by EOF (NULL/0: EOF at once).  A child that exits without
     * reading them all is not an error (the -EPIPE is ignored). */
    const void *input;
    size_t input_len;
    /* Where the child's stdout is captured when it is NEST_STDIO_PIPE:
     * up to out_cap bytes go to out (NULL when out_cap is 0); out_len
     * receives the number of bytes the child wrote, which may exceed
     * out_cap, as with snprintf: then the output was truncated (the rest
     * was read and discarded, so the child never blocks on a full pipe). */
    void *out;
    size_t out_cap;
    size_t out_len;
    /* The same for stderr. */
    void *err;
    size_t err_cap;
    size_t err_len;
    /* The child's returncode once it was spawned: how it ended, also when
     * run fails afterwards (after a cancellation: -SIGTERM, or -SIGKILL
     * when the grace period ran out). */
    int returncode;
} nest_process_io;

/* Runs a program to completion: spawns it (as nest_process_spawn, with
 * o's stdio modes), feeds io->input to its stdin and captures its stdout
 * and stderr (each one that is a pipe; io may be NULL when none is), waits
 * for it to exit and for its output to end, and closes it.  A checkpoint.
 *
 * On cancellation (or a deadline) the child is terminated as
 * nest_process_close does (term_signal, grace, SIGKILL), reaped, and run
 * returns -ECANCELED (which the scope's exit turns into 0 or -ETIMEDOUT as
 * usual); io->out_len and io->err_len then count what was captured.  A
 * program that exits while something else (a child of its own) keeps its
 * stdout or stderr open makes run wait for that too, as the pipe has not
 * ended - unless o->new_group is set: then the reap of the program kills
 * the rest of its group, which ends the pipes.
 *
 * Returns 0 with io->returncode set (a non-zero exit status is not an
 * error for run: check returncode); -ECANCELED; nest_process_spawn's
 * errors; -ENOMEM; another negated errno from reading or writing the
 * pipes (the child is then terminated as on cancellation).  Must be called
 * from a task. */
NEST_API int nest_process_run(const char *path, char *const argv[], const nest_process_options *o,
                              nest_process_io *io);

NEST_END_DECLS

#endif
