"""The board model family exports: every `ModelCfg` knob and every light backbone gives a static ONNX model that ONNX
Runtime and OpenCV DNN run with PyTorch's outputs (`export.export_onnx` checks parity before writing), and FLOPs and
parameters are counted for it. With PNEUMONIA_KIT_OPENCV_DIR set to a folder holding another OpenCV's `cv2` package
(e.g. the board's 4.10: `pip download opencv-python-headless==4.10.0.84` unzipped there), the light backbones are
also run by that OpenCV, in a subprocess; so they are by the board meter's x86 OpenCV 4.10 venv when it is built
(`meter.board_python`: outputs/loongarch/x86-cv410 or $LOONGARCH_WORK/x86-cv410)."""
import os, subprocess, sys
import numpy as np
import pytest
import torch
from pneumonia_kit.backbones import list_backbones
from pneumonia_kit.core import load_json
from pneumonia_kit.model import count_flops, count_params, create_model, make_anchors
from pneumonia_kit.export import export_onnx

KNOBS = dict(p3p6=dict(levels=(3, 6)), p4p7=dict(levels=(4, 7)), p3p5=dict(levels=(3, 5)),
             head2x16=dict(head_convs=2, head_channels=16), head0=dict(head_convs=0), fpn16_global8=dict(fpn_channels=16, global_channels=8),
             size192=dict(image_size=192, levels=(3, 6)))
LIGHT = list_backbones(tags=('light', 'imagenet'))   # the board family's backbones (`MODEL_PRESETS['<name>_p3p7_light']`)


def _board_python():
    from pneumonia_kit.meter import board_python
    py = board_python()
    return None if py == sys.executable else py


def _export(model, tmp_path):
    torch.manual_seed(0)   # subnets away from their near-constant N(0, 0.01) init, so that parity means something
    for p in model.head.parameters(): p.data.normal_(0, 0.03)
    for name, b in model.backbone.named_buffers():   # frozen BatchNorm statistics that are not the identity
        if name.endswith('running_mean'): b.data.normal_(0, 0.1)
    onnx = export_onnx(model, tmp_path/'m')
    meta = load_json(tmp_path/'m'/'board.json')
    assert set(meta['parity']) >= {'onnxruntime', 'opencv'}
    assert meta['num_anchors'] == make_anchors(model.cfg).shape[0] == np.load(tmp_path/'m'/'anchors.npy').shape[0]
    assert count_flops(model) > 0 and count_params(model)['total'] > 0
    return onnx, meta


@pytest.mark.parametrize('knob', list(KNOBS))
def test_knob_exports(knob, tmp_path):
    torch.set_num_threads(1)
    _, meta = _export(create_model('tiny', **KNOBS[knob]), tmp_path)
    assert meta['model_cfg'][next(iter(KNOBS[knob]))] is not None


@pytest.mark.parametrize('backbone', LIGHT)
def test_light_backbone_exports(backbone, tmp_path):
    torch.set_num_threads(1)
    m = create_model(f'{backbone}_p3p7_light', pretrained=False, image_size=128)
    onnx, meta = _export(m, tmp_path)
    assert meta['backbone'] == backbone and meta['model_cfg']['head_convs'] == 2
    if os.environ.get('PNEUMONIA_KIT_OPENCV_DIR') or _board_python(): _other_opencv(m, onnx, tmp_path)


def test_board_configuration_exports(tmp_path):
    "The recommended board configuration (ResNet18 P4-P7, 128-channel FPN and subnets, 4 convs), at 128 px"
    torch.set_num_threads(1)
    m = create_model('board_r18_p4p7', pretrained=False, image_size=128)
    onnx, meta = _export(m, tmp_path)
    assert meta['levels'] == [4, 7] and meta['num_anchors'] == (8**2 + 4**2 + 2**2 + 1) * 9
    if os.environ.get('PNEUMONIA_KIT_OPENCV_DIR') or _board_python(): _other_opencv(m, onnx, tmp_path)


_OTHER = """import sys, cv2, numpy as np
r = np.load(sys.argv[2]); net = cv2.dnn.readNetFromONNX(sys.argv[1]); net.setInput(r['x'], 'image')
outs = net.forward(['cls_logits', 'bbox_regression', 'global_logits'])
print(cv2.__version__, max(float(np.abs(o.reshape(r[k].shape) - r[k]).max()) for o, k in zip(outs, ['cls_logits', 'bbox_regression', 'global_logits'])))"""

def _other_opencv(model, onnx, tmp_path):
    "Run the export with the OpenCV in PNEUMONIA_KIT_OPENCV_DIR and compare it with PyTorch"
    x = torch.rand(1, 1, model.cfg.image_size, model.cfg.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(): np.savez(tmp_path/'ref.npz', x=x.numpy(), **{k: v.numpy() for k, v in model.eval()(x).items()})
    d = os.environ.get('PNEUMONIA_KIT_OPENCV_DIR')
    r = subprocess.run([sys.executable if d else _board_python(), '-c', _OTHER, str(onnx), str(tmp_path/'ref.npz')], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=d) if d else None)
    assert r.returncode == 0, r.stderr[-2000:]
    version, diff = r.stdout.split()
    assert float(diff) < 1e-3, (version, diff)
