"""The base install, as a user without torch gets it: the built wheel with no extras, installed offline from a local
wheelhouse into a clean venv, runs the torch-free commands (board-predict, score, compare, show).

The wheelhouse is $PNEUMONIA_KIT_WHEELHOUSE when set (.ci/run makes it with `pip download`), else this test downloads
the wheel's dependencies itself, with the versions of constraints.txt (from the pip cache or the package index)."""
import os, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile_corpus import _model_dir  # noqa: E402  (the tiny board model folder, made with onnx, no torch)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow   # about a minute: a wheel, a venv and an install of numpy, OpenCV, pydicom


def run(argv, env=None, cwd=None, timeout=900):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    return r


def offline_env(**extra):
    "pip reads no config file and no PIP_* setting of this machine (its find-links, its indexes): only what we pass"
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PIP_', 'PYTHON', 'VIRTUAL_ENV'))}
    return dict(env, PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK='1', **extra)


def build_wheel(out: Path) -> Path:
    "The package's wheel, built from a copy of what the wheel holds (pyproject.toml, README.md, pneumonia_kit/)"
    src = out/'src'
    shutil.copytree(ROOT/'pneumonia_kit', src/'pneumonia_kit', ignore=shutil.ignore_patterns('__pycache__'))
    for f in ('pyproject.toml', 'README.md'): shutil.copy(ROOT/f, src/f)
    r = run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', out/'dist', src])
    assert r.returncode == 0, r.stderr[-3000:]
    return next((out/'dist').glob('pneumonia_kit-*.whl'))


def wheelhouse(out: Path, wheel: Path) -> Path:
    "$PNEUMONIA_KIT_WHEELHOUSE, or the wheel's dependencies (no extras) downloaded at constraints.txt's versions"
    if os.environ.get('PNEUMONIA_KIT_WHEELHOUSE'): return Path(os.environ['PNEUMONIA_KIT_WHEELHOUSE'])
    r = run([sys.executable, '-m', 'pip', 'download', '--only-binary', ':all:', '-c', ROOT/'constraints.txt',
             '-d', out/'wheelhouse', wheel])
    if r.returncode != 0:
        pytest.fail(f'pip download of the base dependencies failed (no index, no cache?):\n{r.stderr[-2000:]}')
    return out/'wheelhouse'


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    "dict(bin: the clean venv's bin folder, root: a folder with a tiny model, 3 DICOMs and labels, seconds, size_mb)"
    import cv2
    from pneumonia_kit.dicom import write_jpeg_dicom
    d = tmp_path_factory.mktemp('install')
    wheel = build_wheel(d)
    house = wheelhouse(d, wheel)
    t0 = time.perf_counter()
    r = run([sys.executable, '-m', 'venv', d/'venv'], env=offline_env())
    assert r.returncode == 0, r.stderr
    py = d/'venv'/'bin'/'python'
    r = run([py, '-m', 'pip', 'install', '--no-index', '--find-links', house, wheel], env=offline_env())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    secs = time.perf_counter() - t0
    size = int(run(['du', '-sm', d/'venv']).stdout.split()[0])
    print(f'\nbase install: {secs:.0f} s, venv {size} MB ({house})')
    md = _model_dir(d/'model')
    rng = np.random.default_rng(2)
    for i in range(3):
        img = cv2.GaussianBlur(rng.uniform(0, 255, (160, 200)).astype(np.float32), (0, 0), 3)
        cv2.circle(img, (50 + 40 * i, 80), 30, 250, -1)
        write_jpeg_dicom(d/'images'/f'q{i}.dcm', np.clip(img, 0, 255).astype(np.uint8), f'q{i}')
    (d/'labels.csv').write_text('patientId,x,y,width,height,Target\nq0,20,50,60,60,1\nq1,,,,,0\nq2,100,50,60,60,1\n')
    return dict(bin=py.parent, root=d, model=md, seconds=secs, size_mb=size)


