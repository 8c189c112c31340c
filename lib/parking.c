/*
 * lib/parking.c - parking lots (nest/lowlevel.h).
 *
 * Invariants:
 *  - w->linked iff w is in w->lot's list; a lot's count is its list length.
 *  - While a task is parked through this file, task->wake_ptr points at the
 *    first waiter of its group and task->wake_val holds the group size, so
 *    that cancellation can unlink every member.
 *  - A group is unlinked as a whole, exactly once: by the first unpark of
 *    any member, or by a successful cancellation.
 */
#include "core.h"

void nest_parking_lot_init(nest_parking_lot *l) {
    l->head = l->tail = NULL;
    l->count = 0;
    l->name = NULL;
    l->describe = NULL;
}

void nest_parking_lot_set_name(nest_parking_lot *l, const char *name,
                               nest_parking_lot_describe_fn describe) {
    l->name = name;
    l->describe = describe;
}

const char *nest_parking_lot_name(const nest_parking_lot *l) {
    return l->name ? l->name : "parking lot";
}

void nest_waiter_init(nest_waiter *w, nest_parking_lot *l, void *data) {
    w->next = w->prev = NULL;
    w->lot = l;
    w->task = NULL;
    w->data = data;
    w->result = 0;
    w->fired = 0;
    w->index = 0;
    w->count = 1;
    w->linked = 0;
    w->on_cancel = NULL;
}

static void link_tail(nest_parking_lot *l, nest_waiter *w) {
    w->lot = l;
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->count++;
    w->linked = 1;
}

static void unlink_one(nest_waiter *w) {
    nest_parking_lot *l = w->lot;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    l->count--;
    w->next = w->prev = NULL;
    w->linked = 0;
}

static void unlink_group(nest_waiter *w) {
    if (w->count == 1) { /* the common case: a plain nest_park */
        if (w->linked) unlink_one(w);
        return;
    }
    nest_waiter *base = w - w->index;
    for (unsigned i = 0; i < w->count; i++)
        if (base[i].linked) unlink_one(&base[i]);
}

static int abort_park(nest_task *t) {
    nest_waiter *base = t->wake_ptr;
    if (base->on_cancel && base->on_cancel(base) != 0) return NEST_PARK_REFUSE;
    unlink_group(base);
    return 0;
}

int nest_park_group(nest_waiter *ws, unsigned n, nest_park_cancel_fn on_cancel) {
    nest_task *t = nest__task_self("nest_park");
    struct nest__rt *rt = nest__rt_cur;
    if (n == 0) nest__panic("nest_park_group() with no waiters (rule: park in at least one lot)");
    if (nest__cancelled_at(t->cur)) return -ECANCELED;
    for (unsigned i = 0; i < n; i++) {
        ws[i].task = t;
        ws[i].index = i;
        ws[i].count = n;
        ws[i].fired = 0;
        ws[i].result = 0;
        ws[i].on_cancel = on_cancel;
        link_tail(ws[i].lot, &ws[i]);
    }
    t->wake_ptr = ws;
    t->wake_val = (int)n;
    return nest__park_on(rt, t, abort_park, NEST__BLOCK_PARK, ws);
}

int nest_park(nest_parking_lot *l, nest_waiter *w, void *data, nest_park_cancel_fn on_cancel) {
    nest_waiter_init(w, l, data);
    return nest_park_group(w, 1, on_cancel);
}

nest_waiter *nest_parking_lot_first(const nest_parking_lot *l) { return l->head; }
size_t nest_parking_lot_count(const nest_parking_lot *l) { return l->count; }
struct nest_task *nest_waiter_task(const nest_waiter *w) { return w->task; }

void nest_unpark_waiter(nest_waiter *w, int result) {
    if (!w->linked)
        nest__panic("nest_unpark_waiter(): the waiter is not parked (rule: unpark a waiter "
                    "once, while it is in its lot)");
    unlink_group(w);
    w->fired = 1;
    w->result = result;
    nest__wake(nest__rt_cur, w->task, result);
}

size_t nest_unpark(nest_parking_lot *l, size_t n, int result) {
    size_t done = 0;
    while (done < n && l->head) {
        nest_unpark_waiter(l->head, result);
        done++;
    }
    return done;
}

size_t nest_unpark_all(nest_parking_lot *l, int result) { return nest_unpark(l, SIZE_MAX, result); }

size_t nest_repark(nest_parking_lot *from, nest_parking_lot *to, size_t n) {
    size_t moved = 0;
    while (moved < n && from->head) {
        nest_waiter *w = from->head;
        unlink_one(w);
        link_tail(to, w);
        moved++;
    }
    return moved;
}
