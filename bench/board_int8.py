#!/usr/bin/env python3
"""int8 on the board's runtime: which int8 forms OpenCV 4.10 DNN runs, how far their outputs are from fp32, and what
they cost on the board (LoongArch instructions counted by `scripts/board_meter.py`) against the fp32 model.

    python3 bench/board_int8.py [--model DIR] [--meter] [--forms fp32,opencv-quantize,ort-qoperator,ort-qdq]
                                [--calib-images 8] [--eval-images 8] [--x86-budget 3] [--quick] [--out DIR]

The int8 forms of one board model (default: the random-weight `board_r18_p4p7` candidate written by
`bench/board_candidates.py --only r18_p4p7_128x4 --no-meter --no-x86`; any board model folder works):
- `opencv-quantize`: OpenCV DNN's own int8 net, `cv2.dnn.Net.quantize([calib], CV_32F, CV_32F)` (per-channel weights,
  activation ranges from ONE forward of one calibration image: the input's batch is fixed at 1). It exists only in
  memory (OpenCV cannot save it), so the board would read the fp32 model and quantize at every start.
- `ort-qoperator`: ONNX Runtime's `quantize_static` in the QOperator format (QLinearConv, QLinearAdd, ...; per-channel
  int8 weights, uint8 activations, MinMax ranges over `--calib-images` images), which OpenCV imports as int8 layers.
  The nodes between the last convolutions and the outputs stay fp32 (one range shared by all levels' concatenated
  box deltas cost the paired mAP 0.2 on a CPU-trained model).
- `ort-qdq`: the same in the QDQ format (what `pneumonia-kit export --int8` writes for ONNX Runtime); OpenCV 4.10
  imports it as fp32 layers between Quantize/Dequantize pairs, so it cannot be cheaper than fp32.
Inputs are synthetic-twin chest images (`pneumonia_kit.synth`, prepared like the board predictor does: resized, /255),
calibration images from the twin's train split and evaluation images from its test split; without the package,
seeded noise.

What is measured, per form: whether OpenCV 4.10 (x86, opencv-python-headless 4.10 in the meter's venv) reads and runs
it, its layer types, its outputs against the fp32 model's in the same OpenCV on the evaluation images (max abs
difference, relative = max abs / max |fp32|, mean abs, correlation, on cls_logits, bbox_regression and global_logits;
and the largest change of a box score, sigmoid(cls_logits)), x86 median latency at 1 and 2 threads (a second opinion
only; the forms timed in turn, round by round, in one process), and with `--meter` the board instructions of the
first and of a further forward (2 forwards, 1 OpenCV thread, emulated LSX-only LoongArch CPU; cached by `board_meter`
by model hash). The decision line applies issue 24's rule:
an int8 form is a candidate only when it costs >= 1.5x fewer instructions per further image than fp32; adopting it
also needs the paired accuracy test (lower bound >= -0.01 on 1,000+ test images of a trained model: the GPU lab).

Writes outputs/board_int8/{results.json,results.md} and the forms (model_qoperator.onnx, model_qdq.onnx, calib.npy).
`--quick` makes a tiny random network at 64 px and runs in seconds (for tests): no meter, a short x86 timing.
Exit status: 0 done, 2 bad input (one line: a missing model, OpenCV 4.10 venv or meter, with the command that makes it).
"""
from __future__ import annotations
import argparse, importlib.util, json, os, subprocess, sys, time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO/'outputs'/'board_int8'
DEFAULT_MODEL = REPO/'outputs'/'board_candidates'/'models'/'r18_p4p7_128x4'
EXPORT_HINT = 'python3 bench/board_candidates.py --only r18_p4p7_128x4 --no-meter --no-x86'
OUTPUTS = ('cls_logits', 'bbox_regression', 'global_logits')
FORMS = ('fp32', 'opencv-quantize', 'ort-qoperator', 'ort-qdq')
MIN_RATIO = 1.5       # issue 24: adopt int8 only if >= 1.5x fewer board instructions (per further image) ...
MIN_LOWER = -0.01     # ... and its paired test difference against fp32 has a lower bound >= -0.01 (1,000+ images)


class Int8Error(Exception):
    "Bad input or a missing tool: one line, exit 2"


