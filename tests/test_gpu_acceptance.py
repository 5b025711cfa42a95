"""The GPU acceptance script (issue 13) cannot rot while no GPU is lent: its CPU dry run (the same parts, reduced: the
gpu-marked tests on the CPU, the training-step benchmark with the tiny backbone, the throughput run on a 40-image twin)
runs here and its results are checked; and the wheel list covers what the package imports that the GPU machine lacks."""
import ast, json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'bench'))
import gpu_acceptance as ga   # noqa: E402  (the driver: standard library only)
GPU_HERE = ga.no_cuda() is None   # asked once: each ask starts a Python that imports torch

# what the GPU machine has (device/KINDS.md, 'Python packages already there'), by import name
ON_DEVICE = {'torch', 'torchvision', 'numpy', 'pandas', 'cv2', 'onnx', 'onnxruntime', 'matplotlib', 'seaborn', 'tqdm',
             'safetensors', 'PIL', 'scipy', 'yaml', 'skimage', 'timm'}
NOT_FOR_GPU_RUN = {'kaggle', 'papermill', 'jupyter_client', 'traitlets'}   # the Kaggle download and the demo's notebook runner (papermill, its kernel client): not in the acceptance run


@pytest.fixture(scope='module')
def dry(tmp_path_factory):
    "One dry run of bench/gpu_acceptance.sh: (exit status, OUT_DIR, results.json, seconds)"
    import time
    out, work = tmp_path_factory.mktemp('acceptance')/'out', tmp_path_factory.mktemp('acceptance_work')
    t = time.monotonic()
    p = subprocess.run(['bash', str(ROOT/'bench'/'gpu_acceptance.sh'), str(out), '--dry-run', '--work', str(work)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHON=sys.executable))
    res = json.loads((out/'results.json').read_text()) if (out/'results.json').exists() else {}
    return p, out, res, time.monotonic() - t


@pytest.mark.skipif(GPU_HERE, reason='a CUDA GPU is here')
def test_no_gpu_one_line(tmp_path):
    "Without --dry-run on a machine with no GPU: one line that says so, exit status 2, nothing written (no OUT_DIR)"
    p = subprocess.run(['bash', str(ROOT/'bench'/'gpu_acceptance.sh'), str(tmp_path/'out'), '--work', str(tmp_path/'work')],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHON=sys.executable))
    assert p.returncode == 2 and p.stdout == '', p.stdout[-2000:] + p.stderr[-2000:]
    (line,) = p.stderr.splitlines()
    assert line.startswith('gpu_acceptance: error: no CUDA GPU here (torch ') and '--dry-run' in line, line
    assert not (tmp_path/'out').exists() and not (tmp_path/'work').exists()


