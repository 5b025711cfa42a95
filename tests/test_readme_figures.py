"""scripts/readme_figures.py: README's demo block written from a demo summary, and --check failing when an accuracy
figure differs (timings may differ: they are the machine's)."""
import copy, json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT/'scripts'/'readme_figures.py'
SUMMARY = dict(
    written='2026-12-04 16:00 UTC', machine='x86_64, a CPU, 2 cores', training_note=None,
    config=dict(n_images=400, n_test=100, difficulty='default', seed=0, threads=2),
    model='demo model (resnet_tiny P3-P7, 256 px, 20 of 20 epochs)',
    training=dict(epochs_done=20, epochs=20, stopped='completed'),
    validation=dict(epoch=20, post=dict(final_thresh=0.35, nms_thresh=0.05, global_weight=0.5), map=0.2261, ci95=[0.1321, 0.3372],
                    n_counted=24, n_images=100),
    scores=dict(pytorch=dict(label='PyTorch fp32, no TTA', map=0.22449, ci95=[0.1391, 0.3064], n_counted=24, n_images=100)),
    comparisons=[dict(what='flip TTA (PyTorch)', diff=-0.0071, ci95=[-0.099, 0.0902], p_value=0.891)],
    int8_gate=dict(accepted=False, loss=0.0012, diff_ci95=[-0.026, 0.02], max_loss=0.01),
    board_latency=dict(label='OpenCV DNN 5.1.0 fp32, 2 threads', total_ms=21.7, read_ms=7.5, prepare_ms=0.9, network_ms=12.2,
                       post_ms=1.1),
    bench=[dict(network='original (se_resnext50_32x4d P2-P7 fpn256)', runtime='opencv', runtime_label='OpenCV 5.1.0 DNN', median_ms=3295,
                peak_mb=700)],
    stage_seconds=dict(data=39, train=302), total_seconds=341, stage_cpu_seconds=dict(data=20.4, train=250.2),
    stage_load=dict(data=[0.5, 1.2], train=[1.2, 2.04]))


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def files(tmp_path):
    s, readme = tmp_path/'summary.json', tmp_path/'README.md'
    s.write_text(json.dumps(SUMMARY))
    readme.write_text('# x\n\nbefore\n<!-- demo-figures:start -->\nOLD-CONTENT\n<!-- demo-figures:end -->\nafter\n')
    return s, readme


def test_write_then_check(files):
    s, readme = files
    r = run(s, '--readme', readme); assert r.returncode == 0, r.stderr
    text = readme.read_text()
    assert text.startswith('# x\n\nbefore\n<!-- demo-figures:start -->') and text.endswith('<!-- demo-figures:end -->\nafter\n')
    assert '| test mAP, PyTorch fp32, no TTA | 0.224 (0.139-0.306; 24 of 100 images counted) |' in text
    assert '| flip TTA (PyTorch): B - A | -0.007 (95% paired interval -0.099 to +0.090), p = 0.89 |' in text
    assert "Timings are this machine's (x86_64, a CPU, 2 cores" in text and '| wall time of the stages | 341 s (data 39 s, train 302 s) |' in text
    assert '| CPU seconds of the stages (load-independent) | 271 s (data 20 s, train 250 s) |' in text
    assert "| the machine's 1-minute load average at stage starts and ends | 0.5-2.0 |" in text
    assert 'OLD-CONTENT' not in text
    r = run(s, '--readme', readme, '--check'); assert r.returncode == 0 and 'accuracy figures match' in r.stdout, r


def test_check_fails_on_a_different_figure(files):
    s, readme = files
    assert run(s, '--readme', readme).returncode == 0
    fresh = copy.deepcopy(SUMMARY)
    fresh['total_seconds'], fresh['board_latency']['total_ms'] = 600, 30.   # timings move: still a match
    fresh['stage_cpu_seconds']['train'], fresh['stage_load']['train'] = 900., [4.0, 6.5]
    s.write_text(json.dumps(fresh))
    assert run(s, '--readme', readme, '--check').returncode == 0
    fresh['scores']['pytorch']['ci95'][1] = 0.3075                         # one interval end, third digit: a mismatch
    s.write_text(json.dumps(fresh))
    r = run(s, '--readme', readme, '--check')
    assert r.returncode == 1 and '-| test mAP, PyTorch fp32, no TTA | 0.224 (0.139-0.306;' in r.stderr and '0.139-0.307' in r.stderr, r
    fresh['scores']['pytorch']['ci95'][1] = 0.3064; fresh['comparisons'] = []   # a comparison missing: a mismatch too
    s.write_text(json.dumps(fresh))
    assert run(s, '--readme', readme, '--check').returncode == 1


def test_refuses_a_cut_run_and_bad_files(files, tmp_path):
    s, readme = files
    cut = dict(SUMMARY, training_note='TRAINING CUT SHORT: 8 of 20 epochs (time budget of 5.0 min); ...')
    s.write_text(json.dumps(cut))
    r = run(s, '--readme', readme)
    assert r.returncode == 2 and 'TRAINING CUT SHORT' in r.stderr and 'Traceback' not in r.stderr, r
    assert 'OLD-CONTENT' in readme.read_text()   # untouched
    r = run(tmp_path/'none.json', '--readme', readme)
    assert r.returncode == 2 and 'none.json: no demo summary' in r.stderr, r
    s.write_text(json.dumps(SUMMARY)); (tmp_path/'R2.md').write_text('no markers\n')
    r = run(s, '--readme', tmp_path/'R2.md')
    assert r.returncode == 2 and 'no <!-- demo-figures:start -->' in r.stderr, r


def test_readme_has_the_block():
    text = (ROOT/'README.md').read_text()
    assert text.count('<!-- demo-figures:start -->') == 1 and text.count('<!-- demo-figures:end -->') == 1
    assert text.index('<!-- demo-figures:start -->') < text.index('<!-- demo-figures:timings -->') < text.index('<!-- demo-figures:end -->')