def load_meter():
    spec = importlib.util.spec_from_file_location('board_meter', REPO/'scripts'/'board_meter.py')
    mod = importlib.util.module_from_spec(spec); sys.modules.setdefault('board_meter', mod)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------ model and inputs
def tiny_model(out_dir:Path, size:int=64) -> Path:
    "A tiny random board-shaped network (the three outputs, a residual block, an FPN-like add) for --quick"
    import warnings, torch, torch.nn as nn, torch.nn.functional as F
    warnings.filterwarnings('ignore', category=DeprecationWarning)   # the legacy exporter, as the package exports
    torch.manual_seed(0); A = 9

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3 = nn.Conv2d(1, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 16, 3, 2, 1)
            self.lat, self.fc = nn.Conv2d(16, 8, 1), nn.Linear(32, 3)
            self.cls, self.reg = nn.Conv2d(8, A, 3, 1, 1), nn.Conv2d(8, 4 * A, 3, 1, 1)
        def forward(self, x):
            a = F.relu(self.c1((x - 0.449) / 0.226)); a = F.relu(a + self.c2(a)); b = F.relu(self.c3(a))
            p = self.lat(b) + F.max_pool2d(a, 2)
            c, r = self.cls(F.relu(p)), self.reg(F.relu(p)); N, _, H, W = c.shape
            cls = c.view(N, A, 1, H, W).permute(0, 3, 4, 1, 2).reshape(N, -1)
            reg = r.view(N, A, 4, H, W).permute(0, 3, 4, 1, 2).reshape(N, -1, 4)
            g = torch.cat([F.adaptive_avg_pool2d(b, 1), F.adaptive_max_pool2d(b, 1)], 1).flatten(1)
            return cls, reg, self.fc(g)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(Tiny().eval(), (torch.rand(1, 1, size, size),), str(out_dir/'model.onnx'),
                      input_names=['image'], output_names=list(OUTPUTS), opset_version=17, dynamo=False,
                      do_constant_folding=True)
    meta = dict(model_file='model.onnx', input_name='image', input_size=size, output_names=list(OUTPUTS),
                weights='random (seed 0): tiny test net')
    (out_dir/'board.json').write_text(json.dumps(meta))
    return out_dir


def resolve(model:Path) -> dict:
    "dict(dir, onnx, size, input_name) of a board model folder; `Int8Error` naming the export command when missing"
    model = Path(model)
    if not (model/'board.json').is_file() or not model.is_dir():
        hint = f' (make it with: {EXPORT_HINT})' if model.resolve() == DEFAULT_MODEL.resolve() else ''
        raise Int8Error(f'{model}: not a board model folder (model.onnx + board.json){hint}')
    try: meta = json.loads((model/'board.json').read_text())
    except ValueError as e: raise Int8Error(f'{model}/board.json is not valid JSON: {e}') from None
    onnx = model/meta.get('model_file', 'model.onnx')
    if not onnx.is_file(): raise Int8Error(f'{model}: no {onnx.name}')
    if not meta.get('input_size'): raise Int8Error(f'{model}/board.json has no input_size')
    return dict(dir=model.resolve(), onnx=onnx.resolve(), size=int(meta['input_size']),
                input_name=meta.get('input_name', 'image'), weights=meta.get('weights', 'trained'))


def images(n:int, size:int, split:str, seed:int=11) -> tuple[np.ndarray, str]:
    "[n,1,S,S] float32 network inputs: synthetic-twin images (resized like the board does, /255), or seeded noise"
    try:
        from pneumonia_kit.readers import sample_case   # the dev venv (else: noise, below)
        from pneumonia_kit.synth import render_case
        from pneumonia_kit.board import prepare_input
    except ImportError:
        rng = np.random.default_rng(seed + (split == 'test'))
        return rng.random((n, 1, size, size), dtype=np.float32), 'uniform noise (pneumonia_kit not importable)'
    xs = [prepare_input(render_case(sample_case(seed, i, size=max(size, 256), split=split)), size)[0]
          for i in range(n)]
    return np.stack(xs).astype(np.float32), f'synthetic twin images (seed {seed}, default difficulty)'


