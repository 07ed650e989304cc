"""k-diffusion's sampler API on this library's integrators: existing k-diffusion code swaps one import.

    # from k_diffusion import sampling as K          <- before
    from dmcmc_fast import k as K                    # after: the same calls (K.sampling.X works too)
    sigmas = K.get_sigmas_karras(32, 0.002, 80.0)    # 32 levels, then 0
    x = torch.randn(16, 3, 64, 64) * sigmas[0]
    x = K.sample_heun(model, x, sigmas, extra_args={"class_labels": y}, callback=preview)
    x = K.sample_dpmpp_2m_sde(model, torch.randn_like(x) * sigmas[0], sigmas, eta=1.0)

The semantics are k-diffusion's (`k_diffusion/sampling.py`):
- `model(x, sigma, **extra_args)` is a denoiser E[x0 | x], called with `sigma` of shape `[B]` in x's dtype.
- `sigmas` is one 1-D grid for the batch, non-increasing, > 0 except its last entry, usually 0. The step to 0
  is the Tweedie step x <- D(x, sigma_{N-1}) (what each of k-diffusion's samplers computes there, 1 NFE); a
  grid that ends above 0 stops there. The grid is read once at the start (one host read), not per step.
- `callback({'x', 'i', 'sigma', 'sigma_hat', 'denoised'})` once per step: x the state the model saw at step
  i (after the churn), sigma = sigmas[i], sigma_hat the churned level. k-diffusion calls it before the
  step's update, this layer after it, with the same values.
- `disable` turns the tqdm progress bar off (None: tqdm's default, off when not on a terminal).

Where it differs, and why:
- Noise. k-diffusion draws from torch's global RNG (`torch.randn_like`) or, in the SDE solvers, from a
  Brownian tree. Without a `noise_sampler` every sample here draws from its own Philox stream
  (`dmcmc_fast.rng`; keyword `seed`, by default drawn from torch's global RNG so that `torch.manual_seed`
  still makes a run repeatable and two calls differ): the stochastic samplers match k-diffusion *in
  distribution*, not bit for bit, and a sample does not depend on the batch it is in. Given a
  `noise_sampler`, it supplies every draw, called at k-diffusion's points with k-diffusion's arguments
  (0-d sigmas in the grid's dtype), so the samples equal k-diffusion's with the same noise sampler to float
  precision. `sample_euler`/`sample_heun` with `s_churn > 0` take one too (an extension: k-diffusion draws
  `torch.randn_like(x)` at each step; the noise sampler is called at each step likewise, so `lambda s,
  s_next: torch.randn_like(x)` after the same `torch.manual_seed` gives k-diffusion's churn noise).
- `sample_dpm_adaptive` controls the step size per sample (k-diffusion: one error norm for the whole
  batch), so each sample equals k-diffusion's run of that sample alone; `eta > 0` is not implemented (raises);
  its callback is called once per sample as it reaches sigma_min, with {'x', 'i' (the sample's row), 'sigma',
  'sigma_hat', 'nfe'}; `return_info` gives {'nfe', 'nfe_per_sample'} only; it raises past `max_nfe` model
  calls per sample (an extension: k-diffusion has no cap).
- Models are called through this library's `CountingDenoiser`: NaN/Inf from the model raise at the end of
  the call (checked on the device, no per-step sync), and a call on part of the batch (dpm_adaptive drops
  finished samples) gets those rows of every `extra_args` tensor whose leading dimension is the batch.
- The per-step coefficients are float64 (k-diffusion: the grid's dtype), so float32 runs agree to ~1e-5.
- `eta` of `sample_dpmpp_2s_ancestral` and `sample_dpmpp_sde` must be in [0, 1].
- `sample_lms`, `sample_dpm_2`, `sample_dpm_2_ancestral`, `sample_dpm_fast`: `dmcmc_fast/k/classic.py`.
  The helpers (`to_d`, `get_ancestral_step`, `default_noise_sampler`, `BrownianTreeNoiseSampler`, the
  `get_sigmas_*` grids, `append_zero`) are k-diffusion's, the Brownian tree on torchsde's `BrownianTree` as
  k-diffusion builds it (so the same seed gives the same noise).
`log_likelihood` and the `DPMSolver` / `PIDStepSizeController` classes have no counterpart here.
"""
from __future__ import annotations

import math

import torch

from dmcmc_fast import schedules
from dmcmc_fast.integrators import dpm_adaptive, dpm_solver, karras
from dmcmc_fast.integrators.common import StepNoise, tweedie
from dmcmc_fast.models.base import CountingDenoiser

