"""Each library notebook's own tests (its `test_eq` cells), run by nbdev-test in a fresh process."""
import subprocess, sys
from pathlib import Path
import pytest

NBS = sorted(p for p in (Path(__file__).parent.parent/'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.')))


@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    r = subprocess.run(['nbdev-test', str(nb)], capture_output=True, text=True, cwd=nb.parent.parent)
    assert r.returncode == 0, f'{nb.name} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}'
