#!/usr/bin/env bash
# Soak test: the release `tidings` under mixed load for MINUTES minutes, then checks that it
# is back where it began and that no subscriber lost a message it was not told about.
#
#   benches/soak.sh MINUTES            # e.g. benches/soak.sh 2; fractions allowed (0.5)
#   SOAK_CSV=path benches/soak.sh 10   # where the samples go [target/soak/soak.csv]
#
# The load comes from tests/soak.rs (an ignored test of the suite, run here with SOAK_*
# set): publishers, cursor-following subscribers (some slow enough to have messages evicted
# under them: `missed`), /work with bursts past the queue, aborted clients (partial requests,
# FIN or RST mid-request, held polls and jobs cut off), bad requests. Every 10 s it records
# the server's fd count (/proc/PID/fd), RSS (VmRSS), connections, held polls and pending
# timers (/stats) into the CSV. When the load stops it waits for fds, connections, held polls
# and timers to return exactly to their starting values (RSS within a margin), then checks
# every subscriber: messages received + reported missed = the last acknowledged seq.
# Finally the server gets SIGTERM and must exit 0. Exit status: 0 pass, 1 fail, 2 usage.
#
# Loopback only (127.0.0.1, an ephemeral port); it stops by itself (a hard timeout of the
# run time + 5 minutes), and the server is killed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MINUTES=${1:-}
if ! [[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || [ "$(awk -v m="$MINUTES" 'BEGIN{print (m>0 && m<=1440)}')" != 1 ]; then
  echo "usage: benches/soak.sh MINUTES   (0 < MINUTES <= 1440)" >&2
  exit 2
fi
SECONDS_RUN=$(awk -v m="$MINUTES" 'BEGIN{printf "%d", m*60}')
WORK=$ROOT/target/soak
mkdir -p "$WORK"
CSV=${SOAK_CSV:-$WORK/soak.csv}
LOG=$WORK/tidings.log

say() { echo "soak.sh: $*" >&2; }
. benches/lib.sh

# jq finds the soak client among cargo's build messages. On a fresh Debian/Ubuntu machine it
# is installed (as root, via apt-get, bounded to 5 minutes); elsewhere install it by hand.
need jq || { say "could not install jq (apt-get, as root): install it and rerun"; exit 1; }

say "building tidings (release) and the soak client…"
cargo build --release -q -p tidings --bin tidings
CLIENT=$(cargo test -q --test soak --no-run --message-format=json 2>/dev/null \
  | jq -r 'select(.reason == "compiler-artifact" and .target.name == "soak" and .executable != null) | .executable' \
  | tail -n 1)
[ -x "$CLIENT" ] || { say "soak client not built"; exit 1; }

# The server: small retention so slow subscribers get `missed`, a small work queue so bursts
# get 503, defaults otherwise. Descriptors: as many as the hard limit allows.
ulimit -n "$(ulimit -Hn)"
"$ROOT/target/release/tidings" --listen 127.0.0.1:0 --workers 2 --work-queue 4 \
  --retain 200 --retain-bytes 262144 --poll-timeout 5 --header-timeout 5 2>"$LOG" &
PID=$!
cleanup() { kill -KILL "$PID" 2>/dev/null || true; }
trap cleanup EXIT

ADDR=$(wait_listening "$LOG" "$PID") || { say "tidings did not start:"; cat "$LOG" >&2; exit 1; }
say "tidings pid $PID on $ADDR; load for $SECONDS_RUN s; samples in $CSV"

STATUS=0
SOAK_ADDR=$ADDR SOAK_PID=$PID SOAK_SECONDS=$SECONDS_RUN SOAK_CSV=$CSV \
  timeout --signal=KILL $((SECONDS_RUN + 300)) \
  "$CLIENT" --ignored --exact soak --nocapture --test-threads=1 || STATUS=1

# Graceful stop: exit code 0 within the shutdown deadline (5 s) plus a margin.
kill -TERM "$PID"
for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then
  say "FAIL: tidings did not stop within 10 s of SIGTERM"
  STATUS=1
else
  wait "$PID" && CODE=0 || CODE=$?
  if [ "$CODE" != 0 ]; then say "FAIL: tidings exited with $CODE"; STATUS=1; fi
fi
if grep -q "panicked" "$LOG"; then
  say "FAIL: the server log has a panic:"; grep -n "panicked" "$LOG" >&2; STATUS=1
fi

say "CSV ($CSV):"
column -s, -t < "$CSV" >&2 || cat "$CSV" >&2
if [ "$STATUS" = 0 ]; then say "PASS"; else say "FAIL (server log: $LOG)"; fi
exit "$STATUS"
