#!/usr/bin/env python
"""README's demo figures, regenerated from the demo's own summary (`pneumonia-kit demo` writes it:
outputs/demo/summary.json).

    python scripts/readme_figures.py                  # rewrite README.md's block between the markers
    python scripts/readme_figures.py --check          # exit 1 when README's accuracy figures differ from the summary's

The block has two parts. The accuracy figures (every mAP, interval, image count and paired difference, to the digit
README prints) must match a fresh run of the same demo: `--check` compares them line by line. The timings are marked
as the machine's that ran the demo and are not compared (they move with the machine and its load).
A summary whose training a time budget cut short is refused: README's figures come from a full run."""
from __future__ import annotations
import argparse, difflib, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, TIMINGS, END = '<!-- demo-figures:start -->', '<!-- demo-figures:timings -->', '<!-- demo-figures:end -->'
STAGES = ('data', 'eda', 'train', 'sweep', 'predict', 'board', 'bench')   # `demo.STAGES`, in the order they run


class FiguresError(Exception):
    "A summary or README this script cannot use (one line, exit 2)"


def _f(v, fmt='.3f') -> str: return '—' if v is None else f'{v:{fmt}}'


def score(s: dict) -> str:
    "'0.224 (0.139-0.306; 24 of 100 images counted)'"
    lo, hi = s.get('ci95') or [None, None]
    n = s.get('n_counted')
    return f"{_f(s.get('map'))} ({_f(lo)}-{_f(hi)}; {n} of {s.get('n_images')} images counted)"


def diff(c: dict) -> str:
    "'+0.028 (95% paired interval -0.010 to +0.070), p = 0.21'"
    lo, hi = c.get('ci95') or [None, None]
    p = _f(c.get('p_value'), '.2f')
    return f"{_f(c.get('diff'), '+.3f')} (95% paired interval {_f(lo, '+.3f')} to {_f(hi, '+.3f')}), p = {p}"


def accuracy_lines(s: dict) -> list:
    "The figures README must match: one table row each"
    v, t = s.get('validation') or {}, s.get('training') or {}
    post = v.get('post') or {}
    rows = [('training', f"{t.get('epochs_done')} of {t.get('epochs')} epochs ({t.get('stopped')})"),
            (f"validation fold, out of fold (epoch {v.get('epoch')}; final threshold {post.get('final_thresh')}, "
             f"NMS IoU {post.get('nms_thresh')}, global weight {post.get('global_weight')})", score(v))]
    rows += [(f"test mAP, {x.get('label')}", score(x)) for x in (s.get('scores') or {}).values()]
    rows += [(f"{c.get('what')}: B - A", diff(c)) for c in s.get('comparisons') or []]
    g = s.get('int8_gate') or {}
    if g.get('accepted') is not None:
        lo, hi = g.get('diff_ci95') or [None, None]
        d = _f(-g['loss'] if g.get('loss') is not None else None, '+.3f')
        rows.append((f"int8 - fp32, validation fold (the export's gate: lower end above -{g.get('max_loss')})",
                     f"{d} ({_f(lo, '+.3f')} to {_f(hi, '+.3f')}): {'accepted' if g['accepted'] else 'refused'}"))
    return [f'| {k} | {x} |' for k, x in rows]


