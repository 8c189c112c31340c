/*
 * lib/clock.c - the runtime's clock: CLOCK_MONOTONIC or the mock clock.
 *
 * rt->now caches the last reading.  With the real clock it is refreshed by
 * every nest_now() and every poll; with the mock clock it *is* the time, and
 * moves only by nest_clock_jump() or an autojump in the scheduler.
 */
#define _POSIX_C_SOURCE 200809L
#include <time.h>

#include "core.h"

nest_time nest__monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (nest_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

nest_time nest__clock_read(struct nest__rt *rt) {
    if (rt->clock_kind == NEST_CLOCK_MONOTONIC) rt->now = nest__monotonic();
    return rt->now;
}

nest_time nest_now(void) {
    struct nest__rt *rt = nest__rt_cur;
    return rt ? nest__clock_read(rt) : nest__monotonic();
}

static struct nest__rt *mock_rt(const char *what) {
    nest__task_self(what);
    struct nest__rt *rt = nest__rt_cur;
    return rt->clock_kind == NEST_CLOCK_MOCK ? rt : NULL;
}

int nest_clock_jump(nest_time d) {
    struct nest__rt *rt = mock_rt("nest_clock_jump");
    if (!rt || d < 0) return -EINVAL;
    rt->now = nest_time_add(rt->now, d);
    nest__deadline_expire(rt, rt->now);
    return 0;
}

int nest_clock_set_autojump(nest_time threshold) {
    struct nest__rt *rt = mock_rt("nest_clock_set_autojump");
    if (!rt || threshold < 0) return -EINVAL;
    rt->autojump = threshold;
    return 0;
}
