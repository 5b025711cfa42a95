"""The CUDA path through the public API (issue 13): training steps with bf16 and fp16 autocast (+ GradScaler) and
channels-last, resume, prediction with flip TTA, export of a CUDA-trained model and its ONNX parity.

Marked `gpu`: they run on CUDA and are skipped where there is none. `PNEUMONIA_KIT_TEST_DEVICE=cpu` runs the very same
tests on the CPU (the dry run of `bench/gpu_acceptance.sh` does, in CI, so they cannot rot while no GPU is lent).
`PNEUMONIA_KIT_GPU_REPORT=FILE` collects the figures they measure (JSON) for the acceptance report.
"""
import contextlib, json, os
from pathlib import Path
import numpy as np
import pytest
import torch

os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')   # before cuBLAS starts: deterministic=True needs it
DEVICE = os.environ.get('PNEUMONIA_KIT_TEST_DEVICE', 'cuda')
CUDA = DEVICE.startswith('cuda')
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(CUDA and not torch.cuda.is_available(),
                                 reason='no CUDA GPU (PNEUMONIA_KIT_TEST_DEVICE=cpu runs these tests on the CPU)')]


def record(test:str, **facts):
    "Add figures to the acceptance report (when PNEUMONIA_KIT_GPU_REPORT names a file)"
    path = os.environ.get('PNEUMONIA_KIT_GPU_REPORT')
    if not path: return
    p = Path(path)
    d = json.loads(p.read_text()) if p.exists() else {}
    d.setdefault(test, {}).update(facts)
    p.write_text(json.dumps(d, indent=1, default=str))


@contextlib.contextmanager
def no_tf32():
    "Exact fp32 on CUDA (PyTorch lets cuDNN convolutions use TF32 by default), for comparisons with the CPU"
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try: yield
    finally: torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture(scope='module')
def twin(tmp_path_factory):
    "12 training and 4 test images of 256 px with their 128-px cache (one validation fold of 3): small enough for the CPU"
    from pneumonia_kit.synth import synth_dataset
    from pneumonia_kit.cache import build_cache
    root = tmp_path_factory.mktemp('gpu_twin')
    synth_dataset(root, n_images=12, n_test=4, seed=5, size=256, workers=1, progress=False)
    build_cache(root, 128, 'train', workers=1, progress=False)
    return root


def _fit(twin, out, epochs=2, resume=False, **cfg):
    from pneumonia_kit.train import fit
    from pneumonia_kit.presets import preset_cfgs
    mc, tc = preset_cfgs('tiny', epochs=epochs, channels_last=True, **cfg)
    return fit(twin, 0, out, mc, tc, resume=resume, device=DEVICE)

# the fp16 run's recipe (GradScaler on), also that of the run interrupted after 1 epoch and resumed
FP16 = dict(amp='fp16', deterministic=True)
# post-processing that reports boxes even for a barely trained model, so the comparisons compare boxes
POST = dict(score_thresh=0.0, final_thresh=0.0)


@pytest.fixture(scope='module')
def fp16_run(twin, tmp_path_factory):
    "2 epochs of the tiny model in fp16 with the GradScaler, channels-last, deterministic kernels"
    out = tmp_path_factory.mktemp('gpu_fp16')/'run'
    return _fit(twin, out, **FP16), out


@pytest.fixture(scope='module')
def bf16_run(twin, tmp_path_factory):
    "1 epoch in bf16 as `fit` runs by default (cuDNN autotuning, deterministic=False), 2 loader workers (pinned memory on CUDA)"
    out = tmp_path_factory.mktemp('gpu_bf16')/'run'
    return _fit(twin, out, epochs=1, amp='bf16', num_workers=2), out


def _maxdiff(a, b) -> float: return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max(initial=0))


def test_train_bf16_channels_last(bf16_run):
    from pneumonia_kit.runs import autocast, read_checkpoint
    res, out = bf16_run
    dev = torch.device(DEVICE)
    assert (res['amp'], res['epochs_done'], res['stopped']) == ('bfloat16', 1, 'completed')
    assert res['device'].startswith(DEVICE)
    row = res['history'][-1]
    assert np.isfinite([row['train_loss'], row['val_loss']]).all(), row   # (val_map is NaN when no validation image counts)
    model = res['model']
    assert all(p.device.type == dev.type for p in model.parameters())
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if CUDA: assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs), 'fit did not make the model channels-last'
    x = torch.randint(0, 256, (2, 1, 128, 128), dtype=torch.uint8, device=dev)
    with torch.no_grad(), autocast(dev, torch.bfloat16): raw = model(x)
    assert raw['cls_logits'].dtype == torch.bfloat16, 'autocast did not run the heads in bf16'
    ck = read_checkpoint(out/'checkpoints'/'epoch_001.pt')     # weights-only load, on the CPU
    assert all(v.device.type == 'cpu' for v in ck['model'].values())
    assert json.loads((out/'config.json').read_text())['device'].startswith(DEVICE)
    record('train_bf16', device=res['device'], amp=res['amp'], train_loss=row['train_loss'], val_loss=row['val_loss'],
           train_images_per_s=row['train_images_per_s'], channels_last=CUDA, cudnn_benchmark=True)


