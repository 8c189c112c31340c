#!/usr/bin/env bash
# bench/run.sh - builds nest (Release) and its benchmarks in a scratch
# directory, runs every benchmark REPS times and, in the same session and in
# round-robin order (rep 1 of everything, then rep 2, ...), the peers' matching
# programs from ../shared/peers/src, then prints a markdown table of medians
# (min-max) with nest/peer ratios.  Same-session ratios are what count on the
# noisy 2-core VM.
#
#   bench/run.sh                 # everything, REPS=5 (~3-4 min with the peers)
#   REPS=3 QUICK=1 bench/run.sh  # smaller sizes, to check that it all runs
#
# Knobs (environment):
#   REPS                repetitions of every figure (default 5)
#   QUICK=1             N/10 everywhere, no million-task run
#   SCRATCH             build and output directory (default /tmp/nest-bench)
#   PEERS=0             nest only
#   PEERS_DIR           the peer programs (default: ../shared/peers beside the repo)
#   LIBDILL_PREFIX      install prefix of a libdill build (as for peers/run.sh);
#                       the libdill rows are skipped without it
#   LIBDILL_NOGUARD_PREFIX  the same built with CFLAGS=-DDILL_NOGUARD (optional)
#   MILLION=0           skip the 1,000,000-task sleepers run
#   IDLE=0              skip bench_idle_conns (idle TCP connections; N is
#                       capped to the hard RLIMIT_NOFILE when it cannot rise)
#   REPORT_ONLY=1       only print the table again from $SCRATCH/results.tsv
# Needs: cmake, gcc, libev-dev; for the peers also golang-go and GNU time
# (apt-get install golang-go time).  Python peers (trio, uvloop) are not run
# here: their figures come from peers/results.md.
set -u -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REPS=${REPS:-5}
QUICK=${QUICK:-0}
SCRATCH=${SCRATCH:-/tmp/nest-bench}
PEERS=${PEERS:-1}
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/peers}
MILLION=${MILLION:-1}
IDLE=${IDLE:-1}
TIME=/usr/bin/time

N_SPAWN=100000
N_SWITCH=1000000
N_SLEEP=100000
N_TMO=1000000
N_IDLE=100000
if [ "$QUICK" = 1 ]; then
    N_SPAWN=10000; N_SWITCH=100000; N_SLEEP=10000; N_TMO=100000; MILLION=0; N_IDLE=2000
fi

mkdir -p "$SCRATCH"
TSV=$SCRATCH/results.tsv
LOG=$SCRATCH/run.log
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

if [ "${REPORT_ONLY:-0}" != 1 ]; then
: > "$TSV"
: > "$LOG"
# ---------------------------------------------------------------- build nest
log "building nest (Release) in $SCRATCH/nest"
cmake -S "$ROOT" -B "$SCRATCH/nest" -DCMAKE_BUILD_TYPE=Release -DNEST_BUILD_TESTS=OFF \
    -DNEST_BUILD_EXAMPLES=OFF >> "$LOG" 2>&1 || { echo "cmake configure failed, see $LOG" >&2; exit 1; }
cmake --build "$SCRATCH/nest" -j2 >> "$LOG" 2>&1 || { echo "nest build failed, see $LOG" >&2; exit 1; }
NB=$SCRATCH/nest/bench