# ------------------------------------------------------------------------------------------------ the int8 forms
def output_tails(onnx_path:Path) -> list:
    """Names of the nodes between the last convolutions and the outputs (Reshape, Transpose, Concat, pooling, Gemm):
    left fp32, so each level's final convolution is dequantized with its own range instead of one range shared by the
    concatenated outputs of all levels (which costs the box deltas of the small levels their precision)"""
    import onnx
    nodes = onnx.load(str(onnx_path), load_external_data=False).graph
    prod = {o: n for n in nodes.node for o in n.output}
    keep, todo = set(), [o.name for o in nodes.output]
    while todo:
        n = prod.get(todo.pop())
        if n is None or n.op_type == 'Conv' or n.name in keep: continue
        keep.add(n.name); todo += list(n.input)
    return sorted(keep)


def ort_quantize(fp32:Path, dst:Path, calib:np.ndarray, input_name:str, fmt:str) -> Path:
    """ONNX Runtime static int8 (per-channel int8 weights, uint8 activations, MinMax) in format 'qoperator' or 'qdq';
    the output tails (`output_tails`) stay fp32"""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    class Reader(CalibrationDataReader):
        def __init__(self): self.it = iter([{input_name: calib[i:i + 1]} for i in range(len(calib))])
        def get_next(self): return next(self.it, None)
    import logging; logging.getLogger().setLevel(logging.ERROR)   # ORT's "consider pre-processing" warnings
    quant_format = dict(qoperator=QuantFormat.QOperator, qdq=QuantFormat.QDQ)[fmt]
    quantize_static(str(fp32), str(dst), Reader(), quant_format=quant_format, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=output_tails(fp32))
    return dst


# The check in OpenCV 4.10 (x86 venv): every form on the evaluation images against fp32, its layer types.
CHECK = r'''
import collections, json, sys, traceback, numpy as np, cv2
spec = json.loads(sys.argv[1])
cv2.setNumThreads(1)
X = np.load(spec['eval'])
def load(f):
    net = cv2.dnn.readNetFromONNX(f['onnx'])
    if f.get('calib'):
        net = net.quantize([np.ascontiguousarray(np.load(f['calib']), dtype=np.float32)], cv2.CV_32F, cv2.CV_32F)
    return net
def run(net, x):
    on = list(net.getUnconnectedOutLayersNames())
    net.setInput(x); d = dict(zip(on, net.forward(on)))
    return [d.get(n, d.get('dequantize/' + n)) for n in spec['outputs']]
res, ref, nets = {}, None, {}
for name, f in spec['forms'].items():
    try:
        net = nets[name] = load(f)
        outs = [run(net, X[i:i + 1]) for i in range(len(X))]
        layers = dict(collections.Counter(net.getLayer(l).type for l in net.getLayerNames()))
    except Exception as e:
        res[name] = dict(runs=False, error=(str(e).strip().splitlines() or [repr(e)])[-1][:400]); continue
    outs = [np.concatenate([o[k].reshape(1, -1) for o in outs]) for k in range(len(spec['outputs']))]
    if spec.get('dump'): np.savez(spec['dump'] + '/raw_' + name + '.npz', *outs)
    if ref is None: ref = outs
    r = dict(runs=True, layers=layers, diff={})
    for n, a, b in zip(spec['outputs'], ref, outs):
        if a.shape != b.shape: r['diff'][n] = dict(error=f'shape {list(b.shape)} != fp32 {list(a.shape)}'); continue
        d = np.abs(a - b)
        ok = a.size > 1 and a.std() > 0 and b.std() > 0
        r['diff'][n] = dict(max_abs=float(d.max()), rel=float(d.max() / max(np.abs(a).max(), 1e-12)),
                            mean_abs=float(d.mean()),
                            corr=float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if ok else None)
        if n == 'cls_logits':
            s = lambda z: 1 / (1 + np.exp(-z.astype(np.float64)))
            r['diff'][n]['max_score_change'] = float(np.abs(s(a) - s(b)).max())
    res[name] = r
import time   # x86 latency: the forms interleaved round by round, so a shared machine's load hits them alike
for th in (1, 2) if spec['budget'] > 0 else ():
    cv2.setNumThreads(th); ts = {k: [] for k in nets}
    for k, net in nets.items(): run(net, X[:1])   # warm-up (and the int8 nets' set-up) at this thread count
    t_end = time.perf_counter() + spec['budget'] * len(nets)
    while min(map(len, ts.values())) < 3 or (time.perf_counter() < t_end and min(map(len, ts.values())) < 50):
        for k, net in nets.items():
            t0 = time.perf_counter(); run(net, X[:1]); ts[k].append(time.perf_counter() - t0)
    for k, v in ts.items(): res[k].setdefault('x86', {'threads': {}})['threads'][str(th)] = dict(
        median_ms=1e3 * float(np.median(v)), min_ms=1e3 * min(v), runs=len(v))
print('CHECK ' + json.dumps(dict(opencv=cv2.__version__, forms=res)))
'''


