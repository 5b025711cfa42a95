"""The board lab (bench/gpu_lab.sh, issue 24) cannot rot while no GPU is lent: its CPU dry run (a tiny twin, the tiny
networks, one epoch) runs every stage here, and its bad inputs get one line and exit 2."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent


def lab(*args, **kw):
    return subprocess.run(['bash', str(ROOT/'bench'/'gpu_lab.sh'), *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHON=sys.executable, **kw))


@pytest.fixture(scope='module')
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp('lab')/'out'
    p = lab(out, '--dry-run')
    return p, out, json.loads((out/'lab.json').read_text()) if (out/'lab.json').exists() else {}


def test_dry_run_every_stage(dry):
    p, out, res = dry
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert set(res['stages']) == {'twin', 'cache', 'train a', 'train b', 'distill c', 'train d', 'train e', 'test', 'pareto', 'compare'}
    assert all(v['status'] == 'passed' for v in res['stages'].values()), res['stages']
    assert set(res['models']) == {'a', 'b', 'c', 'd', 'e'} and res['from_scratch']
    assert res['models']['d']['size'] < res['models']['b']['size']
    assert res['models']['e']['size'] == res['models']['d']['size'] and res['models']['e']['lr'] == res['models']['d']['lr']
    for k in 'bcde': assert Path(res['models'][k]['model_dir'], 'board.json').is_file()
    for m in res['models'].values(): assert m['test_ms_per_image'] > 0   # each model's own predicting time
    e = json.loads(Path(res['models']['e']['model_dir'], 'board.json').read_text())['model_cfg']
    assert e['head_convs'] == 2   # the moonshot candidate: 2 convs per subnet
    assert res['models']['a']['runtime'].startswith('PyTorch') and res['models']['b']['runtime'].startswith('OpenCV')
    assert set(res['pairs']) == {'b-a', 'c-a', 'd-a', 'e-a', 'c-b', 'e-d'}
    for v in res['pairs'].values(): assert v['n_images'] == res['cfg']['n_test'] and len(v['ci95']) == 2
    md = (out/'lab.md').read_text()
    assert '| (c) board model, distilled from (a)' in md and 'c-b:' in md
    # board-pareto ran: (b)-(d) on the board runtime, paired against (a)'s PyTorch predictions on the same images
    doc = json.loads((out/'pareto.json').read_text())
    assert [r['name'] for r in doc['rows']] == ['a', 'b', 'c', 'd', 'e'] and doc['rows'][0]['runtime'].startswith('given')
    for r in doc['rows'][1:]:
        assert r['diff'] == res['pairs'][f"{r['name']}-a"]['diff'] and r['n_images'] == res['cfg']['n_test']
    assert set(res['pareto']) >= {'recommended', 'cheapest_not_worse', 'moonshot'} and 'board-pareto (' in md
    # what the device tool brings back (at most 8 files): the results alone; the work is in --work (here OUT/work)
    assert sorted(p.name for p in out.iterdir()) == ['lab.json', 'lab.log', 'lab.md', 'pareto.json', 'pareto.md', 'work']
    for m in res['models'].values():   # BatchNorm trained and the lr as given, for every network (the same recipe)
        cfg = json.loads(Path(m['run'], 'config.json').read_text())
        assert cfg['model']['freeze_bn'] is False and cfg['train']['lr_base_batch'] is None and cfg['train']['max_minutes'] > 0


def test_reused_twin_too_small(tmp_path, dry):
    _, out, _ = dry   # its 256-px twin cannot feed the GPU lab's 512-px models; checked before the GPU is
    p = lab(tmp_path/'o', '--data', out/'work'/'twin')
    assert p.returncode == 2 and p.stderr.count('\n') == 1, p.stderr
    assert "the twin's images are 256 px, smaller than the models' 512 px input" in p.stderr


@pytest.mark.parametrize('field,value,says', [('difficulty', 'hard', "the twin's difficulty is 'hard', the lab's is 'easy'"),
                                               ('n_test', 13, 'the twin has 32 training / 13 test images, the lab needs 32 / 12')])
def test_reused_twin_of_another_kind(tmp_path, dry, field, value, says):
    _, out, _ = dry   # the dry run's own twin settings, one changed: a lab sized for one twin refuses another
    t = json.loads((out/'work'/'twin'/'synthetic_twin.json').read_text())
    (tmp_path/'twin').mkdir(); (tmp_path/'twin'/'synthetic_twin.json').write_text(json.dumps(dict(t, **{field: value})))
    p = lab(tmp_path/'o', '--dry-run', '--data', tmp_path/'twin')
    assert p.returncode == 2 and p.stderr.count('\n') == 1 and says in p.stderr, p.stderr


def test_no_gpu(tmp_path):
    code = 'import sys; sys.path.insert(0, sys.argv[1]); import gpu_lab; raise SystemExit(gpu_lab.main(sys.argv[2:]))'
    p = subprocess.run([sys.executable, '-c', code, str(ROOT/'bench'), str(tmp_path/'o')], capture_output=True, text=True,
                       env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
    assert p.returncode == 2 and p.stderr.strip() == 'gpu_lab: error: no CUDA GPU here: run the lab on the GPU machine, or --dry-run on the CPU'


def test_no_meter_counts(tmp_path):
    p = lab(tmp_path/'o', '--dry-run', '--meter-dir', tmp_path/'nometer')
    assert p.returncode == 2 and 'nometer/meter/cache.json: no board meter counts' in p.stderr and p.stderr.count('\n') == 1
