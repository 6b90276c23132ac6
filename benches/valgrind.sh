#!/usr/bin/env bash
# Runs the test binaries of the reactor and http crates under valgrind's memcheck: invalid
# reads and writes, uses of uninitialised memory, bad frees, fd misuse it can see, and leaks.
#
#   benches/valgrind.sh                # every binary; exit 0 = clean, 1 = errors or failures
#   ONLY=pipelining benches/valgrind.sh   # only the binaries whose target name matches
#   HUB_SECONDS=0 benches/valgrind.sh      # without the hub step (see below) [60]
#
# The binaries are built by `cargo test --no-run -p tidings-reactor -p tidings-http` (debug,
# so every bounds check and debug assertion is in), found through --message-format=json, and
# each runs as `valgrind --tool=memcheck --error-exitcode=1 --leak-check=full BINARY
# --test-threads=1 --skip ...`. Any memcheck error, any definite or possible leak, or any test
# failure fails the run. Logs: target/valgrind/<binary>.log.
#
# Every test runs, including the timing-sensitive ones (CPU share, latency, timer accuracy,
# 5,000 connections, EMFILE): all pass under memcheck on an otherwise idle 2-core machine
# (checked one by one and in full runs; see RELIABILITY.md). On a busy machine those with
# time thresholds may fail because valgrind runs code 20-50x slower; the summary then says
# "TEST FAILED" (a test assertion, exit 101), which is not the same as "MEMCHECK ERRORS"
# (exit 1). To leave such a test out, add `binary:test-name-substring` to SKIPS below, with
# the reason. The fd soft limit is raised to the hard limit first, so the 5,000-connection
# test has its descriptors under valgrind too (valgrind keeps the top of the table).
#
# Then the hub itself (the `tidings` binary, debug build: overflow checks on) runs under
# memcheck for HUB_SECONDS while the soak client (tests/soak.rs, as in benches/soak.sh)
# loads it: publishers, cursor-following subscribers, /work bursts past the queue, clients
# that abort in every state, bad requests. It passes if memcheck finds nothing, the client's
# checks pass (everything back to its start, no message lost; its RSS checks are left out,
# RSS under valgrind is the tool's), and the hub exits 0 on SIGTERM. Log:
# target/valgrind/hub.log (memcheck), hub-client.log, hub-stderr.log.
#
# Suppressed (benches/valgrind.supp, each entry with its reason): only the standard
# library's main-thread handle, which memcheck reports as "possibly lost" in every test
# binary because std keeps an interior pointer to it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/valgrind
mkdir -p "$OUT"
VALGRIND_SET=${VALGRIND:-}
VALGRIND=${VALGRIND:-valgrind}
ONLY=${ONLY:-}
HUB_SECONDS=${HUB_SECONDS:-60}
say() { echo "valgrind.sh: $*" >&2; }
. benches/lib.sh

# valgrind runs the binaries, jq finds them among cargo's build messages. On a fresh
# Debian/Ubuntu machine the missing ones are installed (as root, via apt-get, bounded to
# 5 minutes per step); elsewhere install them by hand.
need jq || { say "could not install jq (apt-get, as root): install it and rerun"; exit 1; }
[ -n "${VALGRIND_SET:-}" ] || need valgrind ||
  { say "could not install valgrind (apt-get, as root): install it and rerun"; exit 1; }
[ -x "$(command -v "$VALGRIND")" ] || { say "valgrind not found at $VALGRIND"; exit 1; }

# One `binary:test-name-substring` per line, each with its reason in a comment above it.
SKIPS="
"

say "building the test binaries (debug)…"
cargo test --no-run -q -p tidings-reactor -p tidings-http --message-format=json >"$OUT/build.json"
if [ "$HUB_SECONDS" != 0 ]; then
  say "building the hub and the soak client (debug)…"
  cargo build -q -p tidings --bin tidings
  SOAK_CLIENT=$(cargo test -q --test soak --no-run --message-format=json 2>/dev/null \
    | jq -r 'select(.reason == "compiler-artifact" and .target.name == "soak" and .executable != null) | .executable' \
    | tail -n 1)
  [ -x "$SOAK_CLIENT" ] || { say "soak client not built"; exit 1; }
fi
mapfile -t BINS < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
  | "\(.target.name)\t\(.target.kind[0])\t\(.executable)"' "$OUT/build.json" | sort -u)