ADAPTIVE_MAX_NFE = 10_000  # sample_dpm_adaptive's default cap on model calls per sample

__all__ = ["BrownianTreeNoiseSampler", "append_zero", "default_noise_sampler", "get_ancestral_step",
           "get_sigmas_exponential", "get_sigmas_karras", "get_sigmas_polyexponential", "get_sigmas_vp",
           "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpm_adaptive", "sample_dpm_fast", "sample_dpmpp_2m",
           "sample_dpmpp_2m_sde", "sample_dpmpp_2s_ancestral", "sample_dpmpp_3m_sde", "sample_dpmpp_sde",
           "sample_euler", "sample_euler_ancestral", "sample_heun", "sample_lms", "to_d"]


# ---------------- grids ----------------
def get_sigmas_karras(n, sigma_min, sigma_max, rho=7., device='cpu'):
    """Karras et al. 2022 eq. (5): n levels from sigma_max down to sigma_min, then 0 (`[n + 1]`, torch's
    default dtype, as k-diffusion)."""
    s = schedules.karras(n, float(sigma_min), float(sigma_max), float(rho), append_zero_=True)
    return s.to(device=device, dtype=torch.get_default_dtype())


def get_sigmas_exponential(n, sigma_min, sigma_max, device='cpu'):
    """n log-uniform levels from sigma_max down to sigma_min, then 0 (`[n + 1]`, as k-diffusion)."""
    s = schedules.geometric(n, float(sigma_min), float(sigma_max), append_zero_=True)
    return s.to(device=device, dtype=torch.get_default_dtype())


def get_sigmas_polyexponential(n, sigma_min, sigma_max, rho=1., device='cpu'):
    """n levels whose log is a polynomial ramp of degree rho from log sigma_max to log sigma_min, then 0:
    log sigma_i = log sigma_min + (1 - i/(n-1))^rho (log sigma_max - log sigma_min) (rho = 1: exponential)."""
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return append_zero(torch.exp(lo + ramp * (hi - lo)))


def get_sigmas_vp(n, beta_d=19.9, beta_min=0.1, eps_s=1e-3, device='cpu'):
    """The continuous VP SDE's sigmas at n times from 1 down to eps_s, then 0: sigma(t) =
    sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) (Song et al. 2021, linear beta(t) = beta_min + beta_d t)."""
    t = torch.linspace(1, eps_s, n, device=device)
    return append_zero(torch.sqrt(torch.expm1(beta_d * t ** 2 / 2 + beta_min * t)))


def append_zero(x):
    """`x` with a 0 appended (the grid's last level)."""
    return torch.cat([x, x.new_zeros([1])])


# ---------------- k-diffusion's helpers ----------------
def to_d(x, sigma, denoised):
    """The probability-flow ODE's derivative dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 3 with sigma(t) = t);
    `sigma` a number, or a tensor broadcast over x's trailing dimensions."""
    if torch.is_tensor(sigma) and sigma.ndim:
        sigma = sigma.reshape(*sigma.shape, *([1] * (x.ndim - sigma.ndim)))
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta=1.):
    """(sigma_down, sigma_up) of an ancestral step sigma_from -> sigma_to: a deterministic step to sigma_down, then
    fresh noise of std sigma_up, with sigma_down^2 + sigma_up^2 = sigma_to^2 and sigma_up = eta sigma_to
    sqrt(1 - sigma_to^2 / sigma_from^2) (at most sigma_to); eta = 0: (sigma_to, 0)."""
    if not eta:
        return sigma_to, 0.
    up = eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5
    up = torch.minimum(torch.as_tensor(sigma_to), torch.as_tensor(up)) if torch.is_tensor(up) and up.ndim \
        else min(sigma_to, up)
    return (sigma_to ** 2 - up ** 2) ** 0.5, up


def default_noise_sampler(x):
    """k-diffusion's default noise: `noise_sampler(sigma, sigma_next)` -> torch.randn_like(x) (torch's global RNG)."""
    return lambda sigma, sigma_next: torch.randn_like(x)


