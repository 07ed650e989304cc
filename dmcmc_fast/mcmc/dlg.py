"""Denoising Langevin Gibbs (DLG; Kim & Ye, "Denoising MCMC for Accelerating Diffusion-Based
Generative Models", ICML 2023), as the paper runs it.

State (x, sigma) lives in data x noise-level space; sigma is one of M levels (`classifier.levels`).
  Langevin step  x <- x + (eta/2) s(x, sigma) + sqrt(eta) z          (at the chain's current sigma)
  Gibbs step     sigma <- argmax_m p(m | x)  (or a draw from p(m | x) ∝ prior_m softmax(logits)_m)
Blocks of n_skip Langevin-Gibbs steps; the block's minimum-sigma iterate is denoised by an integrator
(any of dmcmc_fast.integrators, final Tweedie step included) with a budget of n_den NFE from that
iterate's own sigma; the chain continues from the block's *last* state. Initialisation: a short
integrator run from N(0, sigma_max^2 I), plus N(0, init_noise^2) noise, a Gibbs step, then n_init
Langevin-Gibbs steps. Every model call, initialisation included, is counted by the CountingDenoiser;
classifier calls are counted apart.

Defaults are the paper's (official code's) settings converted to our data range [-1, 1] (the paper
scales data to [0, 1]: lengths x2, Langevin step sizes, which are variances, x4). What still differs:

| setting                   | paper / official code ([0, 1])       | here ([-1, 1])                        |
|---------------------------|--------------------------------------|---------------------------------------|
| eta (with KAR1 = heun)    | 0.5                                  | 2.0 (x4)                              |
| noise after the init run  | std 0.5                              | init_noise 1.0 (x2)                   |
| denoise to / lowest level | 0.01 / 0.01009                       | sigma_min 0.02, levels from 0.02 (x2) |
| highest level, init start | 50                                   | sigma_max 100 (x2)                    |
| init integrator           | KAR2, N = 20 steps (the official     | karras_sde with the same S_* options, |
|                           | code spends 37 NFE), S_churn 80,     | S_tmin 0.1, S_tmax 2 (x2); init_nfe   |
|                           | S_tmin 0.05, S_tmax 1, S_noise 1.007 | 20 NFE (N = 10): the share each sample|
|                           |                                      | pays stays small at few blocks        |
| karras_sde as the block's | KAR2's options as above              | karras_sde's own defaults, EDM's      |
| denoiser                  |                                      | ImageNet churn (S_churn 40, S_tmin    |
|                           |                                      | 0.05, S_tmax 50, S_noise 1.003); the  |
|                           |                                      | official ones in our units: integrator|
|                           |                                      | _options '{"s_churn": 80, "s_tmin":   |
|                           |                                      | 0.1, "s_tmax": 2, "s_noise": 1.007}'  |
| final Tweedie step        | one more model call after the        | inside n_den: the denoiser's last NFE |
|                           | denoiser, not counted in the NFE     | (DESIGN: every call is counted)       |
| NFE per sample            | the paper's "10.11" leaves that call | counted as spent: the paper's 10.11   |
|                           | out                                  | is 11.11 here                         |
| n_skip                    | set per budget (paper Fig. 6)        | default from the budget,              |
|                           |                                      | `n_skip_for_budget` (measured on      |
|                           |                                      | unet-mnist, bench/RESULTS.md)         |
| init Langevin-Gibbs steps | 10 at eta 0.5, then 10 at eta        | n_init 10 at eta                      |
| block minimum candidates  | the block's start state too          | only the block's own n_skip iterates: |
|                           |                                      | otherwise a block whose steps never   |
|                           |                                      | lower sigma denoises the state the    |
|                           |                                      | block before denoised (16% duplicate  |
|                           |                                      | consecutive samples at n_skip 1)      |
| classifier input          | the raw image                        | raw image + per-channel rms features  |
|                           |                                      | (`mcmc/classifier.py`); the exact     |
|                           |                                      | posterior for analytic models         |

Beyond the paper, ways to make the chain mix at low sigma (issue 15; measured in bench/results/dlg_mixing.md):
a Gibbs draw from a tempered posterior (gibbs="sample", gibbs_temperature), a level prior ∝ sigma^a
(level_prior_power), a step that scales with the level (eta_scaling="sigma2"), and fresh initialisations:
with restart_every = R > 0, the chain re-runs its initialisation (the same one it starts with, at fresh
RNG counters) at the start of every block whose index (counted from the chain's first block) is a
positive multiple of R, and continues from there, so a fraction 1/R of its blocks begin from a fresh
initialisation and no block depends on the chain before its last restart. Every chain of a call restarts
at the same block index: no data-dependent shapes, no host reads. NFE: a restart's cost is counted with
the initialisation's (`DLGState.nfe_init`) and charged to the blocks it serves, as the first
initialisation's is (`DLGResult.block_init_nfe`; `engine.dlg_run` divides it by the blocks served).

Randomness: one RNG counter per chain run, advanced by every consumer, so no (step, stream) pair is used
twice: prior noise (STREAM_INIT, step 0), init integrator (step0 = the counter), init noise (STREAM_INIT)
and its Gibbs draw, then each Langevin-Gibbs step (STREAM_LANGEVIN, STREAM_GIBBS at step = the counter),
each denoise (step0 = the counter); the block arithmetic is `Counters` (names: `rng` module docstring).
With restart_every > 0 every block first reserves the counters of one initialisation (`DLGConfig.init_span`),
which a restart uses from its first (`Counters.restart`) and other blocks leave unused, so each restart
draws fresh numbers that depend only on (seed, chain, block).

A block reads as the paper's section 4 in `dlg_block` (n_skip Langevin-Gibbs steps, the lowest-sigma iterate,
its denoising); a step is `langevin_gibbs_step` (the kernels chosen once per run by `step_kernels`); `run_dlg` is
the loop over blocks, with the restarts and the books (`_Books`) beside it. On CUDA the engine captures a
call of it whole, the chains' state in the graph's buffers (`dmcmc_fast.engine.dlg_whole`); its RNG counter may then
be a per-chain device tensor instead of an int (`Counters` computes the same counters either way).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, NamedTuple

import torch

from dmcmc_fast import rng
from dmcmc_fast.kernels import noise  # per-chain normals: one launch on CUDA, rng.chain_randn on the CPU
from dmcmc_fast.integrators.common import ensure_counting
from dmcmc_fast.kernels._args import in_dtype
from dmcmc_fast.kernels._dispatch import choose_backend
from dmcmc_fast.kernels.gibbs import gibbs_select, gibbs_select_block_min, step_impls as gibbs_impls
from dmcmc_fast.kernels.langevin import langevin_impl, langevin_step
from dmcmc_fast.validate import check_int, check_positive


def integrator(name: str):
    """-> (sample_fn, steps_for_nfe) of a registered reverse S/ODE integrator."""
    from dmcmc_fast.integrators import INTEGRATORS

    if name not in INTEGRATORS:
        raise ValueError(f"integrator must be one of {', '.join(sorted(INTEGRATORS))}, got {name!r}")
    return INTEGRATORS[name]


# The official code's KAR2 initialisation options, noise levels x2 for data in [-1, 1]
PAPER_KAR2 = {"s_churn": 80.0, "s_tmin": 0.1, "s_tmax": 2.0, "s_noise": 1.007}


@dataclass(frozen=True)
class DLGConfig:
    """DLG's options, named as in the paper. Units: eta, sigmas in the model's data units."""
    eta: float = 2.0  # Langevin step size (paper 0.5 on [0, 1] data)
    n_skip: int = 5  # Langevin-Gibbs steps per block (each 1 NFE)
    n_den: int = 10  # denoising budget per block (NFE, final Tweedie step included)
    integrator: str = "heun"
    integrator_options: dict = field(default_factory=dict)
    sigma_min: float = 0.02  # denoise down to here, then Tweedie to 0 (official code: 0.01 on [0, 1])
    sigma_max: float = 100.0  # initialisation starts from N(0, sigma_max^2 I) (official code: 50)
    gibbs: str = "argmax"  # or "sample": draw from p(m | x) (with log_prior)
    log_prior: torch.Tensor | None = None  # [M] log prior over levels (gibbs="sample" or argmax)
    init_integrator: str = "karras_sde"
    init_integrator_options: dict | None = None  # None: PAPER_KAR2 for karras_sde, else the integrator's own
    init_nfe: int = 20  # budget of the initial integrator run
    init_noise: float = 1.0  # std of the noise added after it (paper 0.5 on [0, 1])
    n_init: int = 10  # Langevin-Gibbs steps after the first Gibbs step
    # Beyond the paper: ways to make the chain roam sigma (see `level_log_prior`, `step_sizes`)
    eta_scaling: str = "constant"  # or "sigma2": the step at level sigma is eta * sigma^2
    gibbs_temperature: float = 1.0  # gibbs="sample": draw from p(m | x)^(1 / T)
    level_prior_power: float = 0.0  # a: prior over levels ∝ sigma_m^a (a > 0 favours high levels)
    restart_every: int = 0  # R: blocks R, 2R, ... start from a fresh initialisation (0: never)

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
        if self.eta_scaling not in ("constant", "sigma2"):
            raise ValueError(f"eta_scaling must be 'constant' or 'sigma2', got {self.eta_scaling!r}")
        check_positive("gibbs_temperature", self.gibbs_temperature)
        if not math.isfinite(self.level_prior_power):
            raise ValueError(f"level_prior_power must be finite, got {self.level_prior_power}")
        check_int("restart_every", self.restart_every, 0)
        self.den_steps()
        integrator(self.init_integrator)

    def den_steps(self) -> int:
        return integrator(self.integrator)[1](self.n_den, **self.integrator_options)

    def init_options(self) -> dict:
        if self.init_integrator_options is not None:
            return self.init_integrator_options
        return dict(PAPER_KAR2) if self.init_integrator == "karras_sde" else {}

    def init_steps(self) -> int:
        return integrator(self.init_integrator)[1](self.init_nfe, **self.init_options())

    def init_cost(self) -> int:
        """NFE per chain of the initialisation (an upper bound: integrators spend at most their budget)."""
        return self.init_nfe + self.n_init

    def block_cost(self) -> int:
        return self.n_skip + self.n_den

    def init_span(self) -> int:
        """RNG counters one initialisation uses: prior noise, the integrator's steps + 1, the noise and first
        Gibbs step, n_init Langevin-Gibbs steps (`dlg_init`)."""
        return 1 + self.init_steps() + 1 + 1 + self.n_init

    def restarts_at(self, block: int) -> bool:
        """Whether the chain's block `block` (counted from its first) starts from a fresh initialisation."""
        return self.restart_every > 0 and block > 0 and block % self.restart_every == 0

    def counters(self, step0: int) -> "Counters":
        """The counters of a run of blocks from `step0`; with restarts, each block leads with an init's span."""
        return Counters(step0, self.n_skip, self.den_steps(), self.init_span() if self.restart_every else 0)


