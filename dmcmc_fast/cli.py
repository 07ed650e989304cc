"""`dmcmc-fast sample | eval` — a thin layer over `dmcmc_fast.api`: parse, build, call.

    dmcmc-fast sample --model gmm-mnist --sampler heun --nfe 35 --num 256 --seed 0 --out DIR
    dmcmc-fast eval DIR/samples.npz --ref gmm-mnist

Sampler options (`--eta`, `--n-skip`, ...) come from the sampler registry; a flag that the chosen
sampler does not take is an error naming what it does take.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def _sampler_flags(p: argparse.ArgumentParser):
    from dmcmc_fast.samplers import all_samplers

    seen = {}
    for spec in all_samplers().values():
        for o in spec.options:
            seen.setdefault(o.name, (o, []))[1].append(spec.name)
    g = p.add_argument_group("sampler options (defaults depend on the sampler)")
    for name, (o, users) in sorted(seen.items()):
        rng = f" range [{o.lo}, {o.hi}]" if o.lo is not None or o.hi is not None else ""
        ch = f" one of {', '.join(map(str, o.choices))}" if o.choices else ""
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=o.type, default=None,
                       help=f"{o.help}{rng}{ch} (samplers: {', '.join(users)}; default {o.default})")
    return list(seen)


def build_parser():
    from dmcmc_fast.models.builtin import BUILTIN_MODELS
    from dmcmc_fast.samplers import all_samplers

    p = argparse.ArgumentParser(prog="dmcmc-fast", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sample", help="draw samples from a model")
    s.add_argument("--model", required=True, help=f"built-in model: {', '.join(sorted(BUILTIN_MODELS))}")
    s.add_argument("--sampler", required=True, help=f"one of: {', '.join(sorted(all_samplers()))}")
    s.add_argument("--nfe", type=int, required=True, help="model evaluations per sample (budget, >= 1)")
    s.add_argument("--num", type=int, default=256, help="number of samples (>= 1)")
    s.add_argument("--seed", type=int, default=0, help="seed in [0, 2^63)")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--batch-size", type=int, default=256, help="samples per batch (>= 1)")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    s.add_argument("--modes", type=int, default=None, help="model option: number of mixture modes / images")
    s.add_argument("--std", type=float, default=None, help="model option: mixture component std (>= 0)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(sampler_opts=_sampler_flags(s))

    e = sub.add_parser("eval", help="evaluate samples.npz against a reference model")
    e.add_argument("samples", help="path to samples.npz")
    e.add_argument("--ref", required=True, help="built-in model to compare with (exact statistics)")
    e.add_argument("--modes", type=int, default=None)
    e.add_argument("--std", type=float, default=None)
    return p


def cmd_sample(a) -> int:
    from dmcmc_fast.api import SampleOutput, merge_shards, sample, save_samples
    from dmcmc_fast.distributed import barrier, init_from_env
    from dmcmc_fast.models.builtin import load_model

    rank, world, device = init_from_env(a.device)
    model = load_model(a.model, modes=a.modes, std=a.std)
    opts = {k: getattr(a, k) for k in a.sampler_opts if getattr(a, k) is not None}
    cfg = {"model": a.model, "model_options": {"modes": a.modes, "std": a.std}}
    out = sample(model, a.sampler, a.num, a.nfe, seed=a.seed, batch_size=a.batch_size, device=device,
                 out_dir=a.out, resume=a.resume, progress=not a.no_progress, config=cfg,
                 rank=rank, world_size=world, **opts)
    if world > 1:  # every rank has written its shards; rank 0 merges them in chain order
        barrier()
        if rank != 0:
            return 0
        out = SampleOutput(*merge_shards(a.out, a.num), out.config)
    path = save_samples(out, a.out, model.data_range)
    print(json.dumps({"samples": path, "num": int(out.samples.shape[0]),
                      "nfe_mean": float(out.nfe.float().mean()), "nfe_max": int(out.nfe.max())}))
    return 0


def cmd_eval(a) -> int:
    from dmcmc_fast.api import load_samples
    from dmcmc_fast.distributed import all_reduce_sum, init_from_env, reduced_gaussian_stats
    from dmcmc_fast.eval import frechet_distance, mode_report
    from dmcmc_fast.models.builtin import load_model

    rank, world, _ = init_from_env("cpu")
    samples, nfe, cfg = load_samples(a.samples)
    samples, nfe = samples[rank::world], nfe[rank::world]  # each rank reduces its own slice
    ref = load_model(a.ref, modes=a.modes if a.modes is not None else cfg.get("model_options", {}).get("modes"),
                     std=a.std if a.std is not None else cfg.get("model_options", {}).get("std"))
    if tuple(samples.shape[1:]) != tuple(ref.shape):
        raise ValueError(f"samples have shape {tuple(samples.shape[1:])}, --ref {a.ref} has {tuple(ref.shape)}")
    mu, cov, n = reduced_gaussian_stats(samples)
    nfe_sum = all_reduce_sum(nfe.double().sum())
    report = {"num": n, "nfe_mean": float(nfe_sum) / n,
              "frechet_exact": frechet_distance(mu, cov, ref.mean().numpy(), ref.covariance().numpy())}
    report.update(mode_report(samples, ref, reduce=all_reduce_sum))
    if rank == 0:
        print(json.dumps(report, indent=2))
    return 0


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return {"sample": cmd_sample, "eval": cmd_eval}[a.cmd](a)
    except (ValueError, FileExistsError, FileNotFoundError, ImportError, FloatingPointError) as err:
        print(f"dmcmc-fast {a.cmd}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
