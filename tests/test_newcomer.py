"""A newcomer's path: clone the repo, then follow README.md's three commands literally (set-up, main job, tests).

Slow (several minutes): runs with `pytest --slow` or PNEUMONIA_KIT_SLOW=1, as CI does. The set-up command runs in a
virtual environment that sees this machine's packages (so nothing is downloaded again) but installs the clone itself.
The main job gets its reduced size option (`--quick`). The test command then runs in the clone as README gives it, on
a part of the suite: it collects every test (pytest exits non-zero if one fails to import) and runs those of the
command line and the package's layout, which use the clone's own install. The whole suite is not run a second time:
CI runs README's test command itself on a fresh clone in a fresh venv, and the clone's run repeated it (825 of CI's
1,748 s of tests on 2 cores, 2026-12-06). No test reads what the demo leaves in outputs/ or data/."""
import os, re, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent


def readme_commands():
    "The three commands of README's quick start, in order"
    text = (REPO/'README.md').read_text()
    block = re.search(r'## Quick start.*?```bash\n(.*?)```', text, re.S).group(1)
    return [l.split('#')[0].strip() for l in block.splitlines() if l.split('#')[0].strip()]


def test_readme_has_three_commands():
    cmds = readme_commands()
    assert len(cmds) == 3, cmds
    assert cmds[0].startswith('pip install') and 'constraints.txt' in cmds[0]
    assert cmds[1] == 'pneumonia-kit demo' and cmds[2] == 'pytest'


@pytest.mark.slow
def test_newcomer(tmp_path):
    setup, main_job, tests = readme_commands()
    clone = tmp_path/'repo'
    subprocess.run(['git', 'clone', '-q', str(REPO), str(clone)], check=True)
    venv = tmp_path/'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ('PNEUMONIA_KIT_SLOW', 'PYTHONPATH')}
    env.update(PATH=f"{venv/'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv), MPLBACKEND='Agg')

    def sh(cmd, timeout):
        r = subprocess.run(cmd, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f'{cmd!r} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
        return r.stdout

    sh(setup, 900)
    where = subprocess.run([str(venv/'bin'/'python'), '-c', 'import pneumonia_kit; print(pneumonia_kit.__file__)'],
                           cwd=tmp_path, env=env, capture_output=True, text=True).stdout
    assert str(clone) in where, where   # the clone is what got installed
    out = sh(main_job + ' --quick', 1500)
    assert 'Demo finished' in out, out[-2000:]
    demo = clone/'outputs'/'demo'
    for stage in ('data', 'eda', 'train', 'sweep', 'predict', 'board', 'bench'):
        assert (demo/f'{stage}.ipynb').exists() and (demo/f'{stage}.done.json').exists(), stage
    assert (demo/'report.html').exists() and (clone/'data'/'synthetic'/'stage_2_train_labels.csv').exists()
    again = sh(main_job + ' --quick', 300)   # finished stages are skipped
    assert again.count('skipped') == 7, again
    listed = sh(tests + ' --collect-only -q -p no:cacheprovider', 600)   # sh fails on a collection error (exit 2)
    assert int(re.search(r'^(\d+) tests collected', listed, re.M).group(1)) > 500, listed[-2000:]
    out = sh(tests + ' -q -p no:cacheprovider tests/test_cli.py tests/test_layout.py', 900)
    assert re.search(r'\d+ passed', out) and ' failed' not in out.splitlines()[-1], out[-2000:]
