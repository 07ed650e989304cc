"""EDM preconditioning against hand values, the training loss against an independent computation,
checkpoint round-trip, per-sample independence, and the committed `unet-mnist` denoising real digits."""
import math

import pytest
import torch

from dmcmc_fast.data import load_mnist
from dmcmc_fast.models import Denoiser
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.models.unet import EDMDenoiser, UNet, edm_preconditioning, load_checkpoint, save_checkpoint
from dmcmc_fast.training.score import edm_loss


@pytest.mark.parametrize("sigma, expect", [
    # sigma_data = 0.5: sigma^2 + sigma_data^2 = 0.5 -> sqrt = 0.70711
    (0.5, (0.5, 0.25 / math.sqrt(0.5), 1 / math.sqrt(0.5), math.log(0.5) / 4)),
    # 1.44 + 0.25 = 1.69 = 1.3^2
    (1.2, (0.25 / 1.69, 0.6 / 1.3, 1 / 1.3, math.log(1.2) / 4)),
    # sigma = 80 (the prior): c_skip ~ 0, c_out ~ sigma_data
    (80.0, (0.25 / 6400.25, 40 / math.sqrt(6400.25), 1 / math.sqrt(6400.25), math.log(80) / 4)),
])
def test_edm_preconditioning_hand_values(sigma, expect):
    got = edm_preconditioning(torch.tensor([sigma], dtype=torch.float64), 0.5)
    for g, e in zip(got, expect):
        assert g.item() == pytest.approx(e, rel=1e-12)


class _Probe(torch.nn.Module):
    """F(x_in, c_noise) = 2 x_in + c_noise, so D = c_skip x + c_out (2 c_in x + c_noise)."""

    def forward(self, x, c_noise):
        return 2 * x + c_noise[:, None, None, None]


def test_denoiser_applies_preconditioning_per_sample():
    d = EDMDenoiser(_Probe(), 0.5, (1, 2, 2))
    x = torch.arange(8, dtype=torch.float32).reshape(2, 1, 2, 2)
    sigma = torch.tensor([0.5, 1.2])
    out = d(x, sigma)
    # sample 0 (sigma 0.5): c_skip 0.5, c_out*c_in = 0.25/0.5 = 0.5, c_out = 0.353553, c_noise = -0.173287
    # sample 1 (sigma 1.2): c_skip 0.147929, c_out*c_in = 0.6/1.69 = 0.355030, c_out = 0.461538, c_noise = 0.045580
    e0 = 0.5 * x[0] + 2 * 0.5 * x[0] + 0.25 / math.sqrt(0.5) * math.log(0.5) / 4
    e1 = 0.25 / 1.69 * x[1] + 2 * 0.6 / 1.69 * x[1] + 0.6 / 1.3 * math.log(1.2) / 4
    torch.testing.assert_close(out[0], e0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[1], e1, rtol=1e-6, atol=1e-6)


def test_edm_loss_matches_independent_computation():
    """lambda = (sigma^2 + sd^2)/(sigma sd)^2 = 1/c_out^2; with F = 0, D = c_skip (x0 + sigma n)."""
    d = EDMDenoiser(UNet(channels=(8, 16), attn=False), 0.6, (1, 8, 8))  # conv_out is zero: F = 0
    x0 = torch.rand(5, 1, 8, 8) * 2 - 1
    loss = edm_loss(d, x0, torch.Generator().manual_seed(3), p_mean=-1.2, p_std=1.2)
    g = torch.Generator().manual_seed(3)
    sigma = (-1.2 + 1.2 * torch.randn(5, generator=g)).exp()
    n = torch.randn(x0.shape, generator=g)
    c_skip = 0.36 / (sigma ** 2 + 0.36)
    c_out = sigma * 0.6 / (sigma ** 2 + 0.36).sqrt()
    err = (c_skip[:, None, None, None] * (x0 + sigma[:, None, None, None] * n) - x0).pow(2).mean((1, 2, 3))
    assert loss.item() == pytest.approx((err / c_out ** 2).mean().item(), rel=1e-5)


def _perturbed_unet():
    torch.manual_seed(0)
    net = UNet(channels=(8, 16), blocks=2, emb=32)
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)  # zero-initialised: make the output depend on F
    return net


def test_checkpoint_round_trip(tmp_path):
    d = EDMDenoiser(_perturbed_unet(), 0.6, (1, 8, 8), sigma_min=0.01, sigma_max=40.0).eval()
    path = str(tmp_path / "m.pt")
    save_checkpoint(path, d, {"final loss": "0.123"})
    back = load_checkpoint(path, name="m")
    x, s = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 10.0])
    with torch.no_grad():
        torch.testing.assert_close(back(x, s), d(x, s), rtol=0, atol=0)
    assert back.card == {"final loss": "0.123"}
    assert (back.sigma_data, back.shape, back.sigma_min, back.sigma_max) == (0.6, (1, 8, 8), 0.01, 40.0)
    assert back.net.config == d.net.config and not any(p.requires_grad for p in back.parameters())


def test_sample_does_not_depend_on_batch_mates():
    """GroupNorm, not BatchNorm: a chain's denoised value is the same in any batch."""
    d = EDMDenoiser(_perturbed_unet(), 0.6, (1, 8, 8)).eval()
    x, s = torch.randn(4, 1, 8, 8), torch.tensor([0.2, 3.0, 0.7, 50.0])
    with torch.no_grad():
        torch.testing.assert_close(d(x[1:3], s[1:3]), d(x, s)[1:3], rtol=1e-5, atol=1e-6)


def test_unet_rejects_bad_sizes():
    with pytest.raises(ValueError, match="channels"):
        UNet(channels=(12, 16))
    with pytest.raises(ValueError, match="blocks"):
        UNet(blocks=0)


@pytest.fixture(scope="module")
def unet_mnist():
    return load_model("unet-mnist")


def test_unet_mnist_is_a_denoiser_with_a_card(unet_mnist):
    assert isinstance(unet_mnist, Denoiser)
    assert unet_mnist.shape == (1, 28, 28) and unet_mnist.data_range == (-1.0, 1.0)
    assert {"data", "steps", "wall time", "device", "final loss"} <= set(unet_mnist.card)


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_unet_mnist_denoises_real_digits(unet_mnist, sigma):
    """Better than identity (MSE sigma^2) and than the best per-pixel linear (Gaussian/Wiener)
    denoiser built from the data's own per-pixel mean and variance."""
    x_all = load_mnist()[0]
    x0 = x_all[::50]  # 100 digits, 10 of each class in expectation
    noisy = x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        den = unet_mnist(noisy, torch.full((x0.shape[0],), sigma))
    mu, var = x_all.mean(0), x_all.var(0)
    wiener = mu + var / (var + sigma ** 2) * (noisy - mu)
    mse = (den - x0).pow(2).mean().item()
    assert mse < 0.15 * sigma ** 2
    assert mse < 0.4 * (wiener - x0).pow(2).mean().item()
