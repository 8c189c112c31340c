/*
 * nest/task.h - tasks: identity, names, handles.
 *
 * A task is a stackful coroutine: it runs a nest_fn on its own stack and can
 * block anywhere in its call chain.  Tasks are created with nest_spawn() or
 * nest_start() (nest/nursery.h) and are owned by their nursery.  A task
 * handle (nest_spawn_options.handle) stays valid until the nursery's close
 * returns; nest_current_task() is valid while the task runs.
 */
#ifndef NEST_TASK_H
#define NEST_TASK_H

#include "common.h"

NEST_BEGIN_DECLS

/* The calling task, or NULL outside a task. */
NEST_API nest_task *nest_current_task(void);

/* The task's name: nest_spawn_options.name, or the spawned function's name;
 * "main" for the root task. */
NEST_API const char *nest_task_name(const nest_task *t);

/* Where the task was spawned. */
NEST_API const char *nest_task_file(const nest_task *t);
NEST_API int nest_task_line(const nest_task *t);

/* A number unique among the tasks of one runtime (the root task is 1). */
NEST_API uint64_t nest_task_id(const nest_task *t);

/* Whether the task has returned. */
NEST_API int nest_task_done(const nest_task *t);

/* Cancels t alone: its own root scope, not its siblings.  The child's
 * resulting -ECANCELED is not a failure of the nursery.  Not a checkpoint.
 * A no-op on a finished task. */
NEST_API void nest_task_cancel(nest_task *t);

/* Waits until t has returned and stores its return value in *result (if
 * result is not NULL).  A checkpoint: returns 0, or -ECANCELED (t is not
 * affected).  A task cannot wait for itself (-EINVAL). */
NEST_API int nest_task_wait(nest_task *t, int *result);

NEST_END_DECLS

#endif
