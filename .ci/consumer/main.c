/*
 * .ci/consumer/main.c - a program built against an installed nest, by
 * .ci/run, through pkg-config and through find_package(nest).  It only
 * checks that the headers, the library and the link flags fit together; it
 * does not start a runtime.
 */
#include <nest.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    const char *msg = nest_strerror(NEST_ECANCELED);
    printf("nest %d.%d.%d: NEST_ECANCELED is \"%s\"\n", NEST_VERSION_MAJOR, NEST_VERSION_MINOR,
           NEST_VERSION_PATCH, msg ? msg : "(null)");
    return msg && *msg && strcmp(msg, "unknown error") != 0 ? 0 : 1;
}
