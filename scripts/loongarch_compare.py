#!/usr/bin/env python3
"""Helper of `scripts/loongarch_emulate.sh`: make the small test input, run the torch-free board predictor, compare two runs.

    python3 scripts/loongarch_compare.py prepare OUT [--model-dir DIR | --checkpoint CKPT.pt]   # x86, needs torch
    python3 loongarch_compare.py run MODEL_DIR OUT IMAGES... [--backend opencv] [--threads 2]  # board/emulator: numpy, pydicom, cv2 only
    python3 scripts/loongarch_compare.py compare REF_OUT OTHER_OUT [--iou 0.99] [--score-tol 1e-3]  # exit 1 on mismatch

`run` imports only the torch-free modules (`pneumonia_kit.{core,cmdline,dicom,boxes,metric,post,runtime,board}`) found beside this file or on
PYTHONPATH, so the same file runs under QEMU in a Debian loong64 root filesystem that has no PyTorch, pandas or fastcore.
"""
from __future__ import annotations
import argparse, hashlib, json, platform, shutil, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ('torch', 'torchvision', 'pandas', 'fastcore', 'onnxruntime')  # must stay out of the board process (pydicom itself imports PIL where it is installed)

def _save_json(obj, path):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_text(json.dumps(obj, indent=2, default=str)); tmp.replace(path)

# ---------------------------------------------------------------- prepare (x86, full package)
def prepare(out, model_dir=None, checkpoint=None, size:int=256, seed:int=0):
    "OUT/images/*.dcm (2 synthetic test DICOMs) and OUT/model (a board model folder)"
    sys.path.insert(0, str(REPO))  # the working tree's package, whatever is installed
    from pneumonia_kit.synth import synth_dataset
    out = Path(out)
    if out.exists(): shutil.rmtree(out)
    (out/'images').mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = synth_dataset(tmp, n_images=2, n_test=2, seed=seed, size=size, workers=1, progress=False)
        for f in sorted(Path(paths.test_images).glob('*.dcm')): shutil.copy2(f, out/'images'/f.name)
    info = dict(images=sorted(f.name for f in (out/'images').iterdir()), image_size=size, seed=seed)
    if model_dir:
        shutil.copytree(model_dir, out/'model'); info['model'] = f'copied from {model_dir}'
    else:
        import torch
        from pneumonia_kit.core import set_seed, file_sha256
        from pneumonia_kit.model import create_model
        from pneumonia_kit.export import export_onnx
        meta = {}
        if checkpoint:
            ck = torch.load(checkpoint, map_location='cpu', weights_only=True)
            model = create_model(ck['config']['model'], pretrained=False, weights_file=None)
            model.load_state_dict(ck['model'])
            meta['checkpoint_sha256'] = file_sha256(checkpoint)
            info['model'] = f'exported from {checkpoint} (epoch {ck.get("epoch")})'
        else:
            # RetinaNet's initialisation (std 0.01 convs, prior bias) gives every anchor the score 0.0100000 +- 1e-7:
            # ties everywhere. Redraw the heads (He init, final convs std 1/sqrt(fan_in), zero bias) so anchors get
            # distinct scores (about 0.4-0.75, neighbours 1e-4 apart) and box deltas up to ~2: NMS and decoding get exercised.
            set_seed(seed)
            model = create_model('tiny')
            finals = (model.head.classification_head.cls_logits, model.head.regression_head.bbox_reg)
            with torch.no_grad():
                for c in model.head.modules():
                    if isinstance(c, torch.nn.Conv2d):
                        if any(c is f for f in finals): torch.nn.init.normal_(c.weight, std=c.weight[0].numel() ** -0.5)
                        else: torch.nn.init.kaiming_normal_(c.weight, nonlinearity='relu')
                        torch.nn.init.zeros_(c.bias)
            meta['post'] = dict(score_thresh=0.05, nms_thresh=0.05, top_ratio=0.5, global_weight=0.5, final_thresh=0.0,
                                detections_per_img=4)
            info['model'] = f'tiny preset (resnet_tiny, {model.cfg.image_size} px), random weights seed {seed}, heads redrawn'
        model.eval()
        # export_onnx's own check is off: with torch 2.14 the legacy exporter leaves its wrapper (and so the copied
        # network) in train mode, so the check's PyTorch reference runs BatchNorm on batch statistics and fails.
        # The same check, against the eval-mode model:
        export_onnx(model, out/'model', meta=meta, check=False)
        import numpy as np, onnxruntime as ort
        S = model.cfg.image_size
        x = torch.rand(1, 1, S, S, generator=torch.Generator().manual_seed(1))
        sess = ort.InferenceSession(str(out/'model'/'model.onnx'), providers=['CPUExecutionProvider'])
        got = dict(zip(('cls_logits', 'bbox_regression', 'global_logits'), sess.run(None, {'image': x.numpy()})))
        with torch.no_grad(): ref = {k: v.numpy() for k, v in model(x).items()}
        info['onnxruntime_vs_pytorch_max_abs_diff'] = {k: float(np.abs(got[k] - ref[k]).max()) for k in got}
        if max(info['onnxruntime_vs_pytorch_max_abs_diff'].values()) > 1e-3:
            sys.exit(f'the exported model differs from PyTorch: {info["onnxruntime_vs_pytorch_max_abs_diff"]}')
    _save_json(info, out/'prepare.json')
    print(json.dumps(info))

