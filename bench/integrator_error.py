"""Error vs NFE of every reverse S/ODE integrator on Gaussian data, where the answer is exact.

Data N(mu, s^2 I), s = 1, d = 3. Deterministic integrators: 3 samples started at sigma 10, 5, 2.5 (per-sample
starts), integrated to sigma_min = 0.1 on Karras grids (rho = 3), error = max over samples of
|x(sigma_min) - exact PF-ODE solution| (mu + (x0 - mu) sqrt((s^2 + sigma^2)/(s^2 + sigma0^2))); the measured order
is the least-squares slope of log error vs log(steps) over the last three points. RK45 and the adaptive
DPM-Solver-12/23: the same, one point per tolerance (rtol = atol), NFE as the solver spent it. Stochastic
integrators: 4000 chains in 2-D from the exact marginal at sigma 5 to sigma_min 0.05; error = |pooled
variance / (s^2 + sigma_min^2) - 1| (Monte-Carlo standard deviation 0.016, drawn as a floor); their bias is
first order in the step.

    python bench/integrator_error.py   # writes bench/results/integrator_error.{json,png}
"""
from __future__ import annotations

import json
import math
import os
import platform
import time

import numpy as np
import torch

from dmcmc_fast import rng
from dmcmc_fast.integrators import INTEGRATORS
from dmcmc_fast.models.gaussian_mixture import gaussian

HERE = os.path.dirname(os.path.abspath(__file__))
F64 = torch.float64
MU, S = torch.tensor([0.5, -1.0, 2.0]), 1.0

DETERMINISTIC = [  # label, sampler, options, steps N
    ("euler", "euler", {}, [5, 9, 17, 33, 65, 129]),
    ("heun (KAR1)", "heun", {}, [5, 9, 17, 33, 65]),
    ("DPM-Solver++(2M)", "dpmpp_2m", {}, [5, 9, 17, 33, 65, 129]),
    ("UniPC-2 (bh2)", "unipc", dict(order=2), [5, 9, 17, 33, 65, 129]),
    ("UniPC-3 (bh2)", "unipc", dict(order=3), [5, 9, 17, 33, 65, 129]),
    ("deis r=1 ve", "deis", dict(order=1, ab_time="ve"), [5, 9, 17, 33, 65, 129]),
    ("deis r=2 ve rk-start", "deis", dict(order=2, ab_time="ve", warm_start="runge_kutta"), [5, 9, 17, 33, 65, 129]),
    ("deis r=3 ve rk-start", "deis", dict(order=3, ab_time="ve", warm_start="runge_kutta"), [5, 9, 17, 33, 65, 129]),
    ("deis r=3 ve (paper warm start)", "deis", dict(order=3, ab_time="ve"), [5, 9, 17, 33, 65, 129]),
    ("deis r=3 rho rk-start", "deis", dict(order=3, ab_time="rho", warm_start="runge_kutta"), [5, 9, 17, 33, 65, 129]),
    ("deis r=3 vp rk-start", "deis", dict(order=3, ab_time="vp", warm_start="runge_kutta"), [5, 9, 17, 33, 65, 129]),
]
ADAPTIVE = [  # label, sampler, options, tolerances rtol = atol (one point each, at the NFE spent)
    ("rk45 (rtol=atol 1e-2..1e-8)", "rk45", {}, [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]),
    ("DPM-12 adaptive (tol 1e-1..1e-6)", "dpm_adaptive", dict(order=2),
     [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]),
    ("DPM-23 adaptive (tol 1e-1..1e-7)", "dpm_adaptive", dict(order=3),
     [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]),
]
STOCHASTIC = [
    ("karras_sde (KAR2, S_churn 10)", "karras_sde", dict(s_churn=10.0, s_tmin=0.0, s_tmax=1e9, s_noise=1.0), [5, 9, 17, 33, 65]),
    ("reverse_diffusion", "reverse_diffusion", {}, [9, 17, 33, 65, 129, 257]),
    ("euler_maruyama", "euler_maruyama", {}, [9, 17, 33, 65, 129, 257]),
]


def fit_order(nfe, err, last=3):
    x, y = np.log(np.asarray(nfe[-last:], float)), np.log(np.asarray(err[-last:], float))
    return float(-np.polyfit(x, y, 1)[0])


