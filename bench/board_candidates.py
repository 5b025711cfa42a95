#!/usr/bin/env python3
"""Survey of board model candidates: what one image costs on the Loongson 2K1000LA (LoongArch instructions counted
by `scripts/board_meter.py` in the emulated board software), FLOPs, parameters and x86 OpenCV 4.10 latency.

    python3 bench/board_candidates.py [--only NAME,...] [--no-meter] [--no-x86] [--max-meter N] [--list]

Each candidate is a RetinaNet + global head with random weights, built here with torch/torchvision only (the same
structure as the package's `PneumoniaNet`: grey input normalised to 3 channels, backbone C2..C5, torchvision FPN with
P6/P7 from C5, classification and box subnets, a global 3-class head on C5), exported like the package exports a board
model: `torch.onnx.export` opset 17, `dynamo=False`, static [1,1,S,S] input `image`, outputs `cls_logits [1,A]`,
`bbox_regression [1,A,4]`, `global_logits [1,3]`, then BatchNorm/constants folded with ONNX Runtime's BASIC level
written to a file (standard ops only). Knobs beyond the package's `ModelCfg`: light torchvision backbones, head
convolutions per subnet and their width, pyramid levels ending at P6, and a grey (1-channel) stem.
The builder does not use `pneumonia_kit`; `--check-package` compares its FLOPs with the package's `create_model` for
the configurations the package supports, and a candidate whose architecture bench/meter_counts.json already counts
(the package's meter, `conv_signature`) takes that count instead of being emulated again.

Writes outputs/board_candidates/{candidates.json,candidates.md} after every candidate (a long run can be stopped and
started again: exports, x86 timings and emulated counts are cached), and board model folders under
outputs/board_candidates/models/NAME/ (model.onnx + board.json). The candidates not yet counted are emulated in the
listed order in ONE guest process (`board_meter.meter_many`: the ~1.9 G-instruction start-up is paid once), each
result cached as soon as it is done; two forwards each (the first with OpenCV's set-up, the second = per image).
"""
from __future__ import annotations
import argparse, importlib.util, json, os, sys, tempfile, time
from collections import OrderedDict
from dataclasses import dataclass, asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO/'outputs'/'board_candidates'
ONNX_OUTPUTS = ('cls_logits', 'bbox_regression', 'global_logits')
FORWARDS = 2  # forwards counted per candidate: the first (with OpenCV's one-time set-up, as REFERENCE.md counts) and a steady one
REFERENCE_G = 27.1  # REFERENCE.md: the original configuration's forward, 512 px, 1 thread (reproduced here as row 0)


def _load_meter():
    spec = importlib.util.spec_from_file_location('board_meter', REPO/'scripts'/'board_meter.py')
    mod = importlib.util.module_from_spec(spec); sys.modules['board_meter'] = mod; spec.loader.exec_module(mod)
    return mod


@dataclass
class Cand:
    name: str
    backbone: str = 'resnet18'
    levels: tuple = (3, 7)          # first, last pyramid level (last 6 or 7; P6 from C5, P7 from P6)
    fpn: int = 128                  # FPN channels
    head_width: int|None = None     # subnet conv width (None: = fpn)
    head_convs: int = 4             # 3x3 convs per subnet before the final conv (torchvision RetinaNetHead: 4)
    size: int = 512
    global_channels: int|None = None  # global head conv channels (None: = fpn, the original: 256)
    grey_stem: bool = False         # first conv takes the 1 grey channel (ImageNet filters summed) instead of 3 copies
    ort_basic: bool = True          # fold with ONNX Runtime's BASIC level (False: torch's own constant folding only)
    note: str = ''
    def __post_init__(self):
        self.levels = tuple(self.levels)
        if self.head_width is None: self.head_width = self.fpn
        if self.global_channels is None: self.global_channels = self.fpn
        if self.size % 2**self.levels[1]: raise ValueError(f'{self.name}: size {self.size} is not a multiple of 2**{self.levels[1]}')
    @property
    def desc(self):
        lv = f'P{self.levels[0]}-P{self.levels[1]}'
        return (f'{self.backbone} {lv} fpn{self.fpn} head{self.head_width}x{self.head_convs} {self.size}px'
                + (' grey-stem' if self.grey_stem else ''))


