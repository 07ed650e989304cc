"""Denoising Langevin Gibbs (DLG; Kim & Ye, "Denoising MCMC for Accelerating Diffusion-Based
Generative Models", ICML 2023), as the paper runs it.

State (x, sigma) lives in data x noise-level space; sigma is one of M levels (`classifier.levels`).
  Langevin step  x <- x + (eta/2) s(x, sigma) + sqrt(eta) z          (at the chain's current sigma)
  Gibbs step     sigma <- argmax_m p(m | x)  (or a draw from p(m | x) ∝ prior_m softmax(logits)_m)
Blocks of n_skip Langevin-Gibbs steps; the block's minimum-sigma iterate (its start state included)
is denoised by an integrator (any of dmcmc_fast.integrators, final Tweedie step included) with a budget
of n_den NFE from that iterate's own sigma; the chain continues from the block's *last* state.
Initialisation: a short integrator run from N(0, sigma_max^2 I), plus noise of variance
init_noise^2 = 0.25, a Gibbs step, then n_init Langevin-Gibbs steps. Every model call, initialisation
included, is counted by the CountingDenoiser; classifier calls are counted apart.

Randomness: one counter k per chain run, advanced by every consumer, so no (step, stream) pair is used
twice: prior noise (STREAM_INIT, k=0), init integrator (step0=k), init noise (STREAM_INIT) and its Gibbs
draw, then each Langevin-Gibbs step (STREAM_LANGEVIN, STREAM_GIBBS at k), each denoise (step0=k).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from dmcmc_fast import rng
from dmcmc_fast.kernels import noise  # per-chain normals: one launch on CUDA, rng.chain_randn on the CPU
from dmcmc_fast.integrators.common import ensure_counting
from dmcmc_fast.kernels.gibbs import block_min_update, gibbs_select
from dmcmc_fast.kernels.langevin import langevin_step
from dmcmc_fast.mcmc.common import check_int, check_positive


def integrator(name: str):
    """-> (sample_fn, steps_for_nfe) of a registered reverse S/ODE integrator."""
    from dmcmc_fast.integrators import INTEGRATORS

    if name not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {', '.join(sorted(INTEGRATORS))}, got {name!r}")
    return INTEGRATORS[name]


@dataclass(frozen=True)
class DLGConfig:
    """DLG's options, named as in the paper. Units: eta, sigmas in the model's data units."""
    eta: float = 0.5  # Langevin step size
    n_skip: int = 5  # Langevin-Gibbs steps per block (each 1 NFE)
    n_den: int = 10  # denoising budget per block (NFE, final Tweedie step included)
    integrator: str = "heun"
    integrator_options: dict = field(default_factory=dict)
    sigma_min: float = 0.002  # denoise down to here, then Tweedie to 0
    sigma_max: float = 80.0  # initialisation starts from N(0, sigma_max^2 I)
    gibbs: str = "argmax"  # or "sample": draw from p(m | x) (with log_prior)
    log_prior: torch.Tensor | None = None  # [M] log prior over levels (gibbs="sample" or argmax)
    init_integrator: str = "karras_sde"
    init_nfe: int = 20  # budget of the initial integrator run
    init_noise: float = 0.5  # std of the noise added after it (variance 0.25)
    n_init: int = 10  # Langevin-Gibbs steps after the first Gibbs step

    def __post_init__(self):
        check_positive("eta", self.eta)
        check_int("n_skip", self.n_skip, 1)
        check_int("n_den", self.n_den, 1)
        check_int("init_nfe", self.init_nfe, 1)
        check_int("n_init", self.n_init, 0)
        check_positive("sigma_min", self.sigma_min)
        check_positive("sigma_max", self.sigma_max)
        if not self.init_noise >= 0:
            raise ValueError(f"init_noise must be >= 0, got {self.init_noise}")
        if self.gibbs not in ("argmax", "sample"):
            raise ValueError(f"gibbs must be 'argmax' or 'sample', got {self.gibbs!r}")
        self.den_steps()
        integrator(self.init_integrator)

    def den_steps(self) -> int:
        return integrator(self.integrator)[1](self.n_den, **self.integrator_options)

    def init_steps(self) -> int:
        return integrator(self.init_integrator)[1](self.init_nfe)

    def init_cost(self) -> int:
        """NFE per chain of the initialisation (an upper bound: integrators spend at most their budget)."""
        return self.init_nfe + self.n_init

    def block_cost(self) -> int:
        return self.n_skip + self.n_den


def blocks_for_budget(nfe: int, cfg: DLGConfig, with_init: bool = True) -> int:
    """Blocks that fit `nfe` per chain: stop when the next block would exceed the budget."""
    left = nfe - (cfg.init_cost() if with_init else 0)
    n = left // cfg.block_cost()
    if n < 1:
        raise ValueError(f"nfe must be at least {cfg.init_cost() * with_init + cfg.block_cost()} for DLG with "
                         f"init_nfe={cfg.init_nfe}, n_init={cfg.n_init}, n_skip={cfg.n_skip}, n_den={cfg.n_den}; "
                         f"got {nfe}")
    return int(n)


@dataclass
class DLGState:
    """Where each chain is; pass back to `run_dlg(state=...)` to resume (same seed, chain ids)."""
    x: torch.Tensor  # [B, *shape]
    sigma: torch.Tensor  # [B] the chain's current level
    step: int  # next RNG counter value
    blocks: int  # blocks done so far
    nfe: torch.Tensor  # [B] int64, model evaluations so far (initialisation included)
    nfe_init: torch.Tensor  # [B] int64, of which the initialisation
    classifier_evals: torch.Tensor  # [B] int64

    def save(self, path: str):
        torch.save({k: getattr(self, k) for k in self.__dataclass_fields__}, path)

    @staticmethod
    def load(path: str, device="cpu") -> "DLGState":
        d = torch.load(path, map_location=device, weights_only=True)
        return DLGState(**d)


@dataclass
class DLGResult:
    samples: torch.Tensor  # [n_blocks, B, *shape]: each block's denoised sample (this call's blocks)
    block_sigma: torch.Tensor  # [n_blocks, B]: the level each sample was denoised from
    state: DLGState

    def nfe_per_sample(self, include_init: bool = True) -> torch.Tensor:
        """[B] NFE per denoised sample over the whole chain, with or without the initialisation share."""
        s = self.state
        spent = s.nfe if include_init else s.nfe - s.nfe_init
        return spent.double() / max(s.blocks, 1)


class _Chains:
    """The per-call machinery: counting model, classifier, chain ids, seed, counters."""

    def __init__(self, model, classifier, cfg: DLGConfig, seed: int, chain_ids: torch.Tensor):
        self.model, self.classifier, self.cfg, self.seed, self.ids = model, classifier, cfg, seed, chain_ids
        self.levels = classifier.levels.to(chain_ids.device)
        self.log_prior = None if cfg.log_prior is None else cfg.log_prior.to(chain_ids.device)
        if self.log_prior is not None and self.log_prior.shape != self.levels.shape:
            raise ValueError(f"log_prior must have shape [{len(self.levels)}] (one per level), "
                             f"got {tuple(self.log_prior.shape)}")
        self.classifier_evals = torch.zeros_like(chain_ids)

    def gibbs(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """sigma ~ p(sigma | x): argmax (default) or a Gumbel-max draw from the classifier's posterior."""
        logits = self.classifier(x)
        self.classifier_evals += 1
        _, sigma = gibbs_select(logits, self.levels, self.log_prior, self.cfg.gibbs == "sample", self.seed,
                                self.ids, k)
        return sigma.to(x.dtype)

    def langevin_gibbs(self, x, sigma, k: int, eta: float):
        x = langevin_step(x, self.model(x, sigma), sigma, eta, self.seed, self.ids, k)
        return x, self.gibbs(x, k)

    def integrate(self, name: str, nfe: int, x, sigma_start, k: int, options: dict):
        fn, steps_for_nfe = integrator(name)
        n = steps_for_nfe(nfe, **options)
        res = fn(self.model, x, sigma_start, n, sigma_min=self.cfg.sigma_min, seed=self.seed, chain_ids=self.ids,
                 step0=k, final_tweedie=True, **options)
        return res.x, k + n + 1


