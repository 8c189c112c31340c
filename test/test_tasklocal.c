/*
 * test/test_tasklocal.c - task-local values (nest/local.h).
 *
 * Covers: defaults; set/get/isset/unset; a child inherits the values in
 * effect in its spawner at the moment of the spawn (nest_spawn and
 * nest_start), down several generations; later changes on either side are
 * not seen by the other; the spawner's values, not the nursery opener's;
 * many keys; setting in a loop does not allocate; every array is freed by
 * the end of the run; allocation failure leaves the value unchanged.
 */
#define _GNU_SOURCE

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/local.h"

/* An allocator that counts live bytes and can be told to fail. */
static long live_bytes, allocations;
static int fail_next;
static void *fail_once_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (nsize == 0) {
        live_bytes -= (long)osize;
        free(ptr);
        return NULL;
    }
    if (fail_next) {
        fail_next = 0;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p) {
        live_bytes += (long)nsize - (long)(ptr ? osize : 0);
        allocations++;
    }
    return p;
}

static nest_local_key request = NEST_LOCAL_KEY_INIT("request", "none");
static nest_local_key user = NEST_LOCAL_KEY_INIT("user", NULL);

static const char *req(void) { return nest_local_get(&request); }

/* ---- basics ------------------------------------------------------------ */

static int basics(void *arg) {
    (void)arg;
    CHECK_STREQ(req(), "none");
    CHECK_EQ(nest_local_isset(&request), 0);
    CHECK(nest_local_get(&user) == NULL);
    CHECK_EQ(nest_local_set(&request, "r1"), 0);
    CHECK_STREQ(req(), "r1");
    CHECK_EQ(nest_local_isset(&request), 1);
    CHECK_EQ(nest_local_set(&request, "r2"), 0);
    CHECK_STREQ(req(), "r2");
    CHECK_EQ(nest_local_set(&user, "ann"), 0);
    CHECK_STREQ(nest_local_get(&user), "ann");
    CHECK_EQ(nest_local_unset(&request), 0);
    CHECK_STREQ(req(), "none");
    CHECK_EQ(nest_local_isset(&request), 0);
    CHECK_EQ(nest_local_unset(&request), 0); /* not set: nothing to do */
    CHECK_STREQ(nest_local_get(&user), "ann");
    CHECK_EQ(nest_local_unset(&user), 0);
    CHECK(nest_local_get(&user) == NULL);
    return 0;
}

NEST_TEST(set_get_unset_and_defaults) {
    nest_set_allocator(fail_once_alloc, NULL);
    CHECK_EQ(nest_run(basics, NULL), 0);
    CHECK_EQ(live_bytes, 0);
    nest_set_allocator(NULL, NULL);
}

/* ---- inheritance ------------------------------------------------------- */

static int grandchild(void *arg) {
    note("%s:%s", (const char *)arg, req());
    return 0;
}

static int child(void *arg) {
    const char *name = arg;
    note("%s:%s", name, req());
    CHECK_EQ(nest_checkpoint(), 0); /* the parent changes its value meanwhile */
    note("%s:%s", name, req());
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, grandchild, "g1"); /* inherits this task's (inherited) value */
    CHECK_EQ(nest_local_set(&request, "child's own"), 0);
    nest_spawn(&n, grandchild, "g2");
    int rc = nest_nursery_close(&n, 0);
    note("%s:%s", name, req());
    return rc;
}

static int inheritance_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, child, "a"); /* before any set: the default */
    CHECK_EQ(nest_local_set(&request, "req-7"), 0);
    nest_spawn(&n, child, "b"); /* req-7 */
    CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_local_set(&request, "req-8"), 0); /* not seen by b */
    int rc = nest_nursery_close(&n, 0);
    note("root:%s", req()); /* the children's sets are not seen here */
    return rc;
}

NEST_TEST(children_inherit_at_spawn_and_changes_stay_local) {
    nest_set_allocator(fail_once_alloc, NULL);
    CHECK_EQ(nest_run(inheritance_root, NULL), 0);
    CHECK_STREQ(events, "a:none b:req-7 a:none b:req-7 g1:none g2:child's own g1:req-7 "
                        "g2:child's own a:child's own b:child's own root:req-8");
    CHECK_EQ(live_bytes, 0);
    nest_set_allocator(NULL, NULL);
}