def test_train_fp16_gradscaler(fp16_run):
    from pneumonia_kit.runs import read_checkpoint
    res, out = fp16_run
    assert (res['amp'], res['epochs_done']) == ('float16', 2)
    for row in res['history']: assert np.isfinite([row['train_loss'], row['val_loss']]).all(), row
    sc = read_checkpoint(out/'checkpoints'/'epoch_002.pt')['scaler']
    assert sc and sc['scale'] > 0, f'the fp16 run saved no GradScaler state: {sc}'
    assert all(torch.isfinite(p).all() for p in res['model'].parameters())
    record('train_fp16', amp=res['amp'], scale=sc['scale'], growth_tracker=sc.get('_growth_tracker'),
           train_loss=[r['train_loss'] for r in res['history']], val_loss=[r['val_loss'] for r in res['history']])


def test_resume_matches_uninterrupted(fp16_run, twin, tmp_path):
    "1 epoch, then `resume=True` to 2 (model, Adam, GradScaler and RNG states restored): the uninterrupted run's weights"
    from pneumonia_kit.runs import read_checkpoint
    ref, ref_out = fp16_run
    out = tmp_path/'run'
    assert _fit(twin, out, epochs=1, **FP16)['epochs_done'] == 1
    res = _fit(twin, out, epochs=2, resume=True, **FP16)
    assert res['epochs_done'] == 2 and len(res['history']) == 2
    assert json.loads((out/'config.json').read_text())['resumed_from'] == 1
    ca, cb = read_checkpoint(ref_out/'checkpoints'/'epoch_002.pt'), read_checkpoint(out/'checkpoints'/'epoch_002.pt')
    diff = max(_maxdiff(ca['model'][k], cb['model'][k]) for k in ca['model'] if ca['model'][k].is_floating_point())
    loss_diff = abs(ref['history'][-1]['train_loss'] - res['history'][-1]['train_loss'])
    record('resume', max_weight_diff=diff, train_loss_diff=loss_diff, scaler=cb['scaler'])
    assert cb['scaler'] == ca['scaler'], f"GradScaler state {cb['scaler']} != uninterrupted {ca['scaler']}"
    assert diff <= 1e-6 and loss_diff <= 1e-6, f'resumed run differs from the uninterrupted one: weights by {diff:.3g}, loss by {loss_diff:.3g}'


def _raw(model, images, tta, amp=False):
    "`predict.raw_passes` of a batch of DICOMs (as `predict` reads them), on the model's device"
    from pneumonia_kit.predict import XrayFiles, collate_files, raw_passes
    b = collate_files([XrayFiles(images, model.cfg.image_size)[i] for i in range(len(images))])
    return raw_passes(model, b['image'].to(model.anchors.device), tta=tta, amp=amp)


def test_predict_tta(fp16_run, twin, tmp_path):
    "Flip-TTA prediction on the device (amp='auto': bf16 on CUDA, and fp32) writes a full submission; its raw outputs are the CPU's"
    from pneumonia_kit.core import RsnaPaths
    from pneumonia_kit.dicom import find_dicoms
    from pneumonia_kit.export import submissions_agree
    from pneumonia_kit.predict import predict
    from pneumonia_kit.runs import load_checkpoint
    _, out = fp16_run
    ckpt, images = out/'checkpoints'/'epoch_002.pt', RsnaPaths(twin).test_images
    kw = dict(tta=True, batch_size=4, progress=False, post=POST)
    amp = predict(ckpt, images, tmp_path/'amp.csv', device=DEVICE, amp='auto', num_workers=2, **kw)   # CUDA: bf16; CPU: fp32
    assert amp['n_images'] == 4 and not amp['failed'] and amp['device'].startswith(DEVICE) and amp['n_boxes'] > 0, amp
    with no_tf32(): fp32 = predict(ckpt, images, tmp_path/'fp32.csv', device=DEVICE, **kw)
    cpu = predict(ckpt, images, tmp_path/'cpu.csv', device='cpu', **kw)
    files = find_dicoms(images)
    with no_tf32(): dev_raw = _raw(load_checkpoint(ckpt, DEVICE)[0], files, tta=True)
    cpu_raw = _raw(load_checkpoint(ckpt, 'cpu')[0], files, tta=True)
    diffs = {f'{k}_{p["flip"]}': _maxdiff(p[k], q[k]) for p, q in zip(dev_raw, cpu_raw) for k in ('scores', 'deltas', 'global_probs')}
    record('predict_tta', ms_per_image_amp_auto=amp['ms_per_image'], ms_per_image_fp32=fp32['ms_per_image'],
           ms_per_image_cpu=cpu['ms_per_image'], boxes=fp32['n_boxes'], raw_device_vs_cpu=diffs,
           submission_device_vs_cpu=submissions_agree(tmp_path/'cpu.csv', tmp_path/'fp32.csv'),
           submission_amp_auto_vs_fp32=submissions_agree(tmp_path/'fp32.csv', tmp_path/'amp.csv'))
    assert len(dev_raw) == 2 and max(diffs.values()) <= 1e-4, f'raw outputs on {DEVICE} differ from the CPU: {diffs}'


