"""The learner trains, resumes exactly after an interruption, and stops cleanly on nan."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opengen.checkpoints import load_state
from opengen.data import get_dls
from opengen.learner import (Callback, CheckpointCB, EMACB, GradClipCB, Learner, MetricsCB, NonFiniteLossError,
                             OneCycleCB, ProgressCB, synthetic_regression)


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Dropout(0.1), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 10))   # (B,16,7,7) -> (B,784) -> (B,10)


class KillAt(Callback):
    "Simulate a crash after optimizer step `n`."
    def __init__(self, n): self.n = n
    def after_batch(self, learn):
        if learn.training and learn.train_iter == self.n: raise KeyboardInterrupt


def make(path, seed, extra=()):
    torch.manual_seed(seed)
    dls = get_dls('mnist', bs=64, n_train=640, n_valid=256)   # 10 batches per epoch
    return Learner(tiny_cnn(), dls, F.cross_entropy, lr=1e-2, device='cpu',
                   cbs=[OneCycleCB(), EMACB(0.99), GradClipCB(2.0), MetricsCB(show=False), ProgressCB(),
                        CheckpointCB(path, every=4, resume=True), *extra])


def test_loss_falls_on_mnist():
    torch.manual_seed(0)
    dls = get_dls('mnist', bs=64, n_train=1280, n_valid=256)
    learn = Learner(tiny_cnn(), dls, F.cross_entropy, lr=1e-2, device='cpu', cbs=[OneCycleCB(), MetricsCB(show=False)])
    learn.fit(2)
    ep = learn.cb(MetricsCB).epochs
    steps = [r['loss'] for r in learn.cb(MetricsCB).steps]
    assert sum(steps[-5:]) / 5 < 0.7 * sum(steps[:5]) / 5
    assert ep[-1]['valid_loss'] < ep[0]['valid_loss'] < 2.3


def test_interrupted_then_resumed_matches_uninterrupted(tmp_path):
    a = make(tmp_path / 'a.safetensors', seed=0).fit(3)
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / 'b.safetensors', seed=0, extra=[KillAt(15)]).fit(3)
    ck = load_state(tmp_path / 'b.safetensors')
    assert ck['train_iter'] == 12 and ck['loader']['pos'] == 2   # mid-epoch: epoch 1, batch 2
    b = make(tmp_path / 'b.safetensors', seed=123).fit(3)        # different init: everything must come from the file
    assert a.train_iter == b.train_iter == 30
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    for va, vb in zip(a.ema_model.state_dict().values(), b.ema_model.state_dict().values()):
        assert torch.equal(va, vb)
    assert [r['loss'] for r in a.cb(MetricsCB).steps] == [r['loss'] for r in b.cb(MetricsCB).steps]
    assert a.opt.param_groups[0]['lr'] == b.opt.param_groups[0]['lr']


def test_resume_after_epoch_boundary(tmp_path):
    a = make(tmp_path / 'a.safetensors', seed=0).fit(2)
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / 'b.safetensors', seed=0, extra=[KillAt(11)]).fit(2)
    assert load_state(tmp_path / 'b.safetensors')['train_iter'] == 10   # saved at the end of epoch 0
    b = make(tmp_path / 'b.safetensors', seed=7).fit(2)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'c.safetensors'
    learn = Learner(nn.Linear(2, 1), synthetic_regression(), F.mse_loss, lr=1e6, opt_func=torch.optim.SGD,
                    device='cpu', cbs=[CheckpointCB(path, every=1)])
    with pytest.raises(NonFiniteLossError, match='weights were not updated'):
        learn.fit(5)
    good = load_state(path)
    assert torch.isfinite(good['model']['weight']).all()
    assert torch.isfinite(learn.model.weight).all()   # the bad step was never applied


def test_single_batch_debug_does_not_train():
    torch.manual_seed(0)
    learn = Learner(nn.Linear(2, 1), synthetic_regression(), F.mse_loss, device='cpu')
    w = learn.model.weight.detach().clone()
    rep = learn.debug()
    assert rep['preds'].startswith('(32, 1)') and set(rep['grad_norms']) == {'weight', 'bias'}
    assert torch.equal(learn.model.weight, w) and learn.train_iter == 1


def test_metrics_files(tmp_path):
    torch.manual_seed(0)
    learn = Learner(nn.Linear(2, 1), synthetic_regression(), F.mse_loss, lr=0.1, device='cpu',
                    cbs=[MetricsCB({'mae': lambda p, y: (p - y).abs().mean()}, out_dir=tmp_path, show=False)])
    learn.fit(2)
    assert {'history.csv', 'epochs.csv', 'loss_curve.png'} <= {p.name for p in tmp_path.iterdir()}
    header = (tmp_path / 'epochs.csv').read_text().splitlines()[0]
    assert header.startswith('epoch,train_loss,train_mae,valid_loss,valid_mae')


def test_bad_fit_arguments():
    learn = Learner(nn.Linear(2, 1), synthetic_regression(), F.mse_loss, device='cpu')
    with pytest.raises(ValueError, match='n_epochs'): learn.fit(-1)


@pytest.mark.parametrize('avx512_bf16, amx, native', [(False, False, False), (True, False, True), (False, True, True), (True, True, True)])
def test_a_cpu_has_native_bf16_only_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    "oneDNN reports bf16 on plain AVX-512 too, where it is emulated and slower than fp32: that CPU must count as having none."
    from opengen.learner import bf16_supported
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)
    assert bf16_supported('cpu') is (native and torch.backends.mkldnn.is_available())


def test_bf16_runs_the_forward_pass_in_bfloat16_keeps_fp32_weights_and_falls_back_with_a_line(monkeypatch, capsys):
    from opengen.learner import fit
    seen = []
    class Seen(Callback):
        def after_loss(self, learn): seen.append((learn.preds.dtype, learn.loss.dtype))
    dls = get_dls('mnist', bs=64, n_train=1280, n_valid=256)
    def run(precision):
        torch.manual_seed(0); m = tiny_cnn(); seen.clear()
        learn = fit(m, dls=dls, epochs=2, loss_func=F.cross_entropy, lr=1e-2, precision=precision, ema=None,
                    show=False, progress=False, extra_cbs=[Seen()])
        return m, learn, seen[-1]
    m32, l32, dt32 = run('fp32')
    assert dt32 == (torch.float32, torch.float32) and l32.precision == 'fp32'
    monkeypatch.setattr('opengen.learner.bf16_supported', lambda device=None: True)    # as on a CPU with native bf16 (emulated here if not)
    m16, l16, dt16 = run('bf16')
    assert dt16 == (torch.bfloat16, torch.float32) and l16.precision == 'bf16'                         # the loss in fp32
    assert all(p.dtype == torch.float32 for p in m16.parameters())                                     # the weights stay fp32
    assert not all(torch.equal(a, b) for a, b in zip(m32.parameters(), m16.parameters()))
    v32, v16 = l32.history[-1]['valid_loss'], l16.history[-1]['valid_loss']
    assert abs(v16 - v32) < 0.15 * v32, (v32, v16)                                                     # it learns as fp32 does
    monkeypatch.setattr('opengen.learner.bf16_supported', lambda device=None: False)                   # a CPU without bf16
    capsys.readouterr()
    _, lf, dtf = run('bf16')
    assert lf.precision == 'fp32' and dtf[0] == torch.float32 and 'no native bfloat16' in capsys.readouterr().out
    with pytest.raises(ValueError, match='precision must be one of fp32, bf16'): run('fp16')


# ---- TensorBoard tracking (the track extra; installed with dev) ----
from opengen.learner import TensorBoardCB, TrainCB, fit  # noqa: E402


class _Blob(nn.Module):
    "A regression model that can also `sample` class-conditional images: the callback logs both."
    condition, n_classes = 'label', 10
    def __init__(self): super().__init__(); self.lin = nn.Linear(2, 1)
    def forward(self, x): return self.lin(x)
    def training_cbs(self): return [TrainCB(loss_func=F.mse_loss)]
    def sample(self, n, labels=None, *, generator=None):
        assert labels is not None and len(labels) == n          # a conditional model is asked for labels
        return (labels.float() / 9).view(n, 1, 1, 1).expand(n, 1, 28, 28) + 0 * self.lin.weight.sum()


def test_tensorboard_event_file_holds_the_run(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    learn = fit(_Blob(), epochs=2, dls=synthetic_regression(), tensorboard=tmp_path / 'tb', show=False, progress=False)
    ev = EventAccumulator(str(tmp_path / 'tb'), size_guidance={'scalars': 0, 'images': 0}).Reload()
    rows = learn.cb(MetricsCB).epochs
    for key in ('train_loss', 'valid_loss', 'time_s'):
        got = ev.Scalars(f'epoch/{key}')
        assert [e.step for e in got] == [0, 1] and all(abs(e.value - r[key]) < 1e-4 * max(1, abs(r[key])) for e, r in zip(got, rows))
    steps = {r['step']: r['loss'] for r in learn.cb(MetricsCB).steps}
    logged = ev.Scalars('step/loss')
    assert logged and all(e.step % 10 == 0 and abs(e.value - steps[e.step]) < 1e-5 for e in logged)
    assert len(ev.Images('samples')) == 2 and 'loss_curve' in ev.Tags()['images']
    grid = TensorBoardCB(tmp_path / 'g', n_images=16).sample_grid(learn.model)
    assert grid.shape == (3, 4 * 28 + 5 * 2, 4 * 28 + 5 * 2)
    assert abs(grid[0, 2 + 14, 2 + 30 + 14].item() - 1 / 9) < 1e-6          # the second tile is the class-1 sample


def test_tensorboard_without_the_extra_is_one_clear_line(monkeypatch, tmp_path):
    import builtins
    real = builtins.__import__
    def no_tb(name, *a, **k):
        if name.startswith('torch.utils.tensorboard'): raise ImportError('no tensorboard', name='tensorboard')
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, '__import__', no_tb)
    with pytest.raises(ImportError, match=r'track extra \(tensorboard is missing\).*pip install -e "\.\[track\]"'):
        TensorBoardCB(tmp_path)
