#!/usr/bin/env python
"""Loader CPU cost per image of each augmentation level (issue 20 item 5): one process, one thread (as each DataLoader
worker runs: `train._worker_init` sets cv2 to 1 thread), `RsnaDataset.__getitem__` on the uint8 cache (read + albumentations
+ tensor) plus `step.collate_padded`'s share, at --size px. Projected to --workers processes (perfect scaling, an upper
bound) against the GPU's rate goal: 178 images/s (20x the original's P100 epoch) with a 1.5x margin = 267 images/s.

    python bench/bench_aug_cost.py --data /tmp/pk_aug_twin --size 512 --n 48 --json aug_cost.json
"""
import argparse, json, os, platform, sys, time
from pathlib import Path

GOAL_IMAGES_S, MARGIN = 178., 1.5


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default='/tmp/pk_aug_twin', help='twin folder (made at 1024 px when absent; its cache at --size)')
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--n', type=int, default=48, help='images timed per level (each read once per repeat)')
    p.add_argument('--repeats', type=int, default=3, help='passes per level; the fastest is kept')
    p.add_argument('--levels', default='none,light,default,heavy')
    p.add_argument('--workers', type=int, default=16, help='loader processes of the projection (the GPU machine: 16 cores)')
    p.add_argument('--batch', type=int, default=64, help='batch size of the collate share')
    p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    import cv2, torch
    cv2.setNumThreads(1); torch.set_num_threads(1)
    from pneumonia_kit.cache import build_cache
    from pneumonia_kit.core import RsnaPaths
    from pneumonia_kit.data import load_labels
    from pneumonia_kit.dataset import RsnaDataset, make_transforms
    from pneumonia_kit.synth import synth_dataset
    from pneumonia_kit.step import collate_padded
    paths = RsnaPaths(a.data)
    if not paths.train_labels.exists(): synth_dataset(a.data, n_images=a.n, n_test=0, seed=0, size=1024, workers=1, progress=False)
    cache = paths.cache(a.size, 'train')
    if not (cache/'manifest.csv').exists(): build_cache(a.data, size=a.size, split='train', workers=1, progress=False)
    labels = load_labels(paths.train_labels, paths.class_info)
    rows = {}
    for level in a.levels.split(','):
        ds = RsnaDataset(cache, labels, None, None if level == 'none' else make_transforms(a.size, level, seed=0))
        n = min(a.n, len(ds))
        best = float('inf')
        for _ in range(a.repeats):
            t = time.perf_counter()
            items = [ds[i] for i in range(n)]
            best = min(best, (time.perf_counter() - t) / n)
        reps = max(1, a.batch // n + 1)
        batch = (items * reps)[:a.batch]
        t = time.perf_counter(); collate_padded(batch); coll = (time.perf_counter() - t) / len(batch)
        per = best + coll
        proj = a.workers / per
        rows[level] = dict(ms_per_image=round(1e3 * best, 2), collate_ms_per_image=round(1e3 * coll, 3),
                           images_per_s_one_process=round(1 / per, 1), projected_images_per_s=round(proj, 0),
                           vs_goal_with_margin=round(proj / (GOAL_IMAGES_S * MARGIN), 2), holds=proj >= GOAL_IMAGES_S * MARGIN)
        print(level, rows[level], file=sys.stderr, flush=True)
    res = dict(machine=f'{platform.machine()} {platform.processor()}, {os.cpu_count()} cores', size=a.size, n=a.n,
               workers=a.workers, goal_images_per_s=GOAL_IMAGES_S, margin=MARGIN, rows=rows)
    L = [f"Loader cost per image at {a.size} px, one process, one thread ({res['machine']}); projected to {a.workers} workers "
         f"vs {GOAL_IMAGES_S:g} x {MARGIN} = {GOAL_IMAGES_S * MARGIN:g} images/s", '',
         '| level | ms/image (read + augment) | collate ms/image | images/s, 1 process | projected, 16 workers | vs goal x1.5 |',
         '|---|---:|---:|---:|---:|---:|']
    L += [f"| {k} | {r['ms_per_image']} | {r['collate_ms_per_image']} | {r['images_per_s_one_process']} | {r['projected_images_per_s']:.0f} | "
          f"{r['vs_goal_with_margin']}x |" for k, r in rows.items()]
    res['markdown'] = '\n'.join(L)
    print(res['markdown'])
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == '__main__': main()
