"""The data module reads the real IDX files and fails clearly when they are missing."""
import urllib.error

import pytest
import torch

from opengen.data import RAW_FILES, DataNotFoundError, get_dls, load_dataset, label_names

# Class counts of the MNIST training set (LeCun et al.), a fingerprint of the right labels.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_train_is_the_real_thing():
    ds = load_dataset('mnist', 'train')
    assert ds.x.shape == (60000, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.y.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert ds.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.x.max() == 255 and ds.x.min() == 0


def test_fashion_test_split_and_names():
    ds = load_dataset('fashion', 'test')
    assert ds.x.shape == (10000, 28, 28) and ds.y.bincount().tolist() == [1000] * 10
    assert label_names('fashion')[9] == 'Ankle boot'


@pytest.mark.parametrize('name,folder', [('mnist', 'MNIST'), ('fashion', 'FashionMNIST')])
def test_missing_data_offline_gives_a_clear_error(tmp_path, monkeypatch, name, folder):
    # Simulate a machine without internet: torchvision's download fails.
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr('torchvision.datasets.mnist.download_and_extract_archive', offline)
    with pytest.raises(DataNotFoundError) as e:
        load_dataset(name, root=tmp_path / 'empty')
    msg = str(e.value)
    assert folder in msg and str(tmp_path / 'empty' / folder / 'raw') in msg and 'OPENGEN_DATA' in msg
    assert all(f in msg for f in RAW_FILES)
    assert e.value.__cause__ is None and e.value.__suppress_context__   # no chained traceback soup


def test_missing_data_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match='download=False'):
        load_dataset('mnist', root=tmp_path, download=False)


def test_bad_arguments():
    with pytest.raises(ValueError, match='Unknown dataset'): load_dataset('cifar10')
    with pytest.raises(ValueError, match="'train' or 'test'"): load_dataset('mnist', 'val')


def test_loaders_pixel_range_and_subset():
    dls = get_dls('mnist', bs=50, pixel_range=(-1, 1), n_train=500, n_valid=200)
    xb, yb = next(iter(dls.train))
    assert xb.shape == (50, 1, 28, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert xb.min() == -1 and xb.max() == 1
    assert len(dls.train) == 10 and sum(len(y) for _, y in dls.valid) == 200
    again = get_dls('mnist', bs=50, n_train=500)
    assert torch.equal(again.train.y, dls.train.y)   # the subset is the same for the same seed


# ---- EMNIST letters and QuickDraw, on small files written in the real formats (issue 22) ----
import numpy as np  # noqa: E402


def _write_idx(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes([0, 0, 8, a.ndim]) + b''.join(int(s).to_bytes(4, 'big') for s in a.shape) + a.astype(np.uint8).tobytes())


def _emnist(root, n_train=52, n_test=26):
    rng = np.random.default_rng(1)
    imgs = {}
    for s, n in (('train', n_train), ('test', n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8); imgs[s] = x
        _write_idx(root / 'EMNIST/raw' / f'emnist-letters-{s}-images-idx3-ubyte', x.transpose(0, 2, 1))   # NIST stores them transposed
        _write_idx(root / 'EMNIST/raw' / f'emnist-letters-{s}-labels-idx1-ubyte', np.arange(n) % 26 + 1)
    return imgs


def test_emnist_letters_upright_with_labels_from_zero(tmp_path):
    imgs = _emnist(tmp_path)
    for s in ('train', 'test'):
        ds = load_dataset('emnist-letters', s, root=tmp_path, download=False)
        assert torch.equal(ds.x, torch.from_numpy(imgs[s])) and ds.x.dtype == torch.uint8
        assert ds.y.tolist() == [i % 26 for i in range(len(imgs[s]))] and ds.classes == tuple('abcdefghijklmnopqrstuvwxyz')
        assert ds.name == 'emnist-letters' and ds.split == s
    dls = get_dls('EMNIST_letters', bs=8, root=tmp_path)
    xb, yb = next(iter(dls.train))
    assert xb.shape == (8, 1, 28, 28) and 0 <= xb.min() and xb.max() <= 1 and dls.classes[0] == 'a'


def test_emnist_missing_offline_is_one_clear_message(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match=r'(?s)EMNIST letters was not found in .*EMNIST/raw \(download=False\)'):
        load_dataset('emnist-letters', root=tmp_path, download=False)
    import torchvision.datasets.mnist as tvm
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(tvm, 'download_and_extract_archive', offline)
    with pytest.raises(DataNotFoundError, match=r'(?s)download failed: URLError.*emnist-letters-train-images-idx3-ubyte'):
        load_dataset('emnist-letters', root=tmp_path, download=True)


def test_quickdraw_split_is_fixed_disjoint_and_per_class(tmp_path):
    (tmp_path / 'QuickDraw').mkdir()
    rng = np.random.default_rng(0)
    raw = {c: rng.integers(0, 256, (90, 784), dtype=np.uint8) for c in ('cat', 'apple')}
    for c, a in raw.items(): np.save(tmp_path / 'QuickDraw' / f'{c}.npy', a)
    tr = load_dataset('quickdraw', 'train', root=tmp_path, classes=['cat', 'apple'], download=False, per_class=60)
    te = load_dataset('quickdraw', 'test', root=tmp_path, classes=['cat', 'apple'], download=False, per_class=60)
    assert (len(tr.x), len(te.x)) == (100, 20) and tr.classes == ('cat', 'apple')
    assert tr.y.tolist() == [0] * 50 + [1] * 50 and te.y.tolist() == [0] * 10 + [1] * 10
    for c, i in (('cat', 0), ('apple', 1)):   # every image is one of the file's, unchanged; the splits never share one
        rows = {bytes(r) for r in raw[c]}
        a, b = {bytes(r) for r in tr.x[tr.y == i].flatten(1).numpy()}, {bytes(r) for r in te.x[te.y == i].flatten(1).numpy()}
        assert a <= rows and b <= rows and not (a & b) and len(a) == 50 and len(b) == 10


def test_quickdraw_bad_input_and_offline(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"quickdraw needs classes=\[\.\.\.\]"):
        load_dataset('quickdraw', root=tmp_path, download=False)
    with pytest.raises(DataNotFoundError, match=r"(?s)QuickDraw 'dog' was not found .*dog\.npy"):
        load_dataset('quickdraw', root=tmp_path, classes=['dog'], download=False)
    import opengen.data as d
    def offline(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(d.urllib.request, 'urlopen', offline)
    with pytest.raises(DataNotFoundError, match='download failed: URLError'):
        load_dataset('quickdraw', root=tmp_path, classes=['dog'], download=True)
    assert not list((tmp_path / 'QuickDraw').glob('*'))                      # nothing half-written is left behind
    (tmp_path / 'QuickDraw').mkdir(exist_ok=True); np.save(tmp_path / 'QuickDraw' / 'bad.npy', np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r'not QuickDraw numpy bitmaps: expected \(N, 784\) uint8'):
        load_dataset('quickdraw', root=tmp_path, classes=['bad'], download=False)
    with pytest.raises(ValueError, match='takes no options'):
        load_dataset('mnist', classes=['cat'])
