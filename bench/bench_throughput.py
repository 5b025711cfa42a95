#!/usr/bin/env python
"""Full-size training throughput: a synthetic twin of 1024-px images made here, its cache, the original recipe trained
for a fixed number of steps with the real DataLoader (workers, pinned memory); images/s, peak GPU memory, the share of
time the GPU waits for data, and the projected epoch time for the real 26,684 images against the original's 50 minutes
per epoch on a P100.

Each run (`--runs BATCHxWORKERS,...`) builds the model of the preset (`presets.preset_cfgs`, `pretrained=False`: no ImageNet
weights on an offline machine), its optimizer and GradScaler as `train.fit` does (channels-last, cudnn.benchmark, the
preset's autocast), and calls `step.train_one_epoch` on the preset's training loader (`train.train_loader`, pinned
memory on CUDA) cut to `--warmup + --steps` batches. Only the last `--steps` are timed (the first ones start the workers
and autotune cuDNN). `fit`'s per-epoch extras (validation, checkpoint, curves) are left out.

Stall share: before each batch is taken from the loader the GPU is synchronised, so the time spent waiting in the
loader is time the GPU had nothing to do; stall share = that wait / the timed steps' wall time. (`fit` does not
synchronise there: this costs the loader's main-process time per step, about a millisecond.) After the loader run the
same model trains `--gpu-steps` more steps on one batch kept in pinned memory: the GPU-bound rate without a loader.

    python bench/bench_throughput.py --device cuda --json tp.json                      # the GPU machine (defaults)
    python bench/bench_throughput.py --device cpu --preset tiny --n-images 40 --image-px 256 --runs 4x2 \\
        --steps 4 --warmup 2 --gpu-steps 2 --json tp.json                                # CPU dry run, seconds
"""
from __future__ import annotations
import argparse, dataclasses, json, math, os, platform, statistics, sys, time
from pathlib import Path

REAL_TRAIN_IMAGES = 26_684        # stage 2 training images
ORIGINAL_EPOCH_MIN = 50.          # the original's epoch on a P100 (REFERENCE.md)


def _sync(dev):
    import torch
    if dev.type == 'cuda': torch.cuda.synchronize(dev)


class TimedLoader:
    "Iterate `loader` for at most `n` batches, timing each wait for a batch (GPU synchronised first) and each step"
    def __init__(self, loader, n:int, dev, deadline:float|None=None, min_steps:int=1):
        self.loader, self.n, self.dev, self.deadline, self.min_steps = loader, n, dev, deadline, min_steps
        self.waits, self.marks, self.cut = [], [], False
    def __iter__(self):
        it = iter(self.loader)
        try:
            for i in range(self.n):
                _sync(self.dev)
                t0 = time.perf_counter()
                if self.deadline is not None and i >= self.min_steps and t0 > self.deadline: self.cut = True; break
                try: batch = next(it)
                except StopIteration: break
                self.marks.append(t0); self.waits.append(time.perf_counter() - t0)
                yield batch
            _sync(self.dev); self.marks.append(time.perf_counter())
        finally: del it   # stops the workers now


def make_data(root:Path, n_images:int, image_px:int, size:int, workers:int) -> dict:
    "The twin (if not there) and its cache at `size` (if not there), timed"
    from pneumonia_kit.core import RsnaPaths
    from pneumonia_kit.synth import synth_dataset
    from pneumonia_kit.cache import build_cache
    paths, info = RsnaPaths(root), dict(root=str(root), n_images=n_images, image_px=image_px, cache_px=size, workers=workers)
    t = time.perf_counter()
    if not paths.train_labels.exists() or len(list(paths.train_images.glob('*.dcm'))) != n_images:
        synth_dataset(root, n_images=n_images, n_test=0, seed=0, size=image_px, workers=workers, progress=False)
        info['synth_s'] = round(time.perf_counter() - t, 2)
        info['synth_images_per_s'] = round(n_images / info['synth_s'], 1)
    t = time.perf_counter()
    if not (paths.cache(size, 'train')/'manifest.csv').exists():
        build_cache(root, size=size, split='train', workers=workers, progress=False)
        info['cache_s'] = round(time.perf_counter() - t, 2)
        info['cache_images_per_s'] = round(n_images / info['cache_s'], 1)
    return info


