#!/usr/bin/env python
"""Benchmark the RSNA metric: the vectorised sweep against the readable per-image loop, measured in the same run.

Target (issue 4): 3,000 images with up to 10 boxes each, at 20 score thresholds, in under 2 s.
    python bench/bench_metric.py [--n 3000] [--boxes 10] [--thresholds 20] [--json out.json]
"""
import argparse, json, platform, time
import numpy as np
from pneumonia_kit.metric import MODES, map_iou, rsna_map


def make_set(n, k, seed=0):
    rng, gt, preds = np.random.default_rng(seed), {}, {}
    for i in range(n):
        ng, npr = rng.integers(0, k + 1), rng.integers(0, k + 1)
        g = np.concatenate([rng.uniform(0, 800, (ng, 2)), rng.uniform(40, 300, (ng, 2))], 1)
        p = np.concatenate([rng.uniform(0, 800, (npr, 2)), rng.uniform(40, 300, (npr, 2))], 1)
        j = min(ng, npr); p[:j] = g[:j] + rng.normal(0, 20, (j, 4)); p[:, 2:] = np.abs(p[:, 2:])
        gt[f'id{i}'], preds[f'id{i}'] = g, (rng.random(npr), p)
    return gt, preds


def best_of(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); r = fn(); ts.append(time.perf_counter() - t)
    return min(ts), r


def loop_sweep(gt, preds, ths, mode):
    "The readable way: one image at a time, one score threshold at a time"
    out = []
    for t in ths:
        s = []
        for pid, g in gt.items():
            sc, b = preds[pid]; keep = sc > t
            v = map_iou(g, b[keep], sc[keep], mode=mode)
            if v is not None: s.append(v)
        out.append(np.mean(s))
    return np.array(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--n', type=int, default=3000); ap.add_argument('--boxes', type=int, default=10)
    ap.add_argument('--thresholds', type=int, default=20); ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--json', help='write the results here too')
    a = ap.parse_args()
    gt, preds = make_set(a.n, a.boxes)
    ths = np.linspace(0, 0.95, a.thresholds)
    rows = []
    for mode in MODES:
        tv, rv = best_of(lambda: rsna_map(gt, preds, score_thresholds=ths, mode=mode), a.repeats)
        tl, rl = best_of(lambda: loop_sweep(gt, preds, ths, mode), 1)
        assert np.allclose(rv, rl), (rv, rl)
        rows.append(dict(mode=mode, vectorised_s=round(tv, 3), loop_s=round(tl, 3), speedup=round(tl / tv, 1), target_s=2.0, met=tv < 2.0))
    print(f'{a.n} images x <= {a.boxes} boxes x {a.thresholds} score thresholds ({platform.machine()}, best of {a.repeats})')
    print(f"{'mode':8} {'vectorised s':>13} {'per-image loop s':>17} {'speed-up':>9} {'< 2 s':>6}")
    for r in rows: print(f"{r['mode']:8} {r['vectorised_s']:13.3f} {r['loop_s']:17.3f} {r['speedup']:8.1f}x {str(r['met']):>6}")
    if a.json: open(a.json, 'w').write(json.dumps(dict(n=a.n, boxes=a.boxes, thresholds=a.thresholds, rows=rows), indent=2))
    print(json.dumps(rows))


if __name__ == '__main__': main()
