/*
 * nest/error.h - error codes.
 *
 * Every nest function that can fail returns a negative code.  System errors
 * are the negated errno values (-ECANCELED, -ETIMEDOUT, -ENOMEM, ...), also
 * spelled NEST_E... below for convenience.  nest's own codes live in the
 * reserved range [NEST_ERANGE_LAST, NEST_ERANGE_FIRST] (-10999 .. -10000),
 * which no errno value reaches.
 *
 * Errors are data, not state: nothing in nest reads or sets errno as part of
 * its contract, so a task switch never has to save it.
 */
#ifndef NEST_ERROR_H
#define NEST_ERROR_H

#include <errno.h>

#include "common.h"

NEST_BEGIN_DECLS

/* System errors nest itself returns. */
#define NEST_ECANCELED (-ECANCELED) /* the enclosing scope was cancelled */
#define NEST_ETIMEDOUT (-ETIMEDOUT) /* a fail-after scope's deadline expired */
#define NEST_ENOMEM (-ENOMEM)       /* the allocator (or mmap) failed */
#define NEST_EBUSY (-EBUSY)         /* another task already waits there */
#define NEST_EAGAIN (-EAGAIN)       /* would block (try_ variants) */
#define NEST_EINVAL (-EINVAL)       /* an argument is out of range */

/* nest's own codes. */
#define NEST_ERANGE_FIRST (-10000)
#define NEST_ECLOSED (-10001)      /* the resource was closed while in use */
#define NEST_EDEADLOCK (-10002)    /* no task could ever run again */
#define NEST_ENOTSTARTED (-10003)  /* task exited without nest_started() */
#define NEST_EBROKEN (-10004)      /* the other side is gone: every receiver
                                      closed, or a lock's owner exited */
#define NEST_EEND (-10005)         /* end of channel: senders closed, drained */
#define NEST_ELAGGED (-10006)      /* a broadcast receiver fell behind and
                                      items were dropped */
#define NEST_EINTERRUPTED (-10007) /* the run was cancelled by Ctrl-C (SIGINT) */
#define NEST_ENONAME (-10008)      /* name resolution: no such host name (or no
                                      address for it) */
#define NEST_ERANGE_LAST (-10999)

/* A short, constant English description of code (negative), e.g.
 * "Operation cancelled".  Also works for 0 ("Success") and for any negated
 * errno value; unknown codes give "Unknown error".  Never returns NULL.
 * Thread-safe. */
NEST_API const char *nest_strerror(int code);

/* The symbolic name of code, e.g. "ECANCELED" or "NEST_ECLOSED"; "OK" for
 * 0; "UNKNOWN" for codes it does not know.  Thread-safe. */
NEST_API const char *nest_err_name(int code);

NEST_END_DECLS

#endif
