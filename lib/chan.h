/*
 * lib/chan.h - what lib/chan.c lends lib/choose.c: trying one choose clause
 * against its channel, and the parking lot a clause waits in.  Private to
 * the library.
 */
#ifndef NEST_LIB_CHAN_H
#define NEST_LIB_CHAN_H

#include "nest/chan.h"
#include "nest/lowlevel.h"

/* Completes clause c at once if its channel allows (an item to receive,
 * room or a waiting receiver to send to, or an immediate error such as end
 * of channel): returns 1 with c->result set.  0 if it would block. */
int nest__chan_clause_try(nest_choose_clause *c);

/* The parking lot a task waiting on clause c parks in. */
nest_parking_lot *nest__chan_clause_lot(nest_choose_clause *c);

#endif