A = 9  # anchors per location (3 ratios x 3 scales)
HS_NOTE = 'ORT BASIC turns HardSwish into HardSigmoid+Mul, which OpenCV 4.10 then mis-shapes (Concat error): exported without the ORT pass'
CANDIDATES = [
    Cand('original', 'se_resnext50_32x4d', (2, 7), 256, 256, 4, 512, 256, note='the original configuration (SE-ResNeXt50, P2-P7, 256-ch FPN/heads)'),
    Cand('r18_p3p7_128x4', 'resnet18', (3, 7), 128),
    Cand('r18_p4p7_128x4', 'resnet18', (4, 7), 128, note='no P3: anchors from 64 px (boxes at 512 px are ~60-310 px)'),
    Cand('r18_p3p7_128x2', 'resnet18', (3, 7), 128, head_convs=2),
    Cand('r34_p3p7_128x4', 'resnet34', (3, 7), 128, note='REFERENCE: 7.0 G (cross-check of the meter)'),
    Cand('r34_p4p7_128x4', 'resnet34', (4, 7), 128),
    Cand('r34_p3p7_128x4_384', 'resnet34', (3, 7), 128, size=384),
    Cand('r18_p3p7_128x4_384', 'resnet18', (3, 7), 128, size=384),
    Cand('mnv3l_p3p7_128x4', 'mobilenet_v3_large', (3, 7), 128, ort_basic=False, note='depthwise convolutions; ' + HS_NOTE),
    Cand('effb0_p3p7_128x4', 'efficientnet_b0', (3, 7), 128, note='depthwise convolutions + SE'),
    Cand('regx400_p3p7_128x4', 'regnet_x_400mf', (3, 7), 128, note='grouped convolutions (group width 16)'),
    Cand('regy400_p3p7_128x4', 'regnet_y_400mf', (3, 7), 128, note='grouped convolutions + SE'),
    Cand('r18_p3p7_64x4', 'resnet18', (3, 7), 64),
    Cand('r18_p3p7_256x4', 'resnet18', (3, 7), 256, note='full-width heads on a light backbone'),
    Cand('r18_p3p7_128x4_grey', 'resnet18', (3, 7), 128, grey_stem=True),
    Cand('regx800_p3p7_128x4', 'regnet_x_800mf', (3, 7), 128),
    Cand('r18_p3p6_128x4', 'resnet18', (3, 6), 128),
    Cand('r18_p3p7_128x4_256', 'resnet18', (3, 7), 128, size=256),
    Cand('r18_p3p7_128x0', 'resnet18', (3, 7), 128, head_convs=0, note='final convs straight on the pyramid'),
    Cand('r34_p4p6_128x4_448', 'resnet34', (4, 6), 128, size=448, note='448 is not a multiple of 128: pyramid ends at P6'),
    Cand('r18_p4p6_128x4_448', 'resnet18', (4, 6), 128, size=448, note='448 is not a multiple of 128: pyramid ends at P6'),
    Cand('mnv3l_p3p7_128x4_384', 'mobilenet_v3_large', (3, 7), 128, size=384, ort_basic=False, note=HS_NOTE),
    Cand('r18_p3p6_128x4_320', 'resnet18', (3, 6), 128, size=320, note='320 is not a multiple of 128: pyramid ends at P6'),
    Cand('sx50_p3p7_128x4', 'se_resnext50_32x4d', (3, 7), 128, note='REFERENCE: 12.1 G'),
    Cand('original_128', 'se_resnext50_32x4d', (2, 7), 256, 256, 4, 128, 256,
         note="the original at 128 px: OpenCV's one-time set-up (first - second forward) depends on the weights, not the input size"),
]


