"""bench/board_int8.py (int8 forms in OpenCV 4.10 DNN) and scripts/board_meter.py's `--opencv-int8` option.

The quick run needs the OpenCV 4.10 venv that `scripts/loongarch_meter.sh build` makes (outputs/loongarch/x86-cv410):
skipped with that reason where it is absent. The rest needs neither the venv nor the emulator (a fake guest stands in).
"""
import importlib.util, json, math, stat, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]


def load(name, rel):
    spec = importlib.util.spec_from_file_location(name, REPO/rel)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def bi(monkeypatch, tmp_path):
    monkeypatch.setenv('LOONGARCH_WORK', str(tmp_path/'work'))   # an empty meter: nothing built
    return load('board_int8_under_test', 'bench/board_int8.py')


def fake_model(d:Path, payload:bytes=b'not really onnx') -> Path:
    d.mkdir(parents=True); (d/'model.onnx').write_bytes(payload)
    (d/'board.json').write_text(json.dumps(dict(model_file='model.onnx', input_size=64)))
    return d


def test_bad_input_is_one_line(bi, tmp_path, capsys):
    py = ['--x86-python', sys.executable]
    assert bi.main(['--model', str(tmp_path/'nope')] + py) == 2
    assert capsys.readouterr().err.strip().count('\n') == 0
    assert bi.main(['--model', str(fake_model(tmp_path/'m')), '--forms', 'fp32,int4'] + py) == 2
    assert 'unknown form(s) int4' in capsys.readouterr().err
    assert bi.main(['--model', str(tmp_path/'m'), '--x86-python', str(tmp_path/'no-python')]) == 2
    assert 'scripts/loongarch_meter.sh build' in capsys.readouterr().err
    # --meter without the emulator: one line saying to build the meter, before any work
    assert bi.main(['--model', str(tmp_path/'m'), '--meter', '--out', str(tmp_path/'o')] + py) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('board_int8: --meter:') and 'loongarch_meter.sh build' in err and '\n' not in err
    assert not (tmp_path/'o'/'results.json').exists()


def test_verdict_applies_the_rule(bi):
    assert bi.verdict(dict(runs=False, error='boom'), 2.0).startswith('does not run in OpenCV 4.10: boom')
    assert 'not counted' in bi.verdict(dict(runs=True), 2.0)
    assert bi.verdict(dict(runs=True, per_image_G=1.0), 2.0).startswith('2.00x fewer') and 'GPU lab' in bi.verdict(
        dict(runs=True, per_image_G=1.0), 2.0)
    assert bi.verdict(dict(runs=True, per_image_G=1.6), 2.0).startswith('not adopted: it costs 0.80x') and '= 1.25x' in \
        bi.verdict(dict(runs=True, per_image_G=1.6), 2.0)
    assert 'more instructions than fp32' in bi.verdict(dict(runs=True, per_image_G=4.0), 2.0)


FAKE_QEMU = r'''#!PYTHON
import json, sys
a = sys.argv
script = a[a.index('-d') + 3]                      # qemu ... -d plugin PYTHON3 SCRIPT ARGS
forwards, rest = int(a[a.index(script) + 1]), a[a.index(script) + 2:]
if 'int8' in script.rsplit('/', 1)[-1]: jobs = json.loads(rest[0])           # [[onnx, size, calib], ...]
else: jobs = [[j.rsplit(':', 1)[0], int(j.rsplit(':', 1)[1]), None] for j in rest]   # onnx:size ...
t = 1000
for i, (onnx, size, calib) in enumerate(jobs):
    marks = [100] + ([70] if calib else []) + [50 if calib else 40] * forwards   # read, quantize, forwards
    for step in [0] + marks:
        t += step; print(f'total insns: {t}', file=sys.stderr)
    print('METER ' + json.dumps(dict(index=i, opencv='4.10.0', threads=1, outputs={}, checksum=1.0)), file=sys.stderr)
print(f'total insns: {t + 5}', file=sys.stderr)
'''