class BrownianTreeNoiseSampler:
    """Noise that is a Brownian motion's increment: `noise_sampler(sigma, sigma_next)` = (W(t1) - W(t0)) /
    sqrt|t1 - t0| with t = transform(sigma), a standard normal shaped like x for any interval, consistent across
    intervals (what k-diffusion's SDE samplers default to). One `torchsde.BrownianTree` over [transform(sigma_min),
    transform(sigma_max)] for the batch under `seed` (an int; None: drawn from torch's global RNG), or one per
    sample given a list of `x.shape[0]` seeds, built as k-diffusion builds them: the same seed gives
    k-diffusion's noise. Needs torchsde."""

    def __init__(self, x, sigma_min, sigma_max, seed=None, transform=lambda x: x):
        try:
            import torchsde
        except ImportError:
            raise ImportError("BrownianTreeNoiseSampler needs torchsde (pip install torchsde)") from None
        self.transform = transform
        t0, t1 = transform(torch.as_tensor(sigma_min)), transform(torch.as_tensor(sigma_max))
        (t0, t1), self.sign = sorted((t0, t1)), (1 if t0 < t1 else -1)
        if seed is None:
            seed = torch.randint(0, 2 ** 63 - 1, []).item()
        self.per_sample = isinstance(seed, (list, tuple))
        if self.per_sample and len(seed) != x.shape[0]:
            raise ValueError(f"seed: one per sample ({x.shape[0]}) or one int, got {len(seed)}")
        w0 = torch.zeros_like(x[0] if self.per_sample else x)
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in (seed if self.per_sample else [seed])]

    def __call__(self, sigma, sigma_next):
        t0, t1 = self.transform(torch.as_tensor(sigma)), self.transform(torch.as_tensor(sigma_next))
        sign = self.sign * (1 if t0 < t1 else -1)
        lo, hi = sorted((t0, t1))
        w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return (w if self.per_sample else w[0]) / (t1 - t0).abs().sqrt()


# ---------------- the model, the grid, the callback ----------------
def _rows(value, idx: torch.Tensor, batch: int):
    """`value` for the rows `idx` of the batch: tensors whose leading dimension is the batch are indexed,
    dicts, lists and tuples are walked, everything else passes as it is."""
    if torch.is_tensor(value):
        return value[idx.to(value.device)] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: _rows(v, idx, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(v, idx, batch) for v in value)
    return value


class _KDenoiser(CountingDenoiser):
    """A k-diffusion model `model(x, sigma, **extra_args)` as this library's counted denoiser D(x, sigma).
    A call on a subset of the batch (`idx`) gets those rows of the per-sample extra args (`_rows`). This call
    owns the counter (`standalone`): the integrator raises its deferred checks at the end."""

    def __init__(self, model, extra_args, x: torch.Tensor, tick=None):
        super().__init__(self._forward, x.shape[0], x.device)
        self.k_model, self.extra_args, self.batch = model, ({} if extra_args is None else extra_args), x.shape[0]
        self.tick, self._idx, self.standalone = tick, None, True  # tick(): once per model call (progress)

    def __call__(self, x, sigma, idx=None):
        self._idx = idx
        return super().__call__(x, sigma, idx)

    def _forward(self, x, sigma):
        if self.tick is not None:
            self.tick()
        kw = self.extra_args if self._idx is None else _rows(self.extra_args, self._idx, self.batch)
        return self.k_model(x, sigma, **kw)


def _check_grid(sigmas) -> list[float]:
    """The grid's values on the host (the one read of it), after k-diffusion's implicit contract."""
    if not torch.is_tensor(sigmas) or sigmas.ndim != 1 or sigmas.shape[0] < 2:
        shape = tuple(sigmas.shape) if torch.is_tensor(sigmas) else type(sigmas).__name__
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 noise levels (k-diffusion's grid: N levels "
                         f"then 0, e.g. get_sigmas_karras(N, ...)), got {shape}")
    g = sigmas.detach().to("cpu", torch.float64).tolist()
    if not all(math.isfinite(v) for v in g):
        raise ValueError(f"sigmas must be finite, got {g}")
    if min(g[:-1]) <= 0 or g[-1] < 0:
        raise ValueError(f"sigmas must be > 0 except the last level, which may be 0, got {g}")
    if any(b > a for a, b in zip(g, g[1:])):
        raise ValueError(f"sigmas must be non-increasing (from noise to data), got {g}")
    return g


def _progress(total, disable):
    """A tqdm bar as k-diffusion shows (None when tqdm is missing or the bar is disabled)."""
    if disable is True:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, disable=disable)


