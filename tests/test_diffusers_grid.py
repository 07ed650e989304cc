"""The diffusers bridge's default grid is the scheduler's own: `api.sample(from_diffusers(unet, scheduler), ...)`
equals diffusers' own loop (DDIM, Euler, DPM-Solver++ 2M, UniPC) on the same noise; `sigmas=` and
`sigma_min`/`sigma_max`/`rho` still choose another grid. A tiny randomly initialised UNet (nothing downloaded)."""
import pytest
import torch

import dmcmc_fast
from dmcmc_fast import api

diffusers = pytest.importorskip("diffusers", reason="diffusers is a dev dependency")
T = 1000  # training steps of the table: linspace(0, 999, 10) and leading spacing give integer timesteps
STEPS = 10


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()


@torch.no_grad()
def diffusers_loop(unet, sched, z):
    """A pipeline's loop (DDPMPipeline's shape): x = z * init_noise_sigma, then eps and step per timestep."""
    sched.set_timesteps(STEPS)
    x = z * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.step(unet(sched.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


# (scheduler, our sampler, does the scheduler step in VE space): a VP scheduler's start z is x_ve = z sqrt(1 + s0^2)
CASES = {
    # DDIM's x0 clipping (clip_sample, its default) is a step-time clamp of the scheduler's, not the model's
    "ddim": (lambda: diffusers.DDIMScheduler(num_train_timesteps=T, clip_sample=False), "euler", False),
    "euler": (lambda: diffusers.EulerDiscreteScheduler(num_train_timesteps=T), "euler", True),
    "dpmpp_2m": (lambda: diffusers.DPMSolverMultistepScheduler(num_train_timesteps=T), "dpmpp_2m", False),
    "unipc": (lambda: diffusers.UniPCMultistepScheduler(num_train_timesteps=T), "unipc", False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_grid_equals_diffusers_own_loop(unet, case):
    make, sampler, ve = CASES[case]
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = diffusers_loop(unet, make(), z)
    d = dmcmc_fast.from_diffusers(unet, make())
    grid = d.own_sigmas(STEPS)
    assert grid.shape == (STEPS + 1,) and grid[-1] == 0 and bool((grid[1:] < grid[:-1]).all())
    s0 = float(grid[0])
    x_T = z * (make().init_noise_sigma if ve else (1 + s0 ** 2) ** 0.5)  # the same start, in VE units
    out = api.sample(d, sampler, num=3, nfe=STEPS, x_T=x_T, progress=False)
    assert out.nfe.tolist() == [STEPS] * 3
    scale = ref.abs().max().item()
    assert (out.samples - ref).abs().max().item() <= 1e-4 * scale, case
    # the sampler's own Karras grid over the model's range is another sampler (issue 33: 17.9 apart at 10 steps)
    karras = api.sample(d, sampler, num=3, nfe=STEPS, x_T=x_T, progress=False, sigma_max=s0)
    assert (karras.samples - ref).abs().max().item() > 1e-2 * scale


def test_ddim_grid_is_the_tables_sigma_at_its_leading_timesteps(unet):
    sched = diffusers.DDIMScheduler(num_train_timesteps=T)
    abar = sched.alphas_cumprod.double()
    t = torch.arange(900, -1, -100)  # "leading" spacing: T // 10 * k, largest first
    want = ((1 - abar[t]) / abar[t]).sqrt()
    torch.testing.assert_close(dmcmc_fast.from_diffusers(unet, sched).own_sigmas(STEPS)[:-1], want)
    assert sched.num_inference_steps is None  # a copy was set, not the user's scheduler


def test_heun_schedulers_repeated_levels_count_once(unet):
    d = dmcmc_fast.from_diffusers(unet, diffusers.HeunDiscreteScheduler(num_train_timesteps=T))
    g = d.own_sigmas(5)
    assert g.shape == (6,) and bool((g[1:] < g[:-1]).all())


def test_your_grid_or_range_still_wins(unet):
    d = dmcmc_fast.from_diffusers(unet, diffusers.DDIMScheduler(num_train_timesteps=T))
    seen = []
    cb = lambda info: seen.append(float(info["sigma"][0]))  # noqa: E731
    api.sample(d, "euler", num=1, nfe=4, progress=False, callback=cb)
    assert seen[0] == pytest.approx(float(d.own_sigmas(4)[0]), rel=1e-6)
    seen.clear()
    api.sample(d, "euler", num=1, nfe=4, progress=False, callback=cb, sigmas=torch.tensor([5.0, 2.0, 1.0, 0.5, 0.0]))
    assert seen[0] == pytest.approx(5.0)
    seen.clear()
    api.sample(d, "euler", num=1, nfe=4, progress=False, callback=cb, sigma_max=7.0, sigma_min=0.1)
    assert seen[0] == pytest.approx(7.0)
    seen.clear()  # the façade steps on the scheduler's grid too
    dmcmc_fast.Euler(d, nfe=4).sample(1, callback=cb)
    assert seen[0] == pytest.approx(float(d.own_sigmas(4)[0]), rel=1e-6)


def test_the_facades_kept_run_steps_on_the_scheduler_grid_too(unet):
    """The façade's plain `sample(n)` (a run checked once and kept) gives what api.sample gives on the
    scheduler's grid, and differs from the Karras grid over the same range."""
    d = dmcmc_fast.from_diffusers(unet, diffusers.DDIMScheduler(num_train_timesteps=T, clip_sample=False))
    euler = dmcmc_fast.Euler(d, nfe=5)
    first, again = euler.sample(2).samples, euler.sample(2).samples
    ref = api.sample(d, "euler", num=2, nfe=5, progress=False).samples
    torch.testing.assert_close(first, ref, rtol=0, atol=0)
    torch.testing.assert_close(again, ref, rtol=0, atol=0)
    g = d.own_sigmas(5)
    karras = dmcmc_fast.Euler(d, nfe=5, sigma_max=float(g[0]), sigma_min=float(g[-2])).sample(2).samples
    assert (karras - ref).abs().max() > 1e-3


def test_more_levels_than_the_scheduler_has_is_an_error_naming_the_ways_out(unet):
    d = dmcmc_fast.from_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=20))
    with pytest.raises(ValueError, match=r"DDPMScheduler.set_timesteps\(30\) refused .*pass sigmas= .*sigma_min"):
        api.sample(d, "euler", num=1, nfe=30, progress=False)
    assert api.sample(d, "euler", num=1, nfe=30, progress=False, sigma_min=d.sigma_min).nfe.tolist() == [30]
