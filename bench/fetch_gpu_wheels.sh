#!/usr/bin/env bash
# Download the wheels of bench/gpu_wheels.txt (cp312, manylinux x86_64) into .whl/ for the GPU machine, build the
# sdist-only ones (pretrainedmodels) into wheels, drop wheels not in the list (two versions of one package stop the
# install there), check pip would install them for CPython 3.12 on manylinux, and print their size and what would
# travel with the repo (the device tool takes 64 MiB at most). Run it here (PyPI reachable), then call the device:
#   run(command='bash bench/gpu_acceptance.sh "$OUT"', carry=['.whl'], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
LIST=bench/gpu_wheels.txt
SDIST_ONLY="pretrainedmodels"
mkdir -p "$DEST"
PY=${PYTHON:-python3}
PLAT=""
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_31_x86_64 manylinux_2_34_x86_64; do PLAT="$PLAT --platform $p"; done
BIN=(); SRC=()
while read -r line; do
  line=${line%%#*}; line=$(echo "$line" | xargs); [ -z "$line" ] && continue
  name=${line%%==*}
  if [[ " $SDIST_ONLY " == *" $name "* ]]; then SRC+=("$line"); else BIN+=("$line"); fi
done < "$LIST"
echo "== downloading ${#BIN[@]} wheels"
$PY -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --abi abi3 --abi none $PLAT -d "$DEST" "${BIN[@]}"
for s in "${SRC[@]}"; do
  echo "== building $s (sdist only)"
  $PY -m pip wheel -q --disable-pip-version-check --no-deps -w "$DEST" "$s"
done
echo "== keeping only the listed wheels"
$PY - "$DEST" "$LIST" <<'PY'
import re, sys
from pathlib import Path
dest, lst = Path(sys.argv[1]), Path(sys.argv[2])
norm = lambda s: re.sub(r'[-_.]+', '-', s).lower()
want = {}
for line in lst.read_text().splitlines():
    line = line.split('#')[0].strip()
    if line: n, _, v = line.partition('=='); want[norm(n)] = v.strip()
have = {}
for f in sorted(dest.glob('*.whl')):
    name, ver = f.name.split('-')[:2]
    if want.get(norm(name)) != ver: print(f'   removed {f.name} (not in {lst})'); f.unlink()
    else: have[norm(name)] = f.name
missing = sorted(set(want) - set(have))
if missing: sys.exit(f'missing wheels: {", ".join(missing)}')
print(f'   {len(have)} wheels, one per listed package')
PY
echo "== would pip install them for CPython 3.12 on manylinux (dry run)?"
$PY -m pip install -q --disable-pip-version-check --dry-run --no-index --no-deps --ignore-installed --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none $PLAT --target /tmp/pk_wheel_check "$DEST"/*.whl
echo "   yes"
WHL=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
REPO=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | grep total$ | awk '{s+=$1} END {print s}')
$PY -c "w, r = $WHL, $REPO; print(f'== size: wheels {w/2**20:.1f} MiB + repo {r/2**20:.1f} MiB = {(w+r)/2**20:.1f} MiB of the 64 MiB the device tool carries')"
