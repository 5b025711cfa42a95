"""Every command on the hostile-input corpus (`hostile_corpus.py`), as a user runs it: a real process each.

For every case: the exit status; for a refusal (2) exactly one line on stderr, `PROG: error: ...`, naming the file
or option; never a traceback; for a batch, the complete submission, the good images predicted, the bad ones listed in
`<out>.failed.csv` with empty rows and exit status 3; peak memory (the process's own maximum resident set, from
`wait4` in a small launcher process) within the bound for the decompression bombs. Then Ctrl-C in both batch commands (exit 130, previous output
untouched) and `kill -9` of `cache` with two workers (the workers die with it; the next run cleans up and finishes).
The cases run four at a time; the whole file takes about a minute on two idle cores (71 s of CPU in the cases, a
quarter of it the few that import torch; 2.3 min with the machine loaded four times over).
"""
import csv, dataclasses, os, re, shlex, shutil, signal, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile_corpus import BAD_DICOMS, CASES, GOOD, make_batch, make_corpus  # noqa: E402

ROOT_USER = os.geteuid() == 0
_SCRIPT = Path(sys.executable).parent/'pneumonia-kit'   # the console script itself (not a pyenv shim, which writes files of its own)
PROGS = {'pneumonia-kit': [str(_SCRIPT) if _SCRIPT.is_file() else 'pneumonia-kit'], 'board': [sys.executable, '-m', 'pneumonia_kit.board']}
ERROR_PREFIX = {'pneumonia-kit': 'pneumonia-kit ', 'board': 'python3 -m pneumonia_kit.board: error:'}


# HOSTILE_BOARD_PYTHON='COMMAND': the board's cases, and board-predict's as the board's own program, run by that Python
# instead (scripts/loongarch_hostile.sh: the emulated board, Python 3.14 + OpenCV 4.10; not in CI). The board has no
# ONNX Runtime: its cases are left out there.
BOARD_PYTHON = shlex.split(os.environ.get('HOSTILE_BOARD_PYTHON', ''))
if BOARD_PYTHON: PROGS['board'] = BOARD_PYTHON + ['-m', 'pneumonia_kit.board']


def _board_cases(cases) -> list:
    "The cases of the board's program: `board-predict ARGS` becomes `python3 -m pneumonia_kit.board ARGS`"
    out = [dataclasses.replace(c, prog='board', argv=c.argv[1:]) if c.argv[:1] == ['board-predict'] else c for c in cases]
    out = [c for c in out if c.prog == 'board' and 'onnxruntime' not in c.argv]
    cv = subprocess.run(BOARD_PYTHON + ['-c', 'import cv2; print(cv2.__version__)'], capture_output=True, text=True).stdout.strip()
    if cv.startswith('4.'):   # what OpenCV 4 does otherwise than 5: it runs the QDQ int8 model, it drops external data
        new = {'bp_folder_ok_opencv-int8': dict(rc=0, says=('0 failed',), out='{out}/sub.csv', good=GOOD),
               'bp_ext_ok': dict(rc=2, says=(f'weights.bin (ONNX external data), which OpenCV {cv} cannot read',), out=None, good=())}
        out = [dataclasses.replace(c, **new.get(c.name, {})) for c in out]
    return out


RUN_CASES = _board_cases(CASES) if BOARD_PYTHON else CASES


# The commands run the pneumonia_kit that this test imports (a checkout or worktree), not whichever one is installed
_PKG_ROOT = str(Path(__import__('pneumonia_kit').__file__).resolve().parent.parent)


def _env(**extra):
    path = os.pathsep.join([_PKG_ROOT, *filter(None, [os.environ.get('PYTHONPATH')])])
    return dict(os.environ, TQDM_DISABLE='1', PYTHONWARNINGS='ignore::DeprecationWarning', PYTHONPATH=path, **extra)


