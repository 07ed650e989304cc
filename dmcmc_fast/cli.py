"""`dmcmc-fast sample | eval | train` — a thin layer over `dmcmc_fast.api`: parse, build, call.

    dmcmc-fast sample --model gmm-mnist --sampler heun --nfe 35 --num 256 --seed 0 --out DIR
    dmcmc-fast eval DIR/samples.npz --ref gmm-mnist [--fid]

`sample` reads `--sampler` first and then builds its parser with that sampler's options alone (`--eta`,
`--n-skip`, ...; from the sampler registry), each with its own default, range and help:
`dmcmc-fast sample --sampler obabo --help`. A flag that the chosen sampler does not take is an error
naming what it does take. Benchmarks are research scripts of the source checkout, not installed:
`python -m bench.throughput` (bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import warnings

import torch


def _flag_help(spec, o) -> str:
    """An option's help line: what it is, what it accepts, its default (this sampler's own)."""
    accepts = f"range {o.range_text()}" if o.choices is None and o.type in (int, float) else o.accepts()
    default = repr(o.default) if o.type is str else o.default
    if spec.model_range and o.name in ("sigma_min", "sigma_max"):
        default = f"the model's own {o.name}, else {default}"
    return f"{o.help}; {accepts}; default {default}".replace("%", "%%")


def _sampler_flags(p: argparse.ArgumentParser, name: str) -> list[str]:
    """The flags of sampler `name` alone; -> their option names."""
    from dmcmc_fast.samplers import get_sampler

    spec = get_sampler(name)
    g = p.add_argument_group(f"{name} options")
    for o in spec.options:
        g.add_argument("--" + o.name.replace("_", "-"), dest=o.name, type=o.type, default=None,
                       help=_flag_help(spec, o))
    return [o.name for o in spec.options]


def _sampler_list() -> str:
    from dmcmc_fast.samplers import all_samplers

    lines = ["samplers (`dmcmc-fast sample --sampler NAME --help` lists NAME's options with their defaults "
             "and ranges):"]
    for name, spec in sorted(all_samplers().items()):
        lines += textwrap.wrap(spec.help, 100, initial_indent=f"  {name:<20}", subsequent_indent=" " * 22)
    return "\n".join(lines)


def _model_flags(p: argparse.ArgumentParser, required: bool):
    """`--model` (a built-in name, a diffusers folder or module:callable; `dmcmc_fast.models.resolve`) and
    `--scheduler`."""
    from dmcmc_fast.models.builtin import BUILTIN_MODELS

    p.add_argument("--model", required=required, default=None,
                   help=f"a built-in model ({', '.join(sorted(BUILTIN_MODELS))}); a folder saved by diffusers (a "
                        "pipeline folder, or a UNet folder with --scheduler); or module:callable returning a "
                        "denoiser, an nn.Module with .parametrisation, or a diffusers pipeline")
    p.add_argument("--scheduler", default=None, help="with a diffusers UNet: the folder of its scheduler "
                                                     "(scheduler_config.json) or of a pipeline")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`dmcmc-fast sample: error: ...`), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser(sampler: str | None = None):
    """The CLI's parser; `sample` takes the options of `sampler` (None: none, and its help lists the samplers)."""
    from dmcmc_fast.samplers import all_samplers

    p = _OneLineParser(prog="dmcmc-fast", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    what = f"{sampler}: {all_samplers()[sampler].help}" if sampler else "draw samples from a model"
    s = sub.add_parser("sample", help="draw samples from a model", description=what.replace("%", "%%"),
                       epilog=None if sampler else _sampler_list(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_flags(s, required=True)
    s.add_argument("--sampler", required=True, help="the sampler (list: `dmcmc-fast sample --help`; its options: "
                                                    "`dmcmc-fast sample --sampler NAME --help`)")
    s.add_argument("--nfe", type=int, required=True, help="model evaluations per sample (budget, >= 1)")
    s.add_argument("--num", type=int, default=256, help="number of samples (>= 1)")
    s.add_argument("--seed", type=int, default=0, help="seed in [0, 2^63)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--batch-size", type=int, default=256, help="samples per batch (>= 1)")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    s.add_argument("--graph", choices=("auto", "on", "network", "off"), default="auto",
                   help="CUDA graphs: auto (on CUDA devices: whole batches, DLG's blocks, else the network), on, "
                        "network (the network alone), off (default auto)")
    s.add_argument("--modes", type=int, default=None, help="model option: number of mixture modes / images")
    s.add_argument("--std", type=float, default=None, help="model option: mixture component std (>= 0)")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--no-size-check", action="store_true", help="start even where the run's memory or disk need "
                                                                "(checked first) exceeds what is free here")
    s.set_defaults(sampler_opts=_sampler_flags(s, sampler) if sampler else [])

    e = sub.add_parser("eval", help="evaluate samples.npz against a reference model and the real data")
    e.add_argument("samples", help="path to samples.npz")
    e.add_argument("--ref", default=None, help="analytic built-in model to compare with (exact Fréchet distance, "
                                               "mode coverage)")
    e.add_argument("--modes", type=int, default=None)
    e.add_argument("--std", type=float, default=None)
    e.add_argument("--fid", action="store_true", help="FID with pytorch-fid's Inception (its weights must be in "
                                                      "$TORCH_HOME/hub/checkpoints/; never downloaded)")
    e.add_argument("--fid-ref", default="mnist", help="FID reference: an offline data set name or a pytorch-fid "
                                                      "statistics .npz (default mnist)")
    e.add_argument("--no-features", action="store_true", help="skip the MNIST-feature Fréchet distance and "
                                                              "class balance (computed for 1x28x28 samples)")
    e.add_argument("--data", default=None, help="your data (as `train classifier --data` reads them): Fréchet "
                                                "distance in pixel space, and with --classifier in its features")
    e.add_argument("--classifier", default=None, help="with --data: a noise-level classifier trained on the data "
                                                      "(`dmcmc-fast train classifier`), whose features FD uses")
    _model_flags(e, required=False)
    t = sub.add_parser("train", help="train a component: `dmcmc-fast train classifier --data mnist ...`")
    t.add_argument("what", help="what to train (a module of dmcmc_fast.training, e.g. classifier)")
    t.add_argument("rest", nargs=argparse.REMAINDER, help="its own options (see `dmcmc-fast train WHAT --help`)")
    return p


def _chosen_sampler(argv: list[str]) -> str | None:
    """`--sampler` of a `sample` command line, read before the parser is built (its flags are that sampler's)."""
    if argv[:1] != ["sample"]:
        return None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--sampler")
    return pre.parse_known_args(argv[1:])[0].sampler


def cmd_train(a) -> int:
    import importlib

    try:
        mod = importlib.import_module(f"dmcmc_fast.training.{a.what}")
    except ModuleNotFoundError as err:
        if err.name != f"dmcmc_fast.training.{a.what}":
            raise
        raise ValueError(f"nothing to train called {a.what!r}") from None
    return mod.main(a.rest)


def cmd_sample(a) -> int:
    from dmcmc_fast.api import SampleOutput, merge_shards, sample, save_samples
    from dmcmc_fast.distributed import barrier, init_from_env
    from dmcmc_fast.models.resolve import resolve_model

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {a.device}: no CUDA device is available here; use --device cpu")
    rank, world, device = init_from_env(a.device)
    model = resolve_model(a.model, a.scheduler, modes=a.modes, std=a.std)
    _check_before_work(a, model)
    if hasattr(model, "to"):  # a built-in network goes where --device says (api.sample moves nothing itself)
        model = model.to(device)
    opts = {k: getattr(a, k) for k in a.sampler_opts if getattr(a, k) is not None}
    cfg = {"model": a.model, "model_options": {"modes": a.modes, "std": a.std}}
    if a.scheduler is not None:
        cfg["scheduler"] = a.scheduler
    out = sample(model, a.sampler, a.num, a.nfe, seed=a.seed, batch_size=a.batch_size, device=device,
                 out_dir=a.out, resume=a.resume, progress=not a.no_progress, config=cfg,
                 rank=rank, world_size=world, graph=a.graph, **opts)
    if world > 1:  # every rank has written its shards; rank 0 merges them in chain order
        barrier()
        if rank != 0:
            return 0
        x, nfe, meta = merge_shards(a.out, a.num)
        out = SampleOutput(x, nfe, out.config, out.graph, meta)
    path = save_samples(out, a.out, getattr(model, "data_range", (-1.0, 1.0))) if world > 1 else \
        os.path.join(a.out, "samples.npz")  # one process: api.sample wrote it
    summary = {"samples": path, "num": int(out.samples.shape[0]), "nfe_mean": float(out.nfe.double().mean()),
               "nfe_max": float(out.nfe.max()) if out.nfe.is_floating_point() else int(out.nfe.max())}
    if "nfe_block" in out.meta:  # DLG: the amortised NFE per sample is block NFE + initialisation share
        summary.update(chains=int(out.meta["chain"].max()) + 1, nfe_block_mean=float(out.meta["nfe_block"].mean()),
                       nfe_init_share_mean=float(out.meta["nfe_init_share"].mean()),
                       classifier_evals_mean=float(out.meta["classifier_evals"].mean()))
    print(json.dumps({**summary, "graph": out.graph}))
    return 0


def _check_before_work(a, model):
    """`sample`'s checks before any work: --out can be a folder, the run fits this machine's memory and disk."""
    from dmcmc_fast.files import check_out_dir
    from dmcmc_fast.sizes import check_fits

    check_out_dir(a.out)
    if not a.no_size_check and isinstance(a.num, int) and a.num >= 1 and hasattr(model, "shape"):
        check_fits(a.num, model.shape, a.out)


def cmd_eval(a) -> int:
    from dmcmc_fast.api import load_samples
    from dmcmc_fast.distributed import all_reduce_sum, init_from_env, reduced_gaussian_stats
    from dmcmc_fast.eval import frechet_distance, mode_report
    from dmcmc_fast.models.builtin import load_model

    rank, world, _ = init_from_env("cpu")
    everything, nfe, cfg, meta = load_samples(a.samples, with_meta=True)
    _check_finite(everything, a.samples)
    samples, nfe = everything[rank::world], nfe[rank::world]  # each rank reduces its own slice
    n = int(all_reduce_sum(torch.tensor(float(samples.shape[0]), dtype=torch.float64)))
    report = {"num": n, "nfe_mean": float(all_reduce_sum(nfe.double().sum())) / n}
    if a.ref is not None:
        ref = load_model(a.ref, modes=a.modes if a.modes is not None else cfg.get("model_options", {}).get("modes"),
                         std=a.std if a.std is not None else cfg.get("model_options", {}).get("std"))
        if tuple(samples.shape[1:]) != tuple(ref.shape):
            raise ValueError(f"samples have shape {tuple(samples.shape[1:])}, --ref {a.ref} has {tuple(ref.shape)}")
        if not hasattr(ref, "covariance"):
            raise ValueError(f"--ref {a.ref} has no closed-form statistics; use an analytic model (gmm-*, ideal-*)")
        mu, cov, _ = reduced_gaussian_stats(samples)
        report["frechet_exact"] = frechet_distance(mu, cov, ref.mean().numpy(), ref.covariance().numpy())
        report.update(mode_report(samples, ref, reduce=all_reduce_sum))
    if not a.no_features and tuple(samples.shape[1:]) == (1, 28, 28):
        from dmcmc_fast.eval.features import class_balance, load_feature_net, mnist_feature_fd

        net = load_feature_net()
        report["fd_mnist_features"] = mnist_feature_fd(samples, net, stats=reduced_gaussian_stats)
        report.update(class_balance(samples, net, reduce=all_reduce_sum))
    if a.fid:
        from dmcmc_fast.eval.fid import fid

        report["fid"] = fid(samples, a.fid_ref, stats=reduced_gaussian_stats)
    if a.data is not None or a.model is not None or a.classifier is not None:
        report.update(_own_data(a, samples))
    if "chain" in meta and rank == 0:  # DLG: how the chains mix (needs each chain's samples in order: rank 0)
        report["mixing"] = _mixing(everything, meta, ref if a.ref is not None else None,
                                   net if not a.no_features and tuple(samples.shape[1:]) == (1, 28, 28) else None)
    if rank == 0:
        print(json.dumps(report, indent=2))
    return 0


def _own_data(a, samples) -> dict:
    """`eval --data [--model] [--classifier]`: the samples against your data (`dmcmc_fast.eval.own_data`), the data
    scaled to the model's data range."""
    from dmcmc_fast.distributed import reduced_gaussian_stats
    from dmcmc_fast.eval.own_data import own_data_report
    from dmcmc_fast.mcmc.classifier import load_classifier
    from dmcmc_fast.models.resolve import resolve_model
    from dmcmc_fast.training.classifier import load_data

    if a.data is None:
        raise ValueError("--model and --classifier compare the samples with your data: pass --data PATH (a folder of "
                         "images, an .npz/.npy, a .pt tensor, or a built-in data set)")
    model = resolve_model(a.model, a.scheduler) if a.model is not None else None
    if model is not None and tuple(samples.shape[1:]) != tuple(model.shape):
        raise ValueError(f"samples have shape {tuple(samples.shape[1:])}, --model {a.model} has {tuple(model.shape)}")
    data, _ = load_data(a.data, data_range=tuple(getattr(model, "data_range", None) or (-1.0, 1.0)))
    clf = load_classifier(a.classifier) if a.classifier is not None else None
    return own_data_report(samples, data, clf, stats=reduced_gaussian_stats)


def _check_finite(samples, path: str):
    """Non-finite samples are one line (how many, the first indices); their statistics would hang scipy's sqrtm."""
    from dmcmc_fast.files import finite_rows

    finite_rows(samples, path)


def _mixing(samples, meta: dict, ref, net) -> dict:
    """DLG's mixing diagnostics; the label of a sample is its nearest mode (analytic --ref) or, for MNIST
    shapes, the feature net's predicted digit."""
    from dmcmc_fast.eval.mixing import mixing_report

    labels, name = None, "mode"
    if ref is not None and hasattr(ref, "nearest_mode"):
        labels = ref.nearest_mode(samples).numpy()
    elif net is not None:
        from dmcmc_fast.eval.features import apply_batched

        labels, name = apply_batched(net, samples.float()).argmax(1).numpy(), "class"
    return mixing_report(samples, meta["chain"], meta["block"], meta["sigma"], labels, name)


def main(argv=None) -> int:
    from dmcmc_fast.samplers import get_sampler

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the benchmarks are not installed: bench/ is a folder of the source checkout
        print("dmcmc-fast: error: there is no `bench` command; from a source checkout run `python -m "
              "bench.throughput` (bench/README.md)", file=sys.stderr)
        return 2
    sampler = _chosen_sampler(argv)
    if sampler is not None:
        try:
            get_sampler(sampler)
        except ValueError as err:
            print(f"dmcmc-fast sample: error: {err}", file=sys.stderr)
            return 2
    parser = build_parser(sampler)
    a, extra = parser.parse_known_args(argv)
    if extra:
        flags = [x.split("=")[0] for x in extra if x.startswith("--")]
        if a.cmd != "sample" or not flags:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        takes = ", ".join("--" + n.replace("_", "-") for n in a.sampler_opts) or "none"
        print(f"dmcmc-fast sample: error: sampler {a.sampler} does not take option(s) {', '.join(flags)}; its "
              f"options: {takes} (`dmcmc-fast sample --sampler {a.sampler} --help`)", file=sys.stderr)
        return 2
    shown, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return {"sample": cmd_sample, "eval": cmd_eval, "train": cmd_train}[a.cmd](a)
    except KeyboardInterrupt:
        print(f"dmcmc-fast {a.cmd}: {_interrupted(a)}", file=sys.stderr)
        return 130
    except (ValueError, FileExistsError, FileNotFoundError, ImportError, FloatingPointError, OSError,
            MemoryError) as err:
        print(f"dmcmc-fast {a.cmd}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug of ours: one line all the same, the traceback on request
        if os.environ.get("DMCMC_TRACEBACK"):
            raise
        print(f"dmcmc-fast {a.cmd}: internal error: {type(err).__name__}: {_one_line(err)} (please report it; "
              "DMCMC_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 1
    finally:
        from dmcmc_fast.distributed import shutdown

        warnings.formatwarning = shown
        shutdown()


def _one_line(err: BaseException) -> str:
    """An error's message on one line (an OSError's with its file)."""
    if isinstance(err, OSError) and err.filename is not None and not str(err).startswith(str(err.filename)):
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err)
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip()) or type(err).__name__


def _interrupted(a) -> str:
    """What Ctrl-C leaves: for `sample`, the samples in finished shards (kept) and how to go on."""
    if a.cmd != "sample":
        return "interrupted"
    from dmcmc_fast.shards import finished_samples

    done = finished_samples(a.out)
    if done == 0 and not os.path.isdir(a.out):
        return f"interrupted after 0 of {a.num} samples; nothing was written"
    return f"interrupted after {done} of {a.num} samples; continue with --resume (the same command, --out {a.out})"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the CLI shows it: one line, `dmcmc-fast: warning: ...` (e.g. DLG's chains did not mix)."""
    return f"dmcmc-fast: warning: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
