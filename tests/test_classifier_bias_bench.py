"""bench/classifier_bias.py at a tiny size: the table's structure, and a deliberately biased classifier
reported as biased (against the true level and against the exact posterior)."""
import json

import pytest
import torch

from bench import classifier_bias
from dmcmc_fast.mcmc.classifier import ExactLevelPosterior, load_classifier
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.training.classifier import CHAIN_EDGES

SHIFT = 20  # levels


class Shifted:
    """A classifier whose argmax is `inner`'s plus SHIFT levels (towards lower sigma)."""

    def __init__(self, inner):
        self.inner, self.levels = inner, inner.levels

    def __call__(self, x):
        z = self.inner(x)
        out = torch.full_like(z, -torch.inf)
        out[:, SHIFT:] = z[:, :-SHIFT]
        return out


def test_bench_writes_one_table_per_reference_with_every_band(tmp_path):
    out, md = tmp_path / "cb.json", tmp_path / "cb.md"
    rows = classifier_bias.main(["--per-band", "6", "--dlg-num", "4", "--dlg-chains", "2", "--out", str(out),
                                 "--md", str(md)])
    data = json.loads(out.read_text())
    assert data["rows"][0]["classifier"] == "mnist" and len(rows) == 1
    r = rows[0]
    n_bands = len(CHAIN_EDGES) - 1
    for key in ("true", "exact"):
        assert [b["sigma_lo"] for b in r[key]["bands"]] == list(CHAIN_EDGES[:-1])
        assert all(b["n"] == 6 for b in r[key]["bands"]) and r[key]["n"] == 6 * n_bands
        assert {"median", "bias", "mean_abs", "within_5", "within_10"} <= set(r[key]["bands"][0])
        assert set(r[key]["target"]) >= {"met", "max_abs_bias", "max_mean_abs"}
    assert r["chain"]["n"] == 4 and len(r["chain"]["shares"]) == n_bands
    assert sum(r["chain"]["shares"]) == pytest.approx(1.0)  # DLG's levels lie within the bands
    text = md.read_text()
    header = "| sigma | n | median abs error | mean abs error | bias | within ±5 | within ±10 | median |"
    assert text.count(header) == 2
    assert text.count("| chain-weighted |") == 2 and "| [20, 100] |" in text and "Where the chain lives" in text
    assert len(r["floor"]["bands"]) == n_bands and text.count("Floor:") == 1


def test_a_biased_classifier_is_reported_as_biased():
    gmm = load_model("gmm-mnist")
    x_mnist = classifier_bias.held_out_mnist({})[:16]
    edges = [0.5, 2.0, 5.0, 20.0]
    exact = ExactLevelPosterior(gmm, load_classifier("mnist").levels)
    plain = classifier_bias.evaluate(exact, x_mnist, gmm, edges, per_band=12)
    shifted = classifier_bias.evaluate(Shifted(exact), x_mnist, gmm, edges, per_band=12)
    # against itself, the exact posterior has no error; shifted, every draw is SHIFT levels off
    assert all(b["bias"] == 0 and b["mean_abs"] == 0 for b in plain["exact"]["bands"])
    assert plain["exact"]["target"]["met"]
    assert all(b["bias"] == SHIFT and b["median"] == SHIFT for b in shifted["exact"]["bands"])
    assert not shifted["exact"]["target"]["met"] and shifted["exact"]["target"]["max_abs_bias"] == SHIFT
    # against the true level, the trained classifier's bias moves by SHIFT in every band
    trained = load_classifier("mnist")
    a = classifier_bias.evaluate(trained, x_mnist, gmm, edges, per_band=12)["true"]
    b = classifier_bias.evaluate(Shifted(trained), x_mnist, gmm, edges, per_band=12)["true"]
    for lo, hi in zip(a["bands"], b["bands"]):
        assert hi["bias"] - lo["bias"] == pytest.approx(SHIFT)
    assert not b["target"]["met"]


def test_chain_weighted_rows_average_the_bands_by_the_chain_shares():
    err = {"bands": [{"sigma_lo": 0.1, "mean_abs": 2.0, "bias": 1.0, "within_5": 1.0, "within_10": 1.0},
                     {"sigma_lo": 0.5, "mean_abs": 6.0, "bias": -3.0, "within_5": 0.0, "within_10": 0.5}]}
    edges = [0.1, 0.5, 2.0, 5.0]
    shares = classifier_bias.chain_shares(torch.tensor([0.2, 0.3, 1.0, 1.5, 3.0, 4.0]).numpy(), edges)
    assert shares == pytest.approx([2 / 6, 2 / 6, 2 / 6])
    w = classifier_bias.chain_weighted(err, shares, edges)  # the third band has no draws: left out
    assert w == pytest.approx({"mean_abs": 4.0, "bias": -1.0, "within_5": 0.5, "within_10": 0.75})
    assert classifier_bias.chain_weighted(err, [0.0, 0.0, 1.0], edges) is None
