"""VQ-VAE (nbs/15_vqvae): quantisation returns the nearest code (against brute force), the straight-through gradient is
the identity on the encoder's output, the VQ terms move the side they should, the EMA update equals its formula on a
hand-made batch, usage and perplexity of known histograms, dead-code restarts and k-means, and the shipped
`vqvae_mnist` against the issue's acceptance: codebook usage ≥ 80 % over the test set, with its reconstruction FID."""
import math

import pytest
import torch

from opengen.models.vqvae import (VQVAE, VectorQuantizer, code_usage, ema_codebook_update, kmeans, nearest_code,
                                  straight_through, vq_losses)
from shipped import shipped


def test_nearest_code_is_the_brute_force_nearest():
    g = torch.Generator().manual_seed(0)
    z, E = torch.randn(500, 8, generator=g), 2 * torch.randn(64, 8, generator=g)
    brute = torch.tensor([min(range(64), key=lambda j: ((zi - E[j]) ** 2).sum().item()) for zi in z])
    assert torch.equal(nearest_code(z, E), brute)
    # codes of very different lengths: the largest dot product would pick the long code
    E2 = torch.tensor([[1., 0.], [10., 0.]])
    assert nearest_code(torch.tensor([[2., 0.]]), E2).item() == 0 and (torch.tensor([[2., 0.]]) @ E2.T).argmax().item() == 1


def test_quantizer_returns_codebook_vectors_of_the_nearest_codes():
    q = VectorQuantizer(K=16, D=4, ema=None, restart=False).eval()
    z_e = torch.randn(3, 4, 5, 5)
    z_q, k, _ = q(z_e)
    assert k.shape == (3, 5, 5) and torch.equal(k, q.quantize(z_e))
    assert torch.allclose(z_q, q.codebook[k].permute(0, 3, 1, 2))
    assert torch.equal(k.flatten(), nearest_code(z_e.permute(0, 2, 3, 1).reshape(-1, 4), q.codebook))


def test_straight_through_gradient_is_the_identity_on_the_encoder_output():
    z_e, z_q, w = torch.randn(2, 4, 3, 3, requires_grad=True), torch.randn(2, 4, 3, 3, requires_grad=True), torch.randn(2, 4, 3, 3)
    out = straight_through(z_e, z_q)
    assert torch.allclose(out, z_q)                                    # the forward value is the code
    ge, gq = torch.autograd.grad((w * out).sum(), (z_e, z_q), allow_unused=True)
    assert torch.allclose(ge, w) and (gq is None or gq.abs().max() == 0)   # d out / d z_e = I; nothing reaches z_q
    # and through the quantizer: the decoder's gradient arrives unchanged at the encoder's output
    q = VectorQuantizer(K=8, D=4, ema=0.99, restart=False).eval()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out, _, _ = q(z)
    assert torch.allclose(torch.autograd.grad((w * out).sum(), z)[0], w)


def test_vq_terms_move_the_side_they_should():
    z_e, z_q = torch.randn(3, 4, 2, 2, requires_grad=True), torch.randn(3, 4, 2, 2, requires_grad=True)
    cb, commit = vq_losses(z_e, z_q, 0.25)
    d = (z_e - z_q).detach()
    assert torch.allclose(cb, d.pow(2).flatten(1).sum(1).mean()) and torch.allclose(commit, 0.25 * cb)
    g = torch.autograd.grad(cb, (z_e, z_q), retain_graph=True, allow_unused=True)
    assert g[0] is None and torch.allclose(g[1], -2 * d / 3)           # the codebook term moves only the codes
    g = torch.autograd.grad(commit, (z_e, z_q), allow_unused=True)
    assert g[1] is None and torch.allclose(g[0], 0.25 * 2 * d / 3)     # the commitment term only the encoder


