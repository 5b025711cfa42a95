#!/usr/bin/env python
"""Calibrate the synthetic twin: on a twin test set of (by default) 1,000 images, score the CPU demo model, two
baselines (no boxes; the mean box of each lung) and the oracle that predicts the noise-free true boxes (the twin's
inter-reader ceiling), each with a 95% bootstrap interval over images (`metric.bootstrap_ci`); and train one bigger
or longer-trained model to show that it measurably helps (`metric.compare_scores`: paired bootstrap interval and
permutation p-value over the same images).

    python bench/bench_twin.py [--data data/twin_bench] [--out outputs/bench_twin] [--n-images 400] [--n-test 1000]
                               [--difficulty default] [--knob NAME=VALUE ...] [--pair epochs=40] [--no-pair]
                               [--base FIELD=VALUE ...] [--retrain | --reuse]

The twin is (re)made in DATA when its `synthetic_twin.json` does not match the settings asked for; a training run
in OUT/runs/NAME is reused when its `bench_config.json` shows the same configuration (--retrain: train again;
--reuse: take the run folders as they are, e.g. checkpoints trained by an earlier version of the package).
Every run's thresholds are swept again on its validation fold and the test set predicted again by this code.
Prints a table and writes OUT/bench_twin.json and OUT/bench_twin.md.
"""
import dataclasses, json, os, platform, shutil, subprocess, time
from pathlib import Path
import numpy as np
import pneumonia_kit
from pneumonia_kit.core import cfg2dict
from pneumonia_kit.cmdline import ArgParser, nonneg_int, positive_int
from pneumonia_kit.metric import bootstrap_ci, compare_scores, image_scores
from pneumonia_kit.csvio import read_gt_labels, read_submission, score_submission
from pneumonia_kit.scene import DIFFICULTIES, SynthCfg
from pneumonia_kit.synth import synth_dataset
from pneumonia_kit.train import fit
from pneumonia_kit.presets import preset_cfgs
from pneumonia_kit.sweep import sweep_run
from pneumonia_kit.predict import predict

TRUTH_CSV, TEST_LABELS, TWIN_JSON = 'synthetic_test_truth.csv', 'synthetic_test_labels.csv', 'synthetic_twin.json'


def make_twin(data, n_images, n_test, seed, difficulty, knobs) -> tuple:
    "The twin in `data`, made afresh (folder wiped: no stale cache or folds) unless its settings match; (settings, seconds)"
    data, want = Path(data), dict(seed=seed, n_images=n_images, n_test=n_test, size=1024, difficulty=difficulty, overrides=knobs)
    js = data/TWIN_JSON
    if js.is_file():
        have = json.loads(js.read_text())
        if {k: have.get(k) for k in want} == json.loads(json.dumps(want)): return have, None
    if data.exists(): shutil.rmtree(data)
    t0 = time.time()
    synth_dataset(data, n_images=n_images, n_test=n_test, seed=seed, size=1024, progress=False, difficulty=difficulty, **knobs)
    return json.loads(js.read_text()), round(time.time() - t0, 1)


def _typed(old, s):
    "`s` parsed as the type of `old` (bool, int, float, tuple of numbers or names, str)"
    if isinstance(old, bool): return s.lower() in ('1', 'true', 'yes')
    if isinstance(old, (int, float)): return type(old)(s)
    if isinstance(old, tuple): return tuple(x if isinstance(old[0], str) else type(old[0])(x) for x in s.split(','))
    return s


def configs(changes:dict):
    "The cpu_demo (ModelCfg, TrainCfg) with `changes` (field name -> string) applied to whichever has the field"
    mc, tc = preset_cfgs('cpu_demo')
    for k, v in changes.items():
        cfg = mc if hasattr(mc, k) else tc if hasattr(tc, k) else None
        if cfg is None: raise SystemExit(f'bench_twin: error: {k}=...: neither a ModelCfg nor a TrainCfg field')
        if cfg is mc: mc = dataclasses.replace(mc, **{k: _typed(getattr(mc, k), v)})
        else: tc = dataclasses.replace(tc, **{k: _typed(getattr(tc, k), v)})
    return mc, dataclasses.replace(tc, progress=False)


