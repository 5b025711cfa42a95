"""`pneumonia-kit bundle` and the bundle it writes, run as on the board: a fresh Python that can import numpy, pydicom
and OpenCV and nothing else outside the standard library; bad input gets one line and a non-zero exit."""
import csv, os, re, subprocess, sys, textwrap, time, zipfile
from pathlib import Path
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile_corpus import _model_dir  # noqa: E402  (the tiny board model folder, made with onnx, no torch)

_PKG_ROOT = str(Path(__import__('pneumonia_kit').__file__).resolve().parent.parent)   # this checkout's package
_SCRIPT = Path(sys.executable).parent/'pneumonia-kit'
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, '-m', 'pneumonia_kit.cli']

# `sitecustomize` on PYTHONPATH, run before anything else: importing any module that is neither in the standard library
# nor in ALLOWED fails, as on a board with Debian's python3-numpy, python3-pydicom and python3-opencv only
BOARD_SITE = '''
import sys
ALLOWED = {allowed!r}
class _OnlyDebian:
    "Meta-path finder refusing every module that is neither in the standard library nor in ALLOWED"
    def find_spec(self, name, path=None, target=None):
        top = name.split('.')[0]
        if top not in sys.stdlib_module_names and top not in ALLOWED and not top.startswith('_'):
            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)
sys.meta_path.insert(0, _OnlyDebian())
'''
DEBIAN = ('numpy', 'pydicom', 'cv2', 'pneumonia_kit')   # pneumonia_kit: found in the bundle first (its __main__ checks)


def _env(**extra):
    return dict(os.environ, PYTHONPATH=os.pathsep.join([_PKG_ROOT, *filter(None, [os.environ.get('PYTHONPATH')])]),
                TQDM_DISABLE='1', **extra)


def run(argv, cwd, env=None, timeout=300):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env or _env(),
                          timeout=timeout)


def board_python(tmp, allowed=DEBIAN, tag='board') -> tuple:
    "(argv prefix, env) of a Python importing only the standard library and `allowed`"
    d = Path(tmp)/f'site_{tag}'; d.mkdir(exist_ok=True)
    (d/'sitecustomize.py').write_text(BOARD_SITE.format(allowed=tuple(allowed)))
    return [sys.executable], dict(os.environ, PYTHONPATH=str(d), TQDM_DISABLE='1')


def one_line(r, *words, rc=2):
    "r failed with status `rc`, one line on stderr holding `words`, no traceback; the line"
    lines = r.stderr.strip().splitlines()
    assert r.returncode == rc and len(lines) == 1 and 'Traceback' not in r.stderr, (r.returncode, r.stderr[-3000:])
    for w in words: assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    "(folder, bundle, CompletedProcess of `pneumonia-kit bundle`): a tiny model folder, 3 JPEG DICOMs and their bundle"
    import cv2
    from pneumonia_kit.dicom import write_jpeg_dicom
    root = tmp_path_factory.mktemp('bundle')
    md = _model_dir(root/'model'); (md/'MODEL_CARD.md').write_text('# tiny\n')
    rng = np.random.default_rng(1)
    for i in range(3):
        img = cv2.GaussianBlur(rng.uniform(0, 255, (200, 240)).astype(np.float32), (0, 0), 3)
        cv2.circle(img, (60 + 50 * i, 100), 35, 250, -1)
        write_jpeg_dicom(root/'images'/f'p{i}.dcm', np.clip(img, 0, 255).astype(np.uint8), f'p{i}')
    r = run([*CLI, 'bundle', md, '--out', root/'board.pyz'], root)
    return root, root/'board.pyz', r


