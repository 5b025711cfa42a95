#!/usr/bin/env python
"""The board lab (issue 24), the driver behind `bench/gpu_lab.sh`: is the board model not worse than the original when
both are trained properly, at 512 px, on a GPU? One call on the lent GPU machine (<= 8 minutes), JSON + markdown out.

    python bench/gpu_lab.py OUT_DIR              # on the GPU machine (bench/gpu_lab.sh calls this)
    python bench/gpu_lab.py OUT_DIR --dry-run    # the same stages on the CPU, tiny (tests/test_gpu_lab.py, CI)

Stages, each through the `pneumonia-kit` command line in its own process (the same code a user runs):
  twin     the default-difficulty twin (>= 2,000 training and 1,000 test images), made once and reused (--data)
  cache    the decoded training images at the models' input sizes
  train    (a) the original network, SE-ResNeXt50 P2-P7 (not 101: half the step time, and the meter counted the 50;
           the gap between the two is the backbone's, not the board model's question); (b) `board_r18_p4p7` on the
           labels; (d) the same board model at a lower input size, 384 px (the meter, 2026-12-06: 1.215 G instructions
           per image after the first, 19.8x fewer than the original's 24.03 G, just short of the moonshot's 20x); (e) the
           moonshot's candidate: (d) with 2 convs per subnet instead of 4 (1.140 G, 21.1x; narrower 96-channel FPN and
           heads counted the same, 1.137 G; P4-P6 at 320 px 1.208 G; 256 px 0.751 G, 32x, but anchors from 32 px), trained
           last, at (d)'s learning rate, so it is the one the budget drops first.
           Each gets the same epochs, BatchNorm trained (frozen statistics of no pretrained weights would leave a backbone
           unnormalised, the deep SE-ResNeXt far more than ResNet18) and the learning rate as given (no batch scaling:
           the `original` preset's sqrt(batch / 4) rule would give (a) 2.8x the rate at batch 32), and its own learning
           rate from the grid, chosen on the validation fold (best_val_map): the grid's first rate always, each further
           one only while the budget still leaves one run for every model after it and RESERVE_S for test and pareto.
           Every training stops cleanly at an epoch's end within its share (--max-minutes) and is killed, with its
           processes, at it
  distill  (c) `board_r18_p4p7` distilled from (a)'s best epoch, the learning rate (b) chose
  test     (a) by PyTorch on the GPU (its board-runtime forward takes ~0.5 s an image on 16 x86 cores: 1,000 images would
           not fit the budget; the export's parity check ties ONNX to PyTorch) and scored; (b)-(d) exported
  pareto   `pneumonia-kit board-pareto b c d --original a --original-submission (a)'s CSV`: (b)-(d) predicted by the
           board predictor with OpenCV DNN on the machine's cores, scored on the same test images and paired against
           (a) with 95% intervals and the images counted; board instructions per image after the first (the first
           beside it) from the meter (its cache, else bench/meter_counts.json); the recommended candidate and the
           cheapest that is not worse (moonshot: >= 20x fewer per image)
  compare  the paired difference (c)-(b): did distillation beat label-only training
From scratch for every network (no ImageNet weights can be downloaded there), stated in the results.

Work (the twin, runs, exports, predictions, board-pareto's folder) goes to --work (default /tmp/pk_gpu_lab on the GPU,
OUT_DIR/work in the dry run); OUT_DIR gets only lab.json, lab.md, lab.log, pareto.md and pareto.json (the device tool
brings back at most 8 files). Exit status: 0 all stages ran; 1 a stage failed or the budget ran out (lab.md says which);
2 bad usage or input (no GPU without --dry-run, a reused twin of another size, count or difficulty, no meter counts),
one line. Standard library only here.
"""
from __future__ import annotations
import argparse, datetime, json, os, platform, shutil, signal, subprocess, sys, time
from pathlib import Path
from gpu_acceptance import installed_site, no_cuda   # bench/ is this script's folder: the acceptance's probe and install

