/*
 * lib/proc.h - internal hooks of lib/process.c for the tests.  Not
 * installed.
 */
#ifndef NEST_LIB_PROC_H
#define NEST_LIB_PROC_H

/* on != 0: nest_process_spawn never uses a pidfd, and notices exits with
 * the watcher thread instead (the fallback for systems without pidfds),
 * so that tests cover both paths on Linux.  Process-wide; call it before
 * spawning. */
void nest__process_force_thread(int on);

#endif
