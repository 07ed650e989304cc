"""What `--model` names, as a denoiser: a built-in name, a folder saved by diffusers, or `module:callable`.

    dmcmc-fast sample --model gmm-mnist ...                        # a built-in model (`models.builtin`)
    dmcmc-fast sample --model ./my_pipeline ...                    # pipe.save_pretrained(): unet/ + scheduler/
    dmcmc-fast sample --model ./my_unet --scheduler ./my_sched ... # unet.save_pretrained(), scheduler.save_pretrained()
    dmcmc-fast sample --model mymodule:make_model ...              # make_model() -> a denoiser, module or pipeline

The same `--model` (and `--scheduler`) is taken by `train classifier` and `eval`. Resolution, in order:
1. a built-in name (`BUILTIN_MODELS`);
2. an existing folder: a pipeline folder (`model_index.json`, or `unet/` and `scheduler/` subfolders) gives
   its UNet and scheduler; a model folder (`config.json` naming a diffusers class, e.g. `UNet2DModel`) gives
   the UNet, with the scheduler from `--scheduler FOLDER` (a folder with `scheduler_config.json`, or a
   pipeline folder). Each part is loaded with its class's `from_pretrained(folder, local_files_only=True)`:
   from that folder only, never from the network. A latent pipeline's samples are its latents.
3. `module:callable` (`module` importable from the current folder or `PYTHONPATH`, or a path to a `.py`
   file; `callable` may be dotted): a function or class is called with no arguments, any other object is
   taken as it is. What it gives becomes a denoiser by `as_denoiser`:
   - a diffusers pipeline (`.unet`, `.scheduler`), or a diffusers UNet with `--scheduler`: `from_diffusers`;
   - an object with `parametrisation` (usually an `nn.Module`) declaring what it computes, and its `shape`:
       "denoiser"         forward(x, sigma) = E[x0 | x] (VE, `x = x0 + sigma z`): used as it is;
       "score"            forward(x, sigma) = the VE score: `VEScoreAdapter` (D = x + sigma^2 s);
       "eps", "x0", "v"   forward(x_vp, t) on a VP table `alphas_cumprod` (its own attribute, else the
                          `--scheduler`'s): `VPAdapter`;
     optional attributes `sigma_min`, `sigma_max`, `data_range` carry over;
   - any callable with a `shape` (the `Denoiser` protocol, `dmcmc_fast.models.base`): used as it is.
A name that is none of these is an error naming all three forms.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys

import torch

PARAMETRISATIONS = ("denoiser", "score", "eps", "x0", "v")
FORMS = ("a built-in name ({builtins}), a folder saved by diffusers (a pipeline folder with unet/ and scheduler/, "
         "or a UNet folder with --scheduler FOLDER), or module:callable")


def _forms() -> str:
    from dmcmc_fast.models.builtin import BUILTIN_MODELS

    return FORMS.format(builtins=", ".join(sorted(BUILTIN_MODELS)))


def resolve_model(spec: str, scheduler: str | None = None, *, modes: int | None = None, std: float | None = None):
    """The denoiser that `--model spec` (and `--scheduler`, a folder) names (module docstring); `modes`, `std`:
    options of the built-in models."""
    from dmcmc_fast.models.builtin import BUILTIN_MODELS, load_model

    if not isinstance(spec, str) or not spec:
        raise ValueError(f"--model must be {_forms()}; got {spec!r}")
    sched = load_scheduler(scheduler) if scheduler is not None else None
    if spec in BUILTIN_MODELS:
        if sched is not None:
            raise ValueError(f"--scheduler is for a diffusers UNet; the built-in model {spec} has its own noise range")
        return load_model(spec, modes=modes, std=std)
    if os.path.isdir(spec):
        return _from_folder(spec, sched)
    if ":" in spec and not os.path.exists(spec):
        return as_denoiser(_from_callable(spec), sched, f"--model {spec}")
    what = "a file, not a folder" if os.path.isfile(spec) else "not a built-in name, a folder or module:callable"
    raise ValueError(f"unknown model {spec!r} ({what}); expected {_forms()}")


# ---- folders saved by diffusers ----

def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _diffusers_class(folder: str, config_name: str):
    """The diffusers class a saved folder's config names (`_class_name`)."""
    import diffusers

    name = _read_json(os.path.join(folder, config_name)).get("_class_name")
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"{os.path.join(folder, config_name)} names class {name!r}, which this diffusers "
                         f"({diffusers.__version__}) does not have")
    return cls


def _load_part(folder: str, config_name: str):
    """A diffusers model or scheduler from its saved folder, never from the network."""
    quiet = {"low_cpu_mem_usage": False} if config_name == "config.json" else {}  # no "install accelerate" notice
    return _diffusers_class(folder, config_name).from_pretrained(folder, local_files_only=True, **quiet)


def load_scheduler(folder: str):
    """`--scheduler FOLDER`: a folder with `scheduler_config.json`, or a pipeline folder with `scheduler/`."""
    for where in (folder, os.path.join(folder, "scheduler")):
        if os.path.isfile(os.path.join(where, "scheduler_config.json")):
            return _load_part(where, "scheduler_config.json")
    raise ValueError(f"--scheduler {folder!r}: expected a folder saved by a diffusers scheduler's save_pretrained "
                     "(with scheduler_config.json), or a pipeline folder with scheduler/; found neither")


