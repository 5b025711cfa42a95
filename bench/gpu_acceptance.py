#!/usr/bin/env python
"""GPU acceptance (issues 13 and 20), the driver behind `bench/gpu_acceptance.sh`: installs the carried wheels and the
package (dependencies resolved against the machine's own torch), checks the environment, runs the training-step sweep,
the throughput run at the sweep's best setting, the fp32-vs-fast loss curves and the `gpu`-marked tests, each in its own
process with a time limit, and writes `results.json` + `results.md` (+ `acceptance.log`, `tests_junit.xml`)
to OUT_DIR (at most 8 files: the device tool brings back no more).

    python bench/gpu_acceptance.py OUT_DIR              # on the GPU machine (bench/gpu_acceptance.sh calls this)
    python bench/gpu_acceptance.py OUT_DIR --dry-run    # the same parts on the CPU, reduced (tests/test_gpu_acceptance.py)

Exit status: 0 every check passed; 1 a required check failed (a part crashed, timed out, a test failed, a loss was not
finite, ...); 3 everything ran but a speed goal was missed; 2 bad usage, or no CUDA GPU without --dry-run (one line,
before any work). Only the standard library is imported here, so the parts can install what they need first.
"""
from __future__ import annotations
import argparse, contextlib, datetime, glob, json, os, platform, re, shutil, signal, subprocess, sys, threading, time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = ('install', 'env', 'train_step', 'throughput', 'tests', 'curves')   # the GPU run's order: what matters most first
GOALS = dict(train_step_speedup=2.0, epoch_speedup_vs_p100=20.0, curves_gap_ratio=1.0)
SWEEP = dict(batches=(4, 16, 32, 64), compile=('off', 'graph', 'default'))   # the training-step sweep (issue 20), bf16
TWIN = dict(n_images=1500, image_px=512)   # the throughput twin: small and fast to make (2026-12-04: 2,000 x 1024 px took ~150 s)

# Per part: the most seconds it may take on the GPU machine (the whole run must end within 8 minutes, 480 s) and in the
# dry run. Measured on the H200 on 2026-12-04, 18:42 UTC (one run, 442 s): install 20.5 s, env 19.5 s, throughput at
# batch 4 49.7 s, tests 52.0 s; the sweep's eager warm-ups 2-24 s each, but its first compilation (SE-ResNeXt101 P2-P7)
# outlasted the 180 s limit with nothing written, and the serial curves (fp32 300 steps: 76 s) outlasted 120 s. Hence the
# sweep's phases (eager first, each written at once) and the curves' three runs at once. The limits add up to more than
# the budget: a part that ends early leaves its time to the later ones (the sweep's compile phase starts only with
# COMPILE_MIN_S left, so it rarely runs here, and the tests and curves get that time), and the curves and the sweep stop
# their own timing at their limit, so a cut run still writes what it measured.
LIMITS = dict(install=(60, 60), env=(45, 90), train_step=(220, 150), throughput=(90, 150), curves=(170, 150), tests=(90, 300))
COMPILE_MIN_S = 150   # the sweep's torch.compile of SE-ResNeXt101 P2-P7 outlasted ~115 s on the H200 (2026-12-04)
BUDGET = (480, 420)   # the whole run (GPU, dry run), seconds
# The dry run runs these two lanes side by side (2 cores); the GPU run runs the parts one after the other (timings).
LANES = (('tests',), ('env', 'train_step', 'throughput', 'curves'))


def _now() -> str: return datetime.datetime.now().isoformat(timespec='seconds')


