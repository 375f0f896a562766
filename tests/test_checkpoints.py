"""Checkpoints round-trip, refuse pickles and damaged files, and are written atomically."""
import pickle

import pytest
import torch
from torch import nn

from opengen.checkpoints import (Configurable, available_pretrained, load, load_pretrained, load_state, read_meta,
                                 save, save_state, write_model_card)
from opengen.core import WEIGHTS_DIR


class Net(Configurable, nn.Module):
    def __init__(self, n_hidden=8, n_out=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))
        self.register_buffer('scale', torch.ones(n_out))
    def forward(self, x): return self.body(x) * self.scale


class Other(Configurable, nn.Module):
    def __init__(self, n_hidden=8):
        super().__init__(); self.body = nn.Linear(4, n_hidden)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = Net(n_hidden=16)
    p = save(m, tmp_path / 'net.safetensors', meta={'epochs': 3, 'metrics': {'acc': 0.9}})
    return m, p


def test_round_trip(saved):
    m, p = saved
    m2 = load(p)
    x = torch.randn(5, 4)
    assert m2.config == {'n_hidden': 16, 'n_out': 3} and m2.meta['epochs'] == 3 and not m2.training
    with torch.no_grad(): assert torch.equal(m(x), m2(x))
    assert read_meta(p)['class'].endswith('Net')


def test_pickle_files_are_refused(saved, tmp_path):
    m, _ = saved
    torch.save(m.state_dict(), tmp_path / 'zip.pt')
    (tmp_path / 'plain.pkl').write_bytes(pickle.dumps({'w': [1, 2, 3]}, protocol=4))
    for name in ('zip.pt', 'plain.pkl'):
        with pytest.raises(ValueError, match='never unpickles'): load(tmp_path / name)


def test_truncated_and_corrupted_files_are_refused(saved, tmp_path):
    _, p = saved
    data = p.read_bytes()
    for cut in (4, 20, len(data) // 2, len(data) - 1):
        (tmp_path / 'cut.safetensors').write_bytes(data[:cut])
        with pytest.raises(ValueError, match='truncated or corrupted'): load(tmp_path / 'cut.safetensors')
    bad = bytearray(data); bad[-2] ^= 0x55
    (tmp_path / 'flip.safetensors').write_bytes(bytes(bad))
    with pytest.raises(ValueError, match='checksum'): load(tmp_path / 'flip.safetensors')
    (tmp_path / 'junk.safetensors').write_bytes(b'hello world, not a checkpoint')
    with pytest.raises(ValueError, match='not a safetensors file'): load(tmp_path / 'junk.safetensors')
    with pytest.raises(FileNotFoundError, match='No checkpoint'): load(tmp_path / 'absent.safetensors')


def test_wrong_architecture_is_refused(saved, tmp_path):
    _, p = saved
    with pytest.raises(ValueError, match='holds a'): load(p, model_cls=Other)
    save(Net(n_hidden=16), tmp_path / 'lie.safetensors', config={'n_hidden': 32, 'n_out': 3})
    with pytest.raises(ValueError, match='shape mismatch'): load(tmp_path / 'lie.safetensors')


def test_atomic_save_keeps_the_old_file(saved, tmp_path):
    m, p = saved
    before = p.read_bytes()
    with pytest.raises(TypeError): save(m, p, meta={'oops': object()})
    assert p.read_bytes() == before and not [f for f in tmp_path.iterdir() if '.tmp-' in f.name]


def test_state_round_trip_and_kind_check(tmp_path):
    opt = torch.optim.AdamW(Net().parameters())
    state = {'opt': opt.state_dict(), 'rng': torch.get_rng_state(), 'step': 3, 'pair': (1, 'a')}
    back = load_state(save_state(tmp_path / 's.safetensors', state))
    assert back['step'] == 3 and back['pair'] == (1, 'a') and torch.equal(back['rng'], state['rng'])
    with pytest.raises(ValueError, match='not a model'): load(tmp_path / 's.safetensors')


def test_load_pretrained_lists_names(saved, tmp_path):
    m, _ = saved
    wd = tmp_path / 'weights'
    save(m, wd / 'demo.safetensors', meta={'description': 'demo', 'metrics': {'acc': 0.9}})
    card = write_model_card(wd / 'demo.safetensors').read_text()
    assert 'acc' in card and 'n_hidden' in card
    assert available_pretrained(wd) == ['demo']
    assert isinstance(load_pretrained('demo', wd), Net)
    with pytest.raises(ValueError, match='Available: demo'): load_pretrained('nope', wd)


def test_every_shipped_weight_has_a_card_and_loads():
    for name in available_pretrained():
        assert (WEIGHTS_DIR / f'{name}.md').exists(), f'{name} has no model card'
        assert load_pretrained(name) is not None


def test_keyword_only_constructors():
    with pytest.raises(TypeError, match='keyword arguments only'): Net(8)