@torch.no_grad()
def dlg_init(model, classifier, cfg: DLGConfig, chain_ids: torch.Tensor, seed: int = 0, dtype=torch.float32,
             _chains: _Chains | None = None) -> DLGState:
    """Short integrator run from the prior, + N(0, init_noise^2) noise, a Gibbs step, n_init L-G steps."""
    model = ensure_counting(model, chain_ids.shape[0], chain_ids.device)
    c = _chains or _Chains(model, classifier, cfg, seed, chain_ids)
    shape = tuple(model.shape)
    before = model.nfe.clone()
    x = cfg.sigma_max * noise.chain_randn(seed, chain_ids, 0, shape, stream=rng.STREAM_INIT, device=chain_ids.device,
                                        dtype=dtype)
    x, k = c.integrate(cfg.init_integrator, cfg.init_nfe, x, cfg.sigma_max, 1, {})
    x = x + cfg.init_noise * noise.chain_randn(seed, chain_ids, k, shape, stream=rng.STREAM_INIT,
                                             device=chain_ids.device, dtype=dtype)
    sigma = c.gibbs(x, k)
    k += 1
    for _ in range(cfg.n_init):
        x, sigma = c.langevin_gibbs(x, sigma, k, cfg.eta)
        k += 1
    spent = model.nfe - before
    return DLGState(x, sigma, k, 0, spent.clone(), spent.clone(), c.classifier_evals.clone())


