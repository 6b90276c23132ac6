#!/usr/bin/env bash
# Did a change make tidings slower? Two tidings binaries (an earlier commit's and this one's)
# measured in the same session, A B A B, on the loads of compare.sh: plaintext keep-alive
# (c50), pipelined (16 deep), connection per request; 10,000 held polls (idle CPU, RSS per
# poll, delivery p50/p99); fan-out of one publish to 10,000 subscribers plus a burst of 50.
# Prints the median of each figure per binary and the ratio B/A (below 1 = B is better for
# CPU, RSS and latency).
#
#   benches/regress.sh OLD_TIDINGS NEW_TIDINGS          # 3 rounds (about 6 minutes)
#   ROUNDS=5 DUR=4 benches/regress.sh A B
#
# Build the earlier commit outside this checkout, e.g.
#   git worktree add --detach /tmp/tidings-base BASE
#   cargo build --release -p tidings --manifest-path /tmp/tidings-base/Cargo.toml
#
# Like compare.sh: the server pinned to core 0, tidings-load to core 1, loopback only, every
# process it starts is stopped. Raw RESULT lines: target/regress/runs.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/regress
mkdir -p "$WORK"
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-4}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
. benches/lib.sh
say() { echo "$*" >&2; }

[ $# -eq 2 ] || { say "usage: $0 OLD_TIDINGS NEW_TIDINGS"; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2")
for bin in "$A" "$B"; do [ -x "$bin" ] || { say "not an executable: $bin"; exit 1; }; done
cargo build --release -q -p tidings-load
LOAD=$ROOT/target/release/tidings-load
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

RUNS=$WORK/runs.txt
: >"$RUNS"
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT

# serve BINARY ARGS...: starts it on an ephemeral port, sets PID and ADDR.
serve() {
  local bin=$1 log=$WORK/server.log
  shift
  taskset -c "$SERVER_CPU" "$bin" --listen 127.0.0.1:0 "$@" 2>"$log" &
  PID=$!
  ADDR=$(wait_listening "$log" "$PID") || { say "$bin did not start: $(cat "$log")"; exit 1; }
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=; }
field() { sed -n "s/.*[[:space:]]$1=\([^[:space:]]*\).*/\1/p" <<<"$2"; }
median() { grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

declare -A V
record() { # LABEL KEY VALUE
  V[$1|$2]+="$3 "
}

for round in $(seq "$ROUNDS"); do
  for label in A B; do
    bin=$A; [ $label = B ] && bin=$B
    serve "$bin" --workers 1
    for sc in "c50|-c 50" "pipe16|-c 50 --pipeline 16" "close|-c 50 --conn-per-request"; do
      name=${sc%%|*}
      # shellcheck disable=SC2086
      line=$(taskset -c "$LOAD_CPU" "$LOAD" http --url "http://$ADDR/plaintext" ${sc#*|} -d "$DUR" --pid "$PID" 2>>"$RUNS" | grep '^RESULT' || true)
      echo "round=$round $label $name $line" >>"$RUNS"
      record $label "$name cpu_us_per_req" "$(field server_cpu_us_per_req "$line")"
      record $label "$name rps" "$(field rps "$line")"
    done
    stop
    serve "$bin" --poll-timeout 300
    line=$(taskset -c "$LOAD_CPU" "$LOAD" longpoll --addr "$ADDR" -n 10000 --idle 5 --publish 1000 --pid "$PID" 2>>"$RUNS" | grep '^RESULT' || true)
    echo "round=$round $label longpoll $line" >>"$RUNS"
    for f in idle_cpu_pct rss_per_poll_bytes delivery_p50_us delivery_p99_us; do
      record $label "longpoll $f" "$(field $f "$line")"
    done
    stop
    serve "$bin" --poll-timeout 300
    line=$(taskset -c "$LOAD_CPU" "$LOAD" fanout --addr "$ADDR" -n 10000 --burst 50 --pid "$PID" 2>>"$RUNS" | grep '^RESULT' || true)
    echo "round=$round $label fanout $line" >>"$RUNS"
    cpu=$(field fanout_server_cpu_ms "$line"); n=$(field delivered "$line")
    record $label "fanout cpu_us_per_delivery" "$(awk -v c="$cpu" -v n="$n" 'BEGIN { if (c !~ /^[0-9.]+$/ || n+0 == 0) print "-"; else printf "%.3f", c*1000/n }')"
    record $label "fanout ms" "$(field fanout_ms "$line")"
    record $label "burst ok" "$(field burst_ok "$line")"
    stop
    say "round $round: $label done"
  done
done

echo "| figure | A (old) | B (new) | B / A |"
echo "|---|---:|---:|---:|"
for key in "c50 cpu_us_per_req" "c50 rps" "pipe16 cpu_us_per_req" "pipe16 rps" "close cpu_us_per_req" "close rps" \
           "longpoll idle_cpu_pct" "longpoll rss_per_poll_bytes" "longpoll delivery_p50_us" "longpoll delivery_p99_us" \
           "fanout cpu_us_per_delivery" "fanout ms"; do
  a=$(tr ' ' '\n' <<<"${V[A|$key]:-}" | median); b=$(tr ' ' '\n' <<<"${V[B|$key]:-}" | median)
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a=="-"||b=="-"||a==0) print "-"; else printf "%.2fx", b/a }')
  echo "| $key | $a | $b | $r |"
done
echo
echo "Bursts of 50 that passed their checks: A ${V[A|burst ok]:-none}, B ${V[B|burst ok]:-none}"
echo "Median of $ROUNDS rounds, A B A B; $(nproc) cores; $(date -u +%Y-%m-%d); B = commit $(git rev-parse --short HEAD)."
