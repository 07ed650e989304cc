"""bench/fig3_sweep.py --quick: JSON structure, engine-counted NFE per point, finite positive FD."""
import json
import math

import pytest

from bench import fig3_sweep
from dmcmc_fast.integrators import INTEGRATORS


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("fig3") / "fig3_sweep"
    fig3_sweep.main(["--quick", "--out", str(out)])
    with open(str(out) + ".json") as f:
        return out, json.load(f)


def test_outputs_and_structure(quick):
    out, r = quick
    assert (out.parent / "fig3_sweep.png").stat().st_size > 0
    md = (out.parent / "fig3_sweep.md").read_text()
    assert "python -m bench.fig3_sweep --quick" in md
    st = r["settings"]
    assert st["model"] == "unet-mnist" and st["quick"] and st["samples_per_point"] == 4
    sweep = [p for p in r["points"] if p["group"] != "probe"]
    # one point per curve: six integrators, alone and with DLG
    assert sorted((p["integrator"], p["group"]) for p in sweep) == sorted(
        (n, g) for n in fig3_sweep.PAPER_INTEGRATORS for g in ("alone", "dlg"))
    for p in sweep:
        assert p["samples"] == st["samples_per_point"]
        assert math.isfinite(p["fd"]) and p["fd"] > 0
        for n in fig3_sweep.PAPER_INTEGRATORS:  # every integrator is in its own panel and verdict
            assert f"**{n}**" in md


def test_nfe_is_the_engine_count(quick):
    """Fixed-step integrators spend exactly their cost formula, every sample alike; DLG spends
    n_skip + the denoiser's cost per sample (the initialisation reported apart); rk45 spends what it spends."""
    _, r = quick
    st = r["settings"]
    for p in r["points"]:
        name = p["integrator"]
        if name == "rk45":
            # at least one Dormand-Prince step (6 evaluations) + the Tweedie step, at most the cap
            assert 7 <= p["nfe_min"] <= p["nfe"] <= p["nfe_max"] <= st["rk45_cap"] + (
                p["dlg"]["n_skip"] if p["dlg"] else 0)
            continue
        steps = INTEGRATORS[name][1]
        if p["dlg"] is None:
            n = steps(p["budget"])
            cost = 2 * n - 1 if name in ("heun", "karras_sde") else n
        else:
            d = p["dlg"]
            n = steps(d["n_den"])
            cost = d["n_skip"] + (2 * n - 1 if name in ("heun", "karras_sde") else n)
            # init: karras_sde run (2N - 1 NFE at budget init_nfe) + n_init Langevin steps, per chain
            k = INTEGRATORS["karras_sde"][1](d["init_nfe"])
            assert p["init_nfe_per_chain"] == 2 * k - 1 + d["n_init"]
            assert p["init_share"] == pytest.approx(p["init_nfe_per_chain"] / st["dlg"]["blocks"])
            assert p["nfe_with_init"] == pytest.approx(p["nfe"] + p["init_share"])
            # one Gibbs step per Langevin step, plus the init's 1 + n_init, amortised
            assert p["classifier_evals_per_sample"] == pytest.approx(
                d["n_skip"] + (1 + d["n_init"]) / st["dlg"]["blocks"])
        assert p["nfe_min"] == p["nfe"] == p["nfe_max"] == cost, p["key"]


def test_extend_merges_parts_and_refuses_other_settings(quick):
    _, r = quick
    first, second = json.loads(json.dumps(r)), json.loads(json.dumps(r))
    first["points"] = [p for p in r["points"] if p["integrator"] != "rk45"]
    second["points"] = [p for p in r["points"] if p["integrator"] == "rk45"]
    second["settings"]["nfe"] = [99]
    m = fig3_sweep.merge(first, second)
    assert sorted(p["key"] for p in m["points"]) == sorted(p["key"] for p in r["points"])
    assert m["settings"]["nfe"] == sorted(r["settings"]["nfe"] + [99])
    assert m["seconds"] == pytest.approx(2 * r["seconds"])
    second["settings"]["dlg"]["eta"] += 1
    with pytest.raises(ValueError, match="dlg"):
        fig3_sweep.merge(first, second)
