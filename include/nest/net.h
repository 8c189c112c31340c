/*
 * nest/net.h - networking: addresses, connecting (Happy Eyeballs),
 * listening and serving, UDP.
 *
 * Connections are socket streams (nest/stream.h).  The blocking calls here
 * are checkpoints and honour the ambient deadline like every other nest
 * call: to give a connect two seconds, put it in a scope -
 *
 *     nest_scope s;
 *     nest_fail_after(&s, NEST_SEC(2));
 *     rc = nest_tcp_connect("example.com", 80, NULL, &conn);
 *     rc = nest_scope_exit(&s, rc);        // -ETIMEDOUT after 2 s
 *
 * Name resolution is pluggable (nest_resolve_fn).  The default resolver,
 * nest_resolve_system(), takes numeric addresses ("127.0.0.1", "::1",
 * "fe80::1%eth0") at once, with no thread, and looks names up ("localhost",
 * "example.com") with the system's getaddrinfo() on a worker thread of the
 * runtime's pool (nest/thread.h), so a lookup is a checkpoint that obeys
 * cancellation and deadlines like the rest of the connect: a cancelled
 * lookup returns at once and its thread is abandoned (see design/10).
 * nest_resolve_numeric() resolves numeric addresses only and never uses a
 * thread, for programs that want none.
 *
 * Every fd nest creates here is non-blocking and close-on-exec.  All calls
 * must be made from a task unless their comment says otherwise.
 */
#ifndef NEST_NET_H
#define NEST_NET_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "common.h"
#include "nursery.h"
#include "stream.h"

NEST_BEGIN_DECLS

/* ---- addresses ----------------------------------------------------------- */

/* A socket address of any family, with its length. */
typedef struct nest_sockaddr {
    socklen_t len; /* 0: no address */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage ss;
    } u;
} nest_sockaddr;

/* Fills a with the numeric IPv4 or IPv6 address host ("127.0.0.1", "::1",
 * "fe80::1%lo") and port (0..65535).  Never blocks.  Returns 0, or -EINVAL
 * (not a numeric address, or port out of range).  Callable anywhere. */
NEST_API int nest_sockaddr_ip(nest_sockaddr *a, const char *host, int port);

/* Fills a with the Unix socket path.  A path starting with '@' names an
 * abstract socket (Linux): the '@' becomes the leading NUL byte.  Returns 0
 * or -ENAMETOOLONG.  Callable anywhere. */
NEST_API int nest_sockaddr_unix(nest_sockaddr *a, const char *path);

/* The address family (AF_INET, AF_INET6, AF_UNIX), or AF_UNSPEC for none. */
NEST_API int nest_sockaddr_family(const nest_sockaddr *a);

/* The port of an IP address, or -EINVAL for other families. */
NEST_API int nest_sockaddr_port(const nest_sockaddr *a);

/* Writes a as "127.0.0.1:80", "[::1]:80" or the Unix path (abstract names
 * with '@') into buf, NUL-terminated and truncated to len.  Returns buf. */
NEST_API char *nest_sockaddr_format(const nest_sockaddr *a, char *buf, size_t len);

/* ---- name resolution ----------------------------------------------------- */

/* nest_resolve_fn flags. */
#define NEST_RESOLVE_PASSIVE 1 /* addresses to bind to; host NULL: wildcards */

/* Resolves host and port for a stream socket of family (AF_UNSPEC for
 * any) into out[0 .. max-1], best first, and returns how many addresses it
 * found (it may find more than max; only max are stored), or a negative
 * code.  host may be NULL only with NEST_RESOLVE_PASSIVE.  A resolver may
 * block; if it does, it must be a checkpoint (honour cancellation and
 * deadlines), so that a cancelled connect really stops. */
typedef int (*nest_resolve_fn)(void *arg, const char *host, int port, int family, int flags,
                               nest_sockaddr *out, size_t max);

/* The resolver for numeric addresses only, through getaddrinfo() with
 * AI_NUMERICHOST | AI_NUMERICSERV, which never blocks and uses no thread
 * (so this is not a checkpoint).  Errors: -EINVAL for a host that is not a
 * numeric address (e.g. "localhost") or a port out of range;
 * -EAFNOSUPPORT when host does not fit family; -ENOMEM.  arg is unused.
 * Callable anywhere. */