def test_export_cuda_trained(fp16_run, twin, tmp_path):
    "A checkpoint trained on the device exports (parity checked by the export); ONNX Runtime = the device's PyTorch model"
    from pneumonia_kit.board import board_predict
    from pneumonia_kit.core import RsnaPaths
    from pneumonia_kit.export import check_parity, export_model, submissions_agree
    from pneumonia_kit.predict import predict
    from pneumonia_kit.runs import load_checkpoint
    _, out = fp16_run
    ckpt, images = out/'checkpoints'/'epoch_002.pt', RsnaPaths(twin).test_images
    mdir = export_model(ckpt, tmp_path/'board', post=POST)
    meta = json.loads((mdir/'board.json').read_text())
    assert {'onnxruntime', 'opencv'} <= set(meta['parity']) and max(meta['parity']['onnxruntime'], meta['parity']['opencv']) <= 1e-3
    model, _ = load_checkpoint(ckpt, DEVICE)
    with no_tf32(): exact = check_parity(model, mdir/'model.onnx', backends=('onnxruntime',))
    try: default = check_parity(model, mdir/'model.onnx', backends=('onnxruntime',))    # PyTorch's default TF32 settings
    except Exception as e: default = f'{type(e).__name__}: {e}'
    board = board_predict(mdir, [images], tmp_path/'board.csv', backend='onnxruntime', threads=1, progress=False)
    with no_tf32(): predict(ckpt, images, tmp_path/'torch.csv', device=DEVICE, progress=False, post=POST)
    record('export', parity_at_export=meta['parity'], parity_device_model_fp32=exact, parity_device_model_default_tf32=default,
           submission_board_vs_device_torch=submissions_agree(tmp_path/'torch.csv', tmp_path/'board.csv'))
    assert exact['onnxruntime'] <= 1e-3
    assert board['n_images'] == 4 and not board['failed'] and board['n_boxes'] > 0, board


def test_step_without_host_sync():
    """Issue 20: bf16 training steps (fused Adam, clipping, padded targets from pinned memory) never wait for the GPU:
    on CUDA under `torch.cuda.set_sync_debug_mode('error')`, on the CPU with Tensor.item/.cpu/.tolist/bool patched to fail"""
    import time
    from test_train_step import _Loader, _SyncGuard, _batches
    from pneumonia_kit.model import create_model
    from pneumonia_kit.step import TrainCfg, make_optimizer, train_one_epoch
    dev = torch.device(DEVICE if DEVICE != 'cuda' else 'cuda:0')
    torch.manual_seed(0)
    net = create_model('tiny').to(dev).to(memory_format=torch.channels_last)
    batches = [(x.pin_memory(), {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in t.items()}) if CUDA else (x, t)
               for x, t in _batches(6)]
    guard = _SyncGuard()
    if CUDA:   # the driver's own check: any synchronising call inside the step raises
        guard.on = lambda: torch.cuda.set_sync_debug_mode('error')
        guard.off = lambda: torch.cuda.set_sync_debug_mode(0)
    tc = TrainCfg(batch_size=4, grad_clip=1., check_every=100, amp='bf16')
    t = time.perf_counter()
    res = train_one_epoch(net, _Loader(batches, guard), make_optimizer(net.parameters(), 1e-3), torch.amp.GradScaler(dev.type, enabled=False),
                          dev, torch.bfloat16, tc, epoch=1, channels_last=CUDA)
    secs = time.perf_counter() - t
    assert guard.calls == 6 and all(np.isfinite(v) for v in res.values()), res
    record('step_no_sync', device=str(dev), steps=6, seconds=round(secs, 3), losses={k: round(v, 4) for k, v in res.items()})


def test_auto_batch_size():
    """Issue 20: batch_size='auto' probes real steps on CUDA (the tiny model fits the cap of 64; weights, buffers untouched)
    and scales the lr by sqrt(batch / 4) with a warm-up; on the CPU there is nothing to probe: lr_base_batch"""
    from pneumonia_kit.model import create_model
    from pneumonia_kit.step import TrainCfg
    from pneumonia_kit.train import _schedule
    dev = torch.device(DEVICE if DEVICE != 'cuda' else 'cuda:0')
    torch.manual_seed(0)
    net = create_model('tiny').to(dev).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tc = TrainCfg(batch_size='auto', lr=1e-3, lr_base_batch=4, max_batch=64, mem_share=0.8)
    s = _schedule(net, tc, dev, torch.bfloat16 if CUDA else None, 1000, 128, 0, 1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    if CUDA:
        assert s['batch_size'] == 64 and all(v is not None for v in s['probe']['probes_gb'].values()), s
        assert s['lr'] == pytest.approx(4e-3) and s['warmup_steps'] == 1000 // 64
    else: assert (s['batch_size'], s['lr'], s['probe']) == (4, 1e-3, None)
    record('auto_batch', device=str(dev), **{k: s[k] for k in ('batch_size', 'lr', 'warmup_steps', 'batch_rule', 'probe')})
