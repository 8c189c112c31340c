/*
 * 09-crawler.c - bounding concurrency and request rate: a polite crawler.
 *
 * The "site" is a table of pages and their links; fetching a page is a
 * sleep of its latency.  Every fetch is a task in one nursery; it spawns a
 * fetch for each link not seen before (a visited set).  Two limits apply:
 *  - a CapacityLimiter of 3 tokens: at most 3 fetches in flight;
 *  - a rate limiter (token bucket): 20 requests per second, burst of 4.
 * A fetch takes its limiter token first, then its rate token, so requests
 * *start* no faster than the bucket allows (rate tokens taken first could
 * pile up while fetches wait for the limiter, then start all at once).
 *
 * Look for: "/" alone, then several fetches at once but never more than 3
 * in flight; from the fifth request on, requests start at most one per 50 ms
 * (each line shows the earliest start the bucket allows); the missing page;
 * the nursery closing once no fetch found anything new.
 */
#include <stdio.h>
#include <string.h>

#include <nest.h>

#define MAX_CONCURRENT 3
#define BURST 4
#define INTERVAL NEST_MSEC(50) /* one token per 50 ms: 20 requests per second */

typedef struct page {
    const char *path;
    int latency_ms;
    const char *links[4];
} page;

static const page site[] = {
    {"/", 30, {"/news", "/docs", "/blog", "/about"}},
    {"/news", 80, {"/news/1", "/news/2", "/"}},
    {"/docs", 60, {"/docs/api", "/about", "/jobs"}},
    {"/blog", 100, {"/news/1", "/missing"}},
    {"/about", 40, {"/", "/jobs"}},
    {"/jobs", 50, {"/about"}},
    {"/news/1", 40, {"/news"}},
    {"/news/2", 40, {"/news", "/news/1"}},
    {"/docs/api", 90, {"/docs"}},
};
#define NPAGES (int)(sizeof site / sizeof site[0])

static struct {
    nest_nursery nursery; /* every fetch runs here */
    nest_limiter limiter;
    nest_ratelimit rate;
    const char *visited[32]; /* every path queued; an entry is its fetch's argument */
    int nvisited, requests, in_flight, max_in_flight, fetched, missing;
    long long last_start; /* when the last request started (ms) */
} c;

static nest_time start;

static long long ms(void) {
    return (long long)((nest_now() - start) / NEST_MSEC(1));
}

static int fetch(void *arg);

static int crawl(const char *path) { /* fetches path unless seen before */
    for (int i = 0; i < c.nvisited; i++)
        if (strcmp(c.visited[i], path) == 0) return 0;
    if (c.nvisited == (int)(sizeof c.visited / sizeof c.visited[0])) return -ENOSPC;
    c.visited[c.nvisited] = path;
    return nest_spawn(&c.nursery, fetch, &c.visited[c.nvisited++]);
}

static int fetch(void *arg) {
    const char *path = *(const char **)arg;
    int rc = nest_limiter_acquire(&c.limiter); /* at most 3 past this point */
    if (rc < 0) return rc;
    rc = nest_ratelimit_acquire(&c.rate, 1); /* then wait for the bucket */
    const page *p = NULL;
    if (rc == 0) {
        for (int i = 0; i < NPAGES; i++)
            if (strcmp(site[i].path, path) == 0) p = &site[i];
        int n = c.requests++; /* the bucket lets request n start from this time on: */
        long long allowed = n < BURST ? 0 : (long long)((n + 1 - BURST) * INTERVAL / NEST_MSEC(1));
        if (++c.in_flight > c.max_in_flight) c.max_in_flight = c.in_flight;
        c.last_start = ms();
        printf("%4lld ms  GET %-10s request %2d (allowed from %3lld ms), %d in flight\n",
               c.last_start, path, n + 1, allowed, c.in_flight);
        rc = nest_sleep(NEST_MSEC(p ? p->latency_ms : 20)); /* the "download" */
        c.in_flight--;
    }
    nest_limiter_release(&c.limiter);
    if (rc < 0) return rc;
    int before = c.nvisited;
    for (int i = 0; p && i < 4 && p->links[i] && rc == 0; i++) rc = crawl(p->links[i]);
    printf("%4lld ms  %d %-10s new links: %d\n", ms(), p ? 200 : 404, path, c.nvisited - before);
    c.fetched += p != NULL;
    c.missing += p == NULL;
    return rc;
}

static int main_task(void *arg) {
    (void)arg;
    nest_limiter_init(&c.limiter, MAX_CONCURRENT);
    nest_ratelimit_init(&c.rate, INTERVAL, BURST);
    start = nest_now();
    nest_nursery_open(&c.nursery);
    int rc = nest_nursery_close(&c.nursery, crawl("/"));
    printf("nursery closed (%s) at %lld ms: %d pages fetched, %d missing\n", nest_err_name(rc),
           ms(), c.fetched, c.missing);
    printf("max in flight: %d (limit %d)\n", c.max_in_flight, MAX_CONCURRENT);
    printf("%d requests started by %lld ms; the bucket allows %d + %lld/50 = %lld by then\n",
           c.requests, c.last_start, BURST, c.last_start, BURST + c.last_start / 50);
    int ok = rc == 0 && c.fetched == NPAGES && c.missing == 1 && c.requests == NPAGES + 1 &&
             c.max_in_flight <= MAX_CONCURRENT;
    printf("%s\n", ok ? "ok: every page fetched once, concurrency within the limit" : "FAILED");
    return ok ? 0 : (rc < 0 ? rc : -EPROTO);
}

int main(void) {
    return nest_run(main_task, NULL) < 0;
}
