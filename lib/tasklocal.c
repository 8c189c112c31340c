/*
 * lib/tasklocal.c - task-local values inherited by child tasks
 * (nest/local.h).
 *
 * A task's values are a small array of (key, value) pairs, reference
 * counted and shared copy-on-write: spawning makes the child point at the
 * spawner's array (nest__locals_inherit in core.h, one increment), and the
 * first change by any task that shares an array copies it first.  A task
 * that never set a value has locals == NULL, so spawning costs a load and a
 * branch.
 *
 * Invariants:
 *  - refs counts the tasks whose locals point at the array; an array with
 *    refs == 1 belongs to one task and may change in place.
 *  - Keys in an array are distinct; n >= 1 (an emptied array is freed).
 *  - Arrays are released when their task finishes (task_done).
 */
#include <string.h>

#include "core.h"

typedef struct kv {
    const nest_local_key *key;
    void *value;
} kv;

struct nest__locals {
    size_t refs;
    unsigned n;   /* pairs in use */
    unsigned cap; /* pairs allocated */
    kv kv[];
};

static size_t size_of(unsigned cap) { return sizeof(struct nest__locals) + cap * sizeof(kv); }

static struct nest__locals *make(unsigned cap) {
    struct nest__locals *l = nest__alloc(size_of(cap));
    if (!l) return NULL;
    l->refs = 1;
    l->n = 0;
    l->cap = cap;
    return l;
}

static void unref(struct nest__locals *l) {
    if (--l->refs == 0) nest__free(l, size_of(l->cap));
}

void nest__locals_ref(struct nest__locals *l) { l->refs++; }

void nest__locals_release(struct nest__rt *rt, nest_task *t) {
    (void)rt;
    struct nest__locals *l = t->locals;
    t->locals = NULL;
    unref(l);
}

static int find(const struct nest__locals *l, const nest_local_key *key) {
    if (l)
        for (unsigned i = 0; i < l->n; i++)
            if (l->kv[i].key == key) return (int)i;
    return -1;
}

void *nest_local_get(const nest_local_key *key) {
    const struct nest__locals *l = nest__task_self("nest_local_get")->locals;
    int i = find(l, key);
    return i >= 0 ? l->kv[i].value : key->default_value;
}

int nest_local_isset(const nest_local_key *key) {
    return find(nest__task_self("nest_local_isset")->locals, key) >= 0;
}

int nest_local_set(const nest_local_key *key, void *value) {
    nest_task *t = nest__task_self("nest_local_set");
    struct nest__locals *l = t->locals;
    int i = find(l, key);
    if (l && l->refs == 1) { /* ours alone: change in place */
        if (i >= 0) {
            l->kv[i].value = value;
            return 0;
        }
        if (l->n == l->cap) {
            unsigned cap = l->cap * 2;
            struct nest__locals *g = nest__realloc(l, size_of(l->cap), size_of(cap));
            if (!g) return -ENOMEM;
            g->cap = cap;
            t->locals = l = g;
        }
        l->kv[l->n].key = key;
        l->kv[l->n].value = value;
        l->n++;
        return 0;
    }
    /* None yet, or shared with other tasks: make our own copy. */
    unsigned n = l ? l->n : 0;
    struct nest__locals *c = make(n + (i < 0) > 4 ? n + (i < 0) : 4);
    if (!c) return -ENOMEM;
    if (n) memcpy(c->kv, l->kv, n * sizeof(kv));
    c->n = n;
    if (i >= 0) {
        c->kv[i].value = value;
    } else {
        c->kv[c->n].key = key;
        c->kv[c->n].value = value;
        c->n++;
    }
    if (l) unref(l);
    t->locals = c;
    return 0;
}

int nest_local_unset(const nest_local_key *key) {
    nest_task *t = nest__task_self("nest_local_unset");
    struct nest__locals *l = t->locals;
    int i = find(l, key);
    if (i < 0) return 0;
    if (l->n == 1) { /* nothing left */
        unref(l);
        t->locals = NULL;
        return 0;
    }
    if (l->refs > 1) {
        struct nest__locals *c = make(l->n);
        if (!c) return -ENOMEM;
        memcpy(c->kv, l->kv, l->n * sizeof(kv));
        c->n = l->n;
        unref(l);
        t->locals = l = c;
    }
    l->kv[i] = l->kv[l->n - 1];
    l->n--;
    return 0;
}
