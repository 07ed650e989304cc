"""Noise-level classifiers for DLG's Gibbs step: `classifier(x) -> logits [B, M]` over M noise levels
`classifier.levels` (decreasing; DLG paper: M = 1000 geometric levels). They are unconditional: they see
only `x` (a DLG run's `model_kwargs` go to the denoiser, never to the classifier).

- `NoiseLevelNet`: the paper's network, four 3x3 conv layers (32, 64, 128, 256 channels; ReLU, 2x2
  average pooling while the map is at least 2 wide) and one linear layer to M logits. Trained by
  `dmcmc-fast train classifier` / `dmcmc_fast.training.classifier.train_classifier` (cross-entropy, data
  noised at a uniformly drawn level). One change to the input so that it trains in minutes on a CPU:
  the net sees x / r and a constant plane log r, r = rms(x) (the raw input spans four orders of
  magnitude over sigma in [0.002, 80]); no information is lost, and the layers are the paper's.
  `input="raw"` is the paper's own input (x as it is).
- `TrainedLevelClassifier`: the network with its levels and, where the checkpoint has one, a per-level
  logit offset added to its logits (a calibration fitted on images kept out of training,
  `training.classifier.fit_logit_offset`); DLG's argmax and Gibbs draw see the sum.
- `ExactLevelPosterior`: for analytic mixtures, logits_m = log p_{sigma_m}(x) (exact), so that
  softmax(logits + log prior) is the exact posterior p(m | x) ∝ prior_m p_{sigma_m}(x).
- `save_classifier` / `load_classifier`: checkpoints (weights stored in float16) with their levels
  and a card; `load_classifier("mnist")` loads the committed one under dmcmc_fast/checkpoints/, and
  `load_classifier(path, model=model)` checks it against the model (`check_classifier`).

A checkpoint (`torch.save` of a dict, loadable with `weights_only=True`):
- `state_dict`: the `NoiseLevelNet`'s weights, float16;
- `shape`: `[C, H, W]`, the data shape it was trained on (must equal the model's `shape`);
- `levels`: `{"n_levels": M, "sigma_min": float, "sigma_max": float, "spacing": "geometric" | "given",
  "sigmas": [M floats]}`: class m is the noise level `sigmas[m]`, decreasing (class 0 = sigma_max);
  a checkpoint without `sigmas` (the older ones) has M geometric levels from the two ends;
- `data_range`: `[lo, hi]` of the clean data it was trained on (must equal the model's `data_range`;
  absent in older checkpoints: `[-1, 1]`);
- `input`: "rms" (x / rms(x) and log rms(x)) or "raw" (the paper's); absent in older checkpoints: "rms";
- `logit_offset`: float32 [M] added to the logits (a calibration); absent: none;
- `card`: markdown, what it was trained on, how long, its held-out level error by sigma band;
- `meta`: the card's facts as values (`data`, `steps`, `minutes`, `level_error`, ...).
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch
import torch.nn as nn

from dmcmc_fast import caches
from dmcmc_fast.files import load_weights, read_checkpoint
from dmcmc_fast.schedules import geometric
from dmcmc_fast.validate import inside_range, ranges_text

M_LEVELS = 1000
TRAIN_COMMAND = "dmcmc-fast train classifier --data PATH --out FILE"  # what the errors below tell users to run
CHECKPOINT_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints")


def level_sigmas(n_levels: int = M_LEVELS, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
    """The M geometric levels, sigma_max first (float32 [M])."""
    return geometric(n_levels, sigma_min, sigma_max).float()


class NoiseLevelNet(nn.Module):
    """Paper's classifier: conv 32/64/128/256 (3x3, pad 1) + ReLU + avg-pool 2, then one linear layer.
    `input`: "rms" (x / rms(x) and a plane log rms(x); C + 1 input channels) or "raw" (x; the paper's)."""

    CHANNELS = (32, 64, 128, 256)
    INPUTS = ("rms", "raw")

    def __init__(self, shape: tuple[int, ...], n_levels: int = M_LEVELS, input: str = "rms"):
        super().__init__()
        if input not in self.INPUTS:
            raise ValueError(f"input must be one of {', '.join(self.INPUTS)}, got {input!r}")
        c, h, w = shape
        self.shape, self.n_levels, self.input = tuple(shape), n_levels, input
        layers, cin = [], c + 1 if input == "rms" else c
        for cout in self.CHANNELS:
            layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU()]
            if min(h, w) >= 2:
                layers.append(nn.AvgPool2d(2, 2))
                h, w = h // 2, w // 2
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * h * w, n_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """What the last layer sees: the conv features, flattened `[B, F]` (also `eval`'s feature space)."""
        if self.input == "raw":
            return self.features(x).flatten(1)
        r = x.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-6).reshape(-1, 1, 1, 1)
        inp = torch.cat([x / r, torch.log(r).expand(-1, 1, *x.shape[2:])], dim=1)
        return self.features(inp).flatten(1)