REPO = Path(__file__).resolve().parent.parent
BUDGET = (450., 300.)   # seconds for the whole lab: GPU, dry run
RESERVE_S = (200., 20.)   # kept for test + pareto (GPU: 1,000 images x 4 board models through OpenCV on 16 cores), dry run
MIN_TRAIN_S = (40., 0.)   # a further grid rate runs only if each model still to train keeps this much (GPU, dry run)
CHEAP_SET = ('model.head_convs=2',)   # (e): the board model's --set, 2 convs per subnet instead of 4
FAIR_SET = ('model.freeze_bn=false', 'train.lr_base_batch=null')   # every model: BatchNorm trained, the lr as given
# `pneumonia-kit`, from the package PYTHONPATH names (this checkout, then the install's dependencies)
KIT = (sys.executable, '-c', 'import sys; from pneumonia_kit.cli import main; sys.exit(main())')
# (GPU, dry run): twin, model presets, input sizes, epochs, batch, learning-rate grid
GPU = dict(n_images=2000, n_test=1000, twin_size=512, difficulty='default', original='original', board='board_r18_p4p7',
           backbone='se_resnext50_32x4d', size=512, low_size=384, cheap_set=CHEAP_SET, epochs=6, batch_size=32, lr_grid=(1e-3, 3e-4),
           amp='bf16', device='cuda', threads=16, workers=8)
DRY = dict(n_images=32, n_test=12, twin_size=256, difficulty='easy', original='tiny', board='tiny_light', backbone=None,
           size=256, low_size=128, cheap_set=CHEAP_SET, epochs=1, batch_size=8, lr_grid=(1e-3,), amp='off', device='cpu', threads=1, workers=0)
MODELS = ('a', 'b', 'c', 'd', 'e')
ROLES = dict(a='the original', b='board model, labels', c='board model, distilled from (a)', d='board model, labels, low size',
             e='board model, labels, low size, 2 convs per subnet (the moonshot candidate)')


class LabError(Exception): "Bad usage or input: one line, exit 2"


def _now() -> str: return datetime.datetime.now().isoformat(timespec='seconds')


