#!/usr/bin/env bash
# The hostile-input corpus on the emulated board: every case of the board's own program (and board-predict's, run as
# `python3 -m pneumonia_kit.board`) under qemu-loongarch64 (LSX only), with Debian loong64's Python 3.14, numpy,
# OpenCV 4.10 and pydicom: the runtime the board has, not this machine's. Not in CI (minutes of emulation).
#
#   scripts/loongarch_hostile.sh [PYTEST ARGS...]      e.g. -x, or HOSTILE_ONLY='bp_bombs|bp_clean' before it
#
# Needs the checked rootfs and QEMU of scripts/loongarch_emulate.sh --rootfs-only (made there, once). The corpus is
# made on this machine (it needs onnx); each case's command then runs in the emulator, its exit status, its one error
# line, its submission and its .failed.csv checked as tests/test_hostile.py checks them on x86. The cases of ONNX
# Runtime are left out (the board has none). Peak memory is QEMU's (the guest's plus the emulator's own). Then the
# board program stopped mid-batch by Ctrl-C, SIGTERM and SIGHUP, and given SIGHUP under nohup (it goes on).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${LOONGARCH_WORK:-$ROOT/outputs/loongarch}
QEMU=$W/qemu/usr/bin/qemu-loongarch64; ROOTFS=$W/rootfs
if [[ ! -x $QEMU || ! -f $ROOTFS/.complete ]]; then
  echo "loongarch_hostile: no emulated board in $W: run scripts/loongarch_emulate.sh --rootfs-only first" >&2; exit 2
fi
export HOSTILE_BOARD_PYTHON="env QEMU_CPU=${QEMU_CPU_MODEL:-la464,lasx=off} $QEMU -L $ROOTFS $ROOTFS/usr/bin/python3"
cd "$ROOT"
exec python3 -m pytest -q -rfs tests/test_hostile.py -k "test_case or (test_stop_leaves and board)" "$@"
