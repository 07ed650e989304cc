"""The Python façade: one class per sampler, `sampler.sample(n)` and `sampler.stream(n)`.

    from dmcmc_fast import DLG
    from dmcmc_fast.models.builtin import load_model
    dlg = DLG(load_model("gmm-mnist"), nfe=25, eta=4.0, n_skip=5, chains=50, integrator="heun")
    out = dlg.sample(2000)               # 40 blocks of 50 chains: out.samples [2000, 1, 28, 28],
                                         # out.nfe [2000] (block NFE + initialisation share), out.meta
    for batch in dlg.stream(1024):       # SampleBatch(start, stop, samples, nfe, meta), in sample order
        ...

Options are the registry's (`dmcmc_fast.samplers`), checked when the object is built, with the
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

from dmcmc_fast import api
from dmcmc_fast.engine.graph import graph_mode
from dmcmc_fast.samplers import get_sampler


class Sampler:
    sampler_name: str = ""

    def __init__(self, model, nfe: int, *, seed: int = 0, device=None, batch_size: int = 256,
                 progress: bool = False, graph: str = "auto", **options):
        self.spec = get_sampler(self.sampler_name)
        # fail early, with the option's range; the given options go to every run (a grid there resolves them anew)
        self.options = api.resolve_options(model, self.sampler_name, options)
        self._given = {k: v for k, v in options.items() if v is not None}
        graph_mode(graph, api.sampling_device(model, device))  # likewise graph and device (see api.sample)
        self.model, self.nfe, self.seed = model, nfe, seed
        self.device, self.batch_size, self.progress, self.graph = device, batch_size, progress, graph

    def _kw(self, out_dir, resume, inputs):
        return dict(seed=self.seed, batch_size=self.batch_size, device=self.device, out_dir=out_dir,
                    resume=resume, progress=self.progress, graph=self.graph, **inputs, **self._given)

    def sample(self, n: int, out_dir: str | None = None, resume: bool = False, *, model_kwargs: dict | None = None,
               callback=None, sigmas=None, x_T=None) -> api.SampleOutput:
        """`n` samples and the NFE each one cost (with `out_dir`: sharded on disk, resumable)."""
        inputs = dict(model_kwargs=model_kwargs, callback=callback, sigmas=sigmas, x_T=x_T)
        return api.sample(self.model, self.sampler_name, n, self.nfe, **self._kw(out_dir, resume, inputs))

    def stream(self, n: int, out_dir: str | None = None, resume: bool = False, *, model_kwargs: dict | None = None,
               callback=None, sigmas=None, x_T=None):
        """Finished `SampleBatch`es of `n` samples, in chain order, each as soon as it is done."""
        inputs = dict(model_kwargs=model_kwargs, callback=callback, sigmas=sigmas, x_T=x_T)
        return api.stream(self.model, self.sampler_name, n, self.nfe, **self._kw(out_dir, resume, inputs))

    def __repr__(self):
        return f"{type(self).__name__}(nfe={self.nfe}, seed={self.seed}, {self.options})"


def _sampler_class(class_name: str, sampler_name: str) -> type:
    spec = get_sampler(sampler_name)
    return type(class_name, (Sampler,), {"sampler_name": sampler_name, "__doc__": spec.help,
                                         "__module__": __name__})


DLG = _sampler_class("DLG", "dlg")
MILD = _sampler_class("MILD", "mild")
DEIS = _sampler_class("DEIS", "deis")
OBABO = _sampler_class("OBABO", "obabo")
BAOABLimit = _sampler_class("BAOABLimit", "baoab_limit")
Langevin = _sampler_class("Langevin", "langevin")
AnnealedLangevin = _sampler_class("AnnealedLangevin", "ald")
Heun = _sampler_class("Heun", "heun")
KarrasSDE = _sampler_class("KarrasSDE", "karras_sde")
Euler = _sampler_class("Euler", "euler")
RK45 = _sampler_class("RK45", "rk45")
DPMSolverAdaptive = _sampler_class("DPMSolverAdaptive", "dpm_adaptive")
ReverseDiffusion = _sampler_class("ReverseDiffusion", "reverse_diffusion")
EulerMaruyama = _sampler_class("EulerMaruyama", "euler_maruyama")
DPMSolverPP2M = _sampler_class("DPMSolverPP2M", "dpmpp_2m")
DPMSolverPP2MSDE = _sampler_class("DPMSolverPP2MSDE", "dpmpp_2m_sde")
DPMSolverPP3MSDE = _sampler_class("DPMSolverPP3MSDE", "dpmpp_3m_sde")
DPMSolverPP2SAncestral = _sampler_class("DPMSolverPP2SAncestral", "dpmpp_2s_ancestral")
DPMSolverPPSDE = _sampler_class("DPMSolverPPSDE", "dpmpp_sde")
UniPC = _sampler_class("UniPC", "unipc")

__all__ = ["Sampler", "DLG", "MILD", "DEIS", "OBABO", "BAOABLimit", "Langevin", "AnnealedLangevin", "Heun",
           "KarrasSDE", "Euler", "RK45", "DPMSolverAdaptive", "ReverseDiffusion", "EulerMaruyama", "DPMSolverPP2M",
           "DPMSolverPP2MSDE", "DPMSolverPP3MSDE", "DPMSolverPP2SAncestral",
           "DPMSolverPPSDE", "UniPC"]