[ "${#BINS[@]}" -gt 0 ] || { say "no test binaries found"; exit 1; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

STATUS=0
SUMMARY=()
for line in "${BINS[@]}"; do
  IFS=$'\t' read -r name kind exe <<<"$line"
  # The lib unit tests of both crates share a target name with their crate: tell them apart.
  label=$name
  [ "$kind" = lib ] && label="$name-lib"
  if [ -n "$ONLY" ] && [[ "$label" != *"$ONLY"* ]]; then continue; fi
  skip_args=()
  while read -r entry; do
    [ -z "$entry" ] && continue
    [ "${entry%%:*}" = "$name" ] && [ "$kind" = test ] && skip_args+=(--skip "${entry#*:}")
  done <<<"$SKIPS"
  log=$OUT/$label.log
  say "$label: ${exe##*/} ${skip_args[*]:-}"
  start=$(date +%s)
  rc=0
  # A bound, so a test that hangs under valgrind cannot hang the script.
  timeout --signal=KILL 1800 "$VALGRIND" --tool=memcheck --error-exitcode=1 --leak-check=full \
    --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite,possible \
    --track-fds=no --num-callers=30 --suppressions="$ROOT/benches/valgrind.supp" \
    "$exe" --test-threads=1 "${skip_args[@]}" >"$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
  result=$(grep -E '^test result:' "$log" | tail -n 1 || true)
  leaks=$(grep -E '(definitely|possibly) lost:' "$log" | tr -s ' ' | sed 's/==[0-9]*== //' | paste -sd ';' || true)
  case "$rc" in
    0) verdict=clean ;;
    1) verdict="MEMCHECK ERRORS" ;;
    101) verdict="TEST FAILED" ;;
    137) verdict="KILLED (timeout)" ;;
    *) verdict="FAILED (exit $rc)" ;;
  esac
  [ "$rc" = 0 ] || STATUS=1
  SUMMARY+=("$(printf '%-22s %-16s %4ss  memcheck errors: %-3s  %s %s' "$label" "$verdict" "$took" "${errors:-?}" "${result#test result: }" "${leaks:+ leaks: $leaks}")")
  say "  $verdict in ${took}s; memcheck errors: ${errors:-?}; ${result:-no test result line}"
done

# The hub under memcheck, loaded by the soak client.
if [ -z "$ONLY" ] || [[ "hub" == *"$ONLY"* ]] && [ "$HUB_SECONDS" != 0 ]; then
  say "hub: tidings under memcheck, soak load for ${HUB_SECONDS}s"
  start=$(date +%s)
  : >"$OUT/hub-stderr.log"
  "$VALGRIND" --tool=memcheck --error-exitcode=1 --leak-check=full \
    --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite,possible \
    --num-callers=30 --suppressions="$ROOT/benches/valgrind.supp" --log-file="$OUT/hub.log" \
    "$ROOT/target/debug/tidings" --listen 127.0.0.1:0 --workers 2 --work-queue 4 \
    --retain 200 --retain-bytes 262144 --poll-timeout 5 --header-timeout 5 2>"$OUT/hub-stderr.log" &
  HUB=$!
  trap 'kill -KILL "$HUB" 2>/dev/null || true' EXIT
  ADDR=$(wait_listening "$OUT/hub-stderr.log" "$HUB" 600) || ADDR=""
  client=0
  hub_rc=0
  if [ -n "$ADDR" ]; then
    SOAK_ADDR=$ADDR SOAK_PID=$HUB SOAK_SECONDS=$HUB_SECONDS SOAK_CSV=$OUT/hub-soak.csv SOAK_SKIP_RSS=1 \
      timeout --signal=KILL $((HUB_SECONDS + 600)) \
      "$SOAK_CLIENT" --ignored --exact soak --nocapture --test-threads=1 >"$OUT/hub-client.log" 2>&1 || client=$?
    kill -TERM "$HUB" 2>/dev/null || true
    # Graceful stop (5 s deadline), plus valgrind's leak check at exit.
    for _ in $(seq 600); do kill -0 "$HUB" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$HUB" 2>/dev/null || true
    wait "$HUB" || hub_rc=$?
  else
    say "  the hub did not start under valgrind"; client=1; hub_rc=1
    kill -KILL "$HUB" 2>/dev/null || true
  fi
  trap - EXIT
  took=$(( $(date +%s) - start ))
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$OUT/hub.log" | tail -n 1)
  leaks=$(grep -E '(definitely|possibly) lost:' "$OUT/hub.log" | tr -s ' ' | sed 's/==[0-9]*== //' | paste -sd ';' || true)
  counts=$(grep -E '^soak: (published|messages delivered|aborted clients):' "$OUT/hub-client.log" | sed 's/^soak: //' | paste -sd ',' || true)
  if [ "$hub_rc" = 0 ] && [ "$client" = 0 ]; then
    verdict=clean
  elif [ "$hub_rc" = 1 ]; then
    verdict="MEMCHECK ERRORS"
  elif [ "$client" != 0 ]; then
    verdict="CLIENT FAILED"
  else
    verdict="HUB EXIT $hub_rc"
  fi
  [ "$verdict" = clean ] || STATUS=1
  SUMMARY+=("$(printf '%-22s %-16s %4ss  memcheck errors: %-3s  hub exit %s, soak client exit %s (%s) %s' "hub (tidings)" "$verdict" "$took" "${errors:-?}" "$hub_rc" "$client" "$counts" "${leaks:+ leaks: $leaks}")")
  say "  $verdict in ${took}s; memcheck errors: ${errors:-?}; hub exit $hub_rc; soak client exit $client"
fi

echo
echo "valgrind memcheck summary (logs in $OUT):"
printf '%s\n' "${SUMMARY[@]}"
exit "$STATUS"