class _Run:
    """One k-diffusion-style call: the counted model, the user's grid as `[B, N+1]` float64 rows, the noise,
    and the adapter from the integrators' per-step callback (after the step) to k-diffusion's."""

    def __init__(self, model, x, sigmas, extra_args, callback, disable):
        self.grid = _check_grid(sigmas)
        self.sigmas, self.callback = sigmas, callback  # the callback's sigma values are the user's own entries
        self.steps, self.to_zero = len(self.grid) - 1, self.grid[-1] == 0
        self.rows = torch.tensor(self.grid, dtype=torch.float64, device=x.device).repeat(x.shape[0], 1)
        self.model = _KDenoiser(model, extra_args, x)
        self.x = x  # the state before the current step
        self.gamma = [0.0] * self.steps  # the churn of each step (sample_euler / sample_heun)
        self.bar = _progress(self.steps, disable)

    @property
    def positive(self) -> torch.Tensor:
        """The rows without the final 0: the grid of the `*_on_grid` loops that leave the step to 0 to us."""
        return self.rows[:, :-1] if self.to_zero else self.rows

    def noise(self, noise_sampler, seed) -> StepNoise:
        """The chain streams under `seed` (None: drawn from torch's global RNG), or the user's noise sampler,
        given 0-d sigmas in the grid's dtype and device as k-diffusion gives them."""
        if noise_sampler is not None:
            def sampler(s, s_next):
                return noise_sampler(*(v[0].to(self.sigmas.device, self.sigmas.dtype) for v in (s, s_next)))
            return StepNoise(sampler=sampler)
        if seed is None:
            seed = int(torch.randint(0, 2 ** 63 - 1, ()))
        return StepNoise(seed=seed)

    def step(self, info: dict):
        i = info["i"]
        if self.callback is not None:
            sigma = self.sigmas[i]
            self.callback({"x": info.get("x_hat", self.x), "i": i, "sigma": sigma,
                           "sigma_hat": sigma * (1.0 + self.gamma[i]) if self.gamma[i] else sigma,
                           "denoised": info["denoised"]})
        self.x = info["x"]
        if self.bar is not None:
            self.bar.update(1)

    def last_step(self, x: torch.Tensor) -> torch.Tensor:
        """The step to sigma = 0 after a loop on `positive`: x <- D(x, sigma_{N-1})."""
        denoised = tweedie(self.model, x, self.rows[:, -2])
        self.step({"i": self.steps - 1, "x": denoised, "denoised": denoised})
        return denoised

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.bar is not None:
            self.bar.close()
        self.model.end_call(x)
        return x

    def run_positive(self, loop, **options) -> torch.Tensor:
        """A `*_on_grid` loop over the positive levels, then the step to 0 if the grid has one."""
        x = loop(self.model, self.x, self.positive, n=self.steps, callback=self.step, **options)
        return self.finish(self.last_step(x) if self.to_zero else x)


# ---------------- EDM: Euler, Heun (with churn) ----------------
def _edm(heun, model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise, noise_sampler,
         seed):
    """EDM Alg. 2 with gamma_i = min(s_churn / N, sqrt2 - 1) where s_tmin <= sigma_i <= s_tmax (N = len(sigmas) - 1,
    compared in the grid's dtype as k-diffusion does); s_churn = 0 is Alg. 1."""
    karras.check_churn(s_churn, s_tmin, s_tmax, s_noise)
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    gamma = noise = None
    if s_churn > 0:
        churned = ((sigmas >= s_tmin) & (sigmas <= s_tmax))[:-1].tolist()
        g = min(s_churn / run.steps, math.sqrt(2.0) - 1.0)
        run.gamma = [g if c else 0.0 for c in churned]
        gamma = torch.tensor(run.gamma, dtype=torch.float64, device=x.device).repeat(x.shape[0], 1)
        noise = run.noise(noise_sampler, seed)
    x = karras.edm_on_grid(run.model, x, run.rows, run.steps, heun=heun, euler_last=run.to_zero, gamma=gamma,
                           s_noise=s_noise, noise=noise, n=run.steps, callback=run.step)
    return run.finish(x)


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0.,
                 s_tmax=float('inf'), s_noise=1., *, noise_sampler=None, seed=None):
    """Euler steps of EDM Alg. 2 (1 NFE per step); churn as `sample_heun`."""
    return _edm(False, model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise,
                noise_sampler, seed)


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0.,
                s_tmax=float('inf'), s_noise=1., *, noise_sampler=None, seed=None):
    """EDM Alg. 2 (Heun steps, Euler on the step to 0: 2N - 1 NFE on N levels then 0); s_churn = 0 is Alg. 1."""
    return _edm(True, model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise,
                noise_sampler, seed)


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                           noise_sampler=None, *, seed=None):
    """Euler steps down to sigma_down, then ancestral noise sigma_up (`karras.euler_ancestral_on_grid`)."""
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    return run.run_positive(karras.euler_ancestral_on_grid, eta=eta, s_noise=s_noise,
                            noise=run.noise(noise_sampler, seed))


