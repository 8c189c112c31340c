/*
 * test/test_trace.c - Chrome Trace Event JSON export (nest/trace.h).
 *
 * Each case records a run and reads the file back with a small JSON parser
 * (below: the whole grammar, strings with escapes, numbers), then checks the
 * structure every viewer relies on and the events the run must produce:
 *  - the document is {"traceEvents":[...], ...} and parses completely;
 *  - every event has ph, pid, tid and ts; on every track "B"/"E" slices
 *    nest properly and timestamps never go back;
 *  - every task has a named track ("#id name"), "run" slices for its steps,
 *    blocked slices named after what it waited for ("sleep", "read fd N",
 *    "lock", "nursery close", "wait #id"); spawn flows pair up; nurseries
 *    are async spans; cancellations, deadlines, errors and exits are
 *    instant events; the scheduler's I/O waits are on track 0.
 * Also: starting and stopping in the middle of a run still balances;
 * NEST_TRACE=path traces a run; errors of start/stop; names are escaped.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <fcntl.h>
#include <unistd.h>

#include "harness.h"
#include "nest.h"
#include "nest/trace.h"

/* ---- a small JSON parser ----------------------------------------------- */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
    int type;
    double num;
    char *str;          /* J_STR: decoded; object member: its key */
    struct jv *first;   /* J_ARR, J_OBJ: first element / member */
    struct jv *next;    /* next sibling */
    struct jv *value;   /* object member: its value */
} jv;

static const char *jp;
static int jerr;

static jv *jnew(int type) {
    jv *v = calloc(1, sizeof *v);
    CHECK(v != NULL);
    v->type = type;
    return v;
}

static void jws(void) {
    while (*jp == ' ' || *jp == '\n' || *jp == '\t' || *jp == '\r') jp++;
}

static char *jstring(void) {
    if (*jp != '"') return jerr = 1, NULL;
    jp++;
    size_t cap = 64, n = 0;
    char *s = malloc(cap);
    for (;;) {
        if (n + 8 > cap) s = realloc(s, cap *= 2);
        unsigned char c = (unsigned char)*jp++;
        if (c == '"') break;
        if (c == '\0' || c < 0x20) return jerr = 1, s;
        if (c != '\\') {
            s[n++] = (char)c;
            continue;
        }
        c = (unsigned char)*jp++;
        switch (c) {
        case '"': case '\\': case '/': s[n++] = (char)c; break;
        case 'n': s[n++] = '\n'; break;
        case 't': s[n++] = '\t'; break;
        case 'r': s[n++] = '\r'; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'u': {
            unsigned u = 0;
            for (int i = 0; i < 4; i++) {
                if (!isxdigit((unsigned char)*jp)) return jerr = 1, s;
                char h = *jp++;
                u = u * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
            }
            s[n++] = u < 0x80 ? (char)u : '?';
            break;
        }
        default: return jerr = 1, s;
        }
    }
    s[n] = '\0';
    return s;
}

static jv *jvalue(void);

static jv *jvalue(void) {
    jws();
    jv *v;
    if (*jp == '{') {
        v = jnew(J_OBJ);
        jp++;
        jws();
        jv **tail = &v->first;
        if (*jp == '}') {
            jp++;
            return v;
        }
        for (;;) {
            jws();
            jv *m = jnew(J_NULL);
            m->str = jstring();
            jws();
            if (*jp++ != ':') return jerr = 1, v;
            m->value = jvalue();
            *tail = m;
            tail = &m->next;
            jws();
            if (*jp == ',') {
                jp++;
                continue;
            }
            if (*jp++ != '}') jerr = 1;
            return v;
        }
    }
    if (*jp == '[') {
        v = jnew(J_ARR);
        jp++;
        jws();
        jv **tail = &v->first;
        if (*jp == ']') {
            jp++;
            return v;
        }
        for (;;) {
            jv *e = jvalue();
            *tail = e;
            tail = &e->next;
            jws();
            if (*jp == ',') {
                jp++;
                continue;
            }
            if (*jp++ != ']') jerr = 1;
            return v;
        }
    }
    if (*jp == '"') {
        v = jnew(J_STR);
        v->str = jstring();
        return v;
    }
    if (strncmp(jp, "true", 4) == 0 || strncmp(jp, "false", 5) == 0) {
        v = jnew(J_BOOL);
        v->num = *jp == 't';
        jp += *jp == 't' ? 4 : 5;
        return v;
    }
    if (strncmp(jp, "null", 4) == 0) {
        jp += 4;
        return jnew(J_NULL);
    }
    char *end;
    v = jnew(J_NUM);
    v->num = strtod(jp, &end);
    if (end == jp || !(*jp == '-' || isdigit((unsigned char)*jp))) jerr = 1;
    jp = end;
    return v;
}

