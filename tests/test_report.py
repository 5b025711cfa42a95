"""The demo's report, its stage notebooks and the model card, as a person sees them: report.html opened in a real
headless browser (Debian's chromium; skipped with the reason when it is not installed) checking that every picture
loads and every link resolves, with a screenshot saved under outputs/. The fast tests use a report written from a
small made-up demo folder; the slow ones (--slow, PNEUMONIA_KIT_SLOW=1, CI) run `pneumonia-kit demo --quick`."""
import json, re, shutil, subprocess, tempfile
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT/'outputs'/'report_screenshot.png'
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--hide-scrollbars']
# injected into a copy of the report: counts the pictures the browser could decode once the page has loaded
_CHECK_JS = ("<script>addEventListener('load',()=>{const b=[...document.images].filter(i=>!(i.complete&&i.naturalWidth>0));"
             "document.body.dataset.imagesLoaded=document.images.length-b.length;document.body.dataset.imagesBroken=b.length;"
             "document.body.dataset.brokenAlts=b.map(i=>i.alt).join('|');});</script>")


def chromium():
    "Path of a Chromium binary, or skip the test saying how to get one"
    exe = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
    if exe is None: pytest.skip('chromium is not installed (apt-get install -y chromium): the report is not opened in a browser')
    return exe


def _browser(args, timeout=120):
    with tempfile.TemporaryDirectory() as profile:   # a new, empty profile for every run
        r = subprocess.run([chromium(), *CHROMIUM_FLAGS, f'--user-data-dir={profile}', *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class _Refs(HTMLParser):
    "Every link (href) and picture (src) of a page"
    def __init__(self): super().__init__(); self.hrefs, self.srcs = [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'a' and 'href' in a: self.hrefs.append(a['href'])
        if tag == 'img': self.srcs.append(a.get('src', ''))


def _text(html_part: str) -> str:
    return re.sub(r'\s+', ' ', unescape(re.sub(r'<[^>]+>', '', html_part))).strip()


def chosen_thresholds(dom: str) -> dict:
    "The final threshold each place of a rendered report states: the heat map's caption (the cell it outlines), the PR and "
    "threshold-curve captions, the sweep table, the key figures"
    caps = {re.search(r'>([\w.]+\.png)</a>', c).group(1): _text(c) for c in re.findall(r'<figcaption>(.*?)</figcaption>', dom, re.S)
            if re.search(r'>([\w.]+\.png)</a>', c)}
    found = {}
    for png, pat in (('threshold_heatmap.png', r'final threshold ([0-9.]+), as in run/best_post.json'),
                     ('pr_curve.png', r'chosen final threshold, ([0-9.]+)\.'), ('threshold_curves.png', r'chosen final threshold, ([0-9.]+)\.')):
        m = re.search(pat, caps.get(png, ''))
        found[png] = float(m.group(1)) if m else None
    m = re.search(r'<td>final_thresh</td><td>([0-9.]+)</td>', dom)
    found['sweep table'] = float(m.group(1)) if m else None
    m = re.search(r'the chosen post-processing: final threshold ([0-9.]+),', unescape(dom))
    found['key figures'] = float(m.group(1)) if m else None
    return found


def figures(dom: str) -> list:
    "(number, caption, alt text) of every figure of a rendered report"
    return [(int(n), _text(cap), unescape(alt)) for alt, n, cap in
            re.findall(r'<figure><img [^>]*alt="([^"]*)"[^>]*><figcaption>Figure (\d+)\. (.*?)</figcaption></figure>', dom, re.S)]


def open_in_browser(report: Path, screenshot: Path | None = None) -> dict:
    "Load `report` in headless Chromium: pictures loaded and broken, links that do not resolve, figures and their captions, the "
    "chosen threshold wherever it is stated; optionally a screenshot"
    check = report.with_name('.report_check.html')   # beside the report, so relative links resolve the same way
    check.write_text(report.read_text().replace('</html>', _CHECK_JS + '</html>'))
    try: dom = _browser(['--virtual-time-budget=15000', '--dump-dom', check.as_uri()])
    finally: check.unlink()
    body = re.search(r'<body([^>]*)>', dom)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1))) if body else {}
    refs = _Refs(); refs.feed(dom)
    local = [h for h in refs.hrefs if not re.match(r'[a-z]+:|#', h)]
    broken_links = [h for h in local if not (report.parent/h).exists()]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        _browser(['--window-size=1280,2200', f'--screenshot={screenshot}', report.as_uri()])
    return dict(loaded=int(attrs.get('images-loaded', -1)), broken=int(attrs.get('images-broken', -1)), broken_alts=attrs.get('broken-alts'),
                n_images=len(refs.srcs), embedded=sum(s.startswith('data:image/png;base64,') for s in refs.srcs),
                links=local, broken_links=broken_links, figures=figures(dom), thresholds=chosen_thresholds(dom))