def test_no_torch_in_the_base_install(base):
    r = run([base['bin']/'python', '-m', 'pip', 'list', '--format', 'freeze'], env=offline_env())
    names = {line.split('==')[0].lower() for line in r.stdout.split()}
    assert {'pneumonia_kit', 'numpy', 'pydicom', 'opencv-python-headless'} <= names, names
    assert not names & {'torch', 'torchvision', 'pandas', 'pillow', 'onnxruntime', 'albumentations', 'matplotlib'}, \
        names
    r = run([base['bin']/'python', '-c', 'import torch'], env=offline_env())
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr


def test_board_predict_score_compare_show(base):
    b, d = base['bin'], base['root']
    env = offline_env(TQDM_DISABLE='1')
    r = run([b/'pneumonia-kit', 'board-predict', base['model'], d/'images', '--backend', 'opencv',
             '--out', d/'sub.csv'], env, d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '3 images, 0 failed' in r.stdout and '(opencv, 2 threads)' in r.stdout
    # the same predictor from this checkout (same OpenCV pin): the same submission
    ref = run([sys.executable, '-m', 'pneumonia_kit.board', base['model'], d/'images', '--out', d/'ref.csv'], cwd=d)
    assert ref.returncode == 0, ref.stderr
    assert (d/'sub.csv').read_text() == (d/'ref.csv').read_text()
    r = run([b/'python', '-m', 'pneumonia_kit.board', base['model'], d/'images', '--out', d/'m.csv'], env, d)
    assert r.returncode == 0 and (d/'m.csv').read_text() == (d/'ref.csv').read_text(), r.stderr[-2000:]
    r = run([b/'pneumonia-kit', 'score', d/'sub.csv', d/'labels.csv'], env, d)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].startswith('mAP: '), r.stderr[-2000:]
    r = run([b/'pneumonia-kit', 'compare', d/'sub.csv', d/'ref.csv', d/'labels.csv', '--n-boot', '50'], env, d)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run([b/'pneumonia-kit', 'show', d/'images'/'q0.dcm', '--boxes', d/'sub.csv', '--out', d/'q0.png'], env, d)
    assert r.returncode == 0 and (d/'q0.png').stat().st_size > 1000, r.stderr[-2000:]


def test_onnxruntime_and_training_say_what_to_install(base):
    "Without the extras, the commands that need them fail in one line, no traceback"
    b, d = base['bin'], base['root']
    env = offline_env(TQDM_DISABLE='1')
    r = run([b/'pneumonia-kit', 'board-predict', base['model'], d/'images', '--backend', 'onnxruntime',
             '--out', d/'o.csv'], env, d)
    assert r.returncode == 2 and 'onnxruntime is not installed' in r.stderr, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr
    r = run([b/'pneumonia-kit', '--help'], env, d)
    assert r.returncode == 0 and 'board-predict' in r.stdout and 'bundle' in r.stdout, r.stderr[-2000:]


def test_bundle_from_the_base_install(base):
    "`pneumonia-kit bundle` needs nothing beyond the base install, and its bundle runs there (OpenCV by default)"
    b, d = base['bin'], base['root']
    env = offline_env(TQDM_DISABLE='1')
    r = run([b/'pneumonia-kit', 'bundle', base['model'], '--out', d/'board.pyz'], env, d)
    assert r.returncode == 0 and 'sha256' in r.stdout, r.stderr[-2000:]
    r = run([b/'python', d/'board.pyz', d/'images', '--out', d/'bundle.csv'], env, d)
    assert r.returncode == 0 and '(opencv, 2 threads)' in r.stdout, r.stderr[-2000:]
    ref = run([b/'pneumonia-kit', 'board-predict', base['model'], d/'images', '--backend', 'opencv',
               '--out', d/'bp.csv'], env, d)
    assert ref.returncode == 0 and (d/'bundle.csv').read_text() == (d/'bp.csv').read_text(), ref.stderr[-2000:]
