#!/usr/bin/env bash
# `make test`: install what is missing, run every notebook (teacher and student editions in one pass,
# tools/test_notebooks.py), then the pytest suite, each stage on every core; the time of each stage at the end.
# One cache of recomputable files (real-data statistics) is made fresh for the run and shared by every notebook and
# pytest worker: computed once, not once per process.
set -uo pipefail
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
BIN=${BIN:-.venv/bin}
NPROC=${NPROC:-$(nproc 2>/dev/null || echo 2)}
declare -a TIMES=()
t_all=$(date +%s)
status=0

stage() {   # stage NAME COMMAND...: run it, time it, remember a failure and go on to the timings
  local name=$1; shift
  echo; echo "=== $name"
  local t0 rc; t0=$(date +%s)
  "$@"; rc=$?
  TIMES+=("$(printf '%-34s %5ss%s' "$name" $(( $(date +%s) - t0 )) "$([ $rc -eq 0 ] || echo '  FAILED')")")
  [ $rc -eq 0 ] || status=$rc
  return $rc
}

# compiled modules are kept (the venv's, once, on first import): with PYTHONDONTWRITEBYTECODE set, as on some machines,
# each of the suite's some 60 processes would compile what it imports again (torch: 8 s instead of 3)
unset PYTHONDONTWRITEBYTECODE
export MPLBACKEND=${MPLBACKEND:-Agg}          # figures are drawn, not rendered to PNG (`make execute` keeps the notebooks' own)
export OPENGEN_CACHE="$PWD/_build/test-cache"
rm -rf "$OPENGEN_CACHE"; mkdir -p "$OPENGEN_CACHE"
export OPENGEN_TEST_CACHE="$OPENGEN_CACHE"     # tests/conftest.py: the workers share it instead of one cache each

stage "install (make install)" "$MAKE" --no-print-directory install || exit $?
stage "notebooks (teacher + student)" env OMP_NUM_THREADS=1 "$BIN/python" tools/test_notebooks.py --workers "$NPROC"
# one pytest worker more than cores: a worker waiting for a browser, a server or a subprocess leaves its core to the
# others (tests/budget.py scales the per-test limits by workers / cores)
stage "pytest" "$BIN/pytest" -q -n "$(( NPROC + 1 ))" --dist loadgroup --durations=30 tests

echo; echo "=== make test: stage timings"
printf '%s\n' "${TIMES[@]}"
printf '%-34s %5ss\n' "total" $(( $(date +%s) - t_all ))
exit $status
