/*
 * lib/error.c - nest_strerror() and nest_err_name(): one table for nest's
 * own codes and the system codes nest itself returns; any other negated
 * errno value defers to the C library where it has a thread-safe lookup
 * (glibc 2.32+), and is "unknown error" elsewhere.
 */
#define _GNU_SOURCE
#include <string.h>

#include "core.h"

static const struct {
    int code;
    const char *name;
    const char *text;
} codes[] = {
    {NEST_ECLOSED, "NEST_ECLOSED", "resource closed while in use"},
    {NEST_EDEADLOCK, "NEST_EDEADLOCK", "deadlock: no task could ever run again"},
    {NEST_ENOTSTARTED, "NEST_ENOTSTARTED", "task returned without calling nest_started()"},
    {-ECANCELED, "ECANCELED", "operation cancelled"},
    {-ETIMEDOUT, "ETIMEDOUT", "timed out"},
    {-ENOMEM, "ENOMEM", "out of memory"},
    {-EBUSY, "EBUSY", "another task is already waiting there"},
    {-EAGAIN, "EAGAIN", "resource temporarily unavailable"},
    {-EINVAL, "EINVAL", "invalid argument"},
    {-EBADF, "EBADF", "bad file descriptor"},
    {-EPIPE, "EPIPE", "broken pipe"},
    {-ECONNRESET, "ECONNRESET", "connection reset by peer"},
    {-ECONNREFUSED, "ECONNREFUSED", "connection refused"},
    {-EIO, "EIO", "input/output error"},
    {-EMFILE, "EMFILE", "too many open files"},
};

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define HAVE_ERRNO_LOOKUP 1
#endif

const char *nest_strerror(int code) {
    if (code == 0) return "success";
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i].code == code) return codes[i].text;
#ifdef HAVE_ERRNO_LOOKUP
    if (code < 0 && code > NEST_ERANGE_FIRST) {
        const char *s = strerrordesc_np(-code);
        if (s) return s;
    }
#endif
    return "unknown error";
}

const char *nest_err_name(int code) {
    if (code == 0) return "OK";
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i].code == code) return codes[i].name;
#ifdef HAVE_ERRNO_LOOKUP
    if (code < 0 && code > NEST_ERANGE_FIRST) {
        const char *s = strerrorname_np(-code);
        if (s) return s;
    }
#endif
    return "UNKNOWN";
}