def deterministic():
    s0 = torch.tensor([10.0, 5.0, 2.5], dtype=F64)
    x0 = MU.double() + torch.sqrt(S ** 2 + s0[:, None] ** 2) * rng.chain_randn(
        0, torch.arange(3), 0, (3,), stream=rng.STREAM_INIT, dtype=F64)
    truth = MU.double() + (x0 - MU.double()) * torch.sqrt((S ** 2 + 0.01) / (S ** 2 + s0[:, None] ** 2))
    m, rows = gaussian(MU, S), []
    for label, name, kw, steps in DETERMINISTIC:
        nfe, err = [], []
        for n in steps:
            res = INTEGRATORS[name][0](m, x0, s0, n, sigma_min=0.1, rho=3.0, final_tweedie=False, **kw)
            nfe.append(int(res.nfe.max()))
            err.append((res.x - truth).norm(dim=1).max().item())
        rows.append(dict(label=label, sampler=name, options=kw, steps=steps, nfe=nfe, error=err,
                         order_vs_steps=fit_order([n - 1 for n in steps], err), order_vs_nfe=fit_order(nfe, err)))
    for label, name, kw, tols in ADAPTIVE:
        nfe, err = [], []
        for tol in tols:
            res = INTEGRATORS[name][0](m, x0, s0, 100_000, sigma_min=0.1, rtol=tol, atol=tol,
                                       final_tweedie=False, **kw)
            nfe.append(int(res.nfe.max()))
            err.append((res.x - truth).norm(dim=1).max().item())
        rows.append(dict(label=label, sampler=name, options=kw, tols=tols, nfe=nfe, error=err,
                         order_vs_nfe=fit_order(nfe, err)))
    return rows


def stochastic(n=4000):
    mu = torch.tensor([0.5, -1.0])
    m, var = gaussian(mu, S), S ** 2 + 0.05 ** 2
    x0 = mu.double() + math.sqrt(S ** 2 + 25.0) * rng.chain_randn(1, torch.arange(n), 0, (2,),
                                                                   stream=rng.STREAM_INIT, dtype=F64)
    rows = []
    for label, name, kw, steps in STOCHASTIC:
        nfe, err = [], []
        for k in steps:
            res = INTEGRATORS[name][0](m, x0, 5.0, k, sigma_min=0.05, seed=3, final_tweedie=False, **kw)
            nfe.append(int(res.nfe.max()))
            err.append(abs(res.x.var(0).mean().item() / var - 1))
        rows.append(dict(label=label, sampler=name, options=kw, steps=steps, nfe=nfe, error=err,
                         mc_sd=math.sqrt(2 / (2 * n))))
    return rows


def plot(det, sto, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    for r in det:
        lab = r["label"] + (f"  (order {r['order_vs_steps']:.2f})" if "order_vs_steps" in r else
                            f"  (slope vs NFE {r['order_vs_nfe']:.2f})")
        a.loglog(r["nfe"], r["error"], "o-", label=lab, ms=3)
    a.set(xlabel="NFE per sample", ylabel="max |x(sigma_min) - exact|",
          title="PF-ODE integrators, Gaussian data, sigma 10/5/2.5 -> 0.1")
    a.legend(fontsize=7)
    for r in sto:
        b.loglog(r["nfe"], r["error"], "o-", label=r["label"], ms=3)
    b.axhline(sto[0]["mc_sd"], color="gray", ls="--", label="Monte-Carlo sd (4000 chains)")
    b.set(xlabel="NFE per sample", ylabel="|var / true var - 1|", title="Reverse SDE samplers, sigma 5 -> 0.05")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    torch.set_num_threads(1)
    t0 = time.time()
    det, sto = deterministic(), stochastic()
    out = dict(device=f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}",
               time=time.strftime("%Y-%m-%d %H:%M:%S"), seconds=round(time.time() - t0, 1),
               deterministic=det, stochastic=sto)
    res = os.path.join(HERE, "results")
    os.makedirs(res, exist_ok=True)
    with open(os.path.join(res, "integrator_error.json"), "w") as f:
        json.dump(out, f, indent=1)
    plot(det, sto, os.path.join(res, "integrator_error.png"))
    print(f"{'integrator':34s} {'NFE':>16s} {'order (vs steps)':>17s}")
    for r in det:
        print(f"{r['label']:34s} {str(r['nfe'][0]) + '..' + str(r['nfe'][-1]):>16s} "
              f"{r.get('order_vs_steps', r['order_vs_nfe']):17.2f}")
    for r in sto:
        print(f"{r['label']:34s} {str(r['nfe'][0]) + '..' + str(r['nfe'][-1]):>16s}   var err "
              + " ".join(f"{e:.3f}" for e in r["error"]))


if __name__ == "__main__":
    main()
