"""The `pneumonia-kit` command as a user runs it: a real subprocess, help for every subcommand, one-line errors."""
import json, subprocess
import pytest
from pneumonia_kit.cli import COMMANDS


def run(*args, cwd=None):
    return subprocess.run(['pneumonia-kit', *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_help_lists_commands():
    r = run('--help')
    assert r.returncode == 0
    for c in COMMANDS: assert c in r.stdout


@pytest.mark.parametrize('cmd', list(COMMANDS))
def test_subcommand_help(cmd):
    r = run(cmd, '--help')
    assert r.returncode == 0, r.stderr
    assert f'pneumonia-kit {cmd}' in r.stdout and len(r.stdout.splitlines()) > 3


def test_error_is_one_line(tmp_path):
    (tmp_path/'labels.csv').write_text('patientId,x,y,width,height,Target\np1,,,,,0\n')
    r = run('score', tmp_path/'nope.csv', tmp_path/'labels.csv')
    assert r.returncode == 2
    assert r.stderr.startswith('pneumonia-kit score: error:') and 'nope.csv' in r.stderr and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('args, name', [
    (['show', 'x.dcm', '--out', ''], '--out'),              # `--out "$UNSET"`: not the default folder, silently
    (['score', '', 'labels.csv'], 'SUBMISSION'),
    (['cache', 'data', '--max-pixels', '100000000000000000000'], '--max-pixels'),   # not blamed on the environment
    (['train', 'data', '--fold', '1_0'], '--fold'),          # int() would take it
])
def test_empty_or_odd_values_one_line(tmp_path, args, name):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2 and f'argument {name}:' in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_show_bad_file(tmp_path):
    bad = tmp_path/'bad.dcm'; bad.write_bytes(b'not a dicom at all')
    r = run('show', bad, '--out', tmp_path/'x.png')
    assert r.returncode == 2 and 'bad.dcm' in r.stderr and 'Traceback' not in r.stderr


def test_synth_show_score(tmp_path):
    "synth writes the Kaggle layout; show renders an image with its boxes; scoring the labels against themselves gives 1"
    out = tmp_path/'twin'
    r = run('synth', out, '--n-images', 6, '--n-test', 10, '--seed', 1, '--size', 256, '--workers', 1, '--difficulty', 'hard', '--fp-p', 0.2)
    assert r.returncode == 0, r.stderr
    twin = json.loads((out/'synthetic_twin.json').read_text())   # the settings travel with the data
    assert (twin['difficulty'], twin['overrides'], twin['knobs']['fp_p'], twin['knobs']['reader_jitter']) == ('hard', {'fp_p': 0.2}, 0.2, 0.12)
    r = run('synth', tmp_path/'no', '--merge-p', 1.5)
    assert r.returncode == 2 and r.stderr == "pneumonia-kit synth: error: argument --merge-p: '1.5' is not a number between 0 and 1\n", r.stderr
    assert not (tmp_path/'no').exists()
    dcm = sorted((out/'stage_2_train_images').glob('*.dcm'))[0]
    r = run('show', dcm, '--out', tmp_path/'x.png', '--boxes', out/'stage_2_train_labels.csv')
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'x.png').read_bytes()[:4] == b'\x89PNG'
    # the test labels written as a submission (confidence 1) must score 1.0
    import csv
    rows = list(csv.DictReader(open(out/'synthetic_test_labels.csv')))
    subs = {}
    for row in rows:
        s = subs.setdefault(row['patientId'], [])
        if row['Target'] == '1': s.append(f"1.0 {row['x']} {row['y']} {row['width']} {row['height']}")
    sub = tmp_path/'sub.csv'
    sub.write_text('patientId,PredictionString\n' + ''.join(f'{k},{" ".join(v)}\n' for k, v in subs.items()))
    r = run('score', sub, out/'synthetic_test_labels.csv')
    assert r.returncode == 0, r.stderr
    if any(subs.values()): assert r.stdout.strip().splitlines()[-1] == 'mAP: 1.0000', r.stdout


def test_train_set(tiny_twin, tmp_path):
    "`train --set` reaches any ModelCfg/TrainCfg field and lands in config.json; a field no config has: one line, exit 2"
    r = run('train', tiny_twin, '--preset', 'tiny', '--out', tmp_path/'bad', '--set', 'train.lr=2e-3', 'model.nope=1')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith('pneumonia-kit train: error: --set model.nope: ModelCfg has no field nope; known:'), r.stderr
    assert not (tmp_path/'bad').exists()
    r = run('train', tiny_twin, '--preset', 'tiny', '--epochs', 1, '--device', 'cpu', '--out', tmp_path/'run',
            '--set', 'model.levels=3,6', 'train.lr=2e-3', '--set', 'train.oof_top_k=50')
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((tmp_path/'run'/'config.json').read_text())
    assert (cfg['model']['levels'], cfg['model']['backbone'], cfg['train']['lr'], cfg['train']['oof_top_k'],
            cfg['train']['epochs']) == ([3, 6], 'resnet_tiny', 2e-3, 50, 1), cfg
