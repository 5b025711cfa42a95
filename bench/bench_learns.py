#!/usr/bin/env python
"""Does the detector learn? Train the CPU demo configuration on the synthetic twin within a time budget and compare its
validation mAP with two baselines scored on the same fold: no boxes at all, and one mean box per image (plus a
stronger variant: the mean box of each lung).

    python bench/bench_learns.py [--data data/synthetic] [--minutes 12] [--out outputs/bench_learns] [--json F]
"""
import argparse, json, platform, time
from pathlib import Path
import numpy as np


def baselines(data, fold, n_folds, seed):
    "mAP on fold `fold` of: no boxes; the mean training box on every image; the mean box of each lung on every image"
    from pneumonia_kit.core import RsnaPaths
    from pneumonia_kit.data import load_labels, get_folds
    from pneumonia_kit.metric import rsna_map
    p = RsnaPaths(data)
    lab = load_labels(p.train_labels, p.class_info).merge(get_folds(data, n_folds=n_folds, seed=seed), on='patientId')
    tr, va = lab[lab.fold != fold], lab[lab.fold == fold]
    boxes = np.concatenate([b for b in tr.boxes if len(b)])
    cx = boxes[:, 0] + boxes[:, 2] / 2
    mean1 = boxes.mean(0, keepdims=True)
    mean2 = np.stack([boxes[cx < np.median(cx)].mean(0), boxes[cx >= np.median(cx)].mean(0)])
    gt = {r.patientId: r.boxes for r in va.itertuples()}
    none = {k: (np.zeros(0), np.zeros((0, 4))) for k in gt}
    return {'no boxes': rsna_map(gt, none), 'one mean box per image': rsna_map(gt, {k: (np.ones(1), mean1) for k in gt}),
            'mean box of each lung': rsna_map(gt, {k: (np.ones(2), mean2) for k in gt})}, len(va)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data', default='data/synthetic'); ap.add_argument('--out', default='outputs/bench_learns')
    ap.add_argument('--minutes', type=float, default=12.0, help='training budget (the issue allows at most 15)')
    ap.add_argument('--epochs', type=int, default=40); ap.add_argument('--fold', type=int, default=0)
    ap.add_argument('--n-images', type=int, default=400, help='twin size if DATA has to be made')
    ap.add_argument('--json', help='write the results here too')
    a = ap.parse_args()
    from pneumonia_kit.core import RsnaPaths
    from pneumonia_kit.train import fit
    from pneumonia_kit.presets import preset_cfgs
    from pneumonia_kit.sweep import sweep_run
    if not RsnaPaths(a.data).train_labels.exists():
        from pneumonia_kit.synth import synth_dataset
        synth_dataset(a.data, n_images=a.n_images, n_test=100, seed=0)
    mc, tc = preset_cfgs('cpu_demo')
    tc.epochs, tc.max_minutes = a.epochs, a.minutes
    t0 = time.time()
    res = fit(a.data, fold=a.fold, out=a.out, model_cfg=mc, train_cfg=tc)
    minutes = (time.time() - t0) / 60
    sw = sweep_run(a.out)
    base, n_val = baselines(a.data, a.fold, tc.n_folds, tc.fold_seed)
    rows = [(k, v) for k, v in base.items()]
    rows += [(f"detector, default post-processing (best epoch {res['best_epoch']})", res['best_val_map']),
             ('detector, swept thresholds (optimistic: tuned on the same fold)', sw['best']['map'] if isinstance(sw.get('best'), dict) else sw.get('best'))]
    print(f"\n{mc.backbone} {mc.image_size}px {'P%d-P%d' % tuple(mc.levels)}, {res['epochs_done']} epochs in {minutes:.1f} min "
          f"on {platform.machine()} CPU; validation fold {a.fold}: {n_val} images")
    print(f"{'predictor':70} {'val mAP':>8}")
    for k, v in rows: print(f'{k:70} {v:8.4f}')
    best_base = max(base.values())
    out = dict(rows=dict(rows), minutes=round(minutes, 2), epochs=res['epochs_done'], n_val=n_val,
               beats_baselines_by=round(res['best_val_map'] - best_base, 4), model=mc.backbone, image_size=mc.image_size)
    print(json.dumps(out))
    if a.json: Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == '__main__': main()
