/*
 * 06-start.c - nest_start(): wait until a background task is ready.
 *
 * A server task needs some time to set up before clients may use it.
 * nest_start(&n, server, arg, &value) runs it and blocks until the server
 * calls nest_started(value); only then does the server move into the
 * nursery n and nest_start return 0 with the value (here: the file
 * descriptor on which clients reach the server).  If the server fails
 * before it is ready, nest_start returns its error instead, and nothing is
 * left running.
 *
 * The "server" echoes lines upper-cased over one end of a socketpair and
 * blocks in nest_wait_readable() between requests.  Look for: "ready" always
 * printed before the client's first request, the replies, a server that
 * fails during setup reported by nest_start itself, and a clean close.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nest.h>

static int server(void *arg) {
    int port_taken = *(const int *)arg, fds[2];
    int rc = nest_sleep(NEST_MSEC(100)); /* pretend setup takes a while */
    if (rc < 0) return rc;
    if (port_taken) return -EADDRINUSE; /* fails before it is ready */
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) return -errno;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    printf("server: ready, handing out fd %d\n", fds[1]);
    nest_started((void *)(intptr_t)fds[1]); /* the client owns fds[1] now */

    char buf[64];
    for (;;) {
        if ((rc = nest_wait_readable(fds[0])) < 0) break;
        ssize_t len = read(fds[0], buf, sizeof buf);
        if (len == 0) break; /* end of file: the client hung up (rc is 0) */
        for (ssize_t i = 0; i < len; i++) buf[i] = (char)toupper((unsigned char)buf[i]);
        if (len < 0 || write(fds[0], buf, (size_t)len) < 0) {
            rc = -errno;
            break;
        }
    }
    printf("server: %s, shutting down\n", rc == 0 ? "client hung up" : nest_strerror(rc));
    nest_notify_closing(fds[0]);
    close(fds[0]);
    return rc;
}

static int request(int fd, const char *msg) {
    char buf[64];
    if (write(fd, msg, strlen(msg)) < 0) return -errno;
    int rc = nest_wait_readable(fd); /* the reply comes from another task */
    if (rc < 0) return rc;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    if (len < 0) return -errno;
    buf[len] = '\0';
    printf("client: sent \"%s\", got \"%s\"\n", msg, buf);
    return 0;
}

static int main_task(void *arg) {
    (void)arg;
    static const int fine = 0, port_taken = 1;
    nest_nursery n;
    nest_nursery_open(&n);

    /* A server whose setup fails: the error comes back from nest_start. */
    int rc = nest_start(&n, server, (void *)&port_taken, NULL);
    printf("client: first start returned %s (%s)\n", nest_err_name(rc), nest_strerror(rc));
    int setup_failed = rc == -EADDRINUSE; /* as it should */

    /* A working server: the fd is usable as soon as nest_start returns. */
    void *value;
    rc = nest_start(&n, server, (void *)&fine, &value);
    printf("client: second start returned %s\n", nest_err_name(rc));
    if (rc == 0) {
        int fd = (int)(intptr_t)value;
        fcntl(fd, F_SETFL, O_NONBLOCK);
        rc = request(fd, "hello");
        if (rc == 0) rc = request(fd, "structured concurrency");
        nest_notify_closing(fd);
        close(fd); /* the server sees end-of-file and returns */
    }
    rc = nest_nursery_close(&n, rc); /* waits for the server */
    printf("client: nursery closed: %s\n", nest_err_name(rc));
    return rc == 0 && !setup_failed ? -EPROTO : rc;
}

int main(void) {
    return nest_run(main_task, NULL) < 0;
}