# ------------------------------------------------------------------------------------------------ the network
def build(c:Cand, seed:int=0):
    "A torch module image [1,1,S,S] -> (cls_logits [1,A], bbox_regression [1,A,4], global_logits [1,3]) for `c`"
    import torch, torch.nn as nn, torch.nn.functional as F, torchvision.models as tvm
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelP6P7
    torch.manual_seed(seed)

    def body(name):
        "(module returning [C2,C3,C4,C5], first conv) for a backbone name"
        if name.startswith('se_resnext'):
            import pretrainedmodels
            net = getattr(pretrainedmodels, name)(pretrained=None)
            g = IntermediateLayerGetter(net, {f'layer{i}': f'c{i+1}' for i in range(1, 5)})
            return g, ('layer0', 'conv1')
        if name.startswith('resnet'):
            net = getattr(tvm, name)(weights=None)
            return IntermediateLayerGetter(net, {f'layer{i}': f'c{i+1}' for i in range(1, 5)}), ('conv1',)
        if name in ('mobilenet_v3_large', 'efficientnet_b0'):
            net = getattr(tvm, name)(weights=None).features
            idx = dict(mobilenet_v3_large=(3, 6, 12, 16), efficientnet_b0=(2, 3, 5, 7))[name]
            net = nn.Sequential(OrderedDict((str(i), m) for i, m in enumerate(net) if i <= idx[-1]))
            return IntermediateLayerGetter(net, {str(i): f'c{k+2}' for k, i in enumerate(idx)}), ('0', '0')
        if name.startswith('regnet'):
            net = getattr(tvm, name)(weights=None)
            seq = nn.Sequential(OrderedDict(stem=net.stem, **{f'block{i}': getattr(net.trunk_output, f'block{i}') for i in range(1, 5)}))
            return IntermediateLayerGetter(seq, {f'block{i}': f'c{i+1}' for i in range(1, 5)}), ('stem', '0')
        raise ValueError(f'unknown backbone {name}')

    class LastLevelP6(ExtraFPNBlock):
        "P6 only, by a stride-2 3x3 conv on C5 (what LastLevelP6P7 does, without P7)"
        def __init__(self, cin, cout):
            super().__init__(); self.p6 = nn.Conv2d(cin, cout, 3, 2, 1)
        def forward(self, p, c, names):
            return p + [self.p6(c[-1])], names + ['p6']

    class Subnet(nn.Module):
        def __init__(self, cin, width, n, out_per_anchor):
            super().__init__()
            layers, ch = [], cin
            for _ in range(n): layers += [nn.Conv2d(ch, width, 3, padding=1), nn.ReLU()]; ch = width
            self.tower, self.final, self.k = nn.Sequential(*layers), nn.Conv2d(ch, A * out_per_anchor, 3, padding=1), out_per_anchor
        def forward(self, feats):
            outs = []
            for f in feats:   # torchvision RetinaNetHead's layout: (N, H, W, A, K) flattened per level
                y = self.final(self.tower(f)); N, _, H, W = y.shape
                outs.append(y.view(N, A, self.k, H, W).permute(0, 3, 4, 1, 2).reshape(N, -1, self.k))
            return torch.cat(outs, 1)

    class GlobalHead(nn.Module):
        def __init__(self, cin, ch):
            super().__init__(); self.conv, self.fc = nn.Conv2d(cin, ch, 3, padding=1), nn.Linear(2 * ch, 3)
        def forward(self, x):
            x = F.relu(self.conv(F.max_pool2d(x, 2, ceil_mode=True)))
            return self.fc(torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], 1).flatten(1))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, first = body(c.backbone)
            with torch.no_grad():
                chans = [f.shape[1] for f in self.body(torch.zeros(1, 3, 64, 64)).values()]
            if c.grey_stem:   # one input channel: the RGB filters summed (what ImageNet weights become for a grey image)
                parent = self.body
                for n in first[:-1]: parent = getattr(parent, n)
                old = getattr(parent, first[-1])
                conv = old if isinstance(old, nn.Conv2d) else old[0]
                new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
                with torch.no_grad(): new.weight.copy_(conv.weight.sum(1, keepdim=True))
                if isinstance(old, nn.Conv2d): setattr(parent, first[-1], new)
                else: old[0] = new
            lo, hi = c.levels
            extra = LastLevelP6P7(chans[-1], c.fpn) if hi == 7 else LastLevelP6(chans[-1], c.fpn) if hi == 6 else None
            if hi == 7: extra.use_P5 = False
            self.lo = lo
            self.fpn = FeaturePyramidNetwork(chans[lo - 2:], c.fpn, extra_blocks=extra)
            self.cls, self.reg = Subnet(c.fpn, c.head_width, c.head_convs, 1), Subnet(c.fpn, c.head_width, c.head_convs, 4)
            self.glob = GlobalHead(chans[-1], c.global_channels)
            self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        def forward(self, image):
            x = (image - 0.449) / 0.226 if c.grey_stem else (image - self.mean) / self.std
            feats = list(self.body(x).values())
            pyr = list(self.fpn(OrderedDict((f'c{i}', f) for i, f in enumerate(feats[self.lo - 2:], self.lo))).values())
            return self.cls(pyr).flatten(1), self.reg(pyr), self.glob(feats[-1])
    return Net().eval()


