/*
 * 16-chat-server.c - a chat server: every line a client sends goes to every
 * other connected client.
 *
 *     16-chat-server [--port P]    serve 127.0.0.1:P (default 7000) until Ctrl-C;
 *                                  chat from two terminals: nc 127.0.0.1 7000
 *     16-chat-server --self-test   serve a free port, run clients against it, exit
 *
 * The shape of the program:
 *
 *  - nest_serve_tcp() runs serve_client() in a new task for each connection.
 *  - The room is a broadcast channel (nest_bcast_*): whatever a client says
 *    is sent into it once, and every client's subscription receives it.
 *  - Each client gets two tasks in a nursery of its own: a reader (lines
 *    from the client into the room) and a writer (lines from the room to the
 *    client).  Whichever ends first - the client typed /quit or hung up, or
 *    stopped taking data - cancels that nursery, so the other one ends too,
 *    and serve_client() cleans up the connection in one place.
 *  - A slow client must not hold up the others.  The room uses the
 *    drop-oldest policy: sending never waits, the room keeps the last
 *    ROOM_BACKLOG lines, and a client that falls further behind skips the
 *    lines it lost and is told how many ("*** you were too slow and missed
 *    N lines").  The alternative, a bounded queue per client, costs a copy
 *    of every line per client and still needs a rule for a full queue (drop
 *    or disconnect); the broadcast channel keeps one shared ring and makes
 *    that rule part of the channel.  A client that takes no data at all for
 *    SEND_TIMEOUT is disconnected: a deadline, not a special case.
 *  - Ctrl-C cancels the whole run (nest's default).  Every client task
 *    unwinds, each client is told "server shutting down" from a shielded
 *    scope, and nest_run() returns NEST_EINTERRUPTED: a clean stop.
 *
 * Commands: "/nick NAME" renames you, "/quit" leaves.  Lines longer than
 * MAX_LINE bytes are refused (the client is told), so one client cannot make
 * the server buffer without limit.
 *
 * The self-test runs everything in this one process: the server on a free
 * port (nest_start() hands back the port once it listens), four TCP clients
 * that each check they hear every other client's lines in order, then a
 * slow client that stops reading while another keeps talking, and finally
 * a shutdown while a client is connected.  Look for: "ok" after each part.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nest.h>
#include <nest/net.h>
#include <nest/stream.h>

#define DEFAULT_PORT 7000
#define MAX_LINE 200              /* longest line a client may send (bytes, no newline) */
#define MAX_NICK 16               /* longest name */
#define ROOM_BACKLOG 128          /* lines a client may fall behind before it misses some */
#define SEND_TIMEOUT NEST_SEC(10) /* a client taking no data this long is dropped */
#define READ_BUF 512              /* a line reader's buffer: the longest line it takes */

/* ---- reading lines ------------------------------------------------------ */

/* Splits a stream into lines.  Caller-allocated; set s and limit, zero the
 * rest. */
typedef struct line_reader {
    nest_stream *s;
    size_t limit;  /* the longest line accepted, without its line ending */
    size_t len;    /* bytes in buf */
    int skipping;  /* discarding the rest of a line that was too long */
    char buf[READ_BUF]; /* room for limit + "\r\n" */
} line_reader;

/* Reads the next non-empty line into out (room for r->limit + 1 bytes),
 * without its "\n" or "\r\n", and returns its length; 0 at end of file;
 * -EMSGSIZE for a line longer than the limit, whose bytes were discarded;
 * or the stream's error.  A checkpoint whenever it has to receive. */
static ssize_t read_line(line_reader *r, char *out) {
    for (;;) {
        char *nl = memchr(r->buf, '\n', r->len);
        if (nl) {
            size_t n = (size_t)(nl - r->buf), keep = n;
            int too_long = r->skipping;
            if (keep > 0 && r->buf[keep - 1] == '\r') keep--;
            if (keep > r->limit) too_long = 1;
            else memcpy(out, r->buf, keep), out[keep] = '\0';
            r->len -= n + 1;
            memmove(r->buf, nl + 1, r->len);
            r->skipping = 0;
            if (too_long) return -EMSGSIZE;
            if (keep > 0) return (ssize_t)keep;
            continue; /* an empty line: nothing to say */
        }
        /* No newline within limit + "\r": drop what we have, keep dropping
         * until the line ends, and report it then (once). */
        if (r->len > r->limit + 1) r->skipping = 1, r->len = 0;
        ssize_t got = nest_stream_receive_some(r->s, r->buf + r->len, sizeof r->buf - r->len);
        if (got <= 0) return got; /* 0: the peer closed; or an error */
        r->len += (size_t)got;
    }
}