def train_and_predict(data, run, mc, tc, retrain=False, reuse=False) -> dict:
    "Train (or reuse) a run, sweep its thresholds on the validation fold, predict the twin's test set"
    run, info = Path(run), dict(model=cfg2dict(mc), train=cfg2dict(tc))
    cfg_file = run/'bench_config.json'
    same = (run/'summary.json').is_file() and cfg_file.is_file() and json.loads(cfg_file.read_text()) == info
    if reuse and not (run/'summary.json').is_file(): raise SystemExit(f'bench_twin: error: --reuse: {run} has no summary.json')
    if not reuse and (retrain or not same):
        if run.exists(): shutil.rmtree(run)
        t0 = time.time()
        fit(data, fold=tc.fold, out=run, model_cfg=mc, train_cfg=tc, device='cpu')
        cfg_file.write_text(json.dumps(info))
        info['train_minutes'] = round((time.time() - t0) / 60, 2)
    s = json.loads((run/'summary.json').read_text())
    t0 = time.time(); sw = sweep_run(run); t_sweep = time.time() - t0
    sub = run/'test_submission.csv'
    t0 = time.time(); pr = predict(run, Path(data)/'stage_2_test_images', out=sub, device='cpu', progress=False)
    return dict(info, run=str(run), reused_as_is=reuse, submission=str(sub), epochs_done=s.get('epochs_done'),
                chosen=sw['best'], val_images=int(json.loads((run/'best_post.json').read_text())['n_images']),
                sweep_seconds=round(t_sweep, 1), predict_seconds=round(time.time() - t0, 1), predict_ms_per_image=pr['ms_per_image'],
                train_minutes=info.get('train_minutes', s.get('minutes')))