# ---------------------------------------------------------------- run (board side: numpy, pydicom, cv2)
def _cpu_features(cv2):
    "OpenCV's CPU feature line and, on LoongArch, the LSX/LASX bits of the kernel's (or QEMU's) AT_HWCAP"
    import struct
    feats = dict(opencv_cpu_features=cv2.getCPUFeaturesLine())
    if platform.machine().startswith('loongarch'):
        try:
            h = dict(struct.iter_unpack('<QQ', Path('/proc/self/auxv').read_bytes())).get(16, 0)  # AT_HWCAP
            feats.update(hwcap=hex(h), lsx=bool(h >> 4 & 1), lasx=bool(h >> 5 & 1))
        except OSError: pass
    return feats

def run(model_dir, out, images, backend='opencv', threads=2):
    "Predict IMAGES with the board predictor; OUT/submission.csv, OUT/json/, OUT/raw_*.npz (network outputs), OUT/info.json"
    t0 = time.perf_counter()
    import numpy as np, cv2, pydicom
    from pneumonia_kit import board
    from pneumonia_kit.board import BoardPredictor, prepare_input
    from pneumonia_kit.dicom import find_dicoms
    from pneumonia_kit.dicom import read_xray
    t_import = time.perf_counter() - t0
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    paths = find_dicoms(images)
    t1 = time.perf_counter()
    pred = BoardPredictor(model_dir, backend=backend, threads=threads)
    t_load = time.perf_counter() - t1
    summary = pred.predict_files(paths, out/'submission.csv', json_dir=out/'json', progress=False)
    hashes = {}
    for p in paths:  # raw network outputs, to compare the runtimes below the post-processing
        img = read_xray(p)
        hashes[p.stem] = hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()[:16]
        raw = pred.runtime.run(prepare_input(img, pred.size))
        np.savez(out/f'raw_{p.stem}.npz', **{k: np.asarray(v) for k, v in raw.items()})
    info = dict(machine=platform.machine(), python=platform.python_version(), numpy=np.__version__,
                opencv=cv2.__version__, pydicom=pydicom.__version__, board_module=board.__file__,
                runtime=repr(pred.runtime), import_s=round(t_import, 2), load_s=round(t_load, 2), summary=summary,
                image_sha256_16=hashes, heavy_modules_loaded=[m for m in HEAVY if m in sys.modules], pil_loaded='PIL' in sys.modules,
                **_cpu_features(cv2))
    _save_json(info, out/'info.json')
    print(json.dumps(info, default=str))
    if summary['failed']: sys.exit(f'board predictor failed on {len(summary["failed"])} image(s): {summary["failed"]}')
    if info['heavy_modules_loaded']: sys.exit(f'the board process imported {info["heavy_modules_loaded"]} (must stay torch-free)')

# ---------------------------------------------------------------- compare (x86)
def _dets(out):
    "patientId -> dict(scores, boxes_xywh) from OUT/json (full precision), else from the submission CSV"
    import numpy as np
    from pneumonia_kit.csvio import read_submission
    jd = Path(out)/'json'
    if jd.is_dir() and any(jd.glob('*.json')):
        res = {}
        for f in sorted(jd.glob('*.json')):
            d = json.loads(f.read_text()); p = d['predictions']
            res[d['patientId']] = dict(scores=np.array([b['score'] for b in p], np.float64).reshape(-1),
                                       boxes_xywh=np.array([[b['x'], b['y'], b['width'], b['height']] for b in p], np.float64).reshape(-1, 4))
        return res
    return {k: dict(scores=s, boxes_xywh=b) for k, (s, b) in read_submission(Path(out)/'submission.csv').items()}

