"""The command line: one subprocess proves the console script works (and draws the digit it was asked for); every
other path runs in-process through `main([...])`: one-line errors, training, resume, sampling of every model family."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from opengen.checkpoints import load
from opengen.cli import main
from opengen.metrics import classifier_logits_and_features

BIN = Path(sys.executable).parent / 'opengen'


def read_grid(path: Path, n: int, scale: int = 2, pad: int = 1) -> torch.Tensor:
    "The n images (n,1,28,28) in [0, 1] of a PNG grid written by `opengen sample` (square-ish grid, grey padding, scaled)."
    a = np.asarray(Image.open(path).convert('L'), dtype=np.float32)[::scale, ::scale] / 255
    nrow = int(np.ceil(np.sqrt(n)))
    assert a.shape == (-(-n // nrow) * (28 + pad) + pad, nrow * (28 + pad) + pad), a.shape
    cells = [a[pad + r * (28 + pad):pad + r * (28 + pad) + 28, pad + c * (28 + pad):pad + c * (28 + pad) + 28]
             for r, c in (divmod(i, nrow) for i in range(n))]
    return torch.tensor(np.stack(cells))[:, None]


def digits(path: Path, n: int) -> list[int]:
    "What the MNIST classifier reads in each image of the grid."
    return classifier_logits_and_features(read_grid(path, n))[0].argmax(1).tolist()


def run(args, capsys):
    "`opengen ARGS` in this process: (exit code, stdout, stderr)."
    try: rc = main([str(a) for a in args])
    except SystemExit as e: rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_console_script_draws_the_digit_asked_for(tmp_path):
    r = subprocess.run([str(BIN), 'sample', 'cvae', '--digit', '7', '-n', '16', '--out', str(tmp_path / 'sevens.png')],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'wrote 16 samples' in r.stdout
    d = digits(tmp_path / 'sevens.png', 16)
    assert d.count(7) >= 14, d   # (the console script is `main`: its one-line errors are tested in-process below)


@pytest.mark.parametrize('args', [
    ['sample', 'cvae', '--digit', '10', '--out', 'x.png'],
    ['sample', 'cvae', '--digit', '-1', '--out', 'x.png'],
    ['sample', 'cvae', '--out', 'x.png'],
    ['sample', 'cvae', '--digit', 'seven', '--out', 'x.png'],
    ['sample', 'nope', '--out', 'x.png'],
    ['sample', 'cvae', '--digit', '3', '--weights', 'missing.safetensors', '--out', 'x.png'],
    ['sample', 'cvae', '--digit', '3', '--out', 'x.jpg'],
    ['sample', 'cvae', '--digit', '3', '-n', '0', '--out', 'x.png'],
    ['sample', 'cgan', '--digit', '11', '--out', 'x.png'],
    ['sample', 'cgan', '--digit', '4', '--guidance-scale', '2', '--out', 'x.png'],
    ['sample', 'ddpm', '--digit', '4', '--steps', '0', '--out', 'x.png'],
    ['sample', 'ddpm', '--digit', '4', '--steps', '251', '--out', 'x.png'],
    ['sample', 'text2img', '--out', 'x.png'],
    ['sample', 'text2img', '--digit', '7', '--out', 'x.png'],
    ['sample', 'text2img', '--prompt', ' ', '--out', 'x.png'],
    ['sample', 'cgan', '--prompt', 'seven', '--out', 'x.png'],
    ['sample', 'cgan', '--digit', '3', '--temperature', '0.5', '--out', 'x.png'],
    ['sample', 'flow', '--digit', '3', '--temperature', '0', '--out', 'x.png'],
    ['sample', 'flow', '--digit', '3', '--temperature', 'nan', '--out', 'x.png'],
    ['sample', 'flow', '--digit', '3', '--steps', '10', '--out', 'x.png'],
    ['sample', 'flow', '--out', 'x.png'],
    ['sample', 'dalle', '--digit', '7', '--out', 'x.png'],
    ['sample', 'dalle', '--prompt', 'a seven', '--top-k', '0', '--out', 'x.png'],
    ['sample', 'dalle', '--prompt', 'a seven', '--top-k', '999', '--out', 'x.png'],
    ['sample', 'dalle', '--prompt', 'a seven', '--steps', '10', '--out', 'x.png'],
    ['sample', 'dalle', '--prompt', 'a seven', '--guidance-scale', 'nan', '--out', 'x.png'],
    ['sample', 'flow', '--digit', '3', '--top-k', '8', '--out', 'x.png'],
    ['sample', 'fm', '--out', 'x.png'],
    ['sample', 'fm', '--digit', '5', '--sampler', 'ddim', '--out', 'x.png'],
    ['sample', 'fm', '--digit', '5', '--steps', '0', '--out', 'x.png'],
    ['sample', 'fm', '--digit', '5', '--steps', '1001', '--out', 'x.png'],
    ['sample', 'ddpm', '--digit', '5', '--sampler', 'heun', '--out', 'x.png'],
    ['sample', 'ldm', '--digit', '12', '--out', 'x.png'],
    ['sample', 'ldm', '--digit', '2', '--temperature', '0.5', '--out', 'x.png'],
    ['sample', 'text2img', '--dataset', 'fashion', '--prompt', 'a sneaker', '--out', 'x.png'],
    ['sample', 'cgan', '--dataset', 'emnist', '--digit', '2', '--out', 'x.png'],
    ['train', 'cvae', '--epochs', '0', '--out', 'somewhere'],
    ['train', 'cvae', '--epochs', '1', '--out', 'fresh_dir', '--resume'],
    ['train', 'cvae', '--epochs', '1', '--n-train', '10', '--out', 'x'],
    ['train', 'cgan', '--cond', '--epochs', '1', '--out', 'x'],
    ['train', 'cgan', '--latent-dim', '8', '--epochs', '1', '--out', 'x'],
    ['train', 'nope', '--out', 'x'],
    ['train', 'cvae_fashion', '--dataset', 'mnist', '--out', 'x'],
    ['train', 'ddpm', '--eval-n', '15', '--out', 'x'],
    ['train', 'cvae', '--nproc', '0', '--out', 'x'],
    ['bench', '-n', '15'],
    ['bench', '--repeats', '0'],
    ['bench', '--models', 'nope'],
    ['bench', '--presets', 'huge'],
])
def test_bad_arguments_give_one_line(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(args, capsys)
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'error' in lines[0] and 'Traceback' not in err, err
    assert not (tmp_path / 'x.png').exists() and not (tmp_path / 'x.jpg').exists()


def test_list_names_every_shipped_weight(capsys):
    rc, out, _ = run(['list'], capsys)
    assert rc == 0 and {'cvae_mnist', 'ddpm_cond_mnist', 'text2img_mnist', 'classifier_mnist'} <= set(out.split())


def test_sample_a_fashion_model(tmp_path, capsys):
    "`--dataset fashion` draws from the Fashion weights: the Fashion classifier reads the class asked for (7: Sneaker)."
    rc, out, err = run(['sample', 'cgan', '--dataset', 'fashion', '--digit', '7', '-n', '16', '--out', tmp_path / 's.png'], capsys)
    assert rc == 0 and 'wrote 16 samples' in out, err
    read = classifier_logits_and_features(read_grid(tmp_path / 's.png', 16), 'fashion')[0].argmax(1).tolist()
    assert read.count(7) >= 12, read
    rc, _, err = run(['sample', 'text2img', '--dataset', 'fashion', '--prompt', 'a sneaker', '--out', tmp_path / 't.png'], capsys)
    assert rc == 2 and 'no shipped text2img weights for fashion' in err and 'cgan' in err, err


def test_train_then_resume(tmp_path, capsys):
    out = tmp_path / 'run'
    rc, so, err = run(['train', 'cvae', '--epochs', '1', '--n-train', '256', '--eval-n', '20', '--out', out], capsys)
    assert rc == 0, err
    w = out / 'cvae_mnist.safetensors'
    assert w.exists() and w.with_suffix('.md').exists() and (out / 'loss_curve.png').exists()
    first = load(w).state_dict()
    rc, so, err = run(['train', 'cvae', '--epochs', '2', '--n-train', '256', '--eval-n', '20', '--out', out, '--resume'], capsys)
    assert rc == 0, err
    assert 'resumed from' in so and 'epoch 1' in so
    assert any(not torch.equal(a, b) for a, b in zip(first.values(), load(w).state_dict().values()))   # it trained on
    rc, so, err = run(['sample', 'cvae', '--digit', '2', '-n', '4', '--weights', w, '--out', tmp_path / 'g.png'], capsys)
    assert rc == 0 and read_grid(tmp_path / 'g.png', 4).shape == (4, 1, 28, 28), err


def test_train_a_recipe_on_the_other_dataset(tmp_path, capsys):
    "The MNIST recipe trained with --dataset fashion writes the fashion weight, whose card names the dataset it saw."
    rc, _, err = run(['train', 'vae', '--dataset', 'fashion', '--epochs', '1', '--n-train', '256', '--eval-n', '20',
                      '--out', tmp_path], capsys)
    assert rc == 0, err
    m = load(tmp_path / 'vae_fashion.safetensors').meta
    assert m['data'].startswith('fashion') and 'fashion' in m['description'], m


def test_train_and_sample_a_cgan(tmp_path, capsys):
    out = tmp_path / 'run'
    rc, _, err = run(['train', 'cgan', '--epochs', '1', '--n-train', '256', '--eval-n', '20', '--out', out], capsys)
    assert rc == 0, err
    w = out / 'cgan_mnist.safetensors'
    assert w.exists() and w.with_suffix('.md').exists() and load(w).meta['epochs'] == 1
    rc, _, err = run(['sample', 'cgan', '--digit', '3', '-n', '8', '--weights', w, '--out', tmp_path / 'g.png'], capsys)
    assert rc == 0 and read_grid(tmp_path / 'g.png', 8).shape == (8, 1, 28, 28), err


@pytest.mark.filterwarnings('ignore::opengen.diffusion.samplers.OutOfRangeWarning')   # one epoch: the samples are still noise
def test_train_and_sample_a_ddpm(tmp_path, capsys):
    out = tmp_path / 'run'
    rc, _, err = run(['train', 'ddpm_cond', '--epochs', '1', '--n-train', '256', '--eval-n', '20', '--out', out], capsys)
    assert rc == 0, err
    w = out / 'ddpm_cond_mnist.safetensors'
    assert w.exists() and w.with_suffix('.md').exists() and (out / 'snapshots').is_dir()
    assert load(w).meta['eval_n'] == 20
    rc, _, err = run(['sample', 'ddpm', '--digit', '4', '--guidance-scale', '2', '--steps', '5', '-n', '4',
                      '--weights', w, '--out', tmp_path / 'fours.png'], capsys)
    assert rc == 0 and read_grid(tmp_path / 'fours.png', 4).shape == (4, 1, 28, 28), err


def test_shipped_ddpm_draws_the_digit_asked_for(tmp_path, capsys):
    rc, _, err = run(['sample', 'ddpm', '--digit', '4', '-n', '9', '--steps', '20', '--out', tmp_path / 'fours.png'], capsys)
    assert rc == 0, err
    d = digits(tmp_path / 'fours.png', 9)
    assert d.count(4) >= 8, d


def test_shipped_flow_draws_the_digit_asked_for(tmp_path, capsys):
    rc, _, err = run(['sample', 'flow', '--digit', '3', '-n', '16', '--out', tmp_path / 'threes.png'], capsys)
    assert rc == 0, err
    d = digits(tmp_path / 'threes.png', 16)
    assert d.count(3) >= 13, d
    rc, _, err = run(['sample', 'flow', '--digit', '3', '-n', '4', '--temperature', '0.5', '--out', tmp_path / 'cold.png'], capsys)
    assert rc == 0 and read_grid(tmp_path / 'cold.png', 4).shape == (4, 1, 28, 28), err


def test_flow_matching_draws_the_digit_asked_for_in_8_steps(tmp_path, capsys):
    rc, _, err = run(['sample', 'fm', '--digit', '5', '--steps', '8', '-n', '9', '--out', tmp_path / 'fives.png'], capsys)
    assert rc == 0, err
    d = digits(tmp_path / 'fives.png', 9)
    assert d.count(5) >= 8, d
    rc, _, err = run(['sample', 'fm', '--digit', '5', '--steps', '4', '--sampler', 'euler', '-n', '4', '--out', tmp_path / 'euler.png'], capsys)
    assert rc == 0 and read_grid(tmp_path / 'euler.png', 4).shape == (4, 1, 28, 28), err


def test_latent_model_draws_the_digit_asked_for(tmp_path, capsys):
    rc, _, err = run(['sample', 'ldm', '--digit', '2', '-n', '9', '--out', tmp_path / 'twos.png'], capsys)
    assert rc == 0, err
    d = digits(tmp_path / 'twos.png', 9)
    assert d.count(2) >= 8, d


def test_text2img_draws_what_the_prompt_says(tmp_path, capsys):
    rc, _, err = run(['sample', 'text2img', '--prompt', 'a handwritten seven', '-n', '9', '--out', tmp_path / 'sevens.png'], capsys)
    assert rc == 0, err
    d = digits(tmp_path / 'sevens.png', 9)
    assert d.count(7) >= 8, d


def test_dalle_draws_what_the_prompt_says(tmp_path, capsys):
    rc, _, err = run(['sample', 'dalle', '--prompt', 'a handwritten seven', '-n', '9', '--out', tmp_path / 'sevens.png'], capsys)
    assert rc == 0, err
    d = digits(tmp_path / 'sevens.png', 9)
    assert d.count(7) >= 8, d
    rc, _, err = run(['sample', 'dalle', '--prompt', 'the digit two', '-n', '4', '--top-k', '16', '--temperature', '0.8',
                      '--guidance-scale', '2', '--out', tmp_path / 'twos.png'], capsys)
    assert rc == 0 and read_grid(tmp_path / 'twos.png', 4).shape == (4, 1, 28, 28), err


def test_train_a_text2img_arm(tmp_path, capsys):
    out = tmp_path / 'run'
    rc, _, err = run(['train', 'ablation_a2', '--epochs', '1', '--n-train', '256', '--eval-n', '20', '--out', out], capsys)
    assert rc == 0, err
    w = out / 'ablation_a2_mnist.safetensors'
    assert w.exists() and w.with_suffix('.md').exists()
    meta = load(w).meta
    assert set(meta['evaluation']) == {'A2', 'A3'} and meta['evaluation']['A2']['guidance_scale'] == 1.0
    assert meta['evaluation']['A2']['check']['heldout']['n'] == 20                # check_n is capped by the evaluation's n


@pytest.mark.parametrize('scale', ['nan', 'inf', '-inf'])
def test_a_guidance_scale_that_is_not_a_number_is_refused(scale, tmp_path, capsys):
    rc, _, err = run(['sample', 'ddpm', '--digit', '4', f'--guidance-scale={scale}', '--out', tmp_path / 'x.png'], capsys)
    assert rc == 2 and 'finite number' in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'x.png').exists()


def test_weights_of_another_model_say_what_they_hold(tmp_path, capsys):
    from opengen.core import WEIGHTS_DIR
    rc, _, err = run(['sample', 'cvae', '--digit', '3', '--weights', WEIGHTS_DIR / 'cgan_mnist.safetensors', '--out', tmp_path / 'x.png'], capsys)
    assert rc == 2 and 'holds a GAN' in err and 'opengen sample cgan --weights' in err, err
    rc, _, err = run(['sample', 'ddpm', '--digit', '3', '--weights', WEIGHTS_DIR / 'classifier_mnist.safetensors', '--out', tmp_path / 'x.png'], capsys)
    assert rc == 2 and 'holds a DomainClassifier' in err and 'cannot draw' in err, err


def test_an_unwritable_out_is_said_in_words(tmp_path, capsys, monkeypatch):
    (tmp_path / 'afile').write_text('in the way'); (tmp_path / 'd.png').mkdir()
    for out, says in ((tmp_path / 'afile' / 'x.png', 'afile is a file, not a folder'), (tmp_path / 'd.png', 'is a folder')):
        rc, _, err = run(['sample', 'cvae', '--digit', '3', '--out', out], capsys)
        assert rc == 2 and says in err and 'Errno' not in err and len(err.strip().splitlines()) == 1, err
    import opengen.cli
    monkeypatch.setattr(opengen.cli.os, 'access', lambda *a: False)      # a read-only folder (the tests may run as root)
    rc, _, err = run(['sample', 'cvae', '--digit', '3', '--out', tmp_path / 'ro' / 'x.png'], capsys)
    assert rc == 2 and 'not writable (permission denied)' in err, err
    rc, _, err = run(['train', 'cvae_mnist', '--epochs', '1', '--out', tmp_path / 'ro2'], capsys)
    assert rc == 2 and 'not writable' in err, err


def test_train_lists_every_recipe_and_refuses_what_a_recipe_cannot_take(tmp_path, capsys):
    from opengen.checkpoints import available_pretrained
    rc, out, _ = run(['train'], capsys)
    assert rc == 0 and set(available_pretrained()) <= {line.split()[0] for line in out.splitlines()}
    rc, _, err = run(['train', 'ddpm_cond_mnist', '--latent-dim', '8', '--out', tmp_path], capsys)
    assert rc == 2 and 'takes no latent_dim' in err, err


def test_bench_times_every_generative_model_it_is_given_and_each_preset(capsys):
    "A printout, not a timed test: one sampling line per generative model (the classifier has nothing to sample), one training line per preset."
    rc, out, err = run(['bench', '--models', 'cgan_mnist,classifier_mnist,ldm_cond_mnist', '-n', '10', '--repeats', '1', '--presets', 'tiny'], capsys)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert [l.split()[:2] for l in lines[1:]] == [['sampling', 'cgan_mnist'], ['sampling', 'ldm_cond_mnist'], ['training', 'U-Net']]
    assert 'ms/image' in lines[2] and '(steps 8, guidance_scale 1.25, sampler euler)' in lines[2] and 'images/s' in lines[3]


def test_bench_train_trains_the_fast_recipe_and_prints_its_time_to_accuracy(tmp_path, capsys):
    "A printout: a line per epoch's snapshot, then the times to 95 % and 99 % (not reached by a 2-epoch run on 256 images) and the FID ratio; --json keeps every figure."
    rc, out, err = run(['bench', '--models', 'cgan_mnist', '-n', '10', '--repeats', '1', '--presets', 'tiny', '--train',
                        '--train-epochs', '2', '--n-train', '256', '--train-eval-n', '20', '--json', tmp_path / 'b.json'], capsys)
    assert rc == 0, err
    lines = [l for l in out.splitlines() if l.startswith('train ')]
    assert [l.split()[1:4] for l in lines[:2]] == [['fm_cond_fast', 'epoch', '1'], ['fm_cond_fast', 'epoch', '2']]
    assert 'time to 95 %: not reached' in lines[2] and "x the real data's" in lines[2] and '8 sampling steps' in lines[2]
    import json
    b = json.loads((tmp_path / 'b.json').read_text())
    assert [s['epoch'] for s in b['time_to_accuracy']['snapshots']] == [1, 2] and b['sampling'][0]['model'] == 'cgan_mnist'
    for bad, msg in [(['--train', 'nope'], 'No recipe named'), (['--train', '--train-eval-n', '15'], '--train-eval-n must be'),
                     (['--train', '--n-train', '5'], '--n-train must be'), (['--json', tmp_path], 'must be a .json file')]:
        rc, _, err = run(['bench', '--models', 'cgan_mnist', *map(str, bad)], capsys)
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, (bad, err)
