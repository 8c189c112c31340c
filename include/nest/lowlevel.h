/*
 * nest/lowlevel.h - the parking lot: the one blocking primitive every
 * synchronisation object of nest is built on, public for extension authors
 * who build their own (Trio's trio.lowlevel.ParkingLot).
 *
 * A parking lot is a FIFO queue of parked tasks.  A task parks with a
 * nest_waiter that lives on its own stack; whoever changes the state the
 * task waits for unparks it, handing it a result code (and, through the
 * waiter's data pointer, anything else: a buffer to fill, an item to take).
 * Parking is a checkpoint: it fails with -ECANCELED at once in a cancelled
 * scope, and a parked task that is cancelled is removed from its lot before
 * it wakes, so it cannot be handed anything afterwards.
 *
 * A task may park in several lots at once, as one group (nest_park_group):
 * the first unpark of any member removes every member from its lot and
 * wakes the task once.  That is how choose waits on several channels.
 *
 * Ordering: nest_unpark wakes waiters in the order they parked; woken tasks
 * run at the next scheduling pass, in the order they were woken.
 *
 * Thread-safety: a lot belongs to one runtime; use it only from its tasks.
 */
#ifndef NEST_LOWLEVEL_H
#define NEST_LOWLEVEL_H

#include "common.h"

NEST_BEGIN_DECLS

typedef struct nest_parking_lot nest_parking_lot;
typedef struct nest_waiter nest_waiter;

/* Called when a parked task is cancelled, with the first waiter of its
 * group.  Return 0 to let the cancellation happen: nest removes the group
 * from its lots and the park returns -ECANCELED.  Return NEST_PARK_REFUSE
 * when the wait can no longer be undone (its effect has begun): the task
 * stays parked until someone unparks it with the real result, and the hook
 * is not called again.  Must not block. */
typedef int (*nest_park_cancel_fn)(nest_waiter *w);
#define NEST_PARK_REFUSE 1

/* One task's place in one lot.  Lives on the parked task's stack; fields
 * are private except data, result and fired, which the two sides share. */
struct nest_waiter {
    nest_waiter *next;           /* in the lot, FIFO */
    nest_waiter *prev;
    nest_parking_lot *lot;       /* the lot it parks (or parked) in */
    struct nest_task *task;
    void *data;                  /* the parker's: what it offers or wants */
    int result;                  /* set by the unparker */
    int fired;                   /* 1 on the member that was unparked */
    unsigned index;              /* position in its group */
    unsigned count;              /* size of its group */
    int linked;                  /* currently in lot */
    nest_park_cancel_fn on_cancel;
};

/* Writes a short description of the state of the object that owns l (e.g.
 * "held by task #3 'writer'") into buf, NUL-terminated, for the task tree
 * dump (nest/inspect.h).  Runs in the scheduler or the dumping task; must
 * not block. */
typedef void (*nest_parking_lot_describe_fn)(const nest_parking_lot *l, char *buf, size_t len);

struct nest_parking_lot {
    nest_waiter *head;
    nest_waiter *tail;
    size_t count;
    const char *name;            /* what the lot is, for diagnostics */
    nest_parking_lot_describe_fn describe; /* NULL: nothing more to say */
};

/* Private: a task's exit hook, embedded in objects a task may hold (a lock)
 * so that they learn when their holder exits.  Managed by the library. */
typedef struct nest__exit_hook {
    struct nest__exit_hook *next;
    struct nest__exit_hook *prev;
    void (*fn)(struct nest__exit_hook *h, struct nest_task *t);
} nest__exit_hook;

#define NEST_PARKING_LOT_INIT {NULL, NULL, 0, NULL, NULL}
#define NEST_PARKING_LOT_INIT_NAMED(name) {NULL, NULL, 0, (name), NULL}

/* Initialises an empty lot, named "parking lot".  Never fails. */
NEST_API void nest_parking_lot_init(nest_parking_lot *l);

/* Names l for diagnostics: the task tree dump and traces say that a task
 * parked in l waits on "<name> 0x<address>", followed by what describe
 * writes (describe may be NULL).  name must outlive the lot (a string
 * literal such as "lock", "semaphore", "channel receive").  Call after
 * nest_parking_lot_init().  Not a checkpoint; never fails. */
NEST_API void nest_parking_lot_set_name(nest_parking_lot *l, const char *name,
                                        nest_parking_lot_describe_fn describe);

/* l's name: the one given to nest_parking_lot_set_name(), or "parking lot". */
NEST_API const char *nest_parking_lot_name(const nest_parking_lot *l);

/* Prepares w to park in l with data, for nest_park_group(). */
NEST_API void nest_waiter_init(nest_waiter *w, nest_parking_lot *l, void *data);

/* Parks the calling task in l until unparked, and returns the result the
 * unparker gave.  data is stored in w->data for the unparker.  A checkpoint:
 * returns -ECANCELED at once in a cancelled scope, or when cancelled while
 * parked (then w is no longer in l).  on_cancel may be NULL. */
NEST_API int nest_park(nest_parking_lot *l, nest_waiter *w, void *data,
                       nest_park_cancel_fn on_cancel);

/* Parks in several lots at once: ws[0..n-1], each prepared with
 * nest_waiter_init().  Returns the result of the member that was unparked;
 * that member has fired == 1.  A checkpoint, as nest_park().  n >= 1. */
NEST_API int nest_park_group(nest_waiter *ws, unsigned n, nest_park_cancel_fn on_cancel);

/* The first (longest-parked) waiter of l, or NULL.  Walk on with w->next. */
NEST_API nest_waiter *nest_parking_lot_first(const nest_parking_lot *l);

/* Number of waiters in l. */
NEST_API size_t nest_parking_lot_count(const nest_parking_lot *l);

/* Unparks w's task: removes every member of w's group from its lot, marks w
 * fired, stores result, and makes the task runnable (its park returns
 * result).  w must be in a lot.  Not a checkpoint; never blocks. */
NEST_API void nest_unpark_waiter(nest_waiter *w, int result);

/* Unparks the first n waiters of l (FIFO) with result; returns how many. */
NEST_API size_t nest_unpark(nest_parking_lot *l, size_t n, int result);

/* Unparks every waiter of l with result; returns how many. */
NEST_API size_t nest_unpark_all(nest_parking_lot *l, int result);

/* Moves the first n waiters of from to the end of to, keeping their order,
 * without waking them (e.g. a condition variable handing waiters to its
 * lock).  Returns how many moved. */
NEST_API size_t nest_repark(nest_parking_lot *from, nest_parking_lot *to, size_t n);

/* The task parked with w. */
NEST_API struct nest_task *nest_waiter_task(const nest_waiter *w);

NEST_END_DECLS

#endif