# ---------------------------------------------------------------- build peers
PB=$SCRATCH/peers
mkdir -p "$PB"
HAVE_GO=0; HAVE_DILL=0; HAVE_DILLNG=0; HAVE_LIBEV=0
if [ "$PEERS" = 1 ] && [ -d "$PEERS_DIR/src" ]; then
    PSRC=$PEERS_DIR/src
    CFLAGS="-O2 -g -Wall -Wextra" # as peers/run.sh
    log "building peer programs from $PSRC into $PB"
    gcc $CFLAGS "$PSRC/common/calib.c" -o "$PB/calib" >> "$LOG" 2>&1
    gcc $CFLAGS "$PSRC/libev/timeouts.c" -lev -o "$PB/libev_timeouts" >> "$LOG" 2>&1 && HAVE_LIBEV=1
    if command -v go > /dev/null 2>&1; then
        HAVE_GO=1
        for p in spawn_join switch sleepers timeouts; do
            (cd "$PSRC/go" && GOCACHE=$SCRATCH/gocache go build -o "$PB/go_$p" "$p.go") >> "$LOG" 2>&1 || HAVE_GO=0
        done
    else
        log "go not found (apt-get install golang-go): skipping the Go rows"
    fi
    dill_link() { if [ -f "$1/lib/libdill.a" ]; then echo "$1/lib/libdill.a -lpthread";
                  else echo "-L$1/lib -Wl,-rpath,$1/lib -ldill -lpthread"; fi; }
    if [ -n "${LIBDILL_PREFIX:-}" ] && [ -f "$LIBDILL_PREFIX/include/libdill.h" ]; then
        HAVE_DILL=1
        for p in spawn_join switch sleepers timeouts; do
            gcc $CFLAGS -I"$LIBDILL_PREFIX/include" "$PSRC/libdill/$p.c" $(dill_link "$LIBDILL_PREFIX") \
                -o "$PB/libdill_$p" >> "$LOG" 2>&1 || HAVE_DILL=0
        done
    else
        log "LIBDILL_PREFIX not set: skipping the libdill rows"
    fi
    if [ $HAVE_DILL = 1 ] && [ -n "${LIBDILL_NOGUARD_PREFIX:-}" ] && [ -f "$LIBDILL_NOGUARD_PREFIX/include/libdill.h" ]; then
        HAVE_DILLNG=1
        for p in spawn_join sleepers; do
            gcc $CFLAGS -I"$LIBDILL_NOGUARD_PREFIX/include" "$PSRC/libdill/$p.c" \
                $(dill_link "$LIBDILL_NOGUARD_PREFIX") -o "$PB/libdillng_$p" >> "$LOG" 2>&1 || HAVE_DILLNG=0
        done
    fi
    [ -x $TIME ] || { log "GNU time missing (apt-get install time): peer RSS columns will be empty"; TIME=""; }
elif [ "$PEERS" = 1 ]; then
    log "no peers at $PEERS_DIR: nest only"
fi

# ---------------------------------------------------------------- runners
# rec BENCH RUNTIME VARIANT REP LINE: one TSV row per key=value of LINE.
rec() {
    local bench=$1 rt=$2 var=$3 rep=$4 kv; shift 4
    for kv in $*; do
        case $kv in *=*) printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$bench" "$rt" "$var" "$rep" "${kv%%=*}" "${kv#*=}" >> "$TSV";; esac
    done
    echo "$bench $rt $var #$rep: $*" >> "$LOG"
}
# nest programs print a summary as their last line.
run_nest() { # bench var rep cmd...
    local bench=$1 var=$2 rep=$3; shift 3
    local out; out=$(timeout 900 "$@" 2>>"$LOG")
    local rc=$?
    echo "$out" >> "$LOG"
    local line; line=$(echo "$out" | tail -1)
    [ $rc -ne 0 ] && line="error=exit_status_$rc"
    rec "$bench" nest "$var" "$rep" "$line"
}
# peer programs print one key=value line; rss_kb comes from GNU time.
run_peer() { # bench runtime var rep cmd...
    local bench=$1 rt=$2 var=$3 rep=$4; shift 4
    local tv=$SCRATCH/.time out rc rss=NA
    if [ -n "$TIME" ]; then
        out=$(timeout 600 $TIME -v -o "$tv" "$@" 2>>"$LOG"); rc=$?
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv" 2>/dev/null)
    else
        out=$(timeout 600 "$@" 2>>"$LOG"); rc=$?
    fi
    local line; line=$(echo "$out" | grep -E '^[a-z_]+=' | tail -1)
    [ $rc -ne 0 ] && case "$line" in error=*) ;; *) line="error=exit_status_$rc $line";; esac
    rec "$bench" "$rt" "$var" "$rep" "$line rss_kb=${rss:-NA}"
}
GO1="env GOMAXPROCS=1"

