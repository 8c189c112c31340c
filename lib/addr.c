/*
 * lib/addr.c - socket addresses (nest_sockaddr) and the two resolvers.
 *
 * nest_resolve_numeric() calls getaddrinfo() with AI_NUMERICHOST |
 * AI_NUMERICSERV: with both flags glibc and the BSDs parse the strings and
 * never consult DNS, /etc/hosts or NSS, so the call cannot block.  Its
 * results are copied out and freed at once (getaddrinfo allocates with
 * malloc, outside nest's allocator hook; nothing of it outlives the call).
 *
 * nest_resolve_system() (the default of nest_tcp_connect and
 * nest_tcp_listen) takes the same path for numeric addresses, with no
 * thread; a name goes to the real getaddrinfo() on a worker thread of the
 * runtime's pool (nest_to_thread_owned, NEST_THREAD_ABANDON), so that the
 * host's own rules apply (nsswitch, /etc/hosts, mDNS, search domains) and a
 * cancelled lookup returns at once.  design/10 has the reasoning.
 *
 * Invariants of a name lookup:
 *  - Its record (struct lookup: the host copied, room for the answers) is
 *    one allocation made through the allocator hook on the runtime's thread
 *    and freed there: by the caller after a result, or by the pool's
 *    release (lookup_release) when the call was cancelled - if the lookup
 *    was abandoned, once getaddrinfo has returned, at the latest while
 *    nest_run ends.  The worker never allocates with the hook or frees the
 *    record; it only fills it in.
 *  - The caller never touches the record after -ECANCELED.
 *  - getaddrinfo's own list is malloc'ed by the C library and freed on the
 *    worker before the job returns.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "nest/thread.h"
#include "resolve.h"
#include "sock.h"

int nest_sockaddr_family(const nest_sockaddr *a) {
    return a->len ? a->u.sa.sa_family : AF_UNSPEC;
}

int nest_sockaddr_port(const nest_sockaddr *a) {
    if (!a->len) return -EINVAL;
    if (a->u.sa.sa_family == AF_INET) return ntohs(a->u.in4.sin_port);
    if (a->u.sa.sa_family == AF_INET6) return ntohs(a->u.in6.sin6_port);
    return -EINVAL;
}

int nest_sockaddr_unix(nest_sockaddr *a, const char *path) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path);
    if (n == 0) return -EINVAL;
    if (n >= sizeof a->u.un.sun_path) return -ENAMETOOLONG;
    a->u.un.sun_family = AF_UNIX;
    memcpy(a->u.un.sun_path, path, n);
    if (path[0] == '@') {
        /* Abstract: the name is exactly the bytes after the NUL, so the
         * length must not count a terminator. */
        a->u.un.sun_path[0] = '\0';
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

int (*nest__getaddrinfo)(const char *, const char *, const struct addrinfo *,
                         struct addrinfo **) = getaddrinfo;
void (*nest__freeaddrinfo)(struct addrinfo *) = freeaddrinfo;

/* The numeric resolver's error mapping: EAI_NONAME means "not a number". */
static int map_gai_error(int e) {
    switch (e) {
    case EAI_MEMORY: return -ENOMEM;
    case EAI_FAMILY:
    case EAI_ADDRFAMILY: return -EAFNOSUPPORT;
    case EAI_AGAIN: return -EAGAIN;
    case EAI_SYSTEM: return nest__neg_errno();
    default: return -EINVAL; /* EAI_NONAME (a name, not a number), EAI_SERVICE, ... */
    }
}

/* The system resolver's mapping (net.h documents it).  Called on the
 * worker, where errno belongs to the failed getaddrinfo. */
static int map_name_error(int e) {
    switch (e) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
        return NEST_ENONAME;
    case EAI_FAIL: return -EIO; /* the name servers failed for good */
    default: return map_gai_error(e);
    }
}

/* Copies the IP addresses of res into out[0 .. max-1]; returns how many
 * there were (possibly more than max). */
static int copy_out(const struct addrinfo *res, nest_sockaddr *out, size_t max) {
    int count = 0;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        if (ai->ai_addrlen > sizeof out->u) continue;
        if ((size_t)count < max) {
            memset(&out[count], 0, sizeof out[count]);
            memcpy(&out[count].u, ai->ai_addr, ai->ai_addrlen);
            out[count].len = ai->ai_addrlen;
        }
        count++;
    }
    return count;
}

static void gai_hints(struct addrinfo *hints, int family, int flags, int numeric) {
    memset(hints, 0, sizeof *hints);
    hints->ai_family = family;
    hints->ai_socktype = SOCK_STREAM;
    hints->ai_flags = AI_NUMERICSERV | (numeric ? AI_NUMERICHOST : 0);
    if (flags & NEST_RESOLVE_PASSIVE) hints->ai_flags |= AI_PASSIVE;
}

/* The numeric lookup; returns the count, or -1 with the EAI_ code in *eai. */
static int numeric(const char *host, const char *serv, int family, int flags, nest_sockaddr *out,
                   size_t max, int *eai) {
    struct addrinfo hints, *res = NULL;
    gai_hints(&hints, family, flags, 1);
    *eai = getaddrinfo(host, serv, &hints, &res);
    if (*eai != 0) return -1;
    int count = copy_out(res, out, max);
    freeaddrinfo(res);
    return count;
}

