#!/usr/bin/env bash
# The book's experiments: break one mechanism, run the test that guards it, watch it fail.
#
#   docs/experiments.sh --list        the experiment names, one per line
#   docs/experiments.sh NAME          run one: patched (the test must fail), then as committed
#                                     (the same test must pass); exit 0 only if both happen
#   docs/experiments.sh --all         every experiment, both runs
#   docs/experiments.sh --ci          every experiment, patched run only (apply, build, expect
#                                     the failure): the cheap form CI runs
#
# Nothing touches your work tree: your tracked files (as they are on disk, edits included)
# are copied to target/experiments/tree, the change is made there, and cargo builds into
# target/experiments/target. Each chapter of docs/ says what to expect and why.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK="$ROOT/target/experiments"
TREE="$WORK/tree"
export CARGO_TARGET_DIR="$WORK/target"

# name @ chapter @ file @ perl substitution (must change the file) @ cargo test arguments
EXPERIMENTS=(
  "echo-spins-on-emfile@docs/00-smallest-server.md@reactor/examples/echo.rs@s{\n\s*r\.reregister\(self\.listener_token, Interest::NONE\)\.unwrap\(\);\n\s*self\.accept_retry = Some\(r\.set_timer\(ACCEPT_RETRY, 0\)\);}{}@-p tidings-reactor --test echo_emfile -- --exact echo_survives_running_out_of_descriptors"
  "timeout-rounds-down@docs/01-one-turn.md@reactor/src/event_loop.rs@s{d\.subsec_nanos\(\)\.div_ceil\(1_000_000\)}{d.subsec_nanos() / 1_000_000}@-p tidings-reactor --test timers -- --exact idle_loop_sleeps_until_its_timer"
  "no-generation@docs/02-registration-and-tokens.md@reactor/src/event_loop.rs@s{Some\(s\) if s\.gen == token\.gen => match s\.kind}{Some(s) => match s.kind}@-p tidings-reactor --test io -- --exact stale_event_is_not_delivered_to_a_reused_slot"
  "edge-triggered@docs/03-level-vs-edge.md@reactor/src/event_loop.rs@s{fn epoll_bits\(self\) -> u32 \{\s*self\.0\s*\}}{fn epoll_bits(self) -> u32 { self.0 | libc::EPOLLET as u32 }}@-p tidings-reactor --test io -- --exact readable_is_level_triggered"
  "deadline-rounds-down@docs/04-timer-wheel.md@reactor/src/event_loop.rs@s{nanos\.div_ceil\(1_000_000\)}{(nanos / 1_000_000)}@-p tidings-reactor --test timers -- --exact timers_never_fire_early_and_fire_in_order"
  "no-cascade@docs/04-timer-wheel.md@reactor/src/wheel.rs@s{(let next = self\.entries\[key as usize\]\.next;\n\s*)self\.file\(key\);}{\$1// self.file(key);}@-p tidings-reactor --test wheel -- --exact randomized_against_btreemap_model"
  "remote-order@docs/05-waking-the-loop.md@reactor/src/remote.rs@s{(\s*self\.wake_pending\.store\(false, Ordering::SeqCst\);)(\s*let mut q = self\.queue\.lock\(\)[^\n]*\n\s*std::mem::swap\(&mut \*q, into\);)}{\$2\n        drop(q);\n        std::thread::sleep(std::time::Duration::from_micros(50));\$1}@-p tidings-reactor --test remote -- --exact a_post_while_the_loop_takes_the_queue_still_wakes_it"
  "signal-errno@docs/05-waking-the-loop.md@reactor/src/signals.rs@s{\n\s*sys::set_errno\(saved\);}{}@-p tidings-reactor --lib -- --exact signals::tests::the_handler_keeps_errno"
  "fin-not-noted@docs/06-connection.md@http/src/conn.rs@s|if hangup \{|if false && hangup {|@-p tidings-http --test peer_close -- --exact half_closed_client_not_reading_does_not_spin"
  "emfile-no-pause@docs/06-connection.md@http/src/server.rs@s{\n\s*self\.pause_accept\(r, true\);}{}@-p tidings-http --test load -- --exact emfile_does_not_spin_and_recovers"
  "channels-never-dropped@docs/08-long-poll.md@app/src/hub.rs@s|if c\.messages\.is_empty\(\) && c\.waiters\.is_empty\(\) \{|if false {|@--test bounds -- --exact messages_expire_and_an_idle_hub_returns_to_empty"
  "one-body-per-waiter@docs/08-long-poll.md@app/src/hub.rs@s|if !matches!\(deliveries\.last\(\), Some\(d\) if d\.cursor == cursor && d\.batch\.reset == reset\) \{|if true {|@-p tidings --lib -- --exact hub::tests::a_publish_describes_one_answer_per_cursor_for_its_waiters"
  "smuggling-te-wins@docs/09-http-details.md@http/src/request.rs@s|if transfer_encoding && content_length\.is_some\(\) \{|if false && transfer_encoding && content_length.is_some() {|@-p tidings-http --test rejections -- --exact content_length_and_transfer_encoding_is_400_and_close"
  "no-turn-budget@docs/09-http-details.md@http/src/dispatch.rs@s|if dispatched % BUDGET_CHECK_EVERY == 1|if false \&\& dispatched % BUDGET_CHECK_EVERY == 1|@-p tidings-http --test pipelining -- --exact a_pipelined_batch_of_slow_requests_does_not_hold_up_other_clients"
  "drain-not-told@docs/11-streams-and-upgrades.md@http/src/conn.rs@s|if stream_output \{|if false \&\& stream_output {|@-p tidings-http --test streams -- --exact small_backlog_written_from_call_goes_on_when_the_flush_drains_it"
  "unmasked-frames-accepted@docs/11-streams-and-upgrades.md@app/src/ws/frame.rs@s|if b\[1\] \& 0x80 == 0 \{|if false \&\& b[1] \& 0x80 == 0 {|@--test ws -- --exact unmasked_frame_is_a_protocol_error"
  "redis-deadline-never-fires@docs/12-cluster.md@app/src/cluster.rs@s|if late \{|if false \&\& late {|@--test cluster_faults -- --exact a_redis_that_stops_answering_means_503_then_everything_after_each_cursor_once"
)

