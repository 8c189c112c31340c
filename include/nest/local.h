/*
 * nest/local.h - task-local values, inherited by child tasks (Trio's
 * contextvars): e.g. a request id that every log line of a request's
 * tasks can read, however deep they were spawned.
 *
 *     static nest_local_key request_id = NEST_LOCAL_KEY_INIT("request_id", NULL);
 *
 *     nest_local_set(&request_id, req);             // in the handler task
 *     nest_spawn(&n, fetch_part, &parts[i]);        // children inherit req
 *     ... log("%s", (char *)nest_local_get(&request_id));
 *
 * Semantics: each task has its own set of values.  A child starts with the
 * values in effect in the task that spawned it (not where the nursery was
 * opened), at the moment of the spawn; later changes in either task are
 * not seen by the other.  A task with no value for a key reads the key's
 * default.  The root task starts with none.
 *
 * Cost: spawning shares the spawner's values (copy-on-write), so it costs a
 * load and a branch when no task-local was ever set, and a reference count
 * when one was.  nest_local_get is a scan of the task's values (a handful
 * of keys in practice); nest_local_set copies them only when they are
 * shared with another task.
 *
 * Values are plain pointers: nest neither copies nor frees what they point
 * at, which must outlive every task that can read it (for a value set by a
 * task and read by its children, the task's own frame is enough: its
 * children end before its nursery closes).
 */
#ifndef NEST_LOCAL_H
#define NEST_LOCAL_H

#include "common.h"

NEST_BEGIN_DECLS

/* A key: its identity is its address.  Define it with static storage. */
typedef struct nest_local_key {
    const char *name;    /* for diagnostics */
    void *default_value; /* what a task without a value reads */
} nest_local_key;

#define NEST_LOCAL_KEY_INIT(name, default_value) {(name), (default_value)}

/* The calling task's value for key, or key->default_value.  Must be called
 * from a task.  Not a checkpoint. */
NEST_API void *nest_local_get(const nest_local_key *key);

/* Whether the calling task has a value of its own for key (set by it or
 * inherited), as opposed to reading the default. */
NEST_API int nest_local_isset(const nest_local_key *key);

/* Sets the calling task's value for key; tasks it spawns from now on
 * inherit it.  Returns 0 or -ENOMEM (nothing changed).  Must be called from
 * a task.  Not a checkpoint. */
NEST_API int nest_local_set(const nest_local_key *key, void *value);

/* Removes the calling task's value for key, so that it reads the default
 * again.  Returns 0 or -ENOMEM (when the values are shared and must be
 * copied).  Not a checkpoint. */
NEST_API int nest_local_unset(const nest_local_key *key);

NEST_END_DECLS

#endif