def test_bundle_command(made):
    from pneumonia_kit.core import file_sha256
    root, pyz, r = made
    assert r.returncode == 0, r.stderr
    assert file_sha256(pyz) in r.stdout and 'python3 board.pyz IMAGE' in r.stdout
    with zipfile.ZipFile(pyz) as z: names = set(z.namelist())
    assert {'__main__.py', 'BUNDLE.json', 'model/model.onnx', 'model/anchors.npy', 'model/board.json',
            'model/MODEL_CARD.md',            'pneumonia_kit/boxes.py', 'pneumonia_kit/board.py', 'pneumonia_kit/runtime.py',
            'pneumonia_kit/image.py', 'pneumonia_kit/csvio.py'} <= names
    assert not any('torch' in n or n.endswith(('train.py', 'cli.py', 'model.py')) for n in names)


def test_runs_with_numpy_pydicom_opencv_only(made):
    "The bundle's submission equals the one `python -m pneumonia_kit.board` writes from the folder; OpenCV by default"
    root, pyz, _ = made
    py, env = board_python(root)
    r = run([*py, pyz, root/'images', '--out', root/'sub.csv', '--threads', '2'], root, env)
    assert r.returncode == 0, r.stderr
    assert '3 images, 0 failed' in r.stdout and '(opencv, 2 threads)' in r.stdout
    ref = run([sys.executable, '-m', 'pneumonia_kit.board', root/'model', root/'images', '--out', root/'ref.csv'], root)
    assert ref.returncode == 0, ref.stderr
    assert (root/'sub.csv').read_text() == (root/'ref.csv').read_text()
    rows = list(csv.DictReader((root/'sub.csv').open()))
    assert [row['patientId'] for row in rows] == ['p0', 'p1', 'p2']


def test_board_python_is_strict(made):
    "The simulated board really refuses what Debian's three packages do not bring (so the test above means something)"
    root, _, _ = made
    py, env = board_python(root)
    for mod in ('torch', 'pandas', 'PIL', 'onnxruntime', 'tqdm', 'fastcore'):
        r = run([*py, '-c', f'import {mod}'], root, env)
        assert r.returncode != 0 and 'ModuleNotFoundError' in r.stderr, mod
    assert run([*py, '-c', 'import numpy, pydicom, cv2'], root, env).returncode == 0