def _commit() -> str:
    "The package's git commit (with '+changes' when its tree differs), or 'unknown'"
    root = Path(pneumonia_kit.__file__).parent.parent
    try:
        h = subprocess.run(['git', '-C', str(root), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', str(root), 'status', '--porcelain', '--untracked-files=no'], capture_output=True, text=True).stdout.strip()
        return h + ('+changes' if dirty else '')
    except (OSError, subprocess.CalledProcessError): return 'unknown'


def main():
    ap = ArgParser(prog='bench_twin', description=__doc__.split('\n\n')[0])
    ap.add_argument('--data', metavar='DIR', default='data/twin_bench', help='twin folder (default: %(default)s)')
    ap.add_argument('--out', metavar='DIR', default='outputs/bench_twin', help='runs and results (default: %(default)s)')
    ap.add_argument('--n-images', metavar='N', type=positive_int, default=400, help='training images (default: %(default)s)')
    ap.add_argument('--n-test', metavar='N', type=positive_int, default=1000, help='test images (default: %(default)s)')
    ap.add_argument('--seed', metavar='N', type=nonneg_int, default=0, help='twin seed (default: %(default)s)')
    ap.add_argument('--difficulty', choices=tuple(DIFFICULTIES), default='default', help='twin difficulty (default: %(default)s)')
    ap.add_argument('--knob', metavar='NAME=VALUE', action='append', default=[], help='twin knob override (repeatable)')
    ap.add_argument('--pair', metavar='FIELD=VALUE', action='append', default=None,
                    help='the bigger/longer model: cpu_demo with FIELD=VALUE (repeatable; default epochs=40)')
    ap.add_argument('--base', metavar='FIELD=VALUE', action='append', default=[],
                    help='changes to cpu_demo for every run (e.g. epochs=2 for a smoke test)')
    ap.add_argument('--no-pair', action='store_true', help='only the cpu_demo model')
    g = ap.add_mutually_exclusive_group()
    g.add_argument('--retrain', action='store_true', help='train again even if a run with the same settings exists')
    g.add_argument('--reuse', action='store_true', help='take the run folders in OUT/runs as they are (not retrained, settings not checked)')
    ap.add_argument('--boot', metavar='N', type=positive_int, default=2000, help='bootstrap draws (default: %(default)s)')
    ap.add_argument('--threads', metavar='N', type=positive_int, help="torch threads (default: torch's choice)")
    a = ap.parse_args()
    if a.threads: __import__('torch').set_num_threads(a.threads)
    fields = {f.name: f.default for f in dataclasses.fields(SynthCfg)}
    try: knobs = {k: _typed(fields[k], v) for k, v in (s.split('=', 1) for s in a.knob)}
    except (KeyError, ValueError) as e: ap.error(f'--knob {e}: use NAME=VALUE with NAME one of {", ".join(fields)}')
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    twin, twin_s = make_twin(a.data, a.n_images, a.n_test, a.seed, a.difficulty, knobs)
    print(f"twin: {a.data} ({twin['difficulty']}, {a.n_images} train + {a.n_test} test images)" + (f', made in {twin_s} s' if twin_s else ', reused'))
    base = dict(s.split('=', 1) for s in a.base)
    pairs = [] if a.no_pair else [dict(s.split('=', 1) for s in (a.pair or ['epochs=40']))]
    tag = lambda ch, sep: sep.join(f'{k}={v}' for k, v in ch.items())
    runs = {'cpu_demo' + (f' ({tag(base, ", ")})' if base else ''):
            train_and_predict(a.data, out/'runs'/'cpu_demo', *configs(base), a.retrain, a.reuse)}
    for ch in pairs:
        runs[f'cpu_demo {tag(ch, " ")}'] = train_and_predict(a.data, out/'runs'/('cpu_demo_' + tag(ch, '_').replace(',', '-')),  # ',' separates checkpoints
                                                             *configs({**base, **ch}), a.retrain, a.reuse)

    data = Path(a.data)
    gt, truth = read_gt_labels(data/TEST_LABELS), read_gt_labels(data/TRUTH_CSV)
    train = read_gt_labels(data/'stage_2_train_labels.csv')
    boxes = np.concatenate([b for b in train.values() if len(b)]); cx = boxes[:, 0] + boxes[:, 2] / 2
    lungs = np.stack([boxes[cx < np.median(cx)].mean(0), boxes[cx >= np.median(cx)].mean(0)])
    preds = {'no boxes': {}, 'mean box of each lung (conf 1)': {p: (np.ones(2), lungs) for p in gt},
             'oracle: noise-free true boxes (conf 1)': {p: (np.ones(len(t)), t) for p, t in truth.items() if len(t)}}
    for name, r in runs.items(): preds[f'detector {name}'] = read_submission(r['submission'])
    scores = {k: image_scores(gt, v)[1] for k, v in preds.items()}
    for name, r in runs.items():   # the package's scorer agrees with the per-image scores
        ref = score_submission(r['submission'], data/TEST_LABELS, n_boot=10)
        assert abs(ref['map'] - np.nanmean(scores[f'detector {name}'])) < 1e-9 and ref['n_counted'] == int((~np.isnan(scores[f'detector {name}'])).sum())
    rows = [dict(predictor=k, map=float(np.nanmean(s)) if (~np.isnan(s)).any() else float('nan'), ci95=list(bootstrap_ci(s, a.boot)),
                 counted=int((~np.isnan(s)).sum()), images=len(gt)) for k, s in scores.items()]
    names, diffs = list(runs), []
    for other in names[1:]:
        c = compare_scores(gt, preds[f'detector {names[0]}'], preds[f'detector {other}'], n_boot=a.boot, n_perm=a.boot, top=0)
        diffs.append(dict(a=f'detector {names[0]}', b=f'detector {other}', diff=c['diff'], ci95=c['ci95'], p_value=c['p_value'], images=c['n_images']))
    det = next(r for r in rows if r['predictor'] == f'detector {names[0]}')
    base_hi = max(r['ci95'][1] for r in rows if not r['predictor'].startswith(('detector', 'oracle')))
    checks = {'detector test mAP in 0.15-0.35': 0.15 <= det['map'] <= 0.35,
              'detector interval above both baselines': det['ci95'][0] > base_hi,
              'oracle well below 1 (< 0.9)': next(r for r in rows if r['predictor'].startswith('oracle'))['map'] < 0.9}
    checks.update({f"{d['b']} beats {d['a']} (95% interval of the difference above 0)": d['ci95'][0] > 0 for d in diffs})
    machine = dict(platform=platform.platform(), cpus=os.cpu_count(), python=platform.python_version(),
                   pneumonia_kit=pneumonia_kit.__version__, commit=_commit())
    res = dict(twin=twin, twin_seconds=twin_s, runs=runs, rows=rows, paired=diffs, checks=checks, bootstrap=a.boot, machine=machine)
    (out/'bench_twin.json').write_text(json.dumps(res, indent=2, default=str))
    md = [f"Twin: {twin['difficulty']} difficulty, seed {twin['seed']}, {twin['n_images']} training images, "
          f"{twin['n_test']} test images (labels: consensus of {twin['knobs']['test_readers']} simulated readers). "
          f"95% bootstrap intervals over the test images ({a.boot} draws); 'counted': images with a box or a prediction.", '',
          '| predictor | test mAP | 95% interval | images counted / total |', '|---|---|---|---|']
    md += [f"| {r['predictor']} | {r['map']:.3f} | {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} | {r['counted']} / {r['images']} |" for r in rows]
    for d in diffs: md += ['', f"Paired difference, {d['b']} minus {d['a']}: {d['diff']:+.3f} (95% bootstrap interval {d['ci95'][0]:+.3f} "
                               f"to {d['ci95'][1]:+.3f}, permutation p = {d['p_value']:.4f}, {d['images']} images)."]
    md += ['', '| run | epochs | chosen epoch (validation fold) | val mAP at the chosen thresholds | validation images | train minutes |', '|---|---|---|---|---|---|']
    md += [f"| {n} | {r['epochs_done']} | {r['chosen']['epoch']} | {r['chosen']['map']:.3f} | {r['val_images']} | {r['train_minutes']} |" for n, r in runs.items()]
    md += ['', *[f"- {'PASS' if v else 'FAIL'}: {k}" for k, v in checks.items()], '',
           f"Machine: {machine['platform']}, {machine['cpus']} CPUs; pneumonia_kit {machine['pneumonia_kit']}, commit {machine['commit']}"
           + ('; runs taken as they were (--reuse), swept and predicted by this code.' if a.reuse else '.')]
    (out/'bench_twin.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))


if __name__ == '__main__': main()