class Lab:
    def __init__(self, out:Path, work:Path, data:Path, cfg:dict, dry:bool, budget:float, env:dict):
        self.out, self.work, self.data, self.cfg, self.dry, self.env = out, work, data, cfg, dry, env
        self.deadline, self.log = time.monotonic() + budget, out/'lab.log'
        self.reserve, self.min_train = RESERVE_S[dry], MIN_TRAIN_S[dry]
        self.res = dict(mode='dry-run (CPU, tiny)' if dry else 'GPU', started=_now(), host=platform.node(), budget_s=budget,
                        cfg=cfg, from_scratch=True, stages={}, models={}, pairs={}, notes=[])

    def left(self) -> float: return self.deadline - time.monotonic()

    def kit(self, stage:str, *args, limit:float|None=None) -> float:
        """Run `pneumonia-kit ARGS` (output appended to lab.log); its seconds; StageError when it fails or runs out of
        time (then it is killed with every process it started: loader workers, board-pareto's predictor)"""
        limit = max(1., min(limit or self.left(), self.left()))
        cmd = [*KIT, *map(str, args)]
        t = time.monotonic()
        with open(self.log, 'a', encoding='utf-8') as f:
            f.write(f'\n[{_now()}] {stage}: pneumonia-kit {" ".join(map(str, args))}\n'); f.flush()
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env, cwd=self.work, start_new_session=True)
            try: rc = p.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                try: os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError: pass
                p.wait(); rc = 'timeout'
        s = round(time.monotonic() - t, 1)
        if rc != 0: raise StageError(f'{stage}: pneumonia-kit {args[0]} ' + (f'ran past {limit:.0f} s' if rc == 'timeout' else f'exited {rc}') + ' (lab.log)')
        return s

    def stage(self, name:str, fn):
        t = time.monotonic()
        try: fn(); status = 'passed'
        except StageError as e: status = str(e)
        self.res['stages'][name] = dict(status=status, seconds=round(time.monotonic() - t, 1))
        self.save()
        return status == 'passed'

    def save(self):
        self.res['finished'] = _now()
        (self.out/'lab.json').write_text(json.dumps(self.res, indent=2), encoding='utf-8')
        (self.out/'lab.md').write_text(markdown(self.res), encoding='utf-8')

    # ------------------------------------------------------------------ stages
    def twin(self):
        c, spec = self.cfg, self.data/'synthetic_twin.json'
        if spec.is_file(): self.res['notes'].append(f'twin reused: {self.data}'); return
        self.kit('twin', 'synth', self.data, '--n-images', c['n_images'], '--n-test', c['n_test'], '--size', c['twin_size'],
                 '--difficulty', c['difficulty'], '--seed', 0)

    def cache(self):
        for s in (self.cfg['size'], self.cfg['low_size']): self.kit('cache', 'cache', self.data, '--size', s, '--split', 'train')

    def _train(self, key:str, lr:float, run:Path, preset:str, size:int, limit:float, distill_from:Path|None=None) -> float:
        c = self.cfg
        common = ['--out', run, '--preset', preset, '--epochs', c['epochs'], '--image-size', size, '--batch-size', c['batch_size'],
                  '--lr', lr, '--device', c['device'], '--amp', c['amp'], '--no-pretrained', '--seed', 0, '--num-workers', c['workers'],
                  '--set', *FAIR_SET, '--max-minutes', f'{max(limit - 20, 10) / 60:.3f}']   # 20 s: start-up and the last save
        if key == 'a' and c['backbone']: common += ['--backbone', c['backbone']]
        if key == 'e': common += ['--set', *c['cheap_set']]
        if distill_from: return self.kit(f'distill {key}', 'distill', distill_from, '--data', self.data, *common, limit=limit)
        return self.kit(f'train {key} lr={lr:g}', 'train', self.data, *common, limit=limit)

    def train(self, key:str):
        """Train model `key` at each learning rate of the grid ((c): at (b)'s choice, (e): at (d)'s) that the budget allows;
        keep the best on validation. A run that fails or runs out of time is recorded and the others kept"""
        c, m = self.cfg, self.res['models']
        preset, size = (c['original'], c['size']) if key == 'a' else (c['board'], c['low_size'] if key in 'de' else c['size'])
        grid = [m['b']['lr']] if key == 'c' else [m['d']['lr']] if key == 'e' and 'd' in m else list(c['lr_grid'])
        later = len(MODELS) - 1 - MODELS.index(key)   # models trained after this one, each owed one run
        tried, errors = [], []
        for i, lr in enumerate(grid):
            share = self.left() - self.reserve - later * self.min_train   # what this run may take
            if i and tried and share < tried[0]['train_s']:   # a further rate only when it fits beside the rest
                self.res['notes'].append(f"({key}): learning rates {list(grid[i:])} not tried: {self.left():.0f} s left "
                                         f"(one run took {tried[0]['train_s']:.0f} s; {self.reserve:.0f} s kept for test and pareto)")
                break
            if share < 10: errors.append(f'lr {lr:g}: not started, {self.left():.0f} s left'); break
            run = self.work/'runs'/f'{key}_lr{lr:g}'
            teacher = Path(self.res['models']['a']['run']) if key == 'c' else None
            try: secs = self._train(key, lr, run, preset, size, share, teacher)
            except StageError as e: errors.append(f'lr {lr:g}: {e}'); continue
            summ = json.loads((run/'summary.json').read_text(encoding='utf-8'))
            if summ.get('stopped', 'completed') != 'completed': self.res['notes'].append(f"({key}) lr {lr:g}: {summ['stopped']}")
            tried.append(dict(lr=lr, run=str(run), train_s=secs, val_map=summ.get('best_val_map'), best_epoch=summ.get('best_epoch'),
                              epochs_done=summ.get('epochs_done')))
        if not tried: raise StageError('; '.join(errors) or 'no run')
        if errors: self.res['notes'].append(f'({key}): ' + '; '.join(errors))
        best = max(tried, key=lambda t: -1 if t['val_map'] is None else t['val_map'])
        net = ' / '.join([preset] + ([c['backbone']] if key == 'a' and c['backbone'] else [])
                         + ([' '.join(c['cheap_set'])] if key == 'e' else []))
        self.res['models'][key] = dict(best, name=f'{ROLES[key]}: {net}', preset=preset, size=size, grid=tried)

    def test(self):
        """(a) predicted by PyTorch and scored; (b)-(e) exported (`pareto` predicts them on the board runtime). A model that
        fails is recorded and the others go on (board-pareto runs on the exports there are)"""
        labels, images, c = self.data/'synthetic_test_labels.csv', self.data/'stage_2_test_images', self.cfg
        errors = []
        for key, m in self.res['models'].items():
            try:
                if key == 'a':
                    sub = self.work/'subs'/'a.csv'
                    m['test_s'] = self.kit('test a', 'predict', m['run'], '--images', images, '--out', sub, '--device', c['device'])
                    m['test_ms_per_image'] = round(1e3 * m['test_s'] / c['n_test'], 1)
                    m['runtime'], m['submission'] = f'PyTorch ({c["device"]})', str(sub)
                    m['score'] = self.score('score', sub, labels)
                else:
                    d = self.work/'models'/key
                    m['export_s'] = self.kit(f'export {key}', 'export', m['run'], '--out', d)
                    m['model_dir'] = str(d)
            except StageError as e: errors.append(f'({key}) {e}')
        if errors: raise StageError('; '.join(errors))

    def pareto(self):
        "board-pareto: (b)-(d) on the board runtime, scored and paired against (a)'s PyTorch predictions, with board counts"
        m, c, out = self.res['models'], self.cfg, self.work/'pareto'
        cands = [f"{k}={m[k]['model_dir']}" for k in 'bcde' if 'model_dir' in m.get(k, {})]
        if 'submission' not in m.get('a', {}) or not cands: raise StageError('pareto: (a) or every board model is missing')
        s = self.kit('pareto', 'board-pareto', *cands, '--original', f"a={m['a']['run']}", '--original-submission',
                     m['a']['submission'], '--data', self.data, '--out', out, '--n-test', c['n_test'],
                     '--threads', c['threads'], '--python', sys.executable)
        doc = json.loads((out/'pareto.json').read_text(encoding='utf-8'))
        for f in ('pareto.md', 'pareto.json'): shutil.copy(out/f, self.out/f)   # back from the GPU machine with lab.md
        self.res['pareto'] = {k: doc.get(k) for k in ('recommended', 'cheapest_not_worse', 'moonshot', 'criteria')}
        self.res['pareto'].update(seconds=s, table='pareto.md')
        self.res['meter'] = {}
        for r in doc['rows']:
            k = r['name']
            self.res['meter'][k] = r['insns_first_G'] and dict(first_G=r['insns_first_G'], per_image_G=r['insns_per_image_G'],
                per_image_is='second forward' if r['steady'] else 'first forward', fewer=r['fewer_insns'])
            if r['original']: continue
            # its own predicting time (board-pareto predicts every candidate in one call of `s` seconds)
            m[k].update(runtime=f"OpenCV DNN {r['opencv']} (board predictor)", test_ms_per_image=r.get('ms_per_image'),
                        submission=str(out/'candidates'/k/'test_submission.csv'),
                        score=dict(map=r['map'], ci95=r['ci95'], n_images=r['n_images'], n_counted=r['n_counted']))
            self.res['pairs'][f'{k}-a'] = dict(diff=r['diff'], ci95=r['diff_ci95'], p_value=r['p_value'],
                                               n_images=r['n_images'], n_counted_a=m['a']['score']['n_counted'],
                                               n_counted_b=r['n_counted'])

    def score(self, cmd, *args) -> dict:
        js = self.work/'subs'/f'{cmd}_{len(list((self.work/"subs").glob(f"{cmd}_*.json")))}.json'
        try:
            p = subprocess.run([*KIT, cmd, *map(str, args), '--json'], capture_output=True, text=True, env=self.env,
                               cwd=self.work, timeout=max(30., self.left()))
        except subprocess.TimeoutExpired: raise StageError(f'{cmd}: ran past the budget') from None
        if p.returncode != 0: raise StageError(f'{cmd}: ' + (p.stderr.strip().splitlines() or ['failed'])[-1])
        js.write_text(p.stdout, encoding='utf-8')
        return json.loads(p.stdout)

    def compare(self):
        "(c)-(b): distilled against label-only; the pairs against (a) come from `pareto` (else from `compare` here)"
        labels, m = self.data/'synthetic_test_labels.csv', self.res['models']
        for a, b in (('a', 'b'), ('a', 'c'), ('a', 'd'), ('a', 'e'), ('b', 'c'), ('d', 'e')):
            if f'{b}-{a}' not in self.res['pairs'] and 'submission' in m.get(a, {}) and 'submission' in m.get(b, {}):
                self.res['pairs'][f'{b}-{a}'] = self.score('compare', m[a]['submission'], m[b]['submission'], labels)
        if not self.res.get('meter'):
            self.res['meter'] = meter_counts({k: v['model_dir'] for k, v in m.items() if 'model_dir' in v}, self.env, max(30., self.left()))