/* ---- the room ------------------------------------------------------------ */

/* What travels through the room: one finished line of output, formatted
 * once by whoever said it, and who said it, so that nobody hears their own
 * lines echoed back.  The broadcast channel copies items by value, so the
 * text lives inside the item. */
typedef struct message {
    int from; /* the speaker's client id; 0 for the server */
    int len;
    char text[MAX_NICK + MAX_LINE + 8]; /* "<nick> text\n" fits */
} message;

typedef struct room {
    nest_bcast_tx tx; /* one send handle, shared by every client's reader */
    int port;         /* where to listen (0: any free port) */
    int next_id;      /* the last client id handed out */
    int online;       /* clients connected now */
} room;

/* Sends a line to everybody in the room.  With the drop-oldest policy this
 * never waits for anyone; it is still a checkpoint, so it returns
 * -ECANCELED in a cancelled task. */
static int say(room *r, int from, const char *fmt, ...) {
    message m = {.from = from};
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m.text, sizeof m.text, fmt, ap);
    va_end(ap);
    m.len = n < (int)sizeof m.text ? n : (int)sizeof m.text - 1;
    return nest_bcast_send(&r->tx, &m);
}

/* ---- one client ------------------------------------------------------------ */

typedef struct client {
    room *room;
    nest_stream *s;
    int id;
    char nick[MAX_NICK + 1];
    nest_bcast_rx sub;   /* its subscription to the room */
    nest_lock send_lock; /* reader and writer both write to s */
    nest_nursery tasks;  /* its reader and writer */
} client;

/* Writes text to this client only.  Both of its tasks write (the writer
 * relays the room, the reader answers commands), and a stream takes one
 * sender at a time (a second gets -EBUSY), so they take turns through a
 * lock.  The deadline drops a client that takes no data for SEND_TIMEOUT:
 * without it, one that never reads would keep its tasks forever. */
static int send_text(client *c, const char *text, size_t len) {
    int rc = nest_lock_acquire(&c->send_lock);
    if (rc < 0) return rc;
    nest_scope s;
    nest_fail_after(&s, SEND_TIMEOUT);
    rc = nest_stream_send_all(c->s, text, len, NULL);
    rc = nest_scope_exit(&s, rc); /* -ETIMEDOUT if the deadline passed */
    nest_lock_release(&c->send_lock);
    return rc;
}

