"""scripts/board_meter.py without the emulator: arguments, the missing-emulator message, counting arithmetic, caching.

The real count needs `scripts/loongarch_meter.sh build` and minutes of emulation: it is kept out of this suite.
"""
import importlib.util, json
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def bm(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location('board_meter_under_test', REPO/'scripts'/'board_meter.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, 'WORK', tmp_path/'work')
    return mod


def board_folder(root, size=64, payload=b'onnx bytes'):
    d = Path(root); d.mkdir(parents=True, exist_ok=True)
    (d/'model.onnx').write_bytes(payload)
    (d/'board.json').write_text(json.dumps(dict(input_size=size, model_file='model.onnx')))
    return d


def fake_tools(work):
    "The files find_tools looks for (never executed here)"
    q = work/'meter-qemu'; q.mkdir(parents=True)
    (q/'qemu-loongarch64').write_text(''); (q/'libinsn.so').write_text('')
    r = work/'rootfs'; (r/'usr'/'bin').mkdir(parents=True); (r/'usr'/'bin'/'python3').write_text('')
    (r/'.meter-pyc').write_text('x')
    lib = r/'usr'/'lib'/'loongarch64-linux-gnu'; lib.mkdir(parents=True); (lib/'libopencv_dnn.so.4.10.0').write_text('')
    return work


def test_missing_emulator_is_one_line_exit_2(bm, tmp_path, capsys):
    d = board_folder(tmp_path/'m')
    assert bm.main([str(d), '--no-x86']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'run scripts/loongarch_meter.sh build first' in err[0] and 'Traceback' not in err[0]


def test_missing_x86_venv_names_the_fix(bm, tmp_path, capsys):
    fake_tools(bm.WORK)
    assert bm.main([str(board_folder(tmp_path/'m'))]) == 2
    err = capsys.readouterr().err
    assert 'OpenCV 4.10 venv' in err and '--no-x86' in err


def test_resolve_model(bm, tmp_path):
    d = board_folder(tmp_path/'m', size=96)
    r = bm.resolve_model(d)
    assert r['size'] == 96 and r['onnx'] == (d/'model.onnx').resolve()
    assert bm.resolve_model(d/'model.onnx', 128)['size'] == 128
    with pytest.raises(bm.MeterError, match='needs --size'): bm.resolve_model(d/'model.onnx')
    with pytest.raises(bm.MeterError, match='input_size 96'): bm.resolve_model(d, 128)
    with pytest.raises(bm.MeterError, match='no such'): bm.resolve_model(tmp_path/'nope')
    (tmp_path/'e').mkdir()
    with pytest.raises(bm.MeterError, match='no model.onnx'): bm.resolve_model(tmp_path/'e')


def test_bad_arguments_exit_2(bm, tmp_path, capsys):
    d = board_folder(tmp_path/'m')
    assert bm.main([str(d/'model.onnx'), '--no-x86']) == 2          # bare .onnx without --size
    assert bm.main([str(d), '--ipc', '0', '--no-x86']) == 2
    assert 'Traceback' not in capsys.readouterr().err


def test_guest_versions_from_file_names(bm):
    fake_tools(bm.WORK)
    assert bm.guest_versions(bm.WORK/'rootfs')['opencv'] == '4.10.0'


def test_board_estimate():
    spec = importlib.util.spec_from_file_location('bm2', REPO/'scripts'/'board_meter.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    # 4 G instructions at 1 GHz, IPC 0.8, 2 threads, efficiency 0.8: 4e9 / 1.28e9
    assert mod.board_estimate(4e9, 1.0, 0.8, 2, 0.8) == pytest.approx(3.125)


def test_fork_counting_and_cache(bm, tmp_path, monkeypatch, capsys):
    fake_tools(bm.WORK)
    calls = []
    def fake_count_batch(tools, jobs, forwards=2, timeout=0, log=None, on_result=None):
        out = []
        for i, (onnx, size) in enumerate(jobs):
            calls.append((Path(onnx).parent.name, size, forwards))
            each = [5_000_000_000] + [3_000_000_000] * (forwards - 1)
            rec = dict(insns=each[0], insns_each=each, steady_insns=each[-1] if forwards > 1 else None,
                       baseline=2_000_000_000, emulation_s=1.0, checksum=1.0)
            if on_result: on_result(i, rec)
            out.append(rec)
        return out
    monkeypatch.setattr(bm, 'count_batch', fake_count_batch)
    d = board_folder(tmp_path/'m')
    r = bm.meter(d, x86=False, forwards=1)
    assert r['board']['insns'] == 5e9 and r['board']['baseline'] == 2e9 and len(calls) == 1
    assert bm.meter(d, x86=False, forwards=1)['board'].get('cached') and len(calls) == 1  # from the cache
    r2 = bm.meter(d, x86=False, forwards=2)                                              # another key: counted
    assert r2['board']['insns_each'] == [5e9, 3e9] and r2['board']['steady_insns'] == 3e9 and len(calls) == 2
    # several models: the uncounted ones go to one batch, in order; a repeated model is counted once
    e = board_folder(tmp_path/'e', payload=b'model e')
    rs = bm.meter_many([e, d, e], x86=False)
    assert [r['name'] for r in rs] == ['e', 'm', 'e'] and len(calls) == 3 and rs[1]['board'].get('cached')
    bm.meter(d, x86=False, force=True); assert len(calls) == 4                           # --force
    (d/'model.onnx').write_bytes(b'another model')                                       # new sha256: counted again
    bm.meter(d, x86=False); assert len(calls) == 5 and calls[-1][2] == 2                 # default: 2 forwards
    cache = json.loads((bm.WORK/'meter'/'cache.json').read_text())
    assert len(cache) == 4
    assert all('opencv=4.10.0' in k and 'cpu=la464,lasx=off' in k for k in cache)
    # the command line: table, reference ratio, JSON
    out = tmp_path/'res.json'
    assert bm.main([str(d), '--no-x86', '--reference', '27.1', '--json', str(out)]) == 0
    res = json.loads(out.read_text())
    row = res['rows'][0]
    assert row['first_G'] == 5.0 and row['per_image_G'] == 3.0 and row['vs_reference'] == pytest.approx(5.42)
    assert row['board_s'] == pytest.approx(3e9 / (1e9 * 0.8 * 2 * 0.8), abs=0.01)
    assert res['assumptions']['ipc']['value'] == 0.8 and len(calls) == 5
    assert 'board estimate = instructions per image /' in capsys.readouterr().out


def test_two_process_method(bm, tmp_path, monkeypatch):
    fake_tools(bm.WORK)
    def fake_run_guest(tools, onnx, size, forwards, method, timeout, log=None):
        assert method == 'plain'
        return dict(totals=[2_000_000_000 + forwards * 7_000_000_000], info=dict(opencv='4.10.0', threads=1), seconds=1.0)
    monkeypatch.setattr(bm, 'run_guest', fake_run_guest)
    r = bm.meter(board_folder(tmp_path/'m'), x86=False, method='two-process', forwards=1)
    assert r['board']['insns'] == 7e9 and r['board']['baseline'] == 2e9
