"""Latent flow matching (29_latent): the first stage's loss and scale, the second stage's hooks (frozen first stage, latents as
the path's data, one decoder pass), its cost against the pixel U-Net, and the shipped models' acceptance (cards: test_cards)."""
import pytest
import torch

from opengen.checkpoints import load_pretrained, save
from opengen.diffusion.flow_matching import FlowMatching
from opengen.diffusion.latent import LATENT_UNET, KLAutoencoder, LatentFlow, latent_scale
from opengen.diffusion.unet import UNet, flops_per_image, unet_preset
from opengen.models.vae import gaussian_kl


def test_the_first_stage_loss_is_reconstruction_plus_beta_kl():
    torch.manual_seed(0)
    ae = KLAutoencoder(beta=0.3)
    x = (torch.rand(4, 1, 28, 28) > 0.5).float()
    torch.manual_seed(1); loss, rec, kl = ae.loss(x)
    torch.testing.assert_close(loss, rec + 0.3 * kl)
    mu, logvar = ae.encode(x)
    torch.testing.assert_close(kl, gaussian_kl(mu.flatten(1), logvar.flatten(1)).mean())
    assert mu.shape == logvar.shape == (4, 4, 7, 7)


def test_the_scale_gives_unit_variance():
    z = 0.25 * torch.randn(400, 4, 7, 7) + 0.1
    torch.testing.assert_close((z * latent_scale(z)).std(), torch.tensor(1.0))
    ae = KLAutoencoder()
    x = torch.rand(300, 1, 28, 28)
    s = ae.fit_scale(x)
    torch.manual_seed(0)
    assert s == ae.scale.item() and abs(ae.latents(x).std().item() - 1) < 0.05


def test_the_second_stage_trains_on_scaled_latents_and_keeps_the_first_stage_frozen(tmp_path):
    torch.manual_seed(0)
    ae = KLAutoencoder(); ae.fit_scale(torch.rand(64, 1, 28, 28))
    save(ae, tmp_path / 'ae.safetensors', {})
    m = LatentFlow(autoencoder=str(tmp_path / 'ae.safetensors'), unet={**LATENT_UNET, 'widths': (16,), 'n_res': 1, 'n_classes': 10})
    assert m.shape == (4, 7, 7) and all(not p.requires_grad for p in m.ae.parameters())
    m.train(); assert m.net.training and not m.ae.training
    x = torch.rand(5, 1, 28, 28)
    torch.manual_seed(3); z = m.to_path_space(x)
    torch.manual_seed(3); torch.testing.assert_close(z, ae.latents(x))
    z = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(m.to_images(z), ae.decode(z / ae.scale))
    assert m.sample(2, [3, 4], steps=1).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError): LatentFlow(autoencoder=str(tmp_path / 'ae.safetensors'), unet={**LATENT_UNET, 'in_ch': 3, 'n_classes': 10})


def test_a_latent_evaluation_costs_under_a_third_of_a_pixel_one():
    pix, lat = UNet(**unet_preset('small', n_classes=10)), UNet(**{**LATENT_UNET, 'n_classes': 10})
    f = lambda net, shape: flops_per_image(net, x=torch.randn(1, *shape), t=torch.tensor([500.]), labels=torch.tensor([1]))
    assert f(lat, (4, 7, 7)) < f(pix, (1, 28, 28)) / 3


def test_the_shipped_models_meet_their_acceptance():
    "ldm_cond_mnist: accuracy >= 97 % at n = 1,000 (re-measured by test_cards); its first stage's scaled latents have unit variance."
    ldm, ae = load_pretrained('ldm_cond_mnist'), load_pretrained('ldm_ae_mnist')
    assert isinstance(ldm, LatentFlow) and isinstance(ldm, FlowMatching)
    assert ldm.meta['metrics']['accuracy'] >= 0.97 and ldm.meta['eval_n'] == 1000
    # its default sampler takes one evaluation per step, as DDIM does (29 measures the time per image against ddpm_cond_mnist)
    assert ldm.nfe() == ldm.defaults['steps'] == ldm.meta['sampler_defaults']['nfe'] and ldm.defaults['sampler'] == 'euler'
    from opengen.data import load_dataset, to_pixel_range
    torch.manual_seed(0)
    with torch.no_grad(): z = ae.latents(to_pixel_range(load_dataset('mnist', 'train').x[:1000]))
    assert abs(z.std().item() - 1) < 0.05 and ae.meta['metrics']['scaled_mean_std'] < 1
    torch.testing.assert_close(ldm.ae.scale, ae.scale)                        # the stored first stage is the shipped one


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_the_explorer_starts_at_the_models_default_sampler():
    "The guidance explorer's sampler menu opens on the model's default (Euler for ldm_cond_mnist, Heun for fm_cond_mnist), the others after it."
    from opengen.widgets import guidance_explorer
    for name in ('ldm_cond_mnist', 'fm_cond_mnist'):
        m = load_pretrained(name)
        ex = guidance_explorer(m, steps=2)
        assert ex.values()['sampler'] == m.defaults['sampler'], name
        menu = next(c for c in ex.controls if getattr(c, 'description', '') == 'sampler')
        assert sorted(menu.options) == sorted(m.samplers) and menu.options[0] == m.defaults['sampler']