def test_version_help_and_temp_folder(made, tmp_path):
    from pneumonia_kit.core import file_sha256
    root, pyz, _ = made
    py, env = board_python(root)
    r = run([*py, pyz, '--version'], root, env)
    assert r.returncode == 0 and r.stdout.startswith('board.pyz: pneumonia_kit ')
    assert r.stdout.split()[-1] == file_sha256(pyz)
    r = run([*py, pyz, '--help'], root, env)
    assert r.returncode == 0 and 'usage: board.pyz' in r.stdout and '--threads' in r.stdout
    assert 'MODEL_DIR' not in r.stdout
    one_line(run([*py, pyz], root, env), 'board.pyz: error:', 'IMAGE')   # no images: usage error, one line
    env['TMPDIR'] = str(tmp_path)
    r = run([*py, pyz, root/'images'/'p0.dcm', '--out', tmp_path/'one.csv'], root, env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['one.csv']   # the model's private folder is gone
    # an error inside the run, once the model is extracted
    one_line(run([*py, pyz, root/'images', '--int8', '--out', tmp_path/'x.csv'], root, env), 'no model_int8.onnx')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['one.csv']


def test_folder_failing_its_checks(made, tmp_path):
    root = made[0]
    for name, meta, words in [('fv2', dict(format_version=2), ('fv2/board.json', 'format_version is 2')),
                              ('abs', dict(model_file='/etc/passwd'), ('model_file must be a file name inside',)),
                              ('misfit', dict(num_anchors=99), ('board.json says 99 anchors',))]:
        d = _model_dir(tmp_path/name, **meta)
        one_line(run([*CLI, 'bundle', d, '--out', tmp_path/f'{name}.pyz'], root),
                 'pneumonia-kit bundle: error:', *words)
        assert not (tmp_path/f'{name}.pyz').exists()
    one_line(run([*CLI, 'bundle', tmp_path/'nowhere', '--out', tmp_path/'n.pyz'], root), 'board model folder not found')


@pytest.mark.parametrize('missing,package', [('cv2', 'python3-opencv'), ('pydicom', 'python3-pydicom'),
                                             ('numpy', 'python3-numpy')])
def test_python_without_a_needed_module(made, missing, package):
    root, pyz, _ = made
    py, env = board_python(root, [m for m in DEBIAN if m != missing], tag=f'no_{missing}')
    line = one_line(run([*py, pyz, root/'images', '--out', root/f'no_{missing}.csv'], root, env),
                    f'board.pyz: error: needs the Python module {missing}', f'apt install {package}')
    assert not (root/f'no_{missing}.csv').exists(), line


def test_truncated_or_edited(made, tmp_path):
    root, pyz, _ = made
    py, env = board_python(root)
    data = pyz.read_bytes()
    for n in (len(data) - 10, len(data) // 2, 300):   # a copy cut short, anywhere: Python's own one line
        (tmp_path/'cut.pyz').write_bytes(data[:n])
        one_line(run([*py, tmp_path/'cut.pyz', root/'images'], root, env),
                 'SyntaxError: encoding problem: truncated_or_damaged_bundle.copy_it_again', rc=1)
    onnx = (root/'model'/'model.onnx').read_bytes()
    at = data.index(onnx) + len(onnx) // 2   # a byte in the middle of the stored model
    (tmp_path/'flip.pyz').write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:])
    for args in (['--version'], [root/'images', '--out', tmp_path/'f.csv']):
        one_line(run([*py, tmp_path/'flip.pyz', *args], root, env),
                 'flip.pyz: error: damaged bundle (model/model.onnx is corrupt)', 'copy it again')
    # an edited module, the zip itself consistent: only the manifest's SHA-256 tells
    with zipfile.ZipFile(pyz) as z, zipfile.ZipFile(tmp_path/'edited.pyz', 'w') as w:
        for i in z.infolist():
            b = z.read(i.filename)
            w.writestr(i, b + b'# edited\n' if i.filename == 'pneumonia_kit/post.py' else b)
    one_line(run([*py, tmp_path/'edited.pyz', root/'images', '--out', tmp_path/'e.csv'], root, env),
             'damaged bundle (pneumonia_kit/post.py does not match its SHA-256)')
    assert not (tmp_path/'f.csv').exists() and not (tmp_path/'e.csv').exists()


def test_pneumonia_kit_from_elsewhere_is_refused(made, tmp_path):
    "A `pneumonia_kit` found before the bundle's own (a meta-path hook) is refused, not run"
    root, pyz, _ = made
    site = tmp_path/'site'; site.mkdir()
    (site/'sitecustomize.py').write_text(textwrap.dedent(f'''
        import sys, importlib.machinery
        class First:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'pneumonia_kit':
                    return importlib.machinery.PathFinder.find_spec(name, path or [{_PKG_ROOT!r}])
        sys.meta_path.insert(0, First())'''))
    r = run([sys.executable, pyz, '--version'], root, dict(os.environ, PYTHONPATH=str(site)))
    one_line(r, 'not from this bundle')


