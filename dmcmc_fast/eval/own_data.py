"""Samples of your own model against your own data (`dmcmc-fast eval SAMPLES --data PATH [--classifier FILE]`):

- `fd_pixels`: the Fréchet distance between Gaussian fits of the samples and the data in pixel space (each
  image flattened; d = C·H·W), with each set's mean pixel value and pixel standard deviation;
- `fd_classifier_features`: the same in the features of a noise-level classifier trained on the data
  (`dmcmc-fast train classifier --data PATH`; `NoiseLevelNet.embed`, the conv features its last layer sees, of
  the clean images). An offline stand-in for FID where no Inception weights or data-specific feature network
  exist; like FID it compares samples and data in one fixed feature space, so it ranks samplers of one model
  on one data set, not across data sets.
The data are read as `train classifier` reads them (a folder of images, .npz/.npy, a .pt tensor, a built-in
set) and scaled to the model's data range. Sample statistics are reduced over torchrun ranks (`stats`).
"""
from __future__ import annotations

import torch

from dmcmc_fast.eval.features import apply_batched
from dmcmc_fast.eval.frechet import frechet_distance, gaussian_stats


def _pixel_summary(x: torch.Tensor) -> dict:
    f = x.double()
    return {"pixel_mean": float(f.mean()), "pixel_std": float(f.std())}


def own_data_report(samples: torch.Tensor, data: torch.Tensor, classifier=None, stats=None) -> dict:
    """{"fd_pixels", "fd_classifier_features" (given a `TrainedLevelClassifier`), "data": {N, pixel_mean,
    pixel_std}, "samples": {pixel_mean, pixel_std}} (module docstring); `stats(x) -> (mu, cov, n)`: the
    samples' Gaussian fit (default: this process's samples alone)."""
    if tuple(samples.shape[1:]) != tuple(data.shape[1:]):
        raise ValueError(f"samples have shape {tuple(samples.shape[1:])}, --data has {tuple(data.shape[1:])}")
    if data.shape[0] < 2:
        raise ValueError(f"--data needs at least 2 images for a covariance, got {data.shape[0]}")
    fit = stats if stats is not None else (lambda x: (*gaussian_stats(x), x.shape[0]))
    mu, cov, _ = fit(samples.float())
    report = {"fd_pixels": frechet_distance(mu, cov, *gaussian_stats(data.float())),
              "data": {"num": int(data.shape[0]), **_pixel_summary(data)}, "samples": _pixel_summary(samples)}
    if classifier is not None:
        if tuple(classifier.shape) != tuple(data.shape[1:]):
            raise ValueError(f"--classifier was trained on shape {tuple(classifier.shape)}, the data have "
                             f"{tuple(data.shape[1:])}")
        net = classifier.net

        @torch.no_grad()
        def embed(x):
            p = next(net.parameters())
            return net.embed(x.to(p.device, p.dtype)).double().cpu()

        mu_f, cov_f, _ = fit(apply_batched(embed, samples.float()))
        report["fd_classifier_features"] = frechet_distance(mu_f, cov_f, *gaussian_stats(apply_batched(embed,
                                                                                                        data.float())))
    return report
