#!/usr/bin/env python3
"""Board cost meter: LoongArch instructions of one forward pass of a board model, counted on an emulated LSX-only CPU.

    python3 scripts/board_meter.py MODEL [MODEL ...] [--size S] [--reference G_OR_MODEL] [--json OUT]
                                   [--ipc 0.8] [--threads 2] [--efficiency 0.8] [--ghz 1.0]
                                   [--no-x86] [--remeasure-x86] [--force] [--forwards N] [--method fork|two-process]
                                   [--opencv-int8 CALIB.npy]

MODEL is a board model folder (`model.onnx` + `board.json` with `input_size`) or a bare `.onnx` file with `--size`.
Needs what `scripts/loongarch_meter.sh build` makes under outputs/loongarch/: a QEMU 10 `qemu-loongarch64` built with
TCG plugins plus its `libinsn.so`, the Debian sid loong64 rootfs (python3, numpy, OpenCV 4.10) and, for the x86
second opinion, a venv with opencv-python-headless 4.10.

What is counted: the board's own software (Debian loong64 python3 + numpy + OpenCV 4.10 DNN) runs under
`QEMU_CPU=la464,lasx=off` (128-bit LSX, no LASX: what the Loongson 2K1000LA's LA264 cores have) with the `insn` plugin
(`inline=on`, `-d plugin` prints `total insns: N` when a process exits). The guest imports numpy and cv2, sets
`cv2.setNumThreads(1)` (idle worker threads spin and would be counted), reads the model with `readNetFromONNX`,
sets a fixed input and then, for each forward pass, forks a child that exits at once: the child's count is everything
before that forward (python + numpy + cv2 + readNetFromONNX + setInput), so the difference between consecutive children
is one forward (the first one includes OpenCV's one-time network set-up, as on the board's first image).
`--method two-process` instead runs the same script twice, with and without the forward, and subtracts (the plain
recipe; twice the emulation time). PYTHONDONTWRITEBYTECODE=1 and PYTHONHASHSEED=0 make the counts repeatable.

`--opencv-int8 CALIB.npy` counts OpenCV's own int8 form instead: the guest reads the fp32 model, calls
`net.quantize([calib], CV_32F, CV_32F)` (OpenCV DNN's in-memory int8 net, per-channel, calibrated by one forward of CALIB,
a float32 array shaped like the input) and forwards the quantized net. Reading and quantizing count as the model's load
(the quantize step alone is reported too); the counted forwards are the quantized net's only. These counts are cached
in cache_opencv_int8.json beside cache.json (the model file is the fp32 one), keyed also by the calibration file's
sha256.

Results are cached in outputs/loongarch/meter/cache.json by the model file's sha256, input size, the guest's OpenCV
version, the emulated CPU and the method; the original configuration's forward takes about 20 minutes emulated.
Only one emulation runs at a time (a lock file), whoever starts it.

Board estimate = instructions / (clock x IPC x threads x parallel efficiency); every assumption is printed. Defaults:
1.0 GHz and 2 threads (the 2K1000LA), IPC 0.8, parallel efficiency 0.8 (see `ASSUMPTIONS`).
Host side: standard library only (numpy is not even needed here; the x86 second opinion runs in the OpenCV 4.10 venv).
Exit status: 0 done, 2 bad input or a missing emulator (one line on stderr), 1 an emulation or measurement failed.
"""
from __future__ import annotations
import argparse, contextlib, hashlib, json, os, re, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get('LOONGARCH_WORK', REPO/'outputs'/'loongarch'))
QEMU_CPU = os.environ.get('QEMU_CPU_MODEL', 'la464,lasx=off')
METER_VERSION = 1  # bump when what is counted changes: older cache entries are then not used
BUILD_HINT = 'run scripts/loongarch_meter.sh build first'
INT8_CACHE = 'cache_opencv_int8.json'   # beside cache.json: the --opencv-int8 counts (same model file as fp32)

ASSUMPTIONS = dict(
    ghz=(1.0, 'LA264 cores of the Loongson 2K1000LA run at 1.0 GHz'),
    threads=(2, 'the 2K1000LA has 2 LA264 cores; OpenCV DNN with 2 threads'),
    ipc=(0.8, 'LA264 is a dual-issue superscalar core (peak IPC 2; Loongson: "双发射超标量 LA264 处理器核", 1 GHz, '
              'shared 1 MB L2, 533 MHz DDR3). OpenCV\'s LSX kernels are loads + 128-bit FMAs with one vector FMA unit '
              '(8 GFLOP/s/core peak = 4 lanes x 2 x 1 GHz), and feature maps larger than the 1 MB L2 stream from '
              'DDR3: sustained IPC well below 2 is expected; 0.8 assumed (range 0.5-1.2 shown)'),
    efficiency=(0.8, 'parallel efficiency of 2 OpenCV threads sharing one L2 and one DDR3 channel (assumed; the x86 '
                     '1->2 thread speed-up of OpenCV 4.10 is printed beside it as a hint)'),
)
IPC_RANGE = (0.5, 1.2)