NEST_API int nest_resolve_numeric(void *arg, const char *host, int port, int family, int flags,
                                  nest_sockaddr *out, size_t max);

/* The default resolver of nest_tcp_connect() and nest_tcp_listen(): the
 * system's.  A numeric host (and host NULL with NEST_RESOLVE_PASSIVE) is
 * handled exactly as nest_resolve_numeric() does, at once, without a
 * thread, not a checkpoint, callable anywhere.  A name is looked up with
 * getaddrinfo() (flags: AI_PASSIVE for NEST_RESOLVE_PASSIVE; socket type
 * SOCK_STREAM) on a worker thread of the calling runtime's pool, so it
 * follows the host's configuration - /etc/hosts, nsswitch.conf (mDNS,
 * LDAP...), resolv.conf's servers, search domains and timeouts - exactly
 * as other programs on the host do.  Addresses come back in getaddrinfo's
 * order (RFC 6724).
 *
 * For a name: must be called from a task, and a checkpoint.  If the scope
 * is cancelled (or its deadline passes) during the lookup, returns
 * -ECANCELED at once; the worker thread is abandoned and finishes the
 * getaddrinfo call on its own - bounded by resolv.conf's timeout and
 * attempts - after which the pool frees the lookup's memory on the
 * runtime's thread (nest_run waits for it before returning).  An abandoned
 * lookup occupies one of the pool's threads (nest_thread_set_limit) until
 * then.
 *
 * Errors: NEST_ENONAME (EAI_NONAME, EAI_NODATA: no such name, or no address
 * of the family); -EAGAIN (EAI_AGAIN: a temporary failure, e.g. no name
 * server answered); -EIO (EAI_FAIL: the name servers failed for good);
 * -ENOMEM (ours or EAI_MEMORY); the negated errno of EAI_SYSTEM;
 * -EAFNOSUPPORT (EAI_FAMILY, EAI_ADDRFAMILY); -EINVAL (a port out of
 * range, host NULL without NEST_RESOLVE_PASSIVE, other EAI_ codes);
 * -ECANCELED.  arg is unused. */
NEST_API int nest_resolve_system(void *arg, const char *host, int port, int family, int flags,
                                 nest_sockaddr *out, size_t max);

/* ---- connecting ---------------------------------------------------------- */

/* At most this many resolved addresses are tried by one connect. */
#define NEST_CONNECT_MAX_ADDRS 16

/* One connection attempt: create a socket for addr's family, bind it to
 * local if local is not NULL, connect it, and on success store the
 * connected socket in *fd and return 0.  On failure return a negative code
 * and leave no socket open.  Must be a checkpoint and honour cancellation
 * (-ECANCELED).  arg is nest_connect_options.attempt_arg. */
typedef int (*nest_connect_attempt_fn)(void *arg, const nest_sockaddr *addr,
                                       const nest_sockaddr *local, int *fd);

/* Called when an attempt ends, with its address and result: 0 for the
 * winner, -ECANCELED for an attempt cut short because another won (or the
 * caller was cancelled), else the attempt's error.  Runs in the attempt's
 * task; must not block. */
typedef void (*nest_connect_report_fn)(void *arg, const nest_sockaddr *addr, int rc);

/* Options for nest_tcp_connect(); initialise with
 * nest_connect_options_init() and set what you need. */
typedef struct nest_connect_options {
    nest_resolve_fn resolve;      /* NULL: nest_resolve_system */
    void *resolve_arg;
    int family;                   /* AF_UNSPEC (default), AF_INET or AF_INET6 */
    /* Happy Eyeballs: how long an attempt runs alone before the next one
     * starts (the next also starts as soon as the latest one fails).
     * Default NEST_MSEC(250) (RFC 8305); NEST_FOREVER: one at a time; 0:
     * all at once. */
    nest_time delay;
    const nest_sockaddr *local;   /* bind attempts to this address; NULL: any */
    nest_connect_attempt_fn attempt; /* NULL: nest_connect_attempt */
    void *attempt_arg;
    nest_connect_report_fn report; /* NULL: none */
    void *report_arg;
} nest_connect_options;

/* Fills o with the defaults.  Callable anywhere. */
NEST_API void nest_connect_options_init(nest_connect_options *o);