# A small process between pytest and each command: it forks and execs the command and reports its peak resident memory
# (ru_maxrss from wait4). Forked straight from pytest, a command would inherit pytest's size (hundreds of MB once torch is
# loaded) into its high-water mark, which Linux carries across exec.
LAUNCHER = """
import os, resource, sys
fsize, report, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
pid = os.fork()
if pid == 0:
    try:
        if fsize >= 0: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        os.execvp(argv[0], argv)
    finally: os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(report, 'w') as f: f.write(f'{ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}')
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(argv, env, fsize=None, timeout=240) -> dict:
    "Run `argv`; its exit status, stdout, stderr, seconds, CPU seconds and peak resident memory (MB, its own)"
    # fsize: writes beyond that many bytes fail with EFBIG, as on a full disk (pipes are not files: the messages get through)
    with tempfile.TemporaryDirectory() as d:
        report, t0 = Path(d)/'peak', time.perf_counter()
        p = subprocess.Popen([sys.executable, '-c', LAUNCHER, str(-1 if fsize is None else fsize), str(report), *argv],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try: out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); out, err = p.communicate()
        kb, cpu = map(float, report.read_text().split()) if report.exists() else (float('nan'), float('nan'))
    return dict(rc=p.returncode, stdout=out.decode('utf-8', 'replace'), stderr=err.decode('utf-8', 'replace'),
                seconds=time.perf_counter() - t0, cpu_s=cpu, peak_mb=kb / 1024)


def _fill(s: str, root: Path, out: Path) -> str: return s.replace('{root}', str(root)).replace('{out}', str(out))


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp('hostile'))


@pytest.fixture(scope='module')
def results(corpus):
    "Every case of `RUN_CASES`, four processes at a time: name -> result dict"
    def one(case):
        out = corpus/'out'/case.name; out.mkdir(parents=True)
        argv = PROGS[case.prog] + [_fill(a, corpus, out) for a in case.argv]
        env = _env(**{k: _fill(v, corpus, out) for k, v in case.env.items()})
        return case.name, dict(run_measured(argv, env, case.fsize), out=out, argv=argv)
    only = re.compile(os.environ.get('HOSTILE_ONLY', ''))   # a regex of case names, to rerun a few while working on them
    todo = [c for c in RUN_CASES if not (c.needs_nonroot and ROOT_USER) and only.search(c.name)]
    with ThreadPoolExecutor(4) as ex: return dict(ex.map(one, todo))


_PROGRESS = re.compile(r'\d+%\|.*\|\s*\d+/\d+ \[|^(\r?\d+/\d+)+$')   # a tqdm bar (commands that pass `disable=`
# ignore TQDM_DISABLE), or the board's own counter where tqdm is missing ('1/2\r2/2\n')

def _lines(text): return [l for l in text.splitlines() if l.strip() and not _PROGRESS.search(l)]


@pytest.mark.parametrize('case', RUN_CASES, ids=[c.name for c in RUN_CASES])
def test_case(case, results, corpus):
    if case.needs_nonroot and ROOT_USER: pytest.skip('permissions do not apply to root')
    if case.name not in results: pytest.skip('not in HOSTILE_ONLY')
    r = results[case.name]
    where = f"{' '.join(r['argv'])}\nrc {r['rc']}\nstdout: {r['stdout'][-2000:]}\nstderr: {r['stderr'][-3000:]}"
    assert r['rc'] == case.rc, where
    assert 'Traceback' not in r['stderr'], where
    assert not [l for l in _lines(r['stderr']) if l.startswith(('Corrupt JPEG', 'Premature end of JPEG'))], where   # libjpeg's own
    if case.rc == 2:   # one line, naming what is wrong
        lines = _lines(r['stderr'])
        assert len(lines) == 1, where
        assert len(lines[0]) < 1200, (len(lines[0]), where)   # cut to a readable length
        assert lines[0].startswith(ERROR_PREFIX[case.prog]) and ': error: ' in lines[0], where
        for s in case.says: assert _fill(s, corpus, r['out']) in lines[0], (s, where)
    else:
        for s in case.says: assert _fill(s, corpus, r['out']) in r['stdout'], (s, where)
    if case.max_mb is not None: assert r['peak_mb'] < case.max_mb, (r['peak_mb'], where)
    if case.max_s is not None: assert r['cpu_s'] < case.max_s, (r['cpu_s'], where)
    for f in case.absent: assert not Path(_fill(f, corpus, r['out'])).exists(), (f, where)
    for f in case.files: assert Path(_fill(f, corpus, r['out'])).is_file(), (f, where)
    if case.out:
        sub = Path(_fill(case.out, corpus, r['out']))
        with open(sub, newline='', encoding='utf-8') as f: rows = dict(list(csv.reader(f))[1:])
        for pid in case.good: assert pid in rows, (pid, where)
        failed_csv = sub.with_name(sub.stem + '.failed.csv')
        if case.failed:
            with open(failed_csv, newline='', encoding='utf-8') as f: listed = {row['patientId']: row['error'] for row in csv.DictReader(f)}
            assert sorted(listed) == sorted(case.failed), where
            for pid in case.failed: assert rows[pid] == '', (pid, where)   # a row for Kaggle, empty
            for pid in case.failed: assert BAD_DICOMS.get(pid, case.reason) in listed[pid], (pid, listed[pid])   # and the reason
            err = _lines(r['stderr'])
            for pid in case.failed: assert sum(f'{pid}.dcm' in l for l in err) == 1, (pid, where)   # one line each
        else: assert not failed_csv.exists(), where
        assert not [p for p in sub.parent.iterdir() if p.name.endswith('.tmp')], where   # no temp file left


def test_report(results, capsys):
    "Not a check of its own: peak memory of the bomb cases and the cost of the cases, for the record (shown with `pytest -s`)"
    with capsys.disabled():
        for n in ('show_bomb', 'show_liar', 'show_bomb_raw', 'show_deflate', 'bp_bombs', 'bp_bombs_png', 'bp_clean', 'bp_batch', 'board_batch_opencv', 'cache_mixed',
                  'bp_jp2_padded', 'bp_wide64', 'bp_max16', 'bp_deflate_liar', 'bp_folder_const_shape_onnxruntime', 'sweep_oof_bomb', 'score_many_pairs', 'score_labels_60k'):
            if n in results: print(f"\n  {n}: peak {results[n]['peak_mb']:.0f} MB, {results[n]['seconds']:.1f} s", end='')
        cpu = sorted(((r['cpu_s'], n) for n, r in results.items()), reverse=True)
        print(f"\n  {len(results)} cases: {sum(c for c, _ in cpu):.0f} s CPU in all; most: " + ', '.join(f'{n} {c:.1f} s' for c, n in cpu[:5]))


def test_parser_refusals_skip_torch(results):
    "Refused arguments cost a fraction of what a torch import would (no heavy module is imported before the parser)"
    refusals = [r for n, r in results.items() if r['rc'] == 2 and 'argument --' in r['stderr'] and 'pneumonia-kit' in r['argv'][0]]
    assert refusals and max(r['peak_mb'] for r in refusals) < 250, sorted(r['peak_mb'] for r in refusals)


# ---------------------------------------------------------------- Ctrl-C and kill -9
def _interrupt(argv, png_dir: Path, wait_for: int = 3, sig=signal.SIGINT, then=None):
    """Start `argv`, wait until `wait_for` PNGs are written, send `sig` (then, if given, wait for 3 more PNGs and send
    `then`); (return code, stderr)"""
    # SIGINT back to its default in the child: started from a background job (`pytest ... &` in a script, some CI
    # runners), it would inherit SIG_IGN, Python would install no KeyboardInterrupt handler, and Ctrl-C would do nothing.
    # With `then`, SIGHUP starts ignored, as `nohup` starts a program.
    def child():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if then is not None: signal.signal(signal.SIGHUP, signal.SIG_IGN)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), preexec_fn=child)
    def wait_pngs(n):
        t0 = time.time()
        while time.time() - t0 < 120 and p.poll() is None:
            if png_dir.exists() and sum(1 for _ in png_dir.glob('*.png')) >= n: break
            time.sleep(0.05)
        assert p.poll() is None, f'finished before it could be interrupted: {p.communicate()}'
    wait_pngs(wait_for)
    p.send_signal(sig)
    if then is not None:
        wait_pngs(sum(1 for _ in png_dir.glob('*.png')) + 3)   # still running after `sig`
        p.send_signal(then)
    try: _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired: p.kill(); p.communicate(); raise AssertionError(f'still running 60 s after {sig!r}') from None
    return p.returncode, err


STOPS = {  # how a run is stopped -> (signal, then, exit status, the end of the one line)
    'ctrl_c': (signal.SIGINT, None, 130, 'interrupted'),
    'sigterm': (signal.SIGTERM, None, 143, 'interrupted by SIGTERM'),   # kill, timeout, systemd, a batch scheduler
    'sighup': (signal.SIGHUP, None, 129, 'interrupted by SIGHUP'),      # the terminal or SSH session closed
    'nohup': (signal.SIGHUP, signal.SIGTERM, 143, 'interrupted by SIGTERM'),   # SIGHUP ignored at start: it goes on
}


@pytest.mark.parametrize('stop', list(STOPS))
@pytest.mark.parametrize('prog', ['pneumonia-kit', 'board'])
def test_stop_leaves_previous_output(corpus, tmp_path, prog, stop):
    "Ctrl-C, SIGTERM or SIGHUP mid-batch: one line, 128 + the signal, the previous --out untouched, no temp file"
    sig, then, code, end = STOPS[stop]
    many = tmp_path/'many'; many.mkdir()
    for i in range(3000): (many/f'id{i:04d}.dcm').symlink_to(corpus/'dicom'/'good1.dcm')   # enough work to interrupt
    sub = tmp_path/'sub.csv'; sub.write_text('patientId,PredictionString\nprevious,\n')
    argv = PROGS[prog] + (['board-predict'] if prog == 'pneumonia-kit' else []) + \
        [str(corpus/'board'/'ok'), str(many), '--out', str(sub), '--png-dir', str(tmp_path/'png')]
    rc, err = _interrupt(argv, tmp_path/'png', sig=sig, then=then)
    assert rc == code, (rc, err[-2000:])
    assert 'Traceback' not in err and _lines(err)[-1].endswith(f': {end}'), err
    assert sub.read_text() == 'patientId,PredictionString\nprevious,\n'   # untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ['sub.csv']   # no failed.csv, no temp file


def _children(pid: int) -> list:
    out = []
    for s in Path('/proc').glob('[0-9]*/stat'):
        try: fields = s.read_text().rsplit(')', 1)[1].split()
        except OSError: continue
        if int(fields[1]) == pid: out.append(int(s.parent.name))
    return out


def _alive(pid: int) -> bool:
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False


def _cache_data(corpus, tmp_path, n: int):
    "A Kaggle-layout folder: the good DICOMs and `n` copies, labelled; (the folder, where its 32-px cache goes)"
    data = tmp_path/'data'
    make_batch(data/'stage_2_train_images', corpus/'dicom', GOOD)
    imgs = data/'stage_2_train_images'
    for i in range(n): shutil.copyfile(imgs/'good1.dcm', imgs/f'id{i:03d}.dcm')
    (data/'stage_2_train_labels.csv').write_text('patientId,x,y,width,height,Target\n' + ''.join(f'{p.stem},,,,,0\n' for p in imgs.iterdir()))
    return data, data/'cache'/'train_32'


def _start_cache(data, cache, n_npy: int, **popen):
    "Start `cache --size 32 --workers 2`; (the process, its workers' pids) once both run and `n_npy` files are written"
    p = subprocess.Popen(PROGS['pneumonia-kit'] + ['cache', str(data), '--size', '32', '--workers', '2'], stdout=subprocess.DEVNULL,
                         env=_env(), **popen)
    t0, kids = time.time(), []
    while time.time() - t0 < 120 and p.poll() is None:
        kids = _children(p.pid)
        if len(kids) >= 2 and cache.exists() and sum(1 for _ in cache.glob('*.npy')) >= n_npy: break
        time.sleep(0.02)
    assert p.poll() is None and len(kids) >= 2, 'cache finished before it could be stopped'
    return p, kids


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='needs /proc')
def test_kill_cache_workers_die_and_next_run_cleans(corpus, tmp_path):
    "kill -9 of `cache --workers 2`: its workers exit within seconds; the next run removes stale temp files and finishes"
    from pneumonia_kit.core import _HOST
    data, cache = _cache_data(corpus, tmp_path, 200)
    p, kids = _start_cache(data, cache, 1, stderr=subprocess.DEVNULL)
    p.kill(); p.wait()
    t1 = time.time()
    while any(map(_alive, kids)) and time.time() - t1 < 10: time.sleep(0.1)
    assert not any(map(_alive, kids)), f'workers still running {time.time() - t1:.1f} s after their parent was killed'
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True).stdout.strip()
    stale = cache/f'.id000.npy.abcdefgh.{_HOST}-{dead}.tmp'; stale.write_bytes(b'half a file')   # what a killed write leaves
    r = subprocess.run(PROGS['pneumonia-kit'] + ['cache', str(data), '--size', '32', '--workers', '1'], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and not list(cache.glob('.*.tmp'))
    assert len(list(cache.glob('*.npy'))) == 202 and '202 images, 0 failed' in r.stdout


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='needs /proc')
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGHUP], ids=['sigterm', 'sighup'])
def test_stop_cache_group(corpus, tmp_path, sig):
    """SIGTERM or SIGHUP to the whole process group of `cache --workers 2` (systemd, a scheduler, a closed terminal): the
    parent's one line, 128 + the signal, no temp file left (workers once died mid-write), no traceback, no worker left"""
    data, cache = _cache_data(corpus, tmp_path, 800)
    p, kids = _start_cache(data, cache, 20, stderr=subprocess.PIPE, text=True, start_new_session=True)
    os.killpg(p.pid, sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig and 'Traceback' not in err, (p.returncode, err[-2000:])
    assert _lines(err) == [f'pneumonia-kit cache: interrupted by {sig.name}'], err[-2000:]
    assert not [f.name for f in cache.iterdir() if f.name.endswith('.tmp')]
    t1 = time.time()
    while any(map(_alive, kids)) and time.time() - t1 < 10: time.sleep(0.1)
    assert not any(map(_alive, kids)), 'workers still running after their parent stopped'


@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='needs /proc')
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['sigterm', 'ctrl_c'])
def test_stop_train_group(tiny_twin, tmp_path, sig):
    """SIGTERM or Ctrl-C to the whole process group of `train --num-workers 2` (systemd, a batch scheduler, a terminal):
    the trainer's one line, exit 143 or 130, no temp file, no worker left. The DataLoader workers SIGTERM killed once
    added 'DataLoader worker (pid N) is killed by signal: Terminated' after it, or left the trainer waiting for one
    forever (1 run in 3 here). After SIGTERM, `--resume` finishes the run"""
    data, run = tmp_path/'data', tmp_path/'run'
    shutil.copytree(tiny_twin, data)
    argv = PROGS['pneumonia-kit'] + ['train', str(data), '--preset', 'cpu_demo', '--epochs', '30', '--num-workers', '2', '--out', str(run)]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # Ctrl-C works in a background job too
    t0, kids = time.time(), []
    while time.time() - t0 < 300 and p.poll() is None:
        kids = _children(p.pid) if any((run/'checkpoints').glob('epoch_*.pt')) else []
        if len(kids) >= 2: break
        time.sleep(0.05)
    assert p.poll() is None and len(kids) >= 2, f'no epoch with its workers seen running: {p.communicate()[1][-2000:]}'
    os.killpg(p.pid, sig)
    try: _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.system(f'ps -o pid,ppid,stat,wchan:32,cmd -g {p.pid} >&2')
        os.killpg(p.pid, signal.SIGKILL); p.communicate(); raise AssertionError(f'still running 60 s after {sig.name}') from None
    lines = [l for l in _lines(err) if not l.startswith('epoch ')]
    end = ' by SIGTERM' if sig == signal.SIGTERM else ''
    assert p.returncode == 128 + sig and lines == [f'pneumonia-kit train: interrupted{end}'], (p.returncode, err[-3000:])
    assert not [f for f in run.rglob('*') if f.name.endswith('.tmp')]
    t1 = time.time()
    while any(map(_alive, kids)) and time.time() - t1 < 15: time.sleep(0.1)
    assert not any(map(_alive, kids)), 'DataLoader workers still running after the trainer stopped'
    if sig != signal.SIGTERM: return
    done = len(list((run/'checkpoints').glob('epoch_*.pt')))
    r = subprocess.run(PROGS['pneumonia-kit'] + ['train', str(data), '--preset', 'cpu_demo', '--epochs', str(done + 1), '--out', str(run),
                        '--resume'], capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0 and f'{done + 1}/{done + 1} epochs (completed)' in r.stdout, (r.returncode, r.stdout[-1000:], r.stderr[-1000:])


def test_predict_batch(corpus, tmp_path):
    "The PyTorch batch command on the batch of every bad DICOM: the good images predicted, the rest listed, exit 3"
    from pneumonia_kit.core import cfg2dict
    from pneumonia_kit.model import MODEL_PRESETS, create_model
    from pneumonia_kit.runs import save_checkpoint
    cfg = MODEL_PRESETS['tiny']
    ck = save_checkpoint(tmp_path/'run'/'checkpoints'/'epoch_001.pt', create_model(cfg, pretrained=False), dict(model=cfg2dict(cfg), train={}, data={}), 1, {}, [])
    sub = tmp_path/'sub.csv'
    r = run_measured(PROGS['pneumonia-kit'] + ['predict', str(ck), '--images', str(corpus/'batch'), '--out', str(sub), '--device', 'cpu'], _env())
    assert r['rc'] == 3 and 'Traceback' not in r['stderr'], r
    assert '14 images, 12 failed (listed in' in r['stdout'], r['stdout']
    print(f"\n  predict_batch: peak {r['peak_mb']:.0f} MB, {r['seconds']:.1f} s", end='')
    assert r['peak_mb'] < 1500, r['peak_mb']   # the three bombs included; torch and the model are most of it (~900 MB with good images only)
    with open(sub, newline='') as f: rows = dict(list(csv.reader(f))[1:])
    with open(tmp_path/'sub.failed.csv', newline='') as f: listed = {row['patientId']: row['error'] for row in csv.DictReader(f)}
    assert sorted(rows) == sorted([*GOOD, *BAD_DICOMS]) and sorted(listed) == sorted(BAD_DICOMS), (rows, listed)
    for pid, msg in BAD_DICOMS.items(): assert rows[pid] == '' and msg in listed[pid], (pid, listed[pid])


def test_unreadable_dicom_message(corpus, monkeypatch):
    "No read permission, simulated so that it is checked as root too (CI): 'cannot read it (Permission denied)', not 'broken header'"
    import builtins, errno
    from pneumonia_kit.core import PneumoniaKitError
    from pneumonia_kit.dicom import read_xray
    target, real_open = corpus/'dicom'/'good1.dcm', builtins.open
    def refusing_open(f, *a, **k):
        if isinstance(f, (str, os.PathLike)) and Path(f) == target: raise PermissionError(errno.EACCES, 'Permission denied', str(f))
        return real_open(f, *a, **k)
    monkeypatch.setattr(builtins, 'open', refusing_open)
    with pytest.raises(PneumoniaKitError, match=r'good1\.dcm: cannot read it \(Permission denied\)'): read_xray(target)


def test_predict_nan_outputs(corpus, tmp_path):
    "PyTorch `predict` with a network that emits NaN class logits: each image fails (exit 3, listed), never an empty row with exit 0"
    import torch
    from pneumonia_kit.core import cfg2dict
    from pneumonia_kit.model import MODEL_PRESETS, create_model
    from pneumonia_kit.runs import save_checkpoint
    cfg, model = MODEL_PRESETS['tiny'], create_model(MODEL_PRESETS['tiny'], pretrained=False)
    with torch.no_grad(): model.head.classification_head.cls_logits.bias.fill_(float('nan'))
    ck = save_checkpoint(tmp_path/'run'/'checkpoints'/'epoch_001.pt', model, dict(model=cfg2dict(cfg), train={}, data={}), 1, {}, [])
    sub = tmp_path/'sub.csv'
    r = run_measured(PROGS['pneumonia-kit'] + ['predict', str(ck), '--images', str(corpus/'goods'), '--out', str(sub), '--device', 'cpu'], _env())
    assert r['rc'] == 3 and 'Traceback' not in r['stderr'], r
    with open(tmp_path/'sub.failed.csv', newline='') as f: listed = {row['patientId']: row['error'] for row in csv.DictReader(f)}
    assert sorted(listed) == sorted(GOOD), listed
    for msg in listed.values(): assert 'the network output cls_scores has' in msg and 'NaN' in msg, msg
    with open(sub, newline='') as f: assert dict(list(csv.reader(f))[1:]) == {g: '' for g in GOOD}


def _run_unwritable_stdout(argv, where):
    "Run `argv` with stdout on a full disk or a pipe nobody reads: (exit status, stderr lines, the reason's words)"
    if where == 'full':
        if not Path('/dev/full').exists(): pytest.skip('no /dev/full')
        with open('/dev/full', 'w') as full:
            p = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, env=_env(), timeout=120)
    else:
        r, w = os.pipe(); os.close(r)   # nobody reads: the write gets EPIPE (SIGPIPE is ignored by Python)
        p = subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, env=_env(), timeout=120); os.close(w)
    return p.returncode, _lines(p.stderr.decode()), 'No space left on device' if where == 'full' else 'Broken pipe'


