#!/usr/bin/env bash
# Validates tidings-load against wrk on the same server, in the same run, A B A B order:
# requests/s as each tool reports it, requests/s as the *server* counted them (the sum of
# /stats "responses_total" before and after), and the server's CPU time per request.
#
#   benches/validate-load.sh            # 3 rounds x 4 s per scenario (about 2 minutes)
#   ROUNDS=5 DUR=6 benches/validate-load.sh
#
# Scenarios: 50 keep-alive connections; 50 connections, one request each (wrk sends
# `Connection: close`, tidings-load --conn-per-request). The server (tidings) is pinned to
# core 0, the load tool to core 1; wrk runs one thread (-t1) like tidings-load. Installs wrk
# (Debian package) if it is missing. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/validate-load
mkdir -p "$WORK"
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-4}
PORT=18320
LOG=$WORK/validate.log
: >"$LOG"
say() { echo "$*" >&2; }
. benches/lib.sh

need wrk || { say "wrk is not installable here"; exit 1; }
say "building tidings and tidings-load (release)…"
cargo build --release -q -p tidings -p tidings-load
TIDINGS=$ROOT/target/release/tidings
LOAD=$ROOT/target/release/tidings-load

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
taskset -c 0 "$TIDINGS" --listen 127.0.0.1:$PORT --workers 1 2>>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done

# Requests answered so far, as the server counts them (sum of responses_total, minus the
# /stats requests themselves, which are counted as they are answered: one per call).
served() { curl -s "http://127.0.0.1:$PORT/stats" | sed 's/.*"responses_total":{\(.*\)}}/\1/' |
  tr ',' '\n' | awk -F: '{s += $2} END {print s}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

declare -A RPS SRV CPU
run() { # tool scenario
  local tool=$1 sc=$2 out reported s0 s1 c0 c1 t0 t1 secs
  s0=$(served); c0=$(cpu_ticks); t0=$(date +%s.%N)
  if [ "$tool" = wrk ]; then
    local hdr=()
    [ "$sc" = close ] && hdr=(-H "Connection: close")
    out=$(taskset -c 1 wrk -t1 -c50 -d"${DUR}s" "${hdr[@]}" "http://127.0.0.1:$PORT/plaintext" 2>&1)
    reported=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
  else
    local extra=()
    [ "$sc" = close ] && extra=(--conn-per-request)
    out=$(taskset -c 1 "$LOAD" http --url "http://127.0.0.1:$PORT/plaintext" -c 50 -d "$DUR" "${extra[@]}" 2>&1)
    reported=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$out")
  fi
  t1=$(date +%s.%N); c1=$(cpu_ticks); s1=$(served)
  echo "== $tool $sc" >>"$LOG"; echo "$out" >>"$LOG"
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  local n=$((s1 - s0 - 1))
  RPS[$tool.$sc]+="$reported "
  # Server-side rate over the tool's whole run (start-up and drain included, so a little low).
  SRV[$tool.$sc]+="$(awk -v n="$n" -v s="$secs" 'BEGIN {printf "%.0f", n / s}') "
  CPU[$tool.$sc]+="$(awk -v c=$((c1 - c0)) -v t="$TICK_US" -v n="$n" 'BEGIN {printf "%.3f", c * t / n}') "
  say "$tool $sc: reported $reported req/s; server counted $n requests in ${secs}s"
}

for round in $(seq "$ROUNDS"); do
  for sc in keepalive close; do
    run tidings-load "$sc"
    run wrk "$sc"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
{
  echo "## tidings-load vs wrk (median of $ROUNDS rounds, ${DUR} s each, 50 connections, one load thread)"
  echo
  echo "| scenario | tool | req/s reported | req/s counted by the server | server CPU us/req | tidings-load / wrk (reported) |"
  echo "|---|---|---:|---:|---:|---:|"
  for sc in keepalive close; do
    a=$(median <<<"${RPS[tidings-load.$sc]}"); b=$(median <<<"${RPS[wrk.$sc]}")
    r=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2fx", a / b}')
    echo "| $sc | tidings-load | $a | $(median <<<"${SRV[tidings-load.$sc]}") | $(median <<<"${CPU[tidings-load.$sc]}") | $r |"
    echo "| $sc | wrk | $b | $(median <<<"${SRV[wrk.$sc]}") | $(median <<<"${CPU[wrk.$sc]}") | |"
  done
  echo
  echo "Commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%d); log: $LOG"
} | tee "$WORK/table.md"
