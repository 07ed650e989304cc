"""Analytic models with exact denoisers at every sigma.

Isotropic Gaussian mixture `p0 = sum_k pi_k N(mu_k, s^2 I)`. Noised at level sigma it is
`p_sigma = sum_k pi_k N(mu_k, (s^2 + sigma^2) I)`, so with responsibilities
`r_k(x) ∝ pi_k N(x; mu_k, (s^2 + sigma^2) I)`:

    D(x, sigma) = E[x0 | x] = sum_k r_k (mu_k + s^2 / (s^2 + sigma^2) (x - mu_k))
                = (s^2 x + sigma^2 sum_k r_k mu_k) / (s^2 + sigma^2).

The logits need only `x . mu_k` (the `|x|^2` term cancels in the softmax), so one `[B, d] x [d, K]`
matmul and one `[B, K] x [K, d]` matmul: no `[B, K, d]` intermediate. With `s = 0` and uniform
weights this is the ideal denoiser of a finite data set (`IdealDenoiser`).
"""
from __future__ import annotations

import math

import torch

from dmcmc_fast.models.base import bcast


class GaussianMixture:
    def __init__(self, means: torch.Tensor, std: float, weights: torch.Tensor | None = None,
                 shape: tuple[int, ...] | None = None, labels: torch.Tensor | None = None,
                 sigma_min: float = 0.002, sigma_max: float = 80.0,
                 data_range: tuple[float, float] = (-1.0, 1.0), name: str = "gmm",
                 chunk: int = 4096):
        means = torch.as_tensor(means)
        if means.ndim < 2 or means.shape[0] < 1:
            raise ValueError(f"means must be [K, ...] with K >= 1, got shape {tuple(means.shape)}")
        if not (std >= 0 and math.isfinite(std)):
            raise ValueError(f"std must be finite and >= 0, got {std}")
        self.shape = tuple(shape) if shape is not None else tuple(means.shape[1:])
        K = means.shape[0]
        self.means = means.reshape(K, -1).to(torch.float32)
        if self.means.shape[1] != math.prod(self.shape):
            raise ValueError(f"means have {self.means.shape[1]} features, shape {self.shape} needs {math.prod(self.shape)}")
        w = torch.full((K,), 1.0 / K) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (K,) or (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"weights must be [K={K}] non-negative with positive sum")
        self.weights = w / w.sum()
        self.log_weights = torch.log(self.weights)
        self.mean_sq = (self.means ** 2).sum(1)  # |mu_k|^2
        self.std = float(std)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.data_range = tuple(data_range)
        self.name = name
        self.chunk = chunk
        self._device_cache: dict = {}

    # ---- device-resident copies (built once per device) ----
    def _params(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._device_cache:
            self._device_cache[key] = (self.means.to(device, dtype), self.mean_sq.to(device, dtype),
                                       self.log_weights.to(device, dtype))
        return self._device_cache[key]

    @property
    def num_modes(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def logits(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log pi_k + log N(x; mu_k, (s^2+sigma^2) I) up to a per-row constant: `[B, K]`."""
        mu, mu_sq, logw = self._params(x.device, x.dtype)
        var = self.std ** 2 + sigma.to(x.dtype) ** 2  # [B]
        xf = x.reshape(x.shape[0], -1)
        return logw + (xf @ mu.T - 0.5 * mu_sq) / var[:, None]

    def responsibilities(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x, sigma), dim=1)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for lo in range(0, x.shape[0], self.chunk):  # bounds the [B, K] intermediate
            xs, ss = x[lo:lo + self.chunk], sigma[lo:lo + self.chunk]
            mu = self._params(x.device, x.dtype)[0]
            post_mean = (self.responsibilities(xs, ss) @ mu).reshape(xs.shape)
            s2 = self.std ** 2
            sig2 = bcast(ss.to(x.dtype), xs) ** 2
            out[lo:lo + self.chunk] = (s2 * xs + sig2 * post_mean) / (s2 + sig2)
        return out

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Exact log p_sigma(x), `[B]` (needs std > 0 or sigma > 0)."""
        var = self.std ** 2 + sigma.to(x.dtype) ** 2
        xf = x.reshape(x.shape[0], -1)
        x_sq = (xf ** 2).sum(1)
        d = self.dim
        return (torch.logsumexp(self.logits(x, sigma), dim=1) - 0.5 * x_sq / var
                - 0.5 * d * torch.log(2 * math.pi * var))

    def sample(self, n: int, generator: torch.Generator | None = None, sigma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact samples of p_sigma and their component indices."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator)
        x = self.means[k] + math.sqrt(self.std ** 2 + sigma ** 2) * z
        return x.reshape(n, *self.shape), k

    # ---- exact moments, for Fréchet distances to the true distribution ----
    def mean(self) -> torch.Tensor:
        return (self.weights.double() @ self.means.double())

    def covariance(self) -> torch.Tensor:
        mu = self.means.double()
        c = mu - self.mean()
        return (c.T * self.weights.double()) @ c + self.std ** 2 * torch.eye(self.dim, dtype=torch.float64)

    def nearest_mode(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Index of the closest mean to each sample (Euclidean), `[B]`."""
        mu, mu_sq, _ = self._params(x.device, torch.float32)
        xf = x.reshape(x.shape[0], -1).float()
        out = []
        for lo in range(0, xf.shape[0], chunk):
            out.append((mu_sq - 2 * xf[lo:lo + chunk] @ mu.T).argmin(1))
        return torch.cat(out)


class IdealDenoiser(GaussianMixture):
    """The ideal (posterior-mean) denoiser of a finite data set: a mixture of deltas at the data."""

    def __init__(self, data: torch.Tensor, labels: torch.Tensor | None = None, **kw):
        super().__init__(data, std=0.0, labels=labels, **kw)

    def log_prob(self, x, sigma):  # pragma: no cover - delegated; defined for sigma > 0
        return super().log_prob(x, sigma)


def gaussian(mean: torch.Tensor, std: float, **kw) -> GaussianMixture:
    """A single isotropic Gaussian N(mean, std^2 I) as a one-component mixture."""
    mean = torch.as_tensor(mean, dtype=torch.float32)
    return GaussianMixture(mean[None], std=std, name=kw.pop("name", "gaussian"), shape=tuple(mean.shape), **kw)
