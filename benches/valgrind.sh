#!/usr/bin/env bash
# Runs the test binaries of the reactor and http crates under valgrind's memcheck: invalid
# reads and writes, uses of uninitialised memory, bad frees, fd misuse it can see, and leaks.
#
#   benches/valgrind.sh                # every binary; exit 0 = clean, 1 = errors or failures
#   ONLY=pipelining benches/valgrind.sh   # only the binaries whose target name matches
#
# The binaries are built by `cargo test --no-run -p tidings-reactor -p tidings-http` (debug,
# so every bounds check and debug assertion is in), found through --message-format=json, and
# each runs as `valgrind --tool=memcheck --error-exitcode=1 --leak-check=full BINARY
# --test-threads=1 --skip ...`. Any memcheck error, any definite or possible leak, or any test
# failure fails the run. Logs: target/valgrind/<binary>.log.
#
# Skipped under valgrind, and why (they all run in the normal `cargo test`):
#  * tests that assert CPU time, latency or timer accuracy: valgrind runs code 20-50x slower
#    and serialises threads, so their thresholds (e.g. "< 5% of a core", "< 200 ms", "no
#    timer late by more than 10 ms") measure valgrind, not the code;
#  * tests that need more than 1024 descriptors (thousands of connections): valgrind keeps
#    the top of the fd table for itself and refuses to raise the soft limit past its own;
#  * EMFILE, which re-runs the test binary as a child process with a 64-fd limit: under
#    valgrind the child would need valgrind's own descriptors as well.
# The list is in SKIPS below, one `binary:test-name-substring` per line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/valgrind
mkdir -p "$OUT"
VALGRIND_SET=${VALGRIND:-}
VALGRIND=${VALGRIND:-valgrind}
ONLY=${ONLY:-}
say() { echo "valgrind.sh: $*" >&2; }

# valgrind runs the binaries, jq finds them among cargo's build messages. On a fresh
# Debian/Ubuntu machine the missing ones are installed (as root, via apt-get, bounded to
# 5 minutes per step); elsewhere install them by hand.
missing=()
command -v jq >/dev/null || missing+=(jq)
[ -n "${VALGRIND_SET:-}" ] || command -v "$VALGRIND" >/dev/null || missing+=(valgrind)
if [ "${#missing[@]}" -gt 0 ]; then
  say "not found: ${missing[*]}; installing with apt-get…"
  { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || { say "could not install ${missing[*]} (apt-get, as root): install and rerun"; exit 1; }
fi
[ -x "$(command -v "$VALGRIND")" ] || { say "valgrind not found at $VALGRIND"; exit 1; }

SKIPS="
load:emfile
load:sequential_requests_from_nagle_client_do_not_stall
load:sequential_requests_from_nodelay_client_are_fast
load:five_thousand_concurrent_keep_alive_connections
peer_close:half_closed_client_not_reading_does_not_spin
peer_close:many_clients_leaving_at_once
timeouts:timer_due_during_a_long_turn_does_not_hang_the_loop
timers:timers_never_fire_early_and_fire_in_order
timers:idle_loop_sleeps_until_its_timer
timers:max_wait_bounds_the_sleep_without_firing_timers
timers:repeating_timer_fires_on_period_until_cancelled
remote:burst_while_the_loop_is_busy_costs_one_eventfd_write
io:hangup_is_reported_until_deregistered
"

say "building the test binaries (debug)…"
cargo test --no-run -q -p tidings-reactor -p tidings-http --message-format=json >"$OUT/build.json"
mapfile -t BINS < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
  | "\(.target.name)\t\(.target.kind[0])\t\(.executable)"' "$OUT/build.json" | sort -u)
[ "${#BINS[@]}" -gt 0 ] || { say "no test binaries found"; exit 1; }

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
    --track-fds=no --num-callers=30 \
    "$exe" --test-threads=1 "${skip_args[@]}" >"$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
  result=$(grep -E '^test result:' "$log" | tail -n 1 || true)
  leaks=$(grep -E '(definitely|possibly) lost:' "$log" | tr -s ' ' | sed 's/==[0-9]*== //' | paste -sd ';' || true)
  if [ "$rc" = 0 ]; then
    verdict=clean
  else
    verdict="FAILED (exit $rc)"
    STATUS=1
  fi
  SUMMARY+=("$(printf '%-22s %-16s %4ss  memcheck errors: %-3s  %s %s' "$label" "$verdict" "$took" "${errors:-?}" "${result#test result: }" "${leaks:+ leaks: $leaks}")")
  say "  $verdict in ${took}s; memcheck errors: ${errors:-?}; ${result:-no test result line}"
done

echo
echo "valgrind memcheck summary (logs in $OUT):"
printf '%s\n' "${SUMMARY[@]}"
exit "$STATUS"