class Acceptance:
    def __init__(self, out:Path, dry:bool, work:Path, site:Path, wheels:Path, budget:float, parallel:bool=False):
        self.out, self.dry, self.work, self.site, self.wheels, self.parallel = out, dry, work, site, wheels, parallel
        self.lock, self.current = threading.RLock(), threading.local()
        self.t0, self.deadline = time.monotonic(), time.monotonic() + budget
        self.log = out/'acceptance.log'
        self.res = dict(mode='dry-run (CPU, reduced)' if dry else 'GPU', started=_now(), host=platform.node(),
                        python=platform.python_version(), repo=str(REPO), budget_s=budget, goals=GOALS, parts={}, checks=[])
        self.env = dict(os.environ, PYTHONUNBUFFERED='1', MPLBACKEND='Agg', PYTHONDONTWRITEBYTECODE='1')
        paths = [str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]   # install() puts its folder first
        self.env['PYTHONPATH'] = os.pathsep.join(paths)
        if dry: self.env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')   # 2 shared cores: no spinning thread pools
        self.env.update(PNEUMONIA_KIT_TEST_DEVICE='cpu' if dry else 'cuda', PNEUMONIA_KIT_GPU_REPORT=str(work/'tests_report.json'))

    # ------------------------------------------------------------------ bookkeeping
    def check(self, name:str, ok:bool|None, value=None, goal=None, kind:str='required', note:str=''):
        "Record a check: kind 'required' (failing it fails the run) or 'goal' (a speed target; ok None = not evaluated)"
        with self.lock: self.res['checks'].append(dict(part=getattr(self.current, 'part', ''), name=name, kind=kind, ok=ok,
                                                       value=value, goal=goal, note=note))

    def left(self) -> float: return self.deadline - time.monotonic()

    def sh(self, part:str, cmd:list, limit:float, cwd:Path|None=None) -> tuple:
        "Run `cmd` (its own process group) with output appended to the log; (returncode or 'timeout', seconds)"
        limit = max(1., min(limit, self.left()))
        path = self.work/f'{part.replace(" ", "_")}.log' if self.parallel else self.log   # lanes: one log each, appended after
        with open(path, 'a') as log:
            log.write(f'\n===== {part}: {" ".join(map(str, cmd))}  (limit {limit:.0f} s, {_now()})\n'); log.flush()
            t = time.monotonic()
            p = subprocess.Popen([str(c) for c in cmd], cwd=cwd or self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            rc, cpu = None, 0.
            while rc is None:   # os.wait4: the exit status and the CPU time of the part and its reaped children
                pid, st, ru = os.wait4(p.pid, os.WNOHANG)
                if pid: rc, cpu = os.waitstatus_to_exitcode(st), ru.ru_utime + ru.ru_stime
                elif time.monotonic() - t > limit:
                    with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)
                    _, st, ru = os.wait4(p.pid, 0); rc, cpu = 'timeout', ru.ru_utime + ru.ru_stime
                else: time.sleep(0.1)
            p.returncode = -1   # reaped above
            secs = round(time.monotonic() - t, 1)
            with self.lock: self.res.setdefault('cpu_s', {})[part] = round(cpu, 1)
            log.write(f'===== {part}: exit {rc} after {secs} s ({cpu:.1f} s of CPU)\n')
        if self.parallel:
            with self.lock, open(self.log, 'a') as log: log.write(path.read_text())
        return rc, secs

    def save(self):
        "results.json and results.md, rewritten after every part (a run cut short still leaves them)"
        with self.lock: self._save()

    def _save(self):
        order = {p: i for i, p in enumerate(PARTS)}
        self.res['checks'].sort(key=lambda c: order.get(c['part'], -1))
        self.res['parts'] = dict(sorted(self.res['parts'].items(), key=lambda kv: order.get(kv[0], -1)))
        self.res['seconds'] = round(time.monotonic() - self.t0, 1)
        req = [c for c in self.res['checks'] if c['kind'] == 'required']
        goals = [c for c in self.res['checks'] if c['kind'] == 'goal' and c['ok'] is not None]
        self.res['passed'] = bool(req) and all(c['ok'] for c in req)
        self.res['goals_met'] = all(c['ok'] for c in goals) if goals else None
        self.res['exit_code'] = 1 if not self.res['passed'] else 3 if self.res['goals_met'] is False else 0
        (self.out/'results.json').write_text(json.dumps(self.res, indent=1, default=str))
        (self.out/'results.md').write_text(markdown(self.res))

    def part(self, name:str, fn):
        "Run one part within its limit and the whole budget; an exception or no time left fails it"
        lim = LIMITS[name][1 if self.dry else 0]
        self.current.part = name
        print(f'[{_now()}] {name} (limit {min(lim, self.left()):.0f} s) ...', flush=True)
        if self.left() < 5:
            self.res['parts'][name] = dict(status='skipped: no time left'); self.check(f'{name} ran', False, note='no time left')
        else:
            t = time.monotonic()
            try: status = fn(lim)
            except Exception as e:   # noqa: BLE001 - reported, and the next part still runs
                status = f'error: {type(e).__name__}: {e}'; self.check(f'{name} ran', False, note=status)
            with self.lock: self.res['parts'].setdefault(name, {}).update(status=status, seconds=round(time.monotonic() - t, 1))
        print(f'[{_now()}] {name}: {self.res["parts"][name]["status"]} ({self.res["parts"][name].get("seconds", 0)} s)', flush=True)
        self.save()

    # ------------------------------------------------------------------ parts
    def install(self, lim):
        """The package and the carried wheels (bench/gpu_wheels.txt) into a private prefix, dependencies resolved against the
        machine's own packages (torch 2.11 stays: checked); if that resolution fails, the old --no-deps install, so the
        measurements still run (the check stays failed)"""
        wanted = read_wheel_list(REPO/'bench'/'gpu_wheels.txt')
        files = sorted(glob.glob(str(self.wheels/'*.whl')))
        have = {wheel_name(f) for f in files}
        missing = sorted(set(wanted) - have)
        info = dict(wheels=[Path(f).name for f in files], missing=missing, site=str(self.site))
        self.res['parts']['install'] = info
        self.check('carried wheels: one per name in bench/gpu_wheels.txt', not missing and len(files) == len(have),
                   value=f'{len(files)} files', note=f'missing: {", ".join(missing)}' if missing else '')
        if not files: return 'failed: no wheels (run bench/fetch_gpu_wheels.sh here and carry .whl)'
        before = self.torch_version()
        base = [sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--find-links', self.wheels, '--no-compile',
                '--no-cache-dir', '--disable-pip-version-check', '--no-build-isolation']
        reqs = [f'{n}=={v}' for n, v in wanted.items()] + [REPO]
        rc, s = self.sh('install', base + ['--prefix', self.site] + reqs, lim * 0.6, cwd=REPO)
        site = self.prefix_site()
        after = self.torch_version()
        own = sorted(p.name for p in (site.iterdir() if site else []) if p.name.split('-')[0].lower() in ('torch', 'torchvision', 'numpy'))
        info.update(torch_before=before, torch_after=after, resolved_site=str(site) if site else None, replaced=own)
        self.check('package + wheels installed, dependencies resolved on the machine (no --no-deps)', rc == 0 and site is not None,
                   value=f'exit {rc}, {s} s', note='' if rc == 0 else 'see acceptance.log; fell back to --no-deps')
        self.check("torch unchanged by the install (the machine's own)", before is not None and before == after and not own,
                   value=f'{before} -> {after}', note=f'installed over it: {", ".join(own)}' if own else '')
        if rc != 0 or site is None:   # fallback: what issue 13's run did
            nd = [c for c in base if c != '--find-links' and c != self.wheels] + ['--no-deps', '--upgrade', '--target', self.work/'site_nodeps']
            rc, _ = self.sh('install (fallback, --no-deps)', nd + files + [REPO], lim * 0.4, cwd=REPO)
            site = self.work/'site_nodeps' if rc == 0 else None
        if site is not None and str(site) not in self.env['PYTHONPATH'].split(os.pathsep):
            self.env['PYTHONPATH'] = os.pathsep.join([str(site)] + self.env['PYTHONPATH'].split(os.pathsep))
        return 'passed' if all(c['ok'] for c in self.res['checks'] if c['part'] == 'install') else 'failed'

    def torch_version(self):
        "torch's version as the parts will import it (None: no torch)"
        p = subprocess.run([sys.executable, '-c', 'import torch; print(torch.__version__)'], env=self.env, capture_output=True, text=True)
        return p.stdout.strip() or None if p.returncode == 0 else None

    def prefix_site(self):
        "The folder under the prefix where pip put the package (site-packages or Debian's dist-packages), added to PYTHONPATH"
        site = installed_site(self.site)
        if site is None: return None
        if str(site) not in self.env['PYTHONPATH'].split(os.pathsep):
            self.env['PYTHONPATH'] = os.pathsep.join([str(site)] + self.env['PYTHONPATH'].split(os.pathsep))
        return site

    def probe(self, lim):
        "What the machine has: GPU, versions, every package module importable"
        js = self.work/'env.json'
        rc, s = self.sh('env', [sys.executable, Path(__file__), '--env-probe', js] + (['--dry-run'] if self.dry else []), lim)
        info = read_json(js)
        self.res['parts']['env'] = info
        self.check('package modules import', rc == 0 and not info.get('import_errors'), value=f'exit {rc}',
                   note='; '.join(f'{k}: {v}' for k, v in info.get('import_errors', {}).items()))
        if not self.dry:
            self.check('CUDA GPU visible to PyTorch', bool(info.get('cuda_available')), value=info.get('gpu'))
            self.check('bf16 autocast convolution on the GPU', info.get('bf16_conv') == 'ok', value=info.get('bf16_conv'))
        return 'passed' if rc == 0 and not info.get('import_errors') else 'failed'

    def tests(self, lim):
        "pytest -m gpu tests/test_gpu.py (on the CPU in the dry run), from a folder outside the repo (the installed package)"
        junit, report = self.work/'tests_junit.xml', self.work/'tests_report.json'
        for f in (junit, report): f.unlink(missing_ok=True)
        cmd = [sys.executable, '-m', 'pytest', REPO/'tests'/'test_gpu.py', '-m', 'gpu', '-p', 'no:cacheprovider', '-q', '-rfE',
               '--rootdir', REPO, '-c', REPO/'pyproject.toml', f'--junitxml={junit}', '--basetemp', self.work/'pytest']
        rc, s = self.sh('tests', cmd, lim)
        info = parse_junit(junit) if junit.exists() else dict(tests=0)
        info['facts'] = read_json(report)
        if junit.exists(): shutil.copy(junit, self.out/'tests_junit.xml')
        self.res['parts']['tests'] = info
        ok = rc == 0 and info['tests'] > 0 and info['failures'] == info['errors'] == info['skipped'] == 0
        self.check('gpu-marked tests pass (none skipped)', ok,
                   value=f"{info.get('passed', 0)} passed, {info.get('failures', 0)} failed, {info.get('errors', 0)} errors, "
                         f"{info.get('skipped', 0)} skipped (exit {rc})",
                   note='; '.join(f"{t['name']}: {t['message'][:200]}" for t in info.get('failed', [])))
        return 'passed' if ok else 'failed'

    def train_step(self, lim):
        "bench/bench_train_step.py: the sweep (batch x eager/compiled, bf16, channels-last) against the original at batch 4"
        js = self.work/'train_step.json'; js.unlink(missing_ok=True)
        args = (['--device', 'cpu', '--backbone', 'resnet_tiny', '--size', '256', '--fpn-channels', '32', '--batch', '2',
                 '--batches', '2,4', '--compile', 'off', '--steps', '2', '--warmup', '1', '--threads', '1'] if self.dry else
                ['--device', 'cuda', '--backbone', 'se_resnext101_32x4d', '--size', '512', '--batch', '4',
                 '--batches', ','.join(map(str, SWEEP['batches'])), '--compile', ','.join(SWEEP['compile']), '--amp', 'bf16',
                 '--steps', '5', '--warmup', '2', '--compile-min-s', str(COMPILE_MIN_S)])
        budget = max(10., min(lim, self.left()) - 20)
        rc, s = self.sh('train_step', [sys.executable, REPO/'bench'/'bench_train_step.py', *args, '--budget-s', f'{budget:.0f}',
                                       '--json', js], lim)
        info = read_json(js)
        self.res['parts']['train_step'] = info
        rows = info.get('rows', {})
        # the sweep writes its JSON after each phase (eager, CUDA graph, compiled): a run cut by its limit keeps what it timed
        ok = (rc == 0 or info.get('phase') not in (None, 'done')) and len(rows) >= 2 and all(r['median_s'] > 0 for r in rows.values())
        cut = '' if rc == 0 else f"cut by its limit after the phase '{info.get('phase')}'; "
        self.check('training-step sweep ran', ok, value=f'exit {rc}, {s} s, {len(rows)} configurations',
                   note=cut + '; '.join(f'{k}: {v}' for k, v in info.get('skipped', {}).items()))
        b4 = rows.get(info.get('best_at_original_batch') or '', {}).get('speedup_vs_original')
        self.check(f"training step at the original's batch {info.get('batch', 4)}: ours (best: eager, CUDA graph or compiled) vs the original fp32",
                   None if self.dry or b4 is None else b4 >= GOALS['train_step_speedup'],
                   value=None if b4 is None else f"{b4:.2f}x ({info.get('best_at_original_batch')})",
                   goal=f">= {GOALS['train_step_speedup']}x", kind='goal', note='not evaluated in the dry run' if self.dry else '')
        return 'passed' if ok else 'failed'

    def best_setting(self) -> tuple:
        "(batch, compile mode) of the sweep's fastest configuration (images/s), or the original preset's"
        ts = self.res['parts'].get('train_step', {})
        rows = {k: r for k, r in ts.get('rows', {}).items()   # what `fit` can run: eager or compiled (not the bench's CUDA graph)
                if k.startswith('ours P2-P7') and (k.endswith('eager') or ' compiled ' in k)}
        if not rows: return 4, 'off'
        best = max(rows, key=lambda k: rows[k]['images_per_s'])
        return rows[best]['batch'], 'off' if best.endswith('eager') else best.split('compiled ')[-1]

    def throughput(self, lim):
        "bench/bench_throughput.py: the original network at the sweep's best batch and compile mode, real loader, 16 workers"
        js = self.work/'throughput.json'; js.unlink(missing_ok=True)
        b, mode = self.best_setting()
        args = (['--device', 'cpu', '--preset', 'tiny', '--n-images', '40', '--image-px', '256', '--data-workers', '1',
                 '--runs', '4x2', '--steps', '4', '--warmup', '2', '--gpu-steps', '2', '--threads', '1'] if self.dry else
                ['--device', 'cuda', '--preset', 'original', '--n-images', str(TWIN['n_images']), '--image-px', str(TWIN['image_px']),
                 '--data-workers', '0', '--runs', f'{b}x16', '--steps', str(max(4, min(40, TWIN['n_images'] * 3 // 4 // b - 4))),
                 '--warmup', '3', '--gpu-steps', '10', '--amp', 'bf16', '--compile', mode])
        budget = max(10., min(lim, self.left()) - 15)   # stop timing in time to write the result
        rc, s = self.sh('throughput', [sys.executable, REPO/'bench'/'bench_throughput.py', '--data', self.work/'twin', *args,
                                       '--budget-s', f'{budget:.0f}', '--json', js], lim)
        info = read_json(js)
        info['setting'] = dict(batch=b, compile=mode)
        self.res['parts']['throughput'] = info
        runs = info.get('runs', [])
        ok = rc == 0 and bool(runs) and all(r['finite'] for r in runs)
        self.check('throughput run finished with finite losses', ok, value=f'exit {rc}, {len(runs)} run(s), {s} s',
                   note='; '.join(f"{e['run']}: {e['error']}" for e in info.get('errors', [])))
        if any(r.get('cut_by_deadline') for r in runs): self.check('throughput run timed all its steps', False, note='cut by the time budget')
        best = info.get('best', {})
        v = best.get('speedup_vs_p100_epoch')
        self.check(f"projected epoch ({info.get('reference', {}).get('train_images', 26684):,} images) vs the original's 50 min on a P100",
                   None if self.dry or v is None else v >= GOALS['epoch_speedup_vs_p100'],
                   value=None if v is None else f"{v}x ({best['projected_epoch_s']} s, run {best['run']}, compile {mode})",
                   goal=f">= {GOALS['epoch_speedup_vs_p100']}x (moonshot 40x)", kind='goal', note='not evaluated in the dry run' if self.dry else '')
        return 'passed' if ok else 'failed'

    def curves(self, lim):
        "bench/bench_curves.py --parallel: 300 steps fp32 eager vs the fast setting from one seed, and fp32 from a second seed (the noise)"
        js = self.work/'curves.json'; js.unlink(missing_ok=True)
        args = (['--device', 'cpu', '--preset', 'tiny', '--size', '128', '--batch', '4', '--steps', '6', '--smooth', '2',
                 '--workers', '0', '--compile', 'off', '--lr', '1e-3', '--threads', '1'] if self.dry else
                ['--device', 'cuda', '--preset', 'se_resnext50_p3p7', '--size', '256', '--batch', '16', '--steps', '300',
                 '--workers', '5', '--compile', self.best_setting()[1]]) + ['--parallel']
        budget = max(10., min(lim, self.left()) - 15)   # the runs stop in time to compare what they reached and write it
        rc, s = self.sh('curves', [sys.executable, REPO/'bench'/'bench_curves.py', '--data', self.work/'twin', *args,
                                   '--budget-s', f'{budget:.0f}', '--json', js], lim)
        info = read_json(js)
        self.res['parts']['curves'] = {k: v for k, v in info.items() if k != 'runs'} | dict(
            curves={k: v['curve'] for k, v in info.get('runs', {}).items()})
        ok = rc == 0 and bool(info.get('finite'))
        n, steps = info.get('steps_compared'), info.get('steps')
        self.check('loss curves ran with finite losses', ok, value=f'exit {rc}, {s} s',
                   note='' if n == steps else f'cut by the time budget: compared over {n} of {steps} steps')
        r = info.get('ratio')
        self.check('fast setting vs fp32 eager: curve gap / the gap of two fp32 seeds', None if self.dry or r is None else r <= GOALS['curves_gap_ratio'],
                   value=None if r is None else f"{r} ({info['gap_fast_vs_fp32']} vs {info['gap_seed_noise']})",
                   goal=f"<= {GOALS['curves_gap_ratio']}", kind='goal', note='not evaluated in the dry run' if self.dry else '')
        return 'passed' if ok else 'failed'


# ---------------------------------------------------------------------- helpers (also used by the tests)
def installed_site(prefix) -> Path|None:
    "The folder of a `pip install --prefix` where the package landed (site-packages or Debian's dist-packages), or None"
    hits = sorted(Path(prefix).glob('**/pneumonia_kit/__init__.py'))
    return hits[0].parent.parent if hits else None

def read_json(path) -> dict:
    "A part's JSON result; {} when absent or cut short (a part killed by its limit while writing it)"
    try: return json.loads(Path(path).read_text())
    except (OSError, ValueError): return {}

def read_wheel_list(path) -> dict:
    "name -> version from a `name==version` per line file (comments and blank lines ignored); names normalised"
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.split('#')[0].strip()
        if not line: continue
        name, _, ver = line.partition('==')
        out[re.sub(r'[-_.]+', '-', name.strip()).lower()] = ver.strip()
    return out

def wheel_name(path) -> str:
    "The normalised project name of a wheel file"
    return re.sub(r'[-_.]+', '-', Path(path).name.split('-')[0]).lower()

def parse_junit(path) -> dict:
    "Counts and failed tests of a pytest junit XML"
    root = ET.parse(path).getroot()
    suite = root if root.tag == 'testsuite' else root.find('testsuite')
    n = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
    cases, failed = [], []
    for c in suite.iter('testcase'):
        name = c.get('name'); t = float(c.get('time', 0))
        bad = c.find('failure') if c.find('failure') is not None else c.find('error')
        state = 'skipped' if c.find('skipped') is not None else 'failed' if bad is not None else 'passed'
        cases.append(dict(name=name, seconds=round(t, 2), state=state))
        if bad is not None: failed.append(dict(name=name, message=' '.join((bad.get('message') or bad.text or '').split())))
    return dict(n, passed=n['tests'] - n['failures'] - n['errors'] - n['skipped'], cases=cases, failed=failed)

def markdown(res:dict) -> str:
    "The human-readable summary"
    env = res['parts'].get('env', {})
    verdict = {0: 'PASSED', 1: 'FAILED', 3: 'PASSED, a speed goal missed'}.get(res.get('exit_code'), '?')
    L = [f"# GPU acceptance: {verdict}", '',
         f"{res['mode']} on {env.get('gpu') or env.get('cpu') or res['host']}; torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}, "
         f"cuDNN {env.get('cudnn', '-')}, Python {res['python']}, {env.get('cpu_count', '?')} cores; started {res['started']}, "
         f"{res.get('seconds', 0)} s of a {res['budget_s']:.0f} s budget.", '',
         '| part | status | seconds | CPU seconds |', '|---|---|---:|---:|']
    cpu = res.get('cpu_s', {})
    L += [f"| {k} | {v.get('status', '')} | {v.get('seconds', '')} | {sum(c for n, c in cpu.items() if n.split()[0] == k) or ''} |"
          for k, v in res['parts'].items()]
    L += ['', '| check | kind | result | value | goal | note |', '|---|---|---|---|---|---|']
    mark = {True: 'ok', False: '**FAIL**', None: 'n/a'}
    L += [f"| {c['name']} | {c['kind']} | {mark[c['ok']] if c['kind'] == 'required' or c['ok'] is not False else '**missed**'} | "
          f"{c['value'] if c['value'] is not None else ''} | {c['goal'] or ''} | {c['note']} |" for c in res['checks']]
    ts = res['parts'].get('train_step', {})
    if ts.get('rows'):
        L += ['', f"## Training step: {ts['backbone']}, {ts['size']} px, the original at batch {ts['batch']}, {ts['device']} "
                  f"(median of up to {ts['steps']} steps, interleaved" + (f"; fp32 = PyTorch's default, TF32 convolutions {'on' if ts.get('tf32', {}).get('cudnn') else 'off'})"
                                                         if ts.get('cudnn') else ')'), '',
              '| configuration | batch | ms/step | images/s | speed-up vs original (images/s) | peak GPU mem GB | warm-up s | notes |',
              '|---|---:|---:|---:|---:|---:|---:|---|']
        for k, r in ts['rows'].items():
            mem = '' if r.get('peak_mem_gb') is None else f"{r['peak_mem_gb']:.2f}"
            L.append(f"| {k} | {r.get('batch', ts['batch'])} | {r['median_s'] * 1e3:.0f} | {r['images_per_s']:.2f} | "
                     f"{'' if r['speedup_vs_original'] is None else format(r['speedup_vs_original'], '.2f') + 'x'} | {mem} | "
                     f"{r.get('warmup_s', '')} | {r['note']} |")
        L += [f'| {k} | | | | | | | {"stopped" if k in ts["rows"] else "not run"}: {why} |' for k, why in ts.get('skipped', {}).items()]
    tp = res['parts'].get('throughput', {})
    if tp.get('markdown'): L += ['', '## ' + tp['markdown']]
    cv = res['parts'].get('curves', {})
    if cv.get('markdown'): L += ['', '## ' + cv['markdown']]
    t = res['parts'].get('tests', {})
    if t.get('cases'):
        L += ['', '## Tests (`pytest -m gpu tests/test_gpu.py`)', '', '| test | result | seconds |', '|---|---|---:|']
        L += [f"| {c['name']} | {c['state']} | {c['seconds']} |" for c in t['cases']]
        for f in t.get('failed', []): L += ['', f"`{f['name']}`: {f['message'][:600]}"]
        if t.get('facts'): L += ['', 'Figures the tests recorded:', '', '```json', json.dumps(t['facts'], indent=1, default=str)[:4000], '```']
    return '\n'.join(L) + '\n'


def env_probe(path:Path, dry:bool):
    "Written to `path`: Python, torch, CUDA, GPU, cores, carried packages' versions, import errors of the package's modules"
    import importlib, importlib.metadata as md, pkgutil, traceback
    info = dict(python=platform.python_version(), cpu_count=os.cpu_count(), cpu=platform.processor() or platform.machine(), import_errors={})
    try:
        import torch
        info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                    tf32=dict(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32))
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update(gpu=p.name, gpu_mem_gb=round(p.total_memory / 2**30, 1), capability=f'{p.major}.{p.minor}',
                        sms=p.multi_processor_count, cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
            try:
                conv = torch.nn.Conv2d(8, 8, 3).cuda().to(memory_format=torch.channels_last)
                with torch.autocast('cuda', dtype=torch.bfloat16): y = conv(torch.rand(2, 8, 16, 16, device='cuda'))
                info['bf16_conv'] = 'ok' if y.dtype == torch.bfloat16 and torch.isfinite(y).all() else f'got {y.dtype}'
            except Exception as e: info['bf16_conv'] = f'{type(e).__name__}: {e}'
    except Exception as e: info['import_errors']['torch'] = f'{type(e).__name__}: {e}'
    versions = {}
    for name in list(read_wheel_list(REPO/'bench'/'gpu_wheels.txt')) + ['torchvision', 'numpy', 'opencv-python-headless', 'onnx',
                                                                        'onnxruntime', 'pandas', 'scikit-image', 'timm', 'pillow']:
        with contextlib.suppress(md.PackageNotFoundError): versions[name] = md.version(name)
    info['versions'] = versions
    try:
        import pneumonia_kit
        info['pneumonia_kit'] = dict(version=pneumonia_kit.__version__, path=str(Path(pneumonia_kit.__file__).parent))
        for m in pkgutil.iter_modules(pneumonia_kit.__path__):
            if m.name.startswith('_'): continue
            try: importlib.import_module(f'pneumonia_kit.{m.name}')
            except Exception as e: info['import_errors'][f'pneumonia_kit.{m.name}'] = f'{type(e).__name__}: {e}'
        if not dry:   # pretrainedmodels' SE-ResNeXt builds on this Python (no weights)
            try:
                from pneumonia_kit.backbones import create_backbone
                create_backbone('se_resnext50_32x4d')
            except Exception as e: info['import_errors']['se_resnext50_32x4d'] = f'{type(e).__name__}: {e}'
    except Exception as e: info['import_errors']['pneumonia_kit'] = ''.join(traceback.format_exception_only(e)).strip()
    Path(path).write_text(json.dumps(info, indent=1))
    if info['import_errors'] or (not dry and not info.get('cuda_available')): raise SystemExit(1)


def no_cuda(env:dict|None=None) -> str|None:
    "Why the torch that the parts will run (this Python's, under `env`) sees no CUDA GPU, or None when it sees one"
    try: p = subprocess.run([sys.executable, '-c', 'import torch; print(torch.__version__, torch.cuda.is_available())'],
                            capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired: return f'{sys.executable}: importing torch and asking for CUDA took over 120 s'
    if p.returncode: return f"{sys.executable} cannot import torch ({(p.stderr.strip().splitlines() or ['?'])[-1]})"
    ver, ok = p.stdout.split()[-2:]
    return None if ok == 'True' else f'no CUDA GPU here (torch {ver} sees none)'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out', type=Path, nargs='?', help='folder for results.json, results.md, acceptance.log, tests_junit.xml')
    p.add_argument('--dry-run', action='store_true', help='on the CPU, reduced (tiny model, 128-256 px, few steps), no install')
    p.add_argument('--only', default=None, help=f'comma-separated parts ({",".join(PARTS)}); install always runs on the GPU unless --skip-install')
    p.add_argument('--skip-install', action='store_true', help='use what is installed (PYTHONPATH) instead of the carried wheels')
    p.add_argument('--budget-s', type=float, default=None, help=f'the whole run (default {BUDGET[0]} s on the GPU, {BUDGET[1]} s dry)')
    p.add_argument('--work', type=Path, default=Path('/tmp/pk_gpu_acceptance'), help='scratch folder (twin, run folders)')
    p.add_argument('--site', type=Path, default=Path('/tmp/site'), help='where the wheels and the package are installed')
    p.add_argument('--wheels', type=Path, default=REPO/'.whl', help='the carried wheels')
    p.add_argument('--env-probe', type=Path, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.env_probe: env_probe(a.env_probe, a.dry_run); return 0
    if a.out is None: p.error('OUT_DIR is required')
    parts = list(PARTS) if a.only is None else [s.strip() for s in a.only.split(',') if s.strip()]
    bad = [s for s in parts if s not in PARTS]
    if bad: p.error(f'--only: unknown part(s) {", ".join(bad)}; choose from {", ".join(PARTS)}')
    if not a.dry_run and (why := no_cuda()):   # one line, nothing written
        print(f'gpu_acceptance: error: {why}: run it on the GPU machine, or --dry-run on the CPU', file=sys.stderr); return 2
    if a.dry_run or a.skip_install: parts = [s for s in parts if s != 'install']
    elif 'install' not in parts: parts.insert(0, 'install')
    a.out.mkdir(parents=True, exist_ok=True)
    for f in ('results.json', 'results.md', 'acceptance.log', 'tests_junit.xml'): (a.out/f).unlink(missing_ok=True)
    a.work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(a.work/'pytest', ignore_errors=True)   # only what this script makes there; the twin is kept for reruns
    for f in [*a.work.glob('*.json'), *a.work.glob('*.log'), *a.work.glob('*.xml')]: f.unlink()
    acc = Acceptance(a.out, a.dry_run, a.work, a.site, a.wheels, a.budget_s or BUDGET[1 if a.dry_run else 0], parallel=a.dry_run)
    acc.res['parts_run'] = parts
    fns = dict(install=acc.install, env=acc.probe, tests=acc.tests, train_step=acc.train_step, throughput=acc.throughput, curves=acc.curves)
    if acc.parallel:   # the dry run: the lanes side by side
        lanes = [[n for n in lane if n in parts] for lane in LANES]
        threads = [threading.Thread(target=lambda ns=ns: [acc.part(n, fns[n]) for n in ns]) for ns in lanes if ns]
        for t in threads: t.start()
        for t in threads: t.join()
    else:
        for name in parts: acc.part(name, fns[name])
    acc.save()
    print(markdown(acc.res), flush=True)
    return acc.res['exit_code']


if __name__ == '__main__': sys.exit(main())
