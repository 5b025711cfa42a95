#!/usr/bin/env bash
# Run the torch-free board predictor on an emulated LSX-only LoongArch CPU (what the Loongson 2K1000LA has) and
# compare its detections with the same OpenCV DNN backend on this x86 machine.
#
#   scripts/loongarch_emulate.sh [--force] [--model-dir DIR | --checkpoint CKPT.pt] [--no-x86-cv410] [--rootfs-only]
#
# Steps (each cached under outputs/loongarch/, skipped when its output exists; --force redoes them all):
#   1. qemu     QEMU 10 user-mode `qemu-loongarch64` from Debian bookworm-backports (`qemu-user`, static binaries),
#               fetched with `apt-get download` through a private apt config and unpacked with dpkg-deb (no install).
#               Debian 12's own QEMU 7.2 cannot run loong64 userland (no LSX).
#   2. download the Debian sid loong64 closure of `python3-numpy python3-pydicom python3-opencv` (no Recommends),
#               resolved by apt with APT::Architecture=loong64 and an empty dpkg status, download-only (~280 MB).
#   3. rootfs   every .deb unpacked with `dpkg-deb --fsys-tarfile | tar -x` into a merged-/usr tree; no maintainer
#               scripts run, so the two that matter are redone by hand (BLAS/LAPACK alternatives links, ld.so.cache).
#               No debootstrap or binfmt_misc needed: QEMU is called directly with -L ROOTFS (only ldconfig
#               chroots, as root; without root the loader's built-in multiarch paths are enough).
#   4. smoke    the guest's HWCAP (LSX yes, LASX no under QEMU_CPU=la464,lasx=off; both with la464), and the
#               python3/numpy/OpenCV/pydicom versions and OpenCV's CPU feature line (`LSX *LASX?`).
#   5. inputs   (x86, needs torch) 2 synthetic 256 px test DICOMs and a board model folder: the `tiny` preset
#               (resnet_tiny, 128 px, random weights), or --model-dir (an exported folder), or --checkpoint (exported here);
#               then the one file that goes to the board: `pneumonia-kit bundle MODEL --out board.pyz`.
#   6. x86      the bundle as a user runs it (`python3 board.pyz IMAGES --threads 2`, OpenCV DNN by default), and the
#               raw network outputs (loongarch_compare.py importing the bundle's modules: PYTHONPATH=board.pyz), with
#               this machine's OpenCV and with OpenCV 4.10 (the board's version) from a private venv under
#               outputs/loongarch/x86-cv410 (skip: --no-x86-cv410).
#   7. loong64  the same, same files, inside the emulator (the bundle's --version check first); then stdout on /dev/full,
#               and a 300-image batch given SIGHUP under nohup (it goes on), then SIGTERM (exit 143, nothing left).
#   8. compare  same images, same box counts, boxes IoU > 0.99, scores within 1e-3 (the bundle's submissions and the
#               raw-output runs), raw network outputs within 1e-3.
# --rootfs-only stops after step 4 (what scripts/loongarch_meter.sh needs: the QEMU binary and the checked rootfs).
# Exit status: 0 all comparisons match, 1 a mismatch, 2 a step failed (the message names the step).
# Emulated timings say nothing about the board's speed.
set -Eeuo pipefail
unset PYTHONPATH   # the guest gets only what a step passes (the bundle)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${LOONGARCH_WORK:-$ROOT/outputs/loongarch}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${LOONGARCH_SUITE:-sid}
BPO_SUITE=${QEMU_SUITE:-bookworm-backports}
PKGS=(python3-numpy python3-pydicom python3-opencv libc-bin)   # libc-bin: ldconfig (every Debian system has it)
RECIPE=2   # bump when the rootfs recipe below changes: cached trees of an older recipe are rebuilt
X86_CV=${X86_CV_VERSION:-4.10.0.84}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
export QEMU_CPU_MODEL=${QEMU_CPU_MODEL:-la464,lasx=off}

FORCE=0; MODEL_DIR=; CHECKPOINT=; CV410=1; ROOTFS_ONLY=0
while (($#)); do
  case $1 in
    --force) FORCE=1 ;;
    --model-dir) MODEL_DIR=$(realpath "$2"); shift ;;
    --checkpoint) CHECKPOINT=$(realpath "$2"); shift ;;
    --no-x86-cv410) CV410=0 ;;
    --rootfs-only) ROOTFS_ONLY=1 ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac; shift