def timing_lines(s: dict) -> list:
    "The timings, this machine's: not compared by --check"
    sec = s.get('stage_seconds') or {}
    each = ', '.join(f'{k} {_f(sec[k], ".0f")} s' for k in STAGES if k in sec)
    rows = [('wall time of the stages', f"{_f(s.get('total_seconds'), '.0f')} s ({each})")]
    cpu = {k: v for k, v in (s.get('stage_cpu_seconds') or {}).items() if v is not None}
    if cpu: rows.append(('CPU seconds of the stages (load-independent)', f"{sum(cpu.values()):.0f} s ("
                         + ', '.join(f'{k} {cpu[k]:.0f} s' for k in STAGES if k in cpu) + ')'))
    loads = [x for v in (s.get('stage_load') or {}).values() for x in v or []]
    if loads: rows.append(("the machine's 1-minute load average at stage starts and ends", f'{min(loads):.1f}-{max(loads):.1f}'))
    if b := s.get('board_latency'):
        ms = {k: _f(b.get(f'{k}_ms'), '.1f') for k in ('total', 'read', 'prepare', 'network', 'post')}
        rows.append((f"board predictor per image, demo model, {b.get('label')}",
                     f"{ms['total']} ms (read {ms['read']}, prepare {ms['prepare']}, "
                     f"network {ms['network']}, post {ms['post']})"))
    for r in s.get('bench') or []:
        rows.append((f"benchmark, {r.get('network')}, {r.get('runtime_label', r.get('runtime'))} (random weights)",
                     f"{_f(r.get('median_ms'), '.0f')} ms, {_f(r.get('peak_mb'), '.0f')} MB peak"))
    return [f'| {k} | {x} |' for k, x in rows]


def block(s: dict, source: str) -> str:
    "The README block for summary `s` (read from `source`)"
    if s.get('training_note'): raise FiguresError(f'{source}: {s["training_note"]}; use a run without a time budget')
    if not s.get('scores'): raise FiguresError(f'{source}: no test scores (did every stage of the demo run?)')
    c = s.get('config') or {}
    head = (f"`pneumonia-kit demo`: a twin of {c.get('n_images')} training and {c.get('n_test')} test images (difficulty "
            f"{c.get('difficulty', 'default')}, seed {c.get('seed')}), the {s.get('model')}, "
            f"{c.get('threads')} CPU threads pinned. "
            f"Written by `scripts/readme_figures.py` from `{source}` (run of {s.get('written')}); "
            "`python scripts/readme_figures.py --check` fails when a fresh run's accuracy figures differ.")
    return '\n'.join([START, head, '', '| figure (accuracy: compared by --check) | value |', '|---|---|',
                      *accuracy_lines(s), '', TIMINGS,
                      f"Timings are this machine's ({s.get('machine')}; the run's own load), "
                      "not compared by `--check`:", '',
                      '| timing | value |', '|---|---|', *timing_lines(s), END])


def _parts(text: str, where) -> tuple:
    "(before, block, after) of a README text"
    m = re.search(re.escape(START) + r'.*?' + re.escape(END), text, re.S)
    if not m: raise FiguresError(f'{where}: no {START} ... {END} block')
    return text[:m.start()], m.group(0), text[m.end():]


def _accuracy(block_text: str) -> list:
    return [l for l in block_text.split(TIMINGS)[0].splitlines() if l.startswith('| ') and not l.startswith('| figure')]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='readme_figures.py', description=__doc__.splitlines()[0])
    p.add_argument('summary', nargs='?', default='outputs/demo/summary.json',
                   help='the demo summary (default: %(default)s)')
    p.add_argument('--readme', default=str(ROOT/'README.md'), help="the README to write or check (default: the checkout's)")
    p.add_argument('--check', action='store_true',
                   help="compare README's accuracy figures with the summary's; exit 1 when they differ")
    a = p.parse_args(argv)
    try:
        src, readme = Path(a.summary), Path(a.readme)
        if not src.is_file(): raise FiguresError(f'{src}: no demo summary (run `pneumonia-kit demo` first)')
        try: s = json.loads(src.read_text())
        except json.JSONDecodeError as e: raise FiguresError(f'{src}: not JSON ({e})') from None
        new = block(s, a.summary)
        before, old, after = _parts(readme.read_text(), readme)
    except FiguresError as e:
        print(f'readme_figures.py: error: {e}', file=sys.stderr); return 2
    if a.check:
        want, have = _accuracy(new), _accuracy(old)
        if want == have: print(f'{readme}: its {len(have)} accuracy figures match {src}'); return 0
        lines = difflib.unified_diff(have, want, 'README', 'summary', lineterm='', n=0)
        print(f'{readme}: accuracy figures differ from {src}:', *lines, sep='\n', file=sys.stderr)
        return 1
    readme.write_text(before + new + after)
    print(f'{readme}: demo figures written from {src}')
    return 0


if __name__ == '__main__': sys.exit(main())