def _from_folder(folder: str, sched):
    from dmcmc_fast.diffusers_bridge import from_diffusers

    unet_dir = os.path.join(folder, "unet")
    if os.path.isfile(os.path.join(unet_dir, "config.json")):  # a pipeline folder
        if sched is None:
            if not os.path.isfile(os.path.join(folder, "scheduler", "scheduler_config.json")):
                raise ValueError(f"--model {folder}: the pipeline folder has unet/ but no scheduler/; pass "
                                 "--scheduler FOLDER (the scheduler the UNet was trained with)")
            sched = load_scheduler(folder)
        return from_diffusers(_load_part(unet_dir, "config.json"), sched)
    if os.path.isfile(os.path.join(folder, "config.json")) and "_class_name" in _read_json(
            os.path.join(folder, "config.json")):  # a model folder
        if sched is None:
            raise ValueError(f"--model {folder} is a UNet folder; pass --scheduler FOLDER too (the folder of the "
                             "scheduler it was trained with, or a pipeline folder)")
        return from_diffusers(_load_part(folder, "config.json"), sched)
    if os.path.isfile(os.path.join(folder, "scheduler_config.json")):
        raise ValueError(f"--model {folder} is a scheduler folder; pass it as --scheduler and the UNet folder as "
                         "--model")
    raise ValueError(f"--model {folder}: the folder holds no diffusers pipeline (unet/config.json) or model "
                     f"(config.json); expected {_forms()}")


# ---- module:callable ----

def _import(module: str):
    """`module` as a dotted name (the current folder first on the path, as `python -m` has it) or a .py file."""
    if module.endswith(".py") or os.sep in module:
        if not os.path.isfile(module):
            raise ValueError(f"--model {module}:...: no such file {module!r}")
        name = os.path.splitext(os.path.basename(module))[0]
        spec = importlib.util.spec_from_file_location(name, module)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and module.split(".")[0] != err.name.split(".")[0]:
            raise  # the module itself imports something missing: that is the error to see
        raise ValueError(f"--model {module}:...: no module named {module!r} in the current folder or on "
                         f"PYTHONPATH; expected {_forms()}") from None
    finally:
        if added:
            sys.path.remove(cwd)


def _from_callable(spec: str):
    """What `module:callable` gives: a function or class called with no arguments, another object as it is."""
    module, _, attr = spec.rpartition(":")
    if not module or not attr:
        raise ValueError(f"--model {spec!r}: module:callable needs both parts; expected {_forms()}")
    obj = _import(module)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--model {spec}: {module} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
        return obj()
    return obj


# ---- an object -> a denoiser ----

def _is_diffusers_unet(obj) -> bool:
    return isinstance(obj, torch.nn.Module) and hasattr(getattr(obj, "config", None), "in_channels") and \
        type(obj).__module__.startswith("diffusers")


def as_denoiser(obj, scheduler=None, origin: str = "the model"):
    """`obj` as a VE denoiser `D(x, sigma)` (module docstring: a pipeline, a diffusers UNet with `scheduler`, an
    object declaring its `parametrisation`, or a denoiser); `origin` names where it came from in errors."""
    from dmcmc_fast.diffusers_bridge import from_diffusers
    from dmcmc_fast.models.adapters import VEScoreAdapter, VPAdapter

    if isinstance(getattr(obj, "unet", None), torch.nn.Module) and hasattr(obj, "scheduler"):
        return from_diffusers(obj, scheduler)
    if _is_diffusers_unet(obj):
        if scheduler is None:
            raise ValueError(f"{origin} gave a diffusers {type(obj).__name__} without its scheduler: pass --scheduler "
                             "FOLDER, or return the pipeline (or from_diffusers(unet, scheduler))")
        return from_diffusers(obj, scheduler)
    kind = getattr(obj, "parametrisation", None)
    if kind is not None:
        if kind not in PARAMETRISATIONS:
            raise ValueError(f"{origin}: parametrisation must be one of {', '.join(PARAMETRISATIONS)}, got {kind!r}")
        shape = _shape(obj, origin)
        rng = {k: getattr(obj, k) for k in ("sigma_min", "sigma_max") if getattr(obj, k, None) is not None}
        data_range = tuple(getattr(obj, "data_range", (-1.0, 1.0)))
        if kind == "denoiser":
            return obj
        if kind == "score":
            return VEScoreAdapter(obj, shape, data_range=data_range, **rng)
        abar = getattr(obj, "alphas_cumprod", None)
        abar = getattr(scheduler, "alphas_cumprod", None) if abar is None else abar
        if abar is None:
            raise ValueError(f"{origin}: parametrisation {kind!r} is a VP network net(x_vp, t); give it an "
                             "alphas_cumprod attribute (its training table) or pass --scheduler FOLDER")
        return VPAdapter(obj, abar, shape, prediction_type=kind, data_range=data_range)
    if callable(obj) and getattr(obj, "shape", None) is not None and not torch.is_tensor(obj):
        _shape(obj, origin)
        return obj
    raise ValueError(f"{origin} gave a {type(obj).__name__}; expected a denoiser D(x, sigma) with .shape (and "
                     f".sigma_min, .sigma_max, .data_range), an nn.Module with .shape and .parametrisation (one of "
                     f"{', '.join(PARAMETRISATIONS)}), or a diffusers pipeline (a UNet with --scheduler)")


def _shape(obj, origin: str) -> tuple[int, ...]:
    shape = getattr(obj, "shape", None)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        shape = None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{origin}: the model needs .shape, the shape of one sample (e.g. (1, 28, 28)); got "
                         f"{getattr(obj, 'shape', None)!r}")
    return shape
