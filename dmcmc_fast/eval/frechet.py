"""Fréchet distance between Gaussians, d^2 = |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))
(Dowson & Landau 1982; FID's formula), in float64, computed as pytorch-fid computes it (its
`calculate_frechet_distance` itself passes `scipy.linalg.sqrtm` the `disp` argument that SciPy 1.18, the
SciPy of Python >= 3.12, removed, so FID and every FD failed there)."""
from __future__ import annotations

import warnings

import numpy as np
import torch


def gaussian_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of flattened samples, float64."""
    f = x.reshape(x.shape[0], -1).double()
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {f.shape[0]}")
    mu = f.mean(0)
    c = f - mu
    return mu.numpy(), (c.T @ c / (f.shape[0] - 1)).numpy()


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """d^2 between N(mu1, cov1) and N(mu2, cov2). (C1 C2)^(1/2) by `scipy.linalg.sqrtm`; where the product is
    so near singular that the root is not finite, both covariances get 1e-6 on their diagonal (pytorch-fid's
    remedy); a complex root's imaginary part, rounding, is dropped unless it is large (then an error)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"means must be [d] and covariances [d, d] alike, got {mu1.shape}, {cov1.shape}, "
                         f"{mu2.shape}, {cov2.shape}")
    for name, v in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        if not np.isfinite(v).all():  # sqrtm of a NaN matrix does not return (LAPACK loops, deaf to Ctrl-C)
            raise ValueError(f"Fréchet distance: {name} is not finite ({int((~np.isfinite(v)).sum())} of {v.size} "
                             "values are NaN or Inf): the samples it was computed from are not all finite")
    with warnings.catch_warnings():  # a singular product is handled below, not printed
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(root).all():
            offset = 1e-6 * np.eye(d)
            root = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise FloatingPointError(f"(C1 C2)^(1/2) has an imaginary part of {np.abs(root.imag).max():.3g}: "
                                     "the covariances are not positive semi-definite")
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root))


def psd_sqrt(c: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (rounding's negative eigenvalues as 0)."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fd_by_eigenvalues(mu, cov, mu_ref, cov_ref, root_ref: np.ndarray | None = None) -> float:
    """`frechet_distance` by symmetric eigensolves: tr((C Cr)^(1/2)) = tr((Cr^1/2 C Cr^1/2)^(1/2)), the sum of
    the square roots of that matrix's eigenvalues. `root_ref`: Cr^(1/2) (`psd_sqrt`), when many C share Cr."""
    root = psd_sqrt(cov_ref) if root_ref is None else root_ref
    lam = np.linalg.eigvalsh(root @ np.asarray(cov, np.float64) @ root)
    return float(((np.asarray(mu) - mu_ref) ** 2).sum() + np.trace(cov) + np.trace(cov_ref)
                 - 2 * np.sqrt(np.clip(lam, 0, None)).sum())


def fd_with_interval(x: torch.Tensor, chain: np.ndarray, mu_ref, cov_ref, boot: int, seed: int = 0):
    """(FD of samples or features `x` [N, ...] to the Gaussian (mu_ref, cov_ref), a 90% interval or None with
    boot = 0) from a bootstrap over *chains* (`chain` [N]: rows of one chain are resampled together, which
    keeps their autocorrelation in the interval; give every row its own id for independent samples).
    Resamples repeat rows, which biases FD upward (its finite-sample bias grows as the distinct rows fall),
    so the interval is the bootstrap's spread around its median, centred on the estimate (`fd_draws`)."""
    fd, draws = fd_draws(x, chain, mu_ref, cov_ref, boot, seed)
    if draws is None:
        return fd, None
    q05, q95 = np.quantile(draws, [0.05, 0.95])
    return fd, [float(q05), float(q95)]


def fd_draws(x: torch.Tensor, chain: np.ndarray, mu_ref, cov_ref, boot: int, seed: int = 0):
    """(FD, `boot` bootstrap replicates over chains centred on it: fd + draw - median(draws); None with boot = 0),
    as `fd_with_interval` takes them. Replicate b of several independent runs can be averaged to bootstrap
    their mean FD."""
    mu_ref, cov_ref = np.asarray(mu_ref, np.float64), np.asarray(cov_ref, np.float64)
    mu, cov = gaussian_stats(x)
    fd = frechet_distance(mu, cov, mu_ref, cov_ref)
    if boot == 0:
        return fd, None
    # one symmetric eigensolve per resample, with the reference's square root computed once (scipy's sqrtm per
    # resample is 10x slower)
    root = psd_sqrt(cov_ref)

    def fast_fd(mu_b, cov_b):
        return fd_by_eigenvalues(mu_b, cov_b, mu_ref, cov_ref, root)

    if abs(fast_fd(mu, cov) - fd) > 1e-6 * max(1.0, fd) + 1e-6:
        raise FloatingPointError(f"FD by eigenvalues {fast_fd(mu, cov)} != {fd}: ill-conditioned covariances")
    ids = np.unique(chain)
    by_chain = [np.nonzero(chain == c)[0] for c in ids]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(boot):
        pick = np.concatenate([by_chain[j] for j in rng.integers(0, len(ids), len(ids))])
        draws.append(fast_fd(*gaussian_stats(x[torch.from_numpy(pick)])))
    draws = np.asarray(draws)
    return fd, fd + draws - np.median(draws)