class TrainedLevelClassifier:
    """A trained `NoiseLevelNet` with its levels: `__call__(x) -> logits [B, M]`, the network's logits plus
    `logit_offset` (float32 [M], a calibration; None: none). `shape`, `data_range`: the data it was trained
    on; `card`, `meta`: how (see the module docstring); `source`: where it was loaded from (a checkpoint
    path, or how it was made)."""

    def __init__(self, net: NoiseLevelNet, levels: torch.Tensor, card: str = "", data_range=(-1.0, 1.0),
                 meta: dict | None = None, source: str = "a trained classifier",
                 logit_offset: torch.Tensor | None = None):
        self.net, self.levels, self.card = net.eval(), levels, card
        self.shape, self.data_range = tuple(net.shape), tuple(float(v) for v in data_range)
        self.meta, self.source = meta or {}, source
        self._input = self._input_of(net)
        self.logit_offset = None
        if logit_offset is not None:
            self.logit_offset = torch.as_tensor(logit_offset, dtype=torch.float32).to(self._input[0])
            if self.logit_offset.shape != (net.n_levels,):
                raise ValueError(f"logit_offset must have shape [{net.n_levels}], got {tuple(self.logit_offset.shape)}")

    @staticmethod
    def _input_of(net) -> tuple:
        """(device, dtype) the network takes, read once (not by walking its modules on every call)."""
        p = next(net.parameters())
        return p.device, p.dtype

    def to(self, device):
        self.net.to(device)
        self.levels = self.levels.to(device)
        self._input = self._input_of(self.net)
        if self.logit_offset is not None:
            self.logit_offset = self.logit_offset.to(device)
        return self

    def levels_spec(self) -> dict:
        """The checkpoint's `levels` dict (module docstring)."""
        return levels_spec(self.levels)

    def save(self, path: str):
        """The checkpoint at `path` (`save_classifier`)."""
        save_classifier(path, self.net, self.levels_spec(), self.card, self.meta, self.data_range, self.logit_offset)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        device, dtype = self._input
        out = self.net(x if (x.device, x.dtype) == (device, dtype) else x.to(device, dtype))
        if self.logit_offset is not None:
            out = out + self.logit_offset
        return out if out.dtype == x.dtype else out.to(x.dtype)