/* The spawner's values, not those of the task that opened the nursery. */
static nest_nursery *shared_nursery;
static int spawns_into_shared(void *arg) {
    (void)arg;
    CHECK_EQ(nest_local_set(&request, "spawner"), 0);
    return nest_spawn(shared_nursery, grandchild, "x");
}
static int spawner_root(void *arg) {
    (void)arg;
    CHECK_EQ(nest_local_set(&request, "opener"), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    shared_nursery = &n;
    nest_spawn(&n, spawns_into_shared, NULL);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(values_come_from_the_spawner_not_the_opener) {
    events[0] = '\0';
    CHECK_EQ(nest_run(spawner_root, NULL), 0);
    CHECK_STREQ(events, "x:spawner");
}

static int started(void *arg) {
    (void)arg;
    note("started:%s", req());
    nest_started(NULL);
    return 0;
}
static int start_root(void *arg) {
    (void)arg;
    CHECK_EQ(nest_local_set(&request, "at-start"), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_start(&n, started, NULL, NULL), 0);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(nest_start_inherits_too) {
    events[0] = '\0';
    CHECK_EQ(nest_run(start_root, NULL), 0);
    CHECK_STREQ(events, "started:at-start");
}

/* ---- cost and memory --------------------------------------------------- */

static nest_local_key keys[10];

static int many_keys(void *arg) {
    (void)arg;
    for (int i = 0; i < 10; i++) {
        keys[i].name = "k";
        keys[i].default_value = NULL;
        CHECK_EQ(nest_local_set(&keys[i], (void *)(intptr_t)(i + 1)), 0);
    }
    for (int i = 0; i < 10; i++) CHECK_EQ((intptr_t)nest_local_get(&keys[i]), i + 1);
    /* Unsetting from the middle keeps the others. */
    CHECK_EQ(nest_local_unset(&keys[3]), 0);
    for (int i = 0; i < 10; i++) CHECK_EQ((intptr_t)nest_local_get(&keys[i]), i == 3 ? 0 : i + 1);
    /* Setting in a loop changes the array in place: no allocation. */
    long before = allocations;
    for (int i = 0; i < 10000; i++) CHECK_EQ(nest_local_set(&request, (void *)"loop"), 0);
    CHECK(allocations - before <= 1);
    /* Spawning shares: no allocation per child until a child sets. */
    before = allocations;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < 100; i++) nest_spawn(&n, grandchild, "c");
    int rc = nest_nursery_close(&n, 0);
    CHECK(allocations - before < 10); /* control-block chunks only */
    return rc;
}

NEST_TEST(many_keys_and_no_allocation_in_steady_state) {
    nest_set_allocator(fail_once_alloc, NULL);
    CHECK_EQ(nest_run(many_keys, NULL), 0);
    CHECK_EQ(live_bytes, 0);
    nest_set_allocator(NULL, NULL);
}

static int inherits_and_sets(void *arg) {
    (void)arg;
    CHECK_STREQ(req(), "shared");
    fail_next = 1; /* the copy-on-write copy fails */
    CHECK_EQ(nest_local_set(&request, "mine"), -ENOMEM);
    CHECK_STREQ(req(), "shared");
    fail_next = 1;
    CHECK_EQ(nest_local_unset(&request), -ENOMEM);
    CHECK_STREQ(req(), "shared");
    CHECK_EQ(nest_local_set(&request, "mine"), 0);
    CHECK_STREQ(req(), "mine");
    return 0;
}
static int oom_root(void *arg) {
    (void)arg;
    fail_next = 1;
    CHECK_EQ(nest_local_set(&request, "x"), -ENOMEM);
    CHECK_EQ(nest_local_isset(&request), 0);
    CHECK_EQ(nest_local_set(&request, "shared"), 0);
    CHECK_EQ(nest_local_set(&user, "u"), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, inherits_and_sets, NULL);
    int rc = nest_nursery_close(&n, 0);
    CHECK_STREQ(req(), "shared");
    return rc;
}

NEST_TEST(allocation_failure_changes_nothing) {
    nest_set_allocator(fail_once_alloc, NULL);
    CHECK_EQ(nest_run(oom_root, NULL), 0);
    CHECK_EQ(live_bytes, 0);
    nest_set_allocator(NULL, NULL);
}

NEST_TEST_ABORTS(get_outside_a_task_aborts, "nest_local_get() called outside a task") {
    nest_local_get(&request);
}