def n_skip_for_budget(nfe: int) -> int:
    """The default n_skip (Langevin-Gibbs steps per block) for a block budget of `nfe` NFE: about a quarter of it,
    (nfe + 2) // 4, at least 1 and leaving the denoiser at least 1 NFE: 1 up to 5 NFE, 3 at 10, 5 at 20. Few
    steps per block leave the denoiser most of a small budget: on unet-mnist at 10 NFE the former fixed
    default, n_skip 5, gave feature FD 244.9 against 137.8 for n_skip 3 (issue 32, seed 7; the CLI's default
    chains and 100), and over seeds 11-15 n_skip 1, 2 and 3 are within each other's intervals, 3 spending the whole
    block with Heun (bench/RESULTS.md, "DLG vs the integrator alone"). The paper sets n_skip per budget too
    (its Fig. 6)."""
    check_int("nfe", nfe, 1)
    return max(1, min(nfe - 1, (nfe + 2) // 4))


@dataclass(frozen=True)
class Counters:
    """The RNG counters of a chain run that starts at `step0` (`DLGState.step`). Block b first reserves
    `lead` counters (a restart's initialisation starts at step0 + b * stride; 0 without restarts); its j-th
    Langevin-Gibbs step draws its noise and Gibbs variate at step0 + b * stride + lead + j; its denoising
    integrator starts at step0 + b * stride + lead + n_skip and uses den_steps + 1 counters, so
    stride = lead + n_skip + den_steps + 1. `block` and `j` may be tensors (one counter per row)."""
    step0: int
    n_skip: int
    den_steps: int
    lead: int = 0

    @property
    def stride(self) -> int:
        return self.lead + self.n_skip + self.den_steps + 1

    def step(self, block, j):
        return self.step0 + block * self.stride + self.lead + j

    def restart(self, block):
        """The first counter of block `block`'s restart (its initialisation's `step0`)."""
        return self.step0 + block * self.stride

    def denoise(self, block):
        return self.step(block, self.n_skip)

    def after(self, n_blocks: int) -> int:
        """The counter a run continues from after `n_blocks` blocks."""
        return self.step0 + n_blocks * self.stride


def level_log_prior(cfg: DLGConfig, levels: torch.Tensor) -> torch.Tensor | None:
    """The Gibbs step's log prior over the levels, already divided by the temperature: cfg.log_prior plus
    a log sigma_m (a = level_prior_power), over T. None when it is flat (the classifier's posterior as is)."""
    prior = None if cfg.log_prior is None else cfg.log_prior.to(levels.device, torch.float32)
    if prior is not None and prior.shape != levels.shape:
        raise ValueError(f"log_prior must have shape [{len(levels)}] (one per level), got {tuple(prior.shape)}")
    if cfg.level_prior_power:
        power = cfg.level_prior_power * torch.log(levels.float())
        prior = power if prior is None else prior + power
    return prior if prior is None or cfg.gibbs_temperature == 1.0 else prior / cfg.gibbs_temperature


class StepKernels(NamedTuple):
    """The kernels of a DLG step, chosen once per run for its device (`step_kernels`): no dispatch or shape
    check per call (the entry points of `dmcmc_fast.kernels` do both on every call)."""
    langevin: Callable  # langevin_step's implementation
    select: Callable  # gibbs_select's
    select_block_min: Callable  # gibbs_select_block_min's: the Gibbs step and the block minimum in one launch


def step_kernels(x: torch.Tensor) -> StepKernels:
    return StepKernels(langevin_impl(x), *gibbs_impls(x))


def langevin_gibbs_step(x, denoised, sigma, cfg: DLGConfig, classifier, levels, log_prior, seed, ids, step,
                        z=None, kernels: StepKernels | None = None, best=None):
    """One Langevin step at each row's own sigma (from the model's `denoised` output at (x, sigma)),
    then the Gibbs step sigma <- argmax_m p(m | x) or a draw from p(m | x)^(1/T) (`log_prior` from
    `level_log_prior`). Returns (x, sigma); `step` (the RNG counter of both draws) is an int or one per row;
    `z`: the Langevin normals of this step if the caller drew them ahead (`_Chains.langevin_noise`); `kernels`:
    the run's `step_kernels` (default: the dispatching entry points); `best`: the block's lowest-sigma iterate
    (best_x, best_sigma) so far, updated in place with the new (x, sigma) where sigma is lower."""
    # eta_scaling "sigma2": a step of eta sigma^2 keeps the move relative to the noise level,
    # x += (eta/2)(D - x) + sqrt(eta) sigma z
    eta = cfg.eta * sigma * sigma if cfg.eta_scaling == "sigma2" else cfg.eta
    if kernels is None:
        x = langevin_step(x, denoised, sigma, eta, seed, ids, step, z=z)
    else:
        x = kernels.langevin(x, denoised, sigma, eta, seed, ids, step, rng.STREAM_LANGEVIN, z=z)
    return x, gibbs_step(x, cfg, classifier, levels, log_prior, seed, ids, step, kernels, best)


def gibbs_step(x, cfg: DLGConfig, classifier, levels, log_prior, seed, ids, step,
               kernels: StepKernels | None = None, best=None) -> torch.Tensor:
    """sigma <- argmax_m p(m | x), or a Gumbel-max draw from p(m | x)^(1/T) (prior included); with `best` =
    (best_x, best_sigma), also the block minimum: rows where the new sigma is lower take (x, sigma) (one launch)."""
    logits = classifier(x)
    if cfg.gibbs_temperature != 1.0:
        logits = logits / cfg.gibbs_temperature
    args = (logits, levels, log_prior, cfg.gibbs == "sample", seed, ids, step, rng.STREAM_GIBBS)
    if best is None:
        _, sigma = (gibbs_select if kernels is None else kernels.select)(*args)
    elif kernels is None:
        _, sigma = gibbs_select_block_min(*args[:2], x, *best, *args[2:])
    else:
        _, sigma = kernels.select_block_min(*args, x, *best)
    return in_dtype(sigma, x.dtype)


def denoise_block(model, cfg: DLGConfig, x, sigma, seed, ids, step0):
    """The block's denoising job: cfg.integrator from each row's own sigma to sigma_min, final Tweedie
    step included, its noise from `step0` on (`Counters.denoise`)."""
    fn, _ = integrator(cfg.integrator)
    return fn(model, x, sigma, cfg.den_steps(), sigma_min=cfg.sigma_min, seed=seed, chain_ids=ids, step0=step0,
              final_tweedie=True, **cfg.integrator_options).x


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
    nfe_init: torch.Tensor  # [B] int64, of which the initialisation (and the restarts: `restart_every`)
    classifier_evals: torch.Tensor  # [B] int64
    classifier_evals_init: torch.Tensor | None = None  # [B] int64, of which the initialisation(s)
    nfe_last_init: torch.Tensor | None = None  # [B] int64: the latest initialisation's (None: nfe_init's)
    classifier_evals_last_init: torch.Tensor | None = None  # [B] int64: likewise

    def rows(self, lo: int, hi: int) -> "DLGState":
        """The state of chains lo..hi-1 of this one (positions, not chain ids)."""
        return replace(self, **{k: getattr(self, k)[lo:hi] for k in self.__dataclass_fields__
                                if torch.is_tensor(getattr(self, k))})

    def save(self, path: str):
        torch.save({k: getattr(self, k) for k in self.__dataclass_fields__}, path)

    @staticmethod
    def load(path: str, device="cpu") -> "DLGState":
        from dmcmc_fast.files import read_checkpoint

        what = "DLG resume state"
        d = read_checkpoint(path, what, needs=("x", "sigma", "step"), device=device)
        try:
            return DLGState(**d)
        except TypeError as err:  # fields of another version or file
            raise ValueError(f"{what} {path}: not a DLG chain state ({err}); remove it to start those chains "
                             "anew") from None


@dataclass
class DLGResult:
    samples: torch.Tensor  # [n_blocks, B, *shape]: each block's denoised sample (this call's blocks)
    block_sigma: torch.Tensor  # [n_blocks, B]: the level each sample was denoised from
    state: DLGState
    block_init_nfe: torch.Tensor | None = None  # [n_blocks, B] int64: NFE of the initialisation that serves
    #                                             each block (the first one, or the latest restart)
    block_init_evals: torch.Tensor | None = None  # [n_blocks, B] int64: its classifier evaluations

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
        self.log_prior = level_log_prior(cfg, self.levels)
        self.evals = 0  # classifier calls per chain so far (every chain is in every call: a host count)
        self.kernels = step_kernels(chain_ids)  # chosen once for the chains' device

    def gibbs(self, x: torch.Tensor, step: int) -> torch.Tensor:
        self.evals += 1
        return gibbs_step(x, self.cfg, self.classifier, self.levels, self.log_prior, self.seed, self.ids, step,
                          self.kernels)

    def langevin_gibbs(self, x, sigma, step: int, z=None, best=None):
        self.evals += 1
        return langevin_gibbs_step(x, self.model(x, sigma), sigma, self.cfg, self.classifier, self.levels,
                                   self.log_prior, self.seed, self.ids, step, z=z, kernels=self.kernels, best=best)

    @property
    def classifier_evals(self) -> torch.Tensor:
        """[B] int64: the classifier evaluations each chain has had in this call."""
        return torch.full_like(self.ids, self.evals)

    def langevin_noise(self, ctr: "Counters", n_blocks: int, x: torch.Tensor):
        """`z(b, j)`: the Langevin normals of block b's step j where the torch reference runs (the numbers that step
        would draw: stream STREAM_LANGEVIN at `ctr.step(b, j)`), drawn ahead: every block's of the call at once
        when they fit in `noise.PREDRAW_ELEMENTS`, else each block's when it starts; None where the fused kernel
        draws its own, or where even one block's do not fit (each step then draws its own)."""
        n_skip, shape = self.cfg.n_skip, x.shape[1:]
        if choose_backend(x) == "triton" or n_skip * x.numel() > noise.PREDRAW_ELEMENTS:
            return None
        if n_blocks * n_skip * x.numel() <= noise.PREDRAW_ELEMENTS:
            zs = noise.chain_randn_runs(self.seed, self.ids, ctr.step(0, 0), n_blocks, n_skip, ctr.stride, shape,
                                        stream=rng.STREAM_LANGEVIN, device=x.device).reshape(-1, *x.shape).unbind(0)
            return lambda b, j: zs[b * n_skip + j]
        drawn = {}  # the current block's

        def z(b, j):
            if b not in drawn:
                drawn.clear()
                drawn[b] = noise.chain_randn_steps(self.seed, self.ids, ctr.step(b, 0), n_skip, shape,
                                                   stream=rng.STREAM_LANGEVIN, device=x.device).unbind(0)
            return drawn[b][j]
        return z

    def integrate(self, name: str, nfe: int, x, sigma_start, step0: int, options: dict):
        """-> (the integrated x, the counter after the run's n + 1 steps)."""
        fn, steps_for_nfe = integrator(name)
        n = steps_for_nfe(nfe, **options)
        res = fn(self.model, x, sigma_start, n, sigma_min=self.cfg.sigma_min, seed=self.seed, chain_ids=self.ids,
                 step0=step0, final_tweedie=True, **options)
        return res.x, step0 + n + 1


@torch.no_grad()
def dlg_init(model, classifier, cfg: DLGConfig, chain_ids: torch.Tensor, seed: int = 0, dtype=torch.float32,
             _chains: _Chains | None = None, step0: int = 0) -> DLGState:
    """Short integrator run from the prior, + N(0, init_noise^2) noise, a Gibbs step, n_init L-G steps; its
    RNG counters are step0 .. step0 + cfg.init_span() - 1 (a restart's: `Counters.restart`)."""
    model = ensure_counting(model, chain_ids.shape[0], chain_ids.device)
    c = _chains or _Chains(model, classifier, cfg, seed, chain_ids)
    shape = tuple(model.shape)
    before, evals = model.nfe.clone(), c.evals
    x = cfg.sigma_max * noise.chain_randn(seed, chain_ids, step0, shape, stream=rng.STREAM_INIT,
                                          device=chain_ids.device, dtype=dtype)
    x, step = c.integrate(cfg.init_integrator, cfg.init_nfe, x, cfg.sigma_max, step0 + 1, cfg.init_options())
    x = x + cfg.init_noise * noise.chain_randn(seed, chain_ids, step, shape, stream=rng.STREAM_INIT,
                                             device=chain_ids.device, dtype=dtype)
    sigma = c.gibbs(x, step)
    step += 1
    for _ in range(cfg.n_init):
        x, sigma = c.langevin_gibbs(x, sigma, step)
        step += 1
    spent, cls = model.nfe - before, torch.full_like(chain_ids, c.evals - evals)
    return DLGState(x, sigma, step, 0, spent.clone(), spent.clone(), cls, cls.clone(), spent.clone(), cls.clone())


def dlg_block(c: _Chains, x, sigma, ctr: Counters, b: int, z=None):
    """Block `b` of DLG (Kim & Ye 2023, Sec. 4), from the chains' state (x, sigma):

        for j = 1 .. n_skip:
            x     <- x + (eta/2) s(x, sigma) + sqrt(eta) z_j           Langevin, at the chain's own sigma
            sigma <- argmax_m p(m | x)                                 Gibbs, the noise-level classifier
        (x*, sigma*) = the block's iterate of lowest sigma
        x_0 = integrator(x*, sigma* -> sigma_min, n_den NFE) + Tweedie  the block's sample

    The chain goes on from the block's last (x, sigma). Step j draws at counter `ctr.step(b, j)` (`z(b, j)`: its
    Langevin normals drawn ahead, or None). The lowest-sigma iterate is kept in place by the Gibbs kernel (the
    block minimum fused with the argmax: `best`). -> (x, sigma, x*, sigma*, x_0)."""
    best = None
    for j in range(c.cfg.n_skip):
        x, sigma = c.langevin_gibbs(x, sigma, ctr.step(b, j), z=None if z is None else z(b, j), best=best)
        if best is None:  # the first step's fresh tensors are the block minimum so far; later steps update them in
            best = (x, sigma) if c.cfg.n_skip > 1 else (x.clone(), sigma.clone())  # place (a copy if also the state)
    x_min, sigma_min = best
    return x, sigma, x_min, sigma_min, denoise_block(c.model, c.cfg, x_min, sigma_min, c.seed, c.ids, ctr.denoise(b))


class _Books:
    """What a `run_dlg` call records besides the chains: each block's sample, its level, and the NFE and classifier
    evaluations of the initialisation that serves it (the chain's first, or its latest restart), as device tensors
    (no host reads); the restarts' cost is added to the state's initialisation books."""

    def __init__(self, state: DLGState):
        zero = torch.zeros_like(state.nfe)
        self.zero = zero
        self.cls_init = zero if state.classifier_evals_init is None else state.classifier_evals_init
        self.init_nfe = state.nfe_init if state.nfe_last_init is None else state.nfe_last_init
        self.init_evals = self.cls_init if state.classifier_evals_last_init is None else state.classifier_evals_last_init
        self.restart_nfe, self.restart_evals = zero, zero
        self.samples, self.sigma, self.block_init_nfe, self.block_init_evals = [], [], [], []

    def restart(self, fresh: DLGState):
        """A fresh initialisation now serves the chains' blocks."""
        self.init_nfe, self.init_evals = fresh.nfe.to(self.zero.device), fresh.classifier_evals.to(self.zero.device)
        self.restart_nfe, self.restart_evals = self.restart_nfe + self.init_nfe, self.restart_evals + self.init_evals

    def block(self, sample, sigma):
        self.samples.append(sample)
        self.sigma.append(sigma)
        self.block_init_nfe.append(self.init_nfe)
        self.block_init_evals.append(self.init_evals)

    def result(self, state: DLGState, x, sigma, step: int, n_blocks: int, spent, evals) -> DLGResult:
        new = replace(state, x=x, sigma=sigma, step=step, blocks=state.blocks + n_blocks, nfe=state.nfe + spent,
                      nfe_init=state.nfe_init + self.restart_nfe, classifier_evals=state.classifier_evals + evals,
                      classifier_evals_init=self.cls_init + self.restart_evals, nfe_last_init=self.init_nfe,
                      classifier_evals_last_init=self.init_evals)
        B = x.shape[0]
        out = torch.stack(self.samples) if self.samples else x.new_zeros((0, B, *x.shape[1:]))
        sig = torch.stack(self.sigma) if self.sigma else sigma.new_zeros((0, B))
        books = [torch.stack(v) if v else self.zero.new_zeros((0, B))
                 for v in (self.block_init_nfe, self.block_init_evals)]
        return DLGResult(out, sig, new, *books)


@torch.no_grad()
def run_dlg(model, classifier, n_blocks: int, cfg: DLGConfig, *, chains: int | None = None, chain_ids=None,
            seed: int = 0, state: DLGState | None = None, device="cpu", dtype=torch.float32,
            callback=None) -> DLGResult:
    """Run `n_blocks` DLG blocks (`dlg_block`) on `chains` independent chains (ids `chain_ids`, default
    0..chains-1), initialising them first unless `state` (from an earlier call with the same seed and ids) is given;
    with cfg.restart_every = R, blocks R, 2R, ... of the chain re-initialise it first (module docstring).

    Returns every block's denoised sample per chain and the state to resume from.
    """
    check_int("n_blocks", n_blocks, 0)
    ids = rng.resolve_chain_ids(chains, chain_ids, device)
    model = ensure_counting(model, ids.shape[0], ids.device)
    c = _Chains(model, classifier, cfg, seed, ids)
    if state is None:
        state = dlg_init(model, classifier, cfg, ids, seed, dtype, _chains=c)
        c.evals = 0
    elif state.x.shape[0] != ids.shape[0]:
        raise ValueError(f"state holds {state.x.shape[0]} chains, chain_ids has {ids.shape[0]}")
    x, sigma = state.x.to(device), state.sigma.to(device)
    ctr, books, before = cfg.counters(state.step), _Books(state), model.nfe.clone()
    z = c.langevin_noise(ctr, n_blocks, x)
    for b in range(n_blocks):
        if cfg.restarts_at(state.blocks + b):  # every chain of the call at once: fixed shapes
            fresh = dlg_init(model, classifier, cfg, ids, seed, x.dtype, _chains=c, step0=ctr.restart(b))
            x, sigma = fresh.x, fresh.sigma
            books.restart(fresh)
        x, sigma, _, sigma_min, sample = dlg_block(c, x, sigma, ctr, b, z)
        books.block(sample, sigma_min)
        if callback is not None:
            callback({"block": state.blocks + b, "x": x, "sigma": sigma, "sigma_min_block": sigma_min,
                      "denoised": sample})
    spent = (model.nfe - before).to(state.nfe.device)
    return books.result(state, x, sigma, ctr.after(n_blocks), n_blocks, spent,
                        c.classifier_evals.to(state.nfe.device))