static jv *json_parse(const char *text) {
    jp = text;
    jerr = 0;
    jv *v = jvalue();
    jws();
    if (*jp) jerr = 1;
    if (jerr) fprintf(stderr, "JSON error near: %.60s\n", jp);
    CHECK_EQ(jerr, 0);
    return v;
}

static void jfree(jv *v) {
    while (v) {
        jv *next = v->next;
        jfree(v->first);
        jfree(v->value);
        free(v->str);
        free(v);
        v = next;
    }
}

static jv *jget(const jv *o, const char *key) {
    if (!o || o->type != J_OBJ) return NULL;
    for (jv *m = o->first; m; m = m->next)
        if (strcmp(m->str, key) == 0) return m->value;
    return NULL;
}

static const char *jstr(const jv *o, const char *key) {
    jv *v = jget(o, key);
    return v && v->type == J_STR ? v->str : NULL;
}

static double jnum(const jv *o, const char *key) {
    jv *v = jget(o, key);
    CHECK(v && v->type == J_NUM);
    return v->num;
}

/* ---- reading a trace back ---------------------------------------------- */

static char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    CHECK_EQ(fread(s, 1, (size_t)n, f), n);
    s[n] = '\0';
    fclose(f);
    return s;
}

#define MAX_TID 64

/* Parses the trace and checks the structure every viewer relies on.
 * Returns the traceEvents array; *docp gets the document (for jfree). */
static jv *check_trace(const char *text, jv **docp) {
    jv *doc = json_parse(text);
    *docp = doc;
    CHECK_EQ(doc->type, J_OBJ);
    jv *evs = jget(doc, "traceEvents");
    CHECK(evs && evs->type == J_ARR);
    int depth[MAX_TID] = {0};
    double last_ts[MAX_TID] = {0};
    int async_open = 0;
    for (jv *e = evs->first; e; e = e->next) {
        const char *ph = jstr(e, "ph");
        CHECK(ph != NULL);
        CHECK_EQ(jnum(e, "pid"), 1);
        int tid = (int)jnum(e, "tid");
        double ts = jnum(e, "ts");
        CHECK(tid >= 0 && tid < MAX_TID);
        CHECK(ts >= 0);
        if (strcmp(ph, "B") == 0 || strcmp(ph, "E") == 0) {
            CHECK(ts >= last_ts[tid]);
            last_ts[tid] = ts;
            depth[tid] += ph[0] == 'B' ? 1 : -1;
            if (depth[tid] < 0) fprintf(stderr, "unbalanced E on tid %d at ts %.3f\n", tid, ts);
            CHECK(depth[tid] >= 0);
            CHECK(depth[tid] <= 1); /* a step or a block, never both */
            if (ph[0] == 'B') CHECK(jstr(e, "name") != NULL);
        } else if (strcmp(ph, "b") == 0 || strcmp(ph, "e") == 0) {
            CHECK_STREQ(jstr(e, "cat"), "nursery");
            CHECK(jstr(e, "id") != NULL);
            async_open += ph[0] == 'b' ? 1 : -1;
            CHECK(async_open >= 0);
        } else if (strcmp(ph, "i") == 0) {
            CHECK_STREQ(jstr(e, "s"), "t");
            CHECK(jstr(e, "name") != NULL);
        } else if (strcmp(ph, "s") == 0 || strcmp(ph, "f") == 0) {
            CHECK(jget(e, "id") != NULL);
        } else {
            CHECK_STREQ(ph, "M");
        }
    }
    for (int t = 0; t < MAX_TID; t++) CHECK_EQ(depth[t], 0);
    CHECK_EQ(async_open, 0);
    return evs;
}

/* How many events match ph, tid (-1: any) and name (prefix; NULL: any). */
static int count(const jv *evs, const char *ph, int tid, const char *name) {
    int n = 0;
    for (jv *e = evs->first; e; e = e->next) {
        if (strcmp(jstr(e, "ph"), ph) != 0) continue;
        if (tid >= 0 && (int)jnum(e, "tid") != tid) continue;
        const char *nm = jstr(e, "name");
        if (name && (!nm || strncmp(nm, name, strlen(name)) != 0)) continue;
        n++;
    }
    return n;
}

