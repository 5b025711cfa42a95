#!/usr/bin/env python
"""Frozen batch norm: what each way of computing it costs one training step of pneumonia_kit (issue 20).

The backbone's frozen BatchNorm, computed three ways, in one training step of `bench_train_step.ours_model` (forward
under autocast, loss, backward, clipping, Adam), fp32 and bf16:
- `torchvision`: torchvision's `FrozenBatchNorm2d` (`x * scale + bias`, fp32 scale: bf16 activations become fp32);
- `batch_norm`: one inference-mode `F.batch_norm` (the original's eval-mode BN): fewest kernels, but keeps its input;
- `FrozenBN2d`: pneumonia_kit's (one `addcmul` in the activations' dtype), the one the package uses.
Columns: ATen ops dispatched per step (each is a kernel launch or more on CUDA: the host's work at a launch-bound batch),
dtype casts among them, MiB of distinct storage kept for the backward pass (`saved_tensors_hooks`), ms per step
(median). Ratios are against `torchvision` at the same precision, in this one run.

    python bench/bench_frozen_bn.py                                        # SE-ResNeXt101 P2-P7, 256 px, batch 4, CPU
    python bench/bench_frozen_bn.py --device cuda --size 512 --json out.json
    python bench/bench_frozen_bn.py --backbone resnet_tiny --size 128 --fpn-channels 16 --steps 1  # dry run, seconds
"""
import argparse, collections, json, platform, statistics, sys
from pathlib import Path
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops.misc import FrozenBatchNorm2d

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train_step as B  # noqa: E402
from pneumonia_kit.backbones import FrozenBN2d  # noqa: E402
from pneumonia_kit.core import PneumoniaKitError  # noqa: E402

VARIANTS = {
    'torchvision': FrozenBatchNorm2d.forward,
    'batch_norm': lambda s, x: F.batch_norm(x, s.running_mean, s.running_var, s.weight, s.bias, False, 0., s.eps),
    'FrozenBN2d': FrozenBN2d.forward,
}

class OpCount(TorchDispatchMode):
    "Counts the ATen ops dispatched inside it, by name"
    def __init__(self): super().__init__(); self.ops = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

def saved_mib(run) -> float:
    "MiB of distinct storage that autograd keeps for the backward pass during `run()`"
    seen, total = set(), [0]
    def pack(t):
        k = t.untyped_storage().data_ptr()
        if k not in seen: seen.add(k); total[0] += t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): run()
    return total[0] / 2**20

def measure(a, dev, variant, amp) -> dict:
    "One row: the step of `ours_model` with `FrozenBN2d.forward` swapped for `variant`"
    FrozenBN2d.forward = VARIANTS[variant]
    try:
        m, run, dt = B.ours_model(a.backbone, a.size, (2, 7), dev, amp, dev.type == 'cuda', a.fpn_channels)
        data = [B.padded(*B.make_batch(a.batch, a.size), dev)]
        step = lambda: run(data)
        step()   # warm-up: optimizer state, autotuning
        with OpCount() as c: step()
        mib = saved_mib(step)
        ms = statistics.median(B.time_steps(step, dev, 0, a.steps)) * 1e3
    finally: FrozenBN2d.forward = VARIANTS['FrozenBN2d']
    return dict(variant=variant, amp=amp, aten_ops=sum(c.ops.values()), casts=c.ops['_to_copy'], saved_mib=round(mib, 1),
                ms_per_step=round(ms, 1))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--backbone', default='se_resnext101_32x4d')
    p.add_argument('--size', type=int, default=256, help='input size (ops and casts do not depend on it)')
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--fpn-channels', type=int, default=256)
    p.add_argument('--steps', type=int, default=3, help='timed steps per row (median)')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--json', default=None, help='also write the JSON result here')
    a = p.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    if a.device == 'cuda' and not torch.cuda.is_available(): p.error('--device cuda: no CUDA GPU here')
    dev = torch.device(a.device)
    try: rows = [measure(a, dev, v, amp) for amp in ('off', 'bf16') for v in VARIANTS]
    except PneumoniaKitError as e: p.error(str(e))   # an unknown backbone, a size the pyramid cannot take: one line
    for r in rows:
        ref = next(q for q in rows if q['amp'] == r['amp'] and q['variant'] == 'torchvision')
        r.update({f'{k}_ratio': round(r[k] / ref[k], 3) for k in ('aten_ops', 'saved_mib', 'ms_per_step')})
    dev_name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else \
        f'{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads'
    res = dict(device=dev_name, torch=str(torch.__version__), backbone=a.backbone, size=a.size, batch=a.batch,
               fpn_channels=a.fpn_channels, levels='P2-P7', rows=rows)
    print(f'\nFrozen BN in one training step: {a.backbone} P2-P7, {a.size} px, batch {a.batch}, {dev_name}, '
          f'torch {torch.__version__}\n')
    print('| frozen BN | autocast | ATen ops/step | casts | MiB kept for backward | ms/step | ops, memory, time vs torchvision |')
    print('|---|---|---:|---:|---:|---:|---|')
    for r in rows:
        print(f'| {r["variant"]} | {r["amp"]} | {r["aten_ops"]} | {r["casts"]} | {r["saved_mib"]:.0f} | {r["ms_per_step"]:.0f} | '
              f'{r["aten_ops_ratio"]:.2f}x, {r["saved_mib_ratio"]:.2f}x, {r["ms_per_step_ratio"]:.2f}x |')
    print('\n' + json.dumps(res, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))
    return res

if __name__ == '__main__': main()
