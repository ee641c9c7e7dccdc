#!/usr/bin/env bash
# Runs porteiro's fuzz targets (fuzz/fuzz_targets) for SECONDS each and
# prints, per target, its run time, executions and crashes. Exits non-zero
# when any target crashed; the crashing input is then in
# fuzz/artifacts/TARGET/, and `cargo fuzz run TARGET THAT-FILE` replays it.
#
#   benches/fuzz.sh [SECONDS] [TARGET...]     (default: 60 s, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Uses the nightly
# toolchain when rustup has one, else the default one: without a sanitizer
# (porteiro forbids unsafe code; the targets hunt panics, overflows and
# broken invariants) cargo fuzz needs no nightly-only flag. FUZZ_BUILD adds
# build flags (`--dev` builds faster, runs slower).
#
# Each target grows its corpus in fuzz/work/TARGET (git-ignored), seeded
# from the committed fuzz/corpus/TARGET.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift $(($# > 0 ? 1 : 0))
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: benches/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi
toolchain=()
rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null && toolchain=(+nightly)
# The fuzz crate is its own workspace, built with its own flags: a shared
# CARGO_TARGET_DIR would rebuild the main build's dependencies each switch.
flags=(--sanitizer none --target-dir fuzz/target ${FUZZ_BUILD:-})
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no targets (is cargo-fuzz installed?)" >&2
  exit 1
fi

echo "fuzz: building ${targets[*]}"
for t in "${targets[@]}"; do
  cargo "${toolchain[@]}" fuzz build "${flags[@]}" "$t" || exit 1
done

failed=0
printf '%-12s %8s %12s %8s\n' target seconds executions crashes
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  log="fuzz/work/$t.log"
  start=$(date +%s)
  cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  # libFuzzer stops at the first crash; the run did not finish otherwise.
  crashes=0
  if [ "$rc" -ne 0 ]; then
    crashes=1
    failed=1
  fi
  printf '%-12s %8s %12s %8s\n' "$t" "$took" "${execs:-?}" "$crashes"
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: $t failed (exit $rc); the end of $log:" >&2
    tail -n 40 "$log" >&2
  fi
done
exit "$failed"