/* Connects to host:port and makes *out a socket stream on the connection
 * (TCP_NODELAY set).  o may be NULL for the defaults.
 *
 * host is resolved with o->resolve (default: nest_resolve_system, which
 * looks names up on the thread pool; the lookup is part of this call and
 * is cancelled with it), then
 * the addresses are tried with Happy Eyeballs (RFC 8305): interleaved by
 * family, starting with the family of the resolver's first address
 * (resolvers following RFC 6724, as getaddrinfo does, put IPv6 first), each
 * attempt given o->delay before the next starts - or less, if the latest
 * attempt fails sooner.  The first attempt to connect wins; the others are
 * cancelled and their sockets closed.  Every attempt runs as a task in a
 * nursery inside this call, so when the call returns nothing is left
 * running or open.
 *
 * A checkpoint.  Returns 0; -ECANCELED (every attempt was cancelled and
 * closed); the resolver's error (with the default: NEST_ENONAME for an
 * unknown name, -EAGAIN, ...: see nest_resolve_system); -EINVAL for a port
 * outside 0..65535; -ENOMEM.  When every
 * attempt failed: the most relevant error - -ENOMEM if an attempt could
 * not be started, else an error from the peer's side (-ECONNREFUSED,
 * -ETIMEDOUT, -ECONNRESET, -EHOSTUNREACH) over a local one (-ENETUNREACH,
 * -EADDRNOTAVAIL, -EAFNOSUPPORT, ...), among equals the earliest attempt's;
 * o->report sees every attempt's own error. */
NEST_API int nest_tcp_connect(const char *host, int port, const nest_connect_options *o,
                              nest_socket_stream *out);

/* nest_tcp_connect() to addresses already resolved, in the order given
 * (before the family interleaving).  n >= 1; at most NEST_CONNECT_MAX_ADDRS
 * are used.  o->resolve and o->family are ignored.  A checkpoint. */
NEST_API int nest_tcp_connect_addrs(const nest_sockaddr *addrs, size_t n,
                                    const nest_connect_options *o, nest_socket_stream *out);

/* The default attempt (nest_connect_attempt_fn): a non-blocking socket,
 * bound to local if given, connect(2), then a wait for writability and
 * SO_ERROR.  A checkpoint; on -ECANCELED the socket is closed.  Test hooks
 * may call it to make a real connection after a scripted delay. */
NEST_API int nest_connect_attempt(void *arg, const nest_sockaddr *addr,
                                  const nest_sockaddr *local, int *fd);

/* Connects to the Unix stream socket at path ('@' prefix: abstract) and
 * makes *out a socket stream on it.  A checkpoint.  While the listener's
 * backlog is full, retries with a short sleep (1 ms doubling to 100 ms) until
 * the enclosing deadline.  Returns 0; -ECANCELED; -ENOENT, -ECONNREFUSED
 * and other negated errno values; -ENAMETOOLONG. */
NEST_API int nest_unix_connect(const char *path, nest_socket_stream *out);

/* ---- listening ----------------------------------------------------------- */

/* A listening socket.  Caller-allocated; fields are private except addr,
 * the bound address (with the real port when port 0 was asked for). */
typedef struct nest_listener {
    int fd;                    /* -1 once closed */
    nest_sockaddr addr;        /* the bound address */
    nest_stream_op *accept_op; /* accept in progress, or NULL */
} nest_listener;

/* Options for listeners; zero-initialise or nest_listen_options_init(). */
typedef struct nest_listen_options {
    int backlog;       /* 0: the largest the system allows (see below) */
    int reuse_port;    /* non-zero: SO_REUSEPORT, to share a port among
                          processes or threads */
    int keep_nofile_limit; /* non-zero: do not raise RLIMIT_NOFILE */
    nest_resolve_fn resolve; /* for the host; NULL: nest_resolve_system */
    void *resolve_arg;
} nest_listen_options;

/* Fills o with the defaults (all zero).  Callable anywhere. */
NEST_API void nest_listen_options_init(nest_listen_options *o);

/* Most listeners one nest_tcp_listen() call opens. */
#define NEST_LISTEN_MAX 8

