#!/usr/bin/env bash
# A machine that already has its own torch (a Kaggle notebook, a cloud GPU image) keeps it: `pip install -e ".[dev]"`
# WITHOUT constraints.txt into a throwaway venv that already holds another torch release than constraints.txt's
# must leave torch and torchvision as they were, and the fast tests must pass on them. Not in CI (downloads a torch).
#
#   scripts/check_foreign_torch.sh [VENV]   # default: ${TMPDIR:-/tmp}/pneumonia_kit_foreign_torch (removed first)
#
# FOREIGN_TORCH (default "torch==2.9.1 torchvision==0.24.1", a pair that imports together: PyPI's torchvision does not
# load beside this machine's local torch 2.13.0+cpu wheel) picks the release; TESTS (default below) the pytest
# arguments: the notebooks that run torch (dataset, backbones, model, runs, train, predict, sweep, export, distill) and
# the CLI, board, bundle and layout tests. Exit status: 0 torch kept and tests pass, 1 torch changed, 2 a step failed.
#
# SUITE=gpu-path: the GPU path on the CPU, before a GPU loan, with the GPU machine's own pair (device/KINDS.md):
#   SUITE=gpu-path FOREIGN_TORCH="torch==2.11.0 torchvision==0.26.0" scripts/check_foreign_torch.sh
# runs the step, train, model, distill, predict and export notebooks, the no-sync step and compile tests (the slow
# compiled-vs-eager one included), the acceptance and lab dry runs, and tests/test_gpu.py on the CPU
# (PNEUMONIA_KIT_TEST_DEVICE=cpu). 2026-12-07, a 2-core x86 dev machine, torch 2.11.0+cu130 from PyPI (a 5.8 GB venv,
# made in about 2 min): 38 passed, none skipped, in 212 s of tests (at 7bcbda1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-${TMPDIR:-/tmp}/pneumonia_kit_foreign_torch}
FOREIGN_TORCH=${FOREIGN_TORCH:-"torch==2.9.1 torchvision==0.24.1"}
NBS=(16_dataset 17_backbones 18_model 19_runs 21_train 22_distill 24_predict 25_sweep 31_export)
nb_tests() { local s="${*/#/tests/test_notebooks.py::test_notebook[}"; echo "${s// /] }]"; }   # notebook names -> test ids
DEFAULT_TESTS="$(nb_tests "${NBS[@]}") tests/test_cli.py tests/test_board_torchfree.py"
DEFAULT_TESTS+=" tests/test_bundle.py tests/test_layout.py"
GPU_NBS=(20_step 21_train 18_model 22_distill 24_predict 31_export)
GPU_TESTS="$(nb_tests "${GPU_NBS[@]}") tests/test_train_step.py tests/test_gpu_acceptance.py tests/test_gpu_lab.py tests/test_gpu.py"
case ${SUITE:-default} in
    default) TESTS=${TESTS:-$DEFAULT_TESTS} ;;
    gpu-path) TESTS=${TESTS:-$GPU_TESTS}; export PNEUMONIA_KIT_TEST_DEVICE=cpu PNEUMONIA_KIT_SLOW=1 ;;
    *) echo "check_foreign_torch: SUITE must be default or gpu-path, not '$SUITE'" >&2; exit 2 ;;
esac
export PIP_DISABLE_PIP_VERSION_CHECK=1 MPLBACKEND=Agg PYTHONNOUSERSITE=1
unset PIP_CONSTRAINT PYTHONPATH VIRTUAL_ENV
die() { echo "check_foreign_torch: FAILED: $*" >&2; exit 2; }
versions() { "$VENV/bin/python" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)'; }

echo "== a throwaway venv with another torch: $VENV ($FOREIGN_TORCH)"
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV" || die "python3 -m venv"
t0=$SECONDS
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q $FOREIGN_TORCH || die "pip install $FOREIGN_TORCH"
BEFORE=$(versions) || die "the foreign torch does not import"
echo "   torch, torchvision before: $BEFORE ($((SECONDS - t0)) s)"

echo "== pip install -e \".[dev]\", no constraints.txt: pip resolves against the torch already there"
t0=$SECONDS
(cd "$ROOT" && "$VENV/bin/pip" install -q -e ".[dev]") || die "pip install -e .[dev]"
AFTER=$(versions) || die "torch no longer imports after the install"
echo "   torch, torchvision after:  $AFTER ($((SECONDS - t0)) s); the venv holds $(du -sh "$VENV" | cut -f1)"
if [[ $AFTER != "$BEFORE" ]]; then echo "check_foreign_torch: torch changed: $BEFORE -> $AFTER" >&2; exit 1; fi
echo "   unchanged"

echo "== fast tests on torch $AFTER: $TESTS"
cd "$ROOT"
export PATH="$VENV/bin:$PATH"
t0=$SECONDS
# shellcheck disable=SC2086
"$VENV/bin/python" -m pytest -q -p no:cacheprovider $TESTS || die "tests failed on torch $AFTER"
echo "== done in $((SECONDS - t0)) s: torch $AFTER kept by pip install -e .[dev], tests pass"
