#!/usr/bin/env python
"""Training-step benchmark: pneumonia_kit's step against the original's, same backbone, input size and batch.

One step = forward + loss + backward + gradient clipping + Adam, on random uint8 images with realistic boxes.
`--batches 4,16,32,64 --compile off,default` sweeps ours over batch sizes and `torch.compile` modes (issue 20) against the
original at `--batch`; speed-ups compare images/s. `--budget-s` keeps a sweep inside the acceptance run's time.
- `original`: `bench/original_retinanet.py`, the 2nd-place code's step re-implemented (P2-P7, sigmoid heads, anchors
  rebuilt in numpy every forward, per-image Python focal loss, BN frozen by eval mode, fp32, NCHW, cudnn.benchmark off);
- `ours P2-P7`: `step.train_one_epoch` on one batch with the same pyramid (`ModelCfg.levels=(2,7)`): vectorised loss,
  FrozenBN2d (frozen BN kept in bf16), and on CUDA bf16/fp16 autocast, channels-last and cudnn.benchmark, as `fit` runs it;
- `ours P3-P7` (unless --no-p3p7): the same without the P2 level, the configuration we recommend.
All configurations are timed in this one process, their steps interleaved, so the ratios compare like with like
(the peak GPU memory column then includes the other models' weights and optimizer states).

    python bench/bench_train_step.py --device cpu --backbone resnet34 --size 256 --batch 2
    python bench/bench_train_step.py --device cuda                     # se_resnext50_32x4d, 512 px, batch 2... 8
    python bench/bench_train_step.py --device cuda --backbone se_resnext101_32x4d --batch 4   # the original preset's
    python bench/bench_train_step.py --device cpu --backbone resnet_tiny --size 256 --fpn-channels 32 --steps 2  # dry run
On CUDA, "fp32" is PyTorch's default there: cuDNN convolutions may use TF32 (the flags are in the JSON).
"""
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from original_retinanet import OriginalRetinaNet, original_step, pad_annotations  # noqa: E402
from pneumonia_kit.model import MODEL_PRESETS, create_model  # noqa: E402
from pneumonia_kit.runs import amp_dtype  # noqa: E402
from pneumonia_kit.step import TrainCfg, make_optimizer, make_step, train_one_epoch  # noqa: E402

def make_batch(batch:int, size:int, seed:int=0):
    "uint8 images [B,1,S,S] and per-image targets: 0, 1 or 2 boxes of the real data's typical size, class ids"
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (batch, 1, size, size), dtype=np.uint8))
    k = size / 1024
    targets = []
    for i in range(batch):
        n = i % 3
        boxes = []
        for j in range(n):
            w, h = float(np.clip(rng.normal(218, 59), 60, 500)) * k, float(np.clip(rng.normal(329, 158), 60, 900)) * k
            x = (314 if j == 0 else 709) * k - w / 2; y = rng.uniform(200, 500) * k
            boxes.append([x, y, min(x + w, size - 1), min(y + h, size - 1)])
        targets.append(dict(boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), class_id=2 if n else i % 2))
    return images, targets

def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def time_steps(step, dev, warmup:int, steps:int) -> list:
    "Seconds of each timed step after `warmup` untimed ones"
    for _ in range(warmup): step()
    out = []
    for _ in range(steps):
        _sync(dev); t = time.perf_counter(); step(); _sync(dev); out.append(time.perf_counter() - t)
    return out

def original_runner(backbone, images, targets, dev, fpn_channels=256):
    "A step closure of the original code"
    torch.manual_seed(0)
    m = OriginalRetinaNet(backbone, fpn_channels=fpn_channels).to(dev)
    opt = torch.optim.Adam(m.parameters(), lr=1e-5)
    x = images.to(dev).float() / 255            # the original fed float images
    ann = pad_annotations([t['boxes'].tolist() for t in targets], dev)
    glob = torch.tensor([t['class_id'] for t in targets], device=dev)
    def step():
        torch.backends.cudnn.benchmark = False    # its default
        original_step(m, opt, x, ann, glob)
    return m, step

