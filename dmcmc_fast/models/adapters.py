"""Adapters: other model kinds -> the VE denoiser form `D(x, sigma, **model_kwargs)` (DESIGN.md).

- `VEScoreAdapter`: a VE score network `s(x, sigma)` (NCSN/NCSN++): `D = x + sigma^2 s(x, sigma)`.
- `VPAdapter`: a VP network on `x_t = sqrt(abar) x0 + sqrt(1 - abar) eps` at discrete time t with
  `alphas_cumprod` (DDPM). Between the two forms: `x_ve = x_vp / sqrt(abar)`,
  `sigma = sqrt((1 - abar) / abar)`, i.e. `abar = 1 / (1 + sigma^2)`. For a VE input `(x, sigma)`:
  `x_vp = x / sqrt(1 + sigma^2)`, `t` = the (fractional) timestep whose sigma matches, found by linear
  interpolation in log sigma over the table, and then by prediction type
    eps:    D = x - sigma * eps                   (x_ve = x0 + sigma eps)
    x0:     D = x0_hat
    v:      x0 = sqrt(abar) x_vp - sqrt(1 - abar) v   (v = sqrt(abar) eps - sqrt(1 - abar) x0)
  Its noise range is the table's: sigma_min = sigma(t=0), sigma_max = sigma(t=T-1).
- `DiffusersUNetAdapter`: a diffusers `UNet2DModel` or `UNet2DConditionModel` plus its scheduler's
  `alphas_cumprod` and `prediction_type`, via `VPAdapter` (`dmcmc_fast.from_diffusers` builds one). Its
  `own_sigmas(n)` is the scheduler's grid (`dmcmc_fast.own_grid`). A scheduler's step-time x0 clipping or
  thresholding (`clip_sample`, on by default in DDPM and DDIM; `thresholding`) is the scheduler's, not the
  model's: D is never clipped here.
- `Guided`: classifier-free guidance around any denoiser that takes `model_kwargs` (EDM-style nets
  `D(x, sigma, class_labels=...)`); the adapters take the same option as `guidance_scale=` /
  `uncond_kwargs=`.

Conditioning: keyword arguments after `sigma` (`class_labels`, `encoder_hidden_states`,
`added_cond_kwargs`, ...) go to the network as they are; the sampling API slices them per sample
(`dmcmc_fast.models.kwargs`). Precision: the conversion runs in the state's dtype (float32) and the
network in its own (bf16/fp16 weights: inputs and floating kwargs cast to it, the output cast back),
so the adapters declare `handles_dtype`.

Classifier-free guidance (Ho & Salimans 2022): with w = `guidance_scale`,
    D = D_uncond + w (D_cond - D_uncond),
D_cond with the call's kwargs, D_uncond with `uncond_kwargs` (a tensor there with one row, e.g. the null
class or the empty prompt's embedding, is used for every sample; keys it lacks keep the call's value).
Both halves run as one network call on a doubled batch: each NFE costs 2 network evaluations (the NFE
count stays per denoiser call). w = 1 is the conditional model, w = 0 the unconditional one; None (the
default) is no guidance and one evaluation per NFE.
"""
from __future__ import annotations

import copy

import torch

from dmcmc_fast.models import kwargs as kw
from dmcmc_fast.models.base import bcast, network_dtype, take_model_attrs

PREDICTION_TYPES = ("eps", "x0", "v")


def guided(denoise, x: torch.Tensor, sigma: torch.Tensor, model_kwargs: dict, guidance_scale: float | None,
           uncond_kwargs: dict | None) -> torch.Tensor:
    """`denoise(x, sigma, **model_kwargs)`, with classifier-free guidance when `guidance_scale` is set
    (module docstring): one call on `[x; x]` with the cond rows then the uncond rows of the kwargs."""
    if guidance_scale is None:
        return denoise(x, sigma, **model_kwargs)
    B = x.shape[0]
    both = kw.concat(model_kwargs, uncond_kwargs or {}, B)
    d_cond, d_uncond = denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), **both).split(B)
    return d_uncond + guidance_scale * (d_cond - d_uncond)


def _check_guidance(guidance_scale, uncond_kwargs):
    if guidance_scale is not None and not (isinstance(guidance_scale, (int, float))
                                           and abs(float(guidance_scale)) < float("inf")):
        raise ValueError(f"guidance_scale must be a finite number or None, got {guidance_scale!r}")
    if guidance_scale is not None and not uncond_kwargs:
        raise ValueError("guidance_scale needs uncond_kwargs: the model's unconditional inputs, e.g. "
                         "{'class_labels': torch.tensor([null_class])} or {'encoder_hidden_states': empty_prompt}")
    if uncond_kwargs is not None and not isinstance(uncond_kwargs, dict):
        raise ValueError(f"uncond_kwargs must be a dict, got {type(uncond_kwargs).__name__}")


def _to(dt: torch.dtype | None, t: torch.Tensor) -> torch.Tensor:
    return t.to(dt) if dt is not None and t.is_floating_point() else t


