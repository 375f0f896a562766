"""One rank of the data-parallel tests (tests/test_ddp.py): a small classifier on 1,024 MNIST images through `fit`. Run it plainly
for one process, or under `torchrun` for several; rank 0 writes the final weights and the epoch log. `--die-at K`: rank 1 exits
abruptly after optimizer step K (a crashed machine), leaving the other ranks and the last checkpoint behind."""
import argparse, json, os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from opengen.learner import Callback, MetricsCB, fit, is_main_process, leave_distributed


class DieCB(Callback):
    "Rank 1 exits without any clean-up after optimizer step `step`."
    def __init__(self, at: int): self.at = at   # (not `self.step`: `step` is a stage of the training step, see TrainCB)
    def after_step(self, learn):
        if learn.rank == 1 and learn.train_iter == self.at: os._exit(17)


if __name__ == '__main__':
    a = argparse.ArgumentParser()
    a.add_argument('--out', required=True); a.add_argument('--bs', type=int, required=True); a.add_argument('--epochs', type=int, default=1)
    a.add_argument('--die-at', type=int, default=None); a.add_argument('--resume', action='store_true')
    o = a.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    if os.environ.get('RANK', '0') != '0':
        for p in model.parameters(): p.data.normal_()        # other ranks start elsewhere: fit must broadcast rank 0's weights
    extra = [DieCB(o.die_at)] if o.die_at is not None else []
    learn = fit(model, 'mnist', o.epochs, bs=o.bs, lr=3e-3, loss_func=F.cross_entropy, n_train=1024, n_valid=300,
                out_dir=o.out, resume=o.resume, show=False, progress=False, extra_cbs=extra)
    if is_main_process():
        torch.save(model.state_dict(), Path(o.out) / 'final.pt')
        (Path(o.out) / 'result.json').write_text(json.dumps({'history': learn.history, 'steps': learn.train_iter,
                                                             'world_size': learn.world_size,
                                                             'losses': [r['loss'] for r in learn.cb(MetricsCB).steps]}))
    leave_distributed()
