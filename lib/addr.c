/*
 * lib/addr.c - socket addresses (nest_sockaddr) and the default,
 * numeric-only resolver.
 *
 * nest_resolve_numeric() calls getaddrinfo() with AI_NUMERICHOST |
 * AI_NUMERICSERV: with both flags glibc and the BSDs parse the strings and
 * never consult DNS, /etc/hosts or NSS, so the call cannot block.  Its
 * results are copied out and freed at once (getaddrinfo allocates with
 * malloc, outside nest's allocator hook; nothing of it outlives the call).
 * Nothing here blocks or needs a task.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

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

int nest_resolve_numeric(void *arg, const char *host, int port, int family, int flags,
                         nest_sockaddr *out, size_t max) {
    (void)arg;
    if (port < 0 || port > 65535) return -EINVAL;
    if (!host && !(flags & NEST_RESOLVE_PASSIVE)) return -EINVAL;
    char serv[8];
    snprintf(serv, sizeof serv, "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (flags & NEST_RESOLVE_PASSIVE) hints.ai_flags |= AI_PASSIVE;
    int e = getaddrinfo(host, serv, &hints, &res);
    if (e != 0) return map_gai_error(e);
    int count = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        if (ai->ai_addrlen > sizeof out->u) continue;
        if ((size_t)count < max) {
            memset(&out[count], 0, sizeof out[count]);
            memcpy(&out[count].u, ai->ai_addr, ai->ai_addrlen);
            out[count].len = ai->ai_addrlen;
        }
        count++;
    }
    freeaddrinfo(res);
    return count;
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