class StageError(Exception): "A stage failed: recorded, the lab goes on with what does not depend on it"


def meter_counts(dirs:dict, env:dict, limit:float=300.) -> dict:
    "Board instructions per image of each exported model (`meter.metered`: the meter's cache, else bench/meter_counts.json)"
    code = ('import json, sys; from pneumonia_kit.meter import metered\n'
            'print(json.dumps({k: metered(v) for k, v in json.loads(sys.argv[1]).items()}))')
    try: p = subprocess.run([sys.executable, '-c', code, json.dumps(dirs)], capture_output=True, text=True, env=env, timeout=limit)
    except subprocess.TimeoutExpired: return {'error': 'ran past the budget'}
    return json.loads(p.stdout) if p.returncode == 0 else {'error': (p.stderr.strip().splitlines() or ['failed'])[-1]}


def _fmt_score(s:dict|None) -> str:
    if not s: return '—'
    lo, hi = s.get('ci95') or (None, None)
    n = s.get('n_counted')
    return f"{s['map']:.3f} ({lo:.3f}-{hi:.3f}; {n} counted)" if lo is not None else f"{s['map']:.3f}"


def _fmt_pair(p:dict) -> str:
    lo, hi = p['ci95']
    return (f"{p['diff']:+.3f} ({lo:+.3f} to {hi:+.3f}), p = {p['p_value']:.4f}, {p['n_images']} images "
            f"({p['n_counted_a']} / {p['n_counted_b']} counted)")


