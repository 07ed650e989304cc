"""The Python façade: one class per sampler, `sampler.sample(n)` and `sampler.stream(n)`.

    from dmcmc_fast import DLG
    from dmcmc_fast.models.builtin import load_model
    dlg = DLG(load_model("gmm-mnist"), nfe=25, eta=4.0, n_skip=5, chains=50, integrator="heun")
    out = dlg.sample(2000)               # 40 blocks of 50 chains: out.samples [2000, 1, 28, 28],
                                         # out.nfe [2000] (block NFE + initialisation share), out.meta
    for batch in dlg.stream(1024):       # SampleBatch(start, stop, samples, nfe, meta), in sample order
        ...

The classes are generated, one per registered sampler, from its declaration (`samplers.declare`: the
class name is its `facade`, the docstring and signature list its options). Options are the registry's,
checked when the object is built (the NFE budget against them too), with the
error naming the option and its range (the integrators' sigma range defaults to the model's own,
`api.resolve_options`). Sample `i` is chain `i`: the same seed gives the same samples through
`sample`, `stream`, the CLI or torchrun, whatever the batch size.

Per run, `sample` and `stream` take your own inputs (see `dmcmc_fast.api`): `model_kwargs` (one row per
sample, e.g. `{"class_labels": y}`; for DLG one row per chain), `callback`, `sigmas` (a grid) and `x_T`
(the start; DLG takes `model_kwargs` only):

    heun = Heun(from_diffusers(pipe), nfe=35)
    out = heun.sample(16, model_kwargs={"class_labels": torch.arange(16) % 10})
"""
from __future__ import annotations

import inspect

from dmcmc_fast import api
from dmcmc_fast.engine.graph import graph_mode
from dmcmc_fast.own_grid import default_grid
from dmcmc_fast.samplers import SamplerSpec, all_samplers, get_sampler


class Sampler:
    """A sampler with its model, budget and options fixed: `.sample(n)`, `.stream(n)` (module docstring).
    One subclass per registered sampler, generated from its declaration (`dmcmc_fast.Heun`, ...)."""
    sampler_name: str = ""

    def __init__(self, model, nfe: int, *, seed: int = 0, device=None, batch_size: int = 256,
                 progress: bool = False, graph: str = "auto", **options):
        self.spec = get_sampler(self.sampler_name)
        # fail early, with the option's range; the given options go to every run (a grid there resolves them anew)
        self.options = api.resolve_options(model, self.sampler_name, options)
        self.spec.check_budget(nfe, self.options)  # a budget that cannot pay for the options fails here too
        self._given = {k: v for k, v in options.items() if v is not None}
        graph_mode(graph, api.sampling_device(model, device))  # likewise graph and device (see api.sample)
        self.model, self.nfe, self.seed = model, nfe, seed
        self.device, self.batch_size, self.progress, self.graph = device, batch_size, progress, graph
        self._runs: dict[tuple, api._Run] = {}  # the checked runs of plain in-memory calls (`sample`)
        # a diffusers model's own grid for this budget and these options (None: the sampler's), for `_run`;
        # api.sample / stream find the same one
        self._grid = default_grid(model, self.sampler_name, nfe, options)

    def _kw(self, out_dir, resume, inputs):
        return dict(seed=self.seed, batch_size=self.batch_size, device=self.device, out_dir=out_dir,
                    resume=resume, progress=self.progress, graph=self.graph, _resolved=self.options, **inputs,
                    **self._given)

    def sample(self, n: int, out_dir: str | None = None, resume: bool = False, *, model_kwargs: dict | None = None,
               callback=None, sigmas=None, x_T=None) -> api.SampleOutput:
        """`n` samples and the NFE each one cost (with `out_dir`: sharded on disk, resumable)."""
        inputs = dict(model_kwargs=model_kwargs, callback=callback, sigmas=sigmas, x_T=x_T)
        if out_dir is None and not self.progress and self.spec.kind != "blocks" and \
                model_kwargs is None and callback is None and sigmas is None and x_T is None:
            return self._run(n).collect()
        return api.sample(self.model, self.sampler_name, n, self.nfe, **self._kw(out_dir, resume, inputs))

    def _run(self, n: int) -> api._Run:
        """The run of `sample(n)` in memory with nothing of the caller's: checked once per (n, nfe, seed, batch
        size, graph, device the model is on) and kept (the latest few), so a call repeated in a pipeline only
        draws."""
        key = (n, self.nfe, self.seed, self.batch_size, self.graph, api.sampling_device(self.model, self.device))
        run = self._runs.pop(key, None)
        if run is None:  # this object's own grid (None: the sampler's), its options resolved when it was built
            run = api._Run(api.RunSpec(self.model, self.sampler_name, n, self.nfe, seed=self.seed,
                                       batch_size=self.batch_size, device=self.device, graph=self.graph,
                                       sigmas=self._grid, resolved=self.options))
        else:
            run = run.again()
        self._runs[key] = run
        while len(self._runs) > 8:
            self._runs.pop(next(iter(self._runs)))
        return run

    def stream(self, n: int, out_dir: str | None = None, resume: bool = False, *, batch_size: int | None = None,
               model_kwargs: dict | None = None, callback=None, sigmas=None, x_T=None):
        """Finished `SampleBatch`es of `n` samples, in chain order, each as soon as it is done; `batch_size`: the
        samples per batch of this call (default the object's)."""
        inputs = dict(model_kwargs=model_kwargs, callback=callback, sigmas=sigmas, x_T=x_T)
        kw = self._kw(out_dir, resume, inputs)
        if batch_size is not None:
            kw["batch_size"] = batch_size
        return api.stream(self.model, self.sampler_name, n, self.nfe, **kw)

    def __repr__(self):
        return f"{type(self).__name__}(nfe={self.nfe}, seed={self.seed}, {self.options})"


def _doc(spec: SamplerSpec) -> str:
    """A façade class's docstring: the sampler's help, then each option with its default and what it accepts."""
    lines = [f"{spec.help}.", "", f"`{spec.facade}(model, nfe, *, seed=0, device=None, batch_size=256, "
             f"progress=False, graph='auto', **options)`; `dmcmc-fast sample --sampler {spec.name}`.", "",
             "Options (keyword arguments; None or omitted: the default):"]
    for o in spec.options:
        takes = o.accepts() + (f"; or {o.objects}" if o.objects else "")
        lines.append(f"    {o.name} ({o.type.__name__}, {takes}, default {o.default!r}): {o.help}")
    if spec.model_range:
        lines.append("sigma_min / sigma_max default to the model's own noise range where it declares one.")
    return "\n".join(lines)


def _signature(spec: SamplerSpec) -> inspect.Signature:
    """`Sampler.__init__`'s signature with `**options` replaced by the sampler's own options (keyword-only)."""
    base = [p for p in inspect.signature(Sampler.__init__).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name != "self"]
    own = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.type)
           for o in spec.options]
    return inspect.Signature(base + own)


def sampler_class(spec: SamplerSpec) -> type:
    """The façade class of a registered sampler: a `Sampler` bound to it, named `spec.facade`, documented
    with its options."""
    return type(spec.facade, (Sampler,), {"sampler_name": spec.name, "__doc__": _doc(spec), "__module__": __name__,
                                          "__signature__": _signature(spec)})


CLASSES = {spec.facade: sampler_class(spec) for spec in all_samplers().values()}
globals().update(CLASSES)
__all__ = ["Sampler", *CLASSES]
