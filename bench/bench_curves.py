#!/usr/bin/env python
"""Does the fast setting learn like fp32 eager? (issue 20, goal 7c) Training-loss curves of N steps from the same seed:
fp32 eager, and the fast setting (bf16 autocast, channels-last, torch.compile), plus fp32 eager from a second seed, on the
twin's training images with the real loader. The fast curve must stay as close to the fp32 one of its seed as two fp32
seeds are to each other: gap = mean |difference| of the curves smoothed over `--smooth` steps; ratio = gap(fast, fp32) /
gap(fp32 seed A, fp32 seed B), goal <= 1.

    python bench/bench_curves.py --data TWIN --device cuda --preset se_resnext50_p3p7 --size 256 --batch 16 --steps 300
    python bench/bench_curves.py --data TWIN --device cpu --preset tiny --steps 6 --smooth 2        # CPU dry run
"""
from __future__ import annotations
import argparse, dataclasses, json, math, sys, time
from pathlib import Path


def run(data, mc, tc, dev, seed:int, steps:int, fast:bool, deadline:float|None=None) -> dict:
    "Per-step training losses of one run (the losses stay on the device until the end); cut at `deadline` (time.time())"
    import torch
    from pneumonia_kit.core import set_seed
    from pneumonia_kit.model import create_model
    from pneumonia_kit.runs import amp_dtype
    from pneumonia_kit.step import make_optimizer, make_step, to_device
    from pneumonia_kit.train import train_loader
    tc = dataclasses.replace(tc, seed=seed, amp='bf16' if fast else 'off', compile=tc.compile if fast else 'off')
    dtype, cl = amp_dtype(tc.amp, dev), fast and dev.type == 'cuda'
    set_seed(seed)
    model = create_model(mc).to(dev)
    if cl: model = model.to(memory_format=torch.channels_last)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt, step = make_optimizer(params, tc.lr), make_step(model, dev, dtype, None, tc.compile)
    losses, epoch, t0 = [], 1, time.perf_counter()
    over = lambda: deadline is not None and time.time() > deadline
    while len(losses) < steps and not over():
        set_seed(seed * 1000 + epoch)
        for images, targets in train_loader(data['train'], tc, epoch, pin_memory=dev.type == 'cuda'):
            if over(): break
            x, t = to_device(images, targets, dev, cl)
            loss = step(x, t)['loss']
            opt.zero_grad(set_to_none=True); loss.backward()
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip); opt.step()
            losses.append(loss.detach().float())
            if len(losses) == steps: break
        epoch += 1
    curve = torch.stack(losses).cpu().tolist() if losses else []
    return dict(seed=seed, fast=fast, cut_by_deadline=len(curve) < steps, amp=tc.amp, compile=tc.compile, channels_last=cl, seconds=round(time.perf_counter() - t0, 1),
                curve=[round(v, 5) for v in curve], finite=all(math.isfinite(v) for v in curve))


def smooth(xs:list, w:int) -> list:
    "Trailing moving average over `w` steps"
    out, s = [], 0.
    for i, x in enumerate(xs):
        s += x - (xs[i - w] if i >= w else 0.)
        out.append(s / min(i + 1, w))
    return out


def gap(a:list, b:list, w:int) -> float:
    "Mean |difference| of two smoothed curves"
    sa, sb = smooth(a, w), smooth(b, w)
    return sum(abs(x - y) for x, y in zip(sa, sb)) / len(sa)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', required=True, help='twin folder (Kaggle layout; its cache at --size is made when absent)')
    p.add_argument('--device', default='cuda')
    p.add_argument('--preset', default='se_resnext50_p3p7', help='training preset for the network (pretrained=False)')
    p.add_argument('--size', type=int, default=256, help='input size')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--lr', type=float, default=2e-4, help='Adam lr (from scratch)')
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--seeds', default='0,1', help='seed A (both settings), seed B (fp32 only: the noise)')
    p.add_argument('--compile', default='default', help="the fast setting's TrainCfg.compile")
    p.add_argument('--workers', type=int, default=8)
    p.add_argument('--smooth', type=int, default=20, help='moving-average window of the comparison')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--parallel', action='store_true', help='the three runs at once, one process each (the losses do not depend '
                   'on timing; on a big GPU this takes about the time of one run)')
    p.add_argument('--budget-s', type=float, default=None, help='stop every run after this many seconds from the start (the '
                   'curves are then compared over the steps all three reached); default: no limit')
    p.add_argument('--only', type=int, default=None, help=argparse.SUPPRESS)   # one run (0, 1, 2): a --parallel child
    p.add_argument('--deadline', type=float, default=None, help=argparse.SUPPRESS)   # time.time() to stop at: a child
    p.add_argument('--json', default=None)
    a = p.parse_args(argv)
    if a.deadline is None and a.budget_s is not None: a.deadline = time.time() + a.budget_s
    import torch
    if a.device.startswith('cuda') and not torch.cuda.is_available(): p.error(f'--device {a.device}: no CUDA GPU here')
    if a.parallel: return parallel(a, argv if argv is not None else sys.argv[1:])
    if a.threads: torch.set_num_threads(a.threads)
    from pneumonia_kit.train import prepare_data
    from pneumonia_kit.presets import preset_cfgs
    from pneumonia_kit.runs import resolve_device
    mc, tc = preset_cfgs(a.preset, pretrained=False, image_size=a.size, batch_size=a.batch, lr=a.lr, num_workers=a.workers)
    tc = dataclasses.replace(tc, grad_clip=1., aug_level='light', progress=False, compile=a.compile)
    dev = resolve_device(a.device)
    torch.backends.cudnn.benchmark = True
    data = prepare_data(a.data, mc.image_size, tc)
    sa, sb = (int(s) for s in a.seeds.split(','))
    runs = {}
    for i, (name, seed, fast) in enumerate(runs_of(sa, sb)):
        if a.only is not None and i != a.only: continue
        runs[name] = run(data, mc, tc, dev, seed, a.steps, fast, a.deadline)
        c = runs[name]['curve']
        print(f'{name}: {runs[name]["seconds"]} s, {len(c)} steps' + (f', loss {c[0]:.4f} -> {sum(c[-a.smooth:]) / len(c[-a.smooth:]):.4f}'
              if c else ''), file=sys.stderr, flush=True)
    if a.only is not None:
        if a.json: Path(a.json).write_text(json.dumps(runs))
        return runs
    return summary(a, mc, dev, runs)