def check_opencv(python:Path, forms:dict, eval_npy:Path, budget_s:float=3.0, timeout:float=3600, dump=None) -> dict:
    """Run CHECK in the OpenCV 4.10 venv; forms: name -> dict(onnx, calib=None); the first is the fp32 reference.
    `budget_s` seconds of x86 timing per form and thread count (0: none)"""
    spec = dict(forms={k: {kk: (str(vv) if vv else None) for kk, vv in v.items()} for k, v in forms.items()},
                eval=str(eval_npy), outputs=list(OUTPUTS), budget=budget_s, dump=str(dump) if dump else None)
    r = subprocess.run([str(python), '-c', CHECK, json.dumps(spec)], capture_output=True, text=True, timeout=timeout)
    line = [l for l in r.stdout.splitlines() if l.startswith('CHECK ')]
    if r.returncode or not line:
        tail = (r.stderr.strip().splitlines() or ['?'])[-1][:300]
        raise RuntimeError(f'the OpenCV check failed (rc {r.returncode}): {tail}')
    return json.loads(line[-1][6:])


# ------------------------------------------------------------------------------------------------ a paired test
def twin_test(twin:Path, size:int) -> tuple:
    "(inputs [N,1,S,S], patientIds, original sizes, GT boxes) of a labelled twin's test images"
    from pneumonia_kit.dicom import read_xray      # the dev venv: --score needs the package
    from pneumonia_kit.board import prepare_input
    from pneumonia_kit.csvio import read_gt_labels
    files = sorted((twin/'stage_2_test_images').glob('*.dcm'))
    labels = twin/'synthetic_test_labels.csv'
    if not files or not labels.is_file():
        raise Int8Error(f'{twin}: --score needs a labelled twin (stage_2_test_images/*.dcm + '
                        'synthetic_test_labels.csv; `pneumonia-kit synth DIR` writes one)')
    imgs = [read_xray(f) for f in files]
    x = np.stack([prepare_input(im, size)[0] for im in imgs]).astype(np.float32)
    return x, [f.stem for f in files], [im.shape[:2] for im in imgs], read_gt_labels(labels)


def paired_scores(model_dir:Path, dump:Path, forms:list, pids:list, sizes:list, gt:dict) -> dict:
    "Each int8 form's mAP against fp32's on the same images (the package's post-processing, metric and paired test)"
    from pneumonia_kit.runtime import load_model_dir
    from pneumonia_kit.post import postprocess_raw
    from pneumonia_kit.metric import compare_scores, PairedDiff
    m = load_model_dir(model_dir); meta, S = m['meta'], int(m['meta']['input_size'])
    kw = dict(weights=tuple(meta.get('box_coder_weights', (10., 10., 5., 5.))))
    if 'bbox_xform_clip' in meta: kw['clip'] = float(meta['bbox_xform_clip'])
    def preds(form):
        z = np.load(dump/f'raw_{form}.npz'); cls, box, glob = z['arr_0'], z['arr_1'], z['arr_2']
        out = {}
        for i, (pid, hw) in enumerate(zip(pids, sizes)):
            r = postprocess_raw(cls[i], box[i].reshape(-1, 4), glob[i], m['anchors'], m['post'], S, hw, **kw)
            out[pid] = (r['scores'], r['boxes_xywh'])
        return out
    ref, res = preds('fp32'), {}
    gt = {p: gt[p] for p in pids if p in gt}
    for f in forms:
        if f != 'fp32' and (dump/f'raw_{f}.npz').is_file():
            c = compare_scores(gt, ref, preds(f))
            res[f] = dict(PairedDiff.from_dict(c).to_dict(), text=str(PairedDiff.from_dict(c)))
    return res


