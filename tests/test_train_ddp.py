"""The distributed path of `train.fit` on the CPU: 2 Gloo processes, the tiny model, a tiny synthetic twin, 1 epoch.

Two ways in: `torch.multiprocessing` spawning `fit` (to look inside each rank), and `torchrun -m pneumonia_kit.train`
(the command line people use on GPU machines).
"""
import gc, json, os, socket, subprocess, sys
from pathlib import Path
import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def twin(tmp_path_factory):
    "16 synthetic images of 256 px with their 128 px cache (built here so the ranks do not wait for it)"
    from pneumonia_kit.synth import synth_dataset
    from pneumonia_kit.cache import build_cache
    root = tmp_path_factory.mktemp('ddp')/'twin'
    synth_dataset(root, n_images=16, n_test=2, seed=0, size=256, workers=1, progress=False)
    build_cache(root, 128, 'train', workers=1, progress=False)
    return root

def _rank(rank, port, root, out, results):
    "One DDP process: train, then report its weights and how often it wrote a checkpoint (into `results`, not `out`)"
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    gc.disable()   # what `fit` leaves in reference cycles stays there, as it may in a real run
    import pneumonia_kit.train as T
    from pneumonia_kit.presets import preset_cfgs
    saved = []
    save = T.save_checkpoint
    T.save_checkpoint = lambda path, *a, **k: saved.append(str(path)) or save(path, *a, **k)
    mc, tc = preset_cfgs('tiny', epochs=1, batch_size=2)
    res = T.fit(root, 0, out, mc, tc, device='cpu')
    torch.save(dict(weights=res['model'].state_dict(), saved=saved, world_size=res['world_size'],
                    train_loss=res['history'][-1]['train_loss'], threads=_threads()), Path(results)/f'rank{rank}.pt')

def _threads() -> list:
    "Names of this process's threads (Linux)"
    return sorted(Path(f'/proc/self/task/{t}/comm').read_text().strip() for t in os.listdir('/proc/self/task'))

def test_ddp_spawn(twin, tmp_path):
    out, results = tmp_path/'run', tmp_path/'results'
    results.mkdir()
    mp.spawn(_rank, args=(_free_port(), str(twin), str(out), str(results)), nprocs=WORLD, join=True)
    r = [torch.load(results/f'rank{i}.pt', weights_only=True) for i in range(WORLD)]
    assert [x['world_size'] for x in r] == [WORLD] * WORLD
    # only rank 0 writes: one checkpoint, one log, one set of out-of-fold files
    assert r[0]['saved'] == [str(out/'checkpoints'/'epoch_001.pt')] and r[1]['saved'] == []
    assert sorted(p.name for p in (out/'checkpoints').iterdir()) == ['epoch_001.pt']
    assert sorted(p.name for p in (out/'oof').iterdir()) == ['epoch_001.npz']
    assert json.loads((out/'summary.json').read_text())['world_size'] == WORLD
    # the ranks end with identical weights, those of the checkpoint, and they did train
    w0, w1 = r[0]['weights'], r[1]['weights']
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    ck = torch.load(out/'checkpoints'/'epoch_001.pt', weights_only=True)
    assert all(torch.equal(w0[k], ck['model'][k]) for k in w0)
    from pneumonia_kit.model import create_model
    torch.manual_seed(ck['config']['train']['seed'])
    init = create_model(ck['config']['model']).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0 if w0[k].is_floating_point())
    # losses are averaged over both ranks' images, so both report the same number
    assert r[0]['train_loss'] == r[1]['train_loss']
    # the process group ended with `fit`, its Gloo threads too: left to interpreter exit, one aborted rank 0 once
    # ('terminate called without an active exception': the run failed after it had finished)
    assert [x['threads'] for x in r if any('gloo' in t for t in x['threads'])] == []

def _torchrun(tmp_path):
    "torchrun's own logs go under the test's folder (by default it leaves a `torchelastic_*` folder in /tmp per run)"
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(WORLD), '--master_port', str(_free_port()),
            '--log-dir', str(tmp_path/'torchrun_logs')]

def test_torchrun_cli(twin, tmp_path):
    out = tmp_path/'run'
    cmd = [*_torchrun(tmp_path), '-m', 'pneumonia_kit.train', str(twin), '--fold', '1', '--out', str(out), '--preset', 'tiny',
           '--epochs', '1', '--batch-size', '2', '--device', 'cpu']
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count('1/1 epochs (completed)') == 1, p.stdout   # printed by rank 0 only
    s = json.loads((out/'summary.json').read_text())
    assert (s['world_size'], s['epochs_done'], s['device']) == (WORLD, 1, 'cpu')
    assert sorted(p.name for p in (out/'checkpoints').iterdir()) == ['epoch_001.pt']
    assert json.loads((out/'config.json').read_text())['train']['fold'] == 1
    assert (tmp_path/'torchrun_logs').is_dir()

@pytest.mark.parametrize('flags,message', [(['--fold', '9'], 'fold 9 is out of range: use 0..3'),
                                           (['--weights-file', '/nonexistent/w.pth'], '/nonexistent/w.pth: weights file not found')])
def test_torchrun_bad_settings(twin, tmp_path, flags, message):
    "A setting error (on every rank, or on rank 0 only: the model is built there first) stops all ranks with the message"
    cmd = [*_torchrun(tmp_path), '-m', 'pneumonia_kit.train', str(twin), '--out', str(tmp_path/'run'), '--preset', 'tiny',
           '--device', 'cpu', *flags]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode != 0
    assert message in p.stderr, p.stderr[-3000:]
    assert not (tmp_path/'run'/'checkpoints').exists()