def cand_key(c:Cand) -> str:
    "What decides the exported network (the note does not; ort_basic only when off, as before it existed)"
    d = asdict(c); d.pop('note')
    if d['ort_basic']: d.pop('ort_basic')
    return json.dumps(d, sort_keys=True)


def num_anchors(c:Cand) -> int:
    lo, hi = c.levels
    return sum((c.size // 2**l) ** 2 for l in range(lo, hi + 1)) * A


def flops_params(net, c:Cand) -> dict:
    "GFLOPs (torch's FlopCounterMode: 2 per multiply-add) of one forward, in total and per part; millions of parameters"
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    count = lambda: FlopCounterMode(display=False)
    x = torch.rand(1, 1, c.size, c.size)
    with torch.no_grad():
        with count() as ft: net(x)
        xin = (x - 0.449) / 0.226 if c.grey_stem else (x - net.mean) / net.std
        with count() as fb: feats = list(net.body(xin).values())
        with count() as ff: pyr = list(net.fpn(OrderedDict((f'c{i}', f) for i, f in enumerate(feats[net.lo - 2:], net.lo))).values())
        with count() as fh: net.cls(pyr); net.reg(pyr)
        with count() as fg: net.glob(feats[-1])
    parts = dict(backbone=fb.get_total_flops(), fpn=ff.get_total_flops(), heads=fh.get_total_flops(), global_head=fg.get_total_flops())
    n = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())
    params = dict(backbone=n(net.body), fpn=n(net.fpn), heads=n(net.cls, net.reg), global_head=n(net.glob))
    return dict(gflop=ft.get_total_flops() / 1e9, gflop_parts={k: round(v / 1e9, 3) for k, v in parts.items()},
                mparams=sum(params.values()) / 1e6, mparams_parts={k: round(v / 1e6, 3) for k, v in params.items()})


def export(net, c:Cand, out_dir:Path) -> dict:
    "model.onnx (opset 17, legacy exporter, BASIC-optimised) + board.json + reference outputs; returns facts"
    import numpy as np, torch, onnx, onnxruntime as ort
    out_dir.mkdir(parents=True, exist_ok=True)
    S = c.size
    x = torch.from_numpy(np.random.default_rng(0).random((1, 1, S, S), dtype=np.float32))
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix='.export.', suffix='.onnx'); os.close(fd)
    fd, opt = tempfile.mkstemp(dir=out_dir, prefix='.opt.', suffix='.onnx'); os.close(fd)
    try:
        with torch.no_grad():
            torch.onnx.export(net.eval(), (x,), tmp, input_names=['image'], output_names=list(ONNX_OUTPUTS),
                              opset_version=17, dynamo=False, do_constant_folding=True)
        if c.ort_basic:
            so = ort.SessionOptions()
            so.graph_optimization_level, so.optimized_model_filepath = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, opt
            so.log_severity_level = 3
            ort.InferenceSession(tmp, so, providers=['CPUExecutionProvider'])
        else: os.replace(tmp, opt)
        g = onnx.load(opt)
        odd = {n.domain for n in g.graph.node} - {'', 'ai.onnx'}
        if odd: raise RuntimeError(f'{c.name}: optimisation introduced non-standard operators {odd}')
        ops = {}
        for n in g.graph.node: ops[n.op_type] = ops.get(n.op_type, 0) + 1
        os.replace(opt, out_dir/'model.onnx')
    finally:
        for f in (tmp, opt):
            if os.path.exists(f): os.unlink(f)
    sess = ort.InferenceSession(str(out_dir/'model.onnx'), providers=['CPUExecutionProvider'])
    got = sess.run(list(ONNX_OUTPUTS), {'image': x.numpy()})
    with torch.no_grad(): ref = [t.numpy() for t in net(x)]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
    shapes = [list(r.shape) for r in ref]
    assert shapes == [[1, num_anchors(c)], [1, num_anchors(c), 4], [1, 3]], shapes
    np.savez(out_dir/'reference_outputs.npz', **dict(zip(ONNX_OUTPUTS, ref)))
    meta = dict(format_version=1, model_file='model.onnx', input_name='image', input_size=S, input_shape=[1, 1, S, S],
                input_range=[0., 1.], output_names=list(ONNX_OUTPUTS), num_anchors=num_anchors(c), levels=list(c.levels),
                backbone=c.backbone, candidate=asdict(c), weights='random (seed 0): for cost only',
                onnx_optimized=f'onnxruntime {ort.__version__} basic' if c.ort_basic else 'torch constant folding only', opset=17)
    (out_dir/'board.json').write_text(json.dumps(meta, indent=2))
    return dict(onnxruntime_vs_torch=diff, onnx_ops=dict(sorted(ops.items())), outputs=shapes,
                onnx_mb=round((out_dir/'model.onnx').stat().st_size / 2**20, 1),
                reference_abs_sum=float(sum(np.abs(r).sum() for r in ref)))