# ---------------- DPM-Solver++ ----------------
@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): 1 NFE per step, deterministic."""
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    return run.run_positive(dpm_solver.dpmpp_2m_sde_on_grid, eta=0.0)


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                        noise_sampler=None, solver_type='midpoint', *, seed=None):
    """DPM-Solver++(2M) SDE (`dpm_solver.dpmpp_2m_sde_on_grid`); k-diffusion's default noise is a Brownian tree."""
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    return run.run_positive(dpm_solver.dpmpp_2m_sde_on_grid, eta=eta, s_noise=s_noise, solver_type=solver_type,
                            noise=run.noise(noise_sampler, seed))


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                        noise_sampler=None, *, seed=None):
    """DPM-Solver++(3M) SDE (`dpm_solver.dpmpp_3m_sde_on_grid`)."""
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    return run.run_positive(dpm_solver.dpmpp_3m_sde_on_grid, eta=eta, s_noise=s_noise,
                            noise=run.noise(noise_sampler, seed))


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                              noise_sampler=None, *, seed=None):
    """DPM-Solver++(2S) ancestral, 2 NFE per step (`dpm_solver.dpmpp_2s_ancestral_on_grid`); eta in [0, 1]."""
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    return run.run_positive(dpm_solver.dpmpp_2s_ancestral_on_grid, eta=eta, s_noise=s_noise,
                            noise=run.noise(noise_sampler, seed))


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1., s_noise=1.,
                     noise_sampler=None, r=1 / 2, *, seed=None):
    """DPM-Solver++ SDE, 2 NFE per step (`dpm_solver.dpmpp_sde_on_grid`); eta in [0, 1]. Without a noise
    sampler the two draws of a step are Brownian increments of the sample's own stream, as k-diffusion's
    Brownian tree gives them (a `noise_sampler` must give such increments too, as k-diffusion assumes)."""
    run = _Run(model, x, sigmas, extra_args, callback, disable)
    return run.run_positive(dpm_solver.dpmpp_sde_on_grid, eta=eta, s_noise=s_noise, r=r,
                            noise=run.noise(noise_sampler, seed))


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=None, callback=None, disable=None, order=3,
                        rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0., icoeff=1., dcoeff=0., accept_safety=0.81,
                        eta=0., s_noise=1., noise_sampler=None, return_info=False, *, max_nfe=ADAPTIVE_MAX_NFE):
    """DPM-Solver-12/23 with adaptive steps from sigma_max (x's level) to sigma_min, no step to 0
    (`integrators.dpm_adaptive`); per-sample step control, deterministic only (module docstring)."""
    if eta:
        raise NotImplementedError("sample_dpm_adaptive: eta > 0 (ancestral noise) is not implemented here; "
                                  "use eta=0 or k-diffusion's own sampler")
    sigma_min, sigma_max = float(sigma_min), float(sigma_max)
    if not (sigma_min > 0 and sigma_max > 0):
        raise ValueError(f"sigma_min and sigma_max must be > 0, got {sigma_min}, {sigma_max}")
    bar = _progress(None, disable)
    counted = _KDenoiser(model, extra_args, x, tick=None if bar is None else lambda: bar.update(1))
    done = None
    if callback is not None:
        def done(info):  # one sample reached sigma_min
            s = torch.tensor(sigma_min)
            callback({"x": info["x"], "i": info["i"], "sigma": s, "sigma_hat": s, "nfe": info["nfev"]})
    try:
        res = dpm_adaptive.sample_dpm_adaptive(
            counted, x, sigma_max, max_nfe, sigma_min=sigma_min, order=order, rtol=rtol, atol=atol, h_init=h_init,
            pcoeff=pcoeff, icoeff=icoeff, dcoeff=dcoeff, accept_safety=accept_safety, callback=done,
            final_tweedie=False)
    finally:
        if bar is not None:
            bar.close()
    if return_info:
        return res.x, {"nfe": int(res.nfe.max()), "nfe_per_sample": res.nfe}
    return res.x


from dmcmc_fast.k.classic import sample_dpm_2, sample_dpm_2_ancestral, sample_dpm_fast, sample_lms  # noqa: E402


def __getattr__(name: str):
    if name.startswith(("sample_", "get_sigmas_")):
        raise AttributeError(f"dmcmc_fast.k has no {name}: k-diffusion's {name} has no counterpart here; "
                             f"available: {', '.join(__all__)}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