/* The track name of tid, from its thread_name metadata. */
static const char *track_name(const jv *evs, int tid) {
    for (jv *e = evs->first; e; e = e->next)
        if (strcmp(jstr(e, "ph"), "M") == 0 && (int)jnum(e, "tid") == tid &&
            strcmp(jstr(e, "name"), "thread_name") == 0)
            return jstr(jget(e, "args"), "name");
    return NULL;
}

/* ---- a run with a bit of everything ------------------------------------- */

static char trace_path[] = "/tmp/nest_test_trace_XXXXXX";
static int pipefd[2];
static nest_parking_lot lock;
static int line_n1, line_n2, line_scope;

static int worker(void *arg) { /* tid 2 */
    (void)arg;
    nest_scope s;
    line_scope = __LINE__ + 1;
    nest_move_on_after(&s, NEST_MSEC(500));
    int rc = nest_scope_exit(&s, nest_sleep(NEST_SEC(1)));
    if (rc < 0) return rc;
    nest_waiter w;
    return nest_park(&lock, &w, NULL, NULL);
}
static int reader(void *arg) { /* tid 3 */
    (void)arg;
    int rc = nest_wait_readable(pipefd[0]);
    char c;
    CHECK_EQ(read(pipefd[0], &c, 1), 1);
    return rc;
}
static int fails(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    return -EIO;
}
static int waits_forever(void *arg) {
    (void)arg;
    return nest_sleep_forever();
}

static int everything(void *arg) {
    FILE *out = arg;
    CHECK_EQ(nest_trace_start(out), 0);
    CHECK_EQ(nest_trace_start(out), -EBUSY);
    CHECK_EQ(pipe(pipefd), 0);
    nest_parking_lot_init(&lock);
    nest_parking_lot_set_name(&lock, "lock", NULL);
    nest_nursery n;
    line_n1 = __LINE__ + 1;
    nest_nursery_open(&n);
    nest_spawn(&n, worker, NULL);
    nest_spawn(&n, reader, NULL);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0); /* worker wakes at 0.5 s, parks */
    CHECK_EQ(write(pipefd[1], "x", 1), 1);
    CHECK_EQ(nest_unpark_all(&lock, 0), 1);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);

    nest_nursery m;
    line_n2 = __LINE__ + 1;
    nest_nursery_open(&m);
    nest_spawn(&m, fails, NULL);
    nest_spawn(&m, waits_forever, NULL);
    CHECK_EQ(nest_nursery_close(&m, 0), -EIO);
    close(pipefd[0]);
    close(pipefd[1]);
    CHECK_EQ(nest_trace_stop(), 0);
    CHECK_EQ(nest_trace_stop(), -EINVAL);
    return 0;
}

NEST_TEST(trace_of_a_run_reads_back_with_every_event) {
    int fd = mkstemp(trace_path);
    CHECK(fd >= 0);
    FILE *out = fdopen(fd, "w");
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    CHECK_EQ(nest_run_opts(everything, out, &o), 0);
    fclose(out);
    char *text = read_file(trace_path);
    unlink(trace_path);
    jv *doc;
    jv *evs = check_trace(text, &doc);

    /* Tracks: the scheduler and one per task, named "#id name". */
    CHECK_STREQ(track_name(evs, 0), "scheduler");
    CHECK_STREQ(track_name(evs, 1), "#1 main");
    CHECK_STREQ(track_name(evs, 2), "#2 worker");
    CHECK_STREQ(track_name(evs, 3), "#3 reader");
    CHECK_STREQ(track_name(evs, 4), "#4 fails");
    CHECK_STREQ(track_name(evs, 5), "#5 waits_forever");
    /* Steps on every task track. */
    for (int t = 1; t <= 5; t++) CHECK(count(evs, "B", t, "run") >= 1);
    /* Blocks, named after what was waited for. */
    char rd[32];
    snprintf(rd, sizeof rd, "read fd %d", pipefd[0]);
    CHECK_EQ(count(evs, "B", 1, "sleep"), 1);
    CHECK_EQ(count(evs, "B", 1, "nursery close"), 2);
    CHECK_EQ(count(evs, "B", 2, "sleep"), 1);
    CHECK_EQ(count(evs, "B", 2, "lock"), 1);
    CHECK_EQ(count(evs, "B", 3, rd), 1);
    CHECK_EQ(count(evs, "B", 5, "sleep forever"), 1);
    /* Spawn flows pair up, one per child. */
    CHECK_EQ(count(evs, "s", 1, "spawn"), 4);
    CHECK_EQ(count(evs, "f", -1, "spawn"), 4);
    CHECK_EQ(count(evs, "f", 2, "spawn"), 1);
    /* Nurseries: async spans named by their open site, on main's track. */
    char n1[512], n2[512];
    snprintf(n1, sizeof n1, "nursery %s:%d", __FILE__, line_n1);
    snprintf(n2, sizeof n2, "nursery %s:%d", __FILE__, line_n2);
    CHECK_EQ(count(evs, "b", 1, n1), 1);
    CHECK_EQ(count(evs, "e", 1, n1), 1);
    CHECK_EQ(count(evs, "b", 1, n2), 1);
    CHECK_EQ(count(evs, "e", 1, n2), 1);
    /* Instants: the worker's deadline, the failing nursery's cancel, the
     * error, the cancelled sibling, and exits. */
    char dl[512], cn[512];
    snprintf(dl, sizeof dl, "deadline scope %s:%d", __FILE__, line_scope);
    snprintf(cn, sizeof cn, "cancel nursery %s:%d", __FILE__, line_n2);
    CHECK_EQ(count(evs, "i", 2, dl), 1);
    CHECK_EQ(count(evs, "i", 1, cn), 1);
    CHECK_EQ(count(evs, "i", 4, "error EIO"), 1);
    CHECK_EQ(count(evs, "i", 5, "cancelled"), 1);
    CHECK_EQ(count(evs, "i", 2, "exit"), 1);
    CHECK_EQ(count(evs, "i", 3, "exit"), 1);
    /* A sleep ending on time is not reported as a deadline. */
    CHECK_EQ(count(evs, "i", 1, "deadline"), 0);
    /* The scheduler polled for I/O while the reader waited. */
    CHECK(count(evs, "B", 0, "io wait") >= 1);
    free(text);
    jfree(doc);
}