def test_ema_update_equals_its_formula_on_a_hand_made_batch():
    N, m = torch.tensor([2., 1.]), torch.tensor([[2., 2.], [0., 3.]])
    z, k = torch.tensor([[1., 0.], [3., 2.], [0., -1.]]), torch.tensor([0, 0, 1])
    N1, m1, e = ema_codebook_update(N, m, z, k, gamma=0.5, eps=0.)
    assert torch.allclose(N1, torch.tensor([0.5 * 2 + 0.5 * 2, 0.5 * 1 + 0.5 * 1]))
    assert torch.allclose(m1, torch.tensor([[0.5 * 2 + 0.5 * 4, 0.5 * 2 + 0.5 * 2], [0.5 * 0 + 0., 0.5 * 3 - 0.5]]))
    assert torch.allclose(e, torch.tensor([[3. / 2, 2. / 2], [0., 1. / 1.]]))
    # a code nobody ever used stays finite thanks to the smoothing
    _, _, e = ema_codebook_update(torch.tensor([3., 0.]), torch.zeros(2, 2), torch.randn(4, 2), torch.zeros(4, dtype=torch.long), 0.9, 1e-5)
    assert torch.isfinite(e).all()


def test_the_ema_quantizer_applies_the_update_in_training_only():
    torch.manual_seed(0)
    q = VectorQuantizer(K=4, D=2, ema=0.9, restart=False)
    z_e = torch.randn(2, 2, 3, 3)
    z = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    N, m, e = ema_codebook_update(q.N.clone(), q.m.clone(), z, nearest_code(z, q.codebook), 0.9)
    q.train()(z_e)
    assert torch.allclose(q.codebook, e) and torch.allclose(q.N, N)
    before = q.codebook.clone(); q.eval()(z_e)
    assert torch.equal(q.codebook, before)


def test_usage_and_perplexity_of_known_histograms():
    assert code_usage(torch.arange(8).repeat(5), 8) == pytest.approx({'usage': 1.0, 'perplexity': 8.0})
    assert code_usage(torch.zeros(100, dtype=torch.long), 8) == pytest.approx({'usage': 1 / 8, 'perplexity': 1.0})
    r = code_usage(torch.tensor([0, 0, 0, 1]), 4)                       # p = (3/4, 1/4): exp(H)
    assert r['usage'] == 0.5 and r['perplexity'] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_dead_codes_are_restarted_at_encoder_outputs():
    q = VectorQuantizer(K=8, D=2, ema=0.99, restart=True, init='normal').train()
    q.codebook[1:] += 100.                                              # codes 1..7 far away: only code 0 is ever chosen
    z_e = torch.randn(4, 2, 4, 4) * 0.1
    for _ in range(30): q(z_e)
    z = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    assert q.codebook.abs().max() < 10, 'the far codes must be moved to encoder outputs'
    assert code_usage(nearest_code(z, q.codebook), 8)['usage'] > 0.5
    q2 = VectorQuantizer(K=8, D=2, ema=0.99, restart=False).train()
    q2.codebook[1:] += 100.; q2.m[1:] += 100.
    for _ in range(30): q2(z_e)
    assert code_usage(nearest_code(z, q2.codebook), 8)['usage'] == 1 / 8   # without restarts they stay dead


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0., 0.], [10., 0.], [0., 10.]])
    x = torch.cat([c + 0.1 * torch.randn(100, 2, generator=g) for c in centres])
    c = kmeans(x, 3, iters=10, generator=torch.Generator().manual_seed(0))
    assert torch.cdist(c, centres).min(0).values.max() < 0.1


def test_vqvae_codes_round_trip_through_decode():
    m = VQVAE(K=32, D=8).eval()
    x = torch.rand(4, 1, 28, 28)
    k = m.encode(x)
    assert k.shape == (4, 7, 7) and k.dtype == torch.long and 0 <= k.min() and k.max() < 32
    y = m.decode(k)
    assert y.shape == (4, 1, 28, 28) and 0 <= y.min() and y.max() <= 1
    logits, k2, loss = m(x)
    assert torch.equal(k, k2) and torch.allclose(torch.sigmoid(logits), y, atol=1e-6) and loss.ndim == 0


@pytest.mark.xdist_group('cheap')
def test_shipped_vqvae_meets_the_acceptance():
    "Codebook usage ≥ 80 % over all 10,000 test images and on the card check's first 200 (test_cards re-measures that check"
    " exactly; `make test-slow` the report on all 10,000), the reconstructions' FID and accuracy likewise."
    meta = shipped('vqvae_mnist').meta
    for rep in (meta['metrics'], meta['check']['test_images']):
        assert rep['usage'] >= 0.8 and rep['perplexity'] > 0.5 * shipped('vqvae_mnist').K, rep
    assert meta['metrics']['recon_fid_clf'] < 5 and meta['metrics']['recon_accuracy'] > 0.98 and 'all 10,000 test images' in meta['data']