/* Opens TCP listeners on host:port, one per address host resolves to, into
 * out[0 .. max-1], and returns how many (>= 1).  host NULL: every interface,
 * IPv4 (0.0.0.0) and IPv6 (::) - two listeners, IPv6 with IPV6_V6ONLY; a
 * family the system lacks is skipped.  port 0: a free port, the same one
 * for every listener of the call; the port is in out[i].addr.
 *
 * Each socket gets SO_REUSEADDR (a restarted server can bind while old
 * connections linger in TIME_WAIT), SO_REUSEPORT if asked, IPV6_V6ONLY for
 * IPv6, and listen() with the backlog: o->backlog, or by default the
 * system's maximum - /proc/sys/net/core/somaxconn on Linux, else SOMAXCONN.
 *
 * The first listener a process opens also raises its soft RLIMIT_NOFILE to
 * the hard limit, as Go does at start-up (see nest_raise_open_file_limit;
 * o->keep_nofile_limit opts out): a server's connection count should be
 * bounded by the administrator's hard limit, not the historical soft
 * default of 1024.
 *
 * Not a checkpoint (binding does not block), except that a host name is
 * looked up by the resolver, the default one on the thread pool: that
 * lookup is a checkpoint (-ECANCELED) and needs a task.
 * All or nothing: on failure no listener stays open.  Returns the count;
 * -EADDRINUSE and other negated errno values; the resolver's error; -EINVAL
 * (port out of range, max 0).  o may be NULL. */
NEST_API int nest_tcp_listen(const char *host, int port, const nest_listen_options *o,
                             nest_listener *out, size_t max);

/* Opens a listener on the Unix socket path ('@' prefix: abstract).  An
 * existing file at path gives -EADDRINUSE (nest never unlinks: remove a
 * stale socket file yourself, and unlink it after closing if you want).
 * Returns 0 or a negated errno.  Not a checkpoint.  o may be NULL. */
NEST_API int nest_unix_listen(const char *path, const nest_listen_options *o,
                              nest_listener *out);

/* Waits for a connection on l and makes *out a socket stream on it
 * (TCP_NODELAY set for TCP).  peer (may be NULL) receives the peer's
 * address.  A checkpoint.  Connections that failed before they were
 * accepted (ECONNABORTED and the network errors accept(2) passes on) are
 * skipped.  Returns 0; -ECANCELED (no connection was taken); NEST_ECLOSED
 * (l is closed, also by another task during the wait); -EBUSY if another
 * task is accepting on l; -EMFILE / -ENFILE when out of file descriptors
 * (the connection stays queued: back off and retry, as nest_serve_* do);
 * other negated errno values. */
NEST_API int nest_listener_accept(nest_listener *l, nest_socket_stream *out, nest_sockaddr *peer);

/* Closes l: a task blocked in accept on it wakes with NEST_ECLOSED.  Not a
 * checkpoint; closing twice is harmless.  Returns 0. */
NEST_API int nest_listener_close(nest_listener *l);

/* The port l is bound to, or -EINVAL for a Unix listener. */
NEST_API int nest_listener_port(const nest_listener *l);

/* Raises this process's soft limit on open files to its hard limit (on
 * macOS, to at most OPEN_MAX).  Returns the new soft limit, or a negated
 * errno.  Callable anywhere; thread-safe.  Programs that use select() must
 * not call it: select cannot handle fds of FD_SETSIZE (1024) and above. */
NEST_API long nest_raise_open_file_limit(void);

/* ---- serving ------------------------------------------------------------- */

/* A connection handler: serves one connection on s and returns 0 or a
 * negative code.  It runs in its own task; nest closes s after it returns
 * (the handler may close it earlier). */
typedef int (*nest_handler_fn)(nest_stream *s, void *arg);

/* What nest_serve_*() hand to nest_started(): the listeners being served.
 * Valid until the serving call returns (copy what you need, e.g. the port,
 * before cancelling the server). */
typedef struct nest_listeners {
    nest_listener *listener; /* an array */
    size_t count;
} nest_listeners;

/* Options for serving; zero-initialise or nest_serve_options_init(). */
typedef struct nest_serve_options {
    nest_listen_options listen; /* nest_serve_tcp/unix: for the listeners */
    /* A handler's negative result (other than -ECANCELED) is a failure of
     * the server, as in Trio: it cancels the server and every connection,
     * and the serve call returns it.  on_error, if set, sees it first, in
     * the connection's task, and returns what becomes of it: 0 to keep
     * serving (e.g. after logging a client's -ECONNRESET), or the code to
     * fail with.  Must not block. */
    int (*on_error)(void *arg, int rc); /* arg: the handler's arg */
    nest_nursery *handler_nursery; /* spawn connection tasks here; NULL: the
                                      serve call's own nursery */
    size_t stack_size;             /* for connection tasks; 0: default */
    nest_time backoff_max;         /* cap of the out-of-fds back-off; 0: 1 s */
} nest_serve_options;

