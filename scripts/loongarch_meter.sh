#!/usr/bin/env bash
# Build what scripts/board_meter.py needs to count the LoongArch instructions of one forward pass:
#
#   scripts/loongarch_meter.sh build [--force]   # build (each step cached under outputs/loongarch/, skipped when done)
#   scripts/loongarch_meter.sh check             # say what is there, build nothing (exit 0 ready, 2 not ready)
#
# Steps of `build`:
#   1. rootfs   the Debian sid loong64 rootfs with python3-numpy/pydicom/opencv: `loongarch_emulate.sh --rootfs-only`
#               (cached there; it also fetches Debian's static qemu-user, which cannot load TCG plugins).
#   2. source   Debian's QEMU 10 source tarball (qemu_10.*+ds.orig.tar.xz) from bookworm-backports via a deb-src line in
#               a private apt tree (`apt-get source --download-only qemu`; only the .orig tarball is needed).
#   3. deps     host build dependencies: `apt-get install libglib2.0-dev flex bison ninja-build` (skipped when all are
#               installed) and a private venv with meson + pycotap (the +ds tarball strips QEMU's bundled wheels).
#   4. qemu     configure --target-list=loongarch64-linux-user --enable-plugins ... and
#               `ninja qemu-loongarch64 tests/tcg/plugins/libinsn.so`; both copied to outputs/loongarch/meter-qemu/.
#   5. check    `total insns: N` from the insn plugin on a guest program (python3 -S -c pass), LSX-only CPU.
#   5b. pyc     compile the guest's .pyc files of what the meter imports (numpy, cv2, json, ...) once: the rootfs was
#               unpacked without maintainer scripts, so without this every run compiles them again (+2.4 G instructions
#               of baseline and ~1.5 minutes of emulation per run; the forward's count is the same either way).
#   6. x86      a venv with opencv-python-headless==4.10.0.84 + numpy (the board's OpenCV version) for the x86
#               second opinion, at outputs/loongarch/x86-cv410 (the same venv loongarch_emulate.sh uses).
# Every failure is one line `loongarch_meter: FAILED at step 'STEP': ...` and exit 2. Logs: outputs/loongarch/meter-build/.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${LOONGARCH_WORK:-$ROOT/outputs/loongarch}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BPO_SUITE=${QEMU_SUITE:-bookworm-backports}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
X86_CV=${X86_CV_VERSION:-4.10.0.84}
B=$W/meter-build          # source tarball, build tree, logs
OUTQ=$W/meter-qemu        # the two products: qemu-loongarch64, libinsn.so (+ VERSION)
ROOTFS=$W/rootfs
VENV=$W/x86-cv410
HOST_DEPS=(libglib2.0-dev flex bison ninja-build pkg-config gcc make python3-venv)

CMD=${1:-}; shift || true
FORCE=0
while (($#)); do case $1 in --force) FORCE=1 ;; *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;; esac; shift; done
case $CMD in
  build|check) ;;
  -h|--help|'') sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; [[ -n $CMD ]]; exit $? ;;
  *) echo "unknown command: $CMD (build or check)" >&2; exit 2 ;;
esac

STEP=start; T_STEP=0
now() { date +%s.%N; }
step() { STEP=$1; T_STEP=$(now); printf '\n== [%s] %s: %s\n' "$(date +%T)" "$1" "$2"; }
done_step() { echo "   ($STEP: $(awk -v a="$T_STEP" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') s)"; }
die() { echo "loongarch_meter: FAILED at step '$STEP': $*" >&2; exit 2; }
trap 'echo "loongarch_meter: FAILED at step '"'"'$STEP'"'"' (a command exited $? on line $LINENO)" >&2; exit 2' ERR

if [[ $CMD == check ]]; then
  ok=1
  for f in "$OUTQ/qemu-loongarch64" "$OUTQ/libinsn.so" "$ROOTFS/.complete" "$ROOTFS/usr/bin/python3" "$VENV/bin/python"; do
    if [[ -e $f ]]; then echo "   ok       $f"; else echo "   missing  $f"; ok=0; fi
  done
  [[ -f $OUTQ/VERSION ]] && echo "   $(cat "$OUTQ/VERSION")"
  ((ok)) && { echo "ready"; exit 0; }
  echo "not ready: run scripts/loongarch_meter.sh build"; exit 2
fi

mkdir -p "$W" "$B"
if ((FORCE)); then echo "--force: removing $B $OUTQ"; rm -rf "$B" "$OUTQ"; mkdir -p "$B"; fi

# ------------------------------------------------------------------------------------------------ 1. rootfs
step rootfs "Debian sid loong64 rootfs (scripts/loongarch_emulate.sh --rootfs-only)"
if [[ -f $ROOTFS/.complete && -x $ROOTFS/usr/bin/python3 && -f $W/smoke.txt ]] && grep -q 'LSX \*LASX?' "$W/smoke.txt"; then
  echo "   cached: $ROOTFS ($(head -c 60 "$ROOTFS/.complete"))"