def test_meter_counts_opencv_int8_apart(tmp_path, monkeypatch):
    monkeypatch.setenv('LOONGARCH_WORK', str(tmp_path/'work'))
    bm = load('board_meter_int8_under_test', 'scripts/board_meter.py')
    w = bm.WORK; (w/'meter-qemu').mkdir(parents=True); (w/'rootfs'/'usr'/'bin').mkdir(parents=True)
    q = w/'meter-qemu'/'qemu-loongarch64'; q.write_text(FAKE_QEMU.replace('PYTHON', sys.executable))
    q.chmod(q.stat().st_mode | stat.S_IEXEC)
    (w/'meter-qemu'/'libinsn.so').write_bytes(b''); (w/'rootfs'/'usr'/'bin'/'python3').write_bytes(b'')
    (w/'rootfs'/'.meter-pyc').write_text('ok')
    d = fake_model(tmp_path/'m'); calib = tmp_path/'calib.npy'; calib.write_bytes(b'calibration')
    rs = bm.meter_many([d, d], x86=False, opencv_int8=[None, calib], progress=lambda s: None)
    fp, i8 = rs[0]['board'], rs[1]['board']
    assert fp['insns_each'] == [40, 40] and 'quantize_insns' not in fp and fp['load_insns'] == 100
    assert i8['insns_each'] == [50, 50] and i8['quantize_insns'] == 70 and i8['load_insns'] == 170 and i8['opencv_int8']
    assert rs[1]['name'] == 'm (OpenCV int8)'
    keys = list(json.loads((w/'meter'/'cache.json').read_text()))
    sha = bm.file_sha256(d/'model.onnx')
    assert keys == [bm.emu_key(sha, 64, None, bm.QEMU_CPU, 'fork', 2)]       # the fp32 key as before the option ...
    i8 = json.loads((w/'meter'/bm.INT8_CACHE).read_text())                   # ... the int8 count in a file of its own
    assert list(i8) == [bm.emu_key(sha, 64, None, bm.QEMU_CPU, 'fork', 2, bm.file_sha256(calib))]
    assert bm.meter_many([d], x86=False, opencv_int8=calib, progress=lambda s: None)[0]['board']['cached']
    # a batch of fp32 models only still runs the original guest (same script, same counts)
    rs = bm.meter_many([fake_model(tmp_path/'e', b'another')], x86=False, progress=lambda s: None)
    assert rs[0]['board']['insns_each'] == [40, 40] and not rs[0]['board'].get('cached')
    # ... the very program the meter ran before the option (its file name is its hash): fp32 counts are unchanged
    assert (w/'meter'/'guest_batch_e6c8a1091b80.py').read_text() == bm.BATCH_GUEST
    assert len(list((w/'meter').glob('guest_batch_int8_*.py'))) == 1
    with pytest.raises(bm.MeterError, match='no such calibration file'):
        bm.meter_many([d], x86=False, opencv_int8=tmp_path/'missing.npy')
    with pytest.raises(bm.MeterError, match='fork only'):
        bm.meter_many([d], x86=False, opencv_int8=calib, method='two-process')


def test_quick_run(bi, tmp_path):
    pytest.importorskip('torch'); pytest.importorskip('onnxruntime')
    py = REPO/'outputs'/'loongarch'/'x86-cv410'/'bin'/'python'
    if not py.is_file(): pytest.skip(f'no OpenCV 4.10 venv at {py} (scripts/loongarch_meter.sh build makes it)')
    out = tmp_path/'o'
    assert bi.main(['--quick', '--x86-python', str(py), '--x86-budget', '0.02', '--out', str(out)]) == 0
    res = json.loads((out/'results.json').read_text())
    assert res['opencv'].startswith('4.10') and res['quick'] and res['n_eval'] == 2
    f = res['forms']
    assert all(f[k]['runs'] for k in bi.FORMS), {k: f[k].get('error') for k in f}
    assert f['opencv-quantize']['layers'].get('ConvolutionInt8') and f['ort-qoperator']['layers'].get('ConvolutionInt8')
    assert f['ort-qdq']['layers'].get('Convolution') and f['ort-qdq']['layers'].get('Quantize')   # fp32 between Q/DQ
    assert all(v['max_abs'] == 0 for v in f['fp32']['diff'].values())
    for k in bi.FORMS[1:]:
        for n, v in f[k]['diff'].items():
            assert math.isfinite(v['max_abs']) and 0 < v['rel'] < 1, (k, n, v)     # quantized: close, not equal
        assert f[k]['x86']['threads']['1']['median_ms'] > 0
    assert [r['form'] for r in res['rows']] == list(bi.FORMS) and 'not counted' in res['rows'][1]['verdict']
    assert (out/'results.md').read_text().startswith('# int8 on the board runtime')
    # the output tails left fp32: every node between the last convolutions and the outputs, no convolution
    import onnx
    g = onnx.load(str(out/'tiny'/'model.onnx')).graph
    tails, ops = bi.output_tails(out/'tiny'/'model.onnx'), {n.name: n.op_type for n in g.node}
    assert tails and 'Conv' not in {ops[t] for t in tails}
    assert {n.name for n in g.node if set(n.output) & {o.name for o in g.output}} <= set(tails)
