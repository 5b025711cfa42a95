"""The package's shape as DESIGN.md states it: notebooks numbered in import order, no import of a later module
(except in a function, with a comment saying why), the torch-free modules free of torch, pandas, PIL and fastcore."""
import ast, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH_FREE = ('core', 'dicom', 'boxes', 'metric', 'csvio', 'post', 'runtime', 'board', 'bundle')   # bundle: board.pyz
HEAVY = ('torch', 'torchvision', 'pandas', 'PIL', 'fastcore')


def notebook_numbers() -> dict:
    "module name -> its notebook's number, from each notebook's `#| default_exp`"
    out = {}
    for nb in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        m = re.search(r'#\|\s*default_exp\s+(\w+)', ''.join(cells[0]['source']))
        assert m, f'{nb.name}: the first cell must be `#| default_exp NAME`'
        out[m.group(1)] = int(nb.name.split('_')[0])
    return out


def package_imports(path: Path):
    "(line, imported pneumonia_kit module, at module level?) for every import of a package module in `path`"
    tree, lines = ast.parse(path.read_text()), path.read_text().splitlines()
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('pneumonia_kit.'):
            names = [node.module.split('.')[1]]
        elif isinstance(node, ast.ImportFrom) and node.module == 'pneumonia_kit':
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split('.')[1] for a in node.names if a.name.startswith('pneumonia_kit.')]
        for n in names: yield lines[node.lineno - 2] + lines[node.lineno - 1], n, id(node) in top  # with the line above


def test_one_notebook_per_module():
    nums = notebook_numbers()
    mods = {p.stem for p in (ROOT/'pneumonia_kit').glob('*.py') if not p.stem.startswith('_')}
    assert set(nums) == mods, (sorted(set(nums) ^ mods))
    assert len(set(nums.values())) == len(nums), 'two notebooks share a number'


@pytest.mark.parametrize('mod', sorted(notebook_numbers()))
def test_imports_follow_notebook_order(mod):
    nums = notebook_numbers()
    for line, other, top in package_imports(ROOT/'pneumonia_kit'/f'{mod}.py'):
        if other not in nums: continue   # e.g. `from pneumonia_kit import __version__`
        if top: assert nums[other] < nums[mod], (f'{mod} (notebook {nums[mod]}) imports {other} '
                                                 f'(notebook {nums[other]}) at module level')
        else: assert '#' in line, (f'{mod}: an import of {other} inside a function needs a comment saying why: '
                                   f'{line.strip()}')


@pytest.mark.parametrize('mod', TORCH_FREE)
def test_torch_free_modules(mod):
    tree = ast.parse((ROOT/'pneumonia_kit'/f'{mod}.py').read_text())
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
        for n in names: assert n.split('.')[0] not in HEAVY, f'{mod} imports {n}'
    for line, other, _ in package_imports(ROOT/'pneumonia_kit'/f'{mod}.py'):
        assert other in TORCH_FREE or other == '__version__', f'{mod} imports {other}, which is not torch-free'


MAX_LINE = 120


def long_lines(path: Path) -> list:
    "(line number, length) of the lines over MAX_LINE, leaving out what nbdev writes itself: the module docstring (the "
    "notebook's one-line summary) on line 1 and the `__all__` list"
    out, in_all = [], False
    for i, line in enumerate(path.read_text().splitlines(), 1):
        in_all = in_all or line.startswith('__all__')
        if in_all:
            in_all = not line.rstrip().endswith(']')
            continue
        if i > 1 and len(line) > MAX_LINE: out.append((i, len(line)))
    return out


@pytest.mark.parametrize('mod', sorted(notebook_numbers()))
def test_line_length(mod):
    bad = long_lines(ROOT/'pneumonia_kit'/f'{mod}.py')
    assert not bad, f'{mod}.py: {len(bad)} line(s) over {MAX_LINE} characters (line, length): {bad[:10]}'


MAX_CELL = 40
# Issue 23 (readability), a temporary exception: notebook -> how many of its export cells are still over MAX_CELL
# lines (the counts when the rule came in). A count may only go down: lower it when a notebook improves, and remove the
# notebook once none is left.
LONG_CELLS_ALLOWED = {'00_core': 1, '01_dicom': 3, '03_metric': 2, '07_board': 2, '08_plots': 3, '10_data': 1,
                      '13_synth': 3, '15_dataset': 1, '17_model': 1, '18_runs': 3, '19_train': 2, '20_distill': 1,
                      '22_predict': 2, '23_sweep': 2, '29_export': 1, '24_meter': 1, '25_bench': 3, '30_pareto': 3}


def long_export_cells(nb: Path) -> list:
    "(cell index, lines) of the export cells (`#| export` or `#| exporti` first) of notebook `nb` over MAX_CELL lines"
    out = []
    for i, cell in enumerate(json.loads(nb.read_text())['cells']):
        lines = ''.join(cell['source']).splitlines()
        export = cell['cell_type'] == 'code' and lines and re.fullmatch(r'#\|\s*exporti?\s*', lines[0])
        if export and len(lines) > MAX_CELL: out.append((i, len(lines)))
    return out


@pytest.mark.parametrize('nb', sorted((ROOT/'nbs').glob('[0-9]*.ipynb')), ids=lambda p: p.stem)
def test_export_cell_length(nb):
    bad, allowed = long_export_cells(nb), LONG_CELLS_ALLOWED.get(nb.stem, 0)
    assert len(bad) <= allowed, (f'{nb.name}: {len(bad)} export cell(s) over {MAX_CELL} lines, {allowed} allowed '
                                 f'(cell, lines): {bad}')


def test_long_cell_exceptions_still_needed():
    for stem, allowed in sorted(LONG_CELLS_ALLOWED.items()):
        nb = ROOT/'nbs'/f'{stem}.ipynb'
        assert nb.exists(), f'LONG_CELLS_ALLOWED names {stem}, which is not a notebook'
        n = len(long_export_cells(nb))
        assert n == allowed, (f'{nb.name} has {n} export cell(s) over {MAX_CELL} lines now: set LONG_CELLS_ALLOWED'
                              f'[{stem!r}] to {n}' + (' (remove it)' if n == 0 else ''))
