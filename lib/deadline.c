/*
 * lib/deadline.c - the deadline heap.
 *
 * Every entered, not yet cancelled scope with a finite deadline sits in one
 * pairing heap per runtime, ordered by deadline.  The heap is intrusive (its
 * links live in nest_scope), so adding a deadline never allocates and
 * entering a scope cannot fail.  Insertion is O(1); removing the earliest or
 * an arbitrary scope is O(log n) amortised.  The scheduler reads the
 * earliest deadline to arm the single libev timer (or, with the mock clock,
 * to know where to jump), and expires scopes whose deadline has passed.
 *
 * Links: hchild is a node's first child; hnext its next sibling; hprev its
 * previous sibling, or its parent when it is the first child, or NULL at the
 * root.  Equal deadlines are ordered by the sequence number each scope gets
 * when it is added, so scopes with the same deadline expire (and their
 * tasks wake) in the order they were armed: FIFO, and deterministic.
 */
#include "core.h"

static int before(const nest_scope *a, const nest_scope *b) {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->hseq < b->hseq);
}

static nest_scope *meld(nest_scope *a, nest_scope *b) {
    if (!a) return b;
    if (!b) return a;
    if (before(b, a)) {
        nest_scope *t = a;
        a = b;
        b = t;
    }
    b->hprev = a;
    b->hnext = a->hchild;
    if (a->hchild) a->hchild->hprev = b;
    a->hchild = b;
    return a;
}

/* The standard two-pass merge of a sibling list, iteratively (a list can
 * hold every sleeper of the program). */
static nest_scope *merge_pairs(nest_scope *first) {
    nest_scope *stack = NULL; /* melded pairs, last pair on top, via hnext */
    while (first) {
        nest_scope *a = first, *b = a->hnext;
        first = b ? b->hnext : NULL;
        a->hnext = a->hprev = NULL;
        if (b) b->hnext = b->hprev = NULL;
        nest_scope *m = meld(a, b);
        m->hnext = stack;
        stack = m;
    }
    nest_scope *root = NULL;
    while (stack) {
        nest_scope *next = stack->hnext;
        stack->hnext = NULL;
        root = meld(stack, root);
        stack = next;
    }
    if (root) root->hprev = NULL;
    return root;
}

void nest__deadline_add(struct nest__rt *rt, nest_scope *s) {
    s->hchild = s->hnext = s->hprev = NULL;
    s->flags |= NEST__SCOPE_INHEAP;
    s->hseq = ++rt->heap_seq;
    rt->heap = meld(rt->heap, s);
    rt->heap->hprev = NULL;
}

void nest__deadline_remove(struct nest__rt *rt, nest_scope *s) {
    if (s == rt->heap) {
        rt->heap = merge_pairs(s->hchild);
    } else {
        if (s->hprev->hchild == s)
            s->hprev->hchild = s->hnext;
        else
            s->hprev->hnext = s->hnext;
        if (s->hnext) s->hnext->hprev = s->hprev;
        s->hnext = s->hprev = NULL;
        rt->heap = meld(rt->heap, merge_pairs(s->hchild));
        rt->heap->hprev = NULL;
    }
    s->hchild = s->hnext = s->hprev = NULL;
    s->flags &= ~NEST__SCOPE_INHEAP;
}

nest_time nest__deadline_next(const struct nest__rt *rt) {
    return rt->heap ? rt->heap->deadline : NEST_FOREVER;
}

void nest__deadline_expire(struct nest__rt *rt, nest_time now) {
    while (rt->heap && rt->heap->deadline <= now)
        nest__scope_cancel(rt, rt->heap, NEST__SCOPE_EXPIRED);
}
