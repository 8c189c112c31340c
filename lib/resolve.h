/*
 * lib/resolve.h - the test seam of the system resolver (lib/addr.c).
 * Internal; not installed, not exported (nest__ names are hidden).
 *
 * nest_resolve_system() calls these on a worker thread of the pool.  They
 * start as the C library's getaddrinfo and freeaddrinfo; a test may point
 * them at scripted functions (which may block until the test lets them go,
 * to show what cancellation does to a lookup in progress) so that no test
 * depends on the network.  Set them only while no lookup can be running,
 * e.g. before nest_run(), and restore them after.
 */
#ifndef NEST_LIB_RESOLVE_H
#define NEST_LIB_RESOLVE_H

#include <netdb.h>

extern int (*nest__getaddrinfo)(const char *host, const char *serv, const struct addrinfo *hints,
                                struct addrinfo **res);
extern void (*nest__freeaddrinfo)(struct addrinfo *res);

#endif
