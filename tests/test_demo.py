"""The demo's machinery on its first stages (papermill runs into executed notebooks, skip-if-done, the report), and
(slow) same seed, same figures: the quick demo twice, the second time beside a CPU-bound busy process, gives the same
accuracy figures to every digit. The whole demo runs in the slow newcomer test."""
import csv, json, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


def demo(*args, cwd):
    return subprocess.run(['pneumonia-kit', 'demo', '--quick', *args], capture_output=True, text=True, cwd=cwd)


def test_demo_first_stages(tmp_path):
    r = demo('--stages', 'data,eda', '--out', 'out', '--data', 'twin', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path/'out'
    for stage in ('data', 'eda'):
        nb = json.loads((out/f'{stage}.ipynb').read_text())
        assert any(c.get('outputs') for c in nb['cells'] if c['cell_type'] == 'code'), stage   # executed, with outputs
    assert len(list((out/'eda').glob('*.png'))) >= 5
    summary = json.loads((out/'data'/'summary.json').read_text())
    assert summary['n_train'] == 64 and summary['n_cached']['train'] == 64
    assert summary['synthetic_twin']['difficulty'] == 'easy'
    report = (out/'report.html').read_text()
    assert 'eda/' in report and 'Key figures' in report
    r = demo('--stages', 'data,eda', '--out', 'out', '--data', 'twin', cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count('skipped') == 2, r.stdout
    r = demo('--stages', 'nope', '--out', 'out', cwd=tmp_path)
    assert r.returncode == 2 and "argument --stages: 'nope': choose from data" in r.stderr and 'Traceback' not in r.stderr


ACCURACY = ('training', 'validation', 'scores', 'comparisons', 'int8_gate')   # demo summary keys that must not move


def _figures(out: Path) -> dict:
    "Everything accuracy-related a run wrote: the summary's figures, every training loss, the out-of-fold sweep"
    s = json.loads((out/'summary.json').read_text())
    figs = {k: s[k] for k in ACCURACY}
    for t in (s['training'],): t.pop('minutes', None)
    for sc in figs['scores'].values(): sc.pop('submission', None)
    with open(out/'run'/'log.csv') as f:
        figs['log'] = [{k: v for k, v in row.items() if k not in ('epoch_seconds', 'train_images_per_s')} for row in csv.DictReader(f)]
    figs['sweep'] = (out/'sweep'/'threshold_sweep.csv').read_text()
    return figs


@pytest.mark.slow
def test_same_figures_idle_and_busy(tmp_path):
    sys.path.insert(0, str(ROOT/'scripts'))
    from readme_figures import accuracy_lines
    r = demo('--out', 'a', '--data', 'twin_a', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass'])   # one CPU-bound job beside the second run
    try:
        t0 = time.time(); r = demo('--out', 'b', '--data', 'twin_b', cwd=tmp_path); busy_s = time.time() - t0
    finally: busy.kill(); busy.wait()
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _figures(tmp_path/'a'), _figures(tmp_path/'b')
    assert a['training']['stopped'] == 'completed' and a['scores'], a
    for k in a: assert a[k] == b[k], (k, busy_s, a[k], b[k])       # every figure, all digits
    sa, sb = (json.loads((tmp_path/x/'summary.json').read_text()) for x in 'ab')
    assert accuracy_lines(sa) == accuracy_lines(sb)                # ... and README's lines, to the printed digit
    assert sa['config']['threads'] == 2 and sa['config']['deterministic'] is True
    # waiting threads sleep (OMP_WAIT_POLICY=PASSIVE): beside the busy process the training costs about the CPU seconds it
    # costs idle (measured 13.0 vs 11.5); threads that spin while they wait cost 190 (and 191 s of wall time)
    cpu = [s['stage_cpu_seconds']['train'] for s in (sa, sb)]
    assert cpu[1] < 2 * cpu[0], (cpu, busy_s)
