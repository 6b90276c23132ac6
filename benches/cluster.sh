#!/usr/bin/env bash
# What cluster mode (issue 13: nodes sharing channels through one Redis) costs and what it
# scales to on this machine, in one run, alternating the variants (A B A B), medians:
#
# 1. the in-memory engine against --redis, one node each (tidings and redis-server pinned
#    to core 0, tidings-load to core 1, as in compare.sh):
#    - long-poll: N held polls on channels of their own, RSS per held poll, then 1000
#      publishes one at a time: publish latency (POST -> its 200) and delivery (POST -> the
#      subscriber's 200), p50/p99;
#    - a steady 2000 publishes/s for DUR s to one SSE stream: server CPU per publish and
#      Redis CPU per publish (utime+stime from /proc/PID/stat of tidings and of
#      redis-server, before and after, over the publishes the server accepted);
#    - fan-out of one publish to N subscribers of one channel (last, p50, p99), then a
#      burst of 50 that every subscriber must get exactly once, in order (CPU per delivery);
# 2. scaling with --redis: 1 node against 2 nodes on one --reuse-port port (one Redis;
#    nothing pinned: two nodes need both cores), CPU summed over the nodes:
#    - plaintext keep-alive, 50 connections: server CPU per request, requests/s;
#    - the long-poll load of 1 (delivery p50/p99, RSS per held poll summed over the nodes);
#    - the fan-out of 1 with the N subscribers spread by the kernel over the nodes, the
#      publish taken by whichever node the kernel gives its connection to.
#
#   benches/cluster.sh                    # 3 rounds, N = 10000 (about 4 minutes)
#   ROUNDS=2 DUR=5 N=10000 benches/cluster.sh
#   QUICK=1 benches/cluster.sh            # 1 round, N = 2000, short windows (a smoke test)
#
# It starts its own redis-server on a free port of 127.0.0.1 (no persistence, emptied
# between runs) and its own tidings nodes on ephemeral ports; every load run is bounded
# (timeout), everything it started is stopped on exit. Raw RESULT lines and the CPU readings:
# target/cluster/runs.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/cluster
mkdir -p "$WORK"
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-5}
N=${N:-10000}
RATE=${RATE:-2000}
if [ -n "${QUICK:-}" ]; then ROUNDS=1; DUR=2; N=2000; fi
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RUN_LIMIT=${RUN_LIMIT:-240} # seconds one load run may take
. benches/lib.sh
say() { echo "$*" >&2; }

need redis-server redis-server || { say "redis-server is not installed (apt-get install redis-server)"; exit 1; }
need redis-cli redis-tools || { say "redis-cli is not installed"; exit 1; }
say "building tidings and tidings-load (release)…"
cargo build --release -q -p tidings -p tidings-load
TIDINGS=$ROOT/target/release/tidings
LOAD=$ROOT/target/release/tidings-load
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
TCK=$(getconf CLK_TCK)