else
  "$ROOT/scripts/loongarch_emulate.sh" --rootfs-only > "$B/rootfs.log" 2>&1 \
    || die "loongarch_emulate.sh --rootfs-only failed: $(grep -m1 FAILED "$B/rootfs.log" || tail -1 "$B/rootfs.log") (log: $B/rootfs.log)"
  grep -E '^   (guest|opencv CPU)' "$B/rootfs.log" || true
fi
done_step

# ------------------------------------------------------------------------------------------------ 2. source
step source "Debian's QEMU source tarball from $BPO_SUITE (deb-src)"
TARBALL=$(ls "$B"/src/qemu_1[0-9].*.orig.tar.xz 2>/dev/null | sort -V | tail -1 || true)
if [[ -n $TARBALL ]]; then echo "   cached: $TARBALL"
else
  for t in apt-get apt-config tar xz; do command -v $t >/dev/null || die "'$t' is not installed"; done
  [[ -r $KEYRING ]] || die "$KEYRING missing: apt-get install debian-archive-keyring"
  A=$B/apt-src
  mkdir -p "$A"/etc/apt.conf.d "$A"/etc/preferences.d "$A"/etc/sources.list.d "$A"/lists/partial "$A"/cache/archives/partial "$A"/dpkg
  : > "$A/dpkg/status"
  echo "deb-src [signed-by=$KEYRING] $MIRROR $BPO_SUITE main" > "$A/etc/sources.list"
  { echo "Dir::Etc \"$A/etc/\"; Dir::State \"$A/\"; Dir::State::Lists \"$A/lists/\";"
    echo "Dir::State::status \"$A/dpkg/status\"; Dir::Cache \"$A/cache/\";"
    echo 'Acquire::Languages "none"; APT::Sandbox::User "root"; Acquire::Check-Valid-Until "false";'
    apt-config dump 2>/dev/null | grep -iE '^Acquire::(https?|ftp)::Proxy' || true
  } > "$A/apt.conf"
  APT_CONFIG=$A/apt.conf apt-get -q update > "$B/source.log" 2>&1 \
    || die "apt-get update of the deb-src $BPO_SUITE line failed (log: $B/source.log)"
  mkdir -p "$B/src"
  # the .dsc / .debian.tar.xz may answer 404 on some mirrors; only the .orig tarball matters, so judge by the file
  (cd "$B/src" && APT_CONFIG=$A/apt.conf apt-get -q source --download-only qemu) >> "$B/source.log" 2>&1 || true
  TARBALL=$(ls "$B"/src/qemu_1[0-9].*.orig.tar.xz 2>/dev/null | sort -V | tail -1 || true)
  [[ -n $TARBALL ]] || die "apt-get source --download-only qemu gave no qemu_1x.*.orig.tar.xz (log: $B/source.log)"
  xz -t "$TARBALL" || { rm -f "$TARBALL"; die "$TARBALL is corrupt (removed; run again)"; }
  echo "   $(basename "$TARBALL") $(du -h "$TARBALL" | cut -f1)"
fi
QVER=$(basename "$TARBALL" | sed -E 's/^qemu_([0-9.]+).*/\1/')
done_step

# ------------------------------------------------------------------------------------------------ 3. deps
step deps "host build dependencies (apt: ${HOST_DEPS[*]}; venv: meson pycotap)"
missing=()
for p in "${HOST_DEPS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "   installing: ${missing[*]}"
  [[ $EUID == 0 ]] || die "need root to apt-get install ${missing[*]} (or install them yourself)"
  { apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends "${missing[@]}"; } > "$B/deps.log" 2>&1 \
    || die "apt-get install ${missing[*]} failed (log: $B/deps.log)"
else echo "   apt packages: all installed"; fi
BV=$B/venv
if [[ -x $BV/bin/meson ]] && "$BV/bin/python" -c 'import pycotap' 2>/dev/null; then echo "   cached: $BV ($("$BV/bin/meson" --version))"
else
  rm -rf "$BV"
  { /usr/bin/python3 -m venv "$BV" && "$BV/bin/pip" -q install meson pycotap; } >> "$B/deps.log" 2>&1 \
    || die "could not make the build venv with meson + pycotap (log: $B/deps.log)"
  echo "   $BV: meson $("$BV/bin/meson" --version)"
fi
done_step

# ------------------------------------------------------------------------------------------------ 4. qemu
step qemu "qemu-loongarch64 $QVER with TCG plugins + tests/tcg/plugins/libinsn.so"
KEY="qemu $QVER from $(basename "$TARBALL"), plugins, linux-user loongarch64"
if [[ -x $OUTQ/qemu-loongarch64 && -f $OUTQ/libinsn.so && -f $OUTQ/VERSION && $(head -1 "$OUTQ/VERSION") == "$KEY" ]]; then
  echo "   cached: $OUTQ"
