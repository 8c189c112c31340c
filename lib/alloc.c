/*
 * lib/alloc.c - the allocator hook (nest/alloc.h) and the internal
 * allocation functions every other file uses (lib/alloc.h).
 *
 * The hook is process-wide and is only changed while no runtime runs, so
 * reading it needs no synchronisation.  The test hook nest__alloc_fail_after
 * lets the out-of-memory tests fail the Nth allocation.
 */
#include <stdlib.h>

#include "alloc.h"
#include "nest/alloc.h"

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

static nest_alloc_fn hook = default_alloc;
static void *hook_ud;

void nest_set_allocator(nest_alloc_fn fn, void *ud) {
    hook = fn ? fn : default_alloc;
    hook_ud = fn ? ud : NULL;
}

nest_alloc_fn nest_get_allocator(void **ud) {
    if (ud) *ud = hook_ud;
    return hook;
}

void *nest__alloc(size_t n) { return hook(hook_ud, NULL, 0, n); }

void *nest__realloc(void *p, size_t osize, size_t nsize) {
    return hook(hook_ud, p, osize, nsize);
}

void nest__free(void *p, size_t n) {
    if (p) hook(hook_ud, p, n, 0);
}
