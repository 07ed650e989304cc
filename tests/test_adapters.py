"""Adapters against hand-derived cases.

Data N(0, s^2 I). VE: the exact denoiser is D(x, sigma) = s^2 / (s^2 + sigma^2) x and the exact VE
score is -x / (s^2 + sigma^2). VP at x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, with Var x_t =
abar s^2 + 1 - abar, the exact predictions are
    eps_hat = sqrt(1 - abar) x_t / (abar s^2 + 1 - abar)
    x0_hat  = sqrt(abar) s^2 x_t / (abar s^2 + 1 - abar)
    v_hat   = sqrt(abar) eps_hat - sqrt(1 - abar) x0_hat
and every adapter must turn them into the same VE denoiser.
"""
import pytest
import torch

from dmcmc_fast.models import DiffusersUNetAdapter, VEScoreAdapter, VPAdapter

S2 = 0.49


def ve_exact(x, sigma):
    return S2 / (S2 + sigma[:, None] ** 2) * x


def linear_abar(T=50):
    betas = torch.linspace(1e-3, 0.2, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


def test_ve_score_adapter():
    score = lambda x, s: -x / (S2 + s[:, None] ** 2)  # noqa: E731
    a = VEScoreAdapter(score, shape=(3,))
    x = torch.randn(6, 3, dtype=torch.float64)
    s = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 20.0], dtype=torch.float64)
    torch.testing.assert_close(a(x, s), ve_exact(x, s))


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v", "epsilon", "v_prediction", "sample"])
def test_vp_adapter_exact_gaussian(prediction_type):
    abar_table = linear_abar()

    def net(x_t, t):
        # The hand case is exact on the table's timesteps; the adapter must pass those integer t.
        ti = t.round().long()
        assert torch.allclose(t, ti.to(t.dtype), atol=1e-4), t
        ab = abar_table[ti][:, None]
        var = ab * S2 + 1 - ab
        eps = (1 - ab).sqrt() * x_t / var
        x0 = ab.sqrt() * S2 * x_t / var
        kind = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}.get(prediction_type, prediction_type)
        return {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[kind]

    a = VPAdapter(net, abar_table, shape=(4,), prediction_type=prediction_type)
    idx = torch.tensor([0, 3, 17, 49])
    sigma = ((1 - abar_table[idx]) / abar_table[idx]).sqrt()
    x = torch.randn(4, 4, dtype=torch.float64) * (1 + sigma[:, None])
    torch.testing.assert_close(a(x, sigma), ve_exact(x, sigma))
    torch.testing.assert_close(a.sigma_to_t(sigma), idx.float(), atol=1e-4, rtol=0)


def test_vp_adapter_rejects_bad_tables_and_types():
    with pytest.raises(ValueError, match="prediction_type"):
        VPAdapter(lambda x, t: x, linear_abar(), shape=(1,), prediction_type="score")
    with pytest.raises(ValueError, match="alphas_cumprod"):
        VPAdapter(lambda x, t: x, torch.tensor([0.5, 1.5]), shape=(1,))
    with pytest.raises(ValueError, match="decreasing"):
        VPAdapter(lambda x, t: x, torch.tensor([0.5, 0.9]), shape=(1,))


def test_diffusers_unet_adapter_matches_hand_conversion():
    diffusers = pytest.importorskip("diffusers", reason="diffusers is a dev dependency")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    sched = diffusers.DDPMScheduler(num_train_timesteps=100)
    a = DiffusersUNetAdapter(unet, sched)
    assert a.shape == (1, 8, 8)
    abar = sched.alphas_cumprod.double()
    t = torch.tensor([5, 60])
    sigma = ((1 - abar[t]) / abar[t]).sqrt().float()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        got = a(x, sigma)
        x_vp = x * abar[t].sqrt().float()[:, None, None, None]
        eps = unet(x_vp, t.float()).sample
    torch.testing.assert_close(got, x - sigma[:, None, None, None] * eps, atol=1e-5, rtol=1e-4)


def test_adapters_move_their_network():
    net = torch.nn.Linear(4, 4).double()
    a = VEScoreAdapter(lambda x, s: net(x), shape=(4,))
    assert a.to("cpu") is a  # a plain callable stays where it is
    b = VPAdapter(net, linear_abar(), shape=(4,))
    assert b.to("meta") is b and net.weight.device.type == "meta"