class MeterError(Exception):
    "A problem the user can fix (bad input, missing emulator): printed as one line, exit 2"


# ------------------------------------------------------------------------------------------------ inputs and tools
def file_sha256(path, chunk=1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for b in iter(lambda: f.read(chunk), b''): h.update(b)
    return h.hexdigest()


def resolve_model(model, size:int|None=None) -> dict:
    "dict(onnx=Path, size=int, name=str, meta=dict) for a board model folder or a bare .onnx file (+ `size`)"
    p = Path(model)
    if p.is_dir():
        meta = {}
        if (p/'board.json').is_file():
            try: meta = json.loads((p/'board.json').read_text())
            except ValueError as e: raise MeterError(f'{p}/board.json is not valid JSON: {e}') from None
        onnx = p/meta.get('model_file', 'model.onnx')
        if not onnx.is_file(): raise MeterError(f'{p}: no {onnx.name} in this folder (a board model folder has model.onnx and board.json)')
        s = size or meta.get('input_size')
        if not s: raise MeterError(f'{p}: board.json has no input_size; pass --size')
        if size and meta.get('input_size') and int(size) != int(meta['input_size']):
            raise MeterError(f'{p}: --size {size} but board.json says input_size {meta["input_size"]}')
        return dict(onnx=onnx.resolve(), size=int(s), name=p.name, meta=meta)
    if p.is_file():
        if p.suffix.lower() != '.onnx': raise MeterError(f'{p}: not an .onnx file or a board model folder')
        if not size: raise MeterError(f'{p}: a bare .onnx file needs --size (the square input size in pixels)')
        return dict(onnx=p.resolve(), size=int(size), name=p.stem, meta={})
    raise MeterError(f'{p}: no such model folder or .onnx file')


def find_tools(work:Path|None=None, need_x86:bool=True) -> dict:
    "Paths of the emulator, plugin, rootfs and x86 venv; `MeterError` naming the build command when one is missing"
    work = Path(work or WORK)
    t = dict(qemu=work/'meter-qemu'/'qemu-loongarch64', plugin=work/'meter-qemu'/'libinsn.so', rootfs=work/'rootfs',
             x86_python=work/'x86-cv410'/'bin'/'python')
    lacking = [k for k in ('qemu', 'plugin') if not t[k].is_file()]
    if not (t['rootfs']/'usr'/'bin'/'python3').exists(): lacking.append('rootfs')
    elif not (t['rootfs']/'.meter-pyc').is_file(): lacking.append("the guest's compiled .pyc files")
    if lacking:
        raise MeterError(f'the LoongArch emulator is not built ({", ".join(lacking)} missing under {work}): {BUILD_HINT}')
    if need_x86 and not t['x86_python'].is_file():
        raise MeterError(f'no OpenCV 4.10 venv at {t["x86_python"].parent.parent} for the x86 second opinion: {BUILD_HINT} (or pass --no-x86)')
    return t


def guest_versions(rootfs:Path) -> dict:
    "Versions of the guest's python3, numpy and OpenCV, read from file names (running the guest costs ~1 minute)"
    def pick(pattern, rx):
        for f in sorted(rootfs.glob(pattern)):
            m = re.search(rx, f.name)
            if m: return m.group(1)
        return None
    return dict(opencv=pick('usr/lib/*/libopencv_dnn.so.*.*.*', r'\.so\.(\d+\.\d+\.\d+)$'),
                numpy=pick('usr/lib/python3/dist-packages/numpy-*.dist-info', r'numpy-([\d.]+)\.dist-info'),
                python=pick('usr/bin/python3.*', r'^python(3\.\d+)$'))


# ------------------------------------------------------------------------------------------------ the guest program
GUEST = r'''
import json, os, sys
onnx, size, forwards, method = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import numpy as np, cv2
cv2.setNumThreads(1)
net = cv2.dnn.readNetFromONNX(onnx)
x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
names = net.getUnconnectedOutLayersNames()
net.setInput(x)
def mark():  # a child that exits at once: its instruction count is everything up to this point
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0: os._exit(0)
    os.waitpid(pid, 0)
outs = []
for i in range(forwards):
    if method == 'fork': mark()
    outs = net.forward(names)
if method == 'fork': mark()
info = dict(opencv=cv2.__version__, threads=cv2.getNumThreads(), outputs={n: list(o.shape) for n, o in zip(names, outs)},
            checksum=float(sum(float(np.abs(o).sum()) for o in outs)))
print('METER ' + json.dumps(info)); sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
'''
TOTAL_RX = re.compile(r'^total insns: (\d+)\s*$', re.M)


@contextlib.contextmanager
def emulation_lock(work:Path):
    "One emulation at a time on this machine (2 cores shared): wait for any other meter's emulation to end"
    import fcntl
    d = work/'meter'; d.mkdir(parents=True, exist_ok=True)
    with open(d/'.emulation.lock', 'w') as f:
        try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print('   (another emulation is running; waiting for it)', file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _guest_command(tools:dict, name:str, source:str) -> tuple:
    "`(env, command prefix)` running guest program `source` (written once, named by its hash) under the metering emulator"
    gdir = Path(tools['qemu']).parents[1]/'meter'; gdir.mkdir(parents=True, exist_ok=True)
    script = gdir/f'{name}_{hashlib.sha256(source.encode()).hexdigest()[:12]}.py'
    if not script.is_file(): script.write_text(source)
    env = dict(PATH='/usr/bin:/bin', HOME='/tmp', LANG='C.UTF-8', PYTHONDONTWRITEBYTECODE='1', PYTHONHASHSEED='0',
               QEMU_CPU=QEMU_CPU, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
    cmd = [str(tools['qemu']), '-L', str(tools['rootfs']), '-plugin', f'{tools["plugin"]},inline=on', '-d', 'plugin',
           str(Path(tools['rootfs'])/'usr'/'bin'/'python3'), str(script)]
    return env, cmd


def run_guest(tools:dict, onnx:Path, size:int, forwards:int, method:str, timeout:float, log:Path|None=None) -> dict:
    "Run the guest program once under the emulator with the insn plugin; returns dict(totals=[...], info, seconds)"
    env, cmd = _guest_command(tools, 'guest', GUEST)
    cmd += [str(onnx), str(size), str(forwards), method]
    t0 = time.time()
    try: r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired: raise RuntimeError(f'the emulated forward of {onnx} ran past {timeout:.0f} s (--timeout)') from None
    secs = time.time() - t0
    if log: Path(log).write_text(f'$ {" ".join(cmd)}\n# rc {r.returncode}, {secs:.1f} s\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}')
    info = [json.loads(l[6:]) for l in r.stdout.splitlines() if l.startswith('METER ')]
    totals = [int(n) for n in TOTAL_RX.findall(r.stderr)]
    if r.returncode or not info or not totals:
        tail = (r.stderr.strip().splitlines() or ['(no output)'])[-1][:300]
        raise RuntimeError(f'the emulated run of {onnx.name} failed (rc {r.returncode}): {tail}' + (f' (log: {log})' if log else ''))
    return dict(totals=totals, info=info[-1], seconds=round(secs, 1))


def count_forward(tools:dict, onnx:Path, size:int, forwards:int=1, method:str='fork', timeout:float=4*3600,
                  log_dir:Path|None=None) -> dict:
    "Instructions of `forwards` forward passes (per pass), the baseline, the emulation time"
    if forwards < 1: raise MeterError('--forwards must be >= 1')
    stem = f'{Path(onnx).parent.name}_{Path(onnx).stem}_{size}_{method}'
    if log_dir: Path(log_dir).mkdir(parents=True, exist_ok=True)
    log = lambda tag: (Path(log_dir)/f'{stem}_{tag}.log') if log_dir else None
    with emulation_lock(Path(tools['qemu']).parents[1]):
        if method == 'fork':
            r = run_guest(tools, onnx, size, forwards, 'fork', timeout, log('fork'))
            t = r['totals']
            # children in order (one before each forward and one after the last), then the parent
            if len(t) != forwards + 2: raise RuntimeError(f'expected {forwards + 2} "total insns" lines, got {len(t)}: {t}')
            per = [b - a for a, b in zip(t[:forwards + 1], t[1:forwards + 1])]
            base, secs, info = t[0], r['seconds'], r['info']
        elif method == 'two-process':
            r0 = run_guest(tools, onnx, size, 0, 'plain', timeout, log('base'))
            r1 = run_guest(tools, onnx, size, forwards, 'plain', timeout, log('forward'))
            base, total = r0['totals'][-1], r1['totals'][-1]
            per = [(total - base) / forwards] * forwards
            secs, info = r0['seconds'] + r1['seconds'], r1['info']
        else: raise MeterError(f'unknown --method {method!r}: fork or two-process')
    if info.get('threads') != 1: raise RuntimeError(f'the guest ran with {info.get("threads")} OpenCV threads, not 1')
    return dict(insns=per[0], insns_each=per, steady_insns=(per[-1] if forwards > 1 else None), baseline=base,
                emulation_s=secs, guest_opencv=info.get('opencv'), outputs=info.get('outputs'), checksum=info.get('checksum'))


BATCH_GUEST = r"""
import json, os, sys
forwards = int(sys.argv[1])
jobs = [(a.rsplit(':', 1)[0], int(a.rsplit(':', 1)[1])) for a in sys.argv[2:]]
import numpy as np, cv2
cv2.setNumThreads(1)
def mark():  # a child that exits at once: its instruction count is everything up to this point
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0: os._exit(0)
    os.waitpid(pid, 0)
for i, (onnx, size) in enumerate(jobs):
    mark()
    net = cv2.dnn.readNetFromONNX(onnx)
    x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    names = net.getUnconnectedOutLayersNames()
    net.setInput(x)
    for k in range(forwards):
        mark()
        outs = net.forward(names)
    mark()
    info = dict(index=i, opencv=cv2.__version__, threads=cv2.getNumThreads(), outputs={n: list(o.shape) for n, o in zip(names, outs)},
                checksum=float(sum(float(np.abs(o).sum()) for o in outs)))
    sys.stderr.write('METER ' + json.dumps(info) + '\n'); sys.stderr.flush()
    del net, outs
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
"""

# The same as BATCH_GUEST, but jobs come as JSON [[onnx, size, calib.npy or null], ...]; a job with a calibration file is
# quantized by OpenCV (`Net.quantize`) after reading, with one more mark between reading and quantizing.
BATCH_GUEST_INT8 = r"""
import json, os, sys
forwards = int(sys.argv[1])
jobs = json.loads(sys.argv[2])
import numpy as np, cv2
cv2.setNumThreads(1)
def mark():  # a child that exits at once: its instruction count is everything up to this point
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0: os._exit(0)
    os.waitpid(pid, 0)
for i, (onnx, size, calib) in enumerate(jobs):
    mark()
    net = cv2.dnn.readNetFromONNX(onnx)
    if calib:
        c = np.ascontiguousarray(np.load(calib), dtype=np.float32)
        mark()
        net = net.quantize([c], cv2.CV_32F, cv2.CV_32F)
        del c
    x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
    names = net.getUnconnectedOutLayersNames()
    net.setInput(x)
    for k in range(forwards):
        mark()
        outs = net.forward(names)
    mark()
    info = dict(index=i, opencv=cv2.__version__, threads=cv2.getNumThreads(), outputs={n: list(o.shape) for n, o in zip(names, outs)},
                checksum=float(sum(float(np.abs(o).sum()) for o in outs)), int8=bool(calib))
    sys.stderr.write('METER ' + json.dumps(info) + '\n'); sys.stderr.flush()
    del net, outs
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
"""


def count_batch(tools:dict, jobs:list, forwards:int=2, timeout:float=12*3600, log:Path|None=None, on_result=None) -> list:
    """Several models in ONE emulated process (python + numpy + cv2 start-up, ~1.9 G instructions, paid once).
    Per model the guest marks (forks a child that exits at once) before readNetFromONNX, before each forward and after
    the last: the differences of the children's counts are the load and each forward. `on_result(i, rec)` is called
    as soon as model i is done (so a long batch that is stopped keeps what it finished).
    A job is (onnx, size) or (onnx, size, calib): with a calibration .npy the guest quantizes the net with OpenCV's
    `Net.quantize` after reading it (one more mark: `quantize_insns`), and the forwards counted are the int8 net's."""
    import threading
    if forwards < 1: raise MeterError('--forwards must be >= 1')
    calibs = [(str(j[2]) if len(j) > 2 and j[2] else None) for j in jobs]
    if any(calibs):
        env, cmd = _guest_command(tools, 'guest_batch_int8', BATCH_GUEST_INT8)
        cmd += [str(forwards), json.dumps([[str(j[0]), int(j[1]), c] for j, c in zip(jobs, calibs)])]
    else:
        env, cmd = _guest_command(tools, 'guest_batch', BATCH_GUEST)
        cmd += [str(forwards)] + [f'{o}:{s}' for o, s, *_ in jobs]
    counts = [forwards + 2 + (1 if c else 0) for c in calibs]        # marks per model
    starts = [sum(counts[:i]) for i in range(len(jobs))]
    results, totals, lines = [None] * len(jobs), [], []
    t0 = time.time(); t_model = t0
    with emulation_lock(Path(tools['qemu']).parents[1]):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        timer = threading.Timer(timeout, proc.kill); timer.start()
        try:
            for line in proc.stderr:
                lines.append(line)
                m = TOTAL_RX.match(line)
                if m: totals.append(int(m.group(1))); continue
                if line.startswith('METER '):
                    info = json.loads(line[6:]); i = info['index']; per_model = counts[i]
                    t = totals[starts[i]:starts[i] + per_model]
                    if len(t) != per_model: raise RuntimeError(f'model {i}: expected {per_model} counts, got {len(t)}')
                    q = 1 if calibs[i] else 0     # the extra mark between reading and quantizing
                    each = [b - a for a, b in zip(t[1 + q:-1], t[2 + q:])]
                    now = time.time()
                    rec = dict(insns=each[0], insns_each=each, steady_insns=(each[-1] if forwards > 1 else None),
                               baseline=totals[0] + (t[1 + q] - t[0]), load_insns=t[1 + q] - t[0],
                               emulation_s=round(now - t_model, 1),
                               batch_position=i, batch_size=len(jobs), guest_opencv=info.get('opencv'),
                               outputs=info.get('outputs'), checksum=info.get('checksum'))
                    if q: rec.update(opencv_int8=True, quantize_insns=t[2] - t[1], calib=calibs[i])
                    if info.get('threads') != 1: raise RuntimeError(f'the guest ran with {info.get("threads")} OpenCV threads, not 1')
                    t_model = now; results[i] = rec
                    if on_result: on_result(i, rec)
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None: proc.kill(); proc.wait()
            if log: Path(log).write_text(f'$ {" ".join(cmd)}\n# rc {proc.returncode}, {time.time() - t0:.1f} s\n' + ''.join(lines))
    if rc or any(r is None for r in results):
        done = sum(r is not None for r in results)
        tail = (lines or ['(no output)'])[-1].strip()[:300]
        raise RuntimeError(f'the emulated batch stopped after {done} of {len(jobs)} models (rc {rc}): {tail}' + (f' (log: {log})' if log else ''))
    return results


# ------------------------------------------------------------------------------------------------ x86 second opinion
X86 = r'''
import json, sys, time
import numpy as np, cv2
onnx, size, threads, budget = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3].split(',')], float(sys.argv[4])
calib = sys.argv[5] if len(sys.argv) > 5 else ''   # OpenCV's own int8 (Net.quantize) calibrated on this .npy
x = np.random.default_rng(0).random((1, 1, size, size), dtype=np.float32)
res = {}
for n in threads:
    cv2.setNumThreads(n)
    net = cv2.dnn.readNetFromONNX(onnx)
    if calib: net = net.quantize([np.ascontiguousarray(np.load(calib), dtype=np.float32)], cv2.CV_32F, cv2.CV_32F)
    names = net.getUnconnectedOutLayersNames()
    net.setInput(x); net.forward(names); net.setInput(x); net.forward(names)  # set-up and warm-up
    ts, t_end = [], time.perf_counter() + budget
    while len(ts) < 3 or (time.perf_counter() < t_end and len(ts) < 50):
        t0 = time.perf_counter(); net.setInput(x); net.forward(names); ts.append(time.perf_counter() - t0)
    res[str(n)] = dict(median_ms=1e3 * sorted(ts)[len(ts) // 2], min_ms=1e3 * min(ts), runs=len(ts))
print('X86 ' + json.dumps(dict(opencv=cv2.__version__, threads=res)))
'''


def x86_latency(python:Path, onnx:Path, size:int, threads=(1, 2), budget_s:float=8.0, timeout:float=1800,
                calib:Path|None=None) -> dict:
    "Median forward latency (ms) with the x86 OpenCV of `python` (the 4.10 venv) at each thread count (`calib`: int8)"
    r = subprocess.run([str(python), '-c', X86, str(onnx), str(size), ','.join(map(str, threads)), str(budget_s)]
                       + ([str(calib)] if calib else []), capture_output=True, text=True, timeout=timeout)
    out = [l for l in r.stdout.splitlines() if l.startswith('X86 ')]
    if r.returncode or not out:
        raise RuntimeError(f'x86 OpenCV run of {onnx} failed: {(r.stderr.strip().splitlines() or ["?"])[-1][:300]}')
    d = json.loads(out[-1][4:])
    try: d['loadavg'] = os.getloadavg()[0]
    except OSError: pass
    return d


# ------------------------------------------------------------------------------------------------ estimate, cache
def board_estimate(insns:float, ghz:float, ipc:float, threads:int, efficiency:float) -> float:
    "Seconds per image on the board: instructions / (clock x IPC x threads x parallel efficiency)"
    return insns / (ghz * 1e9 * ipc * threads * efficiency)


class Cache:
    "A JSON file of records, read and written under a lock (several meters may share it)"
    def __init__(self, path:Path): self.path = Path(path)
    @contextlib.contextmanager
    def _locked(self):
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix('.lock'), 'w') as f:
            fcntl.flock(f, fcntl.LOCK_EX); yield
    def _read(self) -> dict:
        try: return json.loads(self.path.read_text())
        except FileNotFoundError: return {}
        except ValueError: raise MeterError(f'{self.path} is not valid JSON; delete it to start the cache afresh') from None
    def get(self, key:str):
        with self._locked(): return self._read().get(key)
    def put(self, key:str, rec:dict):
        with self._locked():
            d = self._read(); d[key] = rec
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix='.cache.', suffix='.tmp')
            with os.fdopen(fd, 'w') as f: json.dump(d, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)


def emu_key(sha:str, size:int, opencv:str|None, cpu:str, method:str, forwards:int, calib_sha:str|None=None) -> str:
    "The cache key of a count; `calib_sha`: OpenCV's int8 form (Net.quantize) calibrated on that file"
    k = f'emu v{METER_VERSION} sha256={sha} size={size} opencv={opencv} cpu={cpu} method={method} forwards={forwards}'
    return k + (f' opencv_int8_calib={calib_sha}' if calib_sha else '')


def x86_key(sha:str, size:int, python:Path, threads, calib_sha:str|None=None) -> str:
    k = f'x86 v{METER_VERSION} sha256={sha} size={size} venv={Path(python).parent.parent.name} threads={",".join(map(str, threads))}'
    return k + (f' opencv_int8_calib={calib_sha}' if calib_sha else '')


def _calib_list(opencv_int8, n:int) -> list:
    "Per model: a calibration .npy (OpenCV's Net.quantize) or None, from one path, a list or None"
    if opencv_int8 is None or isinstance(opencv_int8, (str, os.PathLike)): cs = [opencv_int8] * n
    else: cs = list(opencv_int8)
    if len(cs) != n: raise MeterError(f'opencv_int8: {len(cs)} calibration entries for {n} models')
    for c in cs:
        if c is not None and not Path(c).is_file():
            raise MeterError(f'{c}: no such calibration file (--opencv-int8 takes a .npy shaped like the input)')
    return [Path(c).resolve() if c is not None else None for c in cs]


def meter_many(models:list, size:int|None=None, *, forwards:int=2, method:str='fork', x86:bool=True, force:bool=False,
               remeasure_x86:bool=False, threads_x86=(1, 2), timeout:float=12*3600, work:Path|None=None,
               tools:dict|None=None, cache:Cache|None=None, progress=print, opencv_int8=None) -> list[dict]:
    """Count (or fetch from the cache) each model's board instructions, uncounted ones in one emulated process; x86 latency.
    `opencv_int8`: a calibration .npy (or a list, one per model, None for fp32): count OpenCV's own int8 form of the
    model (`Net.quantize` in the guest before the counted forwards); fork method only."""
    ms = [resolve_model(m, size) for m in models]
    calibs = _calib_list(opencv_int8, len(ms))
    if any(calibs) and method != 'fork': raise MeterError('--opencv-int8 is counted with --method fork only')
    work = Path(work or WORK)
    tools = tools or find_tools(work, need_x86=x86)
    cache = cache or Cache(work/'meter'/'cache.json')
    # OpenCV-int8 counts go to a file of their own: their model file (and sha256) is the fp32 one, and readers of
    # cache.json (pneumonia_kit.meter.metered) take every record of a model's sha256 as that model's fp32 count
    cache_i8 = Cache(cache.path.with_name(INT8_CACHE))
    store_of = lambda m: cache_i8 if m['calib'] else cache
    gv = guest_versions(Path(tools['rootfs']))
    for m, c in zip(ms, calibs):
        m['sha'], m['calib'] = file_sha256(m['onnx']), c
        m['calib_sha'] = file_sha256(c) if c else None
        m['key'] = emu_key(m['sha'], m['size'], gv['opencv'], QEMU_CPU, method, forwards, m['calib_sha'])
        m['rec'] = None if force else store_of(m).get(m['key'])
        if m['rec'] is not None: m['rec'] = dict(m['rec'], cached=True)
    todo, seen = [], set()
    for m in ms:
        if m['rec'] is None and m['key'] not in seen: todo.append(m); seen.add(m['key'])

    def store(m, rec):
        rec.update(sha256=m['sha'], size=m['size'], qemu_cpu=QEMU_CPU, method=method, forwards=forwards, guest=gv,
                   measured_at=time.strftime('%Y-%m-%d %H:%M:%S'), onnx=str(m['onnx']))
        if m['calib']: rec.update(opencv_int8=True, calib=str(m['calib']), calib_sha256=m['calib_sha'])
        store_of(m).put(m['key'], rec)
        for o in ms:
            if o['key'] == m['key']: o['rec'] = rec
        steady = f', then {rec["steady_insns"] / 1e9:.3f} G per image' if rec.get('steady_insns') else ''
        progress(f'   {m["name"]}: {rec["insns"] / 1e9:.3f} G instructions first forward{steady} '
                 f'(baseline {rec["baseline"] / 1e9:.3f} G), {rec["emulation_s"]:.0f} s emulated')
    if todo:
        progress(f'   emulating {len(todo)} model(s) ({", ".join(m["name"] for m in todo)}), {forwards} forward(s) each, '
                 f'{method}: ~23 M instructions per second here (~45 s per G), start-up ~1.9 G once ...')
        logs = work/'meter'/'logs'; logs.mkdir(parents=True, exist_ok=True)
        if method == 'fork':
            jobs = [(m['onnx'], m['size'], m['calib']) if m['calib'] else (m['onnx'], m['size']) for m in todo]
            count_batch(tools, jobs, forwards, timeout,
                        log=logs/f'batch_{time.strftime("%Y%m%d_%H%M%S")}.log', on_result=lambda i, rec: store(todo[i], rec))
        elif method == 'two-process':
            for m in todo: store(m, count_forward(tools, m['onnx'], m['size'], forwards, method, timeout, log_dir=logs))
        else: raise MeterError(f'unknown --method {method!r}: fork or two-process')
    outs = []
    for m in ms:
        out = dict(name=m['name'] + (' (OpenCV int8)' if m['calib'] else ''), onnx=str(m['onnx']), size=m['size'],
                   sha256=m['sha'], board=m['rec'])
        if m['calib']: out.update(opencv_int8=True, calib=str(m['calib']))
        if x86:
            xk = x86_key(m['sha'], m['size'], tools['x86_python'], threads_x86, m['calib_sha'])
            xr = None if (force or remeasure_x86) else store_of(m).get(xk)
            if xr is None:
                xr = x86_latency(tools['x86_python'], m['onnx'], m['size'], threads_x86, calib=m['calib'])
                xr['measured_at'] = time.strftime('%Y-%m-%d %H:%M:%S')
                store_of(m).put(xk, xr)
            else: xr = dict(xr, cached=True)
            out['x86'] = xr
        outs.append(out)
    return outs


def meter(model, size:int|None=None, **kw) -> dict:
    "`meter_many` for one model"
    return meter_many([model], size, **kw)[0]


# ------------------------------------------------------------------------------------------------ report
def summarize(results:list, *, ghz, ipc, threads, efficiency, reference:float|None=None) -> list[dict]:
    rows = []
    for r in results:
        b = r['board']; first = b['insns']; g = b.get('steady_insns') or first   # per image: the steady forward when counted
        row = dict(name=r['name'], size=r['size'], sha256=r['sha256'][:12], first_G=round(first / 1e9, 3),
                   per_image_G=round(g / 1e9, 3), per_image_is='second forward' if b.get('steady_insns') else 'first forward',
                   baseline_G=round(b['baseline'] / 1e9, 3),
                   board_s=round(board_estimate(g, ghz, ipc, threads, efficiency), 2),
                   board_s_range=[round(board_estimate(g, ghz, i, threads, efficiency), 2) for i in IPC_RANGE[::-1]],
                   vs_reference=(round(reference / first, 2) if reference else None), emulation_s=b.get('emulation_s'),
                   cached=bool(b.get('cached')))
        x = r.get('x86')
        if x:
            t = x['threads']
            row.update({f'x86_ms_{k}t': round(v['median_ms'], 1) for k, v in t.items()}, x86_opencv=x.get('opencv'))
            if '1' in t and '2' in t: row['x86_parallel_eff'] = round(t['1']['median_ms'] / (2 * t['2']['median_ms']), 2)
        rows.append(row)
    return rows


def print_table(rows:list, assumptions:dict, reference_desc:str|None, file=None):
    p = lambda *a: print(*a, file=file or sys.stdout)
    hdr = ['model', 'size', 'G first', 'G/image', 'baseline G', 'board s/image', f'(IPC {IPC_RANGE[1]}-{IPC_RANGE[0]})',
           'vs ref (first)', 'x86 1t ms', 'x86 2t ms', 'x86 2t eff']
    body = [[r['name'], r['size'], f'{r["first_G"]:.2f}', f'{r["per_image_G"]:.2f}', f'{r["baseline_G"]:.2f}', f'{r["board_s"]:.1f}',
             f'{r["board_s_range"][0]:.1f}-{r["board_s_range"][1]:.1f}',
             f'{r["vs_reference"]:.2f}x' if r['vs_reference'] else '-',
             r.get('x86_ms_1t', '-'), r.get('x86_ms_2t', '-'), r.get('x86_parallel_eff', '-')] for r in rows]
    w = [max(len(str(x)) for x in col) for col in zip(hdr, *body)]
    for line in [hdr] + body: p('  '.join(str(x).rjust(n) if i else str(x).ljust(n) for i, (x, n) in enumerate(zip(line, w))))
    p('G first: the first forward of a loaded network (with OpenCV\'s one-time set-up; REFERENCE.md\'s figures count this); '
      'G/image: the second forward (what each further image costs; = G first with --forwards 1)')
    p('board estimate = instructions per image / (clock x IPC x threads x parallel efficiency), with:')
    for k, (v, why) in assumptions.items(): p(f'  {k} = {v}: {why}')
    if reference_desc: p(f'vs ref = reference instructions / this model\'s first forward ({reference_desc})')
    p('counted: one forward at 1 OpenCV thread in Debian loong64 python3 + numpy + OpenCV (guest versions in the JSON) '
      f'under QEMU_CPU={QEMU_CPU}, minus the same process just before the forward; x86: opencv-python-headless 4.10 '
      'median latency on this machine (a second opinion only: emulated and x86 timings say little about the board).')


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    ap.add_argument('models', nargs='+', help='board model folder(s) or .onnx file(s)')
    ap.add_argument('--size', type=int, help='input size of a bare .onnx (board folders: board.json input_size)')
    ap.add_argument('--reference', help='reference instructions: a number in G (27.1 = the original configuration) '
                                        'or a model folder/.onnx to meter as the reference')
    ap.add_argument('--ghz', type=float, default=ASSUMPTIONS['ghz'][0])
    ap.add_argument('--ipc', type=float, default=ASSUMPTIONS['ipc'][0])
    ap.add_argument('--threads', type=int, default=ASSUMPTIONS['threads'][0], help='board threads in the estimate')
    ap.add_argument('--efficiency', type=float, default=ASSUMPTIONS['efficiency'][0], help='parallel efficiency in the estimate')
    ap.add_argument('--forwards', type=int, default=2, help='forward passes counted: the first includes OpenCV\'s one-time '
                    'network set-up; the second is what each further image costs (1: the first only, half the emulation)')
    ap.add_argument('--method', default='fork', choices=('fork', 'two-process'))
    ap.add_argument('--no-x86', action='store_true', help='skip the x86 OpenCV 4.10 latency')
    ap.add_argument('--remeasure-x86', action='store_true', help='time x86 again instead of using the cached latency')
    ap.add_argument('--force', action='store_true', help='count again, ignoring the cache')
    ap.add_argument('--timeout', type=float, default=12 * 3600, help='seconds one emulation may run')
    ap.add_argument('--opencv-int8', metavar='CALIB.npy', help="count OpenCV's own int8 form: Net.quantize calibrated on this "
                    'float32 array (shaped like the input, e.g. [1,1,S,S]) before the counted forwards')
    ap.add_argument('--json', help='write the results here (default outputs/loongarch/meter/last.json)')
    a = ap.parse_args(argv)
    try:
        for k in ('ghz', 'ipc', 'efficiency'):
            if getattr(a, k) <= 0: raise MeterError(f'--{k} must be > 0')
        if a.threads < 1: raise MeterError('--threads must be >= 1')
        models = [resolve_model(m, a.size) for m in a.models]   # every input checked before any emulation
        ref_model = None; ref_g = None
        if a.reference:
            try: ref_g = float(a.reference) * 1e9
            except ValueError: ref_model = resolve_model(a.reference, None if Path(a.reference).is_dir() else a.size)
            if ref_g is not None and ref_g <= 0: raise MeterError('--reference must be > 0 (G instructions) or a model')
        if a.opencv_int8: _calib_list(a.opencv_int8, 1)
        tools = find_tools(need_x86=not a.no_x86)
        kw = dict(forwards=a.forwards, method=a.method, x86=not a.no_x86, force=a.force, remeasure_x86=a.remeasure_x86,
                  timeout=a.timeout, tools=tools, progress=lambda s: print(s, file=sys.stderr, flush=True))
        results = meter_many(a.models, a.size, opencv_int8=a.opencv_int8, **kw)
        ref_desc = None
        if ref_model:
            rr = meter(a.reference, ref_model['size'], **kw)
            ref_g, ref_desc = rr['board']['insns'], f'{rr["name"]}: {rr["board"]["insns"] / 1e9:.2f} G first forward'
        elif ref_g: ref_desc = f'{ref_g / 1e9:.2f} G given'
    except MeterError as e:
        print(f'board_meter: {e}', file=sys.stderr); return 2
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f'board_meter: FAILED: {e}', file=sys.stderr); return 1
    assumptions = dict(ghz=(a.ghz, ASSUMPTIONS['ghz'][1]), threads=(a.threads, ASSUMPTIONS['threads'][1]),
                       ipc=(a.ipc, ASSUMPTIONS['ipc'][1]), efficiency=(a.efficiency, ASSUMPTIONS['efficiency'][1]))
    rows = summarize(results, ghz=a.ghz, ipc=a.ipc, threads=a.threads, efficiency=a.efficiency, reference=ref_g)
    print_table(rows, assumptions, ref_desc)
    out = Path(a.json) if a.json else WORK/'meter'/'last.json'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(rows=rows, results=results, reference_insns=ref_g, reference=ref_desc,
                                   assumptions={k: dict(value=v, why=w) for k, (v, w) in assumptions.items()},
                                   ipc_range=IPC_RANGE, qemu_cpu=QEMU_CPU, meter_version=METER_VERSION), indent=2, default=str))
    print(f'json: {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