def compare(ref, other, iou:float=0.99, score_tol:float=1e-3, raw_tol:float=1e-3):
    "Compare two `run` folders: same images, same number of boxes, boxes IoU > iou, scores within score_tol"
    sys.path.insert(0, str(REPO))
    import numpy as np
    from pneumonia_kit.boxes import match_detections
    from pneumonia_kit.csvio import read_submission
    ref, other = Path(ref), Path(other)
    problems, rows = [], []
    sa, sb = read_submission(ref/'submission.csv'), read_submission(other/'submission.csv')
    if set(sa) != set(sb): problems.append(f'submission patientIds differ: {sorted(set(sa) ^ set(sb))}')
    da, db = _dets(ref), _dets(other)
    ia, ib = (json.loads((d/'info.json').read_text()) for d in (ref, other))
    for pid in sorted(set(da) & set(db)):
        a, b = da[pid], db[pid]
        r = dict(patientId=pid, n_boxes=(len(a['scores']), len(b['scores'])))
        if len(a['scores']) != len(b['scores']): problems.append(f'{pid}: {len(a["scores"])} vs {len(b["scores"])} boxes'); rows.append(r); continue
        (i1, s1), (i2, s2) = match_detections(a, b), match_detections(b, a)
        r.update(min_iou=min(i1, i2), max_score_diff=max(s1, s2))
        if r['min_iou'] <= iou: problems.append(f'{pid}: a box matches with IoU {r["min_iou"]:.5f} <= {iou}')
        if r['max_score_diff'] > score_tol: problems.append(f'{pid}: scores differ by {r["max_score_diff"]:.2e} > {score_tol}')
        if ia['image_sha256_16'].get(pid) != ib['image_sha256_16'].get(pid): r['decoded_image'] = 'differs'
        fa, fb = ref/f'raw_{pid}.npz', other/f'raw_{pid}.npz'
        if fa.is_file() and fb.is_file():
            with np.load(fa) as za, np.load(fb) as zb:
                r['raw_max_abs_diff'] = {k: float(np.abs(za[k].astype(np.float64) - zb[k]).max()) for k in za.files}
            worst = max(r['raw_max_abs_diff'].values())
            if worst > raw_tol: problems.append(f'{pid}: raw network outputs differ by up to {worst:.2e} > {raw_tol}')
        rows.append(r)
    if not (set(da) & set(db)): problems.append('no images to compare')
    res = dict(ok=not problems, problems=problems, images=rows, n_boxes_total=int(sum(len(d['scores']) for d in da.values())),
               tolerances=dict(iou=iou, score=score_tol, raw=raw_tol),
               ref=dict(dir=str(ref), **{k: ia.get(k) for k in ('machine', 'python', 'numpy', 'opencv', 'pydicom', 'runtime')}),
               other=dict(dir=str(other), **{k: ib.get(k) for k in ('machine', 'python', 'numpy', 'opencv', 'pydicom', 'runtime')}))
    _save_json(res, other/'compare.json')
    for r in rows: print('  ', json.dumps(r))
    print(('MATCH: ' if res['ok'] else 'MISMATCH: ') + (f'{len(rows)} images, {res["n_boxes_total"]} boxes agree' if res['ok'] else '; '.join(problems)))
    return 0 if res['ok'] else 1

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('prepare'); p.add_argument('out'); p.add_argument('--model-dir'); p.add_argument('--checkpoint')
    p.add_argument('--size', type=int, default=256); p.add_argument('--seed', type=int, default=0)
    r = sub.add_parser('run'); r.add_argument('model_dir'); r.add_argument('out'); r.add_argument('images', nargs='+')
    r.add_argument('--backend', default='opencv'); r.add_argument('--threads', type=int, default=2)
    c = sub.add_parser('compare'); c.add_argument('ref'); c.add_argument('other')
    c.add_argument('--iou', type=float, default=0.99); c.add_argument('--score-tol', type=float, default=1e-3)
    c.add_argument('--raw-tol', type=float, default=1e-3)
    a = ap.parse_args(argv)
    if a.cmd == 'prepare': return prepare(a.out, a.model_dir, a.checkpoint, a.size, a.seed)
    if a.cmd == 'run': return run(a.model_dir, a.out, a.images, a.backend, a.threads)
    return compare(a.ref, a.other, a.iou, a.score_tol, a.raw_tol)

if __name__ == '__main__': sys.exit(main())