def markdown(res:dict) -> str:
    L = [f"# Board lab ({res['mode']}), {res['started']}", '',
         f"Twin: {res['cfg']['n_images']} training / {res['cfg']['n_test']} test images ({res['cfg']['difficulty']}), "
         f"{res['cfg']['epochs']} epochs each, learning rate from {list(res['cfg']['lr_grid'])} on the validation fold, "
         'every network from scratch (no ImageNet weights on the GPU machine).', '',
         '| stage | status | s |', '|---|---|---|']
    L += [f"| {k} | {v['status']} | {v['seconds']} |" for k, v in res['stages'].items()]
    L += ['', '| model | lr | val mAP | train s | test mAP (95% interval; images counted) | runtime '
          '| test ms/image | board G insns per further image (first) | fewer than (a), per image |',
          '|---|---|---|---|---|---|---|---|---|']
    meter = res.get('meter') or {}
    ga = meter.get('a') if isinstance(meter.get('a'), dict) else None
    for k, m in res['models'].items():
        g = meter.get(k) if isinstance(meter.get(k), dict) else None
        cost = (f"{g['per_image_G']} ({g['first_G']})" + ('' if g['per_image_is'] == 'second forward' else ' first only')) if g else 'not metered'
        ratio = f"{ga['per_image_G'] / g['per_image_G']:.1f}x" if g and ga and ga['per_image_is'] == g['per_image_is'] == 'second forward' else '—'
        tr = round(sum(t['train_s'] for t in m.get('grid', [])), 1) if m.get('grid') else '—'
        L.append(f"| ({k}) {m['name']}, {m['size']} px | {m['lr']:g} | {m['val_map'] if m['val_map'] is None else round(m['val_map'], 3)} "
                 f"| {tr} | {_fmt_score(m.get('score'))} | {m.get('runtime', '—')} | {m.get('test_ms_per_image', '—')} | {cost} | {ratio} |")
    pa = res.get('pareto')
    if pa:
        ch = pa.get('cheapest_not_worse')
        L += ['', f"board-pareto ({pa['table']}): recommended {pa.get('recommended') or 'none'}; cheapest not worse "
              f"(lower paired bound >= -{pa['criteria']['max_loss']}) {ch or 'none'}" + (
                  f"; the moonshot (>= {pa['criteria']['moonshot']:.0f}x fewer per image) "
                  + ('reached' if pa.get('moonshot') else 'not reached') if ch else '')]
    if res['pairs']:
        L += ['', 'Paired differences (second - first), 95% interval, permutation p:', '']
        L += [f'- {k}: {_fmt_pair(v)}' for k, v in res['pairs'].items()]
    L += ['', '- Board instructions: the meter (QEMU LoongArch, LSX only, OpenCV 4.10, 1 thread) by architecture; the ratio '
          'is on the per-image (further image) basis, and only where both sides have that count.']
    L += ["- test ms/image: (b)-(e) the board predictor over the test images (OpenCV DNN, the lab's threads, model "
          'load included); (a) the whole `predict` command (process start and model load included) divided by the test images.']
    L += [f'- {n}' for n in res['notes']]
    return '\n'.join(L) + '\n'