field() { # field INDEX RECORD
  local IFS='@'
  # shellcheck disable=SC2206
  local parts=($2)
  printf '%s' "${parts[$1]}"
}

find_experiment() {
  local e
  for e in "${EXPERIMENTS[@]}"; do
    if [ "$(field 0 "$e")" = "$1" ]; then
      printf '%s' "$e"
      return 0
    fi
  done
  return 1
}

# A fresh copy of the tracked files, every file with a new mtime (so cargo never reuses a
# build of a patched file for the pristine one).
sync_tree() {
  rm -rf "$TREE"
  mkdir -p "$TREE" "$CARGO_TARGET_DIR"
  (cd "$ROOT" && git ls-files -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xmf - -C "$TREE"
}

# run_test ARGS...: builds first (a build error is not "the test failed"), then runs.
# Returns 0 if the test passed, 1 if it failed, 2 if it did not build.
run_test() {
  local build=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do build+=("$1"); shift; done
  if ! (cd "$TREE" && cargo test --no-run "${build[@]}" >"$WORK/build.log" 2>&1); then
    return 2
  fi
  if (cd "$TREE" && cargo test "${build[@]}" "$@" >"$WORK/test.log" 2>&1); then
    return 0
  fi
  return 1
}

run_experiment() { # run_experiment RECORD MODE(full|ci)
  local rec=$1 mode=$2 name chapter file subst args
  name=$(field 0 "$rec"); chapter=$(field 1 "$rec"); file=$(field 2 "$rec")
  subst=$(field 3 "$rec"); args=$(field 4 "$rec")
  echo "== $name ($chapter)"
  sync_tree
  cp "$TREE/$file" "$WORK/original"
  perl -0pi -e "$subst" "$TREE/$file"
  if cmp -s "$TREE/$file" "$WORK/original"; then
    echo "   the change no longer applies to $file: update the experiment"
    return 1
  fi
  echo "   the change, in $file:"
  { diff -u "$WORK/original" "$TREE/$file" || true; } | sed -n '3,$p' | grep '^[-+]' | sed 's/^/     /'
  # shellcheck disable=SC2086
  local status=0; run_test $args || status=$?
  case $status in
    2) echo "   the changed tree does not build:"; tail -20 "$WORK/build.log"; return 1 ;;
    0) echo "   FAILED EXPERIMENT: with the change, cargo test $args still passes"; return 1 ;;
  esac
  echo "   with the change: cargo test $args fails, as the chapter says:"
  grep -A3 "panicked at" "$WORK/test.log" | grep -vE "^ *([0-9]+:|at |stack backtrace|note:)" | head -5 | sed 's/^/     | /'
  if [ "$mode" = ci ]; then
    return 0
  fi
  cp "$WORK/original" "$TREE/$file" && touch "$TREE/$file"
  status=0; run_test $args || status=$?
  if [ $status -ne 0 ]; then
    echo "   FAILED EXPERIMENT: without the change the test does not pass:"; tail -20 "$WORK/test.log"
    return 1
  fi
  echo "   without the change: passes. The experiment behaves as described."
}

case "${1:-}" in
  --list)
    for e in "${EXPERIMENTS[@]}"; do field 0 "$e"; echo; done ;;
  --all | --ci)
    mode=full; [ "$1" = --ci ] && mode=ci
    failed=()
    for e in "${EXPERIMENTS[@]}"; do
      run_experiment "$e" "$mode" || failed+=("$(field 0 "$e")")
    done
    if [ ${#failed[@]} -gt 0 ]; then echo "experiments that did not behave: ${failed[*]}"; exit 1; fi
    echo "all ${#EXPERIMENTS[@]} experiments behave as the book says" ;;
  "" | -h | --help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    rec=$(find_experiment "$1") || { echo "unknown experiment '$1' (see --list)" >&2; exit 2; }
    run_experiment "$rec" full ;;
esac