def _start_batch(made, tmp_path, ignore_hup=False):
    "Start the bundle on 300 images (1 thread); (process, its stderr so far, its reader, the temp folder) once it runs"
    import signal, threading, cv2
    from pneumonia_kit.dicom import write_jpeg_dicom
    root, pyz, _ = made
    many = tmp_path/'many'
    img = cv2.GaussianBlur(np.random.default_rng(3).uniform(0, 255, (1024, 1024)).astype(np.float32), (0, 0), 3)
    write_jpeg_dicom(many/'x000.dcm', img.astype(np.uint8), 'x000')
    for i in range(1, 300): (many/f'x{i:03d}.dcm').write_bytes((many/'x000.dcm').read_bytes())
    tmpdir = tmp_path/'tmp'; tmpdir.mkdir()
    py, env = board_python(root)   # no tqdm there: the predictor counts images on stderr ("1/300\r")
    hup = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if ignore_hup else None   # what `nohup` does
    p = subprocess.Popen([*py, str(pyz), str(many), '--out', str(tmp_path/'sub.csv'), '--threads', '1'], cwd=root,
                         env=dict(env, TMPDIR=str(tmpdir)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=hup)
    err = bytearray()
    def read(): [err.extend(b) for b in iter(lambda: p.stderr.read1(256), b'')]
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    t0 = time.time()
    while b'/300' not in err and p.poll() is None and time.time() - t0 < 120: time.sleep(0.01)
    assert p.poll() is None and any(tmpdir.iterdir()), f'the batch was not seen running: {bytes(err)[-500:]}'
    return p, err, reader, tmpdir


def _done(err) -> int:
    "images the predictor has counted so far"
    return max([int(m) for m in re.findall(rb'(\d+)/300', bytes(err))] or [0])


def test_sigterm_removes_the_model_folder(made, tmp_path):
    "SIGTERM in the middle of a batch: exit 143 (128 + 15), one line, no submission written, the model's temp folder gone"
    import signal
    p, err, reader, tmpdir = _start_batch(made, tmp_path)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60); reader.join(timeout=10)
    text = err.decode(errors='replace')
    assert p.returncode == 143 and 'board.pyz: interrupted by SIGTERM' in text, (p.returncode, text[-2000:])
    assert 'Traceback' not in text and '300/300' not in text
    assert list(tmpdir.iterdir()) == [] and not (tmp_path/'sub.csv').exists()


def test_nohup_keeps_the_batch_running(made, tmp_path):
    """Started as `nohup` starts it (SIGHUP ignored), the batch goes on after a SIGHUP (the SSH session closed): the bundle
    once set its own SIGHUP handler over the ignored one and stopped (exit 130). SIGTERM still stops it cleanly"""
    import signal
    p, err, reader, tmpdir = _start_batch(made, tmp_path, ignore_hup=True)
    p.send_signal(signal.SIGHUP)
    before, t0 = _done(err), time.time()
    while _done(err) < before + 3 and p.poll() is None and time.time() - t0 < 60: time.sleep(0.01)
    assert p.poll() is None and _done(err) >= before + 3, (p.returncode, bytes(err)[-500:])
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60); reader.join(timeout=10)
    assert p.returncode == 143 and list(tmpdir.iterdir()) == [], (p.returncode, bytes(err)[-500:])


def test_outputs_never_replace_the_bundle_or_the_model(made, tmp_path):
    "`--out` naming the running bundle, a PNG/JSON named like it, `bundle --out` naming a model file: one line, untouched"
    import shutil
    from pneumonia_kit.core import file_sha256
    root, pyz, _ = made
    py, env = board_python(root)
    sha = file_sha256(pyz)
    one_line(run([*py, pyz, root/'images', '--out', pyz], root, env), 'board.pyz: is one of the inputs')
    one_line(run([*py, 'board.pyz', root/'images', '--out', 'board.pyz'], root, env), 'board.pyz: is one of the inputs')
    assert file_sha256(pyz) == sha
    named = tmp_path/'p0.json'; shutil.copyfile(pyz, named)   # a bundle named like image p0's JSON
    line = one_line(run([*py, named, root/'images', '--out', tmp_path/'sub.csv', '--json-dir', tmp_path], root, env),
                    'p0.json: error:', 'p0.json: is one of the inputs', '--json-dir')
    assert file_sha256(named) == sha and not (tmp_path/'sub.csv').exists(), line
    for victim in ('model.onnx', 'board.json'):
        before = (root/'model'/victim).read_bytes()
        one_line(run([*CLI, 'bundle', root/'model', '--out', root/'model'/victim], root),
                 'pneumonia-kit bundle: error:', f'{victim}: is one of the inputs')
        assert (root/'model'/victim).read_bytes() == before