@pytest.mark.parametrize('where', ['full', 'closed_pipe'])
def test_stdout_cannot_be_written(corpus, tmp_path, where):
    "The summary cannot be printed (stdout on a full disk, or a reader that left): one line naming stdout, exit 2"
    argv = PROGS['pneumonia-kit'] + ['board-predict', str(corpus/'board'/'ok'), str(corpus/'goods'), '--out', str(tmp_path/'sub.csv')]
    rc, err, reason = _run_unwritable_stdout(argv, where)
    assert (rc, err) == (2, [f'pneumonia-kit board-predict: error: stdout: cannot write to it ({reason})']), (rc, err)
    assert len((tmp_path/'sub.csv').read_text().splitlines()) == 3   # the submission itself was written first


@pytest.mark.parametrize('where', ['full', 'closed_pipe'])
@pytest.mark.parametrize('args', [('pneumonia-kit', '--help', 'pneumonia-kit'), ('pneumonia-kit', '--version', 'pneumonia-kit'),
                                  ('pneumonia-kit', 'train --help', 'pneumonia-kit train'),
                                  ('board', '--help', 'python3 -m pneumonia_kit.board')], ids=['help', 'version', 'train-help', 'board-help'])
def test_help_cannot_be_written(args, where):
    "argparse drops a failed write of its help or version (exit 0, silent): ours says so in one line, exit 2"
    prog, words, name = args
    rc, err, reason = _run_unwritable_stdout(PROGS[prog] + words.split(), where)
    assert (rc, err) == (2, [f'{name}: error: stdout: cannot write to it ({reason})']), (rc, err)
