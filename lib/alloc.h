/*
 * lib/alloc.h - nest's internal allocation functions.
 *
 * Every heap allocation in the library goes through these, and they go
 * through the hook installed with nest_set_allocator() (nest/alloc.h).  They
 * return NULL on failure; callers turn that into -ENOMEM and undo what they
 * did, so a failed allocation leaks nothing.
 */
#ifndef NEST_LIB_ALLOC_H
#define NEST_LIB_ALLOC_H

#include <stddef.h>

void *nest__alloc(size_t n);
void *nest__realloc(void *p, size_t osize, size_t nsize);
void nest__free(void *p, size_t n);

#endif