CV_PARITY = r'''
import json, sys, numpy as np, cv2
d = sys.argv[1]; S = int(sys.argv[2])
cv2.setNumThreads(1)
ref = np.load(d + '/reference_outputs.npz')
net = cv2.dnn.readNetFromONNX(d + '/model.onnx')
x = np.random.default_rng(0).random((1, 1, S, S), dtype=np.float32)
net.setInput(x); names = ['cls_logits', 'bbox_regression', 'global_logits']
outs = net.forward(names)
print('PARITY ' + json.dumps(dict(opencv=cv2.__version__, max_abs_diff={n: float(np.abs(o.reshape(ref[n].shape) - ref[n]).max()) for n, o in zip(names, outs)})))
'''


def cv_parity(python:Path, model_dir:Path, size:int) -> dict:
    import subprocess
    r = subprocess.run([str(python), '-c', CV_PARITY, str(model_dir), str(size)], capture_output=True, text=True, timeout=1800)
    line = [l for l in r.stdout.splitlines() if l.startswith('PARITY ')]
    if r.returncode or not line: return dict(error=(r.stderr.strip().splitlines() or ['?'])[-1][:300])
    return json.loads(line[-1][7:])


# ------------------------------------------------------------------------------------------------ table
def committed_count(c:Cand, out:Path) -> dict|None:
    """The count of `c`'s architecture in bench/meter_counts.json (the package meter's counts committed with the source,
    matched by `pneumonia_kit.meter.conv_signature`: the same convolutions at the same input size, other random
    weights), so a candidate counted there is not emulated again; None when not there or the package does not import"""
    try: from pneumonia_kit.meter import conv_signature, reference_counts
    except ImportError: return None
    sig = conv_signature(out/'models'/c.name/'model.onnx', c.size)
    r = next((r for r in reference_counts() if r['signature'] == sig and r['size'] == c.size and r.get('insns')), None)
    return dict(r, source='bench/meter_counts.json') if r else None