# ------------------------------------------------------------------------------------------------ verdict and table
def verdict(r:dict, fp32_g:float|None) -> str:
    "Issue 24's rule for one int8 form, in words"
    if not r.get('runs'): return f'does not run in OpenCV 4.10: {r.get("error", "?")}'
    g = r.get('per_image_G')
    if g is None or not fp32_g: return 'not counted on the board (run with --meter)'
    ratio = fp32_g / g
    if ratio < MIN_RATIO:
        return (f'not adopted: it costs {1 / ratio:.2f}x fp32\'s board instructions per further image '
                f'(fp32/int8 = {ratio:.2f}x, {"more" if ratio < 1 else "fewer"} instructions than fp32; '
                f'the rule needs >= {MIN_RATIO}x fewer)')
    return (f'{ratio:.2f}x fewer board instructions (>= {MIN_RATIO}x): a candidate; adoption still needs the paired '
            f'test (lower bound >= {MIN_LOWER} on 1,000+ test images of a trained model: the GPU lab)')


def rows_of(res:dict) -> list:
    "One flat row per form: runs, layers, relative differences, x86 ms, board G, the ratio to fp32 and the verdict"
    rows, fp32_g = [], None
    for name, r in res['forms'].items():
        d = r.get('diff', {})
        row = dict(form=name, runs=r.get('runs'), layers=r.get('layers'), error=r.get('error'),
                   **{f'{n}_rel': d.get(n, {}).get('rel') for n in OUTPUTS},
                   **{f'{n}_max_abs': d.get(n, {}).get('max_abs') for n in OUTPUTS},
                   max_score_change=d.get('cls_logits', {}).get('max_score_change'),
                   paired=(r.get('paired') or {}).get('text'))
        x = (r.get('x86') or {}).get('threads', {})
        for t in ('1', '2'): row[f'x86_ms_{t}t'] = x.get(t, {}).get('median_ms')
        b = r.get('board') or {}
        if b:
            row.update(first_G=b['insns'] / 1e9, per_image_G=(b.get('steady_insns') or b['insns']) / 1e9,
                       load_G=(b.get('load_insns') or 0) / 1e9 or None,
                       quantize_G=(b.get('quantize_insns') or 0) / 1e9 or None, cached=bool(b.get('cached')))
        if name == 'fp32': fp32_g = row.get('per_image_G')
        rows.append(row)
    for row in rows:
        if fp32_g and row.get('per_image_G'): row['fp32_over_form'] = fp32_g / row['per_image_G']
        row['verdict'] = 'the reference' if row['form'] == 'fp32' else verdict(row, fp32_g)
    return rows


HEADER = ['form', 'runs', 'main layers', 'cls rel', 'bbox rel', 'global rel', 'max score chg', 'x86 1t ms',
          'x86 2t ms', 'G first', 'G/image', 'load G', 'fp32/form']


def table(rows:list) -> list[str]:
    "The markdown table of `rows_of`"
    f = lambda v, fmt: format(v, fmt) if isinstance(v, (int, float)) else '-'
    body = []
    for r in rows:
        L = sorted((r.get('layers') or {}).items(), key=lambda kv: -kv[1])
        main_layers = ', '.join(f'{v} {k}' for k, v in L if k.startswith(('Convolution', 'Quantize', 'Dequantize')))
        ratio = r.get('fp32_over_form')
        body.append([r['form'], 'yes' if r['runs'] else 'NO', main_layers or '-',
                     *[f(r[f'{n}_rel'], '.3g') for n in OUTPUTS], f(r['max_score_change'], '.3g'),
                     f(r['x86_ms_1t'], '.4g'), f(r['x86_ms_2t'], '.4g'), f(r.get('first_G'), '.2f'),
                     f(r.get('per_image_G'), '.2f'), f(r.get('load_G'), '.2f'), f'{ratio:.2f}x' if ratio else '-'])
    line = lambda cells: '| ' + ' | '.join(map(str, cells)) + ' |'
    return [line(HEADER), '|' + '---|' * len(HEADER)] + [line(b) for b in body]