/* Checks the arguments every resolver checks and formats the port. */
static int check_args(const char *host, int port, int flags, char serv[8]) {
    if (port < 0 || port > 65535) return -EINVAL;
    if (!host && !(flags & NEST_RESOLVE_PASSIVE)) return -EINVAL;
    snprintf(serv, 8, "%d", port);
    return 0;
}

int nest_resolve_numeric(void *arg, const char *host, int port, int family, int flags,
                         nest_sockaddr *out, size_t max) {
    (void)arg;
    char serv[8];
    int rc = check_args(host, port, flags, serv);
    if (rc < 0) return rc;
    int e, n = numeric(host, serv, family, flags, out, max, &e);
    return n < 0 ? map_gai_error(e) : n;
}

/* A name lookup in flight; see the file comment. */
struct lookup {
    size_t size; /* of the whole allocation */
    int family, flags;
    size_t max;         /* out has room for this many */
    nest_sockaddr *out; /* in the same allocation, as is host */
    char *host;
    char serv[8];
};

/* Runs on a worker: the blocking getaddrinfo.  Returns the count or a
 * negative code. */
static int lookup_run(void *p) {
    struct lookup *lk = p;
    struct addrinfo hints, *res = NULL;
    gai_hints(&hints, lk->family, lk->flags, 0);
    int e = nest__getaddrinfo(lk->host, lk->serv, &hints, &res);
    if (e != 0) return map_name_error(e);
    int count = copy_out(res, lk->out, lk->max);
    nest__freeaddrinfo(res);
    return count;
}

/* The pool calls this on the runtime's thread when the caller gave the
 * lookup up (cancelled, perhaps abandoned while getaddrinfo ran). */
static void lookup_release(void *p) {
    struct lookup *lk = p;
    nest__free(lk, lk->size);
}

static struct lookup *lookup_new(const char *host, const char *serv, int family, int flags,
                                 size_t max) {
    size_t hlen = strlen(host) + 1;
    size_t fixed = sizeof(struct lookup) + hlen;
    if (max > (SIZE_MAX - fixed) / sizeof(nest_sockaddr)) return NULL;
    size_t size = fixed + max * sizeof(nest_sockaddr);
    struct lookup *lk = nest__alloc(size);
    if (!lk) return NULL;
    lk->size = size;
    lk->family = family;
    lk->flags = flags;
    lk->max = max;
    lk->out = (nest_sockaddr *)(lk + 1);
    lk->host = (char *)(lk->out + max);
    memcpy(lk->host, host, hlen);
    memcpy(lk->serv, serv, sizeof lk->serv);
    return lk;
}

int nest_resolve_system(void *arg, const char *host, int port, int family, int flags,
                        nest_sockaddr *out, size_t max) {
    (void)arg;
    char serv[8];
    int rc = check_args(host, port, flags, serv);
    if (rc < 0) return rc;
    int e, n = numeric(host, serv, family, flags, out, max, &e);
    if (n >= 0) return n;
    if (e != EAI_NONAME || !host) return map_gai_error(e);
    /* A name: getaddrinfo on the pool, abandoned if we are cancelled. */
    nest__task_self("nest_resolve_system"); /* a name needs the pool */
    struct lookup *lk = lookup_new(host, serv, family, flags, max);
    if (!lk) return -ENOMEM;
    int count = 0;
    rc = nest_to_thread_owned(lookup_run, lk, lookup_release, &count, NEST_THREAD_ABANDON);
    if (rc == -ECANCELED) return rc; /* the pool owns lk now */
    if (rc == 0) rc = count;
    size_t stored = rc > 0 ? ((size_t)rc < max ? (size_t)rc : max) : 0;
    if (stored) memcpy(out, lk->out, stored * sizeof *out);
    lookup_release(lk);
    return rc;
}

int nest_sockaddr_ip(nest_sockaddr *a, const char *host, int port) {
    int n = nest_resolve_numeric(NULL, host, port, AF_UNSPEC, 0, a, 1);
    if (n < 0) return n;
    return n >= 1 ? 0 : -EINVAL;
}

char *nest_sockaddr_format(const nest_sockaddr *a, char *buf, size_t len) {
    if (len == 0) return buf;
    char host[INET6_ADDRSTRLEN + 16];
    int fam = nest_sockaddr_family(a);
    if (fam == AF_INET) {
        inet_ntop(AF_INET, &a->u.in4.sin_addr, host, sizeof host);
        snprintf(buf, len, "%s:%d", host, ntohs(a->u.in4.sin_port));
    } else if (fam == AF_INET6) {
        inet_ntop(AF_INET6, &a->u.in6.sin6_addr, host, sizeof host);
        snprintf(buf, len, "[%s]:%d", host, ntohs(a->u.in6.sin6_port));
    } else if (fam == AF_UNIX) {
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = a->len > off ? a->len - off : 0;
        const char *p = a->u.un.sun_path;
        if (n > 0 && p[0] == '\0') { /* abstract: '@' and exactly n - 1 bytes */
            snprintf(buf, len, "@%.*s", (int)(n - 1), p + 1);
        } else {
            snprintf(buf, len, "%.*s", (int)strnlen(p, n), p);
        }
    } else {
        snprintf(buf, len, "(no address)");
    }
    return buf;
}
