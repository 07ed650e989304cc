"""Did DLG's chains mix? A one-line warning after a run whose chains did not (issue 32).

A DLG run that goes wrong still returns samples: with a classifier that has not learnt the levels, the Gibbs
step keeps every chain at the top level and each block denoises a state far from the data, or the chains
never leave the mode they started in. `MixingWatch` reads the per-sample books as the batches come out (in
sample order, so a chain's blocks arrive in order) and `warning()` says, in one line, when

- every consecutive pair of a chain's samples has the same label (no mode or class switch; the label is
  the nearest mode of an analytic mixture, or the predicted digit of the project's MNIST feature net for
  1x28x28 data; no label elsewhere), over at least `MIN_PAIRS` pairs of the first `LABEL_CHAINS` chains; or
- at least `TOP_SHARE` of the samples of the later half of the blocks were denoised from the classifier's
  top level, over at least `MIN_SAMPLES` samples (block sigma pinned there: the Gibbs step never lowers it;
  the first half is left out, where a chain may still sit at its initialisation's level),

with the figures and what to try. Measured on unet-mnist with the committed classifier at a 10-NFE block
(bench/RESULTS.md, "DLG vs the integrator alone", seeds 11-15), the chains change predicted digit in 33-47%
of their consecutive samples and are denoised from a median sigma of about 3 (the top level is 80): far
from both conditions. On gmm-mnist with the exact classifier (--nfe 10 --n-skip 5, 20 chains, 400 samples)
they change mode in 48%.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch

TOP_SHARE = 0.9  # share of samples denoised from the top level above which the block sigma is "pinned"
MIN_PAIRS = 20  # consecutive pairs needed before "no switch" is read as "did not mix"
MIN_SAMPLES = 20  # samples (of the later half of the blocks) needed before the block sigma is read as pinned
LABEL_CHAINS = 64  # the switches are counted on chains 0..63 (a label costs a feature-net call per sample)


class DLGMixingWarning(UserWarning):
    """A DLG run whose chains did not mix (`MixingWatch.warning`)."""


def labeller(model) -> tuple[Callable | None, str]:
    """(x -> [B] int labels, their name) for the switch count: an analytic mixture's nearest mode, the MNIST
    feature net's predicted digit for 1x28x28 data, else (None, "")."""
    if hasattr(model, "nearest_mode"):
        return (lambda x: model.nearest_mode(x).cpu().numpy()), "mode"
    if tuple(getattr(model, "shape", ())) == (1, 28, 28):
        from dmcmc_fast.eval.features import apply_batched, load_feature_net

        net = load_feature_net()
        return (lambda x: apply_batched(net, x.float().cpu().clamp(-1, 1)).argmax(1).numpy()), "class"
    return None, ""


class MixingWatch:
    """The books of a DLG run's samples so far, for `warning()`. `top`: the classifier's top level (its levels'
    maximum); `label`/`label_name`: from `labeller`; `eta`, `init_nfe`: the run's (named in the advice)."""

    def __init__(self, top: float, label: Callable | None = None, label_name: str = "", eta: float | None = None,
                 init_nfe: int | None = None):
        self.top, self.label, self.label_name = float(top), label, label_name
        self.eta, self.init_nfe = eta, init_nfe
        self.pairs = self.switches = 0
        self.last: dict[int, int] = {}  # chain -> label of its latest sample
        self.by_block: dict[int, list] = {}  # block -> [samples, of which denoised from the top level, their sigmas]

    def add(self, samples: torch.Tensor, chain: np.ndarray, block: np.ndarray, sigma: np.ndarray):
        """One batch's samples with their chains, blocks and block sigmas (a chain's blocks in order across calls)."""
        sigma, block, chain = np.asarray(sigma, dtype=np.float64), np.asarray(block), np.asarray(chain)
        for b in np.unique(block).tolist():
            s = sigma[block == b]
            books = self.by_block.setdefault(b, [0, 0, []])
            books[0] += len(s)
            books[1] += int((s >= self.top * (1 - 1e-4)).sum())
            books[2].append(s)
        keep = np.nonzero(chain < LABEL_CHAINS)[0]
        if self.label is None or len(keep) == 0:
            return
        labels = self.label(samples[torch.from_numpy(keep)])
        for c, lab in zip(chain[keep].tolist(), np.asarray(labels).tolist()):
            if c in self.last:
                self.pairs += 1
                self.switches += int(lab != self.last[c])
            self.last[c] = lab

    def warning(self) -> str | None:
        """One line when the chains did not mix (module docstring), else None. The top-level share is read over
        the later half of the blocks (a chain's first blocks still carry its initialisation's level)."""
        if not self.by_block:
            return None
        first = max(self.by_block) // 2 + (max(self.by_block) > 0)  # the later half: blocks first..last
        later = [self.by_block[b] for b in sorted(self.by_block) if b >= first]
        n, at_top = sum(v[0] for v in later), sum(v[1] for v in later)
        pinned = n >= MIN_SAMPLES and at_top >= TOP_SHARE * n
        stuck = self.label is not None and self.pairs >= MIN_PAIRS and self.switches == 0
        if not (pinned or stuck):
            return None
        median = float(np.median(np.concatenate([s for v in later for s in v[2]])))
        blocks = f"blocks {first}-{max(self.by_block)}" if first < max(self.by_block) else f"block {first}"
        facts = [f"{at_top / n:.0%} of the {n} samples of {blocks} denoised from the top level sigma {self.top:.4g} "
                 f"(median block sigma {median:.4g})"]
        if self.label is not None and self.pairs:
            facts.append(f"{self.switches} {self.label_name} switches in {self.pairs} consecutive pairs of "
                         f"{len(self.last)} chains")
        eta = f" (now {self.eta:g})" if self.eta is not None else ""
        init = f" (now {self.init_nfe})" if self.init_nfe is not None else ""
        try_ = ("a noise-level classifier that meets its targets (a trained one's card says; dmcmc-fast train "
                f"classifier with larger --steps and --max-minutes) or a longer initialisation, --init-nfe{init}"
                if pinned else f"a larger --eta{eta}, --eta-scaling sigma2, or --restart-every 10")
        return f"dlg: the chains did not mix: {'; '.join(facts)}; try {try_}"

    def warn(self):
        """`warning()` as a `DLGMixingWarning`, if any."""
        msg = self.warning()
        if msg is not None:
            warnings.warn(msg, DLGMixingWarning, stacklevel=3)
