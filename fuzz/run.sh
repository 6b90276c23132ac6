#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), one after the other, and prints what
# each reached. Exits non-zero if any target crashed (its input is in fuzz/artifacts/<target>/).
#
#   fuzz/run.sh            # 30 s per target
#   fuzz/run.sh 600        # 10 min per target
#   FUZZ_TARGETS="request_head timer_wheel" fuzz/run.sh 60
#
# Needs only the stable toolchain: cargo-fuzz's nightly-only flags (-Zsanitizer, ...) are let
# through with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz if it is missing.
#
# Corpora: the committed seeds in fuzz/corpus/<target>/ are only read. What libFuzzer adds goes
# to fuzz/corpus-work/<target>/ (ignored by git), kept between runs; delete it for a fresh
# start. Logs: fuzz/logs/<target>.log.
set -uo pipefail

SECONDS_PER_TARGET="${1:-30}"
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
TARGETS="${FUZZ_TARGETS:-request_head connection hub_params timer_wheel resp_reply}"
SANITIZER="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 2
fi

echo "== building (sanitizer: $SANITIZER)"
# --fuzz-dir: run from inside fuzz/, the crate is this directory.
if ! cargo fuzz build --fuzz-dir "$HERE" -s "$SANITIZER" --release --debug-assertions; then
    echo "build failed" >&2
    exit 2
fi

mkdir -p logs
failed=0
summary=()
for t in $TARGETS; do
    work="corpus-work/$t"
    mkdir -p "$work" "artifacts/$t" "corpus/$t"
    echo "== $t: ${SECONDS_PER_TARGET}s"
    # New inputs go to the first directory; the seeds are read from the second.
    cargo fuzz run --fuzz-dir "$HERE" -s "$SANITIZER" --release --debug-assertions "$t" "$work" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -max_len=4096 -timeout=30 \
        -rss_limit_mb=4096 -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*$')
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | tail -1 | grep -o '[0-9]*$')
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    corp=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*')
    if [ "$rc" -eq 0 ]; then
        status=ok
    else
        status="CRASH (exit $rc)"
        failed=1
        echo "---- $t crashed; end of logs/$t.log:"
        grep -E 'panicked at|ERROR|SUMMARY|Test unit written|Base64' "logs/$t.log" | head -20
    fi
    line=$(printf '%-13s %-16s execs %-10s (%s/s)  cov %-6s ft %-6s corpus %s' \
        "$t" "$status" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}")
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"
exit $failed
