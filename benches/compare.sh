#!/usr/bin/env bash
# The whole benchmark table in one command: tidings beside a bare C epoll loop (the syscall
# floor) and the peers a user would pick instead, in the same run, A B A B order, medians.
#
#   benches/compare.sh                 # everything (about 8-10 minutes)
#   QUICK=1 benches/compare.sh         # 1 round, shorter runs (a smoke test of the script)
#   SKIP="nginx tornado" benches/compare.sh
#   PARTS=longpoll benches/compare.sh  # only the long-poll and fan-out part (PARTS=plaintext: the other)
#   FAN_ROUNDS=7 PARTS=longpoll benches/compare.sh   # more fan-out rounds (default 5; QUICK=1: 1)
#
# The server runs pinned to core 0, the load generator (tidings-load, on our own reactor) to
# core 1. The headline is the server's CPU time per request (utime+stime from /proc/PID/stat
# before and after, divided by the requests answered), as a ratio to the C floor measured in
# the same run: on 2 cores the load generator saturates first, so requests/s alone cannot tell
# good servers apart. Everything targets 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-$ROOT/target/compare}
mkdir -p "$WORK"
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-4}
FAN_ROUNDS=${FAN_ROUNDS:-5}
if [ -n "${QUICK:-}" ]; then ROUNDS=1; DUR=2; FAN_ROUNDS=1; fi
SKIP=${SKIP:-}
PARTS=${PARTS:-plaintext longpoll}
part() { [[ " $PARTS " == *" $1 "* ]]; }
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
LOG=$WORK/compare.log
: > "$LOG"

say() { echo "$*" >&2; }
skip() { [[ " $SKIP " == *" $1 "* ]]; }
. benches/lib.sh

# ---- build what is missing ---------------------------------------------------------------
say "building tidings and tidings-load (release)…"
cargo build --release -q -p tidings -p tidings-load
TIDINGS=$ROOT/target/release/tidings
LOAD=$ROOT/target/release/tidings-load

say "building the C floors…"
cc -O2 -o "$WORK/floor" benches/peers/c-floor/floor.c
cc -O2 -o "$WORK/fanout_floor" benches/peers/c-floor/fanout_floor.c

HYPER=""
if ! skip hyper; then
  say "building hyper (current-thread) peer…"
  if (cd benches/peers/hyper && cargo build --release -q 2>>"$LOG"); then
    HYPER=$ROOT/benches/peers/hyper/target/release/hyper-plaintext
  else
    say "  hyper peer did not build (see $LOG); skipped"
  fi
fi

NGINX=""
if ! skip nginx; then
  if need nginx nginx-light || need nginx; then NGINX=$(command -v nginx); else say "  nginx not installable; skipped"; fi
fi

PY=""
if ! skip tornado; then
  if [ ! -x "$WORK/venv/bin/python" ]; then
    say "creating a venv with tornado…"
    (python3 -m venv "$WORK/venv" && "$WORK/venv/bin/pip" install -q tornado) >>"$LOG" 2>&1 || true
  fi
  if "$WORK/venv/bin/python" -c 'import tornado' 2>/dev/null; then PY=$WORK/venv/bin/python; else say "  tornado not installable; skipped"; fi
fi

# ---- servers ------------------------------------------------------------------------------
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  say "server on port $1 did not start"; return 1
}

# start NAME PORT CMD... -> sets PID_<NAME>
start() {
  local name=$1 port=$2; shift 2
  taskset -c "$SERVER_CPU" "$@" >>"$LOG" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$port"
  printf -v "PID_$name" '%s' "$pid"
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SERVERS=(floor tidings)
start floor 18301 "$WORK/floor" 127.0.0.1 18301
start tidings 18302 "$TIDINGS" --listen 127.0.0.1:18302 --workers 1
if [ -n "$HYPER" ]; then start hyper 18303 "$HYPER" 127.0.0.1:18303; SERVERS+=(hyper); fi
if [ -n "$NGINX" ]; then
  mkdir -p "$WORK/nginx"
  sed -e "s#@PORT@#18304#g" -e "s#@DIR@#$WORK/nginx#g" benches/peers/nginx/nginx.conf.in > "$WORK/nginx/nginx.conf"
  start nginx 18304 "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
  # nginx forks its worker: measure the worker process.
  sleep 0.2
  PID_nginx=$(pgrep -P "$PID_nginx" | head -1)
  SERVERS+=(nginx)
fi
declare -A PORT=([floor]=18301 [tidings]=18302 [hyper]=18303 [nginx]=18304)

# ---- plaintext scenarios --------------------------------------------------------------------
# field NAME LINE -> the value of NAME=... in a RESULT line
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# median of the numbers in a space-separated list ("-" if none: a run that failed has none)
med() { tr ' ' '\n' <<<"$1" | { grep -E '^[0-9.]+$' || true; } | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a=="-"||b=="-"||b==0) print "-"; else printf "%.2fx", a/b }'; }