def markdown(rows:list, assumptions:dict, ref_g:float|None, ref_steady:float|None=None) -> str:
    L = ['# Board model candidates (random weights; cost only)', '',
         'Board cost: LoongArch instructions of a forward pass at 1 OpenCV thread, counted by `scripts/board_meter.py` '
         '(Debian sid loong64 python3 + numpy + OpenCV 4.10 under QEMU 10 `la464,lasx=off` with the `insn` plugin). '
         '"first" = the first forward of a loaded network (includes OpenCV\'s one-time set-up: what REFERENCE.md counts), '
         '"per image" = the second forward (what each further image costs). "vs original" = the original configuration\'s '
         'count / this one\'s, first and per image' + (f' (original counted: {ref_g / 1e9:.2f} G first' + (
             f', {ref_steady / 1e9:.2f} G per image)' if ref_steady else ')') if ref_g else
         f' (REFERENCE.md figure {REFERENCE_G} G until measured)') + '. Counts marked * come from bench/meter_counts.json '
         '(the package meter, the same architecture with other random weights); the rest from this survey\'s emulation.',
         'Board estimate (per image) = per-image instructions / (' + ' x '.join(f'{k} {v}' for k, v in assumptions.items()) + '). '
         'x86: opencv-python-headless 4.10 median latency on this 2-core machine (shared; a second opinion only). '
         'GFLOP: torch FlopCounterMode (2 per multiply-add).', '',
         '| # | candidate | configuration | G insns first | per image | vs original (first / per image) | board s/image (est.) | GFLOP | FLOP/insn (per image) | Mparams | x86 4.10 ms 1t | 2t | GFLOP backbone/fpn/heads/global | note |',
         '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    f = lambda v, fmt: format(v, fmt) if isinstance(v, (int, float)) else '—'
    for i, r in enumerate(rows):
        gp = r['gflop_parts']
        vs = f'{f(r.get("vs_original"), ".2f")}x / {f(r.get("vs_original_steady"), ".2f")}x' if r.get('vs_original') else '—'
        vs = vs.replace('—x', '—')
        per_image = f(r.get('steady_G'), '.2f') + (' (est.)' if r.get('steady_estimated') else '')
        L.append('| ' + ' | '.join(str(x) for x in [
            i, r['name'], r['desc'], f(r.get('insns_G'), '.2f') + ('*' if r.get('counted_in') else ''), per_image, vs,
            f(r.get('board_s_steady'), '.1f') if r.get('board_s_steady') else (f(r.get('board_s_first'), '.1f') + ' (first)' if r.get('board_s_first') else '—'),
            f(r['gflop'], '.1f'), f(r.get('steady_flop_per_insn'), '.1f') if r.get('steady_flop_per_insn') else (f(r.get('flop_per_insn'), '.1f') + ' (first)' if r.get('flop_per_insn') else '—'),
            f(r['mparams'], '.1f'),
            r.get('x86_ms_1t', '—'), r.get('x86_ms_2t', '—'),
            f'{gp["backbone"]:.1f}/{gp["fpn"]:.1f}/{gp["heads"]:.1f}/{gp["global_head"]:.2f}', r.get('note', '')]) + ' |')
    return '\n'.join(L) + '\n'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--only', help='comma-separated candidate names (default: all, in the listed order)')
    ap.add_argument('--list', action='store_true', help='list the candidates and exit')
    ap.add_argument('--no-meter', action='store_true', help='no emulation (exports, FLOPs, x86 only; cached counts still shown)')
    ap.add_argument('--no-x86', action='store_true', help='no x86 OpenCV 4.10 timing')
    ap.add_argument('--max-meter', type=int, default=None, help='emulate at most N not-yet-counted candidates this run')
    ap.add_argument('--phase', default='all', choices=('all', 'prepare', 'meter'),
                    help='prepare: export + FLOPs + x86 timing (no emulation); meter: export + emulation (no x86); all: both')
    ap.add_argument('--remeasure-x86', action='store_true', help='time x86 again instead of using cached latencies')
    ap.add_argument('--parity-only', action='store_true', help='only check OpenCV 4.10 (x86) outputs against PyTorch, 1 thread')
    ap.add_argument('--forwards', type=int, default=FORWARDS, help='forwards counted per candidate (1: first only, half the emulation)')
    ap.add_argument('--order', help='comma-separated names to emulate first (then the rest in the listed order)')
    ap.add_argument('--out', default=str(OUT))
    ap.add_argument('--check-package', action='store_true', help="compare FLOPs with the package's create_model where it can")
    a = ap.parse_args(argv)
    cands = CANDIDATES
    if a.only:
        want = a.only.split(','); names = {c.name for c in CANDIDATES}
        bad = [w for w in want if w not in names]
        if bad: print(f'board_candidates: unknown candidate(s) {bad}; see --list', file=sys.stderr); return 2
        cands = [c for c in CANDIDATES if c.name in want]
    if a.list:
        for c in cands: print(f'{c.name:24s} {c.desc}  {c.note}')
        return 0
    bm = _load_meter()
    out = Path(a.out); (out/'models').mkdir(parents=True, exist_ok=True)
    try: tools = bm.find_tools(bm.WORK, need_x86=not a.no_x86)
    except bm.MeterError as e:
        if not (a.no_meter and a.no_x86): print(f'board_candidates: {e}', file=sys.stderr); return 2
        tools = None   # the table without counts
    state_f = out/'prepared.json'
    state = json.loads(state_f.read_text()) if state_f.is_file() else {}
    cache = bm.Cache(bm.WORK/'meter'/'cache.json')
    log = lambda s: print(s, file=sys.stderr, flush=True)

    def prepare(c):
        d = out/'models'/c.name
        key = cand_key(c)
        st = state.get(c.name)
        if st and st.get('key') == key and (d/'model.onnx').is_file(): return st
        import torch
        torch.set_num_threads(2)
        t0 = time.time()
        net = build(c)
        st = dict(key=key, **flops_params(net, c))
        st.update(export(net, c, d)); st['export_s'] = round(time.time() - t0, 1)
        if a.check_package: st['package_check'] = package_flops(c)
        state[c.name] = st; state_f.write_text(json.dumps(state, indent=1))
        log(f'   {c.name}: {st["gflop"]:.1f} GFLOP, {st["mparams"]:.1f} M params, exported in {st["export_s"]} s')
        return st

    if a.parity_only:
        for c in cands:
            st = prepare(c)
            if 'cv410_parity' not in st:
                st['cv410_parity'] = cv_parity(tools['x86_python'], out/'models'/c.name, c.size)
                state_f.write_text(json.dumps(state, indent=1))
            log(f'   {c.name}: {st["cv410_parity"]}')
        return 0
    assumptions = {k: v[0] for k, v in bm.ASSUMPTIONS.items()}
    ref = dict(first=None, steady=None)
    gv = bm.guest_versions(Path(tools['rootfs'])) if tools else {}
    emu_key = lambda c, n=FORWARDS: bm.emu_key(bm.file_sha256(out/'models'/c.name/'model.onnx'), c.size, gv.get('opencv'), bm.QEMU_CPU, 'fork', n)

    def write(rows):
        js = dict(rows=rows, reference_insns=ref['first'], reference_steady_insns=ref['steady'],
                  assumptions={k: dict(value=v[0], why=v[1]) for k, v in bm.ASSUMPTIONS.items()}, ipc_range=bm.IPC_RANGE,
                  note='random weights; cost only. x86 latency on a shared 2-core machine (see x86_loadavg).')
        (out/'candidates.json').write_text(json.dumps(js, indent=1, default=str))
        (out/'candidates.md').write_text(markdown(rows, assumptions, ref['first'], ref['steady']))

    for c in cands: prepare(c)
    errors = {}
    if a.phase in ('all', 'meter') and not a.no_meter:
        # not emulated again: counted here with at least --forwards forwards, or in bench/meter_counts.json
        todo = [c for c in cands if cache.get(emu_key(c)) is None and (a.forwards > 1 or cache.get(emu_key(c, 1)) is None)
                and not (committed_count(c, out) or {}).get('steady_insns' if a.forwards > 1 else 'insns')]
        first = (a.order or '').split(',')
        todo.sort(key=lambda c: first.index(c.name) if c.name in first else len(first))
        if a.max_meter is not None: todo = todo[:a.max_meter]
        if todo:
            try: bm.meter_many([out/'models'/c.name for c in todo], forwards=a.forwards, x86=False, tools=tools, cache=cache, progress=log)
            except (RuntimeError, bm.MeterError) as e:
                log(f'   metering FAILED: {e}')
                for c in todo:
                    if cache.get(emu_key(c)) is None: errors[c.name] = str(e); break
    rows = []
    for c in cands:
        st = prepare(c)
        d = out/'models'/c.name
        row = dict(name=c.name, desc=c.desc, note=c.note, size=c.size, levels=list(c.levels), backbone=c.backbone,
                   fpn=c.fpn, head_width=c.head_width, head_convs=c.head_convs, grey_stem=c.grey_stem, ort_basic=c.ort_basic,
                   gflop=round(st['gflop'], 2), gflop_parts=st['gflop_parts'], mparams=round(st['mparams'], 2),
                   mparams_parts=st['mparams_parts'], onnxruntime_vs_torch=st['onnxruntime_vs_torch'],
                   onnx_mb=st['onnx_mb'], onnx_ops=st['onnx_ops'], num_anchors=num_anchors(c), cv410_vs_torch=st.get('cv410_parity'))
        if c.name in errors: row['meter_error'] = errors[c.name]
        if not a.no_x86 and a.phase != 'meter':
            if 'cv410_parity' not in st:
                st['cv410_parity'] = row['cv410_vs_torch'] = cv_parity(tools['x86_python'], d, c.size)
                state_f.write_text(json.dumps(state, indent=1))
            xk = bm.x86_key(bm.file_sha256(d/'model.onnx'), c.size, tools['x86_python'], (1, 2))
            xr = cache.get(xk)
            if xr is None or a.remeasure_x86:
                log(f'   {c.name}: x86 OpenCV 4.10 timing ...')
                xr = bm.x86_latency(tools['x86_python'], d/'model.onnx', c.size, budget_s=3.0); xr['measured_at'] = time.strftime('%F %T')
                cache.put(xk, xr)
            row.update({f'x86_ms_{k}t': round(v['median_ms'], 1) for k, v in xr['threads'].items()}, x86_loadavg=xr.get('loadavg'),
                       x86_measured_at=xr.get('measured_at'))
            if '1' in xr['threads'] and '2' in xr['threads']:
                row['x86_parallel_eff'] = round(xr['threads']['1']['median_ms'] / (2 * xr['threads']['2']['median_ms']), 2)
        rec = (cache.get(emu_key(c)) or cache.get(emu_key(c, 1))) if tools else None   # forwards=1: first forward only
        rec = max((r for r in (rec, committed_count(c, out)) if r), key=lambda r: bool(r.get('steady_insns')), default=None)
        if rec and rec.get('source'): row['counted_in'] = rec['source']
        if rec:
            g, gs = rec['insns'], rec.get('steady_insns')
            if gs is None and c.name == 'original':
                # first forward only (stopped to save emulation time): per image = first - the set-up measured at 128 px
                small = next((x for x in CANDIDATES if x.name == 'original_128'), None)
                r128 = cache.get(emu_key(small)) if small and (out/'models'/small.name/'model.onnx').is_file() else None
                if r128 and r128.get('steady_insns'):
                    gs = g - (r128['insns'] - r128['steady_insns'])
                    row['steady_estimated'] = 'first forward minus the set-up (first - second forward) of original_128'
            if c.name == 'original': ref.update(first=g, steady=gs)
            est = lambda n, ipc=assumptions['ipc']: round(bm.board_estimate(n, assumptions['ghz'], ipc, assumptions['threads'], assumptions['efficiency']), 2)
            row.update(insns_G=round(g / 1e9, 3), baseline_G=round(rec['baseline'] / 1e9, 3) if rec.get('baseline') else None, flop_per_insn=round(st['gflop'] * 1e9 / g, 2),
                       board_s_first=est(g), emulation_s=rec.get('emulation_s'), measured_at=rec.get('measured_at'),
                       forwards_counted=rec.get('forwards'),
                       guest_checksum_rel_err=(abs(rec['checksum'] - st['reference_abs_sum']) / max(st['reference_abs_sum'], 1e-9)
                                               if rec.get('checksum') is not None else None))
            if gs:
                row.update(steady_G=round(gs / 1e9, 3), setup_G=round((g - gs) / 1e9, 3), steady_flop_per_insn=round(st['gflop'] * 1e9 / gs, 2),
                           board_s_steady=est(gs), board_s_steady_range=[est(gs, i) for i in bm.IPC_RANGE[::-1]])
        rows.append(row)
    for r in rows:
        first = ref['first'] or REFERENCE_G * 1e9
        if r.get('insns_G'): r['vs_original'] = round(first / (r['insns_G'] * 1e9), 2)
        if r.get('steady_G') and ref['steady']: r['vs_original_steady'] = round(ref['steady'] / (r['steady_G'] * 1e9), 2)
    write(rows)
    print(markdown(rows, assumptions, ref['first'], ref['steady']))
    print(f'written: {out/"candidates.json"}, {out/"candidates.md"}')
    return 0


def package_flops(c:Cand):
    "GFLOPs of the package's own model for the same configuration, where the package supports it (else None)"
    try:
        sys.path.insert(0, str(REPO))
        from pneumonia_kit.model import create_model, count_flops
    except Exception as e: return f'package not importable: {e}'
    if c.grey_stem or c.head_convs != 4 or c.head_width != c.fpn or c.levels[1] not in (5, 7) or \
       c.backbone not in ('se_resnext50_32x4d', 'resnet34', 'resnet50'): return None
    try:
        m = create_model(dict(backbone=c.backbone, pretrained=False, image_size=c.size, levels=c.levels, fpn_channels=c.fpn,
                              global_channels=c.global_channels))
        return round(count_flops(m), 2)
    except Exception as e: return f'failed: {e}'


if __name__ == '__main__':
    sys.exit(main())
