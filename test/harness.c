/*
 * test/harness.c - main() for every test program; see harness.h.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static nest_test_case *cases;

void nest_test_register(nest_test_case *c) {
    c->next = cases;
    cases = c;
}

/* Runs c in a child process and checks that it aborts with c->abort_text in
 * its stderr (which is also copied to ours, so ctest shows it). */
static int run_expecting_abort(nest_test_case *c) {
    int fds[2];
    if (pipe(fds) != 0) return perror("pipe"), 1;
    pid_t pid = fork();
    if (pid < 0) return perror("fork"), 1;
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        /* No core files for the expected aborts. */
        signal(SIGABRT, SIG_DFL);
        c->fn();
        fprintf(stderr, "harness: the case returned instead of aborting\n");
        _exit(0);
    }
    close(fds[1]);
    char buf[16384];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
    buf[len] = 0;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    fputs(buf, stderr);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT) {
        fprintf(stderr, "harness: %s: expected an abort (SIGABRT), got status %#x\n", c->name,
                status);
        return 1;
    }
    if (!strstr(buf, c->abort_text)) {
        fprintf(stderr, "harness: %s: the abort message lacks \"%s\"\n", c->name, c->abort_text);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (nest_test_case *c = cases; c; c = c->next) printf("%s\n", c->name);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s --list | CASE\n", argv[0]);
        return 2;
    }
    for (nest_test_case *c = cases; c; c = c->next) {
        if (strcmp(c->name, argv[1]) != 0) continue;
        if (c->abort_text) return run_expecting_abort(c);
        c->fn();
        return 0;
    }
    fprintf(stderr, "%s: no case named %s\n", argv[0], argv[1]);
    return 2;
}