RUNS=$WORK/runs.txt
: >"$RUNS"
NODES=()
REDIS_PID=
cleanup() {
  for p in "${NODES[@]:-}" $REDIS_PID; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# ---- redis-server -------------------------------------------------------------------------
REDIS_PORT=
for _ in $(seq 20); do
  port=$((20000 + RANDOM % 20000))
  taskset -c "$SERVER_CPU" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --protected-mode yes --daemonize no --logfile "$WORK/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && { REDIS_PORT=$port; break; }
    kill -0 "$REDIS_PID" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$REDIS_PORT" ] && break
  kill "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=
done
[ -n "$REDIS_PORT" ] || { say "redis-server did not start (see $WORK/redis.log)"; exit 1; }
say "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"

# ---- tidings nodes ------------------------------------------------------------------------
# start VARIANT: starts the variant's nodes, sets ADDR and PIDARGS (--pid P for each node).
#   mem: one node, in memory, pinned; redis: one node with --redis, pinned;
#   c1 / c2: one / two nodes with --redis --reuse-port on one port, not pinned.
start() {
  local variant=$1 count=1 pin=(taskset -c "$SERVER_CPU") flags=(--workers 1 --poll-timeout 300)
  case $variant in
    mem) ;;
    redis) flags+=(--redis "redis://127.0.0.1:$REDIS_PORT") ;;
    c1 | c2) flags+=(--redis "redis://127.0.0.1:$REDIS_PORT" --reuse-port); pin=(); [ "$variant" = c2 ] && count=2 ;;
  esac
  [ "$variant" = mem ] || redis-cli -p "$REDIS_PORT" flushall >/dev/null
  NODES=(); PIDARGS=(); ADDR=127.0.0.1:0
  for i in $(seq "$count"); do
    local log=$WORK/node$i.log
    "${pin[@]}" "$TIDINGS" --listen "$ADDR" "${flags[@]}" 2>"$log" &
    local pid=$!
    NODES+=("$pid"); PIDARGS+=(--pid "$pid")
    ADDR=$(wait_listening "$log" "$pid") || { say "tidings ($variant) did not start: $(cat "$log")"; exit 1; }
    if [ "$variant" != mem ]; then
      for _ in $(seq 100); do grep -q 'redis .*: connected' "$log" && break; sleep 0.05; done
      grep -q 'redis .*: connected' "$log" || { say "tidings ($variant) did not connect to Redis: $(cat "$log")"; exit 1; }
    fi
  done
}
stop() {
  for p in "${NODES[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${NODES[@]}"; do wait "$p" 2>/dev/null || true; done
  NODES=()
}