/* send_text() with printf formatting. */
static int tell(client *c, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return send_text(c, buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Relays the room to the client until something ends the session. */
static int writer(void *arg) {
    client *c = arg;
    message m;
    int rc;
    for (;;) {
        rc = nest_bcast_recv(&c->sub, &m);
        if (rc == NEST_ELAGGED) { /* the room overwrote lines we had not sent yet */
            nest_bcast_sub_stats st;
            nest_bcast_rx_stats(&c->sub, &st, NULL);
            rc = tell(c, "*** you were too slow and missed %llu lines\n",
                      (unsigned long long)st.lagged);
        } else if (rc == 0 && m.from != c->id) {
            rc = send_text(c, m.text, (size_t)m.len);
        }
        if (rc < 0) break; /* -ECANCELED: the reader ended; else the client is gone */
    }
    nest_nursery_cancel(&c->tasks); /* whoever ends first ends the session */
    return rc;
}

static int set_nick(client *c, const char *name) {
    size_t n = strlen(name);
    int valid = n >= 1 && n <= MAX_NICK;
    for (size_t i = 0; i < n && valid; i++) valid = isgraph((unsigned char)name[i]) != 0;
    if (!valid) return tell(c, "*** a name is 1 to %d characters, no spaces\n", MAX_NICK);
    char old[MAX_NICK + 1];
    memcpy(old, c->nick, sizeof old);
    memcpy(c->nick, name, n + 1);
    printf("chat: %s is now %s\n", old, c->nick);
    int rc = tell(c, "*** you are now %s\n", c->nick);
    return rc < 0 ? rc : say(c->room, c->id, "*** %s is now known as %s\n", old, c->nick);
}

/* Reads the client's lines: commands are handled here, anything else is
 * said to the room. */
static int reader(void *arg) {
    client *c = arg;
    line_reader in = {.s = c->s, .limit = MAX_LINE};
    char line[MAX_LINE + 1];
    int rc = 0;
    for (;;) {
        ssize_t n = read_line(&in, line);
        if (n == 0 || (n > 0 && strcmp(line, "/quit") == 0)) break; /* rc is 0 */
        if (n == -EMSGSIZE) rc = tell(c, "*** line too long (at most %d bytes), not sent\n", MAX_LINE);
        else if (n < 0) rc = (int)n;
        else if (strncmp(line, "/nick ", 6) == 0) rc = set_nick(c, line + 6);
        else if (line[0] == '/') rc = tell(c, "*** commands: /nick NAME, /quit\n");
        else rc = say(c->room, c->id, "<%s> %s\n", c->nick, line);
        if (rc < 0) break;
    }
    nest_nursery_cancel(&c->tasks);
    return rc;
}

/* The server is shutting down: this task is cancelled, so a plain send
 * would fail at once.  A shielded scope lets the goodbye through; its own
 * short deadline keeps a client that reads nothing from delaying the
 * shutdown. */
static void goodbye(client *c) {
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(500));
    nest_scope_set_shield(&s, 1);
    int rc = tell(c, "*** server shutting down, bye\n");
    nest_scope_exit(&s, rc);
}

static const char *why(int rc) {
    return rc == 0 ? "left" : rc == -ETIMEDOUT ? "was dropped (not reading)" : "lost its connection";
}

/* The connection handler: one task per client (nest_serve_tcp spawns it,
 * and closes s when it returns). */
static int serve_client(nest_stream *s, void *arg) {
    room *r = arg;
    client c = {.room = r, .s = s, .id = ++r->next_id};
    snprintf(c.nick, sizeof c.nick, "guest%d", c.id);
    nest_lock_init(&c.send_lock);
    /* Subscribe before the welcome: a client that has its welcome hears
     * everything said from then on (the self-test relies on this). */
    int rc = nest_bcast_subscribe(&r->tx, &c.sub);
    if (rc < 0) return rc == NEST_ECLOSED ? 0 : rc; /* the room has closed */
    r->online++;
    printf("chat: %s joined (%d online)\n", c.nick, r->online);
    rc = tell(&c, "*** welcome, %s! %d other%s here; /nick NAME renames you, /quit leaves\n",
              c.nick, r->online - 1, r->online == 2 ? " is" : "s are");
    if (rc == 0) rc = say(r, c.id, "*** %s joined\n", c.nick);
    int announced = rc == 0; /* only then is a leave worth announcing */
    if (rc == 0) {
        nest_nursery_open(&c.tasks);
        rc = nest_spawn(&c.tasks, reader, &c);
        if (rc == 0) rc = nest_spawn(&c.tasks, writer, &c);
        /* 0 when the client left; its error when it vanished or stopped
         * reading; -ECANCELED when the server is shutting down. */
        rc = nest_nursery_close(&c.tasks, rc);
    }
    nest_bcast_unsubscribe(&c.sub);
    r->online--;
    if (rc == -ECANCELED) {
        printf("chat: telling %s the server is shutting down\n", c.nick);
        goodbye(&c);
        return rc; /* cancellation goes on up to whoever cancelled */
    }
    printf("chat: %s %s (%d online)\n", c.nick, why(rc), r->online);
    if (announced) say(r, c.id, "*** %s %s\n", c.nick, why(rc));
    /* A client going away is not a failure of the server; running out of
     * memory is. */
    return rc == -ENOMEM ? rc : 0;
}

/* The server task: for nest_start(), which hands back the listeners. */
static int serve_room(void *arg) {
    room *r = arg;
    return nest_serve_tcp(r->port, "127.0.0.1", serve_client, r, NULL);
}

/* ---- the self-test ---------------------------------------------------------- */

#define NCLIENTS 4 /* part 1: clients talking at once */
#define NLINES 10  /* lines each of them says */

static struct {
    int port;
    int joined;              /* part 1 clients that are in the room */
    nest_event all_joined;   /* set when all of them are */
    nest_event last_in;      /* part 3: the last client has its welcome */
    int last_saw_goodbye;
} t;

/* Reads lines until one starts with prefix, skipping the server's notices
 * ("*** ..."); any other line is an error. */
static int expect(line_reader *in, char *line, const char *prefix) {
    for (;;) {
        ssize_t n = read_line(in, line);
        if (n <= 0) return n < 0 ? (int)n : -EPROTO; /* EOF: not what we expected */
        if (strncmp(line, prefix, strlen(prefix)) == 0) return 0;
        if (strncmp(line, "*** ", 4) != 0) {
            printf("  unexpected line \"%s\" while waiting for \"%s\"\n", line, prefix);
            return -EPROTO;
        }
    }
}

static int send_line(nest_stream *s, const char *fmt, int arg) {
    char buf[64];
    int len = snprintf(buf, sizeof buf, fmt, arg);
    return nest_stream_send_all(s, buf, (size_t)len, NULL);
}

/* Says /quit and reads what is left up to the server's EOF.  Closing a
 * socket with unread data in it resets the connection, and the server would
 * see a client that vanished rather than one that left. */
static int leave(line_reader *in, char *line) {
    int rc = nest_stream_send_all(in->s, "/quit\n", 6, NULL);
    ssize_t n = 1;
    while (rc == 0 && (n = read_line(in, line)) > 0) continue;
    return rc < 0 ? rc : (int)n;
}

/* Part 1: joins, waits for everybody, says NLINES lines, then checks that
 * it hears the NLINES lines of each other client, each client's in order,
 * and none of its own.  Fewer than ROOM_BACKLOG lines are said in all, so
 * no client can fall far enough behind to miss one, however the tasks
 * happen to be scheduled: the check is exact. */
static int chat_client(void *arg) {
    int id = (int)(intptr_t)arg;
    nest_socket_stream conn;
    int rc = nest_tcp_connect("127.0.0.1", t.port, NULL, &conn);
    if (rc < 0) return rc;
    line_reader in = {.s = &conn.stream, .limit = READ_BUF - 2};
    char line[READ_BUF];
    rc = expect(&in, line, "*** welcome");
    if (rc == 0) rc = send_line(&conn.stream, "/nick c%d\n", id);
    if (rc == 0) rc = expect(&in, line, "*** you are now");
    /* Nobody speaks before everybody is in the room, or late joiners would
     * (rightly) not hear the early lines. */
    if (rc == 0 && ++t.joined == NCLIENTS) nest_event_set(&t.all_joined);
    if (rc == 0) rc = nest_event_wait(&t.all_joined);
    /* A few short lines fit in the socket buffers, so sending them all
     * before reading cannot block. */
    for (int i = 0; i < NLINES && rc == 0; i++) rc = send_line(&conn.stream, "line %d\n", i);
    int next[NCLIENTS] = {0}, heard = 0;
    while (rc == 0 && heard < (NCLIENTS - 1) * NLINES) {
        ssize_t n = read_line(&in, line);
        int from, seq;
        if (n <= 0) rc = n < 0 ? (int)n : -EPROTO;
        else if (line[0] == '*') continue; /* joins and renames */
        else if (sscanf(line, "<c%d> line %d", &from, &seq) != 2 || from < 0 ||
                 from >= NCLIENTS || from == id || seq != next[from])
            printf("  client c%d: unexpected line \"%s\"\n", id, line), rc = -EPROTO;
        else next[from]++, heard++;
    }
    if (rc == 0) rc = leave(&in, line);
    nest_stream_close(&conn.stream);
    return rc;
}

static int part1_many_clients(void) {
    nest_event_init(&t.all_joined);
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = 0;
    for (intptr_t i = 0; i < NCLIENTS && rc == 0; i++) rc = nest_spawn(&n, chat_client, (void *)i);
    rc = nest_nursery_close(&n, rc);
    printf("part 1: %d clients each said %d lines; each heard all the others' lines in order: "
           "%s\n", NCLIENTS, NLINES, rc == 0 ? "ok" : nest_strerror(rc));
    return rc;
}

/* Part 2 attaches clients to the room over in-memory streams: serve_client()
 * takes any nest_stream, so a client can be given a tiny buffer that fills
 * up after a few lines - a slow client on demand, with no sockets and no
 * timing involved. */
typedef struct mem_client {
    room *room;
    nest_memory_stream server_end, client_end;
    int open;     /* client_end is open: the test must close it */
    line_reader in;
    char line[READ_BUF];
} mem_client;

static int serve_mem_client(void *arg) {
    mem_client *m = arg;
    int rc = serve_client(&m->server_end.stream, m->room);
    nest_stream_close(&m->server_end.stream);
    return rc;
}

static int attach(nest_nursery *n, mem_client *m, const char *nick, size_t buffer) {
    int rc = nest_memory_stream_pair(&m->server_end, &m->client_end, buffer);
    if (rc < 0) return rc;
    m->in = (line_reader){.s = &m->client_end.stream, .limit = READ_BUF - 2};
    rc = nest_spawn(n, serve_mem_client, m); /* it closes the server end */
    if (rc < 0) {
        nest_stream_close(&m->server_end.stream), nest_stream_close(&m->client_end.stream);
        return rc;
    }
    m->open = 1;
    rc = expect(&m->in, m->line, "*** welcome");
    char cmd[32];
    snprintf(cmd, sizeof cmd, "/nick %s\n", nick);
    if (rc == 0) rc = nest_stream_send_all(&m->client_end.stream, cmd, strlen(cmd), NULL);
    return rc == 0 ? expect(&m->in, m->line, "*** you are now") : rc;
}

/* Sends a line one byte over the limit: only its sender hears about it. */
static int say_too_much(mem_client *m) {
    char big[MAX_LINE + 2];
    memset(big, 'x', MAX_LINE + 1);
    big[MAX_LINE + 1] = '\n';
    int rc = nest_stream_send_all(&m->client_end.stream, big, sizeof big, NULL);
    return rc == 0 ? expect(&m->in, m->line, "*** line too long") : rc;
}

/* Reads "<talker> msg N" lines up to N == last, checking the order; a
 * "missed" notice may stand for a gap.  Returns how many lines it was
 * told it missed, or a negative code. */
static int hear_talker(mem_client *m, int last) {
    int next = 0, missed = 0, seq;
    unsigned long long lost;
    while (next <= last) {
        ssize_t n = read_line(&m->in, m->line);
        if (n <= 0) return n < 0 ? (int)n : -EPROTO;
        if (sscanf(m->line, "*** you were too slow and missed %llu lines", &lost) == 1)
            next += (int)lost, missed += (int)lost;
        else if (m->line[0] == '*') continue;
        else if (sscanf(m->line, "<talker> msg %d", &seq) != 1 || seq != next)
            return printf("  unexpected line \"%s\", expected msg %d\n", m->line, next), -EPROTO;
        else next++;
    }
    return next == last + 1 ? missed : -EPROTO;
}

static int part2_slow_client(room *r) {
    static mem_client talker, listener, slow;
    talker.room = listener.room = slow.room = r;
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = attach(&n, &talker, "talker", 0);
    if (rc == 0) rc = attach(&n, &listener, "listener", 0);
    if (rc == 0) rc = attach(&n, &slow, "slow", 256); /* and from now on, it reads nothing */
    if (rc == 0) rc = say_too_much(&talker); /* the listener would choke on it below */
    /* The talker talks until the slow client is a full room behind, then
     * says a few lines more, which the slow client can only miss.  After
     * each line the test waits for a quiet point: every task blocked, so
     * the line has gone wherever it could go. */
    int said = 0, extra = -1;
    nest_bcast_stats st;
    while (rc == 0 && extra != 0 && said < 4 * ROOM_BACKLOG) { /* a bound, in case it never fills */
        rc = send_line(&talker.client_end.stream, "msg %d\n", said++);
        if (rc == 0) rc = nest_wait_all_tasks_blocked();
        if (rc == 0 && extra > 0) extra--;
        if (rc == 0 && extra < 0 && nest_bcast_tx_stats(&r->tx, &st) == 0 &&
            st.max_backlog == st.capacity)
            extra = 3;
    }
    /* The listener, whose buffer never filled, heard every line... */
    int l_missed = rc < 0 ? rc : hear_talker(&listener, said - 1);
    /* ...and the slow client, now reading, gets what the room kept. */
    int s_missed = rc < 0 ? rc : hear_talker(&slow, said - 1);
    mem_client *all[] = {&talker, &listener, &slow};
    for (int i = 0; i < 3; i++) /* each session ends when it sees EOF */
        if (all[i]->open) nest_stream_close(&all[i]->client_end.stream);
    rc = nest_nursery_close(&n, rc);
    int ok = rc == 0 && l_missed == 0 && s_missed >= 3;
    if (ok)
        printf("part 2: the talker said %d lines while the slow client read nothing; the "
               "listener heard all of them, the slow client was told it missed %d and heard "
               "the rest in order: ok\n", said, s_missed);
    else
        printf("part 2: FAILED: %s; the talker said %d lines; the listener missed %d, the slow "
               "client %d (negative: an error)\n", nest_strerror(rc), said, l_missed, s_missed);
    return ok ? 0 : rc < 0 ? rc : -EPROTO;
}

/* Part 3: stays connected until the server shuts down, and checks that it
 * was told so before the connection closed. */
static int last_client(void *arg) {
    (void)arg;
    nest_socket_stream conn;
    int rc = nest_tcp_connect("127.0.0.1", t.port, NULL, &conn);
    if (rc < 0) return rc;
    line_reader in = {.s = &conn.stream, .limit = READ_BUF - 2};
    char line[READ_BUF];
    rc = expect(&in, line, "*** welcome");
    nest_event_set(&t.last_in);
    if (rc == 0) rc = expect(&in, line, "*** server shutting down");
    if (rc == 0 && read_line(&in, line) == 0) t.last_saw_goodbye = 1; /* then EOF */
    nest_stream_close(&conn.stream);
    return rc;
}

static int self_test(room *r) {
    /* A server that stopped delivering would leave the clients waiting
     * forever: a deadline turns that into a failure. */
    nest_scope limit;
    nest_fail_after(&limit, NEST_SEC(20));
    /* Part 3's client lives in an outer nursery, so that it outlasts the
     * server, which lives in the inner one. */
    nest_nursery clients, server;
    nest_nursery_open(&clients);
    nest_nursery_open(&server);
    void *v;
    int rc = nest_start(&server, serve_room, r, &v);
    if (rc == 0) {
        t.port = nest_listener_port(&((nest_listeners *)v)->listener[0]);
        printf("self-test: chat server on 127.0.0.1:%d\n", t.port);
        rc = part1_many_clients();
    }
    if (rc == 0) rc = part2_slow_client(r);
    nest_event_init(&t.last_in);
    if (rc == 0) rc = nest_spawn(&clients, last_client, NULL);
    if (rc == 0) rc = nest_event_wait(&t.last_in);
    /* What Ctrl-C does to the whole run, done to the server only. */
    nest_nursery_cancel(&server);
    rc = nest_nursery_close(&server, rc);
    rc = nest_nursery_close(&clients, rc);
    rc = nest_scope_exit(&limit, rc); /* -ETIMEDOUT if the 20 s ran out */
    if (rc == 0 && !t.last_saw_goodbye) rc = -EPROTO;
    printf("part 3: shut down with a client connected; it was told: %s\n",
           rc == 0 ? "ok" : nest_strerror(rc));
    return rc;
}

/* ---- main ------------------------------------------------------------------ */

static int self_testing; /* --self-test */

static int main_task(void *arg) {
    room *r = arg; /* lives in main: outlives every client task */
    int rc = nest_bcast_open(&r->tx, sizeof(message), ROOM_BACKLOG, NEST_BCAST_DROP_OLDEST);
    if (rc < 0) return rc;
    if (self_testing) {
        rc = self_test(r);
    } else {
        nest_nursery n;
        nest_nursery_open(&n);
        rc = nest_start(&n, serve_room, r, NULL);
        if (rc == 0) {
            printf("chat server on 127.0.0.1:%d; chat with: nc 127.0.0.1 %d; Ctrl-C stops it\n",
                   r->port, r->port);
            fflush(stdout);
        }
        rc = nest_nursery_close(&n, rc); /* serves until Ctrl-C cancels the run */
    }
    nest_bcast_tx_close(&r->tx); /* every subscriber has unsubscribed: this frees the room */
    return rc;
}

int main(int argc, char **argv) {
    room r = {.port = DEFAULT_PORT};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--self-test") == 0) self_testing = 1, r.port = 0;
        else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) r.port = atoi(argv[++i]);
        else return fprintf(stderr, "usage: %s [--port P | --self-test]\n", argv[0]), 2;
    }
    int rc = nest_run(main_task, &r);
    if (rc == NEST_EINTERRUPTED) printf("chat server: interrupted; every client was told; bye\n");
    else if (rc < 0) fprintf(stderr, "16-chat-server: %s\n", nest_strerror(rc));
    /* Ctrl-C is the normal way to stop the server: a clean exit. */
    return rc < 0 && rc != NEST_EINTERRUPTED;
}