class _Adapter:
    """What every adapter shares: `to(device)` moves the wrapped network, guidance options, dtypes."""

    _net_attr = "net"
    handles_dtype = True

    def _guidance(self, guidance_scale, uncond_kwargs):
        _check_guidance(guidance_scale, uncond_kwargs)
        self.guidance_scale = None if guidance_scale is None else float(guidance_scale)
        self.uncond_kwargs = uncond_kwargs
        self._uncond_on: dict = {}  # device -> uncond_kwargs' tensors there

    def _uncond(self, device: torch.device):
        """`uncond_kwargs` with its tensors on `device`, copied once per device: a host tensor copied in every
        call would be a host-to-device copy per NFE (a stall, and no CUDA graph capture)."""
        key = str(device)
        if key not in self._uncond_on:
            self._uncond_on[key] = kw.tree_map(lambda t: t.to(device), self.uncond_kwargs)
        return self._uncond_on[key]

    def to(self, device):
        net = getattr(self, self._net_attr)
        if isinstance(net, torch.nn.Module):
            net.to(device)
        return self

    def __call__(self, x, sigma, **model_kwargs):
        uncond = self._uncond(x.device) if self.guidance_scale is not None else None
        return guided(self.denoise, x, sigma, model_kwargs, self.guidance_scale, uncond)


class Guided(_Adapter):
    """Classifier-free guidance around a denoiser `model(x, sigma, **model_kwargs)` (module docstring):
    `Guided(edm_net, guidance_scale=2.0, uncond_kwargs={"class_labels": null})`; the model's attributes
    (shape, sigma_min, sigma_max, data_range) carry over."""

    _net_attr = "model"

    def __init__(self, model, guidance_scale: float, uncond_kwargs: dict):
        self.model = model
        self._guidance(guidance_scale, uncond_kwargs)
        take_model_attrs(self, model)
        self.handles_dtype = getattr(model, "handles_dtype", False) or network_dtype(model) is None

    def denoise(self, x, sigma, **model_kwargs):
        return self.model(x, sigma, **model_kwargs)


class VEScoreAdapter(_Adapter):
    _net_attr = "score_net"

    def __init__(self, score_net, shape, sigma_min: float = 0.01, sigma_max: float = 50.0,
                 data_range=(-1.0, 1.0), guidance_scale: float | None = None, uncond_kwargs: dict | None = None):
        self.score_net, self.shape = score_net, tuple(shape)
        self.sigma_min, self.sigma_max, self.data_range = sigma_min, sigma_max, tuple(data_range)
        self._guidance(guidance_scale, uncond_kwargs)

    def denoise(self, x, sigma, **model_kwargs):
        dt = network_dtype(self)
        score = self.score_net(_to(dt, x), _to(dt, sigma), **(kw.cast(model_kwargs, dt) if dt else model_kwargs))
        score = score.to(x.dtype)
        return x + bcast(sigma.to(x.dtype), x) ** 2 * score