@pytest.mark.parametrize('option', ['--out', '--png-dir', '--json-dir'])
def test_empty_path_options(made, tmp_path, option):
    "An empty path would mean the current folder: refused by the parser (`core.ArgParser`), naming the option"
    root, pyz, _ = made
    py, env = board_python(root)
    args = [root/'images', option, ''] + (['--out', tmp_path/'sub.csv'] if option != '--out' else [])
    one_line(run([*py, pyz, *args], tmp_path, env), f'board.pyz: error: argument {option}: empty')
    assert list(tmp_path.iterdir()) == []
    if option == '--out':
        one_line(run([*CLI, 'bundle', root/'model', '--out', ''], tmp_path), 'pneumonia-kit bundle: error: argument --out: empty')
        assert list(tmp_path.iterdir()) == []


def _with_manifest(pyz, dst, data: bytes):
    "A copy of bundle `pyz` whose manifest is `data`: a consistent zip (every CRC right), as a hand edit leaves it"
    with zipfile.ZipFile(pyz) as z, open(dst, 'wb') as f:
        f.write(pyz.read_bytes()[:pyz.read_bytes().index(b'PK\x03\x04')])   # the bundle's first lines
        with zipfile.ZipFile(f, 'w') as w:
            for i in z.infolist(): w.writestr(i, data if i.filename == 'BUNDLE.json' else z.read(i.filename))
    return dst


@pytest.mark.parametrize('edit', ['no_model', 'model_list', 'no_version', 'deep'])
def test_edited_manifest(made, tmp_path, edit):
    "A manifest without the keys or types `make_bundle` writes: one line for --version and for a run, never a traceback"
    import json
    root, pyz, _ = made
    with zipfile.ZipFile(pyz) as z: man = json.loads(z.read('BUNDLE.json'))
    if edit == 'no_model': man.pop('model')
    elif edit == 'model_list': man['model'] = [1]
    elif edit == 'no_version': man.pop('pneumonia_kit_version')
    data = b'[' * 100_000 + b']' * 100_000 if edit == 'deep' else json.dumps(man).encode()
    bad = _with_manifest(pyz, tmp_path/'edited.pyz', data)
    py, env = board_python(root)
    says = 'BUNDLE.json is nested too deep' if edit == 'deep' else 'BUNDLE.json is not a bundle manifest of format 1: '
    one_line(run([*py, bad, '--version'], root, env), 'edited.pyz: error:', 'edited.pyz: damaged bundle', says)
    one_line(run([*py, bad, root/'images', '--out', tmp_path/'sub.csv'], root, env), 'damaged bundle', says)
    assert not (tmp_path/'sub.csv').exists()


def test_manifest_bomb(made, tmp_path):
    "A manifest deflated from 600 MB into 600 KB: refused from its declared size, the run's memory stays small"
    from test_hostile import run_measured   # the launcher that reports a command's own peak memory
    root, pyz, _ = made
    bomb = tmp_path/'bomb.pyz'
    with zipfile.ZipFile(pyz) as z, open(bomb, 'wb') as f:
        f.write(pyz.read_bytes()[:pyz.read_bytes().index(b'PK\x03\x04')])
        with zipfile.ZipFile(f, 'w') as w:
            for i in z.infolist():
                if i.filename != 'BUNDLE.json': w.writestr(i, z.read(i.filename)); continue
                with w.open(i, 'w', force_zip64=True) as m:   # valid JSON: the manifest, then 600 MB of blanks
                    m.write(z.read(i.filename))
                    for _ in range(600): m.write(b' ' * (1 << 20))
    assert bomb.stat().st_size < 2 << 20
    py, env = board_python(root)
    for args in (['--version'], [root/'images', '--out', tmp_path/'sub.csv']):
        r = run_measured([*py, str(bomb), *map(str, args)], env)
        lines = r['stderr'].strip().splitlines()
        assert r['rc'] == 2 and len(lines) == 1 and 'Traceback' not in r['stderr'], r
        assert 'damaged bundle (BUNDLE.json inflates to 629,' in lines[0] and 'at most 1,048,576' in lines[0], lines
        assert r['peak_mb'] < 300, r['peak_mb']
    assert not (tmp_path/'sub.csv').exists()
