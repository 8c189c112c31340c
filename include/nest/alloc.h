/*
 * nest/alloc.h - the allocator hook.
 *
 * Every heap allocation nest makes goes through one function with the shape
 * of Lua's lua_Alloc, so a program can route nest's memory to its own
 * allocator, account for it, or make it fail on purpose to test its own
 * out-of-memory handling.  Task stacks are mapped with mmap, not through this
 * hook, because they need page alignment and guard pages; their failures are
 * reported the same way (-ENOMEM).
 */
#ifndef NEST_ALLOC_H
#define NEST_ALLOC_H

#include "common.h"

NEST_BEGIN_DECLS

/* With nsize == 0: free ptr (which may be NULL) and return NULL.  Otherwise
 * behave like realloc(ptr, nsize): return a block of nsize bytes (aligned for
 * any type) holding the first min(osize, nsize) bytes of ptr, or NULL on
 * failure, leaving ptr untouched.  osize is the size ptr was allocated with
 * (0 when ptr is NULL).  ud is the pointer given to nest_set_allocator(). */
typedef void *(*nest_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

/* Installs fn (NULL restores the default, which uses realloc/free).  Must be
 * called while no runtime is running in any thread: memory is always freed
 * through the hook that allocated it.  Not thread-safe. */
NEST_API void nest_set_allocator(nest_alloc_fn fn, void *ud);

/* Returns the installed hook and its ud (through *ud when ud is not NULL). */
NEST_API nest_alloc_fn nest_get_allocator(void **ud);

NEST_END_DECLS

#endif