else
  SRC=$B/qemu-$QVER
  if [[ ! -f $SRC/configure ]]; then
    rm -rf "$SRC" "$B/unpack"; mkdir -p "$B/unpack"
    tar -xJf "$TARBALL" -C "$B/unpack" || die "cannot unpack $TARBALL"
    mv "$B/unpack"/* "$SRC" && rmdir "$B/unpack"
  fi
  [[ -f $SRC/configure ]] || die "$SRC has no configure script"
  mkdir -p "$SRC/build"
  if [[ ! -f $SRC/build/build.ninja ]]; then
    # configure's own venv (build/pyvenv) sees the packages of the venv whose python runs it: meson, pycotap
    (cd "$SRC/build" && PATH=$BV/bin:$PATH ../configure --python="$BV/bin/python3" \
        --target-list=loongarch64-linux-user --enable-plugins --disable-docs --disable-tools \
        --disable-system --disable-install-blobs) > "$B/configure.log" 2>&1 \
      || { rm -f "$SRC/build/build.ninja"; die "configure failed: $(grep -m1 -iE 'error|not found' "$B/configure.log" || tail -1 "$B/configure.log") (log: $B/configure.log)"; }
  fi
  (cd "$SRC/build" && PATH=$BV/bin:$PATH ninja -j"$(nproc)" qemu-loongarch64 tests/tcg/plugins/libinsn.so) > "$B/ninja.log" 2>&1 \
    || die "ninja failed: $(grep -m1 -E 'error|FAILED' "$B/ninja.log" || tail -1 "$B/ninja.log") (log: $B/ninja.log)"
  mkdir -p "$OUTQ"
  cp "$SRC/build/qemu-loongarch64" "$SRC/build/tests/tcg/plugins/libinsn.so" "$OUTQ/"
  { echo "$KEY"; "$OUTQ/qemu-loongarch64" --version | head -1; } > "$OUTQ/VERSION"
fi
"$OUTQ/qemu-loongarch64" --version | head -1 | sed 's/^/   /' || die "$OUTQ/qemu-loongarch64 does not run"
done_step

# ------------------------------------------------------------------------------------------------ 5. check
step check "insn plugin on the LSX-only CPU (la464,lasx=off)"
out=$(env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 QEMU_CPU=la464,lasx=off \
      "$OUTQ/qemu-loongarch64" -L "$ROOTFS" -plugin "$OUTQ/libinsn.so",inline=on -d plugin \
      "$ROOTFS/usr/bin/python3" -S -c pass 2>&1) || die "the emulator with the insn plugin failed: $(echo "$out" | tail -1)"
n=$(echo "$out" | sed -nE 's/^total insns: ([0-9]+)$/\1/p' | tail -1)
[[ -n $n ]] || die "the insn plugin printed no 'total insns: N' line (got: $(echo "$out" | tail -1))"
echo "   python3 -S -c pass: $n LoongArch instructions"
done_step

step pyc "the guest's .pyc files for numpy + cv2 (once)"
if [[ -f $ROOTFS/.meter-pyc && $(cat "$ROOTFS/.meter-pyc") == "$(cat "$ROOTFS/.complete")" ]]; then echo "   cached"
else
  env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 QEMU_CPU=la464,lasx=off "$OUTQ/qemu-loongarch64" -L "$ROOTFS" \
      "$ROOTFS/usr/bin/python3" -c 'import json, os, sys, numpy, cv2; numpy.random.default_rng(0); print("   numpy", numpy.__version__, "opencv", cv2.__version__)' \
    || die "python3 with numpy + cv2 does not start in the emulator"
  cp "$ROOTFS/.complete" "$ROOTFS/.meter-pyc"
fi
done_step

# ------------------------------------------------------------------------------------------------ 6. x86
step x86 "x86 venv with opencv-python-headless==$X86_CV (the board's OpenCV version)"
if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c "import cv2, numpy; assert cv2.__version__ == '${X86_CV%.*}'" 2>/dev/null; then
  echo "   cached: $VENV"
else
  rm -rf "$VENV"
  { /usr/bin/python3 -m venv "$VENV" && "$VENV/bin/pip" -q install "opencv-python-headless==$X86_CV" numpy pydicom; } > "$B/venv.log" 2>&1 \
    || { rm -rf "$VENV"; die "could not build the OpenCV $X86_CV venv (log: $B/venv.log)"; }
fi
echo "   $("$VENV/bin/python" -c 'import cv2, numpy, sys; print("python", sys.version.split()[0], "opencv", cv2.__version__, "numpy", numpy.__version__)')"
done_step

echo
echo "meter ready: $OUTQ/qemu-loongarch64 + libinsn.so, rootfs $ROOTFS, x86 venv $VENV"