/* ---- mid-run start and stop ---------------------------------------------- */

static int sleeper(void *arg) {
    (void)arg;
    return nest_sleep(NEST_SEC(5));
}

static int mid_run(void *arg) {
    FILE *out = arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, sleeper, NULL);
    nest_spawn(&n, waits_forever, NULL);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(nest_trace_start(out), 0); /* both children are blocked now */
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(nest_trace_stop(), 0); /* still blocked */
    nest_nursery_cancel(&n);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(trace_started_and_stopped_mid_run_balances) {
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    CHECK_EQ(nest_run_opts(mid_run, out, &o), 0);
    fclose(out);
    jv *doc;
    jv *evs = check_trace(buf, &doc);
    CHECK_STREQ(track_name(evs, 2), "#2 sleeper");
    CHECK_EQ(count(evs, "B", 2, "sleep"), 1); /* opened at start, closed at stop */
    CHECK_EQ(count(evs, "E", 2, NULL), 1);
    CHECK_EQ(count(evs, "B", 3, "sleep forever"), 1);
    CHECK(count(evs, "b", 1, "nursery ") == 1); /* the open nursery */
    free(buf);
    jfree(doc);
}

/* ---- the run's end closes the trace; NEST_TRACE; names are escaped ------- */

static int weird_child(void *arg) {
    (void)arg;
    return 0;
}
static int ends_without_stop(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn_options o = {"we\"ird\\name\t", 0, NULL};
    nest_spawn_opts(&n, weird_child, NULL, &o);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(trace_from_the_environment_ends_with_the_run) {
    int fd = mkstemp(trace_path);
    CHECK(fd >= 0);
    close(fd);
    setenv("NEST_TRACE", trace_path, 1);
    CHECK_EQ(nest_run(ends_without_stop, NULL), 0);
    unsetenv("NEST_TRACE");
    char *text = read_file(trace_path);
    unlink(trace_path);
    jv *doc;
    jv *evs = check_trace(text, &doc);
    CHECK_STREQ(track_name(evs, 1), "#1 main");
    CHECK_EQ(count(evs, "M", 1, "thread_name"), 1); /* named once */
    CHECK_STREQ(track_name(evs, 2), "#2 we\"ird\\name\t");
    CHECK_EQ(count(evs, "i", 2, "exit"), 1);
    CHECK_EQ(count(evs, "i", 1, "exit"), 1);
    free(text);
    jfree(doc);
}

static int start_null(void *arg) {
    (void)arg;
    CHECK_EQ(nest_trace_start(NULL), -EINVAL);
    CHECK_EQ(nest_trace_stop(), -EINVAL);
    return 0;
}

NEST_TEST(trace_errors) {
    CHECK_EQ(nest_trace_start(stdout), -EINVAL); /* outside a runtime */
    CHECK_EQ(nest_trace_stop(), -EINVAL);
    CHECK_EQ(nest_run(start_null, NULL), 0);
}
