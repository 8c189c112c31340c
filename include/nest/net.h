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
 *     rc = nest_tcp_connect("127.0.0.1", 8080, NULL, &conn);
 *     rc = nest_scope_exit(&s, rc);        // -ETIMEDOUT after 2 s
 *
 * Name resolution is pluggable (nest_resolve_fn).  The default resolver,
 * nest_resolve_numeric(), accepts numeric addresses only ("127.0.0.1",
 * "::1", "fe80::1%eth0") and never blocks; a host name gives -EINVAL.  A
 * resolver for names plugs into the same field: nest does not ship one yet
 * (getaddrinfo on nest_to_thread()'s pool is the plan; see design/10).
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

/* The default resolver: numeric addresses only, through getaddrinfo() with
 * AI_NUMERICHOST | AI_NUMERICSERV, which never blocks (so this is not a
 * checkpoint).  Errors: -EINVAL for a host that is not a numeric address
 * (e.g. "localhost": install a resolver for names) or a port out of range;
 * -EAFNOSUPPORT when host does not fit family; -ENOMEM.  arg is unused.
 * Callable anywhere. */
NEST_API int nest_resolve_numeric(void *arg, const char *host, int port, int family, int flags,
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
    nest_resolve_fn resolve;      /* NULL: nest_resolve_numeric */
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
 * host is resolved with o->resolve (default: numeric addresses only), then
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
 * closed); the resolver's error (-EINVAL for a host name with the default
 * resolver); -EINVAL for a port outside 0..65535; -ENOMEM.  When every
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
    nest_resolve_fn resolve; /* for the host; NULL: nest_resolve_numeric */
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
 * Not a checkpoint (binding does not block; a resolver given in o may).
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

NEST_END_DECLS

#endif
