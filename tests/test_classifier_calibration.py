"""The classifier's training options (issue 15): the paper's raw input, levels drawn more often where DLG
chains live, the argmax calibration (a per-level logit offset) and its checkpoint round trip, older
checkpoints still loading, and the level error against a reference per band."""
import torch

from dmcmc_fast.mcmc.classifier import ExactLevelPosterior, NoiseLevelNet, level_sigmas, load_classifier
from dmcmc_fast.models.gaussian_mixture import GaussianMixture
from dmcmc_fast.training.classifier import (fit_logit_offset, level_error, level_range, split, train_classifier,
                                            train_levels)


def _one_mode(d_side=4, std=0.05):
    return GaussianMixture(torch.zeros(1, 1, d_side, d_side), std=std)


def test_raw_input_is_the_paper_s_network_and_round_trips(tmp_path):
    raw, rms = NoiseLevelNet((1, 8, 8), 10, input="raw"), NoiseLevelNet((1, 8, 8), 10)
    assert raw.features[0].in_channels == 1 and rms.features[0].in_channels == 2
    x = torch.randn(5, 1, 8, 8)
    clf = train_classifier(torch.rand(12, 1, 8, 8) * 2 - 1, levels=10, input="raw", steps=2, batch_size=4,
                           progress=False)
    assert clf.net.input == "raw" and clf.meta["input"] == "raw" and "the paper's input" in clf.card
    clf.save(str(tmp_path / "raw.pt"))
    back = load_classifier(str(tmp_path / "raw.pt"))
    assert back.net.input == "raw"
    torch.testing.assert_close(back(x), clf(x), rtol=1e-2, atol=1e-2)  # float16 weights


def test_calibration_is_stored_applied_and_older_checkpoints_load(tmp_path):
    clf = train_classifier(torch.rand(20, 1, 8, 8) * 2 - 1, levels=10, steps=2, batch_size=4, calibrate=0.2,
                           progress=False)
    assert clf.meta["n_calibrate"] == 4 and clf.logit_offset.shape == (10,)
    assert "calibration of the argmax" in clf.card and "level_error_by_band_uncalibrated" in clf.meta
    assert "Targets where DLG chains live: over sigma [0.1, 20]" in clf.card
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), clf.net(x) + clf.logit_offset)
    clf.save(str(tmp_path / "cal.pt"))
    back = load_classifier(str(tmp_path / "cal.pt"))
    torch.testing.assert_close(back.logit_offset, clf.logit_offset)
    # a checkpoint from before issue 15 has neither `input` nor `logit_offset`: rms input, no offset
    ck = torch.load(tmp_path / "cal.pt", weights_only=True)
    del ck["input"], ck["logit_offset"]
    torch.save(ck, tmp_path / "old.pt")
    old = load_classifier(str(tmp_path / "old.pt"))
    assert old.logit_offset is None and old.net.input == "rms"
    torch.testing.assert_close(old(x), back(x) - back.logit_offset)
    none = train_classifier(torch.rand(20, 1, 8, 8) * 2 - 1, levels=10, steps=1, batch_size=4, calibrate=0.0,
                            progress=False)
    assert none.logit_offset is None and none.meta["n_calibrate"] == 0 and "no calibration" in none.card


def test_the_offset_removes_a_level_the_network_favours():
    """The exact posterior is calibrated; with a bump on one level its argmax sticks there, and the fitted
    offset takes the bump back out (up to a constant), which restores the argmax."""
    mix, levels = _one_mode(), level_sigmas(12, 0.2, 20.0)
    exact, bump = ExactLevelPosterior(mix, levels), 6.0

    def favouring(x):
        out = exact(x).float()
        out[:, 5] += bump
        return out

    x_cal = mix.sample(64, generator=torch.Generator().manual_seed(0))[0]
    b = fit_logit_offset(favouring, x_cal, levels, draws=4096)
    others = torch.cat([b[:5], b[6:]])
    assert b[5] - others.mean() < -0.8 * bump and others.std() < 0.2 * bump
    x_test = mix.sample(64, generator=torch.Generator().manual_seed(1))[0]
    before = level_error(favouring, x_test, levels, n_eval=1024)
    after = level_error(lambda x: favouring(x) + b, x_test, levels, n_eval=1024)
    best = level_error(exact, x_test, levels, n_eval=1024)  # the same draws (same seed)
    assert before["mean_abs"] > best["mean_abs"] + 0.1 and after["mean_abs"] < best["mean_abs"] + 0.02


def test_focus_draws_levels_where_the_chain_lives_and_split_is_disjoint():
    levels = level_sigmas(1000, 0.002, 80.0)
    i0, i1 = level_range(levels, 0.1, 20.0, last=True)
    assert float(levels[i0]) <= 20.0 < float(levels[i0 - 1]) and float(levels[i1 - 1]) >= 0.1 > float(levels[i1])
    gen = torch.Generator().manual_seed(0)
    m = train_levels((i0, i1), 1000, 20000, 0.5, gen)
    inside = ((m >= i0) & (m < i1)).double().mean()
    share_uniform = (i1 - i0) / 1000
    assert abs(inside - (0.5 + 0.5 * share_uniform)) < 0.02
    assert ((m >= 0) & (m < 1000)).all()
    assert bool(((train_levels((i0, i1), 1000, 2000, 1.0, gen) >= i0) & (m[:2000] >= 0)).all())
    test, cal, train = split(100, 0.1, 0.2, 3)
    assert (len(test), len(cal), len(train)) == (10, 20, 70)
    assert len(set(torch.cat([test, cal, train]).tolist())) == 100
    assert torch.equal(test, split(100, 0.1, 0.0, 3)[0])  # the held-out images do not move with calibrate


def test_level_error_per_band_against_a_reference():
    mix, levels = _one_mode(d_side=16), level_sigmas(200, 0.05, 50.0)
    exact = ExactLevelPosterior(mix, levels)
    x0 = mix.sample(32, generator=torch.Generator().manual_seed(2))[0]
    edges = [0.1, 1.0, 10.0]
    e = level_error(exact, x0, levels, edges=edges, per_band=50, reference=lambda x, m: exact(x).argmax(1))
    assert [b["n"] for b in e["bands"]] == [50, 50] and e["mean_abs"] == 0 and e["target"]["met"]
    shifted = level_error(lambda x: exact(x).roll(-3, 1), x0, levels, edges=edges, per_band=50,
                          reference=lambda x, m: exact(x).argmax(1))
    assert all(b["median"] == -3 for b in shifted["bands"])
