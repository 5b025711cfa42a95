#!/usr/bin/env python
"""Input-pipeline throughput: pneumonia_kit's cache + albumentations dataset against the original's way.

    python bench/bench_input.py --data data/bench_twin --size 512 --n 64 --workers 2 --json outputs/bench/input.json

ours      `augment.RsnaDataset` over the uint8 cache (`np.load(mmap_mode='r')`) with `make_transforms(size, level)`,
          uint8 batches (`collate_fn`).
original  a re-implementation of the 2nd-place repo's per-sample work (its `DetectionDataset.__getitem__` at
          augmentation level 20): decode the DICOM with pydicom, `skimage.transform.warp(order=1)` through
          `AffineTransform`s built from its random parameters (shift +-32 source px, per-axis scale 2**N(0,0.15),
          rotation N(0,6), shear N(0,4), flip), gamma `np.power`, then the imgaug stage done on a 3-channel uint8
          stack as it was (coarse salt-and-pepper p=0.1, Gaussian blur sigma 0-2 p=0.5 with scipy, additive noise
          0-0.04*255 p=0.5), box points mapped with `tform.inverse`; float32 batches.
Both run in a `DataLoader` with the same workers and batch size; the clock starts at the first batch (worker
start-up excluded) and runs for at least --min-seconds (persistent workers cycle over the n samples).

If ROOT has no twin, one is written there (`synth.synth_dataset` when present, else a small JPEG-DICOM writer
here); the cache is built with `cache.build_cache` when present, else here.
"""
from __future__ import annotations
import argparse, json, math, os, platform, sys, time
from pathlib import Path
import cv2
import numpy as np
import pandas as pd
import pydicom
import scipy.ndimage as ndi
import skimage.transform as skt
import torch

from pneumonia_kit.core import CLASSES, RsnaPaths
from pneumonia_kit.dataset import RsnaDataset, make_transforms, collate_fn

# ----------------------------------------------------------------------------------------------- data
def _fake_xray(rng, size=1024):
    "A smooth chest-like grey image with film grain (JPEG size similar to a real one)"
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 90 + 60*np.exp(-((xx-.5)**2)/.02)                          # mediastinum
    for cx in (.3, .7):                                               # two dark lungs
        img -= 55*np.exp(-(((xx-cx)/.14)**2 + ((yy-.5)/.25)**2))
    img += ndi.gaussian_filter(rng.normal(0, 25, (size, size)), 6) + rng.normal(0, 1.5, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)

def _write_twin(root:Path, n:int, seed:int=0, size:int=1024):
    "Fallback twin: `n` JPEG-baseline DICOMs plus the two Kaggle label CSVs"
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid
    p = RsnaPaths(root); p.train_images.mkdir(parents=True, exist_ok=True)
    rng, lab, cls = np.random.default_rng(seed), [], []
    for i in range(n):
        pid = f'bench{i:05d}'; img = _fake_xray(rng, size)
        ok, jpg = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 95]); assert ok
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
        meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds = Dataset(); ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, generate_uid(), 'CR'
        ds.PatientID = ds.PatientName = pid
        ds.SamplesPerPixel, ds.PhotometricInterpretation, (ds.Rows, ds.Columns) = 1, 'MONOCHROME2', img.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([jpg.tobytes()]); ds['PixelData'].VR = 'OB'
        ds.save_as(p.train_images/f'{pid}.dcm', enforce_file_format=True)
        c = i % 3
        if c == 2:
            for k in range(1 + i % 2):
                lab.append((pid, 200 + 420*k + rng.uniform(-50, 50), 300 + rng.uniform(-50, 50), 220., 330., 1)); cls.append((pid, CLASSES[c]))
        else: lab.append((pid, None, None, None, None, 0)); cls.append((pid, CLASSES[c]))
    pd.DataFrame(lab, columns=['patientId', 'x', 'y', 'width', 'height', 'Target']).to_csv(p.train_labels, index=False)
    pd.DataFrame(cls, columns=['patientId', 'class']).to_csv(p.class_info, index=False)