def run_one(root, preset:str, batch:int, workers:int, steps:int, warmup:int, gpu_steps:int, device:str,
            image_size:int|None=None, deadline:float|None=None, compile:str='off', amp:str|None=None) -> dict:
    "Train `warmup + steps` steps of `preset` from the real loader, then `gpu_steps` on one pinned batch; the figures"
    import torch
    from pneumonia_kit.core import set_seed
    from pneumonia_kit.model import create_model
    from pneumonia_kit.runs import amp_dtype, resolve_device
    from pneumonia_kit.step import make_optimizer, make_step, train_one_epoch
    from pneumonia_kit.train import prepare_data, train_loader
    from pneumonia_kit.presets import preset_cfgs
    mc, tc = preset_cfgs(preset, pretrained=False, batch_size=batch, num_workers=workers, image_size=image_size, compile=compile, amp=amp)
    tc = dataclasses.replace(tc, progress=False)
    dev = resolve_device(device)
    dtype = amp_dtype(tc.amp, dev)
    data = prepare_data(root, mc.image_size, tc)
    if len(data['train']) < (warmup + steps) * batch:
        raise SystemExit(f'{root}: {len(data["train"])} training images, need {(warmup + steps) * batch} for one epoch of this run')
    torch.backends.cudnn.benchmark = not tc.deterministic      # as `fit` sets it
    set_seed(tc.seed)
    t_build = time.perf_counter()
    model = create_model(mc).to(dev)
    cl = tc.channels_last and dev.type == 'cuda'
    if cl: model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], tc.lr, tc.weight_decay)   # as `fit`
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    step = make_step(model, dev, dtype, None, tc.compile)   # compiled once: the warm-up steps include the compilation
    build_s = time.perf_counter() - t_build
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
    loader = train_loader(data['train'], tc, epoch=1, pin_memory=dev.type == 'cuda')
    timed = TimedLoader(loader, warmup + steps, dev, deadline, min_steps=warmup + 1)
    t0 = time.perf_counter()
    losses = train_one_epoch(model, timed, opt, scaler, dev, dtype, tc, epoch=1, channels_last=cl, step=step)
    n_done = len(timed.waits) - warmup
    if n_done < 1: raise SystemExit(f'run {batch}x{workers}: no timed step before the deadline')
    m, w = timed.marks, timed.waits
    step_s = [m[i + 1] - m[i] for i in range(warmup, len(w))]
    wall = m[-1] - m[warmup]
    ips = n_done * batch / wall
    res = dict(preset=preset, compile=tc.compile, backbone=mc.backbone, levels=list(mc.levels), image_size=mc.image_size, batch=batch,
               workers=workers, pin_memory=dev.type == 'cuda', amp=str(dtype).removeprefix('torch.') if dtype else 'off',
               channels_last=cl, cudnn_benchmark=torch.backends.cudnn.benchmark, n_train=len(data['train']),
               steps=n_done, warmup=warmup, cut_by_deadline=timed.cut, build_s=round(build_s, 2),
               warmup_s=round(m[warmup] - t0, 2), timed_s=round(wall, 3),
               step_ms_median=round(1e3 * statistics.median(step_s), 1), step_ms_max=round(1e3 * max(step_s), 1),
               images_per_s=round(ips, 2), stall_s=round(sum(w[warmup:]), 3),
               stall_share=round(sum(w[warmup:]) / wall, 4), first_batch_s=round(w[0], 2),
               losses={k: round(v, 5) for k, v in losses.items()}, finite=all(math.isfinite(v) for v in losses.values()))
    # the GPU-bound rate: one batch kept in (pinned) memory, no loader
    if gpu_steps > 0:
        images, targets = next(iter(train_loader(data['train'], dataclasses.replace(tc, num_workers=0), epoch=2)))
        if dev.type == 'cuda': images = images.pin_memory()
        one = [(images, targets)]
        train_one_epoch(model, one, opt, scaler, dev, dtype, tc, epoch=2, channels_last=cl, step=step)   # this batch's shapes once
        _sync(dev); t = time.perf_counter()
        gl = train_one_epoch(model, one * gpu_steps, opt, scaler, dev, dtype, tc, epoch=2, channels_last=cl, step=step)
        _sync(dev); g = time.perf_counter() - t
        res.update(gpu_steps=gpu_steps, gpu_step_ms=round(1e3 * g / gpu_steps, 1), gpu_images_per_s=round(gpu_steps * batch / g, 2),
                   finite=res['finite'] and all(math.isfinite(v) for v in gl.values()))
        res['loader_efficiency'] = round(res['images_per_s'] / res['gpu_images_per_s'], 3)
    if dev.type == 'cuda':
        res.update(peak_mem_gb=round(torch.cuda.max_memory_allocated(dev) / 2**30, 2),
                   peak_reserved_gb=round(torch.cuda.max_memory_reserved(dev) / 2**30, 2))
    res['projected_epoch_s'] = round(REAL_TRAIN_IMAGES / ips, 1)
    res['speedup_vs_p100_epoch'] = round(ORIGINAL_EPOCH_MIN * 60 / res['projected_epoch_s'], 2)
    del model, opt, loader
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return res


