#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable on a noisy shared machine where
# CPU time is not. A server runs under `valgrind --tool=callgrind`; tidings-load drives
# `GET /plaintext` at it (keep-alive on 4 connections, then pipelined 16 deep on 4); the
# counters are zeroed once the load is running and dumped before it stops, and the total
# instructions of that window are divided by the requests answered in it.
#
#   benches/instructions.sh [TIDINGS_BINARY...]      # default target/release/tidings
#   FLOOR=1 benches/instructions.sh                  # also the C floor (benches/peers/c-floor)
#   DUR=4 benches/instructions.sh A B                # seconds of counted load per figure
#
# Prints one line per (server, mode): `instr/req`; the profiles stay in
# target/instructions/callgrind.NAME.MODE (callgrind_annotate --threshold=100 FILE). Needs valgrind. Under callgrind a server
# runs ~50x slower, so the request rate is low; the count per request does not depend on it
# (except the per-turn costs shared by a batch of ready connections: same load, same shape).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/target/instructions
mkdir -p "$WORK"
DUR=${DUR:-3}
. benches/lib.sh
say() { echo "$*" >&2; }
command -v valgrind >/dev/null || { say "valgrind is not installed"; exit 1; }
cargo build --release -q -p tidings-load
LOAD=$ROOT/target/release/tidings-load
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || { cargo build --release -q -p tidings; BINS=("$ROOT/target/release/tidings"); }
if [ "${FLOOR:-0}" = 1 ]; then
  cc -O2 -o "$WORK/floor" benches/peers/c-floor/floor.c
fi

PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT

# count NAME ADDR MODE-ARGS...: zero, load for DUR s, dump, print instr/req.
count() {
  local name=$1 addr=$2 mode=$3
  shift 3
  rm -f "$WORK"/cg.out.*.[0-9]*
  # Warm up (connections open, buffers pooled), then count a window of steady load.
  "$LOAD" http --url "http://$addr/plaintext" -c 4 -d 1 --warmup 0 "$@" >/dev/null
  callgrind_control -z "$PID" >/dev/null 2>&1
  local out
  out=$("$LOAD" http --url "http://$addr/plaintext" -c 4 -d "$DUR" --warmup 0 "$@" | grep "^RESULT")
  callgrind_control -d "$PID" >/dev/null 2>&1
  local reqs instr file
  reqs=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$out")
  file=$(ls -t "$WORK"/cg.out.* 2>/dev/null | grep -v '\.out\.[0-9]*$' | head -n 1 || true)
  [ -n "$file" ] || file=$(ls -t "$WORK"/cg.out.* | head -n 1)
  instr=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$file" | head -n 1)
  mv "$file" "$WORK/callgrind.$(basename "$name").$mode" # for callgrind_annotate
  echo "$name $mode requests=$reqs instructions=$instr instr/req=$((instr / (reqs > 0 ? reqs : 1)))"
}

run_server() { # NAME ADDR-WAIT-KIND CMD...
  local name=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out.base" "$@" 2>"$WORK/server.log" &
  PID=$!
}

for bin in "${BINS[@]}"; do
  run_server tidings "$bin" --listen 127.0.0.1:0 --workers 0
  ADDR=$(wait_listening "$WORK/server.log" "$PID" 600) || { say "$bin did not start: $(cat "$WORK/server.log")"; exit 1; }
  count "$bin" "$ADDR" keepalive
  count "$bin" "$ADDR" pipeline16 --pipeline 16
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
if [ "${FLOOR:-0}" = 1 ]; then
  run_server floor "$WORK/floor" 127.0.0.1 18399
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18399) 2>/dev/null && break; sleep 0.1; done
  count floor 127.0.0.1:18399 keepalive
  count floor 127.0.0.1:18399 pipeline16 --pipeline 16
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
fi