class ExactLevelPosterior:
    """logits_m(x) = log p_{sigma_m}(x) for a `GaussianMixture` (exact Gaussian-mixture density).

    log p_sigma(x) = logsumexp_k(log w_k - r_k^2 / (2 var)) - (d/2) log(2 pi var), r_k = |x - mu_k|,
    var = s^2 + sigma^2. With r* = min_k r_k (mode k*), every level's value lies in
    [U_m + log w_k*, U_m], U_m = -r*^2/(2 var_m) - (d/2) log(2 pi var_m). Levels whose upper bound is
    more than `prune` nats under the best lower bound (posterior mass < M e^-prune) get their lower
    bound instead of the full sum over modes; all others are exact. `prune=inf` disables this.
    The kept levels form one window per row. On a GPU its width is `self.width`, a bound over all inputs
    fixed at construction, so a call has no data-dependent shape and reads nothing back to the host. On
    the CPU, where reading a value back costs nothing, the width is the widest kept window of the batch
    (often ~7x narrower: chains away from the data keep few levels), unless `STATIC_WIDTH_ON_CPU` (the
    sync audit sets it, to check the device branch on the CPU). Both widths give the same logits.
    """

    STATIC_WIDTH_ON_CPU = False

    def __init__(self, mixture, levels: torch.Tensor, prune: float = 40.0, max_elems: int = 2 ** 24):
        self.mixture, self.levels, self.prune, self.max_elems = mixture, levels, float(prune), max_elems
        self.width = self._window_width()
        self._log_w: dict = {}  # log mixture weights per device (copied once)

    def to(self, device):
        self.levels = self.levels.to(device)
        return self

    def _window_width(self) -> int:
        """Most levels any input keeps. Level m is kept iff U_m >= max U + log w_k* - prune (see above),
        so kept levels satisfy U_m(a) >= max_m' U_m'(a) - (prune - min log w), a = r*^2, whose count
        depends on a alone: take its maximum over a grid of a (each level as the maximiser of U, 4
        points per level step, and both ends), plus a margin of 4 levels for counts between grid points."""
        m = len(self.levels)
        if not math.isfinite(self.prune):
            return m
        g = self.mixture
        var = g.std ** 2 + self.levels.detach().cpu().double() ** 2  # [M], decreasing
        norm = -0.5 * g.dim * torch.log(2 * math.pi * var)
        margin = self.prune - float(torch.log(g.weights.double()).min())
        lv = torch.log(g.dim * var).flip(0)  # a = d var_m maximises U_m over continuous var
        a = torch.exp(torch.cat([(lv[:-1, None] + (lv[1:] - lv[:-1])[:, None] * torch.linspace(0, 1, 5)[:-1]).flatten(),
                                 lv[-1:], lv[-1:] + 2.0, lv[:1] - 2.0]))
        a = torch.cat([a, a.new_zeros(1)])
        widest = 0
        for rows in torch.split(a, 512):
            u = -rows[:, None] / (2 * var) + norm  # [A, M]
            widest = max(widest, int((u >= u.max(1, keepdim=True).values - margin).sum(1).max()))
        return min(m, widest + 4)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        g = self.mixture
        dt = torch.float64 if x.dtype == torch.float64 else torch.float32  # distances in float32 or better
        mu = g._params(x.device, dt)[0]
        key = str(x.device)
        if key not in self._log_w:
            self._log_w[key] = torch.log(g.weights.to(x.device, torch.float64))
        mu_sq, logw = (mu.double() ** 2).sum(1), self._log_w[key]
        xf = x.reshape(x.shape[0], -1).to(dt)
        r2 = ((xf * xf).sum(1, keepdim=True) - 2 * xf @ mu.T).double().add_(mu_sq).clamp_min_(0)  # [B, K]
        r2_min, k_star = r2.min(1)
        var = g.std ** 2 + self.levels.to(x.device, torch.float64) ** 2  # [M]
        norm = -0.5 * g.dim * torch.log(2 * math.pi * var)  # [M]
        upper = -r2_min[:, None] / (2 * var) + norm  # [B, M]
        lower = upper + logw[k_star][:, None]
        keep = upper >= lower.max(1, keepdim=True).values - self.prune  # a contiguous window per row
        if x.is_cuda or self.STATIC_WIDTH_ON_CPU:
            width = self.width  # >= every row's kept count (static: no shape read back from the device)
        else:
            width = int(keep.sum(1).max())  # a CPU read: free here, and the window is often far narrower
        first = keep.int().argmax(1).clamp_max(len(var) - width)  # U_m is unimodal in var: kept levels are contiguous
        idx = first[:, None] + torch.arange(width, device=x.device)  # [B, W]
        rel = (r2 - r2_min[:, None]).to(dt)  # >= 0: the part of the exponent computed in dt
        out = lower.clone()
        chunk = max(1, self.max_elems // (width * r2.shape[1]))  # bounds the [b, W, K] intermediate
        for lo in range(0, x.shape[0], chunk):
            rows = slice(lo, lo + chunk)
            v = var[idx[rows]]  # [b, W]
            t = logw.to(dt) - rel[rows, None, :] / (2 * v.to(dt)[:, :, None])  # [b, W, K]
            lse = torch.logsumexp(t, dim=2).double() - r2_min[rows, None] / (2 * v) + norm[idx[rows]]
            out[rows] = out[rows].scatter(1, idx[rows], lse)
        return out.to(x.dtype if x.is_floating_point() else torch.float32)


def levels_spec(levels: torch.Tensor) -> dict:
    """The checkpoint's `levels` dict for decreasing sigmas `levels` [M]: "geometric" when they equal
    `level_sigmas(M, sigma_min, sigma_max)`, else "given"; `sigmas` always holds all M."""
    lv = levels.detach().cpu().float()
    m, lo, hi = len(lv), _short(lv[-1]), _short(lv[0])
    geometric_ = torch.allclose(lv, level_sigmas(m, lo, hi), rtol=1e-5, atol=0.0)
    return {"n_levels": m, "sigma_min": lo, "sigma_max": hi, "spacing": "geometric" if geometric_ else "given",
            "sigmas": [_short(v) for v in lv]}


def _short(v: torch.Tensor) -> float:
    """A float32 value as the shortest decimal that rounds back to it (0.002, not 0.0020000000949949026)."""
    return float(str(np.float32(v.item())))


def levels_from_spec(spec: dict) -> torch.Tensor:
    """float32 [M] sigmas of a checkpoint's `levels` dict (geometric from its numbers if it has no `sigmas`)."""
    if spec.get("sigmas") is not None:
        return torch.tensor(spec["sigmas"], dtype=torch.float32)
    return level_sigmas(spec["n_levels"], spec["sigma_min"], spec["sigma_max"])


def save_classifier(path: str, net: NoiseLevelNet, levels_spec: dict, card: str, meta: dict | None = None,
                    data_range=(-1.0, 1.0), logit_offset: torch.Tensor | None = None):
    """Weights in float16 (half the size; the network is evaluated in float32), levels (module docstring;
    a spec without `sigmas` gets them), data range, input kind, logit offset (float32; None: none), card."""
    spec = dict(levels_spec)
    if spec.get("sigmas") is None:
        spec.update(sigmas=[_short(v) for v in level_sigmas(spec["n_levels"], spec["sigma_min"], spec["sigma_max"])],
                    spacing=spec.get("spacing", "geometric"))
    if len(spec["sigmas"]) != net.n_levels:
        raise ValueError(f"levels has {len(spec['sigmas'])} sigmas, the network {net.n_levels} outputs")
    sd = {k: v.detach().cpu().half() for k, v in net.state_dict().items()}
    ck = {"state_dict": sd, "shape": list(net.shape), "levels": spec, "input": net.input,
          "data_range": [float(v) for v in data_range], "card": card, "meta": meta or {}}
    if logit_offset is not None:
        ck["logit_offset"] = torch.as_tensor(logit_offset).detach().cpu().float()
    torch.save(ck, path)


def checkpoint_path(name_or_path: str) -> str:
    if os.path.exists(name_or_path):
        return name_or_path
    path = os.path.join(CHECKPOINT_DIR, f"classifier-{name_or_path}.pt")
    if not os.path.exists(path):
        have = sorted(f[len("classifier-"):-3] for f in os.listdir(CHECKPOINT_DIR)
                      if f.startswith("classifier-") and f.endswith(".pt")) if os.path.isdir(CHECKPOINT_DIR) else []
        raise FileNotFoundError(f"no classifier checkpoint {name_or_path!r}: not a file, and not one of the "
                                f"committed ones ({', '.join(have) or 'none'}); train one on your model's data with: "
                                f"{TRAIN_COMMAND}")
    return path


def load_classifier(name_or_path: str, device="cpu", model=None) -> TrainedLevelClassifier:
    """A checkpoint by path, or a committed one by name ("mnist", "digits"); with `model`, checked against it
    (`check_classifier`: shape, data range, levels) before it is returned."""
    path = checkpoint_path(name_or_path)
    key = (os.path.abspath(path), os.path.getmtime(path), str(torch.device(device)))
    clf = _LOADED.get(key)
    if clf is None:  # read once per file version and device (a DLG run loads it on every call)
        ck = read_checkpoint(path, "noise-level classifier", needs=("levels", "shape", "state_dict"))
        levels, net = _described_net(ck, path)
        load_weights(net, {k: v.float() for k, v in ck["state_dict"].items()}, path, "noise-level classifier")
        clf = TrainedLevelClassifier(net, levels, ck.get("card", ""), ck.get("data_range", (-1.0, 1.0)),
                                     ck.get("meta", {}), source=path, logit_offset=ck.get("logit_offset")).to(device)
        _LOADED[key] = clf
    if model is not None:
        check_classifier(clf, model)
    return clf


_LOADED: dict = caches.process_cache(  # load_classifier's classifiers: read-only, shared
    "loaded classifiers", "`mcmc.classifier._LOADED`", "`load_classifier`'s classifiers by (path, mtime, device)",
    "the checkpoint file changing (its mtime is in the key)")


def _described_net(ck: dict, path: str):
    """(levels, an untrained NoiseLevelNet) as checkpoint `ck` describes them; a description that does not make
    one is one line naming the file."""
    try:
        levels = levels_from_spec(ck["levels"])
        return levels, NoiseLevelNet(tuple(int(s) for s in ck["shape"]), len(levels), input=ck.get("input", "rms"))
    except Exception as err:  # levels or shape of another kind of file
        raise ValueError(f"noise-level classifier {path}: its levels or shape do not describe a classifier "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None


def check_classifier(clf: TrainedLevelClassifier, model):
    """A trained classifier must fit the model DLG samples: its data shape must equal `model.shape`, its data
    range the model's `data_range` (where the model declares one), and its levels lie within the model's
    `sigma_min`..`sigma_max`: an error for a network (it was trained on that range only), a warning for an
    analytic model (exact at every sigma) or a model that declares no range. Errors name the command that
    trains a fitting one."""
    src = os.path.basename(clf.source) if os.path.exists(clf.source) else clf.source
    lo_c, hi_c = float(clf.levels.min()), float(clf.levels.max())
    shape = tuple(getattr(model, "shape", clf.shape))
    fix = f"train one on your model's data with: {TRAIN_COMMAND}"
    if tuple(clf.shape) != shape:
        raise ValueError(f"noise-level classifier {src} was trained on data of shape {tuple(clf.shape)}, but the "
                         f"model's shape is {shape}; {fix}")
    dr = getattr(model, "data_range", None)
    if dr is not None and not torch.allclose(torch.tensor([float(v) for v in dr]), torch.tensor(clf.data_range)):
        raise ValueError(f"noise-level classifier {src} was trained on data in {list(clf.data_range)}, but the "
                         f"model's data_range is {[float(v) for v in dr]}; {fix} --data-range="
                         f"{float(dr[0]):g},{float(dr[1]):g}")
    from dmcmc_fast.models.base import model_device  # models sit below mcmc; imported where needed

    lo, hi = _number(getattr(model, "sigma_min", None)), _number(getattr(model, "sigma_max", None))
    if lo is None or hi is None:
        warnings.warn(f"noise-level classifier {src}: the model declares no sigma_min/sigma_max, so its levels "
                      f"[{lo_c:.4g}, {hi_c:.4g}] are not checked against the model's noise range", stacklevel=2)
        return
    if inside_range(lo_c, hi_c, lo, hi):  # up to a tenth of a level step (validate.RANGE_RTOL)
        return
    levels_text, range_text = ranges_text(lo_c, hi_c, lo, hi)
    msg = f"noise-level classifier {src} has levels in {levels_text}, outside the model's noise range {range_text}"
    if model_device(model) is None:  # analytic: exact at every sigma
        warnings.warn(msg + " (an analytic model is exact there: DLG runs, but the chains may visit levels the "
                      "model was not meant for)", stacklevel=2)
        return
    raise ValueError(f"{msg}, on which the network was trained; {fix} --sigma-min {lo:g} --sigma-max {hi:g}")


ALLOW_WEAK = "--allow-weak-classifier 1 (allow_weak_classifier=1 in Python)"  # what `check_targets` names


def check_targets(clf, allow_weak: bool = False):
    """Refuse a trained classifier whose own card says it misses its targets where DLG chains live (the verdict
    `meta["level_error_by_band"]["target"]` that `dmcmc-fast train classifier` records: |bias| and mean |error|
    per sigma band over 0.1-20): with it the Gibbs step cannot place the chains (a 1-step classifier keeps
    every chain at the top level). One line naming the figures, how to train a better one and the override;
    `allow_weak` runs anyway. A checkpoint without a verdict (older ones) passes."""
    target = ((getattr(clf, "meta", None) or {}).get("level_error_by_band") or {}).get("target")
    if allow_weak or not isinstance(target, dict) or target.get("met", True):
        return
    src = os.path.basename(clf.source) if os.path.exists(clf.source) else clf.source
    lo, hi = target.get("sigma", ["?", "?"])
    if target.get("n"):
        facts = (f"worst band |bias| {target['max_abs_bias']:.1f} and mean |error| {target['max_mean_abs']:.1f} "
                 f"levels, targets <= {target['bias_limit']:g} and <= {target['error_limit']:g}")
    else:
        facts = "no held-out image measured there"
    raise ValueError(f"noise-level classifier {src}: its card says it misses its targets over sigma [{lo:g}, {hi:g}] "
                     f"({facts}), so DLG's chains would not mix; train it longer ({TRAIN_COMMAND} with larger "
                     f"--steps and --max-minutes) or pass {ALLOW_WEAK} to run anyway")


def _number(v) -> float | None:
    """A declared attribute as a float (python, numpy or 0-d tensor number); None if absent or not a number."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def classifier_for_shape(shape) -> str:
    """The committed checkpoint name for a data shape (what `--classifier trained` loads)."""
    by_shape = {(1, 28, 28): "mnist", (1, 8, 8): "digits"}
    if tuple(shape) not in by_shape:
        raise ValueError(f"no committed noise-level classifier for data shape {tuple(shape)} (committed ones are "
                         f"for {', '.join(str(s) for s in by_shape)}); train one on your model's data with: "
                         f"{TRAIN_COMMAND}, then pass --classifier FILE (classifier=FILE in Python)")
    return by_shape[tuple(shape)]
