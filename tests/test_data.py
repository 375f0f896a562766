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
