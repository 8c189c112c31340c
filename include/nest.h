/*
 * nest.h - structured concurrency for C.
 *
 * The umbrella header: includes every public module and nothing else.
 * Start with nest/nursery.h (spawning and waiting), nest/scope.h
 * (cancellation and deadlines) and nest/runtime.h (nest_run).
 */
#ifndef NEST_H
#define NEST_H

#include "nest/common.h"
#include "nest/error.h"
#include "nest/alloc.h"
#include "nest/runtime.h"
#include "nest/time.h"
#include "nest/scope.h"
#include "nest/task.h"
#include "nest/nursery.h"
#include "nest/fd.h"
#include "nest/lowlevel.h"
#include "nest/stream.h"
#include "nest/net.h"
#include "nest/thread.h"
#include "nest/signal.h"
#include "nest/process.h"
#include "nest/guest.h"
#include "nest/sync.h"
#include "nest/chan.h"
#include "nest/local.h"
#include "nest/inspect.h"
#include "nest/instrument.h"
#include "nest/trace.h"
#include "nest/testing.h"

#define NEST_VERSION_MAJOR 0
#define NEST_VERSION_MINOR 1
#define NEST_VERSION_PATCH 0

#endif