def check_inputs(data:Path, cfg:dict, dry:bool, env:dict, meter_dir:Path|None):
    "Bad input, one line each, before any work: no GPU, a reused twin of another size, no meter counts"
    spec = data/'synthetic_twin.json'
    if spec.is_file():
        try: t = json.loads(spec.read_text(encoding='utf-8'))
        except (OSError, ValueError) as e: raise LabError(f'{spec}: not a twin settings file ({e})')
        if t.get('size', 0) < cfg['size']:
            raise LabError(f"{data}: the twin's images are {t.get('size')} px, smaller than the models' {cfg['size']} px input; make a new one (another --data)")
        if t.get('n_images') != cfg['n_images'] or t.get('n_test') != cfg['n_test']:   # the budget and the test set are sized for these
            raise LabError(f"{data}: the twin has {t.get('n_images')} training / {t.get('n_test')} test images, the lab needs "
                           f"{cfg['n_images']} / {cfg['n_test']}; make a new one (another --data)")
        if t.get('difficulty') != cfg['difficulty']:
            raise LabError(f"{data}: the twin's difficulty is {t.get('difficulty')!r}, the lab's is {cfg['difficulty']!r}; make a new one (another --data)")
    elif data.exists() and any(data.iterdir()):
        raise LabError(f'{data}: not a synthetic twin (no synthetic_twin.json) and not empty')
    counts = (meter_dir/'meter'/'cache.json') if meter_dir else REPO/'bench'/'meter_counts.json'
    if not counts.is_file():
        raise LabError(f'{counts}: no board meter counts (commit bench/meter_counts.json, or build the meter: scripts/loongarch_meter.sh)')
    if not dry and no_cuda(env): raise LabError('no CUDA GPU here: run the lab on the GPU machine, or --dry-run on the CPU')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='bench/gpu_lab.sh', description=__doc__.split('\n\n')[0])
    p.add_argument('out', type=Path, metavar='OUT_DIR', help='lab.json, lab.md, lab.log, pareto.md, pareto.json')
    p.add_argument('--work', type=Path, default=None, help='the twin, runs, exports, predictions, board-pareto folder '
                   '(default /tmp/pk_gpu_lab; OUT_DIR/work in the dry run)')
    p.add_argument('--dry-run', action='store_true', help='on the CPU, tiny (CI)')
    p.add_argument('--data', type=Path, default=None, help='the twin (made if missing, reused if there; default WORK/twin)')
    p.add_argument('--budget-s', type=float, default=None, help=f'the whole lab (default {BUDGET[0]:.0f} s GPU, {BUDGET[1]:.0f} s dry)')
    p.add_argument('--epochs', type=int, default=None, help='epochs of every model (default 6 GPU, 1 dry)')
    p.add_argument('--meter-dir', type=Path, default=None, help="the board meter's folder (default: bench/meter_counts.json)")
    p.add_argument('--site', type=Path, default=Path('/tmp/site'), help="the acceptance's install (carried wheels + the package); made when missing")
    a = p.parse_args(argv)
    cfg = dict(DRY if a.dry_run else GPU)
    if a.epochs is not None:
        if not 1 <= a.epochs <= 100: print(f'gpu_lab: error: --epochs {a.epochs}: use 1..100', file=sys.stderr); return 2
        cfg['epochs'] = a.epochs
    out = a.out.resolve()
    work = (a.work or (out/'work' if a.dry_run else Path('/tmp/pk_gpu_lab'))).resolve()
    data = (a.data or work/'twin').resolve()
    env = dict(os.environ, PYTHONUNBUFFERED='1', MPLBACKEND='Agg')
    site = None if a.dry_run else a.site   # the dry run uses what is installed here
    if a.meter_dir: env['LOONGARCH_WORK'] = str(a.meter_dir.resolve())
    if a.dry_run: env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    try: check_inputs(data, cfg, a.dry_run, env, a.meter_dir)
    except LabError as e: print(f'gpu_lab: error: {e}', file=sys.stderr); return 2
    out.mkdir(parents=True, exist_ok=True)
    for d in (work/'runs', work/'subs', work/'models'): d.mkdir(parents=True, exist_ok=True)
    # the acceptance's install part (carried wheels + this package, in a --prefix), once per machine
    if site and not (found := installed_site(site)):
        r = subprocess.run([sys.executable, str(REPO/'bench'/'gpu_acceptance.py'), str(work/'install'), '--only', 'install',
                            '--site', str(site)], stdout=subprocess.DEVNULL)
        if r.returncode != 0 or not (found := installed_site(site)):
            print(f'gpu_lab: error: the install failed: {work}/install/results.md', file=sys.stderr); return 1
    site = found if site else None
    # this checkout first (the meter's committed counts are found beside the package), then the installed dependencies
    env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + ([str(site)] if site else [])
                                        + [q for q in env.get('PYTHONPATH', '').split(os.pathsep) if q])
    lab = Lab(out, work, data, cfg, a.dry_run, a.budget_s or BUDGET[1 if a.dry_run else 0], env)
    ok = lab.stage('twin', lab.twin) and lab.stage('cache', lab.cache)
    if ok and lab.stage('train a', lambda: lab.train('a')):
        if lab.stage('train b', lambda: lab.train('b')): lab.stage('distill c', lambda: lab.train('c'))
        lab.stage('train d', lambda: lab.train('d'))
        lab.stage('train e', lambda: lab.train('e'))   # last: the moonshot's candidate, when the budget still allows
    if lab.res['models']:
        lab.stage('test', lab.test)   # a model that failed there is left out of pareto; the others go on
        lab.stage('pareto', lab.pareto)
        lab.stage('compare', lab.compare)
    lab.save()
    failed = [k for k, v in lab.res['stages'].items() if v['status'] != 'passed']
    missing = [k for k in MODELS if k not in lab.res['models']]
    print((out/'lab.md').read_text(encoding='utf-8'))
    if failed or missing: print(f'gpu_lab: failed: {", ".join(failed) or "-"}; models missing: {", ".join(missing) or "-"}', file=sys.stderr)
    return 1 if failed or missing else 0


if __name__ == '__main__': raise SystemExit(main())