def check_figures(r: dict, n: int):
    "Every picture is a numbered figure with a caption that says what it shows (more than its file name), the same as its alt text"
    assert [f[0] for f in r['figures']] == list(range(1, n + 1)), r['figures']
    for k, cap, alt in r['figures']:
        words = re.sub(r'\s*\([\w.]+\.png\)$', '', cap).split()   # the caption without its file link
        assert len(words) >= 3 and cap.startswith(alt.rstrip()), (k, cap, alt)


def check_threshold(r: dict, out: Path):
    "One chosen post-processing: figure, table, key figures and the JSON files state the same final threshold"
    chosen = json.loads((out/'run'/'best_post.json').read_text())['post']['final_thresh']
    drawn = json.loads((out/'sweep'/'summary.json').read_text())['heatmap_outlined']['final_thresh']   # the cell the heat map outlined
    assert drawn == chosen, (drawn, chosen)
    states = {k: v for k, v in r['thresholds'].items() if v is not None}
    assert {'threshold_heatmap.png', 'sweep table'} <= set(states) and set(states.values()) == {chosen}, (states, chosen)


# ---------- fast: a report written from a small made-up demo folder

@pytest.fixture(scope='module')
def small_report(tmp_path_factory):
    "A demo folder with a few real figures, summaries, a model card and notebooks, and its report"
    from matplotlib.figure import Figure
    from pneumonia_kit.core import save_json
    from pneumonia_kit.report import write_report
    from pneumonia_kit.evalplots import plot_stage_times
    out = tmp_path_factory.mktemp('demo')
    for sub, name in (('eda', 'class_distribution'), ('sweep', 'pr_curve'), ('sweep', 'threshold_heatmap')):
        f = Figure(figsize=(3, 2)); f.subplots().plot([0, 1], [1, 0]); (out/sub).mkdir(exist_ok=True); f.savefig(out/sub/f'{name}.png')
    (out/'board'/'model').mkdir(parents=True); (out/'board'/'examples').mkdir()
    (out/'board'/'model'/'MODEL_CARD.md').write_text('# card\n'); (out/'board'/'model'/'board.json').write_text('{}')
    (out/'board'/'submission_opencv.csv').write_text('patientId,PredictionString\n')
    st = [dict(label='opencv fp32, 2 threads', backend='opencv', int8=False, read_ms=4., prepare_ms=1., network_ms=10., post_ms=1., total_ms=16.,
               n_images=3, machine='x86_64, test CPU, 2 cores', threads=2, input_size=128)]
    plot_stage_times(st, out/'board'/'stage_times.png')
    save_json(dict(scores=dict(opencv=dict(label='board predictor, OpenCV DNN fp32', map=0.3, ci95=[0.2, 0.4], n_counted=5, n_images=8,
                                           submission=str(out/'board'/'submission_opencv.csv'))), stage_times=st), out/'board'/'summary.json')
    (out/'eda.ipynb').write_text('{}')
    save_json(dict(epoch=3, post=dict(final_thresh=0.35, nms_thresh=0.05, global_weight=0.5), map=0.2, ci95=[0.1, 0.3], n_counted=5,
                   n_images=8), out/'run'/'best_post.json')
    save_json(dict(heatmap_outlined=dict(epoch=3, final_thresh=0.35, nms_thresh=0.05, global_weight=0.5)), out/'sweep'/'summary.json')
    (out/'sweep'/'sweep.md').write_text('| setting | value |\n|---|---|\n| epoch | 3 |\n| final_thresh | 0.35 |\n')
    return write_report(out)


def test_report_content(small_report):
    page = small_report.read_text()
    assert 'Not for clinical use' in page and '<h2 id="what-ran">What ran</h2>' in page and '<pre>' not in page
    caps = re.findall(r'<figcaption>(.*?)</figcaption>', page)
    assert len(caps) == 4 and all(c.startswith('Figure ') for c in caps), caps
    assert 'Board predictor per image on this machine (x86_64, test CPU, 2 cores)' in page
    assert '<a href="board/model/MODEL_CARD.md">' in page and '<a href="board/submission_opencv.csv">' in page