# ---------------------------------------------------------------- run
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ) kernel=$(uname -r) cpus=$(nproc)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"
    echo "nest=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo uncommitted) go=$(go version 2>/dev/null | awk '{print $3}')"
    echo "libev=$(dpkg-query -W -f='${Version}' libev-dev 2>/dev/null) reps=$REPS quick=$QUICK"
} > "$SCRATCH/env.txt"

T0=$(date +%s)
for rep in $(seq 1 "$REPS"); do
    [ -x "$PB/calib" ] && run_peer calib machine - "$rep" "$PB/calib"

    log "rep $rep/$REPS: spawn_join (N=$N_SPAWN)"
    run_nest spawn_join - "$rep" "$NB/bench_spawn_join" $N_SPAWN reps=5
    [ $HAVE_GO = 1 ] && run_peer spawn_join go-1 - "$rep" $GO1 "$PB/go_spawn_join" $N_SPAWN
    [ $HAVE_DILL = 1 ] && run_peer spawn_join libdill - "$rep" "$PB/libdill_spawn_join" $N_SPAWN
    [ $HAVE_DILLNG = 1 ] && run_peer spawn_join libdill-noguard - "$rep" "$PB/libdillng_spawn_join" $N_SPAWN

    log "rep $rep/$REPS: switch (N=$N_SWITCH)"
    run_nest switch - "$rep" "$NB/bench_switch" $N_SWITCH reps=1
    [ $HAVE_GO = 1 ] && run_peer switch go-1 - "$rep" $GO1 "$PB/go_switch" $N_SWITCH
    [ $HAVE_DILL = 1 ] && run_peer switch libdill - "$rep" "$PB/libdill_switch" $N_SWITCH

    log "rep $rep/$REPS: timeouts (N=$N_TMO)"
    run_nest timeouts - "$rep" "$NB/bench_timeouts" $N_TMO reps=1
    for mode in scope bare; do
        [ $HAVE_GO = 1 ] && run_peer timeouts go-1 $mode "$rep" $GO1 "$PB/go_timeouts" $N_TMO $mode
        [ $HAVE_DILL = 1 ] && run_peer timeouts libdill $mode "$rep" "$PB/libdill_timeouts" $N_TMO $mode
    done
    if [ $HAVE_LIBEV = 1 ]; then
        for mode in scope bare startstop; do
            run_peer timeouts libev $mode "$rep" "$PB/libev_timeouts" $N_TMO $mode
        done
    fi

    log "rep $rep/$REPS: sleepers (N=$N_SLEEP, N=0, parked)"
    run_nest sleepers $N_SLEEP "$rep" "$NB/bench_sleepers" $N_SLEEP reps=1
    run_nest sleepers park "$rep" "$NB/bench_sleepers" $N_SLEEP park reps=1
    for args in "$N_SLEEP" "0" "$N_SLEEP park"; do
        case "$args" in *park) var=park;; *) var=$args;; esac
        [ $HAVE_GO = 1 ] && run_peer sleepers go-1 "$var" "$rep" $GO1 "$PB/go_sleepers" $args
        [ $HAVE_DILL = 1 ] && run_peer sleepers libdill "$var" "$rep" "$PB/libdill_sleepers" $args
        [ $HAVE_DILLNG = 1 ] && run_peer sleepers libdill-noguard "$var" "$rep" "$PB/libdillng_sleepers" $args
    done
    if [ "$MILLION" = 1 ]; then
        log "rep $rep/$REPS: sleepers million (N=1,000,000, 0..1000 ms)"
        run_nest sleepers million "$rep" "$NB/bench_sleepers" million reps=1
    fi
    if [ "$IDLE" = 1 ]; then
        log "rep $rep/$REPS: idle_conns (N=$N_IDLE idle TCP connections, tasks and raw baselines)"
        run_nest idle_conns - "$rep" "$NB/bench_idle_conns" $N_IDLE reps=1
    fi