done

QEMU_DIR=$W/qemu; QEMU=$QEMU_DIR/usr/bin/qemu-loongarch64
APTDIR=$W/apt; ROOTFS=$W/rootfs; RUN=$W/run; PKG=$RUN/pkg
STEP=start; T_STEP=0
declare -A TIMES
now() { date +%s.%N; }
step() { STEP=$1; T_STEP=$(now); printf '\n== [%s] %s: %s\n' "$(date +%T)" "$1" "$2"; }
done_step() { TIMES[$STEP]=$(awk -v a="$T_STEP" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'); echo "   ($STEP: ${TIMES[$STEP]} s)"; }
die() { echo "loongarch_emulate: FAILED at step '$STEP': $*" >&2; exit 2; }
trap 'echo "loongarch_emulate: FAILED at step '"'"'$STEP'"'"' (a command exited $? on line $LINENO)" >&2; exit 2' ERR

# a private apt tree: its own sources, lists, cache and (empty) dpkg status; the host's apt state is never touched
apt_tree() { # DIR ARCH SOURCES_LINE
  local d=$1
  mkdir -p "$d"/etc/apt.conf.d "$d"/etc/preferences.d "$d"/etc/sources.list.d "$d"/lists/partial \
           "$d"/cache/archives/partial "$d"/dpkg
  [[ -f $d/dpkg/status ]] || : > "$d/dpkg/status"
  echo "$3" > "$d/etc/sources.list"
  { echo "Dir::Etc \"$d/etc/\"; Dir::State \"$d/\"; Dir::State::Lists \"$d/lists/\";"
    echo "Dir::State::status \"$d/dpkg/status\"; Dir::Cache \"$d/cache/\";"
    echo "APT::Architecture \"$2\"; APT::Architectures { \"$2\"; }; APT::Install-Recommends \"false\";"
    echo 'Acquire::Languages "none"; APT::Sandbox::User "root";'
    # mirrors that serve a frozen copy of the archive have an expired Valid-Until; signatures are still checked
    echo 'Acquire::Check-Valid-Until "false";'
    apt-config dump 2>/dev/null | grep -iE '^Acquire::(https?|ftp)::Proxy' || true
  } > "$d/apt.conf"
}
apt_in() { local d=$1; shift; APT_CONFIG=$d/apt.conf "$@"; }

# run a loong64 program under QEMU with a clean environment (nothing of the host's leaks in)
# (PYTHONPATH and TMPDIR pass through when set, e.g. as `PYTHONPATH=X guest_py ...`: host paths, as `-L` does not remap stat)
guest() { env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 ${PYTHONPATH:+PYTHONPATH=$PYTHONPATH} \
              ${TMPDIR:+TMPDIR=$TMPDIR} QEMU_CPU="$QEMU_CPU_MODEL" "$QEMU" -L "$ROOTFS" "$@"; }
guest_py() { guest "$ROOTFS/usr/bin/python3" "$@"; }

# ------------------------------------------------------------------------------------------------ 0. host
step host "checking this machine"
for t in apt-get apt-config dpkg-deb tar python3 awk realpath; do command -v $t >/dev/null || die "'$t' is not installed"; done
[[ -r $KEYRING ]] || die "$KEYRING missing: apt-get install debian-archive-keyring"
[[ $(uname -m) == x86_64 ]] || echo "   note: host is $(uname -m), not x86_64"
[[ $EUID == 0 ]] || echo "   note: not root; the cached rootfs keeps your ownership (fine for QEMU)"
if ((FORCE)); then echo "   --force: removing $QEMU_DIR $ROOTFS $APTDIR $W/x86-cv410"; rm -rf "$QEMU_DIR" "$ROOTFS" "$APTDIR" "$W/x86-cv410"; fi
mkdir -p "$W"
done_step

# ------------------------------------------------------------------------------------------------ 1. qemu
step qemu "QEMU 10 qemu-loongarch64 from Debian $BPO_SUITE"
if [[ -x $QEMU ]]; then echo "   cached: $QEMU"
else
  HA=$(dpkg --print-architecture)
  apt_tree "$W/apt-qemu" "$HA" "deb [arch=$HA signed-by=$KEYRING] $MIRROR $BPO_SUITE main"
  apt_in "$W/apt-qemu" apt-get -q update >/dev/null || die "apt-get update of $BPO_SUITE failed (no access to $MIRROR?)"
  mkdir -p "$W/debs-qemu"
  (cd "$W/debs-qemu" && rm -f qemu-user_*.deb && apt_in "$W/apt-qemu" apt-get -q download qemu-user) \
    || die "apt-get download qemu-user from $BPO_SUITE failed"
  deb=$(ls "$W"/debs-qemu/qemu-user_*.deb | head -1)
  rm -rf "$QEMU_DIR"; mkdir -p "$QEMU_DIR"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$QEMU_DIR" ./usr/bin/qemu-loongarch64 \
    || die "$deb has no usr/bin/qemu-loongarch64"
  rm -rf "$W/debs-qemu" "$W/apt-qemu"   # only the one binary is kept (~10 MB of a 63 MB package)
fi
QV=$("$QEMU" --version | head -1) || die "$QEMU does not run on this machine"
echo "   $QV"
[[ $QV =~ version\ ([0-9]+) ]] && ((BASH_REMATCH[1] >= 10)) || die "need QEMU >= 10 (has LSX and the la464 lasx=off switch), got: $QV"
done_step

# ------------------------------------------------------------------------------------------------ 2. download
step download "Debian $SUITE loong64 closure of ${PKGS[*]}"
ARCHIVES=$APTDIR/cache/archives
DL_KEY="$MIRROR $SUITE ${PKGS[*]}"
if [[ -f $APTDIR/.complete && $(cat "$APTDIR/.complete") == "$DL_KEY" ]]; then echo "   cached: $(ls "$ARCHIVES"/*.deb | wc -l) packages in $ARCHIVES"
else
  apt_tree "$APTDIR" loong64 "deb [arch=loong64 signed-by=$KEYRING] $MIRROR $SUITE main"
  apt_in "$APTDIR" apt-get -q update >/dev/null || die "apt-get update of $SUITE loong64 failed (no access to $MIRROR?)"
  apt_in "$APTDIR" apt-get -q -y --download-only install "${PKGS[@]}" > "$W/download.log" 2>&1 \
    || { tail -20 "$W/download.log" >&2; die "apt could not download the loong64 packages (log: $W/download.log)"; }
  apt_in "$APTDIR" apt-get -q autoclean >/dev/null   # drop .debs of older runs that the archive no longer has
  n=$(ls "$ARCHIVES"/*.deb 2>/dev/null | wc -l); ((n > 50)) || die "only $n packages downloaded; see $W/download.log"
  echo "$DL_KEY" > "$APTDIR/.complete"   # the rootfs key (the .deb list) says whether to unpack again
  echo "   $n packages, $(du -sh "$ARCHIVES" | cut -f1)"
fi
done_step

# ------------------------------------------------------------------------------------------------ 3. rootfs
step rootfs "unpacking into $ROOTFS"
FS_KEY="recipe $RECIPE: $(ls "$ARCHIVES"/*.deb | xargs -n1 basename | md5sum | cut -c1-16)"
if [[ -f $ROOTFS/.complete && $(cat "$ROOTFS/.complete") == "$FS_KEY" ]]; then echo "   cached: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1))"
else
  rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"/usr/{bin,sbin,lib,lib64} "$ROOTFS"/{etc,tmp,proc,dev}
  for d in bin sbin lib lib64; do ln -s usr/$d "$ROOTFS/$d"; done   # merged /usr, as Debian's base-files/usrmerge make it
  for deb in "$ARCHIVES"/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$ROOTFS" --keep-directory-symlink \
      --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' --exclude='./usr/share/locale/*' \
      || die "cannot unpack $deb"
  done
  # maintainer-script work that matters here: update-alternatives for the reference BLAS/LAPACK (numpy, OpenCV link them)
  TRIPLET=$(basename "$(dirname "$(ls "$ROOTFS"/usr/lib/*/libc.so.6 | head -1)")")   # loongarch64-linux-gnu
  for lib in blas/libblas.so.3 lapack/liblapack.so.3; do
    f=$ROOTFS/usr/lib/$TRIPLET/$lib
    if [[ -e $f ]]; then ln -sfn "$lib" "$ROOTFS/usr/lib/$TRIPLET/$(basename "$lib")"; fi
  done
  # the dynamic loader's cache (ldconfig chroots into the tree itself; without root the loader's default paths are used)
  if [[ $EUID == 0 ]]; then guest "$ROOTFS/usr/sbin/ldconfig" -r "$ROOTFS" || echo "   note: ldconfig failed; relying on the loader's default paths"; fi
  echo "$FS_KEY" > "$ROOTFS/.complete"
  echo "   $(du -sh "$ROOTFS" | cut -f1)"
fi
done_step

# ------------------------------------------------------------------------------------------------ 4. smoke
step smoke "python3, numpy, OpenCV, pydicom under QEMU_CPU=$QEMU_CPU_MODEL"
# the CPU's HWCAP bits as the guest kernel (QEMU) reports them: bit 4 LSX, bit 5 LASX
HWCAP='import struct; h = dict(struct.iter_unpack("<QQ", open("/proc/self/auxv", "rb").read())).get(16, 0); print("hwcap", hex(h), "LSX", bool(h >> 4 & 1), "LASX", bool(h >> 5 & 1))'
echo "   QEMU_CPU=la464 (LASX on): $(QEMU_CPU_MODEL=la464 guest_py -S -c "$HWCAP")" | tee "$W/smoke.txt"
echo "   QEMU_CPU=$QEMU_CPU_MODEL: $(guest_py -S -c "$HWCAP")" | tee -a "$W/smoke.txt"
grep -q "$QEMU_CPU_MODEL: hwcap .* LSX True LASX False" "$W/smoke.txt" || die "the emulated CPU is not LSX-only (see the hwcap lines)"
SMOKE='import platform, numpy, cv2, pydicom; print("guest", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__, "opencv", cv2.__version__, "pydicom", pydicom.__version__); print("opencv CPU features (* dispatched, ? not available):", cv2.getCPUFeaturesLine())'
guest_py -c "$SMOKE" 2>&1 | sed 's/^/   /' | tee -a "$W/smoke.txt" || die "python3 with numpy/cv2/pydicom does not start under QEMU (see above)"
grep -q 'LASX?' "$W/smoke.txt" || echo "   WARNING: OpenCV does not report LASX as unavailable"
done_step
if ((ROOTFS_ONLY)); then echo; echo "rootfs ready: $ROOTFS (--rootfs-only: steps 5-8 skipped)"; exit 0; fi

# ------------------------------------------------------------------------------------------------ 5. inputs
step inputs "x86: 2 synthetic DICOMs and a board model folder"
rm -rf "$RUN"; mkdir -p "$PKG" "$RUN/tmp"
PREP=()
if [[ -n $MODEL_DIR ]]; then PREP+=(--model-dir "$MODEL_DIR"); fi
if [[ -n $CHECKPOINT ]]; then PREP+=(--checkpoint "$CHECKPOINT"); fi
python3 "$ROOT/scripts/loongarch_compare.py" prepare "$RUN/inputs" "${PREP[@]}" || die "could not make the test inputs (needs the full package with torch)"
# what goes to the board: one file, the bundle (the torch-free modules and the model folder, checked by SHA-256)
BUNDLE=$RUN/board.pyz
(cd "$ROOT" && python3 -c 'import sys; from pneumonia_kit.cli import main; sys.exit(main())' bundle "$RUN/inputs/model" \
  --out "$BUNDLE") || die "pneumonia-kit bundle failed"
cp "$ROOT/scripts/loongarch_compare.py" "$PKG/"   # the raw-output runner: imports pneumonia_kit from the bundle
IMAGES=("$RUN"/inputs/images/*.dcm)
done_step

# the bundle as a user runs it, then the raw network outputs with the bundle's modules: PY... WHERE
both_runs() { # WHERE PYTHON...
  local where=$1; shift
  mkdir -p "$RUN/$where-bundle"
  TMPDIR=$RUN/tmp "$@" "$BUNDLE" "${IMAGES[@]}" --threads 2 --out "$RUN/$where-bundle/submission.csv" \
    --json-dir "$RUN/$where-bundle/json" > "$RUN/$where-bundle.log" 2>&1 \
    || { cat "$RUN/$where-bundle.log" >&2; die "the bundle failed ($where)"; }
  tail -1 "$RUN/$where-bundle.log" | cut -c1-300
  printf '{"image_sha256_16": {}, "runtime": "bundle"}\n' > "$RUN/$where-bundle/info.json"   # what `compare` reads
  PYTHONPATH=$BUNDLE TMPDIR=$RUN/tmp "$@" "$PKG/loongarch_compare.py" run "$RUN/inputs/model" "$RUN/$where" "${IMAGES[@]}" \
    --backend opencv --threads 2 > "$RUN/$where.log" 2>&1 || { cat "$RUN/$where.log" >&2; die "board predictor failed ($where)"; }
  grep -q "$BUNDLE/pneumonia_kit/board.py" "$RUN/$where/info.json" || die "$where: pneumonia_kit was not imported from the bundle"
  tail -1 "$RUN/$where.log" | cut -c1-300
}

# ------------------------------------------------------------------------------------------------ 6. x86
step x86 "the bundle on x86, OpenCV DNN backend"
python3 "$BUNDLE" --version || die "the bundle's --version check failed on x86"
both_runs x86 python3
if ((CV410)); then
  VENV=$W/x86-cv410
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c "import cv2; assert cv2.__version__ == '${X86_CV%.*}'" 2>/dev/null; then
    rm -rf "$VENV"
    { python3 -m venv "$VENV" && "$VENV/bin/pip" -q install "opencv-python-headless==$X86_CV" numpy pydicom; } > "$W/venv.log" 2>&1 \
      || { echo "   WARNING: could not build the OpenCV $X86_CV venv (log: $W/venv.log); comparing with the installed OpenCV only"; rm -rf "$VENV"; CV410=0; }
  fi
  if ((CV410)); then both_runs x86-cv410 "$VENV/bin/python"; fi
fi
done_step

# ------------------------------------------------------------------------------------------------ 7. loong64
step loong64 "the bundle under qemu-loongarch64 ($QEMU_CPU_MODEL)"
guest_py "$BUNDLE" --version || die "the bundle's --version check failed in the emulator"
both_runs loong64 guest_py
# stdout that cannot be written (a full disk): the board's Python 3.14 must end with our one line, exit 2, not its own
# 'Exception ignored while flushing sys.stdout' and exit 120 (the help text, then a whole prediction's summary)
for what in help predict; do
  args=(--help); [[ $what == help ]] || args=("${IMAGES[@]}" --threads 2 --out "$RUN/full-stdout/submission.csv")
  mkdir -p "$RUN/full-stdout"; rc=0
  TMPDIR=$RUN/tmp guest_py "$BUNDLE" "${args[@]}" > /dev/full 2> "$RUN/full-stdout/$what.err" || rc=$?
  tr '\r' '\n' < "$RUN/full-stdout/$what.err" | grep -v -E '^([0-9]+/[0-9]+)?$' > "$RUN/full-stdout/$what.lines" || true  # not progress
  [[ $rc == 2 && $(wc -l < "$RUN/full-stdout/$what.lines") == 1 ]] && grep -q 'error: stdout: cannot write to it' "$RUN/full-stdout/$what.lines" \
    || { cat "$RUN/full-stdout/$what.err" >&2; die "$what with stdout on /dev/full: exit $rc, not one line and exit 2"; }
  echo "   $what > /dev/full: exit 2, $(cat "$RUN/full-stdout/$what.lines")"
done
# stop signals on the board's Python: SIGHUP ignored, as `nohup` starts a batch over SSH (it must go on), then SIGTERM
# (systemd, kill): one line, exit 143, no submission, the bundle's model folder gone
STOP=$RUN/stop; rm -rf "$STOP"; mkdir -p "$STOP/many" "$STOP/tmp"
for i in $(seq -w 1 300); do ln -s "$(realpath "${IMAGES[0]}")" "$STOP/many/s$i.dcm"; done
counted() { local n; n=$(tr '\r' '\n' < "$STOP/err" | grep -E '^[0-9]+/300$' | tail -1 | cut -d/ -f1 || true); echo "${n:-0}"; }
( trap - ERR; trap '' HUP; set +e; TMPDIR=$STOP/tmp guest_py "$BUNDLE" "$STOP/many" --threads 1 --out "$STOP/submission.csv" > /dev/null 2> "$STOP/err" ) &
batch=$!; qp=
for _ in $(seq 600); do qp=$(pgrep -f "qemu-loongarch64.*$STOP/submission.csv" | head -1 || true); [[ -n $qp && $(counted) -gt 0 ]] && break; sleep 0.2; done
[[ -n $qp && $(counted) -gt 0 ]] || die "the 300-image batch was not seen running"
kill -HUP "$qp"; n=$(counted)
for _ in $(seq 300); do (( $(counted) >= n + 3 )) && break; sleep 0.2; done
(( $(counted) >= n + 3 )) || die "SIGHUP stopped a batch started with SIGHUP ignored (nohup)"
kill -TERM "$qp"; rc=0; wait "$batch" || rc=$?
lines=$(tr '\r' '\n' < "$STOP/err" | grep -v -E '^([0-9]+/[0-9]+)?$' || true)
[[ $rc == 143 && $(wc -l <<< "$lines") == 1 && $lines == *'interrupted by SIGTERM' && ! -e $STOP/submission.csv && -z $(ls -A "$STOP/tmp") ]] \
  || { cat "$STOP/err" >&2; ls -A "$STOP" "$STOP/tmp" >&2; die "SIGTERM: exit $rc, not one line, exit 143, nothing written and the model folder gone"; }
echo "   SIGHUP under nohup: the batch went on ($n -> $(counted) images); then SIGTERM: exit 143, $lines"
done_step

# ------------------------------------------------------------------------------------------------ 8. compare
step compare "emulated loong64 vs x86 (boxes IoU > 0.99, scores within 1e-3)"
RC=0
for ref in x86 x86-cv410; do
  [[ $ref == x86 ]] || ((CV410)) || continue
  for kind in "" -bundle; do
    echo "-- $ref$kind vs loong64$kind ($([[ $ref == x86 ]] && echo "the installed OpenCV" || echo "OpenCV $X86_CV, the board's version")):"
    mkdir -p "$RUN/cmp-$ref$kind" && cp -r "$RUN/loong64$kind/." "$RUN/cmp-$ref$kind/"
    python3 "$ROOT/scripts/loongarch_compare.py" compare "$RUN/$ref$kind" "$RUN/cmp-$ref$kind" || RC=1
  done
done
done_step

TIMES_JSON=$(for k in "${!TIMES[@]}"; do printf '"%s": %s\n' "$k" "${TIMES[$k]}"; done | paste -sd, -)
python3 - "$W/summary.json" "$RC" "$QV" "$W/smoke.txt" "{$TIMES_JSON}" "$RUN" <<'EOF'
import json, sys
from pathlib import Path
out, rc, qv, smoke, times, run = sys.argv[1:]
run = Path(run)
info = lambda d: json.loads((run/d/'info.json').read_text()) if (run/d/'info.json').is_file() else None
cmp = lambda d: json.loads((run/d/'compare.json').read_text()) if (run/d/'compare.json').is_file() else None
s = dict(ok=rc == '0', qemu=qv, smoke=Path(smoke).read_text().strip().splitlines(), step_seconds=json.loads(times),
         loong64=info('loong64'), x86=info('x86'), x86_cv410=info('x86-cv410'),
         compare_x86=cmp('cmp-x86'), compare_x86_cv410=cmp('cmp-x86-cv410'),
         compare_x86_bundle=cmp('cmp-x86-bundle'), compare_x86_cv410_bundle=cmp('cmp-x86-cv410-bundle'))
Path(out).write_text(json.dumps(s, indent=2, default=str))
EOF
echo
echo "summary: $W/summary.json; step seconds: {$TIMES_JSON}"
if ((RC)); then echo "RESULT: MISMATCH between the emulated LoongArch run and x86 (details above)"; else echo "RESULT: the emulated LoongArch run matches x86"; fi
exit $RC
