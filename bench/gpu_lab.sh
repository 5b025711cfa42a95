#!/usr/bin/env bash
# The board lab (issue 24) on the lent GPU machine (one H100 or H200), one call, <= 8 minutes: the original network and
# the board model (labels, distilled, 384 px, 384 px with 2 convs per subnet: the moonshot's candidate) trained the same
# way on a 2,000 + 1,000-image default-difficulty twin, tested (board models by the board predictor, OpenCV DNN, through
# `pneumonia-kit board-pareto`), paired against the original.
#
# 1. Here, once per checkout: bash bench/fetch_gpu_wheels.sh   (-> .whl/, the wheels the GPU machine lacks)
# 2. Run it after the GPU acceptance, in the same loan when enough time is left (the acceptance's install in /tmp/site
#    is reused when there; else bench/gpu_acceptance.py's install part runs first, ~30 s):
#      run(command='bash bench/gpu_lab.sh "$OUT"', carry=['.whl'], timeout_s=540)
#    Back in $OUT: lab.md (read it first), lab.json, lab.log, pareto.md, pareto.json; the work (twin, runs, exports)
#    stays in /tmp/pk_gpu_lab on the machine (--work). Each training stops at an epoch's end within its share of the
#    budget, 200 s are kept for test and pareto, and a further grid learning rate runs only when it fits.
#    Exit status 0: every stage ran; 1: a stage failed or the budget ran out (lab.md says which); 2: bad usage or input.
#
# CPU dry run (CI runs it: tests/test_gpu_lab.py): bash bench/gpu_lab.sh OUT_DIR --dry-run   (tiny, 67 s on 2 cores)
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bash bench/gpu_lab.sh OUT_DIR [--dry-run] [--work DIR] [--data TWIN] [--budget-s S] [--epochs N] [--meter-dir DIR] [--site DIR]" >&2; exit 2
fi
exec "${PYTHON:-python3}" bench/gpu_lab.py "$@"