@pytest.mark.skipif(GPU_HERE, reason='a CUDA GPU is here')
@pytest.mark.parametrize('bench', ['bench_train_step', 'bench_throughput', 'bench_curves', 'bench_curves --parallel'])
def test_bench_no_gpu_one_line(bench, tmp_path):
    "The acceptance's benches, called alone with --device cuda where there is none: argparse's one error line, no traceback"
    script, *extra = bench.split()
    data = [] if script == 'bench_train_step' else ['--data', str(tmp_path/'twin')]   # the throughput run makes a missing twin
    p = subprocess.run([sys.executable, str(ROOT/'bench'/f'{script}.py'), '--device', 'cuda', '--json', str(tmp_path/'r.json'),
                        *data, *extra], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and 'Traceback' not in p.stderr, p.stderr[-2000:]
    assert p.stderr.splitlines()[-1] == f'{script}.py: error: --device cuda: no CUDA GPU here'
    assert not any(tmp_path.iterdir())                                                # no twin made, no JSON


def test_dry_run_passes(dry):
    p, out, res, secs = dry
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert res['mode'].startswith('dry-run') and res['passed'] and res['exit_code'] == 0
    assert set(res['parts']) == {'env', 'tests', 'train_step', 'throughput', 'curves'}   # no install in the dry run
    assert all(v['status'] == 'passed' for v in res['parts'].values()), res['parts']
    assert all(c['ok'] for c in res['checks'] if c['kind'] == 'required')
    assert {c['ok'] for c in res['checks'] if c['kind'] == 'goal'} == {None}            # speed goals: GPU only


def test_dry_run_outputs(dry):
    "What comes back from the device: at most 8 plainly named files; the parts' figures in results.json and results.md"
    p, out, res, _ = dry
    files = sorted(f.name for f in out.iterdir())
    assert files == ['acceptance.log', 'results.json', 'results.md', 'tests_junit.xml'] and len(files) <= 8
    t = res['parts']['tests']
    assert (t['tests'], t['passed'], t['failures'], t['errors'], t['skipped']) == (7, 7, 0, 0, 0)
    assert {'train_bf16', 'train_fp16', 'resume', 'predict_tta', 'export', 'step_no_sync', 'auto_batch'} <= set(t['facts'])
    assert t['facts']['resume']['max_weight_diff'] == 0.0                              # the CPU is exact
    ts = res['parts']['train_step']
    assert set(ts['rows']) == {'original (P2-P7, fp32, python loss)', 'ours P2-P7 b2 eager', 'ours P2-P7 b4 eager'}
    cv = res['parts']['curves']
    assert cv['finite'] and cv['steps'] == 6 and set(cv['curves']) == {'fp32 eager, seed A', 'fast, seed A', 'fp32 eager, seed B'}
    (run,) = res['parts']['throughput']['runs']
    assert run['finite'] and run['steps'] == 4 and run['workers'] == 2 and 0 <= run['stall_share'] < 1
    assert run['projected_epoch_s'] > 0 and res['parts']['throughput']['data']['n_images'] == 40
    md = (out/'results.md').read_text()
    for s in ('# GPU acceptance: PASSED', '## Training step', '## Training throughput', '## Training-loss curves', '## Tests', 'test_resume_matches_uninterrupted'):
        assert s in md, s
    assert 'PASSED' in p.stdout                                                          # the summary ends the output


def test_exit_codes(tmp_path):
    "1 when a required check fails, 3 when only a speed goal is missed, 0 otherwise"
    def status(checks):
        acc = ga.Acceptance(tmp_path, True, tmp_path, tmp_path, tmp_path, 10.)
        for c in checks: acc.check(**c)
        acc.save()
        return json.loads((tmp_path/'results.json').read_text())['exit_code']
    assert status([dict(name='a', ok=True)]) == 0
    assert status([dict(name='a', ok=True), dict(name='g', ok=None, kind='goal')]) == 0
    assert status([dict(name='a', ok=True), dict(name='g', ok=False, kind='goal')]) == 3
    assert status([dict(name='a', ok=False), dict(name='g', ok=True, kind='goal')]) == 1
    assert status([]) == 1


def test_usage_errors():
    sh = str(ROOT/'bench'/'gpu_acceptance.sh')
    assert subprocess.run(['bash', sh], capture_output=True).returncode == 2
    p = subprocess.run(['bash', sh, '/tmp/x', '--only', 'nonsense'], capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable))
    assert p.returncode == 2 and 'unknown part' in p.stderr


def test_junit_parsing(tmp_path):
    x = tmp_path/'j.xml'
    x.write_text('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
                 '<testcase name="a" time="1.5"/><testcase name="b" time="2"><failure message="boom">tb</failure></testcase>'
                 '<testcase name="c" time="0"><skipped message="no gpu"/></testcase></testsuite></testsuites>')
    r = ga.parse_junit(x)
    assert (r['tests'], r['passed'], r['failures'], r['skipped']) == (3, 1, 1, 1)
    assert r['failed'] == [dict(name='b', message='boom')] and [c['state'] for c in r['cases']] == ['passed', 'failed', 'skipped']


def test_wheel_list_covers_the_package():
    "Every third-party module the package imports is on the GPU machine or in bench/gpu_wheels.txt (name==version)"
    wheels = ga.read_wheel_list(ROOT/'bench'/'gpu_wheels.txt')
    assert all(v and v[0].isdigit() for v in wheels.values()), wheels
    imported = set()
    for p in (ROOT/'pneumonia_kit').glob('*.py'):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Import): imported |= {a.name.split('.')[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module: imported.add(n.module.split('.')[0])
    third = {m for m in imported if m not in sys.stdlib_module_names and m != 'pneumonia_kit'}
    lacking = sorted(m for m in third - ON_DEVICE - NOT_FOR_GPU_RUN if ga.wheel_name(m) not in wheels)
    assert not lacking, f'imported by the package, not on the GPU machine, not in bench/gpu_wheels.txt: {lacking}'
    # and what those need: albumentations -> albucore, pydantic...; pretrainedmodels -> munch; pydicom's JPEG decoder
    for need in ('albucore', 'simsimd', 'stringzilla', 'pydantic', 'pydantic-core', 'munch', 'pylibjpeg', 'pylibjpeg-libjpeg'):
        assert need in wheels, need