done
T1=$(date +%s)
log "benchmarks took $((T1 - T0)) s; raw rows in $TSV"

fi # REPORT_ONLY

# ---------------------------------------------------------------- report
python3 - "$TSV" "$SCRATCH/env.txt" "$N_SLEEP" <<'PY'
import sys, statistics, collections
tsv, envf, n_sleep = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = collections.defaultdict(list)
errors = collections.defaultdict(list)
for line in open(tsv):
    b, rt, var, rep, k, v = line.rstrip("\n").split("\t")
    if k == "error":
        errors[(b, rt, var)].append(v)
        continue
    try:
        rows[(b, rt, var, k)].append(float(v))
    except ValueError:
        pass

def vals(b, rt, var, k):
    return rows.get((b, rt, var, k), [])

def med(b, rt, var, k):
    v = vals(b, rt, var, k)
    return statistics.median(v) if v else None

def fmt(x):
    if x is None: return "—"
    a = abs(x)
    if a >= 1000: return f"{x:,.0f}"
    if a >= 100: return f"{x:.0f}"
    if a >= 10: return f"{x:.1f}"
    return f"{x:.2f}"

def cell(b, rt, var, k, scale=1.0):
    v = vals(b, rt, var, k)
    e = errors.get((b, rt, var))
    if e and not v: return "FAILED: " + e[0]
    if not v: return "—"
    v = [x * scale for x in v]
    return f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))})"

def ratio(a, b):
    if a is None or b is None or b == 0: return "—"
    return f"{a / b:.2f}×" if a / b < 10 else f"{a / b:.0f}×"

# RSS/task of a peer: (rss_kb(N) - median rss_kb(0)) / N per run, as peers/report.py.
def peer_rss_per_task(rt, var):
    if errors.get(("sleepers", rt, var)): return None, "FAILED"
    base = vals("sleepers", rt, "0", "rss_kb")
    v = vals("sleepers", rt, var, "rss_kb")
    if not base or not v: return None, "—"
    b = statistics.median(base)
    per = [(x - b) / n_sleep for x in v]
    m = statistics.median(per)
    return m, f"{fmt(m)} ({fmt(min(per))}–{fmt(max(per))})"

print(open(envf).read().strip().replace("\n", "  \n"))
print()
fault = med("calib", "machine", "-", "fault_ns")
sysc = med("calib", "machine", "-", "syscall_ns")
if fault:
    print(f"Machine calibration (peers' calib, median): first-touch page fault {fmt(fault)} ns, "
          f"trivial syscall {fmt(sysc)} ns.")
    print()
print("| benchmark | nest median (min–max) | target | Go GOMAXPROCS=1 | libdill | raw libev | nest/Go | nest/libdill |")
print("|---|---|---|---|---|---|---|---|")

def row(name, nb, nvar, nk, target, peers):
    # peers: dict rt -> (bench, var, key) or a preformatted string
    n = med(nb, "nest", nvar, nk)
    cells = []
    meds = {}
    for rt in ("go-1", "libdill", "libev"):
        p = peers.get(rt)
        if p is None: cells.append("—"); continue
        if isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], str):  # (median, text)
            meds[rt] = p[0]; cells.append(p[1]); continue
        b, var, k = p
        meds[rt] = med(b, rt, var, k)
        cells.append(cell(b, rt, var, k))
    print(f"| {name} | {cell(nb, 'nest', nvar, nk)} | {target} | {cells[0]} | {cells[1]} | {cells[2]} | "
          f"{ratio(n, meds.get('go-1'))} | {ratio(n, meds.get('libdill'))} |")

