/*
 * lib/error.c - nest_strerror() and nest_err_name(): one table for nest's
 * own codes and the system codes nest itself returns; any other negated
 * errno value defers to the C library where it has a thread-safe lookup
 * (glibc 2.32+), and is "Unknown error" elsewhere.  Texts are capitalised
 * like the C library's, so both kinds read alike.
 */
#define _GNU_SOURCE
#include <string.h>

#include "core.h"

static const struct {
    int code;
    const char *name;
    const char *text;
} codes[] = {
    {NEST_ECLOSED, "NEST_ECLOSED", "Resource closed while in use"},
    {NEST_EDEADLOCK, "NEST_EDEADLOCK", "Deadlock: no task could ever run again"},
    {NEST_ENOTSTARTED, "NEST_ENOTSTARTED", "Task returned without calling nest_started()"},
    {NEST_EBROKEN, "NEST_EBROKEN", "Broken: the other side is gone"},
    {NEST_EEND, "NEST_EEND", "End of channel"},
    {NEST_ELAGGED, "NEST_ELAGGED", "Receiver fell behind; items were dropped"},
    {NEST_EINTERRUPTED, "NEST_EINTERRUPTED", "Interrupted by Ctrl-C (SIGINT)"},
    {NEST_ENONAME, "NEST_ENONAME", "No such host name"},
    {-ECANCELED, "ECANCELED", "Operation cancelled"},
    {-ETIMEDOUT, "ETIMEDOUT", "Timed out"},
    {-ENOMEM, "ENOMEM", "Out of memory"},
    {-EBUSY, "EBUSY", "Another task is already waiting there"},
    {-EAGAIN, "EAGAIN", "Resource temporarily unavailable"},
    {-EINVAL, "EINVAL", "Invalid argument"},
    {-EBADF, "EBADF", "Bad file descriptor"},
    {-EPIPE, "EPIPE", "Broken pipe"},
    {-ECONNRESET, "ECONNRESET", "Connection reset by peer"},
    {-ECONNREFUSED, "ECONNREFUSED", "Connection refused"},
    {-EIO, "EIO", "Input/output error"},
    {-EMFILE, "EMFILE", "Too many open files"},
};

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
#define HAVE_ERRNO_LOOKUP 1
#endif

const char *nest_strerror(int code) {
    if (code == 0) return "Success";
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i].code == code) return codes[i].text;
#ifdef HAVE_ERRNO_LOOKUP
    if (code < 0 && code > NEST_ERANGE_FIRST) {
        const char *s = strerrordesc_np(-code);
        if (s) return s;
    }
#endif
    return "Unknown error";
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
