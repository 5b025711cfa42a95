"""Every example in `pneumonia-kit COMMAND --help` runs after `pneumonia-kit demo` (here its reduced `--quick` size, in
a fresh folder): each exits 0 without a traceback. The real-data examples (`cli.REAL_DATA_EXAMPLES`: the Kaggle download,
`data/rsna`, several GPUs) cannot run offline and are left out. Slow: runs with `pytest --slow` or PNEUMONIA_KIT_SLOW=1."""
import os, subprocess
import pytest
from pneumonia_kit.cli import COMMANDS, EXAMPLES, REAL_DATA_EXAMPLES


def test_every_command_has_an_example():
    assert set(EXAMPLES) | set(REAL_DATA_EXAMPLES) >= set(COMMANDS) - {'download'} and 'download' in REAL_DATA_EXAMPLES
    for cmds in EXAMPLES.values():
        for c in cmds: assert 'data/rsna' not in c and 'torchrun' not in c, c   # those belong to REAL_DATA_EXAMPLES


@pytest.mark.slow
def test_examples_run_after_the_demo(tmp_path):
    env = dict(os.environ, MPLBACKEND='Agg')
    r = subprocess.run(['pneumonia-kit', 'demo', '--quick'], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    failed = []
    for name, cmds in EXAMPLES.items():
        for cmd in cmds:
            if name == 'demo': continue   # the demo itself ran above (`--quick`); the full one is the newcomer test's
            p = subprocess.run(cmd.split('#')[0], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            if p.returncode != 0 or 'Traceback' in p.stderr: failed.append(f'{cmd}: exit {p.returncode}: {p.stderr.strip()[-500:]}')
    assert not failed, '\n'.join(failed)