if part plaintext; then
declare -A CPU RPS P99
SCENARIOS=("c50|-c 50" "c256|-c 256" "pipe16|-c 50 --pipeline 16" "close|-c 50 --conn-per-request")
for round in $(seq "$ROUNDS"); do
  for sc in "${SCENARIOS[@]}"; do
    name=${sc%%|*}; args=${sc#*|}
    for s in "${SERVERS[@]}"; do
      pidvar=PID_$s
      # shellcheck disable=SC2086
      line=$(taskset -c "$LOAD_CPU" "$LOAD" http --url "http://127.0.0.1:${PORT[$s]}/plaintext" \
               $args -d "$DUR" --pid "${!pidvar}" 2>>"$LOG" | grep '^RESULT' || true)
      echo "round=$round scenario=$name server=$s $line" >>"$LOG"
      say "round $round $name $s: $(field rps "$line") req/s, $(field server_cpu_us_per_req "$line") us/req"
      CPU[$name.$s]+="$(field server_cpu_us_per_req "$line") "
      RPS[$name.$s]+="$(field rps "$line") "
      P99[$name.$s]+="$(field p99_us "$line") "
    done
  done
done


{
echo "## Plaintext: server CPU per request (median of $ROUNDS rounds, ${DUR} s each)"
echo
echo "| scenario | server | req/s | p99 (us) | server CPU us/req | vs C floor |"
echo "|---|---|---:|---:|---:|---:|"
for sc in "${SCENARIOS[@]}"; do
  name=${sc%%|*}
  floor=$(med "${CPU[$name.floor]}")
  for s in "${SERVERS[@]}"; do
    c=$(med "${CPU[$name.$s]}")
    echo "| $name | $s | $(med "${RPS[$name.$s]}") | $(med "${P99[$name.$s]}") | $c | $(ratio "$c" "$floor") |"
  done
done
echo
} | tee "$WORK/table-plaintext.md"
fi

# ---- long-poll scenarios ---------------------------------------------------------------------
# tidings at 1k, 5k and 10k held polls; the Tornado apps at 5k (the seed's own scale). Each
# tidings row also gets its ratio to the best Tornado app at 5k (per-poll figures scale-free).
cleanup; PIDS=()
if part longpoll; then
declare -A LPV
LP_ROWS=()
lp_run() { # label pid port n
  local line
  line=$(taskset -c "$LOAD_CPU" "$LOAD" longpoll --addr "127.0.0.1:$3" -n "$4" --idle 5 --publish 1000 --pid "$2" 2>>"$LOG" | grep '^RESULT' || true)
  echo "longpoll $1 n=$4 $line" >>"$LOG"
  LP_ROWS+=("$1|$4")
  for f in idle_cpu_pct rss_per_poll_bytes delivery_p50_us delivery_p99_us drain_ms; do
    LPV[$1|$4|$f]=$(field "$f" "$line")
  done
  say "longpoll $1 n=$4: $line"
}
# Fan-out: 10,000 subscribers on one channel, one publish, then a burst of 50. FV[label|field]
# collects the figures of every round (space-separated) for medians.
declare -A FV
FAN_LABELS=()
fan_run() { # label pid port burst
  local line cpu n per
  line=$(taskset -c "$LOAD_CPU" "$LOAD" fanout --addr "127.0.0.1:$3" -n 10000 --burst "$4" --pid "$2" 2>>"$LOG" | grep '^RESULT' || true)
  echo "fanout $1 $line" >>"$LOG"
  [[ " ${FAN_LABELS[*]:-} " == *" $1 "* ]] || FAN_LABELS+=("$1")
  for f in fanout_ms fanout_p50_ms burst_ms burst_ok fanout_server_cpu_ms delivered burst_server_cpu_us_per_delivery; do
    FV[$1|$f]+="$(field "$f" "$line") "
  done
  # Server CPU per delivered answer of the one publish (its CPU comes in 10 ms ticks).
  cpu=$(field fanout_server_cpu_ms "$line"); n=$(field delivered "$line")
  per=$(awk -v c="$cpu" -v n="$n" 'BEGIN { if (c !~ /^[0-9.]+$/ || n+0 == 0) print "-"; else printf "%.3f", c*1000/n }')
  FV[$1|fanout_cpu_us_per_delivery]+="$per "
  say "fanout $1: $line"
}
# `true` if every round's burst passed its checks, else how many did; "not run" without a burst.
burst_verdict() {
  local all=$1 ok=0 k=0 v
  for v in $all; do k=$((k + 1)); [ "$v" = true ] && ok=$((ok + 1)); done
  if [ "$k" = 0 ]; then echo "not run"; elif [ "$ok" = "$k" ]; then echo true; else echo "false ($ok of $k rounds passed)"; fi
}
for n in 1000 5000 10000; do
  start tidings 18310 "$TIDINGS" --listen 127.0.0.1:18310 --poll-timeout 300
  lp_run tidings "$PID_tidings" 18310 "$n"
  kill "$PID_tidings"; wait "$PID_tidings" 2>/dev/null || true
done
# tidings against the C fan-out floor, A B A B, a fresh process for every run.
for round in $(seq "$FAN_ROUNDS"); do
  start fanout_floor 18314 "$WORK/fanout_floor" 127.0.0.1 18314
  fan_run floor "$PID_fanout_floor" 18314 50
  kill "$PID_fanout_floor"; wait "$PID_fanout_floor" 2>/dev/null || true
  start tidings 18312 "$TIDINGS" --listen 127.0.0.1:18312 --poll-timeout 300
  fan_run tidings "$PID_tidings" 18312 50
  kill "$PID_tidings"; wait "$PID_tidings" 2>/dev/null || true
  say "fanout round $round of $FAN_ROUNDS done"
done
PEERS=()
if [ -n "$PY" ]; then
  for app in longpoll_futures longpoll_seed; do
    start "$app" 18311 "$PY" "benches/peers/tornado/$app.py" 127.0.0.1 18311
    pidvar=PID_$app
    lp_run "tornado ${app#longpoll_}" "${!pidvar}" 18311 5000
    PEERS+=("tornado ${app#longpoll_}")
    kill "${!pidvar}"; wait "${!pidvar}" 2>/dev/null || true
  done
  # Fan-out for the event-driven app only (the seed's timer polling would take minutes at
  # 10k), without the burst (a burst of 50 x 10,000 answers would too).
  start longpoll_futures 18313 "$PY" benches/peers/tornado/longpoll_futures.py 127.0.0.1 18313
  fan_run "tornado futures" "$PID_longpoll_futures" 18313 0
  kill "$PID_longpoll_futures"; wait "$PID_longpoll_futures" 2>/dev/null || true
fi

# best peer value of a metric (lowest; "-" if none measured)
best_peer() {
  local f=$1 v best="-"
  for p in "${PEERS[@]:-}"; do
    [ -n "$p" ] || continue
    v=${LPV[$p|5000|$f]:-}
    [[ "$v" =~ ^[0-9.]+$ ]] || continue
    if [ "$best" = "-" ] || awk -v a="$v" -v b="$best" 'BEGIN {exit !(a < b)}'; then best=$v; fi
  done
  echo "$best"
}
BEST_RSS=$(best_peer rss_per_poll_bytes); BEST_P99=$(best_peer delivery_p99_us)

{
echo "## Long-poll (held polls on distinct channels, 5 s idle window, 1,000 publishes)"
echo
echo "| server | held polls | idle CPU % of a core | RSS per held poll (bytes) | vs best peer | delivery p50 (us) | delivery p99 (us) | vs best peer | drain after abrupt close (ms) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for row in "${LP_ROWS[@]}"; do
  label=${row%%|*}; n=${row#*|}
  rss=${LPV[$row|rss_per_poll_bytes]}; p99=${LPV[$row|delivery_p99_us]}
  r1="-"; r2="-"
  if [ "$label" = tidings ]; then r1=$(ratio "${rss:--}" "$BEST_RSS"); r2=$(ratio "${p99:--}" "$BEST_P99"); fi
  echo "| $label | $n | ${LPV[$row|idle_cpu_pct]} | $rss | $r1 | ${LPV[$row|delivery_p50_us]} | $p99 | $r2 | ${LPV[$row|drain_ms]} |"
done
echo
echo "Ratios: tidings' figure over the best Tornado app's at 5,000 held polls (per-poll figures)."
echo
echo "## Fan-out (10,000 subscribers on one channel; floor and tidings: median of $FAN_ROUNDS rounds)"
echo
echo "| server | one publish to the last subscriber (ms) | median subscriber (ms) | burst of 50, every subscriber got all in order |"
echo "|---|---:|---:|---|"
for s in "${FAN_LABELS[@]}"; do
  echo "| $s | $(med "${FV[$s|fanout_ms]}") | $(med "${FV[$s|fanout_p50_ms]}") | $(burst_verdict "${FV[$s|burst_ok]}") |"
done
FAN_TIDINGS=$(med "${FV[tidings|fanout_ms]}")
if [ -n "${FV[tornado futures|fanout_ms]:-}" ]; then
  echo
  echo "tidings / tornado futures, fan-out time: $(ratio "$FAN_TIDINGS" "$(med "${FV[tornado futures|fanout_ms]}")")"
fi
echo
echo "### Fan-out against the C fan-out floor (same run, A B A B, median of $FAN_ROUNDS rounds)"
echo
echo "| metric | floor | tidings | tidings / floor | per-round ratios |"
echo "|---|---:|---:|---:|---|"
for m in "fanout_cpu_us_per_delivery|server CPU per delivery, one publish (us)" \
         "fanout_ms|one publish to the last subscriber (ms)" \
         "burst_server_cpu_us_per_delivery|server CPU per delivered message, burst of 50 (us)" \
         "burst_ms|burst of 50 to the last subscriber (ms)"; do
  f=${m%%|*}
  read -ra fl <<<"${FV[floor|$f]:-}"; read -ra ti <<<"${FV[tidings|$f]:-}"
  per=""
  for i in "${!fl[@]}"; do per+="${per:+, }$(ratio "${ti[$i]:--}" "${fl[$i]}" | tr -d x)"; done
  a=$(med "${FV[floor|$f]:-}"); b=$(med "${FV[tidings|$f]:-}")
  echo "| ${m#*|} | $a | $b | $(ratio "$b" "$a") | $per |"
done
# The one publish's CPU in 10 ms ticks is coarse (one tick = 1 us per delivery at 10k):
# the ratio of the sums over all rounds is the finer figure.
sum() { tr ' ' '\n' <<<"$1" | awk '/^[0-9.]+$/ {s += $1} END {print s + 0}'; }
fc=$(sum "${FV[floor|fanout_server_cpu_ms]:-}"); fd=$(sum "${FV[floor|delivered]:-}")
tc=$(sum "${FV[tidings|fanout_server_cpu_ms]:-}"); td=$(sum "${FV[tidings|delivered]:-}")
echo
awk -v fc="$fc" -v fd="$fd" -v tc="$tc" -v td="$td" 'BEGIN {
  if (fd == 0 || td == 0 || fc == 0) { print "Pooled over the rounds: not measured."; exit }
  printf "Pooled over the rounds (server CPU of every one-publish fan-out / its deliveries): floor %.3f us, tidings %.3f us per delivery: %.2fx\n", fc*1000/fd, tc*1000/td, (tc/td)/(fc/fd) }'
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(date -u +%Y-%m-%d)."
} | tee "$WORK/table-longpoll.md"
fi
say "full log: $LOG"
