"""The board predictor runs where torch, pandas, PIL and fastcore cannot be imported, and its two runtimes agree."""
import csv, json, os, subprocess, sys, textwrap
import numpy as np
import pytest

BLOCKED = ('torch', 'torchvision', 'pandas', 'PIL', 'fastcore')

# Installed through PYTHONPATH as `sitecustomize`, so it runs before anything else in the child process:
# importing a blocked package (or any submodule of it) raises ModuleNotFoundError, as on the board.
SITECUSTOMIZE = f'''
import sys
BLOCKED = {BLOCKED!r}
class _BoardBlocker:
    "Meta-path finder refusing the packages the Loongson board does not have"
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED: raise ModuleNotFoundError(f'{{name}} is not on the board', name=name)
        return None
sys.meta_path.insert(0, _BoardBlocker())
'''


def _tiny_model_dir(d, size=128):
    "Export a RetinaNet-shaped toy network (FPN, P6/P7, GroupNorm towers, global head) as a board model folder"
    import torch, torch.nn as nn, torch.nn.functional as F, warnings, io, contextlib
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    class Tiny(nn.Module):
        def __init__(self, ch=8, A=9):
            super().__init__()
            self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
            cbr = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
            self.c3, self.c4, self.c5 = nn.Sequential(cbr(3, ch), nn.MaxPool2d(3, 2, 1), cbr(ch, ch)), cbr(ch, ch), cbr(ch, ch)
            self.lat = nn.ModuleList(nn.Conv2d(ch, ch, 1) for _ in range(3))
            self.p6, self.p7 = nn.Conv2d(ch, ch, 3, 2, 1), nn.Conv2d(ch, ch, 3, 2, 1)
            tower = lambda: nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.GroupNorm(4, ch), nn.ReLU())
            self.cls_tower, self.box_tower = tower(), tower()
            self.cls, self.box = nn.Conv2d(ch, A, 3, 1, 1), nn.Conv2d(ch, A * 4, 3, 1, 1)
            self.g_conv, self.g_fc = nn.Conv2d(ch, ch, 3, 1, 1), nn.Linear(2 * ch, 3)

        def forward(self, image):
            x = (image.expand(-1, 3, -1, -1) - self.mean) / self.std
            c3 = self.c3(x); c4 = self.c4(c3); c5 = self.c5(c4)
            p5 = self.lat[2](c5)
            p4 = self.lat[1](c4) + F.interpolate(p5, size=c4.shape[-2:], mode='nearest')
            p3 = self.lat[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode='nearest')
            p6 = self.p6(c5); p7 = self.p7(F.relu(p6))
            cls, box = [], []
            for f in (p3, p4, p5, p6, p7):
                N, _, H, W = f.shape
                cls.append(self.cls(self.cls_tower(f)).view(N, -1, 1, H, W).permute(0, 3, 4, 1, 2).reshape(N, -1))
                box.append(self.box(self.box_tower(f)).view(N, -1, 4, H, W).permute(0, 3, 4, 1, 2).reshape(N, -1, 4))
            g = F.relu(self.g_conv(c5))
            g = torch.cat([F.adaptive_avg_pool2d(g, 1).flatten(1), F.adaptive_max_pool2d(g, 1).flatten(1)], 1)
            return torch.cat(cls, 1), torch.cat(box, 1), self.g_fc(g)

    torch.manual_seed(0)
    m = Tiny().eval()
    with torch.no_grad(): m.cls.bias.fill_(-2.0)
    names = ['cls_logits', 'bbox_regression', 'global_logits']
    d.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter('ignore')
        torch.onnx.export(m, (torch.rand(1, 1, size, size),), str(d/'model.onnx'), dynamo=False, opset_version=17,
                          input_names=['image'], output_names=names)
    gen = AnchorGenerator(tuple((s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)) for s in (32, 64, 128, 256, 512)), ((0.5, 1.0, 2.0),) * 5)
    feats = [torch.zeros(1, 1, size // s, size // s) for s in (8, 16, 32, 64, 128)]
    np.save(d/'anchors.npy', gen(ImageList(torch.zeros(1, 1, size, size), [(size, size)]), feats)[0].numpy().astype(np.float32))
    post = dict(score_thresh=0.025, nms_thresh=0.05, top_ratio=0.5, global_weight=0.5, final_thresh=0.0, detections_per_img=4)
    (d/'board.json').write_text(json.dumps(dict(
        format_version=1, input_size=size, input_name='image', output_names=names, box_coder_weights=[10, 10, 5, 5],
        post=post, class_names=['Normal', 'No Lung Opacity / Not Normal', 'Lung Opacity'], backbone='tiny',
        levels=[3, 7], checkpoint_sha256='0' * 64, pneumonia_kit_version='test')))
    return d


@pytest.fixture(scope='module')
def board_files(tmp_path_factory):
    "(model folder, images folder with 3 JPEG DICOMs of 256 px and one truncated file)"
    import cv2
    from pneumonia_kit.dicom import write_jpeg_dicom
    root = tmp_path_factory.mktemp('board')
    md = _tiny_model_dir(root/'model')
    rng = np.random.default_rng(0)
    for i in range(3):
        img = cv2.GaussianBlur(rng.uniform(0, 255, (256, 256)).astype(np.float32), (0, 0), 4)
        for _ in range(2): cv2.circle(img, tuple(int(v) for v in rng.integers(20, 236, 2)), 32, 250, -1)
        write_jpeg_dicom(root/'images'/f'pid{i}.dcm', np.clip(img, 0, 255).astype(np.uint8), f'pid{i}')
    (root/'images'/'broken.dcm').write_bytes((root/'images'/'pid0.dcm').read_bytes()[:2000])
    return md, root/'images'


def _run(code, tmp_path, block=True):
    "Run python `code` in a fresh process (with the board blocker installed if `block`); its CompletedProcess"
    env = dict(os.environ)
    if block:
        (tmp_path/'blocker').mkdir(exist_ok=True)
        (tmp_path/'blocker'/'sitecustomize.py').write_text(SITECUSTOMIZE)
        env['PYTHONPATH'] = os.pathsep.join([str(tmp_path/'blocker'), *filter(None, [env.get('PYTHONPATH')])])
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)


def test_import_does_not_load_torch(tmp_path):
    "A plain import (nothing blocked) loads none of torch, torchvision, pandas, fastcore"
    # PIL is left out here: pydicom itself imports Pillow whenever it is installed (harmless: without it, as in
    # the blocked run below, the JPEG frames are decoded by OpenCV)
    heavy = tuple(m for m in BLOCKED if m != 'PIL')
    r = _run(f'''
        import sys, pneumonia_kit.board
        print(sorted(m for m in {heavy!r} if m in sys.modules))''', tmp_path, block=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]', r.stdout


TORCH_FREE = ('core', 'cmdline', 'dicom', 'image', 'boxes', 'metric', 'csvio', 'post', 'runtime',
              'board')   # DESIGN.md: the board's


def test_torch_free_modules_import_blocked(tmp_path):
    "Every torch-free module imports where torch, torchvision, pandas, PIL and fastcore cannot be imported"
    r = _run(f'''
        import importlib, sys
        for m in {TORCH_FREE!r}: importlib.import_module('pneumonia_kit.' + m)
        print(sorted(m for m in sys.modules if m.startswith('pneumonia_kit.')))''', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == str(sorted(f'pneumonia_kit.{m}' for m in TORCH_FREE)), r.stdout


def test_blocker_blocks(tmp_path):
    "The blocker itself works, so the end-to-end test below means something"
    r = _run('import torch', tmp_path)
    assert r.returncode != 0 and 'torch is not on the board' in r.stderr
    r = _run('from PIL import Image', tmp_path)
    assert r.returncode != 0 and 'PIL is not on the board' in r.stderr


def test_board_predict_without_torch(board_files, tmp_path):
    md, images = board_files
    out = tmp_path/'out'
    r = _run(f'''
        import json, sys
        from pneumonia_kit.board import board_predict
        res = {{}}
        for be in ('opencv', 'onnxruntime'):
            res[be] = board_predict({str(md)!r}, [{str(images)!r}], out={str(out)!r} + f'/{{be}}.csv', backend=be, threads=1,
                                    png_dir={str(out/'png')!r} if be == 'opencv' else None,
                                    json_dir={str(out/'json')!r} if be == 'opencv' else None, progress=False)
        res['loaded'] = sorted(m for m in {BLOCKED!r} if m in sys.modules)
        print(json.dumps(res))''', tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res['loaded'] == []
    for be in ('opencv', 'onnxruntime'):
        s = res[be]
        assert (s['n_images'], s['backend']) == (4, be)
        assert [f['patientId'] for f in s['failed']] == ['broken'] and 'truncated' in s['failed'][0]['error']
        with open(out/f'{be}.csv', newline='') as f: rows = list(csv.reader(f))
        assert rows[0] == ['patientId', 'PredictionString']
        assert [r_[0] for r_ in rows[1:]] == ['broken', 'pid0', 'pid1', 'pid2']   # folder order, one row each
        assert rows[1][1] == ''
        for pid, ps in rows[2:]:
            v = np.array(ps.split(), float).reshape(-1, 5)   # groups of conf x y w h
            assert 1 <= len(v) <= 4, (pid, ps)
            assert (v[:, 0] > 0).all() and (v[:, 0] <= 1).all() and (np.diff(v[:, 0]) <= 0).all()
            assert (v[:, 1:3] >= 0).all() and (v[:, 1:3] + v[:, 3:5] <= 256.1).all() and (v[:, 3:5] > 0).all()
    assert 'broken' in r.stderr
    assert sorted(p.name for p in (out/'png').iterdir()) == ['pid0.png', 'pid1.png', 'pid2.png']
    j = json.loads((out/'json'/'pid1.json').read_text())
    assert set(j) == {'patientId', 'predictions', 'global_probs'}   # nothing from the DICOM header
    assert set(j['predictions'][0]) == {'score', 'x', 'y', 'width', 'height'}


def test_runtimes_agree(board_files):
    "ONNX Runtime and OpenCV DNN give the same raw outputs and the same detections (matched, not by order)"
    from pneumonia_kit.board import BoardPredictor, prepare_input
    from pneumonia_kit.boxes import match_detections
    from pneumonia_kit.dicom import read_xray
    md, images = board_files
    ort_p, cv_p = BoardPredictor(md, 'onnxruntime', threads=1), BoardPredictor(md, 'opencv', threads=1)
    for p in sorted(images.glob('pid*.dcm')):
        x = prepare_input(read_xray(p), ort_p.size)
        ra, rb = ort_p.runtime.run(x), cv_p.runtime.run(x)
        for k in ra: np.testing.assert_allclose(rb[k].reshape(ra[k].shape), ra[k], atol=1e-4)
        da, db = ort_p.predict_image(p), cv_p.predict_image(p)
        iou, dscore = match_detections(da, db)
        assert len(da['scores']) > 0 and iou > 0.99 and dscore < 1e-3, (p.name, iou, dscore)