# ---- figures ------------------------------------------------------------------------------
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
ticks_sum() { local t=0 p; for p in "$@"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }
median() { { grep -E '^[0-9.]+$' || true; } | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
declare -A V
record() { V[$1|$2]+="${3:--} "; } # VARIANT FIGURE VALUE
# per TICKS COUNT: microseconds of CPU per unit
per() { awk -v t="$1" -v n="$2" -v k="$TCK" 'BEGIN { if (n !~ /^[0-9]+$/ || n == 0) print "-"; else printf "%.2f", t * 1e6 / k / n }'; }

# load LABEL CPU-LIST ARGS...: one tidings-load run (bounded), its RESULT line in $LINE.
load() {
  local label=$1 cpus=$2
  shift 2
  local pin=()
  [ -n "$cpus" ] && pin=(taskset -c "$cpus")
  LINE=$(timeout "$RUN_LIMIT" "${pin[@]}" "$LOAD" "$@" 2>>"$RUNS" | grep '^RESULT' || true)
  echo "$label $LINE" >>"$RUNS"
  [ -n "$LINE" ] || say "  $label: no RESULT (see $RUNS)"
}

longpoll() { # VARIANT CPUS
  start "$1"
  load "round=$round $1 longpoll" "$2" longpoll --addr "$ADDR" "${PIDARGS[@]}" -n "$N" --idle 3 --publish 1000
  for f in rss_per_poll_bytes publish_p50_us publish_p99_us delivery_p50_us delivery_p99_us errors; do
    record "$1" "longpoll $f" "$(field $f "$LINE")"
  done
  stop
}

fanout() { # VARIANT CPUS
  start "$1"
  local r0 r1
  r0=$(ticks "$REDIS_PID")
  load "round=$round $1 fanout" "$2" fanout --addr "$ADDR" "${PIDARGS[@]}" -n "$N" --burst 50 --channel "fan-$round-$1"
  r1=$(ticks "$REDIS_PID")
  for f in fanout_ms fanout_p50_ms fanout_p99_ms burst_server_cpu_us_per_delivery burst_ok errors; do
    record "$1" "fanout $f" "$(field $f "$LINE")"
  done
  echo "round=$round $1 fanout redis_ticks=$((r1 - r0)) subscribers_on_publishing_node=$(field fanout_subscribers "$LINE")" >>"$RUNS"
  stop
}

steady() { # VARIANT CPUS: server and Redis CPU per publish at a steady rate
  start "$1"
  local s0 s1 r0 r1 accepted
  s0=$(ticks_sum "${NODES[@]}"); r0=$(ticks "$REDIS_PID")
  load "round=$round $1 sse" "$2" sse --addr "$ADDR" "${PIDARGS[@]}" -n 1 --subs 1 --idle 1 --rate "$RATE" -d "$DUR"
  s1=$(ticks_sum "${NODES[@]}"); r1=$(ticks "$REDIS_PID")
  accepted=$(field steady_accepted "$LINE")
  echo "round=$round $1 sse server_ticks=$((s1 - s0)) redis_ticks=$((r1 - r0)) accepted=$accepted" >>"$RUNS"
  record "$1" "steady server_cpu_us_per_publish" "$(per $((s1 - s0)) "$accepted")"
  [ "$1" = mem ] || record "$1" "steady redis_cpu_us_per_publish" "$(per $((r1 - r0)) "$accepted")"
  record "$1" "steady missing" "$(field steady_missing "$LINE")"
  stop
}

plaintext() { # VARIANT
  start "$1"
  load "round=$round $1 plaintext" "" http --url "http://$ADDR/plaintext" -c 50 -d "$DUR" "${PIDARGS[@]}"
  for f in server_cpu_us_per_req rps p99_us errors; do record "$1" "plaintext $f" "$(field $f "$LINE")"; done
  stop
}

say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
  for v in mem redis; do
    longpoll $v "$LOAD_CPU"; steady $v "$LOAD_CPU"; fanout $v "$LOAD_CPU"
    say "round $round: $v done"
  done
  for v in c1 c2; do
    plaintext $v; longpoll $v ""; fanout $v ""
    say "round $round: $v done"
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# table A B FIGURES...: medians, ratio B/A, and the values of every round
table() {
  local a=$1 b=$2 key
  shift 2
  for key in "$@"; do
    local va=${V[$a|$key]:-} vb=${V[$b|$key]:-}
    local ma mb r
    ma=$(tr ' ' '\n' <<<"$va" | median); mb=$(tr ' ' '\n' <<<"$vb" | median)
    r=$(awk -v a="$ma" -v b="$mb" 'BEGIN { if (a=="-"||b=="-"||a==0) print "-"; else printf "%.2fx", b/a }')
    echo "| $key | $ma | $mb | $r | ${va% } / ${vb% } |"
  done
}
echo
echo "In-memory engine (A) against --redis (B), one node each; tidings and redis-server on core $SERVER_CPU, tidings-load on core $LOAD_CPU"
echo
echo "| figure | A in-memory | B redis | B / A | rounds (A / B) |"
echo "|---|---:|---:|---:|---|"
table mem redis "longpoll rss_per_poll_bytes" "longpoll publish_p50_us" "longpoll publish_p99_us" \
  "longpoll delivery_p50_us" "longpoll delivery_p99_us" "steady server_cpu_us_per_publish" \
  "steady redis_cpu_us_per_publish" "fanout fanout_p50_ms" "fanout fanout_p99_ms" "fanout fanout_ms" \
  "fanout burst_server_cpu_us_per_delivery"
echo
echo "--redis --reuse-port: 1 node (A) against 2 nodes (B) on one port, one Redis, nothing pinned; CPU summed over the nodes"
echo
echo "| figure | A 1 node | B 2 nodes | B / A | rounds (A / B) |"
echo "|---|---:|---:|---:|---|"
table c1 c2 "plaintext server_cpu_us_per_req" "plaintext rps" "plaintext p99_us" "longpoll rss_per_poll_bytes" \
  "longpoll publish_p50_us" "longpoll publish_p99_us" "longpoll delivery_p50_us" "longpoll delivery_p99_us" \
  "fanout fanout_p50_ms" "fanout fanout_p99_ms" "fanout fanout_ms" "fanout burst_server_cpu_us_per_delivery"
echo
for v in mem redis c1 c2; do
  echo "$v: errors longpoll [${V[$v|longpoll errors]:-}] fanout [${V[$v|fanout errors]:-}] plaintext [${V[$v|plaintext errors]:-}]; bursts OK [${V[$v|fanout burst_ok]:-}]; steady missing [${V[$v|steady missing]:-}]"
done
echo "N=$N, $ROUNDS rounds, steady $RATE/s for $DUR s; $(nproc) cores; load average $LOAD_START at the start, $LOAD_END at the end;" \
  "$(date -u +%Y-%m-%d); commit $(git rev-parse --short HEAD); raw lines: $RUNS"
