#!/usr/bin/env bash
# Latency of fast requests while the worker pool keeps the cores busy: 20 `GET /plaintext`
# (one curl each, a fresh connection each, 40 ms apart) answered while 3 `/work?ms=3000` jobs
# run on 3 workers, on however many cores the machine has (2 here: the jobs want 3). Reports
# each run's p50 and max of the 20, then, per binary, the median of the runs' p50s and maxes.
# Two binaries are compared in the same session, A B A B order, so the machine's noise hits
# both alike.
#
#   benches/work-latency.sh OLD_BINARY NEW_BINARY     # 5 rounds (about 40 s)
#   ROUNDS=9 benches/work-latency.sh A B
#   benches/work-latency.sh                           # target/release/tidings alone (built)
#
# To compare with an earlier commit, build it outside this checkout, for instance:
#   mkdir -p /tmp/tidings-base && git archive BASE | tar -x -C /tmp/tidings-base
#   cargo build --release -p tidings --manifest-path /tmp/tidings-base/Cargo.toml
#   benches/work-latency.sh /tmp/tidings-base/target/release/tidings target/release/tidings
#
# Needs curl (installed as a Debian package if missing). Loopback only, ephemeral ports;
# every server it starts is stopped. Raw figures: target/work-latency/runs.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/work-latency
mkdir -p "$WORK"
ROUNDS=${ROUNDS:-5}
FAST=20
JOBS=3
JOB_MS=3000
. benches/lib.sh
say() { echo "$*" >&2; }

need curl || { say "curl is not installable here"; exit 1; }
if [ $# -eq 0 ]; then
  say "building tidings (release)…"
  cargo build --release -q -p tidings
  set -- "$ROOT/target/release/tidings"
fi
for bin in "$@"; do [ -x "$bin" ] || { say "not an executable: $bin"; exit 1; }; done

RUNS=$WORK/runs.txt
: >"$RUNS"
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT

# one_run LABEL BINARY: prints "LABEL p50_ms max_ms jobs_still_running" for one run.
one_run() {
  local label=$1 bin=$2 log=$WORK/server.log addr t times running
  "$bin" --listen 127.0.0.1:0 --workers "$JOBS" 2>"$log" &
  PID=$!
  addr=$(wait_listening "$log" "$PID") || { say "$bin did not start: $(cat "$log")"; exit 1; }
  local jobs=()
  for _ in $(seq "$JOBS"); do
    curl -s -o /dev/null "http://$addr/work?ms=$JOB_MS" &
    jobs+=($!)
  done
  for _ in $(seq 100); do
    curl -s "http://$addr/stats" | grep -q "\"jobs_running\":$JOBS," && break
    sleep 0.02
  done
  times=()
  for _ in $(seq "$FAST"); do
    t=$(curl -s -o /dev/null -w '%{time_total}' "http://$addr/plaintext")
    times+=("$t")
    sleep 0.04
  done
  running=$(curl -s "http://$addr/stats" | sed 's/.*"jobs_running":\([0-9]*\).*/\1/')
  wait "${jobs[@]}"
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  printf '%s\n' "${times[@]}" | sort -g | awk -v label="$label" -v running="$running" \
    '{ v[NR] = $1 * 1000 } END { printf "%s %.3f %.3f %d\n", label, v[int((NR + 1) / 2)], v[NR], running }'
}

say "$ROUNDS rounds of: $FAST GET /plaintext while $JOBS x /work?ms=$JOB_MS run ($(nproc) cores; load average $(cut -d" " -f1-3 /proc/loadavg))"
for round in $(seq "$ROUNDS"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    line=$(one_run "$i" "$bin")
    echo "$line" >>"$RUNS"
    say "round $round, binary $i: p50/max ms, jobs still running at the end: ${line#* }"
  done
done

echo
echo "| binary | runs | fast-request p50 (median of runs) | fast-request max (median of runs) |"
echo "|---|---:|---:|---:|"
i=0
for bin in "$@"; do
  i=$((i + 1))
  awk -v i="$i" '$1 == i { p[++n] = $2; m[n] = $3 }
    function median(a, n,   j, k, t) {
      for (j = 1; j <= n; j++) for (k = j + 1; k <= n; k++) if (a[k] < a[j]) { t = a[j]; a[j] = a[k]; a[k] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END { printf "| %d | %d | %.2f ms | %.2f ms |\n", i, n, median(p, n), median(m, n) }' "$RUNS" |
    sed "s#^| $i |#| \`$bin\` |#"
done