def _build_cache(root:Path, size:int):
    "Fallback cache: `{pid}.npy` uint8 size x size (cv2 INTER_AREA) and manifest.csv, as in DESIGN.md"
    p = RsnaPaths(root); d = p.cache(size, 'train'); d.mkdir(parents=True, exist_ok=True); rows = []
    for f in sorted(p.train_images.glob('*.dcm')):
        img = pydicom.dcmread(f).pixel_array.astype(np.uint8)
        np.save(d/f'{f.stem}.npy', cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
        rows.append(dict(patientId=f.stem, file=f'{f.stem}.npy', orig_height=img.shape[0], orig_width=img.shape[1], status='ok'))
    pd.DataFrame(rows).to_csv(d/'manifest.csv', index=False)

def _labels(root:Path) -> pd.DataFrame:
    "The labels table (DESIGN.md format): `data.load_labels` when present, else parsed here"
    try:
        from pneumonia_kit.data import load_labels
        p = RsnaPaths(root); return load_labels(p.train_labels, p.class_info)
    except Exception as e:
        print(f'(data.load_labels unavailable: {type(e).__name__}: {e}; parsing the CSVs here)')
    p = RsnaPaths(root); lab = pd.read_csv(p.train_labels)
    cls = pd.read_csv(p.class_info).drop_duplicates('patientId').set_index('patientId')['class']
    rows = []
    for pid, g in lab.groupby('patientId', sort=False):
        b = g.loc[g.Target == 1, ['x', 'y', 'width', 'height']].to_numpy(np.float32).reshape(-1, 4)
        rows.append(dict(patientId=pid, Target=int(len(b) > 0), **{'class': cls[pid]}, class_id=CLASSES.index(cls[pid]), boxes=b))
    return pd.DataFrame(rows)

def prepare(root:Path, size:int, n:int):
    "Make sure ROOT holds a twin with at least a few images and a built cache; returns (cache_dir, labels)"
    p = RsnaPaths(root)
    if not p.train_labels.exists():
        n_img = max(8, min(n, 64))
        try:
            from pneumonia_kit.synth import synth_dataset
            print(f'writing a synthetic twin ({n_img} images) with synth.synth_dataset into {root}')
            synth_dataset(root, n_images=n_img, n_test=2, seed=0)
        except ImportError:
            print(f'writing a fallback twin ({n_img} images) into {root}')
            _write_twin(root, n_img)
    if not (p.cache(size, 'train')/'manifest.csv').exists():
        try:
            from pneumonia_kit.cache import build_cache
            print(f'building the {size}px cache with cache.build_cache'); build_cache(root, size=size, split='train')
        except ImportError:
            print(f'building the {size}px cache (fallback)'); _build_cache(root, size)
    return p.cache(size, 'train'), _labels(root)

# ------------------------------------------------------------------------------------ the original's way
def _original_tform(h, w, size, cx, cy, sx, sy, angle, shear, hflip):
    "The original's TransformCfg.transform(): output pixel -> source pixel, as composed skimage AffineTransforms"
    t = skt.AffineTransform(translation=(cx, cy))
    t = skt.AffineTransform(scale=(1.0/(-sx if hflip else sx), 1.0/sy)) + t  # the flip it meant (its code dropped the sign)
    t = skt.AffineTransform(rotation=math.radians(angle), shear=math.radians(shear)) + t
    return skt.AffineTransform(translation=(-size/2, -size/2)) + t

class OriginalStyleDataset(torch.utils.data.Dataset):
    "Per sample: pydicom decode, skimage warp, gamma, imgaug-like ops on a 3-channel stack (level 20 of the original)"
    def __init__(self, dcm_paths, boxes_xywh, class_ids, size:int=512):
        self.paths, self.size, self.class_ids = list(dcm_paths), size, list(class_ids)
        self.points = []  # 8 points per box at thirds of the sides, as the original
        for bx in boxes_xywh:
            self.points.append([np.array([[x, y+h/3], [x, y+h*2/3], [x+w, y+h/3], [x+w, y+h*2/3],
                                          [x+w/3, y], [x+w*2/3, y], [x+w/3, y+h], [x+w*2/3, y+h]]) for x, y, w, h in bx])
    def __len__(self): return len(self.paths)
    def __getitem__(self, i):
        img = pydicom.dcmread(self.paths[i]).pixel_array
        h, w = img.shape[:2]; S = self.size; r = np.random
        t = _original_tform(h, w, S, w/2 + r.uniform(-32, 32), h/2 + r.uniform(-32, 32),
                            S/w*2**r.normal(0, .15), S/h*2**r.normal(0, .15), r.normal(0, 6.), r.normal(0, 4.), r.rand() < .5)
        crop = skt.warp(img, t, mode='constant', cval=0, order=1, output_shape=(S, S))
        crop = np.power(crop, 2.0**r.normal(0, .25))
        rgb = np.clip(np.stack([crop]*3, axis=2)*255, 0, 255).astype(np.uint8)
        if r.rand() < .1:   # imgaug CoarseSaltAndPepper(p=0.01, size_percent=(0.1, 0.2))
            m = max(1, int(round(S*r.uniform(.1, .2))))
            idx = np.arange(S)*m//S
            mask = (r.rand(m, m) < .01)[idx][:, idx]
            rgb[mask] = (r.beta(.5, .5, (int(mask.sum()), 3))*255).astype(np.uint8)
        if r.rand() < .5:   # imgaug GaussianBlur(sigma=(0, 2))
            rgb = ndi.gaussian_filter(rgb, sigma=(s := r.uniform(0, 2), s, 0))
        if r.rand() < .5:   # imgaug AdditiveGaussianNoise(scale=(0, 0.04*255)), same noise on all channels
            rgb = np.clip(rgb + r.normal(0, r.uniform(0, .04*255), (S, S, 1)), 0, 255).astype(np.uint8)
        crop = rgb[:, :, 0].astype(np.float32)/255.0
        ann = [np.r_[(q := t.inverse(p)).min(0), q.max(0), 0] for p in self.points[i]]
        return dict(img=crop, annot=np.array(ann).reshape(-1, 5), category=self.class_ids[i])

def original_collate(batch):
    "Float32 images [B,1,S,S] and the per-image annotations (the original padded them; the cost is negligible)"
    return torch.stack([torch.from_numpy(b['img'])[None] for b in batch]), [b['annot'] for b in batch]

# ---------------------------------------------------------------------------------------------- timing
def time_loader(ds, collate, workers:int, batch:int, min_seconds:float) -> dict:
    "Samples/s of a DataLoader over `ds`, clock started at the first batch, cycling epochs for `min_seconds`"
    torch.manual_seed(0); np.random.seed(0)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate, shuffle=False,
                                     persistent_workers=workers > 0)
    t0, n, nbytes, first = None, 0, 0, True
    while True:
        for ims, _ in dl:
            if first: t0, first = time.perf_counter(), False; continue
            n += len(ims); nbytes += ims.numel()*ims.element_size()
        if time.perf_counter() - t0 >= min_seconds and n > 0: break
    dt = time.perf_counter() - t0
    return dict(samples=n, seconds=round(dt, 3), samples_per_s=round(n/dt, 2), MB_per_s=round(nbytes/dt/1e6, 1),
                batch_dtype=str(ims.dtype).replace('torch.', ''))

