"""Distillation as a user runs it: `pneumonia-kit distill` in a subprocess, the papermill runner, and the distilled run
folder read by `sweep`, `predict` and `export` like any run."""
import json, subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def teacher(tiny_twin, tmp_path_factory):
    "A one-epoch `tiny` teacher on P2-P7 (128 px), fold 0 of the tiny twin: its run folder"
    import dataclasses, torch
    from pneumonia_kit.train import fit
    from pneumonia_kit.presets import preset_cfgs
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp('teacher')/'run'
    mc, tc = preset_cfgs('tiny', epochs=1)
    fit(tiny_twin, 0, run, dataclasses.replace(mc, levels=(2, 7)), tc, device='cpu')
    return run


def test_distill_command_and_run_folder(tiny_twin, teacher, tmp_path):
    out = tmp_path/'student'
    r = subprocess.run(['pneumonia-kit', 'distill', str(teacher), '--data', str(tiny_twin), '--preset', 'tiny_light', '--epochs', '1',
                        '--box-thresh', '0', '--box-top-k', '32', '--out', str(out), '--device', 'cpu'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().startswith(f'{out}: 1/1 epochs (completed)'), r.stdout
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['distill']['box_top_k'] == 32 and Path(cfg['data']['teacher_cache']).parent == tiny_twin/'cache'
    # the distilled run is a run: sweep, predict and export read it unchanged
    from pneumonia_kit.sweep import sweep_run
    from pneumonia_kit.predict import predict
    from pneumonia_kit.export import export_model
    sweep_run(out)
    assert (out/'best_post.json').is_file()
    p = predict([out], tiny_twin/'stage_2_test_images', out=tmp_path/'sub.csv', device='cpu', progress=False)
    assert p['n_images'] == 6 and not p['failed']
    d = export_model(out, tmp_path/'board')
    meta = json.loads((d/'board.json').read_text())
    assert meta['model_cfg']['head_convs'] == 1 and set(meta['parity']) >= {'onnxruntime', 'opencv'}
    # resuming with another teacher weight is refused in one line (in-process: the same `main` as the command)
    import contextlib, io
    from pneumonia_kit.cli import main
    with contextlib.redirect_stderr(err := io.StringIO()):
        rc = main(['distill', str(teacher), '--data', str(tiny_twin), '--preset', 'tiny_light', '--epochs', '2', '--box-thresh', '0',
                   '--box-top-k', '32', '--kd-weight', '0.9', '--out', str(out), '--resume', '--device', 'cpu'])
    assert rc == 2 and 'distill.kd_weight: 0.5 -> 0.9' in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()


@pytest.mark.slow
def test_distill_runner(tiny_twin, teacher, tmp_path):
    import papermill
    out = tmp_path/'student'
    papermill.execute_notebook(str(ROOT/'nbs'/'_runners'/'distill.ipynb'), str(tmp_path/'distill.ipynb'), progress_bar=False,
                               parameters=dict(data_dir=str(tiny_twin), teachers=str(teacher), out_dir=str(out), preset='tiny_light',
                                               epochs=1, device='cpu'))
    assert (out/'checkpoints'/'epoch_001.pt').is_file() and 'distill' in json.loads((out/'config.json').read_text())


def test_teacher_ensemble_is_predicts_mean_ensemble():
    "Two teachers with flip TTA: cached scores and boxes are what `predict`'s mean ensemble averages for its candidates"
    import numpy as np, torch
    from torchvision.models.detection import _utils as det_utils
    from pneumonia_kit.boxes import decode_boxes, mirror_index
    from pneumonia_kit.model import create_model
    from pneumonia_kit.post import PostCfg, select_candidates
    from pneumonia_kit.predict import merge_passes, raw_passes
    from pneumonia_kit.distill import teacher_outputs
    torch.set_num_threads(1)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = create_model('tiny').eval()
        for n, q in m.head.named_parameters():
            if n.endswith('weight'): q.data.normal_(0, 1. if 'cls_logits' in n else 0.1)
        models.append(m)
    x = torch.randint(0, 256, (2, 1, 128, 128), dtype=torch.uint8)
    anchors, A = models[0].anchors, models[0].anchors.shape[0]
    coder = det_utils.BoxCoder(tuple(models[0].cfg.box_coder_weights))
    mi = torch.from_numpy(mirror_index(anchors.numpy()))
    ours = teacher_outputs(models, [torch.arange(A)] * 2, x, anchors, coder, mirrors=[mi, mi])
    post = PostCfg(score_thresh=0.02, topk_candidates=50)
    theirs = merge_passes([p for m in models for p in raw_passes(m, x, tta=True)], post)
    for b in range(2):
        keep = select_candidates(ours['scores'][b].numpy(), post)
        assert len(keep) > 5
        np.testing.assert_allclose(ours['scores'][b, keep].numpy(), theirs[b]['scores'], atol=1e-6)
        boxes = decode_boxes(ours['deltas'][b, keep].numpy(), anchors[keep].numpy(), models[0].cfg.box_coder_weights)
        np.testing.assert_allclose(boxes, theirs[b]['boxes'], atol=1e-2)
        np.testing.assert_allclose(ours['probs'][b].numpy(), theirs[b]['global_probs'], atol=1e-6)


def test_distill_bad_teachers_one_line(tiny_twin, teacher, tmp_path):
    "A missing teacher, and one made for another image size or other anchors than the student's: one line each, exit 2"
    import contextlib, io
    from pneumonia_kit.cli import main
    cases = {(str(tmp_path/'nope'),): 'teacher', (str(teacher), '--image-size', '256'): 'input size 128 px, the student\'s is 256 px'}
    for args, msg in cases.items():
        with contextlib.redirect_stderr(err := io.StringIO()):
            rc = main(['distill', args[0], '--data', str(tiny_twin), '--preset', 'tiny_light', '--out', str(tmp_path/'s'), '--device', 'cpu', *args[1:]])
        assert rc == 2 and msg in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
    from pneumonia_kit.distill import check_teachers
    from pneumonia_kit.model import model_cfg
    with pytest.raises(Exception, match='anchors are not among its anchors'):
        check_teachers([teacher], model_cfg('tiny_light', anchor_scale=3.))


@pytest.mark.slow
def test_board_pareto_command(tiny_twin, teacher, tmp_path):
    """`board-pareto`: the teacher's run as the original, a board folder and the same run again as candidates, on the
    twin's 6 test images with OpenCV; the table, JSON and plot; no meter cache: 'not metered', nothing recommended"""
    import torch
    from pneumonia_kit.model import create_model
    from pneumonia_kit.export import export_onnx
    torch.manual_seed(0)
    export_onnx(create_model('tiny_light'), tmp_path/'light', check=())
    out = tmp_path/'pareto'
    env = dict(__import__('os').environ, LOONGARCH_WORK=str(tmp_path/'no_meter'))
    r = subprocess.run(['pneumonia-kit', 'board-pareto', f'light={tmp_path/"light"}', f'again={teacher}', '--original', str(teacher),
                        '--data', str(tiny_twin), '--out', str(out), '--threads', '1', '--n-boot', '50'], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out/'pareto.json').read_text())
    assert [x['name'] for x in res['rows']] == ['run', 'light', 'again'] and res['recommended'] is None
    assert 'not metered' in res['why_none'] and res['rows'][2]['diff'] == 0 and res['rows'][0]['n_images'] == 6
    assert all(x['metered'] == 'not metered' and x['parity'] < 1e-3 and x['failed'] == 0 for x in res['rows'])
    assert (out/'pareto.png').is_file() and '| light |' in (out/'pareto.md').read_text()
    # asking for the meter without the emulator built: one line, before any work
    r = subprocess.run(['pneumonia-kit', 'board-pareto', str(tmp_path/'light'), '--original', str(teacher), '--data', str(tiny_twin),
                        '--out', str(tmp_path/'p2'), '--meter'], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and 'emulator is not built' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path/'p2').exists()