def markdown(res:dict, rows:list) -> str:
    m = res['model']
    L = ['# int8 on the board runtime (OpenCV 4.10 DNN)', '',
         f'Model `{m["dir"]}` ({m["weights"]}), {m["size"]} px; {res["when"]} on {res["machine"]}.',
         f'Outputs compared with the fp32 model in the same OpenCV ({res.get("opencv")}, x86, 1 thread) on '
         f'{res["n_eval"]} evaluation images ({res["inputs"]}); calibration: {res["n_calib"]} other images '
         '(`opencv-quantize` uses the first only). rel = max |int8 - fp32| / max |fp32|; max score chg: the largest '
         'change of sigmoid(cls_logits). G: LoongArch instructions (first forward, per further image, reading + '
         'quantizing), scripts/board_meter.py (QEMU `la464,lasx=off`, Debian sid OpenCV 4.10, 1 thread). fp32/form: '
         'fp32\'s instructions per image / the form\'s (issue 24 needs >= 1.5x). x86 ms: a second opinion only.', '']
    L += table(rows) + [''] + [f'- **{r["form"]}**: {r["verdict"]}' for r in rows]
    L += [f'- paired mAP, {r["form"]} - fp32: {r["paired"]}' for r in rows if r.get('paired')]
    return '\n'.join(L) + '\n'


def print_rows(rows:list, file=None):
    for line in table(rows): print(line, file=file or sys.stdout)
    for r in rows:
        if r['form'] != 'fp32': print(f'{r["form"]}: {r["verdict"]}', file=file or sys.stdout)
        if r.get('paired'): print(f'   paired mAP {r["form"]} - fp32: {r["paired"]}', file=file or sys.stdout)


def wait_for_other_emulation(bm, tools:dict, log):
    "Block while another meter's emulation holds the lock (its results reach the cache before this run reads it)"
    import fcntl
    lock = Path(tools['qemu']).parents[1]/'meter'/'.emulation.lock'
    if not lock.is_file(): return
    with open(lock) as f:
        try: fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            log('   another emulation is running: waiting for it before reading the cache ...')
            fcntl.flock(f, fcntl.LOCK_SH)
        fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------ main