row("spawn+join, ns/task, cold (1st rep in a fresh process)", "spawn_join", "-", "cold_ns_per_task", "≤ 50",
    {"go-1": ("spawn_join", "-", "ns_per_task"), "libdill": ("spawn_join", "-", "ns_per_task")})
row("spawn+join, ns/task, warm (median of 5 later reps)", "spawn_join", "-", "warm_ns_per_task_median", "≤ 50",
    {"go-1": ("spawn_join", "-", "ns_per_task"), "libdill": ("spawn_join", "-", "ns_per_task")})
row("switch: 2 tasks alternating via nest_checkpoint, ns/switch", "switch", "-", "checkpoint_ns_per_switch_median", "≤ 25",
    {"go-1": ("switch", "-", "ns_per_switch"), "libdill": ("switch", "-", "ns_per_switch")})
row("switch: ping-pong via scope-cancel rendezvous, ns/switch (peers: unbuffered channels)", "switch", "-",
    "pingpong_ns_per_switch_median", "—",
    {"go-1": ("switch", "-", "ns_per_switch"), "libdill": ("switch", "-", "ns_per_switch")})
row("switch: ping-pong via the parking lot (nest_park/nest_unpark), ns/switch (peers: unbuffered channels)", "switch", "-",
    "parklot_ns_per_switch_median", "—",
    {"go-1": ("switch", "-", "ns_per_switch"), "libdill": ("switch", "-", "ns_per_switch")})
row("10 s deadline scope + non-blocking checkpoint, ns/iter", "timeouts", "-", "scope_ns_median", "≤ 60",
    {"go-1": ("timeouts", "scope", "ns_per_iter"), "libdill": ("timeouts", "scope", "ns_per_iter"),
     "libev": ("timeouts", "scope", "ns_per_iter")})
row("… same loop without the scope (bare checkpoint), ns/iter", "timeouts", "-", "bare_ns_median", "—",
    {"go-1": ("timeouts", "bare", "ns_per_iter"), "libdill": ("timeouts", "bare", "ns_per_iter"),
     "libev": ("timeouts", "bare", "ns_per_iter")})
row("… scope with one idle fd watched (epoll every 64 steps), ns/iter", "timeouts", "-", "scope_fd_ns_median", "≤ 60",
    {"go-1": ("timeouts", "scope", "ns_per_iter"), "libdill": ("timeouts", "scope", "ns_per_iter"),
     "libev": ("timeouts", "scope", "ns_per_iter")})
row("… deadline scope enter+exit alone, ns (libev: timer start+stop)", "timeouts", "-", "enter_exit_ns_median", "—",
    {"libev": ("timeouts", "startstop", "ns_per_iter")})
def over(rt):
    v = vals("sleepers", rt, str(n_sleep), "wall_ms")
    if not v: 
        e = errors.get(("sleepers", rt, str(n_sleep)))
        return (None, "FAILED: " + e[0] if e else "—")
    o = [x - 100 for x in v]
    return (statistics.median(o), f"{fmt(statistics.median(o))} ({fmt(min(o))}–{fmt(max(o))})")
row(f"{n_sleep:,} sleepers 0–100 ms, ms past 100 ms (wall − 100)", "sleepers", str(n_sleep), "overhead_ms_median", "≤ 20",
    {"go-1": over("go-1"), "libdill": over("libdill")})
row(f"… same, 2nd round in the same runtime (warm), ms past 100 ms", "sleepers", str(n_sleep), "warm_overhead_ms_median", "≤ 20", {})
row(f"{n_sleep:,} sleepers, RSS KiB/task", "sleepers", str(n_sleep), "rss_per_task_kib_median", "—",
    {"go-1": peer_rss_per_task("go-1", str(n_sleep)), "libdill": peer_rss_per_task("libdill", str(n_sleep))})