/* Fills o with the defaults (all zero).  Callable anywhere. */
NEST_API void nest_serve_options_init(nest_serve_options *o);

/* Serves connections on the n listeners ls (it takes them over and closes
 * them when it returns): accepts forever, running handler(stream, arg) in a
 * new task per connection.  Calls nest_started() with a nest_listeners *
 * once it is accepting, so a task launched with nest_start() hands its
 * caller the listeners (in a task launched with nest_spawn() this is a
 * no-op); call one nest_serve_*() per started task.
 *
 * When accept runs out of file descriptors (EMFILE, ENFILE) or kernel
 * buffers (ENOBUFS), the server does not spin: it prints one line to
 * stderr (once per serve call), sleeps 100 ms, doubling up to
 * o->backoff_max while the condition lasts, and keeps serving.
 *
 * Returns only on failure or cancellation: -ECANCELED when cancelled (all
 * connection tasks were cancelled and waited for); a handler's failure
 * (see on_error); -ENOMEM if nest ran out of memory, e.g. for a connection
 * task (that connection is closed); another accept error.  A checkpoint. */
NEST_API int nest_serve_listeners(nest_listener *ls, size_t n, nest_handler_fn handler,
                                  void *arg, const nest_serve_options *o);

/* Listens with nest_tcp_listen(host, port, &o->listen) and serves as
 * nest_serve_listeners().  port 0 picks a free port: learn it from the
 * nest_listeners handed to nest_start().  o may be NULL. */
NEST_API int nest_serve_tcp(int port, const char *host, nest_handler_fn handler, void *arg,
                            const nest_serve_options *o);

/* Listens on the Unix socket path and serves as nest_serve_listeners(). */
NEST_API int nest_serve_unix(const char *path, nest_handler_fn handler, void *arg,
                             const nest_serve_options *o);

/* nest_serve_tcp() as a task function, for nest_start():
 *
 *     nest_tcp_server srv = {0, "127.0.0.1", handler, NULL, NULL};
 *     void *v;
 *     rc = nest_start(&n, nest_serve_tcp_task, &srv, &v);
 *     int port = nest_listener_port(&((nest_listeners *)v)->listener[0]);
 *
 * srv must stay valid while the server runs. */
typedef struct nest_tcp_server {
    int port;
    const char *host;
    nest_handler_fn handler;
    void *arg;
    const nest_serve_options *options;
} nest_tcp_server;
NEST_API int nest_serve_tcp_task(void *server);

/* ---- UDP ----------------------------------------------------------------- */

/* A UDP socket.  Caller-allocated; fields are private. */
typedef struct nest_udp_socket {
    int fd;                    /* -1 once closed */
    nest_stream_op *ops[2];    /* [0] receive, [1] send in progress */
} nest_udp_socket;

/* Opens a UDP socket bound to local (port 0: a free port; see
 * nest_udp_local_address).  Not a checkpoint.  Returns 0 or a negated
 * errno. */
NEST_API int nest_udp_open(nest_udp_socket *u, const nest_sockaddr *local);

/* The address u is bound to.  Returns 0 or a negated errno. */
NEST_API int nest_udp_local_address(const nest_udp_socket *u, nest_sockaddr *out);

/* Sends one datagram of len bytes to `to`.  A checkpoint (waits while the
 * send buffer is full).  Returns len; -ECANCELED (nothing was sent);
 * NEST_ECLOSED; -EBUSY if another task is sending on u; -EMSGSIZE and other
 * negated errno values. */
NEST_API ssize_t nest_udp_send_to(nest_udp_socket *u, const void *buf, size_t len,
                                  const nest_sockaddr *to);

/* Waits for one datagram and stores up to max bytes of it in buf (the rest
 * of a longer datagram is discarded) and its sender in *from (may be NULL).
 * A checkpoint.  Returns the number of bytes stored; -ECANCELED (no
 * datagram was consumed); NEST_ECLOSED; -EBUSY if another task is
 * receiving on u; other negated errno values (e.g. -ECONNREFUSED reported
 * by ICMP for an earlier send). */