def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog='\n\n'.join(__doc__.split('\n\n')[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default=str(DEFAULT_MODEL), help='board model folder (model.onnx + board.json)')
    ap.add_argument('--forms', default=','.join(FORMS), help=f'comma-separated, fp32 always first: {", ".join(FORMS)}')
    ap.add_argument('--calib-images', type=int, default=8, help='calibration images (opencv-quantize uses the first)')
    ap.add_argument('--eval-images', type=int, default=8, help='evaluation images for the output differences')
    ap.add_argument('--x86-budget', type=float, default=3.0,
                    help='seconds of x86 timing per form and thread count (0: none)')
    ap.add_argument('--meter', action='store_true',
                    help='count board instructions (emulated: minutes to an hour per form; cached)')
    ap.add_argument('--meter-forms', help='comma-separated forms to count with --meter (default: every form that runs)')
    ap.add_argument('--x86-python', help="python of an OpenCV 4.10 venv (default: the meter's x86-cv410)")
    ap.add_argument('--quick', action='store_true', help='a tiny random 64-px net, 2+2 images, short timing (seconds)')
    ap.add_argument('--score', metavar='TWIN_DIR', help="a labelled twin: evaluate on its test images and add each "
                    "form's paired mAP difference against fp32 (a trained board model folder with anchors; a "
                    "toy-scale signal, not the 1,000-image gate)")
    ap.add_argument('--out', default=str(OUT))
    return ap.parse_args(argv)


def setup(a, bm) -> tuple:
    "Check the arguments and tools before any work: (forms, python, out, model, meter tools or None)"
    forms = [f.strip() for f in a.forms.split(',') if f.strip()]
    bad = [f for f in forms if f not in FORMS]
    if bad: raise Int8Error(f'unknown form(s) {", ".join(bad)}: choose from {", ".join(FORMS)}')
    forms = ['fp32'] + [f for f in forms if f != 'fp32']
    bad = [f for f in (a.meter_forms or '').split(',') if f and f not in FORMS]
    if bad: raise Int8Error(f'--meter-forms: unknown form(s) {", ".join(bad)}: choose from {", ".join(FORMS)}')
    if min(a.calib_images, a.eval_images) < 1: raise Int8Error('--calib-images and --eval-images must be >= 1')
    if a.quick and a.meter: raise Int8Error('--quick does not meter (a tiny net says nothing about the board)')
    py = Path(a.x86_python) if a.x86_python else bm.WORK/'x86-cv410'/'bin'/'python'
    if not py.is_file():
        raise Int8Error(f'no OpenCV 4.10 venv at {py}: run scripts/loongarch_meter.sh build (its step x86), '
                        'or pass --x86-python')
    out = Path(a.out)
    if a.quick:
        a.calib_images, a.eval_images, a.x86_budget = 2, 2, min(a.x86_budget, 0.2)
        m = resolve(tiny_model(out/'tiny'))
    else: m = resolve(Path(a.model))
    return forms, py, out, m, (bm.find_tools(need_x86=False) if a.meter else None)


def main(argv=None) -> int:
    a, bm = parse(argv), load_meter()
    try: forms, py, out, m, tools = setup(a, bm)
    except Int8Error as e: print(f'board_int8: {e}', file=sys.stderr); return 2
    except bm.MeterError as e: print(f'board_int8: --meter: {e}', file=sys.stderr); return 2
    log = lambda s: print(s, file=sys.stderr, flush=True)
    t0 = time.time(); out.mkdir(parents=True, exist_ok=True)
    calib, src = images(a.calib_images, m['size'], 'train')
    if a.score:
        try: ev, pids, sizes, gt = twin_test(Path(a.score), m['size'])
        except Int8Error as e: print(f'board_int8: {e}', file=sys.stderr); return 2
    else: ev, _ = images(a.eval_images, m['size'], 'test')
    np.save(out/'calib.npy', calib[:1]); np.save(out/'eval.npy', ev)
    spec = {'fp32': dict(onnx=m['onnx'])}
    if 'opencv-quantize' in forms: spec['opencv-quantize'] = dict(onnx=m['onnx'], calib=out/'calib.npy')
    for f in ('ort-qoperator', 'ort-qdq'):
        if f in forms:
            log(f'   {f}: onnxruntime quantize_static on {len(calib)} calibration images ...')
            spec[f] = dict(onnx=ort_quantize(m['onnx'], out/f'model_{f[4:]}.onnx', calib, m['input_name'], f[4:]))
    log(f'   checking {len(spec)} forms in OpenCV 4.10 (x86) on {len(ev)} evaluation images ...')
    res = check_opencv(py, spec, out/'eval.npy', a.x86_budget, dump=out if a.score else None)
    if a.score:
        for f, d in paired_scores(m['dir'], out, list(spec), pids, sizes, gt).items(): res['forms'][f]['paired'] = d
    for f, r in res['forms'].items(): r.update(file=str(spec[f]['onnx']), calib=str(spec[f].get('calib') or '') or None)
    if a.meter:
        wanted = set(a.meter_forms.split(',')) | {'fp32'} if a.meter_forms else set(spec)
        runnable = [f for f in spec if res['forms'][f].get('runs') and f in wanted]
        wait_for_other_emulation(bm, tools, log)   # what it counts may be what this run needs: read the cache after it
        log(f'   counting {", ".join(runnable)} on the emulated board (cached ones are not counted again) ...')
        try:
            counted = bm.meter_many([spec[f]['onnx'] for f in runnable], m['size'], forwards=2, x86=False, tools=tools,
                                    progress=log, opencv_int8=[spec[f].get('calib') for f in runnable])
        except bm.MeterError as e: print(f'board_int8: --meter: {e}', file=sys.stderr); return 2
        for f, c in zip(runnable, counted): res['forms'][f]['board'] = c['board']
    src = (f'the labelled twin {a.score}, its {len(ev)} test images' if a.score else
           f'{src}: calibration from its train split, evaluation from its test split')
    res.update(model={k: str(v) for k, v in m.items()}, inputs=src, n_calib=len(calib), n_eval=len(ev), quick=a.quick,
               when=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), seconds=round(time.time() - t0, 1),
               machine=f'{os.uname().machine}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}',
               rule=dict(min_ratio=MIN_RATIO, min_lower=MIN_LOWER, basis='instructions per further image'))
    rows = rows_of(res); res['rows'] = rows
    (out/'results.json').write_text(json.dumps(res, indent=2, default=str))
    (out/'results.md').write_text(markdown(res, rows))
    print_rows(rows)
    print(f'written: {out/"results.json"}, {out/"results.md"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
