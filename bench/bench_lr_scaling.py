#!/usr/bin/env python
"""Does the scaled recipe still train? (issue 20 item 4) The same network, data and epochs trained at the recipe's batch
and learning rate, and at a 4x larger batch with the lr scaled by `step.lr_schedule` (square-root rule, linear warm-up):
the training loss per epoch of both, and the validation loss/mAP at the end. CPU-sized by default (the tiny preset).

    python bench/bench_lr_scaling.py --out /tmp/lr_scaling --epochs 6
"""
import argparse, dataclasses, json, sys, time
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='/tmp/pk_lr_scaling')
    p.add_argument('--preset', default='tiny')
    p.add_argument('--n-images', type=int, default=96)
    p.add_argument('--epochs', type=int, default=6)
    p.add_argument('--base-batch', type=int, default=4)
    p.add_argument('--factor', type=int, default=4, help='the scaled run uses base-batch x factor')
    p.add_argument('--lr', type=float, default=1e-3, help='lr at the base batch')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--aug', default=None, help="TrainCfg.aug_level of both runs (default: the preset's)")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from pneumonia_kit.synth import synth_dataset
    from pneumonia_kit.train import fit
    from pneumonia_kit.presets import preset_cfgs
    out = Path(a.out); twin = out/'twin'
    if not (twin/'stage_2_train_labels.csv').exists():
        synth_dataset(twin, n_images=a.n_images, n_test=0, seed=0, size=256, workers=1, progress=False)
    res = {}
    for name, batch in (('recipe', a.base_batch), ('scaled', a.base_batch * a.factor)):
        mc, tc = preset_cfgs(a.preset, epochs=a.epochs, batch_size=batch, lr=a.lr)
        tc = dataclasses.replace(tc, lr_base_batch=a.base_batch, lr_scaling='sqrt', progress=False, n_folds=4, aug_level=a.aug or tc.aug_level)
        t = time.time()
        r = fit(twin, 0, out/name, mc, tc, device='cpu')
        cfg = json.loads((out/name/'config.json').read_text())
        res[name] = dict(batch=batch, schedule={k: cfg['schedule'][k] for k in ('lr', 'lr_factor', 'warmup_steps', 'lr_rule')},
                         train_loss=[round(h['train_loss'], 4) for h in r['history']],
                         val_loss=[round(h['val_loss'], 4) for h in r['history']],
                         val_map=[round(h['val_map'], 4) for h in r['history']], seconds=round(time.time() - t, 1))
        print(name, json.dumps(res[name]), file=sys.stderr, flush=True)
    (out/'lr_scaling.json').write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


if __name__ == '__main__': main()