def runs_of(sa:int, sb:int) -> tuple: return (('fp32 eager, seed A', sa, False), ('fast, seed A', sa, True), ('fp32 eager, seed B', sb, False))


def parallel(a, argv:list) -> dict:
    "The three runs in three processes at once (the data and its cache made first, once), then the one summary"
    import subprocess, tempfile
    from pneumonia_kit.runs import resolve_device
    from pneumonia_kit.train import prepare_data
    from pneumonia_kit.presets import preset_cfgs
    mc, tc = preset_cfgs(a.preset, pretrained=False, image_size=a.size, batch_size=a.batch, lr=a.lr, num_workers=a.workers)
    prepare_data(a.data, mc.image_size, tc)
    base = [x for x in argv if x != '--parallel']
    for opt in ('--json', '--budget-s', '--deadline'):
        if opt in base: i = base.index(opt); del base[i:i + 2]
    if a.deadline is not None: base += ['--deadline', repr(a.deadline)]   # the same moment for the three
    with tempfile.TemporaryDirectory() as tmp:
        procs = [subprocess.Popen([sys.executable, __file__, *base, '--only', str(i), '--json', f'{tmp}/{i}.json'])
                 for i in range(3)]
        rcs = [p.wait() for p in procs]
        if any(rcs): raise SystemExit(f'bench_curves --parallel: a run failed (exit codes {rcs})')
        runs = {}
        for i in range(3): runs.update(json.loads(Path(f'{tmp}/{i}.json').read_text()))
    return summary(a, mc, resolve_device(a.device), runs)


def summary(a, mc, dev, runs:dict) -> dict:
    "The comparison of the three curves: JSON (and `--json`) and markdown"
    import torch
    A, F, B = (runs[k]['curve'] for k in ('fp32 eager, seed A', 'fast, seed A', 'fp32 eager, seed B'))
    n = min(map(len, (A, F, B)))   # a run cut by the deadline: the steps all three reached
    A, F, B = A[:n], F[:n], B[:n]
    g_fast, g_seed = (gap(A, F, a.smooth), gap(A, B, a.smooth)) if n else (None, None)
    w = min(a.smooth, n) or 1
    res = dict(device=str(torch.cuda.get_device_name(dev)) if dev.type == 'cuda' else 'CPU', preset=a.preset, parallel=a.parallel, backbone=mc.backbone,
               levels=list(mc.levels), size=a.size, batch=a.batch, lr=a.lr, steps=a.steps, steps_compared=n, smooth=w, runs=runs,
               gap_fast_vs_fp32=None if g_fast is None else round(g_fast, 5),
               gap_seed_noise=None if g_seed is None else round(g_seed, 5),
               ratio=round(g_fast / g_seed, 3) if g_seed else None,
               first_last={k: (round(sum(r['curve'][:n][:w]) / w, 4), round(sum(r['curve'][:n][-w:]) / w, 4)) if n else (None, None)
                           for k, r in runs.items()},
               finite=n > 0 and all(r['finite'] for r in runs.values()))
    res['markdown'] = markdown(res)
    print(res['markdown'])
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))
    return res


def markdown(r) -> str:
    L = [f"Training-loss curves, {r['backbone']} P{r['levels'][0]}-P{r['levels'][1]}, {r['size']} px, batch {r['batch']}, "
         f"Adam {r['lr']:g} from scratch, {r['steps']} steps, {r['device']}"
         + ('' if r['steps_compared'] == r['steps'] else f" (cut by the time budget: compared over the {r['steps_compared']} steps "
            "all three reached)"), '',
         f"| run | seconds | mean loss, first {r['smooth']} steps | mean loss, last {r['smooth']} steps |", '|---|---:|---:|---:|']
    L += [f"| {k} ({v['amp']}, compile {v['compile']}) | {v['seconds']} | {r['first_last'][k][0]} | {r['first_last'][k][1]} |"
          for k, v in r['runs'].items()]
    L += ['', f"Gap (mean |difference| of the {r['smooth']}-step moving averages): fast vs fp32 {r['gap_fast_vs_fp32']}, "
              f"fp32 seed A vs seed B {r['gap_seed_noise']}: ratio {r['ratio']} (goal <= 1)."]
    return '\n'.join(L)


if __name__ == '__main__':
    from pneumonia_kit.core import PneumoniaKitError
    try: main()
    except PneumoniaKitError as e: sys.exit(f'bench_curves.py: error: {e}')   # a bad --data: one line