def _ms(f, k:int) -> float:
    t0 = time.perf_counter(); f(); return (time.perf_counter() - t0)*1e3/k

def profile(ours, orig, k:int=8) -> dict:
    "Main-process ms per sample of each stage, on k samples (what the speed-up is made of)"
    np.random.seed(0)
    img = pydicom.dcmread(orig.paths[0]).pixel_array; h, w = img.shape; S = orig.size
    t = _original_tform(h, w, S, w/2+10, h/2-10, S/w*1.1, S/h*.9, 5., 3., True)
    res = dict(orig_decode_ms=_ms(lambda: [pydicom.dcmread(orig.paths[i % len(orig)]).pixel_array for i in range(k)], k),
               orig_warp_ms=_ms(lambda: [skt.warp(img, t, mode='constant', cval=0, order=1, output_shape=(S, S)) for _ in range(k)], k),
               orig_sample_ms=_ms(lambda: [orig[i % len(orig)] for i in range(k)], k),
               ours_load_ms=_ms(lambda: [np.array(np.load(ours.files[i % len(ours)], mmap_mode='r')) for i in range(k)], k),
               ours_sample_ms=_ms(lambda: [ours[i % len(ours)] for i in range(k)], k))
    return {a: round(b, 2) for a, b in res.items()}

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', default='data/bench_twin', help='twin root with a built cache (created when missing)')
    ap.add_argument('--size', type=int, default=512, help='input size')
    ap.add_argument('--n', type=int, default=64, help='samples per epoch (patients cycled if fewer)')
    ap.add_argument('--workers', type=int, default=2, help='DataLoader workers (capped at the CPU count)')
    ap.add_argument('--batch', type=int, default=8, help='batch size')
    ap.add_argument('--level', default='default', help='augmentation level of ours')
    ap.add_argument('--min-seconds', type=float, default=3.0, help='time each loader at least this long')
    ap.add_argument('--repeats', type=int, default=2, help='alternating timed runs per pipeline (best kept)')
    ap.add_argument('--json', default=None, help='write the results here')
    a = ap.parse_args(argv)
    workers = min(a.workers, os.cpu_count() or 1)
    torch.set_num_threads(1); cv2.setNumThreads(1)  # one thread per worker process in both pipelines
    root = Path(a.data); cache_dir, labels = prepare(root, a.size, a.n)
    man = pd.read_csv(cache_dir/'manifest.csv')
    ok = set(man.loc[man.status == 'ok', 'patientId'])
    dcm = RsnaPaths(root).train_images
    pids = [p for p in labels.patientId if p in ok and (dcm/f'{p}.dcm').exists()]
    if not pids: sys.exit(f'{root}: no cached patients with DICOMs')
    pids = [pids[i % len(pids)] for i in range(a.n)]
    lab = labels.set_index('patientId')
    ours = RsnaDataset(cache_dir, labels, patient_ids=pids, transforms=make_transforms(a.size, a.level, seed=0))
    orig = OriginalStyleDataset([dcm/f'{p}.dcm' for p in pids], [lab.at[p, 'boxes'] for p in pids],
                                [int(lab.at[p, 'class_id']) for p in pids], size=a.size)
    prof = profile(ours, orig)
    runs = dict(ours=[], original=[])
    for _ in range(a.repeats):  # alternate, so load from other processes hits both alike; keep each one's best run
        runs['ours'].append(time_loader(ours, collate_fn, workers, a.batch, a.min_seconds))
        runs['original'].append(time_loader(orig, original_collate, workers, a.batch, a.min_seconds))
    r_ours, r_orig = (max(runs[k], key=lambda r: r['samples_per_s']) for k in ('ours', 'original'))
    ratio = r_ours['samples_per_s']/r_orig['samples_per_s']
    res = dict(machine=f'{platform.machine()} {os.cpu_count()} CPUs', size=a.size, n=a.n, unique_patients=len(set(pids)),
               workers=workers, batch=a.batch, level=a.level, repeats=a.repeats, ours=r_ours, original=r_orig,
               speedup=round(ratio, 2), goal=5.0, goal_met=ratio >= 5.0,
               speedup_per_repeat=[round(o['samples_per_s']/g['samples_per_s'], 2) for o, g in zip(runs['ours'], runs['original'])],
               profile_ms_per_sample=prof)
    print(f"\ninput pipeline, {a.size}px, {workers} workers, batch {a.batch}, {res['machine']}")
    print(f"{'pipeline':<10} {'samples/s':>10} {'MB/s':>8} {'dtype':>8} {'samples':>8}")
    for k, r in (('ours', r_ours), ('original', r_orig)):
        print(f"{k:<10} {r['samples_per_s']:>10.1f} {r['MB_per_s']:>8.1f} {r['batch_dtype']:>8} {r['samples']:>8}")
    print(f"speed-up {ratio:.1f}x (goal 5x: {'met' if ratio >= 5 else 'NOT met'}); per repeat: {res['speedup_per_repeat']}")
    print('main-process ms/sample:', ', '.join(f'{k} {v}' for k, v in prof.items()))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res

if __name__ == '__main__': main()
