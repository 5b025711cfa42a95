"""The demo's machinery on its first stages (papermill runs into executed notebooks, skip-if-done, the report).
The whole demo runs in the slow newcomer test."""
import json, subprocess


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
    assert summary['n_train'] == 48 and summary['n_cached']['train'] == 48
    report = (out/'report.html').read_text()
    assert 'eda/' in report and 'Key figures' in report
    r = demo('--stages', 'data,eda', '--out', 'out', '--data', 'twin', cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count('skipped') == 2, r.stdout
    r = demo('--stages', 'nope', '--out', 'out', cwd=tmp_path)
    assert r.returncode == 2 and "argument --stages: 'nope': choose from data" in r.stderr and 'Traceback' not in r.stderr