def markdown(res:dict) -> str:
    "The result as a markdown table"
    d = res['data']
    lines = [f"Training throughput, preset `{res['preset']}` ({res['runs'][0]['backbone'] if res['runs'] else '?'}, "
             f"P{res['runs'][0]['levels'][0]}-P{res['runs'][0]['levels'][1]}, {res['runs'][0]['image_size']} px), {res['device']}" if res['runs'] else
             f"Training throughput, preset `{res['preset']}`, {res['device']}: no run finished",
             '', f"Twin: {d['n_images']} images of {d['image_px']} px"
             + (f", made in {d['synth_s']} s ({d['synth_images_per_s']} images/s, {d['workers']} processes)" if 'synth_s' in d else ' (already there)')
             + (f"; cache at {d['cache_px']} px in {d['cache_s']} s ({d['cache_images_per_s']} images/s)" if 'cache_s' in d else ''), '',
             '| batch x workers | amp | images/s | GPU-bound images/s | stall share | step ms (median) | peak GPU mem GB | '
             f'projected epoch of {REAL_TRAIN_IMAGES:,} images | vs the P100\'s {ORIGINAL_EPOCH_MIN:.0f} min |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in res['runs']:
        lines.append(f"| {r['batch']} x {r['workers']} | {r['amp']}{' channels-last' if r['channels_last'] else ''} | {r['images_per_s']} | "
                     f"{r.get('gpu_images_per_s', '')} | {100 * r['stall_share']:.1f}% | {r['step_ms_median']} | {r.get('peak_mem_gb', '')} | "
                     f"{r['projected_epoch_s']} s | {r['speedup_vs_p100_epoch']}x |")
    for e in res.get('errors', []): lines.append(f'\nrun {e["run"]} failed: {e["error"]}')
    return '\n'.join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda', help='cuda or cpu')
    p.add_argument('--data', default='/tmp/pk_throughput/twin', help='twin folder (made when absent)')
    p.add_argument('--n-images', type=int, default=2000, help='training images of the twin')
    p.add_argument('--image-px', type=int, default=1024, help='side of the twin images')
    p.add_argument('--data-workers', type=int, default=0, help='processes making the twin and the cache (0: all cores)')
    p.add_argument('--preset', default='original', help='training preset (presets.TRAIN_PRESETS)')
    p.add_argument('--size', type=int, default=None, help="input size (default: the preset's)")
    p.add_argument('--runs', default='4x2,16x12', help="BATCHxWORKERS,...: 4x2 is the original preset's (TrainCfg defaults)")
    p.add_argument('--steps', default='100,40', help='timed steps per run (one number, or one per run)')
    p.add_argument('--warmup', type=int, default=8, help='untimed steps first (worker start, cuDNN autotuning)')
    p.add_argument('--gpu-steps', default='30,12', help='steps on one kept batch per run (the GPU-bound rate; 0: none)')
    p.add_argument('--budget-s', type=float, default=None, help='stop timing a run when this many seconds have passed since the start')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    p.add_argument('--compile', default='off', help="TrainCfg.compile of every run: off, default, reduce-overhead, max-autotune")
    p.add_argument('--amp', default=None, help="TrainCfg.amp of every run (default: the preset's)")
    p.add_argument('--json', default=None, help='write the result here')
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    deadline = None if a.budget_s is None else t_start + a.budget_s
    import torch
    if a.device.startswith('cuda') and not torch.cuda.is_available(): p.error(f'--device {a.device}: no CUDA GPU here')
    if a.threads: torch.set_num_threads(a.threads)
    from pneumonia_kit.presets import preset_cfgs
    runs = [tuple(int(v) for v in r.lower().split('x')) for r in a.runs.split(',') if r]
    per = lambda s: [int(v) for v in str(s).split(',')] * (len(runs) if ',' not in str(s) else 1)
    steps, gsteps = per(a.steps), per(a.gpu_steps)
    if len(steps) != len(runs) or len(gsteps) != len(runs): p.error('--steps/--gpu-steps: one number or one per run')
    mc, _ = preset_cfgs(a.preset, image_size=a.size)
    workers = a.data_workers or os.cpu_count() or 1
    dev = torch.device(a.device)
    res = dict(device=torch.cuda.get_device_name(0) if dev.type == 'cuda' else f'{platform.machine()} CPU, {torch.get_num_threads()} threads',
               torch=torch.__version__, cpu_count=os.cpu_count(), preset=a.preset,
               reference=dict(train_images=REAL_TRAIN_IMAGES, original_epoch_min=ORIGINAL_EPOCH_MIN, original_gpu='P100'),
               data=make_data(Path(a.data), a.n_images, a.image_px, mc.image_size, workers), runs=[], errors=[])
    for (b, w), n, g in zip(runs, steps, gsteps):
        try:
            res['runs'].append(run_one(a.data, a.preset, b, w, n, a.warmup, g, a.device, a.size, deadline, a.compile, a.amp))
            r = res['runs'][-1]
            print(f"run {b}x{w}: {r['images_per_s']} images/s, stall {100 * r['stall_share']:.1f}%, "
                  f"projected epoch {r['projected_epoch_s']} s", file=sys.stderr, flush=True)
        except Exception as e:   # noqa: BLE001 - one failed run must not hide the others
            import traceback; traceback.print_exc()
            res['errors'].append(dict(run=f'{b}x{w}', error=f'{type(e).__name__}: {e}'))
            if dev.type == 'cuda': torch.cuda.empty_cache()
    if res['runs']:
        best = max(res['runs'], key=lambda r: r['images_per_s'])
        res['best'] = dict(run=f"{best['batch']}x{best['workers']}", images_per_s=best['images_per_s'],
                           projected_epoch_s=best['projected_epoch_s'], speedup_vs_p100_epoch=best['speedup_vs_p100_epoch'])
    res['seconds'] = round(time.perf_counter() - t_start, 1)
    res['markdown'] = markdown(res)
    print(res['markdown'])
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))
    if res['errors'] or not res['runs']: raise SystemExit(1)
    return res


if __name__ == '__main__':
    from pneumonia_kit.core import PneumoniaKitError
    try: main()
    except PneumoniaKitError as e: sys.exit(f'bench_throughput.py: error: {e}')   # a bad --data: one line