row(f"{n_sleep:,} parked tasks: spawn+park+cancel, ms", "sleepers", "park", "wall_ms_median", "≤ 50",
    {"go-1": ("sleepers", "park", "wall_ms"), "libdill": ("sleepers", "park", "wall_ms")})
row(f"… same, 2nd round in the same runtime (warm), ms", "sleepers", "park", "warm_wall_ms_median", "≤ 50", {})
row(f"{n_sleep:,} parked tasks, RSS KiB/task", "sleepers", "park", "rss_per_task_kib_median", "≤ 4.5",
    {"go-1": peer_rss_per_task("go-1", "park"), "libdill": peer_rss_per_task("libdill", "park")})
if vals("sleepers", "nest", "million", "wall_ms_median") or errors.get(("sleepers", "nest", "million")):
    row("1,000,000 sleepers 0–1000 ms: wall ms", "sleepers", "million", "wall_ms_median", "completes", {})
    row("1,000,000 sleepers: ms past 1000 ms (wall − 1000)", "sleepers", "million", "overhead_ms_median", "—", {})
    row("1,000,000 sleepers: RSS KiB/task", "sleepers", "million", "rss_per_task_kib_median", "—", {})
    row("1,000,000 sleepers: peak tasks alive", "sleepers", "million", "max_alive_median", "—", {})
if vals("idle_conns", "nest", "-", "n") or errors.get(("idle_conns", "nest", "-")):
    n_idle = med("idle_conns", "nest", "-", "n")
    ni = f"{n_idle:,.0f}" if n_idle else "N"
    row(f"{ni} idle TCP conns, each in receive under its own deadline: server RSS B/conn", "idle_conns", "-",
        "sockets_rss_b_per_conn_median", "—", {})
    row(f"… baseline: {ni} tasks parked under a deadline, RSS B/task", "idle_conns", "-", "tasks_rss_b_per_task_median", "—", {})
    row(f"… kernel slab growth per connection (both ends), B", "idle_conns", "-", "sockets_slab_b_per_pair_median", "—", {})
    row(f"… accept all {ni} (client in another process), ms", "idle_conns", "-", "sockets_accept_ms_median", "—", {})
    row(f"… raw accept4 loop, same client, ms", "idle_conns", "-", "raw_accept_ms_median", "—", {})
    row(f"… cancel all: nursery cancel → every task closed its socket → serve returned, ms", "idle_conns", "-",
        "sockets_cancel_ms_median", "—", {})
    row(f"… raw close(2) loop over the same sockets, ms", "idle_conns", "-", "raw_close_ms_median", "—", {})
    row(f"… tasks baseline: cancel {ni} parked tasks, ms", "idle_conns", "-", "tasks_cancel_ms_median", "—", {})
if vals("spawn_join", "libdill-noguard", "-", "ns_per_task"):
    print()
    print(f"libdill -DDILL_NOGUARD: spawn_join {cell('spawn_join', 'libdill-noguard', '-', 'ns_per_task')} ns/task; "
          f"sleepers {n_sleep:,} wall {cell('sleepers', 'libdill-noguard', str(n_sleep), 'wall_ms')} ms, "
          f"parked RSS/task {peer_rss_per_task('libdill-noguard', 'park')[1]} KiB.")
print()
print("nest detail (medians): "
      f"spawn_join cold spawn loop/join split in {tsv}; "
      f"sleepers past_last_deadline_ms={fmt(med('sleepers','nest',str(n_sleep),'past_last_deadline_ms_median'))}, "
      f"max_alive={fmt(med('sleepers','nest',str(n_sleep),'max_alive_median'))}; "
      f"park spawn/park/cancel ms = {fmt(med('sleepers','nest','park','spawn_ms_median'))}/"
      f"{fmt(med('sleepers','nest','park','park_ms_median'))}/{fmt(med('sleepers','nest','park','cancel_ms_median'))}; "
      f"Go sleepers peak alive={fmt(med('sleepers','go-1',str(n_sleep),'max_alive'))}.")
PY