NEST_API ssize_t nest_udp_receive_from(nest_udp_socket *u, void *buf, size_t max,
                                       nest_sockaddr *from);

/* Closes u; tasks blocked on it wake with NEST_ECLOSED.  Not a checkpoint;
 * closing twice is harmless.  Returns 0. */
NEST_API int nest_udp_close(nest_udp_socket *u);

/* ---- serving from several threads ---------------------------------------- */

struct nest_run_options; /* nest/runtime.h */

/* Options for nest_serve_tcp_threads(); zero-initialise or
 * nest_serve_threads_options_init(). */
typedef struct nest_serve_threads_options {
    /* As for nest_serve_tcp (listen, on_error, stack_size, backoff_max),
     * applied in every thread; listen.reuse_port is always on, and
     * handler_nursery must be NULL (a nursery belongs to one runtime). */
    nest_serve_options serve;
    /* Optional.  Runs in thread `index` (0 .. nthreads-1), as a task of that
     * thread's runtime, before it listens; it may block.  *handler_arg
     * starts as the arg given to nest_serve_tcp_threads; set it to give
     * this thread's handlers (and on_error) their own state, e.g. a cache
     * or counters that need no locks.  A negative result fails the server.
     * If the server stops meanwhile, thread_init runs cancelled. */
    int (*thread_init)(void *arg, int index, void **handler_arg);
    /* Optional.  Runs in thread `index`, as a task, after its server has
     * stopped and every connection task has ended, if thread_init (when
     * set) succeeded; handler_arg is what thread_init left. */
    void (*thread_fini)(void *arg, int index, void *handler_arg);
    /* Options for each thread's nest_run_opts() (NULL: the defaults);
     * no_ctrl_c is always set (Ctrl-C belongs to the caller's runtime, which
     * stops the threads by cancelling this call), and loop must be NULL.
     * What the options point to (an instrument, the report stream) is
     * shared by every thread's runtime, so it must be thread-safe. */
    const struct nest_run_options *run;
} nest_serve_threads_options;

/* Fills o with the defaults (all zero).  Callable anywhere. */
NEST_API void nest_serve_threads_options_init(nest_serve_threads_options *o);

/* Serves host:port from nthreads threads, for servers that outgrow one
 * core: each thread runs its own runtime (nest_run) with its own listeners
 * on the same port, shared through SO_REUSEPORT (the kernel spreads new
 * connections over the listeners by a hash of their addresses), and serves
 * them as nest_serve_tcp() does: a task per connection, in that thread.
 *
 * The calling task binds the first listeners itself (port 0 becomes a free
 * port that the other threads then share), starts the threads, and once
 * every thread is accepting calls nest_started() with a nest_listeners *
 * holding copies of the first listeners for their addresses (their fd is
 * -1: the threads serve them).  Then it waits - an fd wait: the caller's
 * runtime keeps running its other tasks - until it is cancelled or a
 * thread fails.  Either way it stops every thread (each cancels its server
 * and every connection, closes its listeners and runs thread_fini), joins
 * them all, and returns; no thread outlives the call.
 *
 * The handler and on_error run in the worker threads, concurrently with
 * each other: they must be thread-compatible.  State shared between
 * connections of different threads (arg, globals) needs locks or atomics;
 * per-thread state comes from o->thread_init.  Within one thread, the usual
 * single-thread rules hold.  nest objects (streams, nurseries, channels,
 * ...) belong to the runtime that made them and must not be shared between
 * threads; use nest_token_run() to reach another runtime.
 *
 * A checkpoint.  Returns only on failure or cancellation: -ECANCELED when
 * cancelled (every thread stopped and joined); the first failure of a
 * thread (its bind, e.g. -EADDRINUSE; thread_init's error; a handler's
 * failure, see nest_serve_options.on_error; -ENOMEM); the first bind's
 * error; -EINVAL (nthreads < 1, handler NULL, port out of range,
 * o->serve.handler_nursery or o->run->loop set); -EOPNOTSUPP where the
 * system has no SO_REUSEPORT; -EAGAIN and other negated pthread_create
 * errors; -ENOMEM.  o may be NULL.  Must be called from a task. */
NEST_API int nest_serve_tcp_threads(int nthreads, int port, const char *host,
                                    nest_handler_fn handler, void *arg,
                                    const nest_serve_threads_options *o);

NEST_END_DECLS

#endif