def test_report_in_browser(small_report):
    r = open_in_browser(small_report)
    assert r['n_images'] == 4 and r['embedded'] == 4, r           # self-contained: every picture is inside the file
    assert (r['loaded'], r['broken']) == (4, 0), r                 # ... and decodes in the browser
    check_figures(r, 4)
    check_threshold(r, small_report.parent)
    assert r['links'] and not r['broken_links'], r                 # every relative link resolves
    bad = small_report.with_name('bad.html')                        # the check sees a broken picture and a dead link
    bad.write_text(small_report.read_text().replace('</h1>', '</h1><img src="missing.png" alt="gone"><a href="nowhere.csv">x</a>'))
    r = open_in_browser(bad)
    assert (r['broken'], r['broken_alts'], r['broken_links']) == (1, 'gone', ['nowhere.csv']), r
    other = small_report.with_name('other.html')                   # ... and a figure stating another threshold than the JSON's
    other.write_text(small_report.read_text().replace('final threshold 0.35, as in', 'final threshold 0.4, as in'))
    r = open_in_browser(other)
    assert r['thresholds']['threshold_heatmap.png'] == 0.4 and r['thresholds']['sweep table'] == 0.35, r['thresholds']
    with pytest.raises(AssertionError): check_threshold(r, small_report.parent)


# ---------- slow: the real quick demo, its notebooks, its report in the browser

@pytest.fixture(scope='module')
def quick_demo(tmp_path_factory):
    d = tmp_path_factory.mktemp('quick')
    r = subprocess.run(['pneumonia-kit', 'demo', '--quick', '--out', 'out', '--data', 'twin'], capture_output=True, text=True, cwd=d)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    return d/'out', r


@pytest.mark.slow
def test_demo_console(quick_demo):
    out, r = quick_demo
    console = r.stdout + r.stderr
    for noise in ('IPKernelApp', 'without encryption', 'KeyboardInterrupt', 'TqdmWarning', 'IProgress'): assert noise not in console, noise
    assert re.search(r'^\[train\] epoch 1/\d+: train loss', r.stdout, re.M), r.stdout   # one line per epoch while training
    assert re.search(r'^  board predictor per image, OpenCV [\d.]+ DNN fp32 on this machine, demo model \(', r.stdout, re.M), r.stdout
    assert re.search(r'^  The demo model \(.*\) scored test mAP [\d.]+ \(95% interval', r.stdout, re.M), r.stdout   # the headline first
    assert 'TRAINING CUT SHORT' not in r.stdout   # no time budget: every epoch
    assert 'test mAP, PyTorch fp32, no TTA' in r.stdout and 'test mAP, PyTorch fp32 + flip TTA' in r.stdout


def _outputs(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    return [o for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', [])]


@pytest.mark.slow
def test_stage_notebooks(quick_demo):
    out, _ = quick_demo
    for nb in sorted(out.glob('*.ipynb')):
        text = nb.read_text()
        assert 'TqdmWarning' not in text and 'IProgress' not in text, nb.name
        figs_as_text = [o for o in _outputs(nb) if 'image/png' not in o.get('data', {}) and '<Figure size' in ''.join(o.get('data', {}).get('text/plain', ''))]
        assert not figs_as_text, (nb.name, figs_as_text[:1])
    for name in ('sweep', 'predict', 'board'):
        assert sum('image/png' in o.get('data', {}) for o in _outputs(out/f'{name}.ipynb')) >= 1, name
    streams = ''.join(''.join(o.get('text', '')) for o in _outputs(out/'train.ipynb') if o['output_type'] == 'stream')
    assert len(streams.splitlines()) <= 10 and '\r' not in streams, streams[:2000]   # the epoch lines, no progress bars
    assert (out/'train.ipynb').stat().st_size < 200_000


@pytest.mark.slow
def test_model_card(quick_demo):
    out, _ = quick_demo
    card = (out/'board'/'model'/'MODEL_CARD.md').read_text()
    for part in ('Not for clinical diagnosis', '## Intended use', '## Data', '## Metrics', '## Limitations', 'validated on fold 0',
                 'parity with PyTorch, opencv'):
        assert part in card, part


@pytest.mark.slow
def test_quick_report_in_browser(quick_demo):
    out, _ = quick_demo
    page = (out/'report.html').read_text()
    assert 'Not for clinical use' in page and page.count('<figcaption>Figure ') >= 15
    for fig in ('pr_curve', 'threshold_curves', 'confusion', 'roc', 'gallery', 'stage_times'): assert f'{fig}.png' in page, fig
    r = open_in_browser(out/'report.html', SCREENSHOT)
    assert r['n_images'] == r['embedded'] == r['loaded'] >= 15 and r['broken'] == 0, r
    check_figures(r, r['n_images'])
    check_threshold(r, out)
    assert len(set(r['thresholds'].values())) == 1, r['thresholds']   # all five places, the same threshold
    for f in ('threshold_heatmap.png', 'pr_curve.png', 'threshold_curves.png', 'sweep table', 'key figures'): assert r['thresholds'][f], f
    caps = ' '.join(c for _, c, _ in r['figures'])
    assert 'configuration' not in caps and caps.count('true boxes green') >= 3, caps   # one name per network, one colour for truth
    assert len(r['links']) >= 10 and not r['broken_links'], r
    assert SCREENSHOT.read_bytes()[:4] == b'\x89PNG'