def padded(images, targets, dev):
    "The batch as `step.collate_padded` gives it, pinned on CUDA"
    from pneumonia_kit.model import pad_targets
    t = dict(pad_targets(targets), items=[dict(class_id=x['class_id']) for x in targets])
    if dev.type == 'cuda': images, t = images.pin_memory(), {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in t.items()}
    return images, t

def ours_model(backbone, size, levels, dev, amp, channels_last, fpn_channels=256, compile='off'):
    "pneumonia_kit's model, fused Adam, scaler and (compiled) step as `train.fit` builds them; `run(batch)` trains one step"
    torch.manual_seed(0)
    base = MODEL_PRESETS['original_se_resnext50']
    m = create_model(base, backbone=backbone, pretrained=False, image_size=size, levels=levels,
                     fpn_channels=fpn_channels, global_channels=fpn_channels).to(dev)
    cl = channels_last and dev.type == 'cuda'
    if cl: m = m.to(memory_format=torch.channels_last)
    tc = TrainCfg(amp=amp, channels_last=channels_last, compile=compile)
    dtype = amp_dtype(amp, dev)
    opt = make_optimizer(m.parameters(), tc.lr)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    step = make_step(m, dev, dtype, None, compile)
    def run(batch):
        torch.backends.cudnn.benchmark = True     # as `fit` runs (deterministic=False)
        train_one_epoch(m, batch, opt, scaler, dev, dtype, tc, epoch=1, channels_last=cl, step=step)
    return m, run, dtype

