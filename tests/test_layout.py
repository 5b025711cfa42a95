"""The package's shape as DESIGN.md states it: notebooks numbered in import order, no import of a later module
(except in a function, with a comment saying why), the torch-free modules free of torch, pandas, PIL and fastcore."""
import ast, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH_FREE = ('core', 'cmdline', 'dicom', 'image', 'boxes', 'metric', 'csvio', 'post', 'runtime', 'board',
              'bundle')   # bundle: what `board.pyz` runs
HEAVY = ('torch', 'torchvision', 'pandas', 'PIL', 'fastcore')


def notebook_numbers() -> dict:
    "module name -> its notebook's number ('00', '00a', '01'...: they sort in import order), from its `#| default_exp`"
    out = {}
    for nb in sorted((ROOT/'nbs').glob('[0-9]*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        m = re.search(r'#\|\s*default_exp\s+(\w+)', ''.join(cells[0]['source']))
        assert m, f'{nb.name}: the first cell must be `#| default_exp NAME`'
        out[m.group(1)] = nb.name.split('_')[0]
        assert re.fullmatch(r'\d\d[a-z]?', out[m.group(1)]), f'{nb.name}: a notebook is named NN_name or NNa_name'
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


MAX_CELL = 40        # lines of an export cell (DESIGN.md ground rules)
MAX_MODULE = 450     # lines of a generated module: one concern each (issue 23)


def export_cells(nb: Path):
    "(cell index, source) of the export cells (`#| export` or `#| exporti` first) of notebook `nb`"
    for i, cell in enumerate(json.loads(nb.read_text())['cells']):
        src = ''.join(cell['source'])
        lines = src.splitlines()
        if cell['cell_type'] == 'code' and lines and re.fullmatch(r'#\|\s*exporti?\s*', lines[0]): yield i, src


def long_export_cells(nb: Path) -> list:
    "(cell index, lines) of the export cells of notebook `nb` over MAX_CELL lines"
    return [(i, len(src.splitlines())) for i, src in export_cells(nb) if len(src.splitlines()) > MAX_CELL]


def public_definitions(src: str) -> list:
    "the public functions and classes a cell defines (private helpers and constants beside them don't count)"
    return [n.name for n in ast.parse(src).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not n.name.startswith('_')]


NOTEBOOKS = sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_export_cell_length(nb):
    bad = long_export_cells(nb)
    assert not bad, f'{nb.name}: {len(bad)} export cell(s) over {MAX_CELL} lines (cell, lines): {bad}'


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.stem)
def test_one_definition_per_cell(nb):
    bad = [(i, defs) for i, src in export_cells(nb) if len(defs := public_definitions(src)) > 1]
    assert not bad, f'{nb.name}: export cells with more than one public definition (cell, names): {bad}'


@pytest.mark.parametrize('mod', sorted(notebook_numbers()))
def test_module_length(mod):
    n = len((ROOT/'pneumonia_kit'/f'{mod}.py').read_text().splitlines())
    assert n <= MAX_MODULE, f'{mod}.py has {n} lines, over {MAX_MODULE}: split it by concern (DESIGN.md)'


def test_checks_can_fail():
    "the checks above see what they are meant to see"
    cell = '#| export\ndef a(): pass\ndef _b(): pass\nclass C: pass\nX = 1'
    assert public_definitions(cell) == ['a', 'C']
    assert long_lines.__doc__ and MAX_LINE == 120
