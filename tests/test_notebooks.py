"""Each library notebook's own tests (its `test_eq` cells), run by nbdev-test in a fresh process."""
import subprocess
from pathlib import Path
import pytest

NBS = sorted(p for p in (Path(__file__).parent.parent/'nbs').glob('*.ipynb') if not p.name.startswith(('_', '.')))


@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    r = subprocess.run(['nbdev-test', str(nb)], capture_output=True, text=True, cwd=nb.parent.parent)
    assert r.returncode == 0, f'{nb.name} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}'


@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook_rendered(nb):
    "Committed notebooks open in JupyterLab with their outputs (refresh: see README, 'Notebooks')"
    import json
    cells = json.loads(nb.read_text())['cells']
    first = next(c for c in cells if c['cell_type'] == 'markdown')
    assert ''.join(first['source']).lstrip().startswith('# '), f'{nb.name}: the first text cell should be the title'
    code = [c for c in cells if c['cell_type'] == 'code' and ''.join(c['source']).strip()]
    shown = [c for c in code if c.get('outputs')]
    assert len(shown) >= 3, f'{nb.name}: only {len(shown)} of {len(code)} code cells carry outputs; render it with nbdev-test --save'