@torch.no_grad()
def run_dlg(model, classifier, n_blocks: int, cfg: DLGConfig, *, chains: int | None = None, chain_ids=None,
            seed: int = 0, state: DLGState | None = None, device="cpu", dtype=torch.float32,
            callback=None) -> DLGResult:
    """Run `n_blocks` DLG blocks on `chains` independent chains (ids `chain_ids`, default 0..chains-1),
    initialising them first unless `state` (from an earlier call with the same seed and ids) is given.

    Returns every block's denoised sample per chain and the state to resume from.
    """
    check_int("n_blocks", n_blocks, 0)
    ids = rng.resolve_chain_ids(chains, chain_ids, device)
    model = ensure_counting(model, ids.shape[0], ids.device)
    c = _Chains(model, classifier, cfg, seed, ids)
    if state is None:
        state = dlg_init(model, classifier, cfg, ids, seed, dtype, _chains=c)
        c.classifier_evals.zero_()
    elif state.x.shape[0] != ids.shape[0]:
        raise ValueError(f"state holds {state.x.shape[0]} chains, chain_ids has {ids.shape[0]}")
    x, sigma, k = state.x.to(device), state.sigma.to(device), state.step
    before = model.nfe.clone()
    samples, block_sigma = [], []
    for b in range(n_blocks):
        best_x, best_sigma = x.clone(), sigma.clone()  # the block's start state is a candidate
        for _ in range(cfg.n_skip):
            x, sigma = c.langevin_gibbs(x, sigma, k, cfg.eta)
            k += 1
            block_min_update(x, sigma, best_x, best_sigma)
        den, k = c.integrate(cfg.integrator, cfg.n_den, best_x, best_sigma, k, cfg.integrator_options)
        samples.append(den)
        block_sigma.append(best_sigma)
        if callback is not None:
            callback({"block": state.blocks + b, "x": x, "sigma": sigma, "sigma_min_block": best_sigma,
                      "denoised": den})
    spent = (model.nfe - before).to(state.nfe.device)
    new = replace(state, x=x, sigma=sigma, step=k, blocks=state.blocks + n_blocks, nfe=state.nfe + spent,
                  classifier_evals=state.classifier_evals + c.classifier_evals.to(state.nfe.device))
    shape = (0, ids.shape[0], *x.shape[1:])
    out = torch.stack(samples) if samples else x.new_zeros(shape)
    sig = torch.stack(block_sigma) if block_sigma else sigma.new_zeros((0, ids.shape[0]))
    return DLGResult(out, sig, new)
