"""Adapters: other model kinds -> the VE denoiser form `D(x, sigma)` (DESIGN.md).

- `VEScoreAdapter`: a VE score network `s(x, sigma)` (NCSN/NCSN++): `D = x + sigma^2 s(x, sigma)`.
- `VPAdapter`: a VP network on `x_t = sqrt(abar) x0 + sqrt(1 - abar) eps` at discrete time t with
  `alphas_cumprod` (DDPM). Between the two forms: `x_ve = x_vp / sqrt(abar)`,
  `sigma = sqrt((1 - abar) / abar)`, i.e. `abar = 1 / (1 + sigma^2)`. For a VE input `(x, sigma)`:
  `x_vp = x / sqrt(1 + sigma^2)`, `t` = the (fractional) timestep whose sigma matches, found by linear
  interpolation in log sigma over the table, and then by prediction type
    eps:    D = x - sigma * eps                   (x_ve = x0 + sigma eps)
    x0:     D = x0_hat
    v:      x0 = sqrt(abar) x_vp - sqrt(1 - abar) v   (v = sqrt(abar) eps - sqrt(1 - abar) x0)
- `DiffusersUNetAdapter`: a diffusers `UNet2DModel` plus its scheduler's `alphas_cumprod` and
  `prediction_type`, via `VPAdapter`.
"""
from __future__ import annotations

import torch

from dmcmc_fast.models.base import bcast

PREDICTION_TYPES = ("eps", "x0", "v")


class _NetOnDevice:
    """`to(device)` for adapters: moves the wrapped network when it is an `nn.Module`."""

    _net_attr = "net"

    def to(self, device):
        net = getattr(self, self._net_attr)
        if isinstance(net, torch.nn.Module):
            net.to(device)
        return self


class VEScoreAdapter(_NetOnDevice):
    _net_attr = "score_net"

    def __init__(self, score_net, shape, sigma_min: float = 0.01, sigma_max: float = 50.0,
                 data_range=(-1.0, 1.0)):
        self.score_net, self.shape = score_net, tuple(shape)
        self.sigma_min, self.sigma_max, self.data_range = sigma_min, sigma_max, tuple(data_range)

    def __call__(self, x, sigma):
        return x + bcast(sigma, x) ** 2 * self.score_net(x, sigma)


class VPAdapter(_NetOnDevice):
    """`net(x_vp, t) -> eps | x0 | v` with `t` a float timestep in [0, T-1] (fractional allowed)."""

    def __init__(self, net, alphas_cumprod, shape, prediction_type: str = "eps",
                 data_range=(-1.0, 1.0)):
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

    def __call__(self, x, sigma):
        s = bcast(sigma.to(x.dtype), x)
        c_in = 1.0 / torch.sqrt(1.0 + s * s)  # sqrt(abar)
        x_vp = x * c_in
        out = self.net(x_vp, self.sigma_to_t(sigma))
        if self.prediction_type == "eps":
            return x - s * out
        if self.prediction_type == "x0":
            return out
        sqrt_1m = s * c_in  # sqrt(1 - abar) = sigma / sqrt(1 + sigma^2)
        return c_in * x_vp - sqrt_1m * out


class DiffusersUNetAdapter(VPAdapter):
    """A diffusers `UNet2DModel` with its DDPM-style scheduler, as a VE denoiser."""

    def __init__(self, unet, scheduler, data_range=(-1.0, 1.0)):
        cfg = unet.config
        shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size) if isinstance(cfg.sample_size, int) \
            else (cfg.in_channels, *cfg.sample_size)
        net = lambda x, t: unet(x, t).sample  # noqa: E731
        super().__init__(net, scheduler.alphas_cumprod, shape,
                         prediction_type=scheduler.config.prediction_type, data_range=data_range)
        self.unet = unet

    _net_attr = "unet"