def graphed_model(backbone, size, levels, dev, amp, channels_last, fpn_channels, batch):
    """pneumonia_kit's model with its whole training step (forward under autocast, loss, backward, clipping, fused Adam)
    captured in one CUDA graph (PyTorch's whole-network capture recipe): `run()` replays it on `batch`, kept in static
    device tensors (a loader would copy each new batch into them). No kernel is launched from Python after the capture,
    so a small batch is no longer bound by the host's launch rate. Needs a step with no host sync (issue 20, item 1)."""
    from pneumonia_kit.step import to_device
    torch.manual_seed(0)
    base = MODEL_PRESETS['original_se_resnext50']
    m = create_model(base, backbone=backbone, pretrained=False, image_size=size, levels=levels,
                     fpn_channels=fpn_channels, global_channels=fpn_channels).to(dev)
    cl = channels_last and dev.type == 'cuda'
    if cl: m = m.to(memory_format=torch.channels_last)
    dtype, tc = amp_dtype(amp, dev), TrainCfg(amp=amp)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=torch.tensor(tc.lr, device=dev), fused=True, capturable=True)  # lr a tensor: a schedule can change it
    (images, t), = batch
    x, t = to_device(images, t, dev, cl)
    m.train()
    def body():
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False):
            raw = m(x)
        loss = m.compute_loss(raw, t)['loss']
        loss.backward()
        if tc.grad_clip > 0: torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)
        opt.step()
        return loss.detach()
    torch.backends.cudnn.benchmark = True
    s = torch.cuda.Stream(dev)
    s.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(s):   # warm-up on a side stream: cuDNN autotuning, the optimizer's state, the allocator's pools
        for _ in range(3): opt.zero_grad(set_to_none=True); body()
    torch.cuda.current_stream(dev).wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)   # gradients are then made inside the graph's memory pool and rewritten by each replay
    with torch.cuda.graph(graph): body()
    return m, graph.replay, dtype

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--backbone', default='se_resnext50_32x4d', help='se_resnext50_32x4d, se_resnext101_32x4d, resnet34, resnet50')
    p.add_argument('--size', type=int, default=512, help='input size (>= 256: the original global head needs it)')
    p.add_argument('--batch', type=int, default=2, help="the original's batch (and ours, unless --batches)")
    p.add_argument('--batches', default=None, help='ours: comma-separated batch sizes (the sweep; default: --batch)')
    p.add_argument('--compile', default='off', help="ours: comma-separated TrainCfg.compile modes, e.g. off,default, and 'graph' "
                   "(the whole step in one CUDA graph, at the first two batches; CUDA only)")
    p.add_argument('--steps', type=int, default=5, help='timed steps per configuration (median reported)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    p.add_argument('--amp', default='auto', help="ours: auto, bf16, fp16 or off")
    p.add_argument('--no-channels-last', action='store_true', help='ours: keep NCHW on CUDA')
    p.add_argument('--no-p3p7', action='store_true', help='skip the P3-P7 row (never in a sweep)')
    p.add_argument('--fpn-channels', type=int, default=256, help='FPN/head channels of both codes (the original: 256; less for CPU dry runs)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    p.add_argument('--budget-s', type=float, default=None, help='each phase starts no new configuration after a share of this '
                   '(eager 60%%, CUDA graph 75%%, compiled 85%%); the last rounds stop at it')
    p.add_argument('--compile-min-s', type=float, default=0., help='start a torch.compile configuration only if this many '
                   'seconds of --budget-s are left (SE-ResNeXt101 P2-P7 took over 100 s to compile on the H200)')
    p.add_argument('--json', default=None, help='also write the JSON result here (rewritten after each round; atomic)')
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    over = lambda share: a.budget_s is not None and time.perf_counter() - t_start > share * a.budget_s
    if a.threads: torch.set_num_threads(a.threads)
    if a.device.startswith('cuda') and not torch.cuda.is_available(): p.error(f'--device {a.device}: no CUDA GPU here')
    dev = torch.device(a.device)
    if dev.type == 'cuda' and dev.index is None: dev = torch.device('cuda', 0)
    batches = [int(b) for b in (a.batches or str(a.batch)).split(',')]
    modes = [m.strip() for m in a.compile.split(',')]
    sweep = a.batches is not None or len(modes) > 1
    images, targets = make_batch(a.batch, a.size)
    data = {b: [padded(*make_batch(b, a.size), dev)] for b in batches}

    orig = 'original (P2-P7, fp32, python loss)'
    cl = ' channels_last' if dev.type == 'cuda' and not a.no_channels_last else ''
    runners, meta, skipped, warm_s = {}, {}, {}, {}   # name -> step; name -> (note, batch, parameters in millions)
    times, peaks = {}, {}

    def add(name, make, over_share):
        "Build and warm up (compile, capture) one configuration; out of memory, an error or past the budget: left out"
        if over(over_share): skipped[name] = 'time budget'; return
        t = time.perf_counter()
        try:
            step, m, note, b = make()
            for _ in range(a.warmup): step()
            _sync(dev)
            runners[name], meta[name] = step, (note, b, sum(q.numel() for q in m.parameters()) / 1e6)
            times[name], peaks[name] = [], 0.
        except Exception as e:   # noqa: BLE001 - out of memory, a compiler or capture error: reported, the others still run
            skipped[name] = _why(e)
            if dev.type == 'cuda': torch.cuda.empty_cache()
        warm_s[name] = round(time.perf_counter() - t, 1)
        print(f'  warm-up {name}: {warm_s[name]} s{" (" + skipped[name] + ")" if name in skipped else ""}', file=sys.stderr, flush=True)

    def rounds(names, n, stop_share, phase):
        """`n` interleaved timing rounds of `names` (a change of machine load hits every configuration alike), the JSON
        rewritten after each; a configuration that fails (out of memory, a CUDA error) keeps its timed steps and leaves"""
        for i in range(n):
            names = [k for k in names if k in runners]
            if not names or (i and over(stop_share)): break
            for k in names:
                try:
                    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
                    times[k] += time_steps(runners[k], dev, 0, 1)
                    if dev.type == 'cuda': peaks[k] = max(peaks[k], torch.cuda.max_memory_allocated(dev) / 2**30)
                except Exception as e:   # noqa: BLE001 - reported; the other configurations go on
                    skipped[k] = f'failed after {len(times[k])} timed step(s): ' + _why(e)
                    del runners[k]
                    if dev.type == 'cuda': torch.cuda.empty_cache()
            print(f'  round {i + 1}/{n}: ' + ', '.join(f'{k.split(" (")[0]} {times[k][-1]*1e3:.0f} ms' if k in runners
                                                       else f'{k.split(" (")[0]} failed' for k in names), file=sys.stderr, flush=True)
            save(phase)

    def make_original():
        m, step = original_runner(a.backbone, images, targets, dev, a.fpn_channels)
        return step, m, 'fp32 NCHW, numpy anchors, per-image loss loop, BN eval mode', a.batch

    def make_ours(b, mode, levels=(2, 7), amp=None, channels_last=None):
        amp = amp or a.amp
        cl_ = not a.no_channels_last if channels_last is None else channels_last
        def make():
            if mode == 'graph':
                m, run, dt = graphed_model(a.backbone, a.size, levels, dev, amp, cl_, a.fpn_channels, data[b])
                return run, m, f'{_prec(dt)}{cl if cl_ else " NCHW"}, the whole step (forward, loss, backward, clipping, fused Adam) in one CUDA graph', b
            m, run, dt = ours_model(a.backbone, a.size, levels, dev, amp, cl_, a.fpn_channels, mode)
            return (lambda: run(data[b])), m, (f'{_prec(dt)}{cl if cl_ else " NCHW"}, fused Adam, static-shape loss'
                                               + (f', torch.compile {mode}' if mode != 'off' else '')), b
        return make

    def name_of(b, mode):
        if not sweep: return 'ours P2-P7'
        return f'ours P2-P7 b{b} ' + {'off': 'eager', 'graph': 'cuda-graph'}.get(mode, f'compiled {mode}')

    def save(phase):
        res = result(a, dev, batches, modes, meta, times, peaks, warm_s, skipped, orig, t_start, phase)
        if a.json:   # atomic: a run killed by its limit while writing keeps the previous file whole
            tmp = Path(f'{a.json}.tmp'); tmp.write_text(json.dumps(res, indent=1)); os.replace(tmp, a.json)
        return res

    # phase 1, what matters most, written as soon as it is timed: the original and ours eager at every batch
    # (the H200 run of 2026-12-04 warmed the original up in 2 s, ours at batch 4 in 24 s, at 16-64 in 13 s each)
    add(orig, make_original, 0.6)
    for b in batches:
        if 'off' in modes or not sweep: add(name_of(b, 'off'), make_ours(b, 'off'), 0.6)
    if not sweep and not a.no_p3p7: add('ours P3-P7', make_ours(batches[0], 'off', (3, 7)), 0.6)
    if sweep and dev.type == 'cuda':   # at the smallest batch, what autocast and channels-last each cost (last: cut first)
        if a.amp not in ('off', 'auto'): add(name_of(batches[0], 'off') + ' fp32', make_ours(batches[0], 'off', amp='off'), 0.6)
        if not a.no_channels_last: add(name_of(batches[0], 'off') + ' NCHW', make_ours(batches[0], 'off', channels_last=False), 0.6)
    rounds(list(runners), a.steps, 0.65, 'eager')
    res = save('eager')
    # phase 2: the whole step in one CUDA graph (capture costs seconds), at the original's batch and the next one
    if 'graph' in modes and dev.type == 'cuda':
        for b in batches[:2]: add(name_of(b, 'graph'), make_ours(b, 'graph'), 0.75)
        gnames = [name_of(b, 'graph') for b in batches[:2]]
        rounds([orig, *[name_of(b, 'off') for b in batches[:2]], *gnames], a.steps, 0.85, 'graph')
        res = save('graph')
    elif 'graph' in modes: skipped[name_of(batches[0], 'graph')] = 'CUDA graphs need a CUDA device'
    # phase 3: torch.compile (minutes for a big network): one compilation per mode, at the best eager batch
    for mode in [m for m in modes if m not in ('off', 'graph')]:
        eager = {k: statistics.median(v) for k, v in times.items() if k.startswith('ours P2-P7') and k.endswith('eager') and v}
        b = max(eager, key=lambda k: meta[k][1] / eager[k]) if eager else None
        b = meta[b][1] if b else batches[0]
        left = None if a.budget_s is None else a.budget_s - (time.perf_counter() - t_start)
        if left is not None and left < a.compile_min_s:   # it would be killed half-way: the time goes to the next parts
            skipped[name_of(b, mode)] = f'time budget: {left:.0f} s left, a compile needs about {a.compile_min_s:.0f} s'; continue
        for k in [k for k in runners if k.endswith('cuda-graph')]: del runners[k]   # their graphs' memory pools go
        if dev.type == 'cuda': torch.cuda.empty_cache()
        add(name_of(b, mode), make_ours(b, mode), 0.85)   # SE-ResNeXt101 P2-P7 took over 100 s on the H200
        rounds([orig, name_of(b, 'off'), name_of(b, mode)], a.steps, 1., f'compiled {mode}')
        res = save(f'compiled {mode}')
    res = save('done')
    print(f'\nTraining step, {a.backbone}, {a.size} px, {res["device"]} (median of up to {a.steps} steps)\n')
    print(table(res))
    print('\n' + json.dumps(res, indent=1))
    return res

def _prec(dt) -> str: return str(dt).removeprefix('torch.') if dt else 'fp32'

def _why(e:Exception) -> str:
    "Why a configuration was left out, in one line"
    return 'out of memory' if isinstance(e, torch.cuda.OutOfMemoryError) else f'{type(e).__name__}: {str(e)[:300]}'

def result(a, dev, batches, modes, meta, times, peaks, warm_s, skipped, orig, t_start, phase) -> dict:
    "The JSON result of what is timed so far (`phase`: the last phase done; 'done' at the end)"
    rows = {k: dict(batch=meta[k][1], median_s=statistics.median(ts), min_s=min(ts), steps=len(ts),
                    images_per_s=meta[k][1] / statistics.median(ts), warmup_s=warm_s.get(k),
                    peak_mem_gb=peaks[k] if dev.type == 'cuda' else None, params_m=meta[k][2], note=meta[k][0])
            for k, ts in times.items() if ts}
    ref = rows.get(orig, {}).get('images_per_s')
    for r in rows.values(): r['speedup_vs_original'] = r['images_per_s'] / ref if ref else None   # images/s: batches may differ
    ours = {k: r for k, r in rows.items() if k.startswith('ours P2-P7')}
    best = max(ours, key=lambda k: ours[k]['images_per_s']) if ours else None
    at_ref = [k for k in ours if ours[k]['batch'] == a.batch]
    best_at_ref = max(at_ref, key=lambda k: ours[k]['images_per_s']) if at_ref else None
    dev_name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads'
    return dict(device=dev_name, backbone=a.backbone, size=a.size, batch=a.batch, batches=batches, modes=modes, steps=a.steps,
                warmup=a.warmup, fpn_channels=a.fpn_channels, torch=str(torch.__version__), cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if dev.type == 'cuda' else None,
                tf32=dict(cudnn=torch.backends.cudnn.allow_tf32, matmul=torch.backends.cuda.matmul.allow_tf32), rows=rows,
                skipped=dict(skipped), best=best, best_at_original_batch=best_at_ref, phase=phase,
                seconds=round(time.perf_counter() - t_start, 1))

def table(res) -> str:
    "The rows as a markdown table"
    L = ['| configuration | batch | ms/step | images/s | speed-up vs original (images/s) | peak GPU mem GB | warm-up s | notes |',
         '|---|---:|---:|---:|---:|---:|---:|---|']
    for k, r in res['rows'].items():
        mem = '' if r['peak_mem_gb'] is None else f'{r["peak_mem_gb"]:.2f}'
        x = '' if r['speedup_vs_original'] is None else f'{r["speedup_vs_original"]:.2f}x'   # None: the original did not run
        L.append(f'| {k} | {r["batch"]} | {r["median_s"]*1e3:.0f} | {r["images_per_s"]:.2f} | {x} | {mem} | '
                 f'{r["warmup_s"] if r["warmup_s"] is not None else ""} | {r["note"]} |')
    L += [f'| {k} | | | | | | | {"stopped" if k in res["rows"] else "not run"}: {why} |' for k, why in res.get('skipped', {}).items()]
    return '\n'.join(L)

if __name__ == '__main__': main()