class VPAdapter(_Adapter):
    """`net(x_vp, t, **model_kwargs) -> eps | x0 | v` with `t` a float timestep in [0, T-1] (fractional
    allowed). Options: `guidance_scale`, `uncond_kwargs` (classifier-free guidance, module docstring)."""

    def __init__(self, net, alphas_cumprod, shape, prediction_type: str = "eps",
                 data_range=(-1.0, 1.0), guidance_scale: float | None = None, uncond_kwargs: dict | None = None):
        if prediction_type == "epsilon":
            prediction_type = "eps"
        if prediction_type == "sample":
            prediction_type = "x0"
        if prediction_type == "v_prediction":
            prediction_type = "v"
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or abar.numel() < 2 or (abar <= 0).any() or (abar >= 1).any():
            raise ValueError("alphas_cumprod must be a 1-D table of values in (0, 1)")
        self.net, self.shape, self.prediction_type = net, tuple(shape), prediction_type
        self.sigmas = ((1 - abar) / abar).sqrt()  # increasing in t
        if not (self.sigmas[1:] > self.sigmas[:-1]).all():
            raise ValueError("alphas_cumprod must be strictly decreasing")
        self.log_sigmas = self.sigmas.log().float()
        self._log_sigmas_on: dict = {}  # per device, copied once: a copy per call would be a host-to-device
        # transfer inside the sampling loop (a stall, and it breaks CUDA-graph capture)
        self.sigma_min, self.sigma_max = float(self.sigmas[0]), float(self.sigmas[-1])
        self.data_range = tuple(data_range)
        self._guidance(guidance_scale, uncond_kwargs)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep by linear interpolation of log sigma (clamped to the table)."""
        ls = self._log_sigmas_on.get(sigma.device)
        if ls is None:
            ls = self._log_sigmas_on[sigma.device] = self.log_sigmas.to(sigma.device)
        log_s = sigma.float().log().clamp(ls[0], ls[-1])
        hi = torch.searchsorted(ls, log_s).clamp(1, len(ls) - 1)
        lo = hi - 1
        w = (log_s - ls[lo]) / (ls[hi] - ls[lo])
        return lo.float() + w

    _time_in_float32 = False  # the timestep goes in the network's dtype (diffusers: float32, it embeds it so)

    def _net(self, x_vp, t, **model_kwargs):
        return self.net(x_vp, t, **model_kwargs)

    def denoise(self, x, sigma, **model_kwargs):
        s = bcast(sigma.to(x.dtype), x)
        c_in = 1.0 / torch.sqrt(1.0 + s * s)  # sqrt(abar)
        x_vp = x * c_in
        dt, t = network_dtype(self), self.sigma_to_t(sigma)
        out = self._net(_to(dt, x_vp), t if self._time_in_float32 else _to(dt, t),
                        **(kw.cast(model_kwargs, dt) if dt else model_kwargs)).to(x.dtype)
        if self.prediction_type == "eps":
            return x - s * out
        if self.prediction_type == "x0":
            return out
        sqrt_1m = s * c_in  # sqrt(1 - abar) = sigma / sqrt(1 + sigma^2)
        return c_in * x_vp - sqrt_1m * out


class DiffusersUNetAdapter(VPAdapter):
    """A diffusers `UNet2DModel` / `UNet2DConditionModel` with its DDPM-style scheduler, as a VE denoiser.

    Conditioning goes through `model_kwargs`: `class_labels` (a class-conditional `UNet2DModel`, e.g.
    `num_class_embeds`), `encoder_hidden_states` (and `added_cond_kwargs`, ...) for a
    `UNet2DConditionModel`. The timestep is passed as a float (fractional between table entries); the
    UNet runs in its own dtype. `guidance_scale` / `uncond_kwargs`: classifier-free guidance (module
    docstring), 2 network evaluations per NFE."""

    _net_attr = "unet"
    _time_in_float32 = True

    def __init__(self, unet, scheduler, data_range=(-1.0, 1.0), guidance_scale: float | None = None,
                 uncond_kwargs: dict | None = None):
        cfg = unet.config
        shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) \
            else (cfg.in_channels, *cfg.sample_size)
        self.unet, self.scheduler = unet, scheduler
        super().__init__(None, scheduler.alphas_cumprod, shape, prediction_type=scheduler.config.prediction_type,
                         data_range=data_range, guidance_scale=guidance_scale, uncond_kwargs=uncond_kwargs)
        self.in_channels, self.out_channels = cfg.in_channels, getattr(cfg, "out_channels", cfg.in_channels)
        if self.out_channels != self.in_channels:  # learned-variance UNets: the prediction is the first half
            if self.out_channels != 2 * self.in_channels:
                raise ValueError(f"the UNet predicts {self.out_channels} channels for {self.in_channels} input "
                                 "channels; expected the same number (or twice, with a learned variance)")

    def own_sigmas(self, n: int) -> torch.Tensor:
        """The scheduler's own grid of `n` noise levels, then 0 (float64 `[n + 1]`): what `set_timesteps(n)` gives
        on a copy of it (its spacing, Karras or not, its timesteps). A scheduler with `sigmas` (Euler, Heun,
        DPM-Solver, UniPC, ...) gives them (Heun's repeated inner levels once); one without (DDPM, DDIM, PNDM)
        the table's sigma at each timestep. The last step, to 0, is the sampler's Tweedie step (where a scheduler
        ends above 0, at sigma(t=0), diffusers stops there instead). The sampling API uses it as the default grid
        (`dmcmc_fast.own_grid`)."""
        sched = copy.deepcopy(self.scheduler)
        try:
            sched.set_timesteps(n)
        except ValueError as err:  # e.g. more steps than the training table has
            raise ValueError(f"the scheduler's own grid of {n} levels: {type(self.scheduler).__name__}.set_timesteps"
                             f"({n}) refused ({err}); pass sigmas= (your own grid), or sigma_min/sigma_max (the "
                             "sampler's grid over that range), or a smaller nfe") from None
        sig = getattr(sched, "sigmas", None)
        if sig is not None:
            levels = torch.unique_consecutive(torch.as_tensor(sig).detach().to("cpu", torch.float64))
            levels = levels[levels > 0]
        else:
            levels = self.sigmas[torch.as_tensor(sched.timesteps).to("cpu").long()]
        if levels.numel() < n:
            raise ValueError(f"{type(self.scheduler).__name__}.set_timesteps({n}) gave {levels.numel()} distinct "
                             f"noise levels, fewer than {n}; pass sigmas= (your own grid) or sigma_min/sigma_max")
        return torch.cat([levels[:n], levels.new_zeros(1)])

    def _net(self, x_vp, t, **model_kwargs):
        out = self.unet(x_vp, t, **model_kwargs).sample
        return out[:, :self.in_channels] if self.out_channels != self.in_channels else out
